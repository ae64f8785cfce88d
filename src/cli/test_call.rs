//! `backstop test-call`: the command line of the test call (`testcall`).

/// Where to call, and what to check.
#[derive(Debug, clap::Args)]
pub struct TestCallArgs {}

/// Place the call and print one line per check; `Ok(false)` when a check failed.
pub fn run(_args: TestCallArgs) -> anyhow::Result<bool> {
    anyhow::bail!("not built yet")
}
