//! Transcripts of the spoken answers, off the media path: each voice
//! answer's recording is queued in the outbox database when it is written,
//! decoded by a small pool of low-priority threads, and joined to its lead,
//! which waits for them up to `[transcribe] wait_secs`.

pub mod audio;
pub mod engine;
pub mod queue;
pub mod service;
pub mod wer;
#[cfg(feature = "whisper")]
pub mod whisper;

use crate::config::{EngineKind, TranscribeConfig};
use engine::{Model, TranscribeError};
use std::sync::Arc;

/// Load the configured model: what `backstop check` and `run` do before
/// anything else, so that a missing or corrupt model is a clear error.
pub fn load_model(cfg: &TranscribeConfig) -> Result<Arc<dyn Model>, TranscribeError> {
    match cfg.engine {
        #[cfg(feature = "whisper")]
        EngineKind::Whisper => {
            let opts = whisper::WhisperOptions { fit_audio_ctx: cfg.fit_audio_ctx, ..Default::default() };
            Ok(Arc::new(whisper::WhisperModel::load(&cfg.model, opts)?))
        }
        #[cfg(not(feature = "whisper"))]
        EngineKind::Whisper => {
            if !cfg.model.is_file() {
                return Err(TranscribeError::Model { path: cfg.model.clone(), reason: "no such file".into() });
            }
            Err(TranscribeError::NotBuilt(cfg.engine.as_str()))
        }
    }
}
