//! vad_accuracy: speech recall and false alarms of the VAD candidates on the
//! shipped speech prompts with pauses, under several noise floors, after a
//! μ-law round trip (as the audio arrives in a call), and the cost per 20 ms
//! frame. Run: `cargo bench --bench vad_accuracy`.
//!
//! Labels come from frame energy on the clean signal (speech = a 20 ms frame
//! above −40 dBFS RMS), so the pauses between words count as non-speech: a
//! detector's hangover shows up as false alarms. Compare rows with each
//! other, not with published figures.

use backstop_core::media::g711::Law;
use backstop_core::media::vad::{EarshotVad, VoiceDetector, WebRtcVad};
use std::time::Instant;

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
    let mut clean: Vec<f32> = Vec::new();
    let pauses = [0.6, 1.5, 0.8, 1.2, 0.7, 1.4, 1.0];
    for (name, pause) in ["greeting", "name", "need", "callback_number", "zip", "urgency", "goodbye"].iter().zip(pauses)
    {
        let p = backstop::media_files::load_prompt(name, &dir.join(format!("{name}.wav"))).unwrap();
        clean.extend(std::iter::repeat_n(0.0, (8000.0 * pause) as usize));
        clean.extend(p.pcm.iter().map(|s| *s as f32 / 32768.0));
    }
    clean.extend(std::iter::repeat_n(0.0, 8000));
    let labels: Vec<bool> =
        clean.chunks_exact(160).map(|f| (f.iter().map(|x| x * x).sum::<f32>() / 160.0).sqrt() > 0.01).collect();
    let speech_frames = labels.iter().filter(|l| **l).count();
    println!(
        "test audio: {:.1} s, {} frames, {} labelled speech ({:.0} %)\n",
        clean.len() as f64 / 8000.0,
        labels.len(),
        speech_frames,
        100.0 * speech_frames as f64 / labels.len() as f64
    );

    // Deterministic noise: white, and white through a one-pole low-pass (a rough stand-in for pink/room noise).
    let mut seed = 0x1234_5678u32;
    let mut white = || {
        seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
        (seed >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
    };
    let white_noise: Vec<f32> = (0..clean.len()).map(|_| white()).collect();
    let mut lp = 0.0f32;
    let low_passed: Vec<f32> = white_noise
        .iter()
        .map(|w| {
            lp = 0.95 * lp + 0.05 * w;
            lp
        })
        .collect();
    let rms = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
    let conditions: Vec<(String, Vec<i16>)> = [
        ("none", None),
        ("white −63 dBFS", Some((&white_noise, -63.0))),
        ("white −48 dBFS", Some((&white_noise, -48.0))),
        ("low-passed −34 dBFS", Some((&low_passed, -34.0))),
    ]
    .into_iter()
    .map(|(name, noise)| {
        let mixed: Vec<f32> = match noise {
            None => clean.clone(),
            Some((n, db)) => {
                let gain = 10f32.powf(db / 20.0) / rms(n);
                clean.iter().zip(n.iter()).map(|(c, x)| c + x * gain).collect()
            }
        };
        let pcm: Vec<i16> =
            mixed.iter().map(|x| Law::Pcmu.decode(Law::Pcmu.encode((x.clamp(-1.0, 1.0) * 32767.0) as i16))).collect();
        (name.to_string(), pcm)
    })
    .collect();

    let makers: Vec<(&str, Maker)> = vec![
        ("webrtc-vad quality (0)", Box::new(|| Box::new(WebRtcVad::new(0)))),
        ("webrtc-vad aggressive (2)", Box::new(|| Box::new(WebRtcVad::new(2)))),
        ("webrtc-vad very aggressive (3)", Box::new(|| Box::new(WebRtcVad::new(3)))),
        ("earshot ≥ 0.5", Box::new(|| Box::new(EarshotVad::new(0.5)))),
        ("earshot ≥ 0.5, no energy gate", Box::new(|| Box::new(EarshotVad::without_gate(0.5)))),
        ("earshot ≥ 0.6", Box::new(|| Box::new(EarshotVad::new(0.6)))),
        ("earshot ≥ 0.3", Box::new(|| Box::new(EarshotVad::new(0.3)))),
    ];
    print!("| detector |");
    for (name, _) in &conditions {
        print!(" {name}: recall / false alarm |");
    }
    println!(" ns per 20 ms frame, each condition |");
    println!("|---|{}---|", "---|".repeat(conditions.len()));
    for (label, make) in &makers {
        print!("| {label} |");
        let mut ns = Vec::new();
        for (_, pcm) in &conditions {
            // Timed as the best of five passes, each with a fresh detector.
            let mut best = f64::MAX;
            let mut decisions = Vec::new();
            for _ in 0..5 {
                let mut vad = make();
                let start = Instant::now();
                decisions = pcm.chunks_exact(160).map(|f| vad.is_speech(f)).collect();
                best = best.min(start.elapsed().as_nanos() as f64 / decisions.len() as f64);
            }
            ns.push(format!("{best:.0}"));
            let (mut hit, mut fa) = (0usize, 0usize);
            for (d, l) in decisions.iter().zip(&labels) {
                match (d, l) {
                    (true, true) => hit += 1,
                    (true, false) => fa += 1,
                    _ => {}
                }
            }
            print!(
                " {:.2} / {:.2} |",
                hit as f64 / speech_frames as f64,
                fa as f64 / (labels.len() - speech_frames) as f64
            );
        }
        println!(" {} |", ns.join(" / "));
    }

    endpointing(&makers, &white_noise, &low_passed);
}

