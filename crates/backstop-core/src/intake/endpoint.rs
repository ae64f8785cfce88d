//! Speech endpointing for voice answers, Sans-IO: fed 20 ms frames with the
//! VAD's verdict, it finds where an answer starts and ends and hands back
//! the answer's audio.
//!
//! It always keeps the last `pre_roll` of audio, so when speech is detected
//! the recording starts that far back and the first syllable (which the VAD
//! often flags a frame or two late) is never clipped. Speech starts after
//! three speech frames in a row (`ONSET_FRAMES`); it ends after `end_silence` of
//! non-speech frames, at `max_speech`, or when [`Endpointer::finish`] is
//! called (the caller hung up, or RTP stopped arriving). A burst shorter
//! than `min_speech` (a cough, a click) is dropped and listening goes on.
//!
//! A long answer is not held whole: once it is certain to be kept (it has
//! `min_speech` of speech), [`Endpointer::take_spill`] hands out its settled
//! audio in blocks of [`SPILL_SAMPLES`], which the runtime writes ahead to
//! disk. Only the part that may still be cut (after the last speech frame)
//! and less than a block stay in memory.

use crate::intake::program::ListenParams;
use crate::media::g711::Law;
use crate::media::recorder::Audio;
use std::collections::VecDeque;

pub const FRAME_SAMPLES: usize = 160;
const FRAME_MS: u64 = 20;
/// Speech frames in a row that count as the start of speech (60 ms).
const ONSET_FRAMES: usize = 3;
/// Audio kept after the last speech frame, so the last word is not cut.
const TAIL_FRAMES: usize = 3;
/// An answer's settled audio is handed out once this much has gathered (0.5 s).
pub const SPILL_SAMPLES: usize = 4000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointEvent {
    SpeechStarted,
    /// What started was too short to be speech (a cough, a click): listening goes on.
    Discarded,
    /// The answer: audio from pre-roll to just after the last speech frame.
    Answer(SpokenAnswer),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpokenAnswer {
    /// The answer's audio after the `spilled` samples handed out before.
    pub samples: Audio,
    /// Samples at the start of the answer already handed out by
    /// [`Endpointer::take_spill`]: they come before `samples`.
    pub spilled: usize,
    /// From the first to the last speech frame.
    pub speech_ms: u64,
    /// Why it ended.
    pub ended_by: SpeechEnd,
}

/// Why a spoken answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeechEnd {
    /// `end_silence` of non-speech after the last speech frame.
    Silence,
    /// It reached `max_speech`.
    MaxLength,
    /// [`Endpointer::finish`]: the caller hung up, or their audio stopped.
    Finished,
}

#[derive(Debug)]
enum State {
    Off,
    Waiting {
        onset: usize,
    },
    Speech {
        /// The answer's audio after the first `spilled` samples.
        samples: Audio,
        spilled: usize,
        start_frame: usize,
        last_speech_frame: usize,
        frames: usize,
        speech_frames: usize,
    },
}

#[derive(Debug)]
pub struct Endpointer {
    params: ListenParams,
    /// The last `pre_roll` + onset of audio, for the start of an answer, held
    /// as an answer holds its audio: the call's G.711 bytes, or 16-bit
    /// little-endian samples with no codec known (see [`Audio::raw_bytes`]).
    history: VecDeque<u8>,
    state: State,
    /// The call's codec: answers are held as its G.711 bytes (see [`Audio`]).
    law: Option<Law>,
}

impl Default for Endpointer {
    fn default() -> Self {
        Endpointer { params: ListenParams::default(), history: VecDeque::new(), state: State::Off, law: None }
    }
}

fn frames(d: std::time::Duration) -> usize {
    (d.as_millis() as u64).div_ceil(FRAME_MS) as usize
}

impl Endpointer {
    /// The codec of the audio from now on; answers are stored in it.
    pub fn set_law(&mut self, law: Law) {
        if self.law != Some(law) && !self.history.is_empty() {
            // The history was held in the other form: carry it over.
            let old = self.history_audio().to_pcm();
            self.history = old.iter().map(|s| law.encode(*s)).collect();
        }
        self.law = Some(law);
    }

    /// The pre-roll history as audio of the call's kind.
    fn history_audio(&self) -> Audio {
        let (a, b) = self.history.as_slices();
        Audio::new(self.law).prepend_raw(&[a, b].concat())
    }

    /// Start listening for an answer with these settings.
    pub fn arm(&mut self, params: ListenParams) {
        self.params = params;
        if !self.is_armed() {
            // Only speech from now on can start an answer; the history still serves as pre-roll.
            self.state = State::Waiting { onset: 0 };
        }
    }

