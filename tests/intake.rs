//! The intake script against real SIPp callers: speech and RFC 4733 digits
//! replayed from a pcap (`play_pcap_audio`, which needs root), digits over
//! SIP INFO, and in-band DTMF tones with no telephone-event negotiated.
//! The agent runs as a real process with the shipped prompts.

mod common;

use backstop_core::media::g711::Law;
use backstop_core::media::prompt::Prompt;
use common::pcap::CallerAudio;
use common::scenario::*;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The offer for pcap callers: SIPp replays the pcap from its media port, which it
/// binds only when the SDP names `[media_port]`; the agent latches onto that port.
fn pcap_offer() -> String {
    OFFER.replace("[rtp_port]", "[media_port]")
}

fn speech(name: &str) -> Vec<i16> {
    backstop::media_files::load_prompt(name, &manifest_dir().join("tests/fixtures/speech").join(name)).unwrap().pcm
}

/// What the agent receives: the samples after the μ-law round trip.
fn through_ulaw(pcm: &[i16]) -> Vec<i16> {
    pcm.iter().map(|s| Law::Pcmu.decode(Law::Pcmu.encode(*s))).collect()
}

fn read_wav(path: &Path) -> Vec<i16> {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(r.spec().sample_rate, 8000);
    r.samples::<i16>().map(|s| s.unwrap()).collect()
}

/// The scenario's wait for the agent's BYE, long enough for the whole script.
fn agent_bye(ms: u64) -> String {
    AGENT_BYE.replace("timeout=\"40000\"", &format!("timeout=\"{ms}\""))
}

fn play_pcap(path: &Path) -> String {
    format!("  <nop><action><exec play_pcap_audio=\"{}\"/></action></nop>\n", path.display())
}

fn lead_of(agent: &AgentProc) -> Value {
    let leads = agent.wait_leads(1, Duration::from_secs(10));
    assert_eq!(leads.len(), 1, "{leads:?}");
    leads[0].clone()
}

