//! The UAS side of one call's INVITE dialog, as a Sans-IO state machine.
//!
//! It owns everything RFC 3261 asks of the callee: 100 and 180 at once, the
//! 200 after a configurable ring, the 2xx retransmitted on T1/T2 until the ACK
//! (§13.3.1.4) and a BYE after 64×T1 without one, absorbed INVITE
//! retransmissions, CANCEL (§9.2) with a 487 retransmitted until its ACK,
//! BYE either way with Timer E/F retransmission of ours, re-INVITE for hold
//! and address changes, and late offers (SDP in the ACK).
//!
//! It is also the transferor of a blind transfer (RFC 3515): [`UasDialog::refer`]
//! sends a REFER through the route set like our BYE, resent on Timer E
//! until answered, and the NOTIFYs of its implicit subscription are
//! answered 200 (481 when they are not ours; `refer` judges them). What
//! happens to it comes out as [`DialogEvent::Refer`], named by the REFER's
//! CSeq. One REFER transaction at a time; deciding what the news means
//! (transferred, failed, the next target) is the call's. The caller may not
//! transfer us: its REFER is answered 405.
//!
//! Time is an input: `handle_*` take `now`, `poll_timeout` says when to call
//! `handle_timeout` next. Nothing here reads a clock or touches a socket.
//! The resending is `retransmit`'s, and our requests are written by the
//! message builder from what the dialog knows ([`UasDialog`]'s `request`).

pub use crate::sip::SipTransmit;
use crate::sip::message::{
    ALLOW, Method, OutgoingRequest, Request, Response, branch, build_response, split_name_addrs, with_tag,
};
use crate::sip::refer::{NotifyVerdict, ReferSubscriptions, is_refer_target};
use crate::sip::retransmit::Retransmit;
use crate::sip::sdp::{Direction, LocalSession, Negotiated, RemoteMedia};
use crate::sip::{Transport, host_port};
use rsipstack::sip::{Method as SipMethod, Uri};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Timing and identity a dialog needs from the agent.
#[derive(Debug, Clone)]
pub struct DialogConfig {
    pub answer_after: Duration,
    pub t1: Duration,
    pub t2: Duration,
    /// Send 100 and 180 while ringing. Off for a source that has not shown it
    /// can receive (it may be spoofed): the 200 alone must fit what it sent.
    pub provisional: bool,
    /// The SIP address we are reachable at for this call (Via, Contact).
    pub local_sip: SocketAddr,
    /// The transport of the INVITE, for our Via and Contact. On a reliable
    /// one (TCP) nothing is retransmitted but the 2xx, which is resent end
    /// to end (a later hop may be UDP).
    pub transport: Transport,
    /// Our RTP address for this call (SDP).
    pub local_rtp: SocketAddr,
    /// Random values (tags, branch, SDP session id) supplied by the caller so the machine stays deterministic.
    pub local_tag: String,
    pub seed: u64,
}

/// Why the dialog ended; becomes the lead's `ended_by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndedBy {
    Caller,
    Agent,
    Timeout,
    Cancel,
    Error,
}

impl EndedBy {
    /// As the lead spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            EndedBy::Caller => "caller",
            EndedBy::Agent => "agent",
            EndedBy::Timeout => "timeout",
            EndedBy::Cancel => "cancel",
            EndedBy::Error => "error",
        }
    }
}

/// What the dialog tells the call.
#[derive(Debug, Clone, PartialEq)]
pub enum DialogEvent {
    /// 200 OK sent.
    Answered,
    /// ACK received: media may flow with these parameters.
    Confirmed { negotiated: Negotiated, remote_rtp: Option<SocketAddr>, direction: Direction },
    /// A re-INVITE changed the media (address, hold).
    MediaChanged { negotiated: Negotiated, remote_rtp: Option<SocketAddr>, direction: Direction },
    /// An in-dialog INFO (already answered 200).
    Info { content_type: String, body: Vec<u8> },
    /// News of the REFER with CSeq `id` (see [`UasDialog::refer`]). None
    /// once the dialog has ended.
    Refer { id: u32, event: ReferEvent },
    /// The dialog is over; `detail` says why for the log.
    Ended { by: EndedBy, detail: String },
}

/// What happened to a REFER we sent (its implicit subscription is
/// identified by the REFER's CSeq, the `id` of `Event: refer;id=N`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferEvent {
    /// The REFER was answered 2xx (202 Accepted). A NOTIFY that overtakes the
    /// 202 counts as one: `Accepted { code: 202 }` comes first.
    Accepted { code: u16 },
    /// The REFER was answered 3xx-6xx, or no final answer came (Timer F: code
    /// 408), or the peer answered 481.
    Rejected { code: u16 },
    /// A NOTIFY with a message/sipfrag status line (already answered 200).
    /// `terminated` = its Subscription-State is terminated.
    Notify { code: u16, terminated: bool },
    /// A NOTIFY terminated the subscription without a readable sipfrag
    /// status line (already answered 200): the outcome is unknown.
    Terminated,
}

/// Why [`UasDialog::refer`] sent nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferError {
    #[error("the call is not up")]
    NotConfirmed,
    #[error("a transfer is already in progress")]
    Busy,
    #[error("not a sip:, sips: or tel: URI: {0:?}")]
    BadTarget(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// INVITE received; ringing until `answer_at`.
    Ringing,
    /// 2xx sent to the initial INVITE, waiting for the ACK.
    Accepted,
    /// ACK received; the call is up.
    Confirmed,
    /// A final non-2xx was sent; absorbing its ACK.
    Rejected,
    /// Our BYE is out; waiting for its response.
    Terminating,
    Terminated,
}

/// A message resent until its transaction is answered, with the CSeq the
/// answer carries: the ACK to a response to an INVITE, the response to our BYE.
#[derive(Debug, Clone)]
struct Unanswered {
    cseq: u32,
    retransmit: Retransmit,
}

/// The UAS dialog for one incoming INVITE.
pub struct UasDialog {
    cfg: DialogConfig,
    state: State,
    invite: Request,
    /// Where responses to the INVITE go.
    reply_dest: SocketAddr,
    /// Last response sent to the initial INVITE, resent on a retransmission.
    last_invite_response: Option<Vec<u8>>,
    answer_at: Option<Instant>,
    pending_2xx: Option<Unanswered>,
    pending_non2xx: Option<Unanswered>,
    /// Our BYE and its Timer E/F.
    bye: Option<Unanswered>,
    /// Our REFER until its final response, and its Timer E/F.
    refer: Option<Unanswered>,
    /// The implicit subscriptions of the REFERs sent.
    subscriptions: ReferSubscriptions,
    local: LocalSession,
    /// The offer from the INVITE; `None` on a late offer.
    offer: Option<RemoteMedia>,
    negotiated: Option<Negotiated>,
    remote_target: Uri,
    route_set: Vec<String>,
    /// Where requests we originate go.
    request_dest: SocketAddr,
    local_cseq: u32,
    /// CSeq of the caller's latest INVITE, to tell a retransmitted re-INVITE
    /// from a new one. Its BYE, INFO and NOTIFYs share the CSeq space but are
    /// not ordered against it: a re-INVITE overtaken by a later NOTIFY is new.
    invite_cseq: u32,
    events: VecDeque<DialogEvent>,
    transmits: VecDeque<SipTransmit>,
    ended: Option<EndedBy>,
}

