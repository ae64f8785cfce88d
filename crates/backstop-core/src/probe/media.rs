//! The test call's media, Sans-IO: what it sends (20 ms G.711 frames of low
//! line noise, then RFC 4733 key presses in their place) and what it makes of
//! what comes back (where the first packet came from, the level of the audio,
//! and whether a prompt was spoken, by the VAD).
//!
//! Line noise and not digital silence, because the agent latches onto our
//! RTP and runs its own VAD on it: a real caller's line is never all zeros,
//! and noise at −55 dBFS is far below speech, so it must not count as an
//! answer either.

use crate::media::g711::Law;
use crate::media::vad::{EarshotVad, VoiceDetector};
use rtp_rs::{RtpPacketBuilder, RtpReader, Seq};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One RTP frame: 20 ms, 160 samples at 8 kHz.
pub const FRAME: Duration = Duration::from_millis(20);
const FRAME_SAMPLES: usize = 160;
/// Peak of the line noise we send (uniform, so its RMS is about −55 dBFS).
const NOISE_PEAK: i32 = 100;
/// Speech frames, with gaps of at most [`SPEECH_GAP_FRAMES`], that make a prompt heard (300 ms).
pub const PROMPT_SPEECH_FRAMES: u32 = 15;
/// Non-speech frames in a row that end a stretch of speech (120 ms).
const SPEECH_GAP_FRAMES: u32 = 6;
/// If the driver falls further behind than this many frames, skip ahead instead of bursting.
const MAX_CATCH_UP: u32 = 5;
/// Packets of one key press: four while it is held, then three copies of the end.
const HELD_PACKETS: u32 = 4;
const END_PACKETS: u32 = 3;
/// Audio frames between two key presses (100 ms).
const FRAMES_BETWEEN_KEYS: u32 = 5;
/// RFC 4733 volume field: −10 dBm0.
const EVENT_VOLUME: u8 = 10;

/// The RFC 4733 event code of a key, `None` for anything else.
pub fn event_code(key: char) -> Option<u8> {
    match key.to_ascii_uppercase() {
        d @ '0'..='9' => Some(d as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        k @ 'A'..='D' => Some(12 + (k as u8 - b'A')),
        _ => None,
    }
}

/// What we learnt from the RTP that came to us.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Heard {
    /// The first packet at the negotiated codec: when, and from where.
    pub first_packet: Option<(Instant, SocketAddr)>,
    pub packets: u64,
    /// Datagrams that were not RTP, or at another payload type.
    pub ignored: u64,
    /// Sum of squared samples, and how many, for the level in dBFS.
    pub sum_squares: f64,
    pub samples: u64,
    /// When speech had been heard for [`PROMPT_SPEECH_FRAMES`]: the prompt is heard.
    pub prompt_heard: Option<Instant>,
    /// Speech frames heard in all (20 ms each).
    pub speech_frames: u32,
    /// The level of each 20 ms frame that came (dBFS), until our first key
    /// (which cuts the greeting short) and for at most [`ENVELOPE_FRAMES`]:
    /// what [`super::greeting`] compares with the greeting.
    pub envelope: Vec<f32>,
}

/// The most of the received envelope kept: 10 s.
pub const ENVELOPE_FRAMES: usize = 500;

impl Heard {
    /// The RMS level of everything that came, in dBFS (`None` before any audio;
    /// digital silence reads −∞ and is shown as −96).
    pub fn level_dbfs(&self) -> Option<f64> {
        (self.samples > 0).then(|| {
            let rms = (self.sum_squares / self.samples as f64).sqrt();
            if rms < 1.0 { -96.0 } else { 20.0 * (rms / 32768.0).log10() }
        })
    }
}

/// Where the sender is in its key presses.
#[derive(Debug, Clone)]
enum Keys {
    /// Noise only (no keys, or not yet).
    Idle,
    /// Pressing `keys[index]`: `sent` packets of it so far, the event's timestamp.
    Pressing { index: usize, sent: u32, timestamp: u32 },
    /// Noise between two presses; `frames` left before the next.
    Between { index: usize, frames: u32 },
    /// Every key sent.
    Done,
}

/// The test call's RTP: sending and listening.
pub struct ProbeMedia {
    law: Law,
    telephone_event: Option<u8>,
    remote: SocketAddr,
    ssrc: u32,
    seq: u16,
    /// The RTP timestamp of the next frame.
    timestamp: u32,
    started: Instant,
    /// Frames sent (or skipped) since `started`.
    frames: u64,
    marker: bool,
    noise: u64,
    keys: Vec<u8>,
    key_state: Keys,
    vad: Box<dyn VoiceDetector>,
    speech_run: u32,
    gap_run: u32,
    /// Samples waiting for a full 20 ms frame for the VAD.
    pending: Vec<i16>,
    pub heard: Heard,
    out: Vec<Vec<u8>>,
}

