//! The intake script, run for one call as a Sans-IO state machine.
//!
//! Inputs are `handle_*` calls with the current time: answered, a prompt
//! finished, a key press, a 20 ms frame of the caller's audio, a timeout,
//! the call ended. Outputs come from `poll_action` (play, stop playback,
//! save a recording, hang up) and `poll_timeout`. It never sees SIP, RTP, a
//! clock or a file, so a whole script runs in a test faster than real time.
//!
//! The answers end up in the lead under each step's name.

use crate::intake::endpoint::{EndpointEvent, Endpointer, FRAME_SAMPLES, SpokenAnswer};
use crate::intake::program::{BargeIn, Program, Step, StepKind};
use crate::media::vad::VoiceDetector;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptAction {
    Play(String),
    StopPlayback,
    /// Write this answer's audio to `file` (a name under the recordings directory).
    SaveRecording { file: String, samples: Vec<i16> },
    Hangup,
}

/// One answer, as it appears in the lead under `answers.<step>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// `voice`, `digits` or `menu`.
    pub kind: &'static str,
    /// `answered`; `no_input` or `invalid` after the last retry; `partial` when the caller hung up mid-answer.
    pub status: &'static str,
    /// The keys entered (digits, menu), or the caller's own number for the caller-ID option.
    pub value: Option<String>,
    /// menu: the chosen option's label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// digits: the caller chose "the number I am calling from".
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub from_caller_id: bool,
    /// voice: the WAV file, relative to the recordings directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
    /// voice: from the first to the last speech frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speech_ms: Option<u64>,
    /// How many times the question was asked.
    pub attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotStarted,
    Running,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Playing the step's prompts.
    Prompting,
    /// Prompts done: waiting for keys or for speech to start.
    Waiting,
    /// ask: the caller is talking.
    Speaking,
}

/// Per-call facts the script needs.
#[derive(Debug, Clone)]
pub struct ScriptContext {
    /// Recording files are named `<prefix>-<step>.wav` (the lead id).
    pub recording_prefix: String,
    /// The number the caller is calling from, for the caller-ID option.
    pub caller_number: Option<String>,
}

pub struct Script {
    program: Arc<Program>,
    vad: Option<Box<dyn VoiceDetector>>,
    ctx: ScriptContext,
    index: usize,
    state: State,
    phase: Phase,
    attempts: u32,
    queue: VecDeque<String>,
    playing: Option<String>,
    keys: String,
    /// A key that interrupted a `play` step, handed to the next step.
    typeahead: Option<char>,
    deadline: Option<Instant>,
    endpointer: Endpointer,
    /// When the caller's audio last said "speech", for callers whose phone stops RTP in silence.
    last_speech_at: Option<Instant>,
    frame: Vec<i16>,
    answers: BTreeMap<String, Answer>,
    actions: VecDeque<ScriptAction>,
}

impl Script {
    /// `vad` is needed only when the program listens for speech.
    pub fn new(program: Arc<Program>, vad: Option<Box<dyn VoiceDetector>>, ctx: ScriptContext) -> Script {
        Script {
            program,
            vad,
            ctx,
            index: 0,
            state: State::NotStarted,
            phase: Phase::Prompting,
            attempts: 0,
            queue: VecDeque::new(),
            playing: None,
            keys: String::new(),
            typeahead: None,
            deadline: None,
            endpointer: Endpointer::default(),
            last_speech_at: None,
            frame: Vec::with_capacity(FRAME_SAMPLES),
            answers: BTreeMap::new(),
            actions: VecDeque::new(),
        }
    }

    fn step(&self) -> Option<&Step> {
        self.program.steps.get(self.index)
    }

    /// The call was answered and media flows: run the first step.
    pub fn handle_answered(&mut self, now: Instant) {
        if self.state == State::NotStarted {
            self.state = State::Running;
            self.enter(now, 0);
        }
    }

    /// A prompt finished playing.
    pub fn handle_prompt_finished(&mut self, now: Instant, prompt: &str) {
        if self.state != State::Running || self.playing.as_deref() != Some(prompt) {
            return;
        }
        self.playing = None;
        if let Some(next) = self.queue.pop_front() {
            self.play(next);
            return;
        }
        self.prompts_done(now);
    }

    /// A key press (already de-duplicated across RFC 4733, INFO and in-band).
    pub fn handle_dtmf(&mut self, now: Instant, digit: char) {
        if self.state != State::Running {
            return;
        }
        let program = self.program.clone();
        let Some(step) = program.steps.get(self.index) else { return };
        match step.kind {
            StepKind::Play { barge_in } if barge_in.on_dtmf() && self.phase == Phase::Prompting => {
                self.typeahead = Some(digit);
                self.stop_prompts();
                let next = step.next;
                self.enter(now, next);
            }
            StepKind::Menu { .. } | StepKind::Digits { .. } => {
                if self.phase == Phase::Prompting {
                    self.stop_prompts();
                    self.phase = Phase::Waiting;
                }
                self.key(now, digit);
            }
            _ => {}
        }
    }

