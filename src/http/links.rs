//! Signed recording links: `/recordings/<file>?exp=<unix s>&sig=<hmac>`,
//! and the `recording_url`s the events carry when `[http] public_url` is
//! set.
//!
//! The signature is HMAC-SHA256, in hex, over `recording\n<file>\n<exp>`
//! with the link key: `[http] link_secret` (or `link_secret_env`), else a
//! random key made once and kept in DATA_DIR/http-link.key (mode 0600), so
//! links stay valid across restarts. Changing the key revokes every link.

use crate::config::Config;
use crate::sink::event::Event;
use anyhow::Context;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::path::Path;

/// The key file's name in the data directory.
pub const KEY_FILE: &str = "http-link.key";

/// Signs recording paths.
pub struct Links {
    key: Vec<u8>,
    /// `public_url` without a trailing slash; absent: relative links only.
    base: Option<String>,
    ttl_s: i64,
}

/// Why a link is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// The signature does not match (tampered, or another key).
    BadSignature,
    /// Past its `exp`.
    Expired,
}

impl Links {
    /// The signer the config asks for: `None` without `[http] public_url`.
    pub fn from_config(cfg: &Config) -> anyhow::Result<Option<Links>> {
        match &cfg.http {
            Some(h) if h.public_url.is_some() => Ok(Some(Links::for_face(cfg)?)),
            _ => Ok(None),
        }
    }

    /// The signer of the HTTP face itself (relative links on its pages),
    /// with or without `public_url`. Errors without `[http]`.
    pub fn for_face(cfg: &Config) -> anyhow::Result<Links> {
        let h = cfg.http.as_ref().context("no [http] section")?;
        let key = match h.resolved_link_secret().map_err(anyhow::Error::msg)? {
            Some(s) => s.into_bytes(),
            None => key_file(&cfg.data.dir)?,
        };
        Ok(Links { key, base: h.public_base(), ttl_s: h.link_ttl.as_secs().min(i64::MAX as u64) as i64 })
    }

    /// A signer with a given key (tests).
    pub fn with_key(key: &[u8], base: Option<&str>, ttl_s: i64) -> Links {
        Links { key: key.to_vec(), base: base.map(|b| b.trim_end_matches('/').to_string()), ttl_s }
    }

    /// How long a link lasts, in seconds.
    pub fn ttl_s(&self) -> i64 {
        self.ttl_s
    }

    fn mac(&self, file: &str, exp: i64) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(format!("recording\n{file}\n{exp}").as_bytes());
        mac
    }

    /// The hex signature of `file` valid until `exp` (unix seconds).
    pub fn sign(&self, file: &str, exp: i64) -> String {
        hex(&self.mac(file, exp).finalize().into_bytes())
    }

    /// Check a link's signature (in constant time), then its expiry.
    pub fn verify(&self, file: &str, exp: i64, sig: &str, now_s: i64) -> Result<(), LinkError> {
        let sig = unhex(sig).ok_or(LinkError::BadSignature)?;
        self.mac(file, exp).verify_slice(&sig).map_err(|_| LinkError::BadSignature)?;
        if now_s > exp {
            return Err(LinkError::Expired);
        }
        Ok(())
    }

    /// `/recordings/<file>?exp=..&sig=..`, valid for the TTL from `now_s`.
    pub fn path(&self, file: &str, now_s: i64) -> String {
        let exp = now_s.saturating_add(self.ttl_s);
        let name: String = url_escape(file);
        format!("/recordings/{name}?exp={exp}&sig={}", self.sign(file, exp))
    }

    /// The absolute link (`public_url` + path); `None` without `public_url`.
    pub fn url(&self, file: &str, now_s: i64) -> Option<String> {
        self.base.as_ref().map(|b| format!("{b}{}", self.path(file, now_s)))
    }

    /// Put a `recording_url` beside each recording the event's lead names.
    pub fn decorate(&self, event: &mut Event, now_s: i64) {
        self.decorate_lead(&mut event.lead, now_s);
    }

    /// The same, on a lead (the API signs at request time).
    pub fn decorate_lead(&self, lead: &mut backstop_core::intake::lead::Lead, now_s: i64) {
        for a in lead.answers.values_mut() {
            a.recording_url = a.recording.as_deref().and_then(|f| self.url(f, now_s));
        }
        lead.recording_url = lead.recording.as_deref().and_then(|f| self.url(f, now_s));
    }
}

