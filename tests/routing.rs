//! Routing (issue 13) against real SIPp callers on loopback, with the agent
//! as a real process: `[[line]]`s picked by the called number (and the
//! original one), each with its own prompts and webhooks; business hours
//! built around the test's own clock and a `when` step branching on them;
//! junk callers (blocklist, anonymous, STIR/SHAKEN verstat, silence) and
//! what reaches the webhooks for them; and `backstop check` on lines that
//! overlap or that nothing can reach. Every wait is bounded.
//!
//! What the caller heard is checked on the wire: the agent's RTP goes to a
//! socket of ours (the SDP's port) and its payload is compared byte for
//! byte with the prompt WAV encoded as G.711 μ-law.

mod common;

use backstop_core::media::g711::Law;
use common::receiver::{Receiver, SECRET, Seen, key};
use common::scenario::*;
use common::*;
use serde_json::Value;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Calls

/// The caller's From in `common::scenario`'s messages, replaced per call.
const SCENARIO_FROM: &str = "\"Pat Caller\" <sip:+15551230001@[local_ip]:[local_port]>";

/// A From name-addr for a caller with this number.
fn from_number(number: &str) -> String {
    format!("\"Pat Caller\" <sip:{number}@[local_ip]:[local_port]>")
}

/// A scenario of `parts` calling `called` (Request-URI and To user) from `from`.
fn call(name: &str, called: &str, from: &str, parts: &[&str]) -> String {
    scenario(name, parts).replace("+15559990000", called).replace(SCENARIO_FROM, from)
}

/// Answered; stay until the agent hangs up.
fn listen_to_the_end(extra_headers: &str) -> Vec<String> {
    vec![invite(extra_headers, OFFER), ANSWERED.into(), ack(1), AGENT_BYE.into()]
}

/// Answered; hang up after `ms`.
fn hang_up_after(ms: u64, extra_headers: &str) -> Vec<String> {
    vec![invite(extra_headers, OFFER), ANSWERED.into(), ack(1), pause(ms), CALLER_BYE.into()]
}

/// Refused with 603 Decline (no answer before it), and ACKed.
fn declined() -> Vec<String> {
    let refused = r#"
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="603"/>
"#;
    vec![invite("", OFFER), refused.into(), ACK_NON_2XX.into()]
}

fn parts(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// One SIPp call and the agent's RTP that reached the SDP's port.
struct Placed {
    name: String,
    run: SippRun,
    packets: Vec<Captured>,
}

/// Place one call on a thread of its own: calls in one test run side by side.
fn place(agent: SocketAddr, name: &str, scenario: String) -> JoinHandle<Placed> {
    let name = name.to_string();
    std::thread::spawn(move || {
        let dir = scratch_dir(&format!("routing-{name}"));
        let rtp = RtpCapture::start();
        let run = run_sipp(&dir, &scenario, agent, false, &[("rtp_port", rtp.port.to_string())]);
        std::thread::sleep(Duration::from_millis(200));
        Placed { name, run, packets: rtp.finish() }
    })
}

fn expect_ok(p: &Placed, agent: &AgentProc) {
    assert!(
        p.run.success,
        "SIPp call {} failed (exit {:?}):\n{}\nmessages:\n{}\nagent log:\n{}",
        p.name,
        p.run.code,
        p.run.errors,
        p.run.messages,
        agent.log()
    );
}

/// The SIP Call-ID of a placed call, as the lead and the webhooks carry it.
fn call_id(p: &Placed) -> String {
    p.run
        .messages
        .lines()
        .find_map(|l| l.trim().strip_prefix("Call-ID:").map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no Call-ID in {}'s messages:\n{}", p.name, p.run.messages))
}

// ---------------------------------------------------------------------------
// Audio

/// A prompt file as the agent sends it: G.711 μ-law (PCMU is offered first).
fn pcmu(path: &Path) -> Vec<u8> {
    backstop::media_files::load_prompt("expected", path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .encoded(Law::Pcmu)
        .to_vec()
}

fn shipped(name: &str) -> PathBuf {
    manifest_dir().join("prompts").join(format!("{name}.wav"))
}

/// The payload the caller heard, checking every packet is PCMU from one stream.
fn heard(p: &Placed) -> Vec<u8> {
    let rtp: Vec<Rtp> = p.packets.iter().map(|(_, _, b)| parse_rtp(b)).collect();
    assert!(!rtp.is_empty(), "{}: no RTP reached the caller", p.name);
    assert!(rtp.iter().all(|r| r.pt == 0 && r.ssrc == rtp[0].ssrc), "{}: PCMU from one SSRC", p.name);
    rtp.into_iter().flat_map(|r| r.payload).collect()
}

/// The caller heard exactly `expected`, start to end.
fn assert_heard_exactly(p: &Placed, expected: &[u8], what: &str) {
    let got = heard(p);
    assert_eq!(got.len(), expected.len(), "{}: {} bytes of audio, {what} is {}", p.name, got.len(), expected.len());
    assert!(got == expected, "{}: the audio is not {what}, byte for byte", p.name);
}

/// The caller heard the start of `expected` (at least `min_ms` of it) and nothing else.
fn assert_heard_start_of(p: &Placed, expected: &[u8], min_ms: usize, what: &str) {
    let got = heard(p);
    assert!(got.len() >= min_ms * 8, "{}: only {} ms of audio", p.name, got.len() / 8);
    assert!(expected.starts_with(&got), "{}: the {} ms heard are not the start of {what}", p.name, got.len() / 8);
}

// ---------------------------------------------------------------------------
// Leads and webhooks

fn lead_where<'a>(leads: &'a [Value], what: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    let found: Vec<&Value> = leads.iter().filter(|l| pred(l)).collect();
    assert_eq!(found.len(), 1, "one lead for {what} expected: {leads:#?}");
    found[0]
}

fn lead_called<'a>(leads: &'a [Value], called: &str) -> &'a Value {
    lead_where(leads, &format!("the call to {called}"), |l| l["called"]["number"] == called)
}

