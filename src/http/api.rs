//! The JSON API under `/api/`:
//! * `GET /api/leads?view=&line=&limit=&offset=` → `{leads, total, limit, offset}`;
//! * `GET /api/leads/{id}`, `GET /api/leads/{id}/events` (`{events}`);
//! * `POST /api/leads/{id}/handled` (optional JSON `{"note": "..."}`),
//!   `POST /api/leads/{id}/reopen`.
//!
//! Access: `Authorization: Bearer <token>` (`[[http.token]]`), or an inbox
//! session with `X-CSRF-Token` on POST. A lead is the lead's JSON with its
//! `status` and `urgent`, and `recording_url`s signed at request time
//! (absolute with `public_url`, else relative to this server). Errors are
//! `{"error": "..."}`.

use super::{App, Failure, now_ms};
use crate::config::TokenScope;
use crate::store::{self, Query, StoreError, StoredLead, View};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The most leads one page gives.
pub const MAX_LIMIT: u32 = 200;

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::NotFound => error(StatusCode::NOT_FOUND, "no such lead"),
            Failure::Internal => error(StatusCode::INTERNAL_SERVER_ERROR, "the lead store failed; see the agent's log"),
        }
    }
}

/// Who is calling: a token's name or an inbox user.
struct Caller {
    name: String,
    /// An inbox session's CSRF token (POSTs must present it).
    csrf: Option<String>,
}

/// Why a request is refused before it is looked at.
enum Refusal {
    /// No token and no session.
    NoCredentials,
    /// A token that is not (or no longer) configured.
    BadToken,
    /// A session's POST without its CSRF token.
    Csrf,
    /// A token whose scope is `metrics`: it may only scrape.
    ScrapeOnly,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, msg, challenge) = match self {
            Refusal::NoCredentials => {
                (StatusCode::UNAUTHORIZED, "a bearer token is required", "Bearer realm=\"backstop\"")
            }
            Refusal::BadToken => (
                StatusCode::UNAUTHORIZED,
                "unknown or revoked token",
                "Bearer realm=\"backstop\", error=\"invalid_token\"",
            ),
            Refusal::Csrf => (StatusCode::FORBIDDEN, "missing or wrong X-CSRF-Token", ""),
            Refusal::ScrapeOnly => (
                StatusCode::FORBIDDEN,
                "this token's scope is metrics: it may only scrape /metrics",
                "Bearer realm=\"backstop\", error=\"insufficient_scope\"",
            ),
        };
        let mut r = error(status, msg);
        if !challenge.is_empty() {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        r
    }
}

fn caller(app: &App, headers: &HeaderMap) -> Result<Caller, Refusal> {
    if headers.contains_key(header::AUTHORIZATION) {
        return match super::auth::bearer(headers).and_then(|t| app.auth.creds().token(t)) {
            Some((name, TokenScope::Api)) => Ok(Caller { name, csrf: None }),
            Some((_, TokenScope::Metrics)) => Err(Refusal::ScrapeOnly),
            None => Err(Refusal::BadToken),
        };
    }
    match app.session(headers) {
        Some(s) => Ok(Caller { name: s.user, csrf: Some(s.csrf) }),
        None => Err(Refusal::NoCredentials),
    }
}

/// A POST from a session must carry its CSRF token in `X-CSRF-Token`.
fn check_csrf(c: &Caller, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(expected) = &c.csrf else { return Ok(()) };
    let given = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or("");
    if super::auth::ct_eq(given.as_bytes(), expected.as_bytes()) { Ok(()) } else { Err(Refusal::Csrf) }
}

/// The lead as the API gives it.
pub fn lead_json(app: &App, s: &StoredLead, now_s: i64) -> Value {
    let mut lead = s.lead.clone();
    for a in lead.answers.values_mut() {
        a.recording_url =
            a.recording.as_deref().map(|f| app.links.url(f, now_s).unwrap_or_else(|| app.links.path(f, now_s)));
    }
    lead.recording_url =
        lead.recording.as_deref().map(|f| app.links.url(f, now_s).unwrap_or_else(|| app.links.path(f, now_s)));
    let mut v = serde_json::to_value(&lead).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("status".into(), json!(s.status.as_str()));
        o.insert("urgent".into(), json!(s.urgent));
    }
    v
}

pub fn parse_view(s: &str) -> Option<View> {
    Some(match s {
        "open" => View::Open,
        "overdue" => View::Overdue,
        "handled" => View::Handled,
        "junk" => View::Junk,
        "urgent" => View::Urgent,
        "all" => View::All,
        _ => return None,
    })
}

/// The list query from `?view=&line=&limit=&offset=`.
pub fn parse_query(raw: Option<&str>) -> Result<Query, String> {
    let params: Vec<(String, String)> =
        serde_urlencoded::from_str(raw.unwrap_or("")).map_err(|e| format!("bad query string: {e}"))?;
    let mut q = Query::default();
    for (k, v) in params {
        match k.as_str() {
            "view" => {
                q.view =
                    parse_view(&v).ok_or(format!("view {v:?}: one of open, overdue, handled, junk, urgent, all"))?
            }
            "line" => q.line = (!v.is_empty()).then_some(v),
            "limit" => {
                q.limit =
                    v.parse().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or(format!("limit: 1 to {MAX_LIMIT}"))?
            }
            "offset" => q.offset = v.parse().map_err(|_| "offset: a whole number".to_string())?,
            _ => {}
        }
    }
    Ok(q)
}

