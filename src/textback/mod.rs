//! The instant text-back: a sink that takes `call.missed` and, when the
//! policy allows (`backstop_core::textback`), texts the caller through the
//! Twilio Messages API (or a compatible one at `base_url`).
//!
//! It is an outbox sink like the webhooks, so a text is retried while the
//! API cannot be reached (up to `max_age_minutes`) and survives restarts.
//! Never twice for one event: each event's decision is a row of
//! `text_backs` (`db`), claimed before the request goes out. An event whose
//! row says sent, skipped or unknown is done; a request that may have
//! reached the API without an answer (a timeout, a reset, a crash) is
//! recorded `unknown` and not sent again; only a request that did not go
//! out (no connection) or that the API answered without taking it (408,
//! 429, 5xx: retried; another 4xx: dead-lettered, and `outbox retry --dead`
//! tries it again) is decided and sent anew. (A 5xx is taken, as the outbox
//! takes every 5xx, to mean the message was not created; were it created
//! anyway, the retry would send it twice. We know of no idempotency key
//! for Twilio's Messages resource that would close that gap.)
//! The lead records the outcome through `store::set_text_back`.
//!
//! Opt-outs are per caller and sending number (`from`): a STOP to one of
//! our numbers (`/sms/inbound`, keyed by its `To`), or the API's 21610 for
//! a send from it, stops the texts from that number only, as Twilio's own
//! block does; a START to another number does not undo it. Lines that text
//! from the same number share its opt-outs.

pub mod db;
pub mod shared;
pub mod twilio;

use crate::config::{Config, TextBackConfig};
use crate::sink::delivery::{Sink, Target, now_ms};
use crate::sink::event::{Event, EventType};
use crate::sink::outbox::{LineFilter, SinkSpec};
use crate::sink::retry::Attempt;
use anyhow::Context;
use backstop_core::textback::Facts;
use db::Claim;
use rusqlite::Connection;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use db::SCHEMA;

/// Sends the text-backs of one `[[text_back]]`.
pub struct Sender {
    name: String,
    cfg: TextBackConfig,
    auth_token: String,
    url: String,
    client: reqwest::Client,
    db: Arc<Mutex<Connection>>,
    /// On a cluster, the decisions and opt-outs are the shared store's
    /// (`shared`); the lead's display stays in this node's store.
    cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
}

/// The done answer to the outbox: nothing more to deliver for this event.
const DONE: Attempt = Attempt::Status { code: 200, retry_after: None };

