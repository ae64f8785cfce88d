//! `[callback]`: the callback clock: how soon a lead is due to be called
//! back, and the `lead.callback_overdue` reminders.
//!
//! Minutes may be fractional (`0.5` is 30 s). A lead that comes in while its
//! line is open (or on a line without `[schedule]`) is due
//! `due_minutes_open` after it came in; one that comes in while the line is
//! closed is due `due_minutes_closed` after the line next opens. At its due
//! time an unhandled lead gets one `lead.callback_overdue`, then one every
//! `repeat_minutes`, `max_reminders` more at most.

use serde::Deserialize;
use std::time::Duration;

/// The longest due time or repeat interval: a week.
const MAX_MINUTES: f64 = 7.0 * 24.0 * 60.0;

/// The most repeated reminders.
const MAX_REMINDERS: u32 = 100;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CallbackConfig {
    /// Minutes after a lead that came in during open hours.
    pub due_minutes_open: f64,
    /// Minutes after the next opening, for a lead that came in while the
    /// line was closed (`None`: the same as `due_minutes_open`).
    pub due_minutes_closed: Option<f64>,
    /// Remind again this often while the lead is not handled (`None`: once).
    pub repeat_minutes: Option<f64>,
    /// Reminders after the first, at most (with `repeat_minutes`).
    pub max_reminders: u32,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        CallbackConfig { due_minutes_open: 15.0, due_minutes_closed: None, repeat_minutes: None, max_reminders: 0 }
    }
}

fn minutes(m: f64) -> Duration {
    Duration::try_from_secs_f64(m * 60.0).unwrap_or(Duration::from_secs(15 * 60))
}

impl CallbackConfig {
    /// The clock's policy, for the core (`backstop_core::callback`).
    pub fn policy(&self) -> backstop_core::callback::CallbackPolicy {
        backstop_core::callback::CallbackPolicy {
            due_open: minutes(self.due_minutes_open),
            due_closed: minutes(self.due_minutes_closed.unwrap_or(self.due_minutes_open)),
            repeat_every: self.repeat_minutes.map(minutes),
            max_reminders: if self.repeat_minutes.is_some() { self.max_reminders } else { 0 },
        }
    }

    /// Problems that span keys, as `(key, message)`.
    pub(super) fn problems(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut check = |key: &str, m: f64| {
            if !(m.is_finite() && m > 0.0 && m <= MAX_MINUTES) {
                p.push((format!("callback.{key}"), format!("must be more than 0 and at most {MAX_MINUTES} (a week)")));
            }
        };
        check("due_minutes_open", self.due_minutes_open);
        if let Some(m) = self.due_minutes_closed {
            check("due_minutes_closed", m);
        }
        if let Some(m) = self.repeat_minutes {
            check("repeat_minutes", m);
        }
        if self.max_reminders > MAX_REMINDERS {
            p.push(("callback.max_reminders".into(), format!("at most {MAX_REMINDERS}")));
        }
        match (self.repeat_minutes, self.max_reminders) {
            (Some(_), 0) => p.push((
                "callback.max_reminders".into(),
                "is 0, so repeat_minutes sends nothing: set how many reminders may follow the first".into(),
            )),
            (None, n) if n > 0 => {
                p.push(("callback.max_reminders".into(), "needs repeat_minutes: how long between the reminders".into()))
            }
            _ => {}
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn keys(toml: &str) -> Vec<String> {
        let cfg: CallbackConfig = toml::from_str(toml).unwrap();
        cfg.problems().into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn defaults_are_fifteen_minutes_and_one_reminder() {
        let p = CallbackConfig::default().policy();
        assert_eq!(p.due_open, Duration::from_secs(900));
        assert_eq!(p.due_closed, Duration::from_secs(900));
        assert_eq!((p.repeat_every, p.max_reminders), (None, 0));
        assert!(CallbackConfig::default().problems().is_empty());
    }

    #[test]
    fn fractional_minutes_and_repeats_map_to_the_policy() {
        let cfg: CallbackConfig =
            toml::from_str("due_minutes_open = 0.05\ndue_minutes_closed = 30\nrepeat_minutes = 10\nmax_reminders = 2")
                .unwrap();
        assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
        let p = cfg.policy();
        assert_eq!(p.due_open, Duration::from_secs(3));
        assert_eq!(p.due_closed, Duration::from_secs(1800));
        assert_eq!((p.repeat_every, p.max_reminders), (Some(Duration::from_secs(600)), 2));
    }

    #[test]
    fn bad_values_are_named_by_key() {
        assert_eq!(keys("due_minutes_open = 0"), ["callback.due_minutes_open"]);
        assert_eq!(keys("due_minutes_open = -1"), ["callback.due_minutes_open"]);
        assert_eq!(keys("due_minutes_open = nan"), ["callback.due_minutes_open"]);
        assert_eq!(keys("due_minutes_closed = 20000"), ["callback.due_minutes_closed"]);
        assert_eq!(keys("repeat_minutes = 0\nmax_reminders = 1"), ["callback.repeat_minutes"]);
        assert_eq!(keys("repeat_minutes = 5"), ["callback.max_reminders"]);
        assert_eq!(keys("max_reminders = 3"), ["callback.max_reminders"]);
        assert_eq!(keys("repeat_minutes = 5\nmax_reminders = 101"), ["callback.max_reminders"]);
        assert!(toml::from_str::<CallbackConfig>("due_minutes = 5").is_err(), "unknown keys are refused");
    }

    #[test]
    fn a_config_file_with_a_bad_callback_is_refused() {
        let errors = Config::parse("[callback]\ndue_minutes_open = 0\n", None).unwrap_err();
        assert!(errors.iter().any(|e| e.to_string().contains("callback.due_minutes_open")), "{errors:?}");
        let cfg = Config::parse("[callback]\ndue_minutes_open = 0.05\n", None).unwrap();
        assert_eq!(cfg.callback.policy().due_open, Duration::from_secs(3));
    }
}
