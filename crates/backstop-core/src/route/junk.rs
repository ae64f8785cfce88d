//! Junk callers: the `[junk]` table (global, or per line), compiled into
//! [`JunkRules`], what is known of the caller when the INVITE arrives
//! ([`CallerFacts`]), the [`Verdict`] at the INVITE, and the lead's `junk`
//! field ([`Junk`]).
//!
//! Three rules look at the INVITE, always in this order: the blocklist
//! (`block`, always junk), withheld callers (`anonymous`), and numbers the
//! network failed to validate (`verstat_failed`). A fourth, `silent_after_secs`,
//! is the call's to apply: it adds [`JunkReason::Silent`] when nobody spoke.

use crate::intake::lead::number_of;
use crate::sip::identity::{Attestation, Verstat, claimed_attestation, verstat, without_user_params};
use crate::sip::message::{NameAddr, Request, split_name_addrs};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What happens to a call judged junk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JunkAction {
    /// 603 Decline, still a lead flagged junk.
    #[default]
    Reject,
    /// A short goodbye prompt, then BYE.
    Goodbye,
    /// The normal script, the lead flagged.
    Flag,
}

/// How one rule treats the callers it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RulePolicy {
    Allow,
    /// Judged junk: `action` applies.
    Junk,
    /// Marked junk in the lead, the call goes on as normal (no call.missed, so no text-back).
    Flag,
}

/// The `[junk]` table as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JunkConfig {
    /// What happens to a call a `junk` rule matched. Default `reject`.
    pub action: JunkAction,
    /// Blocked callers, judged junk. Each entry is one of:
    /// * a number (`"+1 555 0199"`): its digits are compared with the
    ///   caller's, and NANP's leading 1 is optional on either side (a 10-digit
    ///   entry matches `1` and those 10 digits, and an 11-digit `1...` entry
    ///   matches its last 10);
    /// * a prefix ending in `*` (`"1900*"`): digits only, and the caller's
    ///   number is tried with and without NANP's leading 1 as above, so
    ///   `"900*"` and `"1900*"` both block `+19005550100`. (For a prefix that
    ///   must not be read as NANP, say `+44` only, use a regex.);
    /// * a regex between slashes (`"/^\\+?1?555/"`), matched against the
    ///   number as the caller sent it (visual separators removed).
    pub block: Vec<String>,
    /// Withheld or anonymous callers (see [`CallerFacts::anonymous`]). Default `allow`.
    pub anonymous: RulePolicy,
    /// Numbers the network marked `TN-Validation-Failed`. Default `flag`.
    pub verstat_failed: RulePolicy,
    /// A call with no speech and no key for this long hears `goodbye_prompt`,
    /// ends, and is flagged silent. 0 = off. Default 30, at most 3600.
    pub silent_after_secs: u64,
    /// Played to junk calls with action `goodbye` and to silent callers. Default `goodbye`.
    pub goodbye_prompt: String,
}

impl Default for JunkConfig {
    fn default() -> JunkConfig {
        JunkConfig {
            action: JunkAction::Reject,
            block: Vec::new(),
            anonymous: RulePolicy::Allow,
            verstat_failed: RulePolicy::Flag,
            silent_after_secs: 30,
            goodbye_prompt: "goodbye".into(),
        }
    }
}

/// Why a call was marked junk, in the lead's `junk.reasons`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JunkReason {
    Blocklisted,
    Anonymous,
    VerstatFailed,
    Silent,
}

/// The lead's `junk`. Fields alphabetical (the lead's JSON keys are sorted by declaration order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Junk {
    pub is_junk: bool,
    pub reasons: Vec<JunkReason>,
}

