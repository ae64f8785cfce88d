//! The `backstop` command: `run` the agent, or `check` a config.

use anyhow::Context;
use backstop::agent::Agent;
use backstop::config::Config;
use backstop::intake::script::Script;
use backstop::media::prompt::{Prompt, PromptSet};
use backstop::sink::file::{LeadFile, LeadWriter};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
}

fn load_config(path: Option<&Path>) -> Result<Config, String> {
    match path {
        None => Ok(Config::default()),
        Some(p) => Config::load(p).map_err(|errs| errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")),
    }
}

fn load_prompts(cfg: &Config, script: &Script) -> anyhow::Result<PromptSet> {
    let mut set = PromptSet::default();
    for (name, file) in [("greeting", &cfg.prompts.greeting), ("goodbye", &cfg.prompts.goodbye)] {
        let path = cfg.prompt_path(file);
        let prompt = Prompt::load(name, &path).with_context(|| format!("prompts.{name}"))?;
        set.insert(prompt);
    }
    for needed in script.prompts() {
        if set.get(needed).is_none() {
            anyhow::bail!("the script needs prompt {needed:?}, which is not configured");
        }
    }
    Ok(set)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => {
            let cfg = match load_config(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match load_prompts(&cfg, &Script::greeting_then_goodbye()) {
                Ok(set) => {
                    let mut names: Vec<&str> = set.names().collect();
                    names.sort();
                    println!("config OK; listen {}; prompts {}", cfg.sip.listen, names.join(", "));
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Run { config, listen, data_dir } => {
            let mut cfg = match load_config(config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            if let Some(l) = listen {
                if l.parse::<std::net::SocketAddr>().is_err() {
                    eprintln!("--listen: {l:?} is not an address like 0.0.0.0:5060");
                    return std::process::ExitCode::FAILURE;
                }
                cfg.sip.listen = l;
            }
            if let Some(d) = data_dir {
                cfg.data.dir = d;
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

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    use std::io::IsTerminal;
    let ansi = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).init();
}

fn run(cfg: Config) -> anyhow::Result<()> {
    let prompts = Arc::new(load_prompts(&cfg, &Script::greeting_then_goodbye())?);
    std::fs::create_dir_all(cfg.recordings_dir())
        .with_context(|| format!("creating {}", cfg.recordings_dir().display()))?;
    let leads_path = cfg.leads_path();
    let writer =
        LeadWriter::start(LeadFile::open(&leads_path).with_context(|| format!("opening {}", leads_path.display()))?);
    tracing::info!(leads = %leads_path.display(), "writing leads");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = rt.block_on(async {
        let agent = Agent::bind(cfg, prompts, writer.sender()).await?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received, shutting down");
            let _ = tx.send(true);
        });
        agent.run(rx).await
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    writer.finish();
    result
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
