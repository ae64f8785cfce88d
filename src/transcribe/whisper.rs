//! whisper.cpp through `whisper-rs`: ggml models.
//!
//! One [`WhisperModel`] holds the weights (a `WhisperContext`, shared);
//! each worker thread gets a [`Engine`] of its own holding a
//! `WhisperState` (the KV caches and scratch buffers, ~10 MB for tiny.en).
//! Decoding is English only, without timestamps, one segment, blank and
//! non-speech tokens suppressed, no context carried between answers.
//!
//! A model file is checked before whisper.cpp sees it ([`check_ggml`]):
//! whisper.cpp trusts the lengths in the file, so a truncated or foreign
//! file can make it read garbage sizes or abort; here a missing, foreign,
//! truncated or padded file is a [`TranscribeError::Model`] naming the path.
//! whisper.cpp's own log lines are silenced (`install_logging_hooks`
//! without a whisper-rs log backend drops them).

use crate::transcribe::audio::pad_silence;
use crate::transcribe::engine::{ENGINE_RATE, Engine, Heard, Model, TranscribeError};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState};

/// How answers are decoded.
///
/// The defaults (one thread, fitted window, 1 s of silence padded on each
/// side, beam search of width 5) were chosen by measurement: tiny.en
/// converted by `scripts/ct2-to-ggml.py`, one decoding thread, this
/// 2-core machine while other builds ran (load ~2-3, so the absolute
/// figures are pessimistic; the ratios hold), 35 clips, 71 s: the two
/// speech fixtures, whisper.cpp's samples/jfk.wav (11 s of real speech)
/// taken to 8 kHz μ-law, and 32 clips of 10 home-repair needs and 6 names
/// in two espeak-ng voices, 8 kHz μ-law (1-3 s each). CPU seconds per
/// second of audio, and word error rate over all clips:
///
/// | setting | CPU s / audio s | WER |
/// |---|---|---|
/// | 30 s window, greedy | 3.05 | 40.5 % |
/// | 30 s window, greedy, pad 1 s | 3.10 | 44.8 % |
/// | 30 s window, beam 5 | 3.28 | 39.5 % |
/// | fitted window, greedy, no repeat collapse | 0.24 | 81.4 % |
/// | fitted window, greedy | 0.23 | 49.0 % |
/// | fitted window, greedy, pad 0.5 s | 0.29 | 47.1 % |
/// | fitted window, greedy, pad 1 s | 0.42 | 40.0 % |
/// | **fitted window, beam 5, pad 1 s** (default) | 0.59 | 31.4 % |
///
/// How to measure: `BACKSTOP_TEST_MODEL=... BACKSTOP_JFK_WAV=jfk.wav
/// BACKSTOP_MEASURE_DIR=dir-of-X.wav+X.txt cargo test --features whisper
/// --lib transcribe::whisper::tests::measure -- --ignored --nocapture
/// --test-threads=1`.
///
/// * `threads: 1`: the worker pool runs one job per thread; more threads
///   per job only help a lone job and cost the others.
/// * `fit_audio_ctx: true`: whisper.cpp otherwise encodes a full 30 s
///   window for every answer however short (3 CPU s per audio second
///   here). Cut to the clip, tiny.en tends to repeat a short answer until
///   its token budget runs out ("Maria Thompson, Maria Thompson, ..."),
///   which is what the 81 % row is; [`collapse_repeats`] and a token
///   budget of 8 + 6 per second bring that to 49 %, and 1 s of silence on
///   each side (the window grows with it) to 40 %, as good as the full
///   window at a seventh of the CPU.
/// * `beam: Some(5)`: 9 points fewer word errors than greedy for 40 % more
///   CPU, on answers that are seconds long and decoded off the media path.
///   (With the full 30 s window, beam 5 gained only 1 point.)
/// * `pad_secs: 1.0`: see the table; 0.5 s was worse than none.
///
/// Caveat: apart from JFK these are synthetic voices, and 35 clips;
/// `benches/transcribe` is the place for a larger set.
#[derive(Debug, Clone, PartialEq)]
pub struct WhisperOptions {
    /// Decoding threads per job.
    pub threads: u32,
    /// Cut the encoder's 30 s window to the input's length
    /// ([`audio_ctx_for`]).
    pub fit_audio_ctx: bool,
    /// Beam search with this width; `None` decodes greedily.
    pub beam: Option<u32>,
    /// Seconds of silence added before and after each answer.
    pub pad_secs: f32,
}

