//! The command line: `backstop check` on good and bad configs.

mod common;

use std::process::Command;

fn check(config: &str) -> (bool, String) {
    let dir = common::scratch_dir("cli");
    let path = dir.join("c.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_backstop"))
        .current_dir(common::manifest_dir())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(&dir).ok();
    (out.status.success(), text)
}

#[test]
fn shipped_config_checks_clean() {
    let out = Command::new(env!("CARGO_BIN_EXE_backstop"))
        .current_dir(common::manifest_dir())
        .args(["check", "--config", "config/backstop.toml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("greeting"));
}

#[test]
fn bad_value_names_the_key_and_line_and_fails() {
    let (ok, text) = check("[sip]\n# comment\nlisten = \"not-an-address\"\n");
    assert!(!ok);
    assert!(text.contains(":3: sip.listen:"), "{text}");
    let (ok, text) = check("[rtp]\nport_min = \"twenty\"\n");
    assert!(!ok);
    assert!(text.contains(":2: rtp.port_min:"), "{text}");
}

#[test]
fn missing_prompt_fails_the_check() {
    let (ok, text) = check("[[step]]\nname = \"hello\"\nkind = \"goodbye\"\nprompt = \"nope\"\n");
    assert!(!ok);
    assert!(text.contains("prompt \"nope\"") && text.contains("nope.wav"), "{text}");
}

/// A webhook may list `lead.updated` (a lead that changed after its call:
/// transcripts), and check says nothing of it.
#[test]
fn a_webhook_listing_lead_updated_is_accepted() {
    let hook = "[[webhook]]\nurl = \"http://127.0.0.1:9/hook\"\n";
    let (ok, text) = check(&format!("{hook}events = [\"lead.updated\", \"lead.completed\"]\n"));
    assert!(ok && !text.contains("note:"), "{text}");
}

#[test]
fn leads_tail_prints_the_last_leads_readably() {
    let dir = common::scratch_dir("cli-tail");
    let lead = |n: u32, outcome: &str| {
        format!(
            r#"{{"schema_version":1,"id":"l{n}","call_id":"c{n}","caller":{{"number":"+1555000{n}","display_name":"Pat","uri":"sip:x@y","asserted":null}},"called":{{"number":null,"uri":"sip:z@y"}},"forwarded":{{"from_number":"+15557654321","reason":"no-answer","source":"diversion"}},"received_at":"2026-11-23T21:00:0{n}.000Z","answered_at":null,"ended_at":null,"duration_ms":1500,"ended_by":"caller","outcome":"{outcome}","transport":"udp","codec":null,"answers":{{"name":{{"kind":"voice","status":"answered","value":null,"recording":"l{n}-name.wav","speech_ms":930,"attempts":1}},"urgency":{{"kind":"menu","status":"answered","value":"1","label":"emergency","attempts":1}},"zip":{{"kind":"digits","status":"no_input","value":null,"attempts":3}}}}}}"#
        )
    };
    std::fs::write(
        dir.join("leads.jsonl"),
        format!("{}\n{}\n{}\n", lead(1, "completed"), lead(2, "hung_up_during_greeting"), lead(3, "completed")),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args(["leads", "tail", "-n", "2", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("+15550002")
            && lines[0].contains("hung_up_during_greeting")
            && lines[0].contains("no-answer"),
        "{text}"
    );
    assert!(lines[1].contains("+15550003") && lines[1].contains("1.5s"), "{text}");
    // No outbox yet: a clear error, not a crash.
    let out = Command::new(env!("CARGO_BIN_EXE_backstop"))
        .args(["outbox", "status", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no outbox"));
    std::fs::remove_dir_all(&dir).ok();
}

/// The exact `leads tail` line for known leads: the golden call's, one written
/// before later fields existed (no `dtmf`, a short `forwarded`), one with
/// nothing known, and a line that is not a lead.
#[test]
fn leads_tail_lines_are_exactly_as_before() {
    let dir = common::scratch_dir("cli-tail-exact");
    let golden = std::fs::read_to_string(common::manifest_dir().join("tests/golden/leads.jsonl")).unwrap();
    let old = r#"{"schema_version":1,"id":"l2","call_id":"c2","caller":{"number":"+15550002","display_name":"Pat","uri":"sip:x@y","asserted":null},"called":{"number":null,"uri":"sip:z@y"},"forwarded":{"from_number":"+15557654321","reason":"no-answer","source":"diversion"},"received_at":"2026-11-23T21:00:02.000Z","answered_at":null,"ended_at":null,"duration_ms":1500,"ended_by":"caller","outcome":"hung_up_during_greeting","transport":"udp","codec":null,"answers":{"name":{"kind":"voice","status":"answered","value":null,"recording":"l2-name.wav","speech_ms":930,"attempts":1},"urgency":{"kind":"menu","status":"answered","value":"1","label":"emergency","attempts":1},"zip":{"kind":"digits","status":"no_input","value":null,"attempts":3}}}"#;
    let bare = r#"{"schema_version":1,"id":"l4","call_id":"c4","caller":{"number":null,"display_name":null,"uri":"sip:anonymous@anonymous.invalid","asserted":null},"called":{"number":null,"uri":"sip:z@y"},"forwarded":null,"received_at":"2026-11-23T21:00:04.000Z","answered_at":null,"ended_at":null,"duration_ms":null,"ended_by":null,"outcome":"ringing","transport":"tcp","codec":null,"dtmf":"","source_verified":false,"answers":{},"recording":null}"#;
    // A line with a byte that is not UTF-8 (Latin-1's é) is shown in its place, not a failed tail.
    let mut file = format!("{golden}{old}\n{bare}\nnot json\n").into_bytes();
    file.extend_from_slice(b"caf\xe9 not json\n");
    std::fs::write(dir.join("leads.jsonl"), file).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_backstop")).args(["leads", "tail", "--data-dir"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let expected = [
        "2026-11-29T12:00:00.000Z  +15551234567 \"Jane Doe\" fwd from +15559870000 (no-answer)  completed ended by agent  29.0s  \
         [callback_number=5551234567, name=1.0s spoken, need=3.8s spoken, urgency=emergency, zip=94110]",
        "2026-11-23T21:00:02.000Z  +15550002 \"Pat\" fwd from +15557654321 (no-answer)  hung_up_during_greeting ended by caller  1.5s  \
         [name=0.9s spoken, urgency=emergency, zip=no_input]",
        "2026-11-23T21:00:04.000Z  -   ringing ended by -  -",
        "(unreadable) not json",
        "(unreadable) caf\u{FFFD} not json",
    ];
    assert_eq!(text.lines().collect::<Vec<_>>(), expected, "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A lead updated after its call (a transcript came in) is in the file
/// twice with one id: `leads tail` shows it once, as its latest line, with
/// what was said.
#[test]
fn leads_tail_shows_an_updated_lead_once_with_its_transcript() {
    let dir = common::scratch_dir("cli-tail-updated");
    let lead = |transcript: &str| {
        format!(
            r#"{{"schema_version":1,"id":"l9","call_id":"c9","caller":{{"number":"+15550009","display_name":null,"uri":"sip:x@y","asserted":null}},"called":{{"number":null,"uri":"sip:z@y"}},"forwarded":null,"received_at":"2026-11-30T01:00:00.000Z","answered_at":null,"ended_at":null,"duration_ms":9000,"ended_by":"caller","outcome":"hung_up_during_zip","transport":"udp","codec":null,"answers":{{"need":{{"kind":"voice","status":"answered","value":null,"recording":"l9-need.wav","speech_ms":2100,"attempts":1{transcript}}}}}}}"#
        )
    };
    let later = r#","transcript":{"delay_ms":900,"engine":"whisper.cpp","model":"ggml-tiny.en","ms":600,"text":" The basement is flooding."}"#;
    std::fs::write(dir.join("leads.jsonl"), format!("{}\n{}\n", lead(""), lead(later))).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_backstop")).args(["leads", "tail", "--data-dir"]).arg(&dir).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].ends_with("[need=\"The basement is flooding.\"]"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn run_fails_clearly_when_the_data_dir_is_unusable_or_the_port_is_taken() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_backstop"))
            .current_dir(common::manifest_dir())
            .arg("run")
            .args(args)
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    // /proc refuses new directories even to root.
    let (ok, err) = run(&["--listen", "127.0.0.1:0", "--data-dir", "/proc/backstop-data"]);
    assert!(!ok);
    assert!(err.contains("/proc/backstop-data"), "{err}");
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = common::scratch_dir("cli-port");
    let (ok, err) = run(&["--listen", &format!("127.0.0.1:{port}"), "--data-dir", dir.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains(&format!("binding SIP UDP on 127.0.0.1:{port}")) && err.contains("in use"), "{err}");
}

/// A text-back with nowhere for STOP replies to land is allowed, and said.
#[test]
fn text_back_without_a_public_url_is_a_warning() {
    let text_back = "[[text_back]]\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\nauth_token = \"t\"\nfrom = \"+15125550100\"\n";
    let (ok, text) = check(text_back);
    assert!(ok, "{text}");
    assert!(text.contains("warning: [[text_back]] without [http] public_url"), "{text}");
    let (ok, text) = check(&format!("{text_back}[http]\npublic_url = \"https://leads.example.com\"\n"));
    assert!(ok, "{text}");
    assert!(!text.contains("without [http] public_url"), "{text}");
}
