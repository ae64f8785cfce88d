//! micro: per-operation costs on the hot paths, with criterion. Run
//! `cargo bench --bench micro` (add a filter such as `-- rtp/` for one group).
//!
//! - sip/: parse + validate + respond, as the dispatcher and a call's dialog
//!   do it, for OPTIONS (stateless 200), INVITE (100 + 200 with the SDP
//!   answer), and ACK and BYE inside a confirmed dialog;
//! - sdp/answer: parse an offer, choose the codec, write the answer;
//! - rtp/: build one outgoing 20 ms packet from a prompt (the media session's
//!   tick) and take one incoming packet (parse, latch check, decode);
//! - g711/, vad/, dtmf/: one 20 ms frame (160 samples) each;
//! - script/: one caller frame into an ask step that is listening (VAD +
//!   endpointer + recording); call/: one 20 ms round of a live call as the
//!   load test runs it (a packet out, a packet in, the script).

use backstop_core::call::{Call, CallSetup, Intake, Transmit};
use backstop_core::intake::program::Program;
use backstop_core::intake::script::{Script, ScriptContext};
use backstop_core::media::dtmf::{InBandDetector, Rfc4733Receiver};
use backstop_core::media::g711::Law;
use backstop_core::media::prompt::{Prompt, PromptSet};
use backstop_core::media::rtp::MediaSession;
use backstop_core::media::vad::{EarshotVad, VoiceDetector, WebRtcVad};
use backstop_core::route::junk::{JunkConfig, JunkRules};
use backstop_core::route::line::Line;
use backstop_core::sip::dialog::{DialogConfig, UasDialog};
use backstop_core::sip::message::{Incoming, Request, build_response, read_message};
use backstop_core::sip::sdp::{Direction, LocalSession, RemoteMedia};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const CALLER: &str = "127.0.0.1:5070";

fn caller() -> SocketAddr {
    CALLER.parse().unwrap()
}

const OFFER: &str = "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
    m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
    a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n";

/// A request as SIPp sends it in the load test.
fn request_text(method: &str, cseq: u32, to_tag: bool, body: &str) -> String {
    let to = if to_tag { ";tag=local" } else { "" };
    let ct = if body.is_empty() { "" } else { "Content-Type: application/sdp\r\n" };
    format!(
        "{method} sip:+15559990000@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK-1-{method};rport\r\n\
         From: \"Pat Caller\" <sip:+15551230001@127.0.0.1:5070>;tag=1\r\nTo: <sip:+15559990000@127.0.0.1:5060>{to}\r\n\
         Call-ID: 1-30848@127.0.0.1\r\nCSeq: {cseq} {method}\r\nContact: <sip:caller@{CALLER};transport=UDP>\r\n\
         Max-Forwards: 70\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn parse(text: &[u8]) -> Request {
    match read_message(text, caller()) {
        Incoming::Request(r) => *r,
        other => panic!("{other:?}"),
    }
}

fn dialog_config() -> DialogConfig {
    DialogConfig {
        answer_after: Duration::ZERO,
        t1: Duration::from_millis(500),
        t2: Duration::from_millis(4000),
        provisional: true,
        local_sip: "127.0.0.1:5060".parse().unwrap(),
        transport: backstop_core::sip::Transport::Udp,
        local_rtp: "127.0.0.1:20000".parse().unwrap(),
        local_tag: "local".into(),
        seed: 1,
    }
}

/// A dialog that has sent its 200 and waits for the ACK.
fn answered_dialog(now: Instant) -> UasDialog {
    let mut d = UasDialog::new(now, parse(request_text("INVITE", 1, false, OFFER).as_bytes()), dialog_config());
    d.handle_timeout(now);
    while d.poll_transmit().is_some() {}
    while d.poll_event().is_some() {}
    d
}

fn sip(c: &mut Criterion) {
    let options = request_text("OPTIONS", 1, false, "");
    c.bench_function("sip/options: parse + 200", |b| {
        b.iter(|| {
            let req = parse(black_box(options.as_bytes()));
            black_box(build_response(
                &req.frame,
                &req.via_reply,
                200,
                Some("bs0"),
                &[("Allow", "INVITE, ACK".into())],
                None,
            ))
        })
    });
    let invite = request_text("INVITE", 1, false, OFFER);
    let now = Instant::now();
    c.bench_function("sip/invite: parse + dialog + 100 + 200 with SDP", |b| {
        b.iter(|| {
            let mut d = UasDialog::new(now, parse(black_box(invite.as_bytes())), dialog_config());
            d.handle_timeout(now);
            let mut n = 0;
            while let Some(t) = d.poll_transmit() {
                n += t.bytes.len();
            }
            while d.poll_event().is_some() {}
            black_box(n)
        })
    });
    let ack = request_text("ACK", 1, true, "");
    c.bench_function("sip/ack: parse + confirm the dialog", |b| {
        b.iter_batched(
            || answered_dialog(now),
            |mut d| {
                d.handle_request(now, parse(black_box(ack.as_bytes())));
                while d.poll_event().is_some() {}
                d
            },
            BatchSize::SmallInput,
        )
    });
    let bye = request_text("BYE", 2, true, "");
    c.bench_function("sip/bye: parse + 200 + end the dialog", |b| {
        b.iter_batched(
            || {
                let mut d = answered_dialog(now);
                d.handle_request(now, parse(ack.as_bytes()));
                while d.poll_event().is_some() {}
                d
            },
            |mut d| {
                d.handle_request(now, parse(black_box(bye.as_bytes())));
                let mut n = 0;
                while let Some(t) = d.poll_transmit() {
                    n += t.bytes.len();
                }
                while d.poll_event().is_some() {}
                (d, n)
            },
            BatchSize::SmallInput,
        )
    });
}

fn sdp(c: &mut Criterion) {
    let local = LocalSession { session_id: 1, version: 1, rtp_addr: "127.0.0.1:20000".parse().unwrap() };
    c.bench_function("sdp/answer: parse offer + choose + write", |b| {
        b.iter(|| {
            let remote = RemoteMedia::parse(black_box(OFFER.as_bytes())).unwrap();
            let neg = remote.choose().unwrap();
            black_box(local.answer(&neg, Direction::SendRecv))
        })
    });
}

fn speech() -> Vec<i16> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/speech/need.wav");
    backstop::media_files::load_prompt("need", &path).unwrap().pcm
}

