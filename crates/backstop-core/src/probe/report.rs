//! The test call's verdict: its [`Findings`] as one pass/fail line per
//! check, each with the timing or the reason in words. The runtime prints
//! them and adds its own (the lead in the agent's store).

use super::{Findings, Hangup, secs};
use std::time::{Duration, Instant};

/// Below this RMS level the audio that came counts as silence.
pub const SILENCE_DBFS: f64 = -50.0;

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub pass: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: &'static str, pass: bool, detail: impl Into<String>) -> Check {
        Check { name, pass, detail: detail.into() }
    }
}

impl std::fmt::Display for Check {
    /// `PASS answered     200 OK after 1003 ms`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:<13} {}", if self.pass { "PASS" } else { "FAIL" }, self.name, self.detail)
    }
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn since(later: Instant, earlier: Instant) -> Duration {
    later.saturating_duration_since(earlier)
}

/// The checks of a finished call, in order. An unanswered call has one
/// line, `answered`, saying why; the rest need a call to be checked.
pub fn checks(f: &Findings) -> Vec<Check> {
    let mut out = Vec::new();
    let Some(answered) = f.answered else {
        let why = f.failure.clone().unwrap_or_else(|| "the call ended before an answer".into());
        let rang = match &f.provisional {
            Some((code, reason, at)) if !why.contains("rang") => {
                format!(" ({code} {reason} after {})", ms(since(*at, f.invite_sent)))
            }
            _ => String::new(),
        };
        out.push(Check::new("answered", false, format!("{why}{rang}")));
        return out;
    };
    let (code, reason) = f.final_response.as_ref().map(|(c, r, _)| (*c, r.as_str())).unwrap_or((200, "OK"));
    let mut detail = format!("{code} {reason} after {}", ms(since(answered, f.invite_sent)));
    if let Some((c, r, at)) = &f.provisional {
        detail.push_str(&format!(" ({c} {r} after {})", ms(since(*at, f.invite_sent))));
    }
    if let Some(code) = f.challenged {
        detail.push_str(&format!(", after a {code} challenge"));
    }
    if f.invite_resends > 0 {
        detail.push_str(&format!(", INVITE resent {} times", f.invite_resends));
    }
    out.push(Check::new("answered", true, detail));

    let ended = f.ended.or(match &f.hangup {
        Hangup::Ours { sent, .. } => Some(*sent),
        Hangup::Theirs { at } => Some(*at),
        Hangup::Crossed { sent, .. } => Some(*sent),
        Hangup::NotInCall => None,
    });
    let listened = ended.map(|e| since(e, answered)).unwrap_or_default();
    let codec = f.codec.map(|l| l.encoding_name()).unwrap_or("no codec");
    let h = &f.heard;
    out.push(match (h.first_packet, &f.failure) {
        (Some((at, from)), _) => Check::new(
            "rtp",
            true,
            format!(
                "first packet {} after the answer, from {from}, {codec}, {} packets",
                ms(since(at, answered)),
                h.packets
            ),
        ),
        (None, Some(why)) => Check::new("rtp", false, why.clone()),
        (None, None) => Check::new(
            "rtp",
            false,
            format!("no RTP at {codec} in {} after the answer ({} other datagrams)", secs(listened), h.ignored),
        ),
    });

    let audio_secs = Duration::from_millis(h.samples / 8);
    out.push(match h.level_dbfs() {
        Some(level) if level > SILENCE_DBFS => {
            Check::new("audio", true, format!("{level:.1} dBFS RMS over {}", secs(audio_secs)))
        }
        Some(level) => Check::new(
            "audio",
            false,
            format!("RTP arrived but was silence ({level:.0} dBFS) for {}", secs(audio_secs)),
        ),
        None => Check::new("audio", false, "no audio came"),
    });

    out.push(match h.prompt_heard {
        Some(at) => {
            let speech =
                format!("speech {} after the answer ({} of speech in all)", ms(since(at, answered)), ms(frames(h)));
            let threshold = super::greeting::MATCH_THRESHOLD;
            match (f.greeting_expected, f.greeting_similarity) {
                (false, _) => Check::new(
                    "prompt heard",
                    true,
                    format!("{speech}; not identified as our greeting (no greeting to compare it with)"),
                ),
                (true, Some(s)) if s >= threshold => {
                    let which = f.greeting_label.as_deref().map(|l| format!(" {l}")).unwrap_or_default();
                    Check::new("prompt heard", true, format!("greeting matched{which} (similarity {s:.2}), {speech}"))
                }
                (true, Some(s)) => Check::new(
                    "prompt heard",
                    false,
                    format!(
                        "speech, but not our greeting (voicemail or a PBX menu?): similarity {s:.2} < {threshold}, {speech}"
                    ),
                ),
                (true, None) => Check::new(
                    "prompt heard",
                    false,
                    format!("speech, but too little of it to compare with our greeting, {speech}"),
                ),
            }
        }
        None => Check::new(
            "prompt heard",
            false,
            format!(
                "no prompt in {} after the answer ({} of speech by the VAD, {} needed)",
                secs(listened),
                ms(frames(h)),
                ms(super::media::FRAME * super::media::PROMPT_SPEECH_FRAMES)
            ),
        ),
    });

    if !f.keys.is_empty() {
        out.push(match (f.keys_sent, &f.keys_problem) {
            (Some(at), _) => Check::new(
                "keys sent",
                true,
                format!(
                    "{} as RFC 4733 (PT {}), done {} after the answer",
                    f.keys,
                    f.telephone_event.unwrap_or(101),
                    ms(since(at, answered))
                ),
            ),
            (None, Some(why)) => Check::new("keys sent", false, format!("{}: {why}", f.keys)),
            (None, None) => Check::new("keys sent", false, format!("{}: not sent (no prompt was heard)", f.keys)),
        });
    }

    out.push(match &f.hangup {
        Hangup::Ours { sent, response: Some((200..=299, reason, at)) } => {
            Check::new("hung up", true, format!("BYE → 200 {reason} in {}", ms(since(*at, *sent))))
        }
        Hangup::Ours { response: Some((code, reason, _)), .. } => {
            Check::new("hung up", false, format!("BYE answered {code} {reason}"))
        }
        Hangup::Ours { sent, response: None } => Check::new(
            "hung up",
            false,
            format!("no answer to our BYE in {}", secs(f.ended.map(|e| since(e, *sent)).unwrap_or_default())),
        ),
        Hangup::Theirs { at } => Check::new(
            "hung up",
            true,
            format!("the far end hung up {} after the answer (its BYE answered 200)", ms(since(*at, answered))),
        ),
        Hangup::Crossed { sent, at } => Check::new(
            "hung up",
            true,
            format!("both ends hung up at once: its BYE came {} after ours, answered 200", ms(since(*at, *sent))),
        ),
        Hangup::NotInCall => Check::new("hung up", false, "no dialog to hang up"),
    });
    out
}

fn frames(h: &super::media::Heard) -> Duration {
    super::media::FRAME * h.speech_frames
}
