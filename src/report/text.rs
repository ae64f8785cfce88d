//! The report as plain text for a terminal (`--format text`, the default):
//! the headline figures, then each section with its counts and a bar of
//! `#`s, so that the busy hours stand out without a chart.

use super::{Report, Spread};
use std::fmt::Write;

/// A percentage with one decimal.
pub fn pct(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// A duration in milliseconds, readably (`850 ms`, `1.2 s`).
pub fn ms(v: u64) -> String {
    if v < 1000 { format!("{v} ms") } else { format!("{:.1} s", v as f64 / 1000.0) }
}

/// A duration in seconds, readably (`42 s`, `7 min 5 s`, `2 h 10 min`).
pub fn secs(t: u64) -> String {
    match t {
        0..60 => format!("{t} s"),
        60..3600 => format!("{} min {} s", t / 60, t % 60),
        _ => format!("{} h {} min", t / 3600, (t % 3600) / 60),
    }
}

fn spread(s: Option<Spread>, unit: fn(u64) -> String) -> String {
    match s {
        Some(s) => format!("median {}, p90 {} (of {})", unit(s.median), unit(s.p90), s.count),
        None => "-".to_string(),
    }
}

/// A bar of up to `width` `#`s for `n` out of a largest `max`.
fn bar(n: u64, max: u64, width: u64) -> String {
    if max == 0 || n == 0 {
        return String::new();
    }
    "#".repeat(((n * width).div_ceil(max)) as usize)
}

/// The window and scope in one line: `all lines, 2026-11-30T05:00:00.000Z .. (open)`.
pub fn scope(r: &Report) -> String {
    format!(
        "{}, {} .. {}, hours in {} (from {})",
        r.line.as_deref().map_or("all lines".to_string(), |l| format!("line {l}")),
        r.since.as_deref().unwrap_or("(start)"),
        r.until.as_deref().unwrap_or("(now)"),
        r.time_zone,
        r.time_zone_from
    )
}

pub fn render(r: &Report, source: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Missed-call report: {}", scope(r));
    let _ = writeln!(o, "Source: {source}; made {}", r.generated_at);
    let _ = writeln!(o, "Every call here is a missed call: the agent only gets the calls nobody picked up.");
    let _ = writeln!(o);
    let _ = writeln!(o, "Missed calls       {}", r.missed_calls);
    if r.in_progress > 0 {
        let _ = writeln!(o, "In progress        {} (still ringing: left out of every figure)", r.in_progress);
    }
    let _ = writeln!(o, "Answered by agent  {}", r.answered);
    let _ = writeln!(o, "Completed intake   {}", r.completed);
    let _ = writeln!(o, "Urgent             {} ({})", r.urgent.calls, pct(r.urgent.share));
    let _ = writeln!(o, "Junk               {} ({})", r.junk.calls, pct(r.junk.share));
    let _ = writeln!(o, "Time to answer     {}", spread(r.time_to_answer_ms, ms));
    if let Some(c) = &r.callback {
        match (c.handled, c.overdue) {
            (Some(handled), Some(overdue)) => {
                let _ = writeln!(o, "Called back        {handled} of {} on the clock; {overdue} overdue", c.clocked);
            }
            _ => {
                let _ = writeln!(
                    o,
                    "Called back        unknown (the leads file does not record callbacks; use the lead store) ({} on the clock)",
                    c.clocked
                );
            }
        }
        let _ = writeln!(o, "Time to call back  {}", spread(c.time_to_callback_secs, secs));
    } else {
        let _ = writeln!(o, "Callback clock     none of these leads has one");
    }

    let _ = writeln!(o, "\nBy hour of day ({})", r.time_zone);
    let max = r.by_hour.iter().copied().max().unwrap_or(0);
    for (h, n) in r.by_hour.iter().enumerate() {
        let _ = writeln!(o, "  {h:02}:00  {n:>5}  {}", bar(*n, max, 40));
    }
    let _ = writeln!(o, "\nBy day of week");
    let max = r.by_weekday.iter().map(|c| c.calls).max().unwrap_or(0);
    for c in &r.by_weekday {
        let _ = writeln!(o, "  {:<9} {:>5}  {}", c.key, c.calls, bar(c.calls, max, 40));
    }
    let _ = writeln!(o, "\nOutcomes");
    for c in &r.outcomes {
        let _ = writeln!(o, "  {:<32} {:>5}", c.key, c.calls);
    }
    let _ = writeln!(
        o,
        "\nIntake funnel (a step counts the calls that reached it or a step only reached through it; answered = status answered)"
    );
    for s in &r.funnel {
        let answered = s.answered.map(|a| format!("  answered {a}")).unwrap_or_default();
        let _ = writeln!(
            o,
            "  {:<20} {:>5}  {:>6}  {}{answered}",
            s.stage,
            s.calls,
            pct(r.stage_share(s)),
            bar(s.calls, r.missed_calls, 30)
        );
    }
    let _ = writeln!(o, "\nWhere callers hung up");
    if r.hang_ups.is_empty() {
        let _ = writeln!(o, "  nobody hung up early");
    }
    for c in &r.hang_ups {
        let at = if c.key == "ringing" { "while ringing".to_string() } else { format!("during {}", c.key) };
        let _ = writeln!(o, "  {at:<32} {:>5}", c.calls);
    }
    o
}
