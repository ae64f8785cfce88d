//! Blind transfer by REFER (issue 13), against real peers on loopback.
//!
//! The agent's script reaches a `transfer` step: it sends REFER in the
//! caller's dialog (RFC 3515), answers the caller's NOTIFYs (message/sipfrag)
//! with 200, and ends its leg with BYE only after a final 2xx NOTIFY (RFC 5589
//! §6.1). When a target fails (REFER refused, a non-2xx final sipfrag, no
//! final NOTIFY in time) it tries the next, then goes on to `on_failure`: the
//! call is still its own, and the caller hears the next prompt.
//!
//! The peers, in tests/transfer/:
//! - SIPp callers (caller_*.xml) scripted to answer the REFER in each way that
//!   matters: 202 + NOTIFY 100 + NOTIFY 200 (over UDP and TCP), 202 + NOTIFY
//!   486, 405, 202 and no NOTIFY, 403 for a first target and 202 + 200 for the
//!   second, and a caller hanging up mid-transfer. SIPp enforces the order of
//!   the messages: a BYE from the agent before the 200 to the final NOTIFY is
//!   an unexpected message and fails the call;
//! - baresip (baresip/config, baresip/accounts) as a real UA carrying the
//!   transfer out: on REFER it calls the target (a SIPp UAS) and NOTIFYs us;
//! - Kamailio (kamailio.cfg) as a Record-Route proxy between a SIPp caller and
//!   the agent, so REFER and NOTIFY travel in-dialog through the route set;
//! - a stand-in agent (standin_agent.xml, SIPp), against which the test's own
//!   peers are checked, so that a failure here can be told apart from a
//!   broken peer.
//!
//! With TRANSFER_CAPTURE_DIR set, the SIP exchanges of a successful and of a
//! failed transfer, as the caller saw them on the wire, are written there as
//! text (tests/transfer/captured/ holds a copy).

mod common;

use backstop_core::media::g711::Law;
use common::kamailio::Kamailio;
use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The called number; the agent's Referred-By names the INVITE's To URI.
const CALLED: &str = "+15559990000";
/// A target the SIPp callers never dial (they only report on it).
const ONCALL: &str = "sip:oncall@127.0.0.1:5090";
const BACKUP_TEL: &str = "tel:+15550001111";

fn peer_file(name: &str) -> PathBuf {
    manifest_dir().join("tests/transfer").join(name)
}

fn ruri(agent: SocketAddr) -> String {
    format!("sip:{CALLED}@{agent}")
}

// ---------------------------------------------------------------------------
// The agent's config: a short prompt, the transfer step, a failure prompt.

/// `hello` (the "name" prompt, 1.4 s), then the transfer step to `targets`,
/// with `on_failure` the "sorry" prompt and hang up. Events go to
/// DATA_DIR/events.jsonl too.
fn agent_config(targets: &[&str], timeout_ms: Option<u64>, prompt: Option<&str>) -> String {
    let targets = targets.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(", ");
    let mut step = format!("[[step]]\nname = \"emergency\"\nkind = \"transfer\"\ntargets = [{targets}]\n");
    if let Some(p) = prompt {
        step.push_str(&format!("prompt = \"{p}\"\n"));
    }
    if let Some(t) = timeout_ms {
        step.push_str(&format!("timeout_ms = {t}\n"));
    }
    step.push_str("on_failure = \"sorry\"\n");
    format!(
        "[sip]\nanswer_after_ms = 100\n\n[leads_file]\nevents = true\n\n\
         [[step]]\nname = \"hello\"\nkind = \"play\"\nprompt = \"name\"\n\n\
         {step}\n\
         [[step]]\nname = \"sorry\"\nkind = \"goodbye\"\nprompt = \"sorry\"\n"
    )
}

fn pcmu(prompt: &str) -> Vec<u8> {
    backstop::media_files::load_prompt(prompt, &manifest_dir().join(format!("prompts/{prompt}.wav")))
        .unwrap()
        .encoded(Law::Pcmu)
        .to_vec()
}

fn events(agent: &AgentProc) -> Vec<Value> {
    std::fs::read_to_string(agent.dir.join("data/events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Wait (bounded) for an event of type `kind` in events.jsonl.
fn wait_event(agent: &AgentProc, kind: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(e) = events(agent).into_iter().find(|e| e["type"] == kind) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} event in events.jsonl: {:?}\nlog:\n{}",
            events(agent).iter().map(|e| e["type"].clone()).collect::<Vec<_>>(),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// After the call's lead.completed event: no call.transferred was published.
fn assert_no_transferred_event(agent: &AgentProc) {
    wait_event(agent, "lead.completed", Duration::from_secs(10));
    let kinds: Vec<Value> = events(agent).iter().map(|e| e["type"].clone()).collect();
    assert!(!kinds.iter().any(|k| k == "call.transferred"), "a failed transfer published call.transferred: {kinds:?}");
}

// ---------------------------------------------------------------------------
// SIPp's -trace_msg log, read back as messages with their wall-clock times.

#[derive(Debug, Clone)]
struct Msg {
    at: SystemTime,
    /// Sent by the SIPp side (the caller), else received by it.
    sent: bool,
    transport: String,
    /// The message, LF line ends.
    text: String,
}

/// Compact header forms (RFC 3261 §7.3.3, RFC 3515, RFC 3892, RFC 6665).
fn long_name(name: &str) -> &str {
    match name.to_ascii_lowercase().as_str() {
        "v" => "Via",
        "f" => "From",
        "t" => "To",
        "i" => "Call-ID",
        "m" => "Contact",
        "l" => "Content-Length",
        "c" => "Content-Type",
        "r" => "Refer-To",
        "b" => "Referred-By",
        "o" => "Event",
        "k" => "Supported",
        _ => name,
    }
}

impl Msg {
    fn start_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    /// Every value of header `name` (compact forms too; comma-joined values as written).
    fn headers(&self, name: &str) -> Vec<&str> {
        let head = self.text.split("\n\n").next().unwrap_or("");
        head.lines()
            .skip(1)
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                long_name(n.trim()).eq_ignore_ascii_case(name).then_some(v.trim())
            })
            .collect()
    }

    fn header(&self, name: &str) -> &str {
        self.headers(name).first().copied().unwrap_or("")
    }

    fn body(&self) -> &str {
        self.text.split_once("\n\n").map(|(_, b)| b.trim()).unwrap_or("")
    }

    fn is_request(&self, method: &str) -> bool {
        self.start_line().starts_with(&format!("{method} "))
    }

    fn is_response(&self, code: u16, method: &str) -> bool {
        self.start_line().starts_with(&format!("SIP/2.0 {code} ")) && self.cseq().1 == method
    }

    fn cseq(&self) -> (u32, String) {
        let mut it = self.header("CSeq").split_whitespace();
        let n = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        (n, it.next().unwrap_or("").to_string())
    }
}

/// The `tag` parameter of a From/To value.
fn tag(value: &str) -> &str {
    value.split(';').skip(1).find_map(|p| p.trim().strip_prefix("tag=")).unwrap_or("")
}

/// The URI inside <...> (or the whole value up to its parameters).
fn uri_of(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or("").trim(),
    }
}

