//! Media: G.711 companding, prompt loading, and the per-call RTP session.
pub mod dtmf;
pub mod g711;
pub mod prompt;
pub mod recorder;
pub mod rtp;
pub mod vad;
