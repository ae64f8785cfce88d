//! DTMF, all three ways, as Sans-IO detectors producing [`DtmfEvent`]s:
//! RFC 4733 telephone-events in RTP, SIP INFO bodies, and in-band tones in
//! the G.711 audio (a Goertzel filter bank with level, twist and duration
//! checks). [`DtmfMerger`] turns the three streams into one, so that a digit
//! a phone signals twice (RFC 4733 and INFO, say) counts once.

use std::time::{Duration, Instant};

/// Where a digit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfSource {
    Rfc4733,
    SipInfo,
    InBand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfEvent {
    /// '0'..'9', '*', '#', 'A'..'D'.
    pub digit: char,
    pub source: DtmfSource,
    pub at: Instant,
}

/// RFC 4733 event codes 0–15 as digits.
pub fn event_digit(code: u8) -> Option<char> {
    Some(match code {
        0..=9 => (b'0' + code) as char,
        10 => '*',
        11 => '#',
        12..=15 => (b'A' + code - 12) as char,
        _ => return None,
    })
}

/// Reads RFC 4733 telephone-event payloads from one RTP stream.
///
/// An event is identified by its RTP timestamp (the event start): every
/// packet of one key press carries the same timestamp, so a long press, the
/// three copies of the end packet, and packets arriving out of order all
/// count once. A digit is reported at its first packet, so a caller who hangs
/// up mid-press still has it. Timestamps wrap; only equality is compared.
#[derive(Debug, Default)]
pub struct Rfc4733Receiver {
    last: Option<(u32, u8)>,
}

impl Rfc4733Receiver {
    /// One RTP packet's timestamp and payload (at the negotiated payload type).
    pub fn handle_packet(&mut self, now: Instant, timestamp: u32, payload: &[u8]) -> Option<DtmfEvent> {
        if payload.len() < 4 {
            return None;
        }
        let code = payload[0];
        let digit = event_digit(code)?;
        if self.last == Some((timestamp, code)) {
            return None;
        }
        self.last = Some((timestamp, code));
        Some(DtmfEvent { digit, source: DtmfSource::Rfc4733, at: now })
    }
}

/// A digit from a SIP INFO body: `application/dtmf-relay` (`Signal=5`) or
/// `application/dtmf` (the bare digit).
pub fn parse_info(content_type: &str, body: &[u8], now: Instant) -> Option<DtmfEvent> {
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let text = std::str::from_utf8(body).ok()?;
    let value = match mime.as_str() {
        "application/dtmf-relay" => text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            k.trim().eq_ignore_ascii_case("signal").then(|| v.trim().to_string())
        })?,
        "application/dtmf" => text.trim().to_string(),
        _ => return None,
    };
    let digit = match value.as_str() {
        v if v.len() == 1 => v.chars().next()?.to_ascii_uppercase(),
        // Some phones send the event code instead of the character.
        v => event_digit(v.parse().ok()?)?,
    };
    matches!(digit, '0'..='9' | '*' | '#' | 'A'..='D').then_some(DtmfEvent {
        digit,
        source: DtmfSource::SipInfo,
        at: now,
    })
}

const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYS: [[char; 4]; 4] = [['1', '2', '3', 'A'], ['4', '5', '6', 'B'], ['7', '8', '9', 'C'], ['*', '0', '#', 'D']];
/// Analysis block: 102 samples (12.75 ms) at 8 kHz, the classic DTMF block size.
const BLOCK: usize = 102;

/// In-band DTMF detection on 8 kHz linear audio (Goertzel).
///
/// Per block: the strongest row and column tones must each stand well above
/// the other tones of their group, the pair must carry most of the block's
/// energy (speech spreads its energy; a tone pair does not), the level must
/// pass a floor, and the twist (row/column power ratio) stay within ±8 dB.
/// A digit is reported after it has held for 3 blocks (≈ 38 ms: ITU Q.24
/// asks for ≥ 40 ms tones) and must be followed by a gap before it repeats.
#[derive(Debug)]
pub struct InBandDetector {
    buf: Vec<f32>,
    /// The digit in the last blocks, and for how many blocks in a row.
    current: Option<char>,
    run: u32,
    /// The last digit reported, until two blocks without a digit end that press.
    last_reported: Option<char>,
    quiet: u32,
    coeffs: [f32; 8],
}

impl Default for InBandDetector {
    fn default() -> Self {
        let mut coeffs = [0.0; 8];
        for (i, f) in ROWS.iter().chain(COLS.iter()).enumerate() {
            coeffs[i] = 2.0 * (2.0 * std::f32::consts::PI * f / 8000.0).cos();
        }
        InBandDetector { buf: Vec::with_capacity(BLOCK), current: None, run: 0, last_reported: None, quiet: 0, coeffs }
    }
}

