//! Registration in a cluster: the front Kamailio (the shipped
//! `deploy/kamailio/kamailio.cfg` with `WITH_UACREG`) registers the business's
//! account once, with the `uac` module's uac_reg, at a Kamailio registrar
//! standing in for the PBX (tests/kamailio/kamailio.cfg); two agents in trunk
//! mode sit behind the front and never register. Asserts that the PBX holds
//! exactly one contact for the account (the front's), and that calls to the
//! account reach the agents through the front, one leg and one lead per call,
//! both agents taking a share. The second test measures the topology this
//! avoids the same way (each agent registering the account: two contacts, the
//! call forked to both), so the checks are shown to catch it. Run with
//! `--nocapture` for the figures.

mod common;

use common::kamailio::Kamailio;
use common::scenario::*;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The account the front registers (a subscriber of the PBX).
const ACCOUNT: (&str, &str) = ("overflow", "overflowpw");

/// The PBX: tests/kamailio/kamailio.cfg with its subscribers, plus the `ctl`
/// module on a socket in its directory so `kamcmd ul.dump` can read its
/// location table.
fn start_pbx(dir: &Path) -> (Kamailio, String) {
    let db = common::kamailio::write_subscribers(dir, &[("1001", "ownerpw"), ACCOUNT]);
    let ctl = format!("unix:{}", dir.join("ctl.sock").display());
    let shipped = std::fs::read_to_string(manifest_dir().join("tests/kamailio/kamailio.cfg")).unwrap();
    let anchor = "loadmodule \"auth_db.so\"\n";
    assert!(shipped.contains(anchor), "tests/kamailio/kamailio.cfg no longer loads auth_db.so");
    let cfg = shipped
        .replace("@DBDIR@", &db.display().to_string())
        .replace(anchor, &format!("{anchor}loadmodule \"ctl.so\"\nmodparam(\"ctl\", \"binrpc\", \"{ctl}\")\n"));
    (Kamailio::start(dir, &cfg), ctl)
}

/// The shipped front config for loopback, with registration on: the define
/// uncommented, the uacreg table in `db`, the contact on the front's own port
/// (the helper fills in `@PORT@`), a 1 s registration timer, the list file,
/// a 1 s probe interval, the ctl socket in `dir`, and the log to stderr.
fn front_config(dir: &Path, db: &Path, list: &Path) -> String {
    let shipped = std::fs::read_to_string(manifest_dir().join("deploy/kamailio/kamailio.cfg")).unwrap();
    let mut cfg = shipped.clone();
    for (from, to) in [
        ("##!define WITH_UACREG", "#!define WITH_UACREG".to_string()),
        ("listen=udp:0.0.0.0:5060", "listen=udp:127.0.0.1:@PORT@".to_string()),
        ("\"/etc/kamailio/dispatcher.list\"", format!("\"{}\"", list.display())),
        ("\"text:///etc/kamailio/uacreg\"", format!("\"text://{}\"", db.display())),
        ("\"KAMAILIO_ADDR:5060\"", "\"127.0.0.1:@PORT@\"".to_string()),
        ("\"reg_timer_interval\", 10)", "\"reg_timer_interval\", 1)".to_string()),
        ("\"unix:/run/kamailio/kamailio_ctl\"", format!("\"unix:{}\"", dir.join("ctl.sock").display())),
        ("\"ds_ping_interval\", 5)", "\"ds_ping_interval\", 1)".to_string()),
        ("log_stderror=no", "log_stderror=yes".to_string()),
        ("!TRUSTED_SOURCES!192.0.2.10/32!g", "!TRUSTED_SOURCES!127.0.0.1/32!g".to_string()),
    ] {
        assert!(cfg.contains(from), "the shipped kamailio.cfg no longer has {from:?}");
        cfg = cfg.replace(from, &to);
    }
    cfg
}

/// The front's uacreg table (db_text): the account, registered at the PBX
/// under the contact user `overflow-cluster`, every 60 s; `realm` left empty
/// as the shipped example does (uac_reg then answers whatever realm the
/// PBX challenges with).
fn write_uacreg(dir: &Path, pbx_port: u16) -> std::path::PathBuf {
    let db = dir.join("uacreg");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(db.join("version"), "id(int,auto) table_name(string) table_version(int) \n0:uacreg:5\n").unwrap();
    let header = std::fs::read_to_string(manifest_dir().join("deploy/kamailio/uacreg/uacreg")).unwrap();
    let header = header.lines().next().unwrap();
    let (user, password) = ACCOUNT;
    std::fs::write(
        db.join("uacreg"),
        format!(
            "{header}\n1:overflow-cluster:{user}:127.0.0.1:{user}:127.0.0.1::{user}:{password}::\
             sip\\:127.0.0.1\\:{pbx_port}:60:0:0::\n"
        ),
    )
    .unwrap();
    db
}

