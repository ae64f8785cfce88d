//! The report's figures on hand-built leads: exact counts, percentiles,
//! time-zone bucketing (across DST), the window, the funnel's order and
//! the callback clock.

use super::*;
use backstop_core::callback::CallbackState;
use backstop_core::intake::program::{Program, default_steps};

/// The golden call's lead (completed, an emergency), as `id`, received at `at` (RFC 3339).
fn lead(id: &str, at: &str) -> Lead {
    let event: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/golden/lead.completed.json")).unwrap();
    let mut lead: Lead = serde_json::from_value(event["lead"].clone()).unwrap();
    lead.id = id.into();
    lead.received_at = at.into();
    let t: Timestamp = at.parse().unwrap();
    lead.answered_at = Some((t + jiff::SignedDuration::from_millis(1000)).to_string());
    lead
}

/// No emergency chosen, nothing urgent heard.
fn calm(mut l: Lead) -> Lead {
    l.answers.remove("urgency");
    l.urgent_words.clear();
    l
}

/// Hung up while speaking during `step`: the answers of the steps after it
/// removed, and its own cut short (`partial`), as the agent keeps it.
fn hung_up(mut l: Lead, step: &str) -> Lead {
    let order = ["name", "need", "callback_number", "zip", "urgency"];
    let at = order.iter().position(|s| *s == step);
    for s in &order[at.map_or(0, |i| i + 1)..] {
        l.answers.remove(*s);
    }
    if let Some(a) = l.answers.get_mut(step) {
        a.status = AnswerStatus::Partial;
    }
    l.outcome = Outcome::HungUpDuring(step.into());
    l
}

/// Hung up in silence during `step`: no answer there at all.
fn hung_up_silent(l: Lead, step: &str) -> Lead {
    let mut l = hung_up(l, step);
    l.answers.remove(step);
    l
}

fn ringing(mut l: Lead) -> Lead {
    l.answers.clear();
    l.answered_at = None;
    l.outcome = Outcome::HungUpWhileRinging;
    l
}

fn opts(tz: &str) -> Options {
    Options {
        since: None,
        until: None,
        line: None,
        tz: TimeZone::get(tz).unwrap(),
        tz_from: "--tz".into(),
        now: "2026-12-01T00:00:00Z".parse().unwrap(),
        script: script_order([default_steps().as_slice()]),
        scripts: vec![funnel::LineScript::new("default", Program::compile(&default_steps()).unwrap())],
    }
}

fn file(leads: Vec<Lead>) -> Vec<ReportLead> {
    leads.into_iter().map(ReportLead::from_file).collect()
}

fn count(c: &[Count], key: &str) -> u64 {
    c.iter().find(|c| c.key == key).map_or(0, |c| c.calls)
}

#[test]
fn percentiles_are_nearest_rank() {
    assert_eq!(Spread::of(vec![]), None);
    assert_eq!(Spread::of(vec![7]), Some(Spread { count: 1, median: 7, p90: 7 }));
    // 1..=10: the median is the 5th value, p90 the 9th.
    assert_eq!(Spread::of((1..=10).rev().collect()), Some(Spread { count: 10, median: 5, p90: 9 }));
    // 11 values: the 6th and the 10th (ceil(9.9)).
    assert_eq!(Spread::of((1..=11).collect()), Some(Spread { count: 11, median: 6, p90: 10 }));
    assert_eq!(percentile(&[1, 2], 50), 1);
    assert_eq!(percentile(&[1, 2], 90), 2);
}

