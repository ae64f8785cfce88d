//! A caller's RTP as a pcap file for SIPp's `play_pcap_audio`: 20 ms μ-law
//! frames of speech or silence, RFC 4733 telephone-events on a chosen
//! payload type (one event per digit, marker on its first packet, the
//! event-start timestamp on every packet, the end packet three times), and
//! in-band DTMF tones. SIPp rewrites the addresses and ports and keeps the
//! RTP headers and the timing, so one timeline scripts a whole call.
#![allow(dead_code)]

use backstop_core::media::g711::Law;
use std::path::Path;

pub struct CallerAudio {
    /// (time in µs from the start, RTP packet).
    packets: Vec<(u64, Vec<u8>)>,
    seq: u16,
    ts: u32,
    /// The 20 ms slot the next packet goes in.
    slot: u64,
    event_pt: u8,
    /// With line noise: the state of its generator (see [`CallerAudio::with_line_noise`]).
    noise: Option<u32>,
}

impl CallerAudio {
    /// `event_pt`: the telephone-event payload type offered in the scenario's SDP.
    pub fn new(event_pt: u8) -> CallerAudio {
        CallerAudio { packets: Vec::new(), seq: 1000, ts: 80_000, slot: 0, event_pt, noise: None }
    }

    /// Quiet frames carry line noise at about −50 dBFS, as a real phone's
    /// do, instead of digital silence; `seed` makes it the same every run.
    pub fn with_line_noise(mut self, seed: u32) -> CallerAudio {
        self.noise = Some(seed);
        self
    }

    /// The packets so far: (µs from the start, RTP packet).
    pub fn packets(&self) -> &[(u64, Vec<u8>)] {
        &self.packets
    }

    /// Now, in ms from the start of the timeline.
    pub fn ms(&self) -> u64 {
        self.slot * 20
    }

