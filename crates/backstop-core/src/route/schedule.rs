//! A line's business hours: when it is open, closed, or on holiday. This
//! module owns the `[schedule]` table as written ([`ScheduleConfig`]), its
//! checking, and the answer to "what is the line at this instant"
//! ([`Schedule::state_at`], [`Schedule::next_change`]). It reads no clock and
//! no tz files: the runtime looks up the IANA zone named in `time_zone` and
//! hands it to [`Schedule::compile`], and passes each instant in.
//!
//! The rules, all in the zone's civil (wall-clock) time:
//!
//! * **A range belongs to the day it starts on.** `fri = ["22:00-02:00"]` is
//!   open from Friday 22:00 to Saturday 02:00. Whatever decides a date's
//!   ranges (weekly hours, a holiday, an override) decides them whole,
//!   including the part that spills past midnight into the next date.
//! * **An override for the date wins**, even over a holiday. With `hours`,
//!   those are the date's ranges, and they are all of it: yesterday's range
//!   spilling into the date is not open (`hours = []` is closed all day,
//!   state `Closed`). With only `closed_from`, the date keeps its weekly
//!   ranges and yesterday's spill-over. Either way `closed_from` closes the
//!   date from that time on: every range, and the spill-over, ends there.
//! * **A holiday** closes the date's own ranges and makes its state
//!   `Holiday` all day, except while yesterday's range spills into it
//!   (Tuesday 22:00-02:00 stays open until 02:00 on a holiday Wednesday).
//! * Otherwise the weekly hours apply. A schedule with a time zone but no
//!   hours is always `Closed` (or `Holiday` on its holidays). An empty
//!   table ([`ScheduleConfig::is_empty`]) is "no schedule": the caller
//!   decides what that means rather than compiling it.
//!
//! Daylight saving falls out of comparing wall-clock times. On a
//! spring-forward day a range starting in the skipped hour opens at the first
//! instant after it (New York's 02:30 on 2026-03-08 is 03:00 EDT), and one
//! ending in it closes there. On a fall-back day the repeated hour happens
//! twice on the wall clock, and a range covering it is open both times
//! (01:00-02:00 on 2026-11-01 is two real hours).

use std::time::SystemTime;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};

/// The `[schedule]` table (top level or `[line.schedule]`), as written.
///
/// ```
/// use backstop_core::route::schedule::ScheduleConfig;
///
/// let cfg: ScheduleConfig = toml::from_str(r#"
///     time_zone = "America/Chicago"
///     holidays = ["2026-12-25", "2026-12-31..2027-01-01"]
///     [hours]
///     mon = ["09:00-12:00", "13:00-17:00"]
///     fri = ["09:00-17:00", "22:00-02:00"]
///     [[override]]
///     date = "2026-12-24"
///     closed_from = "12:00"
/// "#).unwrap();
/// assert_eq!(cfg.overrides[0].closed_from.as_deref(), Some("12:00"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// IANA zone name, e.g. "America/Chicago". Required when anything else is set.
    pub time_zone: Option<String>,
    /// Weekly open hours: keys mon tue wed thu fri sat sun, each a list of "HH:MM-HH:MM" ranges.
    /// A range whose end is before its start runs past midnight into the next day ("22:00-02:00");
    /// "00:00-24:00" is the whole day, and an empty range ("09:00-09:00") is an error.
    pub hours: WeekHours,
    /// Dates "2026-12-25" or inclusive ranges "2026-12-24..2026-12-26": closed, state Holiday, all day.
    pub holidays: Vec<String>,
    /// Dated exceptions, in TOML `[[schedule.override]]`. Their dates may not overlap.
    #[serde(rename = "override")]
    pub overrides: Vec<OverrideConfig>,
}

/// Weekly open hours, one list of "HH:MM-HH:MM" ranges per weekday (none = closed).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WeekHours {
    pub mon: Vec<String>,
    pub tue: Vec<String>,
    pub wed: Vec<String>,
    pub thu: Vec<String>,
    pub fri: Vec<String>,
    pub sat: Vec<String>,
    pub sun: Vec<String>,
}

