//! transcribe: word error, CPU cost, latency and memory of the offline
//! speech-to-text configurations on callers' answers as Backstop records
//! them (8 kHz G.711 μ-law). See benches/transcribe/README.md for the
//! corpus and the measured figures.
//!
//! Run: `cargo bench --features whisper --bench transcribe`
//!
//! Environment:
//! - `BACKSTOP_BENCH_MODELS`: ggml model files, `:`-separated. Default: the
//!   path `scripts/get-model.sh` prints as its last line (no network when
//!   the model is in its cache) and every other `ggml-*.bin` beside it.
//! - `BACKSTOP_BENCH_CONFIGS`: `,`-separated configurations, each
//!   `{full|fit}-{greedy|beamN}[-padS]` (`fit-beam5-pad1`: the encoder
//!   window cut to the input, beam search of width 5, 1 s of silence added
//!   before and after). Default: `full-greedy fit-greedy full-beam5
//!   fit-beam5 fit-greedy-pad1 fit-beam5-pad1` for the first model,
//!   `fit-greedy fit-beam5-pad1` for the others (a full 30 s window on a
//!   larger model is slow here). The table marks with `*` the
//!   configuration that is `WhisperOptions::default()`.
//! - `BACKSTOP_BENCH_LIMIT`: at most this many utterances (names, needs and
//!   real speech taken in turn), for a quick run.
//! - `BACKSTOP_BENCH_VERBOSE=1`: print every transcript that is not exact.
//!
//! Groups: `name` and `need` from benches/transcribe/corpus.tsv (synthetic
//! voices, committed); `real`: the human recordings alsa-utils installs in
//! /usr/share/sounds/alsa (absent: the group is skipped), brought to 8 kHz
//! and written as μ-law recordings by Backstop's own recording writer, the
//! reference being the file's name ("Front_Left" → "front left"); `empty`:
//! answers without speech (the corpus's line noise alone, and alsa's
//! `Noise.wav`, which is steady noise), where every word is invented.
//!
//! Measured per configuration, on one decoding thread (`threads: 1`):
//! - WER per group (`transcribe::wer`, errors and words summed);
//! - CPU seconds per second of audio: this thread's CPU time
//!   (CLOCK_THREAD_CPUTIME_ID) around `transcribe` only, and the process's
//!   (CLOCK_PROCESS_CPUTIME_ID) over the same spans, which shows any work
//!   done on other threads;
//! - latency from the end of an answer to its text: wall time of reading
//!   the WAV, resampling to 16 kHz and transcribing; median, p90, max. The
//!   decoder is made and warmed with one answer before the timed run;
//! - memory: VmRSS after loading the model minus before, and VmHWM during
//!   the run minus VmRSS before loading. Each configuration runs in a child
//!   process of its own (this executable again, with `BACKSTOP_BENCH_CHILD`
//!   set), so that no configuration inherits another's heap.
//!
//! The table is printed and written with every transcript as JSON to
//! `<target dir>/transcribe-bench.json`.

use backstop::transcribe::audio::{read_recording, to_engine_rate};
use backstop::transcribe::engine::{Engine, Model};
use backstop::transcribe::wer::{Wer, wer};
use backstop::transcribe::whisper::{WhisperModel, WhisperOptions};
use backstop_core::media::g711::Law;
use backstop_core::media::recorder::{Audio, RecordingFormat};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// `empty`: answers with no speech (line noise only; alsa-utils' `Noise`),
/// whose reference is empty: every word written is invented.
const GROUPS: [&str; 4] = ["name", "need", "real", "empty"];
/// Set in the child process that runs one configuration: `model path\nconfig`.
const CHILD_ENV: &str = "BACKSTOP_BENCH_CHILD";

struct Utterance {
    path: PathBuf,
    group: &'static str,
    voice: String,
    text: String,
    secs: f64,
}

#[derive(Clone, Debug)]
struct Config {
    label: String,
    fit: bool,
    beam: Option<u32>,
    pad: f32,
}