impl UasDialog {
    /// Start a dialog for a new INVITE: sends 100 and 180 (or 488 for an
    /// unusable offer) and schedules the answer.
    pub fn new(now: Instant, invite: Request, cfg: DialogConfig) -> UasDialog {
        let reply_dest = reply_dest(&invite, cfg.transport.is_reliable());
        let remote_target = invite.contact.as_ref().map(|c| c.uri.clone()).unwrap_or_else(|| invite.from.uri.clone());
        let route_set: Vec<String> = invite.frame.get_all("Record-Route").flat_map(split_name_addrs).collect();
        let request_dest = request_dest(&route_set, &remote_target, invite.source, cfg.transport.is_reliable());
        let local = LocalSession { session_id: cfg.seed & 0xFFFF_FFFF, version: 1, rtp_addr: cfg.local_rtp };
        let mut d = UasDialog {
            state: State::Ringing,
            reply_dest,
            last_invite_response: None,
            answer_at: None,
            pending_2xx: None,
            pending_non2xx: None,
            bye: None,
            refer: None,
            subscriptions: ReferSubscriptions::default(),
            local,
            offer: None,
            negotiated: None,
            remote_target,
            route_set,
            request_dest,
            local_cseq: (cfg.seed >> 40) as u32 % 10_000 + 1,
            invite_cseq: invite.cseq,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            ended: None,
            invite,
            cfg,
        };
        if !d.invite.frame.body.is_empty() {
            match RemoteMedia::parse(&d.invite.frame.body) {
                Ok(offer) => match offer.choose() {
                    Some(n) => {
                        d.negotiated = Some(n);
                        d.offer = Some(offer);
                    }
                    None => return d.reject_initial(now, 488, "no common codec (PCMU/PCMA)"),
                },
                Err(e) => return d.reject_initial(now, 488, &format!("unusable SDP offer: {e}")),
            }
        }
        if d.cfg.provisional {
            let trying = d.respond_invite(100, false, &[], None);
            d.send_invite_response(trying);
            let ringing = d.respond_invite(180, true, &[], None);
            d.send_invite_response(ringing);
        }
        d.answer_at = Some(now + d.cfg.answer_after);
        d
    }

    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    pub fn is_confirmed(&self) -> bool {
        self.state == State::Confirmed
    }

    fn reject_initial(mut self, now: Instant, code: u16, why: &str) -> UasDialog {
        self.reject_invite(now, code, &[("Warning", format!("399 backstop \"{why}\""))]);
        self.end(EndedBy::Error, format!("rejected {code}: {why}"));
        self
    }

    fn respond_invite(&self, code: u16, with_tag: bool, extra: &[(&str, String)], body: Option<&str>) -> Vec<u8> {
        let mut headers: Vec<(&str, String)> = extra.to_vec();
        if (200..300).contains(&code) || code == 180 {
            headers.push(("Contact", self.contact()));
        }
        if (200..300).contains(&code) {
            headers.push(("Allow", ALLOW.into()));
            for rr in self.invite.frame.get_all("Record-Route") {
                headers.push(("Record-Route", rr.to_string()));
            }
        }
        let tag = if with_tag { Some(self.cfg.local_tag.as_str()) } else { None };
        build_response(
            &self.invite.frame,
            &self.invite.via_reply,
            code,
            tag,
            &headers,
            body.map(|b| ("application/sdp", b.as_bytes())),
        )
    }

    fn send_invite_response(&mut self, bytes: Vec<u8>) {
        self.last_invite_response = Some(bytes.clone());
        self.transmits.push_back(SipTransmit { dest: self.reply_dest, bytes });
    }

    fn contact(&self) -> String {
        let t = if self.cfg.transport == Transport::Tcp { ";transport=tcp" } else { "" };
        format!("<sip:backstop@{}{t}>", host_port(self.cfg.local_sip))
    }

    /// Start resending `bytes` to `dest` until the transaction with `cseq` is
    /// answered; on a reliable transport only an `end_to_end` one (a 2xx) is resent.
    fn unanswered(&self, now: Instant, bytes: Vec<u8>, dest: SocketAddr, cseq: u32, end_to_end: bool) -> Unanswered {
        let resend = !self.cfg.transport.is_reliable() || end_to_end;
        let message = SipTransmit { dest, bytes };
        Unanswered { cseq, retransmit: Retransmit::new(message, now, self.cfg.t1, self.cfg.t2, resend) }
    }

    fn end(&mut self, by: EndedBy, detail: String) {
        if self.ended.is_none() {
            self.ended = Some(by);
            self.events.push_back(DialogEvent::Ended { by, detail });
        }
    }

    /// Answer the INVITE with a final non-2xx, resent until its ACK.
    fn reject_invite(&mut self, now: Instant, code: u16, extra: &[(&str, String)]) {
        let bytes = self.respond_invite(code, true, extra, None);
        self.send_invite_response(bytes.clone());
        self.state = State::Rejected;
        self.answer_at = None;
        // Timer G/H; on TCP we only wait for the ACK (Timer H) without resending.
        self.pending_non2xx = Some(self.unanswered(now, bytes, self.reply_dest, self.invite.cseq, false));
    }

    /// Answer now (normally called by the ring timer).
    fn answer(&mut self, now: Instant) {
        self.answer_at = None;
        let sdp = match (&self.offer, &self.negotiated) {
            (Some(offer), Some(neg)) => self.local.answer(neg, offer.direction.reversed()),
            _ => self.local.offer(),
        };
        let bytes = self.respond_invite(200, true, &[], Some(&sdp));
        self.send_invite_response(bytes.clone());
        self.pending_2xx = Some(self.unanswered(now, bytes, self.reply_dest, self.invite.cseq, true));
        self.state = State::Accepted;
        self.events.push_back(DialogEvent::Answered);
    }

    /// Hang up from our side: BYE once the call is confirmed (or accepted),
    /// or a 480 while still ringing.
    pub fn hangup(&mut self, now: Instant, by: EndedBy, detail: &str) {
        match self.state {
            State::Ringing => {
                self.reject_invite(now, 480, &[]);
                self.end(by, detail.to_string());
            }
            State::Accepted | State::Confirmed => {
                self.pending_2xx = None;
                // After whatever is queued, such as the 200 to a final NOTIFY (RFC 5589 §6.1).
                self.send_bye(now);
                self.end(by, detail.to_string());
            }
            _ => {}
        }
    }

    /// Refuse the call while it still rings: 603 Decline, resent until its
    /// ACK (a junk caller). Once answered, or already refused, nothing.
    pub fn decline(&mut self, now: Instant, detail: &str) {
        if self.state == State::Ringing {
            self.reject_invite(now, 603, &[]);
            self.end(EndedBy::Agent, detail.to_string());
        }
    }

    /// A new request inside this dialog (RFC 3261 §12.2.1.1): the next CSeq,
    /// our tag in From, the caller's in To, to the remote target through the
    /// route set. A REFER adds its Contact and headers.
    fn request(&mut self, method: SipMethod) -> OutgoingRequest {
        self.local_cseq += 1;
        OutgoingRequest {
            method,
            uri: self.remote_target.clone(),
            transport: self.cfg.transport,
            sent_by: self.cfg.local_sip,
            branch: branch(self.cfg.seed, self.local_cseq),
            from: with_tag(self.invite.frame.get("To").unwrap_or_default(), &self.cfg.local_tag),
            to: self.invite.frame.get("From").unwrap_or_default().to_string(),
            call_id: self.invite.call_id.clone(),
            cseq: self.local_cseq,
            route: self.route_set.clone(),
            contact: None,
            headers: Vec::new(),
            body: None,
        }
    }

    fn send_bye(&mut self, now: Instant) {
        let bye = self.request(SipMethod::Bye);
        let bytes = bye.to_bytes();
        self.transmits.push_back(SipTransmit { dest: self.request_dest, bytes: bytes.clone() });
        self.bye = Some(self.unanswered(now, bytes, self.request_dest, bye.cseq, false));
        self.refer = None;
        self.state = State::Terminating;
    }

