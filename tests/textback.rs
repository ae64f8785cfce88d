//! The instant text-back against Twilio's published OpenAPI description
//! (`tests/contracts/twilio_api_v2010.json`), served by Prism, a mock server
//! that validates every request against it (`--errors`: an invalid request
//! gets a 4xx, never a made-up 201): missed calls placed by real SIPp calls
//! to the real agent, the texts' requests checked by Prism, the outcome read
//! from the agent's database; STOP by a signed inbound-message webhook,
//! which opts the caller out of texts from the number it was sent to only.
//! On a cluster (`[store]`, a real PostgreSQL from `common::postgres`), two
//! agents decide in the shared store: one text per caller, and a STOP to
//! either stops both.
//!
//! Prism comes from `BACKSTOP_PRISM` (scripts/test.sh sets it) or
//! `tests/contracts/node_modules/.bin/prism`. Without it the tests fail
//! under CI and are skipped, with a note, elsewhere.

mod common;

use common::scenario::*;
use common::*;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "test-auth-token-0123456789";
const FROM: &str = "+15005550006";

/// Prism serving the Twilio description on a loopback port, its log in a file.
struct Prism {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Prism {
    /// `None` (with a note) when Prism is not installed and this is not CI.
    fn start(name: &str) -> Option<Prism> {
        let bin = std::env::var_os("BACKSTOP_PRISM")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest_dir().join("tests/contracts/node_modules/.bin/prism"));
        if !bin.exists() {
            if std::env::var_os("CI").is_some() {
                panic!("Prism is not installed at {} (scripts/test.sh runs npm ci in tests/contracts)", bin.display());
            }
            eprintln!("note: skipped, Prism is not installed ({}): run npm ci in tests/contracts", bin.display());
            return None;
        }
        let dir = scratch_dir(name);
        let log = dir.join("prism.log");
        let port = free_port();
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(&bin)
            .args(["mock", "-h", "127.0.0.1", "-p", &port.to_string(), "--errors"])
            .arg(manifest_dir().join("tests/contracts/twilio_api_v2010.json"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start prism");
        let prism = Prism { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(90);
        while !prism.log().contains("Prism is listening") {
            assert!(Instant::now() < deadline, "Prism did not start:\n{}", prism.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(prism)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Prism's log of each request to the Messages resource: one string per
    /// request, its lines from "Request received" to the answer.
    fn message_requests(&self) -> Vec<String> {
        let log = self.log();
        let path = format!("post /2010-04-01/Accounts/{SID}/Messages.json");
        let mut out: Vec<String> = Vec::new();
        let mut current: Option<String> = None;
        for line in log.lines() {
            if line.contains("[HTTP SERVER]") && line.contains("Request received") {
                if let Some(c) = current.take() {
                    out.push(c);
                }
                if line.contains(&path) {
                    current = Some(String::new());
                }
            }
            if let Some(c) = current.as_mut() {
                c.push_str(line);
                c.push('\n');
            }
        }
        out.extend(current);
        out
    }
}

impl Drop for Prism {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("prism log:\n{}", self.log());
        }
    }
}

/// The agent with a `[[text_back]]` pointed at Prism, and `extra` config.
fn agent(name: &str, prism: &Prism, extra: &str) -> AgentProc {
    AgentProc::start(
        name,
        &format!(
            "[sip]\nanswer_after_ms = 50\n{extra}\n[[text_back]]\naccount_sid = \"{SID}\"\nauth_token = \"{TOKEN}\"\n\
             from = \"{FROM}\"\nbusiness = \"Acme Plumbing\"\nbase_url = \"{}\"\n",
            prism.base_url()
        ),
    )
}

/// One short call from `caller` (the From user): answered, 300 ms, hang up.
fn call_from(agent: &AgentProc, name: &str, caller: &str) {
    call_to(agent, name, caller, "+15559990000");
}

/// As `call_from`, to `called` (the Request-URI and To user).
fn call_to(agent: &AgentProc, name: &str, caller: &str, called: &str) {
    let dir = scratch_dir(name);
    let sc = scenario(name, &[&invite("", OFFER), ANSWERED, &ack(1), &pause(300), CALLER_BYE])
        .replace("+15551230001", caller)
        .replace("+15559990000", called);
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[("rtp_port", "40020".into())]);
    assert!(run.success, "SIPp failed: {}\n{}", run.errors, agent.log());
}

/// The text-backs the agent recorded: (number, status, reason, sid), oldest first.
type Row = (Option<String>, String, Option<String>, Option<String>);

fn rows(agent: &AgentProc) -> Vec<Row> {
    let Ok(c) = rusqlite::Connection::open_with_flags(
        agent.dir.join("data/outbox.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return Vec::new();
    };
    let _ = c.busy_timeout(Duration::from_secs(5));
    let Ok(mut st) = c.prepare("SELECT number, status, reason, sid FROM text_backs ORDER BY created_ms, rowid") else {
        return Vec::new();
    };
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap().collect::<Result<_, _>>().unwrap()
}

/// Wait until `n` text-backs are decided (not sending or retrying).
fn wait_rows(agent: &AgentProc, n: usize) -> Vec<Row> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = rows(agent);
        let decided = r.iter().filter(|(_, s, ..)| s != "sending" && s != "retry").count();
        if decided >= n {
            return r;
        }
        assert!(Instant::now() < deadline, "expected {n} decided text-backs, got {r:?}\nlog:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The lead store shows each decided text-back on its lead, as the sink recorded it.
fn assert_leads_record_it(agent: &AgentProc) {
    let c = rusqlite::Connection::open(agent.dir.join("data/outbox.db")).unwrap();
    let mut st = c.prepare("SELECT lead_id, status, reason, sid FROM text_backs").unwrap();
    let rows: Vec<(String, String, Option<String>, Option<String>)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    for (lead_id, status, reason, sid) in rows {
        let stored = backstop::store::get(&c, &lead_id, now).unwrap();
        let lead = stored.unwrap_or_else(|| panic!("lead {lead_id} is not in the lead store")).lead;
        let tb = lead.text_back.unwrap_or_else(|| panic!("lead {lead_id} has no text_back; the sink says {status}"));
        let want = if status == "unknown" { "failed" } else { status.as_str() };
        assert_eq!(serde_json::to_value(tb.status).unwrap(), want, "lead {lead_id}");
        assert_eq!((tb.reason, tb.sid), (reason, sid), "lead {lead_id}");
    }
}

fn row_for<'a>(rows: &'a [Row], number: &str) -> Vec<&'a Row> {
    rows.iter().filter(|r| r.0.as_deref() == Some(number)).collect()
}

/// Every Messages request validated: Prism said so, and answered 201.
fn assert_valid(prism: &Prism) {
    for r in prism.message_requests() {
        assert!(r.contains("The request passed the validation rules"), "Prism found the request invalid:\n{r}");
        assert!(!r.contains("did not pass the validation rules") && !r.contains("✖"), "{r}");
        assert!(r.contains("Responding with \"201\""), "{r}");
    }
}

#[test]
fn a_missed_call_is_texted_once_per_window_and_the_request_validates() {
    let Some(prism) = Prism::start("tb-prism-1") else { return };
    let agent = agent("tb-once", &prism, "");
    call_from(&agent, "tb-once-1", "+15551230001");
    let r = wait_rows(&agent, 1);
    let sent = row_for(&r, "+15551230001");
    assert_eq!(sent.len(), 1, "{r:?}");
    let (_, status, reason, sid) = sent[0];
    assert_eq!(status, "sent", "{reason:?}\n{}", agent.log());
    // Prism answers the description's example: a Message sid.
    assert!(sid.as_deref().is_some_and(|s| s.starts_with("SM") && s.len() == 34), "{sid:?}");
    assert_eq!(prism.message_requests().len(), 1, "{}", prism.log());
    assert_valid(&prism);

    // Again from the same number, inside once_per_hours: nothing sent.
    call_from(&agent, "tb-once-2", "+15551230001");
    let r = wait_rows(&agent, 2);
    let both = row_for(&r, "+15551230001");
    assert_eq!(both.len(), 2, "{r:?}");
    assert_eq!((both[1].1.as_str(), both[1].2.as_deref()), ("skipped", Some("recently_texted")));
    // A moment for a request that should not come.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(prism.message_requests().len(), 1, "exactly one Messages request:\n{}", prism.log());
    assert!(agent.log().contains("text-back skipped"), "{}", agent.log());
    assert_valid(&prism);
    assert_leads_record_it(&agent);
    eprintln!("Prism's log of the Messages request:\n{}", prism.message_requests().join("\n"));
    let leads = agent.wait_leads(2, Duration::from_secs(10));
    assert_eq!(leads.len(), 2);
    // Instant: the text went out within seconds of the INVITE.
    let c = rusqlite::Connection::open(agent.dir.join("data/outbox.db")).unwrap();
    let (lead_id, sent_at): (String, i64) = c
        .query_row("SELECT lead_id, updated_ms FROM text_backs WHERE status = 'sent'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let lead = leads.iter().find(|l| l["id"] == lead_id.as_str()).expect("the texted lead is in leads.jsonl");
    let received: humantime::Timestamp = lead["received_at"].as_str().unwrap().parse().unwrap();
    let received_ms = std::time::SystemTime::from(received).duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let latency = sent_at - received_ms as i64;
    eprintln!("text-back sent {latency} ms after the INVITE");
    assert!((0..10_000).contains(&latency), "{latency} ms");
}

/// POST a form to the agent's HTTP face; (status, body).
fn post_form(port: u16, path: &str, params: &[(String, String)], signature: &str) -> (u16, String) {
    let body = serde_urlencoded_form(params);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the HTTP face is listening");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         X-Twilio-Signature: {signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, resp)
}

fn serde_urlencoded_form(params: &[(String, String)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => (b as char).to_string(),
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    params.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

fn inbound(from: &str, body: &str) -> Vec<(String, String)> {
    inbound_to(FROM, from, body)
}

/// An inbound message from `from` to our number `to`.
fn inbound_to(to: &str, from: &str, body: &str) -> Vec<(String, String)> {
    [
        ("ToCountry", "US"),
        ("SmsMessageSid", "SM11111111111111111111111111111111"),
        ("NumMedia", "0"),
        ("SmsSid", "SM11111111111111111111111111111111"),
        ("SmsStatus", "received"),
        ("Body", body),
        ("To", to),
        ("NumSegments", "1"),
        ("MessageSid", "SM11111111111111111111111111111111"),
        ("AccountSid", SID),
        ("From", from),
        ("ApiVersion", "2010-04-01"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the HTTP face never listened on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_signed_stop_stops_texts_and_a_badly_signed_one_changes_nothing() {
    let Some(prism) = Prism::start("tb-prism-2") else { return };
    let http = free_port();
    let public = format!("http://127.0.0.1:{http}");
    let agent =
        agent("tb-stop", &prism, &format!("[http]\nlisten = \"127.0.0.1:{http}\"\npublic_url = \"{public}\"\n"));
    wait_port(http);
    let url = format!("{public}/sms/inbound");

    // A correctly signed STOP: 200, empty TwiML, and that number's next missed call gets no text.
    let stop = inbound("+15551230003", "Stop");
    let sig = backstop::textback::twilio::signature(TOKEN, &url, &stop);
    let (status, resp) = post_form(http, "/sms/inbound", &stop, &sig);
    assert_eq!(status, 200, "{resp}\n{}", agent.log());
    assert!(resp.to_ascii_lowercase().contains("content-type: text/xml") && resp.contains("<Response/>"), "{resp}");
    call_from(&agent, "tb-stop-1", "+15551230003");
    let r = wait_rows(&agent, 1);
    let rows3 = row_for(&r, "+15551230003");
    assert_eq!((rows3[0].1.as_str(), rows3[0].2.as_deref()), ("skipped", Some("opted_out")), "{r:?}");

    // A badly signed STOP (signed with another token): 403, and texts still go to that number.
    let forged = inbound("+15551230004", "STOP");
    let bad = backstop::textback::twilio::signature("someone-elses-token", &url, &forged);
    let (status, resp) = post_form(http, "/sms/inbound", &forged, &bad);
    assert_eq!(status, 403, "{resp}");
    let (status, _) = post_form(http, "/sms/inbound", &forged, "");
    assert_eq!(status, 403);
    call_from(&agent, "tb-stop-2", "+15551230004");
    let r = wait_rows(&agent, 2);
    let rows4 = row_for(&r, "+15551230004");
    assert_eq!(rows4[0].1, "sent", "{r:?}\n{}", agent.log());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(prism.message_requests().len(), 1, "one text, to the number that did not opt out:\n{}", prism.log());
    assert_valid(&prism);
    // Every POST is in the audit log.
    let log = agent.log();
    let audited: Vec<&str> = log.lines().filter(|l| l.contains("audit: POST") && l.contains("/sms/inbound")).collect();
    assert_eq!(audited.len(), 3, "{log}");
    assert!(audited[0].contains("result=\"ok\"") && audited[0].contains("action=\"opt_out\""), "{audited:?}");
    assert!(audited[1].contains("result=\"403") && audited[2].contains("result=\"403"), "{audited:?}");

    // START opts back in.
    let start = inbound("+15551230003", "START");
    let sig = backstop::textback::twilio::signature(TOKEN, &url, &start);
    assert_eq!(post_form(http, "/sms/inbound", &start, &sig).0, 200);
    call_from(&agent, "tb-stop-3", "+15551230003");
    let r = wait_rows(&agent, 3);
    let rows3 = row_for(&r, "+15551230003");
    assert_eq!(rows3.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(), ["skipped", "sent"], "{r:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(prism.message_requests().len(), 2, "{}", prism.log());
    assert_valid(&prism);
    assert_leads_record_it(&agent);
}

/// The sending number of each decided text-back to `number`, with its
/// status and reason, oldest first.
fn by_sender(agent: &AgentProc, number: &str) -> Vec<(String, String, Option<String>)> {
    let c = rusqlite::Connection::open(agent.dir.join("data/outbox.db")).unwrap();
    let mut st = c
        .prepare(
            "SELECT sender, status, reason FROM text_backs WHERE number = ?1 AND status NOT IN ('sending', 'retry')
             ORDER BY created_ms, rowid",
        )
        .unwrap();
    st.query_map([number], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_, _>>().unwrap()
}

#[test]
fn a_stop_to_one_sending_number_leaves_the_others_and_a_start_to_another_does_not_undo_it() {
    const FROM_B: &str = "+15005550007";
    const LINE_B: &str = "+15559990002";
    const CALLER: &str = "+15551230005";
    let Some(prism) = Prism::start("tb-prism-3") else { return };
    let http = free_port();
    let public = format!("http://127.0.0.1:{http}");
    // The default line texts from FROM (the top-level [[text_back]]); the
    // line called at LINE_B, another business, from FROM_B.
    let agent = agent(
        "tb-senders",
        &prism,
        &format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\npublic_url = \"{public}\"\n\
             [[line]]\nname = \"north\"\nmatch.called = [\"{LINE_B}\"]\n\
             [[line.text_back]]\naccount_sid = \"{SID}\"\nauth_token = \"{TOKEN}\"\nfrom = \"{FROM_B}\"\n\
             business = \"North Electric\"\nbase_url = \"{}\"\n",
            prism.base_url()
        ),
    );
    wait_port(http);
    let url = format!("{public}/sms/inbound");
    let post = |to: &str, body: &str| {
        let p = inbound_to(to, CALLER, body);
        let sig = backstop::textback::twilio::signature(TOKEN, &url, &p);
        let (status, resp) = post_form(http, "/sms/inbound", &p, &sig);
        assert_eq!(status, 200, "{resp}\n{}", agent.log());
    };
    let decided = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = by_sender(&agent, CALLER);
            if r.len() >= n {
                return r;
            }
            assert!(Instant::now() < deadline, "expected {n} decided text-backs, got {r:?}\nlog:\n{}", agent.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let skipped_from_a = (FROM.to_string(), "skipped".to_string(), Some("opted_out".to_string()));

    // STOP to A: A's text-back is skipped, B's still goes out.
    post(FROM, "STOP");
    call_from(&agent, "tb-senders-1", CALLER);
    let r = decided(1);
    assert_eq!((r.len(), &r[0]), (1, &skipped_from_a), "{r:?}");
    call_to(&agent, "tb-senders-2", CALLER, LINE_B);
    let r = decided(2);
    assert_eq!(r[1], (FROM_B.to_string(), "sent".to_string(), None), "{r:?}\n{}", agent.log());

    // START to B does not undo the STOP to A.
    post(FROM_B, "START");
    call_from(&agent, "tb-senders-3", CALLER);
    let r = decided(3);
    assert_eq!(r[2], skipped_from_a, "{r:?}");

    // A moment for a request that should not come: one text, from B.
    std::thread::sleep(Duration::from_millis(300));
    let requests = prism.message_requests();
    assert_eq!(requests.len(), 1, "{}", prism.log());
    assert_valid(&prism);
    assert_leads_record_it(&agent);
    let log = agent.log();
    let audited: Vec<&str> = log.lines().filter(|l| l.contains("audit: POST") && l.contains("/sms/inbound")).collect();
    assert_eq!(audited.len(), 2, "{log}");
    assert!(audited[0].contains("action=\"opt_out\"") && audited[0].contains(&format!("to=\"{FROM}\"")), "{audited:?}");
    assert!(
        audited[1].contains("action=\"opt_in\"") && audited[1].contains(&format!("to=\"{FROM_B}\"")),
        "{audited:?}"
    );
}

/// The text-backs the cluster's shared store decided: (number, status, reason), oldest first.
fn shared_rows(pg: &common::postgres::Postgres, db: &str) -> Vec<(String, String, String)> {
    pg.psql(
        db,
        "SELECT coalesce(number, ''), status, coalesce(reason, '') FROM text_backs ORDER BY created_ms, event_id",
    )
    .lines()
    .filter(|l| !l.is_empty())
    .map(|l| {
        let mut f = l.split('|').map(str::to_string);
        (f.next().unwrap_or_default(), f.next().unwrap_or_default(), f.next().unwrap_or_default())
    })
    .collect()
}

/// Wait until the shared store has `n` decided text-backs.
fn wait_shared_rows(
    pg: &common::postgres::Postgres,
    db: &str,
    n: usize,
    agents: &[&AgentProc],
) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = shared_rows(pg, db);
        if r.iter().filter(|(_, s, _)| s != "sending" && s != "retry").count() >= n {
            return r;
        }
        let logs: Vec<String> = agents.iter().map(|a| a.log()).collect();
        assert!(
            Instant::now() < deadline,
            "expected {n} decided text-backs in the shared store, got {r:?}\n{}",
            logs.join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Two agents sharing one PostgreSQL (`[store]`): the text-back decides
/// there, so a caller texted after a call to one node is not texted again
/// after a call to the other inside the window, and a STOP sent to one
/// node's `/sms/inbound` stops the other node's texts.
#[test]
fn on_a_cluster_a_caller_is_texted_once_and_a_stop_to_one_node_stops_the_others() {
    let Some(prism) = Prism::start("tb-prism-cluster") else { return };
    let pg = common::postgres::Postgres::shared();
    let db = "tb_cluster";
    let url = pg.fresh_database(db);
    let store =
        |node: &str| format!("[store]\nurl = \"{url}\"\nnode = \"{node}\"\nheartbeat_ms = 500\ndead_after_secs = 3\n");
    let a = agent("tb-cluster-a", &prism, &store("tb-a"));
    let http = free_port();
    let public = format!("http://127.0.0.1:{http}");
    let b = agent(
        "tb-cluster-b",
        &prism,
        &format!("{}[http]\nlisten = \"127.0.0.1:{http}\"\npublic_url = \"{public}\"\n", store("tb-b")),
    );
    wait_port(http);

    // Texted after the call to node a...
    call_from(&a, "tb-cluster-1", "+15551230001");
    let r = wait_shared_rows(pg, db, 1, &[&a, &b]);
    assert_eq!((r[0].0.as_str(), r[0].1.as_str()), ("+15551230001", "sent"), "{r:?}\n{}", a.log());
    // ...and not again after a call to node b inside once_per_hours.
    call_from(&b, "tb-cluster-2", "+15551230001");
    let r = wait_shared_rows(pg, db, 2, &[&a, &b]);
    assert_eq!((r[1].1.as_str(), r[1].2.as_str()), ("skipped", "recently_texted"), "{r:?}\n{}", b.log());

    // A STOP to node b's webhook; the next missed call from that number reaches node a: no text.
    let stop = inbound("+15551230002", "STOP");
    let sig = backstop::textback::twilio::signature(TOKEN, &format!("{public}/sms/inbound"), &stop);
    let (status, resp) = post_form(http, "/sms/inbound", &stop, &sig);
    assert_eq!(status, 200, "{resp}\n{}", b.log());
    assert_eq!(pg.psql(db, "SELECT number || ' ' || opted_out FROM sms_opt_outs"), "+15551230002 true");
    call_from(&a, "tb-cluster-3", "+15551230002");
    let r = wait_shared_rows(pg, db, 3, &[&a, &b]);
    assert_eq!((r[2].0.as_str(), r[2].1.as_str(), r[2].2.as_str()), ("+15551230002", "skipped", "opted_out"), "{r:?}");

    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(prism.message_requests().len(), 1, "one text for three missed calls:\n{}", prism.log());
    assert_valid(&prism);
}
