//! The report as one self-contained HTML page (`--html FILE`): the
//! headline figures as large numbers, bar charts by hour of day, by
//! weekday and of the funnel (inline SVG from `chart`), and the outcomes
//! and hang-ups as tables. No script, no external file, no web font: it
//! opens from a mail attachment or a file share, on a phone (the layout is
//! one column under 600 px) or a desktop.
//!
//! The page is built with `maud`, which escapes every value it is given:
//! line names, step names and outcomes come from configs and leads. The
//! charts are the only markup passed through unescaped; their labels are
//! escaped by plotters' SVG writer.
//!
//! Elements the tests (and a scraper) can find: each headline number is a
//! `<dd data-figure="NAME">` (`missed_calls`, `answered`, `completed`,
//! `urgent`, `junk`, `time_to_answer_median_ms`, `callback_median_secs`,
//! `overdue`; the value in `data-value`), each chart a
//! `<figure data-chart="by_hour|by_weekday|funnel">` holding an `<svg>`.

use super::text::{ms, pct, scope, secs};
use super::{Report, chart};
use maud::{DOCTYPE, Markup, PreEscaped, html};

const CSS: &str = "
*{box-sizing:border-box}
body{margin:0;font:16px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1b1f24;background:#f4f6f8}
main{max-width:980px;margin:0 auto;padding:12px}
h1{font-size:1.35rem;margin:.2em 0}
h2{font-size:1.05rem;margin:0 0 .4em}
p.scope{margin:.2em 0 .8em;color:#4a5560;font-size:.9rem}
dl.figures{display:grid;grid-template-columns:repeat(2,1fr);gap:8px;margin:0 0 12px}
dl.figures div{background:#fff;border-radius:8px;padding:8px 10px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
dt{font-size:.8rem;color:#4a5560}
dd{margin:0;font-size:1.6rem;font-weight:650}
dd small{font-size:.8rem;font-weight:400;color:#4a5560}
dd.alert{color:#b3261e}
section{background:#fff;border-radius:8px;padding:10px;margin:0 0 12px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
figure{margin:0}
figure svg{display:block;width:100%;height:auto}
table{border-collapse:collapse;width:100%;font-size:.95rem}
td,th{text-align:left;padding:4px 6px;border-bottom:1px solid #e3e7eb}
td:first-child{overflow-wrap:anywhere}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:grid;grid-template-columns:1fr;gap:12px}
@media (min-width:600px){dl.figures{grid-template-columns:repeat(4,1fr)}}
@media (min-width:900px){.grid{grid-template-columns:1fr 1fr}.grid section{margin:0}}
";

/// One headline figure.
fn figure(name: &str, label: &str, value: String, shown: Markup, alert: bool) -> Markup {
    html! {
        div {
            dt { (label) }
            dd.alert[alert] data-figure=(name) data-value=(value) { (shown) }
        }
    }
}

fn chart(name: &str, title: &str, svg: String) -> Markup {
    html! {
        section {
            h2 { (title) }
            figure data-chart=(name) role="img" aria-label=(title) { (PreEscaped(svg)) }
        }
    }
}

pub fn render(r: &Report, source: &str) -> String {
    let median_answer = r.time_to_answer_ms.map(|s| s.median);
    let callback_median = r.callback.as_ref().and_then(|c| c.time_to_callback_secs).map(|s| s.median);
    let overdue = r.callback.as_ref().and_then(|c| c.overdue);
    let callbacks_unknown = r.callback.as_ref().is_some_and(|c| c.overdue.is_none());
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    let hours: Vec<String> = (0..24).map(|h| format!("{h:02}")).collect();
    let days: Vec<String> = r.by_weekday.iter().map(|c| c.key[..3].to_string()).collect();
    let weekday_values: Vec<u64> = r.by_weekday.iter().map(|c| c.calls).collect();
    let stages: Vec<String> = r.funnel.iter().map(|s| s.stage.replace('_', " ")).collect();
    let stage_values: Vec<u64> = r.funnel.iter().map(|s| s.calls).collect();
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Missed calls: " (r.line.as_deref().unwrap_or("all lines")) }
                style { (PreEscaped(CSS)) }
            }
            body {
                main {
                    h1 { "Missed-call report" }
                    p.scope {
                        (scope(r)) ". From " (source) ", made " (r.generated_at) ". "
                        "Every call here is a missed call: the agent only gets the calls nobody picked up."
                    }
                    dl.figures {
                        (figure("missed_calls", "Missed calls", r.missed_calls.to_string(), html! { (r.missed_calls) }, false))
                        (figure("answered", "Answered by the agent", r.answered.to_string(), html! { (r.answered) }, false))
                        (figure("completed", "Completed intake", r.completed.to_string(), html! { (r.completed) }, false))
                        (figure("urgent", "Urgent", r.urgent.calls.to_string(),
                            html! { (r.urgent.calls) " " small { (pct(r.urgent.share)) } }, r.urgent.calls > 0))
                        (figure("junk", "Junk", r.junk.calls.to_string(),
                            html! { (r.junk.calls) " " small { (pct(r.junk.share)) } }, false))
                        (figure("time_to_answer_median_ms", "Median time to answer", opt(median_answer),
                            html! { (median_answer.map_or("-".to_string(), ms)) }, false))
                        (figure("callback_median_secs", "Median time to call back", opt(callback_median),
                            html! { (callback_median.map_or("-".to_string(), secs)) }, false))
                        (figure("overdue", "Overdue callbacks", opt(overdue),
                            html! {
                                @if callbacks_unknown { "unknown " small { "(the leads file does not record callbacks; use the lead store)" } }
                                @else { (overdue.map_or("-".to_string(), |o| o.to_string())) }
                            }, overdue.unwrap_or(0) > 0))
                    }
                    div.grid {
                        (chart("by_hour", &format!("Calls by hour of day ({})", r.time_zone),
                            chart::columns(&hours, &r.by_hour, 3, (480, 240))))
                        (chart("by_weekday", "Calls by day of week", chart::columns(&days, &weekday_values, 1, (480, 240))))
                        (chart("funnel", "Intake funnel", chart::rows(&stages, &stage_values, 480)))
                        section {
                            h2 { "Outcomes" }
                            table data-table="outcomes" {
                                thead { tr { th { "Outcome" } th.n { "Calls" } th.n { "Share" } } }
                                tbody {
                                    @for c in &r.outcomes {
                                        tr { td { (c.key) } td.n { (c.calls) } td.n { (pct(c.calls as f64 / r.missed_calls.max(1) as f64)) } }
                                    }
                                }
                            }
                            h2 style="margin-top:.8em" { "Where callers hung up" }
                            table data-table="hang_ups" {
                                tbody {
                                    @if r.hang_ups.is_empty() { tr { td { "Nobody hung up early." } } }
                                    @for c in &r.hang_ups {
                                        tr {
                                            td { @if c.key == "ringing" { "while ringing" } @else { "during " (c.key) } }
                                            td.n { (c.calls) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    section {
                        h2 { "Funnel and time to answer" }
                        table data-table="funnel" {
                            thead { tr { th { "Stage" } th.n { "Reached" } th.n { "Share" } th.n { "Answered" } } }
                            tbody {
                                @for s in &r.funnel {
                                    tr {
                                        td { (s.stage) }
                                        td.n { (s.calls) }
                                        td.n { (pct(r.stage_share(s))) }
                                        td.n { (s.answered.map(|a| a.to_string()).unwrap_or_default()) }
                                    }
                                }
                            }
                        }
                        p.scope {
                            "A step counts the calls that reached it (an answer there, or a hang-up while it was asked) or a step of their script only reached through it; "
                            "Answered counts those answered in full. "
                            @if r.in_progress > 0 { (r.in_progress) " call(s) still ringing are left out. " }
                            @if let Some(s) = r.time_to_answer_ms {
                                "Time to answer: median " (ms(s.median)) ", 90th percentile " (ms(s.p90)) " over " (s.count) " answered calls. "
                            }
                            @if let Some(c) = &r.callback {
                                @if let (Some(h), Some(o)) = (c.handled, c.overdue) {
                                    "Callback clock: " (h) " of " (c.clocked) " called back, " (o) " overdue"
                                } @else {
                                    "Callback clock: " (c.clocked) " on the clock, called back unknown (the leads file does not record callbacks; use the lead store)"
                                }
                                @if let Some(t) = c.time_to_callback_secs { ", 90th percentile " (secs(t.p90)) }
                                "."
                            }
                        }
                    }
                }
            }
        }
    };
    page.into_string()
}
