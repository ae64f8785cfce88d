//! The lead in one line, for a notification on a phone: "Maria Gonzalez ·
//! furnace stopped, baby at home · EMERGENCY · 02139 · call back +1
//! 555-321-7788". Built from the answers in the script's order: what the
//! caller said (once transcribed), the menu choices (an emergency in
//! capitals), the urgent words heard, the other keyed answers, and the number
//! to call back last. Without transcripts it still says what the keys and
//! menus said.
//!
//! Also here: the urgent words (`[transcribe] urgent_words`) looked for in
//! the transcripts, which set the lead's `urgent_words`.

use crate::intake::answer::{AnswerKind, AnswerStatus};
use crate::intake::lead::{Lead, Outcome};
use crate::intake::program::{Program, StepKind, Validator};
use crate::route::line::nanp_national;

/// Menu labels that mean "this is an emergency": written in capitals.
const EMERGENCY_LABELS: [&str; 3] = ["emergency", "urgent", "asap"];

/// The words that make a transcript urgent when none are configured.
pub const DEFAULT_URGENT_WORDS: [&str; 9] =
    ["flood", "burst", "no heat", "gas", "sparking", "smoke", "fire", "sewage", "carbon monoxide"];

/// The lead's `summary`.
pub fn summary(lead: &Lead, program: &Program) -> String {
    let mut said = Vec::new();
    let mut chose = Vec::new();
    let mut keyed = Vec::new();
    let mut call_back = None;
    let mut emergency = false;
    for step in &program.steps {
        let Some(answer) = lead.answers.get(&step.name) else { continue };
        if !matches!(answer.status, AnswerStatus::Answered | AnswerStatus::Partial) {
            continue;
        }
        match (&answer.kind, &step.kind) {
            (AnswerKind::Voice, _) => {
                if let Some(t) = answer.transcript.as_ref().map(|t| clean_sentence(&t.text)).filter(|t| !t.is_empty()) {
                    said.push(t);
                }
            }
            (AnswerKind::Menu, _) => {
                if let Some(label) = &answer.label {
                    let label = label.replace('_', " ");
                    if EMERGENCY_LABELS.iter().any(|e| label.eq_ignore_ascii_case(e)) {
                        emergency = true;
                        chose.push(label.to_uppercase());
                    } else {
                        chose.push(label);
                    }
                }
            }
            (AnswerKind::Digits, StepKind::Digits { validator: Validator::Phone, .. }) => {
                call_back = call_back.or(answer.value.as_deref().map(phone));
            }
            (AnswerKind::Digits, _) => keyed.extend(answer.value.clone()),
        }
    }
    let urgent =
        (!lead.urgent_words.is_empty() && !emergency).then(|| format!("URGENT: {}", lead.urgent_words.join(", ")));
    let call_back = call_back.or_else(|| lead.caller.number.as_deref().map(phone));
    let mut parts = Vec::new();
    if lead.junk.is_junk {
        parts.push("JUNK".to_string());
    }
    if said.is_empty() && chose.is_empty() && keyed.is_empty() {
        parts.push(if lead.outcome == Outcome::Transferred { "transferred" } else { "missed call" }.to_string());
    }
    parts.extend(said);
    parts.extend(chose);
    parts.extend(urgent);
    parts.extend(keyed);
    if lead.outcome == Outcome::Transferred && parts.len() > 1 {
        parts.push("transferred".into());
    }
    parts.extend(call_back.map(|n| format!("call back {n}")));
    parts.join(" · ")
}

/// A transcript as a phrase: no trailing full stop, no surrounding space.
fn clean_sentence(text: &str) -> String {
    text.trim().trim_end_matches(['.', '!', '?', ',']).trim().to_string()
}

/// A North American number as `+1 555-321-7788`; anything else as it came.
fn phone(number: &str) -> String {
    match nanp_national(number) {
        Some(n) => format!("+1 {}-{}-{}", &n[..3], &n[3..6], &n[6..]),
        None => number.to_string(),
    }
}

/// The urgent words and phrases, ready to look for.
#[derive(Debug, Clone)]
pub struct UrgentWords {
    /// Each as configured, and as the words it is made of, lowercased.
    phrases: Vec<(String, Vec<String>)>,
}

impl UrgentWords {
    pub fn new<S: AsRef<str>>(words: impl IntoIterator<Item = S>) -> UrgentWords {
        let phrases = words
            .into_iter()
            .map(|w| (w.as_ref().trim().to_string(), tokens(w.as_ref())))
            .filter(|(_, t)| !t.is_empty())
            .collect();
        UrgentWords { phrases }
    }

    /// The configured words heard in any of the lead's transcripts, in the
    /// configured order, each once. A word matches with a common ending
    /// (`flood` in "flooding", `burst` in "bursts"), a phrase word by word.
    pub fn find(&self, lead: &Lead) -> Vec<String> {
        let heard: Vec<Vec<String>> =
            lead.answers.values().filter_map(|a| a.transcript.as_ref()).map(|t| tokens(&t.text)).collect();
        self.phrases
            .iter()
            .filter(|(_, phrase)| heard.iter().any(|said| contains_phrase(said, phrase)))
            .map(|(w, _)| w.clone())
            .collect()
    }
}

fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'').filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

fn contains_phrase(said: &[String], phrase: &[String]) -> bool {
    said.windows(phrase.len()).any(|w| w.iter().zip(phrase).all(|(s, p)| word_matches(s, p)))
}

fn word_matches(said: &str, word: &str) -> bool {
    const ENDINGS: [&str; 6] = ["", "s", "es", "ed", "ing", "y"];
    said.strip_prefix(word).is_some_and(|rest| ENDINGS.contains(&rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::answer::Answer;
    use crate::intake::program::default_steps;
    use crate::intake::transcript::Transcript;
    use crate::sip::Transport;
    use crate::sip::testing;

    fn default_program() -> Program {
        Program::compile(&default_steps()).unwrap()
    }

    fn lead() -> Lead {
        let invite = testing::invite().from("<sip:+15553217788@carrier.example>;tag=1").read();
        Lead::from_invite("id".into(), &invite, std::time::SystemTime::UNIX_EPOCH, Transport::Udp)
    }

    fn voice(text: Option<&str>) -> Answer {
        let mut a = Answer::new(AnswerKind::Voice, AnswerStatus::Answered, None, 1);
        a.recording = Some("r.wav".into());
        a.transcript = text.map(|t| Transcript {
            confidence: None,
            delay_ms: 0,
            engine: "e".into(),
            model: "m".into(),
            ms: 0,
            text: t.into(),
        });
        a
    }

    fn keyed(kind: AnswerKind, value: &str, label: Option<&str>) -> Answer {
        let mut a = Answer::new(kind, AnswerStatus::Answered, Some(value.into()), 1);
        a.label = label.map(str::to_string);
        a
    }

    fn full_lead() -> Lead {
        let mut l = lead();
        l.outcome = Outcome::Completed;
        l.answers.insert("name".into(), voice(Some(" Maria Gonzalez.")));
        l.answers.insert("need".into(), voice(Some("My furnace stopped, and there's a baby at home.")));
        l.answers.insert("callback_number".into(), keyed(AnswerKind::Digits, "5553217789", None));
        l.answers.insert("zip".into(), keyed(AnswerKind::Digits, "02139", None));
        l.answers.insert("urgency".into(), keyed(AnswerKind::Menu, "1", Some("emergency")));
        l
    }

    #[test]
    fn the_default_script_reads_as_one_line() {
        assert_eq!(
            summary(&full_lead(), &default_program()),
            "Maria Gonzalez · My furnace stopped, and there's a baby at home · EMERGENCY · 02139 · call back +1 555-321-7789"
        );
    }

    #[test]
    fn without_transcripts_the_keys_and_labels_still_speak() {
        let mut l = full_lead();
        for step in ["name", "need"] {
            l.answers.insert(step.into(), voice(None));
        }
        l.answers.insert("urgency".into(), keyed(AnswerKind::Menu, "2", Some("this_week")));
        assert_eq!(summary(&l, &default_program()), "this week · 02139 · call back +1 555-321-7789");
    }

    #[test]
    fn a_missed_call_says_so_and_who_to_call_back() {
        let mut l = lead();
        l.outcome = Outcome::HungUpWhileRinging;
        assert_eq!(summary(&l, &default_program()), "missed call · call back +1 555-321-7788");
        l.junk.is_junk = true;
        assert_eq!(summary(&l, &default_program()), "JUNK · missed call · call back +1 555-321-7788");
    }

    #[test]
    fn urgent_words_are_found_with_their_endings_and_phrases_word_by_word() {
        let words = UrgentWords::new(DEFAULT_URGENT_WORDS);
        let mut l = full_lead();
        l.answers.insert("need".into(), voice(Some("The basement is FLOODING and we have no heat.")));
        assert_eq!(words.find(&l), ["flood", "no heat"]);
        // Not inside another word, nor across a phrase's gap.
        l.answers.insert("need".into(), voice(Some("The gasket on the heater, no, the heat pump")));
        assert!(words.find(&l).is_empty(), "{:?}", words.find(&l));
        // Only transcripts are read: a menu label is not heard speech.
        let mut menu_only = lead();
        menu_only.answers.insert("urgency".into(), keyed(AnswerKind::Menu, "1", Some("fire")));
        assert!(words.find(&menu_only).is_empty());
    }

    #[test]
    fn urgent_words_show_in_the_summary_unless_an_emergency_was_chosen() {
        let mut l = full_lead();
        l.urgent_words = vec!["gas".into()];
        assert!(!summary(&l, &default_program()).contains("URGENT"), "EMERGENCY already says it");
        l.answers.insert("urgency".into(), keyed(AnswerKind::Menu, "3", Some("quote")));
        let s = summary(&l, &default_program());
        assert!(s.contains("quote · URGENT: gas · 02139"), "{s}");
    }

    #[test]
    fn numbers_outside_north_america_are_left_as_they_came() {
        assert_eq!(phone("+442079460000"), "+442079460000");
        assert_eq!(phone("15553217788"), "+1 555-321-7788");
        assert_eq!(phone("+1 (555) 321-7788"), "+1 555-321-7788");
    }
}
