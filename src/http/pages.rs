//! The inbox pages (maud: escaped by default, checked at compile time):
//! the login form, the list of leads with its filters, a lead's detail page
//! with its recordings and the "Called back" and "Reopen" forms.
//!
//! Made for a phone first (a 390-px screen): one column of cards, large tap
//! targets for the `tel:` links and buttons, inline CSS, and a few lines of
//! plain JS that only show times in the browser's own zone.
//!
//! Login: the form carries a random token that must equal a cookie set with
//! it (double submit), the password is checked with argon2 on the blocking
//! pool, and failures are limited per client address and per user name
//! (`auth::MAX_FAILURES` in `auth::WINDOW`, then 429 with `Retry-After`),
//! each attempt counted before its password is checked. The client address
//! is the peer's, or, when the peer is one of `[http] trusted_proxies`, the
//! one its `X-Forwarded-For` names (`super::client_ip`): without that
//! setting, behind a proxy every client has the proxy's address and five
//! wrong passwords from anyone lock everyone out for the window. The
//! per-name limit holds anywhere, so five wrong guesses at a real user's
//! name lock that user out too until the window passes: the price of
//! bounding guesses at their password.

use super::api::{audit, clean_note, parse_view};
use super::auth::{self, ct_eq};
use super::{App, now_ms};
use crate::store::{self, Query, StoreError, StoredLead, View};
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use backstop_core::callback::LeadStatus;
use backstop_core::intake::answer::{Answer, AnswerKind};
use backstop_core::intake::lead::Lead;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use std::collections::HashMap;
use std::time::Instant;

/// Leads per page.
const PAGE: u32 = 25;

