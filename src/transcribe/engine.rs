//! What a speech-to-text engine is to the rest of Backstop: 16 kHz mono
//! samples in, text out, on the thread that calls it. The worker pool
//! (`transcribe::service`) owns one [`Engine`] per thread, made from one
//! shared [`Model`], so weights are loaded once however many threads run.

use std::path::PathBuf;

/// The sample rate every engine takes. Recordings are 8 kHz G.711;
/// `transcribe::audio` brings them up to this.
pub const ENGINE_RATE: u32 = 16_000;

/// What an engine heard in one answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Heard {
    pub text: String,
    /// 0..1, when the engine gives one (whisper.cpp: the mean token probability).
    pub confidence: Option<f32>,
}

/// Why a model could not be loaded, or audio not transcribed.
#[derive(Debug, thiserror::Error)]
pub enum TranscribeError {
    #[error("model {path}: {reason}")]
    Model { path: PathBuf, reason: String },
    #[error("this build has no {0:?} engine: build with `--features whisper`")]
    NotBuilt(&'static str),
    #[error("recording {path}: {reason}")]
    Audio { path: PathBuf, reason: String },
    #[error("transcription failed: {0}")]
    Engine(String),
}

/// Loaded weights, shared by the worker threads.
pub trait Model: Send + Sync {
    /// The engine's name as the lead gives it (`whisper.cpp`).
    fn engine(&self) -> &'static str;
    /// The model's name as the lead gives it (the file's stem: `ggml-tiny.en`).
    fn name(&self) -> &str;
    /// A decoder for one thread.
    fn decoder(&self) -> Result<Box<dyn Engine>, TranscribeError>;
}

/// One thread's decoder.
pub trait Engine: Send {
    /// `samples`: mono, [`ENGINE_RATE`], in [-1, 1].
    fn transcribe(&mut self, samples: &[f32]) -> Result<Heard, TranscribeError>;
}
