//! Who may use the HTTP face: inbox users (argon2 password hashes, a
//! session cookie, a CSRF token per session), API bearer tokens (compared
//! by their SHA-256 in constant time), and the login rate limiter.
//!
//! Sessions live in memory: a restart logs everyone out, which for a
//! handful of owners and a 12-hour session is a fair price for keeping no
//! session secrets on disk. A session names its user and the password hash
//! it logged in with, so a reload that removes the user or changes the
//! password ends it at the next request.

use crate::config::{HttpConfig, TokenScope};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Failed logins allowed per client address and per user name in [`WINDOW`].
pub const MAX_FAILURES: u32 = 5;
/// The window failed logins are counted in.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Sessions kept at most (the oldest go first).
const MAX_SESSIONS: usize = 10_000;

/// The users and tokens of the current config: swapped whole on reload.
#[derive(Default)]
pub struct Credentials {
    /// name → PHC hash.
    pub users: HashMap<String, String>,
    /// (SHA-256 of the token, its name, what it may do).
    pub tokens: Vec<([u8; 32], String, TokenScope)>,
}

impl Credentials {
    /// From `[http]`; tokens that do not resolve (validated before, so only
    /// an environment variable gone since) are left out, with an error logged.
    pub fn from_config(h: &HttpConfig) -> Credentials {
        let users = h.user.iter().map(|u| (u.name.clone(), u.password_hash.clone())).collect();
        let tokens = h
            .token
            .iter()
            .filter_map(|t| match t.digest() {
                Ok(d) => Some((d, t.name.clone(), t.scope)),
                Err(e) => {
                    tracing::error!(token = %t.name, "[http] token left out: {e}");
                    None
                }
            })
            .collect();
        Credentials { users, tokens }
    }

    /// The name and scope of the token `presented` is, compared with every token in constant time.
    pub fn token(&self, presented: &str) -> Option<(String, TokenScope)> {
        use sha2::{Digest, Sha256};
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (d, name, scope) in &self.tokens {
            if ct_eq(d, &digest) {
                found = Some((name.clone(), *scope));
            }
        }
        found
    }
}

/// The bearer token in `Authorization`, if it holds one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let v = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Equal, in time that depends on the lengths only.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 128 random bits, hex.
pub fn random_token() -> String {
    super::links::hex(&rand::random::<[u8; 16]>())
}

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    /// The hash the user logged in with: a changed password ends the session.
    pub hash: String,
    pub csrf: String,
    pub expires: Instant,
}

/// The sessions, by id.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// A new session for `user`; its id.
    pub fn create(&self, user: &str, hash: &str, ttl: Duration) -> (String, Session) {
        let id = random_token();
        let s = Session { user: user.into(), hash: hash.into(), csrf: random_token(), expires: Instant::now() + ttl };
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(id.clone(), s.clone());
        (id, s)
    }

    /// The live session `id` names, if its user still exists with the same password.
    pub fn get(&self, id: &str, creds: &Credentials) -> Option<Session> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let s = map.get(id)?;
        let valid = s.expires > Instant::now() && creds.users.get(&s.user).is_some_and(|h| *h == s.hash);
        if !valid {
            map.remove(id);
            return None;
        }
        Some(s.clone())
    }

    pub fn remove(&self, id: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// Drop the sessions of users no longer in `creds` (after a reload).
    pub fn prune(&self, creds: &Credentials) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| creds.users.get(&s.user).is_some_and(|h| *h == s.hash));
    }
}

/// Client-address keys the limiter keeps at most; past it the oldest idle
/// ones are forgotten (name keys are few and never evicted: see [`RateLimiter::name_key`]).
pub const MAX_ADDRESS_KEYS: usize = 10_000;
/// Unknown login names are counted in this many buckets (a keyed hash of the name).
const NAME_BUCKETS: u64 = 1024;

/// One key's count: failures in the window that began at `start`, and the
/// attempts begun but not yet settled.
#[derive(Debug, Clone, Copy)]
struct Count {
    start: Instant,
    failures: u32,
    in_flight: u32,
}

