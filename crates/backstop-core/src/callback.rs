//! The callback clock: when a lead should have been called back, and when
//! to say that it has not been. A lead that comes in while its line is open
//! is due `due_open` after it came in; one that comes in after hours or on
//! a holiday is due `due_closed` after the line next opens. When it is
//! overdue, the first reminder goes out at `due_at`, then one every
//! `repeat_every` up to `max_reminders` more. Plain functions of instants:
//! the runtime keeps each lead's `due_at` and the reminders sent in its
//! store, so the clock survives restarts, and asks here what comes next.
//! (Groundwork for the lead inbox's callback clock; the store and events
//! that use it are built with the inbox.)

use crate::route::schedule::{Schedule, ScheduleState};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// Where a lead stands in the inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadStatus {
    /// Not called back yet, and not yet due.
    New,
    /// Not called back, and past `due_at`.
    Overdue,
    /// Called back (or otherwise dealt with).
    Handled,
}

impl LeadStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LeadStatus::New => "new",
            LeadStatus::Overdue => "overdue",
            LeadStatus::Handled => "handled",
        }
    }
}

/// The callback clock as the lead carries it (`lead.callback`). Fields in
/// alphabetical order, as on the wire (see `intake::lead`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackState {
    /// When the caller should have been called back (RFC 3339).
    pub due_at: String,
    /// When someone marked the lead handled (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_at: Option<String>,
    /// Who: an inbox user, an API token's name, `cli`, or `transfer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_by: Option<String>,
    /// What they noted when they handled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// `lead.callback_overdue` events sent for it so far.
    #[serde(default)]
    pub reminders: u32,
    pub status: LeadStatus,
    /// From `received_at` to `handled_at`, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_callback_secs: Option<u64>,
}

impl CallbackState {
    /// A lead's clock as it starts: due at `due_at` (RFC 3339), not handled, no reminder yet.
    pub fn due(due_at: String) -> CallbackState {
        CallbackState {
            due_at,
            handled_at: None,
            handled_by: None,
            note: None,
            reminders: 0,
            status: LeadStatus::New,
            time_to_callback_secs: None,
        }
    }
}

/// How soon leads should be called back, and how insistently to remind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackPolicy {
    /// After a lead that came in during open hours.
    pub due_open: Duration,
    /// After the next opening, for a lead that came in while closed.
    pub due_closed: Duration,
    /// Remind again this often while the lead is still not handled (`None`: once).
    pub repeat_every: Option<Duration>,
    /// Reminders after the first, at most.
    pub max_reminders: u32,
}

impl Default for CallbackPolicy {
    fn default() -> Self {
        CallbackPolicy {
            due_open: Duration::from_secs(15 * 60),
            due_closed: Duration::from_secs(15 * 60),
            repeat_every: None,
            max_reminders: 0,
        }
    }
}

/// How far ahead to look for the next opening (a line closed longer than
/// this is given `due_closed` from when the lead came in).
const OPENING_HORIZON: Duration = Duration::from_secs(60 * 24 * 3600);

/// When the lead that came in at `received_at` should have been called back.
pub fn due_at(policy: &CallbackPolicy, received_at: SystemTime, schedule: Option<&Schedule>) -> SystemTime {
    let Some(schedule) = schedule else { return received_at + policy.due_open };
    match schedule.state_at(received_at) {
        ScheduleState::Open => received_at + policy.due_open,
        ScheduleState::Closed | ScheduleState::Holiday => {
            next_opening(schedule, received_at).unwrap_or(received_at) + policy.due_closed
        }
    }
}

/// The first instant after `from` at which `schedule` is open, within the horizon.
pub fn next_opening(schedule: &Schedule, from: SystemTime) -> Option<SystemTime> {
    let limit = from + OPENING_HORIZON;
    let mut t = from;
    while t < limit {
        // `next_change` looks about a week ahead; a longer closure is walked a week at a time.
        t = schedule.next_change(t).unwrap_or(t + Duration::from_secs(7 * 24 * 3600));
        if t < limit && schedule.state_at(t) == ScheduleState::Open {
            return Some(t);
        }
    }
    None
}

/// When the next overdue reminder goes out, `sent` having gone out already;
/// `None` when none is left.
pub fn reminder_at(policy: &CallbackPolicy, due_at: SystemTime, sent: u32) -> Option<SystemTime> {
    match (sent, policy.repeat_every) {
        (0, _) => Some(due_at),
        (n, Some(every)) if n <= policy.max_reminders => Some(due_at + every * n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::schedule::ScheduleConfig;
    use jiff::Zoned;
    use jiff::tz::TimeZone;

    fn t(s: &str) -> SystemTime {
        s.parse::<Zoned>().unwrap().timestamp().into()
    }

    fn chicago(toml: &str) -> Schedule {
        let cfg: ScheduleConfig = toml::from_str(toml).unwrap();
        Schedule::compile(&cfg, TimeZone::get("America/Chicago").unwrap()).unwrap()
    }

    const MIN: Duration = Duration::from_secs(60);

    fn policy() -> CallbackPolicy {
        CallbackPolicy { due_open: 15 * MIN, due_closed: 30 * MIN, repeat_every: Some(10 * MIN), max_reminders: 2 }
    }

    #[test]
    fn open_hours_and_no_schedule_are_due_after_due_open() {
        let s = chicago("time_zone = \"America/Chicago\"\nhours.mon = [\"08:00-17:00\"]");
        let came = t("2026-11-30T10:00[America/Chicago]");
        assert_eq!(due_at(&policy(), came, Some(&s)), came + 15 * MIN);
        assert_eq!(due_at(&policy(), came, None), came + 15 * MIN);
    }

    #[test]
    fn after_hours_and_holidays_are_due_after_the_next_opening() {
        let s = chicago(
            "time_zone = \"America/Chicago\"\nholidays = [\"2026-12-25\"]\n[hours]\nmon = [\"08:00-17:00\"]\n\
             tue = [\"08:00-17:00\"]\nwed = [\"08:00-17:00\"]\nthu = [\"08:00-17:00\"]\nfri = [\"08:00-17:00\"]",
        );
        // Friday night: due Monday 08:30.
        let friday_night = t("2026-12-04T22:00[America/Chicago]");
        assert_eq!(due_at(&policy(), friday_night, Some(&s)), t("2026-12-07T08:30[America/Chicago]"));
        // Christmas morning (a Friday): the next opening is Monday the 28th.
        let christmas = t("2026-12-25T09:00[America/Chicago]");
        assert_eq!(due_at(&policy(), christmas, Some(&s)), t("2026-12-28T08:30[America/Chicago]"));
    }

    #[test]
    fn a_line_that_never_opens_is_due_after_due_closed() {
        let s = chicago("time_zone = \"America/Chicago\"");
        let came = t("2026-11-30T10:00[America/Chicago]");
        assert_eq!(next_opening(&s, came), None);
        assert_eq!(due_at(&policy(), came, Some(&s)), came + 30 * MIN);
    }

    #[test]
    fn reminders_come_at_due_then_every_interval_up_to_the_limit() {
        let due = t("2026-11-30T10:15[America/Chicago]");
        let at: Vec<Option<SystemTime>> = (0..4).map(|sent| reminder_at(&policy(), due, sent)).collect();
        assert_eq!(at, [Some(due), Some(due + 10 * MIN), Some(due + 20 * MIN), None]);
        let once = CallbackPolicy { repeat_every: None, ..policy() };
        assert_eq!((reminder_at(&once, due, 0), reminder_at(&once, due, 1)), (Some(due), None));
    }
}