impl Sender {
    pub fn new(name: String, cfg: TextBackConfig, db: Arc<Mutex<Connection>>) -> anyhow::Result<Sender> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let auth_token = cfg.resolved_auth_token().context("auth_token")?;
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.timeout)
            .user_agent(crate::USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let url = twilio::messages_url(cfg.base_url.as_str(), &cfg.account_sid);
        Ok(Sender { name, cfg, auth_token, url, client, db, cluster: Default::default() })
    }

    /// Decide on the cluster's shared store from now on (`[store]`).
    pub fn use_cluster(&self, cluster: Arc<crate::cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// Claim on the shared store, and show on the lead here what the claim decided.
    async fn claim_shared(
        &self,
        cluster: &crate::cluster::Cluster,
        r: &db::Request<'_>,
        local: &[(String, bool, i64)],
    ) -> Result<Claim, String> {
        let claim = shared::claim(cluster, r, local, now_ms()).await.map_err(|e| e.to_string())?;
        let shown = match &claim {
            Claim::WasInFlight => Some(backstop_core::textback::TextBack::failed(db::IN_FLIGHT)),
            Claim::Skipped(reason) => Some(backstop_core::textback::TextBack::skipped(*reason)),
            _ => None,
        };
        if let Some(t) = shown {
            let lead = r.lead_id.to_string();
            let _ = self
                .blocking(move |c| {
                    db::show(c, &lead, &t);
                    Ok(())
                })
                .await;
        }
        Ok(claim)
    }

    /// Decide and, if allowed, send: the outbox retries what this reports as retryable.
    pub async fn deliver(&self, event: &Event) -> Attempt {
        if event.kind != EventType::CallMissed {
            return DONE;
        }
        let lead = &event.lead;
        let (event_id, lead_id) = (event.id.clone(), lead.id.clone());
        let request_facts = Facts {
            caller: lead.caller.number.clone(),
            source_verified: lead.source_verified,
            junk: lead.junk.is_junk,
            opted_out: false,
            last_sent_ms: None,
        };
        let (sink, sender, once) = (self.name.clone(), self.cfg.from.clone(), self.cfg.once_per_ms());
        let claim = if let Some(cluster) = self.cluster.get() {
            // This node's own opt-outs count too (one recorded while the shared store was away).
            let local = match lead.caller.number.as_deref().and_then(backstop_core::textback::textable) {
                Some(n) => {
                    let s = sender.clone();
                    self.blocking(move |c| db::opt_out_rows(c, &n, &s)).await.unwrap_or_default()
                }
                None => Vec::new(),
            };
            let r = db::Request {
                event_id: &event_id,
                sink: &sink,
                lead_id: &lead_id,
                sender: &sender,
                facts: request_facts,
                once_per_ms: once,
            };
            self.claim_shared(cluster, &r, &local).await
        } else {
            let (event_id, lead_id) = (event_id.clone(), lead_id.clone());
            self.blocking(move |c| {
                let r = db::Request {
                    event_id: &event_id,
                    sink: &sink,
                    lead_id: &lead_id,
                    sender: &sender,
                    facts: request_facts,
                    once_per_ms: once,
                };
                db::claim(c, &r, now_ms())
            })
            .await
            .map_err(|e| e.to_string())
        };
        let to = match claim {
            Err(e) => return Attempt::Transport(format!("text-back table: {e}")),
            Ok(Claim::Done { status }) => {
                tracing::debug!(sink = %self.name, event = %event_id, status, "text-back already decided");
                return DONE;
            }
            Ok(Claim::WasInFlight) => {
                tracing::error!(sink = %self.name, event = %event_id, call_id = %lead.call_id, "text-back outcome unknown: an earlier attempt got no answer; not sent again");
                return DONE;
            }
            Ok(Claim::Skipped(reason)) => {
                tracing::info!(sink = %self.name, event = %event_id, call_id = %lead.call_id, reason = reason.as_str(), "text-back skipped");
                return DONE;
            }
            Ok(Claim::Send { to }) => to,
        };
        let body = self.cfg.render(&lead.line);
        let form = twilio::form(&to, &self.cfg.from, &body);
        let sent = self
            .client
            .post(&self.url)
            .basic_auth(&self.cfg.account_sid, Some(&self.auth_token))
            .form(&form)
            .send()
            .await;
        let (status, reason, sid, attempt) = match sent {
            Ok(resp) => {
                let code = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let bytes = resp.bytes().await.unwrap_or_default();
                let attempt = Attempt::Status { code, retry_after };
                match twilio::outcome(code, &bytes) {
                    twilio::Outcome::Sent { sid } => {
                        tracing::info!(sink = %self.name, event = %event_id, call_id = %lead.call_id, sid = sid.as_deref().unwrap_or(""), "text-back sent");
                        ("sent", None, sid, attempt)
                    }
                    twilio::Outcome::Refused { reason, code: err } => {
                        tracing::error!(sink = %self.name, event = %event_id, call_id = %lead.call_id, reason, "text-back refused by the API");
                        if err == Some(twilio::UNSUBSCRIBED_RECIPIENT) {
                            self.remember_opt_out(&to).await;
                        }
                        ("failed", Some(reason), None, attempt)
                    }
                    twilio::Outcome::Retry { reason } => self.unreached(event, reason, attempt),
                }
            }
            // No connection: nothing went out, so trying again is safe.
            Err(e) if e.is_connect() => {
                self.unreached(event, format!("connection failed: {e}"), Attempt::Transport(e.to_string()))
            }
            // It may have reached the API: never sent again.
            Err(e) => {
                let kind = if e.is_timeout() { "timed out" } else { "failed" };
                let reason = format!(
                    "outcome unknown: the request {kind} after it was sent ({e}); not sent again, so the caller is never texted twice"
                );
                tracing::error!(sink = %self.name, event = %event_id, call_id = %lead.call_id, reason, "text-back outcome unknown");
                ("unknown", Some(reason), None, DONE)
            }
        };
        let sink = self.name.clone();
        let reason_db = reason.clone();
        let recorded = match self.cluster.get() {
            Some(cluster) => {
                let key = db::Key { event_id: &event_id, sink: &sink, lead_id: &lead_id };
                let done = shared::finish(cluster, &key, status, reason_db.as_deref(), sid.as_deref(), now_ms())
                    .await
                    .map_err(|e| e.to_string());
                if let (Ok(()), Some(t)) = (&done, db::shown(status, reason_db.as_deref(), sid.as_deref())) {
                    let lead = lead_id.clone();
                    let _ = self
                        .blocking(move |c| {
                            db::show(c, &lead, &t);
                            Ok(())
                        })
                        .await;
                }
                done
            }
            None => self
                .blocking(move |c| {
                    let key = db::Key { event_id: &event_id, sink: &sink, lead_id: &lead_id };
                    db::finish(c, &key, status, reason_db.as_deref(), sid.as_deref(), now_ms())
                })
                .await
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = recorded {
            // The claim stays `sending`: the retry records it as unknown, and sends nothing.
            tracing::error!(sink = %self.name, event = %event.id, error = %e, "could not record the text-back's outcome");
            return Attempt::Transport(format!("text-back table: {e}"));
        }
        attempt
    }

    /// A send that did not reach the API (or was told to come back): retried,
    /// unless the event is older than `max_age_minutes`, when it is failed.
    fn unreached(
        &self,
        event: &Event,
        reason: String,
        attempt: Attempt,
    ) -> (&'static str, Option<String>, Option<String>, Attempt) {
        let age = event.created_at.parse::<jiff::Timestamp>().map(|t| now_ms() - t.as_millisecond()).unwrap_or(0);
        if age > self.cfg.max_age.as_millis() as i64 {
            let reason = format!("gave up after {} min: {reason}", self.cfg.max_age.as_secs() / 60);
            tracing::error!(sink = %self.name, event = %event.id, reason, "text-back failed");
            ("failed", Some(reason), None, attempt)
        } else {
            tracing::warn!(sink = %self.name, event = %event.id, reason, "text-back not sent yet; will retry");
            ("retry", Some(reason), None, attempt)
        }
    }

    /// The API says the number replied STOP to our sender (`from`):
    /// remember it here too, for that sender.
    async fn remember_opt_out(&self, number: &str) {
        let number = number.to_string();
        let account = self.cfg.account_sid.clone();
        let sender = db::sender_of(Some(&self.cfg.from));
        let r = match self.cluster.get() {
            Some(cluster) => {
                shared::set_opt_out(cluster, &number, &sender, true, "API 21610", Some(&account), now_ms())
                    .await
                    .map_err(|e| e.to_string())
            }
            None => self
                .blocking(move |c| db::set_opt_out(c, &number, &sender, true, "API 21610", Some(&account), now_ms()))
                .await
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = r {
            tracing::warn!(sink = %self.name, error = %e, "could not record the opt-out the API reported");
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> rusqlite::Result<T> {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || f(&mut db.lock().unwrap_or_else(|p| p.into_inner()))).await {
            Ok(r) => r,
            Err(e) => Err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))),
        }
    }

    /// The sink's name, for logs.
    pub fn name(&self) -> String {
        self.name.clone()
    }
}

