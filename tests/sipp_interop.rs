//! Interop against real SIPp (Debian's sip-tester) on loopback, with the
//! agent started as a real process. Each test checks SIPp's verdict and the
//! lead the agent wrote; the media tests also check the RTP that arrived.

mod common;

use backstop_core::media::g711::Law;
use backstop_core::media::prompt::Prompt;
use common::scenario::*;
use common::*;
use std::time::Duration;

fn expect_ok(run: &SippRun, agent: &AgentProc) {
    assert!(
        run.success,
        "SIPp failed (exit {:?}):\n{}\nmessages:\n{}\nagent log:\n{}",
        run.code,
        run.errors,
        run.messages,
        agent.log()
    );
}

fn prompt(name: &str) -> Prompt {
    backstop::media_files::load_prompt(name, &manifest_dir().join(format!("prompts/{name}.wav"))).unwrap()
}

#[test]
fn basic_call_plays_greeting_and_goodbye_then_hangs_up() {
    let agent = AgentProc::start("basic", "[sip]\nanswer_after_ms = 200\n");
    let dir = scratch_dir("sipp-basic");
    let rtp = RtpCapture::start();
    let sc = scenario("basic", &[&invite("", OFFER), ANSWERED, &ack(1), AGENT_BYE]);
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[("rtp_port", rtp.port.to_string())]);
    let packets = rtp.finish();
    expect_ok(&run, &agent);

    let leads = agent.wait_leads(1, Duration::from_secs(5));
    let lead = &leads[0];
    assert_eq!(lead["outcome"], "completed");
    assert_eq!(lead["ended_by"], "agent");
    assert_eq!(lead["codec"], "PCMU");
    assert_eq!(lead["caller"]["number"], "+15551230001");
    assert_eq!(lead["caller"]["display_name"], "Pat Caller");
    assert_eq!(lead["called"]["number"], "+15559990000");
    assert!(lead["answered_at"].is_string());
    assert!(lead["forwarded"].is_null());

    // The RTP: greeting then goodbye, byte for byte, one SSRC, consecutive sequence numbers.
    let rtp: Vec<Rtp> = packets.iter().map(|(_, _, b)| parse_rtp(b)).collect();
    let mut expected = prompt("greeting").encoded(Law::Pcmu).to_vec();
    expected.extend_from_slice(prompt("goodbye").encoded(Law::Pcmu));
    let payload: Vec<u8> = rtp.iter().flat_map(|p| p.payload.clone()).collect();
    assert_eq!(payload.len(), expected.len(), "received {} packets", rtp.len());
    assert!(payload == expected, "payload differs from the encoded prompts");
    assert!(rtp.iter().all(|p| p.pt == 0 && p.ssrc == rtp[0].ssrc && p.payload.len() == 160));
    for w in rtp.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
        assert_eq!(w[1].ts, w[0].ts.wrapping_add(160));
    }
    assert!(rtp[0].marker && rtp[1..].iter().all(|p| !p.marker));
    // About 50 packets a second.
    let span = packets.last().unwrap().0 - packets[0].0;
    let rate = (packets.len() - 1) as f64 / span.as_secs_f64();
    assert!((47.0..=53.0).contains(&rate), "packet rate {rate:.2}/s");
}

#[test]
fn caller_bye_during_the_greeting() {
    let agent = AgentProc::start("callerbye", "[sip]\nanswer_after_ms = 200\n");
    let dir = scratch_dir("sipp-callerbye");
    let rtp = RtpCapture::start();
    let sc = scenario("callerbye", &[&invite("", OFFER), ANSWERED, &ack(1), &pause(2000), CALLER_BYE]);
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[("rtp_port", rtp.port.to_string())]);
    std::thread::sleep(Duration::from_millis(300));
    let packets = rtp.finish();
    expect_ok(&run, &agent);
    let lead = &agent.wait_leads(1, Duration::from_secs(5))[0];
    assert_eq!(lead["ended_by"], "caller");
    assert_eq!(lead["outcome"], "hung_up_during_greeting");
    // Two seconds of greeting arrived, and it stopped at the BYE.
    assert!((80..=120).contains(&packets.len()), "{} packets", packets.len());
    let greeting = prompt("greeting");
    let payload: Vec<u8> = packets.iter().flat_map(|(_, _, b)| parse_rtp(b).payload).collect();
    assert!(greeting.encoded(Law::Pcmu).starts_with(&payload));
}

