//! `backstop report` on a day of real calls: ten SIPp callers call the
//! agent at once (a real process, a short script of short prompts), each
//! with a known end: two complete the intake by voice and keypad (one an
//! emergency), two hang up during the greeting, one while it rings
//! (CANCEL), one during each of name, need, callback number and urgency, and one
//! is a blocklisted number (603). One lead is then marked called back with
//! `backstop leads done`. The report is run as the binary, from the lead
//! store and from `leads.jsonl`, as JSON, CSV and text, and every count is
//! checked exactly.
//!
//! SIPp's pcap replay of the callers' speech needs root (as tests/intake.rs).

mod common;
mod web;

use common::pcap::CallerAudio;
use common::scenario::*;
use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Each prompt's length: the greeting long enough to hang up in, the rest short.
const GREETING_MS: u64 = 1_000;
const PROMPT_MS: u64 = 500;
/// How long each call rings before the agent answers.
const RING_MS: u64 = 1_000;
const BLOCKED: &str = "+15550000666";

/// A prompt: a 440 Hz tone (what it says does not matter here, only how long it lasts).
fn write_prompt(dir: &Path, name: &str, ms: u64) {
    let spec =
        hound::WavSpec { channels: 1, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(dir.join(format!("{name}.wav")), spec).unwrap();
    for i in 0..ms * 8 {
        let t = i as f64 / 8000.0;
        w.write_sample((8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16).unwrap();
    }
    w.finalize().unwrap();
}

fn config(prompts: &Path, rtp: (u16, u16)) -> String {
    format!(
        r#"
[prompts]
dir = "{prompts}"
[rtp]
port_min = {}
port_max = {}
[log]
level = "debug"
[sip]
answer_after_ms = {RING_MS}
[callback]
# Due 3 s after the call came in: every open lead is overdue by the time the report runs.
due_minutes_open = 0.05
[junk]
action = "reject"
block = ["{BLOCKED}"]

[[step]]
name = "greeting"
kind = "play"
prompt = "greeting"
[[step]]
name = "name"
kind = "ask"
prompt = "name"
end_silence_ms = 600
[[step]]
name = "need"
kind = "ask"
prompt = "need"
end_silence_ms = 600
[[step]]
name = "callback_number"
kind = "digits"
prompt = "callback_number"
validate = "phone"
[[step]]
name = "urgency"
kind = "menu"
prompt = "urgency"
options."1" = {{ label = "emergency" }}
options."2" = {{ label = "this_week" }}
[[step]]
name = "goodbye"
kind = "goodbye"
prompt = "goodbye"
"#,
        rtp.0,
        rtp.1,
        prompts = prompts.display()
    )
}

fn speech(name: &str) -> Vec<i16> {
    backstop::media_files::load_prompt(name, &manifest_dir().join("tests/fixtures/speech").join(name)).unwrap().pcm
}

fn play_pcap(path: &Path) -> String {
    format!("  <nop><action><exec play_pcap_audio=\"{}\"/></action></nop>\n", path.display())
}

/// What a caller does after the call is answered and acknowledged.
enum Caller {
    /// CANCEL while it rings.
    Cancel,
    /// Hang up (BYE) this long after the ACK, silent.
    HangUpAfter(u64),
    /// Play this audio from 200 ms after the ACK, then hang up `bye_after` ms after it started,
    /// or wait for the agent's BYE.
    Speak { audio: CallerAudio, bye_after: Option<u64> },
    /// A blocklisted number: 603.
    Blocked,
}

/// The caller's side: name at 2.0 s, need at 5.0 s (each well after its
/// question ends at the agent's pace), then `keys` at 8.5 s and `menu` at 11.8 s.
fn answers(keys: Option<&str>, menu: Option<&str>) -> CallerAudio {
    let mut audio = CallerAudio::new(101);
    audio.silence_until(2_000).audio(&speech("name.wav"));
    audio.silence_until(5_000).audio(&speech("need_first.wav"));
    if let Some(k) = keys {
        audio.silence_until(8_500).digits(k);
    }
    if let Some(m) = menu {
        audio.silence_until(11_800).digits(m);
    }
    audio.silence_until(16_000);
    audio
}

fn scenario_for(name: &str, caller: &Caller, dir: &Path) -> String {
    let pcap_offer = OFFER.replace("[rtp_port]", "[media_port]");
    match caller {
        Caller::Cancel => scenario(name, &[&invite("", OFFER), &cancel_after_ringing(200), ACK_NON_2XX]),
        Caller::HangUpAfter(ms) => scenario(name, &[&invite("", OFFER), ANSWERED, &ack(1), &pause(*ms), CALLER_BYE]),
        Caller::Speak { audio, bye_after } => {
            let pcap = dir.join("caller.pcap");
            audio.write(&pcap);
            let end = match bye_after {
                Some(ms) => format!("{}{CALLER_BYE}", pause(*ms)),
                None => AGENT_BYE.replace("timeout=\"40000\"", "timeout=\"25000\""),
            };
            scenario(name, &[&invite("", &pcap_offer), ANSWERED, &ack(1), &pause(200), &play_pcap(&pcap), &end])
        }
        Caller::Blocked => {
            let declined = "  <recv response=\"100\" optional=\"true\"/>\n  <recv response=\"180\" optional=\"true\"/>\n  <recv response=\"603\"/>\n";
            scenario(name, &[&invite("", OFFER), declined, ACK_NON_2XX]).replace("+15551230001", BLOCKED)
        }
    }
}

/// `backstop report ARGS` on the agent's config and data; stdout, or a panic with stderr.
fn report(agent: &AgentProc, args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_backstop"))
        .arg("report")
        .arg("--config")
        .arg(agent.dir.join("backstop.toml"))
        .arg("--data-dir")
        .arg(agent.dir.join("data"))
        .args(args)
        .output()
        .unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "backstop report {args:?} failed: {stderr}");
    (stdout, stderr)
}

fn counts(v: &Value) -> Vec<(String, u64)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| (c["key"].as_str().unwrap().to_string(), c["calls"].as_u64().unwrap()))
        .collect()
}

