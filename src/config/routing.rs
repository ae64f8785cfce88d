//! Routing in the config: `[[line]]` tables, each with its `match` and what
//! it may set for itself (prompts, script, schedule, junk rules, webhooks),
//! and the top-level `[schedule]` and `[junk]` of the default line, which a
//! line without its own inherits. The matching itself, and what `check`
//! says about overlaps, is the core's (`route::line`); the time zones are
//! looked up here, where files may be read.

use super::{Config, PromptsConfig, WebhookConfig};
use backstop_core::intake::lead::DEFAULT_LINE;
use backstop_core::intake::program::{Program, StepConfig};
use backstop_core::route::junk::{JunkConfig, JunkRules};
use backstop_core::route::line::{Finding, LineMatch, findings};
use backstop_core::route::schedule::{Schedule, ScheduleConfig};
use serde::Deserialize;
use std::path::PathBuf;

/// One `[[line]]`: a business (or a number of one) this agent answers for.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    /// Unique; the lead's `line`.
    pub name: String,
    /// Which calls are this line's (`[line.match]`).
    #[serde(rename = "match", default)]
    pub matcher: LineMatch,
    /// Its own prompts directory; default the top-level `[prompts]`.
    #[serde(default)]
    pub prompts: Option<PromptsConfig>,
    /// Its own business hours; default the top-level `[schedule]`.
    #[serde(default)]
    pub schedule: Option<ScheduleConfig>,
    /// Its own junk rules; default the top-level `[junk]`.
    #[serde(default)]
    pub junk: Option<JunkConfig>,
    /// Its own webhooks: its leads go there and nowhere else. Without any,
    /// its leads go to the top-level `[[webhook]]`s.
    #[serde(default)]
    pub webhook: Vec<WebhookConfig>,
    /// Its own script; default the top-level `[[step]]`s.
    #[serde(default)]
    pub step: Vec<StepConfig>,
    /// Its own text-backs; default the top-level `[[text_back]]`s.
    #[serde(default)]
    pub text_back: Vec<super::TextBackConfig>,
}

/// What a line runs, with the defaults filled in: the config of one line as
/// the agent will use it.
pub struct LinePlan<'a> {
    pub name: &'a str,
    /// `line[i]` for a `[[line]]`, empty for the default: where its keys live.
    pub key: String,
    pub matcher: LineMatch,
    pub prompts_dir: &'a PathBuf,
    pub steps: &'a [StepConfig],
    /// The key of the script (`step` or `line[i].step`).
    pub steps_key: String,
    pub schedule: &'a ScheduleConfig,
    pub schedule_key: String,
    pub junk: &'a JunkConfig,
    pub junk_key: String,
}