pub async fn list(State(app): State<App>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    if let Err(r) = caller(&app, &headers) {
        return r.into_response();
    }
    let q = match parse_query(raw.as_deref()) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let now = now_ms();
    let q2 = q.clone();
    let r = app.db(move |c| Ok((store::list(c, &q2, now)?, store::count(c, &q2, now)?))).await;
    match r {
        Ok((leads, total)) => {
            let leads: Vec<Value> = leads.iter().map(|l| lead_json(&app, l, now / 1000)).collect();
            Json(json!({ "leads": leads, "total": total, "limit": q.limit, "offset": q.offset })).into_response()
        }
        Err(f) => f.into_response(),
    }
}

pub async fn one(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = caller(&app, &headers) {
        return r.into_response();
    }
    let now = now_ms();
    match app.db(move |c| store::get(c, &id, now)).await {
        Ok(Some(l)) => Json(lead_json(&app, &l, now / 1000)).into_response(),
        Ok(None) => Failure::NotFound.into_response(),
        Err(f) => f.into_response(),
    }
}

pub async fn events(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = caller(&app, &headers) {
        return r.into_response();
    }
    let now = now_ms();
    let r = app
        .db(move |c| match store::get(c, &id, now)? {
            Some(_) => store::events(c, &id).map(Some),
            None => Ok(None),
        })
        .await;
    match r {
        Ok(Some(events)) => Json(json!({ "events": events })).into_response(),
        Ok(None) => Failure::NotFound.into_response(),
        Err(f) => f.into_response(),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HandledBody {
    note: Option<String>,
}

/// The note as kept: trimmed, empty is none, at most 2000 characters.
pub fn clean_note(note: Option<String>) -> Option<String> {
    let n = note?.trim().chars().take(2000).collect::<String>();
    (!n.is_empty()).then_some(n)
}

pub async fn handled(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    let c = match caller(&app, &headers) {
        Ok(c) => c,
        Err(r) => {
            audit("anonymous", &format!("/api/leads/{id}/handled"), &id, "401");
            return r.into_response();
        }
    };
    let path = format!("/api/leads/{id}/handled");
    if let Err(r) = check_csrf(&c, &headers) {
        audit(&c.name, &path, &id, "403 csrf");
        return r.into_response();
    }
    let note = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<HandledBody>(&body) {
            Ok(b) => clean_note(b.note),
            Err(e) => {
                audit(&c.name, &path, &id, "400");
                return error(StatusCode::BAD_REQUEST, format!("body: {e}"));
            }
        }
    };
    let r = store::mark_handled(&app.publisher, &id, &c.name, note).await;
    finish(&app, &c.name, &path, &id, r)
}

pub async fn reopen(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let path = format!("/api/leads/{id}/reopen");
    let c = match caller(&app, &headers) {
        Ok(c) => c,
        Err(r) => {
            audit("anonymous", &path, &id, "401");
            return r.into_response();
        }
    };
    if let Err(r) = check_csrf(&c, &headers) {
        audit(&c.name, &path, &id, "403 csrf");
        return r.into_response();
    }
    let r = store::reopen(&app.publisher, &id, &c.name).await;
    finish(&app, &c.name, &path, &id, r)
}

fn finish(app: &App, user: &str, path: &str, id: &str, r: Result<StoredLead, StoreError>) -> Response {
    match r {
        Ok(l) => {
            audit(user, path, id, "ok");
            Json(lead_json(app, &l, now_ms() / 1000)).into_response()
        }
        Err(StoreError::NotFound(_)) => {
            audit(user, path, id, "404");
            Failure::NotFound.into_response()
        }
        Err(e) => {
            audit(user, path, id, "500");
            tracing::error!(lead = id, path, "marking a lead: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "could not record it; see the agent's log")
        }
    }
}

/// One line per POST a handler answers: who, what, which lead, how it went.
/// (`&str` fields are written quoted and escaped: a name cannot forge a line.)
pub(crate) fn audit(user: &str, path: &str, lead: &str, result: &str) {
    tracing::info!(user, path, lead, result, "audit: POST");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_queries() {
        let q = parse_query(Some("view=handled&line=acme&limit=10&offset=20&x=1")).unwrap();
        assert_eq!((q.view, q.line.as_deref(), q.limit, q.offset), (View::Handled, Some("acme"), 10, 20));
        assert_eq!(parse_query(None).unwrap(), Query::default());
        for bad in ["view=nope", "limit=0", "limit=201", "limit=x", "offset=-1", "view=%zz"] {
            assert!(parse_query(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(clean_note(Some("  ".into())), None);
        assert_eq!(clean_note(Some(" ok ".into())).as_deref(), Some("ok"));
        assert_eq!(clean_note(Some("x".repeat(3000))).unwrap().len(), 2000);
    }
}
