//! Transcripts end to end: real SIPp callers speak the test speech (which
//! was not used to choose the engine), the agent runs as a real process
//! with whisper.cpp and the test model, and the leads reach a real webhook
//! receiver and `leads.jsonl` with their transcripts.
//!
//! The model is the one `scripts/get-model.sh` prints (`scripts/test.sh`
//! passes it as `BACKSTOP_TEST_MODEL`). Without it these tests fail under
//! CI and are skipped, with a note, elsewhere.
#![cfg(feature = "whisper")]

mod common;

use backstop::transcribe::wer::{Wer, wer};
use common::pcap::CallerAudio;
use common::receiver::{Receiver, SECRET, Seen, key};
use common::scenario::*;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What the fixtures say (`scripts/make-test-speech.sh`).
const NAME_SAID: &str = "Jordan Alvarez";
const NEED_SAID: &str = "The water heater is leaking all over the basement floor";
/// The word error rate the two answers together may have, set from the
/// bench (`benches/transcribe/README.md`): tiny.en's synthetic needs and
/// names after the telephone channel, with room for a name misheard.
const MAX_WER: f64 = 0.5;

fn model() -> Option<PathBuf> {
    match std::env::var_os("BACKSTOP_TEST_MODEL") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("CI").is_some() => {
            panic!("BACKSTOP_TEST_MODEL is not set: scripts/test.sh sets it from scripts/get-model.sh")
        }
        None => {
            eprintln!("skipped: set BACKSTOP_TEST_MODEL to a ggml model (scripts/get-model.sh prints one)");
            None
        }
    }
}

fn speech(name: &str) -> Vec<i16> {
    backstop::media_files::load_prompt(name, &manifest_dir().join("tests/fixtures/speech").join(name)).unwrap().pcm
}

/// An agent with the shipped default script, transcription on, and a webhook.
fn agent(name: &str, model: &Path, hook_port: u16, transcribe: &str) -> AgentProc {
    AgentProc::start_default_script(name, &config(model, hook_port, transcribe))
}

fn config(model: &Path, hook_port: u16, transcribe: &str) -> String {
    format!(
        "[sip]\nanswer_after_ms = 100\n\
         [[webhook]]\nurl = \"http://127.0.0.1:{hook_port}/hook\"\nsecret = \"{SECRET}\"\nmax_retry_interval_s = 1\n\
         [transcribe]\nmodel = \"{}\"\n{transcribe}\n",
        model.display()
    )
}

fn play_pcap(path: &Path) -> String {
    format!("  <nop><action><exec play_pcap_audio=\"{}\"/></action></nop>\n", path.display())
}

/// A caller who gives a name and a need by voice; then, with `keys`, the
/// callback number, ZIP and urgency by keypad and waits for the agent's
/// goodbye, or without, hangs up right after the need.
fn place_call(agent: &AgentProc, name: &str, keys: bool) {
    let dir = scratch_dir(name);
    let mut audio = CallerAudio::new(101).with_line_noise(7);
    audio.silence_until(8_800).audio(&speech("name.wav"));
    audio.silence_until(14_200).audio(&speech("need.wav"));
    let tail = if keys {
        audio.silence_until(20_000).digits("5551234567#");
        audio.silence_until(22_500).digits("94110");
        audio.silence_until(24_000).digits("1");
        audio.silence_until(34_000);
        AGENT_BYE.replace("timeout=\"40000\"", "timeout=\"50000\"")
    } else {
        // The end of the need is heard 1.2 s after it; then the caller hangs up
        // (the pcap plays on while the scenario goes on: wait it out).
        audio.silence(1_600);
        format!("{}{CALLER_BYE}", pause(audio.ms() + 100))
    };
    let pcap = dir.join("caller.pcap");
    audio.write(&pcap);
    let offer = OFFER.replace("[rtp_port]", "[media_port]");
    let sc = scenario(name, &[&invite("", &offer), ANSWERED, &ack(1), &pause(200), &play_pcap(&pcap), &tail]);
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[]);
    assert!(run.success, "SIPp failed: {}\n{}", run.errors, agent.log());
}

fn transcript(lead: &Value, step: &str) -> Option<String> {
    lead["answers"][step]["transcript"]["text"].as_str().map(str::to_string)
}

/// The two answers' word error rate against what the fixtures say.
fn error_rate(lead: &Value) -> Wer {
    let heard = |s| transcript(lead, s).unwrap_or_else(|| panic!("no transcript of {s}: {lead}"));
    let (name, need) = (heard("name"), heard("need"));
    eprintln!("heard: name {name:?}, need {need:?}");
    wer(NAME_SAID, &name) + wer(NEED_SAID, &need)
}