fn parse_trace(log: &str) -> Vec<Msg> {
    let mut out: Vec<Msg> = Vec::new();
    let mut cur: Option<(SystemTime, String, Vec<&str>)> = None;
    let flush = |cur: Option<(SystemTime, String, Vec<&str>)>, out: &mut Vec<Msg>| {
        if let Some((at, what, lines)) = cur {
            let text = lines.join("\n").replace('\r', "");
            let text = text.trim_matches('\n').to_string() + "\n";
            out.push(Msg {
                at,
                sent: what.contains(" sent"),
                transport: what.split_whitespace().next().unwrap_or("").to_string(),
                text,
            });
        }
    };
    let mut lines = log.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("----------")
            && let Ok(at) = humantime::parse_rfc3339_weak(rest.trim_start_matches('-').trim())
        {
            flush(cur.take(), &mut out);
            let what = lines.next().unwrap_or("").to_string();
            cur = Some((at, what, Vec::new()));
        } else if let Some((_, _, body)) = cur.as_mut() {
            body.push(line);
        }
    }
    flush(cur, &mut out);
    out
}

/// One SIPp run: its verdict and what it sent and received.
struct SippOut {
    success: bool,
    code: Option<i32>,
    msgs: Vec<Msg>,
    errors: String,
    dir: PathBuf,
}

impl SippOut {
    fn from_dir(dir: &Path, status: Option<std::process::ExitStatus>, stderr: String) -> SippOut {
        let raw = std::fs::read_to_string(dir.join("messages.log")).unwrap_or_default();
        SippOut {
            success: status.is_some_and(|s| s.success()),
            code: status.and_then(|s| s.code()),
            msgs: parse_trace(&raw),
            errors: format!("{stderr}\n{}", std::fs::read_to_string(dir.join("errors.log")).unwrap_or_default()),
            dir: dir.to_path_buf(),
        }
    }

    fn received(&self) -> impl Iterator<Item = (usize, &Msg)> {
        self.msgs.iter().enumerate().filter(|(_, m)| !m.sent)
    }

    fn sent(&self) -> impl Iterator<Item = (usize, &Msg)> {
        self.msgs.iter().enumerate().filter(|(_, m)| m.sent)
    }

    /// The first message (index, message) matching `pred`, or a panic naming `what`.
    fn find(&self, what: &str, pred: impl Fn(&Msg) -> bool) -> (usize, &Msg) {
        self.msgs
            .iter()
            .enumerate()
            .find(|(_, m)| pred(m))
            .unwrap_or_else(|| panic!("no {what} in\n{}", self.outline()))
    }

