//! A real HTTP webhook receiver for tests (tiny_http on loopback): it can
//! fail, stall or refuse on a script, checks every Standard Webhooks
//! signature, and records every request it saw.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// The webhook secret the tests configure, and its key for checking signatures.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub fn key() -> Vec<u8> {
    backstop::sink::webhook::decode_secret(SECRET).unwrap()
}

/// How to answer one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply { status, delay: Duration::ZERO }
    }
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub wall: SystemTime,
    pub webhook_id: String,
    pub signature_ok: bool,
    pub status: u16,
    pub event: serde_json::Value,
    /// Every request header, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn kind(&self) -> &str {
        self.event["type"].as_str().unwrap_or("")
    }
    pub fn call_id(&self) -> &str {
        self.event["lead"]["call_id"].as_str().unwrap_or("")
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<Reply>,
    default: Option<Reply>,
    seen: Vec<Seen>,
}

pub struct Receiver {
    pub port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// Listen on 127.0.0.1:`port`; requests are answered by `script` in order, then 200.
    pub fn start(port: u16, key: Vec<u8>, script: Vec<Reply>) -> Receiver {
        let server = tiny_http::Server::http(("127.0.0.1", port)).expect("bind receiver");
        let state = Arc::new(Mutex::new(State { script: script.into(), ..Default::default() }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            while !sp.load(Ordering::SeqCst) && Instant::now() < deadline {
                let Ok(Some(mut req)) = server.recv_timeout(Duration::from_millis(20)) else { continue };
                let mut body = Vec::new();
                let _ = req.as_reader().read_to_end(&mut body);
                let header = |name: &'static str| {
                    req.headers()
                        .iter()
                        .find(|h| h.field.equiv(name))
                        .map(|h| h.value.as_str().to_string())
                        .unwrap_or_default()
                };
                let (id, ts, sig) = (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
                let headers: Vec<(String, String)> = req
                    .headers()
                    .iter()
                    .map(|h| (h.field.as_str().as_str().to_ascii_lowercase(), h.value.as_str().to_string()))
                    .collect();
                let signature_ok =
                    ts.parse::<i64>().is_ok_and(|ts| backstop::sink::webhook::verify(&key, &id, ts, &body, &sig));
                let reply = {
                    let mut s = st.lock().unwrap();
                    let r = s.script.pop_front().or(s.default).unwrap_or(Reply::status(200));
                    s.seen.push(Seen {
                        at: Instant::now(),
                        wall: SystemTime::now(),
                        webhook_id: id,
                        signature_ok,
                        status: r.status,
                        event: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                        headers,
                    });
                    r
                };
                // Answer on a thread of its own so that a slow reply does not hold up the others.
                std::thread::spawn(move || {
                    std::thread::sleep(reply.delay);
                    let _ = req.respond(tiny_http::Response::empty(reply.status));
                });
            }
        });
        Receiver { port, state, stop, thread: Some(thread) }
    }

    /// Answer everything from now on with `reply` (after any scripted replies).
    pub fn set_default(&self, reply: Reply) {
        self.state.lock().unwrap().default = Some(reply);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Accepted (2xx) requests, de-duplicated by webhook-id as an idempotent receiver would.
    pub fn accepted_unique(&self) -> Vec<Seen> {
        let mut out: Vec<Seen> = Vec::new();
        for s in self.seen() {
            if (200..300).contains(&s.status) && !out.iter().any(|o| o.webhook_id == s.webhook_id) {
                out.push(s);
            }
        }
        out
    }

    /// Wait (bounded) until `pred` holds for what has been seen.
    pub fn wait_for(&self, timeout: Duration, what: &str, pred: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.seen();
            if pred(&seen) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; saw {:#?}",
                seen.iter().map(|s| (s.kind().to_string(), s.webhook_id.clone(), s.status)).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
