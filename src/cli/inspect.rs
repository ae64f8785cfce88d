//! Reading what the agent left on disk, for a person at a terminal:
//! `leads tail` (one line per lead, read through the typed [`Lead`]),
//! `outbox status` and `outbox retry`.

use crate::config::Config;
use crate::sink::delivery::now_ms;
use crate::sink::outbox::Outbox;
use anyhow::Context;
use backstop_core::intake::lead::Lead;
use backstop_core::intake::script::{AnswerKind, AnswerStatus};
use backstop_core::sip::dialog::EndedBy;

/// The outbox of this data dir, which must exist: inspecting never creates one.
fn open_outbox(cfg: &Config) -> anyhow::Result<Outbox> {
    let path = cfg.outbox_path();
    anyhow::ensure!(path.exists(), "no outbox at {} (has the agent run with this data dir?)", path.display());
    Outbox::open(&path).with_context(|| format!("opening {}", path.display()))
}

/// Pending, dead and delivered events per sink, and the oldest pending, one line per sink.
pub fn outbox_status(cfg: &Config) -> anyhow::Result<Vec<String>> {
    let rows = open_outbox(cfg)?.status(now_ms())?;
    if rows.is_empty() {
        return Ok(vec!["outbox is empty".into()]);
    }
    Ok(rows
        .into_iter()
        .map(|r| {
            let oldest =
                r.oldest_pending_ms.map(|ms| format!("{:.1} s", ms as f64 / 1000.0)).unwrap_or_else(|| "-".into());
            format!(
                "{:<48} pending {:>6}  dead {:>6}  delivered {:>6}  oldest pending {oldest}",
                r.sink, r.pending, r.dead, r.delivered
            )
        })
        .collect())
}

/// Make pending deliveries due now (and dead ones too, with `dead`); how many.
pub fn outbox_retry(cfg: &Config, dead: bool) -> anyhow::Result<usize> {
    Ok(open_outbox(cfg)?.retry_now(None, dead, now_ms())?)
}

/// One human line for a lead: when, who, why forwarded, how it ended.
pub fn describe_lead(line: &str) -> String {
    let Ok(lead) = serde_json::from_str::<Lead>(line) else { return format!("(unreadable) {line}") };
    let or_dash = |s: Option<&str>| s.unwrap_or("-").to_string();
    let fwd = match &lead.forwarded {
        Some(f) => format!(" fwd from {} ({})", or_dash(f.from_number.as_deref()), or_dash(f.reason.as_deref())),
        None => String::new(),
    };
    let secs = lead.duration_ms.map(|d| format!("{:.1}s", d as f64 / 1000.0)).unwrap_or("-".into());
    // The answers, one word each: the keys or menu label, the length of a spoken answer, or what went wrong.
    let answers: Vec<String> = lead
        .answers
        .iter()
        .map(|(step, a)| {
            let what = match (a.status, a.kind) {
                (AnswerStatus::Answered | AnswerStatus::Partial, AnswerKind::Voice) if a.transcript.is_some() => {
                    format!("{:?}", a.transcript.as_ref().map_or("", |t| t.text.trim()))
                }
                (AnswerStatus::Answered, AnswerKind::Voice) => {
                    format!("{:.1}s spoken", a.speech_ms.unwrap_or(0) as f64 / 1000.0)
                }
                (AnswerStatus::Answered, AnswerKind::Menu) => or_dash(a.label.as_deref()),
                (AnswerStatus::Answered, AnswerKind::Digits) => or_dash(a.value.as_deref()),
                (status, _) => status.as_str().to_string(),
            };
            format!("{step}={what}")
        })
        .collect();
    let answers = if answers.is_empty() { String::new() } else { format!("  [{}]", answers.join(", ")) };
    format!(
        "{}  {} {}{}  {} ended by {}  {}{answers}",
        lead.received_at,
        or_dash(lead.caller.number.as_deref()),
        lead.caller.display_name.as_ref().map(|n| format!("\"{n}\"")).unwrap_or_default(),
        fwd,
        lead.outcome,
        or_dash(lead.ended_by.map(EndedBy::as_str)),
        secs
    )
}
