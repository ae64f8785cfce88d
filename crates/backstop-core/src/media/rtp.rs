//! One call's RTP session, Sans-IO: paces prompt playback as 20 ms G.711
//! packets and reads what the caller sends.
//!
//! Pacing is on an absolute schedule (`start + n × 20 ms`), so a late wakeup
//! never accumulates into drift: the next deadline is computed from the
//! packet count, not from when the last packet went out. When idle it sends
//! silence, as a phone does, so timestamps and NAT bindings stay continuous.
//! Each packet carries the instant it is due ([`RtpPacket::due`]), so the
//! runtime can put it on the wire on time even if it ran late; the clock can
//! start at a chosen millisecond of the frame ([`MediaSession::start_in_phase`]).
//! Frames built a whole frame late, or skipped after a stall, are counted as
//! underruns. Packets are built in place: no allocation per packet.
//! Symmetric RTP: the session latches onto the address the caller's RTP
//! really comes from (RFC 4961 behaviour for callers behind NAT), only on a
//! negotiated payload type, and from then on ignores RTP from anywhere else
//! until a re-INVITE moves the media.

use crate::media::dtmf::{DtmfEvent, InBandDetector, Rfc4733Receiver};
use crate::media::g711::Law;
use crate::media::prompt::{FRAME_SAMPLES, Prompt};
use rtp_rs::{RtpPacketBuilder, RtpReader, Seq};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const FRAME: Duration = Duration::from_millis(20);
/// If the driver falls further behind than this, skip ahead instead of bursting.
const MAX_CATCH_UP: u64 = 5;
/// The most audio taken from one incoming packet (100 ms).
const MAX_PACKET_SAMPLES: usize = 800;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// The named prompt has been sent to its last frame.
    PromptFinished(String),
    /// A key press, from RFC 4733 telephone-events or in-band tones.
    Dtmf(DtmfEvent),
    /// The caller's RTP comes from `from`, not where its SDP said (`sdp`): we answer there now.
    Latched { from: SocketAddr, sdp: Option<SocketAddr> },
}

/// Bytes in one of our packets: the 12-byte header and 20 ms of G.711.
pub const RTP_PACKET_MAX: usize = 12 + FRAME_SAMPLES;

/// One outgoing packet, built in place: sending costs no allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket {
    pub dest: SocketAddr,
    /// When the frame is due on the wire, by the session's packet clock.
    pub due: Instant,
    len: usize,
    buf: [u8; RTP_PACKET_MAX],
}

impl RtpPacket {
    /// A packet of `bytes` (at most [`RTP_PACKET_MAX`]) for `dest`, due at `due`.
    pub fn new(dest: SocketAddr, due: Instant, bytes: &[u8]) -> Option<RtpPacket> {
        let mut buf = [0; RTP_PACKET_MAX];
        buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(RtpPacket { dest, due, len: bytes.len(), buf })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Debug for RtpPacket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RtpPacket({} bytes to {})", self.len, self.dest)
    }
}

/// Counters for the lead and the logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaStats {
    pub packets_sent: u64,
    pub packets_received: u64,
    pub packets_ignored: u64,
    /// Frames sent a whole frame (20 ms) or more after they were due, or
    /// skipped after a stall: each one a gap the far end's jitter buffer may
    /// not cover.
    pub underruns: u64,
}

pub struct MediaSession {
    law: Law,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    marker: bool,
    /// Where we send: from SDP, replaced by the latched source.
    remote: Option<SocketAddr>,
    sdp_remote: Option<SocketAddr>,
    latched: bool,
    /// False while the caller holds the call (sendonly/inactive from them).
    sending: bool,
    /// Start of the pacing schedule, and frames scheduled since.
    epoch: Option<Instant>,
    ticks: u64,
    playing: Option<(Arc<Prompt>, usize)>,
    /// The peer's telephone-event payload type, if negotiated; otherwise
    /// digits are listened for in-band.
    telephone_event: Option<u8>,
    rfc4733: Rfc4733Receiver,
    inband: InBandDetector,
    /// The last packet's audio, decoded (reused buffer).
    decoded: Vec<i16>,
    transmits: VecDeque<RtpPacket>,
    events: VecDeque<MediaEvent>,
    pub stats: MediaStats,
}

impl MediaSession {
    /// `ssrc`, `seq` and `timestamp` are the random initial values RFC 3550 asks for.
    pub fn new(law: Law, remote: Option<SocketAddr>, ssrc: u32, seq: u16, timestamp: u32) -> Self {
        MediaSession {
            law,
            ssrc,
            seq,
            timestamp,
            marker: true,
            remote,
            sdp_remote: remote,
            latched: false,
            sending: true,
            epoch: None,
            ticks: 0,
            playing: None,
            telephone_event: None,
            rfc4733: Rfc4733Receiver::default(),
            inband: InBandDetector::default(),
            decoded: Vec::with_capacity(MAX_PACKET_SAMPLES),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: MediaStats::default(),
        }
    }

