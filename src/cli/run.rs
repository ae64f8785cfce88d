//! `backstop run`: the lead delivery (outbox and its sinks) first, so that
//! no event can be published before it has somewhere durable to go; then
//! the SIP runtime; then the two-step shutdown on SIGTERM/SIGINT (refuse new
//! calls and let calls finish for the grace period, a second signal or the
//! end of the grace ends them), and the last leads flushed to disk.

use super::load_lines;
use crate::agent::{Agent, LiveLines, Shutdown};
use crate::config::Config;
use crate::http::links::Links;
use crate::http::{Context as HttpContext, HttpFace};
use crate::metrics::Metrics;
use crate::sink::delivery::{Delivery, Sink, Target};
use crate::sink::event::EventType;
use crate::sink::outbox::{LineFilter, Outbox, SinkSpec};
use crate::sink::webhook::Webhook;
use crate::transcribe::load_model;
use crate::transcribe::service::{LeadFinish, Service, release_held};
use anyhow::Context;
use backstop_core::intake::summary::{DEFAULT_URGENT_WORDS, UrgentWords};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Logs to stdout at `[log] level` (or `RUST_LOG`), coloured on a terminal.
pub fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    use std::io::IsTerminal;
    let ansi = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).init();
}

/// The sinks the config asks for, with stable names (the outbox keys on them):
/// what `run` delivers to, and what `backstop leads done` commits for.
pub(crate) fn sinks(cfg: &Config) -> anyhow::Result<Vec<Sink>> {
    let mut out = Vec::new();
    let local = |name: &str, events: Vec<EventType>, target| Sink {
        spec: SinkSpec { name: name.into(), events, lines: LineFilter::All },
        target,
        max_interval: Duration::from_secs(5),
        max_age: Duration::from_secs(365 * 24 * 3600),
    };
    if cfg.leads_file.enabled {
        out.push(local(
            "file:leads.jsonl",
            vec![EventType::LeadCompleted, EventType::LeadUpdated],
            Target::LeadsFile(cfg.leads_path()),
        ));
    }
    if cfg.leads_file.events {
        out.push(local("file:events.jsonl", EventType::ALL.to_vec(), Target::EventsFile(cfg.events_path())));
    }
    out.extend(crate::textback::sinks(cfg).context("[[text_back]]")?);
    // A line with webhooks of its own sends its leads there only; the
    // top-level webhooks take every other line's.
    let own: Vec<String> = cfg.line.iter().filter(|l| !l.webhook.is_empty()).map(|l| l.name.clone()).collect();
    let top = cfg.webhook.iter().map(|w| (w, LineFilter::Except(own.clone()), format!("webhook:{}", w.url)));
    let per_line = cfg.line.iter().flat_map(|l| {
        l.webhook.iter().map(|w| (w, LineFilter::Only(l.name.clone()), format!("webhook:{}:{}", l.name, w.url)))
    });
    for (w, lines, name) in top.chain(per_line) {
        let secret = w.resolved_secret().with_context(|| format!("webhook {}", w.url))?;
        let hook = Webhook::new(
            w.url.to_string(),
            secret.as_deref(),
            w.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            w.bearer_token.clone(),
            w.connect_timeout,
            w.timeout,
        )
        .with_context(|| format!("webhook {}", w.url))?;
        out.push(Sink {
            spec: SinkSpec { name, events: w.event_types(), lines },
            target: Target::Webhook(hook),
            max_interval: w.max_retry_interval,
            max_age: w.max_age,
        });
    }
    Ok(out)
}

/// Run the agent until a signal, then shut down in order. `config_path` is
/// read again on SIGHUP, for the HTTP face's users and API tokens.
pub fn run(cfg: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let lines = LiveLines::new(load_lines(&cfg)?);
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
    let mut delivery = Delivery::new(outbox, sinks(&cfg)?, cfg.outbox.max_pending, cfg.outbox.keep_delivered);
    delivery.set_links(Links::from_config(&cfg).context("[http]")?);
    delivery.set_metrics(metrics.clone());
    {
        // Leads from before the store: taken in once.
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
        // Always handled: SIGHUP's default would end the agent mid-call.
        let reload = Some(tokio::spawn(reload_on_hangup(http.clone(), config_path)));
        let finish = LeadFinish {
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
        let agent = Agent::bind(cfg, lines, delivery.publisher(), transcriber, metrics.clone()).await?;
        let (tx, rx) = tokio::sync::watch::channel(Shutdown::Running);
        let drain_metrics = metrics.clone();
        tokio::spawn(async move {
            let mut signals = Signals::new();
            signals.next().await;
            tracing::info!(
                grace_secs = grace.as_secs(),
                "signal received: refusing new calls; calls in progress may finish (a second signal ends them now)"
            );
            drain_metrics.health.set_draining();
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
        for w in workers {
            let _ = tokio::time::timeout(Duration::from_secs(2), w).await;
        }
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

/// On SIGHUP, read the config file again and give the HTTP face its users
/// and API tokens (a leaked token is revoked by removing it and reloading).
/// A config with problems changes nothing; the problems are logged. Without
/// an HTTP face or a config file there is nothing to reload, and the signal
/// is only logged (its default action would end the agent mid-call).
async fn reload_on_hangup(face: Option<Arc<HttpFace>>, path: Option<PathBuf>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
    while hup.recv().await.is_some() {
        let (Some(face), Some(path)) = (&face, &path) else {
            tracing::info!("SIGHUP: nothing to reload (only the [http] users and tokens of a config file are)");
            continue;
        };
        match Config::load(path) {
            Ok(cfg) => {
                face.reload(&cfg);
                tracing::info!(config = %path.display(), "SIGHUP: HTTP users and API tokens reloaded");
            }
            Err(errors) => {
                for e in errors {
                    tracing::error!("SIGHUP: config not reloaded: {e}");
                }
            }
        }
    }
}

/// SIGTERM and SIGINT (Ctrl-C), as one stream.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            int: signal(SignalKind::interrupt()).expect("SIGINT handler"),
        }
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
