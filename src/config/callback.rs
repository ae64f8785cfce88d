//! `[callback]`: the callback clock: how soon a lead is due to be called
//! back, and the `lead.callback_overdue` reminders. (Stub: filled in with
//! the lead store.)

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CallbackConfig {
    /// Minutes after a lead that came in during open hours.
    pub due_minutes_open: f64,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        CallbackConfig { due_minutes_open: 15.0 }
    }
}

impl CallbackConfig {
    /// The clock's policy, for the core (`backstop_core::callback`).
    pub fn policy(&self) -> backstop_core::callback::CallbackPolicy {
        backstop_core::callback::CallbackPolicy {
            due_open: std::time::Duration::from_secs_f64(self.due_minutes_open * 60.0),
            ..Default::default()
        }
    }

    /// Problems that span keys, as `(key, message)`.
    pub(super) fn problems(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}