#[test]
fn cancel_before_answer_gets_487_and_a_lead() {
    let agent = AgentProc::start("cancel", "[sip]\nanswer_after_ms = 3000\n");
    let dir = scratch_dir("sipp-cancel");
    let cancel = [
        cancel_after_ringing(300).as_str(),
        ACK_NON_2XX,
        r#"  <pause milliseconds="3500"/>
"#,
    ]
    .concat();
    let sc = scenario("cancel", &[&invite("", OFFER), &cancel]);
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[("rtp_port", "40000".into())]);
    expect_ok(&run, &agent);
    // No 200 for the INVITE ever came, even after the ring time passed.
    assert_eq!(run.received_count("SIP/2.0 200", "1 INVITE"), 0, "{}", run.messages);
    let lead = &agent.wait_leads(1, Duration::from_secs(5))[0];
    assert_eq!(lead["ended_by"], "cancel");
    assert_eq!(lead["outcome"], "hung_up_while_ringing");
    assert!(lead["answered_at"].is_null());
}

#[test]
fn retransmitted_invite_is_absorbed() {
    let agent = AgentProc::start("retrans", "[sip]\nanswer_after_ms = 500\n");
    let dir = scratch_dir("sipp-retrans");
    let first = invite("", OFFER);
    // The same INVITE again (same branch and CSeq), as a UDP retransmission.
    let again = first.replace("<send retrans=\"500\">", "<send>");
    let provisional = "  <recv response=\"100\"/>\n  <recv response=\"180\"/>\n";
    let sc = scenario("retrans", &[&first, provisional, &again, ANSWERED, &ack(1), &pause(500), CALLER_BYE]);
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[("rtp_port", "40002".into())]);
    expect_ok(&run, &agent);
    std::thread::sleep(Duration::from_millis(500));
    let leads = agent.wait_leads(1, Duration::from_secs(5));
    assert_eq!(leads.len(), 1, "one call, one lead: {leads:?}");
    assert_eq!(leads[0]["ended_by"], "caller");
    // Answered once: a single 200 for the INVITE.
    assert_eq!(run.received_count("SIP/2.0 200", "1 INVITE"), 1, "{}", run.messages);
    assert!(run.received_count("SIP/2.0 180", "1 INVITE") >= 2, "the 180 is repeated for the retransmission");
}

#[test]
fn lost_ack_makes_the_2xx_retransmit() {
    let agent = AgentProc::start("lostack", "[sip]\nanswer_after_ms = 100\nt1_ms = 100\n");
    let dir = scratch_dir("sipp-lostack");
    // Do not ACK the first 200; wait long enough for T1 and 2*T1 retransmissions, then ACK.
    let sc = scenario("lostack", &[&invite("", OFFER), ANSWERED, &pause(800), &ack(1), &pause(300), CALLER_BYE]);
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[("rtp_port", "40004".into())]);
    expect_ok(&run, &agent);
    let n = run.received_count("SIP/2.0 200", "1 INVITE");
    assert!(n >= 3, "expected the 200 at 0, T1 and 3*T1; got {n}\n{}", run.messages);
    let lead = &agent.wait_leads(1, Duration::from_secs(5))[0];
    assert_eq!(lead["ended_by"], "caller");
}

#[test]
fn no_ack_at_all_ends_with_bye_after_64_t1() {
    let agent = AgentProc::start("noack", "[sip]\nanswer_after_ms = 100\nt1_ms = 50\n");
    let dir = scratch_dir("sipp-noack");
    let sc = scenario("noack", &[&invite("", OFFER), ANSWERED, AGENT_BYE]);
    let started = std::time::Instant::now();
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[("rtp_port", "40006".into())]);
    expect_ok(&run, &agent);
    // 64 × 50 ms = 3.2 s after the 200.
    assert!(started.elapsed() >= Duration::from_millis(3200), "{:?}", started.elapsed());
    let lead = &agent.wait_leads(1, Duration::from_secs(5))[0];
    assert_eq!(lead["ended_by"], "timeout");
    assert_eq!(lead["outcome"], "no_ack");
}

