//! The missed-call report (`backstop report`): what came in, by hour of
//! day and day of week; how the calls ended; how far callers got through
//! the intake; and how fast they were called back. Read from the lead store
//! or `leads.jsonl` (`source`); written as text, JSON, CSV or one
//! self-contained HTML page with SVG charts (`text`, `csv`, `html`, `chart`).
//!
//! This module holds the figures only: [`Report::compute`] is a pure
//! function of the leads and the [`Options`] (the window, the line, the time
//! zone, the instant the report is made at and the script's step order),
//! so that every figure is tested on hand-built leads. [`Report`] is also
//! the JSON shape (`--format json`), documented field by field below.
//!
//! Every lead is a missed call: the agent only gets the calls the business
//! did not answer, so "calls" and "missed calls" are the same count here.
//! A lead still `ringing` is a call in progress: it is left out of every
//! figure and counted in `in_progress`.

pub mod chart;
pub mod csv;
pub mod funnel;
pub mod html;
pub mod source;
pub mod text;
pub mod window;

use backstop_core::callback::LeadStatus;
use backstop_core::intake::answer::AnswerStatus;
use backstop_core::intake::lead::{Lead, Outcome};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;
use std::collections::BTreeMap;

/// The JSON shape's version (`schema_version`): bumped when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// The days of the week as the report names them, Monday first (ISO 8601).
pub const WEEKDAYS: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];

/// One lead as the report reads it.
#[derive(Debug, Clone)]
pub struct ReportLead {
    pub lead: Lead,
    /// The lead store's urgent flag (an emergency chosen, or an urgent word
    /// heard); from `leads.jsonl`, the same judged from the lead itself.
    pub urgent: bool,
    /// The store's status at the report's instant (`None` from `leads.jsonl`,
    /// which does not know who was called back since).
    pub status: Option<LeadStatus>,
}

impl ReportLead {
    /// A lead read from `leads.jsonl`: urgent as the store would judge it, status unknown.
    pub fn from_file(lead: Lead) -> ReportLead {
        ReportLead { urgent: crate::store::is_urgent(&lead), lead, status: None }
    }
}

/// What to count, and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Leads received at or after this instant.
    pub since: Option<Timestamp>,
    /// Leads received before this instant.
    pub until: Option<Timestamp>,
    /// Only this line's leads.
    pub line: Option<String>,
    /// The zone hours of day and weekdays are counted in.
    pub tz: TimeZone,
    /// Where `tz` came from, as the report says it (`--tz`, `the line's [schedule]`, ...).
    pub tz_from: String,
    /// The report's instant: overdue is judged at it.
    pub now: Timestamp,
    /// The intake script's steps in order (of the line reported on, or of
    /// every line merged): those that take an answer are the funnel's middle
    /// stages, and hang-ups are listed in this order. Steps some lead
    /// answered that are not here follow, most reached first.
    pub script: Vec<ScriptStep>,
    /// Each line's script as a graph: which stages a lead of that line
    /// counts at ([`funnel`]). A lead of a line not here counts at the
    /// steps it reached only.
    pub scripts: Vec<funnel::LineScript>,
}

/// One step of the script, as the report orders by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptStep {
    pub name: String,
    /// An `ask`, `digits` or `menu` step: it leaves an answer under its name.
    pub takes_answer: bool,
}

/// Nearest-rank percentiles of a set of durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Spread {
    /// How many values.
    pub count: u64,
    /// The median (the 50th percentile, nearest rank: the lower middle of an even count).
    pub median: u64,
    /// The 90th percentile, nearest rank.
    pub p90: u64,
}

impl Spread {
    /// `None` for no values.
    pub fn of(mut values: Vec<u64>) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        Some(Spread { count: values.len() as u64, median: percentile(&values, 50), p90: percentile(&values, 90) })
    }
}

/// The nearest-rank `p`th percentile of sorted, non-empty `values`: the
/// smallest value that at least `p`% of the values are at or below.
pub fn percentile(sorted: &[u64], p: u64) -> u64 {
    let rank = (p as usize * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// A count and its share of all the calls in the report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Share {
    pub calls: u64,
    /// `calls` / `missed_calls`, 0 to 1 (0 when there are no calls).
    pub share: f64,
}

/// A count under a name (an outcome, a weekday, a step).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Count {
    pub key: String,
    pub calls: u64,
}

