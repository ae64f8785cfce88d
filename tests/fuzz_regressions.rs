//! The fuzz targets on stable, bounded for CI: each entry point in
//! `backstop::fuzz` gets its seed corpus (`fuzz/seeds/<target>/`), every
//! input that ever crashed it (`fuzz/regressions/<target>/`), and then
//! deterministic mutations of the seeds for a bounded count and time.
//! The coverage-guided runs are `cargo +nightly fuzz run <target>` (see
//! `fuzz/README.md`).

mod common;

use backstop::fuzz::{self, Mutator};
use std::path::Path;
use std::time::{Duration, Instant};

fn files(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Seeds, regressions, then up to `mutations` mutated seeds or `budget` of time, whichever ends first.
fn run(target: &str, entry: fn(&[u8]), mutations: usize, budget: Duration) {
    let root = common::manifest_dir().join("fuzz");
    let seeds = files(&root.join("seeds").join(target));
    assert!(!seeds.is_empty(), "no seeds for {target}");
    for input in seeds.iter().chain(files(&root.join("regressions").join(target)).iter()) {
        entry(input);
    }
    let mut m = Mutator::new(0x9E37_79B9_7F4A_7C15 ^ target.len() as u64);
    let start = Instant::now();
    for i in 0..mutations {
        entry(&m.mutate(&seeds[i % seeds.len()]));
        if start.elapsed() > budget {
            break;
        }
    }
}

const BUDGET: Duration = Duration::from_secs(4);

#[test]
fn sip_message() {
    run("sip_message", fuzz::sip_message, 30_000, BUDGET);
}

#[test]
fn sdp() {
    run("sdp", fuzz::sdp, 30_000, BUDGET);
}

#[test]
fn rtp() {
    run("rtp", fuzz::rtp, 30_000, BUDGET);
}

#[test]
fn rfc4733() {
    run("rfc4733", fuzz::rfc4733, 30_000, BUDGET);
}

#[test]
fn sip_info() {
    run("sip_info", fuzz::sip_info, 30_000, BUDGET);
}

#[test]
fn prompt() {
    run("prompt", fuzz::prompt, 5_000, BUDGET);
}

#[test]
fn config() {
    run("config", fuzz::config, 5_000, BUDGET);
}