/// What is known of the caller when the INVITE arrives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallerFacts {
    /// P-Asserted-Identity's number (the first of its name-addrs that has
    /// one), else From's: a dialable user part or tel number, as the lead
    /// reads it (`intake::lead::number_of`).
    pub number: Option<String>,
    /// The caller withheld their identity: the From user is `anonymous` (any
    /// case) or its host `anonymous.invalid` (RFC 3261, RFC 3323); or there is
    /// no number and either `Privacy` asks for `id` or `header` (RFC 3325,
    /// RFC 3323) or a display name (of From or P-Asserted-Identity) starts
    /// with Anonymous, Restricted, Unavailable, Withheld, Private or Unknown
    /// (any case). A number the network still asserted stays in `number`.
    pub anonymous: bool,
    pub verstat: Option<Verstat>,
    pub attestation: Option<Attestation>,
}

/// Display names carriers put on withheld callers (compared by first word).
const WITHHELD_NAMES: [&str; 6] = ["anonymous", "restricted", "unavailable", "withheld", "private", "unknown"];

impl CallerFacts {
    pub fn from_invite(req: &Request) -> CallerFacts {
        let asserted: Vec<NameAddr> = req
            .frame
            .get_all("P-Asserted-Identity")
            .flat_map(split_name_addrs)
            .filter_map(|v| NameAddr::parse(&v))
            .map(|n| without_user_params(&n))
            .collect();
        let from = without_user_params(&req.from);
        let number = asserted.iter().find_map(number_of).or_else(|| number_of(&from));
        let from_anonymous = from.user().is_some_and(|u| u.eq_ignore_ascii_case("anonymous"))
            || from.uri.host_with_port.host.to_string().eq_ignore_ascii_case("anonymous.invalid");
        let privacy = req.frame.get_all("Privacy").flat_map(|v| v.split([';', ','])).any(|p| {
            let p = p.trim();
            p.eq_ignore_ascii_case("id") || p.eq_ignore_ascii_case("header")
        });
        let withheld_name = asserted.iter().chain([&from]).filter_map(|n| n.display_name.as_deref()).any(|d| {
            let first =
                d.trim_matches(|c: char| c == '"' || c.is_whitespace()).split(|c: char| !c.is_alphanumeric()).next();
            first.is_some_and(|w| WITHHELD_NAMES.iter().any(|n| n.eq_ignore_ascii_case(w)))
        });
        CallerFacts {
            anonymous: from_anonymous || (number.is_none() && (privacy || withheld_name)),
            number,
            verstat: verstat(req),
            attestation: claimed_attestation(req),
        }
    }
}

/// The verdict at the INVITE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub junk: Junk,
    /// `Some(action)` when a rule judged the call junk; `Some(Flag)` when only
    /// flag rules matched; `None` when clean.
    pub action: Option<JunkAction>,
}

/// One `block` entry, compiled.
#[derive(Debug, Clone)]
enum Block {
    /// The digits of a number.
    Number(String),
    /// The digits before the `*`.
    Prefix(String),
    Pattern(Regex),
}

impl Block {
    fn parse(entry: &str) -> Result<Block, String> {
        let e = entry.trim();
        if e.is_empty() {
            return Err("an empty entry".into());
        }
        if let Some(rest) = e.strip_prefix('/') {
            return match rest.strip_suffix('/') {
                None => Err(format!("{e:?}: a regex is written between slashes, /like this/")),
                Some("") => Err(format!("{e:?}: an empty regex would match every caller")),
                Some(pattern) => Regex::new(pattern).map(Block::Pattern).map_err(|err| format!("{e:?}: {err}")),
            };
        }
        let (body, prefix) = match e.strip_suffix('*') {
            Some(body) => (body, true),
            None => (e, false),
        };
        if body.chars().any(|c| !(c.is_ascii_digit() || " +-.()".contains(c))) {
            return Err(format!("{e:?}: write a number, a prefix ending in '*', or a /regex/"));
        }
        let digits: String = body.chars().filter(char::is_ascii_digit).collect();
        match (digits.is_empty(), prefix) {
            (true, _) => Err(format!("{e:?} has no digits")),
            (false, true) => Ok(Block::Prefix(digits)),
            (false, false) => Ok(Block::Number(digits)),
        }
    }