    /// Caller audio, decoded to 8 kHz linear; any length (re-framed to 20 ms here).
    pub fn handle_audio(&mut self, now: Instant, samples: &[i16]) {
        if self.state != State::Running || self.vad.is_none() {
            return;
        }
        for s in samples {
            self.frame.push(*s);
            if self.frame.len() == FRAME_SAMPLES {
                let frame = std::mem::take(&mut self.frame);
                self.handle_frame(now, &frame);
                self.frame = frame;
                self.frame.clear();
            }
        }
    }

    fn handle_frame(&mut self, now: Instant, frame: &[i16]) {
        let Some(vad) = self.vad.as_mut() else { return };
        let speech = vad.is_speech(frame);
        if speech {
            self.last_speech_at = Some(now);
        }
        let program = self.program.clone();
        let Some(step) = program.steps.get(self.index) else { return };
        let (next, barge_in) = (step.next, step.kind.clone());
        // A play step with speech barge-in watches for speech without recording.
        if let StepKind::Play { barge_in } = barge_in
            && barge_in.on_speech()
            && self.phase == Phase::Prompting
        {
            if !self.endpointer.is_armed() {
                self.endpointer.arm(Default::default());
            }
            if let Some(EndpointEvent::SpeechStarted) = self.endpointer.handle_frame(frame, speech) {
                self.stop_prompts();
                // Leave the endpointer in speech: a following ask step picks the answer up.
                self.enter(now, next);
            }
            return;
        }
        match self.endpointer.handle_frame(frame, speech) {
            Some(EndpointEvent::SpeechStarted) => {
                if self.phase == Phase::Prompting {
                    self.stop_prompts();
                }
                self.phase = Phase::Speaking;
                self.speaking_deadline(now);
            }
            Some(EndpointEvent::Answer(a)) => self.voice_answer(now, a),
            None => {
                if self.phase == Phase::Speaking {
                    self.speaking_deadline(now);
                }
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.deadline else { return };
        if now < deadline || self.state != State::Running {
            return;
        }
        self.deadline = None;
        let program = self.program.clone();
        let Some(step) = program.steps.get(self.index) else { return };
        match (&step.kind, self.phase) {
            (StepKind::Ask { .. }, Phase::Speaking) => {
                // Audio stopped arriving mid-answer: end it as if the silence had been heard.
                if let Some(a) = self.endpointer.finish() {
                    self.voice_answer(now, a);
                }
            }
            (StepKind::Ask { .. }, Phase::Waiting) => self.retry_or(now, "no_input"),
            (StepKind::Menu { .. } | StepKind::Digits { .. }, Phase::Waiting) => {
                if self.keys.is_empty() {
                    self.retry_or(now, "no_input")
                } else {
                    self.keys_done(now)
                }
            }
            _ => {}
        }
    }

    /// The call ended (either side). An answer in progress is kept as `partial`.
    pub fn handle_call_ended(&mut self, _now: Instant) {
        if self.state != State::Running {
            self.state = State::Done;
            return;
        }
        self.state = State::Done;
        self.actions.retain(|a| matches!(a, ScriptAction::SaveRecording { .. }));
        self.deadline = None;
        let program = self.program.clone();
        let Some(step) = program.steps.get(self.index) else { return };
        let name = step.name.clone();
        match step.kind {
            StepKind::Ask { .. } => {
                if let Some(a) = self.endpointer.finish() {
                    let answer = self.save_voice(&name, a, "partial");
                    self.answers.insert(name, answer);
                }
            }
            StepKind::Digits { .. } | StepKind::Menu { .. } if !self.keys.is_empty() => {
                let kind = if matches!(step.kind, StepKind::Menu { .. }) { "menu" } else { "digits" };
                let answer = Answer {
                    kind,
                    status: "partial",
                    value: Some(self.keys.clone()),
                    label: None,
                    from_caller_id: false,
                    recording: None,
                    speech_ms: None,
                    attempts: self.attempts,
                };
                self.answers.insert(name, answer);
            }
            _ => {}
        }
    }

    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    pub fn poll_action(&mut self) -> Option<ScriptAction> {
        self.actions.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    pub fn answers(&self) -> &BTreeMap<String, Answer> {
        &self.answers
    }

    /// Whether the script ran to its end.
    pub fn completed(&self) -> bool {
        self.index >= self.program.steps.len()
    }

    /// The name of the step in progress (`ringing` before the first).
    pub fn current_step(&self) -> &str {
        match (self.state, self.step()) {
            (State::NotStarted, _) => "ringing",
            (_, Some(s)) => &s.name,
            _ => "hangup",
        }
    }

    /// The lead's outcome: `completed`, `not_answered` (the script never ran),
    /// or `hung_up_during_<step>`.
    pub fn outcome(&self) -> String {
        if self.completed() {
            return "completed".into();
        }
        match (self.state, self.step()) {
            (State::NotStarted, _) => "not_answered".into(),
            (_, Some(s)) if matches!(s.kind, StepKind::Hangup) => "completed".into(),
            (_, Some(s)) => format!("hung_up_during_{}", s.name),
            _ => "completed".into(),
        }
    }

    // ---- internals ----

    fn play(&mut self, prompt: String) {
        self.playing = Some(prompt.clone());
        self.actions.push_back(ScriptAction::Play(prompt));
    }

    fn stop_prompts(&mut self) {
        self.queue.clear();
        if self.playing.take().is_some() {
            self.actions.push_back(ScriptAction::StopPlayback);
        }
    }

    /// Begin step `index` (or end the script past the last one).
    fn enter(&mut self, now: Instant, index: usize) {
        self.index = index;
        self.attempts = 1;
        self.keys.clear();
        self.deadline = None;
        let Some(step) = self.step() else {
            self.finish_script();
            return;
        };
        let (prompts, kind) = (step.prompts.clone(), step.kind.clone());
        match kind {
            StepKind::Hangup => {
                self.finish_script();
                return;
            }
            StepKind::Ask { listen, barge_in, .. } => {
                if barge_in || self.endpointer.in_speech() {
                    self.endpointer.arm(listen);
                } else {
                    self.endpointer.disarm();
                }
            }
            _ => {
                if !matches!(kind, StepKind::Play { barge_in: BargeIn::Speech | BargeIn::Any }) {
                    self.endpointer.disarm();
                }
            }
        }
        if let StepKind::Ask { listen, .. } = kind {
            if let Some(vad) = self.vad.as_mut() {
                vad.set_aggressiveness(listen.vad_aggressiveness);
            }
            if self.endpointer.in_speech() {
                // The caller was already talking (barged in on the step before): this is the answer.
                self.queue.clear();
                self.phase = Phase::Speaking;
                self.speaking_deadline(now);
                return;
            }
        }
        self.start_prompts(now, prompts);
        if let Some(d) = self.typeahead.take()
            && matches!(kind, StepKind::Menu { .. } | StepKind::Digits { .. })
        {
            self.stop_prompts();
            self.phase = Phase::Waiting;
            self.key(now, d);
        }
    }

    fn start_prompts(&mut self, now: Instant, prompts: Vec<String>) {
        self.queue = prompts.into();
        self.phase = Phase::Prompting;
        match self.queue.pop_front() {
            Some(p) => self.play(p),
            None => self.prompts_done(now),
        }
    }

    fn prompts_done(&mut self, now: Instant) {
        let program = self.program.clone();
        let Some(step) = program.steps.get(self.index) else { return };
        let next = step.next;
        match step.kind.clone() {
            StepKind::Play { .. } => self.enter(now, next),
            StepKind::Goodbye | StepKind::Hangup => self.finish_script(),
            StepKind::Menu { timeouts, .. } | StepKind::Digits { timeouts, .. } => {
                self.phase = Phase::Waiting;
                self.deadline = Some(now + if self.keys.is_empty() { timeouts.first } else { timeouts.inter });
            }
            StepKind::Ask { listen, .. } => {
                self.phase = Phase::Waiting;
                self.endpointer.arm(listen);
                self.deadline = Some(now + listen.no_speech_timeout);
            }
        }
    }

    fn finish_script(&mut self) {
        self.stop_prompts();
        self.endpointer.disarm();
        self.deadline = None;
        self.index = self.program.steps.len();
        self.state = State::Done;
        self.actions.push_back(ScriptAction::Hangup);
    }

    fn speaking_deadline(&mut self, now: Instant) {
        if let Some(StepKind::Ask { listen, .. }) = self.step().map(|s| &s.kind) {
            let since = self.last_speech_at.unwrap_or(now);
            self.deadline = Some(since + listen.end_silence + Duration::from_millis(500));
        }
    }

    fn key(&mut self, now: Instant, digit: char) {
        let program = self.program.clone();
        let Some(step) = program.steps.get(self.index) else { return };
        match step.kind.clone() {
            StepKind::Menu { timeouts, .. } => {
                self.keys.push(digit);
                let _ = timeouts;
                self.keys_done(now);
            }
            StepKind::Digits { max, terminator, timeouts, .. } => {
                if Some(digit) == terminator {
                    self.keys_done(now);
                    return;
                }
                self.keys.push(digit);
                if self.keys.len() >= max {
                    self.keys_done(now);
                } else {
                    self.deadline = Some(now + timeouts.inter);
                }
            }
            _ => {}
        }
    }

    /// Entry over (terminator, max length, inter-digit timeout): check it.
    fn keys_done(&mut self, now: Instant) {
        self.deadline = None;
        let program = self.program.clone();
        let Some(step) = program.steps.get(self.index) else { return };
        let name = step.name.clone();
        let keys = std::mem::take(&mut self.keys);
        match step.kind.clone() {
            StepKind::Menu { options, .. } => {
                match options.iter().find(|o| keys.starts_with(o.digit) && keys.len() == 1) {
                    Some(o) => {
                        self.answers.insert(
                            name,
                            Answer {
                                kind: "menu",
                                status: "answered",
                                value: Some(keys),
                                label: Some(o.label.clone()),
                                from_caller_id: false,
                                recording: None,
                                speech_ms: None,
                                attempts: self.attempts,
                            },
                        );
                        let next = o.next;
                        self.enter(now, next);
                    }
                    None => {
                        self.keys = keys;
                        self.retry_or(now, "invalid");
                    }
                }
            }
            StepKind::Digits { min, max, validator, caller_id_key, .. } => {
                if keys.is_empty() {
                    self.retry_or(now, "no_input");
                    return;
                }
                let caller_id = caller_id_key.is_some_and(|k| keys.len() == 1 && keys.starts_with(k));
                let value = if caller_id {
                    self.ctx.caller_number.clone().filter(|n| validator.accepts(n.trim_start_matches('+')))
                } else {
                    Some(keys.clone()).filter(|k| (min..=max).contains(&k.len()) && validator.accepts(k))
                };
                match value {
                    Some(value) => {
                        self.answers.insert(
                            name,
                            Answer {
                                kind: "digits",
                                status: "answered",
                                value: Some(value),
                                label: None,
                                from_caller_id: caller_id,
                                recording: None,
                                speech_ms: None,
                                attempts: self.attempts,
                            },
                        );
                        let next = self.step().map(|s| s.next).unwrap_or(usize::MAX);
                        self.enter(now, next);
                    }
                    None => {
                        self.keys = keys;
                        self.retry_or(now, "invalid");
                    }
                }
            }
            _ => {}
        }
    }

    fn voice_answer(&mut self, now: Instant, a: SpokenAnswer) {
        let program = self.program.clone();
        let Some(step) = program.steps.get(self.index) else { return };
        let (name, next) = (step.name.clone(), step.next);
        let answer = self.save_voice(&name, a, "answered");
        self.answers.insert(name, answer);
        self.enter(now, next);
    }

    fn save_voice(&mut self, name: &str, a: SpokenAnswer, status: &'static str) -> Answer {
        let file = format!("{}-{name}.wav", self.ctx.recording_prefix);
        self.actions.push_back(ScriptAction::SaveRecording { file: file.clone(), samples: a.samples });
        Answer {
            kind: "voice",
            status,
            value: None,
            label: None,
            from_caller_id: false,
            recording: Some(file),
            speech_ms: Some(a.speech_ms),
            attempts: self.attempts,
        }
    }

    /// No answer or a bad one: ask again, or record the failure and move on.
    fn retry_or(&mut self, now: Instant, failure: &'static str) {
        let program = self.program.clone();
        let Some(step) = program.steps.get(self.index) else { return };
        let (retries, kind, fallback) = match &step.kind {
            StepKind::Menu { retries, default, .. } => (*retries, "menu", *default),
            StepKind::Digits { retries, .. } => (*retries, "digits", step.next),
            StepKind::Ask { retries, .. } => (*retries, "voice", step.next),
            _ => return,
        };
        let name = step.name.clone();
        if self.attempts <= retries {
            self.attempts += 1;
            self.keys.clear();
            let mut prompts: Vec<String> = step.retry_prompt.iter().cloned().collect();
            prompts.extend(step.prompts.iter().cloned());
            self.endpointer.disarm();
            if let StepKind::Ask { listen, barge_in: true, .. } = step.kind {
                self.endpointer.arm(listen);
            }
            self.start_prompts(now, prompts);
            return;
        }
        let value = Some(std::mem::take(&mut self.keys)).filter(|k| !k.is_empty());
        let answer = Answer {
            kind,
            status: failure,
            value,
            label: None,
            from_caller_id: false,
            recording: None,
            speech_ms: None,
            attempts: self.attempts,
        };
        self.answers.insert(name, answer);
        self.enter(now, fallback);
    }
}
