//! A headless Chromium driven through chromedriver by the W3C WebDriver
//! protocol (JSON over the tests' small HTTP client), for the inbox's and
//! the report's browser tests: [`browser`] finds it (or fails the test,
//! unless `BACKSTOP_SKIP_BROWSER=1`), [`Driver`] runs chromedriver,
//! [`Session`] is one phone-sized (390 × 844) browser.
//!
//! WebDriver is spoken here directly: fantoccini, built without TLS, offers
//! no way to make a client without naming hyper-util's connector, which is
//! not a dependency.

use super::{get, request};
use crate::common::free_port;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver's path, with chromium there. Without them the test fails,
/// unless `BACKSTOP_SKIP_BROWSER=1` is set: then it is skipped with a note.
/// A browser test never passes without a browser by accident.
pub fn browser() -> Option<PathBuf> {
    let driver =
        ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"].into_iter().map(PathBuf::from).find(|p| p.exists());
    match driver {
        Some(d) if Path::new(CHROMIUM).exists() => Some(d),
        _ if std::env::var_os("BACKSTOP_SKIP_BROWSER").is_some_and(|v| v == "1") => {
            eprintln!("skipped (BACKSTOP_SKIP_BROWSER=1): no chromium and chromedriver");
            None
        }
        _ => panic!(
            "chromium and chromedriver are needed (scripts/test.sh installs chromium and chromium-driver); \
             set BACKSTOP_SKIP_BROWSER=1 to skip the browser tests"
        ),
    }
}

/// chromedriver on a loopback port, killed on drop.
pub struct Driver {
    child: Child,
    pub addr: SocketAddr,
}

impl Driver {
    pub fn start(bin: &Path, dir: &Path) -> Driver {
        let port = free_port();
        let log = std::fs::File::create(dir.join("chromedriver.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start chromedriver");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && get(addr, "/status", &[]).json()["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver { child, addr }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebDriver session.
pub struct Session<'a> {
    driver: &'a Driver,
    pub id: String,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl<'a> Session<'a> {
    pub fn new(driver: &'a Driver, profile: &Path) -> Session<'a> {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--mute-audio", "--autoplay-policy=no-user-gesture-required",
                    format!("--user-data-dir={}", profile.display()),
                ],
                // A phone's viewport: 390 × 844 CSS pixels.
                "mobileEmulation": {"deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 2.0}},
            },
        }}});
        let r = Self::call_on(driver, "POST", "/session", Some(caps));
        let id = r["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {r}")).to_string();
        Session { driver, id }
    }

    fn call_on(driver: &Driver, method: &str, path: &str, body: Option<Value>) -> Value {
        Self::try_call_on(driver, method, path, body).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_call_on(driver: &Driver, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let headers: &[(&str, &str)] = if method == "POST" { &[("Content-Type", "application/json")] } else { &[] };
        let r = request(driver.addr, method, path, headers, body.as_bytes());
        let v: Value = serde_json::from_slice(&r.body).map_err(|_| format!("{method} {path}: {}", r.text()))?;
        if r.status != 200 {
            return Err(format!("{method} {path}: {} {v}", r.status));
        }
        Ok(v["value"].clone())
    }

    /// The text of `css` once `ok` holds for it (pages load after a click): bounded.
    pub fn wait_text(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        while Instant::now() < deadline {
            let find = json!({"using": "css selector", "value": css});
            let text = Self::try_call_on(self.driver, "POST", &format!("/session/{}/element", self.id), Some(find))
                .and_then(|e| {
                    let e = e[ELEMENT].as_str().unwrap_or("").to_string();
                    self.try_call_on_self("GET", &format!("/element/{e}/text"))
                })
                .map(|v| v.as_str().unwrap_or("").to_string());
            match text {
                Ok(t) if ok(&t) => return t,
                Ok(t) => last = t,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{css}: still {last:?}")
    }

    fn try_call_on_self(&self, method: &str, path: &str) -> Result<Value, String> {
        Self::try_call_on(self.driver, method, &format!("/session/{}{path}", self.id), None)
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        Self::call_on(self.driver, method, &format!("/session/{}{path}", self.id), body)
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.call("GET", "/url", None).as_str().unwrap().to_string()
    }

    pub fn find(&self, css: &str) -> String {
        let v = self.call("POST", "/element", Some(json!({"using": "css selector", "value": css})));
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("{css}: {v}")).to_string()
    }

    pub fn type_in(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call("POST", &format!("/element/{e}/value"), Some(json!({ "text": text })));
    }

    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.call("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    pub fn js(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", Some(json!({"script": script, "args": []})))
    }

    pub fn js_async(&self, script: &str) -> Value {
        self.call("POST", "/execute/async", Some(json!({"script": script, "args": []})))
    }

    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let b64 = self.call("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap()).unwrap()
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = request(self.driver.addr, "DELETE", &format!("/session/{}", self.id), &[], b"");
    }
}

/// A Chrome DevTools command through chromedriver (`goog/cdp/execute`).
pub fn cdp(s: &Session<'_>, cmd: &str, params: Value) -> Value {
    s.call("POST", "/goog/cdp/execute", Some(json!({ "cmd": cmd, "params": params })))
}

/// The whole page as a PNG, beyond the viewport (the report is longer than a screen).
pub fn full_page_png(s: &Session<'_>) -> Vec<u8> {
    use base64::Engine;
    let shot = cdp(s, "Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": true}));
    base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().expect("a screenshot")).unwrap()
}
