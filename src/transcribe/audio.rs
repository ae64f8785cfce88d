//! Recorded answers as an engine takes them: 8 kHz G.711 (or PCM) WAV
//! decoded and brought up to 16 kHz.
//!
//! Reading: [`read_recording`] hands the file to the prompt loader
//! (`backstop_core::media::prompt::Prompt::from_bytes`), which already reads
//! every WAV that `media_files::write_recording` writes (16-bit PCM, μ-law
//! tag 7, A-law tag 6) and brings any other standard rate to 8 kHz.
//!
//! Upsampling: [`to_engine_rate`] is an exact 2× interpolator, a 129-tap
//! Kaiser-windowed sinc (β = 8, cutoff 3.7 kHz at the 16 kHz rate),
//! applied as two 64/65-tap polyphase branches and compensated for its
//! 64-sample delay, so the output is time-aligned with the input and
//! exactly twice as long. A band-limited filter matters here: the naive
//! ways of doubling the rate (repeating or linearly interpolating samples)
//! leave an image of the 300–3400 Hz phone band mirrored at 4.6–7.7 kHz,
//! which Whisper's 80 mel bands up to 8 kHz see as extra high-pitched
//! "speech". This filter passes 0–3.4 kHz within 0.1 dB and puts the image
//! more than 70 dB down (the tests check a 1 kHz tone: its 7 kHz image is
//! below -60 dB). Each branch is normalised to unit DC gain, so silence
//! stays silence and a constant stays constant. A dedicated 2× filter,
//! rather than `rubato` (which `backstop-core` uses for prompts), because
//! the ratio is fixed and exact, the filter is zero-phase with no warm-up
//! or flush to handle, and it keeps `rubato` out of the root crate's
//! dependencies; it costs 65 multiply-adds per output sample (about 1 M
//! per audio second, well under a millisecond).
//!
//! Padding: [`pad_silence`] adds silence around a clip. Measured with
//! whisper.cpp tiny.en on 35 clips at 8 kHz (figures in
//! `transcribe::whisper::WhisperOptions`' doc), 1 s on each side helps
//! when the encoder window is cut to the clip (word errors 49 % → 40 %),
//! 0.5 s does not (47 %), and with the full 30 s window it hurt (40.5 % →
//! 44.8 %). So it is the whisper engine's option (`pad_secs`, default
//! 1 s), not done here: this module's output stays the recording itself.

use crate::transcribe::engine::{ENGINE_RATE, TranscribeError};
use backstop_core::media::prompt::{Prompt, PromptError};
use std::path::Path;
use std::sync::OnceLock;

/// The recordings' rate.
pub const RECORDING_RATE: u32 = 8_000;

/// Read a recorded answer (WAV: 8 kHz mono μ-law, A-law or 16-bit PCM) to
/// 8 kHz samples. A WAV with no samples is an empty answer, not an error.
pub fn read_recording(path: &Path) -> Result<Vec<i16>, TranscribeError> {
    let err = |reason: String| TranscribeError::Audio { path: path.to_path_buf(), reason };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("wav").to_ascii_lowercase();
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("recording");
    match Prompt::from_bytes(name, &ext, &bytes) {
        Ok(prompt) => Ok(prompt.pcm),
        Err(PromptError::Empty) => Ok(Vec::new()),
        Err(e) => Err(err(e.to_string())),
    }
}

/// Half the filter length: the filter has 2 * HALF + 1 taps and delays by
/// HALF samples at the output rate.
const HALF: usize = 64;
/// Cutoff at the output rate, Hz.
const CUTOFF_HZ: f64 = 3_700.0;
const KAISER_BETA: f64 = 8.0;

