//! `[transcribe]`: the offline speech-to-text of voice answers. Absent, no
//! answer is transcribed and no model is needed.

use super::value;
use backstop_core::intake::summary::DEFAULT_URGENT_WORDS;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The engines Backstop knows.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    /// whisper.cpp with a ggml model (`scripts/get-model.sh`); needs a build
    /// with `--features whisper`.
    #[default]
    Whisper,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Whisper => "whisper",
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TranscribeConfig {
    pub engine: EngineKind,
    /// The model file (a ggml `.bin` for whisper), as `scripts/get-model.sh` prints it.
    pub model: PathBuf,
    /// Transcription threads, each at the lowest CPU priority: they only
    /// use what calls leave.
    pub threads: u32,
    /// `lead.completed` waits this long for the call's transcripts; later
    /// ones come as `lead.updated`. 0: never wait.
    #[serde(rename = "wait_secs", with = "value::secs")]
    pub wait: Duration,
    /// Words and phrases that make a lead urgent when a transcript has them.
    pub urgent_words: Vec<String>,
    /// Cut whisper's 30 s window to the answer's length (padded by 1 s of
    /// silence each side): about a fifth of the CPU on answers of a few
    /// seconds, at the same accuracy (`benches/transcribe/README.md`).
    pub fit_audio_ctx: bool,
}

impl Default for TranscribeConfig {
    fn default() -> Self {
        TranscribeConfig {
            engine: EngineKind::Whisper,
            model: PathBuf::new(),
            threads: 1,
            wait: Duration::from_secs(20),
            urgent_words: DEFAULT_URGENT_WORDS.iter().map(|w| w.to_string()).collect(),
            fit_audio_ctx: true,
        }
    }
}

impl TranscribeConfig {
    /// Checks on the typed values: (dotted key, message).
    pub(super) fn problems(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if self.model.as_os_str().is_empty() {
            p.push((
                "transcribe.model".into(),
                "is required: the model file (`scripts/get-model.sh` fetches one and prints its path)".into(),
            ));
        }
        if !(1..=16).contains(&self.threads) {
            p.push(("transcribe.threads".into(), "must be between 1 and 16".into()));
        }
        if self.wait > Duration::from_secs(600) {
            p.push(("transcribe.wait_secs".into(), "at most 600".into()));
        }
        if self.urgent_words.iter().any(|w| w.trim().is_empty()) {
            p.push(("transcribe.urgent_words".into(), "an urgent word is empty".into()));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::test_problems as problems;

    #[test]
    fn transcribe_needs_a_model_and_sane_limits() {
        let p = problems("[transcribe]\n");
        assert!(p.iter().any(|e| e.starts_with("transcribe.model: is required")), "{p:?}");
        let p = problems("[transcribe]\nmodel = \"m.bin\"\nthreads = 0\nwait_secs = 601\nurgent_words = [\" \"]\n");
        for key in ["transcribe.threads", "transcribe.wait_secs", "transcribe.urgent_words"] {
            assert!(p.iter().any(|e| e.starts_with(key)), "{key}: {p:?}");
        }
        let cfg = Config::parse("[transcribe]\nmodel = \"m.bin\"\n", None).unwrap();
        let t = cfg.transcribe.unwrap();
        assert_eq!((t.threads, t.wait.as_secs(), t.fit_audio_ctx), (1, 20, true));
        assert!(t.urgent_words.iter().any(|w| w == "no heat"));
        assert!(Config::parse("[transcribe]\nmodel = \"m.bin\"\nengine = \"cloud\"\n", None).is_err());
        assert!(Config::parse("", None).unwrap().transcribe.is_none(), "off unless configured");
    }
}