const CSS: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:16px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;background:#f3f4f6}
a{color:#0b57d0}
header{display:flex;align-items:center;justify-content:space-between;gap:8px;padding:10px 14px;background:#12263f;color:#fff}
header h1{font-size:18px;margin:0}
header a{color:#fff;text-decoration:none}
header form{margin:0}
header button{background:none;border:1px solid #8aa;color:#fff;border-radius:6px;padding:4px 10px;font-size:14px}
nav.tabs{display:flex;flex-wrap:wrap;gap:5px;padding:10px 10px;background:#fff;border-bottom:1px solid #dde}
nav.tabs a{flex:none;padding:6px 8px;border-radius:16px;background:#eef1f5;color:#1b1f24;text-decoration:none;font-size:13px}
nav.tabs a.on{background:#12263f;color:#fff}
main{padding:10px 12px 40px;max-width:760px;margin:0 auto}
ul.leads{list-style:none;margin:0;padding:0}
li.lead{background:#fff;border-radius:10px;padding:12px;margin:0 0 10px;border-left:5px solid #9aa5b1;box-shadow:0 1px 2px #0001}
li.lead.overdue{border-left-color:#c5221f;background:#fff5f5}
li.lead.handled{border-left-color:#188038;opacity:.85}
.row{display:flex;align-items:center;gap:8px;flex-wrap:wrap}
.name{font-weight:600;font-size:17px;flex:1;min-width:0;overflow-wrap:anywhere}
.name a{color:inherit;text-decoration:none}
.badge{font-size:12px;font-weight:600;padding:2px 8px;border-radius:10px;text-transform:uppercase;letter-spacing:.03em}
.badge.new{background:#e8f0fe;color:#0b57d0}
.badge.overdue{background:#c5221f;color:#fff}
.badge.handled{background:#e6f4ea;color:#188038}
.badge.urgent{background:#fbbc04;color:#3c2c00}
.badge.junk{background:#eee;color:#555}
a.tel{display:inline-block;margin:6px 0;font-size:18px;font-weight:600;text-decoration:none}
.need{margin:2px 0 6px;overflow-wrap:anywhere}
.need.none{color:#5f6b7a;font-style:italic}
.muted{color:#5f6b7a;font-size:14px}
.overdue .when{color:#c5221f;font-weight:600}
.meta{display:flex;flex-wrap:wrap;gap:4px 12px;font-size:14px;color:#5f6b7a}
section{background:#fff;border-radius:10px;padding:12px;margin:0 0 12px}
section h2{font-size:15px;margin:0 0 8px;color:#5f6b7a;text-transform:uppercase;letter-spacing:.04em}
dl{margin:0;display:grid;grid-template-columns:max-content 1fr;gap:4px 12px}
dt{color:#5f6b7a}
dd{margin:0;overflow-wrap:anywhere}
.answer{padding:8px 0;border-top:1px solid #eef}
.answer:first-of-type{border-top:0}
audio{width:100%;margin-top:6px}
textarea,input[type=text],input[type=password]{width:100%;font:inherit;padding:10px;border:1px solid #c4c9d0;border-radius:8px}
button.primary{width:100%;margin-top:8px;padding:12px;font:inherit;font-weight:600;border:0;border-radius:8px;background:#188038;color:#fff}
button.secondary{width:100%;margin-top:8px;padding:10px;font:inherit;border:1px solid #c4c9d0;border-radius:8px;background:#fff}
.pager{display:flex;justify-content:space-between;margin-top:8px}
.error{background:#fce8e6;color:#a50e0e;padding:10px;border-radius:8px;margin-bottom:10px}
.login{max-width:360px;margin:40px auto;background:#fff;padding:20px;border-radius:12px}
.login label{display:block;margin:10px 0 4px}
ol.events{margin:0;padding-left:20px;font-size:14px}
section form{margin-top:12px}
"#;

/// Shows `<time data-local>` in the browser's zone (the server writes UTC).
const JS: &str = r#"
for (const t of document.querySelectorAll('time[data-local]')) {
  const d = new Date(t.getAttribute('datetime'));
  if (!isNaN(d)) t.textContent = d.toLocaleString([], {month:'short', day:'numeric', hour:'numeric', minute:'2-digit'});
}
"#;

fn page(title: &str, user: Option<(&str, &str)>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="robots" content="noindex";
                title { (title) " · Backstop" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    h1 { a href="/" { "Backstop leads" } }
                    @if let Some((name, csrf)) = user {
                        form method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            span.muted style="color:#cfd8e3;margin-right:8px" { (name) }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                (body)
                script { (PreEscaped(JS)) }
            }
        }
    }
}

fn html_response(status: StatusCode, m: Markup) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], m.into_string()).into_response()
}

fn message_page(status: StatusCode, title: &str, msg: &str) -> Response {
    html_response(
        status,
        page(
            title,
            None,
            html! { main { section { h2 { (title) } p { (msg) } p { a href="/" { "Back to the inbox" } } } } },
        ),
    )
}

fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

// ---- what a lead shows -------------------------------------------------

fn transcript(a: Option<&Answer>) -> Option<&str> {
    a?.transcript.as_ref().map(|t| t.text.trim()).filter(|t| !t.is_empty())
}

/// The caller's name: what they said (transcribed), else the caller ID's name.
fn caller_name(l: &Lead) -> String {
    transcript(l.answers.get("name"))
        .map(str::to_string)
        .or_else(|| l.caller.display_name.clone().filter(|n| !n.trim().is_empty()))
        .unwrap_or_else(|| "Unknown caller".into())
}

/// The number to call back: the one keyed for it, else the caller's.
fn callback_number(l: &Lead) -> Option<String> {
    l.answers
        .get("callback_number")
        .and_then(|a| a.value.clone())
        .filter(|v| v.chars().filter(char::is_ascii_digit).count() >= 3)
        .or_else(|| l.caller.number.clone())
}

/// (shown, `tel:` target): `+1 555-123-4567` and `+15551234567` for NANP numbers.
fn phone(n: &str) -> (String, String) {
    match backstop_core::route::line::nanp_national(n) {
        Some(d) => (format!("+1 {}-{}-{}", &d[..3], &d[3..6], &d[6..]), format!("+1{d}")),
        None => {
            let tel: String = n.chars().filter(|c| c.is_ascii_digit() || *c == '+').collect();
            (n.to_string(), tel)
        }
    }
}

/// The need in the caller's words, or why not.
fn need(l: &Lead) -> String {
    match l.answers.get("need") {
        Some(a) => transcript(Some(a)).map(str::to_string).unwrap_or_else(|| "no transcript".into()),
        None => l.summary.clone(),
    }
}

fn need_p(l: &Lead) -> Markup {
    let text = need(l);
    html! { p class=(if text == "no transcript" { "need none" } else { "need" }) { (text) } }
}

fn urgency(l: &Lead) -> Option<String> {
    l.answers
        .get("urgency")
        .or_else(|| l.answers.values().find(|a| a.kind == AnswerKind::Menu))
        .and_then(|a| a.label.clone())
        .map(|s| s.replace('_', " "))
}

fn zip(l: &Lead) -> Option<String> {
    l.answers.get("zip").and_then(|a| a.value.clone())
}

/// "5 min ago", and the instant in UTC.
fn when(rfc3339: &str, now_ms: i64) -> Markup {
    let Ok(ts) = rfc3339.parse::<jiff::Timestamp>() else { return html! { (rfc3339) } };
    let secs = (now_ms / 1000 - ts.as_second()).max(0);
    let rel = match secs {
        0..60 => "just now".to_string(),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86400 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86400),
    };
    html! {
        span.when { (rel) } " · "
        time datetime=(rfc3339) data-local { (ts.strftime("%b %-d, %H:%M UTC")) }
    }
}

fn absolute(rfc3339: &str) -> Markup {
    match rfc3339.parse::<jiff::Timestamp>() {
        Ok(ts) => html! { time datetime=(rfc3339) data-local { (ts.strftime("%b %-d, %H:%M UTC")) } },
        Err(_) => html! { (rfc3339) },
    }
}

fn minutes(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..7200 => format!("{} min", secs / 60),
        _ => format!("{} h {} min", secs / 3600, secs / 60 % 60),
    }
}

fn badges(s: &StoredLead) -> Markup {
    html! {
        span class=(format!("badge {}", s.status.as_str())) { (s.status.as_str()) }
        @if s.urgent { span.badge.urgent { "urgent" } }
        @if s.lead.junk.is_junk { span.badge.junk { "junk" } }
    }
}

fn text_back(l: &Lead) -> Option<String> {
    let t = l.text_back.as_ref()?;
    let status = serde_json::to_value(t.status).ok()?.as_str()?.to_string();
    Some(match &t.reason {
        Some(r) => format!("text-back {status}: {r}"),
        None => format!("text-back {status}"),
    })
}

fn card(s: &StoredLead, now_ms: i64) -> Markup {
    let l = &s.lead;
    let number = callback_number(l).map(|n| phone(&n));
    html! {
        li class=(format!("lead {}", s.status.as_str())) data-lead=(l.id) {
            div.row {
                span.name { a href=(format!("/leads/{}", l.id)) { (caller_name(l)) } }
                (badges(s))
            }
            @if let Some((shown, tel)) = &number {
                a.tel href=(format!("tel:{tel}")) { "☎ " (shown) }
            } @else {
                div.muted { "number withheld" }
            }
            (need_p(l))
            div.meta {
                @if let Some(u) = urgency(l) { span.urgency { (u) } }
                @if let Some(z) = zip(l) { span { "ZIP " (z) } }
                span { "line " (l.line) }
                span { (when(&l.received_at, now_ms)) }
                @if let Some(t) = text_back(l) { span { (t) } }
            }
        }
    }
}

// ---- handlers -----------------------------------------------------------

fn params(raw: Option<&str>) -> HashMap<String, String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(raw.unwrap_or("")).unwrap_or_default().into_iter().collect()
}

const VIEWS: [(&str, &str); 6] = [
    ("open", "Open"),
    ("overdue", "Overdue"),
    ("urgent", "Urgent"),
    ("handled", "Handled"),
    ("junk", "Junk"),
    ("all", "All"),
];

pub async fn inbox(State(app): State<App>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let Some(session) = app.session(&headers) else { return to_login() };
    let p = params(raw.as_deref());
    let view_name = p.get("view").map(String::as_str).unwrap_or("open").to_string();
    let Some(view) = parse_view(&view_name) else {
        return message_page(StatusCode::BAD_REQUEST, "No such view", "Pick one of the tabs.");
    };
    let page_no: u32 = p.get("page").and_then(|n| n.parse().ok()).filter(|n| (1..=100_000).contains(n)).unwrap_or(1);
    let q = Query {
        view,
        line: p.get("line").filter(|l| !l.is_empty()).cloned(),
        limit: PAGE,
        offset: (page_no - 1) * PAGE,
    };
    let now = now_ms();
    let q2 = q.clone();
    let (leads, total) = match app.db(move |c| Ok((store::list(c, &q2, now)?, store::count(c, &q2, now)?))).await {
        Ok(r) => r,
        Err(_) => {
            return message_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Error",
                "The lead store failed; see the agent's log.",
            );
        }
    };
    let link = |page: u32| {
        let mut s = format!("/?view={view_name}&page={page}");
        if let Some(l) = &q.line {
            s.push_str("&line=");
            s.push_str(&super::links::url_escape(l));
        }
        s
    };
    let body = html! {
        nav.tabs {
            @for (v, label) in VIEWS {
                a class=@if v == view_name { "on" } href=(format!("/?view={v}")) { (label) }
            }
        }
        main {
            p.muted { (total) " " (if total == 1 { "lead" } else { "leads" }) }
            @if leads.is_empty() {
                section { p { (empty_text(view)) } }
            }
            ul.leads {
                @for l in &leads { (card(l, now)) }
            }
            div.pager {
                @if page_no > 1 { a href=(link(page_no - 1)) { "← Newer" } } @else { span {} }
                @if u64::from(page_no) * u64::from(PAGE) < total { a href=(link(page_no + 1)) { "Older →" } }
            }
        }
    };
    let title = VIEWS.iter().find(|(v, _)| *v == view_name).map(|(_, t)| *t).unwrap_or("Leads");
    html_response(StatusCode::OK, page(title, Some((&session.user, &session.csrf)), body))
}

fn empty_text(view: View) -> &'static str {
    match view {
        View::Open => "Nothing waiting: every caller has been called back.",
        View::Overdue => "Nothing overdue.",
        View::Urgent => "No urgent leads waiting.",
        View::Handled => "Nothing handled yet.",
        View::Junk => "No junk calls.",
        View::All => "No leads yet.",
    }
}

pub async fn detail(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let Some(session) = app.session(&headers) else { return to_login() };
    let now = now_ms();
    let id2 = id.clone();
    let r = app
        .db(move |c| match store::get(c, &id2, now)? {
            Some(l) => Ok(Some((l, store::events(c, &id2)?))),
            None => Ok(None),
        })
        .await;
    let (s, events) = match r {
        Ok(Some(x)) => x,
        Ok(None) => return message_page(StatusCode::NOT_FOUND, "No such lead", "It may have been a mistyped link."),
        Err(_) => {
            return message_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Error",
                "The lead store failed; see the agent's log.",
            );
        }
    };
    let l = &s.lead;
    let now_s = now / 1000;
    let number = callback_number(l).map(|n| phone(&n));
    let cb = l.callback.as_ref();
    let body = html! {
        main {
            p { a href="/" { "← Inbox" } }
            section class=(format!("lead-detail {}", s.status.as_str())) {
                div.row { span.name { (caller_name(l)) } (badges(&s)) }
                @if let Some((shown, tel)) = &number {
                    a.tel href=(format!("tel:{tel}")) { "☎ " (shown) }
                }
                (need_p(l))
                @if !l.summary.is_empty() { p.muted { (l.summary) } }
                div.meta {
                    @if let Some(u) = urgency(l) { span.urgency { (u) } }
                    @if let Some(z) = zip(l) { span { "ZIP " (z) } }
                    span { "line " (l.line) }
                    span { (when(&l.received_at, now)) }
                }
            }
            section {
                h2 { "Callback" }
                dl {
                    dt { "Status" } dd { (s.status.as_str()) }
                    @if let Some(cb) = cb {
                        dt { "Due" } dd.when { (absolute(&cb.due_at)) }
                        @if let Some(at) = &cb.handled_at { dt { "Handled" } dd { (absolute(at)) } }
                        @if let Some(by) = &cb.handled_by { dt { "By" } dd { (by) } }
                        @if let Some(t) = cb.time_to_callback_secs { dt { "Time to callback" } dd.ttc { (minutes(t)) } }
                        @if let Some(n) = &cb.note { dt { "Note" } dd { (n) } }
                        @if cb.reminders > 0 { dt { "Reminders" } dd { (cb.reminders) } }
                    }
                    @if let Some(t) = text_back(l) { dt { "Text-back" } dd { (t) } }
                }
                @if s.status == LeadStatus::Handled {
                    form method="post" action=(format!("/leads/{}/reopen", l.id)) {
                        input type="hidden" name="csrf" value=(session.csrf);
                        button.secondary type="submit" { "Reopen" }
                    }
                } @else {
                    form method="post" action=(format!("/leads/{}/handled", l.id)) {
                        input type="hidden" name="csrf" value=(session.csrf);
                        label for="note" .muted { "Note (optional)" }
                        textarea id="note" name="note" rows="2" maxlength="2000" {}
                        button.primary #called-back type="submit" { "Called back" }
                    }
                }
            }
            section {
                h2 { "Answers" }
                @for (step, a) in &l.answers {
                    div.answer {
                        div { strong { (step.replace('_', " ")) } " " span.muted { (a.status.as_str()) } }
                        @match a.kind {
                            AnswerKind::Voice => {
                                div { (transcript(Some(a)).unwrap_or("no transcript")) }
                            }
                            _ => {
                                div { (a.label.clone().or_else(|| a.value.clone()).unwrap_or_else(|| "—".into())) }
                            }
                        }
                        @if let Some(f) = &a.recording {
                            audio controls preload="none" src=(app.links.path(f, now_s)) {}
                        }
                    }
                }
                @if l.answers.is_empty() { p.muted { "The caller answered nothing." } }
            }
            @if let Some(f) = &l.recording {
                section {
                    h2 { "Whole call" }
                    audio controls preload="none" src=(app.links.path(f, now_s)) {}
                }
            }
            section {
                h2 { "Call" }
                dl {
                    @if let Some(n) = &l.caller.display_name { dt { "Caller ID" } dd { (n) } }
                    @if let Some(n) = &l.caller.number { dt { "From" } dd { (n) } }
                    @if let Some(n) = &l.called.number { dt { "To" } dd { (n) } }
                    dt { "Received" } dd { (absolute(&l.received_at)) }
                    @if let Some(ms) = l.duration_ms { dt { "Length" } dd { (ms / 1000) " s" } }
                    dt { "Outcome" } dd { (l.outcome.to_string()) }
                }
            }
            section {
                h2 { "Events" }
                ol.events {
                    @for e in &events { li { (e.kind.as_str()) " · " (absolute(&e.created_at)) } }
                }
            }
        }
    };
    html_response(StatusCode::OK, page(&caller_name(l), Some((&session.user, &session.csrf)), body))
}

/// A form body as pairs (an unreadable body is an empty form: its CSRF check fails).
fn form(body: &[u8]) -> HashMap<String, String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).unwrap_or_default().into_iter().collect()
}

/// The session's CSRF token in the form's `csrf` or the `X-CSRF-Token` header.
fn csrf_ok(expected: &str, headers: &HeaderMap, form: &HashMap<String, String>) -> bool {
    let given = form
        .get("csrf")
        .map(String::as_str)
        .or_else(|| headers.get("x-csrf-token").and_then(|v| v.to_str().ok()))
        .unwrap_or("");
    ct_eq(given.as_bytes(), expected.as_bytes())
}

fn csrf_refused() -> Response {
    message_page(
        StatusCode::FORBIDDEN,
        "Refused",
        "The form was missing its security token. Reload the page and try again.",
    )
}

pub async fn handled(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    lead_post(app, headers, id, body, true).await
}

pub async fn reopen(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    lead_post(app, headers, id, body, false).await
}

async fn lead_post(app: App, headers: HeaderMap, id: String, body: Bytes, handle: bool) -> Response {
    let path = format!("/leads/{id}/{}", if handle { "handled" } else { "reopen" });
    let Some(session) = app.session(&headers) else {
        audit("anonymous", &path, &id, "401");
        return to_login();
    };
    let f = form(&body);
    if !csrf_ok(&session.csrf, &headers, &f) {
        audit(&session.user, &path, &id, "403 csrf");
        return csrf_refused();
    }
    let r = if handle {
        store::mark_handled(&app.publisher, &id, &session.user, clean_note(f.get("note").cloned())).await
    } else {
        store::reopen(&app.publisher, &id, &session.user).await
    };
    match r {
        Ok(_) => {
            audit(&session.user, &path, &id, "ok");
            Redirect::to(&format!("/leads/{id}")).into_response()
        }
        Err(StoreError::NotFound(_)) => {
            audit(&session.user, &path, &id, "404");
            message_page(StatusCode::NOT_FOUND, "No such lead", "It may have been a mistyped link.")
        }
        Err(e) => {
            audit(&session.user, &path, &id, "500");
            tracing::error!(lead = id.as_str(), path = path.as_str(), "marking a lead: {e}");
            message_page(StatusCode::INTERNAL_SERVER_ERROR, "Error", "It could not be recorded; see the agent's log.")
        }
    }
}

// ---- login ----------------------------------------------------------------

fn login_page(status: StatusCode, app: &App, error: Option<&str>, name: &str) -> Response {
    let token = auth::random_token();
    let m = page(
        "Log in",
        None,
        html! {
            form.login method="post" action="/login" {
                h2 { "Log in" }
                @if let Some(e) = error { div.error role="alert" { (e) } }
                input type="hidden" name="csrf" value=(token);
                label for="user" { "User" }
                input #user type="text" name="user" value=(name) autocomplete="username" autocapitalize="none" required;
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="current-password" required;
                button.primary type="submit" { "Log in" }
            }
        },
    );
    let mut res = html_response(status, m);
    let cookie = app.auth.cookie(app.auth.login_cookie(), &token, Some(std::time::Duration::from_secs(3600)));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

pub async fn login_form(State(app): State<App>, headers: HeaderMap) -> Response {
    if app.session(&headers).is_some() {
        return Redirect::to("/").into_response();
    }
    login_page(StatusCode::OK, &app, None, "")
}

/// A login name that could be a user's: at most 64 bytes, no control
/// characters (what `[[http.user]] name` allows). Others are refused before
/// the limiter or argon2 sees them.
fn plausible_name(name: &str) -> bool {
    name.len() <= 64 && !name.chars().any(char::is_control)
}

pub async fn login(
    State(app): State<App>,
    Extension(client): Extension<super::Client>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let name = f.get("user").map(|s| s.trim().to_string()).unwrap_or_default();
    let password = f.get("password").cloned().unwrap_or_default();
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| auth::cookie_value(c, app.auth.login_cookie()))
        .unwrap_or("");
    let given = f.get("csrf").map(String::as_str).unwrap_or("");
    if cookie.is_empty() || !ct_eq(cookie.as_bytes(), given.as_bytes()) {
        audit(&name, "/login", "", "403 csrf");
        return login_page(StatusCode::FORBIDDEN, &app, Some("The form expired. Try again."), &name);
    }
    if !plausible_name(&name) {
        let shown: String = name.chars().take(64).collect();
        audit(&shown, "/login", "", "401 bad name");
        return login_page(StatusCode::UNAUTHORIZED, &app, Some("Wrong user name or password."), "");
    }
    let creds = app.auth.creds();
    let hash = creds.users.get(&name).cloned();
    let ip_key = auth::RateLimiter::address_key(client.0);
    let name_key = app.auth.limiter.name_key(&name, hash.is_some());
    // Counted before the password is checked, so that requests in flight
    // together cannot all pass.
    let attempt = match app.auth.limiter.begin(&[&ip_key, &name_key], Instant::now()) {
        Ok(a) => a,
        Err(wait) => {
            audit(&name, "/login", "", "429");
            tracing::warn!(user = ?name, client = %client.0, "login refused: too many failures");
            let mut res = login_page(
                StatusCode::TOO_MANY_REQUESTS,
                &app,
                Some(&format!("Too many failed logins. Try again in {} minutes.", wait.div_ceil(60))),
                &name,
            );
            if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return res;
        }
    };
    let ok = {
        let _slot = app.auth.verify_slots.acquire().await;
        let phc = hash.clone().unwrap_or_else(|| auth::DUMMY_HASH.to_string());
        let known = hash.is_some() && !password.is_empty();
        tokio::task::spawn_blocking(move || auth::verify_password(&password, &phc) && known).await.unwrap_or(false)
    };
    match (ok, hash) {
        (true, Some(hash)) => {
            attempt.succeeded(&name_key);
            let (id, _) = app.auth.sessions.create(&name, &hash, app.auth.session_ttl);
            audit(&name, "/login", "", "ok");
            let mut res = Redirect::to("/").into_response();
            let h = res.headers_mut();
            for c in [
                app.auth.cookie(app.auth.session_cookie(), &id, Some(app.auth.session_ttl)),
                app.auth.cookie(app.auth.login_cookie(), "", Some(std::time::Duration::ZERO)),
            ] {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    h.append(header::SET_COOKIE, v);
                }
            }
            res
        }
        _ => {
            attempt.failed();
            audit(&name, "/login", "", "401");
            login_page(StatusCode::UNAUTHORIZED, &app, Some("Wrong user name or password."), &name)
        }
    }
}

pub async fn logout(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(session) = app.session(&headers) else { return to_login() };
    if !csrf_ok(&session.csrf, &headers, &form(&body)) {
        audit(&session.user, "/logout", "", "403 csrf");
        return csrf_refused();
    }
    if let Some(id) = app.session_id(&headers) {
        app.auth.sessions.remove(&id);
    }
    audit(&session.user, "/logout", "", "ok");
    let mut res = Redirect::to("/login").into_response();
    let c = app.auth.cookie(app.auth.session_cookie(), "", Some(std::time::Duration::ZERO));
    if let Ok(v) = HeaderValue::from_str(&c) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_csrf() {
        assert_eq!(phone("5551234567"), ("+1 555-123-4567".into(), "+15551234567".into()));
        assert_eq!(phone("+15551234567"), ("+1 555-123-4567".into(), "+15551234567".into()));
        assert_eq!(phone("+44 20 7946 0000"), ("+44 20 7946 0000".into(), "+442079460000".into()));
        let mut h = HeaderMap::new();
        let mut f = HashMap::new();
        assert!(!csrf_ok("tok", &h, &f), "missing");
        f.insert("csrf".to_string(), "tok".to_string());
        assert!(csrf_ok("tok", &h, &f));
        f.insert("csrf".to_string(), "tik".to_string());
        assert!(!csrf_ok("tok", &h, &f), "wrong");
        f.clear();
        h.insert("x-csrf-token", HeaderValue::from_static("tok"));
        assert!(csrf_ok("tok", &h, &f), "the header");
        assert_eq!(form(b"csrf=a%20b&note=hi+there").get("note").map(String::as_str), Some("hi there"));
        assert!(!form(b"\xff\xfe").contains_key("csrf"));
    }

    #[test]
    fn the_golden_lead_reads_well() {
        let e: crate::sink::event::Event =
            serde_json::from_str(include_str!("../../tests/golden/lead.completed.json")).unwrap();
        let l = &e.lead;
        assert_eq!(caller_name(l), "Jane Doe");
        assert_eq!(callback_number(l).as_deref(), Some("5551234567"));
        assert_eq!(need(l), "no transcript");
        assert_eq!(urgency(l).as_deref(), Some("emergency"));
        assert_eq!(zip(l).as_deref(), Some("94110"));
        let s = StoredLead { lead: l.clone(), status: LeadStatus::Overdue, urgent: true };
        let html = card(&s, 1_800_000_000_000).into_string();
        assert!(html.contains("lead overdue") && html.contains("tel:+15551234567") && html.contains("badge urgent"));
    }
}
