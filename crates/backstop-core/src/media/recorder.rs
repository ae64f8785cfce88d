//! Recordings as bytes: an answer's (or the whole call's) 8 kHz audio
//! encoded as a WAV file, 16-bit PCM (hound) or G.711 μ-law
//! (WAVE_FORMAT_MULAW, written here: hound writes PCM only), and [`Audio`],
//! how a recording is held in memory until then (the call's G.711 bytes).
//! The script decides what to keep; the runtime writes the bytes to disk.

use crate::media::g711::Law;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RecordingFormat {
    /// 8 kHz 16-bit PCM: 16 kB per second, plays everywhere.
    #[default]
    Pcm16,
    /// 8 kHz G.711 μ-law: 8 kB per second, what the call carried.
    Ulaw,
}

/// 8 kHz audio held for a recording. Audio that came off a G.711 call is
/// kept as the call's own G.711 bytes: half the memory of 16-bit samples
/// and lossless, because every sample is a decoded G.711 value (re-encoding
/// one gives back its byte). Other audio (tests, or no codec known) is
/// kept as 16-bit samples. It grows by a quarter second at a time instead
/// of doubling, so a held call never carries a half-empty second buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audio {
    G711(Law, Vec<u8>),
    Linear(Vec<i16>),
}

/// Growth step: a quarter of a second of audio (a held answer carries at
/// most this much unused room).
const GROWTH: usize = 2000;

impl Audio {
    pub fn new(law: Option<Law>) -> Audio {
        match law {
            Some(l) => Audio::G711(l, Vec::new()),
            None => Audio::Linear(Vec::new()),
        }
    }

    pub fn from_pcm(law: Option<Law>, samples: &[i16]) -> Audio {
        let mut a = Audio::new(law);
        a.push(samples);
        a
    }

