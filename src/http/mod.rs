//! The HTTP face: the lead inbox, its JSON API under `/api/`, recordings by
//! signed link, and the inbound-SMS webhook (`sms`). Off unless `[http]`
//! is configured.
//!
//! Routes:
//! * `GET /login`, `POST /login`, `POST /logout`: inbox users (`auth`);
//! * `GET /` (the inbox, `?view=open|overdue|handled|junk|urgent|all&page=N`),
//!   `GET /leads/{id}`, `POST /leads/{id}/handled`, `POST /leads/{id}/reopen`
//!   (`pages`): a session, and its CSRF token on every POST;
//! * `/api/leads...` (`api`): a bearer token, or an inbox session (with
//!   `X-CSRF-Token` on POST);
//! * `GET /recordings/{file}?exp=&sig=` (`recordings`): a signed link only;
//! * `POST /sms/inbound` (`sms`): Twilio's signature;
//! * `GET /metrics` (Prometheus): a bearer token; `GET /healthz` and
//!   `GET /readyz`: open (`crate::metrics`).
//!
//! Every POST is audited to the log: one `audit: request` line for each,
//! whatever answered it (a handler, a 404 or 405, a body over the 16-KiB
//! limit), with its path, client address and status; and the handlers'
//! `audit: POST` lines with the user, the lead and the result. Logged
//! strings that came from the request are written quoted and escaped, so a
//! name or path cannot forge a log line. Handlers never panic on input:
//! every parse failure is a 4xx.
//!
//! The client address (the login limiter's and the audit log's) is the
//! peer's, unless the peer is in `[http] trusted_proxies`: then it is the
//! right-most `X-Forwarded-For` address that is not itself a trusted proxy
//! ([`client_ip`]).

mod api;
pub mod auth;
pub mod links;
mod pages;
pub(crate) mod recordings;
pub mod sms;

use crate::config::Config;
use crate::sink::delivery::Publisher;
use crate::sink::outbox::Outbox;
use anyhow::Context as _;
use auth::Auth;
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use ipnet::IpNet;
use links::Links;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// What the HTTP face reads and writes through.
pub struct Context {
    pub cfg: Config,
    /// The outbox database, which holds the lead store.
    pub db: Arc<Mutex<Outbox>>,
    /// Commits `lead.handled` and the like.
    pub publisher: Publisher,
    /// What `/metrics` and `/readyz` report.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The handlers' shared state.
pub(crate) struct Inner {
    pub db: Arc<Mutex<Outbox>>,
    pub publisher: Publisher,
    pub auth: Auth,
    pub links: Links,
    pub recordings: PathBuf,
    /// `[http] trusted_proxies`.
    pub trusted_proxies: Vec<IpNet>,
    /// What `/metrics` and `/readyz` report.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The client's address as [`client_ip`] works it out: a request extension
/// the middleware puts on every request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Client(pub IpAddr);

/// The body limit of every route but the SMS webhook's (forms and JSON are small).
pub const BODY_LIMIT: usize = 16 * 1024;

pub(crate) type App = Arc<Inner>;

/// A failure a handler turns into a response.
#[derive(Debug)]
pub(crate) enum Failure {
    NotFound,
    /// The store or the outbox failed: logged, a 500.
    Internal,
}

impl Inner {
    /// Run `f` on the lead store, on the blocking pool.
    pub async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, Failure> {
        let db = self.db.clone();
        let r = tokio::task::spawn_blocking(move || {
            let mut db = db.lock().unwrap_or_else(|p| p.into_inner());
            f(db.conn())
        })
        .await;
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::error!("lead store: {e}");
                Err(Failure::Internal)
            }
            Err(e) => {
                tracing::error!("lead store task: {e}");
                Err(Failure::Internal)
            }
        }
    }

    /// The logged-in session the request's cookie names.
    pub fn session(&self, headers: &HeaderMap) -> Option<auth::Session> {
        let name = self.auth.session_cookie();
        let id = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| auth::cookie_value(c, name))?;
        self.auth.sessions.get(id, &self.auth.creds())
    }

    /// The session id from the cookie (logout).
    pub fn session_id(&self, headers: &HeaderMap) -> Option<String> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| auth::cookie_value(c, self.auth.session_cookie()))
            .map(str::to_string)
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The running HTTP face.
pub struct HttpFace {
    app: App,
    server: tokio::task::JoinHandle<()>,
    pub local_addr: SocketAddr,
}

/// Bind a TCP listener on `listen`, with an error that says what went wrong
/// in an operator's words (for `[http]` and `[metrics]`).
pub async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!("listen {listen}: address in use"),
        std::io::ErrorKind::AddrNotAvailable => anyhow::anyhow!("listen {listen}: no such local address"),
        std::io::ErrorKind::PermissionDenied => anyhow::anyhow!("listen {listen}: permission denied"),
        _ => anyhow::anyhow!("listen {listen}: {e}"),
    })
}

