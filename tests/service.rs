//! Running as a service, with real processes: the systemd unit checked by
//! `systemd-analyze verify`, sd_notify READY/STOPPING read from the
//! datagram socket systemd would give, `[log] format = "json"` on a real
//! call, and SIGHUP reloads under SIPp calls: a changed greeting heard (from
//! the RTP) on the next call while the call in progress keeps the old
//! script, a broken config refused with the old one running on, and a
//! webhook added that the next call's lead reaches.

mod common;

use backstop_core::media::g711::Law;
use backstop_core::media::prompt::Prompt;
use common::receiver::{Receiver, SECRET, key};
use common::scenario::*;
use common::*;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn expect_ok(run: &SippRun, agent: &AgentProc) {
    expect_ok_log(run, &agent.log());
}

fn expect_ok_log(run: &SippRun, log: &str) {
    assert!(
        run.success,
        "SIPp failed (exit {:?}):\n{}\nmessages:\n{}\nagent log:\n{log}",
        run.code, run.errors, run.messages,
    );
}

/// A prompts directory of the test's own, `name.wav` copied from the
/// shipped prompt `from` for each pair: a file the test can replace.
fn prompts_dir(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = scratch_dir(name);
    for (name, from) in files {
        put_prompt(&dir, name, from);
    }
    dir
}

/// Replace `dir/name.wav` with the shipped prompt `from`.
fn put_prompt(dir: &Path, name: &str, from: &str) {
    std::fs::copy(manifest_dir().join(format!("prompts/{from}.wav")), dir.join(format!("{name}.wav"))).unwrap();
}

/// The shipped prompt `name` as the agent sends it (μ-law frames of 160 bytes).
fn frames(name: &str) -> Vec<Vec<u8>> {
    let p: Prompt =
        backstop::media_files::load_prompt(name, &manifest_dir().join(format!("prompts/{name}.wav"))).unwrap();
    p.encoded(Law::Pcmu).chunks(160).map(<[u8]>::to_vec).collect()
}

/// Where `prompt`'s first 10 frames start in `payloads`, if they do.
fn prompt_at(payloads: &[Vec<u8>], prompt: &[Vec<u8>]) -> Option<usize> {
    let head = &prompt[..10];
    (0..=payloads.len().saturating_sub(head.len())).find(|&i| payloads[i..].starts_with(head))
}

fn payloads(packets: &[Captured]) -> Vec<Vec<u8>> {
    packets.iter().map(|(_, _, b)| parse_rtp(b).payload).collect()
}

/// A config for the agent: prompts from `prompts`, its own RTP range, a
/// quick answer, then `rest` (steps, webhooks...).
fn config(prompts: &Path, rtp: (u16, u16), rest: &str) -> String {
    format!(
        "[prompts]\ndir = \"{}\"\n[rtp]\nport_min = {}\nport_max = {}\n[log]\nlevel = \"debug\"\n\
         [sip]\nanswer_after_ms = 100\n{rest}",
        prompts.display(),
        rtp.0,
        rtp.1
    )
}

/// RTP ranges of these tests' agents, inside the range the test helpers keep
/// for agents, one slot per test (the other test binaries run before or after).
fn rtp_slot(i: u16) -> (u16, u16) {
    (38000 + i * 200, 38000 + i * 200 + 198)
}

/// The old script of the reload tests: a greeting, a menu, a goodbye.
const OLD_SCRIPT: &str = "[[step]]\nname = \"greeting\"\nkind = \"play\"\nprompt = \"greeting\"\n\
    [[step]]\nname = \"choice\"\nkind = \"menu\"\nprompt = \"choice\"\noptions.\"1\" = { label = \"yes\" }\n\
    [[step]]\nname = \"goodbye\"\nkind = \"goodbye\"\nprompt = \"goodbye\"\n";

