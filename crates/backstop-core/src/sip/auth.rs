//! HTTP Digest for SIP clients (RFC 2617, RFC 7616, RFC 8760): read a
//! `WWW-Authenticate`/`Proxy-Authenticate` challenge and answer it.
//! MD5, SHA-256 and SHA-512-256, each with its `-sess` variant; `qop=auth`
//! with nonce count and cnonce, `qop=auth-int` (hashing the body), and the
//! RFC 2069 form without qop. Written here (rsipstack's helper hashes an
//! empty body for auth-int and leaves nonce/cnonce out of the -sess HA1) and
//! checked against the RFCs' worked examples.

use md5::Md5;
use sha2::{Digest, Sha256, Sha512_256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
    Sha512_256,
}

impl Algorithm {
    fn hash(self, data: &[u8]) -> String {
        fn hex(bytes: &[u8]) -> String {
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        }
        match self {
            Algorithm::Md5 => hex(&Md5::digest(data)),
            Algorithm::Sha256 => hex(&Sha256::digest(data)),
            Algorithm::Sha512_256 => hex(&Sha512_256::digest(data)),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha512_256 => "SHA-512-256",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qop {
    Auth,
    AuthInt,
}

impl Qop {
    fn name(self) -> &'static str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
        }
    }
}

/// A parsed Digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    pub session: bool,
    /// The qop we will use (auth preferred), if the server offered any.
    pub qop: Option<Qop>,
    pub stale: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error("not a Digest challenge")]
    NotDigest,
    #[error("challenge has no {0}")]
    Missing(&'static str),
    #[error("unsupported digest algorithm {0:?}")]
    Algorithm(String),
    #[error("unsupported qop {0:?}")]
    Qop(String),
}