    fn matches(&self, number: &str) -> bool {
        match self {
            Block::Number(digits) => nanp_forms(number).iter().any(|f| f == digits),
            Block::Prefix(digits) => nanp_forms(number).iter().any(|f| f.starts_with(digits.as_str())),
            Block::Pattern(re) => re.is_match(number),
        }
    }
}

/// A number's digits, and the same number with NANP's leading 1 dropped (11
/// digits starting with 1) or added (10 digits, not written with `+`).
fn nanp_forms(number: &str) -> Vec<String> {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    // With its 1 the number is the national form; without, the national form with its 1.
    let other = crate::route::line::nanp_national(number)
        .map(|national| if national == digits { format!("1{national}") } else { national });
    [Some(digits), other].into_iter().flatten().collect()
}

/// The `[junk]` table compiled: what [`JunkRules::judge`] applies at the
/// INVITE, and what the call applies to silent callers.
#[derive(Debug, Clone)]
pub struct JunkRules {
    action: JunkAction,
    block: Vec<Block>,
    anonymous: RulePolicy,
    verstat_failed: RulePolicy,
    /// `silent_after_secs`, `None` when off.
    pub silent_after: Option<Duration>,
    pub goodbye_prompt: String,
}

impl JunkRules {
    /// Problems as (key, message), key relative to the table: `block[2]` (bad
    /// regex, empty entry, no digits), `silent_after_secs` (> 3600),
    /// `goodbye_prompt` (empty).
    pub fn compile(cfg: &JunkConfig) -> Result<JunkRules, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut block = Vec::new();
        for (i, entry) in cfg.block.iter().enumerate() {
            match Block::parse(entry) {
                Ok(b) => block.push(b),
                Err(m) => problems.push((format!("block[{i}]"), m)),
            }
        }
        if cfg.silent_after_secs > 3600 {
            problems
                .push(("silent_after_secs".into(), format!("{} is more than an hour (3600)", cfg.silent_after_secs)));
        }
        if cfg.goodbye_prompt.trim().is_empty() {
            problems.push(("goodbye_prompt".into(), "name the prompt to play".into()));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(JunkRules {
            action: cfg.action,
            block,
            anonymous: cfg.anonymous,
            verstat_failed: cfg.verstat_failed,
            silent_after: (cfg.silent_after_secs > 0).then(|| Duration::from_secs(cfg.silent_after_secs)),
            goodbye_prompt: cfg.goodbye_prompt.trim().to_string(),
        })
    }