fn rtp_packet(seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    rtp_rs::RtpPacketBuilder::new()
        .payload_type(0)
        .ssrc(42)
        .sequence(rtp_rs::Seq::from(seq))
        .timestamp(ts)
        .payload(payload)
        .build()
        .unwrap()
}

fn rtp(c: &mut Criterion) {
    let prompt = Arc::new(Prompt::from_pcm("need", speech()));
    let remote: SocketAddr = caller();
    let mut m = MediaSession::new(Law::Pcmu, Some(remote), 1, 0, 0);
    let t0 = Instant::now();
    m.start(t0);
    let mut frame = 0u32;
    c.bench_function("rtp/packetize: one prompt frame out", |b| {
        b.iter(|| {
            if !m.is_playing() {
                m.play(prompt.clone());
            }
            frame += 1;
            m.handle_timeout(t0 + Duration::from_millis(20) * frame);
            black_box(m.poll_transmit())
        })
    });
    let pcm = speech();
    let payloads: Vec<Vec<u8>> =
        pcm.chunks_exact(160).map(|f| f.iter().map(|s| Law::Pcmu.encode(*s)).collect()).collect();
    let packets: Vec<Vec<u8>> =
        payloads.iter().enumerate().map(|(i, p)| rtp_packet(i as u16, i as u32 * 160, p)).collect();
    let mut m = MediaSession::new(Law::Pcmu, Some(remote), 1, 0, 0);
    m.set_telephone_event(Some(101));
    m.start(t0);
    let mut i = 0usize;
    c.bench_function("rtp/parse: one packet in, decoded", |b| {
        b.iter(|| {
            i += 1;
            let p = &packets[i % packets.len()];
            black_box(m.handle_rtp(t0, remote, black_box(p)).len())
        })
    });
    c.bench_function("rtp/rtp-rs reader alone", |b| {
        b.iter(|| black_box(rtp_rs::RtpReader::new(black_box(&packets[3])).unwrap().payload().len()))
    });
}

fn g711(c: &mut Criterion) {
    let pcm = speech();
    let frame: Vec<i16> = pcm[8000..8160].to_vec();
    let bytes: Vec<u8> = frame.iter().map(|s| Law::Pcmu.encode(*s)).collect();
    for law in [Law::Pcmu, Law::Pcma] {
        let name = law.encoding_name();
        c.bench_function(&format!("g711/{name} encode 160 samples"), |b| {
            let mut out = [0u8; 160];
            b.iter(|| {
                for (o, s) in out.iter_mut().zip(black_box(&frame)) {
                    *o = law.encode(*s);
                }
                black_box(out)
            })
        });
        c.bench_function(&format!("g711/{name} decode 160 samples"), |b| {
            let mut out = [0i16; 160];
            b.iter(|| {
                for (o, s) in out.iter_mut().zip(black_box(&bytes)) {
                    *o = law.decode(*s);
                }
                black_box(out)
            })
        });
    }
}

fn vad(c: &mut Criterion) {
    let pcm = speech();
    let frames: Vec<&[i16]> = pcm.chunks_exact(160).collect();
    let mut detectors: Vec<(&str, Box<dyn VoiceDetector>)> =
        vec![("webrtc-vad mode 2", Box::new(WebRtcVad::new(2))), ("earshot", Box::new(EarshotVad::new(0.5)))];
    for (name, d) in detectors.iter_mut() {
        let mut i = 0usize;
        c.bench_function(&format!("vad/{name} one frame"), |b| {
            b.iter(|| {
                i += 1;
                black_box(d.is_speech(frames[i % frames.len()]))
            })
        });
    }
}

