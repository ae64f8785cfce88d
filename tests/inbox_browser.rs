//! The inbox in a real browser: Debian's chromium, headless, driven through
//! chromedriver by the W3C WebDriver protocol. An owner logs in, sees the
//! lead a real SIPp call left (name, number, urgency), plays its recording
//! (the audio element fetches the signed link: 200 or 206), clicks "Called
//! back", and finds the lead under Handled. A 390×844 screenshot of the
//! inbox is saved in the target directory (`artifacts/inbox-390.png`), and
//! copied to `docs/inbox-390.png` with `BACKSTOP_UPDATE_SCREENSHOT=1`.
//!
//! WebDriver is spoken here directly (JSON over the tests' small HTTP
//! client): fantoccini, built without TLS, offers no way to make a client
//! without naming hyper-util's connector, which is not a dependency.
//!
//! Without chromium and chromedriver the tests fail, unless
//! `BACKSTOP_SKIP_BROWSER=1` is set (scripts/test.sh installs both). The
//! report of real SIPp calls is opened in the browser by tests/report.rs.

mod common;
mod web;

use common::*;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use web::browser::*;
use web::*;

const TOKEN: &str = "browser-test-token-0123456789abcdef";

/// Where the screenshot goes: `<target dir>/artifacts/inbox-390.png`.
fn artifacts() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(&tmp).join("artifacts")
}

