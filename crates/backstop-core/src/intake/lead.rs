//! The lead: one JSON object per call, whatever happened on it.
//!
//! Who called (From, P-Asserted-Identity), who they meant to reach (To), why
//! the call came to us (Diversion, RFC 5806, or History-Info, RFC 7044), when,
//! how it ended and how far the script got. Every call makes one, even one
//! cancelled while ringing: that is still a missed call to return.
//!
//! The JSON is a public API: fields are added, never renamed, and
//! `tests/golden.rs` pins it byte for byte. Two rules keep it so:
//!
//! * Fields are declared in alphabetical order, here and in every part
//!   (`Caller`, `Forwarded`, `Answer`, ...): the keys have always gone out
//!   sorted, and declaring them so keeps every serialization of a lead the
//!   same, whether or not it passes through a `serde_json::Value`.
//! * A field added later reads as its default when absent (`Option`, or
//!   `#[serde(default)]`), so leads written before it still deserialize
//!   (`backstop leads tail`, the outbox after an upgrade).

use crate::call::transfer::Transfer;
use crate::intake::answer::Answer;
use crate::intake::forwarding::{Forwarded, forwarded};
use crate::route::junk::Junk;
use crate::route::schedule::ScheduleState;
use crate::sip::Transport;
use crate::sip::dialog::EndedBy;
use crate::sip::identity::{Attestation, Verstat, without_user_params};
use crate::sip::message::{NameAddr, Request, split_name_addrs};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::SystemTime;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Party {
    pub display_name: Option<String>,
    pub number: Option<String>,
    pub uri: String,
}

