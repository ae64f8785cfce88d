//! The HTTP face against the real binary on loopback: who may read what
//! (sessions, CSRF, the login limiter, bearer tokens revoked by SIGHUP),
//! recordings by signed link (tampered, expired, traversal, Range), and a
//! lead placed by a real SIPp call read and handled through the API.

mod common;
mod web;

use backstop::http::links::Links;
use common::*;
use std::time::{Duration, Instant};
use web::*;

const CRM: &str = "crm-token-0123456789abcdef0123456789";
const ZAP: &str = "zap-token-0123456789abcdef0123456789";

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Poll `f` until it holds, for at most `limit`.
fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn nothing_without_auth_csrf_on_every_post_signed_links_and_revocation() {
    let port = http_port();
    let config = http_config(port, &[("crm", CRM), ("zap", ZAP)]);
    let mut agent = AgentProc::start("http-auth", &config);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));

    // No session: no page; no token: no API.
    for path in ["/", "/?view=handled", "/leads/abc"] {
        let r = get(addr, path, &[]);
        assert_eq!((r.status, r.header("location")), (303, Some("/login")), "{path}");
    }
    for path in ["/api/leads", "/api/leads/abc", "/api/leads/abc/events"] {
        let r = get(addr, path, &[]);
        assert_eq!(r.status, 401, "{path}");
        assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"), "{path}");
        assert!(r.json()["error"].is_string());
    }
    let r = get(addr, "/api/leads", &[("Authorization", "Bearer not-a-token-not-a-token-not-a-token")]);
    assert_eq!(r.status, 401);
    let r = request(addr, "POST", "/api/leads/abc/handled", &[], b"");
    assert_eq!(r.status, 401);

    // The login form's own token: without the cookie it pairs with, 403.
    let r = post_form(addr, "/login", &[], &[("user", USER), ("password", PASSWORD), ("csrf", "x")]);
    assert_eq!(r.status, 403);
    let (session, csrf) = login(addr);
    let cookie = [("Cookie", session.as_str())];

    // A POST without the session's CSRF token: 403, form or API.
    let r = post_form(addr, "/leads/abc/handled", &cookie, &[("note", "called")]);
    assert_eq!(r.status, 403, "{}", r.text());
    let r = post_form(addr, "/leads/abc/handled", &cookie, &[("csrf", "0123456789abcdef0123456789abcdef")]);
    assert_eq!(r.status, 403);
    let r = request(addr, "POST", "/api/leads/abc/handled", &cookie, b"{}");
    assert_eq!(r.status, 403);
    let r = post_form(addr, "/logout", &cookie, &[]);
    assert_eq!(r.status, 403);
    // With it, the request goes through (to a lead that does not exist).
    let r = post_form(addr, "/leads/abc/handled", &cookie, &[("csrf", &csrf)]);
    assert_eq!(r.status, 404);
    let r = request(addr, "POST", "/api/leads/abc/handled", &[cookie[0], ("X-CSRF-Token", &csrf)], b"");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no such lead");
    // A bearer token needs no CSRF token (it is not sent by a browser by itself).
    let crm = bearer(CRM);
    let r = request(addr, "POST", "/api/leads/abc/reopen", &[("Authorization", &crm)], b"");
    assert_eq!(r.status, 404);

    // The API with a token; bad queries are 400s.
    let r = get(addr, "/api/leads?view=all&limit=5", &[("Authorization", &crm)]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!((v["total"].as_u64(), v["limit"].as_u64(), v["offset"].as_u64()), (Some(0), Some(5), Some(0)));
    for q in ["view=nope", "limit=0", "limit=100000", "offset=x"] {
        let r = get(addr, &format!("/api/leads?{q}"), &[("Authorization", &crm)]);
        assert_eq!(r.status, 400, "{q}");
        assert!(r.json()["error"].as_str().is_some());
    }
    let r = request(addr, "POST", "/api/leads/abc/handled", &[("Authorization", &crm)], b"{not json");
    assert_eq!(r.status, 400);
    // Pages carry the headers that keep them private.
    let r = get(addr, "/", &cookie);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.header("content-security-policy").unwrap().contains("frame-ancestors 'none'"));

    // Recordings by signed link.
    let rec = agent.dir.join("data/recordings");
    std::fs::create_dir_all(&rec).unwrap();
    let bytes: Vec<u8> = (0..4000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(rec.join("t1-need.wav"), &bytes).unwrap();
    std::fs::write(agent.dir.join("data/secret.txt"), "secret").unwrap();
    let links = Links::with_key(LINK_SECRET.as_bytes(), None, 3600);
    let good = links.path("t1-need.wav", now_s());
    let r = get(addr, &good, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("audio/wav"));
    assert!(r.header("cache-control").unwrap().starts_with("private"));
    assert_eq!(r.body, bytes);
    let r = get(addr, &good, &[("Range", "bytes=100-199")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 100-199/4000"));
    assert_eq!(r.body, bytes[100..200]);
    let r = get(addr, &good, &[("Range", "bytes=3990-")]);
    assert_eq!((r.status, r.body.as_slice()), (206, &bytes[3990..]));
    // Tampered: the signature, the expiry, the file; or none at all.
    let sig_at = good.find("sig=").unwrap() + 4;
    let mut tampered = good.clone();
    let c = if &good[sig_at..sig_at + 1] == "0" { "1" } else { "0" };
    tampered.replace_range(sig_at..sig_at + 1, c);
    assert_eq!(get(addr, &tampered, &[]).status, 403);
    let exp: i64 = good.split("exp=").nth(1).unwrap().split('&').next().unwrap().parse().unwrap();
    assert_eq!(get(addr, &good.replace(&format!("exp={exp}"), &format!("exp={}", exp + 1)), &[]).status, 403);
    assert_eq!(get(addr, &good.replace("t1-need", "t1-name"), &[]).status, 403);
    assert_eq!(get(addr, "/recordings/t1-need.wav", &[]).status, 403);
    // Expired: signed two hours ago for one hour.
    let old = links.path("t1-need.wav", now_s() - 7200);
    assert_eq!(get(addr, &old, &[]).status, 403);
    // Traversal, even signed with the real key: 404.
    let q = |name: &str| {
        let p = links.path(name, now_s());
        p[p.find('?').unwrap()..].to_string()
    };
    for (raw, name) in [
        ("..%2fsecret.txt", "../secret.txt"),
        ("%2e%2e%2fsecret.txt", "../secret.txt"),
        ("..%2F..%2Fbackstop.toml", "../../backstop.toml"),
        ("%2Fetc%2Fpasswd", "/etc/passwd"),
        ("..%5csecret.txt", "..\\secret.txt"),
        ("%2e%2e", ".."),
        (".hidden", ".hidden"),
        ("a%00b.wav", "a\0b.wav"),
    ] {
        let r = get(addr, &format!("/recordings/{raw}{}", q(name)), &[]);
        assert_eq!(r.status, 404, "{raw}");
    }
    assert_eq!(get(addr, "/recordings/../secret.txt", &[]).status, 404);
    assert_eq!(get(addr, &links.path("t9-none.wav", now_s()), &[]).status, 404, "signed, but no such file");

    // A leaked token, removed from the config and reloaded (SIGHUP): 401.
    let cfg_path = agent.dir.join("backstop.toml");
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    let without = text.replace(&format!("[[http.token]]\nname = \"crm\"\ntoken = \"{CRM}\"\n"), "");
    assert_ne!(text, without);
    std::fs::write(&cfg_path, without).unwrap();
    std::process::Command::new("kill").args(["-HUP", &agent.pid().to_string()]).status().unwrap();
    eventually(Duration::from_secs(10), "the token revoked", || {
        get(addr, "/api/leads", &[("Authorization", &crm)]).status == 401
    });
    assert_eq!(get(addr, "/api/leads", &[("Authorization", &bearer(ZAP))]).status, 200, "the other token stays");
    assert_eq!(get(addr, "/", &cookie).status, 200, "the user's session stays");
    assert!(agent.log().contains("SIGHUP"), "{}", agent.log());

    // Logout ends the session.
    let r = post_form(addr, "/logout", &cookie, &[("csrf", &csrf)]);
    assert_eq!(r.status, 303);
    assert_eq!(get(addr, "/", &cookie).status, 303);

    // Wrong passwords: 401, then limited (429 with Retry-After), even for the right one.
    let form = get(addr, "/login", &[]);
    let lc = form.cookies().into_iter().find(|c| c.starts_with("backstop_login=")).unwrap();
    let token = hidden_csrf(&form.text());
    let attempt = |user: &str, pw: &str| {
        post_form(addr, "/login", &[("Cookie", &lc)], &[("user", user), ("password", pw), ("csrf", &token)])
    };
    for i in 0..5 {
        let r = attempt(USER, "wrong password");
        assert_eq!(r.status, 401, "attempt {i}");
        assert!(r.text().contains("Wrong user name or password"));
    }
    let r = attempt(USER, PASSWORD);
    assert_eq!(r.status, 429);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((800..=900).contains(&wait), "{wait}");
    assert_eq!(attempt("someone-else", "x").status, 429, "limited per client address too");

    // Every POST audited, and never a password.
    let log = agent.log();
    assert!(log.contains("result=\"403 csrf\"") || log.contains("result=403 csrf"), "{log}");
    assert!(log.lines().any(|l| l.contains("audit") && l.contains("/leads/abc/handled") && l.contains("owner")));
    assert!(!log.contains(PASSWORD) && !log.contains("wrong password"), "a password in the log");
    assert!(agent.terminate(), "a clean stop with the HTTP face up");
}

#[test]
fn the_login_limit_holds_for_concurrent_attempts_and_per_forwarded_client() {
    let port = http_port();
    let config = http_config(port, &[]).replacen("[http]\n", "[http]\ntrusted_proxies = [\"127.0.0.1/32\"]\n", 1);
    let mut agent = AgentProc::start("http-limit", &config);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let form = get(addr, "/login", &[]);
    let lc = form.cookies().into_iter().find(|c| c.starts_with("backstop_login=")).unwrap();
    let token = hidden_csrf(&form.text());
    let attempt = |from: &str, user: &str, pw: &str| {
        post_form(
            addr,
            "/login",
            &[("Cookie", &lc), ("X-Forwarded-For", from)],
            &[("user", user), ("password", pw), ("csrf", &token)],
        )
        .status
    };

    // 20 wrong passwords at once from one client: each is counted before its
    // password is checked, so at most five are checked at all.
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..20).map(|_| s.spawn(|| attempt("198.51.100.1", USER, "wrong password"))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wrong = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(wrong <= 5 && wrong + limited == 20, "{statuses:?}");
    // Finish the five (some may have been refused only while others were in flight).
    for _ in wrong..5 {
        eventually(Duration::from_secs(10), "a wrong password counted", || {
            attempt("198.51.100.1", USER, "wrong password") == 401
        });
    }
    assert_eq!(attempt("198.51.100.1", USER, PASSWORD), 429);
    // The address is locked whatever the name; names and addresses left of the
    // right-most untrusted one are the client's own words and change nothing.
    assert_eq!(attempt("198.51.100.1", "someone-else", "x"), 429);
    assert_eq!(attempt("203.0.113.7, 198.51.100.1", "someone-else", "x"), 429);
    // Another client behind the same proxy is not locked out by the first...
    assert_eq!(attempt("198.51.100.2", "someone-else", "x"), 401);
    // ...but the name is, from anywhere: five guesses at a user's name lock it for the window.
    assert_eq!(attempt("198.51.100.3", USER, PASSWORD), 429);

    // Names no user can have: refused at once, never counted, and logged escaped.
    assert_eq!(attempt("198.51.100.4", &"n".repeat(65), "x"), 401);
    assert_eq!(attempt("198.51.100.4", "x\nFORGED audit line", "x"), 401);
    // A form over the body limit: 413.
    let big = "a".repeat(20 * 1024);
    let r = post_form(addr, "/login", &[("Cookie", &lc)], &[("user", "x"), ("password", &big), ("csrf", &token)]);
    assert_eq!(r.status, 413);
    // A POST to no route, or with no handler for its method.
    assert_eq!(request(addr, "POST", "/no/such/route", &[("X-Forwarded-For", "198.51.100.5")], b"").status, 404);
    assert_eq!(request(addr, "POST", "/", &[], b"").status, 405);

    let log = agent.log();
    assert!(!log.lines().any(|l| l.starts_with("FORGED")), "a forged log line: {log}");
    assert!(log.contains("x\\nFORGED"), "the name logged escaped: {log}");
    let audited = |path: &str, status: &str, client: &str| {
        log.lines().any(|l| {
            l.contains("audit: request")
                && l.contains(&format!("path=\"{path}\""))
                && l.contains(&format!("status={status}"))
                && l.contains(&format!("client={client}"))
        })
    };
    assert!(audited("/no/such/route", "404", "198.51.100.5"), "{log}");
    assert!(audited("/", "405", "127.0.0.1"), "{log}");
    assert!(audited("/login", "413", "127.0.0.1"), "{log}");
    assert!(audited("/login", "429", "198.51.100.1"), "{log}");
    assert!(log.contains("client=198.51.100.1") && log.contains("login refused"), "{log}");
    assert!(agent.terminate());
}

#[test]
fn a_called_lead_in_the_api_with_playable_recordings_then_handled() {
    let port = http_port();
    let extra = format!(
        "[sip]\nanswer_after_ms = 100\n[leads_file]\nevents = true\n[recordings]\nwhole_call = true\n{}",
        http_config(port, &[("crm", CRM)])
    );
    let agent = AgentProc::start_default_script("http-lead", &extra);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let auth = bearer(CRM);
    let auth = [("Authorization", auth.as_str())];
    place_speech_call(&agent, "http-lead-call");
    let leads = agent.wait_leads(1, Duration::from_secs(30));
    let id = leads[0]["id"].as_str().unwrap().to_string();

    let mut lead = serde_json::Value::Null;
    eventually(Duration::from_secs(10), "the lead in the API", || {
        let r = get(addr, "/api/leads", &auth);
        lead = r.json()["leads"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["id"] == id.as_str()).cloned())
            .unwrap_or_default();
        !lead.is_null()
    });
    assert_eq!(lead["status"], "new", "{lead}");
    assert_eq!(lead["urgent"], true, "the caller pressed 1 for an emergency: {lead}");
    assert_eq!(lead["caller"]["display_name"], "Pat Caller");
    assert!(lead["callback"]["due_at"].is_string(), "{lead}");
    let one = get(addr, &format!("/api/leads/{id}"), &auth).json();
    assert_eq!(one["id"], id.as_str());

    // Every recording has a signed URL that plays, with Range.
    let base = format!("http://127.0.0.1:{port}/recordings/");
    let mut urls = vec![lead["recording_url"].as_str().expect("the whole call's recording_url").to_string()];
    for step in ["name", "need"] {
        urls.push(lead["answers"][step]["recording_url"].as_str().unwrap_or_else(|| panic!("{step}: {lead}")).into());
    }
    for url in &urls {
        assert!(url.starts_with(&base), "{url}");
        let path = &url["http://127.0.0.1:".len() + port.to_string().len()..];
        let file = path["/recordings/".len()..path.find('?').unwrap()].to_string();
        let on_disk = std::fs::read(agent.dir.join("data/recordings").join(&file)).unwrap();
        let r = get(addr, path, &[]);
        assert_eq!(r.status, 200, "{url}");
        assert_eq!(r.body, on_disk);
        let r = get(addr, path, &[("Range", "bytes=44-143")]);
        assert_eq!(r.status, 206);
        assert_eq!(r.body, on_disk[44..144]);
    }
    // The events carry recording_urls too (public_url is set).
    let events = std::fs::read_to_string(agent.dir.join("data/events.jsonl")).unwrap();
    let completed: serde_json::Value = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["type"] == "lead.completed")
        .expect("lead.completed in events.jsonl");
    let url = completed["lead"]["answers"]["need"]["recording_url"].as_str().expect("recording_url in the event");
    assert!(url.starts_with(&base));
    assert_eq!(get(addr, &url[url.find("/recordings/").unwrap()..], &[]).status, 200);

    // The inbox page shows it.
    let (session, csrf) = login(addr);
    let cookie = [("Cookie", session.as_str())];
    let page = get(addr, "/", &cookie).text();
    assert!(page.contains(&id) && page.contains("Pat Caller") && page.contains("tel:+15551234567"), "{page}");
    assert!(page.contains("emergency") && page.contains("badge urgent"), "{page}");
    let detail = get(addr, &format!("/leads/{id}"), &cookie).text();
    assert!(detail.contains("<audio controls preload=\"none\" src=\"/recordings/"), "{detail}");
    assert!(detail.contains("Called back"));

    // Handled through the API: in the handled view, out of the open one, and lead.handled published.
    let r = request(addr, "POST", &format!("/api/leads/{id}/handled"), &auth, br#"{"note":"booked for 3pm"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "handled");
    assert_eq!(v["callback"]["handled_by"], "crm");
    assert_eq!(v["callback"]["note"], "booked for 3pm");
    assert!(v["callback"]["time_to_callback_secs"].is_u64(), "{v}");
    let ids = |view: &str| -> Vec<String> {
        get(addr, &format!("/api/leads?view={view}"), &auth).json()["leads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids("handled"), std::slice::from_ref(&id));
    assert!(ids("open").is_empty());
    let kinds = |events: &serde_json::Value| -> Vec<String> {
        events.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_string()).collect()
    };
    let evs = get(addr, &format!("/api/leads/{id}/events"), &auth).json();
    assert!(kinds(&evs["events"]).contains(&"lead.handled".to_string()), "{evs}");
    eventually(Duration::from_secs(10), "lead.handled in events.jsonl", || {
        std::fs::read_to_string(agent.dir.join("data/events.jsonl")).unwrap().contains("\"lead.handled\"")
    });
    // Handling it again changes nothing and publishes nothing.
    let r = request(addr, "POST", &format!("/api/leads/{id}/handled"), &auth, b"");
    assert_eq!(r.status, 200);
    let evs = get(addr, &format!("/api/leads/{id}/events"), &auth).json();
    assert_eq!(kinds(&evs["events"]).iter().filter(|k| *k == "lead.handled").count(), 1, "{evs}");
    // The page shows the callback; reopening through the form puts it back in the open view.
    let detail = get(addr, &format!("/leads/{id}"), &cookie).text();
    assert!(detail.contains("booked for 3pm") && detail.contains("Reopen"), "{detail}");
    let r = post_form(addr, &format!("/leads/{id}/reopen"), &cookie, &[("csrf", &csrf)]);
    assert_eq!((r.status, r.header("location")), (303, Some(format!("/leads/{id}").as_str())));
    assert_eq!(ids("open"), std::slice::from_ref(&id));
    let r = post_form(addr, &format!("/leads/{id}/handled"), &cookie, &[("csrf", &csrf), ("note", "second call")]);
    assert_eq!(r.status, 303);
    assert_eq!(ids("handled"), [id]);
}

#[test]
fn passwd_refuses_an_empty_password_and_a_taken_port_is_named() {
    let out = run_passwd(b"\n");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"), "{}", String::from_utf8_lossy(&out.stderr));

    // The HTTP port taken: the agent stops at the start and says which.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = scratch_dir("http-port-taken");
    let cfg = dir.join("backstop.toml");
    std::fs::write(&cfg, format!("{}{SKELETON_SCRIPT}", http_config(port, &[]))).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_backstop"))
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the agent ran with its HTTP port taken");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("listen 127.0.0.1:{port}: address in use")), "{text}");
    drop(taken);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without an HTTP face, SIGHUP still reloads the config (lines, prompts,
/// sinks) and must not end the agent (the signal's default action would,
/// calls and all). What a reload changes is tested in tests/service.rs.
#[test]
fn sighup_without_an_http_face_reloads_and_the_agent_runs_on() {
    let mut agent = common::AgentProc::start("http-no-face-hup", "");
    std::process::Command::new("kill").args(["-HUP", &agent.pid().to_string()]).status().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !agent.log().contains("SIGHUP: config reloaded") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(agent.log().contains("SIGHUP: config reloaded"), "{}", agent.log());
    let alive = std::process::Command::new("kill").args(["-0", &agent.pid().to_string()]).status().unwrap();
    assert!(alive.success(), "the agent ended on SIGHUP");
    assert!(agent.terminate(), "a clean stop after SIGHUP");
}