impl Config {
    /// Every line as it will run, the `[[line]]`s in order and the default last.
    pub fn line_plans(&self) -> Vec<LinePlan<'_>> {
        let mut plans: Vec<LinePlan<'_>> = self
            .line
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let own = |has: bool, what: &str, top: &str| {
                    if has { format!("line[{i}].{what}") } else { top.to_string() }
                };
                LinePlan {
                    name: &l.name,
                    key: format!("line[{i}]"),
                    matcher: l.matcher.clone(),
                    prompts_dir: l.prompts.as_ref().map_or(&self.prompts.dir, |p| &p.dir),
                    steps: if l.step.is_empty() { &self.step } else { &l.step },
                    steps_key: own(!l.step.is_empty(), "step", "step"),
                    schedule: l.schedule.as_ref().unwrap_or(&self.schedule),
                    schedule_key: own(l.schedule.is_some(), "schedule", "schedule"),
                    junk: l.junk.as_ref().unwrap_or(&self.junk),
                    junk_key: own(l.junk.is_some(), "junk", "junk"),
                }
            })
            .collect();
        plans.push(LinePlan {
            name: DEFAULT_LINE,
            key: String::new(),
            matcher: LineMatch::default(),
            prompts_dir: &self.prompts.dir,
            steps: &self.step,
            steps_key: "step".into(),
            schedule: &self.schedule,
            schedule_key: "schedule".into(),
            junk: &self.junk,
            junk_key: "junk".into(),
        });
        plans
    }

    /// What `check` should warn about the lines' matches: overlaps, lines
    /// nothing reaches, accounts that do not exist.
    pub fn line_findings(&self) -> Vec<Finding> {
        let lines: Vec<(&str, &LineMatch)> = self.line.iter().map(|l| (l.name.as_str(), &l.matcher)).collect();
        let accounts: Vec<String> = self.register.iter().map(|r| r.account_name()).collect();
        findings(&lines, &accounts)
    }

    /// The `[[line]]` checks: names, and each distinct script, schedule and
    /// junk table compiled once, its problems under its own key.
    pub(super) fn routing_problems(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        for (i, l) in self.line.iter().enumerate() {
            let key = |k: &str| format!("line[{i}].{k}");
            if l.name.is_empty() || !l.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
                p.push((key("name"), format!("{:?}: use letters, digits, '_', '-' or '.'", l.name)));
            }
            if l.name == DEFAULT_LINE {
                p.push((key("name"), format!("{DEFAULT_LINE:?} is the name of the line for calls no line matches")));
            }
            if self.line[..i].iter().any(|o| o.name == l.name) {
                p.push((key("name"), format!("{:?} is used by two lines", l.name)));
            }
        }
        // Each distinct table is compiled once; the schedule check runs for every line.
        let mut programs: Vec<(String, Option<Program>)> = Vec::new();
        let mut seen_schedules = Vec::new();
        let mut seen_junk = Vec::new();
        for plan in self.line_plans() {
            if !programs.iter().any(|(k, _)| *k == plan.steps_key) {
                let program = match Program::compile(plan.steps) {
                    Ok(program) => Some(program),
                    Err(errs) => {
                        p.extend(errs.into_iter().map(|(k, m)| (prefixed(&plan.steps_key, "step", &k), m)));
                        None
                    }
                };
                programs.push((plan.steps_key.clone(), program));
            }
            if !seen_schedules.contains(&plan.schedule_key) {
                seen_schedules.push(plan.schedule_key.clone());
                if let Err(errs) = compile_schedule(plan.schedule) {
                    p.extend(errs.into_iter().map(|(k, m)| (format!("{}.{k}", plan.schedule_key), m)));
                }
            }
            let program = programs.iter().find(|(k, _)| *k == plan.steps_key).and_then(|(_, p)| p.as_ref());
            if program.is_some_and(|prog| prog.uses_schedule()) && plan.schedule.time_zone.is_none() {
                let at = if plan.key.is_empty() { "the default line".to_string() } else { plan.key.clone() };
                let problem = (
                    plan.steps_key.clone(),
                    format!(
                        "the script has a `when` step, but {at} has no schedule (set [schedule] time_zone and hours)"
                    ),
                );
                if !p.contains(&problem) {
                    p.push(problem);
                }
            }
            if !seen_junk.contains(&plan.junk_key) {
                seen_junk.push(plan.junk_key.clone());
                if let Err(errs) = JunkRules::compile(plan.junk) {
                    p.extend(errs.into_iter().map(|(k, m)| (format!("{}.{k}", plan.junk_key), m)));
                }
            }
        }
        p
    }
}

/// A program's key (`step[2].next`) under the line's script key (`line[0].step`).
fn prefixed(steps_key: &str, program_root: &str, key: &str) -> String {
    match key.strip_prefix(program_root) {
        Some(rest) => format!("{steps_key}{rest}"),
        None => format!("{steps_key}.{key}"),
    }
}