    pub fn push(&mut self, samples: &[i16]) {
        fn room<T>(v: &mut Vec<T>, n: usize) {
            if v.capacity() - v.len() < n {
                v.reserve_exact(n.max(GROWTH));
            }
        }
        match self {
            Audio::G711(law, bytes) => {
                room(bytes, samples.len());
                bytes.extend(samples.iter().map(|s| law.encode(*s)));
            }
            Audio::Linear(v) => {
                room(v, samples.len());
                v.extend_from_slice(samples);
            }
        }
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        match self {
            Audio::G711(_, b) => b.len(),
            Audio::Linear(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn truncate(&mut self, len: usize) {
        match self {
            Audio::G711(_, b) => b.truncate(len),
            Audio::Linear(v) => v.truncate(len),
        }
    }

    /// Take the first `n` samples out (all, if fewer), leaving the rest in a
    /// buffer sized for them: what an answer hands out as it goes.
    pub fn split_front(&mut self, n: usize) -> Audio {
        fn split<T: Copy>(v: &mut Vec<T>, n: usize) -> Vec<T> {
            let n = n.min(v.len());
            let mut rest = Vec::with_capacity((v.len() - n).max(GROWTH));
            rest.extend_from_slice(&v[n..]);
            v.truncate(n);
            v.shrink_to_fit();
            std::mem::replace(v, rest)
        }
        match self {
            Audio::G711(law, b) => Audio::G711(*law, split(b, n)),
            Audio::Linear(v) => Audio::Linear(split(v, n)),
        }
    }

    /// The bytes as held: G.711 bytes, or 16-bit little-endian samples.
    pub fn raw_bytes(&self) -> Vec<u8> {
        match self {
            Audio::G711(_, b) => b.clone(),
            Audio::Linear(v) => v.iter().flat_map(|s| s.to_le_bytes()).collect(),
        }
    }

    /// Bytes per sample as held (see [`Audio::raw_bytes`]).
    pub fn bytes_per_sample(&self) -> usize {
        match self {
            Audio::G711(..) => 1,
            Audio::Linear(_) => 2,
        }
    }

    /// Audio of the same kind from bytes as [`Audio::raw_bytes`] gives them,
    /// followed by `self`'s samples.
    pub fn prepend_raw(&self, head: &[u8]) -> Audio {
        match self {
            Audio::G711(law, b) => {
                let mut v = Vec::with_capacity(head.len() + b.len());
                v.extend_from_slice(head);
                v.extend_from_slice(b);
                Audio::G711(*law, v)
            }
            Audio::Linear(v) => {
                let mut out: Vec<i16> = head.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
                out.extend_from_slice(v);
                Audio::Linear(out)
            }
        }
    }

    /// The samples, as the script heard them.
    pub fn to_pcm(&self) -> Vec<i16> {
        match self {
            Audio::G711(law, b) => b.iter().map(|x| law.decode(*x)).collect(),
            Audio::Linear(v) => v.clone(),
        }
    }

    /// Bytes of memory held.
    pub fn capacity_bytes(&self) -> usize {
        match self {
            Audio::G711(_, b) => b.capacity(),
            Audio::Linear(v) => v.capacity() * 2,
        }
    }
}

/// Encode `audio` (8 kHz mono) as a complete WAV file.
pub fn wav_bytes(audio: &Audio, format: RecordingFormat) -> Vec<u8> {
    let samples = audio.to_pcm();
    match format {
        RecordingFormat::Pcm16 => {
            let spec = hound::WavSpec {
                channels: 1,
                sample_rate: 8000,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            };
            let mut cursor = std::io::Cursor::new(Vec::with_capacity(44 + samples.len() * 2));
            {
                let mut w = hound::WavWriter::new(&mut cursor, spec).expect("in-memory WAV header");
                let mut i16w = w.get_i16_writer(samples.len() as u32);
                for s in &samples {
                    i16w.write_sample(*s);
                }
                i16w.flush().expect("in-memory WAV data");
                w.finalize().expect("in-memory WAV");
            }
            cursor.into_inner()
        }
        RecordingFormat::Ulaw => {
            let data: Vec<u8> = match audio {
                Audio::G711(Law::Pcmu, bytes) => bytes.clone(),
                _ => samples.iter().map(|s| Law::Pcmu.encode(*s)).collect(),
            };
            let mut out = Vec::with_capacity(58 + data.len() + 1);
            let pad = data.len() % 2;
            out.extend_from_slice(b"RIFF");
            out.extend_from_slice(&((4 + 26 + 12 + 8 + data.len() + pad) as u32).to_le_bytes());
            out.extend_from_slice(b"WAVE");
            // fmt: format 7 (μ-law), mono, 8000 Hz, 8000 B/s, block 1, 8 bits, cbSize 0.
            out.extend_from_slice(b"fmt ");
            out.extend_from_slice(&18u32.to_le_bytes());
            for v in [7u16, 1] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for v in [8000u32, 8000] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for v in [1u16, 8, 0] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            // fact: sample count (required for non-PCM formats).
            out.extend_from_slice(b"fact");
            out.extend_from_slice(&4u32.to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(b"data");
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&data);
            if pad == 1 {
                out.push(0);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::prompt::Prompt;

    #[test]
    fn both_formats_read_back_through_our_prompt_loader() {
        let samples: Vec<i16> = (0..8000).map(|i| ((i as f32 / 10.0).sin() * 8000.0) as i16).collect();
        for format in [RecordingFormat::Pcm16, RecordingFormat::Ulaw] {
            let back = Prompt::from_bytes("r", "wav", &wav_bytes(&Audio::from_pcm(None, &samples), format)).unwrap();
            assert_eq!(back.pcm.len(), samples.len(), "{format:?}");
            let expected: Vec<i16> = match format {
                RecordingFormat::Pcm16 => samples.clone(),
                RecordingFormat::Ulaw => samples.iter().map(|s| Law::Pcmu.decode(Law::Pcmu.encode(*s))).collect(),
            };
            assert_eq!(back.pcm, expected, "{format:?}");
        }
        // hound reads our μ-law header as a valid RIFF/WAVE (it rejects the format, not the framing).
        let ulaw = wav_bytes(&Audio::from_pcm(None, &samples[..3]), RecordingFormat::Ulaw);
        assert_eq!(u32::from_le_bytes(ulaw[4..8].try_into().unwrap()) as usize, ulaw.len() - 8);
    }

    /// G.711 storage gives back exactly what was pushed when that was G.711
    /// audio, in half the bytes, and grows a quarter second at a time.
    #[test]
    fn g711_storage_is_lossless_for_g711_audio_and_compact() {
        for law in [Law::Pcmu, Law::Pcma] {
            let heard: Vec<i16> = (0..=255u8).cycle().take(20_000).map(|b| law.decode(b)).collect();
            let mut a = Audio::new(Some(law));
            for frame in heard.chunks(160) {
                a.push(frame);
            }
            assert_eq!(a.to_pcm(), heard, "{law:?}");
            assert_eq!(a.len(), heard.len());
            let room = a.capacity_bytes() - a.len();
            assert!(room < GROWTH, "one byte per sample, and less than a step of room: {room} bytes spare");
            let mut lin = Audio::new(None);
            lin.push(&heard);
            assert_eq!(lin.to_pcm(), heard);
        }
        // A μ-law recording of μ-law audio is written byte for byte.
        let bytes: Vec<u8> = (0..=255u8).collect();
        let pcm: Vec<i16> = bytes.iter().map(|b| Law::Pcmu.decode(*b)).collect();
        let wav = wav_bytes(&Audio::from_pcm(Some(Law::Pcmu), &pcm), RecordingFormat::Ulaw);
        let expected: Vec<u8> = pcm.iter().map(|s| Law::Pcmu.encode(*s)).collect();
        assert_eq!(&wav[58..58 + 256], &expected[..]);
    }
}