/// The sink name of a `[[text_back]]`: `text_back:<line or *>:<from>`.
pub fn sink_name(line: Option<&str>, from: &str) -> String {
    format!("text_back:{}:{from}", line.unwrap_or("*"))
}

/// The text-back sinks the config asks for: one per `[[text_back]]`, the
/// top-level ones for every line without its own. They share one
/// connection to the outbox file.
pub fn sinks(cfg: &Config) -> anyhow::Result<Vec<Sink>> {
    let own: Vec<String> = cfg.line.iter().filter(|l| !l.text_back.is_empty()).map(|l| l.name.clone()).collect();
    let top = cfg.text_back.iter().map(|t| (t, LineFilter::Except(own.clone()), sink_name(None, &t.from)));
    let per_line = cfg.line.iter().flat_map(|l| {
        l.text_back.iter().map(|t| (t, LineFilter::Only(l.name.clone()), sink_name(Some(&l.name), &t.from)))
    });
    let wanted: Vec<_> = top.chain(per_line).collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    for (i, (_, _, name)) in wanted.iter().enumerate() {
        // The outbox keys deliveries by sink name: two alike would share them.
        if wanted[..i].iter().any(|(_, _, n)| n == name) {
            anyhow::bail!("two text-backs from the same number for the same lines ({name})");
        }
    }
    let path = cfg.outbox_path();
    let conn = db::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let conn = Arc::new(Mutex::new(conn));
    let mut out = Vec::new();
    for (t, lines, name) in wanted {
        let sender = Sender::new(name.clone(), t.clone(), conn.clone()).with_context(|| name.clone())?;
        out.push(Sink {
            spec: SinkSpec { name, events: vec![EventType::CallMissed], lines },
            target: Target::TextBack(Arc::new(sender)),
            max_interval: Duration::from_secs(30),
            max_age: t.max_age,
        });
    }
    Ok(out)
}

