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

/// `earshot` on audio upsampled to 16 kHz, behind an adaptive energy gate.
///
/// The network is the costly part of a call (a few µs per 16 ms frame), and a
/// real line is never silent: a mobile in a truck carries hiss in every frame.
/// So each 20 ms frame's energy is compared with the caller's own noise floor
/// ([`NoiseFloor`]: the quietest frame of the last 3 s). A frame within
/// [`GATE_MARGIN_DB`] of that floor, and quieter than [`GATE_CAP_DBFS`], is
/// quiet. After [`QUIET_FRAMES_TO_IDLE`] quiet frames in a row (run through the
/// network as usual, so its score falls on its own), the detector is dropped
/// and further quiet frames score 0 without a prediction; a frame the
/// network scores as speech never counts as quiet. The first frame
/// above the gate starts a fresh detector, fed the last quiet frames first, so
/// speech is scored as at the start of a stream that began with line noise.
/// Digital silence is below every floor and is always quiet.
///
/// Frames louder than the cap always run the network, whatever the floor, so
/// a caller on a loud line loses nothing to the gate; and continuous speech
/// cannot lift the floor into itself within the 3 s window, because speech
/// dips between syllables far below its peaks.
pub struct EarshotVad {
    /// Only while there is sound above the floor: 8 KB less per quiet call.
    detector: Option<Box<earshot::Detector>>,
    threshold: f32,
    /// 16 kHz samples waiting for a full 256-sample frame: `pending[..filled]`.
    pending: [i16; 256],
    filled: usize,
    last_sample: i16,
    last_score: f32,
    /// The caller's noise floor; `None` runs every frame (for comparison in the benches).
    floor: Option<NoiseFloor>,
    /// Quiet 20 ms frames in a row.
    quiet_run: u32,
    /// The last [`WARM_FRAMES`] 20 ms frames seen (a ring, oldest at
    /// `previous_at`), to warm a fresh detector with: enough to fill its
    /// 48 ms window and 3-frame context as a detector that never stopped has them.
    previous: [i16; 160 * WARM_FRAMES],
    previous_at: usize,
    /// 20 ms frames not run through the network (the tests and benches read it).
    pub skipped: u64,
    /// 16 ms frames run through it.
    pub predicted: u64,
}

/// How far above the noise floor a frame must be to be run (power, dB).
pub const GATE_MARGIN_DB: f32 = 6.0;
/// Frames louder than this are always run, whatever the floor (dBFS RMS).
pub const GATE_CAP_DBFS: f32 = -35.0;
/// Frames a fresh detector is warmed with when sound returns (80 ms).
const WARM_FRAMES: usize = 4;
/// Quiet 20 ms frames after which predictions stop until sound returns (300 ms).
pub const QUIET_FRAMES_TO_IDLE: u32 = 15;
/// The floor is never taken as lower than this (dBFS): digital silence.
const FLOOR_MIN_DBFS: f32 = -66.0;

/// Minimum statistics over the last 3 s of 20 ms frame energies: fifteen
/// 200 ms blocks, each remembered by its quietest frame.
#[derive(Debug, Clone)]
pub struct NoiseFloor {
    blocks: [f32; 15],
    /// Blocks filled so far (up to 15), and the ring's next slot.
    filled: usize,
    next: usize,
    /// The block being filled: its quietest frame and its frame count.
    current: f32,
    frames: u32,
}

impl Default for NoiseFloor {
    fn default() -> Self {
        NoiseFloor { blocks: [f32::MAX; 15], filled: 0, next: 0, current: f32::MAX, frames: 0 }
    }
}

impl NoiseFloor {
    const FRAMES_PER_BLOCK: u32 = 10;

    /// Add one frame's mean square (16-bit scale).
    pub fn push(&mut self, mean_square: f32) {
        self.current = self.current.min(mean_square);
        self.frames += 1;
        if self.frames == Self::FRAMES_PER_BLOCK {
            self.blocks[self.next] = self.current;
            self.next = (self.next + 1) % self.blocks.len();
            self.filled = (self.filled + 1).min(self.blocks.len());
            self.current = f32::MAX;
            self.frames = 0;
        }
    }

    /// The quietest frame of the window (mean square), or `None` before the first frame.
    pub fn floor(&self) -> Option<f32> {
        let f = self.blocks[..self.filled].iter().fold(self.current, |a, b| a.min(*b));
        (f < f32::MAX).then_some(f)
    }
}

/// dBFS (RMS, 16-bit full scale) as a mean square.
fn mean_square_at(dbfs: f32) -> f32 {
    (32768.0f32 * 10f32.powf(dbfs / 20.0)).powi(2)
}

impl EarshotVad {
    pub fn new(threshold: f32) -> EarshotVad {
        EarshotVad { floor: Some(NoiseFloor::default()), ..EarshotVad::without_gate(threshold) }
    }

