//! Recorded prompts: decoded once at start (the runtime reads the files and
//! hands the bytes here), resampled to 8 kHz mono, and cached as
//! ready-to-send 20 ms G.711 frames in both laws.
//!
//! Accepted inputs: PCM WAV at any sample rate, mono or stereo, 8–32 bit or
//! float (read by `hound`, resampled with `rubato`); μ-law and A-law WAV
//! (format tags 7 and 6, which `hound` rejects, read here); and Asterisk's raw
//! `.ulaw`/`.alaw` (8 kHz G.711) and `.sln`/`.sln16`/... (signed linear) files.

use crate::media::g711::Law;
use std::collections::HashMap;
use std::sync::Arc;

/// Samples per 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;

/// One prompt, encoded.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub name: String,
    /// 8 kHz mono linear PCM.
    pub pcm: Vec<i16>,
    ulaw: Vec<u8>,
    alaw: Vec<u8>,
}

/// Why a prompt file's bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    #[error("unknown prompt format {0:?} (wav, ulaw, alaw, sln)")]
    UnknownFormat(String),
    #[error("no audio samples")]
    Empty,
    #[error("sample rate {0} Hz is not a standard rate ({STANDARD_RATES:?})")]
    OddRate(u32),
    #[error("longer than {} minutes", MAX_PROMPT_SECS / 60)]
    TooLong,
    #[error("{0}")]
    Wav(String),
    #[error("resampling: {0}")]
    Resample(String),
}

impl Prompt {
    /// Build a prompt from 8 kHz mono samples.
    pub fn from_pcm(name: &str, pcm: Vec<i16>) -> Prompt {
        let encode = |law: Law| {
            let mut out: Vec<u8> = pcm.iter().map(|s| law.encode(*s)).collect();
            // At least one frame, so that playing an empty prompt still finishes.
            let pad = if out.is_empty() {
                FRAME_SAMPLES
            } else {
                (FRAME_SAMPLES - out.len() % FRAME_SAMPLES) % FRAME_SAMPLES
            };
            out.extend(std::iter::repeat_n(law.silence(), pad));
            out
        };
        Prompt { name: name.to_string(), ulaw: encode(Law::Pcmu), alaw: encode(Law::Pcma), pcm }
    }

    /// The encoded prompt, a whole number of frames long (the last padded with silence).
    pub fn encoded(&self, law: Law) -> &[u8] {
        match law {
            Law::Pcmu => &self.ulaw,
            Law::Pcma => &self.alaw,
        }
    }

    pub fn frame_count(&self) -> usize {
        self.ulaw.len() / FRAME_SAMPLES
    }

    /// Frame `i` (0-based) in `law`.
    pub fn frame(&self, law: Law, i: usize) -> &[u8] {
        &self.encoded(law)[i * FRAME_SAMPLES..(i + 1) * FRAME_SAMPLES]
    }

    pub fn duration_ms(&self) -> u64 {
        self.frame_count() as u64 * 20
    }

    /// Decode a prompt file's bytes; `ext` (lower case) picks the format.
    pub fn from_bytes(name: &str, ext: &str, bytes: &[u8]) -> Result<Prompt, PromptError> {
        let (rate, samples) = match ext {
            "ulaw" | "mulaw" | "pcmu" | "ul" => (8000, bytes.iter().map(|b| Law::Pcmu.decode(*b)).collect()),
            "alaw" | "pcma" | "al" => (8000, bytes.iter().map(|b| Law::Pcma.decode(*b)).collect()),
            "sln" | "raw" => (8000, le_i16(bytes)),
            "sln12" => (12000, le_i16(bytes)),
            "sln16" => (16000, le_i16(bytes)),
            "sln24" => (24000, le_i16(bytes)),
            "sln32" => (32000, le_i16(bytes)),
            "sln44" => (44100, le_i16(bytes)),
            "sln48" => (48000, le_i16(bytes)),
            "wav" | "wave" => read_wav(bytes)?,
            other => return Err(PromptError::UnknownFormat(other.to_string())),
        };
        if samples.is_empty() {
            return Err(PromptError::Empty);
        }
        if !STANDARD_RATES.contains(&rate) {
            return Err(PromptError::OddRate(rate));
        }
        if samples.len() as u64 > MAX_PROMPT_SECS * rate as u64 {
            return Err(PromptError::TooLong);
        }
        let pcm = if rate == 8000 { samples } else { resample_to_8k(&samples, rate)? };
        Ok(Prompt::from_pcm(name, pcm))
    }
}

/// Sample rates a prompt may have (others are refused rather than resampled
/// at an odd ratio, which costs an FFT as long as the ratio is awkward).
const STANDARD_RATES: [u32; 13] =
    [8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 176400, 192000];
/// The longest prompt loaded: prompts are held in memory by every process.
const MAX_PROMPT_SECS: u64 = 600;

fn le_i16(bytes: &[u8]) -> Vec<i16> {
    bytes.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect()
}

/// A WAV file we cannot read, and why.
fn wav(why: &str) -> PromptError {
    PromptError::Wav(why.to_string())
}

