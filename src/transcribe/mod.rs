//! Transcripts of the spoken answers, off the media path: each voice
//! answer's recording is queued in the outbox database when it is written,
//! decoded by a small pool of low-priority threads, and joined to its lead,
//! which waits for them up to `[transcribe] wait_secs`.

pub mod audio;
pub mod engine;
#[cfg(feature = "whisper")]
pub mod whisper;
pub mod wer;
