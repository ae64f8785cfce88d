//! The events Backstop publishes about a call: `call.missed` the moment the
//! INVITE arrives (not for a junk caller), `call.transferred` when a
//! `transfer` step hands the caller over, and `lead.completed` when the call
//! ends, however it ends.
//! Each has a stable id, which is also the `webhook-id` on every delivery
//! attempt, so receivers can de-duplicate.
//!
//! The event carries the [`Lead`] itself, typed: the outbox stores the
//! event's JSON and reads it back as this same type (a restart closing a
//! cut-off call, the per-call ordering by `call_id`), so what goes on the wire
//! and what Backstop reads back are one contract. The lead's own module says
//! how its JSON stays stable.

use backstop_core::intake::lead::Lead;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "call.missed")]
    CallMissed,
    /// The lead changed after its `lead.completed`: transcripts came in
    /// after `[transcribe] wait_secs`. It carries the whole lead.
    #[serde(rename = "lead.updated")]
    LeadUpdated,
    #[serde(rename = "lead.completed")]
    LeadCompleted,
    /// A `transfer` step handed the caller to the on-call tech.
    #[serde(rename = "call.transferred")]
    CallTransferred,
    /// The lead was not handled by its `callback.due_at` (and again every
    /// `[callback] repeat_minutes`, up to `max_reminders`).
    #[serde(rename = "lead.callback_overdue")]
    LeadCallbackOverdue,
    /// The lead was handled: someone marked it called back (inbox, API,
    /// `backstop leads done`), or a transfer step handed the caller to the
    /// on-call tech (`handled_by = "transfer"`); with the time to callback.
    #[serde(rename = "lead.handled")]
    LeadHandled,
}

impl EventType {
    /// Every event Backstop publishes: what a sink takes unless it lists its own.
    pub const ALL: [EventType; 6] = [
        EventType::CallMissed,
        EventType::CallTransferred,
        EventType::LeadCompleted,
        EventType::LeadUpdated,
        EventType::LeadCallbackOverdue,
        EventType::LeadHandled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::CallMissed => "call.missed",
            EventType::LeadUpdated => "lead.updated",
            EventType::LeadCompleted => "lead.completed",
            EventType::CallTransferred => "call.transferred",
            EventType::LeadCallbackOverdue => "lead.callback_overdue",
            EventType::LeadHandled => "lead.handled",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub created_at: String,
    pub lead: Lead,
}

impl Event {
    pub fn new(kind: EventType, created_at: String, lead: &Lead) -> Event {
        Event { id: format!("evt_{}", uuid::Uuid::new_v4().simple()), kind, created_at, lead: lead.clone() }
    }

    /// An event whose id is made from `key` (and its kind and lead), so that
    /// publishing it again after a restart is the same event: the outbox
    /// keeps one (`Outbox::append`). The id has the same shape as a random one.
    pub fn keyed(kind: EventType, key: &str, created_at: String, lead: &Lead) -> Event {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("{}\n{}\n{key}", kind.as_str(), lead.id));
        let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        Event { id: format!("evt_{hex}"), kind, created_at, lead: lead.clone() }
    }

    pub fn call_id(&self) -> &str {
        &self.lead.call_id
    }

    /// The line the call was for: a sink may take only some lines' events.
    pub fn line(&self) -> &str {
        &self.lead.line
    }

    /// The event as a line of `events.jsonl`: its keys sorted, as that file
    /// has always written them (a webhook's body keeps the declared order).
    pub fn file_line(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("an event always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(serde_json::from_value::<EventType>(t.as_str().into()).unwrap(), t);
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        assert!(serde_json::from_value::<EventType>("lead.created".into()).is_err());
    }
}