    /// Every frame through the network, as before the gate: for the benches'
    /// before/after, not for calls.
    pub fn without_gate(threshold: f32) -> EarshotVad {
        EarshotVad {
            detector: None,
            threshold,
            pending: [0; 256],
            filled: 0,
            last_sample: 0,
            last_score: 0.0,
            floor: None,
            quiet_run: 0,
            previous: [0; 160 * WARM_FRAMES],
            previous_at: 0,
            skipped: 0,
            predicted: 0,
        }
    }

    /// Whether the frame is quiet (at the caller's noise floor), updating the floor.
    fn is_quiet(&mut self, frame: &[i16]) -> bool {
        let Some(floor) = self.floor.as_mut() else { return false };
        let ms = frame.iter().map(|s| (*s as f32) * (*s as f32)).sum::<f32>() / frame.len().max(1) as f32;
        floor.push(ms);
        let base = floor.floor().unwrap_or(ms).max(mean_square_at(FLOOR_MIN_DBFS));
        let gate = (base * 10f32.powf(GATE_MARGIN_DB / 10.0)).min(mean_square_at(GATE_CAP_DBFS));
        ms <= gate
    }

    /// Run 8 kHz samples through the upsampler and the network: the best score
    /// of the 16 ms frames they completed.
    fn run(&mut self, frame: &[i16]) -> Option<f32> {
        let mut best: Option<f32> = None;
        let detector = self.detector.get_or_insert_with(earshot::Detector::default_boxed);
        // 8 → 16 kHz by linear interpolation (the band above 4 kHz is empty anyway).
        for &s in frame {
            let mid = ((self.last_sample as i32 + s as i32) / 2) as i16;
            self.last_sample = s;
            for v in [mid, s] {
                self.pending[self.filled] = v;
                self.filled += 1;
                if self.filled == self.pending.len() {
                    self.filled = 0;
                    self.predicted += 1;
                    let score = detector.predict_i16(&self.pending);
                    best = Some(best.map_or(score, |b: f32| b.max(score)));
                }
            }
        }
        best
    }
}

