//! The instant text-back: whether a missed call's caller gets a text
//! message, as the lead records it (`lead.text_back`). (Stub: the policy is
//! built with the text-back sink.)

use serde::{Deserialize, Serialize};

/// What became of the text-back for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextBackStatus {
    /// The provider accepted the message (`sid` is its id).
    Sent,
    /// No text was sent, by policy (`reason` says which rule).
    Skipped,
    /// The provider refused it, or it could not be reached until the event gave up.
    Failed,
}

/// The text-back as the lead carries it. Fields in alphabetical order, as on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextBack {
    /// Why it was skipped or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The provider's message id (Twilio `SM...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    pub status: TextBackStatus,
}
