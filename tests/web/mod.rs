//! Helpers of the HTTP face's tests (`tests/http.rs`, `tests/inbox_browser.rs`):
//! a small HTTP/1.1 client over `std::net::TcpStream` (every request its
//! own connection, bounded by timeouts), the password hash from the real
//! `backstop passwd`, and a SIPp caller who speaks a name and a need and
//! keys a number, a ZIP and "emergency".
#![allow(dead_code)]

pub mod browser;

use crate::common::pcap::CallerAudio;
use crate::common::scenario::*;
use crate::common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub const USER: &str = "owner";
pub const PASSWORD: &str = "correct horse battery staple";
/// The link key the tests configure, so they can sign links of their own.
pub const LINK_SECRET: &str = "test-link-secret-0123456789abcdef0123";

/// A response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// `name=value` of each cookie set.
    pub fn cookies(&self) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.split(';').next().unwrap_or("").to_string())
            .collect()
    }
}

/// One request on a connection of its own (`Connection: close`).
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to the HTTP face");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    // Read to the end of the body as its length says (some servers keep the connection open).
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        if let Some(total) = complete_len(&raw) {
            raw.truncate(total);
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read the response of {method} {path}: {e}"),
        }
    }
    parse(&raw)
}

/// The length of a whole response in `raw`, once it is all there (`None`: read on to EOF).
fn complete_len(raw: &[u8]) -> Option<usize> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
    if status == 204 || status == 304 {
        return Some(end);
    }
    for line in head.split("\r\n") {
        if let Some(v) = line.strip_prefix("content-length:") {
            let n: usize = v.trim().parse().ok()?;
            return (raw.len() >= end + n).then_some(end + n);
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            return raw[end..].windows(5).position(|w| w == b"0\r\n\r\n").map(|p| end + p + 5);
        }
    }
    None
}

fn parse(raw: &[u8]) -> Resp {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no header end: {raw:?}"));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        body = dechunk(&body);
    }
    Resp { status, headers, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).split(';').next().unwrap().trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    request(addr, "GET", path, headers, b"")
}

/// A form POST.
pub fn post_form(addr: SocketAddr, path: &str, headers: &[(&str, &str)], form: &[(&str, &str)]) -> Resp {
    let body = serde_urlencoded::to_string(form).unwrap();
    let mut h = headers.to_vec();
    h.push(("Content-Type", "application/x-www-form-urlencoded"));
    request(addr, "POST", path, &h, body.as_bytes())
}

/// `backstop passwd` run with `input` on its standard input.
pub fn run_passwd(input: &[u8]) -> std::process::Output {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_backstop"))
        .arg("passwd")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// The argon2 hash `backstop passwd` prints for `password`.
pub fn passwd(password: &str) -> String {
    let out = run_passwd(format!("{password}\n").as_bytes());
    assert!(out.status.success(), "backstop passwd: {}", String::from_utf8_lossy(&out.stderr));
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

/// The `[http]` section of the tests: one user, the given tokens, a known link key.
pub fn http_config(port: u16, tokens: &[(&str, &str)]) -> String {
    let mut s = format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         link_secret = \"{LINK_SECRET}\"\n[[http.user]]\nname = \"{USER}\"\npassword_hash = \"{}\"\n",
        passwd(PASSWORD)
    );
    for (name, token) in tokens {
        s.push_str(&format!("[[http.token]]\nname = \"{name}\"\ntoken = \"{token}\"\n"));
    }
    s
}

/// A free TCP port on loopback (kept from the SIP tests' ports).
pub fn http_port() -> u16 {
    free_port()
}

fn speech(name: &str) -> Vec<i16> {
    backstop::media_files::load_prompt(name, &manifest_dir().join("tests/fixtures/speech").join(name)).unwrap().pcm
}

/// A caller ("Pat Caller", +15551230001) who says a name and a need,
/// keys 555 123 4567, ZIP 94110 and 1 (emergency), and waits for the goodbye.
pub fn place_speech_call(agent: &AgentProc, name: &str) {
    let dir = scratch_dir(name);
    let mut audio = CallerAudio::new(101).with_line_noise(7);
    audio.silence_until(8_800).audio(&speech("name.wav"));
    audio.silence_until(14_200).audio(&speech("need.wav"));
    audio.silence_until(20_000).digits("5551234567#");
    audio.silence_until(22_500).digits("94110");
    audio.silence_until(24_000).digits("1");
    audio.silence_until(34_000);
    let tail = AGENT_BYE.replace("timeout=\"40000\"", "timeout=\"50000\"");
    let pcap = dir.join("caller.pcap");
    audio.write(&pcap);
    let play = format!("  <nop><action><exec play_pcap_audio=\"{}\"/></action></nop>\n", pcap.display());
    let offer = OFFER.replace("[rtp_port]", "[media_port]");
    let sc = scenario(name, &[&invite("", &offer), ANSWERED, &ack(1), &pause(200), &play, &tail]);
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[]);
    assert!(run.success, "SIPp failed: {}\n{}", run.errors, agent.log());
}

/// Log in through the form: (the session cookie `name=value`, the CSRF token of the inbox page).
pub fn login(addr: SocketAddr) -> (String, String) {
    let form = get(addr, "/login", &[]);
    let cookie = form.cookies().into_iter().find(|c| c.starts_with("backstop_login=")).expect("login cookie");
    let token = hidden_csrf(&form.text());
    let r =
        post_form(addr, "/login", &[("Cookie", &cookie)], &[("user", USER), ("password", PASSWORD), ("csrf", &token)]);
    assert_eq!(r.status, 303, "{}", r.text());
    let session = r.cookies().into_iter().find(|c| c.starts_with("backstop_session=")).expect("session cookie");
    let inbox = get(addr, "/", &[("Cookie", &session)]);
    assert_eq!(inbox.status, 200);
    (session, hidden_csrf(&inbox.text()))
}

/// The value of the page's first `name="csrf"` hidden input.
pub fn hidden_csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\"").expect("a csrf input");
    let rest = &html[at..];
    let v = rest.find("value=\"").unwrap() + 7;
    rest[v..v + rest[v..].find('"').unwrap()].to_string()
}