#[test]
fn options_is_answered_with_allow_accept_supported() {
    // A monitoring peer we can verify (listed): the full answer. Unlisted UDP
    // sources get the bare one (tests/hostile.rs).
    let agent = AgentProc::start("options", "[sip]\ntrusted_sources = [\"127.0.0.1\"]\n");
    let dir = scratch_dir("sipp-options");
    let sc = scenario(
        "options",
        &[r#"
  <send retrans="500">
    <![CDATA[
      OPTIONS sip:backstop@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:monitor@[local_ip]:[local_port]>;tag=[call_number]
      To: <sip:backstop@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 OPTIONS
      Max-Forwards: 70
      Accept: application/sdp
      Content-Length: 0

    ]]>
  </send>
  <recv response="200">
    <action>
      <ereg regexp="INVITE" search_in="hdr" header="Allow:" check_it="true" assign_to="a"/>
      <ereg regexp="application/sdp" search_in="hdr" header="Accept:" check_it="true" assign_to="b"/>
      <ereg regexp=".*" search_in="hdr" header="Supported:" check_it="true" assign_to="c"/>
      <ereg regexp="received=127.0.0.1;rport=[0-9]+" search_in="hdr" header="Via:" check_it="true" assign_to="d"/>
    </action>
  </recv>
  <Reference variables="a,b,c,d"/>
"#],
    );
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[]);
    expect_ok(&run, &agent);
    assert!(agent.leads().is_empty(), "OPTIONS makes no lead");
}

#[test]
fn diversion_and_p_asserted_identity_reach_the_lead() {
    let agent = AgentProc::start("diversion", "[sip]\nanswer_after_ms = 100\n");
    let dir = scratch_dir("sipp-diversion");
    let extra = "      Diversion: <sip:+15557654321@pbx.example.net>;reason=no-answer;counter=1\n      P-Asserted-Identity: \"Pat Verified\" <sip:+15551230009@carrier.example.net>\n";
    let sc = scenario("diversion", &[&invite(extra, OFFER), ANSWERED, &ack(1), &pause(300), CALLER_BYE]);
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[("rtp_port", "40008".into())]);
    expect_ok(&run, &agent);
    let lead = &agent.wait_leads(1, Duration::from_secs(5))[0];
    assert_eq!(lead["forwarded"]["from_number"], "+15557654321");
    assert_eq!(lead["forwarded"]["reason"], "no-answer");
    assert_eq!(lead["caller"]["asserted"]["number"], "+15551230009");
    assert_eq!(lead["caller"]["asserted"]["display_name"], "Pat Verified");
    assert_eq!(lead["caller"]["number"], "+15551230001");
}

#[test]
fn late_offer_takes_the_answer_from_the_ack() {
    let agent = AgentProc::start("lateoffer", "[sip]\nanswer_after_ms = 100\n");
    let dir = scratch_dir("sipp-lateoffer");
    let rtp = RtpCapture::start();
    let invite_no_sdp = invite("", "")
        .replace("      Content-Type: application/sdp\n", "")
        .replace("Content-Length: [len]\n\n\n", "Content-Length: 0\n\n");
    let ack_with_answer = r#"
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "Pat Caller" <sip:+15551230001@[local_ip]:[local_port]>;tag=[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

v=0
o=caller 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio [rtp_port] RTP/AVP 8
a=rtpmap:8 PCMA/8000
    ]]>
  </send>
"#;
    let answered = r#"
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true">
    <action>
      <ereg regexp="m=audio [0-9]+ RTP/AVP 0 8 101" search_in="body" check_it="true" assign_to="offer"/>
    </action>
  </recv>
  <Reference variables="offer"/>
"#;
    let sc = scenario("lateoffer", &[&invite_no_sdp, answered, ack_with_answer, &pause(1500), CALLER_BYE]);
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[("rtp_port", rtp.port.to_string())]);
    std::thread::sleep(Duration::from_millis(200));
    let packets = rtp.finish();
    expect_ok(&run, &agent);
    let lead = &agent.wait_leads(1, Duration::from_secs(5))[0];
    assert_eq!(lead["codec"], "PCMA");
    assert!(packets.len() >= 50, "{} packets", packets.len());
    let payload: Vec<u8> =
        packets.iter().map(|(_, _, b)| parse_rtp(b)).inspect(|p| assert_eq!(p.pt, 8)).flat_map(|p| p.payload).collect();
    assert!(prompt("greeting").encoded(Law::Pcma).starts_with(&payload));
}