fn delivered<'a>(seen: &'a [Seen], kind: &str) -> Vec<&'a Seen> {
    seen.iter().filter(|s| s.kind() == kind && s.status == 200).collect()
}

#[test]
fn a_callers_spoken_answers_reach_the_lead_as_text() {
    let Some(model) = model() else { return };
    let rx = Receiver::start(free_port(), key(), vec![]);
    let agent = agent("tr-e2e", &model, rx.port, "wait_secs = 60\nurgent_words = [\"leaking\", \"no heat\"]");
    place_call(&agent, "tr-e2e-call", true);
    let seen = rx.wait_for(Duration::from_secs(60), "lead.completed", |s| !delivered(s, "lead.completed").is_empty());
    let completed = delivered(&seen, "lead.completed");
    assert!(seen.iter().all(|s| s.signature_ok));
    let lead = &completed[0].event["lead"];
    assert_eq!(lead["outcome"], "completed", "{lead}");
    assert!(lead.get("transcripts_pending").is_none(), "it waited for both: {lead}");
    let rate = error_rate(lead);
    assert!(rate.rate() <= MAX_WER, "word error rate {rate} over {MAX_WER}: {lead}");
    let t = &lead["answers"]["need"]["transcript"];
    assert_eq!(t["engine"], "whisper.cpp");
    assert!(t["model"].as_str().is_some_and(|m| m.contains("tiny.en")), "{t}");
    assert!(t["ms"].as_u64().unwrap() > 0 && t["delay_ms"].as_u64().unwrap() >= t["ms"].as_u64().unwrap(), "{t}");
    let confidence = t["confidence"].as_f64().expect("whisper.cpp gives a confidence");
    assert!((0.0..=1.0).contains(&confidence), "{t}");
    // The summary says it all in a line, the need in the caller's words.
    let summary = lead["summary"].as_str().unwrap();
    let need = transcript(lead, "need").unwrap();
    assert!(summary.contains(need.trim().trim_end_matches('.')), "{summary}");
    assert!(summary.ends_with("EMERGENCY · 94110 · call back +1 555-123-4567"), "{summary}");
    // tiny.en hears "leaking" in need.wav (the unit tests of transcribe::whisper pin it too).
    assert_eq!(lead["urgent_words"], serde_json::json!(["leaking"]), "{lead}");
    // The leads file has the same lead, once, and nothing came as an update.
    let leads = agent.wait_leads(1, Duration::from_secs(5));
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0], *lead);
    std::thread::sleep(Duration::from_millis(500));
    assert!(delivered(&rx.seen(), "lead.updated").is_empty());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args(["leads", "tail", "--data-dir"])
        .arg(agent.dir.join("data"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("need={:?}", need.trim())), "leads tail shows what was said: {text}");
}

#[test]
fn transcripts_after_the_wait_come_as_lead_updated_with_the_whole_lead() {
    let Some(model) = model() else { return };
    let rx = Receiver::start(free_port(), key(), vec![]);
    let agent = agent("tr-update", &model, rx.port, "wait_secs = 0");
    place_call(&agent, "tr-update-call", false);
    let seen = rx.wait_for(Duration::from_secs(60), "the lead and its update", |s| {
        !delivered(s, "lead.completed").is_empty() && !delivered(s, "lead.updated").is_empty()
    });
    let completed = &delivered(&seen, "lead.completed")[0].event["lead"];
    assert_eq!(completed["outcome"], "hung_up_during_callback_number", "{completed}");
    // The need was still being decoded when the call ended: it was not waited for.
    assert!(completed["transcripts_pending"].as_u64().unwrap() >= 1, "{completed}");
    assert!(transcript(completed, "need").is_none(), "{completed}");
    // Updates until every transcript is in; the last carries the whole lead.
    let seen = rx.wait_for(Duration::from_secs(60), "every transcript", |s| {
        delivered(s, "lead.updated").last().is_some_and(|u| u.event["lead"].get("transcripts_pending").is_none())
    });
    let updates = delivered(&seen, "lead.updated");
    let last = &updates.last().unwrap().event["lead"];
    assert_eq!(last["id"], completed["id"]);
    assert_eq!((&last["outcome"], &last["caller"]), (&completed["outcome"], &completed["caller"]));
    let rate = error_rate(last);
    assert!(rate.rate() <= MAX_WER, "word error rate {rate}: {last}");
    // One event per update, each delivered once; the leads file has the lead and each update as lines.
    let ids: std::collections::HashSet<&str> = updates.iter().map(|u| u.webhook_id.as_str()).collect();
    assert_eq!(ids.len(), updates.len());
    let deadline = Instant::now() + Duration::from_secs(5);
    while agent.leads().len() < 1 + updates.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let lines = agent.leads();
    assert_eq!(lines.len(), 1 + updates.len(), "{lines:?}");
    assert!(lines.iter().all(|l| l["id"] == completed["id"]));
    assert_eq!(lines.last().unwrap(), last);
}