/// The new one: no menu.
const NEW_SCRIPT: &str = "[[step]]\nname = \"greeting\"\nkind = \"play\"\nprompt = \"greeting\"\n\
    [[step]]\nname = \"goodbye\"\nkind = \"goodbye\"\nprompt = \"goodbye\"\n";

fn hup(agent: &AgentProc) {
    let ok = Command::new("kill").args(["-HUP", &agent.pid().to_string()]).status().unwrap();
    assert!(ok.success(), "kill -HUP");
}

fn alive(agent: &AgentProc) -> bool {
    Command::new("kill").args(["-0", &agent.pid().to_string()]).status().unwrap().success()
}

/// Wait (bounded) until the log holds `needle` at least `n` times.
fn wait_log(agent: &AgentProc, needle: &str, n: usize, limit: Duration) {
    wait_text(|| agent.log(), needle, n, limit);
}

/// Wait (bounded) until `log()` holds `needle` at least `n` times.
fn wait_text(log: impl Fn() -> String, needle: &str, n: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while log().matches(needle).count() < n {
        assert!(Instant::now() < deadline, "no {needle:?} (x{n}) in the log:\n{}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One call that hears the script through and is hung up on by the agent,
/// its RTP captured.
fn call_and_capture(agent: &AgentProc, name: &str) -> Vec<Captured> {
    call_and_capture_at(agent.addr(), name, || agent.log())
}

/// [`call_and_capture`] to the agent at `addr`, whose log is `log()`.
fn call_and_capture_at(addr: std::net::SocketAddr, name: &str, log: impl Fn() -> String) -> Vec<Captured> {
    let dir = scratch_dir(name);
    let rtp = RtpCapture::start();
    let sc = scenario(name, &[&invite("", OFFER), ANSWERED, &ack(1), AGENT_BYE]);
    let run = run_sipp(&dir, &sc, addr, false, &[("rtp_port", rtp.port.to_string())]);
    std::thread::sleep(Duration::from_millis(200));
    let packets = rtp.finish();
    expect_ok_log(&run, &log());
    let _ = std::fs::remove_dir_all(&dir);
    packets
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(manifest_dir().join("deploy/systemd/backstop.service")).unwrap();
    let keys: Vec<(&str, &str)> = unit
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let get = |k: &str| keys.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    assert_eq!(get("Type"), Some("notify"));
    assert_eq!(get("ExecStart"), Some("/usr/local/bin/backstop run --config /etc/backstop/backstop.toml"));
    assert_eq!(get("ExecReload"), Some("/bin/kill -HUP $MAINPID"));
    // systemd must wait longer than calls may take to finish on SIGTERM.
    let stop: u64 = get("TimeoutStopSec").unwrap().parse().unwrap();
    let grace = backstop::config::Config::default().call.shutdown_grace;
    assert!(Duration::from_secs(stop) > grace, "TimeoutStopSec={stop} must exceed the default grace {grace:?}");
    // 5060 is above 1024: no capability granted.
    assert_eq!(get("CapabilityBoundingSet"), Some(""));
    assert_eq!(get("AmbientCapabilities"), None);
    // The model's loading and the leads.jsonl import come before READY.
    let start: u64 = get("TimeoutStartSec").unwrap().parse().unwrap();
    assert!(start >= 300, "TimeoutStartSec={start}");
    // A reload keeps the environment: the unit says a new variable needs a restart.
    assert!(unit.contains("only when the service starts") && unit.contains("systemctl restart backstop"), "{unit}");

    // verify needs ExecStart to exist: the built binary stands in for /usr/local/bin/backstop.
    let dir = scratch_dir("unit");
    let path = dir.join("backstop.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/backstop", env!("CARGO_BIN_EXE_backstop"))).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package) must be installed");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "systemd-analyze verify failed:\n{text}");
    let about_unit: Vec<&str> = text.lines().filter(|l| l.contains("backstop")).collect();
    assert!(about_unit.is_empty(), "systemd-analyze verify warns about the unit:\n{text}");
    // The hardening, as systemd scores it: exposure at most 2.0 of 10 (the
    // unit scores 1.2 with systemd 252; without hardening a unit scores 9.6).
    let security = |path: &Path| {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=20"])
            .arg(path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.success(), text.lines().last().unwrap_or("").to_string())
    };
    let (ok, score) = security(&path);
    assert!(ok, "exposure above 2.0: {score}");
    let findings = |path: &Path| {
        let out = Command::new("systemd-analyze").args(["security", "--offline=yes"]).arg(path).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let bind = "✗ CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE";
    let plain = findings(&path);
    assert!(!plain.contains(bind) && !plain.contains("✗ AmbientCapabilities="), "{plain}");
    // The drop-in for a SIP port under 1024, next to the unit as in
    // /etc/systemd/system/backstop.service.d/: it verifies, and systemd
    // reads it as granting CAP_NET_BIND_SERVICE (bounding and ambient)
    // outside a private user namespace.
    let dropin = dir.join("backstop.service.d");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::copy(manifest_dir().join("deploy/systemd/backstop.service.d/low-port.conf"), dropin.join("low-port.conf"))
        .unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && !text.contains("backstop"), "the drop-in fails verify:\n{text}");
    let low = findings(&path);
    assert!(low.contains(bind), "the drop-in grants no CAP_NET_BIND_SERVICE:\n{low}");
    assert!(low.contains("✗ AmbientCapabilities="), "{low}");
    assert!(low.contains("✗ PrivateUsers="), "the capability would stay in a private user namespace:\n{low}");
    // The old advice, uncommenting the grant above the unit's empty
    // CapabilityBoundingSet=, is reset by it: the check can tell.
    std::fs::remove_dir_all(&dropin).unwrap();
    let old = unit
        .replace("CapabilityBoundingSet=\n", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\nCapabilityBoundingSet=\n");
    std::fs::write(&path, old.replace("/usr/local/bin/backstop", env!("CARGO_BIN_EXE_backstop"))).unwrap();
    assert!(!findings(&path).contains(bind), "an empty CapabilityBoundingSet= after the grant keeps it");
    let bare = dir.join("bare.service");
    std::fs::write(&bare, format!("[Service]\nExecStart={} run\n", env!("CARGO_BIN_EXE_backstop"))).unwrap();
    assert!(!security(&bare).0, "an unhardened unit passes the same threshold");
    // A broken unit does fail the verify: the check can tell.
    std::fs::write(&path, unit.replace("Type=notify", "Type=notify\nProtectSystem=sometimes")).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("backstop.service"), "a bad key went unnoticed:\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The agent started by hand (AgentProc has no way to set the environment),
/// killed on drop.
struct Raw(Child);

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Datagrams to the notify socket, until one holds `line` (bounded).
fn wait_notify(sock: &UnixDatagram, line: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            let done = msg.lines().any(|l| l == line);
            seen.push(msg);
            if done {
                return seen;
            }
        }
    }
    panic!("no {line} from the agent within {limit:?}; got {seen:?}");
}

/// An OPTIONS to `addr`: does SIP answer within `limit`?
fn sip_answers(addr: std::net::SocketAddr, limit: Duration) -> bool {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let msg = options_request(sock.local_addr().unwrap(), "notify-check");
        let _ = sock.send_to(msg.as_bytes(), addr);
        if let Ok((n, _)) = sock.recv_from(&mut buf)
            && buf[..n].starts_with(b"SIP/2.0 200")
        {
            return true;
        }
    }
    false
}

