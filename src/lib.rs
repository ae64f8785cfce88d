//! Backstop: a SIP overflow answering agent. A PBX or carrier forwards the
//! calls nobody picked up; Backstop answers, plays the business's prompts and
//! turns every call into a lead.
//!
//! The protocol logic lives in Sans-IO cores driven by `handle_*(now, ..)`
//! and drained with `poll_*()`: [`sip::dialog`], [`media::rtp`],
//! [`intake::script`], composed per call in [`call`]. The tokio edge
//! (sockets, timers, files) is [`agent`], [`sip::transport`] and [`sink`];
//! [`pacer`] is the thread that puts every call's RTP on the wire on time.

pub mod agent;
pub mod call;
pub mod config;
pub mod fuzz;
pub mod intake;
pub mod media;
pub mod pacer;
pub mod sink;
pub mod sip;

/// Our User-Agent / Server header value.
pub const USER_AGENT: &str = concat!("Backstop/", env!("CARGO_PKG_VERSION"));