/// One `[[override]]`: different hours on a date or dates. It needs `hours`,
/// `closed_from`, or both (then the cut applies to the override's hours).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OverrideConfig {
    /// A date or inclusive date range, as in holidays.
    pub date: String,
    /// That day's open hours instead of the weekly ones ([] = closed all day, state Closed).
    pub hours: Option<Vec<String>>,
    /// Closed from this time of day on that date ("12:00"): the day's hours (weekly or `hours`) cut there.
    pub closed_from: Option<String>,
}

impl ScheduleConfig {
    /// Nothing set at all: the table is absent or empty.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// What a line is at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleState {
    Open,
    Closed,
    Holiday,
}

impl ScheduleState {
    /// "open", "closed" or "holiday", as in the config and the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleState::Open => "open",
            ScheduleState::Closed => "closed",
            ScheduleState::Holiday => "holiday",
        }
    }
}

/// A checked schedule in its time zone, answering for any instant.
#[derive(Debug, Clone)]
pub struct Schedule {
    tz: TimeZone,
    /// Monday first.
    week: [Vec<Span>; 7],
    holidays: Vec<Dates>,
    overrides: Vec<Override>,
}

/// Minutes in a day, and the `24:00` of a range's end.
const DAY: i32 = 24 * 60;
/// The cut of a day without `closed_from`.
const NO_CUT: i32 = i32::MAX / 60;

/// An open range in minutes since the midnight of the day it starts on;
/// `start < end < start + DAY`, and `end > DAY` spills into the next day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: i32,
    end: i32,
}

impl Span {
    /// Whether `secs` since the day's midnight is inside, with the day closed from minute `cut`.
    fn covers(self, secs: i32, cut: i32) -> bool {
        self.start * 60 <= secs && secs < self.end.min(cut) * 60
    }
}

/// An inclusive range of dates (one date: `first == last`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dates {
    first: Date,
    last: Date,
}

impl Dates {
    fn contains(self, date: Date) -> bool {
        self.first <= date && date <= self.last
    }
    fn overlaps(self, other: Dates) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

#[derive(Debug, Clone)]
struct Override {
    dates: Dates,
    hours: Option<Vec<Span>>,
    /// Minutes since midnight.
    closed_from: Option<i32>,
}

/// One date as the rules resolve it.
struct Day<'a> {
    ranges: &'a [Span],
    /// Closed from this minute on (`NO_CUT` when not).
    cut: i32,
    /// Whether yesterday's range spilling into this date is open.
    takes_spill: bool,
    holiday: bool,
}

