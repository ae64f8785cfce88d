//! Telling our greeting from any other speech: a call answered by a
//! carrier's voicemail or a PBX menu also "speaks", so with the agent's
//! config known the test call compares what came back with the greeting it
//! should hear.
//!
//! The comparison is of loudness envelopes: the level of each 20 ms frame
//! in dB (floored), of the greeting's PCM and of the decoded RTP. PCMU and
//! PCMA decode to nearly the same PCM, so the envelope is the same for both;
//! and the Pearson correlation of the two envelopes, at the best of a second
//! of shifts either way, is near 1 for the same prompt and low for other
//! speech, whose words and pauses fall elsewhere. The received audio may lag
//! the greeting (the first packet comes some frames after the answer) or
//! lead it (its first frames lost: a B2BUA relays RTP that arrives before
//! its 200 is processed).
//!
//! A script can open with different prompts (a `when` step: `greeting`
//! while open, `closed` after hours; another line's script), so the audio
//! is compared with every [`Greeting`] the agent may play first, and the
//! best match wins ([`best_match`]).

/// Samples in one 20 ms frame at 8 kHz.
const FRAME: usize = 160;
/// Frames quieter than this count as this loud (silence is all alike).
const FLOOR_DB: f32 = -60.0;
/// How far the received audio may lag or lead the greeting: 50 frames, 1 s.
pub const MAX_SHIFT_FRAMES: usize = 50;
/// The least overlap worth comparing: 25 frames, 0.5 s.
pub const MIN_FRAMES: usize = 25;
/// At or above this correlation the audio is our greeting (the same prompt
/// through G.711 reads 0.99 and more; the need question against the greeting
/// 0.69 at its best shift, measured by tests/test_call.rs).
pub const MATCH_THRESHOLD: f32 = 0.9;

/// The level of one frame of 16-bit PCM, in dBFS, floored at [`FLOOR_DB`].
pub fn frame_db(frame: &[i16]) -> f32 {
    if frame.is_empty() {
        return FLOOR_DB;
    }
    let sum: f64 = frame.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (sum / frame.len() as f64).sqrt();
    if rms < 1.0 { FLOOR_DB } else { ((20.0 * (rms / 32768.0).log10()) as f32).max(FLOOR_DB) }
}

/// The loudness envelope of 8 kHz PCM: one level per whole 20 ms frame.
pub fn envelope(pcm: &[i16]) -> Vec<f32> {
    pcm.chunks_exact(FRAME).map(frame_db).collect()
}

/// The Pearson correlation of two equally long envelopes; `None` when either is flat.
fn correlation(a: &[f32], b: &[f32]) -> Option<f32> {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().map(|&x| f64::from(x)).sum::<f64>() / n, b.iter().map(|&x| f64::from(x)).sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (f64::from(x) - ma, f64::from(y) - mb);
        cov += dx * dy;
        va += dx * dx;
        vb += dy * dy;
    }
    (va > 1e-9 && vb > 1e-9).then(|| (cov / (va * vb).sqrt()) as f32)
}

/// One prompt the agent may play first, and where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Greeting {
    /// How the result names it, e.g. `line default step closed`.
    pub label: String,
    /// Its loudness envelope ([`envelope`]).
    pub envelope: Vec<f32>,
}

/// The correlation of `received` from frame `r` with `expected` from frame
/// `e`, over as much as both have; `None` below [`MIN_FRAMES`] or flat.
fn aligned(received: &[f32], r: usize, expected: &[f32], e: usize) -> Option<f32> {
    let n = (received.len().saturating_sub(r)).min(expected.len().saturating_sub(e));
    (n >= MIN_FRAMES).then(|| correlation(&received[r..r + n], &expected[e..e + n])).flatten()
}

/// How much `received` sounds like `expected`: the best correlation of the
/// two envelopes with the received audio lagging the greeting by up to
/// [`MAX_SHIFT_FRAMES`] (silence before it) or leading it by as many (its
/// first frames missing); `None` when less than [`MIN_FRAMES`] overlap.
pub fn similarity(received: &[f32], expected: &[f32]) -> Option<f32> {
    let lagging = (0..=MAX_SHIFT_FRAMES).map(|shift| aligned(received, shift, expected, 0));
    let leading = (1..=MAX_SHIFT_FRAMES).map(|shift| aligned(received, 0, expected, shift));
    lagging.chain(leading).flatten().reduce(f32::max)
}

