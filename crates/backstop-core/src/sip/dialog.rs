//! The UAS side of one call's INVITE dialog, as a Sans-IO state machine.
//!
//! It owns everything RFC 3261 asks of the callee: 100 and 180 at once, the
//! 200 after a configurable ring, the 2xx retransmitted on T1/T2 until the ACK
//! (§13.3.1.4) and a BYE after 64×T1 without one, absorbed INVITE
//! retransmissions, CANCEL (§9.2) with a 487 retransmitted until its ACK,
//! BYE either way with Timer E/F retransmission of ours, re-INVITE for hold
//! and address changes, and late offers (SDP in the ACK).
//!
//! Time is an input: `handle_*` take `now`, `poll_timeout` says when to call
//! `handle_timeout` next. Nothing here reads a clock or touches a socket.

use crate::sip::Transport;
use crate::sip::message::{ALLOW, Method, NameAddr, Request, Response, build_response, split_name_addrs};
use crate::sip::sdp::{Direction, LocalSession, Negotiated, RemoteMedia};
use rsipstack::sip::{Headers, Method as SipMethod, Request as SipRequest, Uri, Version, headers::make_header};
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
    /// True on TCP: no retransmissions (the transport is reliable).
    pub reliable: bool,
    /// Send 100 and 180 while ringing. Off for a source that has not shown it
    /// can receive (it may be spoofed): the 200 alone must fit what it sent.
    pub provisional: bool,
    /// The SIP address we are reachable at for this call (Via, Contact).
    pub local_sip: SocketAddr,
    /// The transport of the INVITE, for our Via and Contact.
    pub transport: Transport,
    /// Our RTP address for this call (SDP).
    pub local_rtp: SocketAddr,
    /// Random values (tags, branch, SDP session id) supplied by the caller so the machine stays deterministic.
    pub local_tag: String,
    pub seed: u64,
}

/// Why the dialog ended; becomes the lead's `ended_by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndedBy {
    Caller,
    Agent,
    Timeout,
    Cancel,
    Error,
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
    /// The dialog is over; `detail` says why for the log.
    Ended { by: EndedBy, detail: String },
}

/// A SIP message to send: to `dest` on UDP, or on the call's connection on TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipTransmit {
    pub dest: SocketAddr,
    pub bytes: Vec<u8>,
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

/// A response we retransmit until acknowledged.
#[derive(Debug, Clone)]
struct Retransmit {
    /// Resent on reliable transports too: true for 2xx, which the UAS core
    /// retransmits end to end (§13.3.1.4) because a later hop may be UDP.
    end_to_end: bool,
    bytes: Vec<u8>,
    dest: SocketAddr,
    next: Instant,
    interval: Duration,
    give_up: Instant,
    /// CSeq of the INVITE the response answers (the ACK carries the same).
    cseq: u32,
}

impl Retransmit {
    /// First resend after T1; give up after 64×T1.
    fn new(bytes: Vec<u8>, dest: SocketAddr, now: Instant, t1: Duration, cseq: u32, end_to_end: bool) -> Retransmit {
        Retransmit { end_to_end, bytes, dest, next: now + t1, interval: t1, give_up: now + t1 * 64, cseq }
    }

    /// At `now`: true once the give-up time (64×T1) has passed; otherwise resend
    /// when due (never on a reliable transport), doubling the interval up to T2.
    fn gave_up(&mut self, now: Instant, t2: Duration, reliable: bool, out: &mut VecDeque<SipTransmit>) -> bool {
        if now >= self.give_up {
            return true;
        }
        if now >= self.next {
            if !reliable || self.end_to_end {
                out.push_back(SipTransmit { dest: self.dest, bytes: self.bytes.clone() });
            }
            self.interval = (self.interval * 2).min(t2);
            self.next = now + self.interval;
        }
        false
    }
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
    pending_2xx: Option<Retransmit>,
    pending_non2xx: Option<Retransmit>,
    /// Our BYE and its Timer E/F.
    bye: Option<Retransmit>,
    local: LocalSession,
    /// The offer from the INVITE; `None` on a late offer.
    offer: Option<RemoteMedia>,
    negotiated: Option<Negotiated>,
    remote_target: Uri,
    route_set: Vec<String>,
    /// Where requests we originate go.
    request_dest: SocketAddr,
    local_cseq: u32,
    remote_cseq: u32,
    events: VecDeque<DialogEvent>,
    transmits: VecDeque<SipTransmit>,
    ended: Option<EndedBy>,
}

