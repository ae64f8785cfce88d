//! `backstop passwd`: an argon2id hash for an inbox user.
//!
//! Reads one line from stdin (the password; its line ending is dropped,
//! other spaces are kept) and prints the PHC string to paste into
//! `[[http.user]] password_hash`. The password is not echoed by us, but a
//! terminal echoes what is typed: pipe it in (`printf %s "$PW" | backstop
//! passwd`) or clear the screen afterwards.

use std::io::{BufRead, IsTerminal, Write};

/// Read a password from stdin and print its PHC hash.
pub fn run() -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password (shown as typed): ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    println!("{}", hash(password)?);
    Ok(())
}

/// The hash of a password, refusing an empty one.
pub fn hash(password: &str) -> anyhow::Result<String> {
    anyhow::ensure!(!password.is_empty(), "the password is empty");
    anyhow::ensure!(password.len() <= 1024, "the password is longer than 1024 bytes");
    crate::http::auth::hash_password(password)
}

#[cfg(test)]
mod tests {
    #[test]
    fn empty_is_refused_and_a_hash_verifies() {
        assert!(super::hash("").is_err());
        let h = super::hash("s3cret pass").unwrap();
        assert!(crate::http::auth::verify_password("s3cret pass", &h));
    }
}