/// Failed logins counted per key (a client address, a user name) in a fixed
/// window. An attempt is counted before its password is checked
/// ([`RateLimiter::begin`]): a key is refused once its failures plus the
/// attempts still being checked reach the maximum, so concurrent requests
/// cannot all pass a check made before any of them failed.
pub struct RateLimiter {
    max: u32,
    window: Duration,
    max_address_keys: usize,
    /// Keys the hash of unknown names into [`NAME_BUCKETS`] buckets; random per process.
    bucket_hasher: std::hash::RandomState,
    map: Mutex<HashMap<String, Count>>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::new(MAX_FAILURES, WINDOW)
    }
}

/// A login attempt counted on its keys until it is settled: [`Attempt::succeeded`]
/// or [`Attempt::failed`]. Dropped unsettled (the request was abandoned
/// while its password was checked), it counts as a failure.
pub struct Attempt<'a> {
    limiter: &'a RateLimiter,
    keys: Vec<String>,
    settled: bool,
}

impl Attempt<'_> {
    /// The password was right: the attempt is released, and `clear`'s
    /// failures are forgotten (the name's; not the address's, so that one
    /// known password cannot reset the count for guessing others).
    pub fn succeeded(mut self, clear: &str) {
        self.settled = true;
        self.limiter.settle(&self.keys, false, Some(clear));
    }

    /// The password was wrong: the attempt becomes a failure on every key.
    pub fn failed(mut self) {
        self.settled = true;
        self.limiter.settle(&self.keys, true, None);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.limiter.settle(&self.keys, true, None);
        }
    }
}

impl RateLimiter {
    pub fn new(max: u32, window: Duration) -> RateLimiter {
        RateLimiter {
            max,
            window,
            max_address_keys: MAX_ADDRESS_KEYS,
            bucket_hasher: std::hash::RandomState::new(),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The same, keeping at most `n` address keys (tests).
    pub fn with_max_address_keys(mut self, n: usize) -> RateLimiter {
        self.max_address_keys = n;
        self
    }

    /// The key of a client address: an IPv4 address, or an IPv6 address's
    /// /64 (one subscriber commonly holds a whole /64).
    pub fn address_key(ip: std::net::IpAddr) -> String {
        match ip.to_canonical() {
            std::net::IpAddr::V4(v4) => format!("ip:{v4}"),
            std::net::IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        }
    }

    /// The key of a login name: its own for a configured user; an unknown
    /// name shares one of [`NAME_BUCKETS`] buckets picked by a keyed hash,
    /// so that attacker-chosen names cannot grow the map, and an unknown
    /// name is limited like a known one (no 429 tells which names exist).
    pub fn name_key(&self, name: &str, known: bool) -> String {
        if known {
            format!("user:{name}")
        } else {
            use std::hash::BuildHasher;
            format!("name-bucket:{}", self.bucket_hasher.hash_one(name) % NAME_BUCKETS)
        }
    }

    /// Count an attempt on every key at once, before its password is checked:
    /// `Err(seconds to wait)` when any key's failures plus attempts in flight
    /// have reached the maximum (nothing is counted then).
    pub fn begin(&self, keys: &[&str], now: Instant) -> Result<Attempt<'_>, u64> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = None::<u64>;
        for key in keys {
            let Some(c) = map.get_mut(*key) else { continue };
            if now >= c.start + self.window {
                c.start = now;
                c.failures = 0;
            }
            if c.failures.saturating_add(c.in_flight) >= self.max {
                // Failures enough: until the window ends. Else attempts in
                // flight fill it: they settle within seconds.
                let w = if c.failures >= self.max { (c.start + self.window - now).as_secs().max(1) } else { 1 };
                wait = Some(wait.map_or(w, |x| x.max(w)));
            }
        }
        if let Some(w) = wait {
            return Err(w);
        }
        for key in keys {
            if !map.contains_key(*key) && key.starts_with("ip:") {
                self.make_room(&mut map, now);
            }
            let c = map.entry(key.to_string()).or_insert(Count { start: now, failures: 0, in_flight: 0 });
            c.in_flight = c.in_flight.saturating_add(1);
        }
        Ok(Attempt { limiter: self, keys: keys.iter().map(|k| k.to_string()).collect(), settled: false })
    }

    /// Keep the address keys under the cap: forget the idle ones whose
    /// window has passed, then the oldest idle ones.
    fn make_room(&self, map: &mut HashMap<String, Count>, now: Instant) {
        let addresses = || map.keys().filter(|k| k.starts_with("ip:")).count();
        if addresses() < self.max_address_keys {
            return;
        }
        let window = self.window;
        map.retain(|_, c| c.in_flight > 0 || now < c.start + window);
        let mut n = map.keys().filter(|k| k.starts_with("ip:")).count();
        while n >= self.max_address_keys {
            let oldest = map
                .iter()
                .filter(|(k, c)| k.starts_with("ip:") && c.in_flight == 0)
                .min_by_key(|(_, c)| c.start)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    map.remove(&k);
                    n -= 1;
                }
                // All in flight: bounded by the requests being served.
                None => break,
            }
        }
    }

    fn settle(&self, keys: &[String], failed: bool, clear: Option<&str>) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            let Some(c) = map.get_mut(key) else { continue };
            c.in_flight = c.in_flight.saturating_sub(1);
            if failed {
                c.failures = c.failures.saturating_add(1);
            }
            if clear == Some(key.as_str()) {
                c.failures = 0;
            }
            if c.failures == 0 && c.in_flight == 0 {
                map.remove(key);
            }
        }
    }

    /// `Some(seconds to wait)` when `key` has used up its attempts (failures
    /// and attempts in flight).
    pub fn blocked(&self, key: &str, now: Instant) -> Option<u64> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let c = map.get(key)?;
        let end = c.start + self.window;
        let failures = if now >= end { 0 } else { c.failures };
        if failures >= self.max {
            Some((end - now).as_secs().max(1))
        } else {
            (failures.saturating_add(c.in_flight) >= self.max).then_some(1)
        }
    }

    /// Keys held (tests).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Users, tokens, sessions and the limiter, shared by the handlers.