    /// Begin the packet clock.
    pub fn start(&mut self, now: Instant) {
        if self.epoch.is_none() {
            self.epoch = Some(now);
            self.ticks = 0;
        }
    }

    /// Begin the packet clock at the first instant from `now` on that lies
    /// `offset` past a frame boundary counted from `reference`. Spreading
    /// calls over the 20 ms of a frame this way keeps their packets (and the
    /// work behind them) from all falling due in the same millisecond.
    pub fn start_in_phase(&mut self, now: Instant, reference: Instant, offset: Duration) {
        let frame = FRAME.as_nanos();
        let elapsed = now.saturating_duration_since(reference).as_nanos();
        let at = elapsed - elapsed % frame + offset.as_nanos() % frame;
        let at = if at >= elapsed { at } else { at + frame };
        self.start(reference + Duration::from_nanos(at as u64));
    }

    /// Stop the packet clock; packets already produced are still handed out.
    pub fn stop(&mut self) {
        self.epoch = None;
        self.playing = None;
    }

    pub fn remote(&self) -> Option<SocketAddr> {
        self.remote
    }

    /// New parameters from a re-INVITE: codec, address, and whether we may send.
    /// A changed SDP address replaces the latched one and re-opens latching.
    pub fn update(&mut self, law: Law, remote: Option<SocketAddr>, sending: bool) {
        self.law = law;
        if remote != self.sdp_remote {
            self.sdp_remote = remote;
            self.remote = remote;
            self.latched = false;
        }
        if sending && !self.sending {
            self.marker = true;
        }
        self.sending = sending;
    }

    /// The negotiated telephone-event payload type (`None`: listen for in-band tones).
    pub fn set_telephone_event(&mut self, pt: Option<u8>) {
        self.telephone_event = pt;
    }

    /// Start playing a prompt now (replacing any prompt in progress).
    pub fn play(&mut self, prompt: Arc<Prompt>) {
        self.playing = Some((prompt, 0));
    }

    pub fn stop_playback(&mut self) {
        self.playing = None;
    }

    pub fn is_playing(&self) -> bool {
        self.playing.is_some()
    }