/// The contacts the PBX's location table holds for `aor`, from `kamcmd ul.dump`.
fn contacts(ctl: &str, aor: &str) -> Vec<String> {
    let out = Command::new("kamcmd").args(["-s", ctl, "ul.dump"]).output().expect("kamcmd must be installed");
    let dump = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "kamcmd ul.dump failed: {}", String::from_utf8_lossy(&out.stderr));
    // Each AoR block: "AoR: overflow" then its "Contact: <uri>" lines.
    let mut found = Vec::new();
    let mut current = String::new();
    for line in dump.lines().map(str::trim) {
        if let Some(a) = line.strip_prefix("AoR:") {
            current = a.trim().to_string();
        } else if let Some(c) = line.strip_prefix("Address:")
            && current == aor
        {
            found.push(c.trim().to_string());
        }
    }
    found
}

/// (Call-ID, To tag) of every 200 to an INVITE SIPp received (its -trace_msg log).
fn invite_answers(messages: &str) -> Vec<(String, String)> {
    let header = |m: &str, name: &str| {
        m.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_default()
    };
    messages
        .split("-----------------------------------------------")
        .filter(|m| m.contains("message received"))
        .filter(|m| m.lines().any(|l| l.starts_with("SIP/2.0 200")) && header(m, "CSeq:") == "1 INVITE")
        .map(|m| {
            let tag = header(m, "To:").split_once(";tag=").map(|(_, t)| t.to_string()).unwrap_or_default();
            (header(m, "Call-ID:"), tag)
        })
        .collect()
}

/// Each lead's last version (the file holds every version, one line each).
fn final_leads(node: &AgentProc) -> Vec<serde_json::Value> {
    let mut by_id: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for lead in node.leads() {
        by_id.insert(lead["id"].as_str().expect("lead id").to_string(), lead);
    }
    by_id.into_values().collect()
}