impl Config {
    fn parse(s: &str) -> Result<Config, String> {
        let mut parts = s.trim().split('-');
        let fit = match parts.next() {
            Some("fit") => true,
            Some("full") => false,
            other => return Err(format!("{s:?}: starts with {other:?}, not full or fit")),
        };
        let beam = match parts.next() {
            Some("greedy") => None,
            Some(b) if b.starts_with("beam") => {
                Some(b[4..].parse::<u32>().map_err(|_| format!("{s:?}: beam width {:?}", &b[4..]))?)
            }
            other => return Err(format!("{s:?}: {other:?} is not greedy or beamN")),
        };
        let pad = match parts.next() {
            None => 0.0,
            Some(p) if p.starts_with("pad") => {
                p[3..].parse::<f32>().map_err(|_| format!("{s:?}: padding {:?}", &p[3..]))?
            }
            Some(other) => return Err(format!("{s:?}: {other:?} is not padS")),
        };
        Ok(Config { label: s.trim().to_string(), fit, beam, pad })
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap_or(Path::new("target")).to_path_buf();
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return child(&spec, root, &target);
    }
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string();
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    println!("transcribe bench, {date}, {} cores, loadavg at start: {loadavg}", cores());

    let models = models(root);
    let utterances = corpus(root, &target, true);
    let audio_secs: f64 = utterances.iter().map(|u| u.secs).sum();
    for g in GROUPS {
        let us: Vec<&Utterance> = utterances.iter().filter(|u| u.group == g).collect();
        if !us.is_empty() {
            println!(
                "  {g:<5}: {:>2} utterances, {:>5.1} s of audio",
                us.len(),
                us.iter().map(|u| u.secs).sum::<f64>()
            );
        }
    }
    let configs_env = std::env::var("BACKSTOP_BENCH_CONFIGS").ok().filter(|s| !s.trim().is_empty());

    let mut rows: Vec<String> = Vec::new();
    let mut runs = Vec::new();
    for (mi, model_path) in models.iter().enumerate() {
        let default = if mi == 0 {
            "full-greedy,fit-greedy,full-beam5,fit-beam5,fit-greedy-pad1,fit-beam5-pad1"
        } else {
            "fit-greedy,fit-beam5-pad1"
        };
        let configs: Vec<Config> = configs_env
            .as_deref()
            .unwrap_or(default)
            .split(',')
            .map(|s| Config::parse(s).unwrap_or_else(|e| panic!("BACKSTOP_BENCH_CONFIGS: {e}")))
            .collect();
        for config in configs {
            match run_child(model_path, &config) {
                Ok((row, run)) => {
                    println!("{row}");
                    rows.push(row);
                    runs.push(run);
                }
                Err(e) => {
                    let row = format!("| {:<15} | {:<16} | failed: {e}", model_label(model_path), config.label);
                    println!("{row}");
                    rows.push(row);
                }
            }
        }
    }

    let loadavg_end = std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_string();
    println!();
    println!(
        "{} utterances, {audio_secs:.1} s of audio; loadavg at start: {loadavg}; at end: {loadavg_end}",
        utterances.len()
    );
    println!("{}", Row::header());
    println!("{}", Row::rule());
    for row in &rows {
        println!("{row}");
    }

    let out = target.join("transcribe-bench.json");
    let doc = json!({
        "date": date,
        "cores": cores(),
        "loadavg_start": loadavg,
        "loadavg_end": loadavg_end,
        "utterances": utterances.len(),
        "audio_secs": audio_secs,
        "runs": runs,
    });
    match std::fs::write(&out, serde_json::to_string_pretty(&doc).unwrap()) {
        Ok(()) => println!("\nwritten: {}", out.display()),
        Err(e) => eprintln!("could not write {}: {e}", out.display()),
    }
}

/// Run one configuration in a child process of its own, so that its memory
/// figures are not those the previous configuration left behind. Its
/// stdout is passed on, except the two lines carrying the results.
fn run_child(model: &Path, config: &Config) -> Result<(String, serde_json::Value), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .env(CHILD_ENV, format!("{}\n{}", model.display(), config.label))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let (mut row, mut run) = (None, None);
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.map_err(|e| e.to_string())?;
        if let Some(r) = line.strip_prefix("@@row ") {
            row = Some(r.to_string());
        } else if let Some(j) = line.strip_prefix("@@run ") {
            run = Some(serde_json::from_str(j).map_err(|e| e.to_string())?);
        } else {
            println!("{line}");
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    match (row, run) {
        (Some(row), Some(run)) if status.success() => Ok((row, run)),
        _ => Err(format!("the child process ended with {status}")),
    }
}

