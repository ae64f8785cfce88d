//! `backstop report`: the command line of the missed-call report (`report`).
//!
//! It reads the lead store read-only (beside a running agent), or
//! `leads.jsonl` with `--leads FILE` or when there is no store; takes the
//! script order and each line's step graph for the funnel from the config's
//! lines; prints the report as text, JSON or CSV on stdout; and with
//! `--html FILE` also writes the page. Warnings (unreadable lines skipped)
//! go to stderr.

use crate::config::Config;
use crate::report::{Options, Report, html, source, window};
use anyhow::Context;
use std::path::PathBuf;

/// What to report on, and how to write it.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Leads received from this date (a day in --tz, like 2026-11-30) or RFC 3339 instant on.
    #[arg(long)]
    pub since: Option<String>,
    /// Leads received before this instant, or up to the end of this date.
    #[arg(long)]
    pub until: Option<String>,
    /// Only this line's leads (a [[line]] name, or "default").
    #[arg(long)]
    pub line: Option<String>,
    /// The time zone of hours and weekdays, and of dates in --since/--until
    /// (IANA, like America/New_York; default: the [schedule] time_zone of
    /// the --line, else the top-level [schedule]'s, else this system's zone).
    #[arg(long)]
    pub tz: Option<String>,
    /// How to print the report on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Also write the report as one self-contained HTML page with charts.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Read this leads.jsonl instead of the lead store.
    #[arg(long, value_name = "FILE")]
    pub leads: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Csv,
}

/// The JSON: the report's fields in order, then where the leads came from.
#[derive(serde::Serialize)]
struct WithSource<'a> {
    #[serde(flatten)]
    report: &'a Report,
    source: Source<'a>,
}

/// `source` in the JSON: `store` or `leads_file`, its path, and how many rows or lines could not be read.
#[derive(serde::Serialize)]
struct Source<'a> {
    kind: &'a str,
    path: &'a std::path::Path,
    skipped: u64,
}

/// The steps of the script(s) the report's leads ran, in order: the line's
/// with `--line`, else every line's merged (the default line's first).
fn script(cfg: &Config, line: Option<&str>) -> Vec<crate::report::ScriptStep> {
    let plans = cfg.line_plans();
    match line {
        Some(name) => {
            plans.iter().find(|p| p.name == name).map(|p| crate::report::script_order([p.steps])).unwrap_or_default()
        }
        None => {
            // line_plans ends with the default line: it comes first here.
            let Some((default, others)) = plans.split_last() else { return Vec::new() };
            crate::report::script_order(std::iter::once(default.steps).chain(others.iter().map(|p| p.steps)))
        }
    }
}

/// Each line's script as a graph, for the funnel (a script that does not
/// compile is left out: its leads count at the steps they reached).
fn scripts(cfg: &Config) -> Vec<crate::report::funnel::LineScript> {
    let plans = cfg.line_plans();
    plans
        .iter()
        .filter_map(|p| {
            let program = backstop_core::intake::program::Program::compile(p.steps).ok()?;
            Some(crate::report::funnel::LineScript::new(p.name, program))
        })
        .collect()
}

/// The report's zone and where it came from: `--tz`, else the `[schedule]`
/// `time_zone` of the `--line` (its own or the top-level one it inherits),
/// else the top-level `[schedule]`'s, else the system's.
fn zone(cfg: &Config, args: &ReportArgs) -> anyhow::Result<(jiff::tz::TimeZone, String)> {
    if let Some(name) = args.tz.as_deref() {
        return Ok((window::zone(Some(name))?, "--tz".into()));
    }
    let plans = cfg.line_plans();
    let line = args.line.as_deref().and_then(|name| plans.iter().find(|p| p.name == name));
    let configured = line
        .and_then(|p| p.schedule.time_zone.as_deref().map(|z| (z, format!("[{}] time_zone", p.schedule_key))))
        .or_else(|| cfg.schedule.time_zone.as_deref().map(|z| (z, "[schedule] time_zone".to_string())));
    match configured {
        Some((name, from)) => {
            let tz =
                jiff::tz::TimeZone::get(name).with_context(|| format!("{from} {name:?}: not a known time zone"))?;
            Ok((tz, from))
        }
        None => Ok((window::zone(None)?, "the system's zone".into())),
    }
}