/// One stage of the intake funnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// `rang`, `answered`, a step's name, or `completed`.
    pub stage: String,
    /// `call` for rang, answered and completed; `step` for an intake step.
    pub kind: &'static str,
    /// Leads that passed the stage: for a step, leads that reached it (an
    /// answer there in any status, or hung up in it), or reached a step of
    /// their line's script, or completed it, that every path from the
    /// script's start passes this step on the way to (it dominates: see
    /// [`funnel`]). Read per line from that line's script, then added up by
    /// step name. In a straight script that is "it or any later step", and
    /// the funnel never grows from one stage to the next; at a branch
    /// (`when`: by day `greeting`, by night `closed`), a caller counts only
    /// on the branch taken, so the two branches' steps add up to the calls
    /// that reached the branch, not each to all of them.
    pub calls: u64,
    /// For a step: leads whose answer there has status `answered`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered: Option<u64>,
}

/// The callback clock's figures, over the leads that carry one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Callback {
    /// Leads with a callback clock (`lead.callback`).
    pub clocked: u64,
    /// Of those, called back (handled). Null when the leads came from
    /// `leads.jsonl`, which never learns of a callback: only the store knows.
    pub handled: Option<u64>,
    /// Not handled and not junk, past `callback.due_at` at the report's
    /// instant. Null from `leads.jsonl`, as `handled`.
    pub overdue: Option<u64>,
    /// `callback.time_to_callback_secs` of the handled leads (received → handled).
    pub time_to_callback_secs: Option<Spread>,
}

/// The report: the JSON shape of `--format json`, and what the text, CSV
/// and HTML forms print.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub schema_version: u32,
    /// The instant the report was made (RFC 3339, UTC); overdue is judged at it.
    pub generated_at: String,
    /// The IANA zone of `by_hour` and `by_weekday` (or `UTC`, or a fixed offset).
    pub time_zone: String,
    /// Where the zone came from: `--tz`, `the line's [schedule]`, `[schedule]` or `the system`.
    pub time_zone_from: String,
    /// The window: leads received at or after `since` and before `until` (RFC 3339, UTC; null: unbounded).
    pub since: Option<String>,
    pub until: Option<String>,
    /// Only this line's leads (null: every line).
    pub line: Option<String>,
    /// Every lead in the window that has ended: each is a call the business missed.
    pub missed_calls: u64,
    /// Leads in the window still `ringing` (calls in progress): left out of every other figure.
    pub in_progress: u64,
    /// Leads the agent answered (`answered_at` set).
    pub answered: u64,
    /// Leads whose script ran to its end (`outcome` = `completed`).
    pub completed: u64,
    /// Calls per hour of day, 0 to 23, in `time_zone` (24 numbers).
    pub by_hour: [u64; 24],
    /// Calls per weekday, Monday first, in `time_zone`.
    pub by_weekday: Vec<Count>,
    /// Calls per `outcome` wire string, most first (ties by name).
    pub outcomes: Vec<Count>,
    /// rang → answered → each intake step in script order → completed.
    pub funnel: Vec<Stage>,
    /// Where callers hung up: `ringing` (`hung_up_while_ringing`), then each
    /// step of `hung_up_during_<step>`, in script order; steps nobody hung up in are left out.
    pub hang_ups: Vec<Count>,
    /// The caller chose an emergency, or a transcript had an urgent word.
    pub urgent: Share,
    /// Judged junk (`junk.is_junk`).
    pub junk: Share,
    /// From the INVITE to our 200 (`answered_at` − `received_at`), in milliseconds.
    pub time_to_answer_ms: Option<Spread>,
    /// The callback clock, when any lead has one.
    pub callback: Option<Callback>,
}

fn share(calls: u64, all: u64) -> Share {
    Share { calls, share: if all == 0 { 0.0 } else { calls as f64 / all as f64 } }
}

/// An RFC 3339 instant as the store reads it (to the millisecond).
fn instant(s: &str) -> Option<Timestamp> {
    crate::store::parse_ms(s).and_then(|ms| Timestamp::from_millisecond(ms).ok())
}

/// An instant as the store writes it (UTC, milliseconds).
fn rfc3339(t: Timestamp) -> String {
    crate::store::ms_rfc3339(t.as_millisecond())
}