/// The child's side of [`run_child`].
fn child(spec: &str, root: &Path, target: &Path) {
    let (model, label) = spec.split_once('\n').expect("model\\nconfig");
    let config = Config::parse(label).unwrap();
    let utterances = corpus(root, target, false);
    let verbose = std::env::var("BACKSTOP_BENCH_VERBOSE").is_ok_and(|v| !v.is_empty() && v != "0");
    let (row, run) = run_config(Path::new(model), &config, &utterances, verbose);
    println!("@@row {}", row.line());
    println!("@@run {run}");
}

fn model_label(path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    stem.trim_start_matches("ggml-").to_string()
}

/// One configuration's figures.
struct Row {
    model: String,
    config: String,
    wer: [Option<Wer>; 4],
    exact: [(usize, usize); 4],
    cpu_thread: f64,
    cpu_process: f64,
    lat: [f64; 3],
    rss_load_mb: f64,
    hwm_run_mb: f64,
}

impl Row {
    fn header() -> String {
        format!(
            "| {:<15} | {:<16} | {:>13} | {:>13} | {:>13} | {:>12} | {:>8} | {:>8} | {:>22} | {:>8} | {:>8} |",
            "model",
            "config",
            "names WER",
            "needs WER",
            "real WER",
            "empty: words",
            "CPU/s 1t",
            "CPU/s pr",
            "latency p50/p90/max s",
            "RSS load",
            "RSS peak"
        )
    }

    fn rule() -> String {
        let widths = [15, 16, 13, 13, 13, 12, 8, 8, 22, 8, 8];
        let cells: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(i, w)| if i < 2 { "-".repeat(*w) } else { format!("{}:", "-".repeat(w - 1)) })
            .collect();
        format!("| {} |", cells.join(" | "))
    }

    fn line(&self) -> String {
        let w = |i: usize| match self.wer[i] {
            Some(x) => format!("{:5.1} % {:>2}/{:<2}", 100.0 * x.rate(), self.exact[i].0, self.exact[i].1),
            None => "-".to_string(),
        };
        // No reference words: how many words were invented, then how many answers came out empty.
        let invented = match self.wer[3] {
            Some(x) => format!("{:>3} {:>2}/{:<2}", x.errors, self.exact[3].0, self.exact[3].1),
            None => "-".to_string(),
        };
        format!(
            "| {:<15} | {:<16} | {:>13} | {:>13} | {:>13} | {:>12} | {:>8.3} | {:>8.3} | {:>22} | {:>5.0} MB | {:>5.0} MB |",
            self.model,
            self.config,
            w(0),
            w(1),
            w(2),
            invented,
            self.cpu_thread,
            self.cpu_process,
            format!("{:.2} / {:.2} / {:.2}", self.lat[0], self.lat[1], self.lat[2]),
            self.rss_load_mb,
            self.hwm_run_mb
        )
    }
}

