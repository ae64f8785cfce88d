//! What gets in, Sans-IO: size and header limits on every SIP message,
//! known scanner User-Agents dropped, and per-source token buckets on
//! requests that open something new (out-of-dialog), so a flood from one
//! address is dropped instead of answered, and its log lines are bounded too.
//!
//! New calls (INVITE without a To-tag) have an allowance of their own,
//! apart from every other out-of-dialog request: an OPTIONS or REGISTER
//! flood from an address then never starves that address's real calls
//! (a PBX pinging hard and calling from the same IP, or a flood spoofing
//! it), while an INVITE scanner is still held back by its own bucket.
//! [`Admission`](super::admission::Admission) owns one `Guard` and asks it
//! before acting on a message.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub struct GuardConfig {
    pub max_message_bytes: usize,
    pub max_headers: usize,
    pub max_header_line_bytes: usize,
    /// Out-of-dialog requests other than new calls, per second per source address, and the burst allowed.
    pub requests_per_second: f64,
    pub request_burst: f64,
    /// New calls (INVITE without a To-tag) per second per source address, and the burst: their own allowance.
    pub invites_per_second: f64,
    pub invite_burst: f64,
    /// Lower-case substrings of User-Agent values to drop; empty: drop none.
    pub scanner_user_agents: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Drop without a word; the reason is for the log.
    Drop(&'static str),
}

/// What an out-of-dialog request would open, which decides the allowance it is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// An INVITE without a To-tag: `invites_per_second`.
    NewCall,
    /// Anything else (OPTIONS, REGISTER, SUBSCRIBE, a request that failed
    /// validation...): `requests_per_second`.
    Other,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One token bucket per source address, for one kind of request. A rate of 0 is no limit.
#[derive(Debug)]
struct Allowance {
    rate: f64,
    burst: f64,
    buckets: HashMap<IpAddr, Bucket>,
}

impl Allowance {
    fn new(rate: f64, burst: f64) -> Allowance {
        Allowance { rate, burst: burst.max(1.0), buckets: HashMap::new() }
    }

    /// Take one token from `from`'s bucket, if it has one.
    fn take(&mut self, now: Instant, from: IpAddr) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        if self.buckets.len() >= MAX_SOURCES {
            self.sweep(now);
        }
        let (rate, burst) = (self.rate, self.burst);
        let b = self.buckets.entry(from).or_insert(Bucket { tokens: burst, at: now });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forget the sources whose buckets have refilled (idle), and if that is not enough, all.
    fn sweep(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst);
        if self.buckets.len() >= MAX_SOURCES {
            self.buckets.clear();
        }
    }
}

/// How often a source's drops are logged, at most.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Buckets kept at most, per allowance; above it, full (idle) buckets are swept.
const MAX_SOURCES: usize = 65_536;

#[derive(Debug)]
pub struct Guard {
    cfg: GuardConfig,
    requests: Allowance,
    invites: Allowance,
    logged: HashMap<IpAddr, Instant>,
    /// Messages dropped so far, for the logs and metrics.
    pub dropped: u64,
}

impl Guard {
    pub fn new(cfg: GuardConfig) -> Guard {
        Guard {
            requests: Allowance::new(cfg.requests_per_second, cfg.request_burst),
            invites: Allowance::new(cfg.invites_per_second, cfg.invite_burst),
            cfg,
            logged: HashMap::new(),
            dropped: 0,
        }
    }

    /// Size and shape, before parsing: total size, header count, longest header line.
    pub fn check_bytes(&mut self, bytes: &[u8]) -> Verdict {
        if bytes.len() > self.cfg.max_message_bytes {
            return self.drop("message larger than max_message_bytes");
        }
        let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(bytes.len());
        let mut headers = 0;
        for line in bytes[..head_end].split(|b| *b == b'\n') {
            if line.len() > self.cfg.max_header_line_bytes {
                return self.drop("header line longer than max_header_line_bytes");
            }
            headers += 1;
        }
        if headers > self.cfg.max_headers + 1 {
            return self.drop("more headers than max_headers");
        }
        Verdict::Pass
    }