impl Default for WhisperOptions {
    fn default() -> Self {
        WhisperOptions { threads: 1, fit_audio_ctx: true, beam: Some(5), pad_secs: 1.0 }
    }
}

/// Encoder frames per second of audio (whisper's 100 mel frames/s halved
/// by the encoder's stride-2 convolution).
const FRAMES_PER_SEC: f32 = 50.0;
/// Frames added to the input's own (0.5 s): the mel window and the
/// encoder's convolutions reach past the last sample.
const AUDIO_CTX_MARGIN: i32 = 25;
/// The smallest window used (2 s): shorter windows made tiny.en's output
/// on sub-second names erratic.
const AUDIO_CTX_FLOOR: i32 = 100;
/// Answers shorter than this (0.1 s) are not decoded: empty text.
const MIN_SAMPLES: usize = ENGINE_RATE as usize / 10;

/// The encoder window for `n_samples` at [`ENGINE_RATE`] when fitting it
/// to the input: its frames rounded up, plus a margin, at least a floor, at
/// most the model's `n_audio_ctx`.
pub fn audio_ctx_for(n_samples: usize, n_audio_ctx: i32) -> i32 {
    let secs = n_samples as f32 / ENGINE_RATE as f32;
    let frames = (secs * FRAMES_PER_SEC).ceil() as i32 + AUDIO_CTX_MARGIN;
    frames.max(AUDIO_CTX_FLOOR).min(n_audio_ctx)
}

/// whisper.cpp weights, shared by the worker threads.
pub struct WhisperModel {
    ctx: WhisperContext,
    name: String,
    path: PathBuf,
    opts: WhisperOptions,
    n_audio_ctx: i32,
}

impl WhisperModel {
    /// Load a ggml model file (`ggml-tiny.en.bin`: `scripts/get-model.sh`).
    pub fn load(path: &Path, opts: WhisperOptions) -> Result<WhisperModel, TranscribeError> {
        let err = |reason: String| TranscribeError::Model { path: path.to_path_buf(), reason };
        let hp = check_ggml(path).map_err(err)?;
        whisper_rs::install_logging_hooks();
        let mut params = WhisperContextParameters::default();
        params.use_gpu(false);
        let ctx = WhisperContext::new_with_params(path, params)
            .map_err(|e| err(format!("whisper.cpp could not load it: {e}")))?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "whisper".into());
        Ok(WhisperModel { ctx, name, path: path.to_path_buf(), opts, n_audio_ctx: hp.n_audio_ctx })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn options(&self) -> &WhisperOptions {
        &self.opts
    }
}

impl Model for WhisperModel {
    fn engine(&self) -> &'static str {
        "whisper.cpp"
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn decoder(&self) -> Result<Box<dyn Engine>, TranscribeError> {
        let state = self
            .ctx
            .create_state()
            .map_err(|e| TranscribeError::Engine(format!("whisper.cpp state for {}: {e}", self.name)))?;
        Ok(Box::new(WhisperEngine {
            state,
            opts: self.opts.clone(),
            eot: self.ctx.token_eot(),
            n_audio_ctx: self.n_audio_ctx,
        }))
    }
}

/// One thread's decoder.
struct WhisperEngine {
    state: WhisperState,
    opts: WhisperOptions,
    eot: i32,
    n_audio_ctx: i32,
}

impl Engine for WhisperEngine {
    fn transcribe(&mut self, samples: &[f32]) -> Result<Heard, TranscribeError> {
        if samples.len() < MIN_SAMPLES {
            return Ok(Heard { text: String::new(), confidence: None });
        }
        let padded;
        let audio = if self.opts.pad_secs > 0.0 {
            padded = pad_silence(samples, self.opts.pad_secs);
            &padded[..]
        } else {
            samples
        };
        let heard = self.decode(audio, self.opts.fit_audio_ctx)?;
        // A window cut to a short clip can still send the model round a loop
        // that `collapse_repeats` does not catch ("rear left rear left left
        // rear left left left ..."): more words than anyone says in the time.
        // Those few answers are decoded again with the whole window, which
        // does not loop (benches/transcribe/README.md).
        let secs = samples.len() as f32 / ENGINE_RATE as f32;
        if self.opts.fit_audio_ctx && too_many_words(&heard.text, secs) {
            return self.decode(audio, false);
        }
        Ok(heard)
    }
}

