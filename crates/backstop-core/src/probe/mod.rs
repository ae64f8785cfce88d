//! The test call (`backstop test-call`), Sans-IO: a small SIP UAC that
//! places one call and reports what happened. The only INVITE Backstop ever
//! sends; the agent's `run` never builds a [`Probe`].
//!
//! One call, in order: the INVITE with an SDP offer (PCMU, PCMA,
//! telephone-event/8000 on 101), resent on Timer A until a provisional or
//! final response, bounded by the configured timeout (a CANCEL if it only
//! rang); a 401/407 answered once with the credentials; every final response
//! ACKed (a non-2xx in its transaction, §17.1.1.3; a 2xx end to end, again
//! for each resent 2xx); from the answer on, RTP both ways ([`media`]):
//! line noise out, the agent's audio measured and run through the VAD; the
//! keys, as RFC 4733 events, once the first prompt is heard; then a BYE and
//! its 200. A BYE from the far end is answered and ends the call.
//!
//! Driven like every core: `handle_sip`/`handle_rtp`/`handle_timeout` with
//! the time, `poll_transmit`/`poll_timeout`/`poll_event` out, and the
//! [`Findings`] at the end, which [`report::checks`] turns into pass/fail lines.

pub mod greeting;
pub mod media;
pub mod report;

use crate::media::g711::Law;
use crate::sip::auth::{Challenge, Credentials};
use crate::sip::message::{
    Incoming, Method, NameAddr, OutgoingRequest, Request, Response, branch, build_response, read_message,
    split_name_addrs,
};
use crate::sip::retransmit::Retransmit;
use crate::sip::sdp::{LocalSession, RemoteMedia};
use crate::sip::{SipTransmit, Transport, host_port};
use media::{ProbeMedia, event_code};
use rsipstack::sip::{Method as SipMethod, Uri};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// How long the CANCEL of a call that only rang may take to be settled.
const CANCEL_WAIT: Duration = Duration::from_secs(4);

/// The call to place.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// The Request-URI and To: the agent (`sip:backstop@127.0.0.1:5060`) or a public number.
    pub target: String,
    /// Where the SIP goes (the target's address, or the outbound proxy).
    pub dest: SocketAddr,
    /// `dest` is an outbound proxy (`--proxy`): in-dialog requests go there
    /// too (RFC 3261 8.1.2). Otherwise they go to the dialog's first route,
    /// or without a route set to the 2xx's Contact (12.2.1.1).
    pub outbound_proxy: bool,
    /// Our SIP and RTP addresses, as the far end should reach them.
    pub local_sip: SocketAddr,
    pub local_rtp: SocketAddr,
    /// The user part of our From (the caller's number on the far end).
    pub from_user: String,
    /// Keys to press once the first prompt is heard (0-9, *, #, A-D).
    pub keys: String,
    /// How long to wait for the answer, and then for the prompt; it also bounds the BYE.
    pub timeout: Duration,
    /// How long to go on listening after the last key (or after the prompt is heard, without keys).
    pub linger: Duration,
    pub t1: Duration,
    pub t2: Duration,
    /// Answers a 401/407 once; without them such a challenge fails the call.
    pub credentials: Option<Credentials>,
    /// Source of the Call-ID, tags, branches, SSRC and noise.
    pub seed: u64,
    /// Every prompt the agent may play first ([`greeting::Greeting`]: a
    /// `when` step's branches, each line's script), when its config is known:
    /// "prompt heard" then means one of them, not any speech (voicemail, a
    /// PBX menu). The keys then wait [`KEYS_AFTER_SPEECH`] into the speech,
    /// so there is enough of the greeting to compare before they cut it
    /// short. Empty: any speech is heard as a prompt, not identified.
    pub expected_greeting: Vec<greeting::Greeting>,
}

/// With a greeting to compare, how long after speech begins the keys are pressed.
pub const KEYS_AFTER_SPEECH: Duration = Duration::from_millis(1500);

/// What the runtime may log as the call goes.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeEvent {
    Provisional {
        code: u16,
        reason: String,
    },
    Challenged {
        code: u16,
    },
    Answered,
    /// The first RTP at the negotiated codec.
    MediaArrived {
        from: SocketAddr,
    },
    PromptHeard,
    KeysSent,
    HangingUp,
    /// The call is over: the findings are final.
    Done,
}

/// Who ended the call, and how it went.
#[derive(Debug, Clone, PartialEq)]
pub enum Hangup {
    /// No dialog was set up (or the call was not answered).
    NotInCall,
    /// Our BYE, sent at `sent`, and its final response if one came.
    Ours { sent: Instant, response: Option<(u16, String, Instant)> },
    /// The far end's BYE, which we answered 200.
    Theirs { at: Instant },
    /// Both hung up at once: the far end's BYE came (and was answered 200)
    /// while ours, sent at `sent`, was still waiting. A clean end.
    Crossed { sent: Instant, at: Instant },
}

/// Everything the call found out, for the checks.
#[derive(Debug, Clone)]
pub struct Findings {
    pub call_id: String,
    pub target: String,
    pub dest: SocketAddr,
    pub invite_sent: Instant,
    /// INVITEs resent before any response.
    pub invite_resends: u32,
    /// The 401/407 our credentials answered.
    pub challenged: Option<u16>,
    /// The last provisional response: code, reason, when.
    pub provisional: Option<(u16, String, Instant)>,
    /// The final response to the INVITE: code, reason, when.
    pub final_response: Option<(u16, String, Instant)>,
    pub answered: Option<Instant>,
    pub codec: Option<Law>,
    pub telephone_event: Option<u8>,
    /// Why the call failed before or at the answer, in words.
    pub failure: Option<String>,
    /// The RTP that came: first packet, level, speech.
    pub heard: media::Heard,
    /// The keys asked for, and when the last one was released.
    pub keys: String,
    pub keys_sent: Option<Instant>,
    /// Why the keys could not be sent.
    pub keys_problem: Option<String>,
    pub hangup: Hangup,
    /// When the call ended for us.
    pub ended: Option<Instant>,
    /// Whether a greeting was given to compare with.
    pub greeting_expected: bool,
    /// How much what came sounded like the greeting it sounded most like
    /// ([`greeting::best_match`]), when comparable.
    pub greeting_similarity: Option<f32>,
    /// That greeting's label (`line default step closed`).
    pub greeting_label: Option<String>,
}

enum State {
    /// INVITE sent; `proceeding` once a provisional came (no more resends).
    Inviting {
        resend: Retransmit,
        proceeding: bool,
    },
    /// CANCEL sent after the timeout, waiting for the 487 (or a 2xx that
    /// raced it). `resend` is `None` once the CANCEL's own 200 came.
    Cancelling {
        resend: Option<Retransmit>,
        give_up: Instant,
    },
    /// In the call: media flowing. `linger_until` is when we hang up.
    Talking {
        media: Box<ProbeMedia>,
        keys_pressed: bool,
        linger_until: Option<Instant>,
    },
    /// Our BYE is out.
    Hanging {
        resend: Retransmit,
        give_up: Instant,
    },
    Done,
}