    /// Stop listening; an answer in progress is dropped.
    pub fn disarm(&mut self) {
        self.state = State::Off;
    }

    pub fn is_armed(&self) -> bool {
        !matches!(self.state, State::Off)
    }

    pub fn in_speech(&self) -> bool {
        matches!(self.state, State::Speech { .. })
    }

    /// One 20 ms frame and whether the VAD called it speech.
    pub fn handle_frame(&mut self, frame: &[i16], speech: bool) -> Option<EndpointEvent> {
        let keep = frames(self.params.pre_roll) + ONSET_FRAMES;
        let width = if self.law.is_some() { 1 } else { 2 };
        // Exactly the room it needs (pre-roll, onset and the frame coming in),
        // not the doubling growth of a deque: it is held for the whole call.
        let room = (keep + 1) * FRAME_SAMPLES * width;
        if self.history.capacity() < room {
            self.history.reserve_exact(room - self.history.len());
        }
        match self.law {
            Some(law) => self.history.extend(frame.iter().map(|s| law.encode(*s))),
            None => self.history.extend(frame.iter().flat_map(|s| s.to_le_bytes())),
        }
        let excess = self.history.len().saturating_sub(keep * FRAME_SAMPLES * width);
        self.history.drain(..excess);
        match &mut self.state {
            State::Off => None,
            State::Waiting { onset } => {
                *onset = if speech { *onset + 1 } else { 0 };
                if *onset < ONSET_FRAMES {
                    return None;
                }
                // The history is exactly pre_roll before the first onset frame, and the onset.
                let samples = self.history_audio();
                let n = samples.len().div_ceil(FRAME_SAMPLES);
                self.state = State::Speech {
                    samples,
                    spilled: 0,
                    start_frame: n.saturating_sub(ONSET_FRAMES),
                    last_speech_frame: n - 1,
                    frames: n,
                    speech_frames: ONSET_FRAMES,
                };
                Some(EndpointEvent::SpeechStarted)
            }
            State::Speech { samples, last_speech_frame, frames: n, speech_frames, start_frame, .. } => {
                samples.push(frame);
                *n += 1;
                if speech {
                    *last_speech_frame = *n - 1;
                    *speech_frames += 1;
                }
                let silent = *n - 1 - *last_speech_frame;
                let spoken_ms = (*n - *start_frame) as u64 * FRAME_MS;
                if spoken_ms >= self.params.max_speech.as_millis() as u64 {
                    return self.end(SpeechEnd::MaxLength);
                }
                if silent >= frames(self.params.end_silence) {
                    if (*speech_frames as u64 * FRAME_MS) < self.params.min_speech.as_millis() as u64 {
                        // Too short to be an answer: keep listening.
                        self.state = State::Waiting { onset: 0 };
                        return Some(EndpointEvent::Discarded);
                    }
                    return self.end(SpeechEnd::Silence);
                }
                None
            }
        }
    }

    /// The answer's next settled block, once it is certain to be kept and
    /// [`SPILL_SAMPLES`] have settled: audio up to the last speech frame and
    /// its tail, which no ending can cut. The blocks, in order, then the
    /// [`SpokenAnswer`]'s own samples make up the answer. Each block comes
    /// with its offset in the answer, in samples (0: a new answer).
    pub fn take_spill(&mut self) -> Option<(usize, Audio)> {
        let min_speech_frames = frames(self.params.min_speech);
        let State::Speech { samples, spilled, last_speech_frame, speech_frames, .. } = &mut self.state else {
            return None;
        };
        if *speech_frames < min_speech_frames {
            return None;
        }
        let settled = ((*last_speech_frame + 1 + TAIL_FRAMES) * FRAME_SAMPLES).min(*spilled + samples.len());
        let ready = settled.saturating_sub(*spilled);
        if ready < SPILL_SAMPLES {
            return None;
        }
        let offset = *spilled;
        *spilled += ready;
        Some((offset, samples.split_front(ready)))
    }

    /// End an answer in progress now (hang-up, RTP stopped); `None` if there is none.
    pub fn finish(&mut self) -> Option<SpokenAnswer> {
        match self.end(SpeechEnd::Finished) {
            Some(EndpointEvent::Answer(a)) => Some(a),
            _ => None,
        }
    }