fn lead_from<'a>(leads: &'a [Value], caller: &str) -> &'a Value {
    lead_where(leads, &format!("the call from {caller}"), |l| l["caller"]["number"] == caller)
}

fn reasons(lead: &Value) -> Vec<String> {
    lead["junk"]["reasons"]
        .as_array()
        .unwrap_or_else(|| panic!("no junk.reasons in {lead:#}"))
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

fn assert_junk(lead: &Value, expected: &[&str]) {
    assert_eq!(lead["junk"]["is_junk"], true, "{lead:#}");
    assert_eq!(reasons(lead), expected, "{lead:#}");
}

fn assert_clean(lead: &Value) {
    assert_eq!(lead["junk"]["is_junk"], false, "{lead:#}");
    assert!(lead["junk"]["reasons"].as_array().is_none_or(|r| r.is_empty()), "{lead:#}");
}

fn describe(seen: &[Seen]) -> Vec<(String, String, String)> {
    seen.iter().map(|s| (s.kind().to_string(), s.event["lead"]["line"].to_string(), s.call_id().to_string())).collect()
}

/// Wait (bounded) for `lead.completed` of `calls` calls, then a moment for
/// anything else that might still come; returns the accepted events.
fn settle(rx: &Receiver, calls: usize, what: &str) -> Vec<Seen> {
    rx.wait_for(Duration::from_secs(20), what, |s| s.iter().filter(|x| x.kind() == "lead.completed").count() >= calls);
    std::thread::sleep(Duration::from_millis(1500));
    let seen = rx.accepted_unique();
    assert!(rx.seen().iter().all(|s| s.signature_ok), "every delivery is signed with the line's secret");
    seen
}

// ---------------------------------------------------------------------------
// The clock

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Now on the wall clock of `zone`.
fn now_in(zone: &str) -> jiff::Zoned {
    jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::get(zone).unwrap())
}

fn plus_minutes(z: &jiff::Zoned, minutes: i64) -> jiff::Zoned {
    z.checked_add(jiff::Span::new().minutes(minutes)).unwrap()
}

/// `hours.<day> = ["HH:MM-HH:MM"]` open from `from` to `to` minutes after
/// `now`, on the weekday the range starts (a range may run past midnight).
fn hours_between(now: &jiff::Zoned, from: i64, to: i64) -> String {
    let (start, end) = (plus_minutes(now, from), plus_minutes(now, to));
    let day = WEEKDAYS[start.weekday().to_monday_zero_offset() as usize];
    format!("hours.{day} = [\"{}-{}\"]\n", start.strftime("%H:%M"), end.strftime("%H:%M"))
}

/// Yesterday, today and tomorrow (UTC) as one inclusive date range: a day
/// the test cannot fall out of, even across midnight.
fn around_today() -> String {
    let today = now_in("UTC").date();
    format!("{}..{}", today.yesterday().unwrap(), today.tomorrow().unwrap())
}

// ---------------------------------------------------------------------------
// `backstop check`