/// The dialog once answered: the far end's tag, target and route set, and
/// where its requests (the 2xx's ACK, the BYE) are sent.
#[derive(Debug, Clone)]
struct Dialog {
    to: String,
    remote_target: Uri,
    route: Vec<String>,
    dest: SocketAddr,
}

/// Where an in-dialog request goes without an outbound proxy: the host and
/// port (5060) of the first route, or without a route set of the remote
/// target, when it is an IP address; a name we would have to resolve: `fallback`.
fn dialog_dest(route: &[String], target: &Uri, fallback: SocketAddr) -> SocketAddr {
    let uri = match route.first() {
        Some(r) => match Uri::from_str(r.trim().trim_start_matches('<').split('>').next().unwrap_or("")) {
            Ok(u) => u,
            Err(_) => return fallback,
        },
        None => target.clone(),
    };
    let port = uri.host_with_port.port.as_ref().map(|p| p.value()).unwrap_or(5060);
    match uri.host_with_port.host.to_string().trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => fallback,
    }
}

/// One test call.
pub struct Probe {
    cfg: ProbeConfig,
    uri: Uri,
    from: String,
    contact: String,
    cseq: u32,
    invite_branch: String,
    invite: Option<OutgoingRequest>,
    auth_tried: bool,
    dialog: Option<Dialog>,
    state: State,
    findings: Findings,
    transmits: VecDeque<SipTransmit>,
    events: VecDeque<ProbeEvent>,
    /// RTP that came before the answer was processed (at most
    /// [`EARLY_RTP_PACKETS`]): a B2BUA may relay the agent's first audio
    /// before its 200 reaches us. Replayed at the answer when it is no older
    /// than [`EARLY_RTP_WINDOW`], so a PBX's ringback is not taken for the greeting.
    early_rtp: VecDeque<(Instant, SocketAddr, Vec<u8>)>,
}

/// The most RTP datagrams kept from before the answer.
pub const EARLY_RTP_PACKETS: usize = 25;
/// How long before the answer an early RTP datagram may have come and still count as the call's audio.
pub const EARLY_RTP_WINDOW: Duration = Duration::from_millis(300);

impl Probe {
    /// Place the call at `now`: the INVITE is the first transmit. Fails only
    /// when the target is not a SIP URI or a key is not a DTMF key.
    pub fn new(cfg: ProbeConfig, now: Instant) -> Result<Probe, String> {
        let scheme = cfg.target.split(':').next().unwrap_or_default().to_ascii_lowercase();
        if scheme != "sip" && scheme != "sips" {
            return Err(format!("{} is not a SIP URI (sip:user@host[:port])", cfg.target));
        }
        let uri = Uri::from_str(&cfg.target).map_err(|e| format!("{} is not a SIP URI: {e}", cfg.target))?;
        if let Some(k) = cfg.keys.chars().find(|k| event_code(*k).is_none()) {
            return Err(format!("{k:?} is not a key (0-9, *, #, A-D)"));
        }
        let host = host_port(cfg.local_sip);
        let from = format!("<sip:{}@{host}>;tag={:x}", cfg.from_user, cfg.seed.rotate_left(21) as u32);
        let contact = format!("<sip:{}@{host}>", cfg.from_user);
        let call_id = format!("{:016x}-test-call@{}", cfg.seed, host_ip(cfg.local_sip.ip()));
        let findings = Findings {
            call_id,
            target: cfg.target.clone(),
            dest: cfg.dest,
            invite_sent: now,
            invite_resends: 0,
            challenged: None,
            provisional: None,
            final_response: None,
            answered: None,
            codec: None,
            telephone_event: None,
            failure: None,
            heard: media::Heard::default(),
            keys: cfg.keys.clone(),
            keys_sent: None,
            keys_problem: None,
            hangup: Hangup::NotInCall,
            ended: None,
            greeting_expected: !cfg.expected_greeting.is_empty(),
            greeting_similarity: None,
            greeting_label: None,
        };
        let mut probe = Probe {
            uri,
            from,
            contact,
            cseq: 1,
            invite_branch: String::new(),
            invite: None,
            auth_tried: false,
            dialog: None,
            state: State::Done,
            findings,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            early_rtp: VecDeque::new(),
            cfg,
        };
        probe.send_invite(now, None);
        Ok(probe)
    }

    pub fn call_id(&self) -> &str {
        &self.findings.call_id
    }

