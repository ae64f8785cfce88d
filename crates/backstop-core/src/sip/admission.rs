//! Admission, Sans-IO: what becomes of each SIP message that arrives. The
//! dispatcher hands every message to [`Admission::admit`] with the current
//! instant and gets back a [`Decision`] (route it to a call or a
//! registration, start a call, answer statelessly with these bytes, or drop
//! it and why); it only carries that out, and logs it.
//!
//! The policy, in the order it applies:
//! * The [`Guard`] first: size and header limits on everything; on what
//!   would open something (out-of-dialog), scanner User-Agents and the
//!   per-source allowances (new calls apart from the rest).
//! * Trust: when accounts or `trusted_sources` exist, only those networks
//!   and our registrars' addresses may place calls; the rest get the same
//!   403 whatever the method or user, so nothing can be enumerated.
//! * No amplification: a source is *verified* when it cannot be spoofed
//!   (TCP, `verified_sources`, trusted, a registrar) or has acknowledged one
//!   of our answers. To an unverified source a stateless answer is the bare
//!   form and is withheld if still bigger than the request, and a call's
//!   output is paid for by what the source sent ([`Budget`]).
//! * New calls get 503 while draining or at `max_calls`.

use super::Transport;
use super::guard::{Guard, GuardConfig, Opening, Verdict};
use super::message::{
    ALLOW, Incoming, Method, Rejection, Request, Response, SUPPORTED, build_bare_response, build_response, read_message,
};
use ipnet::IpNet;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// Addresses remembered as verified, at most; the set starts over beyond it.
const MAX_VERIFIED: usize = 100_000;

/// The To-tag of our stateless answers.
const STATELESS_TAG: &str = "bs0";

/// Who may do what, and the limits on what arrives.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    pub guard: GuardConfig,
    /// Only trusted sources may place calls (accounts or `trusted_sources`
    /// are configured); otherwise trunk mode: anyone may.
    pub trust_enforced: bool,
    /// `[sip] trusted_sources`; our registrars' addresses are added as they resolve.
    pub trusted: Vec<IpNet>,
    /// `[security] verified_sources`: addresses that cannot be spoofed here.
    pub verified: Vec<IpNet>,
    /// `[sip] max_calls`.
    pub max_calls: usize,
}

/// One message from the network.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    pub bytes: &'a [u8],
    pub from: SocketAddr,
    pub transport: Transport,
}

/// What a Call-ID the dispatcher already routes belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Call,
    Registration,
}

/// The dispatcher's table, as admission sees it.
pub trait Routes {
    /// Whose this Call-ID is, if ours.
    fn route(&self, call_id: &str) -> Option<Route>;
    /// Calls in progress.
    fn calls(&self) -> usize;
}

/// What to do with one message.
#[derive(Debug)]
pub enum Decision {
    /// A request in a call in progress, with its size on the wire (it pays the call's [`Budget`]).
    ToCall { request: Box<Request>, len: usize },
    /// A response to a request a call sent.
    CallResponse(Box<Response>),
    /// A response to one of our REGISTERs.
    RegistrationResponse(Box<Response>),
    /// Start a call.
    NewCall(NewCall),
    /// Answer statelessly; nothing else happens.
    Answer(Answer),
    /// Nothing is sent.
    Drop(Dropped),
}

/// A call to start.
#[derive(Debug)]
pub struct NewCall {
    pub invite: Box<Request>,
    /// What the call may send to its source until the source is verified.
    pub budget: Budget,
    /// The 503 to answer instead, if the runtime cannot take the call (no RTP port).
    pub busy: Answer,
}

/// A stateless answer, sized for its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: u16,
    pub reason: Reason,
    pub dest: SocketAddr,
    pub reply: Reply,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Send(Vec<u8>),
    /// No amplification: bigger than the request of an unverified source, so not sent.
    Withheld {
        request_len: usize,
        answer_len: usize,
    },
}

impl Answer {
    /// The bytes to send, unless withheld.
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.reply {
            Reply::Send(b) => Some(b),
            Reply::Withheld { .. } => None,
        }
    }
}

/// Why a stateless answer is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The request failed validation (`read_message` chose the code).
    Invalid { why: String, call_id: Option<String> },
    /// Not trusted to place calls.
    Untrusted { method: Method, call_id: String, caller: String },
    /// A new call while shutting down.
    Draining,
    /// A new call at `max_calls`.
    Full,
    /// A new call with no RTP port free (the runtime's to find out).
    NoRtpPort,
    /// An OPTIONS ping.
    Options,
    /// A method we do not implement.
    NotAllowed(String),
    /// A request for no call we have.
    NoCall,
}

/// Why a message is dropped without a word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// The guard's: limits, scanner, an allowance spent. `log` is true for
    /// the first drop from this source in 10 s; `total` counts all drops.
    Guard { why: &'static str, user_agent: Option<String>, log: bool, total: u64 },
    /// Nothing usable to answer to (no Via, not SIP...).
    Unusable { why: String },
    /// A response for no call or registration of ours.
    StrayResponse { code: u16, call_id: String },
    /// An ACK for no call: absorbed.
    StrayAck { call_id: String },
}

/// No amplification for one call: until its source shows that it receives
/// what we send (an ACK or request carrying our To-tag, from its address),
/// what the call sends it is paid for by what it sent, the INVITE and its
/// retransmissions. A verified source has no budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    source: IpAddr,
    /// Bytes that may still go out; `None`: no limit (verified).
    left: Option<usize>,
}

impl Budget {
    /// For a call from `source` that sent `paid` bytes (its INVITE).
    pub fn new(source: IpAddr, verified: bool, paid: usize) -> Budget {
        Budget { source, left: (!verified).then_some(paid) }
    }

