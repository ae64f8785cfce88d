//! The report as CSV (`--format csv`), for a spreadsheet: one row per
//! figure, three columns `section,key,value` (RFC 4180, a header row,
//! CRLF line ends). Filter on `section` to get one table:
//!
//! | section | key | value |
//! |---|---|---|
//! | `report` | `generated_at`, `time_zone`, `since`, `until`, `line` | text (empty when unset) |
//! | `summary` | `missed_calls`, `answered`, `completed`, `urgent`, `junk` | counts |
//! | `share` | `urgent`, `junk` | 0 to 1 |
//! | `by_hour` | `00` … `23` | calls |
//! | `by_weekday` | `monday` … `sunday` | calls |
//! | `outcome` | an outcome's wire string | calls |
//! | `funnel` | `rang`, `answered`, each step, `completed` | calls reaching it |
//! | `funnel_answered` | each step | answers with status `answered` |
//! | `hang_up` | `ringing`, or a step | calls |
//! | `time_to_answer_ms` | `count`, `median`, `p90` | ms |
//! | `callback` | `clocked`, `handled`, `overdue` | counts |
//! | `time_to_callback_secs` | `count`, `median`, `p90` | seconds |
//!
//! Sections without data (no answered call, no callback clock) have no rows.

use super::{Report, Spread};

/// One field, quoted when it needs to be (RFC 4180).
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

pub fn render(r: &Report) -> String {
    let mut rows: Vec<(&str, String, String)> = Vec::new();
    let mut row = |section: &'static str, key: &str, value: String| rows.push((section, key.to_string(), value));
    row("report", "generated_at", r.generated_at.clone());
    row("report", "time_zone", r.time_zone.clone());
    row("report", "time_zone_from", r.time_zone_from.clone());
    row("report", "since", r.since.clone().unwrap_or_default());
    row("report", "until", r.until.clone().unwrap_or_default());
    row("report", "line", r.line.clone().unwrap_or_default());
    row("summary", "missed_calls", r.missed_calls.to_string());
    row("summary", "in_progress", r.in_progress.to_string());
    row("summary", "answered", r.answered.to_string());
    row("summary", "completed", r.completed.to_string());
    row("summary", "urgent", r.urgent.calls.to_string());
    row("summary", "junk", r.junk.calls.to_string());
    row("share", "urgent", format!("{:.4}", r.urgent.share));
    row("share", "junk", format!("{:.4}", r.junk.share));
    for (h, n) in r.by_hour.iter().enumerate() {
        row("by_hour", &format!("{h:02}"), n.to_string());
    }
    for c in &r.by_weekday {
        row("by_weekday", &c.key, c.calls.to_string());
    }
    for c in &r.outcomes {
        row("outcome", &c.key, c.calls.to_string());
    }
    for s in &r.funnel {
        row("funnel", &s.stage, s.calls.to_string());
    }
    for s in &r.funnel {
        if let Some(a) = s.answered {
            row("funnel_answered", &s.stage, a.to_string());
        }
    }
    for c in &r.hang_ups {
        row("hang_up", &c.key, c.calls.to_string());
    }
    let mut spread = |section: &'static str, s: Option<Spread>| {
        if let Some(s) = s {
            row(section, "count", s.count.to_string());
            row(section, "median", s.median.to_string());
            row(section, "p90", s.p90.to_string());
        }
    };
    spread("time_to_answer_ms", r.time_to_answer_ms);
    if let Some(c) = &r.callback {
        spread("time_to_callback_secs", c.time_to_callback_secs);
        rows.push(("callback", "clocked".into(), c.clocked.to_string()));
        // Empty when unknown (from leads.jsonl, which does not record callbacks).
        rows.push(("callback", "handled".into(), c.handled.map(|n| n.to_string()).unwrap_or_default()));
        rows.push(("callback", "overdue".into(), c.overdue.map(|n| n.to_string()).unwrap_or_default()));
    }
    let mut out = String::from("section,key,value\r\n");
    for (section, key, value) in rows {
        out.push_str(&format!("{section},{},{}\r\n", field(&key), field(&value)));
    }
    out
}