    /// A request that would start something (not part of a call we have),
    /// counted against the allowance of what it would open. `trusted`
    /// sources (registrars, `trusted_sources`) are not rate limited.
    pub fn check_request(
        &mut self,
        now: Instant,
        from: IpAddr,
        opening: Opening,
        user_agent: Option<&str>,
        trusted: bool,
    ) -> Verdict {
        if let Some(ua) = user_agent {
            let ua = ua.to_ascii_lowercase();
            if self.cfg.scanner_user_agents.iter().any(|s| ua.contains(s.as_str())) {
                return self.drop("scanner User-Agent");
            }
        }
        if trusted {
            return Verdict::Pass;
        }
        match opening {
            Opening::NewCall if !self.invites.take(now, from) => self.drop("new-call rate above invites_per_second"),
            Opening::Other if !self.requests.take(now, from) => self.drop("request rate above requests_per_second"),
            _ => Verdict::Pass,
        }
    }

    /// Whether a drop from `from` should be logged now (once per source per 10 s).
    pub fn should_log(&mut self, now: Instant, from: IpAddr) -> bool {
        if self.logged.len() >= MAX_SOURCES {
            self.logged.retain(|_, at| now.saturating_duration_since(*at) < LOG_EVERY);
        }
        match self.logged.get(&from) {
            Some(at) if now.saturating_duration_since(*at) < LOG_EVERY => false,
            _ => {
                self.logged.insert(from, now);
                true
            }
        }
    }

    fn drop(&mut self, why: &'static str) -> Verdict {
        self.dropped += 1;
        Verdict::Drop(why)
    }
}