/// Record a STOP or START from an inbound message (`/sms/inbound`): from
/// the caller `from` to our number `to`, for texts from `to` only (a `to`
/// that is no phone number: for every sender, see [`db::ANY_SENDER`]).
pub fn record_opt(
    conn: &Connection,
    from: &str,
    to: &str,
    stop: bool,
    keyword: &str,
    account_sid: &str,
) -> rusqlite::Result<()> {
    let number = backstop_core::textback::textable(from).unwrap_or_else(|| from.trim().to_string());
    db::set_opt_out(conn, &number, &db::sender_of(Some(to)), stop, keyword, Some(account_sid), now_ms())
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_core::intake::lead::{Lead, rfc3339};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::SystemTime;

    const SID: &str = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    /// A stand-in for the API: answers `(status, delay)` in turn (the last
    /// one from then on) and keeps each request's Authorization and body.
    struct Api {
        port: u16,
        seen: Arc<Mutex<Vec<(String, String)>>>,
        count: Arc<AtomicUsize>,
    }

    fn serve(script: Vec<(u16, Duration)>) -> Api {
        serve_refusing_with(
            script,
            r#"{"code":21211,"message":"The 'To' number is not a valid phone number.","status":400}"#,
        )
    }

    /// As `serve`, answering `refusal` to a status of 300 or more.
    fn serve_refusing_with(script: Vec<(u16, Duration)>, refusal: &'static str) -> Api {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let (s, c) = (seen.clone(), count.clone());
        std::thread::spawn(move || {
            for mut req in server.incoming_requests() {
                let n = c.fetch_add(1, Ordering::SeqCst);
                let mut body = String::new();
                let _ = std::io::Read::read_to_string(req.as_reader(), &mut body);
                let auth = req
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Authorization"))
                    .map(|h| h.value.to_string())
                    .unwrap_or_default();
                s.lock().unwrap().push((auth, body));
                let (status, delay) = script[n.min(script.len() - 1)];
                std::thread::sleep(delay);
                let answer = if status < 300 {
                    format!(r#"{{"sid":"SM{:032x}","status":"queued"}}"#, n)
                } else {
                    refusal.to_string()
                };
                let _ = req.respond(tiny_http::Response::from_string(answer).with_status_code(status));
            }
        });
        Api { port, seen, count }
    }

    fn sender(port: u16) -> (Sender, Arc<Mutex<Connection>>) {
        let cfg: TextBackConfig = toml::from_str(&format!(
            "account_sid = \"{SID}\"\nauth_token = \"tok\"\nfrom = \"+15005550006\"\nbusiness = \"Acme\"\n\
             base_url = \"http://127.0.0.1:{port}\"\ntimeout_ms = 400\n"
        ))
        .unwrap();
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(crate::store::SCHEMA).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let db = Arc::new(Mutex::new(conn));
        (Sender::new("text_back:*:+15005550006".into(), cfg, db.clone()).unwrap(), db)
    }

    fn missed(caller: &str) -> Event {
        let text = format!(
            "INVITE sip:o@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\n\
             From: <sip:{caller}@127.0.0.1>;tag=a\r\nTo: <sip:o@127.0.0.1>\r\nCall-ID: c1\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:c@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n"
        );
        let backstop_core::sip::message::Incoming::Request(r) =
            backstop_core::sip::message::read_message(text.as_bytes(), "127.0.0.1:5070".parse().unwrap())
        else {
            panic!("test INVITE rejected")
        };
        let mut lead = Lead::from_invite("lead-1".into(), &r, SystemTime::now(), backstop_core::sip::Transport::Udp);
        lead.source_verified = true;
        Event::new(EventType::CallMissed, rfc3339(SystemTime::now()), &lead)
    }

    fn status(db: &Arc<Mutex<Connection>>) -> (String, Option<String>, Option<String>) {
        db.lock()
            .unwrap()
            .query_row("SELECT status, reason, sid FROM text_backs", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_event_is_sent_once_as_a_basic_auth_form() {
        let api = serve(vec![(201, Duration::ZERO)]);
        let (s, db) = sender(api.port);
        let ev = missed("+15551230001");
        assert_eq!(s.deliver(&ev).await, Attempt::Status { code: 201, retry_after: None });
        assert_eq!(s.deliver(&ev).await, DONE, "the same event again: done");
        assert_eq!(api.count.load(Ordering::SeqCst), 1, "sent once");
        let (auth, body) = api.seen.lock().unwrap()[0].clone();
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{SID}:tok"));
        assert_eq!(auth, format!("Basic {basic}"));
        let form: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap();
        let want = [
            ("To", "+15551230001"),
            ("From", "+15005550006"),
            ("Body", "Sorry we missed your call to Acme. We'll call you back shortly. Reply STOP to opt out."),
        ];
        assert_eq!(form, want.map(|(k, v)| (k.to_string(), v.to_string())));
        assert_eq!(status(&db), ("sent".into(), None, Some(format!("SM{:032x}", 0))));
        // Another event of the same number inside the window: skipped, nothing sent.
        assert_eq!(s.deliver(&missed("+15551230001")).await, DONE);
        assert_eq!(api.count.load(Ordering::SeqCst), 1);
        // Other events are none of its business.
        let mut other = missed("+15551230002");
        other.kind = EventType::LeadCompleted;
        assert_eq!(s.deliver(&other).await, DONE);
        assert_eq!(api.count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_error_is_retried_and_a_refusal_is_permanent() {
        let api = serve(vec![(503, Duration::ZERO), (201, Duration::ZERO)]);
        let (s, db) = sender(api.port);
        let ev = missed("+15551230001");
        assert_eq!(s.deliver(&ev).await, Attempt::Status { code: 503, retry_after: None });
        assert_eq!(status(&db).0, "retry");
        assert_eq!(s.deliver(&ev).await, Attempt::Status { code: 201, retry_after: None });
        assert_eq!(status(&db).0, "sent");
        assert_eq!(api.count.load(Ordering::SeqCst), 2);

        let refusing = serve(vec![(400, Duration::ZERO)]);
        let (s, db) = sender(refusing.port);
        let a = s.deliver(&missed("+15551230001")).await;
        assert_eq!(a, Attempt::Status { code: 400, retry_after: None });
        assert!(matches!(crate::sink::retry::classify(&a), crate::sink::retry::Verdict::Dead { .. }));
        let (st, reason, _) = status(&db);
        assert_eq!(st, "failed");
        assert_eq!(reason.as_deref(), Some("HTTP 400 (error 21211): The 'To' number is not a valid phone number."));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_answer_after_sending_means_never_again_and_no_connection_means_retry() {
        // The API takes the request but answers after the timeout: it may have sent it.
        let api = serve(vec![(201, Duration::from_millis(1500))]);
        let (s, db) = sender(api.port);
        let ev = missed("+15551230001");
        assert_eq!(s.deliver(&ev).await, DONE);
        let (st, reason, _) = status(&db);
        assert_eq!(st, "unknown");
        assert!(reason.unwrap().contains("timed out"));
        assert_eq!(s.deliver(&ev).await, DONE);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(api.count.load(Ordering::SeqCst), 1, "not sent again");

        // Nothing listening: certainly not sent, so retried.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (s, db) = sender(port);
        let a = s.deliver(&missed("+15551230001")).await;
        assert!(matches!(a, Attempt::Transport(_)), "{a:?}");
        assert_eq!(status(&db).0, "retry");
        // Past max_age_minutes (an hour by default): given up, and the lead says so.
        let (s, db) = sender(port);
        let mut old = missed("+15551230001");
        old.created_at = rfc3339(SystemTime::now() - Duration::from_secs(2 * 3600));
        assert!(matches!(s.deliver(&old).await, Attempt::Transport(_)));
        let (st, reason, _) = status(&db);
        assert_eq!(st, "failed");
        assert!(reason.unwrap().starts_with("gave up after 60 min: connection failed"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_calls_from_one_number_at_once_text_it_once() {
        let api = serve(vec![(201, Duration::from_millis(100))]);
        let (s, _db) = sender(api.port);
        let (a, b) = (missed("+15551230001"), missed("+15551230001"));
        let (ra, rb) = tokio::join!(s.deliver(&a), s.deliver(&b));
        let mut got = [ra, rb];
        got.sort_by_key(|a| format!("{a:?}"));
        assert_eq!(
            got,
            [Attempt::Status { code: 200, retry_after: None }, Attempt::Status { code: 201, retry_after: None }]
        );
        assert_eq!(api.count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_policy_skip_sends_nothing() {
        let api = serve(vec![(201, Duration::ZERO)]);
        let (s, db) = sender(api.port);
        let mut ev = missed("anonymous");
        assert_eq!(s.deliver(&ev).await, DONE);
        assert_eq!(status(&db), ("skipped".into(), Some("invalid_number".into()), None));
        ev = missed("+15551230001");
        ev.lead.source_verified = false;
        ev.id = "evt_unverified".into();
        assert_eq!(s.deliver(&ev).await, DONE);
        assert_eq!(api.count.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_apis_unsubscribed_answer_is_an_opt_out_from_this_sender_only() {
        let api = serve_refusing_with(
            vec![(400, Duration::ZERO)],
            r#"{"code":21610,"message":"Attempt to send to unsubscribed recipient","status":400}"#,
        );
        let (s, db) = sender(api.port);
        assert_eq!(s.deliver(&missed("+15551230001")).await, Attempt::Status { code: 400, retry_after: None });
        assert_eq!(status(&db).0, "failed");
        let c = db.lock().unwrap();
        assert!(db::opted_out(&c, "+15551230001", "+15005550006").unwrap());
        assert!(!db::opted_out(&c, "+15551230001", "+15005550007").unwrap(), "another sender may still text");
    }

    #[test]
    fn sinks_per_line_and_for_the_rest() {
        let dir = std::env::temp_dir().join(format!("backstop-tb-sinks-{}", std::process::id()));
        let toml = format!(
            "[data]\ndir = \"{}\"\n[[text_back]]\naccount_sid = \"{SID}\"\nauth_token = \"t\"\nfrom = \"+15005550006\"\n\
             [[line]]\nname = \"north\"\nmatch = {{ called = [\"+15559990001\"] }}\n\
             [[line.text_back]]\naccount_sid = \"{SID}\"\nauth_token = \"t\"\nfrom = \"+15005550007\"\n",
            dir.display()
        );
        let cfg: Config = toml::from_str(&toml).unwrap();
        let s = sinks(&cfg).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].spec.name, "text_back:*:+15005550006");
        assert_eq!(s[0].spec.lines, LineFilter::Except(vec!["north".into()]));
        assert_eq!(s[1].spec.name, "text_back:north:+15005550007");
        assert_eq!(s[1].spec.lines, LineFilter::Only("north".into()));
        assert!(s.iter().all(|s| s.spec.events == [EventType::CallMissed]));
        let mut twice = cfg.clone();
        twice.text_back.push(twice.text_back[0].clone());
        let err = sinks(&twice).err().expect("two alike are refused");
        assert!(err.to_string().contains("text_back:*:+15005550006"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(sinks(&Config::default()).unwrap().is_empty());
    }
}
