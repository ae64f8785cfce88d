//! Voice activity detection on the caller's 8 kHz audio, behind one small
//! trait so the intake script does not care which detector runs.
//!
//! Two candidates, compared by `cargo bench --bench vad_accuracy` (speech
//! recall, false alarms under noise, cost per frame):
//! * [`WebRtcVad`]: libfvad (the WebRTC VAD) via `webrtc-vad`, native 8 kHz;
//! * [`EarshotVad`]: `earshot`, pure Rust, a small neural net at 16 kHz in
//!   16 ms frames, so each 20 ms frame is upsampled and re-framed.

/// Speech or not, for each 20 ms frame (160 samples at 8 kHz).
pub trait VoiceDetector: Send {
    fn is_speech(&mut self, frame: &[i16]) -> bool;
    fn name(&self) -> &'static str;
    /// 0 (most frames called speech) to 3 (fewest), per intake step.
    fn set_aggressiveness(&mut self, level: u8);
}

/// WebRTC's VAD (libfvad). `mode` 0–3: quality, low bitrate, aggressive, very aggressive.
pub struct WebRtcVad {
    vad: SendVad,
    mode: u8,
}

/// `webrtc_vad::Vad` holds a raw pointer to libfvad's state and so is not
/// `Send`. That state is plain heap memory with no thread affinity, owned
/// by exactly one call and never shared, so moving it between threads with
/// its owner is sound; it is never used from two threads at once because it
/// is only reachable through `&mut`.
struct SendVad(webrtc_vad::Vad);
// SAFETY: see above: exclusive ownership, no thread-local state in libfvad.
unsafe impl Send for SendVad {}

impl WebRtcVad {
    pub fn new(mode: u8) -> WebRtcVad {
        use webrtc_vad::{SampleRate, Vad};
        WebRtcVad { vad: SendVad(Vad::new_with_rate_and_mode(SampleRate::Rate8kHz, webrtc_mode(mode))), mode }
    }
}

fn webrtc_mode(level: u8) -> webrtc_vad::VadMode {
    use webrtc_vad::VadMode;
    match level {
        0 => VadMode::Quality,
        1 => VadMode::LowBitrate,
        2 => VadMode::Aggressive,
        _ => VadMode::VeryAggressive,
    }
}

impl VoiceDetector for WebRtcVad {
    fn is_speech(&mut self, frame: &[i16]) -> bool {
        // libfvad takes 10/20/30 ms frames only, and its wrapper panics on an empty slice.
        if frame.len() != 160 {
            return false;
        }
        self.vad.0.is_voice_segment(frame).unwrap_or(false)
    }

    fn set_aggressiveness(&mut self, level: u8) {
        if level.min(3) != self.mode {
            self.mode = level.min(3);
            self.vad.0.set_mode(webrtc_mode(self.mode));
        }
    }

    fn name(&self) -> &'static str {
        ["webrtc-vad quality", "webrtc-vad low-bitrate", "webrtc-vad aggressive", "webrtc-vad very-aggressive"]
            [self.mode.min(3) as usize]
    }
}

/// `earshot` on audio upsampled to 16 kHz.
///
/// Digital silence is not run through the network: once [`SILENT_FRAMES_TO_IDLE`]
/// earshot frames in a row peak at or below [`SILENT_PEAK`] (−66 dBFS; a G.711
/// line carrying no sound, or a phone suppressing its silence), the detector is
/// reset and further silent frames score 0 without a prediction. By then its
/// 48 ms window and 3-frame context hold nothing but that silence, so the
/// first sound after it is scored from the state a fresh stream starts in.
/// Noise at −63 dBFS or louder is never skipped.
pub struct EarshotVad {
    detector: Box<earshot::Detector>,
    threshold: f32,
    /// 16 kHz samples waiting for a full 256-sample frame: `pending[..filled]`.
    pending: [i16; 256],
    filled: usize,
    last_sample: i16,
    last_score: f32,
    /// Silent earshot frames in a row.
    silent_run: u32,
    /// Silent frames not run through the network (the tests read it).
    pub skipped: u64,
}

/// The loudest sample (16-bit scale) of a frame that counts as silence.
pub const SILENT_PEAK: i16 = 16;
/// Silent 16 ms frames after which predictions stop until sound returns.
pub const SILENT_FRAMES_TO_IDLE: u32 = 4;

impl EarshotVad {
    pub fn new(threshold: f32) -> EarshotVad {
        EarshotVad {
            detector: earshot::Detector::default_boxed(),
            threshold,
            pending: [0; 256],
            filled: 0,
            last_sample: 0,
            last_score: 0.0,
            silent_run: 0,
            skipped: 0,
        }
    }