#[test]
fn counts_outcomes_funnel_hang_ups_and_shares_exactly() {
    let mut junk = calm(lead("j", "2026-11-30T14:00:00Z"));
    junk.junk.is_junk = true;
    junk.answers.clear();
    junk.outcome = Outcome::Declined;
    junk.answered_at = None;
    let mut no_name = calm(lead("nn", "2026-11-30T15:00:00Z"));
    no_name.answers.get_mut("name").unwrap().status = AnswerStatus::NoInput;
    let mut in_progress = ringing(calm(lead("p", "2026-11-30T16:30:00Z")));
    in_progress.outcome = Outcome::Ringing;
    let mut heard = calm(lead("w", "2026-11-30T16:00:00Z"));
    heard.urgent_words = vec!["flood".into()];
    let leads = file(vec![
        lead("c1", "2026-11-30T12:00:00Z"),
        no_name,
        heard,
        hung_up(calm(lead("h1", "2026-11-30T13:00:00Z")), "need"),
        hung_up(calm(lead("h2", "2026-11-30T13:10:00Z")), "name"),
        hung_up(calm(lead("h3", "2026-11-30T13:20:00Z")), "greeting"),
        hung_up(calm(lead("h4", "2026-11-30T13:30:00Z")), "callback_number"),
        hung_up_silent(calm(lead("h5", "2026-11-30T13:35:00Z")), "need"),
        ringing(calm(lead("r1", "2026-11-30T13:40:00Z"))),
        junk,
        in_progress,
    ]);
    let r = Report::compute(&leads, &opts("UTC"));
    assert_eq!(r.in_progress, 1, "the call still ringing is left out");
    assert_eq!((r.missed_calls, r.answered, r.completed), (10, 8, 3));
    assert_eq!(count(&r.outcomes, "completed"), 3);
    assert_eq!(count(&r.outcomes, "hung_up_during_need"), 2);
    assert_eq!(count(&r.outcomes, "ringing"), 0);
    assert_eq!(count(&r.outcomes, "declined"), 1);
    assert_eq!(r.outcomes[0].key, "completed", "most first");
    assert_eq!(r.outcomes.iter().map(|c| c.calls).sum::<u64>(), 10);

    let funnel: Vec<(&str, u64, Option<u64>)> =
        r.funnel.iter().map(|s| (s.stage.as_str(), s.calls, s.answered)).collect();
    assert_eq!(
        funnel,
        [
            ("rang", 10, None),
            ("answered", 8, None),
            // The three completed (c1, nn with no input, w), h1 and h5 (in need),
            // h2 (cut short in name: partial), h4 (in callback_number).
            ("name", 7, Some(5)),
            ("need", 6, Some(4)),
            ("callback_number", 4, Some(3)),
            // Only the completed reached zip and urgency (a completed call went
            // through every step, whatever it left there).
            ("zip", 3, Some(3)),
            // Only c1 chose on the menu (calm() removed the others').
            ("urgency", 3, Some(1)),
            ("completed", 3, None),
        ]
    );
    let hang_ups: Vec<(&str, u64)> = r.hang_ups.iter().map(|c| (c.key.as_str(), c.calls)).collect();
    assert_eq!(hang_ups, [("ringing", 1), ("greeting", 1), ("name", 1), ("need", 2), ("callback_number", 1)]);
    // The funnel reconciles with the hang-ups: what it loses from answered to
    // completed is the calls that hung up (or were sent away) after answering.
    let answered_lost = r.answered - r.completed;
    let hung_after_answer: u64 = r.hang_ups.iter().filter(|c| c.key != "ringing").map(|c| c.calls).sum();
    assert_eq!(answered_lost, hung_after_answer);
    for pair in r.funnel.windows(2) {
        assert!(pair[0].calls >= pair[1].calls, "monotone: {pair:?}");
    }
    // c1 chose an emergency, w had an urgent word.
    assert_eq!(r.urgent, Share { calls: 2, share: 2.0 / 10.0 });
    assert_eq!(r.junk, Share { calls: 1, share: 1.0 / 10.0 });
    assert_eq!(r.time_to_answer_ms, Some(Spread { count: 8, median: 1000, p90: 1000 }));
    assert_eq!(r.callback, None);
}

#[test]
fn hours_and_weekdays_are_in_the_zone_across_dst() {
    // New York: EDT (-4) until 2026-11-01 06:00 UTC, EST (-5) after.
    let leads = file(vec![
        // Saturday 2026-10-31 23:30 EDT.
        lead("a", "2026-11-01T03:30:00Z"),
        // Sunday 01:30 EDT, then 01:30 EST: the repeated hour, counted twice under 01.
        lead("b", "2026-11-01T05:30:00Z"),
        lead("c", "2026-11-01T06:30:00Z"),
        // Monday 2026-11-02 09:15 EST.
        lead("d", "2026-11-02T14:15:00Z"),
    ]);
    let r = Report::compute(&leads, &opts("America/New_York"));
    assert_eq!(r.time_zone, "America/New_York");
    let hours: Vec<(usize, u64)> = r.by_hour.iter().copied().enumerate().filter(|(_, n)| *n > 0).collect();
    assert_eq!(hours, [(1, 2), (9, 1), (23, 1)]);
    assert_eq!(count(&r.by_weekday, "saturday"), 1);
    assert_eq!(count(&r.by_weekday, "sunday"), 2);
    assert_eq!(count(&r.by_weekday, "monday"), 1);
    assert_eq!(r.by_weekday[0].key, "monday");

    // The same leads in UTC: all on Sunday except d.
    let r = Report::compute(&leads, &opts("UTC"));
    let hours: Vec<(usize, u64)> = r.by_hour.iter().copied().enumerate().filter(|(_, n)| *n > 0).collect();
    assert_eq!(hours, [(3, 1), (5, 1), (6, 1), (14, 1)]);
    assert_eq!(count(&r.by_weekday, "sunday"), 3);

    // Spring forward (2026-03-08, 02:00 EST → 03:00 EDT): 06:59 UTC is 01:59, 07:00 UTC is 03:00.
    let r = Report::compute(
        &file(vec![lead("e", "2026-03-08T06:59:00Z"), lead("f", "2026-03-08T07:00:00Z")]),
        &opts("America/New_York"),
    );
    assert_eq!((r.by_hour[1], r.by_hour[2], r.by_hour[3]), (1, 0, 1));
}