/// Check a voice answer's WAV: it holds every sample the caller spoke, from
/// the very first (nothing clipped), with pre-roll before it, and its length
/// is within ±0.5 s of the speech.
fn check_recording(agent: &AgentProc, answer: &Value, spoken: &[i16]) {
    let file = answer["recording"].as_str().unwrap_or_else(|| panic!("no recording: {answer}"));
    let rec = read_wav(&agent.dir.join("data/recordings").join(file));
    let sent = through_ulaw(spoken);
    let start = rec
        .windows(160)
        .position(|w| w == &sent[..160])
        .unwrap_or_else(|| panic!("{file}: the first 20 ms of the speech are not in the recording"));
    assert!(start >= 8 * 200, "{file}: only {} ms before the speech starts", start / 8);
    let end = (start + sent.len()).min(rec.len());
    let kept = rec[start..end].iter().zip(&sent).take_while(|(a, b)| a == b).count();
    assert!(kept + 8 * 100 >= sent.len(), "{file}: only {kept} of {} spoken samples kept in order", sent.len());
    let (rec_ms, speech_ms) = (rec.len() as i64 / 8, sent.len() as i64 / 8);
    assert!((rec_ms - speech_ms).abs() <= 500, "{file}: {rec_ms} ms recorded for {speech_ms} ms of speech");
    let reported = answer["speech_ms"].as_i64().unwrap();
    assert!((reported - speech_ms).abs() <= 500, "{file}: speech_ms {reported} for {speech_ms} ms of speech");
    // A long answer is written ahead in blocks to a part file, which goes once the recording is whole.
    let parts: Vec<_> = std::fs::read_dir(agent.dir.join("data/recordings"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(parts.is_empty(), "part files left behind: {parts:?}");
}

/// Index of the first captured packet where `prompt` starts playing.
fn prompt_start(payloads: &[Vec<u8>], prompt: &Prompt) -> Option<usize> {
    let frames: Vec<&[u8]> = prompt.encoded(Law::Pcmu).chunks(160).take(10).collect();
    (0..payloads.len().saturating_sub(frames.len()))
        .find(|i| frames.iter().enumerate().all(|(k, f)| payloads[i + k] == *f))
}

#[test]
fn a_caller_completes_the_default_script_by_voice_and_keypad() {
    let agent = AgentProc::start_default_script("intake-full", "[sip]\nanswer_after_ms = 100\n");
    let dir = scratch_dir("sipp-intake-full");
    let (name, need) = (speech("name.wav"), speech("need.wav"));
    let prompt = |p: &str| {
        backstop::media_files::load_prompt(p, &manifest_dir().join("prompts").join(format!("{p}.wav"))).unwrap()
    };

    // The caller's side, in ms from the start of the pcap (200 ms after the ACK).
    // Answers start well after each question ends at the agent's expected pace;
    // keys are pressed while the next prompt may still play (they cut it short).
    const LEAD_IN: u64 = 200;
    let mut audio = CallerAudio::new(101);
    let name_at = 8_800;
    audio.silence_until(name_at).audio(&name);
    let name_end = audio.ms();
    let need_at = 14_200;
    audio.silence_until(need_at).audio(&need);
    let need_end = audio.ms();
    audio.silence_until(20_000).digits("5551234567#");
    audio.silence_until(22_500).digits("94110");
    audio.silence_until(24_000).digits("1");
    audio.silence_until(34_000);
    let pcap = dir.join("caller.pcap");
    audio.write(&pcap);

    // The agent's RTP goes to SIPp's media port (symmetric RTP); tcpdump sees it on the wire.
    let sniffer = Sniffer::start(&dir, agent.rtp_ports);
    let sc = scenario(
        "intake-full",
        &[&invite("", &pcap_offer()), ANSWERED, &ack(1), &pause(LEAD_IN), &play_pcap(&pcap), &agent_bye(50_000)],
    );
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[]);
    let packets = sniffer.finish();
    assert!(run.success, "SIPp failed: {}\n{}", run.errors, agent.log());

    let lead = lead_of(&agent);
    assert_eq!(lead["outcome"], "completed", "{lead}");
    assert_eq!(lead["ended_by"], "agent");
    assert_eq!(lead["dtmf"], "5551234567#941101");
    let a = &lead["answers"];
    assert_eq!(a["name"]["kind"], "voice");
    assert_eq!(a["name"]["status"], "answered", "{a}");
    assert_eq!(a["name"]["attempts"], 1);
    assert_eq!(a["need"]["status"], "answered", "{a}");
    check_recording(&agent, &a["name"], &name);
    check_recording(&agent, &a["need"], &need);
    assert_eq!(a["callback_number"]["value"], "5551234567", "{a}");
    assert_eq!(a["callback_number"]["status"], "answered");
    assert_eq!(a["zip"]["value"], "94110");
    assert_eq!(a["urgency"]["value"], "1");
    assert_eq!(a["urgency"]["label"], "emergency");

    // End-of-speech latency, seen on the wire: from the caller's last spoken
    // sample to the first packet of the next question. The agent's media starts
    // at the ACK, and SIPp starts the pcap LEAD_IN after sending it.
    assert!(packets.len() > 1000, "only {} RTP packets captured", packets.len());
    let t0 = packets[0].0;
    let payloads: Vec<Vec<u8>> = packets.iter().map(|p| parse_rtp(&p.1).payload).collect();
    let spoken_end = |ms: u64| t0 + Duration::from_millis(LEAD_IN + ms);
    for (answer, end, next) in [("name", name_end, "need"), ("need", need_end, "callback_number")] {
        let i = prompt_start(&payloads, &prompt(next)).unwrap_or_else(|| panic!("{next} prompt never played"));
        let latency = packets[i].0.saturating_sub(spoken_end(end));
        eprintln!("end-of-speech latency after `{answer}`: {} ms (end_silence 1200 ms)", latency.as_millis());
        assert!(latency < Duration::from_secs(2), "moved on {latency:?} after the caller fell silent");
        assert!(latency >= Duration::from_millis(1_100), "moved on {latency:?}: before the end silence had passed");
    }
}

/// A keypad-only script: urgency menu, ZIP, callback number (caller ID), goodbye.
const KEYPAD_SCRIPT: &str = r#"
[[step]]
name = "urgency"
kind = "menu"
prompt = "urgency"
options."1" = { label = "emergency" }
options."2" = { label = "this_week" }
[[step]]
name = "zip"
kind = "digits"
prompt = "zip"
validate = "zip"
[[step]]
name = "callback_number"
kind = "digits"
prompt = "callback_number"
validate = "phone"
caller_id_key = "1"
inter_digit_timeout_ms = 1000
[[step]]
name = "goodbye"
kind = "goodbye"
prompt = "goodbye"
"#;

fn keypad_answers_are(lead: &Value) {
    let a = &lead["answers"];
    assert_eq!(a["urgency"]["label"], "this_week", "{lead}");
    assert_eq!(a["zip"]["value"], "94110", "{lead}");
    // "1" alone: call back on the number calling (From: +15551230001).
    assert_eq!(a["callback_number"]["value"], "+15551230001", "{lead}");
    assert_eq!(a["callback_number"]["from_caller_id"], true);
    assert_eq!(lead["outcome"], "completed");
}

#[test]
fn sip_info_digits_answer_the_script() {
    let agent = AgentProc::start("intake-info", &format!("[sip]\nanswer_after_ms = 50\n{KEYPAD_SCRIPT}"));
    let dir = scratch_dir("sipp-intake-info");
    let mut parts = vec![invite("", OFFER), ANSWERED.to_string(), ack(1), pause(500)];
    for (i, d) in "2941101".chars().enumerate() {
        parts.push(info_digit(2 + i as u32, &d.to_string()));
    }
    parts.push(agent_bye(20_000));
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let run = run_sipp(&dir, &scenario("intake-info", &refs), agent.addr(), false, &[("rtp_port", "40060".into())]);
    assert!(run.success, "SIPp failed: {}\n{}", run.errors, agent.log());
    let lead = lead_of(&agent);
    assert_eq!(lead["dtmf"], "2941101");
    keypad_answers_are(&lead);
}

#[test]
fn in_band_tones_answer_the_script_without_telephone_event() {
    let agent = AgentProc::start("intake-inband", &format!("[sip]\nanswer_after_ms = 50\n{KEYPAD_SCRIPT}"));
    let dir = scratch_dir("sipp-intake-inband");
    let offer =
        pcap_offer().replace(" 0 8 101", " 0").replace("a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-15\n", "");
    assert!(!offer.contains("telephone-event"));
    let mut audio = CallerAudio::new(101);
    audio.silence(500).tones("2").silence(300).tones("94110").silence(300).tones("1").silence(8_000);
    let pcap = dir.join("tones.pcap");
    audio.write(&pcap);
    let sc = scenario(
        "intake-inband",
        &[&invite("", &offer), ANSWERED, &ack(1), &pause(200), &play_pcap(&pcap), &agent_bye(20_000)],
    );
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[]);
    assert!(run.success, "SIPp failed: {}\n{}", run.errors, agent.log());
    let lead = lead_of(&agent);
    assert_eq!(lead["codec"], "PCMU");
    assert_eq!(lead["dtmf"], "2941101");
    keypad_answers_are(&lead);
}

