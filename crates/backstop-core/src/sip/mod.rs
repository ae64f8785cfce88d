//! SIP: framing and validation of messages, the top Via, SDP offer/answer,
//! the UAS dialog state machine, registration and the admission policy.
pub mod admission;
pub mod auth;
pub mod dialog;
pub mod guard;
pub mod message;
pub mod register;
pub mod sdp;
pub mod via;

use serde::{Deserialize, Serialize};

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

    /// A reliable transport: nothing is retransmitted over it.
    pub fn is_reliable(self) -> bool {
        self == Transport::Tcp
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.via_name())
    }
}