#[test]
fn the_front_registers_once_and_dispatches_the_accounts_calls() {
    const CALLS: u32 = 10;
    let pbx_dir = scratch_dir("cluster-register-pbx");
    let (pbx, ctl) = start_pbx(&pbx_dir);
    let agents: Vec<AgentProc> = (0..2)
        .map(|i| {
            AgentProc::start(
                &format!("cluster-register-node{i}"),
                "[sip]\nanswer_after_ms = 50\ntrusted_sources = [\"127.0.0.1\"]\n",
            )
        })
        .collect();
    let front_dir = scratch_dir("cluster-register-front");
    let list: String = agents.iter().map(|n| format!("1 sip:127.0.0.1:{} 0 0\n", n.port)).collect();
    std::fs::write(front_dir.join("dispatcher.list"), list).unwrap();
    let db = write_uacreg(&front_dir, pbx.port);
    let front = Kamailio::start(&front_dir, &front_config(&front_dir, &db, &front_dir.join("dispatcher.list")));

    // The front's REGISTER (challenged, then authenticated) lands at the PBX.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pbx.log().contains("REGISTER saved sip:overflow@") {
        assert!(Instant::now() < deadline, "the front never registered\nPBX:\n{}\nfront:\n{}", pbx.log(), front.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Probes have found both agents, and the timer has had a few more turns.
    // (A refresh from the front would update the same contact; a second
    // contact would mean a second registrant, such as an agent.)
    std::thread::sleep(Duration::from_millis(2500));
    let registered = contacts(&ctl, "overflow");
    assert_eq!(
        registered,
        vec![format!("sip:overflow-cluster@127.0.0.1:{}", front.port)],
        "exactly one contact for the account, the front's"
    );

    // The front says so too (the integrator's check): flags bit 4, registered.
    let ctl_front = format!("unix:{}", front_dir.join("ctl.sock").display());
    let out = Command::new("kamcmd")
        .args(["-s", &ctl_front, "uac.reg_info", "l_uuid", "overflow-cluster"])
        .output()
        .expect("kamcmd must be installed");
    let info = String::from_utf8_lossy(&out.stdout).to_string();
    let flags: u32 = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("flags:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no flags in uac.reg_info: {info}"));
    assert_ne!(flags & 4, 0, "uac.reg_info: {info}");

    // The PBX's keep-alive OPTIONS to the registered contact: 200 from the front.
    let options = r#"
  <send retrans="500">
    <![CDATA[
      OPTIONS sip:overflow-cluster@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-[call_number]-opt;rport
      From: <sip:pbx@[local_ip]:[local_port]>;tag=[call_number]
      To: <sip:overflow-cluster@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 OPTIONS
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
"#;
    let run =
        run_sipp(&scratch_dir("cluster-register-options"), &scenario("options", &[options]), front.addr(), false, &[]);
    assert!(run.success, "OPTIONS to the registered contact: {}\nfront:\n{}", run.errors, front.log());

    // Calls to the account at the PBX: it relays each to the one contact, the
    // front hands it to one agent.
    let offer = OFFER.replace("[rtp_port]", "[media_port]");
    let routed = |s: &str| s.replace("      Call-ID: [call_id]\n", "      Call-ID: [call_id]\n      [routes]\n");
    let to_account = invite("", &offer)
        .replace("INVITE sip:+15559990000@", "INVITE sip:overflow@")
        .replace("To: <sip:+15559990000@", "To: <sip:overflow@");
    let sc = scenario("to-account", &[&to_account, ANSWERED, &routed(&ack(1)), &pause(300), &routed(CALLER_BYE)]);
    let sipp_dir = scratch_dir("cluster-register-sipp");
    let started = Instant::now();
    let run = run_sipp_calls(&sipp_dir, &sc, pbx.addr(), false, &[], CALLS);
    let took = started.elapsed();
    assert!(run.success, "SIPp failed: {}\nPBX:\n{}\nfront:\n{}", run.errors, pbx.log(), front.log());
    // One answer per call at the caller, from one dialog: a forked call
    // would bring a second 200 with another To tag.
    let answers = invite_answers(&run.messages);
    let dialogs: BTreeSet<&(String, String)> = answers.iter().collect();
    assert_eq!((answers.len(), dialogs.len()), (CALLS as usize, CALLS as usize), "one 200 per INVITE: {answers:?}");

    // One INVITE per call reached an agent, and one lead per call.
    let deadline = Instant::now() + Duration::from_secs(10);
    let per_node = loop {
        let per_node: Vec<Vec<serde_json::Value>> = agents.iter().map(final_leads).collect();
        let total: usize = per_node.iter().map(Vec::len).sum();
        let done = per_node.iter().flatten().all(|l| l["ended_at"].is_string());
        if (total >= CALLS as usize && done) || Instant::now() > deadline {
            break per_node;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let invites: Vec<usize> = agents.iter().map(|a| a.log().matches("}: INVITE from=").count()).collect();
    let shares: Vec<usize> = per_node.iter().map(Vec::len).collect();
    eprintln!(
        "register: PBX contacts for overflow {registered:?}; {CALLS} calls in {took:?}: \
         INVITEs per agent {invites:?}, leads per agent {shares:?}"
    );
    assert_eq!(invites.iter().sum::<usize>(), CALLS as usize, "one leg per call: {invites:?}");
    assert!(shares.iter().all(|n| *n > 0), "both agents take a share: {shares:?}");
    assert_eq!(shares.iter().sum::<usize>(), CALLS as usize, "one lead per call: {shares:?}");
    let mut call_ids = BTreeMap::<String, usize>::new();
    for lead in per_node.iter().flatten() {
        *call_ids.entry(lead["call_id"].as_str().expect("call_id").to_string()).or_default() += 1;
        assert_eq!(lead["ended_by"], "caller", "{lead}");
    }
    assert_eq!(call_ids.len(), CALLS as usize, "{call_ids:?}");
    // The front put the account back in the Request-URI (uac_reg_lookup).
    assert_eq!(front.log().matches("for registered account sip:overflow@127.0.0.1").count(), CALLS as usize);
    // Still one contact after the calls.
    assert_eq!(contacts(&ctl, "overflow").len(), 1);
}

/// The topology the front avoids, measured the same way: two agents that
/// each register the account themselves leave two contacts at the PBX, and
/// one call to the account reaches both (a forked call, two legs).
#[test]
fn agents_registering_themselves_fork_each_call() {
    let pbx_dir = scratch_dir("cluster-selfreg-pbx");
    let (pbx, ctl) = start_pbx(&pbx_dir);
    let (user, password) = ACCOUNT;
    let agents: Vec<AgentProc> = (0..2)
        .map(|i| {
            AgentProc::start(
                &format!("cluster-selfreg-node{i}"),
                &format!(
                    "[sip]\nanswer_after_ms = 50\n[[register]]\nregistrar = \"sip:127.0.0.1:{}\"\n\
                     username = \"{user}\"\npassword = \"{password}\"\n",
                    pbx.port
                ),
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let registered = loop {
        let c = contacts(&ctl, "overflow");
        if c.len() >= 2 || Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(registered.len(), 2, "one contact per agent: {registered:?}\nPBX:\n{}", pbx.log());

    let offer = OFFER.replace("[rtp_port]", "[media_port]");
    let to_account = invite("", &offer)
        .replace("INVITE sip:+15559990000@", "INVITE sip:overflow@")
        .replace("To: <sip:+15559990000@", "To: <sip:overflow@");
    // The caller stops at the first 200: what matters is where the INVITE went.
    let sc = scenario("to-account", &[&to_account, ANSWERED]);
    let sipp_dir = scratch_dir("cluster-selfreg-sipp");
    let _ = run_sipp(&sipp_dir, &sc, pbx.addr(), false, &[]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let invites = loop {
        let n: Vec<usize> = agents.iter().map(|a| a.log().matches("}: INVITE from=").count()).collect();
        if n.iter().all(|n| *n > 0) || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("self-registered: PBX contacts for overflow {registered:?}; one call, INVITEs per agent {invites:?}");
    assert_eq!(invites, vec![1, 1], "the PBX forks the one call to both agents");
}