impl Party {
    fn from_name_addr(n: &NameAddr) -> Party {
        // Carriers put `;verstat=` in the user part, which the URI parser misreads: drop it first.
        let number = number_of(&without_user_params(n));
        Party { number, display_name: n.display_name.clone(), uri: n.uri.to_string() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Caller {
    /// The network-asserted identity (P-Asserted-Identity), when present.
    pub asserted: Option<Party>,
    /// STIR/SHAKEN: the attestation the Identity header's PASSporT claims
    /// (A, B or C). Claimed, not verified: nothing fetches the certificate.
    #[serde(default)]
    pub attestation: Option<Attestation>,
    pub display_name: Option<String>,
    pub number: Option<String>,
    pub uri: String,
    /// STIR/SHAKEN: the terminating network's verification result, the
    /// `verstat` parameter (`TN-Validation-Passed`, `TN-Validation-Failed`,
    /// `No-TN-Validation`) of P-Asserted-Identity or From.
    #[serde(default)]
    pub verstat: Option<Verstat>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Called {
    pub number: Option<String>,
    pub uri: String,
}

/// How the call went, the lead's `outcome`. On the wire it is one string:
/// `ringing`, `not_answered`, `hung_up_while_ringing`, `rejected`, `no_ack`,
/// `completed`, `hung_up_during_<step>`, `interrupted_during_<step>` or
/// `interrupted`; its `Display` writes that string and `FromStr` reads it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Still ringing: the lead as `call.missed` carries it.
    Ringing,
    /// The call ended before the script started.
    NotAnswered,
    /// The caller cancelled while it rang.
    HungUpWhileRinging,
    /// We refused the call before answering (an error).
    Rejected,
    /// We answered and no ACK came.
    NoAck,
    /// The script ran to its end.
    Completed,
    /// The caller hung up during this step.
    HungUpDuring(String),
    /// We hung up during this step, before the script ended (shutdown, maximum duration).
    InterruptedDuring(String),
    /// The agent itself stopped mid-call (killed, crashed); its next start closed the lead.
    Interrupted,
    /// A `transfer` step handed the caller to a target (REFER, then a 2xx NOTIFY).
    Transferred,
    /// Judged junk and sent away: 603 Decline, or a short goodbye and BYE.
    Declined,
    /// No speech and no key for `[junk] silent_after_secs`: a goodbye, then BYE.
    Silent,
}

const HUNG_UP_DURING: &str = "hung_up_during_";
const INTERRUPTED_DURING: &str = "interrupted_during_";

impl Outcome {
    /// The script step the call ended in, for `hung_up_during_<step>` and
    /// `interrupted_during_<step>`.
    pub fn step(&self) -> Option<&str> {
        match self {
            Outcome::HungUpDuring(step) | Outcome::InterruptedDuring(step) => Some(step),
            _ => None,
        }
    }

    /// The outcomes that carry no step: what `FromStr` reads by name.
    const FIXED: [Outcome; 10] = [
        Outcome::Ringing,
        Outcome::NotAnswered,
        Outcome::HungUpWhileRinging,
        Outcome::Rejected,
        Outcome::NoAck,
        Outcome::Completed,
        Outcome::Interrupted,
        Outcome::Transferred,
        Outcome::Declined,
        Outcome::Silent,
    ];

    /// The wire string in two parts, a name and the step (empty when it
    /// carries none): the only spelling of the names, and an exhaustive
    /// match, so a new outcome cannot go unnamed.
    fn parts(&self) -> (&'static str, &str) {
        match self {
            Outcome::Ringing => ("ringing", ""),
            Outcome::NotAnswered => ("not_answered", ""),
            Outcome::HungUpWhileRinging => ("hung_up_while_ringing", ""),
            Outcome::Rejected => ("rejected", ""),
            Outcome::NoAck => ("no_ack", ""),
            Outcome::Completed => ("completed", ""),
            Outcome::Interrupted => ("interrupted", ""),
            Outcome::Transferred => ("transferred", ""),
            Outcome::Declined => ("declined", ""),
            Outcome::Silent => ("silent", ""),
            Outcome::HungUpDuring(step) => (HUNG_UP_DURING, step),
            Outcome::InterruptedDuring(step) => (INTERRUPTED_DURING, step),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (name, step) = self.parts();
        write!(f, "{name}{step}")
    }
}

/// A string that is not a lead outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a lead outcome")]
pub struct UnknownOutcome(pub String);

impl std::str::FromStr for Outcome {
    type Err = UnknownOutcome;

    fn from_str(s: &str) -> Result<Outcome, UnknownOutcome> {
        if let Some(o) = Outcome::FIXED.iter().find(|o| o.parts() == (s, "")) {
            return Ok(o.clone());
        }
        let step = |prefix: &str| s.strip_prefix(prefix).filter(|step| !step.is_empty()).map(str::to_string);
        step(HUNG_UP_DURING)
            .map(Outcome::HungUpDuring)
            .or_else(|| step(INTERRUPTED_DURING).map(Outcome::InterruptedDuring))
            .ok_or_else(|| UnknownOutcome(s.to_string()))
    }
}

impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Outcome, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lead {
    pub answered_at: Option<String>,
    /// The script's answers by step name (see `intake::answer::Answer`).
    #[serde(default)]
    pub answers: BTreeMap<String, Answer>,
    pub call_id: String,
    /// The callback clock (the lead inbox): when the caller should have been
    /// called back, and whether and when they were. Absent for junk calls
    /// and on leads from before the clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<crate::callback::CallbackState>,
    pub called: Called,
    pub caller: Caller,
    /// The negotiated codec, once there was one.
    pub codec: Option<String>,
    /// Every key the caller pressed, in order (RFC 4733, SIP INFO or in-band).
    #[serde(default)]
    pub dtmf: String,
    pub duration_ms: Option<u64>,
    pub ended_at: Option<String>,
    #[serde(default)]
    pub ended_by: Option<EndedBy>,
    pub forwarded: Option<Forwarded>,
    pub id: String,
    /// Whether the caller is junk, and why (`[junk]`): a blocklisted,
    /// withheld or failed-verification number, or a silent line.
    #[serde(default)]
    pub junk: Junk,
    /// The `[[line]]` the call was for: `default` when none matched (or none are configured).
    #[serde(default = "default_line")]
    pub line: String,
    pub outcome: Outcome,
    pub received_at: String,
    /// The whole call's recording (the caller's side), when enabled; relative to the recordings directory.
    pub recording: Option<String>,
    /// A signed, expiring link to `recording` (`[http] public_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_url: Option<String>,
    /// The line's business hours when the call arrived: `open`, `closed` or
    /// `holiday`; absent when the line has no `[schedule]`.
    #[serde(default)]
    pub schedule: Option<ScheduleState>,
    pub schema_version: u32,
    /// The caller's address was shown to be real (a listed or loopback source,
    /// TCP, or it acknowledged our answer). A lead without it may come from a
    /// spoofed INVITE: do not text back to it blindly.
    #[serde(default)]
    pub source_verified: bool,
    /// The lead in one line, for a notification: what the caller said (once
    /// transcribed), chose and keyed, and the number to call back
    /// (`intake::summary`).
    #[serde(default)]
    pub summary: String,
    /// The instant text message to the caller (`[[text_back]]`): sent,
    /// skipped and why, or failed. Absent until the text-back sink has
    /// decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_back: Option<crate::textback::TextBack>,
    /// Voice answers still waiting for their transcripts: a `lead.updated`
    /// with them follows. Absent when none wait.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub transcripts_pending: u32,
    /// What a `transfer` step did: each target tried and how it went.
    #[serde(default)]
    pub transfer: Option<Transfer>,
    /// `udp` or `tcp`.
    pub transport: Transport,
    /// The `[transcribe] urgent_words` heard in the transcripts ("flood",
    /// "no heat"), in the configured order.
    #[serde(default)]
    pub urgent_words: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The name of the line a call gets when no `[[line]]` matches it.
pub const DEFAULT_LINE: &str = "default";

fn default_line() -> String {
    DEFAULT_LINE.to_string()
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl Lead {
    /// The script steps the call reached: each step with an answer, in any
    /// status, and the step it ended in (a caller who hangs up in silence
    /// while a question waits leaves no answer there, but reached it).
    /// Sorted by name, each once.
    pub fn steps_reached(&self) -> Vec<&str> {
        let mut steps: Vec<&str> = self.answers.keys().map(String::as_str).collect();
        if let Some(step) = self.outcome.step()
            && !self.answers.contains_key(step)
        {
            steps.push(step);
            steps.sort_unstable();
        }
        steps
    }

    /// The lead's caller/called/forwarded parts, from the INVITE.
    pub fn from_invite(id: String, invite: &Request, received_at: SystemTime, transport: Transport) -> Lead {
        let asserted = invite
            .frame
            .get("P-Asserted-Identity")
            .and_then(|v| split_name_addrs(v).into_iter().next())
            .and_then(|v| NameAddr::parse(&v))
            .map(|n| Party::from_name_addr(&n));
        let from = Party::from_name_addr(&invite.from);
        let to = Party::from_name_addr(&invite.to);
        Lead {
            schema_version: SCHEMA_VERSION,
            id,
            call_id: invite.call_id.clone(),
            caller: Caller {
                number: from.number,
                display_name: from.display_name,
                uri: from.uri,
                asserted,
                // STIR/SHAKEN is read once per call, with the junk rules' facts (`route::junk`).
                attestation: None,
                verstat: None,
            },
            called: Called { number: to.number, uri: to.uri },
            forwarded: forwarded(invite),
            received_at: rfc3339(received_at),
            answered_at: None,
            ended_at: None,
            duration_ms: None,
            ended_by: None,
            outcome: Outcome::NotAnswered,
            transport,
            codec: None,
            dtmf: String::new(),
            source_verified: false,
            answers: Default::default(),
            recording: None,
            recording_url: None,
            callback: None,
            text_back: None,
            junk: Junk::default(),
            line: default_line(),
            schedule: None,
            transfer: None,
            summary: String::new(),
            transcripts_pending: 0,
            urgent_words: Vec::new(),
        }
    }
}

/// The phone number in a URI: the user part (without visual separators) of a
/// sip/sips URI, or a tel: URI's number.
pub fn number_of(n: &NameAddr) -> Option<String> {
    let uri = n.uri.to_string();
    let user = match uri.strip_prefix("tel:") {
        Some(rest) => rest.to_string(),
        None => n.user()?,
    };
    let user = user.split(';').next().unwrap_or(&user).to_string();
    // Only a dialable user part is a number; `sip:alice@host` has none (its uri says who).
    let cleaned: String = user.chars().filter(|c| !matches!(c, '-' | '.' | '(' | ')' | ' ')).collect();
    let digits = cleaned.strip_prefix('+').unwrap_or(&cleaned);
    if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit() || c == '*' || c == '#') {
        Some(cleaned)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_caller_who_hangs_up_in_silence_reached_the_step_they_hung_up_in() {
        use crate::intake::answer::{AnswerKind, AnswerStatus};
        let mut lead = Lead::from_invite("id".into(), &invite(""), SystemTime::UNIX_EPOCH, Transport::Udp);
        lead.answers.insert("name".into(), Answer::new(AnswerKind::Voice, AnswerStatus::Answered, None, 1));
        lead.outcome = Outcome::HungUpDuring("need".into());
        assert_eq!(lead.steps_reached(), ["name", "need"]);
        lead.answers.insert("need".into(), Answer::new(AnswerKind::Voice, AnswerStatus::Partial, None, 1));
        assert_eq!(lead.steps_reached(), ["name", "need"], "once each");
        lead.outcome = Outcome::Completed;
        lead.answers.remove("need");
        assert_eq!(lead.steps_reached(), ["name"]);
        assert_eq!(Outcome::InterruptedDuring("zip".into()).step(), Some("zip"));
        assert_eq!(Outcome::HungUpWhileRinging.step(), None);
    }

    use super::*;
    use crate::sip::message::{Incoming, read_message};
    use crate::sip::testing;

    fn invite(extra: &str) -> Request {
        testing::invite()
            .from("\"Jane Doe\" <sip:+1 (555) 123-4567@carrier.example>;tag=9")
            .to("<sip:+15559870000@pbx.example>")
            .headers(extra)
            .read()
    }

    #[test]
    fn caller_called_and_pai() {
        let r = invite("P-Asserted-Identity: \"Jane\" <sip:+15551234567@carrier.example>, <tel:+15551234567>\r\n");
        let lead = Lead::from_invite("id".into(), &r, SystemTime::UNIX_EPOCH, Transport::Udp);
        assert_eq!(lead.caller.display_name.as_deref(), Some("Jane Doe"));
        assert_eq!(lead.called.number.as_deref(), Some("+15559870000"));
        assert_eq!(lead.caller.asserted.as_ref().unwrap().number.as_deref(), Some("+15551234567"));
        assert_eq!(lead.received_at, "1970-01-01T00:00:00.000Z");
        assert_eq!(lead.caller.number.as_deref(), Some("+15551234567"), "visual separators are dropped");
        assert_eq!(lead.forwarded, None);
        let json = serde_json::to_value(&lead).unwrap();
        assert_eq!(json["schema_version"], 1);
        assert_eq!(json["forwarded"], serde_json::Value::Null);
    }

    #[test]
    fn a_name_is_not_a_number() {
        let msg = "INVITE sip:b@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:alice@x>;tag=1\r\n\
            To: <tel:+1-555-987-0000>\r\nCall-ID: n1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let Incoming::Request(r) = read_message(msg.as_bytes(), "127.0.0.1:5060".parse().unwrap()) else { panic!() };
        let lead = Lead::from_invite("id".into(), &r, SystemTime::UNIX_EPOCH, Transport::Udp);
        assert_eq!(lead.caller.number, None);
        assert_eq!(lead.caller.uri, "sip:alice@x");
        assert_eq!(lead.called.number.as_deref(), Some("+15559870000"));
    }

    /// A lead with every field and part set: forwarded with a chain, an
    /// asserted caller, answers of each kind and status.
    fn full_lead(outcome: Outcome, ended_by: EndedBy) -> Lead {
        use crate::call::transfer::{TransferAttempt, TransferStatus};
        use crate::intake::answer::{AnswerKind, AnswerStatus};
        use crate::intake::forwarding::{ForwardingHeader, Hop};
        use crate::route::junk::JunkReason;
        let answer = |kind, status, value: Option<&str>| Answer {
            attempts: 2,
            from_caller_id: false,
            kind,
            label: None,
            recording: None,
            recording_url: None,
            speech_ms: None,
            status,
            transcript: None,
            value: value.map(Into::into),
        };
        let party = Party {
            display_name: Some("Jane".into()),
            number: Some("+15551234567".into()),
            uri: "tel:+15551234567".into(),
        };
        Lead {
            answered_at: Some("2026-11-29T12:00:01.000Z".into()),
            callback: Some(crate::callback::CallbackState {
                due_at: "2026-11-29T12:15:00.000Z".into(),
                handled_at: Some("2026-11-29T12:20:00.000Z".into()),
                handled_by: Some("sam".into()),
                note: Some("booked for 3 pm".into()),
                reminders: 1,
                status: crate::callback::LeadStatus::Handled,
                time_to_callback_secs: Some(1200),
            }),
            answers: [
                (
                    "cb",
                    Answer {
                        from_caller_id: true,
                        ..answer(AnswerKind::Digits, AnswerStatus::Answered, Some("+15551234567"))
                    },
                ),
                (
                    "menu",
                    Answer {
                        label: Some("emergency".into()),
                        ..answer(AnswerKind::Menu, AnswerStatus::Answered, Some("1"))
                    },
                ),
                (
                    "name",
                    Answer {
                        recording: Some("l-name.wav".into()),
                        recording_url: Some("https://leads.example/recordings/l-name.wav?exp=1&sig=ab".into()),
                        speech_ms: Some(980),
                        transcript: Some(crate::intake::transcript::Transcript {
                            confidence: Some(0.5),
                            delay_ms: 1200,
                            engine: "whisper.cpp".into(),
                            model: "ggml-tiny.en".into(),
                            ms: 400,
                            text: "Jane Doe".into(),
                        }),
                        ..answer(AnswerKind::Voice, AnswerStatus::Partial, None)
                    },
                ),
                ("zip", answer(AnswerKind::Digits, AnswerStatus::Invalid, Some("12"))),
                ("need", answer(AnswerKind::Voice, AnswerStatus::NoInput, None)),
            ]
            .into_iter()
            .map(|(k, a)| (k.to_string(), a))
            .collect(),
            call_id: "c1@127.0.0.1".into(),
            called: Called { number: Some("+15559870000".into()), uri: "sip:+15559870000@pbx.example".into() },
            caller: Caller {
                asserted: Some(party),
                attestation: Some(Attestation::B),
                display_name: Some("Jane Doe".into()),
                number: None,
                uri: "sip:jane@carrier.example".into(),
                verstat: Some(Verstat::Failed),
            },
            codec: Some("PCMA".into()),
            dtmf: "1#".into(),
            duration_ms: Some(29_020),
            ended_at: Some("2026-11-29T12:00:29.020Z".into()),
            ended_by: Some(ended_by),
            forwarded: Some(Forwarded {
                chain: vec![Hop {
                    counter: None,
                    index: Some("1".into()),
                    number: None,
                    reason: Some("no-answer".into()),
                    uri: "sip:bob@pbx.example".into(),
                }],
                counter: 1,
                from_number: None,
                original_called_number: Some("+15559870000".into()),
                reason: Some("no-answer".into()),
                source: ForwardingHeader::HistoryInfo,
            }),
            id: "l1".into(),
            junk: Junk { is_junk: true, reasons: vec![JunkReason::VerstatFailed, JunkReason::Silent] },
            line: "acme-plumbing".into(),
            outcome,
            received_at: "2026-11-29T12:00:00.000Z".into(),
            recording: Some("l1-call.wav".into()),
            recording_url: Some("https://leads.example/recordings/l1-call.wav?exp=1&sig=cd".into()),
            schedule: Some(ScheduleState::Holiday),
            schema_version: SCHEMA_VERSION,
            source_verified: true,
            summary: "JUNK · Jane Doe · EMERGENCY · 12 · call back +15551234567".into(),
            text_back: Some(crate::textback::TextBack {
                reason: None,
                sid: Some("SM0123456789abcdef0123456789abcdef".into()),
                status: crate::textback::TextBackStatus::Sent,
            }),
            transcripts_pending: 1,
            transfer: Some(Transfer {
                attempts: vec![
                    TransferAttempt { sip_code: Some(486), status: TransferStatus::Failed, target: "sip:a@x".into() },
                    TransferAttempt {
                        sip_code: Some(200),
                        status: TransferStatus::Transferred,
                        target: "tel:+1".into(),
                    },
                ],
                sip_code: Some(200),
                status: TransferStatus::Transferred,
                target: "tel:+1".into(),
            }),
            transport: Transport::Tcp,
            urgent_words: vec!["flood".into()],
        }
    }

    /// Every outcome, with its wire string.
    fn outcomes() -> Vec<(Outcome, &'static str)> {
        let mut v: Vec<(Outcome, &str)> = Outcome::FIXED.iter().map(|o| (o.clone(), o.parts().0)).collect();
        v.push((Outcome::HungUpDuring("callback_number".into()), "hung_up_during_callback_number"));
        v.push((Outcome::InterruptedDuring("greeting".into()), "interrupted_during_greeting"));
        v.push((Outcome::InterruptedDuring("ringing".into()), "interrupted_during_ringing"));
        v
    }

    #[test]
    fn outcomes_are_written_and_read_as_todays_strings() {
        let names: Vec<&str> = outcomes().iter().map(|(_, n)| *n).collect();
        for expected in
            ["ringing", "not_answered", "hung_up_while_ringing", "rejected", "no_ack", "completed", "interrupted"]
        {
            assert!(names.contains(&expected), "{expected}");
        }
        for (outcome, name) in outcomes() {
            assert_eq!(outcome.to_string(), name);
            assert_eq!(serde_json::to_value(&outcome).unwrap(), name);
            assert_eq!(serde_json::from_value::<Outcome>(name.into()).unwrap(), outcome);
            assert_eq!(name.parse::<Outcome>(), Ok(outcome));
        }
        for bad in ["", "hung_up_during_", "interrupted_during_", "Completed", "hung_up", "done"] {
            assert_eq!(bad.parse::<Outcome>(), Err(UnknownOutcome(bad.into())));
            assert!(serde_json::from_value::<Outcome>(bad.into()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_lead_serialized_then_deserialized_is_equal() {
        let ended_by = [EndedBy::Caller, EndedBy::Agent, EndedBy::Timeout, EndedBy::Cancel, EndedBy::Error];
        for ((outcome, _), by) in outcomes().into_iter().zip(ended_by.into_iter().cycle()) {
            let lead = full_lead(outcome, by);
            let text = serde_json::to_string(&lead).unwrap();
            assert_eq!(serde_json::from_str::<Lead>(&text).unwrap(), lead, "{text}");
        }
        // As `call.missed` carries it: nothing known yet but who called.
        let r = invite("");
        let mut lead = Lead::from_invite("id".into(), &r, SystemTime::UNIX_EPOCH, Transport::Udp);
        lead.outcome = Outcome::Ringing;
        let back: Lead = serde_json::from_value(serde_json::to_value(&lead).unwrap()).unwrap();
        assert_eq!(back, lead);
    }

    #[test]
    fn the_json_keys_are_sorted_at_every_level() {
        // serde_json's map (without `preserve_order`) is sorted: the reference order.
        assert_eq!(serde_json::to_string(&serde_json::json!({"b": 1, "a": 2})).unwrap(), r#"{"a":2,"b":1}"#);
        let lead = full_lead(Outcome::Completed, EndedBy::Agent);
        let direct = serde_json::to_string(&lead).unwrap();
        assert_eq!(direct, serde_json::to_string(&serde_json::to_value(&lead).unwrap()).unwrap());
        assert!(direct.starts_with(r#"{"answered_at":"#), "{direct}");
    }

    #[test]
    fn a_lead_written_before_later_fields_still_reads() {
        // No dtmf, source_verified or recording; a forwarded without chain or counter; an answer without from_caller_id.
        let old = r#"{"schema_version":1,"id":"l2","call_id":"c2","caller":{"number":"+15550002","display_name":"Pat","uri":"sip:x@y","asserted":null},"called":{"number":null,"uri":"sip:z@y"},"forwarded":{"from_number":"+15557654321","reason":"no-answer","source":"diversion"},"received_at":"2026-11-23T21:00:02.000Z","answered_at":null,"ended_at":null,"duration_ms":1500,"ended_by":"caller","outcome":"hung_up_during_greeting","transport":"udp","codec":null,"answers":{"zip":{"kind":"digits","status":"no_input","value":null,"attempts":3}}}"#;
        let lead: Lead = serde_json::from_str(old).unwrap();
        assert_eq!(lead.outcome, Outcome::HungUpDuring("greeting".into()));
        assert_eq!(lead.ended_by, Some(EndedBy::Caller));
        assert_eq!((lead.dtmf.as_str(), lead.source_verified, lead.recording.as_deref()), ("", false, None));
        let f = lead.forwarded.unwrap();
        assert_eq!((f.counter, f.chain.len(), f.original_called_number), (0, 0, None));
        assert!(!lead.answers["zip"].from_caller_id);
        // Before routing: no line, schedule, junk, transfer or STIR/SHAKEN facts.
        assert_eq!((lead.line.as_str(), lead.schedule, lead.transfer), (DEFAULT_LINE, None, None));
        assert_eq!(lead.junk, Junk::default());
        assert_eq!((lead.caller.verstat, lead.caller.attestation), (None, None));
    }
}
