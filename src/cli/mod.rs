//! What the `backstop` command does, one module per concern: [`run`] the
//! agent (delivery, the SIP runtime, signals), and [`inspect`] the leads
//! file and the outbox. `main.rs` holds only the command line.

pub mod inspect;
pub mod run;

use crate::config::{Config, ConfigErrors};
use crate::media_files::{PromptFileError, load_prompts};
use backstop_core::intake::program::Program;
use backstop_core::media::prompt::PromptSet;
use std::path::{Path, PathBuf};

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

/// The intake script, compiled once, and every prompt it can play; a
/// missing or unreadable prompt is an error naming it and its file.
pub fn load_script(cfg: &Config) -> anyhow::Result<(Program, PromptSet)> {
    let program = cfg.program().map_err(|e| anyhow::anyhow!("intake script: {e:?}"))?;
    let set: Result<PromptSet, PromptFileError> = load_prompts(program.prompts(), |name| cfg.prompt_path(name));
    Ok((program, set?))
}
