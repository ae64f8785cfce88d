//! The core crate's line, checked where the compiler cannot: its Cargo.toml
//! names no tokio (so its code cannot), and its production code (everything
//! before a file's `#[cfg(test)]`) never reads the clock, opens a socket,
//! touches the file system, spawns a thread or process, or logs. Time and
//! bytes come in as arguments; what happens goes out as values.

use std::path::{Path, PathBuf};

const CORE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crates/backstop-core");

/// What the core must not call, and why each is here.
const FORBIDDEN: [(&str, &str); 23] = [
    ("tokio", "the runtime lives in the backstop crate"),
    ("Instant::now", "time is an input"),
    ("SystemTime::now", "time is an input"),
    ("std::fs", "the runtime reads and writes files"),
    ("File::", "the runtime reads and writes files"),
    ("UdpSocket", "sockets are the runtime's"),
    ("TcpStream", "sockets are the runtime's"),
    ("std::thread", "the core does not spawn"),
    ("std::process", "the core does not spawn"),
    ("tracing::", "the core reports through values the runtime logs"),
    ("println!", "the core reports through values the runtime logs"),
    ("print!", "the core reports through values the runtime logs"),
    ("eprintln!", "the core reports through values the runtime logs"),
    ("dbg!", "the core reports through values the runtime logs"),
    ("TcpListener", "sockets are the runtime's"),
    ("std::env", "the runtime reads the environment"),
    ("Command::new", "the core does not spawn"),
    // jiff reads /usr/share/zoneinfo and the clock: the runtime looks zones up and passes them in.
    ("TimeZone::get", "the runtime looks time zones up (it reads the tz database)"),
    ("TimeZone::system", "the runtime looks time zones up (it reads the tz database)"),
    ("tz::db", "the runtime looks time zones up (it reads the tz database)"),
    ("Timestamp::now", "time is an input"),
    ("Zoned::now", "time is an input"),
    ("civil::Date::today", "time is an input"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's production code, without comments: every line but the test
/// module at its end (`#[cfg(test)]` then `mod tests`), and but the lines
/// that declare a test-only module kept elsewhere (`#[cfg(test)]` then
/// `mod name;`, checked as a file of its own).
fn production_code(text: &str) -> Vec<(usize, &str)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let next = lines.get(i + 1).map(|l| l.trim()).unwrap_or("");
        if lines[i].trim() == "#[cfg(test)]" {
            if next.starts_with("mod tests") {
                break;
            }
            if next.ends_with(';') {
                i += 2;
                continue;
            }
        }
        out.push((i + 1, lines[i].split("//").next().unwrap_or("")));
        i += 1;
    }
    out
}

#[test]
fn the_core_manifest_has_no_tokio() {
    let manifest = std::fs::read_to_string(Path::new(CORE).join("Cargo.toml")).unwrap();
    let deps: Vec<&str> = manifest
        .lines()
        .skip_while(|l| !l.starts_with("[dependencies]"))
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    assert!(!deps.is_empty(), "no [dependencies] read from the core's manifest");
    let named: Vec<&&str> = deps.iter().filter(|l| l.contains("tokio") || l.contains("async-std")).collect();
    assert!(named.is_empty(), "backstop-core depends on a runtime: {named:?}");
}

#[test]
fn the_core_code_reads_no_clock_and_touches_no_io() {
    let mut files = Vec::new();
    rust_files(&Path::new(CORE).join("src"), &mut files);
    assert!(files.len() > 20, "only {} core files found", files.len());
    let mut found = Vec::new();
    for file in &files {
        if file.ends_with("fixtures.rs") {
            continue; // test audio, compiled only into the core's tests
        }
        let text = std::fs::read_to_string(file).unwrap();
        for (line, code) in production_code(&text) {
            for (needle, why) in FORBIDDEN {
                if code.contains(needle) {
                    found.push(format!("{}:{line}: {needle} ({why})", file.display()));
                }
            }
        }
    }
    assert!(found.is_empty(), "the core crosses its line:\n{}", found.join("\n"));
}

/// The check itself can fail: it finds each forbidden call in production code, and none in tests.
#[test]
fn the_check_finds_what_it_looks_for() {
    let text = "#[cfg(test)]\nmod fixtures;\nfn f() { let t = Instant::now(); }\n// std::fs in a comment\n\
                #[cfg(test)]\nmod tests { fn g() { std::fs::read(\"x\"); } }\n";
    let code = production_code(text);
    assert_eq!(code.len(), 2, "{code:?}");
    assert_eq!(code[0].0, 3, "code after a test-only module declaration is still checked");
    assert!(code[0].1.contains("Instant::now"));
    assert!(!code[1].1.contains("std::fs"), "comments are not code");
}