#[test]
fn tcp_call_works_end_to_end() {
    let agent = AgentProc::start("tcp", "[sip]\nanswer_after_ms = 100\n");
    let dir = scratch_dir("sipp-tcp");
    let rtp = RtpCapture::start();
    let sc = scenario("tcp", &[&invite("", OFFER), ANSWERED, &ack(1), &pause(1000), CALLER_BYE]);
    let run = run_sipp(&dir, &sc, agent.addr(), true, &[("rtp_port", rtp.port.to_string())]);
    let packets = rtp.finish();
    expect_ok(&run, &agent);
    let lead = &agent.wait_leads(1, Duration::from_secs(5))[0];
    assert_eq!(lead["transport"], "tcp");
    assert_eq!(lead["ended_by"], "caller");
    assert!(packets.len() >= 40, "{} packets", packets.len());
}

#[test]
fn tcp_agent_bye_reaches_the_caller() {
    let agent = AgentProc::start("tcpbye", "[sip]\nanswer_after_ms = 100\n");
    let dir = scratch_dir("sipp-tcpbye");
    let sc = scenario("tcpbye", &[&invite("", OFFER), ANSWERED, &ack(1), AGENT_BYE]);
    let run = run_sipp(&dir, &sc, agent.addr(), true, &[("rtp_port", "40010".into())]);
    expect_ok(&run, &agent);
    let lead = &agent.wait_leads(1, Duration::from_secs(5))[0];
    assert_eq!(lead["outcome"], "completed");
    assert_eq!(lead["transport"], "tcp");
}

/// A re-INVITE in the call: `direction` in the SDP, CSeq `cseq`, then its ACK.
fn reinvite(cseq: u32, direction: &str) -> String {
    format!(
        r#"
  <send retrans="500">
    <![CDATA[
      INVITE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "Pat Caller" <sip:+15551230001@[local_ip]:[local_port]>;tag=[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: {cseq} INVITE
      Contact: <sip:caller@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

v=0
o=caller 1 {cseq} IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio [rtp_port] RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a={direction}
    ]]>
  </send>
  <recv response="200" rrs="true"/>
"#
    ) + &ack(cseq)
}

#[test]
fn reinvite_hold_pauses_media_and_resume_continues_the_prompt() {
    let agent = AgentProc::start("hold", "[sip]\nanswer_after_ms = 100\n");
    let dir = scratch_dir("sipp-hold");
    let rtp = RtpCapture::start();
    let bye = CALLER_BYE.replace("CSeq: 2 BYE", "CSeq: 4 BYE");
    let sc = scenario(
        "hold",
        &[
            &invite("", OFFER),
            ANSWERED,
            &ack(1),
            &pause(1000),
            &reinvite(2, "sendonly"),
            &pause(1500),
            &reinvite(3, "sendrecv"),
            &pause(1000),
            &bye,
        ],
    );
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[("rtp_port", rtp.port.to_string())]);
    std::thread::sleep(Duration::from_millis(200));
    let packets = rtp.finish();
    expect_ok(&run, &agent);
    // Silence on the wire while held: one gap of about 1.5 s.
    let (gap_at, gap) =
        packets.windows(2).enumerate().map(|(i, w)| (i, w[1].0 - w[0].0)).max_by_key(|(_, g)| *g).unwrap();
    assert!(gap >= Duration::from_millis(1300) && gap <= Duration::from_millis(1800), "hold gap {gap:?}");
    assert!((40..=60).contains(&(gap_at + 1)), "{} packets before the hold", gap_at + 1);
    let after = packets[gap_at + 1..].iter().map(|(_, _, b)| parse_rtp(b)).collect::<Vec<_>>();
    assert!(after[0].marker, "the marker bit opens the resumed stream");
    // The greeting paused and continued where it was: what arrived is one unbroken prefix of it.
    let payload: Vec<u8> = packets.iter().flat_map(|(_, _, b)| parse_rtp(b).payload).collect();
    assert!(prompt("greeting").encoded(Law::Pcmu).starts_with(&payload));
    let lead = &agent.wait_leads(1, Duration::from_secs(5))[0];
    assert_eq!(lead["ended_by"], "caller");
    assert_eq!(lead["outcome"], "hung_up_during_greeting");
}