/// User-Agent values of common SIP scanners (lower case, matched as substrings).
pub fn default_scanner_user_agents() -> Vec<String> {
    ["friendly-scanner", "sipvicious", "sipcli", "sip-scan", "sipscan", "vaxsipuseragent", "iwar", "sivus", "smap"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard::new(GuardConfig {
            max_message_bytes: 1000,
            max_headers: 3,
            max_header_line_bytes: 50,
            requests_per_second: 10.0,
            request_burst: 20.0,
            invites_per_second: 10.0,
            invite_burst: 20.0,
            scanner_user_agents: default_scanner_user_agents(),
        })
    }

    #[test]
    fn size_and_header_limits() {
        let mut g = guard();
        let ok = b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\nFrom: y\r\nTo: z\r\n\r\nbody";
        assert_eq!(g.check_bytes(ok), Verdict::Pass);
        let many = b"OPTIONS sip:a@b SIP/2.0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        assert_eq!(g.check_bytes(many), Verdict::Drop("more headers than max_headers"));
        let long = format!("OPTIONS sip:a@b SIP/2.0\r\nSubject: {}\r\n\r\n", "x".repeat(60));
        assert!(matches!(g.check_bytes(long.as_bytes()), Verdict::Drop(_)));
        assert!(matches!(g.check_bytes(&[b'a'; 1001]), Verdict::Drop(_)));
        // A long body line is not a header line.
        let body = format!("INFO sip:a@b SIP/2.0\r\nVia: x\r\n\r\n{}", "y".repeat(200));
        assert_eq!(g.check_bytes(body.as_bytes()), Verdict::Pass);
        assert_eq!(g.dropped, 3);
    }

    #[test]
    fn a_flood_is_cut_to_the_rate_and_others_are_untouched() {
        let mut g = guard();
        let t0 = Instant::now();
        let flood: IpAddr = "203.0.113.9".parse().unwrap();
        let caller: IpAddr = "198.51.100.1".parse().unwrap();
        // 1000 requests in one second from one address: the burst (20) plus 10/s get through.
        let mut passed = 0;
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(i);
            if g.check_request(now, flood, Opening::Other, None, false) == Verdict::Pass {
                passed += 1;
            }
            if i % 100 == 0 {
                assert_eq!(g.check_request(now, caller, Opening::Other, Some("Asterisk PBX 20"), false), Verdict::Pass);
            }
        }
        assert!((29..=31).contains(&passed), "{passed} passed");
        // Trusted sources are not limited; scanners are dropped even when trusted.
        assert_eq!(g.check_request(t0 + Duration::from_secs(1), flood, Opening::Other, None, true), Verdict::Pass);
        assert_eq!(
            g.check_request(t0, caller, Opening::NewCall, Some("friendly-scanner"), true),
            Verdict::Drop("scanner User-Agent")
        );
        // After a quiet second the bucket has refilled by the rate.
        let later = t0 + Duration::from_secs(3);
        assert_eq!(g.check_request(later, flood, Opening::Other, None, false), Verdict::Pass);
    }

    /// The user's bug: 1500 OPTIONS a second from 127.0.0.1 made a call from
    /// 127.0.0.1 (another port) fail, its INVITEs sharing the flooded bucket.
    #[test]
    fn an_options_flood_leaves_new_calls_from_the_same_address_their_own_allowance() {
        let mut g = guard();
        let t0 = Instant::now();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let (mut options, mut invites) = (0, 0);
        for i in 0..1500u64 {
            let now = t0 + Duration::from_micros(i * 667);
            if g.check_request(now, ip, Opening::Other, None, false) == Verdict::Pass {
                options += 1;
            }
            // A call every 100 ms, with a retransmission-free INVITE each: all of them in.
            if i % 150 == 0 {
                assert_eq!(g.check_request(now, ip, Opening::NewCall, None, false), Verdict::Pass, "INVITE {i}");
                invites += 1;
            }
        }
        assert!((29..=31).contains(&options), "{options} OPTIONS passed");
        assert_eq!(invites, 10);
        // And the other way round: an INVITE flood is cut to its own rate, OPTIONS still pass.
        let t1 = t0 + Duration::from_secs(10);
        let passed = (0..1000u64)
            .filter(|i| {
                g.check_request(t1 + Duration::from_millis(*i), ip, Opening::NewCall, None, false) == Verdict::Pass
            })
            .count();
        assert!((29..=31).contains(&passed), "{passed} INVITEs passed");
        let after = t1 + Duration::from_millis(999);
        assert_eq!(g.check_request(after, ip, Opening::Other, None, false), Verdict::Pass);
        assert_eq!(
            g.check_request(after, ip, Opening::NewCall, None, false),
            Verdict::Drop("new-call rate above invites_per_second")
        );
        // Trusted sources are exempt from both.
        assert_eq!(g.check_request(after, ip, Opening::NewCall, None, true), Verdict::Pass);
    }

    #[test]
    fn a_zero_rate_is_no_limit() {
        let mut g = Guard::new(GuardConfig { requests_per_second: 0.0, invites_per_second: 0.0, ..guard().cfg });
        let t0 = Instant::now();
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        for opening in [Opening::Other, Opening::NewCall] {
            assert!((0..5000).all(|_| g.check_request(t0, ip, opening, None, false) == Verdict::Pass));
        }
        // Each rate is its own: only OPTIONS unlimited, new calls still held back.
        let mut g = Guard::new(GuardConfig { requests_per_second: 0.0, ..guard().cfg });
        assert!((0..5000).all(|_| g.check_request(t0, ip, Opening::Other, None, false) == Verdict::Pass));
        let passed = (0..100).filter(|_| g.check_request(t0, ip, Opening::NewCall, None, false) == Verdict::Pass);
        assert_eq!(passed.count(), 20, "the invite burst");
    }

    #[test]
    fn idle_sources_are_swept_when_the_table_is_full() {
        let mut a = Allowance::new(10.0, 20.0);
        let t0 = Instant::now();
        for i in 0..MAX_SOURCES as u32 {
            assert!(a.take(t0, IpAddr::from(i.to_be_bytes())));
        }
        // A second later every bucket has refilled: all forgotten, the new one kept.
        let t1 = t0 + Duration::from_secs(2);
        assert!(a.take(t1, "198.51.100.1".parse().unwrap()));
        assert_eq!(a.buckets.len(), 1);
    }

    #[test]
    fn drops_are_logged_once_per_source_per_ten_seconds() {
        let mut g = guard();
        let t0 = Instant::now();
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        assert!(g.should_log(t0, ip));
        assert!(!g.should_log(t0 + Duration::from_secs(9), ip));
        assert!(g.should_log(t0 + Duration::from_secs(10), ip));
    }
}