    /// The start lines, in order, with who sent them.
    fn outline(&self) -> String {
        self.msgs
            .iter()
            .map(|m| format!("{} {}  [{}]", if m.sent { "->" } else { "<-" }, m.start_line(), m.header("CSeq")))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A SIPp command with the arguments every run here has: loopback, one call,
/// bounded, every message traced (wall-clock times in UTC).
fn sipp_command(dir: &Path, port: u16) -> Command {
    let mut cmd = Command::new("sipp");
    cmd.args(["-m", "1", "-l", "1", "-i", "127.0.0.1", "-nostdin"])
        .args(["-p", &port.to_string(), "-mp", &free_media_port().to_string()])
        .args(["-timeout", "60s", "-timeout_error", "-trace_msg", "-trace_err"])
        .arg("-message_file")
        .arg(dir.join("messages.log"))
        .arg("-error_file")
        .arg(dir.join("errors.log"))
        .env("TZ", "UTC")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

fn push_keys(cmd: &mut Command, keys: &[(&str, String)]) {
    for (k, v) in keys {
        cmd.arg("-key").arg(k).arg(v);
    }
}

/// SIPp gave up at start because a port it was given was taken meanwhile
/// (free_port checks a port free, but another process may bind it before SIPp does).
fn lost_a_port(out: &SippOut) -> bool {
    out.msgs.is_empty() && (out.errors.contains("Unable to bind") || out.errors.contains("Address already in use"))
}

/// Run the caller scenario `file` (in tests/transfer/) against `remote`, to the end.
fn run_caller(name: &str, file: &str, remote: SocketAddr, tcp: bool, keys: &[(&str, String)]) -> SippOut {
    for _ in 0..3 {
        let dir = scratch_dir(name);
        let mut cmd = sipp_command(&dir, free_port());
        cmd.arg(remote.to_string()).arg("-sf").arg(peer_file(file)).stderr(Stdio::piped());
        if tcp {
            cmd.args(["-t", "t1"]);
        }
        push_keys(&mut cmd, keys);
        let out = cmd.output().expect("sipp must be installed (scripts/test.sh installs sip-tester)");
        let run = SippOut::from_dir(&dir, Some(out.status), String::from_utf8_lossy(&out.stderr).into_owned());
        if !lost_a_port(&run) {
            return run;
        }
        eprintln!("{name}: SIPp lost a port at start, again with others: {}", run.errors.trim());
    }
    panic!("{name}: SIPp could not bind its ports three times running");
}

/// A SIPp UAS in the background (the transfer target, or the stand-in agent); killed on drop.
struct SippUas {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl SippUas {
    /// `scenario`: SIPp arguments naming it, e.g. ["-sn", "uas"].
    fn start(name: &str, scenario: &[&str], keys: &[(&str, String)]) -> SippUas {
        for _ in 0..3 {
            let dir = scratch_dir(name);
            let port = free_port();
            let mut cmd = sipp_command(&dir, port);
            cmd.args(scenario).stderr(Stdio::null());
            push_keys(&mut cmd, keys);
            let mut child = cmd.spawn().expect("sipp must be installed");
            // SIPp binds its sockets within milliseconds, or gives up (a port
            // taken meanwhile by another process): then again with others.
            std::thread::sleep(Duration::from_millis(400));
            match child.try_wait() {
                Ok(None) => return SippUas { child: Some(child), dir, port },
                _ => eprintln!(
                    "{name}: SIPp exited at start, again with other ports: {}",
                    std::fs::read_to_string(dir.join("errors.log")).unwrap_or_default().trim()
                ),
            }
        }
        panic!("{name}: SIPp could not start three times running");
    }

    fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// Wait up to `limit` for its one call to end (then kill it) and read what it saw.
    fn finish(mut self, limit: Duration) -> SippOut {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Ok(Some(s)) = child.try_wait() {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        SippOut::from_dir(&self.dir, status, String::new())
    }
}

impl Drop for SippUas {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// The caller's RTP port, with wall-clock arrival times (to set against SIPp's).

struct Tap {
    cap: RtpCapture,
    t0: Instant,
    s0: SystemTime,
}

impl Tap {
    fn start() -> Tap {
        let cap = RtpCapture::start();
        Tap { cap, t0: Instant::now(), s0: SystemTime::now() }
    }

    fn port(&self) -> String {
        self.cap.port.to_string()
    }

    /// (arrival, RTP payload) per packet.
    fn finish(self) -> Vec<(SystemTime, Vec<u8>)> {
        let (t0, s0) = (self.t0, self.s0);
        self.cap
            .finish()
            .into_iter()
            .map(|(at, _, b)| (s0 + at.saturating_duration_since(t0), parse_rtp(&b).payload))
            .collect()
    }
}

fn ms_between(a: SystemTime, b: SystemTime) -> i64 {
    match b.duration_since(a) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// The call went on into `on_failure`: the last packets the caller received
/// are the whole `prompt`, byte for byte, the first of them sent only after
/// the transfer had failed (`failed_at`, give or take `early_ms`), played out
/// in real time, and the agent's BYE came after them.
fn assert_prompt_after(
    packets: &[(SystemTime, Vec<u8>)],
    prompt: &str,
    failed_at: SystemTime,
    bye_at: SystemTime,
    early_ms: i64,
) {
    let expected = pcmu(prompt);
    let n = expected.len() / 160;
    assert!(packets.len() >= n, "only {} RTP packets reached the caller; the {prompt} prompt has {n}", packets.len());
    let tail = &packets[packets.len() - n..];
    let payload: Vec<u8> = tail.iter().flat_map(|(_, p)| p.clone()).collect();
    assert!(payload == expected, "the last {n} RTP packets the caller got are not the {prompt} prompt");
    let (first, last) = (tail[0].0, tail[n - 1].0);
    let after_failure = ms_between(failed_at, first);
    assert!(after_failure >= -early_ms, "the {prompt} prompt began {after_failure} ms after the failure");
    assert!(after_failure < 3000, "the {prompt} prompt began only {after_failure} ms after the failure");
    let span = ms_between(first, last);
    let length = (n as i64 - 1) * 20;
    assert!(span >= length * 9 / 10, "the {prompt} prompt ({length} ms) came in {span} ms");
    // The agent's BYE goes out as the prompt's last frame is due, so that frame
    // may arrive a packet time after it: a frame or so of slack, no more.
    let bye_after = ms_between(last, bye_at);
    assert!(bye_after >= -100, "the agent's BYE came {} ms before the end of the {prompt} prompt", -bye_after);
    println!(
        "{prompt}: began {after_failure} ms after the failure, {n} packets over {span} ms, BYE {bye_after} ms after its last"
    );
}

// ---------------------------------------------------------------------------
// What the caller saw of the agent's dialog.

/// The agent's 200 to the INVITE, its REFERs (checked: one per target, in
/// order, in the dialog, with Refer-To, Referred-By and Contact), and the
/// caller's INVITE. Returns the REFERs with their indices.
fn check_refers<'a>(out: &'a SippOut, called_uri: &str, targets: &[&str]) -> Vec<(usize, &'a Msg)> {
    let (_, invite) = out.find("INVITE sent", |m| m.sent && m.is_request("INVITE"));
    let (_, ok) = out.find("200 to the INVITE", |m| !m.sent && m.is_response(200, "INVITE"));
    let allow = ok.header("Allow");
    assert!(
        allow.split(',').any(|a| a.trim() == "NOTIFY"),
        "the agent's 200 to the INVITE does not allow NOTIFY: Allow: {allow}"
    );
    let agent_tag = tag(ok.header("To"));
    let caller_tag = tag(invite.header("From"));
    assert!(!agent_tag.is_empty(), "no To tag in the 200: {}", ok.text);
    let refers: Vec<(usize, &Msg)> = out.received().filter(|(_, m)| m.is_request("REFER")).collect();
    assert_eq!(refers.len(), targets.len(), "one REFER per target expected:\n{}", out.outline());
    let mut last_cseq = 0;
    for ((_, refer), target) in refers.iter().zip(targets) {
        assert_eq!(refer.header("Call-ID"), invite.header("Call-ID"), "REFER outside the dialog:\n{}", refer.text);
        assert_eq!(tag(refer.header("From")), agent_tag, "REFER's From tag is not the agent's:\n{}", refer.text);
        assert_eq!(tag(refer.header("To")), caller_tag, "REFER's To tag is not the caller's:\n{}", refer.text);
        assert_eq!(uri_of(refer.header("Refer-To")), *target, "Refer-To:\n{}", refer.text);
        assert_eq!(
            uri_of(refer.header("Referred-By")),
            called_uri,
            "Referred-By is the INVITE's To URI:\n{}",
            refer.text
        );
        assert!(!refer.header("Contact").is_empty(), "REFER without Contact (RFC 3515 §2.4):\n{}", refer.text);
        let (n, method) = refer.cseq();
        assert_eq!(method, "REFER");
        assert!(n > last_cseq, "REFER CSeq {n} not above {last_cseq}");
        last_cseq = n;
    }
    refers
}

/// Every NOTIFY the caller sent was answered 200 by the agent.
fn assert_notifies_answered(out: &SippOut) {
    for (_, n) in out.sent().filter(|(_, m)| m.is_request("NOTIFY")) {
        let cseq = n.header("CSeq");
        assert!(
            out.received().any(|(_, m)| m.is_response(200, "NOTIFY") && m.header("CSeq") == cseq),
            "NOTIFY {cseq} was not answered 200:\n{}",
            out.outline()
        );
    }
}

fn expect_ok(out: &SippOut, agent: &AgentProc) {
    assert!(
        out.success,
        "SIPp failed (exit {:?}; its files in {}):\n{}\nmessages:\n{}\nagent log:\n{}",
        out.code,
        out.dir.display(),
        out.errors,
        out.outline(),
        agent.log()
    );
}

/// The agent `name` with `config`, called by a SIPp caller running
/// `scenario` (over TCP if `tcp`) with its RTP port `rtp_port`; the caller's
/// run must have succeeded. Returns the agent, the caller's trace and the
/// Request-URI it called.
fn call_agent(name: &str, config: &str, scenario: &str, tcp: bool, rtp_port: String) -> (AgentProc, SippOut, String) {
    let agent = AgentProc::start(name, config);
    let called = ruri(agent.addr());
    let out = run_caller(
        &format!("{name}-caller"),
        scenario,
        agent.addr(),
        tcp,
        &[("ruri", called.clone()), ("rtp_port", rtp_port)],
    );
    expect_ok(&out, &agent);
    (agent, out, called)
}

fn lead_of(agent: &AgentProc) -> Value {
    let lead = agent.wait_leads(1, Duration::from_secs(15)).remove(0);
    println!("transfer: {}", lead["transfer"]);
    lead
}

/// The lead's `transfer`: `status`, `sip_code` and `target` on top, and one attempt per target.
fn assert_transfer(
    lead: &Value,
    status: &str,
    sip_code: Option<u64>,
    target: &str,
    attempts: &[(&str, &str, Option<u64>)],
) {
    let t = &lead["transfer"];
    assert_eq!(t["status"], status, "lead: {lead:#}");
    assert_eq!(t["target"], target, "lead: {lead:#}");
    if let Some(code) = sip_code {
        assert_eq!(t["sip_code"], code, "lead: {lead:#}");
    }
    let got = t["attempts"].as_array().unwrap_or_else(|| panic!("no transfer.attempts: {lead:#}"));
    assert_eq!(got.len(), attempts.len(), "attempts: {lead:#}");
    for (a, (target, status, code)) in got.iter().zip(attempts) {
        assert_eq!(a["target"], *target, "attempt {a}");
        assert_eq!(a["status"], *status, "attempt {a}");
        if let Some(code) = code {
            assert_eq!(a["sip_code"], *code, "attempt {a}");
        }
    }
}

// ---------------------------------------------------------------------------
// The exchange, written out for the closing note.

const KEY_HEADERS: &[&str] = &[
    "Via",
    "Record-Route",
    "Route",
    "From",
    "To",
    "CSeq",
    "Contact",
    "Allow",
    "Refer-To",
    "Referred-By",
    "Event",
    "Subscription-State",
    "Content-Type",
];

/// The exchange as the caller saw it on the wire: time, direction, start
/// line, key headers, and the sipfrag bodies.
fn exchange_text(title: &str, out: &SippOut, peer: &str) -> String {
    let t0 = out.msgs.first().map(|m| m.at).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut s = format!("# {title}\n# As the caller (SIPp, -trace_msg) saw it on the wire; times from the INVITE.\n\n");
    for m in &out.msgs {
        let (from, to) = if m.sent { ("caller", peer) } else { (peer, "caller") };
        s.push_str(&format!(
            "{:>8.3} s  {from} -> {to} ({})  {}\n",
            ms_between(t0, m.at) as f64 / 1000.0,
            m.transport,
            m.start_line()
        ));
        for h in KEY_HEADERS {
            for v in m.headers(h) {
                s.push_str(&format!("             {h}: {v}\n"));
            }
        }
        if m.header("Content-Type").starts_with("message/sipfrag") {
            s.push_str(&format!("             (sipfrag) {}\n", m.body()));
        }
        s.push('\n');
    }
    s
}

fn save_capture(file: &str, text: &str) {
    if let Ok(dir) = std::env::var("TRANSFER_CAPTURE_DIR") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(Path::new(&dir).join(file), text).unwrap();
    }
}

// ---------------------------------------------------------------------------
// SIPp callers.

#[test]
fn notify_200_transfers_and_the_bye_follows_the_final_notify() {
    let tap = Tap::start();
    let (agent, out, called) = call_agent(
        "xfer-ok",
        &agent_config(&[ONCALL], None, Some("connecting")),
        "caller_transferred.xml",
        false,
        tap.port(),
    );
    std::thread::sleep(Duration::from_millis(200));
    let packets = tap.finish();

    let refers = check_refers(&out, &called, &[ONCALL]);
    let (refer_at, refer) = refers[0];
    assert_notifies_answered(&out);
    // Our BYE came after the 200 to the final NOTIFY (SIPp's order enforced it; checked again here).
    let (final_notify, _) =
        out.find("final NOTIFY", |m| m.sent && m.is_request("NOTIFY") && m.body().contains("200 OK"));
    let (final_ok, _) = out.find("200 to the final NOTIFY", |m| {
        !m.sent && m.is_response(200, "NOTIFY") && m.cseq() == out.msgs[final_notify].cseq()
    });
    let (bye, bye_msg) = out.find("agent's BYE", |m| !m.sent && m.is_request("BYE"));
    assert!(refer_at < final_notify && final_notify < final_ok && final_ok < bye, "{}", out.outline());
    assert_eq!(out.received().filter(|(_, m)| m.is_request("BYE")).count(), 1);
    assert!(bye_msg.cseq().0 > refer.cseq().0, "the BYE's CSeq must be above the REFER's");

    // The prompt before the REFER: "name", then "connecting", all of it out before the REFER.
    let mut expected = pcmu("name");
    expected.extend(pcmu("connecting"));
    let before: Vec<u8> = packets.iter().filter(|(at, _)| *at < refer.at).flat_map(|(_, p)| p.clone()).collect();
    assert!(
        before.len() + 2 * 160 >= expected.len() && (expected.starts_with(&before) || before.starts_with(&expected)),
        "before the REFER the caller got {} bytes of audio; the two prompts are {}",
        before.len(),
        expected.len()
    );

    let lead = lead_of(&agent);
    assert_transfer(&lead, "transferred", Some(200), ONCALL, &[(ONCALL, "transferred", Some(200))]);
    assert_eq!(lead["outcome"], "transferred");
    assert_eq!(lead["transport"], "udp");
    let event = wait_event(&agent, "call.transferred", Duration::from_secs(10));
    assert_eq!(event["lead"]["call_id"], lead["call_id"], "{event}");
    assert!(agent.log().contains("playing prompt connecting"));
    save_capture(
        "transferred-udp.txt",
        &exchange_text("Transferred: REFER, 202, NOTIFY 100, NOTIFY 200, BYE (UDP)", &out, "agent"),
    );
}

#[test]
fn notify_200_transfers_over_tcp() {
    let (agent, out, called) =
        call_agent("xfer-tcp", &agent_config(&[ONCALL], None, None), "caller_transferred.xml", true, "40100".into());
    let refers = check_refers(&out, &called, &[ONCALL]);
    assert_eq!(refers[0].1.transport, "TCP");
    assert!(refers[0].1.header("Via").starts_with("SIP/2.0/TCP"), "{}", refers[0].1.text);
    assert_notifies_answered(&out);
    let lead = lead_of(&agent);
    assert_transfer(&lead, "transferred", Some(200), ONCALL, &[(ONCALL, "transferred", Some(200))]);
    assert_eq!(lead["outcome"], "transferred");
    assert_eq!(lead["transport"], "tcp");
    wait_event(&agent, "call.transferred", Duration::from_secs(10));
}

/// A transfer to [`ONCALL`] that fails in the way the caller's `scenario`
/// scripts: the call goes on to `on_failure`, and the caller hears the "sorry"
/// prompt after the failure (no sooner than `failed_at` gives, within
/// `slack_ms`) and before the agent's BYE. The lead records the transfer as
/// `status` with `code`, the call as completed by the agent, and no
/// call.transferred event goes out. Returns the agent and the caller's trace.
fn failed_transfer_goes_on(
    name: &str,
    scenario: &str,
    config: &str,
    failed_at: impl Fn(&SippOut) -> SystemTime,
    slack_ms: i64,
    (status, code): (&str, Option<u64>),
) -> (AgentProc, SippOut) {
    let tap = Tap::start();
    let (agent, out, called) = call_agent(name, config, scenario, false, tap.port());
    std::thread::sleep(Duration::from_millis(200));
    let packets = tap.finish();
    check_refers(&out, &called, &[ONCALL]);
    let failed = failed_at(&out);
    let (_, bye) = out.find("agent's BYE", |m| !m.sent && m.is_request("BYE"));
    assert_prompt_after(&packets, "sorry", failed, bye.at, slack_ms);

    let lead = lead_of(&agent);
    assert_transfer(&lead, status, code, ONCALL, &[(ONCALL, status, code)]);
    assert_eq!(lead["outcome"], "completed");
    assert_eq!(lead["ended_by"], "agent");
    assert!(agent.log().contains("playing prompt sorry"), "{}", agent.log());
    assert_no_transferred_event(&agent);
    (agent, out)
}

#[test]
fn notify_486_fails_and_the_call_goes_on_to_on_failure_with_audio() {
    let (_agent, out) = failed_transfer_goes_on(
        "xfer-busy",
        "caller_busy.xml",
        &agent_config(&[ONCALL], None, None),
        |out| out.find("NOTIFY 486", |m| m.sent && m.is_request("NOTIFY") && m.body().contains("486")).1.at,
        50,
        ("failed", Some(486)),
    );
    assert_notifies_answered(&out);
    save_capture(
        "failed-486.txt",
        &exchange_text("Failed: REFER, 202, NOTIFY 100, NOTIFY 486, on_failure prompt, BYE (UDP)", &out, "agent"),
    );
}

#[test]
fn refer_answered_405_is_rejected_and_the_call_goes_on() {
    let (_agent, out) = failed_transfer_goes_on(
        "xfer-405",
        "caller_refer_405.xml",
        &agent_config(&[ONCALL], None, None),
        |out| out.find("the 405", |m| m.sent && m.start_line().starts_with("SIP/2.0 405")).1.at,
        50,
        ("rejected", Some(405)),
    );
    save_capture(
        "rejected-405.txt",
        &exchange_text("Rejected: REFER answered 405, on_failure prompt, BYE (UDP)", &out, "agent"),
    );
}

#[test]
fn refer_accepted_but_never_notified_times_out_and_the_call_goes_on() {
    let (_agent, out) = failed_transfer_goes_on(
        "xfer-timeout",
        "caller_no_notify.xml",
        &agent_config(&[ONCALL], Some(2000), None),
        // timeout_ms runs from the REFER: the failure prompt no sooner than 2 s after it.
        |out| out.find("the REFER", |m| !m.sent && m.is_request("REFER")).1.at + Duration::from_millis(2000),
        100,
        ("timeout", None),
    );
    save_capture(
        "timeout.txt",
        &exchange_text(
            "Timed out: REFER, 202, no NOTIFY for timeout_ms = 2000, on_failure prompt, BYE (UDP)",
            &out,
            "agent",
        ),
    );
}

#[test]
fn first_target_rejected_then_second_transferred() {
    let (agent, out, called) = call_agent(
        "xfer-two",
        &agent_config(&[BACKUP_TEL, ONCALL], None, None),
        "caller_reject_then_transfer.xml",
        false,
        "40102".into(),
    );
    let refers = check_refers(&out, &called, &[BACKUP_TEL, ONCALL]);
    assert_ne!(refers[0].1.header("Via"), refers[1].1.header("Via"), "the second REFER is a new transaction");
    assert_notifies_answered(&out);
    let lead = lead_of(&agent);
    assert_transfer(
        &lead,
        "transferred",
        Some(200),
        ONCALL,
        &[(BACKUP_TEL, "rejected", Some(403)), (ONCALL, "transferred", Some(200))],
    );
    assert_eq!(lead["outcome"], "transferred");
    wait_event(&agent, "call.transferred", Duration::from_secs(10));
}

#[test]
fn caller_hanging_up_mid_transfer_ends_it_cleanly() {
    let (agent, out, called) =
        call_agent("xfer-hangup", &agent_config(&[ONCALL], None, None), "caller_hangs_up.xml", false, "40104".into());
    check_refers(&out, &called, &[ONCALL]);
    assert!(out.received().all(|(_, m)| !m.is_request("BYE")), "the agent sent a BYE of its own:\n{}", out.outline());
    let lead = lead_of(&agent);
    assert_transfer(&lead, "hung_up", None, ONCALL, &[(ONCALL, "hung_up", None)]);
    assert_eq!(lead["ended_by"], "caller");
    assert_ne!(lead["outcome"], "transferred");
    assert_no_transferred_event(&agent);
}

// ---------------------------------------------------------------------------
// baresip: a real UA that carries the transfer out.

/// 8 kHz mono 16-bit: `secs` of a quiet 440 Hz tone, the caller's "voice".
fn write_tone(path: &Path, secs: u32) {
    let spec =
        hound::WavSpec { channels: 1, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..8000 * secs {
        let v = (2000.0 * (i as f64 * 440.0 * std::f64::consts::TAU / 8000.0).sin()) as i16;
        w.write_sample(v).unwrap();
    }
    w.finalize().unwrap();
}

/// baresip (Debian's 1.0) with the config in tests/transfer/baresip/, dialling `dial`
/// at start. Quits by itself after 60 s at the latest; stopped on drop.
struct Baresip {
    child: Option<Child>,
    dir: PathBuf,
}

impl Baresip {
    fn start(name: &str, dial: &str) -> Baresip {
        for _ in 0..3 {
            let mut b = Self::spawn(name, dial);
            // Ready within a second or two, or it gave up (its SIP port taken meanwhile).
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if b.log().contains("baresip is ready.") {
                    return b;
                }
                let exited = b.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
                if exited || Instant::now() > deadline {
                    eprintln!("{name}: baresip did not start, again with other ports:\n{}", b.log());
                    b.stop();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("{name}: baresip could not start three times running");
    }

    fn spawn(name: &str, dial: &str) -> Baresip {
        let dir = scratch_dir(name);
        write_tone(&dir.join("voice.wav"), 30);
        let rtp = free_media_port();
        let config = std::fs::read_to_string(peer_file("baresip/config"))
            .unwrap()
            .replace("@SIP_PORT@", &free_port().to_string())
            .replace("@RTP_MIN@", &rtp.to_string())
            .replace("@RTP_MAX@", &(rtp + 3).to_string())
            .replace("@AUDIO_SOURCE@", &dir.join("voice.wav").display().to_string());
        std::fs::write(dir.join("config"), config).unwrap();
        std::fs::copy(peer_file("baresip/accounts"), dir.join("accounts")).unwrap();
        std::fs::write(dir.join("contacts"), "").unwrap();
        let log = std::fs::File::create(dir.join("baresip.log")).unwrap();
        let child = Command::new("baresip")
            .arg("-f")
            .arg(&dir)
            .args(["-t", "60", "-e", &format!("/dial {dial}")])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("baresip must be installed (scripts/test.sh installs it)");
        Baresip { child: Some(child), dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("baresip.log")).unwrap_or_default()
    }

    fn wait_log(&self, what: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(what) {
            assert!(Instant::now() < deadline, "baresip never logged {what:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM: baresip hangs up its calls (BYE) and exits; killed after 5 s.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("baresip files kept in {}", self.dir.display());
        }
    }
}

/// The target's SIPp UAS got the transferee's INVITE for `target` and the call ended cleanly.
fn assert_target_called(target: SippOut, target_uri: &str, why: &str) {
    let invite = target.msgs.iter().find(|m| !m.sent && m.is_request("INVITE"));
    let invite =
        invite.unwrap_or_else(|| panic!("the target got no INVITE ({why}):\n{}\n{}", target.outline(), target.errors));
    assert!(invite.start_line().starts_with(&format!("INVITE {target_uri}")), "{}", invite.text);
    assert!(target.success, "the target's SIPp failed ({why}):\n{}\n{}", target.errors, target.outline());
}

#[test]
fn baresip_carries_out_the_transfer() {
    let target = SippUas::start("xfer-bs-target", &["-sn", "uas"], &[]);
    let target_uri = format!("sip:oncall@{}", target.addr());
    let agent = AgentProc::start("xfer-bs", &agent_config(&[&target_uri], None, None));
    let mut baresip = Baresip::start("xfer-bs-ua", &ruri(agent.addr()));
    let lead = agent.wait_leads(1, Duration::from_secs(30)).remove(0);
    println!("transfer: {}", lead["transfer"]);
    let log = baresip.log();
    assert!(log.contains("transferring call"), "baresip did not take the REFER:\n{log}\nagent:\n{}", agent.log());
    baresip.wait_log(&format!("Call established: {target_uri}"), Duration::from_secs(5));
    assert_transfer(&lead, "transferred", Some(200), &target_uri, &[(&target_uri, "transferred", Some(200))]);
    assert_eq!(lead["outcome"], "transferred");
    wait_event(&agent, "call.transferred", Duration::from_secs(10));
    // baresip's call to the target goes on without us; it hangs up as it quits.
    baresip.stop();
    assert_target_called(target.finish(Duration::from_secs(10)), &target_uri, "transferred by baresip");
}

// ---------------------------------------------------------------------------
// Kamailio as a Record-Route proxy between the caller and the agent.

/// Kamailio with tests/transfer/kamailio.cfg: a Record-Route proxy with a
/// single UDP worker, so that it relays messages in the order they came (the
/// config says why that matters).
fn start_kamailio(name: &str) -> Kamailio {
    Kamailio::start(&scratch_dir(name), &std::fs::read_to_string(peer_file("kamailio.cfg")).unwrap())
}

#[test]
fn transfer_through_a_record_route_proxy() {
    let k = start_kamailio("xfer-kam");
    let agent = AgentProc::start("xfer-kam-agent", &agent_config(&[ONCALL], None, None));
    let called = ruri(agent.addr());
    // The caller sends everything to Kamailio; the Request-URI names the agent.
    let out = run_caller(
        "xfer-kam-caller",
        "caller_transferred.xml",
        k.addr(),
        false,
        &[("ruri", called.clone()), ("rtp_port", "40106".into())],
    );
    let klog = k.log();
    assert!(out.success, "SIPp failed:\n{}\n{}\nkamailio:\n{klog}\nagent:\n{}", out.errors, out.outline(), agent.log());
    let proxy = format!("127.0.0.1:{}", k.port);
    let (_, ok) = out.find("200 to the INVITE", |m| !m.sent && m.is_response(200, "INVITE"));
    assert!(ok.header("Record-Route").contains(&proxy), "no Record-Route of the proxy:\n{}", ok.text);
    let refers = check_refers(&out, &called, &[ONCALL]);
    // The REFER came through the proxy: its Via on top, the agent's below.
    let vias = refers[0].1.headers("Via");
    assert!(
        vias.len() == 2 && vias[0].contains(&proxy),
        "the REFER did not come through Kamailio:\n{}",
        refers[0].1.text
    );
    assert_notifies_answered(&out);
    let relayed =
        |method: &str| klog.lines().filter(|l| l.contains(&format!("RELAY in-dialog {method} "))).collect::<Vec<_>>();
    let refer_relays = relayed("REFER");
    assert_eq!(refer_relays.len(), 1, "Kamailio relayed {} REFERs:\n{klog}", refer_relays.len());
    assert!(
        refer_relays[0].contains(&format!("route=[<sip:{proxy}")),
        "the REFER came without our Route: {}",
        refer_relays[0]
    );
    assert_eq!(relayed("NOTIFY").len(), 2, "both NOTIFYs through Kamailio:\n{klog}");
    assert_eq!(relayed("BYE").len(), 1, "the agent's BYE through Kamailio:\n{klog}");
    assert!(!klog.contains("NOROUTE"), "{klog}");
    let lead = lead_of(&agent);
    assert_transfer(&lead, "transferred", Some(200), ONCALL, &[(ONCALL, "transferred", Some(200))]);
    assert_eq!(lead["outcome"], "transferred");
    println!(
        "Kamailio's relays:\n{}",
        klog.lines().filter(|l| l.contains("RELAY") || l.contains("REPLY")).collect::<Vec<_>>().join("\n")
    );
    save_capture(
        "transferred-via-kamailio.txt",
        &exchange_text("Transferred through Kamailio (Record-Route), UDP", &out, "kamailio"),
    );
}

// ---------------------------------------------------------------------------
// The peers themselves, against a SIPp stand-in for the agent.

#[test]
fn peers_work_against_a_stand_in_agent() {
    // The SIPp caller.
    let standin = SippUas::start(
        "xfer-standin",
        &["-sf", peer_file("standin_agent.xml").to_str().unwrap()],
        &[("target", ONCALL.to_string())],
    );
    let called = ruri(standin.addr());
    let out = run_caller(
        "xfer-standin-caller",
        "caller_transferred.xml",
        standin.addr(),
        false,
        &[("ruri", called.clone()), ("rtp_port", "40108".into())],
    );
    let agent_side = standin.finish(Duration::from_secs(10));
    assert!(out.success, "the caller scenario failed against the stand-in:\n{}\n{}", out.errors, out.outline());
    assert!(agent_side.success, "the stand-in failed:\n{}\n{}", agent_side.errors, agent_side.outline());
    assert_eq!(uri_of(out.find("REFER", |m| m.is_request("REFER")).1.header("Refer-To")), ONCALL);

    // baresip: takes the stand-in's REFER and calls the target.
    let target = SippUas::start("xfer-standin-target", &["-sn", "uas"], &[]);
    let target_uri = format!("sip:oncall@{}", target.addr());
    let standin = SippUas::start(
        "xfer-standin-bs",
        &["-sf", peer_file("standin_agent.xml").to_str().unwrap()],
        &[("target", target_uri.clone())],
    );
    let mut baresip = Baresip::start("xfer-standin-ua", &ruri(standin.addr()));
    let agent_side = standin.finish(Duration::from_secs(20));
    assert!(
        agent_side.success,
        "stand-in vs baresip:\n{}\n{}\nbaresip:\n{}",
        agent_side.errors,
        agent_side.outline(),
        baresip.log()
    );
    let notifies: Vec<&Msg> = agent_side.msgs.iter().filter(|m| !m.sent && m.is_request("NOTIFY")).collect();
    assert!(notifies.last().is_some_and(|n| n.body().starts_with("SIP/2.0 200")), "{}", agent_side.outline());
    baresip.wait_log(&format!("Call established: {target_uri}"), Duration::from_secs(5));
    baresip.stop();
    assert_target_called(target.finish(Duration::from_secs(10)), &target_uri, "stand-in");
}

/// SIP over one TCP connection, read by Content-Length, with a deadline.
struct SipConn {
    stream: std::net::TcpStream,
    buf: Vec<u8>,
}

impl SipConn {
    fn open(agent: SocketAddr) -> SipConn {
        let stream = std::net::TcpStream::connect(agent).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        SipConn { stream, buf: Vec::new() }
    }

    fn port(&self) -> u16 {
        self.stream.local_addr().unwrap().port()
    }

    fn send(&mut self, text: &str) {
        use std::io::Write;
        self.stream.write_all(text.as_bytes()).unwrap();
    }

    /// The next message whose first line starts with `start`, others skipped.
    fn expect(&mut self, start: &str, limit: Duration) -> String {
        use std::io::Read;
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            while let Some(msg) = self.take() {
                if msg.starts_with(start) {
                    return msg;
                }
                seen.push(msg.lines().next().unwrap_or("").to_string());
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        }
        panic!("no {start:?} within {limit:?}; got {seen:?}");
    }

    /// One whole message from the buffer, if there is one.
    fn take(&mut self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.buf).to_string();
        let head_end = text.find("\r\n\r\n")? + 4;
        let len: usize = header(&text[..head_end], "Content-Length").and_then(|v| v.parse().ok()).unwrap_or(0);
        if self.buf.len() < head_end + len {
            return None;
        }
        let msg = String::from_utf8_lossy(&self.buf[..head_end + len]).to_string();
        self.buf.drain(..head_end + len);
        Some(msg)
    }
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines()
        .find_map(|l| l.split_once(':').filter(|(n, _)| n.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
}

#[test]
fn a_notify_on_a_new_tcp_connection_is_answered_on_that_connection() {
    let agent = AgentProc::start("xfer-tcp-conn", &agent_config(&[ONCALL], None, None));
    let mut a = SipConn::open(agent.addr());
    let (port, sip) = (a.port(), agent.addr());
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n";
    a.send(&format!(
        "INVITE sip:{CALLED}@{sip};transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bKtcpinv\r\n\
         Max-Forwards: 70\r\nFrom: <sip:+15551230001@127.0.0.1>;tag=tcpcaller\r\nTo: <sip:{CALLED}@{sip}>\r\n\
         Call-ID: tcp-conn-1\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:{port};transport=tcp>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    ));
    let ok = a.expect("SIP/2.0 200", Duration::from_secs(5));
    let to = header(&ok, "To").unwrap().to_string();
    a.send(&format!(
        "ACK sip:backstop@{sip};transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bKtcpack\r\n\
         Max-Forwards: 70\r\nFrom: <sip:+15551230001@127.0.0.1>;tag=tcpcaller\r\nTo: {to}\r\nCall-ID: tcp-conn-1\r\n\
         CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    ));
    // The REFER comes on the INVITE's connection; the 202 goes back on it.
    let refer = a.expect("REFER ", Duration::from_secs(15));
    let id = header(&refer, "CSeq").unwrap().split(' ').next().unwrap().to_string();
    let mirrored: String = ["Via", "From", "To", "Call-ID", "CSeq"]
        .iter()
        .map(|h| format!("{h}: {}\r\n", header(&refer, h).unwrap()))
        .collect();
    a.send(&format!("SIP/2.0 202 Accepted\r\n{mirrored}Content-Length: 0\r\n\r\n"));
    // The NOTIFY comes on a connection of its own: its 200 must come back on that one.
    let mut b = SipConn::open(agent.addr());
    let body = "SIP/2.0 200 OK\r\n";
    b.send(&format!(
        "NOTIFY sip:backstop@{sip};transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{};branch=z9hG4bKtcpnotify\r\n\
         Max-Forwards: 70\r\nFrom: <sip:+15551230001@127.0.0.1>;tag=tcpcaller\r\nTo: {to}\r\nCall-ID: tcp-conn-1\r\n\
         CSeq: 2 NOTIFY\r\nEvent: refer;id={id}\r\nSubscription-State: terminated;reason=noresource\r\n\
         Content-Type: message/sipfrag\r\nContent-Length: {}\r\n\r\n{body}",
        b.port(),
        body.len()
    ));
    let answer = b.expect("SIP/2.0 ", Duration::from_secs(5));
    assert!(answer.starts_with("SIP/2.0 200") && answer.contains("CSeq: 2 NOTIFY"), "{answer}");
    // Our leg ends by BYE, on the dialog's way: the INVITE's connection.
    let bye = a.expect("BYE ", Duration::from_secs(5));
    let mirrored: String = ["Via", "From", "To", "Call-ID", "CSeq"]
        .iter()
        .map(|h| format!("{h}: {}\r\n", header(&bye, h).unwrap()))
        .collect();
    a.send(&format!("SIP/2.0 200 OK\r\n{mirrored}Content-Length: 0\r\n\r\n"));
    let lead = lead_of(&agent);
    assert_transfer(&lead, "transferred", Some(200), ONCALL, &[(ONCALL, "transferred", Some(200))]);
    assert_eq!(lead["transport"], "tcp");
}
