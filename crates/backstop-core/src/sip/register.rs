//! The REGISTER client for one account (RFC 3261 §10), Sans-IO.
//!
//! It registers, answers digest challenges (401/407; `stale=true` retried
//! without counting as a failure), retries 423 with Min-Expires, honours the
//! expiry the registrar grants and refreshes at half of it, re-registers with
//! the address the registrar saw (Via `received`/`rport`) when we are behind
//! NAT, keeps the binding alive with CRLF, backs off exponentially with
//! jitter on failure (Retry-After honoured, so a 403 never spins), and
//! unregisters (Expires: 0) when stopped. Time is an input; nothing here
//! reads a clock or touches a socket. The REGISTER is written by the
//! message builder, resent by `retransmit`, and the wait after a failure is
//! the shared `backoff`.

use crate::backoff::Backoff;
use crate::sip::auth::{Challenge, Credentials};
use crate::sip::message::{ALLOW, OutgoingRequest, Response, branch, split_name_addrs};
use crate::sip::retransmit::Retransmit;
use crate::sip::via::Via;
use crate::sip::{SipTransmit, Transport, host_port};
use rsipstack::sip::{Method, Uri};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The longest a registrar's Retry-After holds a retry back.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// One account, resolved and ready.
#[derive(Debug, Clone)]
pub struct AccountSetup {
    /// A name for logs.
    pub name: String,
    pub username: String,
    pub domain: String,
    pub credentials: Credentials,
    pub expires: u32,
    /// Where REGISTERs are sent (the registrar, or the outbound proxy).
    pub dest: SocketAddr,
    /// Our SIP address (Via and the first Contact).
    pub local: SocketAddr,
    pub t1: Duration,
    pub t2: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub keepalive: Option<Duration>,
    /// Random values: Call-ID, tags, cnonce.
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegEvent {
    Registered {
        expires: u32,
        contact: String,
    },
    Failed {
        why: String,
        retry_in: Duration,
    },
    Unregistered,
    /// The registrar sees us at another address (NAT): that contact is registered instead.
    ContactMoved {
        from: SocketAddr,
        to: SocketAddr,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegState {
    Idle,
    Registering,
    Registered,
    WaitingToRetry,
    Unregistering,
    Stopped,
}

/// The REGISTER in flight, resent until answered.
struct Pending {
    retransmit: Retransmit,
    cseq: u32,
    expires: u32,
    /// The request carried credentials for this nonce.
    authed_nonce: Option<String>,
    /// It answered a challenge just received (not a cached one, as a refresh does).
    answers_challenge: bool,
}

pub struct Registration {
    cfg: AccountSetup,
    state: RegState,
    call_id: String,
    from_tag: String,
    cseq: u32,
    /// The address we put in Contact (the registrar's view of us, once known).
    contact_addr: SocketAddr,
    expires: u32,
    challenge: Option<(Challenge, bool)>,
    nonce_count: u32,
    pending: Option<Pending>,
    /// When to refresh, retry or send a keep-alive.
    refresh_at: Option<Instant>,
    retry_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    failures: u32,
    interval_too_brief: u32,
    transmits: VecDeque<SipTransmit>,
    events: VecDeque<RegEvent>,
}

impl Registration {
    /// The Call-ID every REGISTER of the account with this seed carries.
    pub fn call_id_for(seed: u64) -> String {
        format!("reg-{seed:016x}@backstop")
    }

    pub fn new(cfg: AccountSetup) -> Registration {
        Registration {
            call_id: Registration::call_id_for(cfg.seed),
            from_tag: format!("{:x}", cfg.seed.rotate_left(17)),
            cseq: 0,
            contact_addr: cfg.local,
            expires: cfg.expires,
            state: RegState::Idle,
            challenge: None,
            nonce_count: 0,
            pending: None,
            refresh_at: None,
            retry_at: None,
            keepalive_at: None,
            failures: 0,
            interval_too_brief: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            cfg,
        }
    }

    pub fn state(&self) -> RegState {
        self.state
    }

    /// The Contact we register: our address as the registrar sees it.
    fn contact(&self) -> String {
        format!("<sip:{}@{}>", self.cfg.username, host_port(self.contact_addr))
    }

    pub fn start(&mut self, now: Instant) {
        self.send_register(now, self.expires);
    }

    /// Unregister (Expires: 0) if registered; otherwise just stop.
    pub fn stop(&mut self, now: Instant) {
        self.refresh_at = None;
        self.retry_at = None;
        self.keepalive_at = None;
        if matches!(self.state, RegState::Registered | RegState::Registering) {
            self.send_register(now, 0);
            self.state = RegState::Unregistering;
        } else {
            self.state = RegState::Stopped;
        }
    }

    fn request_uri(&self) -> String {
        format!("sip:{}", self.cfg.domain)
    }

    fn send_register(&mut self, now: Instant, expires: u32) {
        self.send_register_answering(now, expires, false)
    }

    fn send_register_answering(&mut self, now: Instant, expires: u32, answers_challenge: bool) {
        self.cseq += 1;
        let uri = self.request_uri();
        let aor = format!("sip:{}@{}", self.cfg.username, self.cfg.domain);
        let mut headers = vec![("Expires", expires.to_string()), ("Allow", ALLOW.to_string())];
        let mut authed_nonce = None;
        if let Some((ch, proxy)) = &self.challenge {
            self.nonce_count += 1;
            let cnonce = format!("{:x}{:x}", self.cfg.seed, self.nonce_count);
            let value = ch.authorization(&self.cfg.credentials, "REGISTER", &uri, b"", self.nonce_count, &cnonce);
            headers.push((if *proxy { "Proxy-Authorization" } else { "Authorization" }, value));
            authed_nonce = Some(ch.nonce.clone());
        }
        let register = OutgoingRequest {
            method: Method::Register,
            uri: Uri::from_str(&uri).unwrap_or_else(|_| Uri::from_str("sip:invalid").expect("literal")),
            transport: Transport::Udp,
            sent_by: self.cfg.local,
            branch: branch(self.cfg.seed, self.cseq),
            from: format!("<{aor}>;tag={}", self.from_tag),
            to: format!("<{aor}>"),
            call_id: self.call_id.clone(),
            cseq: self.cseq,
            route: Vec::new(),
            contact: Some(self.contact()),
            headers,
            body: None,
        };
        let message = SipTransmit { dest: self.cfg.dest, bytes: register.to_bytes() };
        self.transmits.push_back(message.clone());
        self.pending = Some(Pending {
            retransmit: Retransmit::new(message, now, self.cfg.t1, self.cfg.t2, true),
            cseq: self.cseq,
            expires,
            authed_nonce,
            answers_challenge,
        });
        if expires > 0 {
            self.state = RegState::Registering;
        }
    }

    pub fn handle_response(&mut self, now: Instant, resp: &Response) {
        let Some(p) = &self.pending else { return };
        if resp.cseq != p.cseq || resp.cseq_method != "REGISTER" || resp.code < 200 {
            return;
        }
        let p = self.pending.take().expect("checked");
        if p.expires == 0 {
            self.state = RegState::Stopped;
            self.events.push_back(RegEvent::Unregistered);
            return;
        }
        match resp.code {
            200..=299 => self.on_success(now, resp, &p),
            401 | 407 => {
                let proxy = resp.code == 407;
                let header =
                    resp.frame.get(if proxy { "Proxy-Authenticate" } else { "WWW-Authenticate" }).unwrap_or("");
                match Challenge::parse(header) {
                    Ok(ch) => {
                        if p.authed_nonce.is_some() && p.answers_challenge && !ch.stale {
                            // Our credentials were refused. The next attempt starts
                            // without them, so a changed nonce can never make us loop.
                            self.challenge = None;
                            let why =
                                format!("authentication rejected ({}): check auth_username and password", resp.code);
                            self.fail(now, why, None);
                            return;
                        }
                        // A first challenge, a stale nonce, or a new nonce for a refresh
                        // (the registrar restarted, say): answer at once, not a failure.
                        self.nonce_count = 0;
                        self.challenge = Some((ch, proxy));
                        self.send_register_answering(now, p.expires, true);
                    }
                    Err(e) => self.fail(now, format!("cannot answer the {} challenge: {e}", resp.code), None),
                }
            }
            423 => {
                let min = resp.frame.get("Min-Expires").and_then(|v| v.trim().parse::<u32>().ok());
                match min {
                    Some(m) if m > p.expires && self.interval_too_brief < 3 => {
                        self.interval_too_brief += 1;
                        self.expires = m;
                        self.send_register(now, m);
                    }
                    _ => self.fail(now, "423 Interval Too Brief without a usable Min-Expires".into(), None),
                }
            }
            code => {
                let retry_after =
                    resp.frame.get("Retry-After").and_then(|v| v.split(';').next()?.trim().parse::<u64>().ok());
                self.fail(now, format!("registrar answered {code}"), retry_after.map(Duration::from_secs));
            }
        }
    }

    fn on_success(&mut self, now: Instant, resp: &Response, p: &Pending) {
        self.failures = 0;
        self.interval_too_brief = 0;
        // Behind NAT: register the address the registrar saw, once.
        if let Some(seen) = via_seen_address(resp)
            && seen != self.contact_addr
        {
            self.events.push_back(RegEvent::ContactMoved { from: self.contact_addr, to: seen });
            self.contact_addr = seen;
            self.send_register(now, p.expires);
            return;
        }
        let granted = granted_expires(resp, &self.contact_addr).unwrap_or(p.expires);
        if granted == 0 {
            self.fail(now, "registrar granted expires 0".into(), None);
            return;
        }
        self.state = RegState::Registered;
        self.refresh_at = Some(now + Duration::from_secs(granted as u64) / 2);
        self.keepalive_at = self.cfg.keepalive.map(|k| now + k);
        self.events.push_back(RegEvent::Registered { expires: granted, contact: self.contact() });
    }

    /// Wait and register again: backing off, and never sooner than the
    /// registrar's Retry-After (even past `retry_max`: a 403 must not spin).
    fn fail(&mut self, now: Instant, why: String, retry_after: Option<Duration>) {
        self.failures += 1;
        let backoff = Backoff { first: self.cfg.retry_base, max: self.cfg.retry_max };
        // Jitter from the seed: accounts differ, and a test sees the same waits every run.
        let jitter = (self.cfg.seed.rotate_left(self.failures) % 1000) as f64 / 1000.0;
        let mut wait = backoff.wait(self.failures, jitter);
        if let Some(ra) = retry_after {
            // A floor, but a sane one: a Retry-After of years (or of u64::MAX) is a day.
            wait = wait.max(ra.min(MAX_RETRY_AFTER));
        }
        self.state = RegState::WaitingToRetry;
        self.refresh_at = None;
        self.keepalive_at = None;
        self.retry_at = Some(now + wait);
        self.events.push_back(RegEvent::Failed { why, retry_in: wait });
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(p) = self.pending.as_mut()
            && p.retransmit.gave_up(now, &mut self.transmits)
        {
            let unregistering = p.expires == 0;
            self.pending = None;
            if unregistering {
                self.state = RegState::Stopped;
                self.events.push_back(RegEvent::Unregistered);
            } else {
                self.fail(now, "no response from the registrar (timeout)".into(), None);
            }
        }
        if self.retry_at.is_some_and(|t| now >= t) {
            self.retry_at = None;
            self.send_register(now, self.expires);
        }
        if self.refresh_at.is_some_and(|t| now >= t) {
            self.refresh_at = None;
            self.send_register(now, self.expires);
        }
        if let (Some(t), Some(every)) = (self.keepalive_at, self.cfg.keepalive)
            && now >= t
        {
            self.transmits.push_back(SipTransmit { dest: self.cfg.dest, bytes: b"\r\n\r\n".to_vec() });
            self.keepalive_at = Some(now + every);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let pending = self.pending.as_ref().map(|p| p.retransmit.deadline());
        [pending, self.retry_at, self.refresh_at, self.keepalive_at].into_iter().flatten().min()
    }

    pub fn poll_transmit(&mut self) -> Option<SipTransmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<RegEvent> {
        self.events.pop_front()
    }
}

/// The top Via's `received`/`rport` in a response: where the registrar saw us.
fn via_seen_address(resp: &Response) -> Option<SocketAddr> {
    let via = Via::parse(resp.frame.get("Via")?).ok()?;
    let ip: IpAddr = via.received.as_deref()?.parse().ok()?;
    let port = match via.rport {
        Some(Some(p)) => p,
        _ => via.port.unwrap_or(5060),
    };
    Some(SocketAddr::new(ip, port))
}

/// The expiry granted for our contact: its `expires` param, else the Expires header.
fn granted_expires(resp: &Response, contact: &SocketAddr) -> Option<u32> {
    let ours = host_port(*contact);
    for c in resp.frame.get_all("Contact").flat_map(split_name_addrs) {
        if c.contains(&ours) {
            let after = c.rsplit_once('>').map(|(_, p)| p).unwrap_or("");
            for param in after.split(';') {
                if let Some((k, v)) = param.split_once('=')
                    && k.trim().eq_ignore_ascii_case("expires")
                {
                    return v.trim().parse().ok();
                }
            }
        }
    }
    resp.frame.get("Expires").and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Incoming, read_message};

    fn setup() -> AccountSetup {
        AccountSetup {
            name: "pbx".into(),
            username: "overflow".into(),
            domain: "pbx.example.net".into(),
            credentials: Credentials { username: "overflow".into(), password: "secret".into() },
            expires: 3600,
            dest: "127.0.0.1:5060".parse().unwrap(),
            local: "127.0.0.1:5080".parse().unwrap(),
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            keepalive: Some(Duration::from_secs(30)),
            seed: 7,
        }
    }

    /// The last REGISTER sent, as text.
    fn last_sent(r: &mut Registration) -> String {
        let mut last = None;
        while let Some(t) = r.poll_transmit() {
            last = Some(String::from_utf8(t.bytes).unwrap());
        }
        last.expect("something was sent")
    }

    fn cseq_of(req: &str) -> u32 {
        req.lines().find_map(|l| l.strip_prefix("CSeq: ")).unwrap().split(' ').next().unwrap().parse().unwrap()
    }

    fn response(req: &str, code: u16, extra: &str) -> Response {
        let via = req.lines().find_map(|l| l.strip_prefix("Via: ")).unwrap();
        let text = format!(
            "SIP/2.0 {code} X\r\nVia: {via}\r\nFrom: <sip:overflow@pbx.example.net>;tag=1\r\nTo: <sip:overflow@pbx.example.net>;tag=2\r\n\
             Call-ID: reg\r\nCSeq: {} REGISTER\r\n{extra}Content-Length: 0\r\n\r\n",
            cseq_of(req)
        );
        match read_message(text.as_bytes(), "127.0.0.1:5060".parse().unwrap()) {
            Incoming::Response(r) => *r,
            other => panic!("{other:?}"),
        }
    }

    fn events(r: &mut Registration) -> Vec<RegEvent> {
        std::iter::from_fn(|| r.poll_event()).collect()
    }

    /// Started, challenged, and the REGISTER answering the challenge sent.
    fn challenged(t0: Instant) -> (Registration, String) {
        let mut r = Registration::new(setup());
        r.start(t0);
        let first = last_sent(&mut r);
        assert!(!first.contains("Authorization"));
        r.handle_response(t0, &response(&first, 401, CHALLENGE));
        let answer = last_sent(&mut r);
        (r, answer)
    }

    const CHALLENGE: &str = "WWW-Authenticate: Digest realm=\"pbx\", nonce=\"n1\", qop=\"auth\", algorithm=MD5\r\n";

    #[test]
    fn registers_through_a_challenge_and_refreshes_at_half_the_granted_time() {
        let t0 = Instant::now();
        let mut r = Registration::new(setup());
        r.start(t0);
        let first = last_sent(&mut r);
        assert!(first.starts_with("REGISTER sip:pbx.example.net SIP/2.0\r\n"));
        assert!(first.contains("Expires: 3600") && !first.contains("Authorization"));
        r.handle_response(t0, &response(&first, 401, CHALLENGE));
        let second = last_sent(&mut r);
        assert_eq!(cseq_of(&second), cseq_of(&first) + 1);
        assert!(second.contains(
            "Authorization: Digest username=\"overflow\", realm=\"pbx\", nonce=\"n1\", uri=\"sip:pbx.example.net\""
        ));
        assert!(second.contains("nc=00000001"));
        // The registrar grants less than asked: 600 s.
        r.handle_response(t0, &response(&second, 200, "Contact: <sip:overflow@127.0.0.1:5080>;expires=600\r\n"));
        assert_eq!(
            events(&mut r),
            [RegEvent::Registered { expires: 600, contact: "<sip:overflow@127.0.0.1:5080>".into() }]
        );
        assert_eq!(r.state(), RegState::Registered);
        // Keep-alives every 30 s, then the refresh at 300 s with the next nonce count.
        let mut keepalives = 0;
        let now = loop {
            let now = r.poll_timeout().unwrap();
            r.handle_timeout(now);
            let sent: Vec<Vec<u8>> = std::iter::from_fn(|| r.poll_transmit()).map(|t| t.bytes).collect();
            if let Some(reg) = sent.iter().find(|b| b.starts_with(b"REGISTER")) {
                let refresh = String::from_utf8(reg.clone()).unwrap();
                assert!(refresh.contains("nc=00000002"), "{refresh}");
                break now;
            }
            assert_eq!(sent, [b"\r\n\r\n".to_vec()]);
            keepalives += 1;
        };
        assert_eq!(now - t0, Duration::from_secs(300));
        assert_eq!(keepalives, 9);
    }

    #[test]
    fn wrong_password_backs_off_exponentially_and_stale_does_not_count() {
        let t0 = Instant::now();
        let (mut r, req) = challenged(t0);
        // Stale nonce: answered again at once, no failure.
        r.handle_response(t0, &response(&req, 401, &CHALLENGE.replace("n1\"", "n2\", stale=true")));
        assert!(events(&mut r).is_empty());
        let req = last_sent(&mut r);
        assert!(req.contains("nonce=\"n2\""));
        // The answer to the stale nonce is refused too: the credentials are wrong.
        let mut waits = Vec::new();
        let mut req = req;
        let mut now = t0;
        for round in 0..4 {
            if round > 0 {
                // A retry starts without credentials; the registrar challenges it afresh.
                assert!(!req.contains("Authorization"));
                r.handle_response(now, &response(&req, 401, CHALLENGE));
                assert!(events(&mut r).is_empty());
                req = last_sent(&mut r);
            }
            r.handle_response(now, &response(&req, 401, CHALLENGE));
            let ev = events(&mut r);
            let Some(RegEvent::Failed { why, retry_in }) = ev.last() else { panic!("{ev:?}") };
            assert!(why.contains("authentication rejected"), "{why}");
            waits.push(retry_in.as_secs_f64());
            now = r.poll_timeout().unwrap();
            r.handle_timeout(now);
            req = last_sent(&mut r);
        }
        for (w, base) in waits.iter().zip([5.0, 10.0, 20.0, 40.0]) {
            assert!(*w >= base * 0.8 && *w <= base * 1.2, "{waits:?}");
        }
    }

    #[test]
    fn a_refresh_challenged_with_a_new_nonce_is_answered_not_failed() {
        let t0 = Instant::now();
        let (mut r, req) = challenged(t0);
        r.handle_response(t0, &response(&req, 200, "Expires: 60\r\n"));
        events(&mut r);
        // The refresh reuses n1; the registrar (restarted) no longer knows it and sends n9, without stale.
        let at = t0 + Duration::from_secs(30);
        r.handle_timeout(at);
        let refresh = std::iter::from_fn(|| r.poll_transmit())
            .map(|t| String::from_utf8(t.bytes).unwrap())
            .find(|m| m.starts_with("REGISTER"))
            .unwrap();
        assert!(refresh.contains("nonce=\"n1\""));
        r.handle_response(at, &response(&refresh, 401, &CHALLENGE.replace("n1", "n9")));
        assert!(events(&mut r).is_empty(), "not a failure");
        let answer = last_sent(&mut r);
        assert!(answer.contains("nonce=\"n9\"") && answer.contains("nc=00000001"));
        r.handle_response(at, &response(&answer, 200, "Expires: 60\r\n"));
        assert!(matches!(events(&mut r)[..], [RegEvent::Registered { expires: 60, .. }]));
    }

    #[test]
    fn interval_too_brief_uses_min_expires() {
        let t0 = Instant::now();
        let mut cfg = setup();
        cfg.expires = 30;
        let mut r = Registration::new(cfg);
        r.start(t0);
        let req = last_sent(&mut r);
        r.handle_response(t0, &response(&req, 423, "Min-Expires: 120\r\n"));
        let req = last_sent(&mut r);
        assert!(req.contains("Expires: 120"));
        r.handle_response(t0, &response(&req, 200, "Expires: 120\r\n"));
        assert!(matches!(events(&mut r)[..], [RegEvent::Registered { expires: 120, .. }]));
    }

    #[test]
    fn forbidden_honours_retry_after_and_timeouts_fail() {
        let t0 = Instant::now();
        let mut r = Registration::new(setup());
        r.start(t0);
        let req = last_sent(&mut r);
        r.handle_response(t0, &response(&req, 403, "Retry-After: 600\r\n"));
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(600)), "a 403 waits, never spins");
        r.handle_timeout(t0 + Duration::from_secs(600));
        let _ = last_sent(&mut r);
        // No answer at all: retransmitted on T1..T2, failed after 64×T1.
        let mut sends = 0;
        let mut now = t0 + Duration::from_secs(600);
        while r.state() == RegState::Registering {
            now = r.poll_timeout().unwrap();
            r.handle_timeout(now);
            sends += std::iter::from_fn(|| r.poll_transmit()).count();
        }
        assert_eq!(now - (t0 + Duration::from_secs(600)), Duration::from_secs(32));
        assert!(sends >= 8, "{sends} retransmissions");
        assert!(matches!(events(&mut r).last(), Some(RegEvent::Failed { why, .. }) if why.contains("timeout")));
    }

    #[test]
    fn behind_nat_the_seen_address_is_registered_and_stop_unregisters() {
        let t0 = Instant::now();
        let mut r = Registration::new(setup());
        r.start(t0);
        let req = last_sent(&mut r);
        let mut nat = response(&req, 200, "Expires: 3600\r\n");
        // The registrar saw us at 203.0.113.5:40000.
        let via = req
            .lines()
            .find_map(|l| l.strip_prefix("Via: "))
            .unwrap()
            .replace(";rport", ";received=203.0.113.5;rport=40000");
        nat.frame.fields.iter_mut().find(|f| f.name == "Via").unwrap().value = via;
        r.handle_response(t0, &nat);
        let again = last_sent(&mut r);
        assert!(again.contains("Contact: <sip:overflow@203.0.113.5:40000>"), "{again}");
        r.handle_response(t0, &response(&again, 200, "Expires: 3600\r\n"));
        let seen: SocketAddr = "203.0.113.5:40000".parse().unwrap();
        assert!(
            matches!(events(&mut r)[..], [RegEvent::ContactMoved { to, .. }, RegEvent::Registered { .. }] if to == seen)
        );
        r.stop(t0);
        let bye = last_sent(&mut r);
        assert!(bye.contains("Expires: 0"));
        r.handle_response(t0, &response(&bye, 200, ""));
        assert_eq!(events(&mut r), [RegEvent::Unregistered]);
        assert_eq!(r.state(), RegState::Stopped);
    }
}