    pub fn findings(&self) -> &Findings {
        &self.findings
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    pub fn poll_transmit(&mut self) -> Option<SipTransmit> {
        self.transmits.pop_front()
    }

    /// Our RTP, for the far end's address (`None` outside the call).
    pub fn poll_rtp(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        match &mut self.state {
            State::Talking { media, .. } => media.poll_transmit().map(|p| (media.remote(), p)),
            _ => None,
        }
    }

    pub fn poll_event(&mut self) -> Option<ProbeEvent> {
        self.events.pop_front()
    }

    /// When [`Probe::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Inviting { resend, proceeding } => {
                let deadline = self.findings.invite_sent + self.cfg.timeout;
                Some(if *proceeding { deadline } else { resend.deadline().min(deadline) })
            }
            State::Cancelling { resend, give_up } => {
                Some(resend.as_ref().map_or(*give_up, |r| r.deadline().min(*give_up)))
            }
            State::Talking { media, linger_until, .. } => {
                let answered = self.findings.answered.unwrap_or(self.findings.invite_sent);
                let mut t = media.poll_timeout();
                if self.findings.heard.prompt_heard.is_none() {
                    t = t.min(answered + self.cfg.timeout);
                }
                Some(linger_until.map_or(t, |l| t.min(l)))
            }
            State::Hanging { resend, give_up } => Some(resend.deadline().min(*give_up)),
            State::Done => None,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.state {
            State::Inviting { resend, proceeding } => {
                if now >= self.findings.invite_sent + self.cfg.timeout {
                    if *proceeding {
                        self.send_cancel(now);
                    } else {
                        self.fail(now, format!("no answer from {} after {}", self.cfg.dest, secs(self.cfg.timeout)));
                    }
                } else if !*proceeding {
                    let before = self.transmits.len();
                    let timer_b = resend.gave_up(now, &mut self.transmits);
                    self.findings.invite_resends += (self.transmits.len() - before) as u32;
                    if timer_b {
                        let waited = now - self.findings.invite_sent;
                        self.fail(now, format!("no answer from {} after {} (Timer B)", self.cfg.dest, secs(waited)));
                    }
                }
            }
            State::Cancelling { resend, give_up } => {
                let timer_f = resend.as_mut().is_some_and(|r| r.gave_up(now, &mut self.transmits));
                if now >= *give_up || timer_f {
                    self.finish(now);
                }
            }
            State::Talking { media, .. } => {
                media.handle_timeout(now);
                self.advance_call(now);
            }
            State::Hanging { resend, give_up } => {
                if now >= *give_up || resend.gave_up(now, &mut self.transmits) {
                    self.finish(now);
                }
            }
            State::Done => {}
        }
    }

    /// A datagram on the RTP socket.
    pub fn handle_rtp(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if matches!(self.state, State::Inviting { .. }) && data.len() <= 1500 {
            if self.early_rtp.len() == EARLY_RTP_PACKETS {
                self.early_rtp.pop_front();
            }
            self.early_rtp.push_back((now, from, data.to_vec()));
            return;
        }
        if let State::Talking { media, .. } = &mut self.state {
            let first = media.heard.first_packet.is_none();
            media.handle_rtp(now, from, data);
            if first && let Some((_, from)) = media.heard.first_packet {
                self.events.push_back(ProbeEvent::MediaArrived { from });
            }
            self.advance_call(now);
        }
    }

    /// A datagram on the SIP socket, from `source`. Anything that is not
    /// SIP, or not about this call, is ignored.
    pub fn handle_sip(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        match read_message(data, source) {
            Incoming::Response(r) if r.call_id == self.findings.call_id => self.on_response(now, &r),
            Incoming::Request(r) if r.call_id == self.findings.call_id => self.on_request(now, &r),
            _ => {}
        }
    }

    fn on_response(&mut self, now: Instant, r: &Response) {
        let reason = match &r.frame.start {
            crate::sip::message::StartLine::Response { reason, .. } => reason.clone(),
            _ => String::new(),
        };
        match r.cseq_method.as_str() {
            "INVITE" if r.cseq == self.cseq => self.on_invite_response(now, r, reason),
            // A resent final to our first INVITE (its ACK was lost) after we
            // answered its challenge: ACKed again in its own transaction.
            "INVITE" if r.cseq < self.cseq && r.code >= 300 => self.send_ack_non_2xx(r),
            // The CANCEL's own 200 stops its retransmission; the 487 to the INVITE still ends the call.
            "CANCEL" if r.code >= 200 => {
                if let State::Cancelling { resend, .. } = &mut self.state {
                    *resend = None;
                }
            }
            "BYE" if r.cseq == self.cseq && r.code >= 200 => {
                if let State::Hanging { .. } = self.state
                    && let Hangup::Ours { response, .. } = &mut self.findings.hangup
                {
                    *response = Some((r.code, reason, now));
                    self.finish(now);
                }
            }
            _ => {}
        }
    }

    fn on_invite_response(&mut self, now: Instant, r: &Response, reason: String) {
        let code = r.code;
        if code < 200 {
            if r.branch.as_deref() != Some(self.invite_branch.as_str()) {
                return;
            }
            if let State::Inviting { proceeding, .. } = &mut self.state {
                *proceeding = true;
            }
            if code > 100 {
                self.findings.provisional = Some((code, reason.clone(), now));
                self.events.push_back(ProbeEvent::Provisional { code, reason });
            }
            return;
        }
        if code < 300 {
            return self.on_answer(now, r, reason);
        }
        if r.branch.as_deref() != Some(self.invite_branch.as_str()) {
            return;
        }
        // A non-2xx final: ACKed in its transaction, every time it comes (§17.1.1.3).
        self.send_ack_non_2xx(r);
        if !matches!(self.state, State::Inviting { .. } | State::Cancelling { .. }) {
            return;
        }
        if (code == 401 || code == 407)
            && !self.auth_tried
            && let Some(creds) = self.cfg.credentials.clone()
        {
            let header = if code == 401 { "WWW-Authenticate" } else { "Proxy-Authenticate" };
            match r.frame.get(header).map(Challenge::parse) {
                Some(Ok(ch)) => {
                    self.auth_tried = true;
                    self.findings.challenged = Some(code);
                    self.events.push_back(ProbeEvent::Challenged { code });
                    let uri = self.cfg.target.clone();
                    let body = self.invite.as_ref().and_then(|i| i.body.clone()).map(|b| b.1).unwrap_or_default();
                    let cnonce = format!("{:x}", self.cfg.seed.rotate_left(7));
                    let value = ch.authorization(&creds, "INVITE", &uri, &body, 1, &cnonce);
                    let name = if code == 401 { "Authorization" } else { "Proxy-Authorization" };
                    self.cseq += 1;
                    self.send_invite(now, Some((name, value)));
                    return;
                }
                Some(Err(e)) => {
                    return self.fail(now, format!("{code} {reason}: cannot answer its challenge ({e})"));
                }
                None => return self.fail(now, format!("{code} {reason} without a {header} challenge")),
            }
        }
        self.findings.final_response = Some((code, reason.clone(), now));
        let why = match code {
            401 | 407 if self.auth_tried => format!("{code} {reason}: the credentials were refused"),
            401 | 407 => format!("{code} {reason}: the target wants digest auth (give --user and --password)"),
            487 if matches!(self.state, State::Cancelling { .. }) => {
                format!("no answer from {} after {} (it rang; cancelled)", self.cfg.dest, secs(self.cfg.timeout))
            }
            _ => format!("{code} {reason}"),
        };
        self.fail(now, why);
    }

    fn on_answer(&mut self, now: Instant, r: &Response, reason: String) {
        if self.dialog.is_some() {
            // A resent 2xx: our ACK was lost. ACK it again.
            self.send_ack_2xx();
            return;
        }
        let to = r.frame.get("To").unwrap_or_default().to_string();
        let remote_target =
            r.frame.get("Contact").and_then(NameAddr::parse).map(|n| n.uri).unwrap_or_else(|| self.uri.clone());
        let mut route: Vec<String> = r.frame.get_all("Record-Route").flat_map(split_name_addrs).collect();
        route.reverse();
        let dest =
            if self.cfg.outbound_proxy { self.cfg.dest } else { dialog_dest(&route, &remote_target, self.cfg.dest) };
        self.dialog = Some(Dialog { to, remote_target, route, dest });
        self.findings.final_response = Some((r.code, reason, now));
        self.findings.answered = Some(now);
        self.events.push_back(ProbeEvent::Answered);
        self.send_ack_2xx();
        let offer = RemoteMedia::parse(&r.frame.body);
        let chosen = offer.as_ref().ok().and_then(|m| Some((m.rtp_addr?, m.accept_answer()?)));
        let Some((remote, neg)) = chosen else {
            let why = match offer {
                Err(e) => format!("the {} carried no usable SDP answer ({e})", r.code),
                Ok(_) => format!("the {}'s SDP answer has no G.711 audio with an address", r.code),
            };
            self.findings.failure = Some(why);
            return self.send_bye(now);
        };
        self.findings.codec = Some(neg.law);
        self.findings.telephone_event = neg.telephone_event;
        let mut media = ProbeMedia::new(now, neg.law, neg.telephone_event, remote, self.cfg.seed.rotate_left(32));
        for (at, from, data) in self.early_rtp.drain(..) {
            if at + EARLY_RTP_WINDOW >= now {
                media.handle_rtp(at, from, &data);
            }
        }
        if let Some((_, from)) = media.heard.first_packet {
            self.events.push_back(ProbeEvent::MediaArrived { from });
        }
        self.state = State::Talking { media: Box::new(media), keys_pressed: false, linger_until: None };
    }

    /// In the call: press the keys once the prompt is heard, linger, hang up.
    fn advance_call(&mut self, now: Instant) {
        let State::Talking { media, keys_pressed, linger_until } = &mut self.state else { return };
        self.findings.heard = media.heard.clone();
        let answered = self.findings.answered.unwrap_or(now);
        let Some(heard) = media.heard.prompt_heard else {
            if now >= answered + self.cfg.timeout {
                return self.send_bye(now);
            }
            return;
        };
        if linger_until.is_none() {
            self.events.push_back(ProbeEvent::PromptHeard);
        }
        if self.cfg.keys.is_empty() {
            linger_until.get_or_insert(heard + self.cfg.linger);
        } else if self.findings.telephone_event.is_none() {
            self.findings.keys_problem = Some("the answer's SDP has no telephone-event: keys not sent".into());
            linger_until.get_or_insert(now);
        } else if !*keys_pressed {
            if !self.cfg.expected_greeting.is_empty() && now < heard + KEYS_AFTER_SPEECH {
                return;
            }
            *keys_pressed = true;
            let codes: Vec<u8> = self.cfg.keys.chars().filter_map(event_code).collect();
            media.press(&codes);
            // Until the keys are out, hang up only at the timeout.
            *linger_until = Some(now + self.cfg.timeout);
        } else if media.keys_done() && self.findings.keys_sent.is_none() {
            self.findings.keys_sent = Some(now);
            self.events.push_back(ProbeEvent::KeysSent);
            *linger_until = Some(now + self.cfg.linger);
        }
        if linger_until.is_some_and(|l| now >= l) {
            if self.findings.keys_sent.is_none() && self.findings.keys_problem.is_none() && !self.cfg.keys.is_empty() {
                self.findings.keys_problem = Some("not all keys were sent before the timeout".into());
            }
            self.send_bye(now);
        }
    }

    fn on_request(&mut self, now: Instant, r: &Request) {
        let code = match r.method {
            Method::Ack => return,
            // A re-INVITE: the test call keeps its media as it is.
            Method::Invite => 488,
            _ => 200,
        };
        let bytes = build_response(&r.frame, &r.via_reply, code, None, &[], None);
        self.transmits.push_back(SipTransmit { dest: r.source, bytes });
        if r.method == Method::Bye {
            if let State::Talking { media, .. } = &self.state {
                self.findings.heard = media.heard.clone();
            }
            match (&self.state, &self.findings.hangup) {
                (State::Talking { .. }, _) => self.findings.hangup = Hangup::Theirs { at: now },
                // Their BYE crossed ours: the call is over for both, cleanly.
                (State::Hanging { .. }, Hangup::Ours { sent, response: None }) => {
                    self.findings.hangup = Hangup::Crossed { sent: *sent, at: now }
                }
                _ => {}
            }
            self.finish(now);
        }
    }

    fn fail(&mut self, now: Instant, why: String) {
        self.findings.failure = Some(why);
        self.finish(now);
    }

    fn finish(&mut self, now: Instant) {
        if let Some((i, s)) = greeting::best_match(&self.findings.heard.envelope, &self.cfg.expected_greeting) {
            self.findings.greeting_similarity = Some(s);
            self.findings.greeting_label = Some(self.cfg.expected_greeting[i].label.clone());
        }
        if !matches!(self.state, State::Done) {
            self.state = State::Done;
            self.findings.ended = Some(now);
            self.events.push_back(ProbeEvent::Done);
        }
    }

    fn request(&self, method: SipMethod, branch: String, to: String, uri: Uri, route: Vec<String>) -> OutgoingRequest {
        OutgoingRequest {
            method,
            uri,
            transport: Transport::Udp,
            sent_by: self.cfg.local_sip,
            branch,
            from: self.from.clone(),
            to,
            call_id: self.findings.call_id.clone(),
            cseq: self.cseq,
            route,
            contact: None,
            headers: Vec::new(),
            body: None,
        }
    }

    fn send(&mut self, req: &OutgoingRequest) -> SipTransmit {
        self.send_to(req, self.cfg.dest)
    }

    fn send_to(&mut self, req: &OutgoingRequest, dest: SocketAddr) -> SipTransmit {
        let t = SipTransmit { dest, bytes: req.to_bytes() };
        self.transmits.push_back(t.clone());
        t
    }

    fn send_invite(&mut self, now: Instant, auth: Option<(&'static str, String)>) {
        self.invite_branch = branch(self.cfg.seed, self.cseq);
        let to = format!("<{}>", self.cfg.target);
        let mut req = self.request(SipMethod::Invite, self.invite_branch.clone(), to, self.uri.clone(), Vec::new());
        req.contact = Some(self.contact.clone());
        req.headers.push(("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS".into()));
        req.headers.push(("Subject", "backstop test-call".into()));
        req.headers.extend(auth);
        let sdp = LocalSession { session_id: self.cfg.seed >> 1, version: 1, rtp_addr: self.cfg.local_rtp }.offer();
        req.body = Some(("application/sdp".into(), sdp.into_bytes()));
        let t = self.send(&req);
        self.invite = Some(req);
        // Timer A doubles without the T2 cap (§17.1.1.2); the timeout ends it before Timer B.
        let resend = Retransmit::new(t, now, self.cfg.t1, self.cfg.t1 * 64, true);
        self.state = State::Inviting { resend, proceeding: false };
    }

    fn send_cancel(&mut self, now: Instant) {
        let Some(invite) = self.invite.clone() else { return self.finish(now) };
        let req =
            OutgoingRequest { method: SipMethod::Cancel, contact: None, headers: Vec::new(), body: None, ..invite };
        let t = self.send(&req);
        self.findings.failure =
            Some(format!("no answer from {} after {} (it rang; cancelled)", self.cfg.dest, secs(self.cfg.timeout)));
        let resend = Retransmit::new(t, now, self.cfg.t1, self.cfg.t2, true);
        self.state = State::Cancelling { resend: Some(resend), give_up: now + CANCEL_WAIT };
    }

    /// The ACK of a non-2xx final, in that response's transaction (its branch and CSeq number).
    fn send_ack_non_2xx(&mut self, r: &Response) {
        let Some(invite) = self.invite.clone() else { return };
        let to = r.frame.get("To").unwrap_or_default().to_string();
        let branch = r.branch.clone().unwrap_or(invite.branch.clone());
        let req = OutgoingRequest {
            method: SipMethod::Ack,
            to,
            branch,
            cseq: r.cseq,
            contact: None,
            headers: Vec::new(),
            body: None,
            ..invite
        };
        self.send(&req);
    }

    /// The ACK of the 2xx: a request of its own in the dialog, with the
    /// credentials the INVITE carried (RFC 3261 22.1: the same as the INVITE's).
    fn send_ack_2xx(&mut self) {
        let Some(d) = self.dialog.clone() else { return };
        let mut req =
            self.request(SipMethod::Ack, branch(self.cfg.seed ^ 0xac, self.cseq), d.to, d.remote_target, d.route);
        if let Some(invite) = &self.invite {
            req.headers.extend(
                invite
                    .headers
                    .iter()
                    .filter(|(name, _)| matches!(*name, "Authorization" | "Proxy-Authorization"))
                    .cloned(),
            );
        }
        self.send_to(&req, d.dest);
    }

    fn send_bye(&mut self, now: Instant) {
        let Some(d) = self.dialog.clone() else { return self.finish(now) };
        if let State::Talking { media, .. } = &self.state {
            self.findings.heard = media.heard.clone();
        }
        self.cseq += 1;
        let req = self.request(SipMethod::Bye, branch(self.cfg.seed, self.cseq), d.to, d.remote_target, d.route);
        let t = self.send_to(&req, d.dest);
        self.findings.hangup = Hangup::Ours { sent: now, response: None };
        self.events.push_back(ProbeEvent::HangingUp);
        let resend = Retransmit::new(t, now, self.cfg.t1, self.cfg.t2, true);
        let give_up = now + (self.cfg.t1 * 64).min(self.cfg.timeout);
        self.state = State::Hanging { resend, give_up };
    }
}