/// More than [`MAX_WORDS_PER_SEC`] words for `secs` of audio: a runaway
/// decoding, not speech. (The bench's 498 transcripts: every one above 4
/// words per second was a loop or an invention; no real one passed 3.82.)
pub fn too_many_words(text: &str, secs: f32) -> bool {
    text.split_whitespace().count() as f32 > MAX_WORDS_PER_SEC * secs.max(0.5)
}

/// See [`too_many_words`].
pub const MAX_WORDS_PER_SEC: f32 = 4.0;

impl WhisperEngine {
    /// One decoding of `audio` (already padded), with the encoder window cut
    /// to it when `fit`.
    fn decode(&mut self, audio: &[f32], fit: bool) -> Result<Heard, TranscribeError> {
        let strategy = match self.opts.beam {
            Some(width) => SamplingStrategy::BeamSearch { beam_size: width.max(1) as i32, patience: -1.0 },
            None => SamplingStrategy::Greedy { best_of: 1 },
        };
        let mut p = FullParams::new(strategy);
        p.set_n_threads(self.opts.threads.max(1) as i32);
        p.set_language(Some("en"));
        p.set_detect_language(false);
        p.set_translate(false);
        p.set_no_context(true);
        p.set_no_timestamps(true);
        p.set_single_segment(true);
        p.set_suppress_blank(true);
        p.set_suppress_nst(true);
        p.set_print_special(false);
        p.set_print_progress(false);
        p.set_print_realtime(false);
        p.set_print_timestamps(false);
        // Answers are seconds long; a runaway repetition loop is not.
        let secs = audio.len() as f32 / ENGINE_RATE as f32;
        p.set_max_tokens((8.0 + 6.0 * secs) as i32);
        if fit {
            p.set_audio_ctx(audio_ctx_for(audio.len(), self.n_audio_ctx));
        }
        self.state.full(p, audio).map_err(|e| TranscribeError::Engine(e.to_string()))?;

        let mut text = String::new();
        let (mut p_sum, mut p_n) = (0f64, 0usize);
        for segment in self.state.as_iter() {
            text.push_str(&segment.to_str_lossy().map_err(|e| TranscribeError::Engine(e.to_string()))?);
            for i in 0..segment.n_tokens() {
                if let Some(token) = segment.get_token(i) {
                    // Text tokens only: the specials (end of text, start of
                    // transcript, timestamps ...) all come after them.
                    if token.token_id() < self.eot {
                        p_sum += token.token_probability() as f64;
                        p_n += 1;
                    }
                }
            }
        }
        let mut text = collapse_repeats(text.trim());
        if !text.chars().any(char::is_alphanumeric) {
            text.clear(); // "." or "...": nothing was heard
        }
        let confidence = (p_n > 0).then(|| (p_sum / p_n as f64).clamp(0.0, 1.0) as f32);
        Ok(Heard { text, confidence })
    }
}

/// Whisper's commonest failure on a short clip whose window was cut to
/// fit: it says the answer, then says it again until its token budget runs
/// out ("Maria Thompson, Maria Thompson, Maria Thompson, ..."). When the
/// whole text is one run of words said over (twice or more, the last time
/// possibly cut short), keep the first saying.
pub fn collapse_repeats(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let norm: Vec<String> = words
        .iter()
        .map(|w| w.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect())
        .collect();
    let n = words.len();
    for period in 1..=n / 2 {
        // The budget may cut the last word short: a prefix of its match.
        let same = |i: usize| norm[i] == norm[i % period] || (i == n - 1 && norm[i % period].starts_with(&norm[i]));
        if (period..n).all(same) {
            let kept = words[..period].join(" ");
            return kept.trim_end_matches([',', ';', ':']).to_string();
        }
    }
    text.to_string()
}

