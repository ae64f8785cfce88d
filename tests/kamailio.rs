//! The real forward-on-no-answer path, behind real Kamailio (Debian's
//! `kamailio`, config in tests/kamailio/): Kamailio is registrar (digest auth)
//! and proxy; SIPp registers as the business owner and lets the call ring;
//! Backstop registers as the overflow account; a SIPp caller calls the owner;
//! Kamailio's failure route forwards to Backstop with a Diversion header.

mod common;

use backstop_core::media::g711::Law;
use common::kamailio::Kamailio;
use common::scenario::*;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Kamailio with tests/kamailio/kamailio.cfg: registrar (a text-file
/// database in its directory holding the two accounts) and proxy.
fn start_kamailio(name: &str) -> Kamailio {
    let dir = scratch_dir(name);
    let db = common::kamailio::write_subscribers(&dir, &[("1001", "ownerpw"), ("overflow", "overflowpw")]);
    let cfg = std::fs::read_to_string(manifest_dir().join("tests/kamailio/kamailio.cfg"))
        .unwrap()
        .replace("@DBDIR@", &db.display().to_string());
    Kamailio::start(&dir, &cfg)
}

fn backstop_account(k: &Kamailio, password: &str, extra: &str) -> String {
    format!(
        "[[register]]\nregistrar = \"sip:127.0.0.1:{}\"\nusername = \"overflow\"\npassword = \"{password}\"\n{extra}",
        k.port
    )
}

fn wait_log(what: &str, timeout: Duration, log: impl Fn() -> String, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = log();
        if pred(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const OWNER_REGISTER: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="owner-register">
  <send retrans="500">
    <![CDATA[
      REGISTER sip:127.0.0.1:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:1001@127.0.0.1>;tag=[call_number]
      To: <sip:1001@127.0.0.1>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:1001@127.0.0.1:[owner_port]>
      Expires: 300
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[
      REGISTER sip:127.0.0.1:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:1001@127.0.0.1>;tag=[call_number]
      To: <sip:1001@127.0.0.1>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:1001@127.0.0.1:[owner_port]>
      [authentication username=1001 password=ownerpw]
      Expires: 300
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"#;

/// The owner's phone: rings, never answers, takes the CANCEL.
const OWNER_PHONE: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="owner-phone">
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="([0-9]+) INVITE" search_in="hdr" header="CSeq:" check_it="true" assign_to="all,num"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=owner[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:1001@[local_ip]:[local_port]>
      Content-Length: 0

    ]]>
  </send>
  <recv request="CANCEL"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=owner[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <send>
    <![CDATA[
      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=owner[call_number]
      [last_Call-ID:]
      CSeq: [$num] INVITE
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK"/>
  <Reference variables="all"/>
</scenario>
"#;

/// A caller dialling the owner through Kamailio; ACK and BYE follow the route set.
fn caller() -> String {
    let invite = invite("", OFFER)
        .replace("INVITE sip:+15559990000@[remote_ip]:[remote_port]", "INVITE sip:1001@127.0.0.1:[remote_port]")
        .replace("To: <sip:+15559990000@[remote_ip]:[remote_port]>", "To: <sip:1001@127.0.0.1>");
    let ack = ack(1).replace("      [last_To:]\n", "      [last_To:]\n      [routes]\n");
    let bye = CALLER_BYE.replace("      [last_To:]\n", "      [last_To:]\n      [routes]\n");
    let answered = r#"
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true" timeout="15000"/>
"#;
    scenario("caller", &[&invite, answered, &ack, &pause(1000), &bye])
}

/// One forward-on-no-answer call behind Kamailio, as it happened.
struct Forwarded {
    kamailio: Kamailio,
    agent: AgentProc,
    /// The RTP that reached the caller.
    packets: Vec<Captured>,
}

/// Backstop (its config `agent_extra` around the overflow account) registers
/// with Kamailio; the owner's phone registers and rings unanswered; a SIPp
/// caller calls the owner, and after fr_inv_timer Kamailio forwards the call
/// to Backstop's registered contact, which answers. Scratch names start with
/// `name`.
fn forwarded_call(name: &str, agent_extra: &str) -> Forwarded {
    let k = start_kamailio(&format!("{name}-forward"));
    // Backstop registers as the overflow account.
    let agent = AgentProc::start(
        &format!("{name}-agent"),
        &format!("[sip]\nanswer_after_ms = 100\n{}", backstop_account(&k, "overflowpw", agent_extra)),
    );
    let text = wait_log(
        "Backstop's registration",
        Duration::from_secs(10),
        || agent.log(),
        |l| l.contains("registered expires=60"),
    );
    assert!(text.contains("contact=<sip:overflow@127.0.0.1:"), "{text}");
    let klog = k.log();
    assert!(
        klog.contains("REGISTER challenge for sip:overflow@127.0.0.1")
            && klog.contains("REGISTER saved sip:overflow@127.0.0.1"),
        "{klog}"
    );

    // The owner's phone listens; the owner registers it.
    let owner_port = free_port();
    let phone_dir = scratch_dir(&format!("{name}-phone"));
    std::fs::write(phone_dir.join("phone.xml"), OWNER_PHONE).unwrap();
    let mut phone = Command::new("sipp")
        .arg("-sf")
        .arg(phone_dir.join("phone.xml"))
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &owner_port.to_string(),
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "30s",
            "-timeout_error",
        ])
        .args(["-mp", &free_media_port().to_string(), "-trace_err", "-error_file"])
        .arg(phone_dir.join("errors.log"))
        .current_dir(&phone_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp");
    let reg = run_sipp(
        &scratch_dir(&format!("{name}-owner-reg")),
        OWNER_REGISTER,
        k.addr(),
        false,
        &[("owner_port", owner_port.to_string())],
    );
    assert!(reg.success, "owner registration failed: {}\n{}", reg.errors, k.log());

    // The caller calls the owner; nobody answers for 3 s; Backstop does.
    let dir = scratch_dir(&format!("{name}-caller"));
    let rtp = RtpCapture::start();
    let started = Instant::now();
    let run = run_sipp(&dir, &caller(), k.addr(), false, &[("rtp_port", rtp.port.to_string())]);
    let packets = rtp.finish();
    assert!(
        run.success,
        "caller failed: {}\n{}\nkamailio:\n{}\nagent:\n{}",
        run.errors,
        run.messages,
        k.log(),
        agent.log()
    );
    assert!(started.elapsed() >= Duration::from_secs(3), "the owner rang for fr_inv_timer first");
    let phone_ok = phone.wait().unwrap().success();
    assert!(
        phone_ok,
        "the owner's phone saw no ring/CANCEL: {}",
        std::fs::read_to_string(phone_dir.join("errors.log")).unwrap_or_default()
    );
    Forwarded { kamailio: k, agent, packets }
}

#[test]
fn unanswered_call_is_forwarded_by_kamailio_and_answered_by_backstop() {
    let Forwarded { kamailio: k, agent, packets } = forwarded_call("kam", "expires = 60\n");
    assert!(packets.len() >= 40, "{} RTP packets reached the caller", packets.len());

    let lead = &agent.wait_leads(1, Duration::from_secs(5))[0];
    assert_eq!(lead["forwarded"]["reason"], "no-answer");
    assert_eq!(lead["forwarded"]["from_number"], "1001");
    assert_eq!(lead["forwarded"]["source"], "diversion");
    assert_eq!(lead["forwarded"]["original_called_number"], "1001");
    assert_eq!(lead["forwarded"]["counter"], 1);
    assert_eq!(lead["called"]["number"], "1001");
    assert_eq!(lead["caller"]["number"], "+15551230001");
    assert_eq!(lead["ended_by"], "caller");
    println!(
        "REGISTER exchange seen by Kamailio:\n{}",
        k.log().lines().filter(|l| l.contains("REGISTER")).collect::<Vec<_>>().join("\n")
    );
}

/// A call that reaches Backstop through its registration (Request-URI
/// `sip:overflow@<its contact>`, To still the owner's `sip:1001@127.0.0.1`)
/// goes to the line matching that account, `overflow@127.0.0.1` (no
/// `domain` set: the registrar's host), and runs that line's own script.
/// A later line matching the call's called number (the To's 1001) is not
/// hit: the account line comes first and claims the call.
#[test]
fn forwarded_call_goes_to_the_line_of_its_registered_account() {
    let lines = "expires = 60\n\
        [[line]]\nname = \"via-account\"\nmatch.account = [\"overflow@127.0.0.1\"]\n\
        [[line.step]]\nname = \"bye\"\nkind = \"goodbye\"\nprompt = \"goodbye\"\n\
        [[line]]\nname = \"by-number\"\nmatch.called = [\"1001\"]\n";
    let Forwarded { kamailio: k, agent, packets } = forwarded_call("kam-account", lines);
    // The caller (hanging up after 1 s) heard the start of the line's own
    // goodbye, not the top-level script's greeting.
    let heard: Vec<u8> = packets.iter().flat_map(|(_, _, b)| parse_rtp(b).payload).collect();
    let goodbye = backstop::media_files::load_prompt("goodbye", &manifest_dir().join("prompts/goodbye.wav"))
        .unwrap()
        .encoded(Law::Pcmu)
        .to_vec();
    assert!(heard.len() >= 40 * 160, "{} ms of audio reached the caller", heard.len() / 8);
    assert!(goodbye.starts_with(&heard), "the {} ms heard are not the start of goodbye.wav", heard.len() / 8);

    let leads = agent.wait_leads(1, Duration::from_secs(5));
    assert_eq!(leads.len(), 1, "{leads:#?}");
    let lead = &leads[0];
    let invite = agent.log().lines().filter(|l| l.contains("INVITE")).collect::<Vec<_>>().join("\n");
    assert_eq!(lead["line"], "via-account", "{lead:#}\nagent's INVITE lines:\n{invite}\nkamailio:\n{}", k.log());
    // The call is the forwarded one, with the called number the by-number line would take.
    assert_eq!(lead["called"]["number"], "1001", "{lead:#}");
    assert_eq!(lead["forwarded"]["original_called_number"], "1001", "{lead:#}");
    assert_eq!(lead["caller"]["number"], "+15551230001", "{lead:#}");
    assert_eq!(lead["ended_by"], "caller", "{lead:#}");
}

/// RFC 3339 timestamps at the start of the agent's log lines that contain `needle`.
fn times_of(log: &str, needle: &str) -> Vec<std::time::SystemTime> {
    log.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| humantime::parse_rfc3339(l.split_whitespace().next()?).ok())
        .collect()
}

#[test]
fn wrong_password_is_reported_and_backs_off() {
    let k = start_kamailio("kam-badpw");
    let agent = AgentProc::start(
        "kam-badpw-agent",
        &backstop_account(&k, "not-the-password", "retry_interval_s = 1\nmax_retry_interval_s = 8\n"),
    );
    let log = wait_log(
        "four failures",
        Duration::from_secs(20),
        || agent.log(),
        |l| l.matches("registration failed").count() >= 4,
    );
    assert!(log.contains("authentication rejected (401): check auth_username and password"), "{log}");
    let t = times_of(&log, "registration failed");
    let gaps: Vec<f64> = t.windows(2).map(|w| w[1].duration_since(w[0]).unwrap().as_secs_f64()).collect();
    println!("wrong password: failures {:?} s apart", gaps.iter().map(|g| format!("{g:.3}")).collect::<Vec<_>>());
    // 1 s doubling, ±20 % jitter, plus two round trips per attempt.
    for (gap, base) in gaps.iter().zip([1.0, 2.0, 4.0]) {
        assert!(*gap >= base * 0.8 && *gap <= base * 1.2 + 0.3, "gaps {gaps:?}");
    }
    assert!(!log.contains("registered expires"));
}

#[test]
fn kamailio_restart_is_followed_by_a_fresh_registration() {
    let mut k = start_kamailio("kam-restart");
    let mut agent = AgentProc::start("kam-restart-agent", &backstop_account(&k, "overflowpw", "expires = 10\n"));
    wait_log("first registration", Duration::from_secs(10), || agent.log(), |l| l.contains("registered expires=10"));
    let before = agent.log().matches("registered expires=10").count();
    let restarted = Instant::now();
    k.restart();
    // Kamailio lost its location table; the next refresh (at half of 10 s) registers again.
    let klog = wait_log(
        "re-registration at the new Kamailio",
        Duration::from_secs(12),
        || k.log(),
        |l| l.contains("REGISTER saved sip:overflow@127.0.0.1"),
    );
    assert!(agent.log().matches("registered expires=10").count() > before);
    println!("re-registered {:.1} s after the Kamailio restart", restarted.elapsed().as_secs_f64());
    let refreshes = times_of(&agent.log(), "registered expires=10");
    let gaps: Vec<String> =
        refreshes.windows(2).map(|w| format!("{:.3}", w[1].duration_since(w[0]).unwrap().as_secs_f64())).collect();
    println!("refreshes {gaps:?} s apart (expires 10)");
    assert!(klog.contains("REGISTER challenge for sip:overflow@127.0.0.1"));
    // A graceful stop unregisters (Expires: 0) before exiting.
    assert!(agent.terminate(), "agent did not exit cleanly:\n{}", agent.log());
    let klog = wait_log("the unregistration", Duration::from_secs(5), || k.log(), |l| l.contains("expires 0 from"));
    assert!(klog.contains("REGISTER saved sip:overflow@127.0.0.1"), "{klog}");
    assert!(agent.log().contains("unregistered"));
}