#[test]
fn rtp_latches_onto_where_the_caller_really_sends_from() {
    let agent = AgentProc::start("latch", "[sip]\nanswer_after_ms = 100\n");
    let dir = scratch_dir("sipp-latch");
    // The SDP names one port; the caller's media really comes from another (a NAT mapping).
    let declared = RtpCapture::start();
    let nat = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    nat.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let sc = scenario("latch", &[&invite("", OFFER), ANSWERED, &ack(1), &pause(2500), CALLER_BYE]);
    let port = declared.port.to_string();
    let addr = agent.addr();
    let sipp = std::thread::spawn(move || run_sipp(&dir, &sc, addr, false, &[("rtp_port", port)]));
    // Find the agent's RTP address in its log.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let agent_rtp: std::net::SocketAddr = loop {
        let log = agent.log();
        if let Some(i) = log.find(" rtp=") {
            break log[i + 5..].split_whitespace().next().unwrap().parse().unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "no rtp= in log:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(800));
    let mut received_at_nat = 0;
    let mut buf = [0u8; 2048];
    for seq in 0..50u16 {
        let mut pkt = vec![0x80, 0x00];
        pkt.extend_from_slice(&seq.to_be_bytes());
        pkt.extend_from_slice(&(seq as u32 * 160).to_be_bytes());
        pkt.extend_from_slice(&0x0BAD_CAFEu32.to_be_bytes());
        pkt.extend_from_slice(&[0xFF; 160]);
        nat.send_to(&pkt, agent_rtp).unwrap();
        while let Ok((n, from)) = nat.recv_from(&mut buf) {
            assert_eq!(from, agent_rtp, "symmetric: sent from the port it receives on");
            assert_eq!(parse_rtp(&buf[..n]).pt, 0);
            received_at_nat += 1;
        }
    }
    let run = sipp.join().unwrap();
    let at_declared = declared.finish();
    expect_ok(&run, &agent);
    assert!(received_at_nat >= 40, "only {received_at_nat} packets reached the real source");
    assert!(!at_declared.is_empty(), "before any RTP arrived, media went to the SDP address");
    let last_declared = at_declared.last().unwrap().0;
    let first_declared = at_declared[0].0;
    assert!(
        last_declared - first_declared < Duration::from_millis(1500),
        "media kept going to the SDP address after latching"
    );
}

/// The 503 a caller gets while the agent is shutting down (or full).
fn refused_503() -> String {
    [
        r#"
  <recv response="100" optional="true"/>
  <recv response="503">
    <action>
      <ereg regexp="[0-9]+" search_in="hdr" header="Retry-After:" check_it="true" assign_to="ra"/>
    </action>
  </recv>
"#,
        ACK_NON_2XX,
        r#"  <Reference variables="ra"/>
"#,
    ]
    .concat()
}

#[test]
fn sigterm_refuses_new_calls_then_hangs_up_after_the_grace_period() {
    let mut agent = AgentProc::start("shutdown", "[sip]\nanswer_after_ms = 100\n[call]\nshutdown_grace_secs = 2\n");
    let dir = scratch_dir("sipp-shutdown");
    let sc = scenario("shutdown", &[&invite("", OFFER), ANSWERED, &ack(1), AGENT_BYE]);
    let addr = agent.addr();
    let sipp = std::thread::spawn(move || run_sipp(&dir, &sc, addr, false, &[("rtp_port", "40012".into())]));
    std::thread::sleep(Duration::from_millis(1500));
    agent.sigterm();
    let signalled = std::time::Instant::now();
    // During the grace period a new call is refused with 503 and Retry-After.
    std::thread::sleep(Duration::from_millis(300));
    let dir2 = scratch_dir("sipp-shutdown-new");
    let refused = run_sipp(
        &dir2,
        &scenario("refused", &[&invite("", OFFER), &refused_503()]),
        addr,
        false,
        &[("rtp_port", "40018".into())],
    );
    expect_ok(&refused, &agent);
    assert!(agent.wait_exit(Duration::from_secs(10)), "agent did not exit cleanly:\n{}", agent.log());
    let run = sipp.join().unwrap();
    expect_ok(&run, &agent);
    // The BYE came at the end of the 2 s grace, well before the 11 s script would have ended.
    let took = signalled.elapsed();
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(5), "{took:?}");
    let leads = agent.leads();
    assert_eq!(leads.len(), 1, "the refused call makes no lead: {leads:?}");
    assert_eq!(leads[0]["ended_by"], "agent");
    assert_eq!(leads[0]["outcome"], "interrupted_during_greeting");
}