    /// The verdict on a caller: every rule that matched, in the order
    /// blocklisted, anonymous, verstat_failed. A junk rule's action wins over
    /// a flag rule's.
    pub fn judge(&self, facts: &CallerFacts) -> Verdict {
        let blocked = facts.number.as_deref().is_some_and(|n| self.block.iter().any(|b| b.matches(n)));
        let rules = [
            (JunkReason::Blocklisted, RulePolicy::Junk, blocked),
            (JunkReason::Anonymous, self.anonymous, facts.anonymous),
            (JunkReason::VerstatFailed, self.verstat_failed, facts.verstat == Some(Verstat::Failed)),
        ];
        let matched: Vec<_> =
            rules.into_iter().filter(|&(_, policy, hit)| hit && policy != RulePolicy::Allow).collect();
        let action = if matched.iter().any(|&(_, p, _)| p == RulePolicy::Junk) {
            Some(self.action)
        } else {
            (!matched.is_empty()).then_some(JunkAction::Flag)
        };
        let reasons: Vec<JunkReason> = matched.into_iter().map(|(r, _, _)| r).collect();
        Verdict { junk: Junk { is_junk: !reasons.is_empty(), reasons }, action }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::testing::invite;

    fn rules(cfg: JunkConfig) -> JunkRules {
        JunkRules::compile(&cfg).expect("valid")
    }

    fn blocking(entries: &[&str]) -> JunkRules {
        rules(JunkConfig { block: entries.iter().map(|e| e.to_string()).collect(), ..Default::default() })
    }

    fn caller(number: &str) -> CallerFacts {
        CallerFacts { number: Some(number.into()), ..Default::default() }
    }

    fn blocked(r: &JunkRules, number: &str) -> bool {
        r.judge(&caller(number)).junk.reasons.contains(&JunkReason::Blocklisted)
    }

    #[test]
    fn numbers_compare_digits_with_nanp_leading_one_optional() {
        let r = blocking(&["+1 (555) 012-3456", "5550199999", "+447700900123"]);
        for hit in [
            "+15550123456",
            "15550123456",
            "5550123456",
            "555-012-3456",
            "+15550199999",
            "5550199999",
            "+447700900123",
            "447700900123",
        ] {
            assert!(blocked(&r, hit), "{hit}");
        }
        for miss in ["+15550123457", "+25550199999", "5550123", "+4477009001234", "+5550123456"] {
            assert!(!blocked(&r, miss), "{miss}");
        }
    }

    #[test]
    fn prefixes_compare_digits_with_nanp_leading_one_optional() {
        let r = blocking(&["1900*", "+1 876*"]);
        for hit in ["+19005550100", "9005550100", "19005550100", "+18765550100", "8765550100"] {
            assert!(blocked(&r, hit), "{hit}");
        }
        for miss in ["+12125550100", "+9005550100", "+4419005550", "900555"] {
            assert!(!blocked(&r, miss), "{miss}");
        }
        // Without the 1 it matches the same NANP callers.
        assert!(blocked(&blocking(&["900*"]), "+19005550100"));
    }

    #[test]
    fn regexes_match_the_number_as_sent() {
        let r = blocking(&["/^\\+?1?555/"]);
        assert!(blocked(&r, "+15550100"));
        assert!(blocked(&r, "5550100"));
        assert!(!blocked(&r, "+12125550100"));
        // Only the number as sent: no NANP forms.
        assert!(!blocked(&blocking(&["/^1212/"]), "2125550100"));
        // No number, nothing to block.
        assert_eq!(r.judge(&CallerFacts::default()).action, None);
    }

    #[test]
    fn bad_entries_and_limits_are_reported_by_key() {
        let cfg = JunkConfig {
            block: ["+15550199", "", "/(/", "*", "call me", "/^1", "//", "1900*"].map(String::from).to_vec(),
            silent_after_secs: 3601,
            goodbye_prompt: " ".into(),
            ..Default::default()
        };
        let problems = JunkRules::compile(&cfg).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "block[1]",
                "block[2]",
                "block[3]",
                "block[4]",
                "block[5]",
                "block[6]",
                "silent_after_secs",
                "goodbye_prompt"
            ]
        );
        assert!(problems[2].1.contains("no digits"), "{problems:?}");
        let ok = rules(JunkConfig { silent_after_secs: 3600, ..Default::default() });
        assert_eq!(ok.silent_after, Some(Duration::from_secs(3600)));
        assert_eq!(rules(JunkConfig { silent_after_secs: 0, ..Default::default() }).silent_after, None);
    }

    #[test]
    fn the_defaults_flag_failed_verstat_and_allow_anonymous() {
        let r = rules(JunkConfig::default());
        assert_eq!((r.silent_after, r.goodbye_prompt.as_str()), (Some(Duration::from_secs(30)), "goodbye"));
        let clean = r.judge(&caller("+15550100"));
        assert_eq!(clean, Verdict { junk: Junk::default(), action: None });
        let anonymous = CallerFacts { anonymous: true, ..Default::default() };
        assert_eq!(r.judge(&anonymous).action, None);
        let failed = CallerFacts { verstat: Some(Verstat::Failed), ..caller("+15550100") };
        let v = r.judge(&failed);
        assert_eq!(v.junk, Junk { is_junk: true, reasons: vec![JunkReason::VerstatFailed] });
        assert_eq!(v.action, Some(JunkAction::Flag));
        for other in [Verstat::Passed, Verstat::NoValidation] {
            assert_eq!(r.judge(&CallerFacts { verstat: Some(other), ..Default::default() }).action, None);
        }
    }

    #[test]
    fn a_junk_rule_wins_over_flag_rules_and_reasons_keep_their_order() {
        let r = rules(JunkConfig {
            action: JunkAction::Goodbye,
            block: vec!["5550100".into()],
            anonymous: RulePolicy::Flag,
            verstat_failed: RulePolicy::Junk,
            ..Default::default()
        });
        let facts = CallerFacts { anonymous: true, verstat: Some(Verstat::Failed), ..caller("5550100") };
        let v = r.judge(&facts);
        assert_eq!(v.junk.reasons, [JunkReason::Blocklisted, JunkReason::Anonymous, JunkReason::VerstatFailed]);
        assert_eq!(v.action, Some(JunkAction::Goodbye));
        let only_flag = r.judge(&CallerFacts { anonymous: true, ..Default::default() });
        assert_eq!((only_flag.junk.reasons, only_flag.action), (vec![JunkReason::Anonymous], Some(JunkAction::Flag)));
        let only_junk = r.judge(&CallerFacts { verstat: Some(Verstat::Failed), ..Default::default() });
        assert_eq!(only_junk.action, Some(JunkAction::Goodbye));
        let allowed = rules(JunkConfig { verstat_failed: RulePolicy::Allow, ..Default::default() });
        assert_eq!(allowed.judge(&facts).action, None);
    }

    #[test]
    fn facts_take_the_asserted_number_then_the_from() {
        let r = invite()
            .headers(
                "P-Asserted-Identity: <sip:carrier@c.example>, <tel:+15551234567;verstat=TN-Validation-Failed>\r\n",
            )
            .read();
        let facts = CallerFacts::from_invite(&r);
        assert_eq!(facts.number.as_deref(), Some("+15551234567"));
        assert_eq!((facts.anonymous, facts.verstat, facts.attestation), (false, Some(Verstat::Failed), None));
        assert_eq!(CallerFacts::from_invite(&invite().read()).number.as_deref(), Some("+15551230001"));
        let r = invite().from("<sip:+15551230002;verstat=TN-Validation-Passed@127.0.0.1;user=phone>;tag=caller").read();
        assert_eq!(CallerFacts::from_invite(&r).number.as_deref(), Some("+15551230002"));
    }

    #[test]
    fn the_anonymous_forms() {
        let facts = |from: &str, headers: &str| CallerFacts::from_invite(&invite().from(from).headers(headers).read());
        let anonymous = |from: &str, headers: &str| facts(from, headers).anonymous;
        assert!(anonymous("\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=1", ""));
        assert!(anonymous("<sip:AnonYmous@carrier.example>;tag=1", ""));
        assert!(anonymous("<sip:caller@anonymous.invalid>;tag=1", ""));
        assert!(anonymous("<sip:anonymous;verstat=No-TN-Validation@anonymous.invalid>;tag=1", ""));
        // Still anonymous with an asserted number; the number is kept.
        let f = facts(
            "<sip:anonymous@anonymous.invalid>;tag=1",
            "P-Asserted-Identity: <tel:+15551234567>\r\nPrivacy: id\r\n",
        );
        assert!(f.anonymous && f.number.as_deref() == Some("+15551234567"));
        // Privacy id or header counts when no number is usable.
        assert!(anonymous("<sip:caller@carrier.example>;tag=1", "Privacy: header; id\r\n"));
        assert!(anonymous("<sip:caller@carrier.example>;tag=1", "Privacy: header\r\n"));
        assert!(!anonymous("<sip:caller@carrier.example>;tag=1", "Privacy: none\r\n"));
        assert!(!anonymous("<sip:+15551230001@carrier.example>;tag=1", "Privacy: id\r\n"));
        // A withheld display name counts when there is no number.
        for name in ["Restricted", "UNAVAILABLE", "Withheld Number", "private", "Unknown caller"] {
            assert!(anonymous(&format!("\"{name}\" <sip:caller@carrier.example>;tag=1"), ""), "{name}");
            assert!(!anonymous(&format!("\"{name}\" <sip:+15551230001@carrier.example>;tag=1"), ""), "{name}");
        }
        assert!(!anonymous("\"Jane\" <sip:jane@carrier.example>;tag=1", ""));
        assert!(!anonymous("\"Privateer\" <sip:jane@carrier.example>;tag=1", ""));
    }

    #[test]
    fn the_blocklist_applies_to_the_facts_of_an_invite() {
        let r = blocking(&["5551230001"]);
        let v = r.judge(&CallerFacts::from_invite(&invite().read()));
        assert_eq!(
            v,
            Verdict {
                junk: Junk { is_junk: true, reasons: vec![JunkReason::Blocklisted] },
                action: Some(JunkAction::Reject)
            }
        );
    }

    #[test]
    fn serde_names() {
        let junk = Junk {
            is_junk: true,
            reasons: vec![
                JunkReason::Blocklisted,
                JunkReason::VerstatFailed,
                JunkReason::Silent,
                JunkReason::Anonymous,
            ],
        };
        let json = serde_json::to_string(&junk).unwrap();
        assert_eq!(json, r#"{"is_junk":true,"reasons":["blocklisted","verstat_failed","silent","anonymous"]}"#);
        assert_eq!(serde_json::from_str::<Junk>(&json).unwrap(), junk);
        let actions = [JunkAction::Reject, JunkAction::Goodbye, JunkAction::Flag];
        assert_eq!(serde_json::to_string(&actions).unwrap(), r#"["reject","goodbye","flag"]"#);
        let policies: Vec<RulePolicy> = serde_json::from_str(r#"["allow","junk","flag"]"#).unwrap();
        assert_eq!(policies, [RulePolicy::Allow, RulePolicy::Junk, RulePolicy::Flag]);
        let verstats = [Verstat::Passed, Verstat::Failed, Verstat::NoValidation];
        assert_eq!(
            serde_json::to_string(&verstats).unwrap(),
            r#"["TN-Validation-Passed","TN-Validation-Failed","No-TN-Validation"]"#
        );
        assert_eq!(
            serde_json::to_string(&[Attestation::A, Attestation::B, Attestation::C]).unwrap(),
            r#"["A","B","C"]"#
        );
    }

    #[derive(Debug, Deserialize)]
    struct File {
        #[serde(default)]
        junk: JunkConfig,
    }

    #[test]
    fn a_junk_table_in_toml() {
        let f: File = toml::from_str(
            r#"
            [junk]
            action = "goodbye"
            block = ["+15550199", "1900*", "/^\\+?1?555/"]
            anonymous = "junk"
            verstat_failed = "allow"
            silent_after_secs = 0
            goodbye_prompt = "bye-now"
            "#,
        )
        .unwrap();
        let want = JunkConfig {
            action: JunkAction::Goodbye,
            block: vec!["+15550199".into(), "1900*".into(), "/^\\+?1?555/".into()],
            anonymous: RulePolicy::Junk,
            verstat_failed: RulePolicy::Allow,
            silent_after_secs: 0,
            goodbye_prompt: "bye-now".into(),
        };
        assert_eq!(f.junk, want);
        assert!(blocked(&rules(f.junk), "+15551234"));
        // An empty or missing table is the defaults; unknown keys and values are refused.
        assert_eq!(toml::from_str::<File>("[junk]\n").unwrap().junk, JunkConfig::default());
        assert_eq!(toml::from_str::<File>("").unwrap().junk, JunkConfig::default());
        assert!(toml::from_str::<File>("[junk]\nblocked = []\n").is_err());
        assert!(toml::from_str::<File>("[junk]\nanonymous = \"maybe\"\n").is_err());
    }
}