/// Read the key file, or make it (32 random bytes, hex, mode 0600) the
/// first time: written whole to a temporary file in the same directory,
/// synced, then linked to its name (which never replaces a key another
/// start made meanwhile: that one is read instead), and the directory
/// synced. A crash leaves either no key file or a whole one, never an empty
/// one. An empty key file (from a start that crashed before this was so)
/// held no key any link was signed with: it is replaced.
fn key_file(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(KEY_FILE);
    let read = |p: &Path| -> anyhow::Result<Option<Vec<u8>>> {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let key = text.trim();
        if key.is_empty() {
            return Ok(None);
        }
        anyhow::ensure!(key.len() >= 32, "{}: the link key is shorter than 32 characters", p.display());
        Ok(Some(key.as_bytes().to_vec()))
    };
    let empty = match path.try_exists() {
        Ok(true) => match read(&path)? {
            Some(k) => return Ok(k),
            None => {
                tracing::warn!(file = ?path, "the recording link key file is empty: making a new key");
                true
            }
        },
        _ => false,
    };
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let key = hex(&rand::random::<[u8; 32]>());
    let tmp = data_dir.join(format!(".{KEY_FILE}.{}.{}", std::process::id(), hex(&rand::random::<[u8; 4]>())));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(format!("{key}\n").as_bytes()).and_then(|()| f.sync_all()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", tmp.display()));
    }
    // An empty file is replaced (rename); otherwise a key made meanwhile by
    // another start is kept (link fails with AlreadyExists) and read.
    let placed = if empty {
        std::fs::rename(&tmp, &path)
    } else {
        match std::fs::hard_link(&tmp, &path) {
            // A filesystem without hard links (vfat, some FUSE and CIFS
            // mounts): made in place instead, still never over a key.
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                tracing::debug!(file = ?path, "no hard link ({e}); writing the key in place");
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .and_then(|mut f| f.write_all(format!("{key}\n").as_bytes()).and_then(|()| f.sync_all()))
            }
            r => r,
        }
    };
    let _ = std::fs::remove_file(&tmp);
    match placed {
        Ok(()) => {
            if let Err(e) = std::fs::File::open(data_dir).and_then(|d| d.sync_all()) {
                tracing::warn!(dir = ?data_dir, "syncing the data directory: {e}");
            }
            tracing::info!(file = ?path, "made a recording link key");
            Ok(key.into_bytes())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(&path)?.with_context(|| format!("{}: the link key file is empty", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

/// Percent-encode all but unreserved characters (a recording name is plain,
/// but the link must not break if it is not).
pub(crate) fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_verifies_until_it_expires_and_not_when_changed() {
        let l = Links::with_key(b"k".repeat(32).as_slice(), Some("https://x.example/"), 3600);
        let path = l.path("lead1-need.wav", 1000);
        assert!(path.starts_with("/recordings/lead1-need.wav?exp=4600&sig="), "{path}");
        let sig = path.rsplit("sig=").next().unwrap();
        assert_eq!(sig.len(), 64);
        assert_eq!(l.verify("lead1-need.wav", 4600, sig, 4600), Ok(()));
        assert_eq!(l.verify("lead1-need.wav", 4600, sig, 4601), Err(LinkError::Expired));
        assert_eq!(l.verify("lead1-name.wav", 4600, sig, 1000), Err(LinkError::BadSignature));
        assert_eq!(l.verify("lead1-need.wav", 4601, sig, 1000), Err(LinkError::BadSignature));
        let mut bad = sig.to_string();
        bad.replace_range(0..1, if sig.starts_with('0') { "1" } else { "0" });
        assert_eq!(l.verify("lead1-need.wav", 4600, &bad, 1000), Err(LinkError::BadSignature));
        assert_eq!(l.verify("lead1-need.wav", 4600, "zz", 1000), Err(LinkError::BadSignature));
        assert_eq!(l.verify("lead1-need.wav", 4600, "", 1000), Err(LinkError::BadSignature));
        // Another key: refused.
        let other = Links::with_key(b"j".repeat(32).as_slice(), None, 3600);
        assert_eq!(other.verify("lead1-need.wav", 4600, sig, 1000), Err(LinkError::BadSignature));
        assert_eq!(l.url("a.wav", 0).unwrap(), format!("https://x.example{}", l.path("a.wav", 0)));
        assert_eq!(other.url("a.wav", 0), None);
    }

    #[test]
    fn decorate_signs_every_recording_of_the_lead() {
        let l = Links::with_key(&[7u8; 32], Some("https://x.example"), 60);
        let mut event: Event = serde_json::from_str(include_str!("../../tests/golden/lead.completed.json")).unwrap();
        event.lead.recording = Some("L-call.wav".into());
        l.decorate(&mut event, 100);
        assert_eq!(event.lead.recording_url, l.url("L-call.wav", 100));
        let need = &event.lead.answers["need"];
        assert_eq!(need.recording_url, l.url(need.recording.as_deref().unwrap(), 100));
        assert!(need.recording_url.as_ref().unwrap().contains("exp=160&"));
        assert_eq!(event.lead.answers["zip"].recording_url, None);
    }

    #[test]
    fn the_key_file_is_made_once_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("backstop-linkkey-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let k1 = key_file(&dir).unwrap();
        let k2 = key_file(&dir).unwrap();
        assert_eq!(k1, k2);
        assert_eq!(k1.len(), 64);
        let mode = std::fs::metadata(dir.join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [std::ffi::OsString::from(KEY_FILE)], "no temporary file left");
        // An empty key file (a crash of an older start) is replaced, privately.
        std::fs::write(dir.join(KEY_FILE), "").unwrap();
        let k3 = key_file(&dir).unwrap();
        assert_eq!(k3.len(), 64);
        assert_ne!(k3, k1);
        assert_eq!(key_file(&dir).unwrap(), k3);
        let mode = std::fs::metadata(dir.join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A short key is refused, not replaced.
        std::fs::write(dir.join(KEY_FILE), "short\n").unwrap();
        assert!(key_file(&dir).is_err());
        assert_eq!(std::fs::read_to_string(dir.join(KEY_FILE)).unwrap(), "short\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn concurrent_starts_agree_on_one_key() {
        let dir = std::env::temp_dir().join(format!("backstop-linkkey-race-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let keys: Vec<Vec<u8>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8).map(|_| s.spawn(|| key_file(&dir).unwrap())).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.iter().all(|k| *k == keys[0]), "every start took the same key");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
