//! The `backstop` command: `run` the agent, `check` a config, inspect or
//! nudge the delivery `outbox`, or read the last `leads`. This is the
//! binary's edge: errors become one `anyhow` chain with context, printed
//! once, and a non-zero exit.

use anyhow::Context;
use backstop::agent::{Agent, Shutdown};
use backstop::config::Config;
use backstop::sink::delivery::{Delivery, Sink, Target, now_ms};
use backstop::sink::event::EventType;
use backstop::sink::outbox::{Outbox, SinkSpec};
use backstop::sink::webhook::Webhook;
use backstop_core::intake::lead::Lead;
use backstop_core::intake::script::{AnswerKind, AnswerStatus};
use backstop_core::media::prompt::PromptSet;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "backstop",
    version,
    about = "SIP overflow answering agent: answers missed calls and turns them into leads"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Run {
        /// Config file (TOML). Without it, every setting takes its default.
        #[arg(long)]
        config: Option<PathBuf>,
        /// SIP address for UDP and TCP, overriding sip.listen.
        #[arg(long)]
        listen: Option<String>,
        /// Data directory, overriding data.dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Validate a config file and the prompts it names; exit non-zero on a problem.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Inspect or nudge the delivery outbox.
    Outbox {
        #[command(subcommand)]
        action: OutboxAction,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
    /// Read the leads file.
    Leads {
        #[command(subcommand)]
        action: LeadsAction,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum OutboxAction {
    /// Pending, dead and delivered events per sink, and the oldest pending.
    Status,
    /// Make pending deliveries due now; with --dead, also revive dead-lettered ones.
    Retry {
        #[arg(long)]
        dead: bool,
    },
}

#[derive(Subcommand)]
enum LeadsAction {
    /// The last N leads, one readable line each.
    Tail {
        #[arg(short = 'n', long, default_value_t = 10)]
        n: usize,
    },
}

fn load_config(path: Option<&Path>) -> Result<Config, String> {
    match path {
        None => Ok(Config::default()),
        Some(p) => Config::load(p).map_err(|errs| errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")),
    }
}

/// The config, with `--data-dir` applied; on error, the message is printed and the exit code returned.
fn config_or_exit(path: Option<&Path>, data_dir: Option<PathBuf>) -> Result<Config, std::process::ExitCode> {
    let mut cfg = load_config(path).map_err(|e| {
        eprintln!("{e}");
        std::process::ExitCode::FAILURE
    })?;
    if let Some(d) = data_dir {
        cfg.data.dir = d;
    }
    Ok(cfg)
}

/// Load every prompt the script can play; a missing or unreadable one is an error naming the step's prompt.
fn load_prompts(cfg: &Config) -> anyhow::Result<PromptSet> {
    let program = cfg.program().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(backstop::media_files::load_prompts(program.prompts(), |name| cfg.prompt_path(name))?)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => {
            let cfg = match config_or_exit(config.as_deref(), None) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match load_prompts(&cfg) {
                Ok(set) => {
                    let mut names: Vec<&str> = set.names().collect();
                    names.sort();
                    println!("config OK; listen {}; prompts {}", cfg.sip.listen, names.join(", "));
                    for w in &cfg.webhook {
                        for note in unpublished_events(&w.url, &w.event_types()) {
                            eprintln!("note: {note}");
                        }
                    }
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Outbox { action, config, data_dir } => {
            let cfg = match config_or_exit(config.as_deref(), data_dir) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match outbox_command(&cfg, action) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("backstop: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Leads { action: LeadsAction::Tail { n }, config, data_dir } => {
            let cfg = match config_or_exit(config.as_deref(), data_dir) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match backstop::sink::file::tail_lines(&cfg.leads_path(), n) {
                Ok(lines) => {
                    for l in lines {
                        println!("{}", describe_lead(&l));
                    }
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("backstop: {}: {e}", cfg.leads_path().display());
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Run { config, listen, data_dir } => {
            let mut cfg = match config_or_exit(config.as_deref(), data_dir) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let Some(l) = listen {
                if l.parse::<std::net::SocketAddr>().is_err() {
                    eprintln!("--listen: {l:?} is not an address like 0.0.0.0:5060");
                    return std::process::ExitCode::FAILURE;
                }
                cfg.sip.listen = l;
            }
            init_logging(&cfg);
            match run(cfg) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("backstop: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

fn outbox_command(cfg: &Config, action: OutboxAction) -> anyhow::Result<()> {
    let path = cfg.outbox_path();
    anyhow::ensure!(path.exists(), "no outbox at {} (has the agent run with this data dir?)", path.display());
    let outbox = Outbox::open(&path).with_context(|| format!("opening {}", path.display()))?;
    match action {
        OutboxAction::Status => {
            let rows = outbox.status(now_ms())?;
            if rows.is_empty() {
                println!("outbox is empty");
            }
            for r in rows {
                let oldest =
                    r.oldest_pending_ms.map(|ms| format!("{:.1} s", ms as f64 / 1000.0)).unwrap_or_else(|| "-".into());
                println!(
                    "{:<48} pending {:>6}  dead {:>6}  delivered {:>6}  oldest pending {oldest}",
                    r.sink, r.pending, r.dead, r.delivered
                );
            }
        }
        OutboxAction::Retry { dead } => {
            let n = outbox.retry_now(None, dead, now_ms())?;
            println!("{n} deliveries are due now; a running agent picks them up within 5 s, or at its next start");
        }
    }
    Ok(())
}

/// One human line for a lead: when, who, why forwarded, how it ended.
fn describe_lead(line: &str) -> String {
    let Ok(lead) = serde_json::from_str::<Lead>(line) else { return format!("(unreadable) {line}") };
    let or_dash = |s: Option<&str>| s.unwrap_or("-").to_string();
    let fwd = match &lead.forwarded {
        Some(f) => format!(" fwd from {} ({})", or_dash(f.from_number.as_deref()), or_dash(f.reason.as_deref())),
        None => String::new(),
    };
    let secs = lead.duration_ms.map(|d| format!("{:.1}s", d as f64 / 1000.0)).unwrap_or("-".into());
    // The answers, one word each: the keys or menu label, the length of a spoken answer, or what went wrong.
    let answers: Vec<String> = lead
        .answers
        .iter()
        .map(|(step, a)| {
            let what = match (a.status, a.kind) {
                (AnswerStatus::Answered, AnswerKind::Voice) => {
                    format!("{:.1}s spoken", a.speech_ms.unwrap_or(0) as f64 / 1000.0)
                }
                (AnswerStatus::Answered, AnswerKind::Menu) => or_dash(a.label.as_deref()),
                (AnswerStatus::Answered, AnswerKind::Digits) => or_dash(a.value.as_deref()),
                (status, _) => status.as_str().to_string(),
            };
            format!("{step}={what}")
        })
        .collect();
    let answers = if answers.is_empty() { String::new() } else { format!("  [{}]", answers.join(", ")) };
    // `ended_by` as the lead spells it.
    let ended_by =
        lead.ended_by.and_then(|b| serde_json::to_value(b).ok()).and_then(|v| v.as_str().map(str::to_string));
    format!(
        "{}  {} {}{}  {} ended by {}  {}{answers}",
        lead.received_at,
        or_dash(lead.caller.number.as_deref()),
        lead.caller.display_name.as_ref().map(|n| format!("\"{n}\"")).unwrap_or_default(),
        fwd,
        lead.outcome,
        or_dash(ended_by.as_deref()),
        secs
    )
}

/// A line for each event a webhook lists that this version does not publish
/// (`lead.updated`, reserved for transcripts): such a config is accepted, so
/// that it keeps working when the event arrives, and the user is told.
fn unpublished_events(url: &str, events: &[EventType]) -> Vec<String> {
    let published: Vec<&str> = events.iter().filter(|t| t.is_published()).map(|t| t.as_str()).collect();
    let gets = if published.is_empty() { "nothing for now".to_string() } else { published.join(" and ") };
    events
        .iter()
        .filter(|t| !t.is_published())
        .map(|t| {
            format!(
                "webhook {url}: {} is not sent by this version (a later one sends it when a transcript arrives); \
                 this webhook gets {gets}",
                t.as_str()
            )
        })
        .collect()
}

/// The sinks the config asks for, with stable names (the outbox keys on them).
fn sinks(cfg: &Config) -> anyhow::Result<Vec<Sink>> {
    let mut out = Vec::new();
    let local = |name: &str, events: Vec<EventType>, target| Sink {
        spec: SinkSpec { name: name.into(), events },
        target,
        max_interval: Duration::from_secs(5),
        max_age: Duration::from_secs(365 * 24 * 3600),
    };
    if cfg.leads_file.enabled {
        out.push(local("file:leads.jsonl", vec![EventType::LeadCompleted], Target::LeadsFile(cfg.leads_path())));
    }
    if cfg.leads_file.events {
        out.push(local("file:events.jsonl", EventType::ALL.to_vec(), Target::EventsFile(cfg.events_path())));
    }
    for w in &cfg.webhook {
        let secret = w.resolved_secret().map_err(anyhow::Error::msg)?;
        for note in unpublished_events(&w.url, &w.event_types()) {
            tracing::warn!("{note}");
        }
        let hook = Webhook::new(
            w.url.clone(),
            secret.as_deref(),
            w.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            w.bearer_token.clone(),
            Duration::from_millis(w.connect_timeout_ms),
            Duration::from_millis(w.timeout_ms),
        )
        .with_context(|| format!("webhook {}", w.url))?;
        out.push(Sink {
            spec: SinkSpec { name: format!("webhook:{}", w.url), events: w.event_types() },
            target: Target::Webhook(hook),
            max_interval: Duration::from_secs(w.max_retry_interval_s),
            max_age: Duration::from_secs(w.max_age_hours * 3600),
        });
    }
    Ok(out)
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    use std::io::IsTerminal;
    let ansi = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).init();
}

fn run(cfg: Config) -> anyhow::Result<()> {
    let prompts = Arc::new(load_prompts(&cfg)?);
    std::fs::create_dir_all(cfg.recordings_dir())
        .with_context(|| format!("creating {}", cfg.recordings_dir().display()))?;
    let outbox_path = cfg.outbox_path();
    let outbox = Outbox::open(&outbox_path).with_context(|| format!("opening the outbox {}", outbox_path.display()))?;
    let delivery = Delivery::new(
        outbox,
        sinks(&cfg)?,
        cfg.outbox.max_pending,
        Duration::from_secs(cfg.outbox.keep_delivered_hours * 3600),
    );
    tracing::info!(outbox = %outbox_path.display(), leads = %cfg.leads_path().display(), webhooks = cfg.webhook.len(), "lead delivery ready");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = rt.block_on(async {
        let recovered = delivery.recover().await.context("recovering the outbox")?;
        if recovered > 0 {
            tracing::warn!(calls = recovered, "closed the leads of calls cut off by the last stop");
        }
        let (workers_stop, workers_rx) = tokio::sync::watch::channel(false);
        let workers = delivery.spawn(workers_rx);
        let grace = Duration::from_secs(cfg.call.shutdown_grace_secs);
        let agent = Agent::bind(cfg, prompts, delivery.publisher()).await?;
        let (tx, rx) = tokio::sync::watch::channel(Shutdown::Running);
        tokio::spawn(async move {
            let mut signals = Signals::new();
            signals.next().await;
            tracing::info!(
                grace_secs = grace.as_secs(),
                "signal received: refusing new calls; calls in progress may finish (a second signal ends them now)"
            );
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
        // The last leads reach leads.jsonl before we exit; webhooks resume at the next start.
        delivery.drain_files(Duration::from_secs(3)).await;
        let _ = workers_stop.send(true);
        for w in workers {
            let _ = tokio::time::timeout(Duration::from_secs(2), w).await;
        }
        result
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    result
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