impl InBandDetector {
    /// Feed samples (any count); digits detected are returned.
    pub fn handle_samples(&mut self, now: Instant, samples: &[i16]) -> Vec<DtmfEvent> {
        let mut out = Vec::new();
        for s in samples {
            self.buf.push(*s as f32 / 32768.0);
            if self.buf.len() == BLOCK {
                if let Some(d) = self.block() {
                    out.push(DtmfEvent { digit: d, source: DtmfSource::InBand, at: now });
                }
                self.buf.clear();
            }
        }
        out
    }

    fn block(&mut self) -> Option<char> {
        let energy: f32 = self.buf.iter().map(|x| x * x).sum();
        let mut power = [0.0f32; 8];
        for (k, c) in self.coeffs.iter().enumerate() {
            let (mut s1, mut s2) = (0.0f32, 0.0f32);
            for x in &self.buf {
                let s0 = x + c * s1 - s2;
                s2 = s1;
                s1 = s0;
            }
            power[k] = s1 * s1 + s2 * s2 - c * s1 * s2;
        }
        let best = |p: &[f32]| {
            let (i, max) = p.iter().enumerate().fold((0, 0.0f32), |a, (i, v)| if *v > a.1 { (i, *v) } else { a });
            let second = p.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, v)| *v).fold(0.0f32, f32::max);
            (i, max, second)
        };
        let (r, rp, r2) = best(&power[..4]);
        let (c, cp, c2) = best(&power[4..]);
        // Goertzel power of a full-scale sine over N samples is about (N/2)^2 × amplitude^2 / 1;
        // turn it into the tone's share of the block energy (energy = N × amp^2 / 2).
        let share = 2.0 * (rp + cp) / (BLOCK as f32 * energy.max(1e-12));
        let level_ok = rp > 1e-3 && cp > 1e-3; // about −45 dBFS per tone
        let twist_ok = rp / cp.max(1e-12) < 6.3 && cp / rp.max(1e-12) < 6.3; // ±8 dB
        let pure = rp > 6.0 * r2 && cp > 6.0 * c2;
        let Some(d) = (level_ok && twist_ok && pure && share > 0.7).then(|| KEYS[r][c]) else {
            self.current = None;
            self.run = 0;
            self.quiet += 1;
            if self.quiet >= 2 {
                self.last_reported = None;
            }
            return None;
        };
        self.quiet = 0;
        if self.current == Some(d) {
            self.run += 1;
        } else {
            self.current = Some(d);
            self.run = 1;
        }
        // Reported once per press: a one-block dropout inside a held tone does not repeat it.
        if self.run == 3 && self.last_reported != Some(d) {
            self.last_reported = Some(d);
            return Some(d);
        }
        None
    }
}

/// One stream of digits from the three sources: the same digit seen by
/// another source within `window` of the first report is a duplicate.
#[derive(Debug)]
pub struct DtmfMerger {
    window: Duration,
    recent: Vec<DtmfEvent>,
}

impl Default for DtmfMerger {
    fn default() -> Self {
        DtmfMerger { window: Duration::from_millis(300), recent: Vec::new() }
    }
}

