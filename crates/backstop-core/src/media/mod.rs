//! Media, all as bytes and samples in and out (the runtime owns the
//! sockets and the files): G.711 companding (`g711`), one call's RTP
//! session (`rtp`), DTMF by RFC 4733, SIP INFO or in-band tones (`dtmf`),
//! voice activity detection (`vad`), the prompt decoder, which turns the
//! bytes of the files the runtime reads into ready-to-send frames
//! (`prompt`), and the recording encoder, which turns a call's audio into
//! the bytes of a WAV file for the runtime to write (`recorder`).
pub mod dtmf;
pub mod g711;
pub mod prompt;
pub mod recorder;
pub mod rtp;
pub mod vad;