/// Resolves once `stop` is true (or its sender is gone): a server's graceful stop.
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            break;
        }
    }
}

impl HttpFace {
    /// Bind `[http] listen` and serve until `shutdown` flips.
    pub async fn start(ctx: Context, shutdown: watch::Receiver<bool>) -> anyhow::Result<HttpFace> {
        let h = ctx.cfg.http.clone().context("no [http] section")?;
        let links = Links::for_face(&ctx.cfg)?;
        let app: App = Arc::new(Inner {
            db: ctx.db,
            publisher: ctx.publisher,
            auth: Auth::new(&h),
            links,
            recordings: ctx.cfg.recordings_dir(),
            trusted_proxies: h.trusted_proxies.clone(),
            metrics: ctx.metrics,
        });
        let mut router = router(app.clone());
        if let Some(s) = sms::SmsState::from_config(&ctx.cfg)? {
            let s = s.with_cluster(app.publisher.cluster().cloned());
            router = router.merge(sms::routes(s));
        }
        let router = router
            .layer(axum::middleware::map_response(security_headers))
            .layer(axum::middleware::from_fn_with_state(app.clone(), client_and_audit));
        let listener = bind(h.listen).await?;
        let local_addr = listener.local_addr()?;
        if h.user.is_empty() && h.token.is_empty() {
            tracing::warn!("[http] has no users and no tokens: nobody can read the inbox or the API");
        }
        let server = tokio::spawn(async move {
            let svc = router.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(listener, svc).with_graceful_shutdown(stopped(shutdown)).await {
                tracing::error!("HTTP face: {e}");
            }
        });
        Ok(HttpFace { app, server, local_addr })
    }

    /// Take the users and API tokens of a re-read config (SIGHUP).
    pub fn reload(&self, cfg: &Config) {
        match &cfg.http {
            Some(h) => self.app.auth.reload(h),
            // [http] removed: nobody gets in until the restart turns the face off.
            None => self.app.auth.reload(&Default::default()),
        }
        let creds = self.app.auth.creds();
        tracing::info!(users = creds.users.len(), tokens = creds.tokens.len(), "HTTP users and tokens reloaded");
    }

    /// Wait for the server to stop (after `shutdown`).
    pub async fn stopped(self) {
        let _ = self.server.await;
    }
}

fn router(app: App) -> Router {
    use axum::routing::{get, post};
    Router::new()
        .route("/", get(pages::inbox))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/leads/{id}", get(pages::detail))
        .route("/leads/{id}/handled", post(pages::handled))
        .route("/leads/{id}/reopen", post(pages::reopen))
        .route("/api/leads", get(api::list))
        .route("/api/leads/{id}", get(api::one))
        .route("/api/leads/{id}/handled", post(api::handled))
        .route("/api/leads/{id}/reopen", post(api::reopen))
        .route("/api/leads/{id}/events", get(api::events))
        .route("/recordings/{file}", get(recordings::serve))
        .route("/metrics", get(scrape))
        .route("/healthz", get(crate::metrics::healthz))
        .route("/readyz", get(|State(app): State<App>| async move { crate::metrics::readyz_brief(&app.metrics) }))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(app)
}

/// The client's address: the peer's, or, when the peer is a trusted proxy,
/// the right-most `X-Forwarded-For` address that is not itself one (each
/// proxy appends the address it was reached from, so the addresses right of
/// that one were written by trusted proxies and the ones left of it by
/// whoever sent the request, which may be anything). An entry that does not
/// parse ends the walk at the last trusted address.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(&ip));
    let mut ip = peer.to_canonical();
    if !is_trusted(ip) {
        return ip;
    }
    // Entry by entry, from the bytes: junk a client wrote on the left of a
    // line cannot hide the entries the proxies appended on its right.
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|e| std::str::from_utf8(e).map(str::trim).unwrap_or(""))
        .collect();
    for entry in entries.iter().rev() {
        let Some(next) = parse_forwarded(entry) else { break };
        ip = next.to_canonical();
        if !is_trusted(ip) {
            break;
        }
    }
    ip
}

/// An `X-Forwarded-For` entry: an address, optionally `[v6]`, with or without a port.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| entry.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

/// Put the [`Client`] on the request, and audit every POST whatever answers
/// it (a handler, a 404 or 405, a rejected body).
async fn client_and_audit(
    State(app): State<App>,
    mut req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let client = client_ip(peer, req.headers(), &app.trusted_proxies);
    req.extensions_mut().insert(Client(client));
    // POSTs, and any other method that would change something (all are 405s here).
    let audited = (req.method() != Method::GET && req.method() != Method::HEAD)
        .then(|| (req.method().clone(), req.uri().path().to_string()));
    // Logged when the request ends however it ends: a client that hangs up
    // mid-request drops this future, while what it asked for (committed on
    // the blocking pool) may still happen; that is audited as `cancelled`.
    let mut audit = audited.map(|(method, path)| RequestAudit { method, path, client, status: None });
    let res = next.run(req).await;
    if let Some(a) = audit.as_mut() {
        a.status = Some(res.status().as_u16());
    }
    res
}