    /// Whether the source is verified: then the call rings (100, 180) and sends freely.
    pub fn is_verified(&self) -> bool {
        self.left.is_none()
    }

    /// Bytes that may still be sent; `None`: no limit.
    pub fn left(&self) -> Option<usize> {
        self.left
    }

    /// May a message of `len` bytes go to the source? If so it is paid for.
    pub fn spend(&mut self, len: usize) -> bool {
        match self.left.as_mut() {
            None => true,
            Some(left) if len <= *left => {
                *left -= len;
                true
            }
            Some(_) => false,
        }
    }

    /// A request of `len` bytes arrived in the call whose To-tag is
    /// `local_tag`. From the source it pays for more; carrying our tag it
    /// verifies the source, which is what the returned `true` says (once).
    pub fn receive(&mut self, request: &Request, len: usize, local_tag: &str) -> bool {
        let Some(left) = self.left.as_mut() else { return false };
        if request.source.ip() != self.source {
            return false;
        }
        if request.to.tag.as_deref() == Some(local_tag) {
            self.left = None;
            return true;
        }
        // `len` comes from the network: a sum that cannot wrap, whatever it says.
        *left = left.saturating_add(len);
        false
    }
}

/// The admission policy and what it remembers: the guard's buckets, our
/// registrars, the verified addresses and whether we are draining.
#[derive(Debug)]
pub struct Admission {
    cfg: AdmissionConfig,
    guard: Guard,
    registrars: Vec<IpAddr>,
    verified: HashSet<IpAddr>,
    draining: bool,
}

impl Admission {
    pub fn new(cfg: AdmissionConfig) -> Admission {
        let guard = Guard::new(cfg.guard.clone());
        Admission { cfg, guard, registrars: Vec::new(), verified: HashSet::new(), draining: false }
    }

    /// A registrar's address, once resolved: trusted, verified, never rate limited.
    pub fn add_registrar(&mut self, ip: IpAddr) {
        if !self.registrars.contains(&ip) {
            self.registrars.push(ip);
        }
    }

    /// `ip` has acknowledged one of our answers (see [`Budget::receive`]).
    pub fn mark_verified(&mut self, ip: IpAddr) {
        if self.verified.len() >= MAX_VERIFIED {
            self.verified.clear();
        }
        self.verified.insert(ip);
    }

    /// From now on new calls get 503; everything else goes on.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// Messages the guard has dropped so far (the runtime reads each drop's `total`).
    #[cfg(test)]
    fn dropped(&self) -> u64 {
        self.guard.dropped
    }

    /// May this address place calls? Everyone in trunk mode; otherwise the listed ones.
    fn is_trusted(&self, ip: IpAddr) -> bool {
        !self.cfg.trust_enforced || self.is_listed(ip)
    }

    /// Has this address shown it receives what we send (or can it not be spoofed)?
    pub fn is_verified(&self, ip: IpAddr) -> bool {
        self.is_listed(ip) || self.cfg.verified.iter().any(|n| n.contains(&ip)) || self.verified.contains(&ip)
    }

    /// Is this address a registrar of ours or in `trusted_sources`?
    fn is_listed(&self, ip: IpAddr) -> bool {
        self.cfg.trusted.iter().any(|n| n.contains(&ip)) || self.registrars.contains(&ip)
    }

    /// Decide what becomes of one message that arrived at `now`.
    pub fn admit(&mut self, now: Instant, arrival: Arrival<'_>, routes: &impl Routes) -> Decision {
        let Arrival { bytes, from, transport } = arrival;
        if let Verdict::Drop(why) = self.guard.check_bytes(bytes) {
            return self.guard_drop(now, from, why, None);
        }
        let incoming = read_message(bytes, from);
        // Anything that would open something new is checked for scanners and floods.
        let opening = match &incoming {
            Incoming::Request(r) if routes.route(&r.call_id) != Some(Route::Call) => {
                let new_call = r.method == Method::Invite && r.to.tag.is_none();
                Some((if new_call { Opening::NewCall } else { Opening::Other }, r.frame.get("User-Agent")))
            }
            Incoming::Rejected(Rejection::Respond { .. }) => Some((Opening::Other, None)),
            _ => None,
        };
        if let Some((opening, ua)) = opening {
            let trusted = self.is_listed(from.ip());
            if let Verdict::Drop(why) = self.guard.check_request(now, from.ip(), opening, ua, trusted) {
                let ua = ua.map(str::to_owned);
                return self.guard_drop(now, from, why, ua);
            }
        }
        let reliable = transport.is_reliable();
        let verified = reliable || self.is_verified(from.ip());
        match incoming {
            Incoming::Rejected(Rejection::Drop { why }) => Decision::Drop(Dropped::Unusable { why }),
            Incoming::Rejected(Rejection::Respond { code, why, bytes: answer, dest, call_id }) => {
                let dest = if reliable { from } else { dest };
                let reply = sized(verified, bytes.len(), answer);
                Decision::Answer(Answer { code, reason: Reason::Invalid { why, call_id }, dest, reply })
            }
            Incoming::Response(resp) => match routes.route(&resp.call_id) {
                Some(Route::Registration) => Decision::RegistrationResponse(resp),
                Some(Route::Call) => Decision::CallResponse(resp),
                None => Decision::Drop(Dropped::StrayResponse { code: resp.code, call_id: resp.call_id }),
            },
            Incoming::Request(request) if routes.route(&request.call_id) == Some(Route::Call) => {
                Decision::ToCall { request, len: bytes.len() }
            }
            Incoming::Request(req) => {
                let dest = if reliable { from } else { req.via.response_addr(from) };
                self.out_of_dialog(req, bytes.len(), dest, verified, routes.calls())
            }
        }
    }