#[test]
fn hanging_up_mid_answer_keeps_the_partial_answer_and_the_whole_call() {
    let script = r#"
[[step]]
name = "need"
kind = "ask"
prompt = "need"
[[step]]
name = "goodbye"
kind = "goodbye"
prompt = "goodbye"
"#;
    let agent = AgentProc::start(
        "intake-hangup",
        &format!("[sip]\nanswer_after_ms = 50\n[recordings]\nformat = \"ulaw\"\nwhole_call = true\n{script}"),
    );
    let dir = scratch_dir("sipp-intake-hangup");
    let need = speech("need.wav");
    let mut audio = CallerAudio::new(101);
    audio.silence(3_000).audio(&need);
    let pcap = dir.join("caller.pcap");
    audio.write(&pcap);
    // The caller hangs up 1.5 s into the answer.
    let sc = scenario(
        "intake-hangup",
        &[&invite("", &pcap_offer()), ANSWERED, &ack(1), &pause(200), &play_pcap(&pcap), &pause(4_500), CALLER_BYE],
    );
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[]);
    assert!(run.success, "SIPp failed: {}\n{}", run.errors, agent.log());
    let lead = lead_of(&agent);
    assert_eq!(lead["outcome"], "hung_up_during_need", "{lead}");
    let answer = &lead["answers"]["need"];
    assert_eq!(answer["status"], "partial", "{lead}");
    let recordings = agent.dir.join("data/recordings");
    // μ-law WAVs, read back with the agent's own prompt loader.
    let load = |file: &str| {
        backstop::media_files::load_prompt("r", &recordings.join(file)).unwrap_or_else(|e| panic!("{file}: {e}")).pcm
    };
    let partial = load(answer["recording"].as_str().unwrap());
    let sent = through_ulaw(&need);
    let start = partial.windows(160).position(|w| w == &sent[..160]).expect("the answer's first 20 ms");
    let kept_ms = (partial.len() - start) / 8;
    assert!((1_200..=1_700).contains(&kept_ms), "{kept_ms} ms of the answer kept before the hang-up");
    // The whole call: the caller's side from the start, about 4.5 s, with the speech in it.
    let call = load(lead["recording"].as_str().expect("a whole-call recording"));
    assert!((4_000..=5_200).contains(&(call.len() / 8)), "{} ms", call.len() / 8);
    assert!(call.windows(160).any(|w| w == &sent[..160]));
}
