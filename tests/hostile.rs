//! Hostile traffic against the agent as a real process: SIPVicious
//! (`svmap`, `svwar`) scanning it, an OPTIONS flood from one address while a
//! real caller calls from another (and from the same one), oversized and
//! over-long messages, unframeable TCP streams, and TCP connection limits.
//! All on loopback; every loop is bounded. The policy itself is unit-tested
//! without sockets in `backstop_core::sip::admission`.

mod common;

use common::scenario::*;
use common::*;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The floods take one test at a time: two at once on a two-core machine
/// would measure the machine, not the agent.
static FLOODING: Mutex<()> = Mutex::new(());

/// SIPp sending `OPTIONS_PING`s from `ip` (`-m count`, `-r rate`, bounded by
/// `-timeout`); returns SIPp's statistics file when it is done.
fn options_flood(agent: std::net::SocketAddr, ip: &str, count: u32, rate: u32) -> std::thread::JoinHandle<String> {
    let dir = scratch_dir("sipp-flood");
    let sf = dir.join("flood.xml");
    std::fs::write(&sf, scenario("flood", &[OPTIONS_PING])).unwrap();
    let port = free_port();
    let ip = ip.to_string();
    std::thread::spawn(move || {
        Command::new("sipp")
            .arg(agent.to_string())
            .arg("-sf")
            .arg(&sf)
            .args(["-m", &count.to_string(), "-r", &rate.to_string(), "-l", "400", "-i", &ip, "-p", &port.to_string()])
            .args(["-nostdin", "-timeout", "30s", "-trace_stat", "-stf"])
            .arg(sf.with_extension("csv"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        std::fs::read_to_string(sf.with_extension("csv")).unwrap_or_default()
    })
}

/// From SIPp's last statistics line: (OPTIONS sent, OPTIONS answered 200).
fn flood_totals(stats: &str) -> (u64, u64) {
    let header: Vec<&str> = stats.lines().next().unwrap_or("").split(';').collect();
    let last: Vec<&str> = stats.lines().last().unwrap_or("").split(';').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).and_then(|i| last.get(i)?.parse::<u64>().ok());
    let answered = col("SuccessfulCall(C)").expect("SIPp statistics");
    (answered + col("FailedCall(C)").unwrap_or(0), answered)
}

/// Run a SIPVicious tool against the agent; returns its output (stdout + stderr).
fn sipvicious(tool: &str, args: &[&str], agent: &AgentProc) -> String {
    let out = Command::new("timeout")
        .arg("60")
        .arg(tool)
        .args(args)
        .arg(format!("-p{}", agent.port))
        .arg("127.0.0.1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{tool} must be installed (scripts/test.sh installs sipvicious): {e}"));
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn scans(agent: &AgentProc) -> Vec<(String, String)> {
    [
        ("svmap", vec![]),
        ("svwar", vec!["-e100-130"]),
        ("svwar", vec!["-e100-110", "-m", "INVITE"]),
        ("svwar", vec!["-e100-110", "-m", "OPTIONS", "--force"]),
    ]
    .into_iter()
    .map(|(tool, args)| (format!("{tool} {}", args.join(" ")), sipvicious(tool, &args, agent)))
    .collect()
}

#[test]
fn sipvicious_scanners_get_nothing_and_make_no_leads() {
    // Shipped defaults (trunk mode): the scanners' User-Agent is dropped unanswered.
    let agent = AgentProc::start("scan-drop", "");
    for (what, out) in scans(&agent) {
        eprintln!("--- {what}\n{out}");
        assert!(out.contains("found nothing"), "{what}: {out}");
        assert!(!out.contains("Backstop"), "{what} learned what we are: {out}");
    }
    assert!(agent.leads().is_empty(), "a scan made leads: {:?}", agent.leads());
    let log = agent.log();
    assert!(log.contains("scanner User-Agent"), "{log}");
    // Logged once per 10 s per source, not once per probe.
    assert!(log.matches("scanner User-Agent").count() <= 2, "{log}");

    // With the User-Agent list emptied but trust enforced: every probe, whatever
    // the method or extension, gets the same 403, so nothing can be enumerated.
    // Loopback is not taken as verified here, so the answers are the bare ones a stranger gets.
    let agent = AgentProc::start(
        "scan-403",
        "[sip]\ntrusted_sources = [\"10.0.0.0/8\"]\n[security]\nscanner_user_agents = []\nverified_sources = []\n",
    );
    for (i, (what, out)) in scans(&agent).into_iter().enumerate() {
        eprintln!("--- {what}\n{out}");
        assert!(!out.contains("Backstop"), "{what} learned what we are: {out}");
        if i == 0 {
            // svmap sees that something answers (a 403), and nothing more.
            assert!(out.contains("| unknown"), "{what}: {out}");
        } else {
            assert!(out.contains("found nothing"), "{what}: {out}");
            assert!(!out.contains("| Extension"), "{what} listed extensions: {out}");
        }
    }
    assert!(agent.leads().is_empty());
    assert!(agent.log().contains("untrusted address refused (403)"));
}

const OPTIONS_PING: &str = r#"
  <send>
    <![CDATA[
      OPTIONS sip:ping@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:flood@[local_ip]:[local_port]>;tag=[call_number]
      To: <sip:ping@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 OPTIONS
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" timeout="200" ontimeout="end"/>
  <label id="end"/>
"#;

#[test]
fn a_flood_from_one_address_is_dropped_while_a_caller_gets_through() {
    let _one_flood = FLOODING.lock().unwrap_or_else(|e| e.into_inner());
    let agent = AgentProc::start("flood", "[sip]\nanswer_after_ms = 100\n");
    let dir = scratch_dir("sipp-flood");
    // 4000 OPTIONS at 800/s from 127.0.0.2 (bounded: -m and -timeout).
    let sf = dir.join("flood.xml");
    std::fs::write(&sf, scenario("flood", &[OPTIONS_PING])).unwrap();
    let port = free_port();
    let addr = agent.addr();
    let flood = std::thread::spawn(move || {
        Command::new("sipp")
            .arg(addr.to_string())
            .arg("-sf")
            .arg(&sf)
            .args(["-m", "4000", "-r", "800", "-l", "400", "-i", "127.0.0.2", "-p", &port.to_string()])
            .args(["-nostdin", "-timeout", "30s", "-trace_stat", "-stf"])
            .arg(sf.with_extension("csv"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        std::fs::read_to_string(sf.with_extension("csv")).unwrap_or_default()
    });
    std::thread::sleep(Duration::from_millis(1000));
    // Meanwhile a real caller from 127.0.0.1 completes a call.
    let caller_dir = scratch_dir("sipp-flood-caller");
    let sc = scenario("caller", &[&invite("", OFFER), ANSWERED, &ack(1), &pause(500), CALLER_BYE]);
    let started = Instant::now();
    let run = run_sipp(&caller_dir, &sc, agent.addr(), false, &[("rtp_port", "40070".into())]);
    assert!(run.success, "the caller failed during the flood: {}\n{}", run.errors, agent.log());
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let stats = flood.join().unwrap();
    // SIPp's last statistics line: successful "calls" are OPTIONS that got a 200.
    let header: Vec<&str> = stats.lines().next().unwrap_or("").split(';').collect();
    let last: Vec<&str> = stats.lines().last().unwrap_or("").split(';').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).and_then(|i| last.get(i)?.parse::<u64>().ok());
    let answered = col("SuccessfulCall(C)").expect("SIPp statistics");
    let total = answered + col("FailedCall(C)").unwrap_or(0);
    eprintln!("flood: {total} OPTIONS sent, {answered} answered");
    assert!(total >= 3000, "the flood did not run: {stats}");
    // Burst 40 + 20/s over ~5 s, with slack; everything else dropped.
    assert!(answered <= 200, "{answered} of {total} flood requests were answered");
    let log = agent.log();
    assert!(
        log.matches("request rate above requests_per_second").count() <= 3,
        "drops are logged per 10 s, not per packet"
    );
    assert_eq!(agent.leads().len(), 1);
}

/// The user's bug: an OPTIONS flood (1500/s) from 127.0.0.1 made a real call
/// from 127.0.0.1 on another port fail, its INVITEs sharing the flooded
/// per-address allowance. New calls have their own now.
#[test]
fn an_options_flood_from_the_callers_own_address_leaves_its_calls_through() {
    let _one_flood = FLOODING.lock().unwrap_or_else(|e| e.into_inner());
    // Shipped limits: 20 requests/s (burst 40), 10 new calls/s (burst 40).
    let agent = AgentProc::start("flood-same-address", "[sip]\nanswer_after_ms = 100\n");
    // 9000 OPTIONS at 1500/s (6 s) from 127.0.0.1, bounded by -m and -timeout.
    let flood = options_flood(agent.addr(), "127.0.0.1", 9000, 1500);
    std::thread::sleep(Duration::from_millis(1000));
    let dir = scratch_dir("sipp-flood-same-caller");
    let sc = scenario("caller", &[&invite("", OFFER), ANSWERED, &ack(1), &pause(500), CALLER_BYE]);
    let started = Instant::now();
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[("rtp_port", "40076".into())]);
    let took = started.elapsed();
    assert!(!flood.is_finished(), "the flood ended before the call: the test proves nothing");
    assert!(run.success, "the call from the flooded address failed: {}\n{}", run.errors, agent.log());
    assert!(took < Duration::from_secs(5), "the call took {took:?}");
    let (total, answered) = flood_totals(&flood.join().unwrap());
    eprintln!("flood from the caller's address: {total} OPTIONS sent, {answered} answered; the call took {took:?}");
    assert!(total >= 7000, "the flood did not run: {total}");
    // Burst 40 + 20/s over ~6 s, with slack; the rest dropped.
    assert!(answered <= 220, "{answered} of {total} flood requests were answered");
    assert_eq!(agent.wait_leads(1, Duration::from_secs(10)).len(), 1);
}

fn options(me: std::net::SocketAddr, extra_headers: &str, body: &str) -> String {
    format!(
        "OPTIONS sip:backstop@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-big;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:backstop@127.0.0.1>\r\n\
         Call-ID: big-1\r\nCSeq: 1 OPTIONS\r\n{extra_headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn answered(sock: &UdpSocket, agent: &AgentProc, msg: &str) -> bool {
    sock.send_to(msg.as_bytes(), agent.addr()).unwrap();
    let mut buf = [0u8; 4096];
    matches!(sock.recv_from(&mut buf), Ok((n, _)) if buf[..n].starts_with(b"SIP/2.0 200"))
}

#[test]
fn oversized_messages_and_too_many_headers_are_dropped() {
    let agent = AgentProc::start("limits", "[security]\nmax_message_bytes = 4096\nmax_headers = 20\n");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let me = sock.local_addr().unwrap();
    assert!(answered(&sock, &agent, &options(me, "", "")));
    assert!(!answered(&sock, &agent, &options(me, "", &"x".repeat(5000))), "5000 bytes > max_message_bytes");
    let many: String = (0..30).map(|i| format!("X-Pad-{i}: y\r\n")).collect();
    assert!(!answered(&sock, &agent, &options(me, &many, "")), "30 headers > max_headers");
    let long = format!("Subject: {}\r\n", "z".repeat(5000));
    assert!(!answered(&sock, &agent, &options(me, &long, "")), "a 5000-byte header line");
    // Still serving.
    assert!(answered(&sock, &agent, &options(me, "", "")));
}

#[test]
fn tcp_connections_are_bounded_and_idle_ones_closed() {
    let agent = AgentProc::start("tcp-limits", "[security]\nmax_tcp_connections = 4\ntcp_idle_secs = 1\n");
    let closed_within = |s: &mut TcpStream, limit: Duration| {
        s.set_read_timeout(Some(limit)).unwrap();
        let mut b = [0u8; 16];
        matches!(s.read(&mut b), Ok(0))
    };
    let mut held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(agent.addr()).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut fifth = TcpStream::connect(agent.addr()).unwrap();
    assert!(closed_within(&mut fifth, Duration::from_millis(800)), "a fifth connection was kept open");
    // The four idle ones are closed after about a second.
    let t = Instant::now();
    for s in &mut held {
        assert!(closed_within(s, Duration::from_secs(3)), "an idle connection was kept open");
    }
    assert!(t.elapsed() < Duration::from_secs(3));
    // With the slots free, SIP over TCP works.
    std::thread::sleep(Duration::from_millis(200));
    let mut s = TcpStream::connect(agent.addr()).unwrap();
    let me = s.local_addr().unwrap();
    let msg = options(me, "", "").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    s.write_all(msg.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 2048];
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"SIP/2.0 200"), "{}", String::from_utf8_lossy(&buf[..n]));
}

/// A Content-Length no stream can hold (`u64::MAX`, or more than any
/// integer) closes that TCP connection; the agent goes on serving the
/// others, and the connection's slot comes back.
#[test]
fn a_huge_content_length_over_tcp_closes_only_that_connection() {
    // Room for more connections than the test opens: one refused for want of a
    // slot would look closed too, and prove nothing about framing.
    let agent = AgentProc::start("tcp-huge-length", "[security]\nmax_tcp_connections = 8\n");
    let options_over_tcp = |s: &mut TcpStream, content_length: &str| {
        let me = s.local_addr().unwrap();
        let msg = options(me, "", "")
            .replace("SIP/2.0/UDP", "SIP/2.0/TCP")
            .replace("Call-ID: big-1", &format!("Call-ID: tcp-{}", me.port()))
            .replace("Content-Length: 0", &format!("Content-Length: {content_length}"));
        s.write_all(msg.as_bytes()).unwrap();
    };
    let answered = |s: &mut TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 2048];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"SIP/2.0 200"))
    };
    let closed = |s: &mut TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 2048];
        // Closed, or told 400 first and then closed: either way no 200 and an end.
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return !got.starts_with(b"SIP/2.0 200"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        false
    };
    // A neighbour connected all along.
    let mut neighbour = TcpStream::connect(agent.addr()).unwrap();
    for huge in ["18446744073709551615", "99999999999999999999999999999", "18446744073709551616"] {
        let mut s = TcpStream::connect(agent.addr()).unwrap();
        options_over_tcp(&mut s, huge);
        assert!(closed(&mut s), "Content-Length {huge}: the connection was kept open\n{}", agent.log());
        // The neighbour's OPTIONS is still answered.
        options_over_tcp(&mut neighbour, "0");
        assert!(answered(&mut neighbour), "Content-Length {huge}: the neighbour got no answer\n{}", agent.log());
    }
    // Each was closed because its stream could not be framed.
    let log = agent.log();
    assert_eq!(log.matches("cannot frame the TCP stream").count(), 3, "{log}");
    // The closed connections gave their slots back: a second client gets in and is answered.
    let mut second = TcpStream::connect(agent.addr()).unwrap();
    options_over_tcp(&mut second, "0");
    assert!(answered(&mut second), "a new client got no answer\n{}", agent.log());
    // And UDP was never affected.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    assert!(answered_udp(&sock, &agent));
}

