//! Metrics and health against real peers on loopback: the agent as a real
//! process, SIPp placing calls, a real Prometheus (Debian's `prometheus`)
//! scraping `[metrics] listen` every second and answering queries over its
//! HTTP API, and `promtool check metrics` judging the exposition. Also
//! `/readyz` turning 503 while the agent drains, `/metrics` on the HTTP
//! face only with an API token, and the Grafana dashboard's expressions
//! checked against a real scrape, so the dashboard cannot drift.

mod common;
mod web;

use common::scenario::*;
use common::*;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use web::{get, http_config, http_port};

const CALLS: u32 = 6;
/// One keypad step (any one key), then goodbye.
const KEY_SCRIPT: &str = "[[step]]\nname = \"key\"\nkind = \"digits\"\nprompt = \"greeting\"\nmin_digits = 1\n\
    max_digits = 1\nterminator = \"\"\n[[step]]\nname = \"goodbye\"\nkind = \"goodbye\"\nprompt = \"goodbye\"\n";
const TOKEN: &str = "prom-token-0123456789abcdef0123456789";
/// A `scope = "metrics"` token: it scrapes, and reads no lead.
const SCRAPE_TOKEN: &str = "scrape-only-0123456789abcdef0123456789";
/// A webhook whose URL holds secrets (userinfo, a secret path, `?token=`), at a port nobody answers.
const SECRET_HOOK: &str = "http://hookuser:hookpass@127.0.0.1:9/services/SECRETPATH?token=tok999";

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The agent with `[metrics] listen` on a port of its own, and `extra` config.
fn agent_with_metrics(name: &str, extra: &str) -> (AgentProc, SocketAddr) {
    let port = free_port();
    let cfg = format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n{extra}");
    let agent = AgentProc::start(name, &cfg);
    (agent, loopback(port))
}