/// The name of a time zone as the report prints it.
pub fn zone_name(tz: &TimeZone) -> String {
    tz.iana_name().map(str::to_string).unwrap_or_else(|| {
        let offset = tz.to_offset(Timestamp::UNIX_EPOCH);
        if offset.seconds() == 0 { "UTC".to_string() } else { offset.to_string() }
    })
}

impl Report {
    /// The figures over `leads` (in any order; each lead once) as `opts` says.
    /// Leads whose `received_at` cannot be read are outside every window and left out.
    pub fn compute(leads: &[ReportLead], opts: &Options) -> Report {
        let (in_progress, chosen): (Vec<(&ReportLead, Timestamp)>, Vec<_>) = leads
            .iter()
            .filter(|l| opts.line.as_ref().is_none_or(|line| &l.lead.line == line))
            .filter_map(|l| instant(&l.lead.received_at).map(|t| (l, t)))
            .filter(|(_, t)| opts.since.is_none_or(|s| *t >= s) && opts.until.is_none_or(|u| *t < u))
            .partition(|(l, _)| l.lead.outcome == Outcome::Ringing);
        let all = chosen.len() as u64;

        let mut by_hour = [0u64; 24];
        let mut by_weekday = [0u64; 7];
        for (_, t) in &chosen {
            let local = t.to_zoned(opts.tz.clone());
            by_hour[local.hour() as usize] += 1;
            by_weekday[local.weekday().to_monday_zero_offset() as usize] += 1;
        }

        let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
        for (l, _) in &chosen {
            *outcomes.entry(l.lead.outcome.to_string()).or_default() += 1;
        }
        let mut outcomes: Vec<Count> = outcomes.into_iter().map(|(key, calls)| Count { key, calls }).collect();
        outcomes.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.key.cmp(&b.key)));

        let steps = step_order(&chosen, &opts.script);
        let answered = chosen.iter().filter(|(l, _)| l.lead.answered_at.is_some()).count() as u64;
        let completed = chosen.iter().filter(|(l, _)| l.lead.outcome == Outcome::Completed).count() as u64;
        let call = |stage: &str, calls| Stage { stage: stage.into(), kind: "call", calls, answered: None };
        let mut funnel = vec![call("rang", all), call("answered", answered)];
        // The steps each lead counts at, by its line's script (reached, or dominating a step reached).
        let counted: Vec<std::collections::BTreeSet<&str>> = chosen
            .iter()
            .map(|(l, _)| match opts.scripts.iter().find(|s| s.line == l.lead.line) {
                Some(script) => script.counted_at(&l.lead),
                None => l.lead.steps_reached().into_iter().collect(),
            })
            .collect();
        for step in &steps {
            let calls = counted.iter().filter(|c| c.contains(step.as_str())).count() as u64;
            let answered = chosen
                .iter()
                .filter(|(l, _)| l.lead.answers.get(step).is_some_and(|a| a.status == AnswerStatus::Answered))
                .count() as u64;
            funnel.push(Stage { stage: step.clone(), kind: "step", calls, answered: Some(answered) });
        }
        funnel.push(call("completed", completed));

        let mut hang_ups = Vec::new();
        let ringing = chosen.iter().filter(|(l, _)| l.lead.outcome == Outcome::HungUpWhileRinging).count() as u64;
        if ringing > 0 {
            hang_ups.push(Count { key: "ringing".into(), calls: ringing });
        }
        // Every step callers hung up in, the script's (answer-taking or not) in order, then the rest by name.
        let mut hung: BTreeMap<&str, u64> = BTreeMap::new();
        for (l, _) in &chosen {
            if let Outcome::HungUpDuring(step) = &l.lead.outcome {
                *hung.entry(step.as_str()).or_default() += 1;
            }
        }
        let mut hung_order: Vec<&str> = hung.keys().copied().collect();
        let rank = |s: &str| opts.script.iter().position(|x| x.name == s).unwrap_or(usize::MAX);
        hung_order.sort_by_key(|s| rank(s));
        for step in hung_order {
            hang_ups.push(Count { key: step.to_string(), calls: hung[step] });
        }

        let urgent = chosen.iter().filter(|(l, _)| l.urgent).count() as u64;
        let junk = chosen.iter().filter(|(l, _)| l.lead.junk.is_junk).count() as u64;

        let to_answer: Vec<u64> = chosen
            .iter()
            .filter_map(|(l, received)| {
                let answered = instant(l.lead.answered_at.as_deref()?)?;
                Some(answered.duration_since(*received).as_millis().max(0) as u64)
            })
            .collect();

        Report {
            schema_version: SCHEMA_VERSION,
            generated_at: rfc3339(opts.now),
            time_zone: zone_name(&opts.tz),
            time_zone_from: opts.tz_from.clone(),
            since: opts.since.map(rfc3339),
            until: opts.until.map(rfc3339),
            line: opts.line.clone(),
            missed_calls: all,
            in_progress: in_progress.len() as u64,
            answered,
            completed,
            by_hour,
            by_weekday: WEEKDAYS.iter().zip(by_weekday).map(|(d, calls)| Count { key: d.to_string(), calls }).collect(),
            outcomes,
            funnel,
            hang_ups,
            urgent: share(urgent, all),
            junk: share(junk, all),
            time_to_answer_ms: Spread::of(to_answer),
            callback: callback(&chosen, opts.now),
        }
    }

    /// The share of `missed_calls` a funnel stage reached, 0 to 1.
    pub fn stage_share(&self, stage: &Stage) -> f64 {
        share(stage.calls, self.missed_calls).share
    }
}