fn run_config(model_path: &Path, config: &Config, utterances: &[Utterance], verbose: bool) -> (Row, serde_json::Value) {
    let before = proc_status_kb("VmRSS");
    #[allow(clippy::needless_update)] // whatever options come later keep their defaults
    let opts = WhisperOptions {
        threads: 1,
        fit_audio_ctx: config.fit,
        beam: config.beam,
        pad_secs: config.pad,
        ..WhisperOptions::default()
    };
    let is_default = opts == WhisperOptions::default();
    let t = Instant::now();
    let model =
        WhisperModel::load(model_path, opts).unwrap_or_else(|e| panic!("loading {}: {e}", model_path.display()));
    let mut engine: Box<dyn Engine> = model.decoder().expect("a decoder");
    let load_secs = t.elapsed().as_secs_f64();
    let after_load = proc_status_kb("VmRSS");
    // Warm-up: one answer, not counted.
    if let Some(u) = utterances.first() {
        let pcm = read_recording(&u.path).expect("the first utterance");
        engine.transcribe(&to_engine_rate(&pcm)).expect("warm-up transcription");
    }

    let mut wers: [Option<Wer>; 4] = [None; 4];
    let mut exact = [(0usize, 0usize); 4];
    let (mut cpu_thread, mut cpu_process, mut audio) = (0.0, 0.0, 0.0);
    let mut latencies = Vec::with_capacity(utterances.len());
    let mut results = Vec::with_capacity(utterances.len());
    for u in utterances {
        let wall = Instant::now();
        let pcm = read_recording(&u.path).unwrap_or_else(|e| panic!("{e}"));
        let samples = to_engine_rate(&pcm);
        let (t0, p0) = (cpu_time(libc::CLOCK_THREAD_CPUTIME_ID), cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID));
        let heard = engine.transcribe(&samples).unwrap_or_else(|e| panic!("{}: {e}", u.path.display()));
        let (t1, p1) = (cpu_time(libc::CLOCK_THREAD_CPUTIME_ID), cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID));
        let latency = wall.elapsed().as_secs_f64();
        cpu_thread += t1 - t0;
        cpu_process += p1 - p0;
        audio += u.secs;
        latencies.push(latency);
        let gi = GROUPS.iter().position(|g| *g == u.group).unwrap();
        let w = wer(&u.text, &heard.text);
        *wers[gi].get_or_insert_with(Wer::default) += w;
        exact[gi].1 += 1;
        if w.errors == 0 {
            exact[gi].0 += 1;
        } else if verbose {
            println!("    {:<14} {:<6} {:?} → {:?}", file_name(&u.path), u.group, u.text, heard.text);
        }
        results.push(json!({
            "file": file_name(&u.path),
            "group": u.group,
            "voice": u.voice,
            "secs": u.secs,
            "reference": u.text,
            "hypothesis": heard.text,
            "confidence": heard.confidence,
            "errors": w.errors,
            "words": w.words,
            "cpu_thread_secs": t1 - t0,
            "latency_secs": latency,
        }));
    }
    let hwm = proc_status_kb("VmHWM");
    let rss_end = proc_status_kb("VmRSS");
    drop(engine);
    drop(model);

    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if latencies.is_empty() {
            0.0
        } else {
            latencies[((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1]
        }
    };
    let mb = |kb: i64| kb as f64 / 1024.0;
    let row = Row {
        model: model_label(model_path),
        config: if is_default { format!("{} *", config.label) } else { config.label.clone() },
        wer: wers,
        exact,
        cpu_thread: cpu_thread / audio.max(1e-9),
        cpu_process: cpu_process / audio.max(1e-9),
        lat: [pct(0.5), pct(0.9), latencies.last().copied().unwrap_or(0.0)],
        rss_load_mb: mb(after_load - before),
        hwm_run_mb: mb(hwm - before),
    };
    let group_json: serde_json::Map<String, serde_json::Value> = GROUPS
        .iter()
        .enumerate()
        .filter_map(|(i, g)| {
            wers[i].map(|w| {
                (
                    g.to_string(),
                    json!({"errors": w.errors, "words": w.words, "wer": w.rate(), "exact": exact[i].0, "utterances": exact[i].1}),
                )
            })
        })
        .collect();
    let run = json!({
        "model": model_path.display().to_string(),
        "config": config.label,
        "engine_default": is_default,
        "fit_audio_ctx": config.fit,
        "beam": config.beam,
        "pad_secs": config.pad,
        "threads": 1,
        "load_secs": load_secs,
        "groups": group_json,
        "audio_secs": audio,
        "cpu_thread_per_audio_sec": row.cpu_thread,
        "cpu_process_per_audio_sec": row.cpu_process,
        "latency_secs": {"p50": row.lat[0], "p90": row.lat[1], "max": row.lat[2]},
        "rss_kb": {"before_load": before, "after_load": after_load, "hwm_run": hwm, "after_run": rss_end},
        "utterances": results,
    });
    (row, run)
}