/// One scrape, as `curl` would ask (the Prometheus text format).
fn scrape(addr: SocketAddr) -> String {
    let r = get(addr, "/metrics", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

/// The value of one series in a scrape (`name{labels}` exactly as written).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A caller who keys "5" over SIP INFO, then hangs up after `hold_ms`.
fn keyed_call(hold_ms: u64) -> String {
    let bye = CALLER_BYE.replace("CSeq: 2 BYE", "CSeq: 3 BYE");
    let offer = OFFER.replace("[rtp_port]", "[media_port]");
    scenario(
        "metrics",
        &[&invite("", &offer), ANSWERED, &ack(1), &pause(300), &info_digit(2, "5"), &pause(hold_ms), &bye],
    )
}

/// A caller whose RTP (pcap, needs root) carries line noise and the RFC 4733
/// key "7", then hangs up.
fn speaking_call(dir: &std::path::Path) -> String {
    let mut audio = common::pcap::CallerAudio::new(101).with_line_noise(7);
    audio.silence_until(400).digits("7");
    audio.silence_until(1600);
    let pcap = dir.join("caller.pcap");
    audio.write(&pcap);
    let play = format!("  <nop><action><exec play_pcap_audio=\"{}\"/></action></nop>\n", pcap.display());
    let offer = OFFER.replace("[rtp_port]", "[media_port]");
    scenario("metrics-rtp", &[&invite("", &offer), ANSWERED, &ack(1), &pause(100), &play, &pause(1800), CALLER_BYE])
}

/// Prometheus, killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: std::path::PathBuf,
}

impl Prometheus {
    /// Scrape `target` every second; returns once Prometheus says it is ready.
    fn start(target: SocketAddr) -> Prometheus {
        let dir = scratch_dir("prometheus");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: backstop\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let addr = loopback(free_port());
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus must be installed (scripts/test.sh installs Debian's prometheus)");
        let p = Prometheus { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && get(addr, "/-/ready", &[]).status == 200
            {
                return p;
            }
            assert!(Instant::now() < deadline, "Prometheus did not get ready:\n{}", p.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query's single value (`None`: no series).
    fn query(&self, promql: &str) -> Option<f64> {
        let r = get(self.addr, &format!("/api/v1/query?query={}", url_encode(promql)), &[]);
        assert_eq!(r.status, 200, "{promql}: {}", r.text());
        let j = r.json();
        assert_eq!(j["status"], "success", "{promql}: {j}");
        let result = j["data"]["result"].as_array().unwrap();
        assert!(result.len() <= 1, "{promql}: more than one series: {j}");
        result.first().map(|s| s["value"][1].as_str().unwrap().parse().unwrap())
    }

    /// Query until the value is `want`, for at most `limit`; the last value seen.
    fn query_until(&self, promql: &str, want: f64, limit: Duration) -> Option<f64> {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.query(promql);
            if v == Some(want) || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `promtool check metrics` on `text` (its stdin): exit status and what it said.
fn promtool_check(text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (Debian's prometheus package)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}

#[test]
fn prometheus_counts_every_sipp_call_and_promtool_passes_the_exposition() {
    let (agent, metrics) = agent_with_metrics("metrics-prom", "[sip]\nanswer_after_ms = 50\n");
    let prom = Prometheus::start(metrics);
    // Prometheus sees the agent up (it parsed the OpenMetrics it asked for) before any call.
    assert_eq!(prom.query_until("up{job=\"backstop\"}", 1.0, Duration::from_secs(15)), Some(1.0), "{}", prom.log());
    // The series exist from the start at 0, so the first call after a start is in increase().
    assert_eq!(prom.query("sum(backstop_calls_total)"), Some(0.0), "no call yet: 0, not absent");
    assert_eq!(prom.query("count(backstop_dtmf_digits_total)"), Some(3.0), "each way a key can come");

    let dir = scratch_dir("metrics-sipp");
    let run = run_sipp_calls(&dir, &keyed_call(200), agent.addr(), false, &[], CALLS);
    assert!(run.success, "SIPp failed: {}\n{}", run.errors, agent.log());
    agent.wait_leads(CALLS as usize, Duration::from_secs(10));

    let n = CALLS as f64;
    let limit = Duration::from_secs(20);
    let calls = prom.query_until("sum(backstop_calls_total)", n, limit);
    let answered = prom.query_until("sum(backstop_answer_latency_seconds_count)", n, limit);
    let ended = prom.query_until("sum(backstop_calls_ended_total{outcome=\"hung_up_during_greeting\"})", n, limit);
    let digits = prom.query_until("sum(backstop_dtmf_digits_total{source=\"sip_info\"})", n, limit);
    // Every call counted by increase() too: the series' first sample was a 0 before them.
    let increase = prom.query_until("round(sum(increase(backstop_calls_total[10m])))", n, limit);
    assert_eq!(increase, Some(n), "increase() over the run");
    let in_progress = prom.query_until("backstop_calls_in_progress", 0.0, limit);
    let latency_sum = prom.query("sum(backstop_answer_latency_seconds_sum)");
    let p99 = prom.query("histogram_quantile(0.99, sum by (le) (backstop_answer_latency_seconds_bucket))");
    let rss = prom.query("process_resident_memory_bytes");
    eprintln!(
        "Prometheus after {CALLS} SIPp calls: calls={calls:?} answered={answered:?} ended={ended:?} \
         digits={digits:?} in_progress={in_progress:?} latency_sum={latency_sum:?} p99={p99:?} rss={rss:?}"
    );
    assert_eq!(calls, Some(n), "backstop_calls_total");
    assert_eq!(answered, Some(n), "the INVITE->200 histogram's count");
    assert_eq!(ended, Some(n), "calls ended by outcome");
    assert_eq!(digits, Some(n), "one INFO digit per call");
    assert_eq!(in_progress, Some(0.0));
    // Each answered after the configured 50 ms ring, well within a second.
    let per_call = latency_sum.unwrap() / n;
    assert!((0.045..1.0).contains(&per_call), "mean INVITE->200 {per_call} s");
    assert!(p99.unwrap() <= 1.0, "p99 {p99:?}");
    assert!(rss.unwrap() > 1e6, "RSS {rss:?}");

    // The exposition as curl gets it passes promtool with nothing to say.
    let text = scrape(metrics);
    assert_eq!(value(&text, "backstop_calls_total{transport=\"udp\"}"), Some(n));
    assert_eq!(value(&text, "backstop_calls_answered_total"), Some(n));
    let sent = value(&text, "backstop_rtp_packets_sent_total").unwrap();
    assert!(sent >= n * 10.0, "RTP packets sent {sent}");
    assert!(!text.contains("+1555") && !text.contains("call_id"), "no caller or Call-ID in labels");
    let (ok, said) = promtool_check(&text);
    assert!(ok && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");
    std::fs::write(dir.join("scrape.txt"), &text).unwrap();
    eprintln!(
        "scrape excerpt:\n{}",
        text.lines().filter(|l| l.starts_with("backstop_calls")).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn readyz_is_ready_while_running_and_503_while_draining_and_the_face_wants_a_token() {
    let http = http_port();
    let extra = format!(
        "[call]\nshutdown_grace_secs = 30\n[sip]\nanswer_after_ms = 50\n{}\
         [[http.token]]\nname = \"scraper\"\nscope = \"metrics\"\ntoken = \"{SCRAPE_TOKEN}\"\n",
        http_config(http, &[("prometheus", TOKEN)])
    );
    let (mut agent, metrics) = agent_with_metrics("metrics-drain", &extra);
    let face = loopback(http);

    assert_eq!(get(metrics, "/healthz", &[]).text(), "ok\n");
    let ready = get(metrics, "/readyz", &[]);
    assert_eq!((ready.status, ready.text()), (200, "ok\n".to_string()));
    // The HTTP face: health open, the scrape only with an API token.
    assert_eq!(get(face, "/healthz", &[]).status, 200);
    assert_eq!(get(face, "/readyz", &[]).status, 200);
    let r = get(face, "/metrics", &[]);
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    assert_eq!(get(face, "/metrics", &[("Authorization", "Bearer not-the-token-not-the-token-xx")]).status, 401);
    let auth = format!("Bearer {TOKEN}");
    let r =
        get(face, "/metrics", &[("Authorization", &auth), ("Accept", "application/openmetrics-text;version=1.0.0")]);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("application/openmetrics-text"), "{:?}", r.headers);
    assert!(r.text().ends_with("# EOF\n"));
    // A metrics-scoped token scrapes, and cannot read or change a lead; an api token can do both.
    let scrape_only = format!("Bearer {SCRAPE_TOKEN}");
    assert_eq!(get(face, "/metrics", &[("Authorization", &scrape_only)]).status, 200);
    let r = get(face, "/api/leads", &[("Authorization", &scrape_only)]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("scope is metrics"), "{}", r.text());
    let r = web::request(face, "POST", "/api/leads/abc/handled", &[("Authorization", &scrape_only)], b"");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(get(face, "/api/leads", &[("Authorization", &auth)]).status, 200);

    // A call that stays up 4 s keeps the agent draining after SIGTERM.
    let dir = scratch_dir("metrics-drain-sipp");
    let addr = agent.addr();
    let caller = std::thread::spawn(move || run_sipp(&dir, &keyed_call(4000), addr, false, &[]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while value(&scrape(metrics), "backstop_calls_in_progress") != Some(1.0) {
        assert!(Instant::now() < deadline, "the call never showed as in progress\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(metrics, "/readyz", &[]).status, 200);
    agent.sigterm();
    let deadline = Instant::now() + Duration::from_secs(3);
    let drained = loop {
        let r = get(metrics, "/readyz", &[]);
        if r.status != 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(drained.status, 503, "{}", drained.text());
    assert_eq!(drained.text(), "draining: shutting down, new calls are refused\n");
    // The public face gives the kind of reason only.
    let r = get(face, "/readyz", &[]);
    assert_eq!((r.status, r.text()), (503, "draining: not ready\n".to_string()));
    // Still up (healthz) and still counting while the call finishes.
    assert_eq!(get(metrics, "/healthz", &[]).status, 200);
    assert_eq!(value(&scrape(metrics), "backstop_calls_in_progress"), Some(1.0));
    let run = caller.join().unwrap();
    assert!(run.success, "SIPp failed: {}\n{}", run.errors, agent.log());
    assert!(agent.wait_exit(Duration::from_secs(15)), "the agent did not exit cleanly:\n{}", agent.log());
}

/// The metric names a PromQL expression uses.
fn names_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            cur.push(c);
        } else {
            if cur.starts_with("backstop_") || cur.starts_with("process_") {
                out.push(cur.clone());
            }
            cur.clear();
        }
    }
    out
}

/// Every `expr` in the dashboard JSON, wherever it is nested.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// The series names a scrape can be queried by: its samples' names, and
/// each declared family's (a histogram's `_bucket`, `_sum` and `_count`), so
/// a family with no labelled child yet still counts as present.
fn scraped_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let mut parts = t.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            names.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            names.insert(line.split(['{', ' ']).next().unwrap().to_string());
        }
    }
    names
}

#[test]
fn every_metric_the_grafana_dashboard_uses_is_in_a_real_scrape() {
    let path = manifest_dir().join("deploy/grafana/backstop.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    assert!(all.len() >= 10, "the dashboard's queries: {all:?}");
    let used: BTreeSet<String> = all.iter().flat_map(|e| names_in(e)).collect();
    // What the issue asks the dashboard to show.
    for must in [
        "backstop_calls_ended_total",
        "backstop_answer_latency_seconds_bucket",
        "backstop_calls_in_progress",
        "backstop_intake_step_reached_total",
        "backstop_registration_up",
        "backstop_outbox_pending",
        "backstop_outbox_dead",
        "backstop_rtp_late_packets_total",
        "backstop_rtp_underruns_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(used.contains(must), "the dashboard shows no {must}: {used:?}");
    }

    // Every family the dashboard reads, with children: a keypad step (the
    // intake funnel), an account (at a registrar nobody answers) and a sink.
    let registrar = free_port();
    let extra = format!(
        "[sip]\nanswer_after_ms = 50\ntrusted_sources = [\"127.0.0.1/32\"]\n[recordings]\nwhole_call = true\n\
         [[register]]\nregistrar = \"sip:127.0.0.1:{registrar}\"\nusername = \"overflow\"\npassword = \"pw\"\n\
         [[webhook]]\nurl = \"{SECRET_HOOK}\"\nmax_retry_interval_s = 1\n{KEY_SCRIPT}"
    );
    let (agent, metrics) = agent_with_metrics("metrics-dashboard", &extra);
    // Not ready: the account is not registered, and /readyz says so.
    let r = get(metrics, "/readyz", &[]);
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "register: account overflow@127.0.0.1 is not registered\n");
    let dir = scratch_dir("metrics-dashboard-sipp");
    let run = run_sipp(&dir, &speaking_call(&dir), agent.addr(), false, &[]);
    assert!(run.success, "SIPp failed: {}\n{}", run.errors, agent.log());
    let lead = agent.wait_leads(1, Duration::from_secs(10)).remove(0);
    let text = scrape(metrics);
    // The caller's RTP, its RFC 4733 key, and the whole call's recording, as written on disk.
    assert_eq!(value(&text, "backstop_dtmf_digits_total{source=\"rfc4733\"}"), Some(1.0), "{text}");
    let received = value(&text, "backstop_rtp_packets_received_total").unwrap();
    assert!(received >= 50.0, "RTP packets received {received}");
    assert_eq!(value(&text, "backstop_recordings_total"), Some(1.0));
    let file = agent.dir.join("data/recordings").join(lead["recording"].as_str().expect("the whole call's recording"));
    let bytes = std::fs::metadata(&file).unwrap().len() as f64;
    assert_eq!(value(&text, "backstop_recording_bytes_total"), Some(bytes));
    assert_eq!(value(&text, "backstop_intake_step_answered_total{line=\"default\",step=\"key\"}"), Some(1.0), "{text}");
    assert_eq!(value(&text, "backstop_registration_up{account=\"overflow@127.0.0.1\"}"), Some(0.0));
    // The webhook is labelled by its host and a hash: its URL's secrets are nowhere in the scrape.
    // (The outbox is read every 2 s: its figures are there within a few.)
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape(metrics);
        if text.contains("backstop_outbox_pending{sink=\"webhook") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(text.contains("backstop_outbox_pending{sink=\"webhook#"), "{text}");
    assert!(text.contains("backstop_delivery_failures_total{sink=\"webhook#"), "{text}");
    for secret in ["hookuser", "hookpass", "SECRETPATH", "tok999", "services"] {
        assert!(!text.contains(secret), "{secret} in the scrape:\n{text}");
    }
    let scraped = scraped_names(&text);
    let missing: Vec<&String> = used.iter().filter(|n| !scraped.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries names the agent does not export: {missing:?}\nexported: {scraped:?}"
    );
    // And the check can fail: a name that is not exported is caught.
    assert!(!scraped.contains("backstop_calls_answered_count"));
}