#[test]
fn sd_notify_says_ready_once_sip_answers_and_stopping_on_sigterm() {
    let dir = scratch_dir("notify");
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    std::fs::write(dir.join("backstop.toml"), config(&manifest_dir().join("prompts"), rtp_slot(0), SKELETON_SCRIPT))
        .unwrap();
    let port = free_port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let mut agent = Raw(Command::new(env!("CARGO_BIN_EXE_backstop"))
        .arg("run")
        .arg("--config")
        .arg(dir.join("backstop.toml"))
        .args(["--listen", &addr.to_string()])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap());
    let log = || std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();

    let seen = wait_notify(&sock, "READY=1", Duration::from_secs(20));
    // Ready means the SIP sockets are bound and served: an OPTIONS now is answered at once.
    assert!(sip_answers(addr, Duration::from_millis(500)), "READY=1 but SIP does not answer; log:\n{}", log());
    let ready = seen.last().unwrap();
    assert!(
        ready.lines().any(|l| l == format!("STATUS=answering calls on {addr}")),
        "READY carries a STATUS: {ready:?}"
    );
    assert!(seen[..seen.len() - 1].iter().all(|m| !m.contains("STOPPING")), "{seen:?}");

    let pid = agent.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let seen = wait_notify(&sock, "STOPPING=1", Duration::from_secs(10));
    assert!(seen.last().unwrap().contains("STATUS=stopping"), "{seen:?}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = agent.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the agent did not exit after SIGTERM; log:\n{}", log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit {status:?}; log:\n{}", log());
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let cfg = config(&manifest_dir().join("prompts"), rtp_slot(1), SKELETON_SCRIPT)
        .replace("level = \"debug\"\n", "level = \"debug\"\nformat = \"json\"\n");
    let mut agent = AgentProc::start_config("json-log", &cfg, rtp_slot(1));
    call_and_capture(&agent, "json-call");
    let lead = agent.wait_leads(1, Duration::from_secs(5)).remove(0);
    assert!(agent.terminate(), "a clean stop; log:\n{}", agent.log());
    let call_id = lead["call_id"].as_str().unwrap();

    let log = agent.log();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() > 10, "{log}");
    let mut in_call = 0;
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\nlog:\n{log}"));
        assert!(["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&v["level"].as_str().unwrap_or("")), "{line}");
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(v["fields"]["message"].is_string(), "{line}");
        if v["span"]["call_id"] == call_id {
            in_call += 1;
        }
    }
    // The call's lines carry its Call-ID, as the text format's span prefix does.
    assert!(in_call >= 5, "{in_call} lines carry call_id {call_id}:\n{log}");
    assert!(
        lines.iter().any(|l| l.contains("\"message\":\"200 OK sent\"") && l.contains(call_id)),
        "no answered line for the call:\n{log}"
    );
}

#[test]
fn sighup_plays_the_new_greeting_to_the_next_call_while_the_call_in_progress_keeps_the_old_script() {
    // Old: greeting = the shipped "name" prompt, then a menu, then goodbye.
    let prompts = prompts_dir("hup-prompts", &[("greeting", "name"), ("choice", "urgency"), ("goodbye", "sorry")]);
    let mut agent = AgentProc::start_config("hup-greeting", &config(&prompts, rtp_slot(2), OLD_SCRIPT), rtp_slot(2));

    // Call 1: presses 1 at the menu 3.4 s after the ACK (the greeting is 1.4 s).
    let dir = scratch_dir("hup-call1");
    let rtp1 = RtpCapture::start();
    let sc = scenario("hup1", &[&invite("", OFFER), ANSWERED, &ack(1), &pause(3400), &info_digit(2, "1"), AGENT_BYE]);
    let addr = agent.addr();
    let keys = [("rtp_port", rtp1.port.to_string())];
    let call1 = std::thread::spawn(move || {
        let run = run_sipp(&dir, &sc, addr, false, &keys);
        (run, dir)
    });
    wait_log(&agent, "200 OK sent", 1, Duration::from_secs(10));
    // While it runs: the greeting file replaced (same name, the "zip" prompt), the menu dropped.
    put_prompt(&prompts, "greeting", "zip");
    std::fs::write(agent.dir.join("backstop.toml"), config(&prompts, rtp_slot(2), NEW_SCRIPT)).unwrap();
    hup(&agent);
    wait_log(&agent, "SIGHUP: config reloaded", 1, Duration::from_secs(10));
    let (run, dir) = call1.join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let packets1 = rtp1.finish();
    expect_ok(&run, &agent);
    let _ = std::fs::remove_dir_all(&dir);
    let log = agent.log();
    let reloaded = log.find("SIGHUP: config reloaded").unwrap();
    let ended = log.find("call ended").expect("call 1 ended");
    assert!(reloaded < ended, "the reload came after call 1 ended:\n{log}");

    // Call 1 finished the old script: its menu answer, and the old greeting then the menu prompt heard.
    let lead1 = agent.wait_leads(1, Duration::from_secs(5)).remove(0);
    assert_eq!(lead1["outcome"], "completed", "{lead1}");
    assert!(lead1["answers"]["choice"].is_object(), "call 1 kept the old script's menu: {lead1}");
    let heard1 = payloads(&packets1);
    assert_eq!(prompt_at(&heard1, &frames("name")), Some(0), "call 1 began with the old greeting");
    assert!(prompt_at(&heard1, &frames("urgency")).is_some(), "call 1 heard the old menu prompt");

    // Call 2: the new greeting (from the replaced file) and no menu.
    let packets2 = call_and_capture(&agent, "hup-call2");
    let heard2 = payloads(&packets2);
    assert_eq!(prompt_at(&heard2, &frames("zip")), Some(0), "call 2 begins with the new greeting");
    assert_eq!(prompt_at(&heard2, &frames("name")), None, "call 2 heard the old greeting");
    assert_eq!(prompt_at(&heard2, &frames("urgency")), None, "call 2 heard the dropped menu");
    // The goodbye follows the new greeting (a frame or two of silence between
    // prompts may come with it), and nothing of the old script's in between.
    let zip = frames("zip");
    let goodbye = prompt_at(&heard2, &frames("sorry")).expect("call 2 heard the goodbye");
    assert!(
        goodbye >= zip.len() && goodbye <= zip.len() + 2,
        "goodbye at frame {goodbye}, after {} of greeting",
        zip.len()
    );
    assert_eq!(&heard2[..zip.len()], &zip[..], "the whole new greeting");
    assert!(heard2.len() <= goodbye + frames("sorry").len() + 2, "{} frames after the goodbye", heard2.len() - goodbye);
    // Only the script and a prompt changed; --listen and --data-dir were kept, not taken for changes.
    assert!(!agent.log().contains("needs a restart"), "{}", agent.log());
    let lead2 = agent.wait_leads(2, Duration::from_secs(5)).remove(1);
    assert_eq!(lead2["outcome"], "completed", "{lead2}");
    assert!(lead2["answers"].as_object().is_none_or(|a| a.is_empty()), "{lead2}");
    assert!(agent.terminate(), "a clean stop; log:\n{}", agent.log());
    let _ = std::fs::remove_dir_all(&prompts);
}

#[test]
fn a_broken_config_on_sighup_is_logged_and_the_old_one_runs_on() {
    let prompts = prompts_dir("hup-bad-prompts", &[("greeting", "name"), ("goodbye", "sorry")]);
    let good = config(&prompts, rtp_slot(3), NEW_SCRIPT);
    let mut agent = AgentProc::start_config("hup-bad", &good, rtp_slot(3));
    // The greeting file changes on disk; only a reload that succeeds would play it.
    put_prompt(&prompts, "greeting", "zip");

    // A syntax error.
    std::fs::write(agent.dir.join("backstop.toml"), format!("{good}\n[sip\nlisten = ")).unwrap();
    hup(&agent);
    wait_log(&agent, "SIGHUP: config not reloaded", 1, Duration::from_secs(10));
    wait_log(&agent, "SIGHUP: the config in use runs on unchanged", 1, Duration::from_secs(5));
    // A prompt file that does not exist.
    std::fs::write(
        agent.dir.join("backstop.toml"),
        good.replace("prompt = \"goodbye\"", "prompt = \"no_such_prompt\""),
    )
    .unwrap();
    hup(&agent);
    wait_log(&agent, "SIGHUP: the config in use runs on unchanged", 2, Duration::from_secs(10));
    // A webhook whose secret's environment variable is not set.
    let hook = "[[webhook]]\nurl = \"http://127.0.0.1:9/hook\"\nsecret_env = \"BACKSTOP_TEST_NO_SUCH_SECRET\"\n";
    std::fs::write(agent.dir.join("backstop.toml"), format!("{good}\n{hook}")).unwrap();
    hup(&agent);
    wait_log(&agent, "SIGHUP: the config in use runs on unchanged", 3, Duration::from_secs(10));
    let log = agent.log();
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("SIGHUP: config not reloaded")).collect();
    assert!(refused.len() >= 3, "{log}");
    assert!(refused.iter().any(|l| l.contains("no_such_prompt")), "the missing prompt is named:\n{log}");
    let secret =
        refused.iter().find(|l| l.contains("BACKSTOP_TEST_NO_SUCH_SECRET")).expect("the missing secret is named");
    assert!(
        secret.contains("restart the agent"),
        "a new environment variable needs a restart, and the log says so: {secret}"
    );
    assert!(!log.contains("delivery worker started sink=webhook"), "{log}");
    assert!(!log.contains("SIGHUP: config reloaded"), "{log}");
    assert!(alive(&agent), "the agent ended on a bad reload:\n{log}");

    // The next call runs the old config: the greeting as loaded at the start.
    let heard = payloads(&call_and_capture(&agent, "hup-bad-call"));
    assert_eq!(prompt_at(&heard, &frames("name")), Some(0), "the old greeting");
    assert_eq!(prompt_at(&heard, &frames("zip")), None);
    assert!(prompt_at(&heard, &frames("sorry")).is_some(), "the old goodbye");
    assert_eq!(agent.wait_leads(1, Duration::from_secs(5))[0]["outcome"], "completed");
    assert!(agent.terminate(), "a clean stop; log:\n{}", agent.log());
    let _ = std::fs::remove_dir_all(&prompts);
}