/// The audit line of one request that could change something, written on drop.
struct RequestAudit {
    method: Method,
    path: String,
    client: IpAddr,
    /// The answer's status; `None`: the client went away before it.
    status: Option<u16>,
}

impl Drop for RequestAudit {
    fn drop(&mut self) {
        let (method, path, client) = (self.method.as_str(), self.path.as_str(), self.client);
        match self.status {
            Some(status) => tracing::info!(method, path, client = %client, status, "audit: request"),
            None => tracing::warn!(method, path, client = %client, status = "cancelled", "audit: request"),
        }
    }
}

/// `/metrics` for a Prometheus that presents a `[[http.token]]` of either
/// scope (its `authorization` config: `credentials` is the token); a
/// `scope = "metrics"` token can do nothing else.
async fn scrape(State(app): State<App>, headers: HeaderMap) -> axum::response::Response {
    use axum::response::IntoResponse;
    if auth::bearer(&headers).and_then(|t| app.auth.creds().token(t)).is_none() {
        let challenge = HeaderValue::from_static("Bearer realm=\"backstop\"");
        return (
            axum::http::StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, challenge)],
            "a [[http.token]] (scope api or metrics) is required\n",
        )
            .into_response();
    }
    crate::metrics::metrics_text(app.metrics.clone(), &headers).await
}

async fn not_found() -> (axum::http::StatusCode, &'static str) {
    (axum::http::StatusCode::NOT_FOUND, "not found\n")
}

/// Headers on every response: nothing cached on the way (leads are
/// personal data; recordings say `private` themselves), no framing, no
/// sniffing, no referrer (a signed link must not leak), and a CSP that
/// allows only this origin plus the pages' own inline style and script.
async fn security_headers(mut res: axum::response::Response) -> axum::response::Response {
    let h = res.headers_mut();
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        if !h.contains_key(&k) {
            h.insert(k, HeaderValue::from_static(v));
        }
    };
    set(h, header::CACHE_CONTROL, "no-store");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; media-src 'self'; \
         img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_client_is_the_peer_unless_a_trusted_proxy_says_otherwise() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let trusted: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
        // No trusted proxies, or a peer not among them: the header is ignored.
        assert_eq!(client_ip(ip("127.0.0.1"), &xff(&["1.2.3.4"]), &[]), ip("127.0.0.1"));
        assert_eq!(client_ip(ip("203.0.113.9"), &xff(&["1.2.3.4"]), &trusted), ip("203.0.113.9"));
        // A trusted peer: the right-most entry that is not a trusted proxy.
        assert_eq!(client_ip(ip("127.0.0.1"), &xff(&["1.2.3.4"]), &trusted), ip("1.2.3.4"));
        assert_eq!(client_ip(ip("127.0.0.1"), &xff(&["6.6.6.6, 1.2.3.4, 10.1.1.1"]), &trusted), ip("1.2.3.4"));
        assert_eq!(
            client_ip(ip("127.0.0.1"), &xff(&["6.6.6.6", "1.2.3.4"]), &trusted),
            ip("1.2.3.4"),
            "headers joined"
        );
        assert_eq!(client_ip(ip("::ffff:127.0.0.1"), &xff(&["1.2.3.4:5678"]), &trusted), ip("1.2.3.4"));
        assert_eq!(client_ip(ip("127.0.0.1"), &xff(&["[2001:db8::1]:443"]), &trusted), ip("2001:db8::1"));
        assert_eq!(client_ip(ip("127.0.0.1"), &xff(&["[2001:db8::1]"]), &trusted), ip("2001:db8::1"));
        // Bytes a client wrote on the left of the line do not hide what the proxy appended.
        let mut junk = HeaderMap::new();
        junk.insert("x-forwarded-for", axum::http::HeaderValue::from_bytes(b"\x80\xff, 1.2.3.4").unwrap());
        assert_eq!(client_ip(ip("127.0.0.1"), &junk, &trusted), ip("1.2.3.4"));
        // No header, or only proxies: the last trusted address; garbage stops the walk.
        assert_eq!(client_ip(ip("127.0.0.1"), &HeaderMap::new(), &trusted), ip("127.0.0.1"));
        assert_eq!(client_ip(ip("127.0.0.1"), &xff(&["10.2.2.2, 10.1.1.1"]), &trusted), ip("10.2.2.2"));
        assert_eq!(client_ip(ip("127.0.0.1"), &xff(&["1.2.3.4, unknown, 10.1.1.1"]), &trusted), ip("10.1.1.1"));
    }
}