    /// A request for no call of ours: a new call, or a stateless answer.
    fn out_of_dialog(&self, req: Box<Request>, len: usize, dest: SocketAddr, verified: bool, calls: usize) -> Decision {
        let answer = |code: u16, reason: Reason, extra: &[(&str, String)]| {
            let bytes = if verified {
                build_response(&req.frame, &req.via_reply, code, Some(STATELESS_TAG), extra, None)
            } else {
                build_bare_response(&req.frame, &req.via_reply, code, Some(STATELESS_TAG), extra)
            };
            Answer { code, reason, dest, reply: sized(verified, len, bytes) }
        };
        let retry_after = [("Retry-After", "5".to_string())];
        if req.method != Method::Ack && !self.is_trusted(req.source.ip()) {
            // The same answer whatever the method or user: nothing to enumerate.
            let reason = Reason::Untrusted {
                method: req.method.clone(),
                call_id: req.call_id.clone(),
                caller: req.from.raw.clone(),
            };
            return Decision::Answer(answer(403, reason, &[]));
        }
        let answered = match &req.method {
            Method::Invite if req.to.tag.is_none() => {
                if self.draining {
                    answer(503, Reason::Draining, &retry_after)
                } else if calls >= self.cfg.max_calls {
                    answer(503, Reason::Full, &retry_after)
                } else {
                    let busy = answer(503, Reason::NoRtpPort, &retry_after);
                    let budget = Budget::new(req.source.ip(), verified, len);
                    return Decision::NewCall(NewCall { invite: req, budget, busy });
                }
            }
            // Draining: 503 at once, so that a dispatcher probing with
            // OPTIONS (Kamailio's) stops sending new calls here. Merely full
            // stays 200: the node is up, and an INVITE it cannot take gets
            // its own 503, which the dispatcher fails over on.
            Method::Options if self.draining => answer(503, Reason::Options, &retry_after),
            Method::Options => {
                // Allow/Accept/Supported are optional: only to sources we can verify.
                let extra: &[(&str, String)] = if verified {
                    &[("Allow", ALLOW.into()), ("Accept", "application/sdp".into()), ("Supported", SUPPORTED.into())]
                } else {
                    &[]
                };
                answer(200, Reason::Options, extra)
            }
            Method::Ack => return Decision::Drop(Dropped::StrayAck { call_id: req.call_id.clone() }),
            Method::NotAllowed(m) => answer(405, Reason::NotAllowed(m.clone()), &[("Allow", ALLOW.into())]),
            // In-dialog requests (a re-INVITE, a NOTIFY or REFER too) for a call we do not have.
            Method::Invite | Method::Bye | Method::Cancel | Method::Info | Method::Refer | Method::Notify => {
                answer(481, Reason::NoCall, &[])
            }
        };
        Decision::Answer(answered)
    }

    fn guard_drop(
        &mut self,
        now: Instant,
        from: SocketAddr,
        why: &'static str,
        user_agent: Option<String>,
    ) -> Decision {
        let log = self.guard.should_log(now, from.ip());
        Decision::Drop(Dropped::Guard { why, user_agent, log, total: self.guard.dropped })
    }
}

