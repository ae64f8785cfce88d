//! The `backstop` command line: `run` the agent, `check` a config and its
//! prompts, inspect or nudge the delivery `outbox`, or read the last
//! `leads`. What each does lives in `backstop::cli`; this is the binary's
//! edge, where errors become one `anyhow` chain with context, printed once,
//! and a non-zero exit.

use backstop::cli::{inspect, load_config, load_lines, run};
use backstop::config::Config;
use backstop_core::route::line::Finding;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
        /// SIP address for UDP and TCP (like 0.0.0.0:5060), overriding sip.listen.
        #[arg(long)]
        listen: Option<SocketAddr>,
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
    /// Print an argon2 hash of a password read from stdin, for `[[http.user]] password_hash`.
    Passwd,
    /// The missed-call report: calls by hour and weekday, outcomes, the intake
    /// funnel, time to answer and to call back; as text, JSON, CSV or HTML.
    Report {
        #[command(flatten)]
        args: backstop::cli::report::ReportArgs,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Place a real test call (to the running agent, or any SIP URI) and
    /// check that it is answered and the first prompt is heard; exits
    /// non-zero when a check fails.
    TestCall(backstop::cli::test_call::TestCallArgs),
    /// Read the leads: the lead store (list, done) or the leads file (tail).
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
    /// Leads in the store, newest first (overdue first among open ones).
    List {
        /// Only leads not handled yet.
        #[arg(long, conflicts_with = "overdue")]
        open: bool,
        /// Only leads past their callback time.
        #[arg(long)]
        overdue: bool,
        #[arg(short = 'n', long, default_value_t = 50)]
        n: u32,
    },
    /// Mark a lead handled (called back); publishes lead.handled.
    Done {
        /// The lead's id.
        id: String,
        /// A note to keep with it.
        #[arg(long)]
        note: Option<String>,
    },
    /// The last N leads, one readable line each.
    Tail {
        #[arg(short = 'n', long, default_value_t = 10)]
        n: usize,
    },
}

/// The config, or the exit code after printing every problem in it.
fn config_or_exit(path: Option<&Path>, data_dir: Option<PathBuf>) -> Result<Config, ExitCode> {
    load_config(path, data_dir).map_err(|errors| {
        eprintln!("{errors}");
        ExitCode::FAILURE
    })
}

/// Print a command's failure as one chain and exit non-zero.
fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backstop: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    backstop::runtime::limit_arenas();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => {
            let cfg = match config_or_exit(config.as_deref(), None) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match load_lines(&cfg) {
                Ok(lines) => {
                    println!("config OK; listen {}", cfg.sip.listen);
                    for line in lines.all() {
                        let mut names: Vec<&str> = line.prompts.names().collect();
                        names.sort();
                        let hours = line.schedule.as_ref().map_or("no schedule".to_string(), |s| {
                            format!("{} now", s.state_at(std::time::SystemTime::now()).as_str())
                        });
                        println!(
                            "line {}: {} steps, {hours}; prompts {}",
                            line.name,
                            line.program.steps.len(),
                            names.join(", ")
                        );
                    }
                    let mut unusable = false;
                    if let Some(t) = &cfg.transcribe {
                        match backstop::transcribe::load_model(t) {
                            Ok(m) => println!(
                                "transcribe: {} {}, {} thread(s), leads wait up to {} s",
                                m.engine(),
                                m.name(),
                                t.threads,
                                t.wait.as_secs()
                            ),
                            Err(e) => {
                                eprintln!("error: transcribe: {e}");
                                unusable = true;
                            }
                        }
                    }
                    // A line no call can reach is a mistake; an overlap may be meant (the earlier line wins).
                    for finding in cfg.line_findings() {
                        let serious = !matches!(finding, Finding::Overlap { .. });
                        unusable |= serious;
                        eprintln!("{}: {finding}", if serious { "error" } else { "warning" });
                    }
                    let texts = !cfg.text_back.is_empty() || cfg.line.iter().any(|l| !l.text_back.is_empty());
                    if texts && cfg.http.as_ref().and_then(|h| h.public_url.as_ref()).is_none() {
                        eprintln!(
                            "warning: [[text_back]] without [http] public_url: STOP replies cannot reach /sms/inbound \
                             here (Twilio's own opt-out still blocks texts to those who replied STOP)"
                        );
                    }
                    if unusable { ExitCode::FAILURE } else { ExitCode::SUCCESS }
                }
                Err(e) => {
                    eprintln!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Outbox { action, config, data_dir } => {
            let cfg = match config_or_exit(config.as_deref(), data_dir) {
                Ok(c) => c,
                Err(code) => return code,
            };
            finish(match action {
                OutboxAction::Status => inspect::outbox_status(&cfg).map(|lines| {
                    for l in lines {
                        println!("{l}");
                    }
                }),
                OutboxAction::Retry { dead } => inspect::outbox_retry(&cfg, dead).map(|n| {
                    println!(
                        "{n} deliveries are due now; a running agent picks them up within 5 s, or at its next start"
                    )
                }),
            })
        }
        Command::Passwd => finish(backstop::cli::passwd::run()),
        Command::Report { args, config, data_dir } => {
            let cfg = match config_or_exit(config.as_deref(), data_dir) {
                Ok(c) => c,
                Err(code) => return code,
            };
            finish(backstop::cli::report::run(&cfg, args))
        }
        Command::TestCall(args) => match backstop::cli::test_call::run(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("backstop: test-call: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Leads { action: LeadsAction::List { open, overdue, n }, config, data_dir } => {
            let cfg = match config_or_exit(config.as_deref(), data_dir) {
                Ok(c) => c,
                Err(code) => return code,
            };
            finish(backstop::cli::leads::list(&cfg, open, overdue, n))
        }
        Command::Leads { action: LeadsAction::Done { id, note }, config, data_dir } => {
            let cfg = match config_or_exit(config.as_deref(), data_dir) {
                Ok(c) => c,
                Err(code) => return code,
            };
            finish(backstop::cli::leads::done(&cfg, &id, note))
        }
        Command::Leads { action: LeadsAction::Tail { n }, config, data_dir } => {
            let cfg = match config_or_exit(config.as_deref(), data_dir) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match backstop::sink::file::latest_leads(&cfg.leads_path(), n) {
                Ok(lines) => {
                    for l in lines {
                        println!("{}", inspect::describe_lead(&l));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("backstop: {}: {e}", cfg.leads_path().display());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config, listen, data_dir } => {
            // Applied to the file now and to every reload of it (SIGHUP).
            let overrides = run::Overrides { listen, data_dir };
            let mut cfg = match config_or_exit(config.as_deref(), None) {
                Ok(c) => c,
                Err(code) => return code,
            };
            overrides.apply(&mut cfg);
            run::init_logging(&cfg);
            let result = run::run(cfg, config, overrides);
            if let Err(e) = &result {
                tracing::error!("{e:#}");
            }
            finish(result)
        }
    }
}
