//! `backstop run`: the lead delivery (outbox and its sinks) first, so that
//! no event can be published before it has somewhere durable to go; then
//! the SIP runtime; then the two-step shutdown on SIGTERM/SIGINT (refuse new
//! calls and let calls finish for the grace period, a second signal or the
//! end of the grace ends them), and the last leads flushed to disk. Under
//! systemd (`Type=notify`) it says READY once the SIP sockets are bound and
//! STOPPING when the shutdown begins; SIGHUP reloads what can change while
//! calls run (`reload_on_hangup`).

use super::load_lines;
use crate::agent::{Agent, LiveLines, Shutdown};
use crate::config::{Config, LogFormat};
use crate::http::links::Links;
use crate::http::{Context as HttpContext, HttpFace};
use crate::metrics::Metrics;
use crate::sink::delivery::{ConfiguredSink, Delivery, Sink, Target};
use crate::sink::event::EventType;
use crate::sink::outbox::{LineFilter, Outbox, SinkSpec};
use crate::sink::webhook::Webhook;
use crate::transcribe::load_model;
use crate::transcribe::service::{LeadFinish, Service, release_held};
use anyhow::Context;
use backstop_core::intake::summary::{DEFAULT_URGENT_WORDS, UrgentWords};
use sd_notify::NotifyState;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Logs to stdout at `[log] level` (or `RUST_LOG`): readable lines,
/// coloured on a terminal, or with `[log] format = "json"` one JSON object
/// per line (`timestamp`, `level`, `fields` with the message, and `span`
/// with the call's `call_id` inside a call), for log shippers.
pub fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    match cfg.log.format {
        LogFormat::Text => {
            use std::io::IsTerminal;
            let ansi = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).init();
        }
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_target(false)
            .init(),
    }
}

/// The sinks the config asks for, with stable names (the outbox keys on them):
/// what `run` delivers to (through [`configured_sinks`]), and what the
/// test of `backstop leads done` compares its sinks with.
#[cfg(test)]
pub(crate) fn sinks(cfg: &Config) -> anyhow::Result<Vec<Sink>> {
    Ok(configured_sinks(cfg)?.into_iter().map(|c| c.sink).collect())
}

/// [`sinks`], each with what the config said about it: a reload keeps the
/// worker of a sink whose settings did not change.
fn configured_sinks(cfg: &Config) -> anyhow::Result<Vec<ConfiguredSink>> {
    let mut out = Vec::new();
    let local = |name: &str, events: Vec<EventType>, target| Sink {
        spec: SinkSpec { name: name.into(), events, lines: LineFilter::All },
        target,
        max_interval: Duration::from_secs(5),
        max_age: Duration::from_secs(365 * 24 * 3600),
    };
    let file_settings = |path: PathBuf| format!("{:?} {}", cfg.leads_file, path.display());
    if cfg.leads_file.enabled {
        out.push(ConfiguredSink {
            sink: local(
                "file:leads.jsonl",
                vec![EventType::LeadCompleted, EventType::LeadUpdated],
                Target::LeadsFile(cfg.leads_path()),
            ),
            settings: file_settings(cfg.leads_path()),
        });
    }
    if cfg.leads_file.events {
        out.push(ConfiguredSink {
            sink: local("file:events.jsonl", EventType::ALL.to_vec(), Target::EventsFile(cfg.events_path())),
            settings: file_settings(cfg.events_path()),
        });
    }
    // Any change to a text-back restarts them all: they are few and cheap.
    let text_backs =
        format!("{:?} {:?}", cfg.text_back, cfg.line.iter().map(|l| (&l.name, &l.text_back)).collect::<Vec<_>>());
    for sink in crate::textback::sinks(cfg).context("[[text_back]]")? {
        out.push(ConfiguredSink { settings: format!("{:?} {text_backs}", sink.spec), sink });
    }
    // A line with webhooks of its own sends its leads there only; the
    // top-level webhooks take every other line's.
    let own: Vec<String> = cfg.line.iter().filter(|l| !l.webhook.is_empty()).map(|l| l.name.clone()).collect();
    // The name is the outbox's key (persisted): `webhook:{url}`, a line's `webhook:{line}:{url}`.
    let top = cfg.webhook.iter().map(|w| (w, None, LineFilter::Except(own.clone()), format!("webhook:{}", w.url)));
    let per_line = cfg.line.iter().flat_map(|l| {
        l.webhook.iter().map(|w| {
            (w, Some(l.name.clone()), LineFilter::Only(l.name.clone()), format!("webhook:{}:{}", l.name, w.url))
        })
    });
    for (w, line, lines, name) in top.chain(per_line) {
        let secret = w.resolved_secret().with_context(|| format!("webhook {}", w.url))?;
        let mut hook = Webhook::new(
            w.url.to_string(),
            secret.as_deref(),
            w.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            w.bearer_token.clone(),
            w.connect_timeout,
            w.timeout,
        )
        .with_context(|| format!("webhook {}", w.url))?;
        hook.label = w.label(line.as_deref());
        let spec = SinkSpec { name, events: w.event_types(), lines };
        out.push(ConfiguredSink {
            settings: format!("{w:?} {spec:?}"),
            sink: Sink { spec, target: Target::Webhook(hook), max_interval: w.max_retry_interval, max_age: w.max_age },
        });
    }
    Ok(out)
}

