//! The events Backstop publishes about a call: `call.missed` the moment the
//! INVITE arrives, and `lead.completed` when the call ends, however it ends.
//! Each has a stable id, which is also the `webhook-id` on every delivery
//! attempt, so receivers can de-duplicate.

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
    pub lead: serde_json::Value,
}

impl Event {
    pub fn new(kind: EventType, created_at: String, lead: &Lead) -> Event {
        Event {
            id: format!("evt_{}", uuid::Uuid::new_v4().simple()),
            kind,
            created_at,
            lead: serde_json::to_value(lead).expect("a lead always serialises"),
        }
    }

    pub fn call_id(&self) -> &str {
        self.lead["call_id"].as_str().unwrap_or("")
    }
}
