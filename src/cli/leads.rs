//! `backstop leads list` and `backstop leads done`: the lead store from the
//! command line, the same store the inbox shows. (Stub.)

use crate::config::Config;

/// Print the store's leads, one line each.
pub fn list(cfg: &Config, open: bool, overdue: bool, n: u32) -> anyhow::Result<()> {
    let _ = (cfg, open, overdue, n);
    Ok(())
}

/// Mark a lead handled by `cli`, publishing `lead.handled`.
pub fn done(cfg: &Config, id: &str, note: Option<String>) -> anyhow::Result<()> {
    let _ = (cfg, id, note);
    Ok(())
}
