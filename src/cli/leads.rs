//! `backstop leads list` and `backstop leads done`: the lead store from the
//! command line, the same store the inbox shows.
//!
//! Both open the outbox's SQLite file directly, beside a running agent if
//! there is one (WAL, and a busy timeout). `done` commits the lead's change
//! and its `lead.handled` event in one transaction, with a delivery for
//! every sink of the config that takes it: a running agent's sink workers
//! pick it up within 5 s (they poll), a stopped one's at its next start.

use crate::config::Config;
use crate::sink::event::EventType;
use crate::sink::outbox::{LineFilter, Outbox, SinkSpec};
use crate::store::{self, Query, StoredLead, View};
use anyhow::Context;
use backstop_core::callback::LeadStatus;
use backstop_core::intake::answer::AnswerKind;

/// The store, with the leads from before it taken in (once), as the agent's start does.
fn open(cfg: &Config) -> anyhow::Result<Outbox> {
    let path = cfg.outbox_path();
    let mut outbox = Outbox::open(&path).with_context(|| format!("opening the lead store in {}", path.display()))?;
    store::import::import_once(&mut outbox, &cfg.leads_path())
        .with_context(|| format!("importing {} into the lead store", cfg.leads_path().display()))?;
    Ok(outbox)
}

/// Print the store's leads, one line each.
pub fn list(cfg: &Config, open_only: bool, overdue: bool, n: u32) -> anyhow::Result<()> {
    let mut outbox = open(cfg)?;
    let view = match (open_only, overdue) {
        (_, true) => View::Overdue,
        (true, false) => View::Open,
        (false, false) => View::All,
    };
    let now = crate::sink::delivery::now_ms();
    let q = Query { view, line: None, limit: n, offset: 0 };
    let leads = store::list(outbox.conn(), &q, now).context("reading the lead store")?;
    if leads.is_empty() {
        eprintln!("no leads");
    }
    for l in &leads {
        println!("{}", describe(l));
    }
    Ok(())
}

/// One readable line: id, status, when, who, what they need, and the clock.
pub fn describe(s: &StoredLead) -> String {
    let lead = &s.lead;
    let who = match (lead.caller.display_name.as_deref(), lead.caller.number.as_deref()) {
        (Some(name), Some(number)) => format!("\"{name}\" {number}"),
        (Some(name), None) => format!("\"{name}\""),
        (None, Some(number)) => number.to_string(),
        (None, None) => "(no number)".to_string(),
    };
    // What they need: the transcript of a `need` answer, else the summary.
    let need = lead
        .answers
        .get("need")
        .filter(|a| a.kind == AnswerKind::Voice)
        .and_then(|a| a.transcript.as_ref())
        .map(|t| t.text.trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| lead.summary.clone());
    let need = if need.is_empty() { "-".to_string() } else { need };
    let clock = match &lead.callback {
        Some(c) if s.status == LeadStatus::Handled => format!(
            "handled {} by {}{}{}",
            c.handled_at.as_deref().unwrap_or("-"),
            c.handled_by.as_deref().unwrap_or("-"),
            c.time_to_callback_secs.map(|t| format!(" after {}", secs(t))).unwrap_or_default(),
            c.note.as_deref().map(|n| format!(" note {n:?}")).unwrap_or_default()
        ),
        Some(c) => format!(
            "due {}{}",
            c.due_at,
            if c.reminders > 0 { format!(" ({} reminder(s) sent)", c.reminders) } else { String::new() }
        ),
        None if lead.junk.is_junk => "junk".to_string(),
        None => "no clock".to_string(),
    };
    format!(
        "{}  {:<8} {}  {}  {}{}  {}  [{}]",
        lead.id,
        s.status.as_str(),
        lead.received_at,
        who,
        if s.urgent { "URGENT " } else { "" },
        need,
        clock,
        lead.line
    )
}

fn secs(t: u64) -> String {
    match t {
        0..60 => format!("{t} s"),
        60..3600 => format!("{} min {} s", t / 60, t % 60),
        _ => format!("{} h {} min", t / 3600, (t % 3600) / 60),
    }
}