/// Split `k=v, k="v, with comma"` into pairs.
fn params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = rest[eq + 1..].trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let mut end = None;
            let mut escaped = false;
            for (i, c) in q.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        end = Some(i);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            let end = end.unwrap_or(q.len());
            (q[..end].replace("\\\"", "\""), &q[(end + 1).min(q.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.push((key, value));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

impl Challenge {
    pub fn parse(header: &str) -> Result<Challenge, ChallengeError> {
        let h = header.trim();
        let rest = h
            .get(..6)
            .filter(|p| p.eq_ignore_ascii_case("digest"))
            .map(|_| &h[6..])
            .ok_or(ChallengeError::NotDigest)?;
        let p = params(rest);
        let get = |k: &str| p.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let realm = get("realm").ok_or(ChallengeError::Missing("realm"))?;
        let nonce = get("nonce").ok_or(ChallengeError::Missing("nonce"))?;
        let alg = get("algorithm").unwrap_or_else(|| "MD5".into());
        let upper = alg.to_ascii_uppercase();
        let (base, session) = match upper.strip_suffix("-SESS") {
            Some(b) => (b.to_string(), true),
            None => (upper.clone(), false),
        };
        let algorithm = match base.as_str() {
            "MD5" => Algorithm::Md5,
            "SHA-256" => Algorithm::Sha256,
            "SHA-512-256" => Algorithm::Sha512_256,
            _ => return Err(ChallengeError::Algorithm(alg)),
        };
        let qop = match get("qop") {
            None => None,
            Some(list) => {
                let opts: Vec<String> = list.split(',').map(|o| o.trim().to_ascii_lowercase()).collect();
                if opts.iter().any(|o| o == "auth") {
                    Some(Qop::Auth)
                } else if opts.iter().any(|o| o == "auth-int") {
                    Some(Qop::AuthInt)
                } else {
                    return Err(ChallengeError::Qop(list));
                }
            }
        };
        let stale = get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true"));
        Ok(Challenge { realm, nonce, opaque: get("opaque"), algorithm, session, qop, stale })
    }

    /// The `response` value (RFC 7616 §3.4.1).
    fn response(&self, c: &Credentials, method: &str, uri: &str, body: &[u8], nc: u32, cnonce: &str) -> String {
        let h = |s: &str| self.algorithm.hash(s.as_bytes());
        let mut ha1 = h(&format!("{}:{}:{}", c.username, self.realm, c.password));
        if self.session {
            ha1 = h(&format!("{ha1}:{}:{cnonce}", self.nonce));
        }
        let ha2 = match self.qop {
            Some(Qop::AuthInt) => h(&format!("{method}:{uri}:{}", self.algorithm.hash(body))),
            _ => h(&format!("{method}:{uri}")),
        };
        match self.qop {
            Some(q) => h(&format!("{ha1}:{}:{nc:08x}:{cnonce}:{}:{ha2}", self.nonce, q.name())),
            None => h(&format!("{ha1}:{}:{ha2}", self.nonce)),
        }
    }

    /// The full `Authorization`/`Proxy-Authorization` header value.
    pub fn authorization(
        &self,
        c: &Credentials,
        method: &str,
        uri: &str,
        body: &[u8],
        nc: u32,
        cnonce: &str,
    ) -> String {
        let response = self.response(c, method, uri, body, nc, cnonce);
        let mut v = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm={}{}",
            c.username,
            self.realm,
            self.nonce,
            self.algorithm.name(),
            if self.session { "-sess" } else { "" }
        );
        if let Some(q) = self.qop {
            v.push_str(&format!(", qop={}, nc={nc:08x}, cnonce=\"{cnonce}\"", q.name()));
        }
        if let Some(o) = &self.opaque {
            v.push_str(&format!(", opaque=\"{o}\""));
        }
        v
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 §3.5.
    #[test]
    fn rfc2617_worked_example() {
        let ch = Challenge::parse(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        assert_eq!(ch.qop, Some(Qop::Auth));
        let c = Credentials { username: "Mufasa".into(), password: "Circle Of Life".into() };
        assert_eq!(ch.response(&c, "GET", "/dir/index.html", b"", 1, "0a4f113b"), "6629fae49393a05397450978507c4ef1");
    }

    /// RFC 7616 §3.9.1, with MD5 and with SHA-256.
    #[test]
    fn rfc7616_worked_examples() {
        let c = Credentials { username: "Mufasa".into(), password: "Circle of Life".into() };
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        for (alg, expected) in [
            ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
            ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ] {
            let ch = Challenge::parse(&format!(
                r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, nonce="{nonce}", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#
            ))
            .unwrap();
            assert_eq!(ch.response(&c, "GET", "/dir/index.html", b"", 1, cnonce), expected, "{alg}");
        }
    }

    #[test]
    fn session_auth_int_and_legacy_forms() {
        let c = Credentials { username: "u".into(), password: "p".into() };
        let md5 = |s: &str| Algorithm::Md5.hash(s.as_bytes());
        // MD5-sess: HA1 = H(H(user:realm:pass):nonce:cnonce).
        let ch = Challenge::parse(r#"Digest realm="r", nonce="n", algorithm=MD5-sess, qop="auth""#).unwrap();
        assert!(ch.session);
        let ha1 = md5(&format!("{}:n:cn", md5("u:r:p")));
        let ha2 = md5("REGISTER:sip:x");
        assert_eq!(ch.response(&c, "REGISTER", "sip:x", b"", 1, "cn"), md5(&format!("{ha1}:n:00000001:cn:auth:{ha2}")));
        // auth-int hashes the body into HA2.
        let ch = Challenge::parse(r#"Digest realm="r", nonce="n", qop="auth-int""#).unwrap();
        let ha2 = md5(&format!("INVITE:sip:x:{}", md5("body")));
        assert_eq!(
            ch.response(&c, "INVITE", "sip:x", b"body", 2, "cn"),
            md5(&format!("{}:n:00000002:cn:auth-int:{ha2}", md5("u:r:p")))
        );
        // No qop: RFC 2069.
        let ch = Challenge::parse(r#"Digest realm="r", nonce="n""#).unwrap();
        assert_eq!(
            ch.response(&c, "REGISTER", "sip:x", b"", 1, "cn"),
            md5(&format!("{}:n:{}", md5("u:r:p"), md5("REGISTER:sip:x")))
        );
        // SHA-512-256 is the truncated SHA-512/256 (FIPS 180-4), not SHA-512 cut short.
        assert_eq!(
            Algorithm::Sha512_256.hash(b"abc"),
            "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"
        );
        let ch = Challenge::parse(r#"Digest realm="r", nonce="n", algorithm=SHA-512-256-sess, qop=auth, stale=TRUE"#)
            .unwrap();
        assert_eq!((ch.algorithm, ch.session, ch.stale), (Algorithm::Sha512_256, true, true));
        assert!(
            ch.authorization(&c, "REGISTER", "sip:x", b"", 1, "cn")
                .contains("algorithm=SHA-512-256-sess, qop=auth, nc=00000001")
        );
    }

    #[test]
    fn bad_challenges_are_refused_clearly() {
        assert_eq!(Challenge::parse("Basic realm=\"x\""), Err(ChallengeError::NotDigest));
        assert_eq!(Challenge::parse("Digest nonce=\"n\""), Err(ChallengeError::Missing("realm")));
        assert!(matches!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", algorithm=SHA-1"),
            Err(ChallengeError::Algorithm(_))
        ));
        assert!(matches!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=\"weird\""),
            Err(ChallengeError::Qop(_))
        ));
    }
}
