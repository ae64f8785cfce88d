//! The webhook sink: an HTTP POST of the event JSON, signed per the
//! Standard Webhooks spec (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`,
//! secret `whsec_<base64 key>`). The id is the event id, identical on every
//! retry, so a receiver can de-duplicate.

use crate::sink::retry::Attempt;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::time::Duration;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Why a webhook cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("secret is not base64 after whsec_: {0}")]
    SecretNotBase64(#[from] base64::DecodeError),
    #[error("secret is empty")]
    SecretEmpty,
    #[error("building the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
}

/// Decode a `whsec_...` secret (the prefix is optional) to its key bytes.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, WebhookError> {
    let raw = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = B64.decode(raw.trim())?;
    if key.is_empty() {
        return Err(WebhookError::SecretEmpty);
    }
    Ok(key)
}

/// The `webhook-signature` header value.
fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// Check a signature header (which may hold several space-separated signatures).
pub fn verify(key: &[u8], id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let expected = sign(key, id, timestamp, body);
    header.split(' ').any(|s| constant_time_eq(s.as_bytes(), expected.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One configured webhook endpoint, ready to deliver.
#[derive(Clone)]
pub struct Webhook {
    pub url: String,
    key: Option<Vec<u8>>,
    headers: Vec<(String, String)>,
    bearer: Option<String>,
    client: reqwest::Client,
    /// Its configured label (`[[webhook]] name`), if it has one.
    pub label: Option<String>,
}

impl Webhook {
    pub fn new(
        url: String,
        secret: Option<&str>,
        headers: Vec<(String, String)>,
        bearer: Option<String>,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Webhook, WebhookError> {
        install_crypto_provider();
        let key = secret.map(decode_secret).transpose()?;
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .user_agent(crate::USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Webhook { url, key, headers, bearer, client, label: None })
    }

    /// POST one event body; `now_s` is the signing timestamp.
    pub async fn deliver(&self, id: &str, body: &[u8], now_s: i64) -> Attempt {
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", now_s.to_string());
        if let Some(key) = &self.key {
            req = req.header("webhook-signature", sign(key, id, now_s, body));
        }
        if let Some(b) = &self.bearer {
            req = req.bearer_auth(b);
        }
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        match req.body(body.to_vec()).send().await {
            Ok(resp) => {
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                Attempt::Status { code: resp.status().as_u16(), retry_after }
            }
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                };
                // Without the URL: the error is logged and kept in the outbox, and the URL may hold a secret.
                Attempt::Transport(format!("{kind}: {}", e.without_url()))
            }
        }
    }
}

/// reqwest with `rustls-no-provider` panics at `Client::build()` unless a
/// crypto provider is installed first.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's published test vector.
    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
            &format!("v1,x {sig}")
        ));
        assert!(!verify(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, br#"{"test": 2432232314}"#, &sig));
        assert!(decode_secret("whsec_!!!").is_err());
        assert!(decode_secret("whsec_").is_err());
        assert!(matches!(decode_secret("whsec_!!!"), Err(WebhookError::SecretNotBase64(_))));
        assert!(matches!(decode_secret("whsec_"), Err(WebhookError::SecretEmpty)));
    }

    #[test]
    fn the_client_builds_without_panicking() {
        let w = Webhook::new(
            "http://127.0.0.1:9/x".into(),
            None,
            vec![],
            None,
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        assert!(w.is_ok());
    }
}