impl VoiceDetector for EarshotVad {
    fn is_speech(&mut self, frame: &[i16]) -> bool {
        if frame.is_empty() {
            return self.last_score >= self.threshold;
        }
        // A frame the network still hears as speech never counts towards idling,
        // however close to the floor it is: a soft talker on a noisy line.
        let quiet = self.is_quiet(frame) && self.last_score < self.threshold;
        self.quiet_run = if quiet { self.quiet_run.saturating_add(1) } else { 0 };
        if self.quiet_run > QUIET_FRAMES_TO_IDLE {
            // Idle: nothing above the floor for a while. Drop the network's
            // state; its context would be stale when sound returns.
            if self.detector.take().is_some() {
                self.filled = 0;
            }
            self.skipped += 1;
            self.last_score = 0.0;
        } else {
            if self.detector.is_none() && self.floor.is_some() && self.quiet_run == 0 && self.predicted > 0 {
                // Sound after idling: warm a fresh detector with the last quiet frame.
                self.last_sample = 0;
                let (newer, older) = self.previous.split_at(self.previous_at);
                let warm = [older, newer].concat();
                self.run(&warm);
            }
            if let Some(best) = self.run(frame) {
                self.last_score = best;
            }
        }
        if frame.len() == 160 {
            self.previous[self.previous_at..self.previous_at + 160].copy_from_slice(frame);
            self.previous_at = (self.previous_at + 160) % self.previous.len();
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

    /// Line noise: Gaussian-ish (a sum of four uniforms), RMS at `dbfs`, deterministic.
    fn noise(n: usize, dbfs: f32, seed: u32) -> Vec<f32> {
        let mut x = seed;
        let mut u = || {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let raw: Vec<f32> = (0..n).map(|_| u() + u() + u() + u()).collect();
        let rms = (raw.iter().map(|v| v * v).sum::<f32>() / n as f32).sqrt();
        let gain = 32768.0 * 10f32.powf(dbfs / 20.0) / rms;
        raw.into_iter().map(|v| v * gain).collect()
    }

    fn mix(clean: &[i16], noise: &[f32]) -> Vec<i16> {
        clean.iter().zip(noise).map(|(c, n)| (*c as f32 + n).round().clamp(-32768.0, 32767.0) as i16).collect()
    }

    /// `lead` samples of quiet, `speech`, then 2 s of quiet, all under line
    /// noise at −50 dBFS: each frame's verdict from a gated and an ungated
    /// detector, and the gated detector.
    fn gated_and_ungated(lead: usize, speech: &[i16], seed: u32) -> (Vec<bool>, Vec<bool>, EarshotVad) {
        let mut clean = vec![0i16; lead];
        clean.extend_from_slice(speech);
        clean.extend(std::iter::repeat_n(0, 16_000));
        let noisy = mix(&clean, &noise(clean.len(), -50.0, seed));
        let mut gated = EarshotVad::new(0.5);
        let mut ungated = EarshotVad::without_gate(0.5);
        let frames: Vec<&[i16]> = noisy.chunks_exact(160).collect();
        let a = frames.iter().map(|f| gated.is_speech(f)).collect();
        let b = frames.iter().map(|f| ungated.is_speech(f)).collect();
        assert_eq!(ungated.skipped, 0);
        (a, b, gated)
    }

    /// The gate: digital silence and steady line noise stop the predictions
    /// (and free the network's state); speech over that noise, after a long
    /// stretch of it, is heard frame for frame as by an ungated detector.
    #[test]
    fn earshot_gate_skips_silence_and_steady_noise_but_not_speech() {
        let s = speech();
        let mut vad = EarshotVad::new(0.5);
        let heard: Vec<bool> = (0..100).map(|_| vad.is_speech(&[0; 160])).collect();
        assert!(heard.iter().all(|s| !s), "silence heard as speech");
        assert_eq!(vad.skipped, 100 - QUIET_FRAMES_TO_IDLE as u64);
        assert!(vad.detector.is_none(), "an idle detector holds no network state");

        // 10 s of line noise at −50 dBFS, then the greeting over the same noise, then noise again.
        let lead = 80_000;
        let (a, b, gated) = gated_and_ungated(lead, &s, 7);
        // Most of the noise before the speech is skipped, once the floor is known.
        let lead_frames = lead / 160;
        assert!(
            gated.skipped as f64 > 0.8 * lead_frames as f64,
            "only {} of {lead_frames} frames of steady noise skipped",
            gated.skipped
        );
        assert!(a[..lead_frames].iter().all(|s| !s), "line noise heard as speech");
        // Over the speech, the two agree on nearly every frame: the gate clips nothing.
        let speech_frames = lead_frames..lead_frames + s.len() / 160;
        let heard_gated = a[speech_frames.clone()].iter().filter(|v| **v).count();
        let heard_ungated = b[speech_frames.clone()].iter().filter(|v| **v).count();
        let agree = speech_frames.clone().filter(|i| a[*i] == b[*i]).count();
        assert!(heard_ungated > speech_frames.len() / 2, "the ungated detector hears the greeting");
        assert!(
            agree as f64 >= 0.97 * speech_frames.len() as f64,
            "gated and ungated agree on {agree} of {} speech frames ({heard_gated} vs {heard_ungated} heard)",
            speech_frames.len()
        );
        // The speech is heard from the same frame, give or take one.
        let (first_gated, first_ungated) = (a.iter().position(|v| *v).unwrap(), b.iter().position(|v| *v).unwrap());
        assert!(first_gated <= first_ungated + 1, "heard from frame {first_gated}, ungated from {first_ungated}");
    }

    /// A soft talker, a few dB above the line noise: the gate takes nothing
    /// the ungated detector hears.
    #[test]
    fn earshot_gate_keeps_soft_speech_over_noise() {
        let s = speech();
        let rms = (s.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / s.len() as f64).sqrt();
        // The speech at about 5 dB over −50 dBFS noise.
        let gain = 32768.0 * 10f64.powf(-45.0 / 20.0) / rms;
        let soft: Vec<i16> = s.iter().map(|v| (*v as f64 * gain).round() as i16).collect();
        let (a, b, _) = gated_and_ungated(40_000, &soft, 13);
        let heard_ungated = b.iter().filter(|v| **v).count();
        let lost = a.iter().zip(&b).filter(|(g, u)| !**g && **u).count();
        let lost_at: Vec<usize> = (0..a.len()).filter(|i| !a[*i] && b[*i]).collect();
        assert!(heard_ungated > 20, "the ungated detector hears the soft speech ({heard_ungated} frames)");
        // Single frames near the threshold may differ; never a stretch of them.
        assert!(lost * 10 <= heard_ungated, "the gate lost {lost} of {heard_ungated} frames heard as speech");
        assert!(lost_at.windows(2).all(|w| w[1] > w[0] + 1), "two frames in a row lost: {lost_at:?}");
    }

    /// Loud frames always run the network, whatever the floor: noise above the cap is never skipped.
    #[test]
    fn earshot_gate_never_skips_above_its_cap() {
        let loud = noise(80_000, GATE_CAP_DBFS + 3.0, 11);
        let pcm: Vec<i16> = loud.iter().map(|v| v.round() as i16).collect();
        let mut vad = EarshotVad::new(0.5);
        for f in pcm.chunks_exact(160) {
            vad.is_speech(f);
        }
        assert_eq!(vad.skipped, 0);
    }

    #[test]
    fn noise_floor_is_the_quietest_frame_of_the_last_three_seconds() {
        let mut f = NoiseFloor::default();
        assert_eq!(f.floor(), None);
        f.push(100.0);
        f.push(50.0);
        assert_eq!(f.floor(), Some(50.0));
        // 3.2 s of louder frames push the quiet one out of the window (whole 200 ms blocks).
        for _ in 0..160 {
            f.push(400.0);
        }
        assert_eq!(f.floor(), Some(400.0));
        f.push(10.0);
        assert_eq!(f.floor(), Some(10.0));
    }

    #[test]
    fn detectors_are_send() {
        fn send<T: Send>(_: &T) {}
        send(&WebRtcVad::new(3));
        send(&EarshotVad::new(0.5));
    }
}