impl ProbeMedia {
    /// Start sending at `now` to `remote`; `seed` gives SSRC, sequence, timestamp and noise.
    pub fn new(now: Instant, law: Law, telephone_event: Option<u8>, remote: SocketAddr, seed: u64) -> ProbeMedia {
        ProbeMedia {
            law,
            telephone_event,
            remote,
            ssrc: (seed >> 32) as u32 | 1,
            seq: (seed >> 16) as u16,
            timestamp: seed as u32,
            started: now,
            frames: 0,
            marker: true,
            noise: seed | 1,
            keys: Vec::new(),
            key_state: Keys::Idle,
            vad: Box::new(EarshotVad::new(0.5)),
            speech_run: 0,
            gap_run: 0,
            pending: Vec::with_capacity(FRAME_SAMPLES),
            heard: Heard::default(),
            out: Vec::new(),
        }
    }

    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// Press `keys` (already checked by [`event_code`]) from the next frame on.
    pub fn press(&mut self, keys: &[u8]) {
        self.keys = keys.to_vec();
        self.key_state = if keys.is_empty() { Keys::Done } else { Keys::Between { index: 0, frames: 0 } };
    }

    /// Every key pressed and released.
    pub fn keys_done(&self) -> bool {
        matches!(self.key_state, Keys::Done)
    }

    /// When the next frame is due.
    pub fn poll_timeout(&self) -> Instant {
        self.started + FRAME * (self.frames as u32)
    }

    /// Build the frames due by `now`; they come out of [`ProbeMedia::poll_transmit`].
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut built = 0;
        while self.poll_timeout() <= now {
            if built == MAX_CATCH_UP {
                // Woken far too late: skip the missed frames, as a phone's clock would.
                let behind = (now - self.poll_timeout()).as_millis() as u64 / FRAME.as_millis() as u64 + 1;
                self.frames += behind;
                self.timestamp = self.timestamp.wrapping_add(behind as u32 * FRAME_SAMPLES as u32);
                break;
            }
            self.build_frame();
            built += 1;
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.out.is_empty() { None } else { Some(self.out.remove(0)) }
    }

    fn build_frame(&mut self) {
        let frame_ts = self.timestamp;
        self.frames += 1;
        self.timestamp = self.timestamp.wrapping_add(FRAME_SAMPLES as u32);
        match self.key_state.clone() {
            Keys::Pressing { index, sent, timestamp } => {
                let n = sent + 1;
                let end = n > HELD_PACKETS;
                let duration = FRAME_SAMPLES as u32 * n.min(HELD_PACKETS + 1);
                let payload = event_payload(self.keys[index], end, duration as u16);
                let pt = self.telephone_event.unwrap_or(101);
                self.push_packet(pt, timestamp, n == 1, &payload);
                self.key_state = if n == HELD_PACKETS + END_PACKETS {
                    if index + 1 == self.keys.len() {
                        Keys::Done
                    } else {
                        Keys::Between { index: index + 1, frames: FRAMES_BETWEEN_KEYS }
                    }
                } else {
                    Keys::Pressing { index, sent: n, timestamp }
                };
            }
            Keys::Between { index, frames: 0 } => {
                self.key_state = Keys::Pressing { index, sent: 0, timestamp: frame_ts };
                // The event starts at this frame: rewind and send its first packet here.
                self.frames -= 1;
                self.timestamp = frame_ts;
                self.build_frame();
            }
            Keys::Between { index, frames } => {
                self.key_state = Keys::Between { index, frames: frames - 1 };
                self.push_noise(frame_ts);
            }
            Keys::Idle | Keys::Done => self.push_noise(frame_ts),
        }
    }

    fn push_noise(&mut self, timestamp: u32) {
        let mut payload = [0u8; FRAME_SAMPLES];
        for b in payload.iter_mut() {
            // xorshift64: cheap, and any seed but 0 gives a long period.
            self.noise ^= self.noise << 13;
            self.noise ^= self.noise >> 7;
            self.noise ^= self.noise << 17;
            let sample = (self.noise % (2 * NOISE_PEAK as u64 + 1)) as i32 - NOISE_PEAK;
            *b = self.law.encode(sample as i16);
        }
        let marker = std::mem::take(&mut self.marker);
        self.push_packet(self.law.payload_type(), timestamp, marker, &payload);
    }