fn host_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// A duration as people say it: "10 s", "2.5 s".
pub fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 { format!("{s:.0} s") } else { format!("{s:.1} s") }
}

#[cfg(test)]
mod tests {
    use super::report::checks;
    use super::*;
    use crate::sip::message::Frame;
    use rtp_rs::{RtpPacketBuilder, RtpReader, Seq};

    const AGENT: &str = "127.0.0.1:5999";
    const AGENT_RTP: &str = "127.0.0.1:31000";

    fn cfg(keys: &str) -> ProbeConfig {
        ProbeConfig {
            target: format!("sip:backstop@{AGENT}"),
            dest: AGENT.parse().unwrap(),
            outbound_proxy: false,
            local_sip: "127.0.0.1:40000".parse().unwrap(),
            local_rtp: "127.0.0.1:40002".parse().unwrap(),
            from_user: "test-call".into(),
            keys: keys.into(),
            timeout: Duration::from_secs(10),
            linger: Duration::from_secs(1),
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            credentials: None,
            seed: 0x5eed_0001_2345_6789,
            expected_greeting: Vec::new(),
        }
    }

    fn sip(p: &mut Probe) -> Vec<Frame> {
        std::iter::from_fn(|| p.poll_transmit()).map(|t| Frame::parse(&t.bytes).unwrap()).collect()
    }

