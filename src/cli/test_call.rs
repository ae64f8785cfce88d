//! `backstop test-call`: the command line of the test call (`testcall`).
//!
//! The target is the agent of `--config` by default (its `[sip] listen`,
//! 0.0.0.0 and :: meaning this host), or any SIP URI, such as the business's
//! public number at the PBX. With the config known (`--config` or
//! `--data-dir`), the call's lead is looked for in the agent's data dir.

use crate::cli::load_config;
use crate::testcall::lead::LeadWatch;
use crate::testcall::{TestCall, agent_target, target_uri};
use backstop_core::sip::auth::Credentials;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where to call, and what to check.
#[derive(Debug, clap::Args)]
pub struct TestCallArgs {
    /// Whom to call: a SIP URI (`sip:+15551230000@pbx.example.net`) or `host[:port]`.
    /// Default: the agent of `--config`.
    pub target: Option<String>,
    /// The agent's config: its address (the default target) and data dir (where its lead is looked for).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The agent's data dir, when `backstop run` was given one.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keys to press (RFC 4733) once the first prompt is heard, e.g. `1#`.
    #[arg(long, default_value = "")]
    pub keys: String,
    /// Seconds to wait for the answer, and then for the first prompt.
    /// Through a PBX that rings the business's phones first (often 15-25 s),
    /// raise it past that ring time, e.g. `--timeout 40`.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// The user part of our From: the caller number the far end sees.
    #[arg(long, default_value = "test-call")]
    pub from: String,
    /// Our local SIP address (`IP:PORT`); default: any port on the address that routes to the target.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Send the SIP here instead of the target's host (an outbound proxy, `IP:PORT`).
    #[arg(long)]
    pub proxy: Option<SocketAddr>,
    /// Do not look for the lead even when the config is known.
    #[arg(long)]
    pub no_lead: bool,
    /// Digest credentials, for a target that answers 401/407 (with --password or --password-env).
    #[arg(long)]
    pub user: Option<String>,
    /// The digest password for `--user` (visible in `ps`: for a test account only; see --password-env).
    #[arg(long, requires = "user", conflicts_with = "password_env")]
    pub password: Option<String>,
    /// The name of an environment variable that holds the password for `--user`
    /// (for cron: the password stays out of `ps`).
    #[arg(long, value_name = "NAME", requires = "user")]
    pub password_env: Option<String>,
}

/// Place the call and print one line per check; `Ok(false)` when a check failed.
pub fn run(args: TestCallArgs) -> anyhow::Result<bool> {
    if !(args.timeout > 0.0 && args.timeout <= 600.0) {
        anyhow::bail!("--timeout must be between 0 and 600 seconds, not {}", args.timeout);
    }
    let config_known = args.config.is_some() || args.data_dir.is_some();
    let cfg = load_config(args.config.as_deref(), args.data_dir.clone())?;
    let agent = agent_target(cfg.sip.listen);
    let target = args.target.as_deref().map(target_uri).unwrap_or_else(|| agent.clone());
    if target.to_ascii_lowercase().starts_with("sips:") {
        anyhow::bail!("{target}: test-call places calls over UDP; sips (TLS) is not supported");
    }
    let leads = (config_known && !args.no_lead).then(|| LeadWatch::new(cfg.outbox_path(), cfg.leads_path()));
    let password = match (&args.password, &args.password_env) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(name)) => Some(std::env::var(name).map_err(|e| anyhow::anyhow!("--password-env {name}: {e}"))?),
        (None, None) => None,
    };
    let credentials = match (args.user, password) {
        (Some(username), Some(password)) => Some(Credentials { username, password }),
        (Some(_), None) => anyhow::bail!("--user needs --password or --password-env"),
        _ => None,
    };
    // Every prompt a line may open with; one that cannot be read leaves the greeting unidentified, with a note.
    let expected_greeting = if config_known {
        let (greetings, notes) = crate::testcall::greetings::expected(&cfg);
        for note in notes {
            println!("note: {note}");
        }
        greetings
    } else {
        Vec::new()
    };
    crate::testcall::run(TestCall {
        expected_greeting,
        lead_by_caller: target != agent,
        target,
        proxy: args.proxy,
        listen: args.listen,
        from_user: args.from,
        keys: args.keys,
        timeout: Duration::from_secs_f64(args.timeout),
        credentials,
        leads,
    })
}