    /// An RTP datagram from the network. Returns the caller's audio it
    /// carried, decoded to 8 kHz linear (empty for anything else).
    pub fn handle_rtp(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> &[i16] {
        self.decoded.clear();
        let Ok(pkt) = RtpReader::new(data) else {
            self.stats.packets_ignored += 1;
            return &self.decoded;
        };
        let pt = pkt.payload_type();
        // Port 0 is no address to answer to: such a packet is forged or broken.
        if from.port() == 0 || pkt.version() != 2 || (pt != self.law.payload_type() && Some(pt) != self.telephone_event)
        {
            // Not a format we negotiated: not the caller's media (and never latched onto).
            self.stats.packets_ignored += 1;
            return &self.decoded;
        }
        if !self.latched {
            self.latched = true;
            if self.remote != Some(from) {
                self.events.push_back(MediaEvent::Latched { from, sdp: self.remote });
            }
            self.remote = Some(from);
        } else if self.remote != Some(from) {
            // Once latched, only the caller's stream counts: RTP from anywhere else
            // (an injection attempt, a stale stream) is ignored until a re-INVITE moves the media.
            self.stats.packets_ignored += 1;
            return &self.decoded;
        }
        self.stats.packets_received += 1;
        if Some(pt) == self.telephone_event {
            if let Some(ev) = self.rfc4733.handle_packet(now, pkt.timestamp(), pkt.payload()) {
                self.events.push_back(MediaEvent::Dtmf(ev));
            }
            return &self.decoded;
        }
        let payload = pkt.payload();
        // At most 100 ms of audio per packet is taken; a larger one is cut, not trusted.
        self.decoded.extend(payload.iter().take(MAX_PACKET_SAMPLES).map(|b| self.law.decode(*b)));
        if self.telephone_event.is_none() {
            for ev in self.inband.handle_samples(now, &self.decoded) {
                self.events.push_back(MediaEvent::Dtmf(ev));
            }
        }
        &self.decoded
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(epoch) = self.epoch else { return };
        if now < epoch {
            return;
        }
        let due = (now.saturating_duration_since(epoch).as_micros() / FRAME.as_micros()) as u64 + 1;
        if due > self.ticks + MAX_CATCH_UP {
            // Far behind (the process stalled): skip the lost time instead of bursting.
            let skipped = due - 1 - self.ticks;
            self.stats.underruns += skipped;
            self.timestamp = self.timestamp.wrapping_add((skipped * FRAME_SAMPLES as u64) as u32);
            self.ticks = due - 1;
        }
        // Every frame but the newest due one is late by a frame or more.
        self.stats.underruns += due.saturating_sub(self.ticks + 1);
        while self.ticks < due {
            let at = epoch + FRAME * self.ticks as u32;
            self.ticks += 1;
            self.tick(at);
        }
    }

    /// One 20 ms frame's worth of work.
    fn tick(&mut self, due: Instant) {
        let ts = self.timestamp;
        self.timestamp = self.timestamp.wrapping_add(FRAME_SAMPLES as u32);
        if !self.sending {
            return;
        }
        let silence = [self.law.silence(); FRAME_SAMPLES];
        let mut finished = None;
        let payload: &[u8] = match &mut self.playing {
            Some((prompt, idx)) => {
                let i = *idx;
                *idx += 1;
                if *idx >= prompt.frame_count() {
                    finished = Some(prompt.name.clone());
                }
                prompt.frame(self.law, i.min(prompt.frame_count() - 1))
            }
            None => &silence,
        };
        if let Some(remote) = self.remote {
            let mut packet = RtpPacket { dest: remote, due, len: 0, buf: [0; RTP_PACKET_MAX] };
            let built = RtpPacketBuilder::new()
                .payload_type(self.law.payload_type())
                .ssrc(self.ssrc)
                .sequence(Seq::from(self.seq))
                .timestamp(ts)
                .marked(self.marker)
                .payload(payload)
                .build_into(&mut packet.buf);
            if let Ok(len) = built {
                packet.len = len;
                self.transmits.push_back(packet);
                self.seq = self.seq.wrapping_add(1);
                self.marker = false;
                self.stats.packets_sent += 1;
            }
        }
        if let Some(name) = finished {
            self.playing = None;
            self.events.push_back(MediaEvent::PromptFinished(name));
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.epoch.map(|e| e + FRAME * self.ticks as u32)
    }

    pub fn poll_transmit(&mut self) -> Option<RtpPacket> {
        self.transmits.pop_front()
    }

    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote() -> SocketAddr {
        "127.0.0.1:40000".parse().unwrap()
    }

    fn drain(m: &mut MediaSession) -> Vec<(SocketAddr, Vec<u8>)> {
        std::iter::from_fn(|| m.poll_transmit()).map(|p| (p.dest, p.bytes().to_vec())).collect()
    }

    #[test]
    fn paces_a_prompt_without_drift_and_with_correct_headers() {
        let pcm: Vec<i16> = (0..160 * 150).map(|i| (i % 200) as i16 * 50).collect();
        let prompt = Arc::new(Prompt::from_pcm("p", pcm));
        let t0 = Instant::now();
        let mut m = MediaSession::new(Law::Pcmu, Some(remote()), 0xABCD, 65530, u32::MAX - 200);
        m.start(t0);
        m.play(prompt.clone());
        let mut sent = Vec::new();
        // Drive by the session's own deadlines, each wakeup 3 ms late.
        let mut now = t0;
        while sent.len() < 150 {
            m.handle_timeout(now);
            sent.extend(drain(&mut m));
            now = m.poll_timeout().unwrap() + Duration::from_millis(3);
        }
        assert_eq!(m.poll_event(), Some(MediaEvent::PromptFinished("p".into())));
        // The schedule stays anchored: frame 150 is due exactly 150 × 20 ms after the start.
        assert_eq!(m.poll_timeout().unwrap(), t0 + FRAME * 150);
        let mut payload = Vec::new();
        for (i, (to, bytes)) in sent.iter().enumerate() {
            assert_eq!(*to, remote());
            let r = RtpReader::new(bytes).unwrap();
            assert_eq!(r.ssrc(), 0xABCD);
            assert_eq!(r.payload_type(), 0);
            assert_eq!(u16::from(r.sequence_number()), 65530u16.wrapping_add(i as u16));
            assert_eq!(r.timestamp(), (u32::MAX - 200).wrapping_add(160 * i as u32));
            assert_eq!(r.mark(), i == 0);
            payload.extend_from_slice(r.payload());
        }
        assert_eq!(payload, prompt.encoded(Law::Pcmu));
    }

    #[test]
    fn sends_silence_when_idle_and_latches_to_the_real_source() {
        let t0 = Instant::now();
        let mut m = MediaSession::new(Law::Pcma, Some(remote()), 1, 0, 0);
        m.start(t0);
        m.handle_timeout(t0);
        let first = drain(&mut m);
        assert_eq!(first.len(), 1);
        assert!(RtpReader::new(&first[0].1).unwrap().payload().iter().all(|b| *b == 0xD5));
        // A packet in a format we did not negotiate is not the caller's media: no latching.
        let stranger: SocketAddr = "203.0.113.66:5004".parse().unwrap();
        let video = RtpPacketBuilder::new().payload_type(31).ssrc(9).payload(&[0; 160]).build().unwrap();
        m.handle_rtp(t0, stranger, &video);
        assert_eq!(m.stats.packets_ignored, 1);
        let nat: SocketAddr = "198.51.100.7:31000".parse().unwrap();
        let pkt = RtpPacketBuilder::new().payload_type(8).ssrc(9).payload(&[0xD5; 160]).build().unwrap();
        m.handle_rtp(t0, nat, &pkt);
        m.handle_rtp(t0, nat, &[1, 2, 3]);
        assert_eq!(m.stats.packets_received, 1);
        assert_eq!(m.stats.packets_ignored, 2);
        m.handle_timeout(t0 + FRAME);
        assert_eq!(drain(&mut m)[0].0, nat);
        // Once latched, audio from another address is not the caller's: ignored, not heard.
        let loud = RtpPacketBuilder::new().payload_type(8).ssrc(7).payload(&[0x55; 160]).build().unwrap();
        assert!(m.handle_rtp(t0, stranger, &loud).is_empty());
        assert_eq!(m.stats.packets_ignored, 3);
        assert_eq!(m.handle_rtp(t0, nat, &loud).len(), 160);
        m.handle_timeout(t0 + FRAME * 2);
        assert_eq!(drain(&mut m)[0].0, nat, "media still goes to the caller");
    }

    #[test]
    fn hold_stops_sending_and_resume_sets_the_marker() {
        let t0 = Instant::now();
        let mut m = MediaSession::new(Law::Pcmu, Some(remote()), 1, 0, 0);
        m.start(t0);
        m.handle_timeout(t0 + FRAME * 2);
        assert_eq!(drain(&mut m).len(), 3);
        m.update(Law::Pcmu, Some(remote()), false);
        m.handle_timeout(t0 + FRAME * 5);
        assert!(drain(&mut m).is_empty());
        m.update(Law::Pcmu, Some(remote()), true);
        m.handle_timeout(t0 + FRAME * 6);
        let pkts = drain(&mut m);
        assert_eq!(pkts.len(), 1);
        let r = RtpReader::new(&pkts[0].1).unwrap();
        assert!(r.mark());
        // Timestamps kept running through the hold: tick 6 is 7th tick.
        assert_eq!(r.timestamp(), 6 * 160);
        assert_eq!(u16::from(r.sequence_number()), 3);
    }

    #[test]
    fn a_long_stall_skips_ahead_instead_of_bursting() {
        let t0 = Instant::now();
        let mut m = MediaSession::new(Law::Pcmu, Some(remote()), 1, 0, 0);
        m.start(t0);
        m.handle_timeout(t0 + Duration::from_secs(2));
        let pkts = drain(&mut m);
        assert!(pkts.len() <= MAX_CATCH_UP as usize + 1);
        assert_eq!(m.poll_timeout().unwrap(), t0 + FRAME * 101);
        assert_eq!(m.stats.underruns, 100, "the 100 frames skipped are underruns");
    }

    #[test]
    fn a_phased_start_waits_for_its_slot_in_the_frame() {
        let reference = Instant::now();
        let mut m = MediaSession::new(Law::Pcmu, Some(remote()), 1, 0, 0);
        // 47 ms after the reference, slot 5 ms: the next such instant is 65 ms.
        let now = reference + Duration::from_millis(47);
        m.start_in_phase(now, reference, Duration::from_millis(5));
        assert_eq!(m.poll_timeout(), Some(reference + Duration::from_millis(65)));
        m.handle_timeout(now + Duration::from_millis(10));
        assert!(drain(&mut m).is_empty(), "nothing before the slot");
        m.handle_timeout(reference + Duration::from_millis(65));
        assert_eq!(drain(&mut m).len(), 1);
        assert_eq!(m.stats.underruns, 0);
        // Exactly on the slot starts at once.
        let mut m = MediaSession::new(Law::Pcmu, Some(remote()), 1, 0, 0);
        m.start_in_phase(reference + Duration::from_millis(45), reference, Duration::from_millis(5));
        assert_eq!(m.poll_timeout(), Some(reference + Duration::from_millis(45)));
    }

    #[test]
    fn frames_sent_a_frame_late_count_as_underruns() {
        let t0 = Instant::now();
        let mut m = MediaSession::new(Law::Pcmu, Some(remote()), 1, 0, 0);
        m.start(t0);
        m.handle_timeout(t0 + Duration::from_millis(1));
        m.handle_timeout(t0 + Duration::from_millis(39));
        assert_eq!(m.stats.underruns, 0, "within a frame of schedule");
        // Frames due at 40 and 60 ms go out at 85 ms (45 and 25 ms late); the one due at 80 ms is 5 ms late.
        m.handle_timeout(t0 + Duration::from_millis(85));
        assert_eq!(drain(&mut m).len(), 5);
        assert_eq!(m.stats.underruns, 2);
    }
}