fn answered_udp(sock: &UdpSocket, agent: &AgentProc) -> bool {
    answered(sock, agent, &options(sock.local_addr().unwrap(), "", ""))
}

#[test]
fn answers_to_unverified_sources_are_never_bigger_than_the_request() {
    // Trunk mode, no rate limit, loopback not taken as verified: this socket is a stranger.
    let agent = AgentProc::start("amplification", "[security]\nrequests_per_second = 0\nverified_sources = []\n");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let me = sock.local_addr().unwrap();
    let req = |line: &str, method: &str, extra: &str| {
        format!(
            "{line}\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{method};rport\r\nMax-Forwards: 70\r\nFrom: <sip:a@x>;tag=1\r\n\
             Contact: <sip:a@{me}>\r\nUser-Agent: softphone/1.0\r\n\
             To: <sip:b@y>\r\nCall-ID: amp-{method}\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
        )
    };
    let probes = [
        req("OPTIONS sip:b@y SIP/2.0", "OPTIONS", ""),
        req("REGISTER sip:y SIP/2.0", "REGISTER", ""),
        req("SUBSCRIBE sip:b@y SIP/2.0", "SUBSCRIBE", ""),
        req("BYE sip:b@y SIP/2.0", "BYE", ""),
        req("OPTIONS sip:b@y SIP/7.0", "OPTIONS", ""),
        req("FOO sip:b@y SIP/2.0", "FOO", ""),
        req("OPTIONS nobody:b@y SIP/2.0", "OPTIONS", ""),
        req("OPTIONS sip:b@y SIP/2.0", "OPTIONS", "Require: foo\r\n"),
        req("OPTIONS sip:b@y SIP/2.0", "INVITE", ""),
    ];
    let mut answered = 0;
    for p in &probes {
        sock.send_to(p.as_bytes(), agent.addr()).unwrap();
        let mut buf = [0u8; 4096];
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            let first = String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_string();
            eprintln!("{} bytes in, {n} bytes out: {first}", p.len());
            assert!(n <= p.len(), "{n}-byte answer to a {}-byte request: {first}", p.len());
            assert!(!String::from_utf8_lossy(&buf[..n]).contains("Backstop"), "no Server header to strangers");
            answered += 1;
        }
    }
    assert!(answered >= 3, "only {answered} answers: the agent should still answer what it can");
}