#[test]
fn an_owner_logs_in_plays_the_recording_and_marks_the_lead_called_back() {
    let Some(chromedriver) = browser() else { return };
    let port = http_port();
    let extra = format!("[sip]\nanswer_after_ms = 100\n{}", http_config(port, &[("api", TOKEN)]));
    let agent = AgentProc::start_default_script("inbox-browser", &extra);
    let base = format!("http://127.0.0.1:{port}");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    place_speech_call(&agent, "inbox-browser-call");
    let id = agent.wait_leads(1, Duration::from_secs(30))[0]["id"].as_str().unwrap().to_string();
    // The lead store commits with the events: wait until the API has it.
    let auth = format!("Bearer {TOKEN}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(addr, &format!("/api/leads/{id}"), &[("Authorization", &auth)]).status != 200 {
        assert!(Instant::now() < deadline, "the lead never reached the store");
        std::thread::sleep(Duration::from_millis(100));
    }

    let dir = scratch_dir("inbox-browser-chromium");
    let driver = Driver::start(&chromedriver, &dir);
    let s = Session::new(&driver, &dir.join("profile"));

    // Not logged in: the inbox sends the browser to the login form.
    s.goto(&format!("{base}/"));
    assert!(s.url().ends_with("/login"), "{}", s.url());
    s.type_in("#user", USER);
    s.type_in("#password", PASSWORD);
    s.click("button[type=submit]");

    // The lead: name, number, urgency.
    let card = format!("li[data-lead='{id}']");
    let text = s.wait_text(&card, |t| t.contains("Pat Caller"));
    assert_eq!(s.url(), format!("{base}/"));
    assert!(text.contains("Pat Caller"), "{text}");
    assert!(text.contains("+1 555-123-4567"), "{text}");
    assert!(text.contains("emergency") && text.to_lowercase().contains("urgent"), "{text}");
    let tel = s.js(&format!("return document.querySelector(\"{card} a.tel\").getAttribute('href')"));
    assert_eq!(tel, "tel:+15551234567");
    let width = s.js("return [window.innerWidth, document.documentElement.scrollWidth]");
    assert_eq!(width, json!([390, 390]), "the page fits a 390-px screen without sideways scrolling");
    let png = s.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::create_dir_all(artifacts()).unwrap();
    std::fs::write(artifacts().join("inbox-390.png"), &png).unwrap();
    eprintln!("screenshot: {}", artifacts().join("inbox-390.png").display());
    if std::env::var_os("BACKSTOP_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(manifest_dir().join("docs")).unwrap();
        std::fs::write(manifest_dir().join("docs/inbox-390.png"), &png).unwrap();
    }

    // The detail page: play the recording of the need.
    s.click(&format!("{card} .name a"));
    s.wait_text("main", |t| t.contains("Called back"));
    assert!(s.url().ends_with(&format!("/leads/{id}")), "{}", s.url());
    let width = s.js("return [window.innerWidth, document.documentElement.scrollWidth]");
    assert_eq!(width, json!([390, 390]), "the lead's page fits too");
    std::fs::write(artifacts().join("lead-390.png"), s.screenshot()).unwrap();
    let played = s.js_async(
        "const done = arguments[arguments.length - 1];
         const a = document.querySelectorAll('audio')[1] || document.querySelector('audio');
         a.play().then(() => setTimeout(() => done({ready: a.readyState, error: a.error && a.error.code,
             src: a.currentSrc, time: a.currentTime}), 500))
          .catch(e => done({failed: String(e), error: a.error && a.error.code}));",
    );
    assert!(played["failed"].is_null() && played["error"].is_null(), "{played}");
    assert!(played["ready"].as_u64().unwrap() >= 2, "the audio loaded: {played}");
    assert!(
        played["src"].as_str().unwrap().contains("/recordings/") && played["src"].as_str().unwrap().contains("sig=")
    );
    let statuses = s.js("return performance.getEntriesByType('resource')
            .filter(e => e.name.includes('/recordings/')).map(e => e.responseStatus)");
    let statuses: Vec<u64> = statuses.as_array().unwrap().iter().filter_map(Value::as_u64).collect();
    assert!(!statuses.is_empty() && statuses.iter().all(|s| *s == 200 || *s == 206), "{statuses:?}");
    assert!(
        agent
            .log()
            .lines()
            .any(|l| l.contains("recording served") && (l.contains("status=206") || l.contains("status=200"))),
        "the agent served the recording"
    );

    // Called back, with a note: the lead is handled, and under Handled.
    s.type_in("#note", "Booked for Tuesday");
    s.click("#called-back");
    let detail = s.wait_text("main", |t| t.contains("Booked for Tuesday"));
    assert!(s.url().ends_with(&format!("/leads/{id}")), "{}", s.url());
    assert!(detail.contains("handled") && detail.contains(USER), "{detail}");
    assert!(detail.contains("Time to callback") && detail.contains("Reopen"), "{detail}");
    // Back in the inbox it is gone from Open, and under Handled.
    s.click("main a[href='/']");
    s.wait_text("main", |t| t.contains("Nothing waiting"));
    s.click("nav.tabs a[href='/?view=handled']");
    s.wait_text(&card, |t| t.contains("Pat Caller") && t.to_lowercase().contains("handled"));
}

/// A week of leads (Monday 2026-11-23 to Sunday 2026-11-29, in Chicago)
/// for the report's page, from the golden lead: busier mid-week and around
/// lunch, every kind of end, some urgent, some junk, some called back, and
/// one line that is not a lead at all.
fn a_week_of_leads() -> String {
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(manifest_dir().join("tests/golden/lead.completed.json")).unwrap(),
    )
    .unwrap();
    let chicago = jiff::tz::TimeZone::get("America/Chicago").unwrap();
    let at = |t: jiff::Timestamp| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let mut out = String::new();
    let per_day = [6, 8, 11, 9, 7, 3, 2];
    let mut n: i64 = 0;
    for (day, calls) in per_day.iter().enumerate() {
        for k in 0..*calls {
            n += 1;
            let mut l = golden["lead"].clone();
            let hour = [9, 12, 12, 13, 10, 16, 17, 8, 11, 15, 19][(k + day) % 11];
            let minute = ((k * 7 + day * 11) % 60) as i8;
            let received = jiff::civil::date(2026, 11, 23 + day as i8)
                .at(hour, minute, 0, 0)
                .to_zoned(chicago.clone())
                .unwrap()
                .timestamp();
            l["id"] = json!(format!("week-{n}"));
            l["received_at"] = json!(at(received));
            l["answered_at"] = json!(at(received + jiff::SignedDuration::from_millis(1000 + (n % 3) * 700)));
            let answers = l["answers"].as_object_mut().unwrap();
            match n % 8 {
                0 => {
                    answers.clear();
                    l["answered_at"] = Value::Null;
                    l["outcome"] = json!("hung_up_while_ringing");
                }
                1 => {
                    answers.clear();
                    l["outcome"] = json!("hung_up_during_greeting");
                }
                2 => {
                    answers.retain(|k, _| k == "name");
                    l["outcome"] = json!("hung_up_during_need");
                }
                3 if n % 3 == 0 => {
                    answers.clear();
                    l["answered_at"] = Value::Null;
                    l["outcome"] = json!("declined");
                    l["junk"] = json!({"is_junk": true, "reasons": ["blocklisted"]});
                }
                _ => {
                    if n % 4 != 1 {
                        answers.remove("urgency");
                    }
                }
            }
            if l["junk"]["is_junk"] != true {
                let due = received + jiff::SignedDuration::from_mins(15);
                let mut clock = json!({"due_at": at(due), "reminders": 0, "status": "new"});
                if n % 3 != 0 {
                    let secs = 300 + (n % 5) * 540;
                    clock["status"] = json!("handled");
                    clock["handled_at"] = json!(at(received + jiff::SignedDuration::from_secs(secs)));
                    clock["time_to_callback_secs"] = json!(secs);
                }
                l["callback"] = clock;
            }
            out.push_str(&l.to_string());
            out.push('\n');
        }
        if day == 2 {
            out.push_str("{\"this is\": \"not a lead\"\n");
        }
    }
    out
}

