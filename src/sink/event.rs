//! The events Backstop publishes about a call: `call.missed` the moment the
//! INVITE arrives, and `lead.completed` when the call ends, however it ends.
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
    #[serde(rename = "lead.updated")]
    LeadUpdated,
    #[serde(rename = "lead.completed")]
    LeadCompleted,
}

impl EventType {
    pub const ALL: [EventType; 3] = [EventType::CallMissed, EventType::LeadUpdated, EventType::LeadCompleted];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::CallMissed => "call.missed",
            EventType::LeadUpdated => "lead.updated",
            EventType::LeadCompleted => "lead.completed",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
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

    pub fn call_id(&self) -> &str {
        &self.lead.call_id
    }
}