/// The model files: `BACKSTOP_BENCH_MODELS`, or get-model.sh's default and its neighbours.
fn models(root: &Path) -> Vec<PathBuf> {
    if let Ok(list) = std::env::var("BACKSTOP_BENCH_MODELS")
        && !list.trim().is_empty()
    {
        return list.split(':').filter(|s| !s.is_empty()).map(PathBuf::from).collect();
    }
    let script = root.join("scripts/get-model.sh");
    let out =
        Command::new("bash").arg(&script).output().unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let path = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").trim().to_string();
    if !out.status.success() || path.is_empty() {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        panic!("no model: {} failed ({}); set BACKSTOP_BENCH_MODELS to ggml model files", script.display(), out.status);
    }
    let first = PathBuf::from(path);
    let mut models = vec![first.clone()];
    if let Some(dir) = first.parent()
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        let mut others: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                *p != first && {
                    let n = file_name(p);
                    n.starts_with("ggml-") && n.ends_with(".bin")
                }
            })
            .collect();
        others.sort();
        models.extend(others);
    }
    models
}

/// The utterances, in turn from each group, cut to `BACKSTOP_BENCH_LIMIT`.
fn corpus(root: &Path, target: &Path, announce: bool) -> Vec<Utterance> {
    let dir = root.join("benches/transcribe");
    let tsv = std::fs::read_to_string(dir.join("corpus.tsv")).expect("benches/transcribe/corpus.tsv");
    let mut groups: [Vec<Utterance>; 4] = Default::default();
    for line in tsv.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 4, "corpus.tsv: {line:?}");
        let gi = GROUPS.iter().position(|g| *g == f[1]).unwrap_or_else(|| panic!("corpus.tsv: kind {:?}", f[1]));
        let path = dir.join(f[0]);
        let secs = read_recording(&path).unwrap_or_else(|e| panic!("{e}")).len() as f64 / 8000.0;
        groups[gi].push(Utterance { path, group: GROUPS[gi], voice: f[2].into(), text: f[3].into(), secs });
    }
    for u in real_speech(&target.join("transcribe-bench-real"), announce) {
        let gi = GROUPS.iter().position(|g| *g == u.group).unwrap();
        groups[gi].push(u);
    }

    let limit = std::env::var("BACKSTOP_BENCH_LIMIT").ok().and_then(|s| s.trim().parse::<usize>().ok());
    let mut iters: Vec<_> = groups.into_iter().map(|g| g.into_iter()).collect();
    let mut out = Vec::new();
    loop {
        let mut any = false;
        for it in iters.iter_mut() {
            if let Some(u) = it.next() {
                any = true;
                out.push(u);
            }
        }
        if !any {
            break;
        }
    }
    if let Some(n) = limit {
        out.truncate(n);
    }
    out
}

/// alsa-utils' recordings as Backstop would record them: 8 kHz (the prompt
/// loader's resampler), written as μ-law WAV by the recording writer.
fn real_speech(out_dir: &Path, announce: bool) -> Vec<Utterance> {
    let src = Path::new("/usr/share/sounds/alsa");
    let Ok(entries) = std::fs::read_dir(src) else {
        if announce {
            println!("  real: {} absent (apt-get install alsa-utils): group skipped", src.display());
        }
        return Vec::new();
    };
    let mut files: Vec<PathBuf> =
        entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| file_name(p).ends_with(".wav")).collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let pcm = match read_recording(&f) {
            Ok(p) if !p.is_empty() => p,
            Ok(_) => continue,
            Err(e) => {
                if announce {
                    println!("  real: {e}: skipped");
                }
                continue;
            }
        };
        let path = out_dir.join(file_name(&f));
        backstop::media_files::write_recording(&path, &Audio::from_pcm(Some(Law::Pcmu), &pcm), RecordingFormat::Ulaw)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let stem = f.file_stem().unwrap().to_string_lossy().replace('_', " ");
        // Noise.wav is steady noise, not the spoken word: nothing should be heard.
        let (group, text) = if stem == "Noise" { ("empty", String::new()) } else { ("real", stem.to_lowercase()) };
        out.push(Utterance { path, group, voice: "alsa-utils".into(), text, secs: pcm.len() as f64 / 8000.0 });
    }
    out
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn cpu_time(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// A `kB` line of /proc/self/status (VmRSS, VmHWM).
fn proc_status_kb(key: &str) -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or(0)
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
