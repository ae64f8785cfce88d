//! `backstop passwd`: an argon2id hash for an inbox user. (Stub.)

/// Read a password from stdin and print its PHC hash.
pub fn run() -> anyhow::Result<()> {
    Ok(())
}