    /// Send a REFER for `refer_to` (a sip:, sips: or tel: URI from config) in
    /// this dialog, with Referred-By our identity (the INVITE's To URI),
    /// retransmitted on Timer E until answered (not on TCP). Returns its
    /// CSeq, the subscription id that [`DialogEvent::Refer`] carries.
    ///
    /// Only once the call is confirmed, and one REFER transaction at a time
    /// (`Busy` until the last one is answered or times out, even if its
    /// per-target wait is over: a second REFER while the peer may still act on
    /// the first could transfer the caller twice). A new one may go out while
    /// an older subscription is still open.
    pub fn refer(&mut self, now: Instant, refer_to: &str) -> Result<u32, ReferError> {
        if self.state != State::Confirmed {
            return Err(ReferError::NotConfirmed);
        }
        if self.refer.is_some() {
            return Err(ReferError::Busy);
        }
        let target = refer_to_value(refer_to).ok_or_else(|| ReferError::BadTarget(refer_to.to_string()))?;
        let mut req = self.request(SipMethod::Refer);
        req.contact = Some(self.contact());
        req.headers = vec![("Refer-To", target), ("Referred-By", format!("<{}>", self.invite.to.uri))];
        let bytes = req.to_bytes();
        self.transmits.push_back(SipTransmit { dest: self.request_dest, bytes: bytes.clone() });
        self.refer = Some(self.unanswered(now, bytes, self.request_dest, req.cseq, false));
        self.subscriptions.open(req.cseq);
        Ok(req.cseq)
    }

    /// Tell the call about REFER `id`, unless the dialog is over.
    fn report(&mut self, id: u32, event: ReferEvent) {
        if self.ended.is_none() {
            self.events.push_back(DialogEvent::Refer { id, event });
        }
    }

    /// The final response to our REFER `cseq` (or Timer F's 408).
    fn refer_answered(&mut self, cseq: u32, code: u16) {
        if self.refer.as_ref().is_none_or(|r| r.cseq != cseq) {
            return;
        }
        self.refer = None;
        if (200..300).contains(&code) {
            self.report(cseq, ReferEvent::Accepted { code });
        } else {
            self.subscriptions.forget(cseq);
            self.report(cseq, ReferEvent::Rejected { code });
        }
    }

    /// A NOTIFY: 200 for a subscription of ours, 481 otherwise (RFC 6665 §4.1.3).
    fn handle_notify(&mut self, req: Request, dest: SocketAddr) {
        if self.refused_outside_dialog(&req, dest) {
            return;
        }
        let (event, state) = (req.frame.get("Event"), req.frame.get("Subscription-State"));
        match self.subscriptions.notify(event, state, req.cseq, &req.frame.body) {
            NotifyVerdict::Unknown => self.reply(&req, dest, 481, &[]),
            NotifyVerdict::Known { id, event } => {
                // NOTIFY is a target refresh request (RFC 6665 §4.1.3): its 2xx carries our Contact.
                self.reply(&req, dest, 200, &[("Contact", self.contact())]);
                // A NOTIFY that overtook the 202 (UDP): the REFER was accepted.
                if self.refer.as_ref().is_some_and(|r| r.cseq == id) {
                    self.refer = None;
                    self.report(id, ReferEvent::Accepted { code: 202 });
                }
                if let Some(event) = event {
                    self.report(id, event);
                }
            }
        }
    }

    /// A response to an in-dialog request, with our tag and an optional SDP body.
    fn reply_to(
        &self,
        req: &Request,
        dest: SocketAddr,
        code: u16,
        extra: &[(&str, String)],
        sdp: Option<&str>,
    ) -> SipTransmit {
        let body = sdp.map(|b| ("application/sdp", b.as_bytes()));
        let bytes = build_response(&req.frame, &req.via_reply, code, Some(self.cfg.local_tag.as_str()), extra, body);
        SipTransmit { dest, bytes }
    }

    /// Send a response without a body.
    fn reply(&mut self, req: &Request, dest: SocketAddr, code: u16, extra: &[(&str, String)]) {
        let t = self.reply_to(req, dest, code, extra, None);
        self.transmits.push_back(t);
    }

    /// A request that belongs to this dialog carries our To-tag (§12.2.2);
    /// one that does not matches no dialog here: answered 481, and true.
    fn refused_outside_dialog(&mut self, req: &Request, dest: SocketAddr) -> bool {
        let outside = req.to.tag.as_deref() != Some(self.cfg.local_tag.as_str());
        if outside {
            self.reply(req, dest, 481, &[]);
        }
        outside
    }

    /// A request for this call (same Call-ID) arrived.
    pub fn handle_request(&mut self, now: Instant, req: Request) {
        let dest = reply_dest(&req, self.cfg.transport.is_reliable());
        let same_txn = req.cseq == self.invite.cseq && req.via.branch == self.invite.via.branch;
        match req.method {
            Method::Invite if same_txn && req.to.tag.is_none() => {
                // A retransmission of the initial INVITE. While ringing, or after a
                // final non-2xx, repeat our last response (§17.2.1); once a 2xx is out
                // it is absorbed, and the 2xx timer does the retransmitting (RFC 6026).
                if matches!(self.state, State::Ringing | State::Rejected)
                    && let Some(bytes) = self.last_invite_response.clone()
                {
                    self.transmits.push_back(SipTransmit { dest: self.reply_dest, bytes });
                }
            }
            Method::Invite => self.handle_reinvite(now, req, dest),
            Method::Ack => self.handle_ack(now, req),
            Method::Cancel => {
                if !same_txn {
                    self.reply(&req, dest, 481, &[]);
                    return;
                }
                self.reply(&req, dest, 200, &[]);
                if self.state == State::Ringing {
                    self.reject_invite(now, 487, &[]);
                    self.end(EndedBy::Cancel, "caller cancelled before answer".into());
                }
            }
            Method::Bye => {
                if self.refused_outside_dialog(&req, dest) {
                    return;
                }
                self.reply(&req, dest, 200, &[]);
                self.pending_2xx = None;
                self.bye = None;
                self.refer = None;
                self.end(EndedBy::Caller, "caller sent BYE".into());
                self.state = State::Terminated;
            }
            Method::Options => {
                self.reply(&req, dest, 200, &[("Allow", ALLOW.into()), ("Accept", "application/sdp".into())]);
            }
            Method::Info => {
                if self.refused_outside_dialog(&req, dest) {
                    return;
                }
                self.reply(&req, dest, 200, &[]);
                let content_type = req.frame.get("Content-Type").unwrap_or("").to_string();
                self.events.push_back(DialogEvent::Info { content_type, body: req.frame.body });
            }
            Method::Notify => self.handle_notify(req, dest),
            // We do not let the caller transfer our leg: 405, and Allow says what we do take
            // (rather than 403, which reads as "not you, not now": REFER is never accepted here).
            Method::Refer | Method::NotAllowed(_) => self.reply(&req, dest, 405, &[("Allow", ALLOW.into())]),
        }
    }

    fn handle_ack(&mut self, now: Instant, req: Request) {
        match self.state {
            State::Rejected if req.cseq == self.invite.cseq => {
                self.pending_non2xx = None;
                self.state = State::Terminated;
            }
            State::Accepted | State::Confirmed | State::Terminating => {
                let Some(pending) = &self.pending_2xx else { return };
                if pending.cseq != req.cseq {
                    return;
                }
                self.pending_2xx = None;
                let was_initial = self.state == State::Accepted;
                if self.negotiated.is_none() {
                    // Late offer: the answer is in the ACK.
                    let answer = RemoteMedia::parse(&req.frame.body).ok();
                    match answer.as_ref().and_then(|a| a.accept_answer().map(|n| (a, n))) {
                        Some((a, n)) => {
                            self.negotiated = Some(n);
                            self.offer = Some(a.clone());
                        }
                        None => {
                            self.state = State::Confirmed;
                            self.send_bye(now);
                            self.end(EndedBy::Error, "ACK carried no usable SDP answer".into());
                            return;
                        }
                    }
                }
                let (Some(neg), Some(media)) = (self.negotiated, self.offer.as_ref()) else { return };
                let remote_rtp = media.rtp_addr;
                let direction = media.direction;
                if was_initial {
                    self.state = State::Confirmed;
                    self.events.push_back(DialogEvent::Confirmed { negotiated: neg, remote_rtp, direction });
                } else {
                    self.events.push_back(DialogEvent::MediaChanged { negotiated: neg, remote_rtp, direction });
                }
            }
            _ => {}
        }
    }