    /// Score one full 16 kHz frame in `pending`.
    fn score_pending(&mut self) -> f32 {
        let silent = self.pending.iter().all(|s| s.unsigned_abs() <= SILENT_PEAK as u16);
        self.silent_run = if silent { self.silent_run.saturating_add(1) } else { 0 };
        if self.silent_run > SILENT_FRAMES_TO_IDLE {
            self.skipped += 1;
            return 0.0;
        }
        let score = self.detector.predict_i16(&self.pending);
        if self.silent_run == SILENT_FRAMES_TO_IDLE {
            self.detector.reset();
        }
        score
    }
}

impl VoiceDetector for EarshotVad {
    fn is_speech(&mut self, frame: &[i16]) -> bool {
        let mut best: Option<f32> = None;
        // 8 → 16 kHz by linear interpolation (the band above 4 kHz is empty anyway).
        for &s in frame {
            let mid = ((self.last_sample as i32 + s as i32) / 2) as i16;
            self.last_sample = s;
            for v in [mid, s] {
                self.pending[self.filled] = v;
                self.filled += 1;
                if self.filled == self.pending.len() {
                    self.filled = 0;
                    let score = self.score_pending();
                    best = Some(best.map_or(score, |b: f32| b.max(score)));
                }
            }
        }
        if let Some(b) = best {
            self.last_score = b;
        }
        self.last_score >= self.threshold
    }

    /// Levels map to score thresholds 0.3, 0.4, 0.5, 0.6.
    fn set_aggressiveness(&mut self, level: u8) {
        self.threshold = 0.3 + 0.1 * level.min(3) as f32;
    }

    fn name(&self) -> &'static str {
        "earshot (8→16 kHz)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn speech() -> Vec<i16> {
        crate::fixtures::prompt("greeting")
    }

    fn speech_fraction(vad: &mut dyn VoiceDetector, audio: &[i16]) -> f64 {
        let frames: Vec<&[i16]> = audio.chunks_exact(160).collect();
        frames.iter().filter(|f| vad.is_speech(f)).count() as f64 / frames.len() as f64
    }

    fn detectors() -> Vec<Box<dyn VoiceDetector>> {
        vec![Box::new(WebRtcVad::new(2)), Box::new(EarshotVad::new(0.5))]
    }

    /// Sanity only; accuracy under noise is measured by the vad_accuracy bench.
    #[test]
    fn both_detectors_hear_speech_and_not_silence() {
        let s = speech();
        for mut vad in detectors() {
            let on_speech = speech_fraction(vad.as_mut(), &s);
            assert!(on_speech > 0.5, "{}: {on_speech:.2} of the greeting heard as speech", vad.name());
            assert!(!vad.is_speech(&[]), "an empty frame is not speech (and does not panic)");
        }
        for mut vad in detectors() {
            let on_silence = speech_fraction(vad.as_mut(), &vec![0i16; 16000]);
            assert!(on_silence < 0.05, "{}: {on_silence:.2} of silence heard as speech", vad.name());
        }
    }

    /// The silence gate: digital silence stops the predictions, quiet noise
    /// does not, and speech after a long silence is heard as at a stream's start.
    #[test]
    fn earshot_skips_digital_silence_but_not_noise_or_speech() {
        let s = speech();
        let mut fresh = EarshotVad::new(0.5);
        let fresh_flags: Vec<bool> = s.chunks_exact(160).map(|f| fresh.is_speech(f)).collect();

        let mut vad = EarshotVad::new(0.5);
        for f in s.chunks_exact(160).take(100) {
            vad.is_speech(f);
        }
        let before = vad.skipped;
        let heard: Vec<bool> = (0..100).map(|_| vad.is_speech(&[0; 160])).collect();
        assert!(heard[10..].iter().all(|s| !s), "silence heard as speech: {heard:?}");
        // 100 frames of 20 ms are 125 earshot frames: the first few predicted, the rest skipped.
        let skipped = vad.skipped - before;
        assert!(skipped >= 115, "only {skipped} of 125 silent frames skipped");
        let after_silence: Vec<bool> = s.chunks_exact(160).map(|f| vad.is_speech(f)).collect();
        let same = after_silence.iter().zip(&fresh_flags).filter(|(a, b)| a == b).count();
        assert!(
            same as f64 >= 0.98 * fresh_flags.len() as f64,
            "after a long silence the speech is scored as by a fresh detector ({same} of {} frames agree)",
            fresh_flags.len()
        );

        // White-ish noise at about −60 dBFS (peak 40) is never skipped.
        let mut noisy = EarshotVad::new(0.5);
        let mut x: u32 = 1;
        let noise: Vec<i16> = (0..16000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((x >> 16) % 81) as i16 - 40
            })
            .collect();
        for f in noise.chunks_exact(160) {
            noisy.is_speech(f);
        }
        assert_eq!(noisy.skipped, 0);
    }

    #[test]
    fn detectors_are_send() {
        fn send<T: Send>(_: &T) {}
        send(&WebRtcVad::new(3));
        send(&EarshotVad::new(0.5));
    }
}