    fn push_packet(&mut self, pt: u8, timestamp: u32, marker: bool, payload: &[u8]) {
        let built = RtpPacketBuilder::new()
            .payload_type(pt)
            .ssrc(self.ssrc)
            .sequence(Seq::from(self.seq))
            .timestamp(timestamp)
            .marked(marker)
            .payload(payload)
            .build();
        if let Ok(bytes) = built {
            self.out.push(bytes);
            self.seq = self.seq.wrapping_add(1);
        }
    }

    /// An RTP datagram from `from`: audio at the negotiated codec is measured
    /// and run through the VAD; anything else is counted and ignored.
    pub fn handle_rtp(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let Ok(pkt) = RtpReader::new(data) else {
            self.heard.ignored += 1;
            return;
        };
        if pkt.version() != 2 || pkt.payload_type() != self.law.payload_type() {
            self.heard.ignored += 1;
            return;
        }
        self.heard.packets += 1;
        if self.heard.first_packet.is_none() {
            self.heard.first_packet = Some((now, from));
        }
        // At most 100 ms from one packet.
        for &b in pkt.payload().iter().take(5 * FRAME_SAMPLES) {
            let s = self.law.decode(b);
            self.heard.sum_squares += f64::from(s) * f64::from(s);
            self.heard.samples += 1;
            self.pending.push(s);
            if self.pending.len() == FRAME_SAMPLES {
                let speech = self.vad.is_speech(&self.pending);
                if self.keys.is_empty() && self.heard.envelope.len() < ENVELOPE_FRAMES {
                    self.heard.envelope.push(super::greeting::frame_db(&self.pending));
                }
                self.pending.clear();
                self.count_speech(now, speech);
            }
        }
    }

    fn count_speech(&mut self, now: Instant, speech: bool) {
        if speech {
            self.heard.speech_frames += 1;
            self.speech_run += 1;
            self.gap_run = 0;
        } else {
            self.gap_run += 1;
            if self.gap_run > SPEECH_GAP_FRAMES {
                self.speech_run = 0;
            }
        }
        if self.speech_run >= PROMPT_SPEECH_FRAMES && self.heard.prompt_heard.is_none() {
            self.heard.prompt_heard = Some(now);
        }
    }
}

