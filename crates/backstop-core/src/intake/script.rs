//! The intake script, run for one call as a Sans-IO state machine.
//!
//! Inputs are `handle_*` calls with the current time: answered, a prompt
//! finished, a key press, a 20 ms frame of the caller's audio, a timeout,
//! the call ended. Outputs come from `poll_action` (play, stop playback,
//! save a recording, hang up) and `poll_timeout`. It never sees SIP, RTP, a
//! clock or a file, so a whole script runs in a test faster than real time.
//!
//! The answers ([`Answer`], in `intake::answer`) end up in the lead under
//! each step's name.

pub use crate::intake::answer::{Answer, AnswerKind, AnswerStatus};
use crate::intake::endpoint::{EndpointEvent, Endpointer, FRAME_SAMPLES, SpokenAnswer};
use crate::intake::lead::Outcome;
use crate::intake::program::{BargeIn, Program, Step, StepKind};
use crate::media::g711::Law;
use crate::media::recorder::Audio;
use crate::media::vad::VoiceDetector;
use crate::route::schedule::ScheduleState;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptAction {
    Play(String),
    StopPlayback,
    /// The next settled block of the answer being spoken, `offset` samples
    /// into it (0: a new answer): written ahead to disk, so a long answer is
    /// not held in memory (see `Endpointer::take_spill`).
    AnswerAudio {
        offset: usize,
        samples: Audio,
    },
    /// Write this answer's audio to `file` (a name under the recordings directory).
    SaveRecording {
        file: String,
        /// The answer's audio after the first `spilled` samples, which came
        /// before as [`ScriptAction::AnswerAudio`] blocks.
        samples: Audio,
        spilled: usize,
        /// The `ask` step it answers.
        step: String,
    },
    /// A `transfer` step: REFER the caller to these targets in turn, each
    /// given `timeout`; answer with [`Script::handle_transfer_done`].
    Transfer {
        targets: Vec<String>,
        timeout: Duration,
    },
    Hangup,
}

/// Why the script is saying goodbye on its own, outside the steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// No speech and no key for the silence limit.
    Silent,
    /// A junk caller sent away with a short goodbye.
    Declined,
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
    /// The line's schedule state when the call arrived, for `when` steps
    /// (none: the line has no schedule, and `when` takes `open`).
    pub schedule: Option<ScheduleState>,
    /// End a call with no speech and no key for this long (`[junk] silent_after_secs`).
    pub silent_after: Option<Duration>,
    /// Played to silent callers and junk callers sent away (`[junk] goodbye_prompt`).
    pub goodbye_prompt: String,
}

