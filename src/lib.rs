//! Backstop: a SIP overflow answering agent. A PBX or carrier forwards the
//! calls nobody picked up; Backstop answers, plays the business's prompts and
//! turns every call into a lead.
//!
//! This crate is the runtime around the Sans-IO cores of [`backstop_core`]
//! (SIP, media, the intake script, the call): the tokio edge ([`runtime`]:
//! the dispatch loop, the call and registration tasks, shutdown; and
//! [`transport`]), the [`pacer`] thread that puts every call's RTP on the
//! wire on time, the typed [`config`], and the [`sink`]s where leads and
//! events go.

pub mod cli;
pub mod cluster;
pub mod config;
#[cfg(feature = "fuzz")]
pub mod fuzz;
pub mod http;
pub mod media_files;
pub mod metrics;
pub mod pacer;
pub mod report;
pub mod runtime;
pub mod sink;
pub mod store;
pub mod testcall;
pub mod textback;
pub mod transcribe;
pub mod transport;

/// The agent as `main` names it: [`runtime::Agent`] and [`runtime::Shutdown`].
pub use runtime as agent;

pub use backstop_core::USER_AGENT;