/// Read a WAV file to (sample rate, mono samples).
fn read_wav(bytes: &[u8]) -> Result<(u32, Vec<i16>), PromptError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(wav("not a RIFF/WAVE file"));
    }
    // Find the fmt chunk to see whether it is G.711, which hound cannot read.
    let mut pos = 12;
    let mut format: Option<(u16, u16, u32, u16)> = None;
    let mut data: Option<&[u8]> = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32::from_le_bytes([bytes[pos + 4], bytes[pos + 5], bytes[pos + 6], bytes[pos + 7]]) as usize;
        let body_start = pos + 8;
        let body_end = body_start.saturating_add(len).min(bytes.len());
        let body = &bytes[body_start..body_end];
        if id == b"fmt " && body.len() >= 16 {
            let tag = u16::from_le_bytes([body[0], body[1]]);
            let channels = u16::from_le_bytes([body[2], body[3]]);
            let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
            let bits = u16::from_le_bytes([body[14], body[15]]);
            format = Some((tag, channels, rate, bits));
        } else if id == b"data" {
            data = Some(body);
        }
        pos = body_start.saturating_add(len + (len & 1));
    }
    let (tag, channels, rate, _bits) = format.ok_or_else(|| wav("no fmt chunk"))?;
    if channels == 0 || rate == 0 {
        return Err(wav("fmt chunk has no channels or sample rate"));
    }
    let law = match tag {
        6 => Some(Law::Pcma),
        7 => Some(Law::Pcmu),
        _ => None,
    };
    if let Some(law) = law {
        let data = data.ok_or_else(|| wav("no data chunk"))?;
        let decoded: Vec<i16> = data.iter().map(|b| law.decode(*b)).collect();
        return Ok((rate, downmix(&decoded, channels as usize)));
    }
    let reader = hound::WavReader::new(std::io::Cursor::new(bytes)).map_err(|e| wav(&e.to_string()))?;
    let spec = reader.spec();
    let samples: Vec<i16> = match spec.sample_format {
        hound::SampleFormat::Int => {
            let shift = spec.bits_per_sample as i32 - 16;
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| if shift >= 0 { (v >> shift) as i16 } else { (v << -shift) as i16 }))
                .collect::<Result<_, _>>()
                .map_err(|e| wav(&e.to_string()))?
        }
        hound::SampleFormat::Float => reader
            .into_samples::<f32>()
            .map(|s| s.map(|v| (v.clamp(-1.0, 1.0) * 32767.0) as i16))
            .collect::<Result<_, _>>()
            .map_err(|e| wav(&e.to_string()))?,
    };
    Ok((spec.sample_rate, downmix(&samples, spec.channels as usize)))
}

fn downmix(samples: &[i16], channels: usize) -> Vec<i16> {
    if channels <= 1 {
        return samples.to_vec();
    }
    samples
        .chunks_exact(channels)
        .map(|frame| (frame.iter().map(|s| *s as i32).sum::<i32>() / channels as i32) as i16)
        .collect()
}

fn resample_to_8k(samples: &[i16], rate: u32) -> Result<Vec<i16>, PromptError> {
    let err = |e: String| PromptError::Resample(e);
    use rubato::audioadapter_buffers::owned::InterleavedOwned;
    use rubato::{Fft, FixedSync, Resampler};
    let input: Vec<f32> = samples.iter().map(|s| *s as f32 / 32768.0).collect();
    let len = input.len();
    let buf = InterleavedOwned::new_from(input, 1, len).map_err(|e| err(format!("{e:?}")))?;
    let mut resampler =
        Fft::<f32>::new(rate as usize, 8000, 1024, 1, FixedSync::Both).map_err(|e| err(e.to_string()))?;
    let out = resampler.process_all(&buf, len, None).map_err(|e| err(e.to_string()))?;
    Ok(out.take_data().into_iter().map(|v| (v.clamp(-1.0, 1.0) * 32767.0).round() as i16).collect())
}

/// All prompts by name, shared read-only by every call.
#[derive(Debug, Default, Clone)]
pub struct PromptSet {
    prompts: HashMap<String, Arc<Prompt>>,
}

impl PromptSet {
    pub fn insert(&mut self, prompt: Prompt) {
        self.prompts.insert(prompt.name.clone(), Arc::new(prompt));
    }
    pub fn get(&self, name: &str) -> Option<Arc<Prompt>> {
        self.prompts.get(name).cloned()
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.prompts.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, secs: f32, channels: u16) -> Vec<i16> {
        let n = (rate as f32 * secs) as usize;
        (0..n)
            .flat_map(|i| {
                let v = ((i as f32 * 440.0 * 2.0 * std::f32::consts::PI / rate as f32).sin() * 8000.0) as i16;
                std::iter::repeat_n(v, channels as usize)
            })
            .collect()
    }

