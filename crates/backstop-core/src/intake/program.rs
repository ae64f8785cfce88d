//! The intake script as configured: `[[step]]` tables in the TOML, checked
//! and compiled into a [`Program`] that every call runs (shared, read-only).
//!
//! Step kinds: `play`, `menu`, `digits`, `ask`, `goodbye`, `hangup`, and the
//! routing ones: `when` (branch on the line's business hours) and
//! `transfer` (hand the caller to the on-call tech by REFER). Branch
//! targets are step names, resolved to indices here so a typo is a config
//! error with its key, not a surprise in the middle of a call.

use crate::sip::refer::is_refer_target;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// One `[[step]]` table, as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// Unique; the answer is stored under it (`answers.<name>`).
    pub name: String,
    pub kind: StepKindName,
    /// The prompt to play (a file stem in `[prompts] dir`), or several in order.
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub prompts: Vec<String>,
    /// The step to go to afterwards; default the next one in the list.
    #[serde(default)]
    pub next: Option<String>,
    /// play: `none`, `dtmf`, `speech` or `any`. ask: `speech` (default) or `none`.
    #[serde(default)]
    pub barge_in: Option<BargeIn>,
    /// menu/digits/ask: how many times to ask again after no input or a bad answer.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Played before asking again after a bad or missing answer.
    #[serde(default)]
    pub retry_prompt: Option<String>,
    /// menu: digit → option.
    #[serde(default)]
    pub options: BTreeMap<String, MenuOptionConfig>,
    /// menu: the step when no valid choice was made (default: `next`).
    #[serde(default)]
    pub default: Option<String>,
    /// digits.
    #[serde(default)]
    pub min_digits: Option<usize>,
    #[serde(default)]
    pub max_digits: Option<usize>,
    /// digits: the key that ends entry (default `#`; `""` for none).
    #[serde(default)]
    pub terminator: Option<String>,
    /// menu/digits: wait for the first key after the prompt.
    #[serde(default)]
    pub first_digit_timeout_ms: Option<u64>,
    #[serde(default)]
    pub inter_digit_timeout_ms: Option<u64>,
    /// digits: `phone`, `zip`, `any` or `regex`.
    #[serde(default)]
    pub validate: Option<ValidatorName>,
    #[serde(default)]
    pub regex: Option<String>,
    /// digits: this key alone means "use the number I am calling from".
    #[serde(default)]
    pub caller_id_key: Option<String>,
    /// ask: silence that ends the answer.
    #[serde(default)]
    pub end_silence_ms: Option<u64>,
    /// ask: the longest answer kept.
    #[serde(default)]
    pub max_speech_ms: Option<u64>,
    /// ask: speech shorter than this (a cough, a click) is not an answer.
    #[serde(default)]
    pub min_speech_ms: Option<u64>,
    /// ask: audio kept from before speech was detected.
    #[serde(default)]
    pub pre_roll_ms: Option<u64>,
    /// ask: wait for speech to start after the question.
    #[serde(default)]
    pub no_speech_timeout_ms: Option<u64>,
    /// ask: VAD aggressiveness 0–3 (3 = least likely to call noise speech).
    #[serde(default)]
    pub vad_aggressiveness: Option<u8>,
    /// when: the step while the line is open.
    #[serde(default)]
    pub open: Option<String>,
    /// when: the step while it is closed.
    #[serde(default)]
    pub closed: Option<String>,
    /// when: the step on a holiday (default: `closed`).
    #[serde(default)]
    pub holiday: Option<String>,
    /// transfer: SIP or tel URIs to REFER the caller to, tried in order.
    #[serde(default)]
    pub targets: Vec<String>,
    /// transfer: how long each target has, from the REFER to a final NOTIFY.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// transfer: the step when no target took the call (default: `next`).
    #[serde(default)]
    pub on_failure: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MenuOptionConfig {
    /// What the lead records for this choice, e.g. `emergency`.
    pub label: String,
    /// Branch: default the menu's `next`.
    #[serde(default)]
    pub next: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepKindName {
    Play,
    Menu,
    Digits,
    Ask,
    Goodbye,
    Hangup,
    When,
    Transfer,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum BargeIn {
    #[default]
    None,
    Dtmf,
    Speech,
    Any,
}

impl BargeIn {
    pub fn on_dtmf(self) -> bool {
        matches!(self, BargeIn::Dtmf | BargeIn::Any)
    }
    pub fn on_speech(self) -> bool {
        matches!(self, BargeIn::Speech | BargeIn::Any)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ValidatorName {
    Any,
    Phone,
    Zip,
    Regex,
}

/// How a `digits` answer is checked.
#[derive(Debug, Clone)]
pub enum Validator {
    Any,
    /// 10 to 15 digits (NANP ten digits, or an international number).
    Phone,
    /// Five digits (a US ZIP code).
    Zip,
    Regex(regex::Regex),
}

impl Validator {
    pub fn accepts(&self, digits: &str) -> bool {
        let all_digits = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        match self {
            Validator::Any => !digits.is_empty(),
            Validator::Phone => all_digits && (10..=15).contains(&digits.len()),
            Validator::Zip => all_digits && digits.len() == 5,
            Validator::Regex(r) => r.is_match(digits),
        }
    }
}

/// Voice answer endpointing, per `ask` step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenParams {
    pub end_silence: Duration,
    pub max_speech: Duration,
    pub min_speech: Duration,
    pub pre_roll: Duration,
    pub no_speech_timeout: Duration,
    pub vad_aggressiveness: u8,
}

impl Default for ListenParams {
    fn default() -> Self {
        ListenParams {
            end_silence: Duration::from_millis(1200),
            max_speech: Duration::from_secs(30),
            min_speech: Duration::from_millis(200),
            pre_roll: Duration::from_millis(300),
            no_speech_timeout: Duration::from_secs(5),
            vad_aggressiveness: 2,
        }
    }
}

#[derive(Debug, Clone)]
pub struct MenuOption {
    pub digit: char,
    pub label: String,
    pub next: usize,
}

#[derive(Debug, Clone)]
pub struct KeyTimeouts {
    pub first: Duration,
    pub inter: Duration,
}

/// A compiled step. `next` indices may equal `steps.len()`: the end (hang up).
#[derive(Debug, Clone)]
pub enum StepKind {
    Play {
        barge_in: BargeIn,
    },
    Menu {
        options: Vec<MenuOption>,
        default: usize,
        timeouts: KeyTimeouts,
        retries: u32,
    },
    Digits {
        min: usize,
        max: usize,
        terminator: Option<char>,
        timeouts: KeyTimeouts,
        validator: Validator,
        caller_id_key: Option<char>,
        retries: u32,
    },
    Ask {
        listen: ListenParams,
        barge_in: bool,
        retries: u32,
    },
    Goodbye,
    Hangup,
    /// Go on at the step for the line's schedule state when the call arrived.
    When {
        open: usize,
        closed: usize,
        holiday: usize,
    },
    /// Play the prompts (if any), then REFER the caller to each target in
    /// turn; `on_failure` when none took the call.
    Transfer {
        targets: Vec<String>,
        timeout: Duration,
        on_failure: usize,
    },
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub prompts: Vec<String>,
    pub retry_prompt: Option<String>,
    pub next: usize,
    pub kind: StepKind,
}

/// The whole script, compiled.
#[derive(Debug, Clone)]
pub struct Program {
    pub steps: Vec<Step>,
}

/// Why `[[step]]` tables in TOML text are not a program.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error("the steps are not valid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    /// What [`Program::compile`] found, as (key, message).
    #[error("{}", .0.iter().map(|(k, m)| format!("{k}: {m}")).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<(String, String)>),
}

/// A transfer walks at most this many targets (an on-call rotation).
pub const MAX_TRANSFER_TARGETS: usize = 5;

/// Where a step goes on without playing anything: a `when` step's branches,
/// and a prompt-less `transfer` step's `on_failure`.
fn silent_exits(step: &Step) -> Vec<usize> {
    match &step.kind {
        StepKind::When { open, closed, holiday } => vec![*open, *closed, *holiday],
        StepKind::Transfer { on_failure, .. } if step.prompts.is_empty() => vec![*on_failure],
        _ => Vec::new(),
    }
}

/// Steps that lead back to themselves without playing anything would spin
/// forever (`when` steps in a circle), or REFER as fast as the caller's phone
/// refuses (a prompt-less transfer whose `on_failure` is itself): (key,
/// message) for the first such circle.
fn when_loops(steps: &[Step]) -> Vec<(String, String)> {
    for start in 0..steps.len() {
        let mut seen = vec![start];
        let mut frontier = vec![start];
        while let Some(i) = frontier.pop() {
            let Some(step) = steps.get(i) else { continue };
            for n in silent_exits(step) {
                if n == start {
                    let name = &steps[start].name;
                    return vec![(
                        format!("step[{start}]"),
                        format!("steps lead back to {name:?} without playing anything"),
                    )];
                }
                if !seen.contains(&n) {
                    seen.push(n);
                    frontier.push(n);
                }
            }
        }
    }
    Vec::new()
}

fn is_key(c: char) -> bool {
    matches!(c, '0'..='9' | '*' | '#' | 'A'..='D')
}

fn one_key(s: &str) -> Option<char> {
    let mut it = s.chars();
    match (it.next(), it.next()) {
        (Some(c), None) if is_key(c.to_ascii_uppercase()) => Some(c.to_ascii_uppercase()),
        _ => None,
    }
}

impl Program {
    /// Check and compile; problems come back as (key, message), key like `step[2].next`.
    pub fn compile(configs: &[StepConfig]) -> Result<Program, Vec<(String, String)>> {
        let mut p = Vec::new();
        let index_of = |name: &str| configs.iter().position(|s| s.name == name);
        let mut steps = Vec::new();
        if configs.is_empty() {
            p.push(("step".into(), "the script has no steps".into()));
        }
        for (i, c) in configs.iter().enumerate() {
            let key = |k: &str| format!("step[{i}].{k}");
            if c.name.is_empty() || !c.name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-') {
                p.push((key("name"), format!("{:?}: use letters, digits, '_' or '-'", c.name)));
            }
            if configs[..i].iter().any(|o| o.name == c.name) {
                p.push((key("name"), format!("{:?} is used by two steps", c.name)));
            }
            let resolve =
                |p: &mut Vec<(String, String)>, k: &str, target: &Option<String>, fallback: usize| match target {
                    None => fallback,
                    Some(t) => index_of(t).unwrap_or_else(|| {
                        p.push((key(k), format!("no step is named {t:?}")));
                        fallback
                    }),
                };
            let following = i + 1;
            let next = resolve(&mut p, "next", &c.next, following);
            let mut prompts: Vec<String> = c.prompt.iter().cloned().collect();
            prompts.extend(c.prompts.iter().cloned());
            let needs_prompt = !matches!(c.kind, StepKindName::Hangup | StepKindName::When | StepKindName::Transfer);
            if needs_prompt && prompts.is_empty() {
                p.push((key("prompt"), format!("a {:?} step needs a prompt", c.kind).to_lowercase()));
            }
            let timeouts = KeyTimeouts {
                first: Duration::from_millis(c.first_digit_timeout_ms.unwrap_or(6000)),
                inter: Duration::from_millis(c.inter_digit_timeout_ms.unwrap_or(4000)),
            };
            if timeouts.first.is_zero() || timeouts.inter.is_zero() {
                p.push((key("first_digit_timeout_ms"), "timeouts must be > 0".into()));
            }
            let retries = c.retries.unwrap_or(match c.kind {
                StepKindName::Ask => 1,
                _ => 2,
            });
            if retries > 5 {
                p.push((key("retries"), "at most 5".into()));
            }
            if c.kind == StepKindName::When && !prompts.is_empty() {
                p.push((key("prompt"), "a when step plays nothing: it only branches".into()));
            }
            let kind = match c.kind {
                StepKindName::Play => StepKind::Play { barge_in: c.barge_in.unwrap_or_default() },
                StepKindName::When => {
                    let mut branch = |k: &str, target: &Option<String>| {
                        if target.is_none() {
                            p.push((key(k), format!("a when step needs {k} = \"step\"")));
                        }
                        resolve(&mut p, k, target, next)
                    };
                    let (open, closed) = (branch("open", &c.open), branch("closed", &c.closed));
                    let holiday = resolve(&mut p, "holiday", &c.holiday, closed);
                    StepKind::When { open, closed, holiday }
                }
                StepKindName::Transfer => {
                    if c.targets.is_empty() {
                        p.push((key("targets"), "a transfer step needs at least one target".into()));
                    }
                    if c.targets.len() > MAX_TRANSFER_TARGETS {
                        p.push((key("targets"), format!("at most {MAX_TRANSFER_TARGETS} targets")));
                    }
                    for (j, t) in c.targets.iter().enumerate() {
                        // The config's targets (never caller input) go into Refer-To as `<uri>`.
                        if !is_refer_target(t) {
                            let why = "use a sip:, sips: or tel: URI without spaces, quotes, commas or angle brackets";
                            p.push((format!("step[{i}].targets[{j}]"), format!("{t:?}: {why}")));
                        }
                    }
                    let timeout = Duration::from_millis(c.timeout_ms.unwrap_or(20_000));
                    if timeout < Duration::from_secs(1) || timeout > Duration::from_secs(120) {
                        p.push((key("timeout_ms"), "must be between 1000 and 120000".into()));
                    }
                    let on_failure = resolve(&mut p, "on_failure", &c.on_failure, next);
                    StepKind::Transfer { targets: c.targets.clone(), timeout, on_failure }
                }
                StepKindName::Goodbye => StepKind::Goodbye,
                StepKindName::Hangup => StepKind::Hangup,
                StepKindName::Menu => {
                    let mut options = Vec::new();
                    for (digit, o) in &c.options {
                        let Some(d) = one_key(digit) else {
                            p.push((key("options"), format!("{digit:?} is not one key")));
                            continue;
                        };
                        let next = resolve(&mut p, "options", &o.next, next);
                        options.push(MenuOption { digit: d, label: o.label.clone(), next });
                    }
                    if options.is_empty() {
                        p.push((key("options"), "a menu needs at least one option".into()));
                    }
                    let default = resolve(&mut p, "default", &c.default, next);
                    StepKind::Menu { options, default, timeouts, retries }
                }
                StepKindName::Digits => {
                    let validator = match c.validate.unwrap_or(ValidatorName::Any) {
                        ValidatorName::Any => Validator::Any,
                        ValidatorName::Phone => Validator::Phone,
                        ValidatorName::Zip => Validator::Zip,
                        ValidatorName::Regex => {
                            match c.regex.as_deref().map(|r| regex::Regex::new(&format!("^(?:{r})$"))) {
                                Some(Ok(r)) => Validator::Regex(r),
                                Some(Err(e)) => {
                                    p.push((key("regex"), e.to_string()));
                                    Validator::Any
                                }
                                None => {
                                    p.push((key("regex"), "validate = \"regex\" needs regex = \"...\"".into()));
                                    Validator::Any
                                }
                            }
                        }
                    };
                    let (dmin, dmax) = match &validator {
                        Validator::Phone => (10, 15),
                        Validator::Zip => (5, 5),
                        _ => (1, 20),
                    };
                    let min = c.min_digits.unwrap_or(dmin);
                    let max = c.max_digits.unwrap_or(dmax);
                    if min == 0 || max < min || max > 32 {
                        p.push((key("max_digits"), "need 1 <= min_digits <= max_digits <= 32".into()));
                    }
                    let terminator = match c.terminator.as_deref() {
                        None => Some('#'),
                        Some("") => None,
                        Some(t) => one_key(t).or_else(|| {
                            p.push((key("terminator"), format!("{t:?} is not one key")));
                            None
                        }),
                    };
                    let caller_id_key = c.caller_id_key.as_deref().and_then(|k| {
                        one_key(k).or_else(|| {
                            p.push((key("caller_id_key"), format!("{k:?} is not one key")));
                            None
                        })
                    });
                    StepKind::Digits { min, max, terminator, timeouts, validator, caller_id_key, retries }
                }
                StepKindName::Ask => {
                    let d = ListenParams::default();
                    let ms = |v: Option<u64>, d: Duration| v.map(Duration::from_millis).unwrap_or(d);
                    let listen = ListenParams {
                        end_silence: ms(c.end_silence_ms, d.end_silence),
                        max_speech: ms(c.max_speech_ms, d.max_speech),
                        min_speech: ms(c.min_speech_ms, d.min_speech),
                        pre_roll: ms(c.pre_roll_ms, d.pre_roll),
                        no_speech_timeout: ms(c.no_speech_timeout_ms, d.no_speech_timeout),
                        vad_aggressiveness: c.vad_aggressiveness.unwrap_or(d.vad_aggressiveness),
                    };
                    if listen.end_silence < Duration::from_millis(200) || listen.end_silence > Duration::from_secs(10) {
                        p.push((key("end_silence_ms"), "must be between 200 and 10000".into()));
                    }
                    if listen.max_speech < Duration::from_secs(1) || listen.max_speech > Duration::from_secs(300) {
                        p.push((key("max_speech_ms"), "must be between 1000 and 300000".into()));
                    }
                    if listen.pre_roll > Duration::from_secs(2) {
                        p.push((key("pre_roll_ms"), "at most 2000".into()));
                    }
                    if listen.no_speech_timeout.is_zero() {
                        p.push((key("no_speech_timeout_ms"), "must be > 0".into()));
                    }
                    if listen.vad_aggressiveness > 3 {
                        p.push((key("vad_aggressiveness"), "0 to 3".into()));
                    }
                    let barge_in = match c.barge_in {
                        None | Some(BargeIn::Speech) | Some(BargeIn::Any) => true,
                        Some(BargeIn::None) => false,
                        Some(BargeIn::Dtmf) => {
                            p.push((key("barge_in"), "an ask step takes speech or none".into()));
                            true
                        }
                    };
                    StepKind::Ask { listen, barge_in, retries }
                }
            };
            steps.push(Step { name: c.name.clone(), prompts, retry_prompt: c.retry_prompt.clone(), next, kind });
        }
        if p.is_empty() {
            p.extend(when_loops(&steps));
        }
        if p.is_empty() { Ok(Program { steps }) } else { Err(p) }
    }

    /// Where step `i` can go on: the indices a call may enter next, with
    /// `steps.len()` for the end of the script (every index past the last
    /// step means the end too, and is given as `steps.len()`). `next` for
    /// play, ask and digits; a menu's options and its default; a `when`
    /// step's open, closed and holiday branches; a transfer's `on_failure`
    /// (a transfer that works ends the call, outside the script); none for
    /// goodbye and hangup, which end the script: the end. For reading the
    /// script as a graph (the report's funnel, the test call's greetings).
    pub fn successors(&self, i: usize) -> Vec<usize> {
        let end = self.steps.len();
        let Some(step) = self.steps.get(i) else { return Vec::new() };
        let mut out: Vec<usize> = match &step.kind {
            StepKind::Play { .. } | StepKind::Ask { .. } | StepKind::Digits { .. } => vec![step.next],
            StepKind::Menu { options, default, .. } => options.iter().map(|o| o.next).chain([*default]).collect(),
            StepKind::When { open, closed, holiday } => vec![*open, *closed, *holiday],
            StepKind::Transfer { on_failure, .. } => vec![*on_failure],
            StepKind::Goodbye | StepKind::Hangup => vec![end],
        };
        for n in &mut out {
            *n = (*n).min(end);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Some step branches on the schedule: the line needs one.
    pub fn uses_schedule(&self) -> bool {
        self.steps.iter().any(|s| matches!(s.kind, StepKind::When { .. }))
    }

    /// The transfer targets the script may REFER callers to.
    pub fn transfer_targets(&self) -> impl Iterator<Item = &str> {
        self.steps
            .iter()
            .flat_map(|s| match &s.kind {
                StepKind::Transfer { targets, .. } => targets.as_slice(),
                _ => &[],
            })
            .map(String::as_str)
    }

    /// Compile `[[step]]` tables from TOML text (tests and tools; the agent reads them from its config).
    pub fn from_toml(text: &str) -> Result<Program, ProgramError> {
        #[derive(Deserialize)]
        struct Steps {
            step: Vec<StepConfig>,
        }
        let steps: Steps = toml::from_str(text)?;
        Program::compile(&steps.step).map_err(ProgramError::Invalid)
    }

    /// Every prompt the script can play, for loading at start-up.
    pub fn prompts(&self) -> Vec<&str> {
        let mut v: Vec<&str> =
            self.steps.iter().flat_map(|s| s.prompts.iter().chain(s.retry_prompt.iter())).map(|s| s.as_str()).collect();
        v.sort();
        v.dedup();
        v
    }

    pub fn uses_voice(&self) -> bool {
        self.steps.iter().any(|s| match s.kind {
            StepKind::Ask { .. } => true,
            StepKind::Play { barge_in } => barge_in.on_speech(),
            _ => false,
        })
    }
}

/// The shipped default script: greeting; name and need by voice; callback
/// number (press 1 for caller ID), ZIP and urgency by keypad; goodbye.
pub fn default_steps() -> Vec<StepConfig> {
    let base = |name: &str, kind| StepConfig {
        name: name.into(),
        kind,
        prompt: Some(name.into()),
        prompts: vec![],
        next: None,
        barge_in: None,
        retries: None,
        retry_prompt: None,
        options: BTreeMap::new(),
        default: None,
        min_digits: None,
        max_digits: None,
        terminator: None,
        first_digit_timeout_ms: None,
        inter_digit_timeout_ms: None,
        validate: None,
        regex: None,
        caller_id_key: None,
        end_silence_ms: None,
        max_speech_ms: None,
        min_speech_ms: None,
        pre_roll_ms: None,
        no_speech_timeout_ms: None,
        vad_aggressiveness: None,
        open: None,
        closed: None,
        holiday: None,
        targets: vec![],
        timeout_ms: None,
        on_failure: None,
    };
    let option = |label: &str| MenuOptionConfig { label: label.into(), next: None };
    vec![
        StepConfig { barge_in: Some(BargeIn::Dtmf), ..base("greeting", StepKindName::Play) },
        StepConfig { retry_prompt: Some("sorry".into()), ..base("name", StepKindName::Ask) },
        StepConfig { retry_prompt: Some("sorry".into()), ..base("need", StepKindName::Ask) },
        StepConfig {
            validate: Some(ValidatorName::Phone),
            caller_id_key: Some("1".into()),
            retry_prompt: Some("sorry".into()),
            ..base("callback_number", StepKindName::Digits)
        },
        StepConfig {
            validate: Some(ValidatorName::Zip),
            retry_prompt: Some("sorry".into()),
            ..base("zip", StepKindName::Digits)
        },
        StepConfig {
            options: [("1", "emergency"), ("2", "this_week"), ("3", "quote")]
                .into_iter()
                .map(|(d, l)| (d.to_string(), option(l)))
                .collect(),
            retry_prompt: Some("sorry".into()),
            ..base("urgency", StepKindName::Menu)
        },
        base("goodbye", StepKindName::Goodbye),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_script_compiles_in_the_issue_order() {
        let p = Program::compile(&default_steps()).unwrap();
        let names: Vec<&str> = p.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["greeting", "name", "need", "callback_number", "zip", "urgency", "goodbye"]);
        assert_eq!(p.prompts(), ["callback_number", "goodbye", "greeting", "name", "need", "sorry", "urgency", "zip"]);
        assert!(p.uses_voice());
    }

    #[test]
    fn when_and_transfer_steps_compile_to_their_branches() {
        let p = Program::from_toml(
            "[[step]]\nname = \"hours\"\nkind = \"when\"\nopen = \"day\"\nclosed = \"night\"\n\
             [[step]]\nname = \"day\"\nkind = \"play\"\nprompt = \"greeting\"\nnext = \"bye\"\n\
             [[step]]\nname = \"night\"\nkind = \"transfer\"\ntargets = [\"sip:oncall@10.0.0.1\", \"tel:+15551230000\"]\non_failure = \"bye\"\n\
             [[step]]\nname = \"bye\"\nkind = \"goodbye\"\nprompt = \"goodbye\"\n",
        )
        .unwrap();
        assert!(matches!(p.steps[0].kind, StepKind::When { open: 1, closed: 2, holiday: 2 }));
        let StepKind::Transfer { targets, timeout, on_failure } = &p.steps[2].kind else { panic!() };
        assert_eq!((targets.len(), *timeout, *on_failure), (2, Duration::from_secs(20), 3));
        assert!(p.uses_schedule());
        assert_eq!(p.transfer_targets().collect::<Vec<_>>(), ["sip:oncall@10.0.0.1", "tel:+15551230000"]);
        assert!(p.steps[2].prompts.is_empty(), "the prompt before a transfer is optional");
    }

    #[test]
    fn bad_when_and_transfer_steps_are_reported() {
        let err = |toml: &str| match Program::from_toml(toml) {
            Err(ProgramError::Invalid(e)) => e,
            other => panic!("{other:?}"),
        };
        let e = err("[[step]]\nname = \"h\"\nkind = \"when\"\nopen = \"h2\"\nprompt = \"x\"\n\
                     [[step]]\nname = \"h2\"\nkind = \"when\"\nopen = \"h\"\nclosed = \"h\"\n");
        let keys: Vec<&str> = e.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["step[0].prompt", "step[0].closed"], "{e:?}");
        let e = err("[[step]]\nname = \"h\"\nkind = \"when\"\nopen = \"h2\"\nclosed = \"h2\"\n\
                     [[step]]\nname = \"h2\"\nkind = \"when\"\nopen = \"h\"\nclosed = \"h\"\n");
        assert_eq!(e[0].0, "step[0]", "a circle of when steps: {e:?}");
        let e = err("[[step]]\nname = \"t\"\nkind = \"transfer\"\ntargets = [\"sip:a@b\"]\non_failure = \"t\"\n");
        assert_eq!(e[0].0, "step[0]", "a transfer that retries itself with nothing played: {e:?}");
        Program::from_toml("[[step]]\nname = \"t\"\nkind = \"transfer\"\nprompt = \"connecting\"\ntargets = [\"sip:a@b\"]\non_failure = \"t\"\n")
            .expect("with a prompt each round, retrying is allowed");
        let e = err(
            "[[step]]\nname = \"t\"\nkind = \"transfer\"\ntargets = [\"http://x\", \"sip:a@b>x\", \"sip:ok@h\"]\ntimeout_ms = 10\non_failure = \"nope\"\n",
        );
        let keys: Vec<&str> = e.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["step[0].targets[0]", "step[0].targets[1]", "step[0].timeout_ms", "step[0].on_failure"],
            "{e:?}"
        );
        let e = err("[[step]]\nname = \"t\"\nkind = \"transfer\"\n");
        assert_eq!(e[0].0, "step[0].targets");
    }

    #[test]
    fn bad_steps_are_reported_with_their_key() {
        let mut s = default_steps();
        s[1].next = Some("nowhere".into());
        s[3].regex = Some("(".into());
        s[3].validate = Some(ValidatorName::Regex);
        s[4].name = "name".into();
        s[5].options.insert("12".into(), MenuOptionConfig { label: "x".into(), next: None });
        s[6].prompt = None;
        let errs = Program::compile(&s).unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["step[1].next", "step[3].regex", "step[4].name", "step[5].options", "step[6].prompt"],
            "{errs:?}"
        );
    }

    #[test]
    fn validators() {
        assert!(Validator::Phone.accepts("5551234567"));
        assert!(Validator::Phone.accepts("15551234567"));
        assert!(!Validator::Phone.accepts("555123456"));
        assert!(!Validator::Phone.accepts("555123456*"));
        assert!(Validator::Zip.accepts("94110"));
        assert!(!Validator::Zip.accepts("9411"));
        let r = Validator::Regex(regex::Regex::new("^(?:[0-9]{4})$").unwrap());
        assert!(r.accepts("1234") && !r.accepts("12345"));
    }

    #[test]
    fn from_toml_says_whether_the_text_or_a_step_is_wrong() {
        let err = Program::from_toml("[[step]\nname = 1").unwrap_err();
        assert!(matches!(err, ProgramError::Toml(_)), "{err:?}");
        let err =
            Program::from_toml("[[step]]\nname = \"a\"\nkind = \"play\"\nprompt = \"a\"\nnext = \"b\"\n").unwrap_err();
        let ProgramError::Invalid(problems) = &err else { panic!("{err:?}") };
        assert_eq!(problems, &[("step[0].next".to_string(), "no step is named \"b\"".to_string())]);
        assert_eq!(err.to_string(), "step[0].next: no step is named \"b\"");
    }
}
