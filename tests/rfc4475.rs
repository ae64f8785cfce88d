//! The 50 RFC 4475 torture messages (tests/fixtures/rfc4475, rewritten to
//! loopback), each sent as one UDP datagram to the running agent. Every
//! answer must be one that EXPECTED.md allows for a conforming UAS, and the
//! agent must still answer OPTIONS afterwards.
//!
//! Responses go where RFC 3261 §18.2.2 says: the source IP and the Via's
//! sent-by port (5060, or 5061 for TLS, unless the Via names one). So the
//! test sends from 127.0.0.1:5060 and also listens on the other ports the
//! messages name. Run with `--nocapture` to see the table.

mod common;

use common::*;
use std::net::UdpSocket;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What EXPECTED.md allows, as response codes; 0 means "no response" (drop).
fn allowed(name: &str) -> &'static [u16] {
    match name {
        "badaspec" | "baddn" | "badinv01" | "clerr" | "escruri" | "ltgtruri" | "lwsruri" | "lwsstart" | "ncl"
        | "quotbal" | "scalar02" | "trws" => &[400, 0],
        "badvers" => &[505],
        "bcast" | "bigcode" | "noreason" | "unreason" | "scalarlg" => &[0],
        "bext01" => &[420],
        "cparam01" | "cparam02" | "dblreq" => &[403, 405],
        "escnull" => &[403, 404, 405],
        "esc02" | "intmeth" => &[501, 405],
        "insuf" | "mcl01" | "mismatch01" | "mismatch02" | "multi01" | "regbadct" => &[400],
        "invut" => &[415],
        "baddate" => &[400, 200],
        "badbranch" | "esc01" | "inv2543" | "longreq" | "wsinv" => &[200],
        "lwsdisp" | "semiuri" | "transports" => &[200, 404],
        "mpart01" => &[200, 405, 415],
        "novelsc" | "unkscm" => &[416],
        "regaut01" => &[401, 403, 405],
        "regescrt" | "unksm2" => &[405, 403, 400],
        "sdp01" => &[406, 200],
        "zeromf" => &[200, 483],
        // Not in the RFC's text: no SIP-Version and no Via, so nothing can be answered.
        "test" => &[0, 400],
        other => panic!("no expectation for {other}"),
    }
}

fn header(msg: &str, names: &[&str]) -> Option<String> {
    msg.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        names.iter().any(|x| n.trim().eq_ignore_ascii_case(x)).then(|| v.trim().to_string())
    })
}

#[test]
fn torture_messages_get_conforming_answers() {
    // Answered as a listed peer (a carrier or PBX) is: the full RFC 3261 answers.
    // To unlisted UDP sources answers are never bigger than the request (tests/hostile.rs).
    let agent = AgentProc::start("rfc4475", "[sip]\nanswer_after_ms = 50\ntrusted_sources = [\"127.0.0.1\"]\n");
    let ports = [5060u16, 5061, 5050, 5070];
    let main = UdpSocket::bind("127.0.0.1:5060").expect("this test needs 127.0.0.1:5060 free");
    let (tx, rx) = mpsc::channel::<(u16, String)>();
    let mut listeners = vec![main.try_clone().unwrap()];
    for p in &ports[1..] {
        listeners.push(UdpSocket::bind(("127.0.0.1", *p)).unwrap_or_else(|e| panic!("127.0.0.1:{p}: {e}")));
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sock in listeners {
        let tx = tx.clone();
        let stop = stop.clone();
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            let port = sock.local_addr().unwrap().port();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    let _ = tx.send((port, String::from_utf8_lossy(&buf[..n]).into_owned()));
                }
            }
        });
    }

    let dir = manifest_dir().join("tests/fixtures/rfc4475");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".dat").map(str::to_string))
        .collect();
    names.sort();
    assert_eq!(names.len(), 50);

    let mut table = Vec::new();
    let mut failures = Vec::new();
    for name in &names {
        let bytes = std::fs::read(dir.join(format!("{name}.dat"))).unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let call_id = header(&text, &["Call-ID", "i"]);
        main.send_to(&bytes, agent.addr()).unwrap();
        // Collect responses with this Call-ID until a final one, or 500 ms of quiet.
        let mut codes: Vec<(u16, u16)> = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            let Ok((port, resp)) = rx.recv_timeout(Duration::from_millis(20)) else { continue };
            if header(&resp, &["Call-ID", "i"]) != call_id {
                continue;
            }
            let code: u16 = resp.get(8..11).and_then(|c| c.parse().ok()).unwrap_or(0);
            codes.push((code, port));
            if code >= 200 {
                // Give a duplicate (a second answer to dblreq, say) a moment to show up.
                std::thread::sleep(Duration::from_millis(100));
                while let Ok((p, r)) = rx.try_recv() {
                    if header(&r, &["Call-ID", "i"]) == call_id {
                        codes.push((r.get(8..11).and_then(|c| c.parse().ok()).unwrap_or(0), p));
                    }
                }
                break;
            }
        }
        let finals: Vec<u16> = codes.iter().map(|c| c.0).filter(|c| *c >= 200).collect();
        let got = finals.first().copied().unwrap_or(0);
        let ok = allowed(name).contains(&got) && finals.len() <= 1;
        let shown = if codes.is_empty() {
            "no response".to_string()
        } else {
            codes.iter().map(|(c, p)| format!("{c} (to :{p})")).collect::<Vec<_>>().join(", ")
        };
        table.push(format!(
            "| {name} | {} | {} | {} |",
            allowed(name)
                .iter()
                .map(|c| if *c == 0 { "drop".into() } else { c.to_string() })
                .collect::<Vec<_>>()
                .join("/"),
            shown,
            if ok { "ok" } else { "WRONG" }
        ));
        if !ok {
            failures.push(format!("{name}: got {shown}"));
        }
    }

    // Still alive and answering.
    let probe = options_request(main.local_addr().unwrap(), "after-torture");
    main.send_to(probe.as_bytes(), agent.addr()).unwrap();
    let mut alive = false;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && !alive {
        if let Ok((_, r)) = rx.recv_timeout(Duration::from_millis(50)) {
            alive = r.starts_with("SIP/2.0 200") && r.contains("after-torture");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);

    println!("| message | allowed | our response | verdict |\n|---|---|---|---|");
    for row in &table {
        println!("{row}");
    }
    assert!(alive, "the agent stopped answering OPTIONS after the torture messages\n{}", agent.log());
    assert!(failures.is_empty(), "non-conforming answers:\n{}\n\nagent log:\n{}", failures.join("\n"), agent.log());
}