/// The interpolation filter's taps, each polyphase branch scaled to a DC
/// gain of 1.
fn taps() -> &'static [f32; 2 * HALF + 1] {
    static TAPS: OnceLock<[f32; 2 * HALF + 1]> = OnceLock::new();
    TAPS.get_or_init(|| {
        let fc = CUTOFF_HZ / ENGINE_RATE as f64; // cycles per output sample
        let i0_beta = bessel_i0(KAISER_BETA);
        let mut h = [0f64; 2 * HALF + 1];
        for (j, tap) in h.iter_mut().enumerate() {
            let t = j as f64 - HALF as f64;
            let x = 2.0 * fc * t;
            let sinc = if t == 0.0 { 1.0 } else { (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x) };
            let r = t / HALF as f64;
            let window = bessel_i0(KAISER_BETA * (1.0 - r * r).max(0.0).sqrt()) / i0_beta;
            *tap = 2.0 * fc * sinc * window;
        }
        // Normalise each phase (even taps, odd taps) to sum to 1.
        for phase in 0..2 {
            let sum: f64 = h.iter().skip(phase).step_by(2).sum();
            for tap in h.iter_mut().skip(phase).step_by(2) {
                *tap /= sum;
            }
        }
        let mut out = [0f32; 2 * HALF + 1];
        for (o, v) in out.iter_mut().zip(h) {
            *o = v as f32;
        }
        out
    })
}