struct Checked {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn check_file(path: &Path) -> Checked {
    let out = Command::new(env!("CARGO_BIN_EXE_backstop"))
        .current_dir(manifest_dir())
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap();
    Checked {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

fn check(name: &str, config: &str) -> Checked {
    let dir = scratch_dir(name);
    let path = dir.join("backstop.toml");
    std::fs::write(&path, config).unwrap();
    let checked = check_file(&path);
    std::fs::remove_dir_all(&dir).ok();
    checked
}

fn webhook_table(table: &str, port: u16) -> String {
    format!("[[{table}]]\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret = \"{SECRET}\"\nmax_retry_interval_s = 2\n")
}

// ===========================================================================
// 1. Lines by called number: own prompts, own lead `line`, own webhooks.

#[test]
fn each_line_plays_its_own_prompt_and_sends_its_leads_to_its_own_webhook() {
    // Two prompt directories, each with a different greeting.wav.
    let prompts = scratch_dir("routing-prompts");
    let (alpha_dir, beta_dir) = (prompts.join("alpha"), prompts.join("beta"));
    for (dir, greeting) in [(&alpha_dir, "greeting"), (&beta_dir, "closed")] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::copy(shipped(greeting), dir.join("greeting.wav")).unwrap();
        // The junk rules' goodbye prompt (default "goodbye"), should silence end a call.
        std::fs::copy(shipped("goodbye"), dir.join("goodbye.wav")).unwrap();
    }
    let (alpha_port, beta_port, top_port) = (free_port(), free_port(), free_port());
    let alpha_rx = Receiver::start(alpha_port, key(), vec![]);
    let beta_rx = Receiver::start(beta_port, key(), vec![]);
    let top_rx = Receiver::start(top_port, key(), vec![]);

    let line = |name: &str, called: &str, dir: &Path, port: u16| {
        format!(
            "[[line]]\nname = \"{name}\"\nmatch.called = [\"{called}\"]\n[line.prompts]\ndir = \"{}\"\n{}\
             [[line.step]]\nname = \"hello\"\nkind = \"goodbye\"\nprompt = \"greeting\"\n",
            dir.display(),
            webhook_table("line.webhook", port),
        )
    };
    let config = format!(
        "[sip]\nanswer_after_ms = 50\n{}\
         [[step]]\nname = \"hello\"\nkind = \"goodbye\"\nprompt = \"goodbye\"\n{}{}",
        webhook_table("webhook", top_port),
        line("alpha", "+15550100100", &alpha_dir, alpha_port),
        // Written with separators: digits are what is compared.
        line("beta", "+1 (555) 010-0200", &beta_dir, beta_port),
    );
    let agent = AgentProc::start("routing-lines", &config);

    let calls = [
        ("alpha", "+15550100100"),
        ("beta", "+15550100200"),
        // No line has this number: the default line (the top-level script and prompts).
        ("default", "+15550100999"),
    ];
    let handles: Vec<_> = calls
        .iter()
        .map(|(line, called)| {
            let sc = call(&format!("lines-{line}"), called, SCENARIO_FROM, &parts(&listen_to_the_end("")));
            place(agent.addr(), &format!("lines-{line}"), sc)
        })
        .collect();
    let placed: Vec<Placed> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for p in &placed {
        expect_ok(p, &agent);
    }

    // Each caller heard its own line's greeting (the default line: goodbye.wav), whole.
    assert_heard_exactly(&placed[0], &pcmu(&alpha_dir.join("greeting.wav")), "alpha's greeting.wav");
    assert_heard_exactly(&placed[1], &pcmu(&beta_dir.join("greeting.wav")), "beta's greeting.wav");
    assert_heard_exactly(&placed[2], &pcmu(&shipped("goodbye")), "the top-level goodbye.wav");

    let leads = agent.wait_leads(3, Duration::from_secs(10));
    for ((line, called), p) in calls.iter().zip(&placed) {
        let lead = lead_called(&leads, called);
        assert_eq!(lead["line"], *line, "{lead:#}");
        assert_eq!(lead["call_id"], call_id(p), "{lead:#}");
        assert_eq!(lead["outcome"], "completed", "{lead:#}");
        assert_eq!(lead["ended_by"], "agent", "{lead:#}");
        assert_clean(lead);
        // No [schedule] anywhere: no schedule in the lead.
        assert!(lead["schedule"].is_null(), "{lead:#}");
    }

    // Each receiver got exactly its line's call: call.missed and lead.completed, nothing of the others.
    for (rx, (line, _), p) in
        [(&alpha_rx, calls[0], &placed[0]), (&beta_rx, calls[1], &placed[1]), (&top_rx, calls[2], &placed[2])]
    {
        let seen = settle(rx, 1, &format!("{line}'s lead"));
        let mut kinds: Vec<&str> = seen.iter().map(|s| s.kind()).collect();
        kinds.sort();
        assert_eq!(kinds, ["call.missed", "lead.completed"], "{line}'s receiver saw {:#?}", describe(&seen));
        for s in &seen {
            assert_eq!(s.event["lead"]["line"], line, "{line}'s receiver saw {:#?}", describe(&seen));
            assert_eq!(s.call_id(), call_id(p), "{line}'s receiver saw {:#?}", describe(&seen));
        }
    }
    std::fs::remove_dir_all(&prompts).ok();
}

#[test]
fn the_called_number_is_the_request_uri_then_to_and_diversion_gives_the_original() {
    let config = "[sip]\nanswer_after_ms = 50\n\
        [[line]]\nname = \"alpha\"\nmatch.called = [\"+15550100100\"]\n\
        [[line]]\nname = \"beta\"\nmatch.called = [\"+15550100200\"]\n\
        [[line]]\nname = \"gamma\"\nmatch.original_called = [\"+15550100500\"]\n";
    let agent = AgentProc::start("routing-match", config);
    let with_uri_and_to = |ruri: &str, to: &str, extra: &str| {
        scenario("m", &parts(&hang_up_after(300, extra)))
            .replace("INVITE sip:+15559990000@", &format!("INVITE sip:{ruri}@"))
            .replace("To: <sip:+15559990000@", &format!("To: <sip:{to}@"))
    };
    let cases = [
        // The Request-URI's number wins over To's.
        ("ruri", with_uri_and_to("+15550100100", "+15550100200", ""), "alpha"),
        // A Request-URI with no number (the registered contact's user): To's number.
        ("to", with_uri_and_to("overflow", "+15550100200", ""), "beta"),
        // Forwarded on no answer from gamma's number (Diversion), to the agent's own number.
        (
            "diversion",
            with_uri_and_to(
                "+15559990000",
                "+15559990000",
                "      Diversion: <sip:+15550100500@pbx.example.net>;reason=no-answer;counter=1\n",
            ),
            "gamma",
        ),
        ("none", with_uri_and_to("+15559990000", "+15559990000", ""), "default"),
    ];
    for (name, sc, line) in &cases {
        let p = place(agent.addr(), &format!("match-{name}"), sc.clone()).join().unwrap();
        expect_ok(&p, &agent);
        let id = call_id(&p);
        let leads = agent.wait_leads(1, Duration::from_secs(10));
        let deadline = Instant::now() + Duration::from_secs(10);
        let lead = loop {
            if let Some(l) = agent.leads().into_iter().find(|l| l["call_id"] == id) {
                break l;
            }
            assert!(Instant::now() < deadline, "no lead for {name} ({id}): {leads:#?}");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(lead["line"], *line, "{name}: {lead:#}");
    }
}

// ===========================================================================
// 2. Business hours around the test's own clock, and `when` branching on them.

/// The script of every schedule line: the `when` step, then one prompt per state.
fn day_night_script(table: &str) -> String {
    format!(
        "[[{table}]]\nname = \"hours\"\nkind = \"when\"\nopen = \"day\"\nclosed = \"night\"\nholiday = \"holiday\"\n\
         [[{table}]]\nname = \"day\"\nkind = \"goodbye\"\nprompt = \"greeting\"\n\
         [[{table}]]\nname = \"night\"\nkind = \"goodbye\"\nprompt = \"closed\"\n\
         [[{table}]]\nname = \"holiday\"\nkind = \"goodbye\"\nprompt = \"goodbye\"\n"
    )
}

#[test]
fn the_when_step_follows_hours_holidays_overrides_and_time_zones() {
    let utc = now_in("UTC");
    let kathmandu = now_in("Asia/Kathmandu");
    // Open from an hour ago to an hour from now; closed: hours that start 3 h from now.
    let open_now = hours_between(&utc, -60, 60);
    let closed_now = hours_between(&utc, 180, 240);
    let dates = around_today();
    let line = |name: &str, called: &str, schedule: &str| {
        format!(
            "[[line]]\nname = \"{name}\"\nmatch.called = [\"{called}\"]\n[line.schedule]\n{schedule}{}",
            day_night_script("line.step")
        )
    };
    let config = [
        "[sip]\nanswer_after_ms = 50\n".to_string(),
        // The default line: its own [schedule], closed now.
        format!("[schedule]\ntime_zone = \"UTC\"\n{closed_now}"),
        day_night_script("step"),
        line("day", "+15550100401", &format!("time_zone = \"UTC\"\n{open_now}")),
        line("night", "+15550100402", &format!("time_zone = \"UTC\"\n{closed_now}")),
        // Open hours now, but a holiday from yesterday to tomorrow: holiday wins.
        line("holiday", "+15550100403", &format!("time_zone = \"UTC\"\nholidays = [\"{dates}\"]\n{open_now}")),
        // Open around Kathmandu's wall clock (UTC+05:45): read as UTC those hours would be closed now.
        line("kathmandu", "+15550100404", &format!("time_zone = \"Asia/Kathmandu\"\n{}", hours_between(&kathmandu, -60, 60))),
        // Open hours now, but closed from midnight by a dated override.
        line(
            "override",
            "+15550100405",
            &format!(
                "time_zone = \"UTC\"\n{open_now}[[line.schedule.override]]\ndate = \"{dates}\"\nclosed_from = \"00:00\"\n"
            ),
        ),
    ]
    .concat();
    let agent = AgentProc::start("routing-hours", &config);

    // What `check` says now agrees with what the calls get.
    let checked = check_file(&agent.dir.join("backstop.toml"));
    assert!(checked.ok, "check failed:\n{}\n{}\nconfig:\n{config}", checked.stdout, checked.stderr);

    let cases = [
        ("day", "+15550100401", "open", "greeting"),
        ("night", "+15550100402", "closed", "closed"),
        ("holiday", "+15550100403", "holiday", "goodbye"),
        ("kathmandu", "+15550100404", "open", "greeting"),
        ("override", "+15550100405", "closed", "closed"),
        ("default", "+15550100999", "closed", "closed"),
    ];
    for (line, _, state, _) in &cases {
        let said = checked.stdout.lines().find(|l| l.starts_with(&format!("line {line}:")));
        assert!(
            said.is_some_and(|l| l.contains(&format!("{state} now"))),
            "check should say line {line} is {state} now:\n{}\nconfig:\n{config}",
            checked.stdout
        );
    }

    // Each caller listens 1.5 s, then hangs up: long enough to tell the prompts apart.
    let handles: Vec<_> = cases
        .iter()
        .map(|(line, called, _, _)| {
            let sc = call(&format!("hours-{line}"), called, SCENARIO_FROM, &parts(&hang_up_after(1500, "")));
            place(agent.addr(), &format!("hours-{line}"), sc)
        })
        .collect();
    let placed: Vec<Placed> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for p in &placed {
        expect_ok(p, &agent);
    }
    let leads = agent.wait_leads(cases.len(), Duration::from_secs(10));
    for ((line, called, state, prompt), p) in cases.iter().zip(&placed) {
        let lead = lead_called(&leads, called);
        assert_eq!(lead["line"], *line, "{lead:#}");
        assert_eq!(lead["schedule"], *state, "line {line}: {lead:#}\nconfig:\n{config}");
        // The branch the `when` step took: the step the caller hung up in, and what they heard.
        let step = match *state {
            "open" => "day",
            "closed" => "night",
            _ => "holiday",
        };
        assert_eq!(lead["outcome"], format!("hung_up_during_{step}"), "line {line}: {lead:#}");
        assert_heard_start_of(p, &pcmu(&shipped(prompt)), 1000, &format!("{prompt}.wav"));
    }
}

// ===========================================================================
// 3. Junk: blocklist, anonymous, verstat, the goodbye action, silence.

/// An RFC 8224 Identity header with a SHAKEN PASSporT claiming `attest`
/// (the signature is random bytes: nothing verifies it).
fn identity_header(attest: &str, orig: &str, dest: &str) -> String {
    use base64::Engine;
    let b64 = |s: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let header = br#"{"alg":"ES256","ppt":"shaken","typ":"passport","x5u":"https://cert.example.org/shaken.pem"}"#;
    let payload = format!(
        r#"{{"attest":"{attest}","dest":{{"tn":["{dest}"]}},"iat":1767225600,"orig":{{"tn":"{orig}"}},"origid":"3f2b5e0c-8a1d-4c7e-9b6a-2d4f1e8c7a90"}}"#
    );
    let signature: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
    format!(
        "      Identity: {}.{}.{};info=<https://cert.example.org/shaken.pem>;alg=ES256;ppt=shaken\n",
        b64(header),
        b64(payload.as_bytes()),
        b64(&signature)
    )
}

#[test]
fn junk_callers_are_declined_or_flagged_and_never_get_call_missed() {
    let port = free_port();
    let rx = Receiver::start(port, key(), vec![]);
    let config = format!(
        "[sip]\nanswer_after_ms = 50\n{}\
         [junk]\naction = \"reject\"\n\
         block = [\"+15550199\", \"1900*\", \"/^\\\\+?1?555888/\", \"555-010-9999\"]\n\
         anonymous = \"junk\"\nverstat_failed = \"flag\"\nsilent_after_secs = 0\n\
         [[step]]\nname = \"bye\"\nkind = \"goodbye\"\nprompt = \"goodbye\"\n\
         [[line]]\nname = \"strict\"\nmatch.called = [\"+15550100300\"]\n\
         [line.junk]\naction = \"goodbye\"\nblock = [\"+15550199\"]\ngoodbye_prompt = \"closed\"\nsilent_after_secs = 0\n\
         [[line.step]]\nname = \"hello\"\nkind = \"goodbye\"\nprompt = \"greeting\"\n",
        webhook_table("webhook", port),
    );
    let agent = AgentProc::start("routing-junk", &config);

    // Refused with 603, one after the other: the blocklist (a number, a
    // prefix, a regex, a 10-digit NANP entry) and a withheld caller.
    let refused = [
        ("number", from_number("+15550199"), "blocklisted"),
        ("prefix", from_number("+19005551234"), "blocklisted"),
        ("regex", from_number("+15558881234"), "blocklisted"),
        ("nanp", from_number("+15550109999"), "blocklisted"),
        ("anonymous", "\"Anonymous\" <sip:anonymous@anonymous.invalid>".to_string(), "anonymous"),
    ];
    let mut refused_ids = Vec::new();
    for (name, from, _) in &refused {
        let sc = call(&format!("junk-{name}"), "+15559990000", from, &parts(&declined()));
        let p = place(agent.addr(), &format!("junk-{name}"), sc).join().unwrap();
        expect_ok(&p, &agent);
        assert_eq!(p.run.received_count("SIP/2.0 200", "1 INVITE"), 0, "{name}: never answered\n{}", p.run.messages);
        assert!(p.packets.is_empty(), "{name}: no media for a declined call");
        refused_ids.push(call_id(&p));
    }

    // Answered, side by side:
    // - TN-Validation-Failed in P-Asserted-Identity: flagged, the normal script;
    // - the same blocklisted number on the line whose action is `goodbye`: its goodbye_prompt, then BYE;
    // - a clean caller, verified, with an A attestation claimed: the only call.missed.
    let failed_pai =
        "      P-Asserted-Identity: <sip:+15551230002;verstat=TN-Validation-Failed@127.0.0.1;user=phone>\n";
    let passed_pai =
        "      P-Asserted-Identity: <sip:+15551230003;verstat=TN-Validation-Passed@127.0.0.1;user=phone>\n";
    let clean_headers = format!("{passed_pai}{}", identity_header("A", "15551230003", "15559990000"));
    let handles = [
        place(
            agent.addr(),
            "junk-verstat",
            call("junk-verstat", "+15559990000", &from_number("+15551230002"), &parts(&listen_to_the_end(failed_pai))),
        ),
        place(
            agent.addr(),
            "junk-goodbye",
            call("junk-goodbye", "+15550100300", &from_number("+15550199"), &parts(&listen_to_the_end(""))),
        ),
        place(
            agent.addr(),
            "junk-clean",
            call(
                "junk-clean",
                "+15559990000",
                &from_number("+15551230003"),
                &parts(&listen_to_the_end(&clean_headers)),
            ),
        ),
    ];
    let [verstat, goodbye, clean] = handles.map(|h| h.join().unwrap());
    for p in [&verstat, &goodbye, &clean] {
        expect_ok(p, &agent);
    }
    assert_heard_exactly(&verstat, &pcmu(&shipped("goodbye")), "the script's goodbye.wav");
    assert_heard_exactly(&clean, &pcmu(&shipped("goodbye")), "the script's goodbye.wav");

    let leads = agent.wait_leads(refused.len() + 3, Duration::from_secs(10));
    for ((name, _, reason), id) in refused.iter().zip(&refused_ids) {
        let lead = lead_where(&leads, name, |l| l["call_id"] == *id);
        assert_eq!(lead["outcome"], "declined", "{name}: {lead:#}");
        assert_eq!(lead["line"], "default", "{name}: {lead:#}");
        assert!(lead["answered_at"].is_null(), "{name}: {lead:#}");
        assert_junk(lead, &[reason]);
    }
    assert!(lead_where(&leads, "anonymous", |l| l["call_id"] == refused_ids[4])["caller"]["number"].is_null());

    let lead = lead_from(&leads, "+15551230002");
    assert_junk(lead, &["verstat_failed"]);
    assert_eq!(lead["caller"]["verstat"], "TN-Validation-Failed", "{lead:#}");
    assert!(lead["caller"]["attestation"].is_null(), "{lead:#}");
    assert_eq!(lead["caller"]["asserted"]["number"], "+15551230002", "{lead:#}");
    assert_eq!(lead["outcome"], "completed", "{lead:#}");
    assert!(lead["answered_at"].is_string(), "{lead:#}");

    let lead = lead_where(&leads, "the goodbye line", |l| l["call_id"] == call_id(&goodbye));
    assert_eq!(lead["line"], "strict", "{lead:#}");
    assert_junk(lead, &["blocklisted"]);
    assert_eq!(lead["outcome"], "declined", "{lead:#}");
    assert_eq!(lead["ended_by"], "agent", "{lead:#}");
    assert!(lead["answered_at"].is_string(), "{lead:#}");

    let lead = lead_from(&leads, "+15551230003");
    assert_clean(lead);
    assert_eq!(lead["caller"]["verstat"], "TN-Validation-Passed", "{lead:#}");
    assert_eq!(lead["caller"]["attestation"], "A", "{lead:#}");
    assert_eq!(lead["outcome"], "completed", "{lead:#}");

    // Every call's lead reached the webhook; call.missed only the clean one's.
    let seen = settle(&rx, refused.len() + 3, "every call's lead.completed");
    let completed = seen.iter().filter(|s| s.kind() == "lead.completed").count();
    assert_eq!(completed, refused.len() + 3, "{:#?}", describe(&seen));
    let missed: Vec<&str> = seen.iter().filter(|s| s.kind() == "call.missed").map(|s| s.call_id()).collect();
    assert_eq!(missed, [call_id(&clean).as_str()], "call.missed for the clean call only: {:#?}", describe(&seen));
    for s in seen.iter().filter(|s| s.kind() == "lead.completed" && s.call_id() != call_id(&clean)) {
        assert_eq!(s.event["lead"]["junk"]["is_junk"], true, "{:#}", s.event);
    }

    // Last, as it fails on its own: the goodbye action played the line's
    // goodbye_prompt, which its script never plays itself.
    assert_heard_exactly(&goodbye, &pcmu(&shipped("closed")), "the line's junk goodbye_prompt (closed.wav)");
}

/// Line noise at about −50 dBFS, 20 ms of it as μ-law, as a quiet phone sends.
fn noise_frame(state: &mut u32) -> Vec<u8> {
    (0..160)
        .map(|_| {
            *state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            Law::Pcmu.encode(((*state >> 16) as i16 as i32 * 100 / 32768) as i16)
        })
        .collect()
}

/// A caller's RTP socket that, once the agent's first packet arrives, sends
/// line noise back to where it came from every 20 ms, and records what it receives.
struct NoisyPhone {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(Vec<Captured>, usize)>,
}

impl NoisyPhone {
    fn start() -> NoisyPhone {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
        let port = sock.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut got, mut sent) = (Vec::new(), 0usize);
            let mut peer: Option<(SocketAddr, Instant)> = None;
            let mut noise = 7u32;
            let mut buf = [0u8; 2048];
            let deadline = Instant::now() + Duration::from_secs(60);
            while !flag.load(Ordering::SeqCst) && Instant::now() < deadline {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    got.push((Instant::now(), from, buf[..n].to_vec()));
                    peer.get_or_insert((from, Instant::now()));
                }
                if let Some((to, start)) = peer
                    && Instant::now() >= start + Duration::from_millis(20 * sent as u64)
                {
                    let mut pkt = vec![0x80, if sent == 0 { 0x80 } else { 0x00 }];
                    pkt.extend_from_slice(&(sent as u16).to_be_bytes());
                    pkt.extend_from_slice(&((sent as u32) * 160).to_be_bytes());
                    pkt.extend_from_slice(&0x0511_7E47_u32.to_be_bytes());
                    pkt.extend_from_slice(&noise_frame(&mut noise));
                    let _ = sock.send_to(&pkt, to);
                    sent += 1;
                }
            }
            (got, sent)
        });
        NoisyPhone { port, stop, thread }
    }

    fn finish(self) -> (Vec<Captured>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

#[test]
fn a_silent_caller_hears_goodbye_after_silent_after_secs_and_is_flagged() {
    // An ask step that would wait 20 s for speech: the 3 s silence limit comes first.
    let config = "[sip]\nanswer_after_ms = 50\n[junk]\nsilent_after_secs = 3\n\
        [[step]]\nname = \"name\"\nkind = \"ask\"\nprompt = \"name\"\nno_speech_timeout_ms = 20000\nretries = 0\n\
        [[step]]\nname = \"bye\"\nkind = \"goodbye\"\nprompt = \"goodbye\"\n";
    let agent = AgentProc::start("routing-silent", config);
    let (name, goodbye) = (pcmu(&shipped("name")), pcmu(&shipped("goodbye")));

    let check_call = |p: &Placed, lead: &Value| {
        assert_eq!(lead["outcome"], "silent", "{}: {lead:#}", p.name);
        assert_eq!(lead["ended_by"], "agent", "{}: {lead:#}", p.name);
        assert_junk(lead, &["silent"]);
        // The question, then (after the quiet) the goodbye prompt, whole, and the BYE.
        let got = heard(p);
        assert!(got.starts_with(&name), "{}: the name question did not play first", p.name);
        assert!(got.ends_with(&goodbye), "{}: the audio did not end with goodbye.wav", p.name);
        // 3 s of silence from the answer, then 3.8 s of goodbye: far from the 20 s no-speech timeout.
        let span = p.packets.last().unwrap().0 - p.packets[0].0;
        assert!(span >= Duration::from_millis(6300) && span <= Duration::from_millis(9000), "{}: {span:?}", p.name);
    };

    // A caller that sends no RTP at all.
    let sc = call("silent-mute", "+15559990000", SCENARIO_FROM, &parts(&listen_to_the_end("")));
    let mute = place(agent.addr(), "silent-mute", sc).join().unwrap();
    expect_ok(&mute, &agent);
    let leads = agent.wait_leads(1, Duration::from_secs(10));
    check_call(&mute, &leads[0]);

    // A caller whose phone sends line noise all along, as real phones do.
    let phone = NoisyPhone::start();
    let dir = scratch_dir("routing-silent-noisy");
    let sc = call("silent-noisy", "+15559990000", SCENARIO_FROM, &parts(&listen_to_the_end("")));
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[("rtp_port", phone.port.to_string())]);
    std::thread::sleep(Duration::from_millis(200));
    let (packets, sent) = phone.finish();
    let noisy = Placed { name: "silent-noisy".into(), run, packets };
    expect_ok(&noisy, &agent);
    assert!(sent >= 250, "the phone sent only {sent} packets of line noise");
    let leads = agent.wait_leads(2, Duration::from_secs(10));
    check_call(&noisy, lead_where(&leads, "the noisy caller", |l| l["call_id"] == call_id(&noisy)));
}