/// What matters for a voice answer: run each detector inside the agent's
/// endpointer (default `ask` settings: 1.2 s end silence, 300 ms pre-roll,
/// 200 ms minimum speech) on answers with a pause inside, under the same
/// noise, and report how often the answer is found whole and how long after
/// the speech ends the step moves on; plus false starts on noise alone.
type Maker = Box<dyn Fn() -> Box<dyn VoiceDetector>>;

fn endpointing(makers: &[(&str, Maker)], white: &[f32], low_passed: &[f32]) {
    use backstop_core::intake::endpoint::{EndpointEvent, Endpointer, SpeechEnd};
    use backstop_core::intake::program::ListenParams;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/speech");
    let answers: Vec<Vec<f32>> = ["name.wav", "need.wav"]
        .iter()
        .map(|f| {
            backstop::media_files::load_prompt(f, &dir.join(f))
                .unwrap()
                .pcm
                .iter()
                .map(|s| *s as f32 / 32768.0)
                .collect()
        })
        .collect();
    let rms = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
    type Noise<'a> = Option<(&'a [f32], f32)>;
    let noises: [(&str, Noise); 4] = [
        ("none", None),
        ("white −48 dBFS", Some((white, -48.0))),
        ("low-passed −40 dBFS", Some((low_passed, -40.0))),
        ("low-passed −34 dBFS", Some((low_passed, -34.0))),
    ];
    println!("\nEndpointing (each answer after 1.5 s of quiet, then 4 s of quiet; μ-law):");
    println!(
        "| detector | noise | answers found | speech_ms error (mean abs) | moved on after speech end (mean / max) | false starts in 10 s of noise alone |"
    );
    println!("|---|---|---|---|---|---|");
    for (label, make) in makers {
        for (noise_name, noise) in &noises {
            let gain = noise.map_or(0.0, |(n, db)| 10f32.powf(db / 20.0) / rms(n));
            let mix = |clean: &[f32], offset: usize| -> Vec<i16> {
                clean
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let n = noise.map_or(0.0, |(n, _)| n[(i + offset) % n.len()] * gain);
                        Law::Pcmu.decode(Law::Pcmu.encode(((c + n).clamp(-1.0, 1.0) * 32767.0) as i16))
                    })
                    .collect()
            };
            let (mut found, mut err_ms, mut lat_sum, mut lat_max) = (0, 0u64, 0u64, 0u64);
            for (k, answer) in answers.iter().enumerate() {
                let lead_in = 12_000;
                let mut clean = vec![0.0f32; lead_in];
                clean.extend_from_slice(answer);
                clean.extend(std::iter::repeat_n(0.0, 32_000));
                let pcm = mix(&clean, k * 7_919);
                let mut vad = make();
                let mut ep = Endpointer::default();
                ep.arm(ListenParams::default());
                for (i, f) in pcm.chunks_exact(160).enumerate() {
                    if let Some(EndpointEvent::Answer(a)) = ep.handle_frame(f, vad.is_speech(f)) {
                        let true_ms = answer.len() as u64 / 8;
                        let end_ms = (lead_in + answer.len()) as u64 / 8;
                        let at_ms = (i as u64 + 1) * 20;
                        if a.ended_by == SpeechEnd::Silence && at_ms > end_ms {
                            found += 1;
                            err_ms += a.speech_ms.abs_diff(true_ms);
                            lat_sum += at_ms - end_ms;
                            lat_max = lat_max.max(at_ms - end_ms);
                        }
                        break;
                    }
                }
            }
            let noise_only = mix(&vec![0.0f32; 80_000], 3_333);
            let mut vad = make();
            let mut ep = Endpointer::default();
            ep.arm(ListenParams::default());
            let false_starts = noise_only
                .chunks_exact(160)
                .filter(|f| {
                    let ev = ep.handle_frame(f, vad.is_speech(f));
                    if !ep.is_armed() {
                        ep.arm(ListenParams::default());
                    }
                    ev == Some(EndpointEvent::SpeechStarted)
                })
                .count();
            let n = found.max(1) as u64;
            println!(
                "| {label} | {noise_name} | {found}/{} | {} ms | {} / {} ms | {false_starts} |",
                answers.len(),
                err_ms / n,
                lat_sum / n,
                lat_max
            );
        }
    }
}
