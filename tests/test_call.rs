//! `backstop test-call` against real peers on loopback: the agent (a real
//! `backstop run` with the shipped script and prompts), the same agent with
//! silent prompts, a port with nothing on it, and a SIPp UAS that is busy.
//! and the agent behind a real Kamailio that wants digest auth for calls
//! (the business's number through the PBX). Each run of the command is
//! bounded, and its printed checks are asserted.

mod common;

use common::kamailio::Kamailio;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Start the agent on the shipped default script, with prompts from `prompts`.
fn start_agent(name: &str, prompts: &Path, slot: u16) -> AgentProc {
    start_agent_with(name, prompts, slot, "")
}

fn start_agent_with(name: &str, prompts: &Path, slot: u16, extra: &str) -> AgentProc {
    let rtp = (38000 + slot * 200, 38000 + slot * 200 + 198);
    let config = format!(
        "[prompts]\ndir = \"{}\"\n[rtp]\nport_min = {}\nport_max = {}\n[log]\nlevel = \"debug\"\n{extra}",
        prompts.display(),
        rtp.0,
        rtp.1
    );
    AgentProc::start_config(name, &config, rtp)
}

/// The agent's config as it runs (its `--listen` and `--data-dir` written
/// in), for `test-call --config`: what an operator's own config holds.
fn config_as_run(agent: &AgentProc) -> PathBuf {
    let text = std::fs::read_to_string(agent.dir.join("backstop.toml")).unwrap();
    let path = agent.dir.join("as-run.toml");
    let extra = format!(
        "[sip]\nlisten = \"127.0.0.1:{}\"\n[data]\ndir = \"{}\"\n",
        agent.port,
        agent.dir.join("data").display()
    );
    std::fs::write(&path, format!("{text}\n{extra}")).unwrap();
    path
}

struct Run {
    success: bool,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    /// The check line named `name`.
    fn line(&self, name: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.get(5..).is_some_and(|rest| rest.starts_with(name)))
            .unwrap_or_else(|| panic!("no {name} line in:\n{}", self.stdout))
    }
}

/// Run `backstop test-call ARGS`, killed after 60 s.
fn test_call(args: &[&str]) -> Run {
    test_call_env(args, &[])
}

/// `test_call` with these environment variables set.
fn test_call_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_backstop"))
        .arg("test-call")
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = start + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let run = Run {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: start.elapsed(),
    };
    eprintln!("test-call {args:?} ({:?}):\n{}{}", run.took, run.stdout, run.stderr);
    run
}

/// A mono 8 kHz 16-bit WAV of `secs` seconds of digital silence.
fn silent_wav(secs: u32) -> Vec<u8> {
    let data = 8000 * 2 * secs;
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&8000u32.to_le_bytes());
    w.extend_from_slice(&16000u32.to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data.to_le_bytes());
    w.resize(w.len() + data as usize, 0);
    w
}

#[test]
fn a_call_to_the_running_agent_passes_every_check_and_finds_its_lead() {
    let agent = start_agent("tc-pass", &manifest_dir().join("prompts"), 0);
    let cfg = config_as_run(&agent);
    let run = test_call(&["--config", cfg.to_str().unwrap(), "--keys", "1"]);
    assert!(run.success, "exit non-zero:\n{}{}\nagent log:\n{}", run.stdout, run.stderr, agent.log());
    assert!(run.stdout.starts_with(&format!("test-call sip:backstop@127.0.0.1:{} via", agent.port)), "{}", run.stdout);
    let checks: Vec<&str> = run.stdout.lines().skip(1).collect();
    assert_eq!(checks.len(), 7, "{}", run.stdout);
    assert!(checks.iter().all(|l| l.starts_with("PASS ")), "{}", run.stdout);
    assert!(run.line("answered").contains("200 OK after"), "{}", run.stdout);
    assert!(run.line("answered").contains("(180 Ringing after"), "{}", run.stdout);
    assert!(run.line("rtp").contains(", PCMU, "), "{}", run.stdout);
    assert!(run.line("keys sent").contains("1 as RFC 4733 (PT 101)"), "{}", run.stdout);
    assert!(run.line("hung up").contains("BYE → 200 OK"), "{}", run.stdout);
    assert!(
        run.line("prompt heard").contains("greeting matched line default step greeting (similarity "),
        "{}",
        run.stdout
    );

    // The lead the agent wrote is ours, with the key it heard: the greeting
    // was barged into with it, and we hung up while the agent asked for a name.
    let call_id = run.stdout.lines().next().unwrap().rsplit("Call-ID ").next().unwrap().to_string();
    let leads = agent.wait_leads(1, Duration::from_secs(5));
    let lead = leads.iter().rev().find(|l| l["call_id"] == call_id.as_str()).expect("our lead");
    assert_eq!(lead["dtmf"], "1");
    assert_eq!(lead["outcome"], "hung_up_during_name");
    let lead_line = run.line("lead");
    assert!(lead_line.contains(lead["id"].as_str().unwrap()), "{lead_line}");
    assert!(lead_line.contains("outcome hung_up_during_name, dtmf \"1\""), "{lead_line}");
    // The agent latched onto our RTP and heard our key as RFC 4733.
    let log = agent.log();
    assert!(log.contains("rfc4733") || log.contains("Rfc4733"), "the agent's log names the key's source:\n{log}");
}