#[test]
fn sigterm_lets_a_call_in_progress_finish_and_a_second_signal_ends_calls_at_once() {
    // Default grace (60 s): the call runs its script to the end, then the agent exits.
    let mut agent = AgentProc::start("shutdown-finish", "[sip]\nanswer_after_ms = 100\n");
    let dir = scratch_dir("sipp-shutdown-finish");
    let sc = scenario("finish", &[&invite("", OFFER), ANSWERED, &ack(1), AGENT_BYE]);
    let addr = agent.addr();
    let sipp = std::thread::spawn(move || run_sipp(&dir, &sc, addr, false, &[("rtp_port", "40014".into())]));
    std::thread::sleep(Duration::from_millis(1500));
    agent.sigterm();
    assert!(agent.wait_exit(Duration::from_secs(20)), "agent did not exit cleanly:\n{}", agent.log());
    expect_ok(&sipp.join().unwrap(), &agent);
    assert_eq!(agent.leads()[0]["outcome"], "completed");

    // Two signals: the second ends the call now.
    let mut agent = AgentProc::start("shutdown-twice", "[sip]\nanswer_after_ms = 100\n");
    let dir = scratch_dir("sipp-shutdown-twice");
    let sc = scenario("twice", &[&invite("", OFFER), ANSWERED, &ack(1), AGENT_BYE]);
    let addr = agent.addr();
    let sipp = std::thread::spawn(move || run_sipp(&dir, &sc, addr, false, &[("rtp_port", "40016".into())]));
    std::thread::sleep(Duration::from_millis(1500));
    agent.sigterm();
    std::thread::sleep(Duration::from_millis(300));
    let second = std::time::Instant::now();
    agent.sigterm();
    assert!(agent.wait_exit(Duration::from_secs(10)), "agent did not exit cleanly:\n{}", agent.log());
    assert!(second.elapsed() < Duration::from_secs(2), "{:?} after the second signal", second.elapsed());
    expect_ok(&sipp.join().unwrap(), &agent);
    assert_eq!(agent.leads()[0]["outcome"], "interrupted_during_greeting");
}

#[test]
fn invites_from_untrusted_addresses_get_403_and_no_lead() {
    let agent = AgentProc::start("untrusted", "[sip]\ntrusted_sources = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n");
    let dir = scratch_dir("sipp-untrusted");
    let refused = [
        r#"
  <recv response="100" optional="true"/>
  <recv response="403"/>
"#,
        ACK_NON_2XX,
    ]
    .concat();
    let sc = scenario("untrusted", &[&invite("", OFFER), &refused]);
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[("rtp_port", "40050".into())]);
    expect_ok(&run, &agent);
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.leads().is_empty(), "a refused probe makes no lead");
    assert!(agent.log().contains("untrusted address refused (403)"));
    // A trusted network is let in: see the Kamailio tests.
}

#[test]
fn calls_beyond_max_calls_get_503_with_retry_after() {
    let agent = AgentProc::start("maxcalls", "[sip]\nanswer_after_ms = 50\nmax_calls = 1\n");
    let addr = agent.addr();
    // The first call holds the only slot for 3 s.
    let holder = std::thread::spawn(move || {
        let dir = scratch_dir("sipp-maxcalls-1");
        let sc = scenario("holder", &[&invite("", OFFER), ANSWERED, &ack(1), &pause(3000), CALLER_BYE]);
        run_sipp(&dir, &sc, addr, false, &[("rtp_port", "40052".into())])
    });
    std::thread::sleep(Duration::from_millis(1000));
    let dir = scratch_dir("sipp-maxcalls-2");
    let sc = scenario("busy", &[&invite("", OFFER), &refused_503()]);
    let run = run_sipp(&dir, &sc, addr, false, &[("rtp_port", "40054".into())]);
    expect_ok(&run, &agent);
    let first = holder.join().unwrap();
    expect_ok(&first, &agent);
    let leads = agent.wait_leads(1, Duration::from_secs(5));
    assert_eq!(leads.len(), 1, "only the admitted call is a lead: {leads:?}");
}

#[test]
fn sip_info_digits_reach_the_lead() {
    let agent = AgentProc::start("info", "[sip]\nanswer_after_ms = 50\n");
    let dir = scratch_dir("sipp-info");
    let bye = CALLER_BYE.replace("CSeq: 2 BYE", "CSeq: 5 BYE");
    let sc = scenario(
        "info",
        &[
            &invite("", OFFER),
            ANSWERED,
            &ack(1),
            &pause(300),
            &info_digit(2, "1"),
            &info_digit(3, "2"),
            &info_digit(4, "#"),
            &bye,
        ],
    );
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[("rtp_port", "40056".into())]);
    expect_ok(&run, &agent);
    let lead = &agent.wait_leads(1, Duration::from_secs(5))[0];
    assert_eq!(lead["dtmf"], "12#");
}