impl UasDialog {
    /// Start a dialog for a new INVITE: sends 100 and 180 (or 488 for an
    /// unusable offer) and schedules the answer.
    pub fn new(now: Instant, invite: Request, cfg: DialogConfig) -> UasDialog {
        let reply_dest = reply_dest(&invite, cfg.reliable);
        let remote_target = invite.contact.as_ref().map(|c| c.uri.clone()).unwrap_or_else(|| invite.from.uri.clone());
        let route_set: Vec<String> = invite.frame.get_all("Record-Route").flat_map(split_name_addrs).collect();
        let request_dest = request_dest(&route_set, &remote_target, invite.source, cfg.reliable);
        let local = LocalSession { session_id: cfg.seed & 0xFFFF_FFFF, version: 1, rtp_addr: cfg.local_rtp };
        let mut d = UasDialog {
            state: State::Ringing,
            reply_dest,
            last_invite_response: None,
            answer_at: None,
            pending_2xx: None,
            pending_non2xx: None,
            bye: None,
            local,
            offer: None,
            negotiated: None,
            remote_target,
            route_set,
            request_dest,
            local_cseq: (cfg.seed >> 40) as u32 % 10_000 + 1,
            remote_cseq: invite.cseq,
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

    pub fn call_id(&self) -> &str {
        &self.invite.call_id
    }

    pub fn invite(&self) -> &Request {
        &self.invite
    }

    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    pub fn ended_by(&self) -> Option<EndedBy> {
        self.ended
    }

    pub fn is_confirmed(&self) -> bool {
        self.state == State::Confirmed
    }

    fn reject_initial(mut self, now: Instant, code: u16, why: &str) -> UasDialog {
        let bytes = self.respond_invite(code, true, &[("Warning", format!("399 backstop \"{why}\""))], None);
        self.send_invite_response(bytes.clone());
        self.start_non2xx(now, bytes);
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
        format!("<sip:backstop@{}{t}>", fmt_host_port(self.cfg.local_sip))
    }

    fn end(&mut self, by: EndedBy, detail: String) {
        if self.ended.is_none() {
            self.ended = Some(by);
            self.events.push_back(DialogEvent::Ended { by, detail });
        }
    }

    fn start_non2xx(&mut self, now: Instant, bytes: Vec<u8>) {
        self.state = State::Rejected;
        self.answer_at = None;
        // Timer G/H; on TCP we only wait for the ACK (Timer H) without resending.
        self.pending_non2xx = Some(Retransmit::new(bytes, self.reply_dest, now, self.cfg.t1, self.invite.cseq, false));
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
        self.pending_2xx = Some(Retransmit::new(bytes, self.reply_dest, now, self.cfg.t1, self.invite.cseq, true));
        self.state = State::Accepted;
        self.events.push_back(DialogEvent::Answered);
    }

    /// Hang up from our side: BYE once the call is confirmed (or accepted),
    /// or a 480 while still ringing.
    pub fn hangup(&mut self, now: Instant, by: EndedBy, detail: &str) {
        match self.state {
            State::Ringing => {
                let bytes = self.respond_invite(480, true, &[], None);
                self.send_invite_response(bytes.clone());
                self.start_non2xx(now, bytes);
                self.end(by, detail.to_string());
            }
            State::Accepted | State::Confirmed => {
                self.pending_2xx = None;
                self.send_bye(now);
                self.end(by, detail.to_string());
            }
            _ => {}
        }
    }

    fn send_bye(&mut self, now: Instant) {
        self.local_cseq += 1;
        let branch = format!("z9hG4bK{:x}{}", self.cfg.seed, self.local_cseq);
        let mut headers = Headers::default();
        headers.push(make_header(
            "Via",
            format!(
                "SIP/2.0/{} {};branch={branch};rport",
                self.cfg.transport.via_name(),
                fmt_host_port(self.cfg.local_sip)
            ),
        ));
        headers.push(make_header("Max-Forwards", "70".into()));
        let mut from = self.invite.frame.get("To").unwrap_or_default().to_string();
        if NameAddr::parse(&from).is_some_and(|t| t.tag.is_none()) {
            from.push_str(";tag=");
            from.push_str(&self.cfg.local_tag);
        }
        headers.push(make_header("From", from));
        headers.push(make_header("To", self.invite.frame.get("From").unwrap_or_default().to_string()));
        headers.push(make_header("Call-ID", self.invite.call_id.clone()));
        headers.push(make_header("CSeq", format!("{} BYE", self.local_cseq)));
        for route in &self.route_set {
            headers.push(make_header("Route", route.clone()));
        }
        headers.push(make_header("User-Agent", crate::USER_AGENT.into()));
        headers.push(make_header("Content-Length", "0".into()));
        let req = SipRequest {
            method: SipMethod::Bye,
            uri: self.remote_target.clone(),
            version: Version::V2,
            headers,
            body: Vec::new(),
        };
        let bytes = req.to_bytes();
        self.transmits.push_back(SipTransmit { dest: self.request_dest, bytes: bytes.clone() });
        self.bye = Some(Retransmit::new(bytes, self.request_dest, now, self.cfg.t1, self.local_cseq, false));
        self.state = State::Terminating;
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

    /// A request for this call (same Call-ID) arrived.
    pub fn handle_request(&mut self, now: Instant, req: Request) {
        let dest = reply_dest(&req, self.cfg.reliable);
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
                if req.cseq != self.invite.cseq || req.via.branch != self.invite.via.branch {
                    let t = self.reply_to(&req, dest, 481, &[], None);
                    self.transmits.push_back(t);
                    return;
                }
                let t = self.reply_to(&req, dest, 200, &[], None);
                self.transmits.push_back(t);
                if self.state == State::Ringing {
                    let bytes = self.respond_invite(487, true, &[], None);
                    self.send_invite_response(bytes.clone());
                    self.start_non2xx(now, bytes);
                    self.end(EndedBy::Cancel, "caller cancelled before answer".into());
                }
            }
            Method::Bye => {
                if req.to.tag.as_deref() != Some(self.cfg.local_tag.as_str()) {
                    let t = self.reply_to(&req, dest, 481, &[], None);
                    self.transmits.push_back(t);
                    return;
                }
                let t = self.reply_to(&req, dest, 200, &[], None);
                self.transmits.push_back(t);
                self.remote_cseq = self.remote_cseq.max(req.cseq);
                self.pending_2xx = None;
                self.bye = None;
                self.end(EndedBy::Caller, "caller sent BYE".into());
                self.state = State::Terminated;
            }
            Method::Options => {
                let t = self.reply_to(
                    &req,
                    dest,
                    200,
                    &[("Allow", ALLOW.into()), ("Accept", "application/sdp".into())],
                    None,
                );
                self.transmits.push_back(t);
            }
            Method::Info => {
                if req.to.tag.as_deref() != Some(self.cfg.local_tag.as_str()) {
                    let t = self.reply_to(&req, dest, 481, &[], None);
                    self.transmits.push_back(t);
                    return;
                }
                let t = self.reply_to(&req, dest, 200, &[], None);
                self.transmits.push_back(t);
                let content_type = req.frame.get("Content-Type").unwrap_or("").to_string();
                self.events.push_back(DialogEvent::Info { content_type, body: req.frame.body });
            }
            Method::NotAllowed(_) => {
                let t = self.reply_to(&req, dest, 405, &[("Allow", ALLOW.into())], None);
                self.transmits.push_back(t);
            }
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
        if req.to.tag.as_deref() != Some(self.cfg.local_tag.as_str()) {
            let t = self.reply_to(&req, dest, 481, &[], None);
            self.transmits.push_back(t);
            return;
        }
        if self.state != State::Confirmed {
            let t = self.reply_to(&req, dest, 491, &[], None);
            self.transmits.push_back(t);
            return;
        }
        if req.cseq <= self.remote_cseq {
            // A retransmitted re-INVITE: the pending 2xx covers it.
            if let Some(p) = &self.pending_2xx
                && p.cseq == req.cseq
            {
                self.transmits.push_back(SipTransmit { dest, bytes: p.bytes.clone() });
            }
            return;
        }
        if self.pending_2xx.is_some() {
            let t = self.reply_to(&req, dest, 491, &[], None);
            self.transmits.push_back(t);
            return;
        }
        self.remote_cseq = req.cseq;
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
                    let t = self.reply_to(&req, dest, 488, &[], None);
                    self.transmits.push_back(t);
                    return;
                }
            }
        };
        let mut extra = vec![("Contact", self.contact()), ("Allow", ALLOW.into())];
        extra.extend(req.frame.get_all("Record-Route").map(|rr| ("Record-Route", rr.to_string())));
        let t = self.reply_to(&req, dest, 200, &extra, Some(&sdp));
        self.pending_2xx = Some(Retransmit::new(t.bytes.clone(), dest, now, self.cfg.t1, req.cseq, true));
        self.transmits.push_back(t);
        if let Some(ev) = changed {
            self.events.push_back(ev);
        }
    }

    /// A response for this call: only responses to our BYE matter.
    pub fn handle_response(&mut self, _now: Instant, resp: Response) {
        if resp.cseq_method != "BYE" || resp.code < 200 {
            return;
        }
        if let Some(bye) = &self.bye
            && bye.cseq == resp.cseq
        {
            self.bye = None;
            self.state = State::Terminated;
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
        let (reliable, t2) = (self.cfg.reliable, self.cfg.t2);
        let out = &mut self.transmits;
        if self.pending_2xx.as_mut().is_some_and(|p| p.gave_up(now, t2, reliable, out)) {
            self.pending_2xx = None;
            self.send_bye(now);
            self.end(EndedBy::Timeout, "no ACK for 2xx within 64*T1".into());
        }
        let out = &mut self.transmits;
        if self.pending_non2xx.as_mut().is_some_and(|p| p.gave_up(now, t2, reliable, out)) {
            self.pending_non2xx = None;
            self.state = State::Terminated;
        }
        let out = &mut self.transmits;
        if self.bye.as_mut().is_some_and(|p| p.gave_up(now, t2, reliable, out)) {
            self.bye = None;
            self.state = State::Terminated;
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = self.answer_at;
        for p in [&self.pending_2xx, &self.pending_non2xx, &self.bye].into_iter().flatten() {
            let at = if self.cfg.reliable && !p.end_to_end { p.give_up } else { p.next.min(p.give_up) };
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

pub fn fmt_host_port(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Incoming, read_message};

    const CALLER: &str = "127.0.0.1:5070";
    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

    fn request(method: &str, cseq: u32, branch: &str, to_tag: Option<&str>, body: &str) -> Request {
        let to = match to_tag {
            Some(t) => format!("<sip:owner@127.0.0.1>;tag={t}"),
            None => "<sip:owner@127.0.0.1>".into(),
        };
        let ct = if body.is_empty() { String::new() } else { "Content-Type: application/sdp\r\n".into() };
        let msg = format!(
            "{method} sip:owner@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch={branch}\r\n\
             From: <sip:+15551230001@127.0.0.1>;tag=caller\r\nTo: {to}\r\nCall-ID: d1\r\nCSeq: {cseq} {method}\r\n\
             Contact: <sip:caller@{CALLER}>\r\nMax-Forwards: 70\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        match read_message(msg.as_bytes(), CALLER.parse().unwrap()) {
            Incoming::Request(r) => *r,
            other => panic!("{other:?}"),
        }
    }

    fn response(code: u16, cseq: u32, method: &str) -> Response {
        let msg = format!(
            "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=local\r\n\
             To: <sip:c@d>;tag=caller\r\nCall-ID: d1\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        );
        match read_message(msg.as_bytes(), CALLER.parse().unwrap()) {
            Incoming::Response(r) => *r,
            other => panic!("{other:?}"),
        }
    }

    fn cfg(reliable: bool) -> DialogConfig {
        DialogConfig {
            answer_after: Duration::from_millis(1000),
            t1: Duration::from_millis(500),
            t2: Duration::from_millis(4000),
            reliable,
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
}