impl Schedule {
    /// Check and compile. `tz` is the zone the runtime looked up for `cfg.time_zone` (the core reads no tz files).
    /// Problems come back as (key, message), key relative to the table: `time_zone`, `hours.mon[1]`, `holidays[0]`,
    /// `override[2].closed_from`; all of them, not just the first.
    pub fn compile(cfg: &ScheduleConfig, tz: TimeZone) -> Result<Schedule, Vec<(String, String)>> {
        let mut problems = Vec::new();
        if cfg.time_zone.is_none() && !cfg.is_empty() {
            problems.push(("time_zone".to_string(), "required when hours, holidays or overrides are set".to_string()));
        }
        let h = &cfg.hours;
        let days = [
            ("mon", &h.mon),
            ("tue", &h.tue),
            ("wed", &h.wed),
            ("thu", &h.thu),
            ("fri", &h.fri),
            ("sat", &h.sat),
            ("sun", &h.sun),
        ];
        let week = days.map(|(name, list)| spans(list, &format!("hours.{name}"), &mut problems));
        let holidays = (cfg.holidays.iter().enumerate())
            .filter_map(|(i, raw)| keep(&mut problems, format!("holidays[{i}]"), raw, dates(raw)))
            .collect();
        let mut overrides: Vec<(usize, Override)> = Vec::new();
        for (i, o) in cfg.overrides.iter().enumerate() {
            let key = format!("override[{i}]");
            let dates = keep(&mut problems, format!("{key}.date"), &o.date, dates(&o.date));
            if let Some(dates) = dates
                && let Some((j, _)) = overrides.iter().find(|(_, earlier)| earlier.dates.overlaps(dates))
            {
                problems.push((format!("{key}.date"), format!("{:?}: overlaps override[{j}]", o.date)));
            }
            if o.hours.is_none() && o.closed_from.is_none() {
                problems.push((key.clone(), "needs hours or closed_from".to_string()));
            }
            let hours = o.hours.as_ref().map(|list| spans(list, &format!("{key}.hours"), &mut problems));
            let closed_from = o.closed_from.as_ref().and_then(|raw| {
                let cut = clock(raw)
                    .and_then(|m| if m == DAY { Err("closed_from must be before 24:00".into()) } else { Ok(m) });
                keep(&mut problems, format!("{key}.closed_from"), raw, cut)
            });
            if let Some(dates) = dates {
                overrides.push((i, Override { dates, hours, closed_from }));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Schedule { tz, week, holidays, overrides: overrides.into_iter().map(|(_, o)| o).collect() })
    }

    /// What the line is at this instant. An instant outside the calendar
    /// (past the year 9999) is `Closed`.
    pub fn state_at(&self, at: SystemTime) -> ScheduleState {
        Timestamp::try_from(at).map_or(ScheduleState::Closed, |ts| self.state_at_timestamp(ts))
    }

    /// The next instant after `at` at which the state changes, looking at
    /// most eight days past `at`'s date; `None` if it holds that long.
    pub fn next_change(&self, at: SystemTime) -> Option<SystemTime> {
        let from = Timestamp::try_from(at).ok()?;
        let now = self.state_at_timestamp(from);
        // Every change happens at a range's start or end, a cut, a midnight,
        // or a daylight-saving transition: try each, in order.
        let mut minutes: Vec<i32> = vec![0];
        let override_hours = self.overrides.iter().flat_map(|o| o.hours.iter().flatten());
        for span in self.week.iter().flatten().chain(override_hours) {
            minutes.extend([span.start, span.end % DAY]);
        }
        minutes.extend(self.overrides.iter().filter_map(|o| o.closed_from));
        minutes.sort_unstable();
        minutes.dedup();
        let first = self.tz.to_datetime(from).date();
        let mut candidates = Vec::new();
        for days in 0..=8 {
            let Ok(date) = first.checked_add(jiff::Span::new().days(days)) else { break };
            for &m in &minutes {
                let dt = date.at((m / 60) as i8, (m % 60) as i8, 0, 0);
                candidates.extend(self.instants(dt));
            }
        }
        let horizon = candidates.iter().copied().max().unwrap_or(from);
        candidates.extend(self.tz.following(from).map(|t| t.timestamp()).take_while(|t| *t <= horizon));
        candidates.retain(|t| *t > from);
        candidates.sort_unstable();
        candidates.into_iter().find(|t| self.state_at_timestamp(*t) != now).map(SystemTime::from)
    }

    fn state_at_timestamp(&self, ts: Timestamp) -> ScheduleState {
        let dt = self.tz.to_datetime(ts);
        let t = dt.time();
        let secs = i32::from(t.hour()) * 3600 + i32::from(t.minute()) * 60 + i32::from(t.second());
        let today = self.day(dt.date());
        let open_today = today.ranges.iter().any(|r| r.covers(secs, today.cut));
        let spill = today.takes_spill
            && secs < today.cut * 60
            && dt.date().yesterday().is_ok_and(|date| {
                let yesterday = self.day(date);
                yesterday.ranges.iter().any(|r| r.covers(secs + DAY * 60, yesterday.cut))
            });
        match (open_today || spill, today.holiday) {
            (true, _) => ScheduleState::Open,
            (false, true) => ScheduleState::Holiday,
            (false, false) => ScheduleState::Closed,
        }
    }

    /// The rules for one date: its override, else a holiday, else the week.
    fn day(&self, date: Date) -> Day<'_> {
        let weekly = &self.week[date.weekday().to_monday_zero_offset() as usize];
        if let Some(o) = self.overrides.iter().find(|o| o.dates.contains(date)) {
            return Day {
                ranges: o.hours.as_deref().unwrap_or(weekly),
                cut: o.closed_from.unwrap_or(NO_CUT),
                takes_spill: o.hours.is_none(),
                holiday: false,
            };
        }
        let holiday = self.holidays.iter().any(|h| h.contains(date));
        Day { ranges: if holiday { &[] } else { weekly }, cut: NO_CUT, takes_spill: true, holiday }
    }

