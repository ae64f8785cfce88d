//! SIP: framing, validation and building of messages, the top Via, SDP
//! offer/answer, the UAS dialog state machine, registration with digest
//! auth, and the guard and admission policy for what arrives. What the
//! dialog and the registration share lives here: the transport, a message
//! to send, and the retransmission timer (`retransmit`).
pub mod admission;
pub mod auth;
pub mod dialog;
pub mod guard;
pub mod identity;
pub mod message;
pub mod refer;
pub mod register;
pub mod retransmit;
pub mod sdp;
#[cfg(test)]
pub(crate) mod testing;
pub mod via;

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The transport a request came over, and its answers and our in-dialog
/// requests go back on. Serialized as the lead's `transport`: `udp`, `tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// As written in a Via header: `UDP`, `TCP`.
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    /// A reliable transport: our requests and non-2xx responses are not
    /// resent over it (a 2xx still is, end to end: see `retransmit`).
    pub fn is_reliable(self) -> bool {
        self == Transport::Tcp
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.via_name())
    }
}

/// A SIP message to send: to `dest` on UDP, or on the call's connection on TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipTransmit {
    pub dest: SocketAddr,
    pub bytes: Vec<u8>,
}

/// An address as SIP writes it in a Via or a URI: `[v6]:port` for IPv6.
pub(crate) fn host_port(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}