/// Run the agent until a signal, then shut down in order. `config_path` is
/// read again on SIGHUP (see [`reload_on_hangup`]); `cfg` is that file with
/// the command line's `overrides` applied, which every reload applies too.
pub fn run(cfg: Config, config_path: Option<PathBuf>, overrides: Overrides) -> anyhow::Result<()> {
    let lines = LiveLines::new(load_lines(&cfg)?);
    let started = cfg.clone();
    let metrics = Metrics::new();
    // A missing or corrupt model stops the start, before any call is taken.
    let model = match &cfg.transcribe {
        Some(t) => Some(load_model(t).context("[transcribe]")?),
        None => None,
    };
    for finding in cfg.line_findings() {
        tracing::warn!("{finding}");
    }
    std::fs::create_dir_all(cfg.recordings_dir())
        .with_context(|| format!("creating {}", cfg.recordings_dir().display()))?;
    let outbox_path = cfg.outbox_path();
    let outbox = Outbox::open(&outbox_path).with_context(|| format!("opening the outbox {}", outbox_path.display()))?;
    let configured = configured_sinks(&cfg)?;
    let mut delivery = Delivery::new(outbox, Vec::new(), cfg.outbox.max_pending, cfg.outbox.keep_delivered);
    delivery.set_links(Links::from_config(&cfg).context("[http]")?);
    delivery.set_metrics(metrics.clone());
    let cluster = match cfg.store.shared().map_err(|e| anyhow::anyhow!("[store] {e}"))? {
        Some(store) => {
            let cluster = Arc::new(crate::cluster::Cluster::new(&store).context("[store]")?);
            let recordings = store.recordings_in_database.then(|| cfg.recordings_dir());
            delivery.set_cluster(cluster.clone(), recordings);
            tracing::info!(node = %store.node, "a node of a cluster: PostgreSQL is the shared store");
            Some(cluster)
        }
        None => None,
    };
    // The scrape reads the outbox (pending, dead) and the lead store in it; /readyz checks it takes writes.
    metrics.attach_outbox(delivery.publisher());
    // Shared with the reload task, which replaces its sinks.
    let delivery = Arc::new(delivery);
    {
        // Leads from before the store: taken in once, before READY. A large
        // file may take a while: systemd is asked for more start time.
        notify(&[NotifyState::ExtendTimeoutUsec(IMPORT_START_EXTENSION.as_micros() as u32)]);
        let db = delivery.outbox();
        let mut db = db.lock().unwrap_or_else(|p| p.into_inner());
        let n = crate::store::import::import_once(&mut db, &cfg.leads_path())
            .with_context(|| format!("importing {} into the lead store", cfg.leads_path().display()))?;
        if n > 0 {
            tracing::info!(leads = n, from = %cfg.leads_path().display(), "imported earlier leads into the lead store");
        }
    }
    let webhooks = cfg.webhook.len() + cfg.line.iter().map(|l| l.webhook.len()).sum::<usize>();
    tracing::info!(outbox = %outbox_path.display(), leads = %cfg.leads_path().display(), webhooks, lines = cfg.line.len(), "lead delivery ready");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = rt.block_on(async {
        if let Some(cluster) = &cluster {
            cluster.migrate_or_later().await;
        }
        delivery.replace_sinks(configured).await;
        let recovered = delivery.recover().await.context("recovering the outbox")?;
        if recovered > 0 {
            tracing::warn!(calls = recovered, "closed the leads of calls cut off by the last stop");
        }
        let (workers_stop, workers_rx) = tokio::sync::watch::channel(false);
        let mut workers = delivery.spawn(workers_rx.clone());
        workers.push(tokio::spawn(crate::store::clock::run(delivery.publisher(), cfg.callback.policy(), workers_rx.clone())));
        let http = match &cfg.http {
            Some(h) => {
                let ctx = HttpContext {
                    cfg: cfg.clone(),
                    db: delivery.outbox(),
                    publisher: delivery.publisher(),
                    metrics: metrics.clone(),
                };
                let face = HttpFace::start(ctx, workers_rx.clone()).await.context("[http]")?;
                tracing::info!(listen = %h.listen, "HTTP face ready");
                Some(Arc::new(face))
            }
            None => None,
        };
        if let Some(listen) = cfg.metrics.listen {
            workers.push(crate::metrics::serve(metrics.clone(), listen, workers_rx.clone()).await.context("[metrics]")?);
            tracing::info!(%listen, "metrics ready");
        }
        // Every signal is handled from here on, before READY: SIGHUP's
        // default would end the agent mid-call, SIGTERM's would skip the drain.
        let signals = Signals::new()?;
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("SIGHUP handler")?;
        let (tx, rx) = tokio::sync::watch::channel(Shutdown::Running);
        let reload = Some(tokio::spawn(reload_on_hangup(
            hup,
            rx.clone(),
            Reload {
                path: config_path,
                overrides,
                started,
                lines: lines.clone(),
                delivery: delivery.clone(),
                face: http.clone(),
                metrics: metrics.clone(),
            },
        )));
        let finish = LeadFinish {
            metrics: metrics.clone(),
            lines: lines.clone(),
            urgent: match &cfg.transcribe {
                Some(t) => UrgentWords::new(&t.urgent_words),
                None => UrgentWords::new(DEFAULT_URGENT_WORDS),
            },
        };
        let service = match (&cfg.transcribe, model) {
            (Some(t), Some(model)) => {
                let service = Service::start(
                    model,
                    t.threads,
                    t.wait,
                    delivery.outbox(),
                    cfg.recordings_dir(),
                    delivery.publisher(),
                    finish,
                )
                .context("[transcribe]")?;
                tracing::info!(threads = t.threads, model = %t.model.display(), wait_secs = t.wait.as_secs(), "transcription ready");
                Some(service)
            }
            _ => {
                release_held(delivery.outbox(), delivery.publisher(), finish);
                None
            }
        };
        let grace = cfg.call.shutdown_grace;
        let transcriber = service.as_ref().map(|s| s.transcriber.clone());
        let listen = cfg.sip.listen;
        let agent = Agent::bind(cfg, lines, delivery.publisher(), transcriber, metrics.clone()).await?;
        // The SIP sockets are bound: systemd may order what needs us after this.
        notify(&[NotifyState::Ready, NotifyState::Status(&format!("answering calls on {listen}"))]);
        let drain_metrics = metrics.clone();
        let mut signals = signals;
        tokio::spawn(async move {
            signals.next().await;
            tracing::info!(
                grace_secs = grace.as_secs(),
                "signal received: refusing new calls; calls in progress may finish (a second signal ends them now)"
            );
            drain_metrics.health.set_draining();
            notify(&[
                NotifyState::Stopping,
                NotifyState::Status("stopping: refusing new calls; calls in progress may finish"),
            ]);
            let _ = tx.send(Shutdown::Draining);
            tokio::select! {
                _ = signals.next() => tracing::info!("second signal: ending calls now"),
                _ = tokio::time::sleep(grace) => tracing::info!("shutdown grace period over: ending calls"),
            }
            let _ = tx.send(Shutdown::Now);
            // Keep the sender alive: a dropped sender would read as "now" anyway.
            std::future::pending::<()>().await;
        });
        let result = agent.run(rx).await;
        if let Some(s) = service {
            s.stop().await;
        }
        // The last leads reach leads.jsonl before we exit; webhooks resume at the next start.
        delivery.drain_files(Duration::from_secs(3)).await;
        let _ = workers_stop.send(true);
        for mut w in workers {
            if tokio::time::timeout(Duration::from_secs(2), &mut w).await.is_err() {
                w.abort();
                let _ = w.await;
            }
        }
        // After the workers and the heartbeat stopped: nothing claims or beats after this.
        delivery.leave_cluster().await;
        // The reload task holds the face too: end it, so that the face can be waited for.
        if let Some(task) = reload {
            task.abort();
            let _ = task.await;
        }
        if let Some(face) = http.and_then(Arc::into_inner) {
            let _ = tokio::time::timeout(Duration::from_secs(2), face.stopped()).await;
        }
        result
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

/// More start time asked of systemd before the one-time import of
/// `leads.jsonl` (the unit's `TimeoutStartSec` covers the model's loading).
const IMPORT_START_EXTENSION: Duration = Duration::from_secs(300);

/// Tell systemd (`Type=notify`) how we are; nothing without `$NOTIFY_SOCKET`
/// (or with it empty).
fn notify(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none_or(|s| s.is_empty()) {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// The command line's `--listen` and `--data-dir`: applied to the config
/// file at the start and to every reload of it.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

impl Overrides {
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(l) = self.listen {
            cfg.sip.listen = l;
        }
        if let Some(d) = &self.data_dir {
            cfg.data.dir = d.clone();
        }
    }
}

/// What a SIGHUP replaces, and what it compares the new config with.
struct Reload {
    path: Option<PathBuf>,
    overrides: Overrides,
    /// The config the agent started with: what a reload cannot change is
    /// compared with it.
    started: Config,
    lines: Arc<LiveLines>,
    delivery: Arc<Delivery>,
    face: Option<Arc<HttpFace>>,
    metrics: Arc<Metrics>,
}

/// On SIGHUP, read the config file again and, only if all of it loads, run
/// it from the next call on: the lines (scripts, prompts read again from
/// disk, schedules, junk rules), the sinks (webhooks, files, text-backs) and
/// the HTTP face's users and API tokens (a leaked token is revoked by
/// removing it and reloading). Calls in progress finish on the lines they
/// started with. A config with problems changes nothing: each problem is
/// logged and the old config runs on. Settings that only a restart can
/// change are logged when they differ. Without a config file there is
/// nothing to reload, and the signal is only logged (its default action
/// would end the agent mid-call).
///
/// Once the shutdown has begun, a SIGHUP is logged and ignored: no sinks
/// swapped mid-drain, no READY after STOPPING.
async fn reload_on_hangup(
    mut hup: tokio::signal::unix::Signal,
    shutdown: tokio::sync::watch::Receiver<Shutdown>,
    reload: Reload,
) {
    let stopping = || *shutdown.borrow() != Shutdown::Running;
    while hup.recv().await.is_some() {
        if stopping() {
            tracing::info!("SIGHUP: ignored, the agent is shutting down");
            continue;
        }
        let Some(path) = &reload.path else {
            tracing::info!("SIGHUP: nothing to reload (the agent runs on the defaults, without a config file)");
            continue;
        };
        let mut reloading = vec![NotifyState::Reloading];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            reloading.push(now);
        }
        notify(&reloading);
        let status = match reload.once(path).await {
            Ok(()) => "config reloaded",
            Err(errors) => {
                for e in &errors {
                    tracing::error!(config = %path.display(), "SIGHUP: config not reloaded: {e}");
                }
                tracing::warn!(config = %path.display(), "SIGHUP: the config in use runs on unchanged");
                "config reload refused; see the log"
            }
        };
        // A stop that began during the reload has said STOPPING: no READY after it.
        if !stopping() {
            notify(&[NotifyState::Ready, NotifyState::Status(status)]);
        }
    }
}

impl Reload {
    /// Load everything the new config needs, then (only if all of it
    /// loaded) put it in place. The errors, when it did not.
    async fn once(&self, path: &Path) -> Result<(), Vec<String>> {
        let mut file = Config::load(path).map_err(|errors| errors.iter().map(refusal).collect::<Vec<_>>())?;
        self.overrides.apply(&mut file);
        let restart = needs_restart(&self.started, &file);
        let cfg = reloadable(&self.started, file);
        // Prompt files are read here: off the runtime's threads.
        let (cfg, loaded) = tokio::task::spawn_blocking(move || {
            let lines = load_lines(&cfg);
            let sinks = configured_sinks(&cfg);
            (cfg, lines.and_then(|l| sinks.map(|s| (l, s))))
        })
        .await
        .map_err(|e| vec![format!("loading the config: {e}")])?;
        let (lines, sinks) = loaded.map_err(|e| vec![causes(&e)])?;
        for finding in cfg.line_findings() {
            tracing::warn!("SIGHUP: {finding}");
        }
        let line_names: Vec<String> = lines.all().map(|l| l.name.clone()).collect();
        let steps: usize = lines.all().map(|l| l.program.steps.len()).sum();
        // The new lines' and steps' series exist from now on, at 0 (`increase()` needs them before their first call).
        self.metrics.lines_configured(&lines);
        // The face first: a revoked token must not wait behind a slow webhook.
        if let Some(face) = &self.face {
            face.reload(&cfg);
        }
        // Then the sinks (after the old workers of changed ones stop, up to
        // WORKER_STOP_WAIT), and only then the lines: until the new sink set
        // is live no call runs on a new line, so a new line's lead is never
        // committed for the old set (the top-level webhook, another tenant's).
        // A removed sink is labelled in the log as it was while live.
        let before: Vec<Sink> = self.delivery.sinks();
        let changes = self.delivery.replace_sinks(sinks).await;
        self.lines.replace(lines);
        let publisher = self.delivery.publisher();
        let removed: Vec<String> = changes
            .removed
            .iter()
            .map(|n| before.iter().find(|s| &s.spec.name == n).map_or_else(|| publisher.sink_label(n), Sink::label))
            .collect();
        for section in restart {
            tracing::warn!(config = %path.display(), "SIGHUP: {section} changed, which needs a restart; the running agent keeps the old value");
        }
        tracing::info!(
            config = %path.display(),
            lines = %line_names.join(","),
            steps,
            sinks_kept = changes.kept.len(),
            sinks_added = %labels(&publisher, &changes.added),
            sinks_changed = %labels(&publisher, &changes.changed),
            sinks_removed = %removed.join(","),
            http_face = self.face.is_some(),
            "SIGHUP: config reloaded: lines, scripts, prompts, schedules and junk rules take the next call; sinks replaced"
        );
        Ok(())
    }
}

/// Sinks as logs name them: by their metrics labels, never by a webhook's
/// URL (it often holds a secret).
fn labels(publisher: &crate::sink::delivery::Publisher, names: &[String]) -> String {
    names.iter().map(|n| publisher.sink_label(n)).collect::<Vec<_>>().join(",")
}

/// A config error as a reload reports it. An environment variable the
/// config names (`secret_env`, `auth_token_env`) is read from the
/// environment the agent started with: systemd reads `EnvironmentFile=`
/// only at a start, so a new one needs a restart, and the error says so.
fn refusal(e: &crate::config::ConfigError) -> String {
    if e.key.ends_with("_env") {
        format!(
            "{e} (a reload keeps the environment the agent started with: add it to the EnvironmentFile and restart the agent)"
        )
    } else {
        e.to_string()
    }
}

/// An error and its causes on one line, each cause once (some errors
/// already repeat their source in their own message).
fn causes(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain().map(|c| c.to_string()) {
        if !out.contains(&cause) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&cause);
        }
    }
    out
}

/// `new` with every setting a reload cannot change taken from `running`:
/// what the reload builds its lines and sinks from, so that (say) a new
/// `[data] dir` moves neither the leads file nor the text-backs away from
/// the outbox and the recordings, which stay where the agent started.
fn reloadable(running: &Config, new: Config) -> Config {
    let old = running.clone();
    let http = match (old.http, new.http) {
        // The face takes new users and tokens only.
        (Some(mut h), Some(n)) => {
            h.user = n.user;
            h.token = n.token;
            Some(h)
        }
        // [http] removed: the server runs on until the restart (its listen
        // and the rest are restart-only), but nobody gets in meanwhile.
        (Some(mut h), None) => {
            h.user.clear();
            h.token.clear();
            Some(h)
        }
        // [http] added: the face starts at the next start only.
        (None, _) => None,
    };
    Config {
        sip: old.sip,
        rtp: old.rtp,
        call: old.call,
        data: old.data,
        log: old.log,
        outbox: old.outbox,
        register: old.register,
        intake: old.intake,
        recordings: old.recordings,
        security: old.security,
        transcribe: old.transcribe,
        http,
        callback: old.callback,
        metrics: old.metrics,
        store: old.store,
        ..new
    }
}

/// The sections a reload cannot change (the agent read them once, at the
/// start) that differ between `old` and `new`.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    // The HTTP face takes new users and tokens; the rest of [http] is the server's.
    let http = |c: &Config| {
        c.http.clone().map(|mut h| {
            h.user.clear();
            h.token.clear();
            h
        })
    };
    [
        ("[sip]", old.sip != new.sip),
        ("[rtp]", old.rtp != new.rtp),
        ("[call]", old.call != new.call),
        ("[data] dir", old.data != new.data),
        ("[log]", old.log != new.log),
        ("[outbox]", old.outbox != new.outbox),
        ("[[register]]", old.register != new.register),
        ("[intake]", old.intake != new.intake),
        ("[recordings]", old.recordings != new.recordings),
        ("[security]", old.security != new.security),
        ("[transcribe]", old.transcribe != new.transcribe),
        ("[http] (other than its users and tokens)", http(old) != http(new)),
        ("[callback]", old.callback != new.callback),
        ("[metrics]", old.metrics != new.metrics),
        ("[store]", old.store != new.store),
    ]
    .into_iter()
    .filter_map(|(section, differs)| differs.then_some(section))
    .collect()
}