fn pairs(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

#[test]
fn the_report_of_a_day_of_real_calls_counts_every_outcome_exactly() {
    let started = Instant::now();
    let prompts = scratch_dir("report-prompts");
    write_prompt(&prompts, "greeting", GREETING_MS);
    for p in ["name", "need", "callback_number", "urgency", "goodbye"] {
        write_prompt(&prompts, p, PROMPT_MS);
    }
    let agent = AgentProc::start_config("report-day", &config(&prompts, (38400, 38598)), (38400, 38598));

    let callers: Vec<(&str, Caller)> = vec![
        ("completed-emergency", Caller::Speak { audio: answers(Some("5551234567#"), Some("1")), bye_after: None }),
        ("completed-this-week", Caller::Speak { audio: answers(Some("5551234567#"), Some("2")), bye_after: None }),
        ("ringing", Caller::Cancel),
        // The greeting plays for 1 s from the ACK.
        ("greeting-1", Caller::HangUpAfter(400)),
        ("greeting-2", Caller::HangUpAfter(600)),
        // The name's question ends at 1.5 s; the caller says nothing and leaves at 2.5 s.
        ("name", Caller::HangUpAfter(2_500)),
        // Says the name, hears the need's question, leaves before answering.
        ("need", Caller::Speak { audio: answers(None, None), bye_after: Some(4_600) }),
        // Says both, types three digits of the number, leaves.
        ("callback", Caller::Speak { audio: answers(Some("555"), None), bye_after: Some(9_800) }),
        // Says both, types the number, hears the urgency question, leaves without choosing.
        ("urgency", Caller::Speak { audio: answers(Some("5551234567#"), None), bye_after: Some(11_500) }),
        ("blocked", Caller::Blocked),
    ];
    let addr = agent.addr();
    let runs: Vec<(String, SippRun)> = std::thread::scope(|s| {
        let handles: Vec<_> = callers
            .iter()
            .map(|(name, caller)| {
                s.spawn(move || {
                    let dir = scratch_dir(&format!("report-sipp-{name}"));
                    let sc = scenario_for(name, caller, &dir);
                    (name.to_string(), run_sipp(&dir, &sc, addr, false, &[("rtp_port", "40100".into())]))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (name, run) in &runs {
        assert!(run.success, "SIPp {name} failed (exit {:?}): {}\nagent log:\n{}", run.code, run.errors, agent.log());
    }
    let leads = agent.wait_leads(callers.len(), Duration::from_secs(10));
    assert_eq!(leads.len(), callers.len(), "{leads:#?}");

    // The emergency caller is called back.
    let emergency = leads.iter().find(|l| l["answers"]["urgency"]["label"] == "emergency").expect("the emergency lead");
    let id = emergency["id"].as_str().unwrap();
    let done = Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args(["leads", "done", id, "--note", "booked", "--config"])
        .arg(agent.dir.join("backstop.toml"))
        .arg("--data-dir")
        .arg(agent.dir.join("data"))
        .output()
        .unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    // Every open lead past its due time (3 s after it came in).
    let latest =
        leads.iter().map(|l| l["received_at"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap()).max().unwrap();
    let due = latest + jiff::SignedDuration::from_millis(3_200);
    while jiff::Timestamp::now() < due {
        std::thread::sleep(Duration::from_millis(100));
    }

    let (json_out, stderr) =
        report(&agent, &["--format", "json", "--tz", "UTC", "--html", agent.dir.join("report.html").to_str().unwrap()]);
    assert!(!stderr.contains("warning"), "{stderr}");
    let r: Value = serde_json::from_str(&json_out).unwrap_or_else(|e| panic!("{e}: {json_out}"));
    assert_eq!(r["source"]["kind"], "store", "{r:#}");
    assert_eq!(r["source"]["skipped"], 0);
    check_counts(&r, &leads, true);

    // The same figures from leads.jsonl (which does not know the callback).
    let file = agent.dir.join("data/leads.jsonl");
    let (json_file, _) = report(&agent, &["--format", "json", "--tz", "UTC", "--leads", file.to_str().unwrap()]);
    let rf: Value = serde_json::from_str(&json_file).unwrap();
    assert_eq!(rf["source"]["kind"], "leads_file");
    check_counts(&rf, &leads, false);

    // A window that ends before the calls: nothing; a line no lead came on: nothing.
    let (empty, _) = report(&agent, &["--format", "json", "--tz", "UTC", "--until", "2020-01-01"]);
    assert_eq!(serde_json::from_str::<Value>(&empty).unwrap()["missed_calls"], 0);
    let (other, stderr) = report(&agent, &["--format", "json", "--line", "acme"]);
    assert_eq!(serde_json::from_str::<Value>(&other).unwrap()["missed_calls"], 0);
    assert!(stderr.contains("no line \"acme\""), "{stderr}");
    // Without --tz and with no [schedule] time_zone: the system's zone, and the report says so.
    assert_eq!(serde_json::from_str::<Value>(&other).unwrap()["time_zone_from"], "the system's zone");
    let (text_file, _) = report(&agent, &["--tz", "UTC", "--leads", file.to_str().unwrap()]);
    assert!(
        text_file.contains("unknown (the leads file does not record callbacks; use the lead store)"),
        "{text_file}"
    );

    // CSV: the same figures, one row each.
    let (csv, _) = report(&agent, &["--format", "csv", "--tz", "UTC"]);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "section,key,value");
    for row in [
        "summary,missed_calls,10",
        "summary,answered,8",
        "summary,completed,2",
        "summary,urgent,1",
        "summary,junk,1",
        "outcome,hung_up_during_greeting,2",
        "outcome,declined,1",
        "funnel,rang,10",
        "funnel,name,6",
        "funnel,urgency,3",
        "funnel,callback_number,4",
        "funnel_answered,callback_number,3",
        "hang_up,ringing,1",
        "hang_up,need,1",
        "callback,clocked,9",
        "callback,handled,1",
        "callback,overdue,8",
    ] {
        assert!(rows.contains(&row), "no row {row:?} in\n{csv}");
    }
    assert_eq!(rows.iter().filter(|r| r.starts_with("by_hour,")).count(), 24);

    // Text: the headline and the sections.
    let (text, _) = report(&agent, &["--tz", "UTC"]);
    eprintln!("{text}");
    for want in [
        "Missed calls       10",
        "Answered by agent  8",
        "Completed intake   2",
        "Urgent             1 (10.0%)",
        "Junk               1 (10.0%)",
        "Called back        1 of 9 on the clock; 8 overdue",
        "Every call here is a missed call",
        "during callback_number",
    ] {
        assert!(text.contains(want), "no {want:?} in\n{text}");
    }
    std::fs::create_dir_all(artifacts()).unwrap();
    std::fs::write(artifacts().join("report-test-day.txt"), &text).unwrap();
    std::fs::write(artifacts().join("report-test-day.json"), &json_out).unwrap();
    std::fs::copy(agent.dir.join("report.html"), artifacts().join("report-test-day.html")).unwrap();
    let html = std::fs::read_to_string(agent.dir.join("report.html")).unwrap();
    assert!(html.contains("data-figure=\"missed_calls\" data-value=\"10\""), "{html}");
    assert_eq!(html.matches("<svg").count(), 3);
    open_in_chromium(&agent.dir.join("report.html"), &r, &agent.dir);

    // Bad input: a clear error, not a panic.
    let bad = Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args(["report", "--since", "last tuesday", "--data-dir"])
        .arg(agent.dir.join("data"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--since \"last tuesday\": expected a date (2026-11-30) or an RFC 3339 instant"), "{err}");
    eprintln!("the whole test took {:?}", started.elapsed());
}

/// Every count of the test day, from the store (`store`: the callback is known) or the file.
fn check_counts(r: &Value, leads: &[Value], store: bool) {
    assert_eq!(r["missed_calls"], 10, "{r:#}");
    assert_eq!(r["answered"], 8, "{r:#}");
    assert_eq!(r["completed"], 2);
    assert_eq!(r["time_zone"], "UTC");
    let mut outcomes = counts(&r["outcomes"]);
    outcomes.sort();
    assert_eq!(
        outcomes,
        pairs(&[
            ("completed", 2),
            ("declined", 1),
            ("hung_up_during_callback_number", 1),
            ("hung_up_during_greeting", 2),
            ("hung_up_during_name", 1),
            ("hung_up_during_need", 1),
            ("hung_up_during_urgency", 1),
            ("hung_up_while_ringing", 1),
        ]),
        "{r:#}"
    );
    let funnel: Vec<Value> =
        r["funnel"].as_array().unwrap().iter().map(|s| json!([s["stage"], s["calls"], s["answered"]])).collect();
    assert_eq!(
        funnel,
        [
            json!(["rang", 10, null]),
            json!(["answered", 8, null]),
            // A stage of this straight script counts who reached it or a later one: the two who
            // completed, and those who left during name (in silence: no
            // answer there, but reached), need, the number and urgency.
            json!(["name", 6, 5]),
            json!(["need", 5, 4]),
            // Three digits typed, then gone: reached (partial), not answered.
            json!(["callback_number", 4, 3]),
            // Who left during urgency pressed nothing there: reached, no answer.
            json!(["urgency", 3, 2]),
            json!(["completed", 2, null]),
        ],
        "{r:#}"
    );
    assert_eq!(
        counts(&r["hang_ups"]),
        pairs(&[("ringing", 1), ("greeting", 2), ("name", 1), ("need", 1), ("callback_number", 1), ("urgency", 1)]),
        "{r:#}"
    );
    // The funnel reconciles with the hang-ups: answered, less who hung up after answering, is completed.
    let hung_after_answer: u64 = r["hang_ups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["key"] != "ringing")
        .map(|c| c["calls"].as_u64().unwrap())
        .sum();
    assert_eq!(r["answered"].as_u64().unwrap() - hung_after_answer, r["completed"].as_u64().unwrap());
    assert_eq!(r["in_progress"], 0);
    assert_eq!(r["urgent"]["calls"], 1);
    assert_eq!(r["junk"]["calls"], 1);
    assert!((r["junk"]["share"].as_f64().unwrap() - 1.0 / 10.0).abs() < 1e-9);
    // Hours and weekdays: each lead under its own UTC hour and day.
    let mut hours = [0u64; 24];
    let mut days = [0u64; 7];
    for l in leads {
        let t =
            l["received_at"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap().to_zoned(jiff::tz::TimeZone::UTC);
        hours[t.hour() as usize] += 1;
        days[t.weekday().to_monday_zero_offset() as usize] += 1;
    }
    assert_eq!(r["by_hour"], json!(hours));
    let by_day: Vec<u64> = r["by_weekday"].as_array().unwrap().iter().map(|d| d["calls"].as_u64().unwrap()).collect();
    assert_eq!(by_day, days);
    // Every answered call rang RING_MS first.
    let t = &r["time_to_answer_ms"];
    assert_eq!(t["count"], 8);
    let (median, p90) = (t["median"].as_u64().unwrap(), t["p90"].as_u64().unwrap());
    assert!((RING_MS..RING_MS + 300).contains(&median), "{t}");
    assert!(median <= p90 && p90 < RING_MS + 500, "{t}");
    // The clock: every lead but the junk one has it; one handled, the other eight overdue.
    let c = &r["callback"];
    assert_eq!(c["clocked"], 9, "{r:#}");
    if store {
        assert_eq!((c["handled"].as_u64(), c["overdue"].as_u64()), (Some(1), Some(8)), "{c}");
        assert_eq!(c["time_to_callback_secs"]["count"], 1, "{c}");
        assert!(c["time_to_callback_secs"]["median"].as_u64().unwrap() < 60, "{c}");
    } else {
        // leads.jsonl never learns of a callback: handled and overdue are unknown, not 0 and 9.
        assert_eq!((&c["handled"], &c["overdue"]), (&Value::Null, &Value::Null), "{c}");
    }
}

/// The page of the test day in headless Chromium (phone-sized): its
/// headline figures and funnel in the DOM equal the JSON's, the charts are
/// drawn, and a full-page screenshot is saved (`artifacts/report-test-day-390.png`).
fn open_in_chromium(page: &Path, r: &Value, dir: &Path) {
    use web::browser::*;
    let Some(chromedriver) = browser() else { return };
    let dir = dir.join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    let driver = Driver::start(&chromedriver, &dir);
    let s = Session::new(&driver, &dir.join("profile"));
    s.goto(&format!("file://{}", page.display()));
    s.wait_text("h1", |t| t.contains("Missed-call report"));
    let figures = s.js("return Object.fromEntries([...document.querySelectorAll('dd[data-figure]')]
            .map(d => [d.dataset.figure, d.dataset.value]))");
    assert_eq!(figures["missed_calls"], "10", "{figures}");
    assert_eq!(figures["answered"], "8", "{figures}");
    assert_eq!(figures["completed"], "2", "{figures}");
    assert_eq!(figures["urgent"], "1", "{figures}");
    assert_eq!(figures["junk"], "1", "{figures}");
    assert_eq!(figures["overdue"], "8", "{figures}");
    assert_eq!(s.js("return document.querySelectorAll('dd.alert[data-figure=overdue]').length"), 1, "overdue in red");
    // The funnel's table, row by row, as the JSON has it.
    let rows = s.js("return [...document.querySelectorAll('table[data-table=funnel] tbody tr')]
            .map(tr => [...tr.querySelectorAll('td')].slice(0, 2).map(td => td.innerText))");
    let want: Vec<Value> = r["funnel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| json!([st["stage"].as_str().unwrap(), st["calls"].to_string()]))
        .collect();
    assert_eq!(rows, json!(want));
    let bars =
        s.js("return [...document.querySelectorAll('figure[data-chart=funnel] svg rect[fill=\"#1F6FB2\"]')].length");
    assert_eq!(bars, r["funnel"].as_array().unwrap().iter().filter(|st| st["calls"].as_u64() > Some(0)).count());
    let width = s.js("return document.documentElement.scrollWidth");
    assert_eq!(width, 390, "fits a 390-px screen");
    let png = full_page_png(&s);
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::create_dir_all(artifacts()).unwrap();
    std::fs::write(artifacts().join("report-test-day-390.png"), &png).unwrap();
    eprintln!("screenshot: {}", artifacts().join("report-test-day-390.png").display());
}

/// `<target dir>/artifacts`, as tests/inbox_browser.rs keeps its screenshots.
fn artifacts() -> std::path::PathBuf {
    let tmp = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(&tmp).join("artifacts")
}
