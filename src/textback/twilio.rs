//! The Twilio side of the text-back: the Messages API request (form
//! fields, Basic auth, the URL), what its answers mean, and the
//! `X-Twilio-Signature` of the inbound-message webhook.
//!
//! The signature (Twilio's "Webhooks security"): HMAC-SHA1, keyed with the
//! account's auth token, of the full URL Twilio requested (scheme, host,
//! port if any, path and query) followed by every POST parameter's name and
//! value, sorted by name (bytewise), concatenated with no separators;
//! base64 of that is the header.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// `{base_url}/2010-04-01/Accounts/{account_sid}/Messages.json`.
pub fn messages_url(base_url: &str, account_sid: &str) -> String {
    format!("{}/2010-04-01/Accounts/{account_sid}/Messages.json", base_url.trim_end_matches('/'))
}

/// The form fields of one message, in the API's names.
pub fn form(to: &str, from: &str, body: &str) -> [(&'static str, String); 3] {
    [("To", to.to_string()), ("From", from.to_string()), ("Body", body.to_string())]
}

/// What one answer of the Messages API means for the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted: the message's `sid` (absent if the body did not say).
    Sent { sid: Option<String> },
    /// Refused for good (a 4xx other than 408 and 429): why, from the body.
    Refused { reason: String, code: Option<i64> },
    /// Not taken this time (408, 429, 5xx): try again.
    Retry { reason: String },
}

/// Read an answer: its status and body.
pub fn outcome(status: u16, body: &[u8]) -> Outcome {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    if (200..300).contains(&status) {
        let sid = json.get("sid").and_then(|s| s.as_str()).map(str::to_string);
        return Outcome::Sent { sid };
    }
    let code = json.get("code").and_then(|c| c.as_i64());
    let message = ["message", "detail", "title"].iter().find_map(|k| json.get(*k).and_then(|m| m.as_str()));
    let mut reason = format!("HTTP {status}");
    if let Some(c) = code {
        reason.push_str(&format!(" (error {c})"));
    }
    if let Some(m) = message {
        reason.push_str(": ");
        reason.push_str(&m.chars().take(300).collect::<String>());
    }
    if status == 408 || status == 429 || status >= 500 {
        Outcome::Retry { reason }
    } else {
        Outcome::Refused { reason, code }
    }
}

/// Twilio's error for a message to a number that replied STOP to the sender.
pub const UNSUBSCRIBED_RECIPIENT: i64 = 21610;

/// The `X-Twilio-Signature` of a request to `url` with these POST parameters.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    B64.encode(mac.finalize().into_bytes())
}

/// Whether `header` is the signature of the request for any of `urls`
/// (compared in constant time).
pub fn verify(auth_token: &str, urls: &[String], params: &[(String, String)], header: &str) -> bool {
    urls.iter().any(|u| constant_time_eq(signature(auth_token, u, params).as_bytes(), header.trim().as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The spellings of `url` Twilio may have signed: as given, and with the
/// scheme's default port left out or written (its helper libraries accept both).
pub fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    let Ok(u) = reqwest::Url::parse(url) else { return out };
    if u.port().is_none()
        && let (Some(host), Some(port)) = (u.host_str(), u.port_or_known_default())
    {
        let rest = match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        };
        for v in [format!("{}://{host}{rest}", u.scheme()), format!("{}://{host}:{port}{rest}", u.scheme())] {
            if !out.contains(&v) {
                out.push(v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// The worked example of Twilio's webhook security documentation (auth
    /// token 12345), also the test vector of its helper libraries.
    #[test]
    fn signs_twilios_documented_example() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let p = params(&[
            ("Digits", "1234"),
            ("To", "+18005551212"),
            ("From", "+14158675310"),
            ("Caller", "+14158675310"),
            ("CallSid", "CA1234567890ABCDE"),
        ]);
        assert_eq!(signature("12345", url, &p), "GvWf1cFY/Q7PnoempGyD5oXAezc=");
        assert!(verify("12345", &[url.to_string()], &p, "GvWf1cFY/Q7PnoempGyD5oXAezc="));
        assert!(!verify("12346", &[url.to_string()], &p, "GvWf1cFY/Q7PnoempGyD5oXAezc="));
        let mut changed = p.clone();
        changed[0].1 = "9999".into();
        assert!(!verify("12345", &[url.to_string()], &changed, "GvWf1cFY/Q7PnoempGyD5oXAezc="));
        let http = url.replace("https", "http");
        assert!(!verify("12345", &[http], &p, "GvWf1cFY/Q7PnoempGyD5oXAezc="));
        assert!(!verify("12345", &[url.to_string()], &p, ""));
    }

    #[test]
    fn url_spellings_with_and_without_the_default_port() {
        assert_eq!(
            url_variants("https://leads.example.com/sms/inbound"),
            ["https://leads.example.com/sms/inbound", "https://leads.example.com:443/sms/inbound"]
        );
        assert_eq!(url_variants("http://127.0.0.1:8080/sms/inbound"), ["http://127.0.0.1:8080/sms/inbound"]);
    }

    #[test]
    fn the_request() {
        assert_eq!(
            messages_url("https://api.twilio.com/", "ACx"),
            "https://api.twilio.com/2010-04-01/Accounts/ACx/Messages.json"
        );
        assert_eq!(
            messages_url("https://x.signalwire.com/api/laml", "p-1"),
            "https://x.signalwire.com/api/laml/2010-04-01/Accounts/p-1/Messages.json"
        );
        let f = form("+15551230001", "+15005550006", "Sorry & thanks = 100%");
        let encoded = serde_urlencoded::to_string(f).unwrap();
        assert_eq!(encoded, "To=%2B15551230001&From=%2B15005550006&Body=Sorry+%26+thanks+%3D+100%25");
    }

    #[test]
    fn answers() {
        let ok = br#"{"sid":"SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","status":"queued"}"#;
        assert_eq!(outcome(201, ok), Outcome::Sent { sid: Some("SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into()) });
        assert_eq!(outcome(200, b"not json"), Outcome::Sent { sid: None });
        let refused = br#"{"code":21211,"message":"The 'To' number 5551 is not a valid phone number.","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#;
        assert_eq!(
            outcome(400, refused),
            Outcome::Refused {
                reason: "HTTP 400 (error 21211): The 'To' number 5551 is not a valid phone number.".into(),
                code: Some(21211)
            }
        );
        let prism = br#"{"title":"Invalid request","status":422,"detail":"Your request is not valid"}"#;
        assert!(
            matches!(outcome(422, prism), Outcome::Refused { reason, .. } if reason == "HTTP 422: Your request is not valid")
        );
        assert!(matches!(outcome(401, b""), Outcome::Refused { reason, code: None } if reason == "HTTP 401"));
        for s in [408, 429, 500, 503] {
            assert!(matches!(outcome(s, b"{}"), Outcome::Retry { .. }), "{s}");
        }
    }
}