#[test]
fn the_window_and_the_line_choose_the_leads() {
    let mut other = lead("o", "2026-11-30T12:00:00Z");
    other.line = "acme".into();
    let leads = file(vec![
        lead("before", "2026-11-29T23:59:59.999Z"),
        lead("first", "2026-11-30T00:00:00Z"),
        lead("last", "2026-11-30T23:59:59.999Z"),
        lead("after", "2026-12-01T00:00:00Z"),
        other,
    ]);
    let tz = TimeZone::UTC;
    let (since, until) = window::window(Some("2026-11-30"), Some("2026-11-30"), &tz).unwrap();
    let o = Options { since, until, tz, ..opts("UTC") };
    let r = Report::compute(&leads, &o);
    assert_eq!(r.missed_calls, 3);
    assert_eq!(r.since.as_deref(), Some("2026-11-30T00:00:00.000Z"));
    assert_eq!(r.until.as_deref(), Some("2026-12-01T00:00:00.000Z"));
    let r = Report::compute(&leads, &Options { line: Some("acme".into()), ..o });
    assert_eq!(r.missed_calls, 1);
    assert_eq!(r.line.as_deref(), Some("acme"));
}

#[test]
fn the_funnel_follows_the_script_then_other_answers_by_reach() {
    let mut a = calm(lead("a", "2026-11-30T12:00:00Z"));
    let extra = a.answers["zip"].clone();
    a.answers.insert("pets".into(), extra.clone());
    a.answers.insert("budget".into(), extra.clone());
    let mut b = calm(lead("b", "2026-11-30T12:00:00Z"));
    b.answers.insert("budget".into(), extra);
    // A script that asks zip before the name.
    let steps: Vec<_> = {
        let d = default_steps();
        let pos = |n: &str| d.iter().position(|s| s.name == n).unwrap();
        ["greeting", "zip", "name", "need", "goodbye"].iter().map(|n| d[pos(n)].clone()).collect()
    };
    let o = Options { script: script_order([steps.as_slice()]), ..opts("UTC") };
    let r = Report::compute(&file(vec![a, b]), &o);
    let stages: Vec<&str> = r.funnel.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(stages, ["rang", "answered", "zip", "name", "need", "budget", "callback_number", "pets", "completed"]);
}

/// A lead of `line` with answers at `steps` (in any status: answered) and `outcome`.
fn on_line(id: &str, line: &str, steps: &[&str], outcome: Outcome) -> Lead {
    let mut l = calm(lead(id, "2026-11-30T12:00:00Z"));
    let template = l.answers["zip"].clone();
    l.answers.clear();
    for s in steps {
        l.answers.insert(s.to_string(), template.clone());
    }
    l.line = line.into();
    l.outcome = outcome;
    l
}

fn stage(r: &Report, name: &str) -> u64 {
    r.funnel.iter().find(|s| s.stage == name).map_or_else(|| panic!("no stage {name}: {:?}", r.funnel), |s| s.calls)
}