pub struct Auth {
    creds: RwLock<Arc<Credentials>>,
    pub sessions: Sessions,
    pub limiter: RateLimiter,
    pub session_ttl: Duration,
    pub secure: bool,
    /// At most this many argon2 verifications at once (each takes ~20 MB and tens of ms).
    pub verify_slots: tokio::sync::Semaphore,
}

impl Auth {
    pub fn new(h: &HttpConfig) -> Auth {
        Auth {
            creds: RwLock::new(Arc::new(Credentials::from_config(h))),
            sessions: Sessions::default(),
            limiter: RateLimiter::default(),
            session_ttl: h.session,
            secure: h.secure_cookies(),
            verify_slots: tokio::sync::Semaphore::new(4),
        }
    }

    pub fn creds(&self) -> Arc<Credentials> {
        self.creds.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Take the users and tokens of a re-read config, all at once.
    pub fn reload(&self, h: &HttpConfig) {
        let creds = Arc::new(Credentials::from_config(h));
        self.sessions.prune(&creds);
        *self.creds.write().unwrap_or_else(|p| p.into_inner()) = creds;
    }

    /// The session cookie's name: `__Host-` prefixed when it is `Secure`
    /// (the browser then refuses it from any other host or path).
    pub fn session_cookie(&self) -> &'static str {
        if self.secure { "__Host-backstop_session" } else { "backstop_session" }
    }

    /// The login form's double-submit cookie.
    pub fn login_cookie(&self) -> &'static str {
        if self.secure { "__Host-backstop_login" } else { "backstop_login" }
    }

    /// A `Set-Cookie` value: HttpOnly, SameSite=Lax (a link from a text
    /// message to the inbox still arrives logged in; every POST needs the
    /// CSRF token anyway), Secure when configured.
    pub fn cookie(&self, name: &str, value: &str, max_age: Option<Duration>) -> String {
        let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
        if let Some(a) = max_age {
            c.push_str(&format!("; Max-Age={}", a.as_secs()));
        }
        if self.secure {
            c.push_str("; Secure");
        }
        c
    }
}

/// A verification for unknown users, so that they cost as much as known ones.
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2hp1f0ViJ8wBS8rcE2jpgdyzHhkOXPWz1Lv7AP9mBGM";