#[test]
fn the_report_page_has_its_charts_and_headline_figures_on_a_phone() {
    let Some(chromedriver) = browser() else { return };
    let dir = scratch_dir("report-browser");
    std::fs::write(dir.join("leads.jsonl"), a_week_of_leads()).unwrap();
    let page = dir.join("report.html");
    let out = Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args([
            "report",
            "--format",
            "json",
            "--tz",
            "America/Chicago",
            "--since",
            "2026-11-23",
            "--until",
            "2026-11-29",
        ])
        .arg("--leads")
        .arg(dir.join("leads.jsonl"))
        .arg("--html")
        .arg(&page)
        .arg("--data-dir")
        .arg(dir.join("no-data"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning: 1 unreadable line(s)"), "{stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Every lead of the week is inside the window (dates in Chicago).
    assert_eq!(r["missed_calls"], 46, "{r:#}");
    assert_eq!(r["by_weekday"][2]["calls"], 11, "Wednesday, in Chicago: {r:#}");

    let driver = Driver::start(&chromedriver, &dir);
    let s = Session::new(&driver, &dir.join("profile"));
    s.goto(&format!("file://{}", page.display()));
    s.wait_text("h1", |t| t.contains("Missed-call report"));

    // The headline figures, as the report computed them.
    let figures = s.js("return Object.fromEntries([...document.querySelectorAll('dd[data-figure]')]
            .map(d => [d.dataset.figure, [d.dataset.value, d.innerText]]))");
    let value = |name: &str| figures[name][0].as_str().unwrap_or_else(|| panic!("no {name}: {figures}")).to_string();
    assert_eq!(value("missed_calls"), r["missed_calls"].to_string());
    assert_eq!(figures["missed_calls"][1], r["missed_calls"].to_string());
    assert_eq!(value("answered"), r["answered"].to_string());
    assert_eq!(value("completed"), r["completed"].to_string());
    assert_eq!(value("urgent"), r["urgent"]["calls"].to_string());
    assert_eq!(value("junk"), r["junk"]["calls"].to_string());
    assert_eq!(value("time_to_answer_median_ms"), r["time_to_answer_ms"]["median"].to_string());
    // From leads.jsonl the callbacks are unknown: no figure, no red alert, and it says why.
    assert_eq!(r["callback"]["overdue"], Value::Null);
    assert_eq!(value("callback_median_secs"), "");
    assert_eq!(value("overdue"), "");
    assert!(figures["overdue"][1].as_str().unwrap().contains("unknown"), "{figures}");
    assert_eq!(s.js("return document.querySelectorAll('dd.alert[data-figure=overdue]').length"), 0);
    assert!(figures["junk"][1].as_str().unwrap().contains('%'), "{figures}");

    // Three inline SVG charts, drawn: a bar per busy hour, per weekday with calls, per funnel stage reached.
    let charts = s.js("return Object.fromEntries([...document.querySelectorAll('figure[data-chart]')].map(f => {
            const svg = f.querySelector('svg');
            return [f.dataset.chart, svg ? {bars: svg.querySelectorAll('rect[fill=\"#1F6FB2\"]').length,
                                           width: svg.getBoundingClientRect().width} : null];
        }))");
    let hours_with_calls = r["by_hour"].as_array().unwrap().iter().filter(|n| n.as_u64() > Some(0)).count();
    let days_with_calls = r["by_weekday"].as_array().unwrap().iter().filter(|d| d["calls"].as_u64() > Some(0)).count();
    let stages = r["funnel"].as_array().unwrap().iter().filter(|s| s["calls"].as_u64() > Some(0)).count();
    assert_eq!(charts["by_hour"]["bars"], hours_with_calls, "{charts}");
    assert_eq!(charts["by_weekday"]["bars"], days_with_calls, "{charts}");
    assert_eq!(charts["funnel"]["bars"], stages, "{charts}");
    for c in ["by_hour", "by_weekday", "funnel"] {
        let w = charts[c]["width"].as_f64().unwrap();
        assert!((300.0..=390.0).contains(&w), "{c} is {w} px wide on a 390-px screen");
    }
    let outcomes = s.js("return document.querySelectorAll('table[data-table=outcomes] tbody tr').length");
    assert_eq!(outcomes, r["outcomes"].as_array().unwrap().len());
    let width = s.js("return [window.innerWidth, document.documentElement.scrollWidth]");
    let wide = s
        .js("return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 390)
            .slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))");
    assert_eq!(width, json!([390, 390]), "the report fits a 390-px screen without sideways scrolling: {wide}");

    let png = full_page_png(&s);
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::create_dir_all(artifacts()).unwrap();
    std::fs::write(artifacts().join("report-390.png"), &png).unwrap();
    eprintln!("screenshot: {}", artifacts().join("report-390.png").display());
    if std::env::var_os("BACKSTOP_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(manifest_dir().join("docs")).unwrap();
        std::fs::write(manifest_dir().join("docs/report-390.png"), &png).unwrap();
    }
    // And on a desktop: two charts side by side, still no sideways scrolling.
    cdp(
        &s,
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
    );
    // (innerWidth counts the vertical scrollbar, the document's width does not.)
    let width = s.js("return [window.innerWidth, document.documentElement.scrollWidth]");
    assert_eq!(width[0], 1280, "{width}");
    assert!(width[1].as_u64().unwrap() <= 1280, "sideways scrolling on a desktop: {width}");
    let side_by_side = s
        .js("const [a, b] = [...document.querySelectorAll('figure[data-chart]')].map(f => f.getBoundingClientRect());
         return Math.abs(a.top - b.top) < 1 && b.left > a.right");
    assert_eq!(side_by_side, true);
    std::fs::write(artifacts().join("report-desktop.png"), full_page_png(&s)).unwrap();
}