    fn handle_reinvite(&mut self, now: Instant, req: Request, dest: SocketAddr) {
        if self.refused_outside_dialog(&req, dest) {
            return;
        }
        if self.state != State::Confirmed {
            self.reply(&req, dest, 491, &[]);
            return;
        }
        if req.cseq <= self.invite_cseq {
            // A retransmitted re-INVITE: the pending 2xx covers it.
            if let Some(p) = &self.pending_2xx
                && p.cseq == req.cseq
            {
                self.transmits.push_back(SipTransmit { dest, bytes: p.retransmit.message.bytes.clone() });
            }
            return;
        }
        if self.pending_2xx.is_some() {
            self.reply(&req, dest, 491, &[]);
            return;
        }
        self.invite_cseq = req.cseq;
        if let Some(c) = &req.contact {
            self.remote_target = c.uri.clone();
        }
        self.local.version += 1;
        let (sdp, changed) = if req.frame.body.is_empty() {
            // A re-INVITE without SDP asks for our offer; the ACK brings the answer.
            self.negotiated = None;
            (self.local.offer(), None)
        } else {
            match RemoteMedia::parse(&req.frame.body).ok().and_then(|o| o.choose().map(|n| (o, n))) {
                Some((offer, neg)) => {
                    let sdp = self.local.answer(&neg, offer.direction.reversed());
                    self.negotiated = Some(neg);
                    let ev = DialogEvent::MediaChanged {
                        negotiated: neg,
                        remote_rtp: offer.rtp_addr,
                        direction: offer.direction,
                    };
                    self.offer = Some(offer);
                    (sdp, Some(ev))
                }
                None => {
                    self.local.version -= 1;
                    self.reply(&req, dest, 488, &[]);
                    return;
                }
            }
        };
        let mut extra = vec![("Contact", self.contact()), ("Allow", ALLOW.into())];
        extra.extend(req.frame.get_all("Record-Route").map(|rr| ("Record-Route", rr.to_string())));
        let t = self.reply_to(&req, dest, 200, &extra, Some(&sdp));
        self.pending_2xx = Some(self.unanswered(now, t.bytes.clone(), dest, req.cseq, true));
        self.transmits.push_back(t);
        if let Some(ev) = changed {
            self.events.push_back(ev);
        }
    }

    /// A response for this call: the final ones to our BYE and REFER matter.
    pub fn handle_response(&mut self, _now: Instant, resp: Response) {
        if resp.code < 200 {
            return;
        }
        match resp.cseq_method.as_str() {
            "BYE" => {
                if let Some(bye) = &self.bye
                    && bye.cseq == resp.cseq
                {
                    self.bye = None;
                    self.state = State::Terminated;
                }
            }
            "REFER" => self.refer_answered(resp.cseq, resp.code),
            _ => {}
        }
    }

    /// Drive timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(at) = self.answer_at
            && now >= at
            && self.state == State::Ringing
        {
            self.answer(now);
        }
        let out = &mut self.transmits;
        if self.pending_2xx.as_mut().is_some_and(|p| p.retransmit.gave_up(now, out)) {
            self.pending_2xx = None;
            self.send_bye(now);
            self.end(EndedBy::Timeout, "no ACK for 2xx within 64*T1".into());
        }
        let out = &mut self.transmits;
        if self.pending_non2xx.as_mut().is_some_and(|p| p.retransmit.gave_up(now, out)) {
            self.pending_non2xx = None;
            self.state = State::Terminated;
        }
        let out = &mut self.transmits;
        if self.bye.as_mut().is_some_and(|p| p.retransmit.gave_up(now, out)) {
            self.bye = None;
            self.state = State::Terminated;
        }
        let out = &mut self.transmits;
        if let Some(p) = self.refer.as_mut()
            && p.retransmit.gave_up(now, out)
        {
            // Timer F: no final answer is a 408 (RFC 3261 §8.1.3.1).
            let cseq = p.cseq;
            self.refer_answered(cseq, 408);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = self.answer_at;
        for p in [&self.pending_2xx, &self.pending_non2xx, &self.bye, &self.refer].into_iter().flatten() {
            let at = p.retransmit.deadline();
            t = Some(t.map_or(at, |x| x.min(at)));
        }
        t
    }

    #[cfg(test)]
    pub(crate) fn local_cseq_for_tests(&self) -> u32 {
        self.local_cseq
    }

    pub fn poll_transmit(&mut self) -> Option<SipTransmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<DialogEvent> {
        self.events.pop_front()
    }
}

/// A Refer-To value: the URI in angle brackets (required for a tel: URI or
/// one with parameters or headers), or `None` if it is not a sip:, sips: or
/// tel: URI that can be written in one header without breaking it.
fn refer_to_value(uri: &str) -> Option<String> {
    let uri = uri.trim();
    let uri = uri.strip_prefix('<').and_then(|u| u.strip_suffix('>')).unwrap_or(uri);
    is_refer_target(uri).then(|| format!("<{uri}>"))
}

/// Where responses to `req` go.
fn reply_dest(req: &Request, reliable: bool) -> SocketAddr {
    if reliable { req.source } else { req.via.response_addr(req.source) }
}