    fn push(&mut self, at_us: u64, pt: u8, marker: bool, ts: u32, payload: &[u8]) {
        let mut p = vec![0x80, pt | if marker { 0x80 } else { 0 }];
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&0x0bad_cafeu32.to_be_bytes());
        p.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        self.packets.push((at_us, p));
    }

    /// 8 kHz linear audio, sent as μ-law frames (the last one padded with silence).
    pub fn audio(&mut self, pcm: &[i16]) -> &mut Self {
        for chunk in pcm.chunks(160) {
            let mut frame: Vec<u8> = chunk.iter().map(|s| Law::Pcmu.encode(*s)).collect();
            frame.resize(160, 0xFF);
            let (at, ts) = (self.slot * 20_000, self.ts);
            self.push(at, 0, false, ts, &frame);
            self.ts = self.ts.wrapping_add(160);
            self.slot += 1;
        }
        self
    }

    /// Silence frames (a phone keeps sending RTP while the caller is quiet),
    /// or line noise when asked for.
    pub fn silence(&mut self, ms: u64) -> &mut Self {
        let n = (ms * 8) as usize;
        let pcm: Vec<i16> = match self.noise.as_mut() {
            None => vec![0; n],
            Some(state) => (0..n)
                .map(|_| {
                    *state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    ((*state >> 16) as i16 as i32 * 100 / 32768) as i16
                })
                .collect(),
        };
        self.audio(&pcm)
    }

    /// Silence until `ms` from the start.
    pub fn silence_until(&mut self, ms: u64) -> &mut Self {
        let now = self.ms();
        assert!(ms >= now, "timeline already at {now} ms, past {ms} ms");
        self.silence(ms - now)
    }

    /// One RFC 4733 key press of `ms`, then 60 ms of silence.
    pub fn digit(&mut self, digit: char, ms: u64) -> &mut Self {
        let code = match digit {
            '0'..='9' => digit as u8 - b'0',
            '*' => 10,
            '#' => 11,
            'A'..='D' => digit as u8 - b'A' + 12,
            _ => panic!("not a key: {digit}"),
        };
        let start_ts = self.ts;
        let n = ms / 20;
        for i in 0..n {
            let end = i == n - 1;
            let duration = ((i + 1) * 160) as u16;
            let mut payload = vec![code, if end { 0x80 | 10 } else { 10 }];
            payload.extend_from_slice(&duration.to_be_bytes());
            let at = self.slot * 20_000;
            let copies = if end { 3 } else { 1 };
            for c in 0..copies {
                let pt = self.event_pt;
                self.push(at + c * 1_000, pt, i == 0, start_ts, &payload);
            }
            self.ts = self.ts.wrapping_add(160);
            self.slot += 1;
        }
        self.silence(60)
    }

    pub fn digits(&mut self, keys: &str) -> &mut Self {
        for k in keys.chars() {
            self.digit(k, 100);
        }
        self
    }

    /// An in-band DTMF tone pair of `ms` at −10 dBFS per tone, then 60 ms of silence.
    pub fn tone(&mut self, digit: char, ms: u64) -> &mut Self {
        const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
        const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
        const KEYS: [&str; 4] = ["123A", "456B", "789C", "*0#D"];
        let r = KEYS.iter().position(|row| row.contains(digit)).expect("a key");
        let c = KEYS[r].find(digit).unwrap();
        let pcm: Vec<i16> = (0..ms * 8)
            .map(|i| {
                let t = i as f32 / 8000.0;
                let v = 0.316 * (2.0 * std::f32::consts::PI * ROWS[r] * t).sin()
                    + 0.316 * (2.0 * std::f32::consts::PI * COLS[c] * t).sin();
                (v * 32767.0) as i16
            })
            .collect();
        self.audio(&pcm).silence(60)
    }

    pub fn tones(&mut self, keys: &str) -> &mut Self {
        for k in keys.chars() {
            self.tone(k, 100);
        }
        self
    }

    pub fn duration_ms(&self) -> u64 {
        self.ms()
    }

    /// Write Ethernet/IPv4/UDP/RTP records (checksums zero: SIPp does not check them).
    pub fn write(&self, path: &Path) {
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&0i32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&65535u32.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
        for (at_us, rtp) in &self.packets {
            let udp_len = 8 + rtp.len();
            let ip_len = 20 + udp_len;
            let mut pkt = vec![0u8; 12];
            pkt.extend_from_slice(&[0x08, 0x00]);
            pkt.extend_from_slice(&[0x45, 0, (ip_len >> 8) as u8, ip_len as u8, 0, 0, 0, 0, 64, 17, 0, 0]);
            pkt.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
            pkt.extend_from_slice(&4000u16.to_be_bytes());
            pkt.extend_from_slice(&6000u16.to_be_bytes());
            pkt.extend_from_slice(&(udp_len as u16).to_be_bytes());
            pkt.extend_from_slice(&[0, 0]);
            pkt.extend_from_slice(rtp);
            // Start one second into the epoch so no timestamp is zero.
            let t = 1_000_000 + at_us;
            out.extend_from_slice(&((t / 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&((t % 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&(pkt.len() as u32).to_le_bytes());
            out.extend_from_slice(&(pkt.len() as u32).to_le_bytes());
            out.extend_from_slice(&pkt);
        }
        std::fs::write(path, out).unwrap();
    }
}

/// Read a pcap (Ethernet or Linux cooked, IPv4/UDP) to (timestamp, UDP payload) per packet.
pub fn read_udp(data: &[u8]) -> Vec<(std::time::Duration, Vec<u8>)> {
    read_udp_ports(data).into_iter().map(|(t, _, p)| (t, p)).collect()
}

/// As [`read_udp`], with each packet's UDP (source, destination) ports.
pub fn read_udp_ports(data: &[u8]) -> Vec<(std::time::Duration, (u16, u16), Vec<u8>)> {
    let mut out = Vec::new();
    if data.len() < 24 {
        return out;
    }
    let u32le = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let nanos = u32le(&data[0..4]) == 0xa1b23c4d;
    let link = u32le(&data[20..24]);
    let l2 = match link {
        1 => 14,   // Ethernet (Linux lo)
        113 => 16, // Linux cooked
        _ => panic!("unexpected link type {link}"),
    };
    let mut pos = 24;
    while pos + 16 <= data.len() {
        let (sec, frac, caplen) = (u32le(&data[pos..]), u32le(&data[pos + 4..]), u32le(&data[pos + 8..]) as usize);
        let pkt = &data[pos + 16..(pos + 16 + caplen).min(data.len())];
        pos += 16 + caplen;
        let t = std::time::Duration::new(sec as u64, if nanos { frac } else { frac * 1000 });
        if pkt.len() < l2 + 20 {
            continue;
        }
        let ip = &pkt[l2..];
        let ihl = (ip[0] & 0x0f) as usize * 4;
        if ip[0] >> 4 != 4 || ip[9] != 17 || ip.len() < ihl + 8 {
            continue;
        }
        let port = |i: usize| u16::from_be_bytes([ip[ihl + i], ip[ihl + i + 1]]);
        out.push((t, (port(0), port(2)), ip[ihl + 8..].to_vec()));
    }
    out
}
