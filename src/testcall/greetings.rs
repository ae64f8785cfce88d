//! The prompts the agent may play first, for the test call to recognise.
//!
//! Not simply the first step with a prompt: a script may open with a `when`
//! step (the greeting while open, `closed` after hours, a holiday prompt),
//! and a call through a PBX usually reaches a `[[line]]` whose script opens
//! otherwise. So each line's script is walked from its first step, through
//! the steps that play nothing (`when` branches, a prompt-less transfer's
//! `on_failure`), to every step that plays a prompt first; each such
//! prompt is a candidate, labelled `line <name> step <step>`.
//!
//! A prompt that cannot be read (or a script that does not compile) leaves
//! the greeting unknown: the test call then says what it heard without
//! identifying it, and a note says why, rather than refusing to call.

use crate::config::Config;
use backstop_core::intake::program::Program;
use backstop_core::probe::greeting::{Greeting, envelope};

/// A first prompt of some line: its label, its name, and where it is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstPrompt {
    pub label: String,
    pub prompt: String,
    pub path: std::path::PathBuf,
}

/// The steps a call of `program` may hear first: from step 0, through the
/// steps that play nothing, to each step with a prompt (indices, each once,
/// in the order met). Bounded by the script's length: each step is visited once.
pub fn first_playing_steps(program: &Program) -> Vec<usize> {
    let mut seen = vec![false; program.steps.len() + 1];
    let mut out = Vec::new();
    let mut stack = vec![0usize];
    while let Some(i) = stack.pop() {
        if seen.get(i).copied().unwrap_or(true) {
            continue;
        }
        seen[i] = true;
        let Some(step) = program.steps.get(i) else { continue };
        if step.prompts.is_empty() {
            // Pushed in reverse so the first branch (open) is met first.
            stack.extend(program.successors(i).into_iter().rev());
        } else {
            out.push(i);
        }
    }
    out
}

/// Every prompt any line may play first: the default line's, then each
/// `[[line]]`'s; one per prompt file (the first label met names it).
/// Errors are scripts that do not compile, as notes.
pub fn first_prompts(cfg: &Config) -> (Vec<FirstPrompt>, Vec<String>) {
    let plans = cfg.line_plans();
    let (mut out, mut notes): (Vec<FirstPrompt>, Vec<String>) = (Vec::new(), Vec::new());
    // line_plans ends with the default line: it comes first here.
    let ordered = plans.split_last().map(|(d, rest)| std::iter::once(d).chain(rest.iter()).collect::<Vec<_>>());
    for plan in ordered.unwrap_or_default() {
        let program = match Program::compile(plan.steps) {
            Ok(p) => p,
            Err(problems) => {
                let why: Vec<String> = problems.iter().map(|(k, m)| format!("{k}: {m}")).collect();
                notes.push(format!("line {}: its script does not compile ({})", plan.name, why.join("; ")));
                continue;
            }
        };
        for i in first_playing_steps(&program) {
            let step = &program.steps[i];
            let prompt = step.prompts[0].clone();
            let path = Config::prompt_path_in(plan.prompts_dir, &prompt);
            if !out.iter().any(|c| c.path == path) {
                out.push(FirstPrompt { label: format!("line {} step {}", plan.name, step.name), prompt, path });
            }
        }
    }
    (out, notes)
}

/// The greetings to compare the call's audio with: every first prompt read,
/// or none (and a note why) when one cannot be read or a script is broken,
/// so the prompt check falls back to "speech heard, not identified".
pub fn expected(cfg: &Config) -> (Vec<Greeting>, Vec<String>) {
    let (prompts, mut notes) = first_prompts(cfg);
    let mut greetings = Vec::new();
    for p in &prompts {
        match crate::media_files::load_prompt(&p.prompt, &p.path) {
            Ok(pcm) => greetings.push(Greeting { label: p.label.clone(), envelope: envelope(&pcm.pcm) }),
            Err(e) => notes.push(format!("cannot read the first prompt of {}: {e}", p.label)),
        }
    }
    if prompts.is_empty() && notes.is_empty() {
        notes.push("no line's script plays a prompt to listen for".into());
    }
    if !notes.is_empty() {
        notes.push("the greeting is not compared: any speech counts as the prompt, not identified".into());
        greetings.clear();
    }
    (greetings, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_when_step_opens_onto_each_branchs_prompt() {
        // The plumber example: `hours` (when) opens onto `greeting` by day and `closed` by night.
        let p = Program::compile(&crate::report::funnel::tests::plumber_steps()).unwrap();
        let names: Vec<&str> = first_playing_steps(&p).iter().map(|&i| p.steps[i].name.as_str()).collect();
        assert_eq!(names, ["greeting", "closed"]);
    }

    #[test]
    fn a_prompt_less_transfer_leads_to_its_on_failure_and_a_plain_script_to_its_first_step() {
        let p = Program::from_toml(
            r#"
            [[step]]
            name = "try"
            kind = "transfer"
            targets = ["sip:tech@192.0.2.1"]
            on_failure = "sorry"
            [[step]]
            name = "hello"
            kind = "play"
            prompt = "hello"
            [[step]]
            name = "sorry"
            kind = "play"
            prompt = "sorry"
            "#,
        )
        .unwrap();
        let names: Vec<&str> = first_playing_steps(&p).iter().map(|&i| p.steps[i].name.as_str()).collect();
        assert_eq!(names, ["sorry"]);
        let plain = Program::compile(&backstop_core::intake::program::default_steps()).unwrap();
        assert_eq!(first_playing_steps(&plain), [0]);
    }
}