    fn method(f: &Frame) -> String {
        f.start_raw.split(' ').next().unwrap().to_string()
    }

    /// The far end's response to `req` (the INVITE), with `extra` headers and an optional body.
    fn respond(p: &mut Probe, now: Instant, req: &Frame, code: u16, extra: &[(&str, String)], body: Option<&str>) {
        let tag = (code > 100).then_some("agent1");
        let body = body.map(|b| ("application/sdp", b.as_bytes()));
        let bytes = build_response(req, req.get("Via").unwrap(), code, tag, extra, body);
        p.handle_sip(now, AGENT.parse().unwrap(), &bytes);
    }

    fn answer_sdp(te: bool) -> String {
        let local = LocalSession { session_id: 1, version: 1, rtp_addr: AGENT_RTP.parse().unwrap() };
        let neg = crate::sip::sdp::Negotiated { law: Law::Pcmu, telephone_event: te.then_some(101) };
        local.answer(&neg, crate::sip::sdp::Direction::SendRecv)
    }

    fn audio_packet(seq: u16, samples: &[i16]) -> Vec<u8> {
        let payload: Vec<u8> = samples.iter().map(|s| Law::Pcmu.encode(*s)).collect();
        RtpPacketBuilder::new().payload_type(0).sequence(Seq::from(seq)).payload(&payload).build().unwrap()
    }