#[test]
fn a_port_with_nothing_on_it_fails_with_a_clear_message() {
    let port = free_port();
    let run = test_call(&[&format!("127.0.0.1:{port}"), "--timeout", "3"]);
    assert!(!run.success);
    assert_eq!(run.stdout.lines().count(), 2, "{}", run.stdout);
    assert_eq!(
        run.line("answered"),
        format!(
            "FAIL answered      no answer from 127.0.0.1:{port} after 3 s (nothing listening? ICMP port unreachable)"
        )
    );
    assert!(run.took < Duration::from_secs(10), "{:?}", run.took);
}

#[test]
fn an_agent_with_silent_prompts_answers_but_no_prompt_is_heard() {
    let prompts = scratch_dir("tc-silent-prompts");
    for name in ["greeting", "name", "need", "callback_number", "zip", "urgency", "goodbye", "sorry"] {
        std::fs::write(prompts.join(format!("{name}.wav")), silent_wav(2)).unwrap();
    }
    let agent = start_agent("tc-silent", &prompts, 1);
    let cfg = config_as_run(&agent);
    let run = test_call(&["--config", cfg.to_str().unwrap(), "--keys", "1", "--timeout", "4"]);
    assert!(!run.success, "{}", run.stdout);
    assert!(run.line("answered").starts_with("PASS"), "{}", run.stdout);
    assert!(run.line("rtp").starts_with("PASS"), "{}", run.stdout);
    assert!(run.line("audio").starts_with("FAIL audio         RTP arrived but was silence ("), "{}", run.stdout);
    assert!(run.line("prompt heard").starts_with("FAIL prompt heard  no prompt in 4"), "{}", run.stdout);
    assert_eq!(run.line("keys sent"), "FAIL keys sent     1: not sent (no prompt was heard)");
    assert!(run.line("hung up").starts_with("PASS"), "{}", run.stdout);
    // The agent still wrote the lead of the call, with no key.
    let lead = run.line("lead");
    assert!(lead.starts_with("PASS") && lead.contains("dtmf \"\""), "{lead}");
}