/// Argon2 verification (slow on purpose: call it on the blocking pool).
pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    use argon2::password_hash::phc::PasswordHash;
    match PasswordHash::new(phc) {
        Ok(h) => argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// The argon2id PHC hash of a password, default parameters, a random salt.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    use argon2::password_hash::PasswordHasher;
    use argon2::password_hash::phc::PasswordHash;
    let h: PasswordHash =
        argon2::Argon2::default().hash_password(password.as_bytes()).map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    Ok(h.to_string())
}

/// A cookie's value from a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').map(str::trim).find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(extra: &str) -> HttpConfig {
        crate::config::Config::parse(&format!("[http]\n{extra}"), None).unwrap().http.unwrap()
    }

    #[test]
    fn hashing_and_verifying() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horsf", &h));
        assert!(!verify_password("x", "not a hash"));
        assert!(!verify_password("", DUMMY_HASH));
    }

    #[test]
    fn the_limiter_blocks_after_max_failures_until_the_window_passes() {
        let l = RateLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..2 {
            l.begin(&["ip:1"], t0).unwrap().failed();
        }
        assert_eq!(l.blocked("ip:1", t0), None);
        l.begin(&["ip:1"], t0).unwrap().failed();
        assert_eq!(l.blocked("ip:1", t0 + Duration::from_secs(10)), Some(50));
        assert_eq!(l.begin(&["ip:1"], t0 + Duration::from_secs(10)).err(), Some(50));
        assert_eq!(l.begin(&["ip:2", "ip:1"], t0).err(), Some(60), "refused on any key, nothing counted");
        assert_eq!(l.blocked("ip:2", t0), None, "per key");
        assert_eq!(l.blocked("ip:1", t0 + Duration::from_secs(60)), None, "the window passed");
        l.begin(&["ip:1"], t0 + Duration::from_secs(61)).unwrap().failed();
        assert_eq!(l.blocked("ip:1", t0 + Duration::from_secs(61)), None, "a new window counts afresh");
        // Success forgets the name's failures, not the address's.
        for _ in 0..2 {
            l.begin(&["ip:3", "user:ann"], t0).unwrap().failed();
        }
        l.begin(&["ip:3", "user:ann"], t0).unwrap().succeeded("user:ann");
        assert_eq!(l.blocked("user:ann", t0), None);
        l.begin(&["ip:3", "user:bob"], t0).unwrap().failed();
        assert!(l.blocked("ip:3", t0).is_some(), "the address's failures outlived the success");
        assert_eq!(l.blocked("user:bob", t0), None);
    }

    #[test]
    fn attempts_in_flight_count_so_concurrent_ones_cannot_pass_together() {
        let l = RateLimiter::new(5, Duration::from_secs(900));
        let t0 = Instant::now();
        // 20 at once: five begin, the rest are refused while those are checked.
        let mut begun = Vec::new();
        let mut refused = 0;
        for _ in 0..20 {
            match l.begin(&["ip:9", "user:ann"], t0) {
                Ok(a) => begun.push(a),
                Err(wait) => {
                    assert_eq!(wait, 1, "in flight: try again shortly");
                    refused += 1;
                }
            }
        }
        assert_eq!((begun.len(), refused), (5, 15));
        // An attempt dropped unsettled (the request abandoned) counts as failed.
        drop(begun.pop());
        for a in begun {
            a.failed();
        }
        assert_eq!(l.begin(&["ip:9"], t0).err(), Some(900), "five failures: the window");
        assert_eq!(l.begin(&["ip:8", "user:ann"], t0).err(), Some(900), "and the name, from anywhere");

        // Threads racing on the lock: never more than `max` begin.
        let l = std::sync::Arc::new(RateLimiter::new(5, Duration::from_secs(900)));
        let held = std::sync::Arc::new(std::sync::Barrier::new(20));
        let begun: usize = std::thread::scope(|s| {
            let hs: Vec<_> = (0..20)
                .map(|_| {
                    let (l, held) = (l.clone(), held.clone());
                    s.spawn(move || {
                        let a = l.begin(&["ip:7"], Instant::now()).ok();
                        let ok = a.is_some();
                        held.wait();
                        if let Some(a) = a {
                            a.failed();
                        }
                        ok as usize
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(begun, 5);
    }

    #[test]
    fn the_limiter_map_stays_bounded() {
        let l = RateLimiter::new(5, Duration::from_secs(900)).with_max_address_keys(100);
        let t0 = Instant::now();
        // Addresses only: unknown names share buckets chosen by a random key,
        // so with names too an attempt could be refused by a full bucket.
        for i in 0..1000u32 {
            let ip = std::net::IpAddr::from(i.to_be_bytes());
            let ip_key = RateLimiter::address_key(ip);
            l.begin(&[&ip_key], t0 + Duration::from_millis(i.into())).unwrap().failed();
        }
        assert!(l.len() <= 100 + NAME_BUCKETS as usize, "{}", l.len());
        // The newest address is kept; the oldest were forgotten first.
        assert!(l.map.lock().unwrap().contains_key(&RateLimiter::address_key([0, 0, 3, 231].into())));
        assert!(!l.map.lock().unwrap().contains_key(&RateLimiter::address_key([0, 0, 0, 0].into())));
        // Known users keep their own key; an unknown name always maps to the same bucket.
        assert_eq!(l.name_key("ann", true), "user:ann");
        assert_eq!(l.name_key("zed", false), l.name_key("zed", false));
        assert!(l.name_key("zed", false).starts_with("name-bucket:"));
        // An IPv6 client counts by its /64; an IPv4-mapped one as IPv4.
        let a: std::net::IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(RateLimiter::address_key(a), RateLimiter::address_key(b));
        assert_eq!(RateLimiter::address_key(a), "ip:2001:db8:1:2::/64");
        let mapped: std::net::IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(RateLimiter::address_key(mapped), "ip:10.0.0.1");
    }

    #[test]
    fn sessions_end_with_their_user_or_password() {
        let mut h = http(&format!("[[http.user]]\nname = \"ann\"\npassword_hash = \"{DUMMY_HASH}\"\n"));
        let auth = Auth::new(&h);
        let (id, s) = auth.sessions.create("ann", DUMMY_HASH, Duration::from_secs(60));
        assert_eq!(id.len(), 32);
        assert_eq!(s.csrf.len(), 32);
        assert_ne!(id, s.csrf);
        assert_eq!(auth.sessions.get(&id, &auth.creds()).unwrap().user, "ann");
        assert!(auth.sessions.get("nope", &auth.creds()).is_none());
        let (short, _) = auth.sessions.create("ann", DUMMY_HASH, Duration::ZERO);
        assert!(auth.sessions.get(&short, &auth.creds()).is_none(), "expired");
        h.user[0].password_hash =
            "$argon2id$v=19$m=19456,t=2,p=1$b3RoZXJzYWx0b3RoZXI$2hp1f0ViJ8wBS8rcE2jpgdyzHhkOXPWz1Lv7AP9mBGM".into();
        auth.reload(&h);
        assert!(auth.sessions.get(&id, &auth.creds()).is_none(), "a changed password ends the session");
        let (id, _) = auth.sessions.create("ann", &h.user[0].password_hash, Duration::from_secs(60));
        h.user.clear();
        auth.reload(&h);
        assert!(auth.sessions.get(&id, &auth.creds()).is_none(), "a removed user's session ends");
    }

    #[test]
    fn tokens_by_digest_and_cookies() {
        let h = http(&format!("[[http.token]]\nname = \"crm\"\ntoken = \"{}\"\n", "t".repeat(32)));
        let c = Credentials::from_config(&h);
        assert_eq!(c.token(&"t".repeat(32)), Some(("crm".to_string(), TokenScope::Api)));
        assert_eq!(c.token(&"t".repeat(31)), None);
        assert!(ct_eq(b"abc", b"abc") && !ct_eq(b"abc", b"abd") && !ct_eq(b"abc", b"ab"));
        assert_eq!(cookie_value("a=1; backstop_session=xyz; b=2", "backstop_session"), Some("xyz"));
        assert_eq!(cookie_value("backstop_sessionx=1", "backstop_session"), None);
        let auth = Auth::new(&h);
        assert_eq!(auth.cookie("n", "v", None), "n=v; Path=/; HttpOnly; SameSite=Lax");
    }
}