    #[test]
    fn the_invite_is_resent_on_timer_a_and_the_timeout_fails_it_clearly() {
        let t0 = Instant::now();
        let mut p = Probe::new(cfg(""), t0).unwrap();
        let invite = sip(&mut p);
        assert_eq!(invite.len(), 1);
        let f = &invite[0];
        assert_eq!(method(f), "INVITE");
        assert_eq!(f.get("CSeq"), Some("1 INVITE"));
        let sdp = RemoteMedia::parse(&f.body).unwrap();
        assert_eq!(sdp.rtp_addr, Some("127.0.0.1:40002".parse().unwrap()));
        let pts: Vec<_> = sdp.formats.iter().map(|f| (f.payload_type, f.encoding.as_str())).collect();
        assert_eq!(pts, [(0, "PCMU"), (8, "PCMA"), (101, "telephone-event")]);
        let mut resends = Vec::new();
        for _ in 0..100 {
            let Some(at) = p.poll_timeout() else { break };
            p.handle_timeout(at);
            for r in sip(&mut p) {
                assert_eq!(r.start_raw, f.start_raw);
                assert_eq!(r.get("Via"), f.get("Via"), "a resend is the same transaction");
                resends.push((at - t0).as_millis());
            }
        }
        assert!(p.is_done());
        assert_eq!(resends, [500, 1500, 3500, 7500], "Timer A doubles from T1");
        let lines = checks(p.findings());
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].to_string(), "FAIL answered      no answer from 127.0.0.1:5999 after 10 s");
    }

    #[test]
    fn busy_is_acked_in_its_transaction_and_named() {
        let t0 = Instant::now();
        let mut p = Probe::new(cfg("1"), t0).unwrap();
        let invite = sip(&mut p).remove(0);
        respond(&mut p, t0 + Duration::from_millis(5), &invite, 100, &[], None);
        assert!(sip(&mut p).is_empty());
        // 100 Trying stops the resends: only the timeout is left.
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        respond(&mut p, t0 + Duration::from_millis(9), &invite, 486, &[], None);
        let ack = sip(&mut p).remove(0);
        assert_eq!(method(&ack), "ACK");
        assert_eq!(ack.get("Via"), invite.get("Via"), "same branch as the INVITE");
        assert_eq!(ack.get("CSeq"), Some("1 ACK"));
        assert!(ack.get("To").unwrap().ends_with(";tag=agent1"));
        assert!(p.is_done());
        let lines = checks(p.findings());
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].to_string(), "FAIL answered      486 Busy Here");
        // A resent 486 is ACKed again, and nothing panics after the end.
        respond(&mut p, t0 + Duration::from_millis(600), &invite, 486, &[], None);
        assert_eq!(sip(&mut p).len(), 1);
    }

    #[test]
    fn a_call_that_only_rings_is_cancelled_at_the_timeout() {
        let t0 = Instant::now();
        let mut p = Probe::new(cfg(""), t0).unwrap();
        let invite = sip(&mut p).remove(0);
        respond(&mut p, t0 + Duration::from_millis(10), &invite, 180, &[], None);
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        p.handle_timeout(t0 + Duration::from_secs(10));
        let cancel = sip(&mut p).remove(0);
        assert_eq!(method(&cancel), "CANCEL");
        assert_eq!(cancel.get("Via"), invite.get("Via"), "CANCEL matches the INVITE's transaction");
        assert_eq!(cancel.get("CSeq"), Some("1 CANCEL"));
        assert_eq!(cancel.start_raw.replace("CANCEL", "INVITE"), invite.start_raw);
        // The CANCEL's own 200 stops its resends: only the bound on the 487 is left.
        respond(&mut p, t0 + Duration::from_millis(10_002), &cancel, 200, &[], None);
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(10) + CANCEL_WAIT));
        respond(&mut p, t0 + Duration::from_millis(10_005), &invite, 487, &[], None);
        let ack = sip(&mut p).remove(0);
        assert_eq!((method(&ack).as_str(), ack.get("CSeq")), ("ACK", Some("1 ACK")));
        assert!(p.is_done());
        assert_eq!(
            checks(p.findings())[0].to_string(),
            "FAIL answered      no answer from 127.0.0.1:5999 after 10 s (it rang; cancelled)"
        );
        // With no 487 at all, the CANCEL is given up within its bound.
        let mut p = Probe::new(cfg(""), t0).unwrap();
        let invite = sip(&mut p).remove(0);
        respond(&mut p, t0, &invite, 180, &[], None);
        let mut steps = 0;
        while let Some(at) = p.poll_timeout() {
            p.handle_timeout(at);
            steps += 1;
            assert!(steps < 100 && at < t0 + Duration::from_secs(15));
        }
        assert!(p.is_done());
    }

    #[test]
    fn mangled_responses_never_panic() {
        let t0 = Instant::now();
        let mut p = Probe::new(cfg("1"), t0).unwrap();
        let invite = sip(&mut p).remove(0);
        let good = build_response(
            &invite,
            invite.get("Via").unwrap(),
            200,
            Some("x"),
            &[],
            Some(("application/sdp", answer_sdp(true).as_bytes())),
        );
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..3000 {
            let mut b = good.clone();
            for _ in 0..4 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let i = (rng as usize) % b.len();
                b[i] = (rng >> 32) as u8;
            }
            b.truncate(((rng >> 40) as usize) % (b.len() + 1));
            p.handle_sip(t0, AGENT.parse().unwrap(), &b);
            p.handle_rtp(t0, AGENT.parse().unwrap(), &b);
            while p.poll_transmit().is_some() {}
            while p.poll_rtp().is_some() {}
        }
        let _ = checks(p.findings());
    }

    #[test]
    fn a_challenge_is_answered_once_with_the_credentials() {
        let t0 = Instant::now();
        let mut c = cfg("");
        c.credentials = Some(Credentials { username: "u".into(), password: "p".into() });
        let mut p = Probe::new(c, t0).unwrap();
        let invite = sip(&mut p).remove(0);
        let challenge = ("Proxy-Authenticate", r#"Digest realm="pbx", nonce="n1", qop="auth""#.to_string());
        respond(&mut p, t0, &invite, 407, std::slice::from_ref(&challenge), None);
        let out = sip(&mut p);
        assert_eq!(out.iter().map(method).collect::<Vec<_>>(), ["ACK", "INVITE"]);
        let again = &out[1];
        assert_eq!(again.get("CSeq"), Some("2 INVITE"));
        assert_ne!(again.get("Via"), invite.get("Via"), "a new transaction");
        assert!(again.get("Proxy-Authorization").unwrap().contains("username=\"u\", realm=\"pbx\", nonce=\"n1\""));
        // The first 407 resent (our ACK was lost): ACKed again in its own transaction (CSeq 1).
        respond(&mut p, t0, &invite, 407, std::slice::from_ref(&challenge), None);
        let out = sip(&mut p);
        assert_eq!(out.iter().map(method).collect::<Vec<_>>(), ["ACK"]);
        assert_eq!((out[0].get("CSeq"), out[0].get("Via")), (Some("1 ACK"), invite.get("Via")));
        // Had it been answered: the 2xx's ACK carries the INVITE's credentials.
        {
            let mut q = Probe::new(p.cfg.clone(), t0).unwrap();
            let first = sip(&mut q).remove(0);
            respond(&mut q, t0, &first, 407, std::slice::from_ref(&challenge), None);
            let again = sip(&mut q).pop().unwrap();
            respond(&mut q, t0, &again, 200, &[], Some(&answer_sdp(false)));
            let ack = sip(&mut q).into_iter().find(|f| method(f) == "ACK").expect("the 2xx's ACK");
            assert_eq!(ack.get("CSeq"), Some("2 ACK"));
            assert_eq!(ack.get("Proxy-Authorization"), again.get("Proxy-Authorization"));
        }
        // A second challenge: the credentials were refused.
        respond(&mut p, t0, again, 407, &[challenge], None);
        assert!(p.is_done());
        assert!(
            checks(p.findings())[0].detail.contains("407 Proxy Authentication Required: the credentials were refused")
        );
        // Without credentials the challenge fails at once, naming the code.
        let mut p = Probe::new(cfg(""), t0).unwrap();
        let invite = sip(&mut p).remove(0);
        respond(&mut p, t0, &invite, 401, &[("WWW-Authenticate", r#"Digest realm="r", nonce="n""#.into())], None);
        assert!(checks(p.findings())[0].detail.starts_with("401 Unauthorized: the target wants digest auth"));
    }

    /// A whole answered call: ring, 200 with SDP, ACK, noise out, a spoken
    /// prompt in, the key, the BYE and its 200, faster than real time.
    #[test]
    fn an_answered_call_acks_talks_presses_and_hangs_up() {
        let t0 = Instant::now();
        let mut p = Probe::new(cfg("1"), t0).unwrap();
        let invite = sip(&mut p).remove(0);
        respond(&mut p, t0 + Duration::from_millis(2), &invite, 180, &[], None);
        let answered = t0 + Duration::from_millis(1000);
        let extra = [
            ("Contact", "<sip:backstop@127.0.0.1:5999;transport=udp>".to_string()),
            ("Record-Route", "<sip:p1@10.0.0.1;lr>, <sip:p2@10.0.0.2;lr>".to_string()),
        ];
        respond(&mut p, answered, &invite, 200, &extra, Some(&answer_sdp(true)));
        let ack = sip(&mut p).remove(0);
        assert_eq!(method(&ack), "ACK");
        assert!(
            ack.start_raw.eq_ignore_ascii_case("ACK sip:backstop@127.0.0.1:5999;transport=udp SIP/2.0"),
            "{}",
            ack.start_raw
        );
        assert_ne!(ack.get("Via"), invite.get("Via"), "the 2xx's ACK is a transaction of its own");
        assert_eq!(ack.get_all("Route").collect::<Vec<_>>(), ["<sip:p2@10.0.0.2;lr>", "<sip:p1@10.0.0.1;lr>"]);
        assert_eq!(p.poll_event(), Some(ProbeEvent::Provisional { code: 180, reason: "Ringing".into() }));
        assert_eq!(p.poll_event(), Some(ProbeEvent::Answered));
        // A resent 200 gets the ACK again.
        respond(&mut p, answered + Duration::from_millis(500), &invite, 200, &extra, Some(&answer_sdp(true)));
        assert_eq!(sip(&mut p).iter().map(method).collect::<Vec<_>>(), ["ACK"]);

        // The agent plays the greeting; we send noise and, once it is heard, the key.
        let greeting = crate::fixtures::prompt("greeting");
        let agent_rtp: SocketAddr = AGENT_RTP.parse().unwrap();
        let mut sent = Vec::new();
        let mut frames = greeting.chunks_exact(160).enumerate();
        let mut now = answered;
        let mut bye = None;
        for _ in 0..2000 {
            let Some(at) = p.poll_timeout() else { break };
            now = at;
            p.handle_timeout(now);
            while let Some((dest, pkt)) = p.poll_rtp() {
                assert_eq!(dest, agent_rtp);
                sent.push(pkt);
            }
            // Feed the far end's audio at the same pace.
            let due = ((now - answered).as_millis() / 20) as usize;
            for (i, chunk) in frames.by_ref() {
                p.handle_rtp(now, agent_rtp, &audio_packet(i as u16, chunk));
                if i >= due {
                    break;
                }
            }
            if let Some(b) = sip(&mut p).into_iter().find(|f| method(f) == "BYE") {
                bye = Some(b);
                break;
            }
        }
        let bye = bye.expect("a BYE");
        assert_eq!(bye.get("CSeq"), Some("2 BYE"));
        assert!(bye.get("To").unwrap().ends_with(";tag=agent1"));
        // Our RTP: noise at PCMU, then the key as telephone-events, then noise.
        let events: Vec<_> =
            sent.iter().map(|b| RtpReader::new(b).unwrap()).filter(|r| r.payload_type() == 101).collect();
        assert_eq!(events.len(), 7);
        assert!(events.iter().all(|e| e.payload()[0] == 1));
        assert!(sent.len() > 50, "{} packets", sent.len());
        // The BYE's 200 ends the call, and every check passes.
        let bytes = build_response(&bye, bye.get("Via").unwrap(), 200, None, &[], None);
        p.handle_sip(now + Duration::from_millis(3), AGENT.parse().unwrap(), &bytes);
        assert!(p.is_done());
        let lines = checks(p.findings());
        let text: Vec<String> = lines.iter().map(|c| c.to_string()).collect();
        assert!(lines.iter().all(|c| c.pass), "{text:#?}");
        assert_eq!(
            lines.iter().map(|c| c.name).collect::<Vec<_>>(),
            ["answered", "rtp", "audio", "prompt heard", "keys sent", "hung up"]
        );
        assert_eq!(text[0], "PASS answered      200 OK after 1000 ms (180 Ringing after 2 ms)");
        assert!(text[1].contains("from 127.0.0.1:31000, PCMU"), "{}", text[1]);
        assert_eq!(text[5], "PASS hung up       BYE → 200 OK in 3 ms");
        let events: Vec<_> = std::iter::from_fn(|| p.poll_event()).collect();
        for e in [ProbeEvent::PromptHeard, ProbeEvent::KeysSent, ProbeEvent::HangingUp, ProbeEvent::Done] {
            assert!(events.contains(&e), "{e:?} in {events:?}");
        }
    }

    #[test]
    fn silence_is_answered_but_no_prompt_is_heard() {
        let t0 = Instant::now();
        let mut c = cfg("1");
        c.timeout = Duration::from_secs(5);
        let mut p = Probe::new(c, t0).unwrap();
        let invite = sip(&mut p).remove(0);
        respond(&mut p, t0 + Duration::from_millis(40), &invite, 200, &[], Some(&answer_sdp(true)));
        let mut seq = 0;
        for _ in 0..1000 {
            let Some(at) = p.poll_timeout() else { break };
            p.handle_timeout(at);
            while p.poll_rtp().is_some() {
                seq += 1;
                p.handle_rtp(at, AGENT_RTP.parse().unwrap(), &audio_packet(seq, &[0; 160]));
            }
            for f in sip(&mut p) {
                if method(&f) == "BYE" {
                    let bytes = build_response(&f, f.get("Via").unwrap(), 200, None, &[], None);
                    p.handle_sip(at, AGENT.parse().unwrap(), &bytes);
                }
            }
        }
        assert!(p.is_done());
        let text: Vec<String> = checks(p.findings()).iter().map(|c| c.to_string()).collect();
        assert!(text[0].starts_with("PASS answered"), "{text:#?}");
        assert!(text[1].starts_with("PASS rtp"), "{text:#?}");
        assert_eq!(text[2], "FAIL audio         RTP arrived but was silence (-96 dBFS) for 5 s");
        assert!(
            text[3].starts_with("FAIL prompt heard  no prompt in 5 s after the answer (0 ms of speech"),
            "{text:#?}"
        );
        assert_eq!(text[4], "FAIL keys sent     1: not sent (no prompt was heard)");
        assert!(text[5].starts_with("PASS hung up"), "{text:#?}");
    }

    #[test]
    fn rtp_just_before_the_answer_counts_and_ringback_long_before_does_not() {
        let t0 = Instant::now();
        let mut p = Probe::new(cfg(""), t0).unwrap();
        let invite = sip(&mut p).remove(0);
        let agent_rtp: SocketAddr = AGENT_RTP.parse().unwrap();
        let loud: Vec<i16> = (0..160).map(|i| if i % 2 == 0 { 8000 } else { -8000 }).collect();
        // Ringback a second before the answer: left out.
        p.handle_rtp(t0 + Duration::from_millis(100), agent_rtp, &audio_packet(1, &loud));
        // Two packets relayed ahead of the 200 (within the window): the call's first audio.
        p.handle_rtp(t0 + Duration::from_millis(1050), agent_rtp, &audio_packet(2, &loud));
        p.handle_rtp(t0 + Duration::from_millis(1070), agent_rtp, &audio_packet(3, &loud));
        let answer = t0 + Duration::from_millis(1100);
        respond(&mut p, answer, &invite, 200, &[], Some(&answer_sdp(true)));
        let State::Talking { media, .. } = &p.state else { panic!("not talking") };
        assert_eq!(media.heard.packets, 2, "the ringback is not the call's audio");
        assert_eq!(media.heard.first_packet, Some((t0 + Duration::from_millis(1050), agent_rtp)));
        assert!(std::iter::from_fn(|| p.poll_event()).any(|e| matches!(e, ProbeEvent::MediaArrived { .. })));
        // Before any INVITE answer, at most EARLY_RTP_PACKETS are kept.
        let mut q = Probe::new(cfg(""), t0).unwrap();
        for i in 0..100 {
            q.handle_rtp(t0, agent_rtp, &audio_packet(i, &loud));
        }
        assert_eq!(q.early_rtp.len(), EARLY_RTP_PACKETS);
    }

    #[test]
    fn the_far_ends_bye_is_answered_and_ends_the_call() {
        let t0 = Instant::now();
        let mut p = Probe::new(cfg(""), t0).unwrap();
        let invite = sip(&mut p).remove(0);
        respond(&mut p, t0, &invite, 200, &[], Some(&answer_sdp(false)));
        sip(&mut p);
        let call_id = p.call_id().to_string();
        let bye = format!(
            "BYE sip:test-call@127.0.0.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP {AGENT};branch=z9hG4bKb1\r\n\
             From: <sip:backstop@{AGENT}>;tag=agent1\r\nTo: {}\r\nCall-ID: {call_id}\r\nCSeq: 5 BYE\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            p.from
        );
        p.handle_sip(t0 + Duration::from_secs(2), AGENT.parse().unwrap(), bye.as_bytes());
        let ok = sip(&mut p).remove(0);
        assert!(ok.start_raw.starts_with("SIP/2.0 200"), "{}", ok.start_raw);
        assert!(p.is_done());
        let last = checks(p.findings()).pop().unwrap();
        assert_eq!(
            last.to_string(),
            "PASS hung up       the far end hung up 2000 ms after the answer (its BYE answered 200)"
        );
    }

    #[test]
    fn in_dialog_requests_go_to_the_first_route_else_the_contact() {
        let t0 = Instant::now();
        let contact = ("Contact", "<sip:agent@127.0.0.7:5070>".to_string());
        // No Record-Route (a proxy that stays out of the dialog): the 200's Contact.
        let mut p = Probe::new(cfg(""), t0).unwrap();
        let invite = sip(&mut p).remove(0);
        respond(&mut p, t0, &invite, 200, std::slice::from_ref(&contact), Some(&answer_sdp(false)));
        let ack = p.poll_transmit().expect("the ACK");
        assert_eq!(ack.dest, "127.0.0.7:5070".parse().unwrap());
        assert!(String::from_utf8_lossy(&ack.bytes).starts_with("ACK sip:agent@127.0.0.7:5070 SIP/2.0"));
        // A Record-Route: its (first) entry, with the Contact as the Request-URI.
        let mut p = Probe::new(cfg(""), t0).unwrap();
        let invite = sip(&mut p).remove(0);
        let rr = ("Record-Route", "<sip:127.0.0.9:5080;lr>".to_string());
        respond(&mut p, t0, &invite, 200, &[contact.clone(), rr], Some(&answer_sdp(false)));
        let ack = p.poll_transmit().expect("the ACK");
        assert_eq!(ack.dest, "127.0.0.9:5080".parse().unwrap());
        assert!(String::from_utf8_lossy(&ack.bytes).contains("Route: <sip:127.0.0.9:5080;lr>"));
        // Through an outbound proxy: everything goes to it.
        let mut c = cfg("");
        c.outbound_proxy = true;
        let mut p = Probe::new(c, t0).unwrap();
        let invite = sip(&mut p).remove(0);
        respond(&mut p, t0, &invite, 200, std::slice::from_ref(&contact), Some(&answer_sdp(false)));
        assert_eq!(p.poll_transmit().expect("the ACK").dest, AGENT.parse().unwrap());
    }

    #[test]
    fn both_ends_hanging_up_at_once_is_a_clean_end() {
        let t0 = Instant::now();
        let mut c = cfg("");
        c.timeout = Duration::from_secs(1);
        let mut p = Probe::new(c, t0).unwrap();
        let invite = sip(&mut p).remove(0);
        respond(&mut p, t0, &invite, 200, &[], Some(&answer_sdp(false)));
        sip(&mut p);
        // Nothing heard: we hang up at the timeout.
        let mut ours = None;
        for _ in 0..1000 {
            let Some(at) = p.poll_timeout() else { break };
            p.handle_timeout(at);
            while p.poll_rtp().is_some() {}
            if let Some(b) = sip(&mut p).into_iter().find(|f| method(f) == "BYE") {
                ours = Some((b, at));
                break;
            }
        }
        let (_, sent) = ours.expect("our BYE");
        // Their BYE crosses ours before our BYE's 200 comes.
        let bye = format!(
            "BYE sip:test-call@127.0.0.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP {AGENT};branch=z9hG4bKb2\r\n\
             From: <sip:backstop@{AGENT}>;tag=agent1\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 5 BYE\r\n\
             Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            p.from,
            p.call_id()
        );
        p.handle_sip(sent + Duration::from_millis(3), AGENT.parse().unwrap(), bye.as_bytes());
        let ok = sip(&mut p).remove(0);
        assert!(ok.start_raw.starts_with("SIP/2.0 200"), "{}", ok.start_raw);
        assert!(p.is_done());
        let last = checks(p.findings()).pop().unwrap();
        assert!(last.pass, "{last}");
        assert_eq!(
            last.to_string(),
            "PASS hung up       both ends hung up at once: its BYE came 3 ms after ours, answered 200"
        );
    }

    #[test]
    fn garbage_and_strangers_never_panic_or_count() {
        let t0 = Instant::now();
        let mut p = Probe::new(cfg(""), t0).unwrap();
        let invite = sip(&mut p).remove(0);
        let src: SocketAddr = AGENT.parse().unwrap();
        for bad in [&b""[..], b"\r\n\r\n", &[0xff; 2000], b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n"] {
            p.handle_sip(t0, src, bad);
            p.handle_rtp(t0, src, bad);
        }
        // A response for another call, and an SDP-less 200 for ours.
        let other = String::from_utf8(invite.start_raw.clone().into_bytes()).unwrap();
        assert!(other.starts_with("INVITE"));
        let mut stranger = invite.clone();
        for f in stranger.fields.iter_mut().filter(|f| f.name == "Call-ID") {
            f.value = "someone-else".into();
        }
        respond(&mut p, t0, &stranger, 486, &[], None);
        assert!(!p.is_done());
        respond(&mut p, t0, &invite, 200, &[], None);
        let out = sip(&mut p);
        assert_eq!(out.iter().map(method).collect::<Vec<_>>(), ["ACK", "BYE"], "an unusable answer is hung up");
        assert!(checks(p.findings())[1].detail.contains("no usable SDP answer"));
        assert!(Probe::new(cfg("1x"), t0).is_err());
        assert!(Probe::new(ProbeConfig { target: "not a uri".into(), ..cfg("") }, t0).is_err());
    }
}