/// An RFC 4733 telephone-event payload (§2.3): event, E bit and volume, duration.
pub fn event_payload(code: u8, end: bool, duration: u16) -> [u8; 4] {
    let [hi, lo] = duration.to_be_bytes();
    [code, if end { 0x80 } else { 0 } | EVENT_VOLUME, hi, lo]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote() -> SocketAddr {
        "127.0.0.1:40000".parse().unwrap()
    }

    #[test]
    fn event_codes() {
        let codes: Vec<_> = "0189*#AdX".chars().map(event_code).collect();
        assert_eq!(codes, [Some(0), Some(1), Some(8), Some(9), Some(10), Some(11), Some(12), Some(15), None]);
    }

    #[test]
    fn noise_is_low_but_not_silence_and_paced_every_20_ms() {
        let t0 = Instant::now();
        let mut m = ProbeMedia::new(t0, Law::Pcmu, Some(101), remote(), 0x1234_5678_9abc_def0);
        let mut packets = Vec::new();
        for ms in (0..1000).step_by(10) {
            m.handle_timeout(t0 + Duration::from_millis(ms));
            while let Some(p) = m.poll_transmit() {
                packets.push(p);
            }
        }
        assert_eq!(packets.len(), 50, "frames at 0, 20, ... 980 ms");
        assert_eq!(m.poll_timeout(), t0 + Duration::from_millis(1000));
        let mut listener = ProbeMedia::new(t0, Law::Pcmu, Some(101), remote(), 7);
        for (i, p) in packets.iter().enumerate() {
            let r = RtpReader::new(p).unwrap();
            assert_eq!(r.payload_type(), 0);
            assert_eq!(r.mark(), i == 0);
            assert_eq!(r.payload().len(), 160);
            let first = RtpReader::new(&packets[0]).unwrap();
            assert_eq!(r.timestamp(), first.timestamp().wrapping_add(160 * i as u32));
            assert_eq!(u16::from(r.sequence_number()), u16::from(first.sequence_number()).wrapping_add(i as u16));
            listener.handle_rtp(t0, remote(), p);
        }
        let level = listener.heard.level_dbfs().unwrap();
        assert!((-60.0..-50.0).contains(&level), "noise at {level} dBFS");
        assert_eq!(listener.heard.prompt_heard, None, "line noise is not a prompt");
        // Woken 1 s late: a few frames at once, then a skip, not a burst of 50.
        m.handle_timeout(t0 + Duration::from_millis(2000));
        assert_eq!(std::iter::from_fn(|| m.poll_transmit()).count(), 5);
        assert!(m.poll_timeout() > t0 + Duration::from_millis(2000));
    }

    #[test]
    fn key_presses_follow_rfc_4733() {
        let t0 = Instant::now();
        let mut m = ProbeMedia::new(t0, Law::Pcma, Some(96), remote(), 42);
        m.handle_timeout(t0); // one noise frame
        let noise = m.poll_transmit().unwrap();
        m.press(&[1, 11]);
        let mut packets = Vec::new();
        for i in 1..40 {
            m.handle_timeout(t0 + FRAME * i);
            while let Some(p) = m.poll_transmit() {
                packets.push(p);
            }
            if m.keys_done() {
                break;
            }
        }
        let events: Vec<_> = packets
            .iter()
            .map(|p| RtpReader::new(p).unwrap())
            .filter(|r| r.payload_type() == 96)
            .map(|r| (r.timestamp(), r.mark(), r.payload().to_vec()))
            .collect();
        assert_eq!(events.len(), 14, "7 packets per key");
        let noise_ts = RtpReader::new(&noise).unwrap().timestamp();
        // The first key starts at the next frame's timestamp; held for 4 packets, then the end 3 times.
        let first_ts = noise_ts.wrapping_add(160);
        let expect: Vec<(u32, bool, Vec<u8>)> = [
            (true, 0x0a, 160u16),
            (false, 0x0a, 320),
            (false, 0x0a, 480),
            (false, 0x0a, 640),
            (false, 0x8a, 800),
            (false, 0x8a, 800),
            (false, 0x8a, 800),
        ]
        .iter()
        .map(|&(m, f, d)| (first_ts, m, vec![1, f, (d >> 8) as u8, d as u8]))
        .collect();
        assert_eq!(events[..7], expect[..]);
        // Then 5 noise frames, and '#' (11) at its own start time.
        let second_ts = first_ts.wrapping_add(160 * (7 + 5));
        assert_eq!(events[7], (second_ts, true, vec![11, 0x0a, 0, 160]));
        assert_eq!(events[13], (second_ts, false, vec![11, 0x8a, 3, 32]));
        // Sequence numbers run on without a gap over audio and events alike.
        let seqs: Vec<u16> = packets.iter().map(|p| RtpReader::new(p).unwrap().sequence_number().into()).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)), "{seqs:?}");
        assert_eq!(packets.len(), 7 + 5 + 7);
        // The agent's own receiver reads each press once.
        let mut rx = crate::media::dtmf::Rfc4733Receiver::default();
        let digits: String = packets
            .iter()
            .map(|p| RtpReader::new(p).unwrap())
            .filter(|r| r.payload_type() == 96)
            .filter_map(|r| rx.handle_packet(t0, r.timestamp(), r.payload()))
            .map(|e| e.digit)
            .collect();
        assert_eq!(digits, "1#");
    }

    #[test]
    fn a_spoken_prompt_is_heard_and_silence_is_not() {
        let t0 = Instant::now();
        let speech = crate::fixtures::prompt("greeting");
        let mut m = ProbeMedia::new(t0, Law::Pcmu, None, remote(), 9);
        let mut silent = ProbeMedia::new(t0, Law::Pcmu, None, remote(), 9);
        for (i, chunk) in speech.chunks_exact(160).enumerate() {
            let at = t0 + FRAME * i as u32;
            let payload: Vec<u8> = chunk.iter().map(|s| Law::Pcmu.encode(*s)).collect();
            let pkt = RtpPacketBuilder::new().payload_type(0).sequence(Seq::from(i as u16)).payload(&payload);
            m.handle_rtp(at, remote(), &pkt.build().unwrap());
            let quiet = RtpPacketBuilder::new().payload_type(0).payload(&[0xff; 160]).build().unwrap();
            silent.handle_rtp(at, remote(), &quiet);
        }
        let heard = m.heard.prompt_heard.expect("the greeting is speech");
        assert!(heard - t0 < Duration::from_secs(3), "heard after {:?}", heard - t0);
        assert!(m.heard.level_dbfs().unwrap() > -40.0);
        assert_eq!(silent.heard.prompt_heard, None);
        assert_eq!(silent.heard.level_dbfs(), Some(-96.0));
        assert!(silent.heard.packets > 100);
    }

    #[test]
    fn garbage_and_other_payload_types_are_ignored() {
        let t0 = Instant::now();
        let mut m = ProbeMedia::new(t0, Law::Pcmu, Some(101), remote(), 9);
        for bad in [&b""[..], b"\x80", &[0xff; 300], &[0x80, 8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2]] {
            m.handle_rtp(t0, remote(), bad);
        }
        assert_eq!((m.heard.packets, m.heard.ignored, m.heard.first_packet), (0, 4, None));
    }
}
