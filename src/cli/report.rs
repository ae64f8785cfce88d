//! `backstop report`: the command line of the missed-call report (`report`).

use crate::config::Config;

/// What to report on, and how to write it.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {}

pub fn run(_cfg: &Config, _args: ReportArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