/// The transcription tables, read from outside while the agent is frozen.
fn queue_state(data: &Path) -> (i64, i64) {
    let db = rusqlite::Connection::open(data.join("outbox.db")).unwrap();
    db.busy_timeout(Duration::from_secs(2)).unwrap();
    let count = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    (
        count("SELECT COUNT(*) FROM transcribe_leads WHERE completed = 0"),
        count("SELECT COUNT(*) FROM transcribe_jobs WHERE state IN ('queued', 'running')"),
    )
}

#[test]
fn transcripts_queued_at_a_crash_complete_after_the_restart_each_once() {
    let Some(model) = model() else { return };
    let rx = Receiver::start(free_port(), key(), vec![]);
    let mut agent = agent("tr-restart", &model, rx.port, "wait_secs = 120");
    place_call(&agent, "tr-restart-call", false);
    // Freeze the agent the moment its lead is held with a transcript still to
    // come, look, and kill it: nothing can move between the look and the kill.
    let data = agent.dir.join("data");
    let deadline = Instant::now() + Duration::from_secs(20);
    let state = loop {
        let pid = agent.pid().to_string();
        std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap();
        let state = queue_state(&data);
        if state.0 == 1 && state.1 >= 1 {
            break state;
        }
        std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap();
        assert!(Instant::now() < deadline, "the lead was never held with a transcript to come: {state:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    agent.kill9();
    assert!(delivered(&rx.seen(), "lead.completed").is_empty(), "it was still waiting: {state:?}");
    agent.restart();
    let seen = rx.wait_for(Duration::from_secs(60), "the lead after the restart", |s| {
        !delivered(s, "lead.completed").is_empty()
    });
    let lead = &delivered(&seen, "lead.completed")[0].event["lead"];
    assert_eq!(lead["outcome"], "hung_up_during_callback_number", "not closed as interrupted: {lead}");
    assert!(lead.get("transcripts_pending").is_none(), "{lead}");
    let rate = error_rate(lead);
    assert!(rate.rate() <= MAX_WER, "word error rate {rate}: {lead}");
    // Each once: one lead.completed, no update, one line in the file.
    std::thread::sleep(Duration::from_secs(2));
    let seen = rx.seen();
    let completed: std::collections::HashSet<&str> =
        delivered(&seen, "lead.completed").iter().map(|s| s.webhook_id.as_str()).collect();
    assert_eq!(completed.len(), 1, "{seen:?}");
    assert!(delivered(&seen, "lead.updated").is_empty());
    assert_eq!(agent.leads().len(), 1);
    assert!(agent.log().contains("transcription queue recovered after a restart"), "{}", agent.log());
}

/// `backstop check` (or `run`, with `args`) on a config whose `[transcribe]` model is `model`: (success, output).
fn backstop_with_model(dir: &Path, model: &Path, args: &[&str]) -> (bool, String) {
    let cfg = dir.join("backstop.toml");
    let prompts = manifest_dir().join("prompts");
    let text = format!("[prompts]\ndir = \"{}\"\n[transcribe]\nmodel = \"{}\"\n", prompts.display(), model.display());
    std::fs::write(&cfg, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args(args)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn check_names_a_missing_or_corrupt_model() {
    let dir = scratch_dir("tr-check");
    let bad = dir.join("bad.bin");
    std::fs::write(&bad, b"ggml? no: a truncated download").unwrap();
    let data = dir.join("data");
    let run = ["run", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()];
    for (model, says) in [(dir.join("missing.bin"), "missing.bin"), (bad, "bad.bin")] {
        let (ok, text) = backstop_with_model(&dir, &model, &["check"]);
        assert!(!ok && text.contains("transcribe") && text.contains(says), "{text}");
        // And the agent refuses to start on it, saying why.
        let (ok, text) = backstop_with_model(&dir, &model, &run);
        assert!(!ok && text.contains(says), "{text}");
    }
    if let Some(model) = model() {
        let (ok, text) = backstop_with_model(&dir, &model, &["check"]);
        assert!(ok && text.contains("transcribe: whisper.cpp"), "{text}");
    }
}
