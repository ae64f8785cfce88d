//! Fuzzing entry points: each takes arbitrary bytes, runs them through one
//! input path of the agent exactly as the network (or an operator's files)
//! would, and must return without panicking. The cargo-fuzz targets in
//! `fuzz/` call these (coverage-guided, nightly); `tests/fuzz_regressions.rs`
//! calls them on stable in CI, replaying the seed corpora, every crash ever
//! found, and a bounded number of deterministic mutations.

use backstop_core::media::dtmf::{Rfc4733Receiver, parse_info};
use backstop_core::media::g711::Law;
use backstop_core::media::prompt::Prompt;
use backstop_core::media::rtp::MediaSession;
use backstop_core::sip::dialog::{DialogConfig, EndedBy, UasDialog};
use backstop_core::sip::message::{Incoming, Method, read_message, stream_message_len};
use backstop_core::sip::sdp::{Direction, LocalSession, RemoteMedia};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn source() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5060))
}

fn dialog_config() -> DialogConfig {
    DialogConfig {
        answer_after: Duration::from_millis(100),
        t1: Duration::from_millis(500),
        t2: Duration::from_millis(4000),
        provisional: true,
        local_sip: "127.0.0.1:5060".parse().expect("literal"),
        transport: backstop_core::sip::Transport::Udp,
        local_rtp: "127.0.0.1:20000".parse().expect("literal"),
        local_tag: "fuzz".into(),
        seed: 1,
    }
}

/// A SIP datagram: framing, validation, the response or rejection we would
/// send, and, for an INVITE that passes, a whole dialog run to its end.
pub fn sip_message(data: &[u8]) {
    let _ = stream_message_len(data);
    match read_message(data, source()) {
        Incoming::Request(r) if r.method == Method::Invite => {
            let now = Instant::now();
            let mut d = UasDialog::new(now, *r, dialog_config());
            d.handle_timeout(now + Duration::from_millis(200));
            while d.poll_transmit().is_some() {}
            while d.poll_event().is_some() {}
            d.hangup(now + Duration::from_millis(300), EndedBy::Agent, "fuzz");
            d.handle_timeout(now + Duration::from_secs(40));
            while d.poll_transmit().is_some() {}
            while d.poll_event().is_some() {}
        }
        _ => {}
    }
}

/// An SDP offer: parse, choose a codec, write our answer.
pub fn sdp(data: &[u8]) {
    if let Ok(remote) = RemoteMedia::parse(data) {
        let local = LocalSession { session_id: 1, version: 1, rtp_addr: "127.0.0.1:20000".parse().expect("literal") };
        if let Some(neg) = remote.choose() {
            let _ = local.answer(&neg, Direction::SendRecv);
        }
        let _ = remote.accept_answer();
    }
}

/// RTP datagrams into a call's media session (first byte: with or without
/// telephone-event, then packets of up to 255 bytes, length-prefixed).
pub fn rtp(data: &[u8]) {
    let Some((&mode, mut rest)) = data.split_first() else { return };
    let now = Instant::now();
    let law = if mode & 1 == 0 { Law::Pcmu } else { Law::Pcma };
    let mut m = MediaSession::new(law, Some(source()), 1, 2, 3);
    m.set_telephone_event((mode & 2 != 0).then_some(101));
    m.start(now);
    while let Some((&len, tail)) = rest.split_first() {
        let n = (len as usize).min(tail.len());
        let _ = m.handle_rtp(now, source(), &tail[..n]);
        rest = &tail[n..];
    }
    m.handle_timeout(now + Duration::from_millis(100));
    while m.poll_transmit().is_some() {}
    while m.poll_event().is_some() {}
}

/// RFC 4733 payloads: 4-byte timestamp, then the payload.
pub fn rfc4733(data: &[u8]) {
    let mut rx = Rfc4733Receiver::default();
    for chunk in data.chunks(12) {
        if chunk.len() >= 4 {
            let ts = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let _ = rx.handle_packet(Instant::now(), ts, &chunk[4..]);
        }
    }
}

/// A SIP INFO body, under each content type we read.
pub fn sip_info(data: &[u8]) {
    for ct in ["application/dtmf-relay", "application/dtmf", "Application/DTMF-Relay; x=y"] {
        let _ = parse_info(ct, data, Instant::now());
    }
}

/// A prompt file in each format we read (WAV first: the one with structure).
pub fn prompt(data: &[u8]) {
    for ext in ["wav", "ulaw", "sln16"] {
        let _ = Prompt::from_bytes("fuzz", ext, data);
    }
}

/// A config file.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::Config::parse(text, None);
    }
}

/// Deterministic mutations for the stable runs (xorshift; the same on every run).
pub struct Mutator {
    x: u64,
}

const INTERESTING: &[&[u8]] = &[
    b"\r\n",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b"\"",
    b"\\",
    b" ",
    b"=",
    b"\0",
    b"\xff",
    b"-1",
    b"99999999999",
    b"SIP/2.0",
    b"\r\n\r\n",
    b"\x80",
    b"\x7f\xff\xff\xff",
    b"[",
    b"]",
    b"\n",
];

impl Mutator {
    pub fn new(seed: u64) -> Mutator {
        Mutator { x: seed | 1 }
    }

    fn next(&mut self) -> u64 {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        self.x
    }

    /// One to four edits: flip a byte, delete, insert a token, truncate, or duplicate a run.
    pub fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut m = input.to_vec();
        for _ in 0..(1 + self.next() % 4) {
            if m.is_empty() {
                m.push(self.next() as u8);
                continue;
            }
            let pos = (self.next() as usize) % m.len();
            match self.next() % 5 {
                0 => m[pos] = self.next() as u8,
                1 => {
                    m.remove(pos);
                }
                2 => {
                    let ins = INTERESTING[(self.next() as usize) % INTERESTING.len()];
                    m.splice(pos..pos, ins.iter().copied());
                }
                3 => m.truncate(pos),
                _ => {
                    let end = (pos + 1 + (self.next() as usize) % 64).min(m.len());
                    let run = m[pos..end].to_vec();
                    m.splice(pos..pos, run);
                }
            }
        }
        m
    }
}