/// The modified Bessel function of the first kind, order 0 (power series).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let q = x * x / 4.0;
    for k in 1..64 {
        term *= q / (k * k) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

/// 8 kHz samples to [`ENGINE_RATE`] (16 kHz) in [-1, 1], exactly twice as
/// many, band-limited (see the module doc).
pub fn to_engine_rate(pcm_8k: &[i16]) -> Vec<f32> {
    debug_assert_eq!(ENGINE_RATE, 2 * RECORDING_RATE);
    let h = taps();
    let n = pcm_8k.len();
    let x: Vec<f32> = pcm_8k.iter().map(|s| *s as f32 / 32768.0).collect();
    let mut out = Vec::with_capacity(2 * n);
    // Output sample m is the filter's output at m + HALF over the
    // zero-stuffed input u (u[2i] = x[i], odd u zero):
    // y[m] = sum_j h[j] * u[m + HALF - j].
    if n == 0 {
        return out;
    }
    let last_u = 2 * n - 2; // the last u index that carries a sample
    for m in 0..2 * n {
        let c = m + HALF; // u index under tap j = 0
        // Taps j with c - j even (a sample) and 0 <= c - j <= last_u; c and
        // c - last_u have the same parity, so stepping by 2 stays on samples.
        let mut j = if c > last_u { c - last_u } else { c & 1 };
        let mut acc = 0f32;
        while j <= 2 * HALF && j <= c {
            acc += h[j] * x[(c - j) / 2];
            j += 2;
        }
        out.push(acc.clamp(-1.0, 1.0));
    }
    out
}

/// `samples` with `secs` of silence before and after, at [`ENGINE_RATE`].
pub fn pad_silence(samples: &[f32], secs: f32) -> Vec<f32> {
    let pad = (secs.max(0.0) * ENGINE_RATE as f32).round() as usize;
    let mut out = Vec::with_capacity(samples.len() + 2 * pad);
    out.resize(pad, 0.0);
    out.extend_from_slice(samples);
    out.resize(out.len() + pad, 0.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_core::media::g711::Law;
    use backstop_core::media::recorder::{Audio, RecordingFormat, wav_bytes};

    fn tone(freq: f64, rate: f64, n: usize, amp: f64) -> Vec<i16> {
        (0..n).map(|i| (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / rate).sin()) as i16).collect()
    }

    /// Amplitude of the `freq` component of `x` (rate `rate`), by correlation.
    fn amplitude(x: &[f32], freq: f64, rate: f64) -> f64 {
        let (mut s, mut c) = (0f64, 0f64);
        for (i, v) in x.iter().enumerate() {
            let ph = 2.0 * std::f64::consts::PI * freq * i as f64 / rate;
            s += *v as f64 * ph.sin();
            c += *v as f64 * ph.cos();
        }
        2.0 * (s * s + c * c).sqrt() / x.len() as f64
    }

    #[test]
    fn twice_as_long_and_empty_stays_empty() {
        assert!(to_engine_rate(&[]).is_empty());
        assert_eq!(to_engine_rate(&[1000]).len(), 2);
        assert_eq!(to_engine_rate(&[0; 8000]).len(), 16000);
        assert!(to_engine_rate(&[0; 8000]).iter().all(|v| *v == 0.0), "silence stays silence");
        assert_eq!(pad_silence(&[0.5; 10], 0.5).len(), 10 + 16000);
    }

    #[test]
    fn a_1khz_tone_stays_a_1khz_tone_without_its_7khz_image() {
        let x = tone(1000.0, 8000.0, 8000, 16000.0);
        let y = to_engine_rate(&x);
        // Away from the edges (the filter's zero padding).
        let mid = &y[400..y.len() - 400];
        let a1 = amplitude(mid, 1000.0, 16000.0);
        let a7 = amplitude(mid, 7000.0, 16000.0);
        let expect = 16000.0 / 32768.0;
        assert!((a1 - expect).abs() / expect < 0.01, "1 kHz amplitude {a1}, want {expect}");
        let image_db = 20.0 * (a7 / a1).log10();
        assert!(image_db < -60.0, "7 kHz image at {image_db:.1} dB");
        // And it is time-aligned: even outputs are close to the input samples.
        for i in 200..300 {
            assert!((y[2 * i] - x[i] as f32 / 32768.0).abs() < 0.005, "sample {i}");
        }
    }

    #[test]
    fn the_phone_band_passes_flat() {
        for f in [300.0, 1000.0, 2000.0, 3000.0, 3400.0] {
            let y = to_engine_rate(&tone(f, 8000.0, 8000, 16000.0));
            let a = amplitude(&y[400..15600], f, 16000.0) / (16000.0 / 32768.0);
            let db = 20.0 * a.log10();
            assert!(db.abs() < 0.1, "{f} Hz passes at {db:.2} dB");
        }
    }

    #[test]
    fn reads_mulaw_alaw_and_pcm_recordings() {
        let dir = std::env::temp_dir().join(format!("backstop-transcribe-audio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let x = tone(440.0, 8000.0, 1600, 8000.0);

        let pcm = dir.join("pcm.wav");
        std::fs::write(&pcm, wav_bytes(&Audio::from_pcm(None, &x), RecordingFormat::Pcm16)).unwrap();
        assert_eq!(read_recording(&pcm).unwrap(), x);

        let ulaw = dir.join("ulaw.wav");
        std::fs::write(&ulaw, wav_bytes(&Audio::from_pcm(Some(Law::Pcmu), &x), RecordingFormat::Ulaw)).unwrap();
        let want: Vec<i16> = x.iter().map(|s| Law::Pcmu.decode(Law::Pcmu.encode(*s))).collect();
        assert_eq!(read_recording(&ulaw).unwrap(), want);

        // A-law: wav_bytes writes PCM or μ-law only, so patch a μ-law file's
        // format tag to 6 and its data to A-law bytes.
        let mut alaw_bytes = wav_bytes(&Audio::from_pcm(Some(Law::Pcmu), &x), RecordingFormat::Ulaw);
        let fmt = alaw_bytes.windows(4).position(|w| w == b"fmt ").unwrap();
        assert_eq!(u16::from_le_bytes([alaw_bytes[fmt + 8], alaw_bytes[fmt + 9]]), 7);
        alaw_bytes[fmt + 8..fmt + 10].copy_from_slice(&6u16.to_le_bytes());
        let data = alaw_bytes.windows(4).position(|w| w == b"data").unwrap() + 8;
        for (i, s) in x.iter().enumerate() {
            alaw_bytes[data + i] = Law::Pcma.encode(*s);
        }
        let alaw = dir.join("alaw.wav");
        std::fs::write(&alaw, &alaw_bytes).unwrap();
        let want: Vec<i16> = x.iter().map(|s| Law::Pcma.decode(Law::Pcma.encode(*s))).collect();
        assert_eq!(read_recording(&alaw).unwrap(), want);

        let empty = dir.join("empty.wav");
        std::fs::write(&empty, wav_bytes(&Audio::from_pcm(None, &[]), RecordingFormat::Pcm16)).unwrap();
        assert_eq!(read_recording(&empty).unwrap(), Vec::<i16>::new());

        let bad = dir.join("bad.wav");
        std::fs::write(&bad, b"RIFFxxxxWAVE").unwrap();
        let e = read_recording(&bad).unwrap_err();
        assert!(matches!(e, TranscribeError::Audio { .. }) && e.to_string().contains("bad.wav"), "{e}");
        let e = read_recording(&dir.join("missing.wav")).unwrap_err();
        assert!(matches!(e, TranscribeError::Audio { .. }) && e.to_string().contains("missing.wav"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