    fn wav_file(rate: u32, channels: u16, samples: &[i16]) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut out = std::io::Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut out, spec).unwrap();
        for s in samples {
            w.write_sample(*s).unwrap();
        }
        w.finalize().unwrap();
        out.into_inner()
    }

    #[test]
    fn an_empty_prompt_is_one_silent_frame() {
        let p = Prompt::from_pcm("e", vec![]);
        assert_eq!(p.frame_count(), 1);
        assert!(p.frame(Law::Pcmu, 0).iter().all(|b| *b == 0xFF));
    }

    #[test]
    fn frames_are_whole_and_padded_with_silence() {
        let p = Prompt::from_pcm("x", vec![1000; 170]);
        assert_eq!(p.frame_count(), 2);
        assert_eq!(p.frame(Law::Pcmu, 1)[10], Law::Pcmu.silence());
        assert_eq!(p.frame(Law::Pcma, 1)[10], Law::Pcma.silence());
        assert_eq!(p.frame(Law::Pcmu, 0)[0], Law::Pcmu.encode(1000));
    }

    #[test]
    fn loads_pcm_wav_at_other_rates_and_stereo() {
        for (rate, ch) in [(8000, 1), (16000, 1), (44100, 2), (48000, 2), (22050, 1)] {
            let p = Prompt::from_bytes("t", "wav", &wav_file(rate, ch, &tone(rate, 1.0, ch))).unwrap();
            // One second at 8 kHz is 50 frames; resampling may add or drop a few samples.
            assert!((49..=51).contains(&p.frame_count()), "{rate}/{ch}: {}", p.frame_count());
            // The 440 Hz tone survives: RMS close to 8000/sqrt(2).
            let mid = &p.pcm[1000..7000];
            let rms = (mid.iter().map(|s| (*s as f64).powi(2)).sum::<f64>() / mid.len() as f64).sqrt();
            assert!((rms - 5657.0).abs() < 300.0, "{rate}/{ch}: rms {rms}");
        }
    }

    #[test]
    fn odd_sample_rates_are_refused_with_a_clear_error() {
        // A G.711 WAV claiming 1 Hz would otherwise be "resampled" to 8000 times its size.
        let mut wav = crate::media::recorder::wav_bytes(
            &crate::media::recorder::Audio::from_pcm(None, &[0i16; 400]),
            crate::media::recorder::RecordingFormat::Ulaw,
        );
        wav[24..28].copy_from_slice(&1u32.to_le_bytes());
        let err = Prompt::from_bytes("p", "wav", &wav).unwrap_err();
        assert_eq!(err, PromptError::OddRate(1));
        assert!(err.to_string().contains("sample rate 1 Hz"), "{err}");
        wav[24..28].copy_from_slice(&7919u32.to_le_bytes());
        assert!(Prompt::from_bytes("p", "wav", &wav).is_err());
        wav[24..28].copy_from_slice(&8000u32.to_le_bytes());
        assert_eq!(Prompt::from_bytes("p", "wav", &wav).unwrap().pcm.len(), 400);
    }

    #[test]
    fn loads_g711_wav_and_raw_files() {
        let pcm = tone(8000, 0.5, 1);
        let ulaw: Vec<u8> = pcm.iter().map(|s| Law::Pcmu.encode(*s)).collect();
        let alaw: Vec<u8> = pcm.iter().map(|s| Law::Pcma.encode(*s)).collect();
        let sln: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
        // A μ-law WAV (format tag 7).
        let mut wav = Vec::new();
        wav.extend_from_slice(b"RIFF");
        wav.extend_from_slice(&((4 + 26 + 8 + ulaw.len()) as u32).to_le_bytes());
        wav.extend_from_slice(b"WAVEfmt ");
        wav.extend_from_slice(&18u32.to_le_bytes());
        wav.extend_from_slice(&7u16.to_le_bytes());
        wav.extend_from_slice(&1u16.to_le_bytes());
        wav.extend_from_slice(&8000u32.to_le_bytes());
        wav.extend_from_slice(&8000u32.to_le_bytes());
        wav.extend_from_slice(&1u16.to_le_bytes());
        wav.extend_from_slice(&8u16.to_le_bytes());
        wav.extend_from_slice(&0u16.to_le_bytes());
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&(ulaw.len() as u32).to_le_bytes());
        wav.extend_from_slice(&ulaw);
        for (ext, bytes) in [("ulaw", &ulaw), ("wav", &wav)] {
            let p = Prompt::from_bytes("t", ext, bytes).unwrap();
            assert_eq!(&p.encoded(Law::Pcmu)[..ulaw.len()], &ulaw[..], "{ext}");
        }
        let p = Prompt::from_bytes("t", "alaw", &alaw).unwrap();
        assert_eq!(&p.encoded(Law::Pcma)[..alaw.len()], &alaw[..]);
        let p = Prompt::from_bytes("t", "sln", &sln).unwrap();
        assert_eq!(p.pcm, pcm);
        assert_eq!(
            Prompt::from_bytes("t", "wav", b"RIFFxxxxWAVE").unwrap_err(),
            PromptError::Wav("no fmt chunk".into())
        );
        assert_eq!(Prompt::from_bytes("t", "mp3", &ulaw).unwrap_err(), PromptError::UnknownFormat("mp3".into()));
    }
}
