//! The call script, as a Sans-IO state machine: which prompt to play next
//! and when to hang up. For now a straight line of `play` steps ending in a
//! hang-up (greeting, goodbye); the intake work extends the step kinds.
//!
//! Inputs are `handle_*` calls (answered, prompt finished, caller left);
//! outputs come from `poll_action`. The script never sees SIP or RTP.

use std::collections::VecDeque;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Play a prompt by name; the step is done when the prompt finishes.
    Play { name: String, prompt: String },
    /// End the call from our side.
    Hangup,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptAction {
    Play(String),
    Hangup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotStarted,
    Running,
    Done,
}

#[derive(Debug)]
pub struct Script {
    steps: Vec<Step>,
    index: usize,
    state: State,
    actions: VecDeque<ScriptAction>,
}

impl Script {
    pub fn new(steps: Vec<Step>) -> Script {
        Script { steps, index: 0, state: State::NotStarted, actions: VecDeque::new() }
    }

    /// The skeleton script: greeting, goodbye, hang up.
    pub fn greeting_then_goodbye() -> Script {
        Script::new(vec![
            Step::Play { name: "greeting".into(), prompt: "greeting".into() },
            Step::Play { name: "goodbye".into(), prompt: "goodbye".into() },
            Step::Hangup,
        ])
    }

    /// The prompts this script can play, for checking at start-up.
    pub fn prompts(&self) -> impl Iterator<Item = &str> {
        self.steps.iter().filter_map(|s| match s {
            Step::Play { prompt, .. } => Some(prompt.as_str()),
            Step::Hangup => None,
        })
    }

    /// The call was answered and media flows: run the first step.
    pub fn handle_answered(&mut self) {
        if self.state == State::NotStarted {
            self.state = State::Running;
            self.enter();
        }
    }

    /// A prompt finished playing.
    pub fn handle_prompt_finished(&mut self, prompt: &str) {
        if self.state != State::Running {
            return;
        }
        if let Some(Step::Play { prompt: p, .. }) = self.steps.get(self.index)
            && p == prompt
        {
            self.index += 1;
            self.enter();
        }
    }

    /// The call ended before the script did (caller hung up, error).
    pub fn handle_call_ended(&mut self) {
        self.actions.clear();
        if self.state != State::Done {
            self.state = State::Done;
        }
    }

    fn enter(&mut self) {
        match self.steps.get(self.index) {
            Some(Step::Play { prompt, .. }) => self.actions.push_back(ScriptAction::Play(prompt.clone())),
            Some(Step::Hangup) | None => {
                self.index = self.steps.len();
                self.state = State::Done;
                self.actions.push_back(ScriptAction::Hangup);
            }
        }
    }

    pub fn poll_action(&mut self) -> Option<ScriptAction> {
        self.actions.pop_front()
    }

    /// Whether the script ran to its end.
    pub fn completed(&self) -> bool {
        self.index >= self.steps.len()
    }

    /// The name of the step in progress (`ringing` before the first).
    pub fn current_step(&self) -> &str {
        match (self.state, self.steps.get(self.index)) {
            (State::NotStarted, _) => "ringing",
            (_, Some(Step::Play { name, .. })) => name,
            _ => "hangup",
        }
    }

    /// The lead's outcome: `completed`, `not_answered` (the script never ran),
    /// or `hung_up_during_<step>`.
    pub fn outcome(&self) -> String {
        if self.completed() {
            return "completed".into();
        }
        match (self.state, self.steps.get(self.index)) {
            (State::NotStarted, _) => "not_answered".into(),
            (_, Some(Step::Play { name, .. })) => format!("hung_up_during_{name}"),
            _ => "completed".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(s: &mut Script) -> Vec<ScriptAction> {
        std::iter::from_fn(|| s.poll_action()).collect()
    }

    #[test]
    fn runs_greeting_goodbye_hangup() {
        let mut s = Script::greeting_then_goodbye();
        assert_eq!(s.outcome(), "not_answered");
        s.handle_answered();
        assert_eq!(actions(&mut s), vec![ScriptAction::Play("greeting".into())]);
        assert_eq!(s.outcome(), "hung_up_during_greeting");
        s.handle_prompt_finished("other");
        assert!(actions(&mut s).is_empty());
        s.handle_prompt_finished("greeting");
        assert_eq!(actions(&mut s), vec![ScriptAction::Play("goodbye".into())]);
        assert_eq!(s.outcome(), "hung_up_during_goodbye");
        s.handle_prompt_finished("goodbye");
        assert_eq!(actions(&mut s), vec![ScriptAction::Hangup]);
        assert_eq!(s.outcome(), "completed");
    }

    #[test]
    fn caller_leaving_freezes_the_outcome() {
        let mut s = Script::greeting_then_goodbye();
        s.handle_answered();
        s.handle_call_ended();
        s.handle_prompt_finished("greeting");
        assert!(actions(&mut s).is_empty());
        assert_eq!(s.outcome(), "hung_up_during_greeting");
    }
}