/// Mark a lead handled by `cli`, publishing `lead.handled`.
pub fn done(cfg: &Config, id: &str, note: Option<String>) -> anyhow::Result<()> {
    let mut outbox = open(cfg)?;
    let specs = sink_specs(cfg)?;
    let now = crate::sink::delivery::now_ms();
    let (lead, published) = match store::mark_handled_in(&mut outbox, &specs, id, "cli", note, now) {
        Ok(r) => r,
        Err(store::StoreError::NotFound(_)) => {
            anyhow::bail!("no lead {id} in the lead store ({})", cfg.outbox_path().display())
        }
        Err(e) => return Err(e).context("marking the lead handled"),
    };
    if published {
        println!("{}", describe(&lead));
        println!("lead.handled published; a running agent delivers it within 5 s, or at its next start");
    } else {
        println!("{}", describe(&lead));
        println!("already handled; nothing published");
    }
    Ok(())
}

/// The sinks `backstop run` sets up (`cli::run`), as the outbox knows them:
/// names, events and lines, so that an event committed here gets the same
/// deliveries as one the agent publishes. The same as `run::sinks` gives
/// (a test holds them together), without resolving any secret: an operator
/// marks a lead done from a shell that has not the webhooks' secrets.
pub fn sink_specs(cfg: &Config) -> anyhow::Result<Vec<SinkSpec>> {
    let mut out = Vec::new();
    let local = |name: &str, events: Vec<EventType>| SinkSpec { name: name.into(), events, lines: LineFilter::All };
    if cfg.leads_file.enabled {
        out.push(local("file:leads.jsonl", vec![EventType::LeadCompleted, EventType::LeadUpdated]));
    }
    if cfg.leads_file.events {
        out.push(local("file:events.jsonl", EventType::ALL.to_vec()));
    }
    // On a cluster the rest are delivered from the shared store: the event
    // ships there (`cluster`), and its deliveries are made as it lands.
    if cfg.store.url.is_some() || cfg.store.url_env.is_some() {
        out.push(local(crate::cluster::SHIP_SINK, EventType::ALL.to_vec()));
        return Ok(out);
    }
    out.extend(crate::textback::sinks(cfg).context("[[text_back]]")?.into_iter().map(|s| s.spec));
    let own: Vec<String> = cfg.line.iter().filter(|l| !l.webhook.is_empty()).map(|l| l.name.clone()).collect();
    for w in &cfg.webhook {
        out.push(SinkSpec {
            name: format!("webhook:{}", w.url),
            events: w.event_types(),
            lines: LineFilter::Except(own.clone()),
        });
    }
    for l in &cfg.line {
        for w in &l.webhook {
            out.push(SinkSpec {
                name: format!("webhook:{}:{}", l.name, w.url),
                events: w.event_types(),
                lines: LineFilter::Only(l.name.clone()),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `leads done` commits for exactly the sinks the agent delivers to.
    #[test]
    fn the_specs_are_the_ones_run_delivers_to() {
        let dir = std::env::temp_dir().join(format!("backstop-specs-{}", std::process::id()));
        let text = format!(
            r#"
            [data]
            dir = "{dir}"
            [leads_file]
            events = true
            [[webhook]]
            url = "http://127.0.0.1:9/top"
            events = ["lead.completed", "lead.handled"]
            [[text_back]]
            account_sid = "AC0123456789abcdef0123456789abcdef"
            auth_token = "t0ken"
            from = "+15125550100"
            [[line]]
            name = "acme"
            match.called = ["+15125550100"]
            [[line.webhook]]
            url = "http://127.0.0.1:9/acme"
            [[line.text_back]]
            account_sid = "AC0123456789abcdef0123456789abcdef"
            auth_token = "t0ken"
            from = "+15125550199"
            "#,
            dir = dir.display()
        );
        let cfg = Config::parse(&text, None).expect("config");
        let run: Vec<SinkSpec> = crate::cli::run::sinks(&cfg).unwrap().into_iter().map(|s| s.spec).collect();
        assert_eq!(sink_specs(&cfg).unwrap(), run);
        assert_eq!(run.len(), 6, "{run:?}");
        // On a cluster: the files, and the shipping that makes the rest's deliveries in PostgreSQL.
        let clustered =
            Config::parse(&format!("{text}\n[store]\nurl = \"postgres://u@127.0.0.1/db\"\nnode = \"n1\"\n"), None)
                .expect("config");
        let names: Vec<String> = sink_specs(&clustered).unwrap().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["file:leads.jsonl", "file:events.jsonl", "postgres"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