#[test]
fn a_branching_script_counts_callers_on_the_branch_they_took_only() {
    // The plumber's script: by day greeting → name; by night the closed menu → name, or the on-call tech.
    let script = funnel::tests::plumber();
    let order = script_order([funnel::tests::plumber_steps().as_slice()]);
    let leads = file(vec![
        on_line("day-done", "acme-plumbing", &["name", "need"], Outcome::Completed),
        on_line("day-gone", "acme-plumbing", &["name"], Outcome::HungUpDuring("need".into())),
        on_line("night-done", "acme-plumbing", &["closed", "name", "need"], Outcome::Completed),
        on_line("night-gone", "acme-plumbing", &[], Outcome::HungUpDuring("closed".into())),
    ]);
    let o = Options { script: order, scripts: vec![script], ..opts("UTC") };
    let r = Report::compute(&leads, &o);
    let stages: Vec<&str> = r.funnel.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(stages, ["rang", "answered", "closed", "name", "need", "callback_number", "completed"]);
    // Daytime callers never count at the night's menu; everyone who got past it, or the greeting, counts at name.
    assert_eq!(stage(&r, "closed"), 2);
    assert_eq!(stage(&r, "name"), 3);
    assert_eq!(stage(&r, "need"), 3);
    assert_eq!(stage(&r, "callback_number"), 2);
    assert_eq!(stage(&r, "completed"), 2);
}

#[test]
fn each_lines_leads_count_by_their_own_script() {
    // The default line asks everything; "short" asks the zip, then the name, and says goodbye.
    let d = default_steps();
    let pick =
        |names: &[&str]| -> Vec<_> { names.iter().map(|n| d.iter().find(|s| s.name == *n).unwrap().clone()).collect() };
    let short = pick(&["greeting", "zip", "name", "goodbye"]);
    let leads = file(vec![
        on_line("short-done", "short", &["zip", "name"], Outcome::Completed),
        on_line("default-gone", "default", &["name", "need"], Outcome::HungUpDuring("need".into())),
    ]);
    let o = Options {
        script: script_order([d.as_slice(), short.as_slice()]),
        scripts: vec![
            funnel::LineScript::new("default", Program::compile(&d).unwrap()),
            funnel::LineScript::new("short", Program::compile(&short).unwrap()),
        ],
        ..opts("UTC")
    };
    let r = Report::compute(&leads, &o);
    // The short line's completed caller never passed the default line's need, callback number or urgency.
    let counts: Vec<(&str, u64)> = r.funnel.iter().map(|s| (s.stage.as_str(), s.calls)).collect();
    assert_eq!(
        counts,
        [
            ("rang", 2),
            ("answered", 2),
            ("name", 2),
            ("need", 1),
            ("callback_number", 0),
            ("zip", 1),
            ("urgency", 0),
            ("completed", 1)
        ]
    );
}

#[test]
fn scripts_of_several_lines_merge_in_order() {
    let d = default_steps();
    let pick =
        |names: &[&str]| -> Vec<_> { names.iter().map(|n| d.iter().find(|s| s.name == *n).unwrap().clone()).collect() };
    let first = pick(&["greeting", "name", "goodbye"]);
    let second = pick(&["greeting", "zip", "name", "urgency", "goodbye"]);
    let merged = script_order([first.as_slice(), second.as_slice()]);
    let names: Vec<(&str, bool)> = merged.iter().map(|s| (s.name.as_str(), s.takes_answer)).collect();
    assert_eq!(names, [("greeting", false), ("zip", true), ("name", true), ("urgency", true), ("goodbye", false)]);
}

#[test]
fn the_callback_clock_counts_handled_overdue_and_time_to_call_back() {
    let now: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
    let clocked = |id: &str, due: &str, handled_after: Option<u64>| {
        let mut l = calm(lead(id, "2026-11-30T12:00:00Z"));
        let mut c = CallbackState::due(due.into());
        if let Some(t) = handled_after {
            c.handled_at = Some("2026-11-30T13:00:00Z".into());
            c.status = LeadStatus::Handled;
            c.time_to_callback_secs = Some(t);
        }
        l.callback = Some(c);
        l
    };
    let mut junk = clocked("j", "2026-11-30T12:15:00Z", None);
    junk.junk.is_junk = true;
    let mut leads = file(vec![
        clocked("h1", "2026-11-30T12:15:00Z", Some(60)),
        clocked("h2", "2026-11-30T12:15:00Z", Some(600)),
        clocked("h3", "2026-11-30T12:15:00Z", Some(3600)),
        // Past due and open: overdue.
        clocked("o1", "2026-11-30T12:15:00Z", None),
        // Due exactly now: overdue (as the store judges it).
        clocked("o2", "2026-12-01T00:00:00Z", None),
        // Not yet due.
        clocked("n", "2026-12-01T00:00:01Z", None),
        junk,
        calm(lead("none", "2026-11-30T12:00:00Z")),
    ]);
    // The store says this one was handled since (its lead's clock may lag).
    let mut s = ReportLead::from_file(clocked("s", "2026-11-30T12:15:00Z", None));
    s.status = Some(LeadStatus::Handled);
    leads.push(s);
    // From leads.jsonl (no status): the file never learns of a callback, so handled and overdue are unknown.
    let r = Report::compute(&leads, &Options { now, ..opts("UTC") });
    let c = r.callback.clone().expect("a callback section");
    assert_eq!((c.clocked, c.handled, c.overdue, c.time_to_callback_secs), (8, None, None, None));
    assert!(text::render(&r, "f").contains("unknown (the leads file does not record callbacks; use the lead store)"));
    let page = html::render(&r, "f");
    assert!(page.contains("data-figure=\"overdue\" data-value=\"\""), "no overdue figure from the file");
    assert!(!page.contains("class=\"alert\""), "no red alert for an unknown overdue");
    assert_eq!(serde_json::to_value(&r).unwrap()["callback"]["overdue"], serde_json::Value::Null);
    // From the store: every lead has its status.
    for l in &mut leads {
        if l.status.is_none() {
            let handled = l.lead.callback.as_ref().is_some_and(|c| c.handled_at.is_some());
            l.status = Some(if handled { LeadStatus::Handled } else { LeadStatus::New });
        }
    }
    let r = Report::compute(&leads, &Options { now, ..opts("UTC") });
    let c = r.callback.expect("a callback section");
    assert_eq!((c.clocked, c.handled, c.overdue), (8, Some(4), Some(2)));
    assert_eq!(c.time_to_callback_secs, Some(Spread { count: 3, median: 600, p90: 3600 }));
}