#[test]
fn a_webhook_added_on_sighup_gets_the_next_calls_lead() {
    let rx = Receiver::start(free_port(), key(), vec![]);
    let prompts = manifest_dir().join("prompts");
    let before = config(&prompts, rtp_slot(4), SKELETON_SCRIPT);
    let mut agent = AgentProc::start_config("hup-webhook", &before, rtp_slot(4));
    call_and_capture(&agent, "hup-wh-before");
    let first = agent.wait_leads(1, Duration::from_secs(5))[0]["call_id"].as_str().unwrap().to_string();

    let hook = format!("[[webhook]]\nurl = \"http://127.0.0.1:{}/hook\"\nsecret = \"{SECRET}\"\n", rx.port);
    // Also a narrower RTP range: that only a restart can change.
    let narrower =
        before.replace(&format!("port_max = {}", rtp_slot(4).1), &format!("port_max = {}", rtp_slot(4).1 - 2));
    std::fs::write(agent.dir.join("backstop.toml"), format!("{narrower}\n{hook}")).unwrap();
    hup(&agent);
    wait_log(&agent, "SIGHUP: config reloaded", 1, Duration::from_secs(10));
    let log = agent.log();
    let line = log.lines().find(|l| l.contains("SIGHUP: config reloaded")).unwrap();
    // Named by its label, never its URL (which may hold a secret), here and in every other line.
    assert!(line.contains("sinks_added=webhook#"), "{line}");
    assert!(line.contains("sinks_kept=1"), "the leads file's sink is kept: {line}");
    let restart: Vec<&str> = log.lines().filter(|l| l.contains("needs a restart")).collect();
    assert_eq!(restart.len(), 1, "{log}");
    assert!(restart[0].contains("SIGHUP: [rtp] changed"), "{log}");
    // The kept sink's worker was not restarted.
    assert_eq!(log.matches("delivery worker started sink=file:leads.jsonl").count(), 1, "{log}");
    assert_eq!(log.matches("delivery worker started sink=webhook#").count(), 1, "{log}");

    call_and_capture(&agent, "hup-wh-after");
    let second = agent.wait_leads(2, Duration::from_secs(5))[1]["call_id"].as_str().unwrap().to_string();
    let seen = rx.wait_for(Duration::from_secs(15), "the next call's lead.completed", |s| {
        s.iter().any(|e| e.kind() == "lead.completed" && e.call_id() == second)
    });
    assert!(seen.iter().all(|s| s.signature_ok), "signed with the reloaded secret");
    // Events committed before the reload were not for this webhook.
    std::thread::sleep(Duration::from_millis(500));
    assert!(rx.seen().iter().all(|s| s.call_id() != first), "the earlier call's events reached the new webhook");
    assert!(agent.terminate(), "a clean stop; log:\n{}", agent.log());
    let url = format!("127.0.0.1:{}/hook", rx.port);
    let log = agent.log();
    assert!(log.contains("sinks_added=webhook#") && !log.contains(&url), "the webhook's URL in the log:\n{log}");
}

