//! The runtime: the tokio glue around the Sans-IO cores, one concern per
//! file, each small enough to read in one sitting.
//!
//! * [`agent`](Agent) binds SIP on UDP and TCP and runs the dispatch loop.
//!   Every message goes to the core's
//!   [`Admission`](backstop_core::sip::admission::Admission), which decides
//!   what becomes of it (limits, scanners, per-source rates, trust); the
//!   `dispatch` module carries the decision out: routes by Call-ID to a
//!   call or a registration, starts a call, sends a stateless answer, and
//!   logs. It alone owns the call table and the admission state, so no lock.
//! * `call_task`: one task per call owns its
//!   [`Call`](backstop_core::call::Call), its RTP socket and one timer,
//!   re-armed when the call's next deadline moves. Its events (`call.missed`,
//!   `lead.completed`) are committed to the outbox. Its RTP goes to the
//!   [`Pacer`](crate::pacer::Pacer) thread, which sends each packet at its
//!   instant; its packet clock starts in the least used millisecond of the
//!   20 ms frame (`phases`), so calls do not all wake together. Its RTP port
//!   comes from the configured range (`ports`).
//! * `registration`: one task per `[[register]]` account keeps it registered.
//! * No amplification: until a source is verified (it has acknowledged one
//!   of our answers, or cannot be spoofed), a stateless answer to it is the
//!   bare form and never bigger than its request, and a call's SIP output is
//!   capped by the bytes the caller sent (the admission's `Budget`).
//! * [`Shutdown`] in two steps: `Draining` refuses new calls (503) and lets
//!   calls run on; `Now` hangs them up. Then accounts unregister, while the
//!   dispatcher keeps routing their responses (bounded).

mod agent;
mod call_task;
mod dispatch;
mod live;
mod phases;
mod ports;
mod registration;
mod shutdown;
mod trim;

pub use agent::Agent;
pub use live::LiveLines;
pub use shutdown::Shutdown;
pub use trim::limit_arenas;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pacer::Pacer;
use crate::sink::delivery::Publisher;
use crate::sink::event::Event;
use crate::transcribe::service::Transcriber;
use phases::PhaseSlots;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// What every call and registration task reads, shared by all.
struct Shared {
    cfg: Config,
    /// What each line runs; a call takes the one its INVITE routes to, from
    /// the set current at its INVITE (a SIGHUP replaces the set).
    lines: Arc<LiveLines>,
    /// Counts what happens, for `/metrics`.
    metrics: Arc<Metrics>,
    events: Publisher,
    /// Queues voice answers and holds leads for their transcripts, when `[transcribe]` is on.
    transcriber: Option<Transcriber>,
    local_sip: SocketAddr,
    /// Which millisecond of the 20 ms frame each call sends in.
    phases: PhaseSlots,
    /// Puts every call's RTP on the wire at its instant.
    pacer: Pacer,
}

impl Shared {
    /// Commit an event to the outbox; if that fails (disk full), the event is
    /// logged whole so that it can still be recovered from the log.
    async fn publish(&self, event: Event) {
        let kind = event.kind.as_str();
        match self.events.publish(event).await {
            Ok(()) => tracing::debug!(kind, "event committed"),
            Err(e) => tracing::error!(kind, error = %e, "could not commit the event to the outbox"),
        }
    }

    fn rtp_ip(&self) -> IpAddr {
        self.local_sip.ip()
    }

    /// The address a peer can reach us at: `advertise`, the listen IP, or the
    /// local address the kernel routes to that peer from.
    fn local_ip_for(&self, peer: SocketAddr) -> IpAddr {
        if let Some(ip) = self.cfg.sip.advertise {
            return ip;
        }
        if !self.local_sip.ip().is_unspecified() {
            return self.local_sip.ip();
        }
        let probe = std::net::UdpSocket::bind(match peer {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => "[::]:0".parse().expect("literal"),
        });
        probe
            .and_then(|s| s.connect(peer).and_then(|_| s.local_addr()))
            .map(|a| a.ip())
            .unwrap_or(Ipv4Addr::LOCALHOST.into())
    }
}