#[test]
fn nothing_to_report_is_zeros_not_a_panic() {
    let r = Report::compute(&[], &opts("UTC"));
    assert_eq!(r.missed_calls, 0);
    assert_eq!(r.urgent, Share { calls: 0, share: 0.0 });
    assert_eq!(r.time_to_answer_ms, None);
    assert!(r.hang_ups.is_empty());
    // Every form renders.
    assert!(text::render(&r, "test").contains("Missed calls       0"));
    assert!(csv::render(&r).starts_with("section,key,value\r\nreport,generated_at,"));
    assert!(html::render(&r, "test").contains("data-figure=\"missed_calls\" data-value=\"0\""));
}

#[test]
fn the_json_shape_is_stable() {
    let leads = file(vec![lead("a", "2026-11-30T12:00:00Z")]);
    let r = Report::compute(&leads, &opts("UTC"));
    let v = serde_json::to_value(&r).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "answered",
            "by_hour",
            "by_weekday",
            "callback",
            "completed",
            "funnel",
            "generated_at",
            "hang_ups",
            "in_progress",
            "junk",
            "line",
            "missed_calls",
            "outcomes",
            "schema_version",
            "since",
            "time_to_answer_ms",
            "time_zone",
            "time_zone_from",
            "until",
            "urgent"
        ]
    );
    assert_eq!(v["by_hour"].as_array().unwrap().len(), 24);
    assert_eq!(v["by_hour"][12], 1);
    assert_eq!(v["by_weekday"][0], serde_json::json!({"key": "monday", "calls": 1}));
    assert_eq!(v["funnel"][2], serde_json::json!({"stage": "name", "kind": "step", "calls": 1, "answered": 1}));
    assert_eq!(v["funnel"][0], serde_json::json!({"stage": "rang", "kind": "call", "calls": 1}));
    assert_eq!(v["urgent"], serde_json::json!({"calls": 1, "share": 1.0}));
    assert_eq!(v["time_to_answer_ms"], serde_json::json!({"count": 1, "median": 1000, "p90": 1000}));
}

#[test]
fn the_html_escapes_what_comes_from_leads_and_has_the_charts() {
    let mut l = lead("a", "2026-11-30T12:00:00Z");
    l.line = "<script>alert(1)</script>".into();
    l.outcome = Outcome::HungUpDuring("<b>x</b>".into());
    let o = Options { line: Some(l.line.clone()), ..opts("UTC") };
    let page = html::render(&Report::compute(&file(vec![l]), &o), "a & b");
    assert!(!page.contains("<script>") && !page.contains("<b>x"), "{page}");
    assert!(page.contains("&lt;script&gt;") && page.contains("a &amp; b"));
    assert_eq!(page.matches("<svg").count(), 3);
    for chart in ["by_hour", "by_weekday", "funnel"] {
        assert!(page.contains(&format!("data-chart=\"{chart}\"")), "{chart}");
    }
    // Nothing to fetch: no script, stylesheet link, image or source.
    assert!(!page.contains("<script") && !page.contains("<link") && !page.contains("src=") && !page.contains("href="));
}