/// SIGTERM and SIGINT (Ctrl-C), as one stream, handled from its creation.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HttpConfig, TokenConfig, TokenScope};

    fn with_token(listen: &str) -> Config {
        let token = TokenConfig {
            name: "crm".into(),
            token: Some("a-long-enough-secret-token-value".into()),
            token_env: None,
            token_sha256: None,
            scope: TokenScope::Api,
        };
        let http = HttpConfig { listen: listen.parse().unwrap(), token: vec![token], ..Default::default() };
        Config { http: Some(http), ..Default::default() }
    }

    #[test]
    fn removing_http_keeps_the_server_but_lets_nobody_in() {
        let running = with_token("127.0.0.1:8080");
        let cfg = reloadable(&running, Config::default());
        let h = cfg.http.expect("the face runs on until the restart");
        assert_eq!(h.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(h.token.is_empty() && h.user.is_empty(), "the old tokens stay live: {h:?}");
    }

    #[test]
    fn a_reload_takes_new_tokens_and_keeps_the_listen() {
        let running = with_token("127.0.0.1:8080");
        let mut new = with_token("127.0.0.1:9090");
        new.http.as_mut().unwrap().token[0].name = "other".into();
        let h = reloadable(&running, new).http.unwrap();
        assert_eq!(h.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(h.token[0].name, "other");
        assert!(reloadable(&Config::default(), with_token("127.0.0.1:8080")).http.is_none());
    }

    #[test]
    fn a_named_webhook_is_labelled_by_its_name_and_keyed_by_its_url() {
        let text = "[[webhook]]\nurl = \"https://eo1a2b3c.m.pipedream.net/\"\nname = \"crm\"\n\n\
                    [[webhook]]\nurl = \"https://eo9z8y7x.m.pipedream.net/\"\n";
        let cfg = Config::parse(text, None).unwrap();
        let hooks: Vec<Sink> =
            sinks(&cfg).unwrap().into_iter().filter(|s| matches!(s.target, Target::Webhook(_))).collect();
        let names: Vec<&str> = hooks.iter().map(|s| s.spec.name.as_str()).collect();
        // The outbox's keys, as they always were.
        assert_eq!(names, ["webhook:https://eo1a2b3c.m.pipedream.net/", "webhook:https://eo9z8y7x.m.pipedream.net/"]);
        assert_eq!(hooks[0].label(), "webhook:crm");
        assert_eq!(hooks[1].label(), crate::metrics::sink_label(names[1]));
        assert!(hooks[1].label().starts_with("webhook#") && !hooks[1].label().contains("eo9z8y7x"));
    }

    /// A reload that gives a new line its own webhook, while the top-level
    /// webhook's worker is stuck in a delivery (so the reload waits for it):
    /// the new line takes no call until the new sink set is live, so its
    /// leads are never committed for the old top-level webhook.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_line_goes_live_only_with_its_own_webhook() {
        use crate::sink::event::Event;
        let dir = std::env::temp_dir().join(format!("backstop-reload-order-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The top-level endpoint takes the request and never answers.
        let stuck = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let top = format!(
            "[data]\ndir = {:?}\n[prompts]\ndir = {:?}\n\
             [[webhook]]\nurl = \"http://127.0.0.1:{}/hook\"\ntimeout_ms = 60000\n",
            dir.display().to_string(),
            concat!(env!("CARGO_MANIFEST_DIR"), "/prompts"),
            stuck.local_addr().unwrap().port()
        );
        let started = Config::parse(&top, None).unwrap();
        let path = dir.join("backstop.toml");
        std::fs::write(
            &path,
            format!(
                "{top}[[line]]\nname = \"acme\"\nmatch.called = [\"1\"]\n\
                 [[line.webhook]]\nurl = \"http://127.0.0.1:9/acme\"\n"
            ),
        )
        .unwrap();
        let lines = LiveLines::new(load_lines(&started).unwrap());
        let outbox = Outbox::open(&started.outbox_path()).unwrap();
        let delivery = Arc::new(Delivery::new(outbox, Vec::new(), 1000, Duration::from_secs(3600)));
        delivery.replace_sinks(configured_sinks(&started).unwrap()).await;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let workers = delivery.spawn(stop_rx);
        let event: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/golden/lead.completed.json")).unwrap();
        let lead = serde_json::from_value(event["lead"].clone()).unwrap();
        delivery.publisher().publish(Event::new(EventType::LeadCompleted, "t".into(), &lead)).await.unwrap();
        let (_held, _) = tokio::time::timeout(Duration::from_secs(5), stuck.accept()).await.unwrap().unwrap();

        let reload = Reload {
            path: Some(path.clone()),
            overrides: Overrides::default(),
            started,
            lines: lines.clone(),
            delivery: delivery.clone(),
            face: None,
            metrics: Metrics::new(),
        };
        let began = std::time::Instant::now();
        let task = tokio::spawn(async move { reload.once(&path).await });
        let mut waited = Duration::ZERO;
        while !task.is_finished() && began.elapsed() < Duration::from_secs(10) {
            let line_live = lines.current().all().any(|l| l.name == "acme");
            let its_hook_live = delivery.sinks().iter().any(|s| s.spec.name.starts_with("webhook:acme:"));
            assert!(!line_live || its_hook_live, "acme takes calls while the old sink set is live");
            if !line_live {
                waited = began.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.await.unwrap().unwrap();
        // The reload did wait for the stuck worker (2 s under test), with the old lines meanwhile.
        assert!(waited >= Duration::from_millis(1500), "{waited:?}");
        assert!(lines.current().all().any(|l| l.name == "acme"));
        let _ = stop.send(true);
        // The new top-level worker is in a request to the stuck endpoint again: not waited for.
        workers.iter().for_each(|w| w.abort());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