/// No amplification: an answer to an unverified source goes only if it is
/// no bigger than the request it answers.
fn sized(verified: bool, request_len: usize, answer: Vec<u8>) -> Reply {
    if verified || answer.len() <= request_len {
        Reply::Send(answer)
    } else {
        Reply::Withheld { request_len, answer_len: answer.len() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::dialog::{DialogConfig, UasDialog};
    use crate::sip::guard::default_scanner_user_agents;
    use std::collections::HashMap;
    use std::time::Duration;

    fn config() -> AdmissionConfig {
        AdmissionConfig {
            guard: GuardConfig {
                max_message_bytes: 16384,
                max_headers: 100,
                max_header_line_bytes: 4096,
                requests_per_second: 20.0,
                request_burst: 40.0,
                invites_per_second: 10.0,
                invite_burst: 40.0,
                scanner_user_agents: default_scanner_user_agents(),
            },
            trust_enforced: false,
            trusted: Vec::new(),
            verified: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            max_calls: 100,
        }
    }

    /// Loopback not taken as verified: every UDP source is a stranger.
    fn strangers() -> AdmissionConfig {
        AdmissionConfig { verified: Vec::new(), ..config() }
    }

    #[derive(Default)]
    struct Table(HashMap<String, Route>);

    impl Routes for Table {
        fn route(&self, call_id: &str) -> Option<Route> {
            self.0.get(call_id).copied()
        }
        fn calls(&self) -> usize {
            self.0.values().filter(|r| **r == Route::Call).count()
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn udp(bytes: &str, from: SocketAddr) -> Arrival<'_> {
        Arrival { bytes: bytes.as_bytes(), from, transport: Transport::Udp }
    }

    /// A request as a softphone would send it; `line` is the request line.
    fn request(line: &str, method: &str, from: SocketAddr, call_id: &str, extra: &str) -> String {
        format!(
            "{line}\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-{call_id};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:a@x>;tag=1\r\nContact: <sip:a@{from}>\r\nUser-Agent: softphone/1.0\r\nTo: <sip:b@y>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
        )
    }

    fn options(from: SocketAddr, call_id: &str) -> String {
        request("OPTIONS sip:b@y SIP/2.0", "OPTIONS", from, call_id, "")
    }

    /// An INVITE with an SDP offer, as a caller's first (`to_tag` None) or in-dialog.
    fn invite(from: SocketAddr, call_id: &str, cseq: u32, method: &str, to_tag: Option<&str>) -> String {
        let sdp =
            "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let (sdp, ct) = if method == "INVITE" { (sdp, "Content-Type: application/sdp\r\n") } else { ("", "") };
        let to = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
        format!(
            "{method} sip:+15559990000@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-{call_id}-{cseq}{method};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:+15551230001@{from}>;tag=c1\r\nTo: <sip:+15559990000@192.0.2.1>{to}\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:c@{from}>\r\n{ct}Content-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
    }

    fn answer(d: Decision) -> Answer {
        match d {
            Decision::Answer(a) => a,
            other => panic!("not a stateless answer: {other:?}"),
        }
    }

    fn text(a: &Answer) -> String {
        String::from_utf8(a.bytes().expect("sent, not withheld").to_vec()).unwrap()
    }

    fn is_guard_drop(d: &Decision, reason: &str) -> bool {
        matches!(d, Decision::Drop(Dropped::Guard { why, .. }) if *why == reason)
    }

    #[test]
    fn trusted_and_verified_sources_are_ranges() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let adm = Admission::new(AdmissionConfig {
            trust_enforced: true,
            trusted: vec![net("10.0.0.0/8"), net("198.51.100.7/32"), net("2001:db8::/32")],
            verified: vec![net("0.0.0.0/0")],
            ..strangers()
        });
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(adm.is_trusted(ip("10.200.3.4")) && !adm.is_trusted(ip("11.0.0.1")));
        assert!(!adm.is_trusted(ip("::ffff:10.0.0.1")), "families do not mix");
        assert!(adm.is_trusted(ip("198.51.100.7")) && !adm.is_trusted(ip("198.51.100.8")));
        assert!(adm.is_trusted(ip("2001:db8:1::5")) && !adm.is_trusted(ip("2001:db9::1")));
        assert!(adm.is_verified(ip("203.0.113.1")) && !adm.is_verified(ip("2001:db9::1")));
        assert!(Admission::new(config()).is_trusted(ip("203.0.113.1")), "trunk mode: anyone");
    }

    #[test]
    fn scanner_user_agents_are_dropped_unanswered_and_logged_once_per_ten_seconds() {
        let mut adm = Admission::new(AdmissionConfig { trusted: vec!["127.0.0.0/8".parse().unwrap()], ..config() });
        let t0 = Instant::now();
        let scanner = addr("127.0.0.1:5070");
        let mut logged = 0;
        for (i, method) in ["OPTIONS", "INVITE", "REGISTER"].iter().cycle().take(30).enumerate() {
            let msg = request(&format!("{method} sip:10{i}@y SIP/2.0"), method, scanner, &format!("s{i}"), "")
                .replace("softphone/1.0", "friendly-scanner");
            let d = adm.admit(t0 + Duration::from_millis(i as u64 * 100), udp(&msg, scanner), &Table::default());
            assert!(is_guard_drop(&d, "scanner User-Agent"), "{d:?}");
            if matches!(d, Decision::Drop(Dropped::Guard { log: true, .. })) {
                logged += 1;
            }
        }
        assert_eq!(logged, 1, "once in 3 s, and even from a trusted network");
        assert_eq!(adm.dropped(), 30);
    }

    #[test]
    fn oversized_messages_are_dropped_before_anything_else() {
        let mut adm = Admission::new(AdmissionConfig {
            guard: GuardConfig { max_message_bytes: 4096, max_headers: 20, ..config().guard },
            ..config()
        });
        let me = addr("127.0.0.1:5070");
        let t0 = Instant::now();
        let big =
            request("OPTIONS sip:b@y SIP/2.0", "OPTIONS", me, "big", &format!("Subject: {}\r\n", "z".repeat(5000)));
        assert!(matches!(adm.admit(t0, udp(&big, me), &Table::default()), Decision::Drop(Dropped::Guard { .. })));
        let many: String = (0..30).map(|i| format!("X-Pad-{i}: y\r\n")).collect();
        let many = request("OPTIONS sip:b@y SIP/2.0", "OPTIONS", me, "many", &many);
        assert!(is_guard_drop(&adm.admit(t0, udp(&many, me), &Table::default()), "more headers than max_headers"));
        // Still serving.
        assert_eq!(answer(adm.admit(t0, udp(&options(me, "ok"), me), &Table::default())).code, 200);
    }

    #[test]
    fn an_options_flood_is_dropped_while_a_caller_from_another_address_gets_through() {
        let mut adm = Admission::new(config());
        let t0 = Instant::now();
        let (flood, caller) = (addr("127.0.0.2:5070"), addr("127.0.0.1:5080"));
        let mut table = Table::default();
        let (mut answered, mut logged) = (0, 0);
        // 4000 OPTIONS at 800/s.
        for i in 0..4000u64 {
            let now = t0 + Duration::from_micros(i * 1250);
            match adm.admit(now, udp(&options(flood, &format!("f{i}")), flood), &table) {
                Decision::Answer(a) if a.code == 200 => answered += 1,
                Decision::Drop(Dropped::Guard { why: "request rate above requests_per_second", log, .. }) => {
                    logged += log as usize
                }
                other => panic!("{other:?}"),
            }
            if i == 800 {
                let d = adm.admit(now, udp(&invite(caller, "real", 1, "INVITE", None), caller), &table);
                assert!(matches!(d, Decision::NewCall(_)), "{d:?}");
                table.0.insert("real".into(), Route::Call);
            }
        }
        // Burst 40 + 20/s over 5 s; everything else dropped, and logged once per 10 s.
        assert!((139..=141).contains(&answered), "{answered} answered");
        assert_eq!(logged, 1);
    }

    /// The user's bug: 1500 OPTIONS a second from 127.0.0.1 made a real call
    /// from 127.0.0.1 (another port) fail, its INVITEs sharing the flooded bucket.
    #[test]
    fn an_options_flood_from_the_callers_own_address_leaves_its_calls_their_own_allowance() {
        let mut adm = Admission::new(config());
        let t0 = Instant::now();
        let (flood, caller) = (addr("127.0.0.1:5070"), addr("127.0.0.1:5080"));
        let mut table = Table::default();
        for i in 0..3000u64 {
            let now = t0 + Duration::from_micros(i * 667);
            adm.admit(now, udp(&options(flood, &format!("f{i}")), flood), &table);
            // A call every 200 ms: its INVITE, a retransmission, the ACK and later the BYE all get in.
            if i % 300 == 0 {
                let id = format!("call-{i}");
                let first = adm.admit(now, udp(&invite(caller, &id, 1, "INVITE", None), caller), &table);
                assert!(matches!(first, Decision::NewCall(_)), "call {i}: {first:?}");
                table.0.insert(id.clone(), Route::Call);
                let again = adm.admit(now, udp(&invite(caller, &id, 1, "INVITE", None), caller), &table);
                assert!(matches!(again, Decision::ToCall { .. }), "{again:?}");
                let ack = adm.admit(now, udp(&invite(caller, &id, 1, "ACK", Some("ours")), caller), &table);
                assert!(matches!(ack, Decision::ToCall { .. }), "{ack:?}");
            }
        }
        // The flood itself was cut to its rate.
        assert!(adm.dropped() > 2800, "{} dropped", adm.dropped());
    }

    #[test]
    fn requests_in_a_call_are_routed_to_it_and_never_rate_limited() {
        let mut adm = Admission::new(config());
        let t0 = Instant::now();
        let caller = addr("198.51.100.7:5060");
        let table = Table(HashMap::from([("c1".to_string(), Route::Call), ("reg1".to_string(), Route::Registration)]));
        for i in 0..500u32 {
            let info = invite(caller, "c1", i + 2, "INFO", Some("ours"));
            match adm.admit(t0, udp(&info, caller), &table) {
                Decision::ToCall { request, len } => assert_eq!((request.cseq, len), (i + 2, info.len())),
                other => panic!("{other:?}"),
            }
        }
        let response = |call_id: &str| {
            format!(
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=l\r\n\
                 To: <sip:c@d>;tag=r\r\nCall-ID: {call_id}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
            )
        };
        assert!(matches!(adm.admit(t0, udp(&response("c1"), caller), &table), Decision::CallResponse(_)));
        assert!(matches!(adm.admit(t0, udp(&response("reg1"), caller), &table), Decision::RegistrationResponse(_)));
        let stray = adm.admit(t0, udp(&response("nobody"), caller), &table);
        assert_eq!(
            format!("{stray:?}"),
            format!("{:?}", Decision::Drop(Dropped::StrayResponse { code: 200, call_id: "nobody".into() }))
        );
        assert_eq!(adm.dropped(), 0);
    }

    #[test]
    fn untrusted_sources_get_the_same_bare_403_whatever_the_method_or_user() {
        let mut adm = Admission::new(AdmissionConfig {
            trust_enforced: true,
            trusted: vec!["10.0.0.0/8".parse().unwrap()],
            ..strangers()
        });
        let t0 = Instant::now();
        let stranger = addr("127.0.0.1:5070");
        let mut shapes = Vec::new();
        for (i, (method, user)) in [
            ("INVITE", "100"),
            ("INVITE", "101"),
            ("OPTIONS", "100"),
            ("REGISTER", ""),
            ("SUBSCRIBE", "102"),
            ("BYE", "100"),
        ]
        .into_iter()
        .enumerate()
        {
            let line = format!("{method} sip:{user}@y SIP/2.0");
            let msg =
                request(&line, method, stranger, &format!("u{i}"), "").replace("<sip:b@y>", &format!("<sip:{user}@y>"));
            let a = answer(adm.admit(t0, udp(&msg, stranger), &Table::default()));
            assert!(matches!(a.reason, Reason::Untrusted { .. }), "{a:?}");
            let t = text(&a);
            assert!(t.len() <= msg.len() && !t.contains("Backstop") && !t.contains("Allow"), "{t}");
            // Status line and header names: the shape, which must not tell users or methods apart.
            shapes.push(t.lines().map(|l| l.split(':').next().unwrap().to_string()).collect::<Vec<_>>());
        }
        assert!(shapes[0][0].starts_with("SIP/2.0 403"));
        assert!(shapes.iter().all(|s| *s == shapes[0]), "{shapes:?}");
        // An ACK is absorbed, not answered; a trusted network gets in.
        let ack = request("ACK sip:b@y SIP/2.0", "ACK", stranger, "u9", "");
        assert!(matches!(
            adm.admit(t0, udp(&ack, stranger), &Table::default()),
            Decision::Drop(Dropped::StrayAck { .. })
        ));
        let trunk = addr("10.1.2.3:5060");
        let d = adm.admit(t0, udp(&invite(trunk, "t1", 1, "INVITE", None), trunk), &Table::default());
        assert!(matches!(d, Decision::NewCall(_)), "{d:?}");
    }

    /// What SIPVicious and a reflection attacker would send, from an address
    /// we cannot verify: each answer is bare and no bigger than its request.
    #[test]
    fn answers_to_unverified_sources_are_never_bigger_than_the_request() {
        let mut adm = Admission::new(AdmissionConfig {
            guard: GuardConfig { requests_per_second: 0.0, ..config().guard },
            ..strangers()
        });
        let t0 = Instant::now();
        let me = addr("127.0.0.1:5070");
        let probes = [
            request("OPTIONS sip:b@y SIP/2.0", "OPTIONS", me, "p1", ""),
            request("REGISTER sip:y SIP/2.0", "REGISTER", me, "p2", ""),
            request("SUBSCRIBE sip:b@y SIP/2.0", "SUBSCRIBE", me, "p3", ""),
            request("BYE sip:b@y SIP/2.0", "BYE", me, "p4", ""),
            request("OPTIONS sip:b@y SIP/7.0", "OPTIONS", me, "p5", ""),
            request("FOO sip:b@y SIP/2.0", "FOO", me, "p6", ""),
            request("OPTIONS nobody:b@y SIP/2.0", "OPTIONS", me, "p7", ""),
            request("OPTIONS sip:b@y SIP/2.0", "OPTIONS", me, "p8", "Require: foo\r\n"),
            request("OPTIONS sip:b@y SIP/2.0", "INVITE", me, "p9", ""),
        ];
        let mut sent = 0;
        for p in &probes {
            match adm.admit(t0, udp(p, me), &Table::default()) {
                Decision::Answer(a) => {
                    if let Some(b) = a.bytes() {
                        assert!(b.len() <= p.len(), "{}-byte {} to a {}-byte request", b.len(), a.code, p.len());
                        assert!(!String::from_utf8_lossy(b).contains("Backstop"), "no Server header to strangers");
                        sent += 1;
                    }
                }
                Decision::Drop(_) => {}
                other => panic!("{other:?}"),
            }
        }
        assert!(sent >= 3, "only {sent} answers: still answer what fits");
        // The OPTIONS answer to a stranger is bare; to a verified source the full one.
        let bare = text(&answer(adm.admit(t0, udp(&probes[0], me), &Table::default())));
        assert!(!bare.contains("Allow:") && !bare.contains("Server:"), "{bare}");
        adm.mark_verified(me.ip());
        let full = text(&answer(adm.admit(t0, udp(&probes[0], me), &Table::default())));
        for h in ["Allow:", "Accept: application/sdp", "Supported:", "Server: Backstop"] {
            assert!(full.contains(h), "{h} missing: {full}");
        }
    }

    #[test]
    fn loopback_tcp_and_registrars_are_verified_strangers_are_not() {
        let mut adm = Admission::new(AdmissionConfig { trust_enforced: true, ..config() });
        let t0 = Instant::now();
        let verified = |adm: &mut Admission, from: &str, transport: Transport| {
            let from = addr(from);
            let msg = invite(from, &format!("v-{from}"), 1, "INVITE", None);
            match adm.admit(t0, Arrival { bytes: msg.as_bytes(), from, transport }, &Table::default()) {
                Decision::NewCall(c) => Some(c.budget.is_verified()),
                _ => None,
            }
        };
        let registrar = "203.0.113.5:5060";
        // Trust enforced with no registrar resolved yet: nobody may call.
        assert_eq!(verified(&mut adm, registrar, Transport::Udp), None);
        adm.add_registrar(addr(registrar).ip());
        assert!(adm.is_trusted(addr(registrar).ip()));
        assert_eq!(verified(&mut adm, registrar, Transport::Udp), Some(true));
        // In trunk mode: loopback (verified_sources) and TCP are verified, a UDP stranger is not.
        let mut adm = Admission::new(config());
        assert_eq!(verified(&mut adm, "127.0.0.1:5070", Transport::Udp), Some(true));
        assert_eq!(verified(&mut adm, "[::1]:5070", Transport::Udp), Some(true));
        assert_eq!(verified(&mut adm, "198.51.100.7:5070", Transport::Tcp), Some(true));
        assert_eq!(verified(&mut adm, "198.51.100.7:5070", Transport::Udp), Some(false));
        let mut adm = Admission::new(strangers());
        assert_eq!(verified(&mut adm, "127.0.0.1:5070", Transport::Udp), Some(false));
    }

    #[test]
    fn registrars_are_not_rate_limited() {
        let mut adm = Admission::new(AdmissionConfig { trust_enforced: true, ..config() });
        let registrar = addr("203.0.113.5:5060");
        adm.add_registrar(registrar.ip());
        let t0 = Instant::now();
        for i in 0..200 {
            let d = adm.admit(
                t0,
                udp(&invite(registrar, &format!("r{i}"), 1, "INVITE", None), registrar),
                &Table::default(),
            );
            assert!(matches!(d, Decision::NewCall(_)), "{i}: {d:?}");
            assert_eq!(
                answer(adm.admit(t0, udp(&options(registrar, &format!("o{i}")), registrar), &Table::default())).code,
                200
            );
        }
    }

    #[test]
    fn stateless_answers_to_what_opens_nothing() {
        let mut adm = Admission::new(config());
        let t0 = Instant::now();
        let me = addr("127.0.0.1:5070");
        let table = Table::default();
        let reg = answer(adm.admit(t0, udp(&request("REGISTER sip:y SIP/2.0", "REGISTER", me, "a1", ""), me), &table));
        assert_eq!((reg.code, reg.reason.clone()), (405, Reason::NotAllowed("REGISTER".into())));
        assert!(text(&reg).contains("Allow: INVITE"));
        let bye = answer(adm.admit(t0, udp(&request("BYE sip:b@y SIP/2.0", "BYE", me, "a2", ""), me), &table));
        assert_eq!((bye.code, bye.reason), (481, Reason::NoCall));
        let reinvite = answer(adm.admit(t0, udp(&invite(me, "a3", 2, "INVITE", Some("gone")), me), &table));
        assert_eq!(reinvite.code, 481);
        for method in ["NOTIFY", "REFER"] {
            let extra = if method == "NOTIFY" { "Event: refer;id=2\r\nSubscription-State: active\r\n" } else { "" };
            let line = format!("{method} sip:b@y SIP/2.0");
            let a = answer(adm.admit(t0, udp(&request(&line, method, me, "a7", extra), me), &table));
            assert_eq!((a.code, a.reason), (481, Reason::NoCall), "{method}");
        }
        let ack = adm.admit(t0, udp(&invite(me, "a4", 1, "ACK", Some("bs0")), me), &table);
        assert!(matches!(ack, Decision::Drop(Dropped::StrayAck { .. })), "{ack:?}");
        // Answers go where the Via says (rport: the source); over TCP, back on the connection.
        assert_eq!(bye.dest, me);
        let via = request("OPTIONS sip:b@y SIP/2.0", "OPTIONS", me, "a5", "").replace(";rport", "");
        let other_port = answer(adm.admit(t0, udp(&via, addr("127.0.0.1:40000")), &table));
        assert_eq!(other_port.dest, me, "no rport: the sent-by port");
        let tcp = Arrival { bytes: via.as_bytes(), from: addr("127.0.0.1:40000"), transport: Transport::Tcp };
        assert_eq!(answer(adm.admit(t0, tcp, &table)).dest, addr("127.0.0.1:40000"));
        // A request that fails validation gets the code validation chose.
        let bad = answer(adm.admit(t0, udp(&request("OPTIONS sip:b@y SIP/7.0", "OPTIONS", me, "a6", ""), me), &table));
        assert!(matches!(bad.reason, Reason::Invalid { .. }) && bad.code >= 400, "{bad:?}");
        let junk = adm.admit(t0, udp("hello", me), &table);
        assert!(matches!(junk, Decision::Drop(Dropped::Unusable { .. })), "{junk:?}");
    }

    #[test]
    fn new_calls_get_503_while_draining_or_full() {
        let mut adm = Admission::new(AdmissionConfig { max_calls: 1, ..config() });
        let t0 = Instant::now();
        let me = addr("127.0.0.1:5070");
        let Decision::NewCall(call) = adm.admit(t0, udp(&invite(me, "n1", 1, "INVITE", None), me), &Table::default())
        else {
            panic!("the first call is taken")
        };
        assert_eq!((call.busy.code, call.busy.reason.clone()), (503, Reason::NoRtpPort));
        let table = Table(HashMap::from([("n1".to_string(), Route::Call)]));
        let full = answer(adm.admit(t0, udp(&invite(me, "n2", 1, "INVITE", None), me), &table));
        assert_eq!((full.code, full.reason.clone()), (503, Reason::Full));
        assert!(text(&full).contains("Retry-After: 5"));
        adm.drain();
        let draining = answer(adm.admit(t0, udp(&invite(me, "n3", 1, "INVITE", None), me), &Table::default()));
        assert_eq!((draining.code, draining.reason), (503, Reason::Draining));
        // Calls in progress go on; OPTIONS get 503 + Retry-After, so a
        // dispatcher's probe takes this node out of its set at once.
        let bye = invite(me, "n1", 2, "BYE", Some("ours"));
        assert!(matches!(adm.admit(t0, udp(&bye, me), &table), Decision::ToCall { .. }));
        let probe = answer(adm.admit(t0, udp(&options(me, "n4"), me), &table));
        assert_eq!((probe.code, probe.reason.clone()), (503, Reason::Options));
        assert!(text(&probe).contains("Retry-After: 5"));
    }

    #[test]
    fn options_stay_200_when_merely_full() {
        let mut adm = Admission::new(AdmissionConfig { max_calls: 1, ..config() });
        let t0 = Instant::now();
        let me = addr("127.0.0.1:5070");
        let table = Table(HashMap::from([("n1".to_string(), Route::Call)]));
        let full = answer(adm.admit(t0, udp(&invite(me, "n2", 1, "INVITE", None), me), &table));
        assert_eq!((full.code, full.reason), (503, Reason::Full));
        let probe = answer(adm.admit(t0, udp(&options(me, "n3"), me), &table));
        assert_eq!((probe.code, probe.reason.clone()), (200, Reason::Options));
        assert!(!text(&probe).contains("Retry-After"));
    }

    #[test]
    fn the_budget_is_paid_by_the_source_and_lifted_only_by_its_acknowledgement() {
        let caller = addr("198.51.100.7:5060");
        let read = |text: &str, from: SocketAddr| match read_message(text.as_bytes(), from) {
            Incoming::Request(r) => r,
            other => panic!("{other:?}"),
        };
        let mut b = Budget::new(caller.ip(), false, 500);
        assert!(!b.is_verified());
        assert!(!b.spend(501) && b.spend(300) && !b.spend(201) && b.spend(200));
        assert_eq!(b.left(), Some(0));
        // A retransmitted INVITE from the source pays for more; one from elsewhere pays nothing.
        let again = invite(caller, "b1", 1, "INVITE", None);
        assert!(!b.receive(&read(&again, caller), again.len(), "ours"));
        assert_eq!(b.left(), Some(again.len()));
        let spoofed = addr("203.0.113.9:5060");
        assert!(!b.receive(&read(&again, spoofed), again.len(), "ours"));
        assert_eq!(b.left(), Some(again.len()));
        // An ACK with another tag, or with ours from another address, proves nothing.
        let stranger_ack = invite(caller, "b1", 1, "ACK", Some("theirs"));
        assert!(!b.receive(&read(&stranger_ack, caller), 0, "ours"));
        let ack = invite(caller, "b1", 1, "ACK", Some("ours"));
        assert!(!b.receive(&read(&ack, spoofed), 0, "ours") && !b.is_verified());
        // The source's ACK with our tag: verified, once; then no limit.
        assert!(b.receive(&read(&ack, caller), 0, "ours"));
        assert!(b.is_verified() && b.spend(1 << 20));
        assert!(!b.receive(&read(&ack, caller), 0, "ours"), "said once");
        assert!(Budget::new(caller.ip(), true, 0).spend(1 << 20));
        // Whatever length the network claims, what it pays for does not wrap.
        let mut b = Budget::new(caller.ip(), false, usize::MAX - 1);
        assert!(!b.receive(&read(&again, caller), again.len(), "ours"));
        assert_eq!(b.left(), Some(usize::MAX));
    }

    /// The whole no-amplification story of one call, with the real dialog:
    /// an INVITE sent once and never acknowledged gets nothing that does not
    /// fit in it (no 100, no 180, no 200); a real caller's retransmission
    /// pays for the 200, its ACK verifies the address, and its next call rings.
    #[test]
    fn an_unverified_caller_gets_no_more_bytes_than_it_sent_until_it_acknowledges() {
        let mut adm = Admission::new(strangers());
        let caller = addr("198.51.100.7:5060");
        let dialog_cfg = |budget: &Budget| DialogConfig {
            answer_after: Duration::from_millis(100),
            t1: Duration::from_millis(100),
            t2: Duration::from_millis(4000),
            provisional: budget.is_verified(),
            local_sip: addr("192.0.2.1:5060"),
            transport: Transport::Udp,
            local_rtp: addr("192.0.2.1:20000"),
            local_tag: "ours".into(),
            seed: 7,
        };
        // What the budget lets out (first lines), and how many it withheld.
        let flush = |d: &mut UasDialog, b: &mut Budget, sent: &mut Vec<String>| {
            let mut withheld = 0;
            while let Some(t) = d.poll_transmit() {
                if b.spend(t.bytes.len()) {
                    sent.push(String::from_utf8_lossy(&t.bytes).lines().next().unwrap_or("").to_string());
                } else {
                    withheld += 1;
                }
            }
            withheld
        };
        let t0 = Instant::now();
        let mut table = Table::default();

        // 1. Spoofed: sent once, never acknowledged, driven to the end of the transaction.
        let spoof = invite(caller, "spoof-1", 1, "INVITE", None);
        let Decision::NewCall(NewCall { invite: req, mut budget, .. }) = adm.admit(t0, udp(&spoof, caller), &table)
        else {
            panic!("a new call")
        };
        let mut d = UasDialog::new(t0, *req, dialog_cfg(&budget));
        let (mut sent, mut withheld) = (Vec::new(), 0);
        while let Some(at) = d.poll_timeout() {
            withheld += flush(&mut d, &mut budget, &mut sent);
            if at > t0 + Duration::from_secs(60) || d.is_terminated() {
                break;
            }
            d.handle_timeout(at);
        }
        withheld += flush(&mut d, &mut budget, &mut sent);
        // At most its BYE (RFC 3261 §13.3.1.4), which fits in what it sent.
        assert!(sent.iter().all(|l| l.starts_with("BYE ")), "sent to a spoofable address: {sent:?}");
        assert!(budget.left().is_some_and(|left| left < spoof.len()) || sent.is_empty());
        assert!(withheld >= 3, "the 200 and its retransmissions were withheld ({withheld})");

        // 2. A real caller: its retransmission pays for the 200, its ACK verifies it.
        let real = invite(caller, "real-1", 1, "INVITE", None);
        let Decision::NewCall(NewCall { invite: req, mut budget, .. }) = adm.admit(t0, udp(&real, caller), &table)
        else {
            panic!("a new call")
        };
        table.0.insert("real-1".into(), Route::Call);
        let mut d = UasDialog::new(t0, *req, dialog_cfg(&budget));
        let mut sent = Vec::new();
        flush(&mut d, &mut budget, &mut sent);
        let answer_at = d.poll_timeout().unwrap();
        d.handle_timeout(answer_at);
        assert_eq!(flush(&mut d, &mut budget, &mut sent), 1, "the 200 is bigger than the INVITE alone");
        let Decision::ToCall { request, len } = adm.admit(answer_at, udp(&real, caller), &table) else {
            panic!("the retransmission goes to the call")
        };
        assert!(!budget.receive(&request, len, "ours"));
        d.handle_request(answer_at, *request);
        // The 200's next retransmission (its own timer) is paid for now.
        let again_at = d.poll_timeout().unwrap();
        d.handle_timeout(again_at);
        assert_eq!(flush(&mut d, &mut budget, &mut sent), 0);
        assert_eq!(sent, ["SIP/2.0 200 OK"], "no 100 or 180; the 200 once paid for");
        let ack = invite(caller, "real-1", 1, "ACK", Some("ours"));
        let Decision::ToCall { request, len } = adm.admit(answer_at, udp(&ack, caller), &table) else {
            panic!("the ACK goes to the call")
        };
        assert!(budget.receive(&request, len, "ours"), "verified");
        adm.mark_verified(caller.ip());

        // 3. The next call from the same address rings as usual.
        let next = invite(caller, "real-2", 1, "INVITE", None);
        let Decision::NewCall(NewCall { invite: req, budget, .. }) = adm.admit(answer_at, udp(&next, caller), &table)
        else {
            panic!("a new call")
        };
        assert!(budget.is_verified());
        let mut d = UasDialog::new(answer_at, *req, dialog_cfg(&budget));
        let firsts: Vec<String> = std::iter::from_fn(|| d.poll_transmit())
            .map(|t| String::from_utf8_lossy(&t.bytes).lines().next().unwrap_or("").to_string())
            .collect();
        assert_eq!(firsts, ["SIP/2.0 100 Trying", "SIP/2.0 180 Ringing"]);
    }

    #[test]
    fn the_verified_set_is_bounded() {
        let mut adm = Admission::new(strangers());
        for i in 0..MAX_VERIFIED as u32 {
            adm.mark_verified(IpAddr::from((0x0a00_0000 + i).to_be_bytes()));
        }
        assert!(adm.is_verified("10.0.0.0".parse().unwrap()));
        adm.mark_verified("198.51.100.7".parse().unwrap());
        assert_eq!(adm.verified.len(), 1, "started over");
        assert!(!adm.is_verified("10.0.0.0".parse().unwrap()));
        assert!(adm.is_verified("198.51.100.7".parse().unwrap()));
    }
}
