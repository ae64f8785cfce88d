//! One answer of the intake script, as the lead carries it under
//! `answers.<step>`: what kind of step asked ([`AnswerKind`]), how it went
//! ([`AnswerStatus`]) and what came. The script fills them in
//! (`intake::script`, which re-exports them); the lead, `backstop inspect`
//! and the webhooks read them. The wire names are serde's; `as_str` spells
//! the same, and a test holds the two together.

use crate::intake::transcript::Transcript;
use serde::{Deserialize, Serialize};

/// What kind of step asked: `voice` (ask), `digits` or `menu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerKind {
    Voice,
    Digits,
    Menu,
}

/// How the question went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerStatus {
    Answered,
    /// Nothing came, after the last retry.
    NoInput,
    /// Something came but did not fit, after the last retry.
    Invalid,
    /// The caller hung up mid-answer: what was said or keyed so far.
    Partial,
}

impl AnswerStatus {
    /// As in the lead: `answered`, `no_input`, `invalid`, `partial`.
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerStatus::Answered => "answered",
            AnswerStatus::NoInput => "no_input",
            AnswerStatus::Invalid => "invalid",
            AnswerStatus::Partial => "partial",
        }
    }
}

/// One answer, as it appears in the lead under `answers.<step>`. Fields in
/// alphabetical order, as on the wire (see `intake::lead`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// How many times the question was asked.
    pub attempts: u32,
    /// digits: the caller chose "the number I am calling from".
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_caller_id: bool,
    pub kind: AnswerKind,
    /// menu: the chosen option's label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// voice: the WAV file, relative to the recordings directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
    /// voice: a signed, expiring link to the recording (`[http] public_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_url: Option<String>,
    /// voice: from the first to the last speech frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speech_ms: Option<u64>,
    pub status: AnswerStatus,
    /// voice: what the transcription engine heard in the recording, once it
    /// has (`[transcribe]`); absent while it waits in the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<Transcript>,
    /// The keys entered (digits, menu), or the caller's own number for the caller-ID option.
    pub value: Option<String>,
}

impl Answer {
    /// An answer with only the common fields set.
    pub(crate) fn new(kind: AnswerKind, status: AnswerStatus, value: Option<String>, attempts: u32) -> Answer {
        Answer {
            kind,
            status,
            value,
            label: None,
            from_caller_id: false,
            recording: None,
            recording_url: None,
            speech_ms: None,
            attempts,
            transcript: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_status_reads_back_what_it_writes() {
        use AnswerStatus::*;
        for status in [Answered, NoInput, Invalid, Partial] {
            // Exhaustive: a new status must be added to the list above, too.
            match status {
                Answered | NoInput | Invalid | Partial => {}
            }
            let json = serde_json::to_value(status).unwrap();
            assert_eq!(json, status.as_str());
            assert_eq!(serde_json::from_value::<AnswerStatus>(json).unwrap(), status);
        }
        assert!(serde_json::from_value::<AnswerStatus>("NoInput".into()).is_err());
    }

    #[test]
    fn answer_kind_reads_back_what_it_writes() {
        use AnswerKind::*;
        for (kind, name) in [(Voice, "voice"), (Digits, "digits"), (Menu, "menu")] {
            match kind {
                Voice | Digits | Menu => {}
            }
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, name);
            assert_eq!(serde_json::from_value::<AnswerKind>(json).unwrap(), kind);
        }
        assert!(serde_json::from_value::<AnswerKind>("Voice".into()).is_err());
    }
}