pub fn run(cfg: &Config, args: ReportArgs) -> anyhow::Result<()> {
    let (tz, tz_from) = zone(cfg, &args)?;
    let (since, until) = window::window(args.since.as_deref(), args.until.as_deref(), &tz)?;
    let now = jiff::Timestamp::now();
    let loaded = match &args.leads {
        Some(file) => source::from_file(file)?,
        None => match source::from_store(&cfg.outbox_path(), now.as_millisecond())? {
            Some(l) => l,
            None if cfg.leads_path().exists() => source::from_file(&cfg.leads_path())?,
            None => anyhow::bail!(
                "no leads to report on: neither a lead store ({}) nor a leads file ({}); \
                 give --data-dir or --config of the agent, or --leads FILE",
                cfg.outbox_path().display(),
                cfg.leads_path().display()
            ),
        },
    };
    if loaded.skipped > 0 {
        eprintln!(
            "warning: {} unreadable {} in {} skipped",
            loaded.skipped,
            if loaded.kind == "store" { "row(s)" } else { "line(s)" },
            loaded.path.display()
        );
    }
    if let Some(line) = &args.line
        && !cfg.line_plans().iter().any(|p| p.name == line)
        && !loaded.leads.iter().any(|l| &l.lead.line == line)
    {
        eprintln!("warning: no line {line:?} in the config and no lead from it");
    }
    let opts = Options {
        since,
        until,
        line: args.line.clone(),
        tz,
        tz_from,
        now,
        script: script(cfg, args.line.as_deref()),
        scripts: scripts(cfg),
    };
    let report = Report::compute(&loaded.leads, &opts);
    let source = format!(
        "{} {}",
        if loaded.kind == "store" { "the lead store" } else { "the leads file" },
        loaded.path.display()
    );
    let out = match args.format {
        Format::Text => crate::report::text::render(&report, &source),
        Format::Json => {
            let source = Source { kind: loaded.kind, path: &loaded.path, skipped: loaded.skipped };
            format!("{}\n", serde_json::to_string_pretty(&WithSource { report: &report, source })?)
        }
        Format::Csv => crate::report::csv::render(&report),
    };
    if let Some(file) = &args.html {
        std::fs::write(file, html::render(&report, &source))
            .with_context(|| format!("writing the HTML report to {}", file.display()))?;
    }
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not an error worth a message.
    match stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing the report"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_core::route::schedule::ScheduleConfig;

    fn args(tz: Option<&str>, line: Option<&str>) -> ReportArgs {
        ReportArgs {
            since: None,
            until: None,
            line: line.map(str::to_string),
            tz: tz.map(str::to_string),
            format: Format::Text,
            html: None,
            leads: None,
        }
    }

    fn zoned(name: &str) -> ScheduleConfig {
        ScheduleConfig { time_zone: Some(name.into()), ..Default::default() }
    }

    #[test]
    fn the_zone_is_tz_else_the_lines_schedule_else_the_top_level_else_the_systems() {
        let mut cfg = Config::default();
        let (tz, from) = zone(&cfg, &args(None, None)).unwrap();
        assert_eq!((tz, from.as_str()), (jiff::tz::TimeZone::system(), "the system's zone"));

        cfg.schedule = zoned("America/Chicago");
        let (tz, from) = zone(&cfg, &args(None, None)).unwrap();
        assert_eq!(
            (crate::report::zone_name(&tz).as_str(), from.as_str()),
            ("America/Chicago", "[schedule] time_zone")
        );

        let mut acme: crate::config::LineConfig = toml::from_str("name = \"acme\"").unwrap();
        acme.schedule = Some(zoned("Europe/Paris"));
        cfg.line.push(acme);
        let (tz, from) = zone(&cfg, &args(None, Some("acme"))).unwrap();
        assert_eq!(crate::report::zone_name(&tz), "Europe/Paris");
        assert!(from.contains("line[0].schedule"), "{from}");
        // Another line (or all lines) reads the top-level [schedule].
        let (tz, _) = zone(&cfg, &args(None, Some("default"))).unwrap();
        assert_eq!(crate::report::zone_name(&tz), "America/Chicago");
        // --tz wins.
        let (tz, from) = zone(&cfg, &args(Some("UTC"), Some("acme"))).unwrap();
        assert_eq!((tz, from.as_str()), (jiff::tz::TimeZone::UTC, "--tz"));
    }
}
