//! `POST /sms/inbound`: Twilio's inbound-message webhook (set it as the
//! sending number's "A message comes in" URL). It checks
//! `X-Twilio-Signature` with the auth token of the `[[text_back]]` account
//! the message names (`AccountSid`), over the URL Twilio called:
//! `[http] public_url` and the request's path and query (without
//! `public_url`, the request's `Host`, as https and as http). A request that
//! fails the check gets 403 and changes nothing. A message that is an
//! opt-out keyword (STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, OPTOUT,
//! REVOKE) opts its sender (`From`) out of text-backs from the number it
//! was sent to (`To`), as Twilio's own block is per sending number: our
//! other numbers still text it. START, YES or UNSTOP opts it back in, for
//! that number only. (A `To` that is no phone number, which Twilio does not
//! send, counts as every sender.) The answer is empty TwiML (Twilio sends
//! its own STOP confirmation). Every POST is audited to the log (`audit:
//! POST`, as the HTTP face's, with the message's `to`).

use crate::config::Config;
use crate::textback::twilio;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use rusqlite::Connection;
use std::sync::{Arc, Mutex};

/// The path Twilio posts to.
pub const PATH: &str = "/sms/inbound";

const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>";

/// What the webhook needs: the accounts' auth tokens, the public URL, the opt-out table.
#[derive(Clone)]
pub struct SmsState {
    /// `(account_sid, auth_token)` of every `[[text_back]]`, each pair once.
    accounts: Arc<Vec<(String, String)>>,
    /// `[http] public_url`, without a trailing slash.
    public_url: Option<String>,
    db: Arc<Mutex<Connection>>,
    /// On a cluster, opt-outs are recorded in the shared store too, where
    /// every node's text-back reads them.
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl SmsState {
    /// `None` when no `[[text_back]]` is configured.
    pub fn from_config(cfg: &Config) -> anyhow::Result<Option<SmsState>> {
        let all = cfg.text_back.iter().chain(cfg.line.iter().flat_map(|l| l.text_back.iter()));
        let mut accounts: Vec<(String, String)> = Vec::new();
        for t in all {
            let token =
                t.resolved_auth_token().map_err(|e| anyhow::anyhow!("text_back {}: auth_token: {e}", t.from))?;
            let pair = (t.account_sid.clone(), token);
            if !accounts.contains(&pair) {
                accounts.push(pair);
            }
        }
        if accounts.is_empty() {
            return Ok(None);
        }
        let path = cfg.outbox_path();
        let conn = crate::textback::db::open(&path)
            .map_err(|e| anyhow::anyhow!("opening {} for /sms/inbound: {e}", path.display()))?;
        let public_url = public_url(cfg);
        Ok(Some(SmsState::new(accounts, public_url, conn)))
    }

    /// For tests: the accounts, the public URL and a connection.
    pub fn new(accounts: Vec<(String, String)>, public_url: Option<String>, conn: Connection) -> SmsState {
        SmsState {
            accounts: Arc::new(accounts),
            public_url: public_url.map(|u| u.trim_end_matches('/').to_string()),
            db: Arc::new(Mutex::new(conn)),
            cluster: None,
        }
    }

    /// Record opt-outs in the cluster's shared store as well.
    pub fn with_cluster(mut self, cluster: Option<Arc<crate::cluster::Cluster>>) -> SmsState {
        self.cluster = cluster;
        self
    }
}

/// `[http] public_url`, when the HTTP face has one.
fn public_url(cfg: &Config) -> Option<String> {
    cfg.http.as_ref().and_then(|h| h.public_base())
}

/// The webhook's routes, merged into the HTTP face's router.
pub fn routes(state: SmsState) -> Router {
    Router::new().route(PATH, post(inbound)).with_state(state)
}

/// The audit line of a POST, in the HTTP face's form (`audit: POST`).
fn audit(result: &str, account: &str, from: &str, to: &str, action: &str) {
    tracing::info!(user = "twilio", path = PATH, lead = "", result, account, from, to, action, "audit: POST");
}

fn forbidden(why: &str, account: &str, from: &str, to: &str) -> Response {
    audit(&format!("403 {why}"), account, from, to, "none");
    (StatusCode::FORBIDDEN, "forbidden\n").into_response()
}

async fn inbound(
    State(st): State<SmsState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(params) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        audit("400 not a form", "", "", "", "none");
        return (StatusCode::BAD_REQUEST, "not a form\n").into_response();
    };
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("");
    let (account, from, to) = (param("AccountSid"), param("From"), param("To"));
    let Some(signature) = headers.get("x-twilio-signature").and_then(|v| v.to_str().ok()) else {
        return forbidden("no X-Twilio-Signature", account, from, to);
    };
    let tokens: Vec<&str> = st.accounts.iter().filter(|(sid, _)| sid == account).map(|(_, t)| t.as_str()).collect();
    if tokens.is_empty() {
        return forbidden("AccountSid is not a [[text_back]] account", account, from, to);
    }
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or(PATH);
    let bases: Vec<String> = match &st.public_url {
        Some(u) => vec![u.clone()],
        None => {
            let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
            let proto = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok());
            let mut schemes = vec!["https", "http"];
            if proto == Some("http") {
                schemes.reverse();
            }
            schemes.into_iter().map(|s| format!("{s}://{host}")).collect()
        }
    };
    let urls: Vec<String> = bases.iter().flat_map(|b| twilio::url_variants(&format!("{b}{path_and_query}"))).collect();
    if !tokens.iter().any(|t| twilio::verify(t, &urls, &params, signature)) {
        return forbidden("bad X-Twilio-Signature", account, from, to);
    }
    let text = param("Body");
    let keyword = backstop_core::textback::opt_keyword(text);
    let action = match keyword {
        Some(true) => "opt_out",
        Some(false) => "opt_in",
        None => "none",
    };
    if let Some(stop) = keyword {
        let (db, word) = (st.db.clone(), text.trim().to_ascii_uppercase());
        let (acc, f, t) = (account.to_string(), from.to_string(), to.to_string());
        let saved = tokio::task::spawn_blocking(move || {
            let c = db.lock().unwrap_or_else(|p| p.into_inner());
            crate::textback::record_opt(&c, &f, &t, stop, &word, &acc)
        })
        .await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                audit("500", account, from, to, action);
                tracing::error!(error = %e, "could not record an opt-out");
                return (StatusCode::INTERNAL_SERVER_ERROR, "try again\n").into_response();
            }
            Err(e) => {
                audit("500", account, from, to, action);
                tracing::error!(error = %e, "the opt-out task failed");
                return (StatusCode::INTERNAL_SERVER_ERROR, "try again\n").into_response();
            }
        }
        if let Some(cluster) = &st.cluster {
            let number = backstop_core::textback::textable(from).unwrap_or_else(|| from.trim().to_string());
            let sender = crate::textback::db::sender_of(Some(to));
            let word = text.trim().to_ascii_uppercase();
            let now = crate::sink::delivery::now_ms();
            let shared =
                crate::textback::shared::set_opt_out(cluster, &number, &sender, stop, &word, Some(account), now).await;
            if let Err(e) = shared {
                // Kept here (this node honours it now), and taken into the
                // shared store within seconds of its return (`cluster::nodes`).
                tracing::warn!(error = %e, "an opt-out could not reach the shared store yet; it follows when the store is back");
            }
        }
    }
    audit("ok", account, from, to, action);
    ([(header::CONTENT_TYPE, "text/xml")], EMPTY_TWIML).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    const SID: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const TOKEN: &str = "secret-token";
    const URL: &str = "https://leads.example.com/sms/inbound";

    fn state() -> SmsState {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(crate::textback::SCHEMA).unwrap();
        SmsState::new(vec![(SID.into(), TOKEN.into())], Some("https://leads.example.com/".into()), c)
    }

    /// Our sending number the test messages are sent to, unless `form_to` says.
    const OURS: &str = "+15005550006";

    fn form(body: &str, from: &str) -> Vec<(String, String)> {
        form_to(body, from, OURS)
    }

    fn form_to(body: &str, from: &str, to: &str) -> Vec<(String, String)> {
        [("AccountSid", SID), ("Body", body), ("From", from), ("To", to), ("MessageSid", "SMb")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    async fn post(st: &SmsState, params: &[(String, String)], sig: Option<&str>) -> (StatusCode, String, String) {
        let mut req = Request::post(PATH)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("host", "127.0.0.1:8080");
        if let Some(s) = sig {
            req = req.header("x-twilio-signature", s);
        }
        let resp = routes(st.clone())
            .oneshot(req.body(Body::from(serde_urlencoded::to_string(params).unwrap())).unwrap())
            .await
            .unwrap();
        let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        (status, ct, String::from_utf8_lossy(&body).into_owned())
    }

    /// Opted out of texts from `OURS`.
    fn opted_out(st: &SmsState, n: &str) -> bool {
        opted_out_from(st, n, OURS)
    }

    fn opted_out_from(st: &SmsState, n: &str, sender: &str) -> bool {
        crate::textback::db::opted_out(&st.db.lock().unwrap(), n, sender).unwrap()
    }

    #[tokio::test]
    async fn a_signed_stop_opts_out_and_start_opts_back_in() {
        let st = state();
        let p = form(" stop ", "+1 555 123 0001");
        let sig = twilio::signature(TOKEN, URL, &p);
        let (status, ct, body) = post(&st, &p, Some(&sig)).await;
        assert_eq!((status, ct.as_str(), body.as_str()), (StatusCode::OK, "text/xml", EMPTY_TWIML));
        assert!(opted_out(&st, "+15551230001"), "stored under its E.164 form");
        let p = form("START", "+15551230001");
        let (status, ..) = post(&st, &p, Some(&twilio::signature(TOKEN, URL, &p))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!opted_out(&st, "+15551230001"));
        // Any other message changes nothing and is answered alike.
        let p = form("Please call me back", "+15551230002");
        let (status, _, body) = post(&st, &p, Some(&twilio::signature(TOKEN, URL, &p))).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, EMPTY_TWIML));
        assert!(!opted_out(&st, "+15551230002"));
    }

    #[tokio::test]
    async fn an_opt_out_is_for_the_number_the_message_was_sent_to() {
        let st = state();
        let other = "+15005550007";
        let p = form("STOP", "+15551230001");
        assert_eq!(post(&st, &p, Some(&twilio::signature(TOKEN, URL, &p))).await.0, StatusCode::OK);
        assert!(opted_out(&st, "+15551230001"));
        assert!(!opted_out_from(&st, "+15551230001", other), "our other number still texts it");
        // START to the other number does not undo the STOP to the first.
        let p = form_to("START", "+15551230001", other);
        assert_eq!(post(&st, &p, Some(&twilio::signature(TOKEN, URL, &p))).await.0, StatusCode::OK);
        assert!(opted_out(&st, "+15551230001"));
        assert!(!opted_out_from(&st, "+15551230001", other));
        // STOP to the other number: now both.
        let p = form_to("stop", "+15551230001", "+1 500 555 0007");
        assert_eq!(post(&st, &p, Some(&twilio::signature(TOKEN, URL, &p))).await.0, StatusCode::OK);
        assert!(opted_out_from(&st, "+15551230001", other), "keyed by the E.164 form of To");
        // A To that is no phone number: every sender.
        let p = form_to("STOP", "+15551230002", "");
        assert_eq!(post(&st, &p, Some(&twilio::signature(TOKEN, URL, &p))).await.0, StatusCode::OK);
        assert!(opted_out(&st, "+15551230002") && opted_out_from(&st, "+15551230002", other));
    }

    #[tokio::test]
    async fn a_bad_or_missing_signature_is_refused_and_changes_nothing() {
        let st = state();
        let p = form("STOP", "+15551230001");
        let good = twilio::signature(TOKEN, URL, &p);
        // Signed with another token, for another URL, for other parameters, or not at all.
        let other_token = twilio::signature("not-the-token", URL, &p);
        let other_url = twilio::signature(TOKEN, "https://evil.example.com/sms/inbound", &p);
        let other_params = twilio::signature(TOKEN, URL, &form("STOP", "+15559999999"));
        for sig in [Some(other_token.as_str()), Some(other_url.as_str()), Some(other_params.as_str()), Some(""), None] {
            let (status, ..) = post(&st, &p, sig).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{sig:?}");
        }
        // A message naming an account we do not have, signed with our token.
        let mut foreign = p.clone();
        foreign[0].1 = "ACbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".into();
        let (status, ..) = post(&st, &foreign, Some(&twilio::signature(TOKEN, URL, &foreign))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(!opted_out(&st, "+15551230001"));
        // The same request, signed right, goes through.
        let (status, ..) = post(&st, &p, Some(&good)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(opted_out(&st, "+15551230001"));
    }

    #[tokio::test]
    async fn without_a_public_url_the_host_header_names_the_url() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(crate::textback::SCHEMA).unwrap();
        let st = SmsState::new(vec![(SID.into(), TOKEN.into())], None, c);
        let p = form("STOP", "+15551230001");
        let (status, ..) = post(&st, &p, Some(&twilio::signature(TOKEN, URL, &p))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "signed for another host");
        let sig = twilio::signature(TOKEN, "http://127.0.0.1:8080/sms/inbound", &p);
        let (status, ..) = post(&st, &p, Some(&sig)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(opted_out(&st, "+15551230001"));
    }
}