#[test]
fn a_busy_sipp_uas_fails_with_486_and_gets_its_ack() {
    let dir = scratch_dir("tc-busy");
    let port = free_port();
    let scenario = manifest_dir().join("tests/fixtures/test_call/busy_uas.xml");
    let mut sipp = Command::new("sipp")
        .arg("-sf")
        .arg(&scenario)
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-m", "1", "-nostdin"])
        .args(["-timeout", "30s", "-timeout_error", "-trace_err", "-error_file"])
        .arg(dir.join("errors.log"))
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp must be installed");
    let run = test_call(&[&format!("sip:+15551230000@127.0.0.1:{port}"), "--timeout", "5"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = sipp.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = sipp.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!run.success);
    assert_eq!(run.line("answered"), "FAIL answered      486 Busy Here");
    assert_eq!(run.stdout.lines().count(), 2, "only the answer is checked:\n{}", run.stdout);
    assert!(
        status.is_some_and(|s| s.success()),
        "SIPp did not get its ACK ({status:?}): {}",
        std::fs::read_to_string(dir.join("errors.log")).unwrap_or_default()
    );
}

/// Kamailio as the PBX (tests/fixtures/test_call/kamailio.cfg): INVITEs need
/// digest auth as `tester`; calls go on to the registered overflow account.
/// Without `record_route` it stays out of the dialog: the ACK and BYE must
/// go to the agent's Contact, and a request sent to it in the dialog gets 404.
fn start_pbx(record_route: bool) -> Kamailio {
    let dir = scratch_dir(if record_route { "tc-pbx" } else { "tc-pbx-norr" });
    let db = common::kamailio::write_subscribers(&dir, &[("tester", "testerpw"), ("overflow", "overflowpw")]);
    let cfg = std::fs::read_to_string(manifest_dir().join("tests/fixtures/test_call/kamailio.cfg"))
        .unwrap()
        .replace("@DBDIR@", &db.display().to_string());
    let cfg = if record_route { cfg } else { cfg.replace("        record_route();\n", "") };
    Kamailio::start(&dir, &cfg)
}

/// An agent registered at `pbx` as its overflow account (bounded wait for the registration).
fn agent_behind(pbx: &Kamailio, name: &str, slot: u16) -> AgentProc {
    let account = format!(
        "[[register]]\nregistrar = \"sip:127.0.0.1:{}\"\nusername = \"overflow\"\npassword = \"overflowpw\"\n",
        pbx.port
    );
    let agent = start_agent_with(name, &manifest_dir().join("prompts"), slot, &account);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.log().contains("registered expires=") {
        assert!(Instant::now() < deadline, "the agent did not register:\n{}\n{}", agent.log(), pbx.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    agent
}

#[test]
fn a_call_through_a_pbx_that_wants_auth_reaches_the_agent_with_the_credentials() {
    let pbx = start_pbx(true);
    let agent = agent_behind(&pbx, "tc-pbx-agent", 2);
    let cfg = config_as_run(&agent);
    let number = format!("sip:+15550100@127.0.0.1:{}", pbx.port);

    // Without credentials: the PBX's 407 fails the call, named.
    let run = test_call(&[&number, "--from", "tester", "--no-lead", "--timeout", "5"]);
    assert!(!run.success);
    assert_eq!(
        run.line("answered"),
        "FAIL answered      407 Proxy Authentication Required: the target wants digest auth (give --user and --password)"
    );

    // With them: answered by the agent behind the PBX, every check passes,
    // the ACK and BYE went through its Record-Route, and the agent's lead has the key.
    let run = test_call_env(
        &[
            &number,
            "--from",
            "tester",
            "--user",
            "tester",
            "--password-env",
            "TEST_CALL_PBX_PASSWORD",
            "--config",
            cfg.to_str().unwrap(),
            "--keys",
            "1",
        ],
        &[("TEST_CALL_PBX_PASSWORD", "testerpw")],
    );
    assert!(run.success, "{}{}\nagent:\n{}\npbx:\n{}", run.stdout, run.stderr, agent.log(), pbx.log());
    assert!(run.line("answered").contains(", after a 407 challenge"), "{}", run.stdout);
    assert!(run.line("hung up").contains("BYE → 200 OK"), "{}", run.stdout);
    assert!(run.line("lead").contains("dtmf \"1\""), "{}", run.stdout);
    assert!(pbx.log().contains("INVITE authorized for sip:tester@127.0.0.1"), "{}", pbx.log());
    let call_id = run.stdout.lines().next().unwrap().rsplit("Call-ID ").next().unwrap().to_string();
    let leads = agent.wait_leads(1, Duration::from_secs(5));
    let lead = leads.iter().rev().find(|l| l["call_id"] == call_id.as_str()).expect("our lead, by its Call-ID");
    assert!(lead["caller"]["uri"].as_str().unwrap().starts_with("sip:tester@127.0.0.1"), "{lead}");
}

/// A PBX that does not record-route: the 2xx's ACK and our BYE go straight
/// to the agent's Contact (RFC 3261 12.2.1.1), not to the PBX (which would
/// answer 404), and the call passes; the password comes from the environment.
#[test]
fn through_a_pbx_that_does_not_record_route_the_dialog_goes_to_the_agent() {
    let pbx = start_pbx(false);
    let agent = agent_behind(&pbx, "tc-pbx-norr-agent", 3);
    let number = format!("sip:+15550100@127.0.0.1:{}", pbx.port);
    let run = test_call_env(
        &[&number, "--from", "tester", "--user", "tester", "--password-env", "TC_PW", "--no-lead"],
        &[("TC_PW", "testerpw")],
    );
    assert!(run.success, "{}{}\nagent:\n{}\npbx:\n{}", run.stdout, run.stderr, agent.log(), pbx.log());
    assert!(run.line("hung up").contains("BYE → 200 OK"), "{}", run.stdout);
    assert!(!agent.log().contains("no ACK"), "the agent got our ACK:\n{}", agent.log());
    // An unset variable is a clear error, before any call.
    let run = test_call(&[&number, "--user", "tester", "--password-env", "TC_UNSET_PW_VARIABLE", "--no-lead"]);
    assert!(!run.success);
    assert!(run.stderr.contains("--password-env TC_UNSET_PW_VARIABLE"), "{}", run.stderr);
}

/// An agent that answers with other speech than the greeting of the config
/// test-call is given (as a carrier's voicemail or a PBX menu would): speech
/// is heard, but it is not our greeting, and the check fails saying so.
#[test]
fn speech_that_is_not_our_greeting_fails_the_prompt_check() {
    let real = manifest_dir().join("prompts");
    let prompts = scratch_dir("tc-other-greeting");
    for entry in std::fs::read_dir(&real).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, prompts.join(path.file_name().unwrap())).unwrap();
    }
    // The agent greets with the need's question instead.
    std::fs::copy(real.join("need.wav"), prompts.join("greeting.wav")).unwrap();
    let agent = start_agent("tc-other", &prompts, 4);
    let cfg = config_as_run(&agent);
    // test-call is given the real prompts: it expects the real greeting.
    let text =
        std::fs::read_to_string(&cfg).unwrap().replace(&prompts.display().to_string(), &real.display().to_string());
    std::fs::write(&cfg, text).unwrap();
    let run = test_call(&["--config", cfg.to_str().unwrap(), "--timeout", "5"]);
    assert!(!run.success, "{}", run.stdout);
    assert!(run.line("audio").starts_with("PASS"), "{}", run.stdout);
    assert!(
        run.line("prompt heard")
            .starts_with("FAIL prompt heard  speech, but not our greeting (voicemail or a PBX menu?)"),
        "{}",
        run.stdout
    );
    // Without the config, only speech can be checked, and the line says the prompt was not identified.
    let run = test_call(&[&format!("sip:backstop@127.0.0.1:{}", agent.port), "--timeout", "5"]);
    assert!(run.success, "{}", run.stdout);
    assert!(run.line("prompt heard").contains("not identified as our greeting"), "{}", run.stdout);
}

/// A script that opens with a `when` step, on a line that is closed right
/// now (a schedule with no open hours): the caller hears the `closed`
/// branch's prompt (here the need question), not the greeting, and the
/// check passes against it, naming which first prompt it was. Matched
/// against the greeting only, this audio fails (0.69, see above).
#[test]
fn after_hours_the_closed_branchs_prompt_is_our_greeting() {
    let script = r#"
[schedule]
time_zone = "UTC"

[[step]]
name = "hours"
kind = "when"
open = "greeting"
closed = "closed"

[[step]]
name = "greeting"
kind = "play"
prompt = "greeting"
next = "name"

[[step]]
name = "closed"
kind = "play"
prompt = "need"

[[step]]
name = "name"
kind = "ask"
prompt = "name"

[[step]]
name = "goodbye"
kind = "goodbye"
prompt = "goodbye"
"#;
    let agent = start_agent_with("tc-closed", &manifest_dir().join("prompts"), 5, script);
    let cfg = config_as_run(&agent);
    let run = test_call(&["--config", cfg.to_str().unwrap(), "--timeout", "5"]);
    assert!(run.success, "{}{}\nagent:\n{}", run.stdout, run.stderr, agent.log());
    assert!(
        run.line("prompt heard")
            .starts_with("PASS prompt heard  greeting matched line default step closed (similarity "),
        "{}",
        run.stdout
    );
    assert!(run.line("lead").starts_with("PASS"), "{}", run.stdout);
}

/// A first prompt test-call cannot read (the config it is given points at
/// a prompts folder without the greeting) does not stop the call: a note
/// says why, and speech is checked without identifying it.
#[test]
fn an_unreadable_first_prompt_still_places_the_call() {
    let agent = start_agent("tc-unreadable", &manifest_dir().join("prompts"), 6);
    let cfg = config_as_run(&agent);
    let empty = scratch_dir("tc-no-prompts");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&manifest_dir().join("prompts").display().to_string(), &empty.display().to_string());
    std::fs::write(&cfg, text).unwrap();
    let run = test_call(&["--config", cfg.to_str().unwrap(), "--timeout", "5"]);
    assert!(run.success, "{}{}\nagent:\n{}", run.stdout, run.stderr, agent.log());
    assert!(
        run.stdout.lines().any(|l| l.starts_with("note: cannot read the first prompt of line default step greeting")),
        "{}",
        run.stdout
    );
    assert!(run.line("answered").starts_with("PASS"), "{}", run.stdout);
    assert!(run.line("prompt heard").contains("not identified as our greeting"), "{}", run.stdout);
}