/// What [`check_ggml`] read from a model's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlHparams {
    pub n_vocab: i32,
    pub n_audio_ctx: i32,
    pub n_audio_state: i32,
    pub n_audio_head: i32,
    pub n_audio_layer: i32,
    pub n_text_ctx: i32,
    pub n_text_state: i32,
    pub n_text_head: i32,
    pub n_text_layer: i32,
    pub n_mels: i32,
    pub ftype: i32,
}

const GGML_MAGIC: u32 = 0x6767_6d6c;

/// Check that `path` is a whole ggml Whisper model before whisper.cpp reads
/// it: the magic, sane hyperparameters, the mel filters and vocabulary
/// within the file, every tensor's header and data within the file, as
/// many tensors as a Whisper model of these dimensions has, and nothing
/// after the last one.
pub fn check_ggml(path: &Path) -> Result<GgmlHparams, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut r = BufReader::new(file);
    let truncated = |what: &str| format!("truncated or corrupt ggml file ({what} runs past the end, {len} bytes)");
    let mut pos: u64 = 0;
    let read_i32 = |r: &mut BufReader<std::fs::File>, pos: &mut u64, what: &str| -> Result<i32, String> {
        let mut b = [0u8; 4];
        r.read_exact(&mut b).map_err(|_| truncated(what))?;
        *pos += 4;
        Ok(i32::from_le_bytes(b))
    };
    let skip = |r: &mut BufReader<std::fs::File>, pos: &mut u64, n: u64, what: &str| -> Result<(), String> {
        if pos.checked_add(n).is_none_or(|end| end > len) {
            return Err(truncated(what));
        }
        r.seek_relative(n as i64).map_err(|e| e.to_string())?;
        *pos += n;
        Ok(())
    };

    if len < 4 {
        return Err(format!("not a ggml Whisper model (only {len} bytes)"));
    }
    let magic = read_i32(&mut r, &mut pos, "the magic")? as u32;
    if magic != GGML_MAGIC {
        let hint =
            if &magic.to_le_bytes() == b"GGUF" { " (a GGUF file: whisper.cpp wants the ggml format)" } else { "" };
        return Err(format!("not a ggml Whisper model: magic {magic:#010x}, want {GGML_MAGIC:#010x}{hint}"));
    }
    let mut h = [0i32; 11];
    for v in h.iter_mut() {
        *v = read_i32(&mut r, &mut pos, "the header")?;
    }
    let hp = GgmlHparams {
        n_vocab: h[0],
        n_audio_ctx: h[1],
        n_audio_state: h[2],
        n_audio_head: h[3],
        n_audio_layer: h[4],
        n_text_ctx: h[5],
        n_text_state: h[6],
        n_text_head: h[7],
        n_text_layer: h[8],
        n_mels: h[9],
        ftype: h[10],
    };
    let sane = |v: i32, max: i32| v >= 1 && v <= max;
    if !(sane(hp.n_vocab, 1 << 20)
        && sane(hp.n_audio_ctx, 1 << 16)
        && sane(hp.n_audio_state, 1 << 16)
        && sane(hp.n_audio_head, 1 << 10)
        && sane(hp.n_audio_layer, 1 << 10)
        && sane(hp.n_text_ctx, 1 << 16)
        && sane(hp.n_text_state, 1 << 16)
        && sane(hp.n_text_head, 1 << 10)
        && sane(hp.n_text_layer, 1 << 10)
        && sane(hp.n_mels, 1024)
        && hp.ftype >= 0)
    {
        return Err(format!("corrupt ggml Whisper header: {hp:?}"));
    }
    let n_mel = read_i32(&mut r, &mut pos, "the mel filters")?;
    let n_fft = read_i32(&mut r, &mut pos, "the mel filters")?;
    if !(0..=1024).contains(&n_mel) || !(0..=4096).contains(&n_fft) {
        return Err(format!("corrupt ggml Whisper mel filters: {n_mel} x {n_fft}"));
    }
    skip(&mut r, &mut pos, 4 * n_mel as u64 * n_fft as u64, "the mel filters")?;
    let n_words = read_i32(&mut r, &mut pos, "the vocabulary")?;
    if !(0..=hp.n_vocab).contains(&n_words) {
        return Err(format!("corrupt ggml Whisper vocabulary: {n_words} tokens for n_vocab {}", hp.n_vocab));
    }
    for _ in 0..n_words {
        let n = read_i32(&mut r, &mut pos, "the vocabulary")?;
        if !(0..=4096).contains(&n) {
            return Err(format!("corrupt ggml Whisper vocabulary: a token of {n} bytes"));
        }
        skip(&mut r, &mut pos, n as u64, "the vocabulary")?;
    }
    let mut tensors = 0usize;
    while pos < len {
        let n_dims = read_i32(&mut r, &mut pos, "a tensor header")?;
        let name_len = read_i32(&mut r, &mut pos, "a tensor header")?;
        let ttype = read_i32(&mut r, &mut pos, "a tensor header")?;
        if !(1..=4).contains(&n_dims) || !(1..=512).contains(&name_len) {
            return Err(format!("corrupt ggml tensor header #{tensors} at byte {}", pos - 12));
        }
        let mut elems: u64 = 1;
        let mut ne0: u64 = 1;
        for d in 0..n_dims {
            let n = read_i32(&mut r, &mut pos, "a tensor header")?;
            if n < 1 {
                return Err(format!("corrupt ggml tensor header #{tensors}: dimension {n}"));
            }
            if d == 0 {
                ne0 = n as u64;
            }
            elems = elems.checked_mul(n as u64).ok_or_else(|| truncated("a tensor's size"))?;
        }
        skip(&mut r, &mut pos, name_len as u64, "a tensor name")?;
        // (block elements, block bytes) of ggml's types.
        let (block, bytes) = match ttype {
            0 => (1, 4),   // f32
            1 => (1, 2),   // f16
            2 => (32, 18), // q4_0
            3 => (32, 20), // q4_1
            6 => (32, 22), // q5_0
            7 => (32, 24), // q5_1
            8 => (32, 34), // q8_0
            other => return Err(format!("ggml tensor #{tensors} has type {other}, which this check does not know")),
        };
        if !ne0.is_multiple_of(block) {
            return Err(format!("corrupt ggml tensor #{tensors}: row of {ne0} in blocks of {block}"));
        }
        let data = (elems / block).checked_mul(bytes).ok_or_else(|| truncated("a tensor's size"))?;
        skip(&mut r, &mut pos, data, "a tensor's data")?;
        tensors += 1;
    }
    let want = 7 + 15 * hp.n_audio_layer as usize + 4 + 24 * hp.n_text_layer as usize;
    if tensors != want {
        return Err(format!(
            "incomplete ggml Whisper model: {tensors} tensors, a model of {} + {} layers has {want}",
            hp.n_audio_layer, hp.n_text_layer
        ));
    }
    Ok(hp)
}