/// A schedule with its time zone looked up (the system's zoneinfo, or the
/// copy bundled into the binary). `None` when nothing is set.
pub fn compile_schedule(cfg: &ScheduleConfig) -> Result<Option<Schedule>, Vec<(String, String)>> {
    if cfg.is_empty() {
        return Ok(None);
    }
    let tz = match cfg.time_zone.as_deref() {
        Some(name) => match jiff::tz::TimeZone::get(name) {
            Ok(tz) => tz,
            Err(e) => return Err(vec![("time_zone".into(), format!("{name:?} is not a known IANA time zone: {e}"))]),
        },
        // Compiling reports the missing zone at its key.
        None => jiff::tz::TimeZone::UTC,
    };
    Schedule::compile(cfg, tz).map(Some)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn keys(text: &str) -> Vec<(String, Option<usize>)> {
        Config::parse(text, None).unwrap_err().into_iter().map(|e| (e.key, e.line)).collect()
    }

    const TWO_LINES: &str = r#"
[schedule]
time_zone = "America/Chicago"
hours.mon = ["08:00-17:00"]

[[line]]
name = "acme"
match.called = ["+15550100100"]
[line.junk]
block = ["1900*"]
[[line.webhook]]
url = "http://127.0.0.1:9/acme"
[[line.step]]
name = "hours"
kind = "when"
open = "bye"
closed = "bye"
[[line.step]]
name = "bye"
kind = "goodbye"
prompt = "goodbye"

[[line]]
name = "bolt"
match.original_called = ["+15550100200"]
"#;

    #[test]
    fn lines_inherit_what_they_do_not_set() {
        let cfg = Config::parse(TWO_LINES, None).unwrap();
        let plans = cfg.line_plans();
        let names: Vec<&str> = plans.iter().map(|p| p.name).collect();
        assert_eq!(names, ["acme", "bolt", "default"]);
        assert_eq!((plans[0].steps.len(), plans[0].steps_key.as_str()), (2, "line[0].step"));
        assert_eq!((plans[1].steps.len(), plans[1].steps_key.as_str()), (7, "step"), "bolt runs the default script");
        assert_eq!(plans[0].junk.block, ["1900*"]);
        assert!(plans[1].junk.block.is_empty());
        assert_eq!(plans[1].schedule.time_zone.as_deref(), Some("America/Chicago"), "the top-level schedule");
        assert!(cfg.line_findings().is_empty());
    }

    #[test]
    fn line_problems_name_the_line_and_key() {
        let bad = TWO_LINES
            .replace("open = \"bye\"", "open = \"nowhere\"")
            .replace("name = \"bolt\"", "name = \"acme\"")
            .replace("block = [\"1900*\"]", "block = [\"/(/\"]")
            .replace("America/Chicago", "Mars/Olympus_Mons");
        let k = keys(&bad);
        let names: Vec<&str> = k.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            ["schedule.time_zone", "line[0].junk.block[0]", "line[0].step[0].open", "line[1].name"],
            "{k:?}"
        );
        assert!(k.iter().all(|(_, line)| line.is_some()), "every problem has its line: {k:?}");
    }

    #[test]
    fn a_when_step_needs_a_schedule() {
        let text = "[[step]]\nname = \"h\"\nkind = \"when\"\nopen = \"b\"\nclosed = \"b\"\n[[step]]\nname = \"b\"\nkind = \"hangup\"\n";
        let errs = Config::parse(text, None).unwrap_err();
        assert_eq!(errs[0].key, "step");
        assert!(errs[0].message.contains("no schedule"), "{}", errs[0].message);
        let with = format!("[schedule]\ntime_zone = \"UTC\"\nhours.sun = [\"00:00-24:00\"]\n{text}");
        Config::parse(&with, None).unwrap();
    }

    #[test]
    fn the_goodbye_for_junk_and_silent_callers_is_loaded_with_the_script() {
        let text = "[prompts]\ndir = \"prompts\"\n[junk]\ngoodbye_prompt = \"closed\"\n\
                    [[step]]\nname = \"g\"\nkind = \"goodbye\"\nprompt = \"greeting\"\n";
        let lines = crate::cli::load_lines(&Config::parse(text, None).unwrap()).unwrap();
        let line = lines.default_line();
        assert!(line.prompts.get("closed").is_some() && line.prompts.get("greeting").is_some());
        let missing = text.replace("\"closed\"", "\"no_such_prompt\"");
        let err = crate::cli::load_lines(&Config::parse(&missing, None).unwrap()).unwrap_err();
        assert!(format!("{err:#}").contains("no_such_prompt"), "{err:#}");
    }

    #[test]
    fn a_when_step_shared_by_a_line_with_a_schedule_and_one_without_is_reported() {
        // The top-level script branches on the hours; acme has hours, the default line none.
        let text = "[[step]]\nname = \"h\"\nkind = \"when\"\nopen = \"b\"\nclosed = \"b\"\n[[step]]\nname = \"b\"\nkind = \"hangup\"\n\
                    [[line]]\nname = \"acme\"\nmatch.called = [\"1\"]\n[line.schedule]\ntime_zone = \"UTC\"\nhours.mon = [\"09:00-17:00\"]\n";
        let errs = Config::parse(text, None).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("the default line has no schedule"), "{}", errs[0].message);
    }

    #[test]
    fn the_plumber_example_is_valid_and_loads() {
        let cfg = Config::parse(include_str!("../../config/examples/plumber.toml"), None).unwrap();
        let lines = crate::cli::load_lines(&cfg).unwrap();
        let acme = lines.all().next().unwrap();
        assert_eq!(acme.name, "acme-plumbing");
        assert!(acme.schedule.is_some() && acme.program.uses_schedule());
        assert_eq!(acme.program.transfer_targets().count(), 2);
        for p in ["closed", "connecting", "transfer_failed", "greeting"] {
            assert!(acme.prompts.get(p).is_some(), "{p}");
        }
    }
}