    /// The instants showing this wall-clock time: two in a fold, and around a gap both sides of it.
    fn instants(&self, dt: DateTime) -> impl Iterator<Item = Timestamp> {
        let offsets = match self.tz.to_ambiguous_timestamp(dt).offset() {
            AmbiguousOffset::Unambiguous { offset } => [Some(offset), None],
            AmbiguousOffset::Gap { before, after } | AmbiguousOffset::Fold { before, after } => {
                [Some(before), Some(after)]
            }
        };
        offsets.into_iter().flatten().filter_map(move |o| o.to_timestamp(dt).ok())
    }
}

/// Parses one entry, or records why not under `key` and skips it.
fn keep<T>(problems: &mut Vec<(String, String)>, key: String, raw: &str, parsed: Result<T, String>) -> Option<T> {
    parsed.map_err(|why| problems.push((key, format!("{raw:?}: {why}")))).ok()
}

fn spans(list: &[String], key: &str, problems: &mut Vec<(String, String)>) -> Vec<Span> {
    (list.iter().enumerate()).filter_map(|(i, raw)| keep(problems, format!("{key}[{i}]"), raw, span(raw))).collect()
}

/// "HH:MM-HH:MM"; an end before the start is on the next day.
fn span(s: &str) -> Result<Span, String> {
    let (a, b) = s.split_once('-').ok_or("not a range of times (HH:MM-HH:MM)")?;
    let (start, end) = (clock(a)?, clock(b)?);
    if start == DAY {
        return Err("a range cannot start at 24:00".into());
    }
    match end.cmp(&start) {
        std::cmp::Ordering::Equal => Err("empty range (the whole day is 00:00-24:00)".into()),
        std::cmp::Ordering::Greater => Ok(Span { start, end }),
        std::cmp::Ordering::Less => Ok(Span { start, end: end + DAY }),
    }
}

/// "HH:MM" (or "H:MM") as minutes since midnight, up to 24:00.
fn clock(s: &str) -> Result<i32, String> {
    let bad = || format!("{:?} is not a time of day (HH:MM)", s.trim());
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    if !(1..=2).contains(&h.len()) || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    match (h, m) {
        (25.., _) => Err(format!("hour {h} is past 24")),
        (_, 60..) => Err(format!("minute {m} is past 59")),
        (24, 1..) => Err("24:00 is the latest time of day".into()),
        _ => Ok(h * 60 + m),
    }
}

/// "YYYY-MM-DD", or an inclusive range "YYYY-MM-DD..YYYY-MM-DD".
fn dates(s: &str) -> Result<Dates, String> {
    let Some((a, b)) = s.split_once("..") else {
        let d = date(s)?;
        return Ok(Dates { first: d, last: d });
    };
    let (first, last) = (date(a)?, date(b)?);
    if last < first {
        return Err("the range ends before it starts".into());
    }
    Ok(Dates { first, last })
}

