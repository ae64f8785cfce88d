//! rtp_pacing_jitter: how evenly the agent paces a 30 s prompt, as a caller
//! receives it, beside SIPp's own UAS replaying the same audio from a pcap
//! (`play_pcap_audio`, which needs root for its raw socket).
//!
//! Run: `cargo bench --bench rtp_pacing_jitter`. It starts the release agent
//! on loopback, calls it with SIPp, timestamps every RTP packet on arrival,
//! and prints mean / p50 / p99 / worst inter-packet gap and the drift of the
//! last packet against the ideal 20 ms schedule, for both senders.

#[path = "../tests/common/mod.rs"]
mod common;

use common::scenario::*;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SECONDS: usize = 30;

fn main() {
    let dir = scratch_dir("pacing");
    // A 30 s prompt of real speech: the shipped greeting, repeated.
    let greeting = backstop::media_files::load_prompt("g", &manifest_dir().join("prompts/greeting.wav")).unwrap();
    let mut pcm = Vec::new();
    while pcm.len() < 8000 * SECONDS {
        pcm.extend_from_slice(&greeting.pcm);
    }
    pcm.truncate(8000 * SECONDS);
    let wav = dir.join("long.wav");
    let spec =
        hound::WavSpec { channels: 1, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(&wav, spec).unwrap();
    for s in &pcm {
        w.write_sample(*s).unwrap();
    }
    w.finalize().unwrap();
    let frames = SECONDS * 50;

    let agent = AgentProc::start(
        "pacing",
        &format!(
            "[sip]\nanswer_after_ms = 100\n[[step]]\nname = \"long\"\nkind = \"goodbye\"\nprompt = \"{}\"\n",
            wav.display()
        ),
    );
    let rtp = RtpCapture::start();
    let sc = scenario("pacing", &[&invite("", OFFER), ANSWERED, &ack(1), AGENT_BYE]);
    let run = run_sipp(&dir, &sc, agent.addr(), false, &[("rtp_port", rtp.port.to_string())]);
    let packets = rtp.finish();
    assert!(run.success, "SIPp failed: {}", run.errors);
    report("backstop", &packets[..frames.min(packets.len())], frames);

    // The peer: SIPp's UAS replaying the same 30 s as a pcap.
    let pcap = dir.join("long.pcap");
    common::pcap::CallerAudio::new(101).audio(&pcm[..frames * 160]).write(&pcap);
    let uas_port = free_port();
    let uas_xml = dir.join("uas.xml");
    std::fs::write(&uas_xml, UAS.replace("PCAP", &pcap.display().to_string())).unwrap();
    let mut uas = Command::new("sipp")
        .args(["-sf"])
        .arg(&uas_xml)
        .args(["-i", "127.0.0.1", "-p", &uas_port.to_string(), "-m", "1", "-nostdin", "-timeout", "60s"])
        .args(["-mp", &free_media_port().to_string()])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp");
    std::thread::sleep(Duration::from_millis(500));
    let rtp = RtpCapture::start();
    let uac_dir = scratch_dir("pacing-uac");
    let run = run_sipp(&uac_dir, &sc, ([127, 0, 0, 1], uas_port).into(), false, &[("rtp_port", rtp.port.to_string())]);
    let packets = rtp.finish();
    let _ = uas.wait();
    if run.success && packets.len() > 100 {
        report("sipp-pcap", &packets[..frames.min(packets.len())], frames);
    } else {
        println!("sipp-pcap: no usable run ({} packets; play_pcap_audio needs root)\n{}", packets.len(), run.errors);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&uac_dir);
}

fn report(name: &str, packets: &[(Instant, std::net::SocketAddr, Vec<u8>)], frames: usize) {
    let gaps: Vec<f64> = packets.windows(2).map(|w| (w[1].0 - w[0].0).as_secs_f64() * 1000.0).collect();
    let mut sorted = gaps.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    let sd = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt();
    let pct = |p: f64| sorted[((sorted.len() - 1) as f64 * p) as usize];
    let span = (packets.last().unwrap().0 - packets[0].0).as_secs_f64() * 1000.0;
    let ideal = (packets.len() - 1) as f64 * 20.0;
    println!(
        "{name}: {} of {frames} packets; gap ms mean {mean:.3} sd {sd:.3} min {:.3} p50 {:.3} p99 {:.3} max {:.3}; drift over {:.1} s {:+.2} ms",
        packets.len(),
        sorted[0],
        pct(0.5),
        pct(0.99),
        sorted[sorted.len() - 1],
        span / 1000.0,
        span - ideal
    );
}

const UAS: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uas-pcap">
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv request="ACK" crlf="true">
  </recv>
  <nop>
    <action>
      <exec play_pcap_audio="PCAP"/>
    </action>
  </nop>
  <pause milliseconds="30500"/>
  <send retrans="500">
    <![CDATA[
      BYE sip:caller@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"#;
