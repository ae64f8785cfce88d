//! Backstop's Sans-IO cores. Nothing here reads the clock, touches a socket
//! or a file, spawns, or logs: time and bytes come in through
//! `handle_*(now, ..)`, and what should happen goes out through `poll_*()`
//! as values (messages to send, timeouts, events for the runtime to log or
//! commit). So a test drives a whole call, faster than real time, with no
//! runtime at all; the `backstop` crate is the tokio driver around them.
//!
//! * [`sip`]: message framing, validation and building, the top Via, SDP,
//!   the UAS dialog, registration with digest auth, the guard and admission
//!   policy for what arrives.
//! * [`media`]: G.711, RTP sessions, DTMF (RFC 4733, INFO, in-band), voice
//!   activity detection, the prompt decoder and the recording encoder.
//! * [`intake`]: the script a call follows and the lead it produces.
//! * [`call`]: one call, the dialog, media and script wired together.
//! * [`route`]: lines, business hours and junk rules.
//! * [`callback`]: when a lead is due to be called back, and its reminders.
//! * [`backoff`]: the wait before retrying, for registration and delivery.
//! * [`probe`]: the test call (`backstop test-call`), a UAC that places one call and checks it.

pub mod backoff;
pub mod call;
pub mod callback;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod intake;
pub mod media;
pub mod probe;
pub mod route;
pub mod sip;
pub mod textback;

/// Our User-Agent / Server header value.
pub const USER_AGENT: &str = concat!("Backstop/", env!("CARGO_PKG_VERSION"));
