//! A voice answer as text: what the transcription engine heard in its
//! recording, as the lead carries it under `answers.<step>.transcript`.
//! The engines run in the runtime (`transcribe`); the core only carries
//! their result and reads it (`intake::summary`).

use serde::{Deserialize, Serialize};

/// One answer's transcript. Fields in alphabetical order, as on the wire (see `intake::lead`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// 0..1, when the engine gives one (whisper.cpp: the mean token probability).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    /// From the recording being queued to the transcript being ready: the
    /// queue's wait plus the decoding.
    pub delay_ms: u64,
    /// The engine that heard it (`whisper.cpp`).
    pub engine: String,
    /// The model it used (`ggml-tiny.en`).
    pub model: String,
    /// The decoding alone, wall time.
    pub ms: u64,
    pub text: String,
}