impl DtmfMerger {
    /// The event, or `None` when another source already reported this press.
    pub fn handle(&mut self, ev: DtmfEvent) -> Option<DtmfEvent> {
        self.recent.retain(|r| ev.at.saturating_duration_since(r.at) <= self.window);
        if self.recent.iter().any(|r| r.digit == ev.digit && r.source != ev.source) {
            return None;
        }
        self.recent.push(ev);
        Some(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn te(code: u8, end: bool, duration: u16) -> Vec<u8> {
        let mut p = vec![code, if end { 0x80 | 10 } else { 10 }];
        p.extend_from_slice(&duration.to_be_bytes());
        p
    }

    #[test]
    fn rfc4733_end_packets_and_long_presses_count_once() {
        let t = Instant::now();
        let mut rx = Rfc4733Receiver::default();
        let mut digits = Vec::new();
        // "5": 40 packets of a long press, then the end packet three times.
        for i in 0..40u16 {
            digits.extend(rx.handle_packet(t, 1000, &te(5, false, 160 * (i + 1))));
        }
        for _ in 0..3 {
            digits.extend(rx.handle_packet(t, 1000, &te(5, true, 6400)));
        }
        // "5" again: a new event (new timestamp) is a new press.
        digits.extend(rx.handle_packet(t, 9000, &te(5, true, 800)));
        // "#" across the 32-bit timestamp wrap, and "*".
        digits.extend(rx.handle_packet(t, u32::MAX - 10, &te(11, false, 160)));
        digits.extend(rx.handle_packet(t, u32::MAX - 10, &te(11, true, 800)));
        digits.extend(rx.handle_packet(t, 150, &te(10, false, 160)));
        // Junk: short payloads and unknown events are ignored.
        digits.extend(rx.handle_packet(t, 7, &[1, 2]));
        digits.extend(rx.handle_packet(t, 8, &te(99, false, 160)));
        let s: String = digits.iter().map(|d| d.digit).collect();
        assert_eq!(s, "55#*");
        assert!(digits.iter().all(|d| d.source == DtmfSource::Rfc4733));
    }

    #[test]
    fn sip_info_bodies() {
        let t = Instant::now();
        let d = |ct: &str, b: &str| parse_info(ct, b.as_bytes(), t).map(|e| e.digit);
        assert_eq!(d("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n"), Some('5'));
        assert_eq!(d("application/dtmf-relay; charset=x", "signal= #\r\nDuration=250"), Some('#'));
        assert_eq!(d("application/dtmf", "*"), Some('*'));
        assert_eq!(d("application/dtmf", "11"), Some('#'));
        assert_eq!(d("application/dtmf-relay", "Duration=160"), None);
        assert_eq!(d("text/plain", "5"), None);
        assert_eq!(d("application/dtmf", "x"), None);
    }

    fn tone(digit: char, ms: usize, row_dbfs: f32, col_dbfs: f32) -> Vec<i16> {
        let (r, c) = (0..4).flat_map(|r| (0..4).map(move |c| (r, c))).find(|(r, c)| KEYS[*r][*c] == digit).unwrap();
        let (ar, ac) = (10f32.powf(row_dbfs / 20.0), 10f32.powf(col_dbfs / 20.0));
        (0..ms * 8)
            .map(|i| {
                let t = i as f32 / 8000.0;
                let v = ar * (2.0 * std::f32::consts::PI * ROWS[r] * t).sin()
                    + ac * (2.0 * std::f32::consts::PI * COLS[c] * t).sin();
                (v * 32767.0) as i16
            })
            .collect()
    }

    /// Through G.711 μ-law and back, as the audio arrives in a call.
    fn ulaw(samples: Vec<i16>) -> Vec<i16> {
        use crate::media::g711::Law;
        samples.into_iter().map(|s| Law::Pcmu.decode(Law::Pcmu.encode(s))).collect()
    }

    fn detect(samples: &[i16]) -> String {
        let mut det = InBandDetector::default();
        let t = Instant::now();
        samples.chunks(160).flat_map(|c| det.handle_samples(t, c)).map(|e| e.digit).collect()
    }

    #[test]
    fn all_sixteen_digits_at_several_levels_and_twists() {
        for digit in "0123456789*#ABCD".chars() {
            for (row, col) in [(-10.0, -10.0), (-25.0, -25.0), (-35.0, -35.0), (-20.0, -16.0), (-16.0, -22.0)] {
                let mut audio = vec![0i16; 400];
                audio.extend(tone(digit, 80, row, col));
                audio.extend(vec![0i16; 400]);
                assert_eq!(detect(&ulaw(audio)), digit.to_string(), "{digit} at {row}/{col} dBFS");
            }
        }
    }

    #[test]
    fn rejects_short_tones_excess_twist_and_single_tones() {
        assert_eq!(detect(&ulaw(tone('5', 25, -10.0, -10.0))), "");
        assert_eq!(detect(&ulaw(tone('5', 80, -10.0, -25.0))), "", "15 dB twist");
        let single: Vec<i16> = (0..800)
            .map(|i| ((2.0 * std::f32::consts::PI * 770.0 * i as f32 / 8000.0).sin() * 16000.0) as i16)
            .collect();
        assert_eq!(detect(&ulaw(single)), "");
    }

    #[test]
    fn a_digit_held_long_counts_once_and_repeats_need_a_gap() {
        let mut audio = tone('7', 500, -12.0, -12.0);
        audio.extend(vec![0i16; 400]);
        audio.extend(tone('7', 80, -12.0, -12.0));
        audio.extend(vec![0i16; 80]);
        audio.extend(tone('8', 80, -12.0, -12.0));
        assert_eq!(detect(&ulaw(audio)), "778");
    }

    #[test]
    fn no_talk_off_on_speech() {
        // Every shipped prompt is real speech (espeak-ng): together about 28 s.
        let mut total = 0;
        for name in ["greeting", "name", "need", "callback_number", "zip", "urgency", "goodbye"] {
            let pcm = crate::fixtures::prompt(name);
            total += pcm.len();
            assert_eq!(detect(&ulaw(pcm)), "", "false digit in {name}");
        }
        assert!(total > 8000 * 20);
    }

    #[test]
    fn the_merger_drops_a_press_reported_twice() {
        let t = Instant::now();
        let mut m = DtmfMerger::default();
        let ev = |digit, source, ms| DtmfEvent { digit, source, at: t + Duration::from_millis(ms) };
        assert!(m.handle(ev('5', DtmfSource::Rfc4733, 0)).is_some());
        assert!(m.handle(ev('5', DtmfSource::SipInfo, 40)).is_none(), "same press over INFO");
        assert!(m.handle(ev('5', DtmfSource::Rfc4733, 200)).is_some(), "a new RFC 4733 event is a new press");
        assert!(m.handle(ev('6', DtmfSource::SipInfo, 210)).is_some());
        assert!(m.handle(ev('5', DtmfSource::SipInfo, 900)).is_some(), "outside the window");
    }
}