    fn end(&mut self, why: SpeechEnd) -> Option<EndpointEvent> {
        if !self.in_speech() {
            return None;
        }
        let State::Speech { mut samples, spilled, start_frame, last_speech_frame, .. } =
            std::mem::replace(&mut self.state, State::Off)
        else {
            unreachable!("checked above")
        };
        samples.truncate(((last_speech_frame + 1 + TAIL_FRAMES) * FRAME_SAMPLES).saturating_sub(spilled));
        let speech_ms = (last_speech_frame + 1 - start_frame) as u64 * FRAME_MS;
        Some(EndpointEvent::Answer(SpokenAnswer { samples, spilled, speech_ms, ended_by: why }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn params() -> ListenParams {
        ListenParams {
            end_silence: Duration::from_millis(1200),
            max_speech: Duration::from_secs(5),
            min_speech: Duration::from_millis(200),
            pre_roll: Duration::from_millis(300),
            no_speech_timeout: Duration::from_secs(5),
            vad_aggressiveness: 3,
        }
    }

    /// Feed `pattern` (true = speech frame); frame i's samples all equal i.
    fn feed(e: &mut Endpointer, from: usize, pattern: &[bool]) -> Vec<(usize, EndpointEvent)> {
        let mut out = Vec::new();
        for (k, s) in pattern.iter().enumerate() {
            let i = from + k;
            if let Some(ev) = e.handle_frame(&[i as i16; FRAME_SAMPLES], *s) {
                out.push((i, ev));
            }
        }
        out
    }

    fn run(speech: usize, silence: usize) -> Vec<bool> {
        std::iter::repeat_n(true, speech).chain(std::iter::repeat_n(false, silence)).collect()
    }

    #[test]
    fn an_answer_keeps_the_pre_roll_and_ends_after_the_silence() {
        let mut e = Endpointer::default();
        e.arm(params());
        // 1 s of silence, then 1 s of speech with a 400 ms pause inside, then silence.
        let mut pattern = run(0, 50);
        pattern.extend(run(25, 20));
        pattern.extend(run(25, 100));
        let evs = feed(&mut e, 0, &pattern);
        assert_eq!(evs[0], (52, EndpointEvent::SpeechStarted));
        let (at, EndpointEvent::Answer(a)) = &evs[1] else { panic!("{evs:?}") };
        // Last speech frame 119; 1200 ms = 60 silent frames later.
        assert_eq!(*at, 179);
        assert_eq!(a.ended_by, SpeechEnd::Silence);
        assert_eq!(a.speech_ms, 70 * 20, "first to last speech frame, pause included");
        // First sample: 300 ms (15 frames) before the first speech frame 50.
        assert_eq!(a.samples.to_pcm()[0], 35);
        assert_eq!(a.samples.len(), (120 + TAIL_FRAMES - 35) * FRAME_SAMPLES);
        assert!(!e.is_armed());
    }

    #[test]
    fn short_bursts_are_not_answers_and_max_length_cuts() {
        let mut e = Endpointer::default();
        e.arm(params());
        let mut pattern = run(5, 70); // 100 ms: below min_speech
        pattern.extend(run(400, 0)); // 8 s of talking
        let evs = feed(&mut e, 0, &pattern);
        assert_eq!(evs.len(), 4, "{evs:?}");
        assert_eq!(evs[0].1, EndpointEvent::SpeechStarted);
        assert_eq!(evs[1], (64, EndpointEvent::Discarded));
        assert_eq!(evs[2], (77, EndpointEvent::SpeechStarted));
        let EndpointEvent::Answer(a) = &evs[3].1 else { panic!() };
        assert_eq!(a.ended_by, SpeechEnd::MaxLength);
        assert_eq!(evs[3].0, 75 + 250 - 1);
    }

    #[test]
    fn speech_before_arming_is_pre_roll_only_and_finish_returns_partial_audio() {
        let mut e = Endpointer::default();
        feed(&mut e, 0, &run(10, 0));
        assert!(e.finish().is_none());
        e.arm(params());
        // Speech that was going on while disarmed starts an answer after the onset frames.
        let evs = feed(&mut e, 10, &run(4, 0));
        assert_eq!(evs, vec![(12, EndpointEvent::SpeechStarted)]);
        let a = e.finish().unwrap();
        assert_eq!(a.ended_by, SpeechEnd::Finished);
        assert_eq!(a.samples.to_pcm()[0], 0, "the pre-roll reaches back into the unarmed audio");
    }

    /// Settled audio is handed out in blocks as the answer goes on; the
    /// blocks and the answer's own samples are exactly the answer unspilled,
    /// and what is held stays under a block plus the end silence.
    #[test]
    fn a_long_answer_hands_out_its_settled_audio_in_blocks() {
        let mut pattern = run(0, 50);
        for _ in 0..8 {
            pattern.extend(run(25, 10));
        }
        pattern.extend(run(0, 80));
        let whole = {
            let mut e = Endpointer::default();
            e.arm(params());
            let evs = feed(&mut e, 0, &pattern);
            let Some((_, EndpointEvent::Answer(a))) = evs.last().cloned() else { panic!("{evs:?}") };
            assert_eq!(a.spilled, 0);
            a
        };
        let mut e = Endpointer::default();
        e.arm(params());
        let mut blocks: Vec<(usize, Audio)> = Vec::new();
        let mut answer = None;
        let mut most_held = 0;
        for (i, s) in pattern.iter().enumerate() {
            if let Some(EndpointEvent::Answer(a)) = e.handle_frame(&[i as i16; FRAME_SAMPLES], *s) {
                answer = Some(a);
            }
            if let Some(b) = e.take_spill() {
                blocks.push(b);
            }
            if let State::Speech { samples, .. } = &e.state {
                most_held = most_held.max(samples.len());
            }
        }
        let a = answer.expect("an answer");
        assert!(blocks.len() >= 3, "{} blocks", blocks.len());
        let mut offset = 0;
        let mut joined = Vec::new();
        for (at, b) in &blocks {
            assert_eq!(*at, offset, "blocks in order, each where the last ended");
            assert!(b.len() >= SPILL_SAMPLES);
            offset += b.len();
            joined.extend(b.to_pcm());
        }
        assert_eq!(a.spilled, offset);
        joined.extend(a.samples.to_pcm());
        assert_eq!(joined, whole.samples.to_pcm());
        assert_eq!(a.speech_ms, whole.speech_ms);
        let bound = SPILL_SAMPLES + frames(params().end_silence) * FRAME_SAMPLES + 2 * FRAME_SAMPLES;
        assert!(most_held <= bound, "held {most_held} samples at most, bound {bound}");
    }

    #[test]
    fn nothing_is_handed_out_before_the_answer_is_certain() {
        let mut e = Endpointer::default();
        // A min_speech of 1 s (50 frames): 40 speech frames settle 4000+ samples
        // with the pre-roll, and must still not be handed out.
        let p = ListenParams { min_speech: Duration::from_secs(1), ..params() };
        e.arm(p);
        for (i, s) in run(0, 50).into_iter().chain(run(40, 0)).enumerate() {
            e.handle_frame(&[i as i16; FRAME_SAMPLES], s);
            assert!(e.take_spill().is_none(), "handed out at frame {i}, under min_speech");
        }
        // Past min_speech, the settled audio goes out.
        let mut out = None;
        for (i, s) in run(15, 0).into_iter().enumerate() {
            e.handle_frame(&[(90 + i) as i16; FRAME_SAMPLES], s);
            out = out.or(e.take_spill());
        }
        let (offset, block) = out.expect("a block once the answer is certain");
        assert_eq!(offset, 0);
        assert!(block.len() >= SPILL_SAMPLES);
    }

    /// On a G.711 call the pre-roll is held as the call's bytes (one per
    /// sample) and comes back in the answer exactly as heard.
    #[test]
    fn a_g711_call_keeps_its_pre_roll_as_bytes() {
        let mut e = Endpointer::default();
        e.set_law(Law::Pcmu);
        e.arm(params());
        let frame =
            |i: usize| -> Vec<i16> { (0..FRAME_SAMPLES).map(|k| ((i * 97 + k * 31) % 4000) as i16 - 2000).collect() };
        let mut heard = Vec::new();
        let mut answer = None;
        for (i, s) in run(0, 30).into_iter().chain(run(20, 70)).enumerate() {
            let f = frame(i);
            heard.extend(f.iter().map(|x| Law::Pcmu.decode(Law::Pcmu.encode(*x))));
            if let Some(EndpointEvent::Answer(a)) = e.handle_frame(&f, s) {
                answer = Some(a);
            }
            assert!(e.history.len() <= (frames(params().pre_roll) + ONSET_FRAMES) * FRAME_SAMPLES);
        }
        let a = answer.expect("an answer");
        assert!(matches!(a.samples, Audio::G711(Law::Pcmu, _)));
        // From 300 ms before the first speech frame (30) to the tail after the last (49).
        let from = (30 - 15) * FRAME_SAMPLES;
        assert_eq!(a.samples.to_pcm(), heard[from..(50 + TAIL_FRAMES) * FRAME_SAMPLES]);
    }
}