fn dtmf(c: &mut Criterion) {
    let now = Instant::now();
    let mut rx = Rfc4733Receiver::default();
    let mut ts = 0u32;
    let mut k = 0u16;
    c.bench_function("dtmf/rfc4733 one packet", |b| {
        b.iter(|| {
            // Events of 5 packets: start, growing, end.
            k = k.wrapping_add(1);
            let step = k % 5;
            if step == 0 {
                ts = ts.wrapping_add(800);
            }
            let end = if step == 4 { 0x80 } else { 0 };
            let dur = (step + 1) * 160;
            let payload = [5u8, end | 10, (dur >> 8) as u8, dur as u8];
            black_box(rx.handle_packet(now, ts, black_box(&payload)))
        })
    });
    let pcm = speech();
    let frames: Vec<&[i16]> = pcm.chunks_exact(160).collect();
    let mut det = InBandDetector::default();
    let mut i = 0usize;
    c.bench_function("dtmf/goertzel one frame of speech", |b| {
        b.iter(|| {
            i += 1;
            black_box(det.handle_samples(now, frames[i % frames.len()]))
        })
    });
}

const LOAD_SCRIPT: &str = "[[step]]\nname = \"need\"\nkind = \"ask\"\nprompt = \"need\"\nnext = \"need\"\n";

fn prompts() -> Arc<PromptSet> {
    let mut set = PromptSet::default();
    set.insert(Prompt::from_pcm("need", speech()));
    set.insert(Prompt::from_pcm("sorry", vec![0; 1600]));
    Arc::new(set)
}

fn script(c: &mut Criterion) {
    let program = Arc::new(Program::from_toml(LOAD_SCRIPT).unwrap());
    let ctx = || ScriptContext::new("lead".into(), None);
    let pcm = speech();
    let frames: Vec<&[i16]> = pcm.chunks_exact(160).collect();
    let t0 = Instant::now();
    let mut s = Script::new(program.clone(), Some(Box::new(EarshotVad::new(0.5))), ctx());
    s.handle_answered(t0);
    s.handle_prompt_finished(t0, "need");
    let mut i = 0u32;
    c.bench_function("script/ask listening: one frame (earshot)", |b| {
        b.iter(|| {
            i += 1;
            let now = t0 + Duration::from_millis(20) * i;
            s.handle_audio(now, frames[i as usize % frames.len()]);
            while let Some(a) = s.poll_action() {
                if let backstop_core::intake::script::ScriptAction::Play(_) = a {
                    s.handle_prompt_finished(now, "need");
                }
                black_box(&a);
            }
        })
    });
}

fn call(c: &mut Criterion) {
    let program = Arc::new(Program::from_toml(LOAD_SCRIPT).unwrap());
    let setup = CallSetup {
        dialog: dialog_config(),
        lead_id: "lead-1".into(),
        received_at: SystemTime::UNIX_EPOCH,
        max_duration: Duration::from_secs(100_000),
        rtp_seed: (7, 100, 1000),
        source_verified: true,
        pacing_phase: None,
    };
    let t0 = Instant::now();
    let line = Line {
        name: "default".into(),
        matcher: Default::default(),
        program,
        prompts: prompts(),
        schedule: None,
        // The load script listens for ever: no silence limit.
        junk: Arc::new(JunkRules::compile(&JunkConfig { silent_after_secs: 0, ..Default::default() }).unwrap()),
    };
    let intake = Intake { line: Arc::new(line), vad: Some(Box::new(EarshotVad::new(0.5))), record_call: None };
    let mut call = Call::new(t0, parse(request_text("INVITE", 1, false, OFFER).as_bytes()), setup, intake);
    call.handle_timeout(t0);
    call.handle_sip_request(t0, parse(request_text("ACK", 1, true, "").as_bytes()));
    while call.poll_transmit().is_some() {}
    while call.poll_event().is_some() {}
    let pcm = speech();
    let mut packets = Vec::new();
    // The caller speaks, then pauses: answers end and the question is asked again.
    for (i, f) in pcm.chunks_exact(160).chain(std::iter::repeat_n(&[0i16; 160][..], 150)).enumerate() {
        let payload: Vec<u8> = f.iter().map(|s| Law::Pcmu.encode(*s)).collect();
        packets.push(rtp_packet(i as u16, i as u32 * 160, &payload));
    }
    let remote = SocketAddr::from(([127, 0, 0, 1], 4000));
    let mut i = 0u32;
    c.bench_function("call/one 20 ms round: packet out + packet in + script", |b| {
        b.iter(|| {
            i += 1;
            let now = t0 + Duration::from_millis(20) * i;
            call.handle_timeout(now);
            let mut rtp_seq = packets[i as usize % packets.len()].clone();
            // Sequence numbers keep rising across repeats of the clip.
            rtp_seq[2..4].copy_from_slice(&(i as u16).to_be_bytes());
            call.handle_rtp(now, remote, &rtp_seq);
            while let Some(t) = call.poll_transmit() {
                if let Transmit::Rtp(p) = t {
                    black_box(p.bytes().len());
                }
            }
            while call.poll_event().is_some() {}
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = sip, sdp, rtp, g711, vad, dtmf, script, call
}
criterion_main!(benches);