/// Read a model path from the environment for the tests that need one.
#[cfg(test)]
pub(crate) fn test_model() -> Option<PathBuf> {
    match std::env::var_os("BACKSTOP_TEST_MODEL") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("CI").is_some() => panic!(
            "BACKSTOP_TEST_MODEL is not set and CI is: the whisper tests need a model \
             (BACKSTOP_TEST_MODEL=$(scripts/get-model.sh tiny.en | tail -n1))"
        ),
        None => {
            eprintln!(
                "skipped: set BACKSTOP_TEST_MODEL (scripts/get-model.sh tiny.en prints a path) to run the whisper tests"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcribe::audio::{read_recording, to_engine_rate};

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/speech").join(name)
    }

    fn hear(engine: &mut Box<dyn Engine>, wav: &Path) -> Heard {
        let pcm = read_recording(wav).unwrap();
        engine.transcribe(&to_engine_rate(&pcm)).unwrap()
    }

    #[test]
    fn a_loop_is_told_from_speech_by_its_words_per_second() {
        // The loop the bench caught on a 1.3 s real recording.
        assert!(too_many_words("rear left rear left left rear left left left rear left", 1.3));
        assert!(!too_many_words("Front left.", 1.3));
        assert!(!too_many_words("The water heater is leaking all over the basement floor.", 3.7));
        // A very short clip is judged as half a second at least.
        assert!(!too_many_words("Yes", 0.1));
    }

    #[test]
    fn repeats_collapse_to_one_saying() {
        assert_eq!(collapse_repeats("Maria Thompson, Maria Thompson, Maria Thompson, Maria"), "Maria Thompson");
        assert_eq!(collapse_repeats("Michael Roblion. Michael Roblion. Michael Roblion."), "Michael Roblion.");
        assert_eq!(collapse_repeats("no no no"), "no");
        assert_eq!(collapse_repeats("Farir-Rejantan. Farir-Rejant"), "Farir-Rejantan.");
        assert_eq!(collapse_repeats("The pipe burst under the sink."), "The pipe burst under the sink.");
        assert_eq!(collapse_repeats("the sink the"), "the sink the");
        assert_eq!(collapse_repeats(""), "");
    }

    #[test]
    fn audio_ctx_fits_the_input() {
        assert_eq!(audio_ctx_for(0, 1500), AUDIO_CTX_FLOOR);
        assert_eq!(audio_ctx_for(16000 * 4, 1500), 200 + AUDIO_CTX_MARGIN);
        assert_eq!(audio_ctx_for(16000 * 60, 1500), 1500);
    }

    #[test]
    fn the_speech_fixtures_are_heard() {
        let Some(model_path) = test_model() else { return };
        let model = WhisperModel::load(&model_path, WhisperOptions::default()).unwrap();
        assert_eq!(model.engine(), "whisper.cpp");
        assert_eq!(model.name(), model_path.file_stem().unwrap().to_str().unwrap());
        let mut engine = model.decoder().unwrap();
        let need = hear(&mut engine, &fixture("need.wav"));
        let lower = need.text.to_lowercase();
        eprintln!("need.wav: {need:?}");
        // "The water heater is leaking all over the basement floor":
        // tiny.en hears "... Walker Peter is leaking, all over the
        // maintenance floor".
        assert!(lower.contains("leaking") && lower.contains("floor"), "need.wav heard as {:?}", need.text);
        let c = need.confidence.expect("a confidence");
        assert!((0.0..=1.0).contains(&c) && c > 0.3, "confidence {c}");
        // "Jordan Alvarez" in a synthetic voice at 8 kHz: tiny.en does not
        // get it ("Lord of Alberman" greedy, nothing with the defaults);
        // what is checked is that a 0.9 s clip does not run away into a
        // repetition loop.
        let name = hear(&mut engine, &fixture("name.wav"));
        eprintln!("name.wav: {name:?}");
        let words = name.text.split_whitespace().count();
        assert!(words <= 6, "name.wav heard as {:?}", name.text);
        let second = hear(&mut engine, &fixture("need_second.wav"));
        eprintln!("need_second.wav: {second:?}");
        let lower = second.text.to_lowercase();
        assert!(lower.contains("all over") && lower.contains("floor"), "need_second.wav heard as {:?}", second.text);
    }

    #[test]
    fn empty_and_very_short_audio_give_empty_text() {
        let Some(model_path) = test_model() else { return };
        let model = WhisperModel::load(&model_path, WhisperOptions::default()).unwrap();
        let mut engine = model.decoder().unwrap();
        for n in [0usize, 1, 800, 1599] {
            let heard = engine.transcribe(&vec![0.0; n]).unwrap();
            assert_eq!(heard, Heard { text: String::new(), confidence: None }, "{n} samples");
        }
        // Just over the minimum, and silence: whatever it says, it says it without failing.
        engine.transcribe(&vec![0.0; 1600]).unwrap();
        engine.transcribe(&vec![0.0; 16000]).unwrap();
    }

    #[test]
    fn bad_model_files_are_model_errors() {
        let dir = std::env::temp_dir().join(format!("backstop-whisper-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let is_model_err = |p: &Path, what: &str| match WhisperModel::load(p, WhisperOptions::default()) {
            Err(e @ TranscribeError::Model { .. }) => {
                assert!(e.to_string().contains(&p.display().to_string()), "{what}: {e}");
                eprintln!("{what}: {e}");
            }
            Err(e) => panic!("{what}: {e}"),
            Ok(_) => panic!("{what}: loaded"),
        };
        is_model_err(&dir.join("missing.bin"), "missing");
        std::fs::write(dir.join("empty.bin"), b"").unwrap();
        is_model_err(&dir.join("empty.bin"), "empty");
        std::fs::write(dir.join("text.bin"), b"this is not a model, it is a text file\n").unwrap();
        is_model_err(&dir.join("text.bin"), "text");
        let mut gguf = b"GGUF".to_vec();
        gguf.extend([0u8; 100]);
        std::fs::write(dir.join("gguf.bin"), gguf).unwrap();
        is_model_err(&dir.join("gguf.bin"), "gguf");
        // A header that claims absurd sizes.
        let mut bad = GGML_MAGIC.to_le_bytes().to_vec();
        for v in [51864i32, 1500, 384, 6, 4, 448, 384, 6, 4, 80, 1, 80, 201] {
            bad.extend(v.to_le_bytes());
        }
        bad.extend([0u8; 64]);
        std::fs::write(dir.join("short.bin"), &bad).unwrap();
        is_model_err(&dir.join("short.bin"), "header only");
        // Whole sections up to a tensor whose dimensions multiply past u64: refused, no overflow.
        let mut huge = GGML_MAGIC.to_le_bytes().to_vec();
        for v in [51864i32, 1500, 384, 6, 4, 448, 384, 6, 4, 80, 1, 80, 201] {
            huge.extend(v.to_le_bytes());
        }
        huge.extend(vec![0u8; 80 * 201 * 4]);
        huge.extend(1i32.to_le_bytes());
        huge.extend(1i32.to_le_bytes());
        huge.push(b'a');
        for v in [4i32, 5, 0, i32::MAX, i32::MAX, i32::MAX, i32::MAX] {
            huge.extend(v.to_le_bytes());
        }
        huge.extend(b"x.abc");
        huge.extend([0u8; 64]);
        std::fs::write(dir.join("huge.bin"), &huge).unwrap();
        is_model_err(&dir.join("huge.bin"), "dimensions past u64");

        if let Some(model_path) = test_model() {
            let whole = std::fs::read(&model_path).unwrap();
            for (what, bytes) in [
                ("truncated at 90%", &whole[..whole.len() * 9 / 10]),
                ("truncated by one byte", &whole[..whole.len() - 1]),
                ("truncated in the vocabulary", &whole[..100_000]),
            ] {
                let p = dir.join("cut.bin");
                std::fs::write(&p, bytes).unwrap();
                is_model_err(&p, what);
            }
            let mut longer = whole.clone();
            longer.extend([0u8; 7]);
            std::fs::write(dir.join("long.bin"), &longer).unwrap();
            is_model_err(&dir.join("long.bin"), "trailing bytes");
            // Garbage in a tensor header's dimensions.
            let mut scrambled = whole;
            let at = scrambled.len() / 2;
            let hp = check_ggml(&model_path).unwrap();
            assert_eq!(hp.n_mels, 80);
            for b in &mut scrambled[at..at + 4096] {
                *b = 0xff;
            }
            // Data bytes may be hit rather than a header: then it loads
            // (ggml cannot tell), which is fine; it must not crash.
            std::fs::write(dir.join("scrambled.bin"), &scrambled).unwrap();
            let _ = WhisperModel::load(&dir.join("scrambled.bin"), WhisperOptions::default());
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The converted model against real recorded speech at 16 kHz:
    /// whisper.cpp's samples/jfk.wav (not in this repository; set
    /// `BACKSTOP_JFK_WAV`).
    #[test]
    #[ignore]
    fn jfk() {
        let Some(model_path) = test_model() else { return };
        let Some(jfk) = std::env::var_os("BACKSTOP_JFK_WAV") else { panic!("set BACKSTOP_JFK_WAV") };
        let mut r = hound::WavReader::open(&jfk).unwrap();
        assert_eq!(r.spec().sample_rate, ENGINE_RATE);
        let samples: Vec<f32> = r.samples::<i16>().map(|s| s.unwrap() as f32 / 32768.0).collect();
        let model =
            WhisperModel::load(&model_path, WhisperOptions { fit_audio_ctx: false, ..Default::default() }).unwrap();
        let heard = model.decoder().unwrap().transcribe(&samples).unwrap();
        eprintln!("jfk.wav: {heard:?}");
        let t = heard.text.to_lowercase();
        assert!(t.contains("ask not what your country can do for you"), "{}", heard.text);
    }

    /// CPU seconds used by this process so far.
    fn cpu_secs() -> f64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid out-pointer for clock_gettime.
        unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    }

    /// Speed and word error rate with each setting (for the table in
    /// [`WhisperOptions`]' doc). Run with `--ignored --nocapture
    /// --test-threads=1`. Clips: the speech fixtures; `BACKSTOP_JFK_WAV`
    /// adds whisper.cpp's samples/jfk.wav taken to 8 kHz μ-law;
    /// `BACKSTOP_MEASURE_DIR` adds every `X.wav` there that has its
    /// transcript in `X.txt`.
    #[test]
    #[ignore]
    fn measure() {
        use crate::transcribe::wer::{Wer, wer};
        let Some(model_path) = test_model() else { return };
        let mut clips: Vec<(String, String, Vec<f32>)> = Vec::new();
        for (f, said) in
            [("name.wav", "Jordan Alvarez"), ("need.wav", "The water heater is leaking all over the basement floor")]
        {
            clips.push((f.into(), said.into(), to_engine_rate(&read_recording(&fixture(f)).unwrap())));
        }
        if let Some(jfk) = std::env::var_os("BACKSTOP_JFK_WAV") {
            use backstop_core::media::g711::Law;
            let pcm: Vec<i16> = read_recording(Path::new(&jfk))
                .unwrap()
                .iter()
                .map(|s| Law::Pcmu.decode(Law::Pcmu.encode(*s)))
                .collect();
            let said = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";
            clips.push(("jfk".into(), said.into(), to_engine_rate(&pcm)));
        }
        if let Some(dir) = std::env::var_os("BACKSTOP_MEASURE_DIR") {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
            paths.sort();
            for p in paths.into_iter().filter(|p| p.extension().is_some_and(|e| e == "wav")) {
                if let Ok(said) = std::fs::read_to_string(p.with_extension("txt")) {
                    let name = p.file_name().unwrap().to_string_lossy().into_owned();
                    clips.push((name, said.trim().into(), to_engine_rate(&read_recording(&p).unwrap())));
                }
            }
        }
        let total_audio: f64 = clips.iter().map(|(_, _, c)| c.len() as f64 / ENGINE_RATE as f64).sum();
        eprintln!();
        eprintln!("{} clips, {total_audio:.1} s of audio", clips.len());
        let only = std::env::var("BACKSTOP_MEASURE_ONLY").ok();
        let settings = [
            ("30 s window, greedy", WhisperOptions { fit_audio_ctx: false, ..Default::default() }),
            ("fit, greedy", WhisperOptions::default()),
            ("fit, greedy, pad 0.5 s", WhisperOptions { pad_secs: 0.5, ..Default::default() }),
            ("fit, greedy, pad 1 s", WhisperOptions { pad_secs: 1.0, ..Default::default() }),
            (
                "30 s window, greedy, pad 1 s",
                WhisperOptions { fit_audio_ctx: false, pad_secs: 1.0, ..Default::default() },
            ),
            ("fit, beam 5", WhisperOptions { beam: Some(5), ..Default::default() }),
            ("30 s window, beam 5", WhisperOptions { fit_audio_ctx: false, beam: Some(5), ..Default::default() }),
        ];
        for (label, opts) in settings {
            if only.as_deref().is_some_and(|o| !label.contains(o)) {
                continue;
            }
            let model = WhisperModel::load(&model_path, opts).unwrap();
            let mut engine = model.decoder().unwrap();
            engine.transcribe(&clips[0].2).unwrap(); // warm up
            let mut cpu = 0.0;
            let mut total = Wer::default();
            let mut texts = Vec::new();
            for (name, said, clip) in &clips {
                let t0 = cpu_secs();
                let heard = engine.transcribe(clip).unwrap();
                cpu += cpu_secs() - t0;
                let w = wer(said, &heard.text);
                total += w;
                texts.push(format!(
                    "{name}: {:?} ({:.2}, wer {:.0}%)",
                    heard.text,
                    heard.confidence.unwrap_or(0.0),
                    100.0 * w.rate()
                ));
            }
            eprintln!("| {label} | {:.2} | {:.1} % |", cpu / total_audio, 100.0 * total.rate());
            if std::env::var_os("BACKSTOP_MEASURE_VERBOSE").is_some() {
                for t in texts {
                    eprintln!("    {t}");
                }
            }
        }
    }
}
