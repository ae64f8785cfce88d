//! What the `backstop` command does, one module per concern: [`run`] the
//! agent (delivery, the SIP runtime, signals), and [`inspect`] the leads
//! file and the outbox. `main.rs` holds only the command line.

pub mod inspect;
pub mod leads;
pub mod passwd;
pub mod report;
pub mod run;
pub mod test_call;

use crate::config::{Config, ConfigErrors, compile_schedule};
use crate::media_files::load_prompts;
use anyhow::Context;
use backstop_core::intake::program::Program;
use backstop_core::route::junk::JunkRules;
use backstop_core::route::line::{Line, Lines};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The config file (or the defaults without one), with `--data-dir` applied.
pub fn load_config(path: Option<&Path>, data_dir: Option<PathBuf>) -> Result<Config, ConfigErrors> {
    let mut cfg = match path {
        None => Config::default(),
        Some(p) => Config::load(p).map_err(ConfigErrors)?,
    };
    if let Some(d) = data_dir {
        cfg.data.dir = d;
    }
    Ok(cfg)
}

/// Every line as the agent runs it: its script compiled once, every prompt
/// it can play (a missing or unreadable prompt is an error naming the line,
/// the prompt and its file), its schedule with the time zone looked up, and
/// its junk rules. `parse` validated all of it, so only files can fail here.
pub fn load_lines(cfg: &Config) -> anyhow::Result<Lines> {
    let mut lines = Vec::new();
    for plan in cfg.line_plans() {
        let name = plan.name;
        let program = Program::compile(plan.steps).map_err(|e| anyhow::anyhow!("line {name}: intake script: {e:?}"))?;
        // The script's prompts, and the goodbye for silent and junk callers.
        let mut wanted = program.prompts();
        wanted.push(plan.junk.goodbye_prompt.as_str());
        wanted.sort_unstable();
        wanted.dedup();
        let prompts = load_prompts(wanted, |p| Config::prompt_path_in(plan.prompts_dir, p))
            .with_context(|| format!("line {name}"))?;
        let schedule = compile_schedule(plan.schedule).map_err(|e| anyhow::anyhow!("line {name}: schedule: {e:?}"))?;
        let junk = JunkRules::compile(plan.junk).map_err(|e| anyhow::anyhow!("line {name}: junk: {e:?}"))?;
        lines.push(Line {
            name: name.to_string(),
            matcher: plan.matcher,
            program: Arc::new(program),
            prompts: Arc::new(prompts),
            schedule: schedule.map(Arc::new),
            junk: Arc::new(junk),
        });
    }
    let default = lines.pop().expect("line_plans ends with the default line");
    Ok(Lines::new(lines.into_iter().map(Arc::new).collect(), default))
}