/// The candidate `received` sounds most like, by index, and its similarity;
/// `None` when no candidate could be compared.
pub fn best_match(received: &[f32], candidates: &[Greeting]) -> Option<(usize, f32)> {
    candidates
        .iter()
        .enumerate()
        .filter_map(|(i, g)| similarity(received, &g.envelope).map(|s| (i, s)))
        .reduce(|best, c| if c.1 > best.1 { c } else { best })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Speech-like PCM: bursts of a tone at `pattern`'s levels, 100 ms each (0 = a pause).
    fn bursts(pattern: &[u8]) -> Vec<i16> {
        pattern
            .iter()
            .flat_map(|&level| {
                (0..800).map(move |i| {
                    let amp = f64::from(level) * 2000.0;
                    (amp * (i as f64 * 2.0 * std::f64::consts::PI * 300.0 / 8000.0).sin()) as i16
                })
            })
            .collect()
    }

    #[test]
    fn the_same_prompt_matches_late_and_through_either_law_and_other_speech_does_not() {
        use crate::media::g711::Law;
        let greeting = bursts(&[0, 5, 6, 5, 0, 0, 4, 7, 7, 3, 0, 6, 5, 0, 0, 0, 5, 5, 6, 2, 0, 4]);
        let other = bursts(&[4, 4, 0, 7, 7, 7, 0, 0, 5, 2, 6, 0, 3, 3, 6, 6, 0, 5, 0, 0, 7, 1]);
        let expected = envelope(&greeting);
        for law in [Law::Pcmu, Law::Pcma] {
            // 13 frames late (260 ms), through the codec.
            let mut heard: Vec<i16> = vec![0; 13 * FRAME];
            heard.extend(greeting.iter().map(|&s| law.decode(law.encode(s))));
            let s = similarity(&envelope(&heard), &expected).unwrap();
            assert!(s > 0.95, "{law:?}: {s}");
        }
        let s = similarity(&envelope(&other), &expected).unwrap();
        assert!(s < MATCH_THRESHOLD, "other speech: {s}");
        // Too little audio, or none that varies: no verdict.
        assert_eq!(similarity(&envelope(&greeting[..10 * FRAME]), &expected), None);
        assert_eq!(similarity(&[FLOOR_DB; 100], &expected), None);
    }

    #[test]
    fn a_greeting_whose_first_200_ms_were_lost_still_matches() {
        use crate::media::g711::Law;
        let greeting = bursts(&[0, 5, 6, 5, 0, 0, 4, 7, 7, 3, 0, 6, 5, 0, 0, 0, 5, 5, 6, 2, 0, 4]);
        let expected = envelope(&greeting);
        // The first 200 ms (10 frames) never came: the audio leads the greeting.
        let heard: Vec<i16> = greeting[10 * FRAME..].iter().map(|&s| Law::Pcmu.decode(Law::Pcmu.encode(s))).collect();
        let s = similarity(&envelope(&heard), &expected).unwrap();
        assert!(s > 0.95, "leading by 200 ms: {s}");
        // Lagging only, as before, this alignment was never tried: its best is no match.
        let lag_only = (0..=MAX_SHIFT_FRAMES)
            .filter_map(|shift| aligned(&envelope(&heard), shift, &expected, 0))
            .reduce(f32::max)
            .unwrap();
        assert!(lag_only < MATCH_THRESHOLD, "lagging only: {lag_only}");
    }

    #[test]
    fn the_best_of_several_candidates_is_the_one_heard() {
        let open = bursts(&[0, 5, 6, 5, 0, 0, 4, 7, 7, 3, 0, 6, 5, 0, 0, 0, 5, 5, 6, 2, 0, 4]);
        let closed = bursts(&[4, 4, 0, 7, 7, 7, 0, 0, 5, 2, 6, 0, 3, 3, 6, 6, 0, 5, 0, 0, 7, 1]);
        let candidates = [
            Greeting { label: "line default step greeting".into(), envelope: envelope(&open) },
            Greeting { label: "line default step closed".into(), envelope: envelope(&closed) },
        ];
        let (i, s) = best_match(&envelope(&closed), &candidates).unwrap();
        assert_eq!((candidates[i].label.as_str(), s >= MATCH_THRESHOLD), ("line default step closed", true), "{s}");
        assert_eq!(best_match(&envelope(&closed), &[]), None);
    }
}
