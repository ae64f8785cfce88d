//! Golden lead and events: the lead's JSON is a public API (add fields, never
//! rename), so a whole call of the shipped default script is pinned here byte
//! for byte. The call runs Sans-IO, faster than real time, with a fixed lead
//! id and start time: the caller speaks its name and need (the recorded test
//! speech, with line noise in every other frame), keys its callback number,
//! ZIP and urgency as RFC 4733 events, and the agent says goodbye and hangs
//! up. What the agent would commit is compared with `tests/golden/`: the
//! `call.missed` and `lead.completed` events as a webhook receives them
//! (the event id masked: it is random), the leads.jsonl and events.jsonl
//! lines, and the recordings the call asked to write.
//!
//! `BLESS=1 cargo test --test golden` rewrites the files; a change there is
//! a change of the public contract, to be made on purpose.

mod common;

use backstop::config::Config;
use backstop::sink::event::{Event, EventType};
use backstop_core::call::{Call, CallEvent, CallSetup, Intake, Transmit};
use backstop_core::intake::lead::Outcome;
use backstop_core::intake::script::AnswerStatus;
use backstop_core::media::prompt::Prompt;
use backstop_core::media::vad::EarshotVad;
use backstop_core::sip::dialog::DialogConfig;
use backstop_core::sip::message::{Incoming, read_message};
use common::pcap::CallerAudio;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

const CALLER: &str = "127.0.0.1:5070";
const CALLER_RTP: &str = "127.0.0.1:4000";
/// 2026-11-29T12:00:00Z
const RECEIVED_AT_S: u64 = 1_795_953_600;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn invite() -> backstop_core::sip::message::Request {
    let sdp = "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
               a=fmtp:101 0-15\r\n";
    let text = format!(
        "INVITE sip:+15559870000@127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {CALLER};branch=z9hG4bKgolden1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: \"Jane Doe\" <sip:+15551234567@carrier.example>;tag=caller1\r\n\
         To: <sip:+15559870000@pbx.example>\r\n\
         Call-ID: golden-call-1@127.0.0.1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:jane@{CALLER}>\r\n\
         P-Asserted-Identity: \"Jane Doe\" <sip:+15551234567@carrier.example>\r\n\
         Diversion: <sip:+15559870000@pbx.example>;reason=no-answer;counter=1\r\n\
         User-Agent: golden-caller\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    match read_message(text.as_bytes(), CALLER.parse().unwrap()) {
        Incoming::Request(r) => *r,
        other => panic!("{other:?}"),
    }
}

fn ack() -> backstop_core::sip::message::Request {
    let text = format!(
        "ACK sip:backstop@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKgolden2;rport\r\n\
         Max-Forwards: 70\r\nFrom: \"Jane Doe\" <sip:+15551234567@carrier.example>;tag=caller1\r\n\
         To: <sip:+15559870000@pbx.example>;tag=golden-tag\r\nCall-ID: golden-call-1@127.0.0.1\r\n\
         CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    match read_message(text.as_bytes(), CALLER.parse().unwrap()) {
        Incoming::Request(r) => *r,
        other => panic!("{other:?}"),
    }
}

/// The caller's 200 OK to the agent's BYE, echoing its Via and CSeq.
fn ok_to(bye: &str) -> backstop_core::sip::message::Response {
    let field = |name: &str| {
        bye.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).unwrap_or_else(|| panic!("no {name}: {bye}"))
    };
    let text = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        field("Via"),
        field("From"),
        field("To"),
        field("Call-ID"),
        field("CSeq")
    );
    match read_message(text.as_bytes(), CALLER.parse().unwrap()) {
        Incoming::Response(r) => *r,
        other => panic!("{other:?}"),
    }
}

fn speech(name: &str) -> Vec<i16> {
    let path = manifest().join("tests/fixtures/speech").join(name);
    Prompt::from_bytes(name, "wav", &std::fs::read(&path).unwrap()).unwrap().pcm
}

/// What one default-script call commits: the events and the recordings asked for.
struct Committed {
    events: Vec<Event>,
    recordings: Vec<(String, usize)>,
}