/// `backstop run` started by hand in `dir` (its `backstop.toml`, its log in
/// `agent.log`), on `addr`, with no `--data-dir`, and `NOTIFY_SOCKET` when given.
fn start_raw(dir: &Path, addr: std::net::SocketAddr, notify: Option<&Path>) -> Raw {
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_backstop"));
    cmd.arg("run").arg("--config").arg(dir.join("backstop.toml")).args(["--listen", &addr.to_string()]);
    if let Some(sock) = notify {
        cmd.env("NOTIFY_SOCKET", sock);
    }
    Raw(cmd.env("NO_COLOR", "1").stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap())
}

/// Wait (bounded) for the raw agent's exit; its status.
fn exited(agent: &mut Raw, limit: Duration, log: impl Fn() -> String) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = agent.0.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "the agent did not exit; log:\n{}", log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_sighup_that_changes_the_data_dir_moves_nothing_there() {
    let dir = scratch_dir("hup-data-dir");
    let (data1, data2) = (dir.join("data1"), dir.join("data2"));
    let cfg = |data: &Path, rest: &str| {
        format!(
            "[data]\ndir = \"{}\"\n{}{rest}",
            data.display(),
            config(&manifest_dir().join("prompts"), rtp_slot(5), SKELETON_SCRIPT)
        )
    };
    std::fs::write(dir.join("backstop.toml"), cfg(&data1, "")).unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut agent = start_raw(&dir, addr, None);
    let log = || std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
    assert!(sip_answers(addr, Duration::from_secs(20)), "the agent did not start; log:\n{}", log());

    // A new [data] dir (a restart's business) and a new file sink, events.jsonl (a reload's).
    std::fs::write(dir.join("backstop.toml"), cfg(&data2, "[leads_file]\nevents = true\n")).unwrap();
    assert!(Command::new("kill").args(["-HUP", &agent.0.id().to_string()]).status().unwrap().success());
    wait_text(log, "SIGHUP: config reloaded", 1, Duration::from_secs(10));
    let text = log();
    let restart: Vec<&str> = text.lines().filter(|l| l.contains("needs a restart")).collect();
    // --listen given on the command line is applied to the reload: only [data] differs.
    assert_eq!(restart.len(), 1, "{text}");
    assert!(restart[0].contains("[data] dir changed"), "{text}");
    assert!(text.contains("sinks_added=file:events.jsonl"), "{text}");

    call_and_capture_at(addr, "hup-data-dir-call", log);
    // The lead and its events are where the outbox and the recordings are: the running data dir.
    let deadline = Instant::now() + Duration::from_secs(5);
    let leads = data1.join("leads.jsonl");
    let events = data1.join("events.jsonl");
    let has_lead = || std::fs::read_to_string(&events).is_ok_and(|t| t.contains("lead.completed"));
    while !(leads.exists() && has_lead()) {
        assert!(Instant::now() < deadline, "no lead in {}; log:\n{}", data1.display(), log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read_to_string(&leads).unwrap().lines().count(), 1);
    assert!(!data2.exists(), "a half-applied data dir: {:?}", std::fs::read_dir(&data2).map(|d| d.count()));
    assert!(Command::new("kill").args(["-TERM", &agent.0.id().to_string()]).status().unwrap().success());
    assert!(exited(&mut agent, Duration::from_secs(15), log).success(), "{}", log());
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sigterm_right_at_ready_drains_and_a_sighup_during_the_drain_is_ignored() {
    let prompts = prompts_dir("drain-prompts", &[("greeting", "name"), ("choice", "urgency"), ("goodbye", "sorry")]);
    let dir = scratch_dir("drain");
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    std::fs::write(dir.join("backstop.toml"), config(&prompts, rtp_slot(6), OLD_SCRIPT)).unwrap();
    let log = || std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();

    // 1. SIGTERM the moment READY=1 arrives: the handlers are in place, so
    // the agent drains and exits cleanly (not killed by the default action).
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut agent = start_raw(&dir, addr, Some(&sock_path));
    wait_notify(&sock, "READY=1", Duration::from_secs(20));
    assert!(Command::new("kill").args(["-TERM", &agent.0.id().to_string()]).status().unwrap().success());
    let status = exited(&mut agent, Duration::from_secs(15), log);
    assert!(status.success(), "exit {status:?}; log:\n{}", log());
    assert!(log().contains("signal received: refusing new calls"), "{}", log());
    drop(agent);

    // 2. A call holds the drain open; a SIGHUP then is logged and ignored.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut agent = start_raw(&dir, addr, Some(&sock_path));
    wait_notify(&sock, "READY=1", Duration::from_secs(20));
    let call_dir = scratch_dir("drain-call");
    let rtp = RtpCapture::start();
    // The menu waits for a key; the caller hangs up 3 s after the answer.
    let sc = scenario("drain", &[&invite("", OFFER), ANSWERED, &ack(1), &pause(3000), CALLER_BYE]);
    let keys = [("rtp_port", rtp.port.to_string())];
    let call = {
        let call_dir = call_dir.clone();
        std::thread::spawn(move || run_sipp(&call_dir, &sc, addr, false, &keys))
    };
    wait_text(log, "200 OK sent", 1, Duration::from_secs(10));
    let pid = agent.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    wait_notify(&sock, "STOPPING=1", Duration::from_secs(5));
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    wait_text(log, "SIGHUP: ignored, the agent is shutting down", 1, Duration::from_secs(5));
    let run = call.join().unwrap();
    drop(rtp.finish());
    let status = exited(&mut agent, Duration::from_secs(15), log);
    assert!(status.success(), "exit {status:?}; log:\n{}", log());
    expect_ok_log(&run, &log());
    // Nothing said to systemd after STOPPING, and nothing reloaded.
    let mut buf = [0u8; 4096];
    let mut after = Vec::new();
    while let Ok(n) = sock.recv(&mut buf) {
        after.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    assert!(after.iter().all(|m| !m.contains("READY=1") && !m.contains("RELOADING=1")), "{after:?}");
    assert!(!log().contains("SIGHUP: config reloaded"), "{}", log());
    drop(agent);
    let _ = std::fs::remove_dir_all(&call_dir);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&prompts);
}