#[test]
fn an_unverified_caller_gets_no_more_bytes_than_it_sent_until_it_acknowledges() {
    let agent = AgentProc::start(
        "amplification-call",
        "[sip]\nanswer_after_ms = 100\nt1_ms = 100\n[security]\nrequests_per_second = 0\nverified_sources = []\n",
    );
    // 1. A spoofed-looking INVITE, sent once and never acknowledged: everything
    //    the agent sends back, over the whole 64×T1, fits in what it sent.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let me = sock.local_addr().unwrap();
    let rtp = RtpCapture::start();
    let sdp = OFFER.replace("[rtp_port]", &rtp.port.to_string()).replace('\n', "\r\n") + "\r\n";
    let invite = format!(
        "INVITE sip:+15559990000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-spoof;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:+15551230001@{me}>;tag=s1\r\nTo: <sip:+15559990000@127.0.0.1>\r\n\
         Call-ID: spoof-1\r\nCSeq: 1 INVITE\r\nContact: <sip:x@{me}>\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    sock.send_to(invite.as_bytes(), agent.addr()).unwrap();
    let (mut got, mut first_lines) = (0usize, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            got += n;
            first_lines.push(String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_string());
        }
    }
    eprintln!("sent {} bytes, got {got} bytes back: {first_lines:?}", invite.len());
    assert!(got <= invite.len(), "{got} bytes back for a {}-byte INVITE: {first_lines:?}", invite.len());
    assert!(!first_lines.iter().any(|l| l.contains("100") || l.contains("180")), "{first_lines:?}");
    assert!(rtp.finish().is_empty(), "no RTP before an ACK proves the address");

    // 2. A real caller from an unverified address still gets through: no 100/180, the 200
    //    once its INVITE retransmission pays for it; its ACK verifies the address.
    let dir = scratch_dir("sipp-unverified");
    let sc = scenario("unverified", &[&invite_sc(), ANSWERED, &ack(1), &pause(300), CALLER_BYE]);
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[("rtp_port", "40072".into())]);
    assert!(run.success, "{}\n{}", run.errors, agent.log());
    assert_eq!(run.received_count("SIP/2.0 180", "1 INVITE"), 0);
    // 3. The next call from the same (now verified) address rings as usual.
    let dir = scratch_dir("sipp-verified");
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[("rtp_port", "40074".into())]);
    assert!(run.success, "{}\n{}", run.errors, agent.log());
    assert_eq!(run.received_count("SIP/2.0 180", "1 INVITE"), 1);
    // The leads say which callers were shown to be real: a text-back must not go to a spoofed number.
    let leads = agent.wait_leads(3, Duration::from_secs(10));
    let spoofed = leads.iter().find(|l| l["call_id"] == "spoof-1").expect("the spoofed call's lead");
    assert_eq!(spoofed["source_verified"], false);
    assert_eq!(spoofed["outcome"], "no_ack");
    assert!(leads.iter().filter(|l| l["call_id"] != "spoof-1").all(|l| l["source_verified"] == true), "{leads:?}");
}

fn invite_sc() -> String {
    invite("", OFFER)
}