fn date(s: &str) -> Result<Date, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a date (YYYY-MM-DD)");
    let digits = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit());
    let mut parts = s.split('-');
    let (Some(y), Some(m), Some(d), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    if !(digits(y, 4) && digits(m, 2) && digits(d, 2)) {
        return Err(bad());
    }
    let (y, m, d) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
    Date::new(y, m, d).map_err(|_| format!("there is no date {s}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ScheduleState::{Closed, Holiday, Open};
    use jiff::Zoned;

    /// An instant, written "2026-11-01T01:30-05:00[America/New_York]" (the
    /// offset picks which 01:30 on a fall-back day) or without the offset.
    fn t(s: &str) -> SystemTime {
        s.parse::<Zoned>().unwrap().timestamp().into()
    }

    fn schedule(toml: &str) -> Schedule {
        let cfg: ScheduleConfig = toml::from_str(toml).unwrap();
        let tz = TimeZone::get(cfg.time_zone.as_deref().unwrap()).unwrap();
        Schedule::compile(&cfg, tz).unwrap()
    }

    fn problems(toml: &str) -> Vec<(String, String)> {
        let cfg: ScheduleConfig = toml::from_str(toml).unwrap();
        Schedule::compile(&cfg, TimeZone::UTC).unwrap_err()
    }

    fn keys(toml: &str) -> Vec<String> {
        problems(toml).into_iter().map(|(k, _)| k).collect()
    }

    const NY: &str = "[America/New_York]";

    fn ny(civil: &str) -> SystemTime {
        t(&format!("{civil}{NY}"))
    }

    #[test]
    fn spring_forward_opens_a_range_starting_in_the_gap_at_the_first_instant_after_it() {
        // 2026-03-08 (Sunday), New York: 02:00 EST is 03:00 EDT.
        let s = schedule("time_zone = \"America/New_York\"\nhours.sun = [\"02:30-04:00\"]");
        assert_eq!(s.state_at(t("2026-03-08T01:59:59-05:00[America/New_York]")), Closed);
        assert_eq!(s.state_at(t("2026-03-08T03:00:00-04:00[America/New_York]")), Open);
        assert_eq!(s.state_at(ny("2026-03-08T03:59")), Open);
        assert_eq!(s.state_at(ny("2026-03-08T04:00")), Closed);
        let opens = s.next_change(ny("2026-03-08T00:00")).unwrap();
        assert_eq!(opens, t("2026-03-08T07:00:00Z[UTC]"));
    }

    #[test]
    fn spring_forward_closes_a_range_ending_in_the_gap_at_the_gap() {
        let s = schedule("time_zone = \"America/New_York\"\nhours.sun = [\"01:00-02:30\"]");
        assert_eq!(s.state_at(t("2026-03-08T01:59:59-05:00[America/New_York]")), Open);
        assert_eq!(s.state_at(t("2026-03-08T03:00:00-04:00[America/New_York]")), Closed);
        assert_eq!(s.next_change(ny("2026-03-08T01:30")), Some(t("2026-03-08T07:00:00Z[UTC]")));
    }

    #[test]
    fn fall_back_keeps_a_range_open_through_both_passes_of_the_repeated_hour() {
        // 2026-11-01 (Sunday), New York: 02:00 EDT is 01:00 EST.
        let s = schedule("time_zone = \"America/New_York\"\nhours.sun = [\"01:00-02:00\"]");
        assert_eq!(s.state_at(t("2026-11-01T00:59-04:00[America/New_York]")), Closed);
        assert_eq!(s.state_at(t("2026-11-01T01:30-04:00[America/New_York]")), Open);
        assert_eq!(s.state_at(t("2026-11-01T01:30-05:00[America/New_York]")), Open);
        assert_eq!(s.state_at(t("2026-11-01T02:00-05:00[America/New_York]")), Closed);
        // Open two real hours: from 01:00 EDT straight to 02:00 EST.
        let from = t("2026-11-01T01:00-04:00[America/New_York]");
        assert_eq!(s.next_change(from), Some(t("2026-11-01T02:00-05:00[America/New_York]")));
    }

    #[test]
    fn fall_back_reopens_a_range_covering_part_of_the_repeated_hour() {
        let s = schedule("time_zone = \"America/New_York\"\nhours.sun = [\"00:00-01:30\"]");
        let closes = s.next_change(t("2026-11-01T00:30-04:00[America/New_York]")).unwrap();
        assert_eq!(closes, t("2026-11-01T01:30-04:00[America/New_York]"));
        let reopens = s.next_change(closes).unwrap();
        assert_eq!(reopens, t("2026-11-01T01:00-05:00[America/New_York]"), "the transition itself");
        assert_eq!(s.next_change(reopens), Some(t("2026-11-01T01:30-05:00[America/New_York]")));
    }

    #[test]
    fn berlin_changes_in_both_directions() {
        // 2026-03-29: 02:00 CET is 03:00 CEST; 2026-10-25: 03:00 CEST is 02:00 CET.
        let s = schedule("time_zone = \"Europe/Berlin\"\nhours.sun = [\"02:15-03:30\"]");
        assert_eq!(s.state_at(t("2026-03-29T01:59+01:00[Europe/Berlin]")), Closed);
        assert_eq!(s.state_at(t("2026-03-29T03:00+02:00[Europe/Berlin]")), Open);
        assert_eq!(s.state_at(t("2026-03-29T03:30+02:00[Europe/Berlin]")), Closed);
        assert_eq!(s.state_at(t("2026-10-25T02:30+02:00[Europe/Berlin]")), Open);
        assert_eq!(s.state_at(t("2026-10-25T02:10+01:00[Europe/Berlin]")), Closed);
        assert_eq!(s.state_at(t("2026-10-25T02:30+01:00[Europe/Berlin]")), Open);
    }

    #[test]
    fn a_range_past_midnight_belongs_to_the_day_it_starts_on() {
        // 2026-12-04 is a Friday.
        let s = schedule("time_zone = \"America/New_York\"\nhours.fri = [\"22:00-02:00\"]");
        assert_eq!(s.state_at(ny("2026-12-04T21:59")), Closed);
        assert_eq!(s.state_at(ny("2026-12-04T23:00")), Open);
        assert_eq!(s.state_at(ny("2026-12-05T01:30")), Open);
        assert_eq!(s.state_at(ny("2026-12-05T02:30")), Closed);
        assert_eq!(s.state_at(ny("2026-12-04T01:30")), Closed, "Thursday has no hours to spill");
        assert_eq!(s.next_change(ny("2026-12-04T23:00")), Some(ny("2026-12-05T02:00")));
    }

    #[test]
    fn a_whole_day_range_and_one_ending_at_midnight() {
        let s = schedule("time_zone = \"America/New_York\"\n[hours]\nmon = [\"00:00-24:00\"]\ntue = [\"20:00-00:00\"]");
        assert_eq!(s.state_at(ny("2026-12-21T00:00")), Open);
        assert_eq!(s.state_at(ny("2026-12-21T23:59:59")), Open);
        assert_eq!(s.state_at(ny("2026-12-22T00:00")), Closed);
        assert_eq!(s.state_at(ny("2026-12-22T23:59")), Open);
        assert_eq!(s.state_at(ny("2026-12-23T00:00")), Closed);
    }

    #[test]
    fn several_ranges_a_day_leave_a_lunch_break() {
        let s = schedule("time_zone = \"America/New_York\"\nhours.mon = [\"09:00-12:00\", \"13:00-17:00\"]");
        assert_eq!(s.state_at(ny("2026-12-21T08:59")), Closed);
        assert_eq!(s.state_at(ny("2026-12-21T11:59")), Open);
        assert_eq!(s.state_at(ny("2026-12-21T12:30")), Closed);
        assert_eq!(s.state_at(ny("2026-12-21T13:00")), Open);
        assert_eq!(s.state_at(ny("2026-12-21T17:00")), Closed);
        assert_eq!(s.next_change(ny("2026-12-21T10:00")), Some(ny("2026-12-21T12:00")));
        assert_eq!(s.next_change(ny("2026-12-21T12:00")), Some(ny("2026-12-21T13:00")));
    }

    const WEEKDAYS: &str = "time_zone = \"America/New_York\"\n[hours]\nmon = [\"09:00-17:00\"]\n\
        tue = [\"09:00-17:00\", \"22:00-02:00\"]\nwed = [\"09:00-17:00\"]\nthu = [\"09:00-17:00\"]\nfri = [\"09:00-17:00\"]\n";

    #[test]
    fn a_holiday_on_a_weekday_is_holiday_all_day_but_for_yesterdays_spill() {
        let s = schedule(&format!("holidays = [\"2026-12-23\"]\n{WEEKDAYS}"));
        assert_eq!(s.state_at(ny("2026-12-22T10:00")), Open, "Tuesday");
        assert_eq!(s.state_at(ny("2026-12-23T10:00")), Holiday, "Wednesday");
        assert_eq!(s.state_at(ny("2026-12-23T20:00")), Holiday);
        assert_eq!(s.state_at(ny("2026-12-23T01:00")), Open, "Tuesday's 22:00-02:00 still runs");
        assert_eq!(s.state_at(ny("2026-12-23T02:00")), Holiday);
        assert_eq!(s.state_at(ny("2026-12-24T10:00")), Open, "Thursday");
        assert_eq!(s.next_change(ny("2026-12-23T01:00")), Some(ny("2026-12-23T02:00")));
        assert_eq!(s.next_change(ny("2026-12-23T02:00")), Some(ny("2026-12-24T00:00")), "holiday to closed");
        assert_eq!(s.next_change(ny("2026-12-24T00:00")), Some(ny("2026-12-24T09:00")));
    }

    #[test]
    fn a_holiday_range_is_inclusive_and_a_holiday_spills_nothing() {
        let s = schedule(&format!("holidays = [\"2026-12-21..2026-12-22\"]\n{WEEKDAYS}"));
        assert_eq!(s.state_at(ny("2026-12-21T10:00")), Holiday);
        assert_eq!(s.state_at(ny("2026-12-22T10:00")), Holiday);
        assert_eq!(s.state_at(ny("2026-12-22T23:00")), Holiday);
        assert_eq!(s.state_at(ny("2026-12-23T01:00")), Closed, "Tuesday's range was not open");
        assert_eq!(s.state_at(ny("2026-12-23T10:00")), Open);
    }

    #[test]
    fn closed_from_cuts_the_day() {
        let s = schedule(&format!("{WEEKDAYS}\n[[override]]\ndate = \"2026-12-24\"\nclosed_from = \"12:00\""));
        assert_eq!(s.state_at(ny("2026-12-24T11:59")), Open);
        assert_eq!(s.state_at(ny("2026-12-24T11:59:59")), Open);
        assert_eq!(s.state_at(ny("2026-12-24T12:00")), Closed);
        assert_eq!(s.state_at(ny("2026-12-25T10:00")), Open);
        assert_eq!(s.next_change(ny("2026-12-24T10:00")), Some(ny("2026-12-24T12:00")));
    }

    #[test]
    fn closed_from_keeps_yesterdays_spill_up_to_the_cut() {
        let s = schedule(&format!("{WEEKDAYS}\n[[override]]\ndate = \"2026-12-23\"\nclosed_from = \"01:00\""));
        assert_eq!(s.state_at(ny("2026-12-23T00:30")), Open);
        assert_eq!(s.state_at(ny("2026-12-23T01:00")), Closed);
        assert_eq!(s.state_at(ny("2026-12-23T10:00")), Closed);
    }

    #[test]
    fn an_override_with_hours_is_the_whole_date() {
        let s = schedule(&format!(
            "holidays = [\"2026-12-24\"]\n{WEEKDAYS}\n\
             [[override]]\ndate = \"2026-12-23\"\nhours = []\n\
             [[override]]\ndate = \"2026-12-24..2026-12-25\"\nhours = [\"10:00-14:00\"]\nclosed_from = \"13:00\""
        ));
        assert_eq!(s.state_at(ny("2026-12-23T01:00")), Closed, "no spill from Tuesday into an override's hours");
        assert_eq!(s.state_at(ny("2026-12-23T10:00")), Closed, "hours = [] is closed, not holiday");
        assert_eq!(s.state_at(ny("2026-12-24T09:30")), Closed, "the override wins over the holiday");
        assert_eq!(s.state_at(ny("2026-12-24T12:59")), Open);
        assert_eq!(s.state_at(ny("2026-12-25T13:00")), Closed, "closed_from cuts the override's hours");
        assert_eq!(s.state_at(ny("2026-12-28T10:00")), Open, "back to the week");
    }

    #[test]
    fn a_time_zone_without_hours_is_always_closed_but_on_holidays() {
        let s = schedule("time_zone = \"America/New_York\"\nholidays = [\"2026-12-25\"]");
        assert_eq!(s.state_at(ny("2026-12-24T12:00")), Closed);
        assert_eq!(s.state_at(ny("2026-12-25T12:00")), Holiday);
        assert_eq!(s.next_change(ny("2026-12-24T12:00")), Some(ny("2026-12-25T00:00")));
        assert_eq!(s.next_change(ny("2027-01-04T12:00")), None);
        let whole_week =
            ["mon", "tue", "wed", "thu", "fri", "sat", "sun"].map(|d| format!("{d} = [\"00:00-24:00\"]\n"));
        let always = schedule(&format!("time_zone = \"UTC\"\n[hours]\n{}", whole_week.concat()));
        assert_eq!(always.state_at(ny("2026-12-24T12:00")), Open);
        assert_eq!(always.next_change(ny("2026-12-24T12:00")), None);
    }

    #[test]
    fn next_change_skips_the_weekend() {
        let s = schedule(WEEKDAYS);
        assert_eq!(s.next_change(ny("2026-12-18T18:00")), Some(ny("2026-12-21T09:00")), "Friday to Monday");
    }

    #[test]
    fn bad_entries_are_named_by_their_keys() {
        let found = problems(
            "time_zone = \"UTC\"\nholidays = [\"2026-12-25\", \"2026-13-01\", \"2026-12-26..2026-12-24\", \"25.12.2026\"]\n\
             [hours]\nmon = [\"09:00-17:00\", \"9-17\", \"09:00-25:00\", \"09:60-10:00\", \"09:00-09:00\", \"24:00-02:00\", \"24:30-02:00\"]\n\
             [[override]]\ndate = \"2026-12-24\"\n\
             [[override]]\ndate = \"2026-12-24\"\nclosed_from = \"12:00\"\n\
             [[override]]\ndate = \"2026-12-31\"\nclosed_from = \"noon\"\nhours = [\"8:00-9:00\", \"x\"]",
        );
        let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "hours.mon[1]",
                "hours.mon[2]",
                "hours.mon[3]",
                "hours.mon[4]",
                "hours.mon[5]",
                "hours.mon[6]",
                "holidays[1]",
                "holidays[2]",
                "holidays[3]",
                "override[0]",
                "override[1].date",
                "override[2].hours[1]",
                "override[2].closed_from",
            ],
            "{found:#?}"
        );
        let says = |key: &str, what: &str| {
            let (_, message) = found.iter().find(|(k, _)| k == key).unwrap();
            assert!(message.contains(what), "{key}: {message}");
        };
        says("hours.mon[2]", "hour 25 is past 24");
        says("hours.mon[3]", "minute 60 is past 59");
        says("hours.mon[4]", "empty range");
        says("hours.mon[6]", "24:00 is the latest");
        says("holidays[1]", "no date 2026-13-01");
        says("holidays[2]", "ends before it starts");
        says("override[0]", "needs hours or closed_from");
        says("override[1].date", "overlaps override[0]");
    }

    #[test]
    fn a_time_zone_is_required_when_anything_is_set() {
        assert_eq!(keys("holidays = [\"2026-12-25\"]"), ["time_zone"]);
        assert_eq!(keys("hours.mon = [\"09:00-17:00\"]"), ["time_zone"]);
        assert_eq!(keys("[[override]]\ndate = \"2026-12-24\"\nhours = []"), ["time_zone"]);
        assert_eq!(keys("time_zone = \"UTC\"\n[[override]]\nclosed_from = \"12:00\""), ["override[0].date"]);
        let cut_at_midnight =
            problems("time_zone = \"UTC\"\n[[override]]\ndate = \"2026-12-24\"\nclosed_from = \"24:00\"");
        assert_eq!(cut_at_midnight[0].0, "override[0].closed_from");
    }

    #[test]
    fn the_table_deserializes_from_toml() {
        let cfg: ScheduleConfig = toml::from_str(
            r#"
            time_zone = "America/Chicago"
            holidays = ["2026-12-25", "2026-12-31..2027-01-01"]
            [hours]
            mon = ["09:00-12:00", "13:00-17:00"]
            fri = ["22:00-02:00"]
            [[override]]
            date = "2026-12-24"
            closed_from = "12:00"
            [[override]]
            date = "2026-12-26..2026-12-27"
            hours = []
            "#,
        )
        .unwrap();
        assert_eq!(cfg.time_zone.as_deref(), Some("America/Chicago"));
        assert_eq!(cfg.hours.mon, ["09:00-12:00", "13:00-17:00"]);
        assert!(cfg.hours.tue.is_empty());
        assert_eq!(cfg.holidays.len(), 2);
        assert_eq!(
            cfg.overrides,
            [
                OverrideConfig { date: "2026-12-24".into(), hours: None, closed_from: Some("12:00".into()) },
                OverrideConfig { date: "2026-12-26..2026-12-27".into(), hours: Some(vec![]), closed_from: None },
            ]
        );
        assert!(!cfg.is_empty());
        assert!(ScheduleConfig::default().is_empty());
        assert!(toml::from_str::<ScheduleConfig>("timezone = \"UTC\"").is_err(), "unknown keys are refused");
        assert!(toml::from_str::<ScheduleConfig>("hours.monday = []").is_err());
        Schedule::compile(&cfg, TimeZone::get("America/Chicago").unwrap()).unwrap();
    }

    #[test]
    fn states_read_as_in_the_config() {
        assert_eq!([Open, Closed, Holiday].map(ScheduleState::as_str), ["open", "closed", "holiday"]);
        assert_eq!(
            toml::from_str::<std::collections::HashMap<String, ScheduleState>>("s = \"holiday\"").unwrap()["s"],
            Holiday
        );
    }
}