// ===========================================================================
// 4. `backstop check` on lines.

fn lines_config(lines: &str) -> String {
    format!(
        "[prompts]\ndir = \"{}\"\n[[step]]\nname = \"bye\"\nkind = \"goodbye\"\nprompt = \"goodbye\"\n{lines}",
        manifest_dir().join("prompts").display()
    )
}

#[test]
fn check_warns_of_overlapping_lines_and_fails_on_unreachable_ones() {
    // Overlap: the second line claims the first one's number (written
    // differently) but has one of its own, so it is still reachable: a warning.
    let c = check(
        "routing-check-overlap",
        &lines_config(
            "[[line]]\nname = \"first-line\"\nmatch.called = [\"+15550100100\"]\n\
             [[line]]\nname = \"second-line\"\nmatch.called = [\"+1 (555) 010-0100\", \"+15550100200\"]\n",
        ),
    );
    assert!(c.ok, "an overlap is a warning, not an error:\n{}\n{}", c.stdout, c.stderr);
    let warning = c.stderr.lines().find(|l| l.starts_with("warning:")).unwrap_or_else(|| panic!("{}", c.stderr));
    assert!(warning.contains("first-line") && warning.contains("second-line"), "{}", c.stderr);

    // Unreachable: everything the second line matches, the first takes.
    let c = check(
        "routing-check-unreachable",
        &lines_config(
            "[[line]]\nname = \"first-line\"\nmatch.called = [\"+15550100100\"]\n\
             [[line]]\nname = \"shadowed\"\nmatch.called = [\"15550100100\"]\n",
        ),
    );
    assert!(!c.ok, "an unreachable line fails the check:\n{}\n{}", c.stdout, c.stderr);
    assert!(c.stderr.contains("unreachable") && c.stderr.contains("shadowed"), "{}", c.stderr);

    // No match at all.
    let c = check("routing-check-nomatch", &lines_config("[[line]]\nname = \"orphan\"\n"));
    assert!(!c.ok, "a line with no match fails the check:\n{}\n{}", c.stdout, c.stderr);
    assert!(
        c.stderr.contains("orphan") && (c.stderr.contains("no match") || c.stderr.contains("unreachable")),
        "{}",
        c.stderr
    );

    // A `when` step needs a schedule.
    let c = check(
        "routing-check-when",
        &format!("[prompts]\ndir = \"{}\"\n{}", manifest_dir().join("prompts").display(), day_night_script("step")),
    );
    assert!(!c.ok, "a when step without a schedule fails the check:\n{}\n{}", c.stdout, c.stderr);
    assert!(c.stderr.contains("schedule"), "{}", c.stderr);
}

#[test]
fn check_accepts_the_plumber_example() {
    let c = check_file(Path::new("config/examples/plumber.toml"));
    assert!(c.ok, "{}\n{}", c.stdout, c.stderr);
    assert!(c.stdout.contains("line acme-plumbing"), "{}", c.stdout);
    assert!(!c.stderr.contains("warning:") && !c.stderr.contains("error:"), "{}", c.stderr);
}
