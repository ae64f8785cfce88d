//! Who may use the HTTP face: inbox users (argon2 password hashes, a
//! session cookie, a CSRF token per session), API bearer tokens (compared
//! by their SHA-256 in constant time), and the login rate limiter.
//!
//! Sessions live in memory: a restart logs everyone out, which for a
//! handful of owners and a 12-hour session is a fair price for keeping no
//! session secrets on disk. A session names its user and the password hash
//! it logged in with, so a reload that removes the user or changes the
//! password ends it at the next request.

use crate::config::HttpConfig;
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
    /// (SHA-256 of the token, its name).
    pub tokens: Vec<([u8; 32], String)>,
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
                Ok(d) => Some((d, t.name.clone())),
                Err(e) => {
                    tracing::error!(token = %t.name, "[http] token left out: {e}");
                    None
                }
            })
            .collect();
        Credentials { users, tokens }
    }

    /// The name of the token `presented` is, compared with every token in constant time.
    pub fn token_name(&self, presented: &str) -> Option<String> {
        use sha2::{Digest, Sha256};
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (d, name) in &self.tokens {
            if ct_eq(d, &digest) {
                found = Some(name.clone());
            }
        }
        found
    }
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

/// Failed logins counted per key (a client address, a user name) in a fixed window.
pub struct RateLimiter {
    max: u32,
    window: Duration,
    map: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::new(MAX_FAILURES, WINDOW)
    }
}

impl RateLimiter {
    pub fn new(max: u32, window: Duration) -> RateLimiter {
        RateLimiter { max, window, map: Mutex::new(HashMap::new()) }
    }

    /// `Some(seconds to wait)` when `key` has used up its failures.
    pub fn blocked(&self, key: &str, now: Instant) -> Option<u64> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let (start, n) = map.get(key)?;
        let end = *start + self.window;
        (*n >= self.max && now < end).then(|| (end - now).as_secs().max(1))
    }

    /// Count a failure.
    pub fn fail(&self, key: &str, now: Instant) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            let window = self.window;
            map.retain(|_, (start, _)| now < *start + window);
        }
        let e = map.entry(key.to_string()).or_insert((now, 0));
        if now >= e.0 + self.window {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
    }

    /// Forget `key`'s failures (a successful login).
    pub fn clear(&self, key: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
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
            l.fail("ip:1", t0);
        }
        assert_eq!(l.blocked("ip:1", t0), None);
        l.fail("ip:1", t0);
        assert_eq!(l.blocked("ip:1", t0 + Duration::from_secs(10)), Some(50));
        assert_eq!(l.blocked("ip:2", t0), None, "per key");
        assert_eq!(l.blocked("ip:1", t0 + Duration::from_secs(60)), None, "the window passed");
        l.fail("ip:1", t0 + Duration::from_secs(61));
        assert_eq!(l.blocked("ip:1", t0 + Duration::from_secs(61)), None, "a new window counts afresh");
        l.fail("user:ann", t0);
        l.fail("user:ann", t0);
        l.fail("user:ann", t0);
        l.clear("user:ann");
        assert_eq!(l.blocked("user:ann", t0), None);
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
        assert_eq!(c.token_name(&"t".repeat(32)).as_deref(), Some("crm"));
        assert_eq!(c.token_name(&"t".repeat(31)), None);
        assert!(ct_eq(b"abc", b"abc") && !ct_eq(b"abc", b"abd") && !ct_eq(b"abc", b"ab"));
        assert_eq!(cookie_value("a=1; backstop_session=xyz; b=2", "backstop_session"), Some("xyz"));
        assert_eq!(cookie_value("backstop_sessionx=1", "backstop_session"), None);
        let auth = Auth::new(&h);
        assert_eq!(auth.cookie("n", "v", None), "n=v; Path=/; HttpOnly; SameSite=Lax");
    }
}