/// The funnel's steps: the script's answer-taking steps in order, then any
/// other step a lead has an answer for, most reached first (ties by name).
fn step_order(chosen: &[(&ReportLead, Timestamp)], script: &[ScriptStep]) -> Vec<String> {
    let mut steps: Vec<String> = script.iter().filter(|s| s.takes_answer).map(|s| s.name.clone()).collect();
    let mut extra: BTreeMap<&str, u64> = BTreeMap::new();
    for (l, _) in chosen {
        for key in l.lead.answers.keys() {
            if !steps.contains(key) && !script.iter().any(|s| &s.name == key) {
                *extra.entry(key.as_str()).or_default() += 1;
            }
        }
    }
    let mut extra: Vec<(&str, u64)> = extra.into_iter().collect();
    extra.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    steps.extend(extra.into_iter().map(|(k, _)| k.to_string()));
    steps
}

/// The callback clock's figures, `None` when no lead carries one.
fn callback(chosen: &[(&ReportLead, Timestamp)], now: Timestamp) -> Option<Callback> {
    let clocked: Vec<&ReportLead> = chosen.iter().filter(|(l, _)| l.lead.callback.is_some()).map(|(l, _)| *l).collect();
    if clocked.is_empty() {
        return None;
    }
    // A lead from leads.jsonl has no status: the file never learns of a callback.
    if clocked.iter().any(|l| l.status.is_none()) {
        return Some(Callback {
            clocked: clocked.len() as u64,
            handled: None,
            overdue: None,
            time_to_callback_secs: None,
        });
    }
    let handled = |l: &ReportLead| {
        l.status == Some(LeadStatus::Handled) || l.lead.callback.as_ref().is_some_and(|c| c.handled_at.is_some())
    };
    let overdue = clocked
        .iter()
        .filter(|l| !handled(l) && !l.lead.junk.is_junk)
        .filter(|l| l.lead.callback.as_ref().and_then(|c| instant(&c.due_at)).is_some_and(|due| now >= due))
        .count() as u64;
    let times: Vec<u64> = clocked
        .iter()
        .filter(|l| handled(l))
        .filter_map(|l| l.lead.callback.as_ref().and_then(|c| c.time_to_callback_secs))
        .collect();
    Some(Callback {
        clocked: clocked.len() as u64,
        handled: Some(clocked.iter().filter(|l| handled(l)).count() as u64),
        overdue: Some(overdue),
        time_to_callback_secs: Spread::of(times),
    })
}

/// The steps of scripts in order, merged: the first script's, then each
/// later one's steps not already named, after the last step they follow.
pub fn script_order<'a>(
    scripts: impl IntoIterator<Item = &'a [backstop_core::intake::program::StepConfig]>,
) -> Vec<ScriptStep> {
    use backstop_core::intake::program::StepKindName;
    let mut out: Vec<ScriptStep> = Vec::new();
    for steps in scripts {
        let mut at = 0;
        for s in steps {
            match out.iter().position(|x| x.name == s.name) {
                Some(i) => at = i + 1,
                None => {
                    let takes_answer = matches!(s.kind, StepKindName::Ask | StepKindName::Digits | StepKindName::Menu);
                    out.insert(at, ScriptStep { name: s.name.clone(), takes_answer });
                    at += 1;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