fn run_call() -> Committed {
    let cfg = Config::default();
    let received_at = SystemTime::UNIX_EPOCH + Duration::from_secs(RECEIVED_AT_S);
    let wall = |t0: Instant, now: Instant| {
        backstop_core::intake::lead::rfc3339(received_at + now.saturating_duration_since(t0))
    };
    let setup = CallSetup {
        dialog: DialogConfig {
            answer_after: cfg.sip.answer_after,
            t1: cfg.sip.t1,
            t2: cfg.sip.t2,
            provisional: true,
            local_sip: "127.0.0.1:5060".parse().unwrap(),
            transport: backstop_core::sip::Transport::Udp,
            local_rtp: "127.0.0.1:20000".parse().unwrap(),
            local_tag: "golden-tag".into(),
            seed: 7,
        },
        lead_id: "0b9e3f6c-5f4a-4a8e-9d1e-2f7c1a6b4d10".into(),
        received_at,
        max_duration: cfg.call.max_duration,
        rtp_seed: (0x1234_5678, 100, 1000),
        source_verified: false,
        pacing_phase: None,
    };
    // The default line as the agent builds it from the shipped config: its
    // script, the shipped prompts, no schedule, the default junk rules.
    let line = backstop::cli::load_lines(&cfg).unwrap().default_line().clone();
    let intake = Intake { line, vad: Some(Box::new(EarshotVad::new(0.5))), record_call: Some(cfg.recordings.max_call) };
    let t0 = Instant::now();
    let mut call = Call::new(t0, invite(), setup, intake);

    // The caller, in ms after the ACK: as the SIPp intake test paces it.
    let mut caller = CallerAudio::new(101).with_line_noise(12345);
    caller.silence_until(9_000).audio(&speech("name.wav"));
    caller.silence_until(14_400).audio(&speech("need.wav"));
    caller.silence_until(20_200).digits("5551234567#");
    caller.silence_until(22_700).digits("94110");
    caller.silence_until(24_200).digits("1");
    caller.silence_until(40_000);
    let packets = caller.packets();

    let mut committed = Committed { events: Vec::new(), recordings: Vec::new() };
    let acked_at = t0 + cfg.sip.answer_after + Duration::from_millis(20);
    let mut acked = false;
    let mut next_packet = 0;
    let mut now = t0;
    let end = t0 + Duration::from_secs(60);
    while !call.is_finished() && now < end {
        let mut bye = None;
        while let Some(t) = call.poll_transmit() {
            if let Transmit::Sip(s) = t {
                let text = String::from_utf8(s.bytes).unwrap();
                if text.starts_with("BYE ") {
                    bye = Some(text);
                }
            }
        }
        while let Some(ev) = call.poll_event() {
            match ev {
                CallEvent::Missed(lead) => {
                    committed.events.push(Event::new(EventType::CallMissed, wall(t0, now), &lead))
                }
                CallEvent::Lead(lead) => {
                    committed.events.push(Event::new(EventType::LeadCompleted, wall(t0, now), &lead))
                }
                // Blocks written ahead are counted with the recording that claims them.
                CallEvent::AnswerAudio { .. } => {}
                CallEvent::Recording { file, samples, spilled, .. } => {
                    committed.recordings.push((file, spilled + samples.len()))
                }
                CallEvent::Progress(..) | CallEvent::Detail(..) | CallEvent::Tally(_) => {}
                CallEvent::PromptMissing(p) => panic!("prompt {p} is not loaded"),
                CallEvent::Transferred(_) => panic!("the default script transfers no one"),
            }
        }
        if let Some(bye) = bye {
            call.handle_sip_response(now, ok_to(&bye));
            continue;
        }
        let mut next = call.poll_timeout().unwrap_or(end).min(end);
        if !acked {
            next = next.min(acked_at);
        } else if let Some((us, _)) = packets.get(next_packet) {
            next = next.min(acked_at + Duration::from_micros(*us));
        }
        now = next.max(now);
        if !acked && now >= acked_at {
            acked = true;
            call.handle_sip_request(now, ack());
        } else if acked
            && next_packet < packets.len()
            && now >= acked_at + Duration::from_micros(packets[next_packet].0)
        {
            let (_, p) = &packets[next_packet];
            call.handle_rtp(now, CALLER_RTP.parse().unwrap(), p);
            next_packet += 1;
        } else {
            call.handle_timeout(now);
        }
    }
    assert!(call.is_finished(), "the call did not end within a minute");
    committed
}

fn check(name: &str, actual: &str) {
    let path = manifest().join("tests/golden").join(name);
    if std::env::var_os("BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        expected == actual,
        "{} differs from the golden file:\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

/// The event as a webhook body, its random id masked.
fn masked(event: &Event) -> String {
    let json = serde_json::to_string(event).unwrap();
    json.replacen(&format!("\"id\":\"{}\"", event.id), "\"id\":\"evt_MASKED\"", 1) + "\n"
}

#[test]
fn the_default_script_call_commits_the_golden_lead_and_events() {
    let c = run_call();
    let kinds: Vec<EventType> = c.events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventType::CallMissed, EventType::LeadCompleted]);
    assert!(c.events.iter().all(|e| e.id.starts_with("evt_") && e.id.len() > 10));
    check("call.missed.json", &masked(&c.events[0]));
    check("lead.completed.json", &masked(&c.events[1]));
    // The leads.jsonl line is the lead object of the completed event, alone.
    check("leads.jsonl", &(serde_json::to_string(&c.events[1].lead).unwrap() + "\n"));
    // events.jsonl: each event with its keys sorted (the id masked as above).
    let events_file: String = c
        .events
        .iter()
        .map(|e| {
            let line = serde_json::to_string(&e.file_line()).unwrap();
            line.replacen(&format!("\"id\":\"{}\"", e.id), "\"id\":\"evt_MASKED\"", 1) + "\n"
        })
        .collect();
    check("events.jsonl", &events_file);
    let recordings: String = c.recordings.iter().map(|(f, n)| format!("{f} {n}\n")).collect();
    check("recordings.txt", &recordings);
    let lead = &c.events[1].lead;
    assert_eq!(lead.outcome, Outcome::Completed, "{lead:?}");
    assert_eq!(lead.answers["name"].status, AnswerStatus::Answered, "{lead:?}");
    assert_eq!(lead.answers["urgency"].label.as_deref(), Some("emergency"), "{lead:?}");
}