/// Where in-dialog requests go: the first route if there is a route set,
/// otherwise the remote target; when that names a host we cannot use
/// without DNS, or on TCP, the address the INVITE came from.
fn request_dest(route_set: &[String], target: &Uri, source: SocketAddr, reliable: bool) -> SocketAddr {
    if reliable {
        return source;
    }
    let uri = match route_set.first() {
        Some(r) => match Uri::from_str(r.trim().trim_start_matches('<').split('>').next().unwrap_or("")) {
            Ok(u) => u,
            Err(_) => return source,
        },
        None => target.clone(),
    };
    let host = uri.host_with_port.host.to_string();
    let port = uri.host_with_port.port.as_ref().map(|p| p.value()).unwrap_or(5060);
    match host.trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::testing;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

    fn request(method: &str, cseq: u32, branch: &str, to_tag: Option<&str>, body: &str) -> Request {
        testing::request(method, cseq).branch(branch).to_tag(to_tag).sdp(body).read()
    }

    fn response(code: u16, cseq: u32, method: &str) -> Response {
        testing::response(&format!(
            "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=local\r\n\
             To: <sip:c@d>;tag=caller\r\nCall-ID: c1\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        ))
    }

    fn cfg(reliable: bool) -> DialogConfig {
        DialogConfig {
            answer_after: Duration::from_millis(1000),
            t1: Duration::from_millis(500),
            t2: Duration::from_millis(4000),
            provisional: true,
            local_sip: "127.0.0.1:5060".parse().unwrap(),
            transport: if reliable { Transport::Tcp } else { Transport::Udp },
            local_rtp: "127.0.0.1:20000".parse().unwrap(),
            local_tag: "local".into(),
            seed: 42,
        }
    }

    /// Status codes (or request methods) of everything sent, in order.
    fn sent(d: &mut UasDialog) -> Vec<String> {
        std::iter::from_fn(|| d.poll_transmit())
            .map(|t| {
                let text = String::from_utf8(t.bytes).unwrap();
                let first = text.lines().next().unwrap().to_string();
                match first.strip_prefix("SIP/2.0 ") {
                    Some(rest) => rest.split(' ').next().unwrap().to_string(),
                    None => first.split(' ').next().unwrap().to_string(),
                }
            })
            .collect()
    }

    fn events(d: &mut UasDialog) -> Vec<DialogEvent> {
        std::iter::from_fn(|| d.poll_event()).collect()
    }

    fn answered(t0: Instant, reliable: bool, body: &str) -> UasDialog {
        let mut d = UasDialog::new(t0, request("INVITE", 1, "z9hG4bKinv", None, body), cfg(reliable));
        assert_eq!(sent(&mut d), ["100", "180"]);
        assert_eq!(d.poll_timeout(), Some(t0 + Duration::from_millis(1000)));
        d.handle_timeout(t0 + Duration::from_millis(1000));
        assert_eq!(sent(&mut d), ["200"]);
        assert_eq!(events(&mut d), [DialogEvent::Answered]);
        d
    }

    #[test]
    fn answers_after_the_ring_and_confirms_on_ack() {
        let t0 = Instant::now();
        let mut d = answered(t0, false, OFFER);
        let ack = request("ACK", 1, "z9hG4bKack", Some("local"), "");
        d.handle_request(t0 + Duration::from_millis(1010), ack);
        let ev = events(&mut d);
        let DialogEvent::Confirmed { negotiated, remote_rtp, direction } = &ev[0] else { panic!("{ev:?}") };
        assert_eq!(negotiated.law, crate::media::g711::Law::Pcma);
        assert_eq!(negotiated.telephone_event, Some(101));
        assert_eq!(*remote_rtp, Some("127.0.0.1:4000".parse().unwrap()));
        assert_eq!(*direction, Direction::SendRecv);
        assert_eq!(d.poll_timeout(), None, "no timers once confirmed");
    }

    #[test]
    fn unacknowledged_2xx_is_resent_on_t1_doubling_to_t2_then_bye_at_64_t1() {
        let t0 = Instant::now();
        let mut d = answered(t0, false, OFFER);
        let answered_at = t0 + Duration::from_millis(1000);
        let mut resends = Vec::new();
        while let Some(at) = d.poll_timeout() {
            d.handle_timeout(at);
            let out = sent(&mut d);
            if out == ["200"] {
                resends.push((at - answered_at).as_millis());
            } else if out == ["BYE"] {
                assert_eq!(at - answered_at, Duration::from_millis(32_000));
                break;
            }
        }
        assert_eq!(resends, [500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]);
        let ev = events(&mut d);
        assert!(matches!(ev[0], DialogEvent::Ended { by: EndedBy::Timeout, .. }), "{ev:?}");
        d.handle_response(t0, response(200, d.local_cseq, "BYE"));
        assert!(d.is_terminated());
    }

    #[test]
    fn tcp_still_retransmits_the_2xx_but_not_the_bye() {
        let t0 = Instant::now();
        let mut d = answered(t0, true, OFFER);
        let mut sends = Vec::new();
        while let Some(at) = d.poll_timeout() {
            d.handle_timeout(at);
            let out = sent(&mut d);
            sends.extend(out.iter().cloned());
            if out.contains(&"BYE".to_string()) {
                assert_eq!(at, t0 + Duration::from_millis(1000 + 32_000));
                break;
            }
        }
        assert_eq!(sends.iter().filter(|s| *s == "200").count(), 10);
        // Our BYE is not resent on TCP; its give-up time is the only timer left.
        assert_eq!(d.poll_timeout(), Some(t0 + Duration::from_millis(1000 + 32_000 + 32_000)));
    }

    #[test]
    fn retransmitted_invite_repeats_the_provisional_then_is_absorbed() {
        let t0 = Instant::now();
        let mut d = UasDialog::new(t0, request("INVITE", 1, "z9hG4bKinv", None, OFFER), cfg(false));
        sent(&mut d);
        d.handle_request(t0, request("INVITE", 1, "z9hG4bKinv", None, OFFER));
        assert_eq!(sent(&mut d), ["180"]);
        d.handle_timeout(t0 + Duration::from_secs(1));
        assert_eq!(sent(&mut d), ["200"]);
        d.handle_request(t0 + Duration::from_millis(1001), request("INVITE", 1, "z9hG4bKinv", None, OFFER));
        assert!(sent(&mut d).is_empty());
    }

    #[test]
    fn cancel_while_ringing_gives_200_then_487_resent_until_ack() {
        let t0 = Instant::now();
        let mut d = UasDialog::new(t0, request("INVITE", 1, "z9hG4bKinv", None, OFFER), cfg(false));
        sent(&mut d);
        d.handle_request(t0 + Duration::from_millis(300), request("CANCEL", 1, "z9hG4bKinv", None, ""));
        assert_eq!(sent(&mut d), ["200", "487"]);
        assert!(matches!(events(&mut d)[0], DialogEvent::Ended { by: EndedBy::Cancel, .. }));
        // The ring timer no longer answers.
        d.handle_timeout(t0 + Duration::from_millis(800));
        assert_eq!(sent(&mut d), ["487"]);
        d.handle_request(t0 + Duration::from_millis(900), request("ACK", 1, "z9hG4bKinv", Some("local"), ""));
        assert!(d.is_terminated());
        assert_eq!(d.poll_timeout(), None);
        // A CANCEL for another transaction gets 481.
        let mut d = UasDialog::new(t0, request("INVITE", 1, "z9hG4bKinv", None, OFFER), cfg(false));
        sent(&mut d);
        d.handle_request(t0, request("CANCEL", 1, "z9hG4bKother", None, ""));
        assert_eq!(sent(&mut d), ["481"]);
    }

    #[test]
    fn caller_bye_ends_the_call_and_ours_is_retransmitted_until_answered() {
        let t0 = Instant::now();
        let mut d = answered(t0, false, OFFER);
        d.handle_request(t0, request("ACK", 1, "z9hG4bKack", Some("local"), ""));
        events(&mut d);
        d.handle_request(t0, request("BYE", 2, "z9hG4bKbye", Some("local"), ""));
        assert_eq!(sent(&mut d), ["200"]);
        assert!(matches!(events(&mut d)[0], DialogEvent::Ended { by: EndedBy::Caller, .. }));
        assert!(d.is_terminated());

        let mut d = answered(t0, false, OFFER);
        d.handle_request(t0, request("ACK", 1, "z9hG4bKack", Some("local"), ""));
        events(&mut d);
        d.hangup(t0, EndedBy::Agent, "done");
        assert_eq!(sent(&mut d), ["BYE"]);
        d.handle_timeout(t0 + Duration::from_millis(500));
        assert_eq!(sent(&mut d), ["BYE"]);
        d.handle_response(t0, response(200, d.local_cseq, "BYE"));
        assert!(d.is_terminated());
    }

    #[test]
    fn bye_without_our_tag_is_481() {
        let t0 = Instant::now();
        let mut d = answered(t0, false, OFFER);
        d.handle_request(t0, request("BYE", 2, "z9hG4bKbye", Some("someone-else"), ""));
        assert_eq!(sent(&mut d), ["481"]);
        assert!(!d.is_terminated());
    }

    #[test]
    fn info_and_reinvite_without_our_tag_are_481_too() {
        let t0 = Instant::now();
        let mut d = answered(t0, false, OFFER);
        d.handle_request(t0, request("INFO", 2, "z9hG4bKinfo", Some("someone-else"), ""));
        // Before the ACK a re-INVITE of ours would be 491; one from outside the dialog is 481 first.
        d.handle_request(t0, request("INVITE", 3, "z9hG4bKre", Some("someone-else"), OFFER));
        assert_eq!(sent(&mut d), ["481", "481"]);
        assert!(events(&mut d).is_empty());
    }

    /// A dialog whose INVITE came through two Record-Route proxies, answered at `t0 + 1 s`.
    fn behind_two_proxies(t0: Instant) -> UasDialog {
        let invite = testing::invite()
            .branch("z9hG4bKinv")
            .to("<sip:owner@127.0.0.1>")
            .headers("Record-Route: <sip:p1@10.0.0.1;lr>, <sip:p2@10.0.0.2;lr>\r\n")
            .sdp(OFFER)
            .read();
        let mut d = UasDialog::new(t0, invite, cfg(false));
        d.handle_timeout(t0 + Duration::from_secs(1));
        d
    }

    #[test]
    fn our_bye_follows_the_route_set_with_the_dialog_identity() {
        let t0 = Instant::now();
        let mut d = behind_two_proxies(t0);
        sent(&mut d);
        d.hangup(t0 + Duration::from_secs(1), EndedBy::Agent, "done");
        let bye = d.poll_transmit().unwrap();
        // Loose routing: to the first route, with the remote target (the caller's Contact) as Request-URI.
        assert_eq!(bye.dest, "10.0.0.1:5060".parse().unwrap());
        assert_eq!(
            String::from_utf8(bye.bytes).unwrap(),
            format!(
                "BYE sip:caller@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK2a2;rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:owner@127.0.0.1>;tag=local\r\n\
                 To: <sip:+15551230001@127.0.0.1>;tag=caller\r\nCall-ID: c1\r\nCSeq: 2 BYE\r\n\
                 Route: <sip:p1@10.0.0.1;lr>\r\nRoute: <sip:p2@10.0.0.2;lr>\r\nUser-Agent: {}\r\n\
                 Content-Length: 0\r\n\r\n",
                crate::USER_AGENT
            )
        );
    }

    #[test]
    fn late_offer_offers_in_the_200_and_reads_the_ack() {
        let t0 = Instant::now();
        let mut d = answered(t0, false, "");
        let answer = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4100 RTP/AVP 0\r\n";
        d.handle_request(t0, request("ACK", 1, "z9hG4bKack", Some("local"), answer));
        let ev = events(&mut d);
        let DialogEvent::Confirmed { negotiated, remote_rtp, .. } = &ev[0] else { panic!("{ev:?}") };
        assert_eq!(negotiated.law, crate::media::g711::Law::Pcmu);
        assert_eq!(*remote_rtp, Some("127.0.0.1:4100".parse().unwrap()));
    }

    #[test]
    fn no_common_codec_is_488() {
        let t0 = Instant::now();
        let sdp = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 18\r\n";
        let mut d = UasDialog::new(t0, request("INVITE", 1, "z9hG4bKinv", None, sdp), cfg(false));
        assert_eq!(sent(&mut d), ["488"]);
        assert!(matches!(events(&mut d)[0], DialogEvent::Ended { by: EndedBy::Error, .. }));
    }

    #[test]
    fn reinvite_holds_and_moves_the_call_without_dropping_it() {
        let t0 = Instant::now();
        let mut d = answered(t0, false, OFFER);
        d.handle_request(t0, request("ACK", 1, "z9hG4bKack", Some("local"), ""));
        events(&mut d);
        let hold = OFFER.replace("m=audio 4000", "m=audio 4002") + "a=sendonly\r\n";
        d.handle_request(t0, request("INVITE", 2, "z9hG4bKre", Some("local"), &hold));
        assert_eq!(sent(&mut d), ["200"]);
        let ev = events(&mut d);
        let DialogEvent::MediaChanged { remote_rtp, direction, .. } = &ev[0] else { panic!("{ev:?}") };
        assert_eq!(*direction, Direction::SendOnly);
        assert_eq!(*remote_rtp, Some("127.0.0.1:4002".parse().unwrap()));
        // The 200 for the re-INVITE is retransmitted until its ACK.
        d.handle_timeout(t0 + Duration::from_millis(500));
        assert_eq!(sent(&mut d), ["200"]);
        d.handle_request(t0, request("ACK", 2, "z9hG4bKack2", Some("local"), ""));
        d.handle_timeout(t0 + Duration::from_millis(2000));
        assert!(sent(&mut d).is_empty());
        assert!(d.is_confirmed());
        // A stale (older CSeq) re-INVITE changes nothing.
        d.handle_request(t0, request("INVITE", 1, "z9hG4bKold", Some("local"), OFFER));
        assert!(sent(&mut d).is_empty());
    }

    /// A call answered and acknowledged, its events drained.
    fn confirmed(t0: Instant, reliable: bool) -> UasDialog {
        let mut d = answered(t0, reliable, OFFER);
        d.handle_request(t0 + Duration::from_millis(1010), request("ACK", 1, "z9hG4bKack", Some("local"), ""));
        assert!(matches!(events(&mut d)[..], [DialogEvent::Confirmed { .. }]));
        d
    }

    /// A NOTIFY from the caller in our dialog.
    fn notify(cseq: u32, event: &str, state: &str, sipfrag: &str) -> Request {
        testing::request("NOTIFY", cseq)
            .to_tag(Some("local"))
            .headers(&format!("Event: {event}\r\nSubscription-State: {state}\r\n"))
            .body("message/sipfrag;version=2.0", sipfrag)
            .read()
    }

    fn refer_event(id: u32, event: ReferEvent) -> DialogEvent {
        DialogEvent::Refer { id, event }
    }

    fn texts(d: &mut UasDialog) -> Vec<String> {
        std::iter::from_fn(|| d.poll_transmit()).map(|t| String::from_utf8(t.bytes).unwrap()).collect()
    }

    #[test]
    fn refer_follows_the_route_set_with_refer_to_and_referred_by() {
        let t0 = Instant::now();
        let mut d = behind_two_proxies(t0);
        d.handle_request(t0 + Duration::from_secs(1), request("ACK", 1, "z9hG4bKack", Some("local"), ""));
        sent(&mut d);
        events(&mut d);
        let t = t0 + Duration::from_secs(5);
        assert_eq!(d.refer(t, "sip:oncall@10.0.0.7"), Ok(2));
        let refer = d.poll_transmit().unwrap();
        // Like our BYE: to the first route, the remote target as Request-URI. No Event header: REFER implies it.
        assert_eq!(refer.dest, "10.0.0.1:5060".parse().unwrap());
        assert_eq!(
            String::from_utf8(refer.bytes).unwrap(),
            format!(
                "REFER sip:caller@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK2a2;rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:owner@127.0.0.1>;tag=local\r\n\
                 To: <sip:+15551230001@127.0.0.1>;tag=caller\r\nCall-ID: c1\r\nCSeq: 2 REFER\r\n\
                 Route: <sip:p1@10.0.0.1;lr>\r\nRoute: <sip:p2@10.0.0.2;lr>\r\n\
                 Contact: <sip:backstop@127.0.0.1:5060>\r\n\
                 Refer-To: <sip:oncall@10.0.0.7>\r\nReferred-By: <sip:owner@127.0.0.1>\r\n\
                 User-Agent: {}\r\nContent-Length: 0\r\n\r\n",
                crate::USER_AGENT
            )
        );
        assert_eq!(d.refer(t, "tel:+15551230000"), Err(ReferError::Busy), "one REFER transaction at a time");
        d.handle_response(t, response(202, 2, "REFER"));
        assert_eq!(events(&mut d), [refer_event(2, ReferEvent::Accepted { code: 202 })]);
        // The next one may go while the first subscription is open; a tel: URI goes in angle brackets.
        assert_eq!(d.refer(t, "tel:+15551230000"), Ok(3));
        let text = texts(&mut d).remove(0);
        assert!(text.contains("CSeq: 3 REFER\r\n") && text.contains("\r\nRefer-To: <tel:+15551230000>\r\n"), "{text}");
        d.hangup(t, EndedBy::Agent, "done");
        let text = texts(&mut d).remove(0);
        assert!(text.starts_with("BYE ") && text.contains("CSeq: 4 BYE\r\n"), "{text}");
    }

    #[test]
    fn refer_is_resent_on_udp_until_answered_and_not_on_tcp_where_timer_f_still_runs() {
        let t0 = Instant::now();
        let t = t0 + Duration::from_secs(5);
        let mut d = confirmed(t0, false);
        let id = d.refer(t, "sip:oncall@10.0.0.7").unwrap();
        assert_eq!(sent(&mut d), ["REFER"]);
        assert_eq!(d.poll_timeout(), Some(t + Duration::from_millis(500)));
        d.handle_timeout(t + Duration::from_millis(500));
        assert_eq!(sent(&mut d), ["REFER"]);
        d.handle_response(t, response(100, id, "REFER"));
        d.handle_timeout(t + Duration::from_millis(1500));
        assert_eq!(sent(&mut d), ["REFER"], "a provisional answer is not the final one");
        // A response to another request is not the REFER's.
        d.handle_response(t, response(202, id, "BYE"));
        d.handle_response(t, response(202, id + 1, "REFER"));
        assert!(events(&mut d).is_empty());
        d.handle_response(t, response(202, id, "REFER"));
        assert_eq!(events(&mut d), [refer_event(id, ReferEvent::Accepted { code: 202 })]);
        assert_eq!(d.poll_timeout(), None);
        // A retransmitted 202 is nothing new.
        d.handle_response(t, response(202, id, "REFER"));
        assert!(events(&mut d).is_empty());

        let mut d = confirmed(t0, true);
        let id = d.refer(t, "sip:oncall@10.0.0.7").unwrap();
        assert_eq!(sent(&mut d), ["REFER"]);
        assert_eq!(d.poll_timeout(), Some(t + Duration::from_secs(32)), "only Timer F on TCP");
        d.handle_timeout(t + Duration::from_secs(32));
        assert!(sent(&mut d).is_empty());
        assert_eq!(events(&mut d), [refer_event(id, ReferEvent::Rejected { code: 408 })]);
        assert!(d.is_confirmed(), "an unanswered REFER leaves the call up");
        // Its subscription is gone, and another REFER may go.
        d.handle_request(t, notify(2, &format!("refer;id={id}"), "active", "SIP/2.0 100 Trying\r\n"));
        assert_eq!(sent(&mut d), ["481"]);
        assert_eq!(d.refer(t, "sip:backup@10.0.0.8"), Ok(id + 1));
    }

    #[test]
    fn a_transfer_202_notify_100_notify_200_then_our_bye_after_the_last_200() {
        let t0 = Instant::now();
        let t = t0 + Duration::from_secs(5);
        let mut d = confirmed(t0, false);
        let id = d.refer(t, "sip:oncall@10.0.0.7").unwrap();
        sent(&mut d);
        d.handle_response(t, response(202, id, "REFER"));
        d.handle_request(t, notify(2, &format!("refer;id={id}"), "active;expires=60", "SIP/2.0 100 Trying\r\n"));
        let ok = texts(&mut d).remove(0);
        assert!(ok.starts_with("SIP/2.0 200 OK\r\n"), "{ok}");
        assert!(ok.contains("To: <sip:+15559990000@127.0.0.1>;tag=local\r\n"), "{ok}");
        assert!(ok.contains("CSeq: 2 NOTIFY\r\n") && ok.contains("Contact: <sip:backstop@127.0.0.1:5060>\r\n"), "{ok}");
        d.handle_request(t, notify(3, "refer", "terminated;reason=noresource", "SIP/2.0 200 OK\r\n"));
        assert_eq!(
            events(&mut d),
            [
                refer_event(id, ReferEvent::Accepted { code: 202 }),
                refer_event(id, ReferEvent::Notify { code: 100, terminated: false }),
                refer_event(id, ReferEvent::Notify { code: 200, terminated: true }),
            ]
        );
        // The call hangs up on that news: the BYE goes after the 200 to the NOTIFY.
        d.hangup(t, EndedBy::Agent, "transferred");
        assert_eq!(sent(&mut d), ["200", "BYE"]);
        // A late retransmission of the final NOTIFY is still answered, and reports nothing.
        d.handle_request(t, notify(3, "refer", "terminated;reason=noresource", "SIP/2.0 200 OK\r\n"));
        assert_eq!(sent(&mut d), ["200"]);
        assert!(matches!(events(&mut d)[..], [DialogEvent::Ended { by: EndedBy::Agent, .. }]));
        d.handle_response(t, response(200, id + 1, "BYE"));
        assert!(d.is_terminated());
    }

    #[test]
    fn a_failed_transfer_leaves_the_call_up() {
        let t0 = Instant::now();
        let t = t0 + Duration::from_secs(5);
        let mut d = confirmed(t0, false);
        // 202, then the referred INVITE got 486.
        let id = d.refer(t, "sip:oncall@10.0.0.7").unwrap();
        d.handle_response(t, response(202, id, "REFER"));
        d.handle_request(
            t,
            notify(2, &format!("refer;id={id}"), "terminated;reason=noresource", "SIP/2.0 486 Busy Here"),
        );
        assert_eq!(sent(&mut d), ["REFER", "200"]);
        assert_eq!(
            events(&mut d),
            [
                refer_event(id, ReferEvent::Accepted { code: 202 }),
                refer_event(id, ReferEvent::Notify { code: 486, terminated: true }),
            ]
        );
        assert!(d.is_confirmed());
        // The REFER itself refused: no subscription, its NOTIFYs are 481.
        let id = d.refer(t, "sip:backup@10.0.0.8").unwrap();
        d.handle_response(t, response(405, id, "REFER"));
        assert_eq!(events(&mut d), [refer_event(id, ReferEvent::Rejected { code: 405 })]);
        d.handle_request(t, notify(3, &format!("refer;id={id}"), "active", "SIP/2.0 100 Trying"));
        assert_eq!(sent(&mut d), ["REFER", "481"]);
        // 202 and then no NOTIFY at all: the dialog keeps no timer for it (the call's walker does).
        let id = d.refer(t, "sip:third@10.0.0.9").unwrap();
        d.handle_response(t, response(202, id, "REFER"));
        assert_eq!(events(&mut d), [refer_event(id, ReferEvent::Accepted { code: 202 })]);
        assert_eq!(d.poll_timeout(), None);
        assert!(d.is_confirmed());
    }

    #[test]
    fn a_notify_that_overtakes_the_202_accepts_the_refer() {
        let t0 = Instant::now();
        let t = t0 + Duration::from_secs(5);
        let mut d = confirmed(t0, false);
        let id = d.refer(t, "sip:oncall@10.0.0.7").unwrap();
        d.handle_request(t, notify(2, &format!("refer;id={id}"), "active", "SIP/2.0 100 Trying"));
        assert_eq!(sent(&mut d), ["REFER", "200"]);
        assert_eq!(
            events(&mut d),
            [
                refer_event(id, ReferEvent::Accepted { code: 202 }),
                refer_event(id, ReferEvent::Notify { code: 100, terminated: false }),
            ]
        );
        // The REFER is no longer resent, and the 202 that comes late is no news.
        assert_eq!(d.poll_timeout(), None);
        d.handle_timeout(t + Duration::from_millis(500));
        assert!(sent(&mut d).is_empty());
        d.handle_response(t, response(202, id, "REFER"));
        assert!(events(&mut d).is_empty());
    }

    #[test]
    fn notifies_that_are_not_ours_get_481_and_unreadable_ones_200() {
        let t0 = Instant::now();
        let t = t0 + Duration::from_secs(5);
        let mut d = confirmed(t0, false);
        d.handle_request(t, notify(2, "refer", "active", "SIP/2.0 100 Trying"));
        assert_eq!(sent(&mut d), ["481"], "no REFER yet");
        let id = d.refer(t, "sip:oncall@10.0.0.7").unwrap();
        sent(&mut d);
        d.handle_request(t, notify(3, "refer;id=999", "active", "SIP/2.0 100 Trying"));
        d.handle_request(t, notify(4, &format!("presence;id={id}"), "active", "SIP/2.0 100 Trying"));
        let outside = testing::request("NOTIFY", 5)
            .to_tag(Some("someone-else"))
            .headers(&format!("Event: refer;id={id}\r\nSubscription-State: active\r\n"))
            .body("message/sipfrag", "SIP/2.0 100 Trying")
            .read();
        d.handle_request(t, outside);
        assert_eq!(sent(&mut d), ["481", "481", "481"]);
        assert!(events(&mut d).is_empty());
        // Ours, but its body says nothing readable: 200, and the subscription goes on.
        d.handle_request(t, notify(6, &format!("refer;id={id}"), "active", "Trying, sort of"));
        assert_eq!(sent(&mut d), ["200"]);
        assert_eq!(events(&mut d), [refer_event(id, ReferEvent::Accepted { code: 202 })]);
        // Ending it without a status says so.
        d.handle_request(t, notify(7, &format!("refer;id={id}"), "terminated;reason=timeout", ""));
        assert_eq!(sent(&mut d), ["200"]);
        assert_eq!(events(&mut d), [refer_event(id, ReferEvent::Terminated)]);
        // The caller may not transfer us.
        let refer = testing::request("REFER", 8).to_tag(Some("local")).headers("Refer-To: <sip:x@y>\r\n").read();
        d.handle_request(t, refer);
        let text = texts(&mut d).remove(0);
        assert!(text.starts_with("SIP/2.0 405 "), "{text}");
        assert!(text.contains("Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, NOTIFY\r\n"), "{text}");
        assert!(d.is_confirmed());
    }

    #[test]
    fn the_caller_hanging_up_mid_transfer_ends_it_cleanly() {
        let t0 = Instant::now();
        let t = t0 + Duration::from_secs(5);
        let mut d = confirmed(t0, false);
        let id = d.refer(t, "sip:oncall@10.0.0.7").unwrap();
        sent(&mut d);
        d.handle_request(t, request("BYE", 2, "z9hG4bKbye", Some("local"), ""));
        assert_eq!(sent(&mut d), ["200"]);
        assert!(matches!(events(&mut d)[..], [DialogEvent::Ended { by: EndedBy::Caller, .. }]));
        assert!(d.is_terminated());
        // No more REFERs, and what comes late is no news.
        assert_eq!(d.poll_timeout(), None);
        d.handle_timeout(t + Duration::from_millis(500));
        assert!(sent(&mut d).is_empty());
        d.handle_response(t, response(202, id, "REFER"));
        d.handle_request(t, notify(3, &format!("refer;id={id}"), "terminated", "SIP/2.0 200 OK"));
        assert_eq!(sent(&mut d), ["200"]);
        assert!(events(&mut d).is_empty());
        assert_eq!(d.refer(t, "sip:backup@10.0.0.8"), Err(ReferError::NotConfirmed));

        // Our own hang-up while a REFER is unanswered stops it too.
        let mut d = confirmed(t0, false);
        d.refer(t, "sip:oncall@10.0.0.7").unwrap();
        d.hangup(t, EndedBy::Timeout, "maximum call duration reached");
        assert_eq!(sent(&mut d), ["REFER", "BYE"]);
        d.handle_timeout(t + Duration::from_millis(500));
        assert_eq!(sent(&mut d), ["BYE"]);
    }

    #[test]
    fn refer_needs_a_confirmed_call_and_a_usable_target() {
        let t0 = Instant::now();
        let mut d = UasDialog::new(t0, request("INVITE", 1, "z9hG4bKinv", None, OFFER), cfg(false));
        assert_eq!(d.refer(t0, "sip:oncall@10.0.0.7"), Err(ReferError::NotConfirmed), "ringing");
        let mut d = answered(t0, false, OFFER);
        assert_eq!(d.refer(t0, "sip:oncall@10.0.0.7"), Err(ReferError::NotConfirmed), "no ACK yet");
        let mut d = confirmed(t0, false);
        for bad in ["", "oncall", "mailto:a@b", "sip:", "sip:a@b>\r\nX: y", "sip:a b@c", "<sip:a@b"] {
            assert_eq!(d.refer(t0, bad), Err(ReferError::BadTarget(bad.into())), "{bad:?}");
        }
        assert!(sent(&mut d).is_empty());
        assert_eq!(d.refer(t0, " <sips:oncall@pbx.example;transport=tls> "), Ok(2));
        assert!(texts(&mut d)[0].contains("\r\nRefer-To: <sips:oncall@pbx.example;transport=tls>\r\n"));
        assert_eq!(ReferError::Busy.to_string(), "a transfer is already in progress");
    }

    #[test]
    fn notifies_share_the_cseq_space_without_disturbing_reinvites() {
        let t0 = Instant::now();
        let t = t0 + Duration::from_secs(5);
        let mut d = confirmed(t0, false);
        let id = d.refer(t, "sip:oncall@10.0.0.7").unwrap();
        d.handle_response(t, response(202, id, "REFER"));
        sent(&mut d);
        events(&mut d);
        // NOTIFY 3, then a re-INVITE 4: a new re-INVITE.
        d.handle_request(t, notify(3, "refer", "active", "SIP/2.0 100 Trying"));
        let hold = OFFER.to_string() + "a=sendonly\r\n";
        d.handle_request(t, request("INVITE", 4, "z9hG4bKre4", Some("local"), &hold));
        assert_eq!(sent(&mut d), ["200", "200"]);
        let ev = events(&mut d);
        assert!(matches!(ev[1], DialogEvent::MediaChanged { direction: Direction::SendOnly, .. }), "{ev:?}");
        // Its retransmission is still absorbed into the pending 2xx.
        d.handle_request(t, request("INVITE", 4, "z9hG4bKre4", Some("local"), &hold));
        assert_eq!(sent(&mut d), ["200"]);
        d.handle_request(t, request("ACK", 4, "z9hG4bKack4", Some("local"), ""));
        events(&mut d);
        // A re-INVITE 5 overtaken by NOTIFY 6 is still new.
        d.handle_request(t, notify(6, "refer", "active", "SIP/2.0 180 Ringing"));
        d.handle_request(t, request("INVITE", 5, "z9hG4bKre5", Some("local"), OFFER));
        assert_eq!(sent(&mut d), ["200", "200"]);
        let ev = events(&mut d);
        assert!(matches!(ev[1], DialogEvent::MediaChanged { direction: Direction::SendRecv, .. }), "{ev:?}");
        // And a stale one (below the last re-INVITE) is still ignored.
        d.handle_request(t, request("INVITE", 4, "z9hG4bKre4", Some("local"), &hold));
        assert_eq!(sent(&mut d), [] as [&str; 0], "re-INVITE 4 is over");
        d.handle_request(t, request("INVITE", 5, "z9hG4bKre5", Some("local"), OFFER));
        assert_eq!(sent(&mut d), ["200"], "re-INVITE 5 is still waiting for its ACK");
        d.handle_request(t, request("ACK", 5, "z9hG4bKack5", Some("local"), ""));
        events(&mut d);
        d.handle_request(t, request("INVITE", 2, "z9hG4bKold", Some("local"), &hold));
        assert!(sent(&mut d).is_empty());
        assert!(events(&mut d).is_empty());
    }

    #[test]
    fn decline_refuses_a_ringing_call_with_603_until_its_ack() {
        let t0 = Instant::now();
        let mut d = UasDialog::new(t0, request("INVITE", 1, "z9hG4bKinv", None, OFFER), cfg(false));
        assert_eq!(sent(&mut d), ["100", "180"]);
        d.decline(t0, "junk caller");
        assert_eq!(sent(&mut d), ["603"]);
        assert_eq!(events(&mut d), [DialogEvent::Ended { by: EndedBy::Agent, detail: "junk caller".into() }]);
        // Never answered; the 603 is resent (Timer G) until the ACK.
        d.handle_timeout(t0 + Duration::from_millis(1000));
        assert_eq!(sent(&mut d), ["603"]);
        d.handle_request(t0, request("ACK", 1, "z9hG4bKinv", Some("local"), ""));
        assert!(d.is_terminated());
        // Too late once answered.
        let mut d = answered(t0, false, OFFER);
        d.decline(t0, "junk caller");
        assert!(sent(&mut d).is_empty() && events(&mut d).is_empty());
    }

    #[test]
    fn ended_by_reads_back_what_it_writes() {
        for by in [EndedBy::Caller, EndedBy::Agent, EndedBy::Timeout, EndedBy::Cancel, EndedBy::Error] {
            let json = serde_json::to_string(&by).unwrap();
            assert_eq!(json, format!("\"{}\"", by.as_str()));
            assert_eq!(serde_json::from_str::<EndedBy>(&json).unwrap(), by);
        }
        assert!(serde_json::from_str::<EndedBy>("\"Caller\"").is_err());
    }
}