impl ScriptContext {
    /// Facts for a call with no schedule and no silence limit.
    pub fn new(recording_prefix: String, caller_number: Option<String>) -> ScriptContext {
        ScriptContext {
            recording_prefix,
            caller_number,
            schedule: None,
            silent_after: None,
            goodbye_prompt: "goodbye".into(),
        }
    }
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
    /// The silence clock: how long the caller has been waited on (prompts
    /// playing do not count) since the last speech or key, and when that
    /// was last brought up to date.
    quiet: Duration,
    quiet_mark: Option<Instant>,
    closing: Option<Closing>,
    /// A transfer step is waiting for its outcome.
    transferring: bool,
    transferred: bool,
    /// Recordings saved so far per step: a step answered again (a script
    /// that loops back) saves to a file of its own, so no answer's audio
    /// or transcript is mistaken for another's.
    saved: BTreeMap<String, u32>,
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
            quiet: Duration::ZERO,
            quiet_mark: None,
            closing: None,
            transferring: false,
            transferred: false,
            saved: BTreeMap::new(),
        }
    }

    fn step(&self) -> Option<&Step> {
        self.program.steps.get(self.index)
    }

    /// The call was answered and media flows: run the first step.
    pub fn handle_answered(&mut self, now: Instant) {
        if self.state == State::NotStarted {
            self.state = State::Running;
            self.quiet_mark = Some(now);
            self.enter(now, 0);
        }
    }

    /// The call was answered only to send a junk caller away: the goodbye
    /// prompt, then hang up; the steps never run.
    pub fn decline(&mut self, now: Instant) {
        if self.state == State::NotStarted {
            self.state = State::Running;
            self.close(now, Closing::Declined);
        }
    }

    /// What the `transfer` step's REFERs came to: the caller was handed
    /// over (the call ends, and the script with it), or no target took the
    /// call and the script goes on at the step's `on_failure`.
    /// A target that took the call late (after the script went on to
    /// `on_failure`) ends the script all the same.
    pub fn handle_transfer_done(&mut self, now: Instant, transferred: bool) {
        if self.state != State::Running {
            return;
        }
        self.tick(now);
        if transferred {
            self.stop_prompts();
            self.endpointer.disarm();
            self.closing = None;
            self.transferring = false;
            self.transferred = true;
            self.state = State::Done;
            self.deadline = None;
            return;
        }
        if !self.transferring {
            return;
        }
        self.transferring = false;
        self.quiet = Duration::ZERO;
        if let Some(StepKind::Transfer { on_failure, .. }) = self.step().map(|s| &s.kind) {
            let next = *on_failure;
            self.enter(now, next);
        }
    }

    /// A prompt finished playing.
    pub fn handle_prompt_finished(&mut self, now: Instant, prompt: &str) {
        if self.state != State::Running || self.playing.as_deref() != Some(prompt) {
            return;
        }
        self.tick(now);
        self.playing = None;
        if let Some(next) = self.queue.pop_front() {
            self.play(next);
            return;
        }
        self.prompts_done(now);
    }

    /// A key press (already de-duplicated across RFC 4733, INFO and in-band).
    pub fn handle_dtmf(&mut self, now: Instant, digit: char) {
        if self.state != State::Running || self.closing.is_some() || self.transferring {
            return;
        }
        self.tick(now);
        self.quiet = Duration::ZERO;
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

    /// The call's codec, once known: answers are held in it (see [`Audio`]).
    pub fn set_law(&mut self, law: Law) {
        self.endpointer.set_law(law);
    }

    /// Caller audio, decoded to 8 kHz linear; any length (re-framed to 20 ms here).
    pub fn handle_audio(&mut self, now: Instant, samples: &[i16]) {
        if self.state != State::Running || self.vad.is_none() || self.closing.is_some() || self.transferring {
            return;
        }
        for s in samples {
            self.frame.push(*s);
            if self.frame.len() == FRAME_SAMPLES {
                let frame = std::mem::take(&mut self.frame);
                self.handle_frame(now, &frame);
                // A long answer's settled audio goes ahead to disk instead of being held.
                if let Some((offset, samples)) = self.endpointer.take_spill() {
                    self.actions.push_back(ScriptAction::AnswerAudio { offset, samples });
                }
                self.frame = frame;
                self.frame.clear();
            }
        }
    }

    fn handle_frame(&mut self, now: Instant, frame: &[i16]) {
        self.tick(now);
        let program = self.program.clone();
        let Some(step) = program.steps.get(self.index) else { return };
        let (next, barge_in) = (step.next, &step.kind);
        let watch_barge_in =
            matches!(barge_in, StepKind::Play { barge_in } if barge_in.on_speech()) && self.phase == Phase::Prompting;
        if watch_barge_in && !self.endpointer.is_armed() {
            self.endpointer.arm(Default::default());
        }
        // The detector runs only while someone listens (an answer, or the
        // silence clock while we wait on the caller); otherwise the frame is just pre-roll.
        let listening = self.endpointer.is_armed() || (self.silence_counts() && self.phase == Phase::Waiting);
        let speech = listening && self.vad.as_mut().is_some_and(|v| v.is_speech(frame));
        if speech {
            self.last_speech_at = Some(now);
            self.tick(now);
            self.quiet = Duration::ZERO;
        }
        // A play step with speech barge-in watches for speech without recording.
        if watch_barge_in {
            if self.endpointer.handle_frame(frame, speech) == Some(EndpointEvent::SpeechStarted) {
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
            Some(EndpointEvent::Discarded) => {
                if let StepKind::Ask { listen, .. } = barge_in
                    && self.phase == Phase::Speaking
                {
                    self.phase = Phase::Waiting;
                    self.deadline = Some(now + listen.no_speech_timeout);
                }
            }
            None => {
                if self.phase == Phase::Speaking {
                    self.speaking_deadline(now);
                }
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        if self.silence_counts() && self.ctx.silent_after.is_some_and(|limit| self.quiet >= limit) {
            self.close(now, Closing::Silent);
            return;
        }
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
            (StepKind::Ask { .. }, Phase::Waiting) => self.retry_or(now, AnswerStatus::NoInput),
            (StepKind::Menu { .. } | StepKind::Digits { .. }, Phase::Waiting) => {
                if self.keys.is_empty() {
                    self.retry_or(now, AnswerStatus::NoInput)
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
        self.actions.retain(|a| matches!(a, ScriptAction::SaveRecording { .. } | ScriptAction::AnswerAudio { .. }));
        self.deadline = None;
        let program = self.program.clone();
        let Some(step) = program.steps.get(self.index) else { return };
        let name = step.name.clone();
        match step.kind {
            StepKind::Ask { .. } => {
                if let Some(a) = self.endpointer.finish() {
                    let answer = self.save_voice(&name, a, AnswerStatus::Partial);
                    self.answers.insert(name, answer);
                }
            }
            StepKind::Digits { .. } | StepKind::Menu { .. } if !self.keys.is_empty() => {
                let kind =
                    if matches!(step.kind, StepKind::Menu { .. }) { AnswerKind::Menu } else { AnswerKind::Digits };
                let answer = Answer::new(kind, AnswerStatus::Partial, Some(self.keys.clone()), self.attempts);
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
        match (self.deadline, self.silence_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the silence clock runs now: the steps run and wait on the
    /// caller (not while a prompt plays, nor while saying goodbye or transferring).
    fn silence_counts(&self) -> bool {
        self.state == State::Running
            && self.ctx.silent_after.is_some()
            && self.closing.is_none()
            && !self.transferring
            && self.phase != Phase::Prompting
    }

    /// Bring the silence clock up to `now`: the time since the last update
    /// counts if the script was waiting on the caller all along (the phase
    /// only changes inside a `handle_*` call, each of which ticks first).
    fn tick(&mut self, now: Instant) {
        if let Some(mark) = self.quiet_mark
            && self.silence_counts()
        {
            self.quiet += now.saturating_duration_since(mark);
        }
        self.quiet_mark = Some(now);
    }

    /// When the caller will have been silent too long, if the clock runs.
    fn silence_deadline(&self) -> Option<Instant> {
        if !self.silence_counts() {
            return None;
        }
        Some(self.quiet_mark? + self.ctx.silent_after?.saturating_sub(self.quiet))
    }

    /// The script hung up on a caller who said and pressed nothing.
    pub fn silent(&self) -> bool {
        self.closing == Some(Closing::Silent)
    }

    /// The script it runs.
    pub fn program(&self) -> &Program {
        &self.program
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

    /// The lead's outcome as far as the script knows: completed, not answered
    /// (the script never ran), or hung up during a step.
    pub fn outcome(&self) -> Outcome {
        match self.closing {
            Some(Closing::Silent) => return Outcome::Silent,
            Some(Closing::Declined) => return Outcome::Declined,
            None if self.transferred => return Outcome::Transferred,
            None => {}
        }
        if self.completed() {
            return Outcome::Completed;
        }
        match (self.state, self.step()) {
            (State::NotStarted, _) => Outcome::NotAnswered,
            (_, Some(s)) if matches!(s.kind, StepKind::Hangup) => Outcome::Completed,
            (_, Some(s)) => Outcome::HungUpDuring(s.name.clone()),
            _ => Outcome::Completed,
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
        let program = self.program.clone();
        let Some(step) = program.steps.get(index) else {
            self.finish_script();
            return;
        };
        let (prompts, kind) = (step.prompts.clone(), &step.kind);
        match kind {
            StepKind::Hangup => {
                self.finish_script();
                return;
            }
            StepKind::When { open, closed, holiday } => {
                let next = match self.ctx.schedule {
                    None | Some(ScheduleState::Open) => *open,
                    Some(ScheduleState::Closed) => *closed,
                    Some(ScheduleState::Holiday) => *holiday,
                };
                // Compilation refuses circles of `when` steps, so this recursion ends.
                self.enter(now, next);
                return;
            }
            StepKind::Ask { listen, barge_in, .. } => {
                if *barge_in || self.endpointer.in_speech() {
                    self.endpointer.arm(*listen);
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
        if self.closing.is_some() {
            self.finish_script();
            return;
        }
        let program = self.program.clone();
        let Some(step) = program.steps.get(self.index) else { return };
        let next = step.next;
        match &step.kind {
            StepKind::Play { .. } => self.enter(now, next),
            StepKind::Goodbye | StepKind::Hangup => self.finish_script(),
            StepKind::When { .. } => {}
            StepKind::Transfer { targets, timeout, .. } => {
                self.phase = Phase::Waiting;
                self.transferring = true;
                self.actions.push_back(ScriptAction::Transfer { targets: targets.clone(), timeout: *timeout });
            }
            StepKind::Menu { timeouts, .. } | StepKind::Digits { timeouts, .. } => {
                self.phase = Phase::Waiting;
                self.deadline = Some(now + if self.keys.is_empty() { timeouts.first } else { timeouts.inter });
            }
            StepKind::Ask { listen, .. } => {
                self.phase = Phase::Waiting;
                self.endpointer.arm(*listen);
                self.deadline = Some(now + listen.no_speech_timeout);
            }
        }
    }

    /// Say goodbye outside the steps (silence, a junk caller), then hang up.
    fn close(&mut self, now: Instant, why: Closing) {
        self.stop_prompts();
        self.endpointer.disarm();
        self.deadline = None;
        self.closing = Some(why);
        let prompt = self.ctx.goodbye_prompt.clone();
        self.start_prompts(now, vec![prompt]);
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
        match &step.kind {
            StepKind::Menu { timeouts, .. } => {
                self.keys.push(digit);
                let _ = timeouts;
                self.keys_done(now);
            }
            StepKind::Digits { max, terminator, timeouts, .. } => {
                if Some(digit) == *terminator {
                    self.keys_done(now);
                    return;
                }
                self.keys.push(digit);
                if self.keys.len() >= *max {
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
        match &step.kind {
            StepKind::Menu { options, .. } => {
                match options.iter().find(|o| keys.starts_with(o.digit) && keys.len() == 1) {
                    Some(o) => {
                        let answer = Answer::new(AnswerKind::Menu, AnswerStatus::Answered, Some(keys), self.attempts);
                        self.answers.insert(name, Answer { label: Some(o.label.clone()), ..answer });
                        let next = o.next;
                        self.enter(now, next);
                    }
                    None => {
                        self.keys = keys;
                        self.retry_or(now, AnswerStatus::Invalid);
                    }
                }
            }
            StepKind::Digits { min, max, validator, caller_id_key, .. } => {
                if keys.is_empty() {
                    self.retry_or(now, AnswerStatus::NoInput);
                    return;
                }
                let caller_id = caller_id_key.is_some_and(|k| keys.len() == 1 && keys.starts_with(k));
                let value = if caller_id {
                    self.ctx.caller_number.clone().filter(|n| validator.accepts(n.trim_start_matches('+')))
                } else {
                    Some(keys.clone()).filter(|k| (*min..=*max).contains(&k.len()) && validator.accepts(k))
                };
                match value {
                    Some(value) => {
                        let answer =
                            Answer::new(AnswerKind::Digits, AnswerStatus::Answered, Some(value), self.attempts);
                        self.answers.insert(name, Answer { from_caller_id: caller_id, ..answer });
                        let next = self.step().map(|s| s.next).unwrap_or(usize::MAX);
                        self.enter(now, next);
                    }
                    None => {
                        self.keys = keys;
                        self.retry_or(now, AnswerStatus::Invalid);
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
        let answer = self.save_voice(&name, a, AnswerStatus::Answered);
        self.answers.insert(name, answer);
        self.enter(now, next);
    }

    fn save_voice(&mut self, name: &str, a: SpokenAnswer, status: AnswerStatus) -> Answer {
        let n = self.saved.entry(name.to_string()).or_insert(0);
        *n += 1;
        let file = match *n {
            1 => format!("{}-{name}.wav", self.ctx.recording_prefix),
            n => format!("{}-{name}-{n}.wav", self.ctx.recording_prefix),
        };
        self.actions.push_back(ScriptAction::SaveRecording {
            file: file.clone(),
            samples: a.samples,
            spilled: a.spilled,
            step: name.to_string(),
        });
        Answer {
            recording: Some(file),
            speech_ms: Some(a.speech_ms),
            ..Answer::new(AnswerKind::Voice, status, None, self.attempts)
        }
    }

    /// No answer or a bad one: ask again, or record the failure and move on.
    fn retry_or(&mut self, now: Instant, failure: AnswerStatus) {
        let program = self.program.clone();
        let Some(step) = program.steps.get(self.index) else { return };
        let (retries, kind, fallback) = match &step.kind {
            StepKind::Menu { retries, default, .. } => (*retries, AnswerKind::Menu, *default),
            StepKind::Digits { retries, .. } => (*retries, AnswerKind::Digits, step.next),
            StepKind::Ask { retries, .. } => (*retries, AnswerKind::Voice, step.next),
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
        self.answers.insert(name, Answer::new(kind, failure, value, self.attempts));
        self.enter(now, fallback);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::program::default_steps;

    /// Speech = a frame with any sample over 1000 in magnitude.
    struct EnergyVad;
    impl VoiceDetector for EnergyVad {
        fn is_speech(&mut self, frame: &[i16]) -> bool {
            frame.iter().any(|s| s.unsigned_abs() > 1000)
        }
        fn name(&self) -> &'static str {
            "energy"
        }
        fn set_aggressiveness(&mut self, _: u8) {}
    }

    /// Plays prompts for 1 s each (the greeting 3 s), feeds caller audio every 20 ms.
    struct Sim {
        s: Script,
        t0: Instant,
        ms: u64,
        playing: Option<(String, u64)>,
        /// (ms, what) for everything the script did.
        log: Vec<(u64, String)>,
        saved: Vec<(String, usize)>,
        hung_up: bool,
    }

    impl Sim {
        fn new(program: Program, caller: Option<&str>) -> Sim {
            Sim::with_vad(program, caller, Box::new(EnergyVad))
        }

        fn with_vad(program: Program, caller: Option<&str>, vad: Box<dyn VoiceDetector>) -> Sim {
            Sim::with_ctx(program, ScriptContext::new("L".into(), caller.map(Into::into)), vad)
        }

        fn with_ctx(program: Program, ctx: ScriptContext, vad: Box<dyn VoiceDetector>) -> Sim {
            let mut sim = Sim {
                s: Script::new(Arc::new(program), Some(vad), ctx),
                t0: Instant::now(),
                ms: 0,
                playing: None,
                log: vec![],
                saved: vec![],
                hung_up: false,
            };
            let now = sim.now();
            sim.s.handle_answered(now);
            sim.drain();
            sim
        }

        fn now(&self) -> Instant {
            self.t0 + Duration::from_millis(self.ms)
        }

        fn drain(&mut self) {
            while let Some(a) = self.s.poll_action() {
                match a {
                    ScriptAction::Play(p) => {
                        let len = if p == "greeting" { 3000 } else { 1000 };
                        self.log.push((self.ms, format!("play {p}")));
                        self.playing = Some((p, self.ms + len));
                    }
                    ScriptAction::StopPlayback => {
                        self.log.push((self.ms, "stop".into()));
                        self.playing = None;
                    }
                    // Blocks written ahead count in the saved answer's length.
                    ScriptAction::AnswerAudio { .. } => {}
                    ScriptAction::SaveRecording { file, samples, spilled, .. } => {
                        self.log.push((self.ms, format!("save {file}")));
                        self.saved.push((file, spilled + samples.len()));
                    }
                    ScriptAction::Transfer { targets, timeout } => {
                        self.log.push((self.ms, format!("transfer {} {}", targets.join(","), timeout.as_millis())));
                    }
                    ScriptAction::Hangup => {
                        self.log.push((self.ms, "hangup".into()));
                        self.hung_up = true;
                    }
                }
            }
        }

        /// Run to `until` ms; `speech(ms)` says whether the caller talks in the frame starting then.
        fn run(&mut self, until: u64, speech: impl Fn(u64) -> bool) {
            while self.ms < until && !self.hung_up {
                let level = if speech(self.ms + 20) { 5000 } else { 10 };
                self.frame(&[level; FRAME_SAMPLES]);
            }
        }

        /// Feed real audio, one 20 ms frame per step.
        fn play_audio(&mut self, pcm: &[i16]) {
            for frame in pcm.chunks(FRAME_SAMPLES) {
                self.frame(frame);
            }
        }

        /// 20 ms pass: the prompt may end, the caller's frame arrives, a timer may fire.
        fn frame(&mut self, audio: &[i16]) {
            self.ms += 20;
            let now = self.now();
            if let Some((p, end)) = self.playing.clone()
                && self.ms >= end
            {
                self.playing = None;
                self.s.handle_prompt_finished(now, &p);
                self.drain();
            }
            self.s.handle_audio(now, audio);
            self.drain();
            if self.s.poll_timeout().is_some_and(|t| t <= now) {
                self.s.handle_timeout(now);
                self.drain();
            }
        }

        fn keys(&mut self, keys: &str) {
            for k in keys.chars() {
                let now = self.now();
                self.s.handle_dtmf(now, k);
                self.drain();
                self.run(self.ms + 200, |_| false);
            }
        }

        fn answer(&self, step: &str) -> Answer {
            self.s.answers().get(step).cloned().unwrap_or_else(|| panic!("no answer {step}: {:?}", self.log))
        }

        fn plays(&self) -> Vec<&str> {
            self.log.iter().filter_map(|(_, l)| l.strip_prefix("play ")).collect()
        }
    }

    fn default_program() -> Program {
        Program::compile(&default_steps()).unwrap()
    }

    /// A plumber's day/night script: by day "all our techs are busy"; by
    /// night "we're closed, press 1 for an emergency", and 1 transfers.
    fn day_night() -> Program {
        Program::from_toml(
            r#"
            [[step]]
            name = "hours"
            kind = "when"
            open = "busy"
            closed = "closed"
            [[step]]
            name = "busy"
            kind = "play"
            prompt = "greeting"
            next = "bye"
            [[step]]
            name = "closed"
            kind = "menu"
            prompt = "urgency"
            options."1" = { label = "emergency", next = "oncall" }
            default = "bye"
            [[step]]
            name = "oncall"
            kind = "transfer"
            prompt = "connecting"
            targets = ["sip:oncall@10.0.0.7", "sip:backup@10.0.0.8"]
            timeout_ms = 15000
            on_failure = "sorry"
            [[step]]
            name = "sorry"
            kind = "goodbye"
            prompt = "sorry"
            [[step]]
            name = "bye"
            kind = "goodbye"
            prompt = "goodbye"
            "#,
        )
        .unwrap()
    }

    fn routed(program: Program, schedule: Option<ScheduleState>, silent_after: Option<u64>) -> Sim {
        let mut ctx = ScriptContext::new("L".into(), None);
        ctx.schedule = schedule;
        ctx.silent_after = silent_after.map(Duration::from_secs);
        Sim::with_ctx(program, ctx, Box::new(EnergyVad))
    }

    #[test]
    fn a_when_step_branches_on_the_schedule_state() {
        for (state, first) in [
            (Some(ScheduleState::Open), "greeting"),
            (None, "greeting"),
            (Some(ScheduleState::Closed), "urgency"),
            (Some(ScheduleState::Holiday), "urgency"),
        ] {
            let sim = routed(day_night(), state, None);
            assert_eq!(sim.plays(), [first], "{state:?}");
        }
    }

    #[test]
    fn a_transfer_that_fails_goes_on_at_on_failure_and_one_that_works_ends_the_script() {
        for transferred in [false, true] {
            let mut sim = routed(day_night(), Some(ScheduleState::Closed), None);
            sim.keys("1");
            sim.run(sim.ms + 1500, |_| false);
            let log: Vec<&str> = sim.log.iter().map(|(_, l)| l.as_str()).collect();
            assert!(log.contains(&"transfer sip:oncall@10.0.0.7,sip:backup@10.0.0.8 15000"), "{log:?}");
            assert_eq!(sim.plays(), ["urgency", "connecting"]);
            // Keys and silence mean nothing while the transfer runs.
            sim.keys("2");
            sim.run(sim.ms + 60_000, |_| false);
            assert!(!sim.hung_up);
            let now = sim.now();
            sim.s.handle_transfer_done(now, transferred);
            sim.drain();
            sim.run(sim.ms + 3000, |_| false);
            if transferred {
                assert_eq!(sim.plays(), ["urgency", "connecting"]);
                assert!(!sim.hung_up, "the call hangs up on the transfer, not the script");
                assert_eq!(sim.s.outcome(), Outcome::Transferred);
            } else {
                assert_eq!(sim.plays(), ["urgency", "connecting", "sorry"]);
                assert!(sim.hung_up);
                assert_eq!(sim.s.outcome(), Outcome::Completed);
            }
        }
    }

    #[test]
    fn a_silent_caller_hears_goodbye_after_the_limit_and_a_speaking_one_does_not() {
        let mut silent = routed(default_program(), None, Some(30));
        silent.run(90_000, |_| false);
        assert!(silent.hung_up && silent.s.silent());
        assert_eq!(silent.s.outcome(), Outcome::Silent);
        // Only the time spent waiting on the caller counts, and no prompt is cut short:
        // name and need are asked twice (4 x 5 s), then the callback number's first wait
        // is 6 s and its second reaches 30 s after 4 s more.
        assert!(!silent.log.iter().any(|(_, l)| l == "stop"), "{:?}", silent.log);
        let (at, last) = silent.log.iter().rev().find(|(_, l)| l.starts_with("play")).unwrap();
        assert_eq!(last, "play goodbye");
        let prompts_before: u64 = silent
            .log
            .iter()
            .filter(|(t, l)| l.starts_with("play") && t < at)
            .map(|(_, l)| if l == "play greeting" { 3000 } else { 1000 })
            .sum();
        assert_eq!(*at, 30_000 + prompts_before, "{:?}", silent.log);
        // A caller who answers the name question at 4.5 s restarts the clock there.
        let mut talker = routed(default_program(), None, Some(30));
        talker.run(34_000, |ms| (4500..5500).contains(&ms));
        assert!(!talker.hung_up, "{:?}", talker.log);
        assert_eq!(talker.answer("name").status, AnswerStatus::Answered);
    }

    #[test]
    fn the_silence_limit_never_cuts_a_prompt_short() {
        // A 1 s limit and a 3 s greeting: the greeting plays whole; the limit runs in the name step's wait.
        let mut sim = routed(default_program(), None, Some(1));
        sim.run(10_000, |_| false);
        let log: Vec<(u64, &str)> = sim.log.iter().map(|(t, l)| (*t, l.as_str())).collect();
        assert_eq!(log[..3], [(0, "play greeting"), (3000, "play name"), (5000, "play goodbye")], "{log:?}");
        assert!(sim.s.silent());
    }

    #[test]
    fn a_declined_junk_caller_hears_only_the_goodbye() {
        let mut ctx = ScriptContext::new("L".into(), None);
        ctx.goodbye_prompt = "junk_bye".into();
        let mut s = Script::new(Arc::new(default_program()), None, ctx);
        let t0 = Instant::now();
        s.decline(t0);
        assert_eq!(s.poll_action(), Some(ScriptAction::Play("junk_bye".into())));
        s.handle_prompt_finished(t0 + Duration::from_secs(1), "junk_bye");
        assert_eq!(s.poll_action(), Some(ScriptAction::Hangup));
        assert_eq!(s.outcome(), Outcome::Declined);
        assert!(s.answers().is_empty());
    }

    #[test]
    fn the_default_script_by_voice_and_keypad() {
        let mut sim = Sim::new(default_program(), Some("+15551230001"));
        // Greeting 3 s, "name" prompt until 4 s; the caller says a name from 4.5 to 5.5 s.
        sim.run(7_000, |ms| (4_500..5_500).contains(&ms));
        let name = sim.answer("name");
        assert_eq!((name.kind, name.status, name.attempts), (AnswerKind::Voice, AnswerStatus::Answered, 1));
        assert_eq!(name.recording.as_deref(), Some("L-name.wav"));
        assert!((1_000..=1_100).contains(&name.speech_ms.unwrap()), "{name:?}");
        // The answer ended 1.2 s after the last speech frame; "need" started right then.
        let need_at = sim.log.iter().find(|(_, l)| l == "play need").unwrap().0;
        assert_eq!(need_at, 5_480 + 1_200, "need prompt 1.2 s after the last speech frame");
        // need: talks with a 600 ms pause (shorter than the end silence): one answer.
        let start = need_at + 1_500;
        sim.run(need_at + 7_000, |ms| {
            (start..start + 1_000).contains(&ms) || (start + 1_600..start + 2_500).contains(&ms)
        });
        let need = sim.answer("need");
        assert!((2_400..=2_600).contains(&need.speech_ms.unwrap()), "{need:?}");
        // The saved audio: 300 ms pre-roll + 2.5 s from first to last speech + 60 ms tail.
        let samples = sim.saved.iter().find(|(f, _)| f == "L-need.wav").unwrap().1;
        assert_eq!(samples, (300 + 2_500 + 60) * 8);
        // callback_number: "1" alone = the number calling; then the ZIP; then urgency 1.
        assert_eq!(sim.plays().last(), Some(&"callback_number"));
        sim.keys("1");
        sim.run(sim.ms + 4_500, |_| false); // inter-digit timeout ends the entry
        let cb = sim.answer("callback_number");
        assert_eq!((cb.value.as_deref(), cb.from_caller_id), (Some("+15551230001"), true));
        sim.keys("94110");
        assert_eq!(sim.answer("zip").value.as_deref(), Some("94110"));
        sim.keys("1");
        let u = sim.answer("urgency");
        assert_eq!((u.value.as_deref(), u.label.as_deref()), (Some("1"), Some("emergency")));
        sim.run(sim.ms + 2_000, |_| false);
        assert_eq!(sim.plays(), ["greeting", "name", "need", "callback_number", "zip", "urgency", "goodbye"]);
        assert!(sim.hung_up);
        assert_eq!(sim.s.outcome(), Outcome::Completed);
    }

    #[test]
    fn ask_reprompts_once_then_records_no_input() {
        let mut sim = Sim::new(default_program(), None);
        sim.run(30_000, |_| false);
        let name = sim.answer("name");
        assert_eq!((name.status, name.attempts, name.recording.clone()), (AnswerStatus::NoInput, 2, None));
        // name, (5 s) sorry + name, (5 s) need ...
        assert_eq!(sim.plays()[..5], ["greeting", "name", "sorry", "name", "need"]);
        let at = |p: &str, n: usize| sim.log.iter().filter(|(_, l)| *l == format!("play {p}")).nth(n).unwrap().0;
        assert_eq!(at("sorry", 0) - at("name", 0), 1_000 + 5_000);
    }

    #[test]
    fn a_cough_is_not_an_answer() {
        let mut sim = Sim::new(default_program(), None);
        // 100 ms of noise at 4.5 s, then a real answer at 7 s.
        sim.run(10_000, |ms| (4_500..4_600).contains(&ms) || (7_000..7_800).contains(&ms));
        let name = sim.answer("name");
        assert_eq!(name.status, AnswerStatus::Answered);
        assert!((760..=820).contains(&name.speech_ms.unwrap()), "{name:?}");
    }

    #[test]
    fn a_step_answered_again_records_to_a_file_of_its_own() {
        let program = Program::from_toml(
            r#"
            [[step]]
            name = "need"
            kind = "ask"
            prompt = "need"
            next = "need"
            "#,
        )
        .unwrap();
        let mut sim = Sim::new(program, None);
        // Two answers, the second after the question is asked again.
        sim.run(4_000, |ms| (1_500..2_500).contains(&ms));
        let again = sim.log.iter().filter(|(_, l)| l == "play need").nth(1).expect("asked again").0;
        sim.run(again + 4_000, |ms| (again + 1_500..again + 2_500).contains(&ms));
        let files: Vec<&str> = sim.saved.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(files, ["L-need.wav", "L-need-2.wav"]);
        assert_eq!(sim.answer("need").recording.as_deref(), Some("L-need-2.wav"), "the lead names the last");
    }

    #[test]
    fn digits_invalid_then_valid_and_caller_id_without_a_number() {
        let program = Program::from_toml(
            r#"
            [[step]]
            name = "cb"
            kind = "digits"
            prompt = "cb"
            validate = "phone"
            caller_id_key = "1"
            retry_prompt = "sorry"
            "#,
        )
        .unwrap();
        let mut sim = Sim::new(program, None);
        sim.run(500, |_| false);
        sim.keys("123#"); // too short; typed during the prompt, which stops
        assert_eq!(sim.log[1].1, "stop");
        sim.run(sim.ms + 1_000, |_| false);
        sim.keys("1#"); // caller ID asked for, but the caller is anonymous
        sim.run(sim.ms + 3_000, |_| false);
        sim.keys("5551234567#");
        let a = sim.answer("cb");
        assert_eq!((a.status, a.value.as_deref(), a.attempts), (AnswerStatus::Answered, Some("5551234567"), 3));
        assert_eq!(sim.plays(), ["cb", "sorry", "cb", "sorry", "cb"]);
        assert!(sim.hung_up, "the end of the script hangs up");
    }

    #[test]
    fn digits_end_at_max_length_or_inter_digit_timeout_and_fail_after_retries() {
        let program = Program::from_toml(
            r#"
            [[step]]
            name = "zip"
            kind = "digits"
            prompt = "zip"
            validate = "zip"
            retries = 1
            [[step]]
            name = "pin"
            kind = "digits"
            prompt = "pin"
            validate = "regex"
            regex = "[0-9]{3}"
            max_digits = 3
            terminator = ""
            "#,
        )
        .unwrap();
        let mut sim = Sim::new(program, None);
        sim.run(1_500, |_| false);
        sim.keys("12"); // then silence: the inter-digit timeout (4 s) ends it, invalid
        sim.run(sim.ms + 5_000, |_| false);
        assert_eq!(sim.plays(), ["zip", "zip"]);
        sim.run(sim.ms + 8_000, |_| false); // no input on the retry
        let zip = sim.answer("zip");
        assert_eq!((zip.status, zip.attempts), (AnswerStatus::NoInput, 2));
        sim.keys("987"); // max length 3 without a terminator
        assert_eq!(sim.answer("pin").value.as_deref(), Some("987"));
    }

    #[test]
    fn menu_branches_reprompts_and_falls_back_to_default() {
        let program = Program::from_toml(
            r#"
            [[step]]
            name = "menu"
            kind = "menu"
            prompt = "menu"
            retry_prompt = "sorry"
            default = "fallback"
            options."1" = { label = "sales", next = "sales" }
            options."2" = { label = "service" }
            [[step]]
            name = "service"
            kind = "goodbye"
            prompt = "service"
            [[step]]
            name = "sales"
            kind = "goodbye"
            prompt = "sales"
            [[step]]
            name = "fallback"
            kind = "goodbye"
            prompt = "fallback"
            "#,
        )
        .unwrap();
        let mut sim = Sim::new(program.clone(), None);
        sim.run(1_500, |_| false);
        sim.keys("9"); // not an option
        sim.run(sim.ms + 2_500, |_| false);
        sim.keys("1");
        sim.run(sim.ms + 2_000, |_| false);
        assert_eq!(sim.plays(), ["menu", "sorry", "menu", "sales"]);
        assert_eq!(sim.answer("menu").label.as_deref(), Some("sales"));
        assert_eq!(sim.answer("menu").attempts, 2);

        let mut sim = Sim::new(program, None);
        sim.run(60_000, |_| false);
        assert_eq!(sim.plays(), ["menu", "sorry", "menu", "sorry", "menu", "fallback"]);
        assert_eq!((sim.answer("menu").status, sim.answer("menu").attempts), (AnswerStatus::NoInput, 3));
        assert!(sim.hung_up);
    }

    #[test]
    fn barge_in_by_key_and_by_speech() {
        let mut sim = Sim::new(default_program(), Some("5551230001"));
        sim.run(1_000, |_| false);
        // A key during the greeting (barge_in = dtmf) skips to the next step; the
        // next step is "name" (ask), which does not take keys: the digit is dropped.
        sim.keys("5");
        assert_eq!(sim.plays(), ["greeting", "name"]);
        // Talking over the "name" question stops it and records at once.
        sim.run(sim.ms + 300, |_| false);
        let t = sim.ms;
        sim.run(t + 3_000, |ms| (t..t + 800).contains(&ms));
        assert!(sim.log.iter().any(|(at, l)| l == "stop" && *at >= t && *at <= t + 100), "{:?}", sim.log);
        assert_eq!(sim.answer("name").status, AnswerStatus::Answered);
        assert_eq!(sim.plays().last(), Some(&"need"));
    }

    #[test]
    fn hanging_up_mid_answer_keeps_what_was_said() {
        let mut sim = Sim::new(default_program(), None);
        sim.run(5_000, |ms| ms >= 4_400);
        assert!(sim.s.answers().is_empty());
        let now = sim.now();
        sim.s.handle_call_ended(now);
        sim.drain();
        let name = sim.answer("name");
        assert_eq!((name.status, name.recording.as_deref()), (AnswerStatus::Partial, Some("L-name.wav")));
        assert_eq!(sim.saved.len(), 1);
        assert_eq!(sim.s.outcome(), Outcome::HungUpDuring("name".into()));
        // Keys typed so far are kept too.
        let mut sim = Sim::new(default_program(), None);
        sim.run(1_000, |_| false);
        let now = sim.now();
        sim.s.handle_dtmf(now, '0'); // barge into the greeting, onto "name"
        sim.run(30_000, |_| false); // no speech twice, twice: on to callback_number
        sim.keys("555");
        let now = sim.now();
        sim.s.handle_call_ended(now);
        assert_eq!(sim.answer("callback_number").value.as_deref(), Some("555"));
        assert_eq!(sim.answer("callback_number").status, AnswerStatus::Partial);
        assert_eq!(sim.s.outcome(), Outcome::HungUpDuring("callback_number".into()));
    }

    #[test]
    fn an_answer_ends_when_the_callers_rtp_stops() {
        let mut sim = Sim::new(default_program(), None);
        sim.run(5_000, |ms| ms >= 4_400);
        // No more audio at all (a phone that sends nothing in silence): the deadline ends it.
        let deadline = sim.s.poll_timeout().unwrap();
        assert_eq!(deadline, sim.now() + Duration::from_millis(1_700));
        sim.s.handle_timeout(deadline);
        sim.drain();
        assert_eq!(sim.answer("name").status, AnswerStatus::Answered);
        assert_eq!(sim.plays().last(), Some(&"need"));
    }

    fn speech(name: &str) -> Vec<i16> {
        let pcm = crate::fixtures::speech(name);
        // As it arrives in a call: through μ-law.
        pcm.iter().map(|s| crate::media::g711::Law::Pcmu.decode(crate::media::g711::Law::Pcmu.encode(*s))).collect()
    }

    fn silence(ms: usize) -> Vec<i16> {
        vec![0; ms * 8]
    }

    /// White noise at `dbfs` RMS (deterministic), added to `pcm`.
    fn with_noise(pcm: &[i16], dbfs: f32) -> Vec<i16> {
        let mut seed = 0x2545_f491u32;
        let amp = 10f32.powf(dbfs / 20.0) * 32767.0 * 3f32.sqrt();
        pcm.iter()
            .map(|s| {
                seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                let w = (seed >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
                (*s as f32 + w * amp).clamp(-32768.0, 32767.0) as i16
            })
            .collect()
    }

    /// Answers, recordings (file, samples), and when the next step began (ms).
    type AskResult = (BTreeMap<String, Answer>, Vec<(String, usize)>, Option<u64>);

    fn real_vads() -> Vec<Box<dyn VoiceDetector>> {
        vec![Box::new(crate::media::vad::EarshotVad::new(0.5)), Box::new(crate::media::vad::WebRtcVad::new(2))]
    }

    /// One ask step, heard by a real VAD; returns (answers, recordings, ms at which the step ended).
    fn ask_with_real_vad(vad: Box<dyn VoiceDetector>, audio: &[i16]) -> AskResult {
        let program = Program::from_toml(
            "[[step]]\nname = \"need\"\nkind = \"ask\"\nprompt = \"need\"\n[[step]]\nname = \"after\"\nkind = \"play\"\nprompt = \"after\"\n",
        )
        .unwrap();
        let mut sim = Sim::with_vad(program, None, vad);
        sim.play_audio(audio);
        let after = sim.log.iter().find(|(_, l)| l == "play after").map(|(at, _)| *at);
        (sim.s.answers().clone(), sim.saved.clone(), after)
    }

    #[test]
    fn real_speech_with_a_short_pause_is_one_answer_ended_by_the_silence() {
        let need = speech("need.wav");
        let speech_ms = need.len() as u64 / 8;
        // The question plays for 1 s; the caller answers at 1.5 s, then is quiet.
        for (label, audio) in [
            ("clean", [silence(1_500), need.clone(), silence(4_000)].concat()),
            ("white noise −45 dBFS", with_noise(&[silence(1_500), need.clone(), silence(4_000)].concat(), -45.0)),
        ] {
            for vad in real_vads() {
                let label = format!("{label}, {}", vad.name());
                let (answers, saved, after) = ask_with_real_vad(vad, &audio);
                let a = &answers["need"];
                assert_eq!(a.status, AnswerStatus::Answered, "{label}");
                let got = a.speech_ms.unwrap();
                assert!(got.abs_diff(speech_ms) <= 300, "{label}: speech_ms {got} for {speech_ms} ms of speech");
                // The recording holds the whole utterance, its first sample included.
                let rec_ms = saved[0].1 as u64 / 8;
                assert!(
                    rec_ms.abs_diff(speech_ms) <= 500,
                    "{label}: {rec_ms} ms recorded for {speech_ms} ms of speech"
                );
                // Moved on within 2 s of the caller falling silent.
                let silent_at = 1_500 + speech_ms;
                let latency = after.unwrap() - silent_at;
                assert!((1_100..2_000).contains(&latency), "{label}: moved on {latency} ms after the speech ended");
            }
        }
    }

    #[test]
    fn real_speech_with_a_long_pause_ends_at_the_pause() {
        let (first, second) = (speech("need_first.wav"), speech("need_second.wav"));
        let audio = [silence(1_500), first.clone(), silence(2_500), second, silence(3_000)].concat();
        for vad in real_vads() {
            let name = vad.name();
            let (answers, _, after) = ask_with_real_vad(vad, &audio);
            let got = answers["need"].speech_ms.unwrap();
            let first_ms = first.len() as u64 / 8;
            assert!(got.abs_diff(first_ms) <= 300, "{name}: {got} ms kept; the first part is {first_ms} ms");
            assert!(after.unwrap() < 1_500 + first_ms + 2_000, "{name}");
        }
    }
}
