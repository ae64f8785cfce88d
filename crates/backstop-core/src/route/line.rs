//! Which line a call is for. One agent often answers for several
//! businesses (an integrator's or a carrier's): each `[[line]]` names the
//! numbers and accounts it answers, and brings its own script, prompts,
//! schedule, junk rules and webhooks. Lines are tried in order; a call no
//! line claims goes to the default line (the top-level config), so a config
//! with no `[[line]]` routes every call there, as before lines existed.
//!
//! This module owns the matching and the config-time findings about it
//! (overlaps, lines nothing can reach). A [`Line`] holds what a call on it
//! runs; the runtime builds them from the config.

use crate::intake::lead::{DEFAULT_LINE, number_of};
use crate::intake::program::Program;
use crate::media::prompt::PromptSet;
use crate::route::junk::JunkRules;
use crate::route::schedule::Schedule;
use crate::sip::message::{NameAddr, Request};
use serde::Deserialize;
use std::sync::Arc;

/// A line's `match` table, as written. A call matches when any value of
/// any key matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LineMatch {
    /// The number called: the Request-URI's user part when a line claims
    /// it, else the To's. Compared digits only, a North American number with
    /// or without its leading 1: `+1 (555) 010-0100`, `15550100100` and
    /// `5550100100` are one number.
    pub called: Vec<String>,
    /// The number first called, before forwarding (Diversion or History-Info).
    pub original_called: Vec<String>,
    /// The `[[register]]` account the call came through, `username@domain`.
    pub account: Vec<String>,
}

impl LineMatch {
    pub fn is_empty(&self) -> bool {
        self.called.is_empty() && self.original_called.is_empty() && self.account.is_empty()
    }

    /// Whether the call is this line's, `called` being the number it was called on.
    fn matches(&self, called: Option<&str>, call: &CallFacts) -> bool {
        let number = |wanted: &[String], got: Option<&str>| {
            got.map(digits).is_some_and(|g| !g.is_empty() && wanted.iter().any(|w| digits(w) == g))
        };
        number(&self.called, called)
            || number(&self.original_called, call.original_called.as_deref())
            || call.account.as_deref().is_some_and(|a| self.account.iter().any(|w| w.eq_ignore_ascii_case(a)))
    }

    fn claims_called(&self, called: &str) -> bool {
        let c = digits(called);
        !c.is_empty() && self.called.iter().any(|w| digits(w) == c)
    }

    /// Every value as a comparable key: (what, normalized value, as written).
    fn keys(&self) -> impl Iterator<Item = (&'static str, String, &str)> + '_ {
        let called = self.called.iter().map(|v| ("called", digits(v), v.as_str()));
        let original = self.original_called.iter().map(|v| ("original_called", digits(v), v.as_str()));
        let account = self.account.iter().map(|v| ("account", v.to_ascii_lowercase(), v.as_str()));
        called.chain(original).chain(account)
    }
}

/// A number's digits, the only part compared, without the North American
/// country code: `+1 555 010 0100` and `555-010-0100` are the same line.
fn digits(s: &str) -> String {
    nanp_national(s).unwrap_or_else(|| s.chars().filter(char::is_ascii_digit).collect())
}

/// A North American number's ten national digits: eleven digits starting
/// with 1, or ten not written as an international (`+`) number; `None` for
/// anything else. The one reading of NANP numbers, for line matches, the
/// junk rules and the lead's summary.
pub fn nanp_national(number: &str) -> Option<String> {
    let d: String = number.chars().filter(char::is_ascii_digit).collect();
    match d.len() {
        11 if d.starts_with('1') => Some(d[1..].to_string()),
        10 if !number.trim_start().starts_with('+') => Some(d),
        _ => None,
    }
}

/// What a call says about where it was meant to go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallFacts {
    /// The Request-URI's number.
    pub called: Option<String>,
    /// The To's number: the called number when no line claims the Request-URI's
    /// (through a registration, the Request-URI names the account, which may be numeric).
    pub called_to: Option<String>,
    pub original_called: Option<String>,
    /// `username@domain` of the account it came through, when the runtime knows it.
    pub account: Option<String>,
}

impl CallFacts {
    /// The called and originally-called numbers from an INVITE; the account
    /// is the runtime's to add (it knows what it registered).
    pub fn from_invite(invite: &Request) -> CallFacts {
        let ruri_user = NameAddr { raw: String::new(), display_name: None, uri: invite.uri.clone(), tag: None };
        let original_called =
            crate::intake::forwarding::forwarded(invite).and_then(|f| f.original_called_number.or(f.from_number));
        CallFacts { called: number_of(&ruri_user), called_to: number_of(&invite.to), original_called, account: None }
    }
}

/// What a call on one line runs.
pub struct Line {
    pub name: String,
    pub matcher: LineMatch,
    pub program: Arc<Program>,
    pub prompts: Arc<PromptSet>,
    pub schedule: Option<Arc<Schedule>>,
    pub junk: Arc<JunkRules>,
}

impl std::fmt::Debug for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Line").field("name", &self.name).field("matcher", &self.matcher).finish_non_exhaustive()
    }
}

/// The lines in order, and the default.
#[derive(Debug, Clone)]
pub struct Lines {
    lines: Vec<Arc<Line>>,
    default: Arc<Line>,
}

impl Lines {
    /// `default` is named [`DEFAULT_LINE`] whatever it was called.
    pub fn new(lines: Vec<Arc<Line>>, default: Line) -> Lines {
        Lines { lines, default: Arc::new(Line { name: DEFAULT_LINE.into(), ..default }) }
    }

    /// The first line whose match claims the call, else the default. The
    /// called number is the Request-URI's when some line claims it, else the To's.
    pub fn route(&self, call: &CallFacts) -> &Arc<Line> {
        let ruri = call.called.as_deref().filter(|n| self.lines.iter().any(|l| l.matcher.claims_called(n)));
        let called = ruri.or(call.called_to.as_deref());
        self.lines.iter().find(|l| l.matcher.matches(called, call)).unwrap_or(&self.default)
    }

    pub fn default_line(&self) -> &Arc<Line> {
        &self.default
    }

    /// The line of this name, as a lead names it; the default for any other name.
    pub fn named(&self, name: &str) -> &Arc<Line> {
        self.lines.iter().find(|l| l.name == name).unwrap_or(&self.default)
    }

    /// Every line, the default last.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Line>> {
        self.lines.iter().chain(std::iter::once(&self.default))
    }
}

/// Something `backstop check` should say about the lines' matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A line has no match values: no call can reach it.
    NoMatch { line: String },
    /// `line` claims a value an earlier line already claims: calls with it
    /// go to `earlier`.
    Overlap { line: String, earlier: String, what: &'static str, value: String },
    /// Every value of `line` is claimed by earlier lines: no call reaches it.
    Unreachable { line: String },
    /// An `account` value names no `[[register]]` account.
    UnknownAccount { line: String, account: String },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::NoMatch { line } => write!(f, "line {line:?} has no match values: no call can reach it"),
            Finding::Overlap { line, earlier, what, value } => {
                write!(
                    f,
                    "line {line:?}: {what} {value:?} is also matched by the earlier line {earlier:?}, which takes those calls"
                )
            }
            Finding::Unreachable { line } => {
                write!(f, "line {line:?} is unreachable: earlier lines match everything it matches")
            }
            Finding::UnknownAccount { line, account } => {
                write!(f, "line {line:?}: account {account:?} is not a [[register]] account (username@domain)")
            }
        }
    }
}

/// Check the lines' matches, in order, against the accounts that exist.
pub fn findings(lines: &[(&str, &LineMatch)], accounts: &[String]) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut claimed: Vec<(&'static str, String, &str)> = Vec::new();
    for (name, m) in lines {
        let line = name.to_string();
        if m.is_empty() {
            out.push(Finding::NoMatch { line });
            continue;
        }
        for a in &m.account {
            if !accounts.iter().any(|x| x.eq_ignore_ascii_case(a)) {
                out.push(Finding::UnknownAccount { line: line.clone(), account: a.clone() });
            }
        }
        let mut reachable = false;
        for (what, value, written) in m.keys() {
            match claimed.iter().find(|(w, v, _)| *w == what && *v == value) {
                Some((_, _, earlier)) => out.push(Finding::Overlap {
                    line: line.clone(),
                    earlier: earlier.to_string(),
                    what,
                    value: written.to_string(),
                }),
                None => {
                    let known = what != "account" || accounts.iter().any(|x| x.eq_ignore_ascii_case(&value));
                    reachable |= known && (what == "account" || !value.is_empty());
                    claimed.push((what, value, name));
                }
            }
        }
        if !reachable {
            out.push(Finding::Unreachable { line });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Incoming, read_message};

    /// An INVITE to `ruri`, To `to`, with more header lines.
    fn invite(ruri: &str, to: &str, extra: &str) -> Request {
        let text = format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nFrom: <sip:+15551230001@127.0.0.1>;tag=c\r\n\
             To: {to}\r\nCall-ID: l1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        let Incoming::Request(r) = read_message(text.as_bytes(), "127.0.0.1:5070".parse().unwrap()) else { panic!() };
        *r
    }

    fn m(called: &[&str], original: &[&str], account: &[&str]) -> LineMatch {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        LineMatch { called: v(called), original_called: v(original), account: v(account) }
    }

    fn line(name: &str, matcher: LineMatch) -> Line {
        Line {
            name: name.into(),
            matcher,
            program: Arc::new(Program::from_toml("[[step]]\nname = \"h\"\nkind = \"hangup\"\n").unwrap()),
            prompts: Arc::new(PromptSet::default()),
            schedule: None,
            junk: Arc::new(JunkRules::compile(&Default::default()).unwrap()),
        }
    }

    fn lines() -> Lines {
        Lines::new(
            vec![
                Arc::new(line("acme", m(&["+1 (555) 010-0100"], &[], &[]))),
                Arc::new(line("bolt", m(&[], &["+15550100200"], &["overflow@pbx.example"]))),
            ],
            line("ignored", LineMatch::default()),
        )
    }

    #[test]
    fn the_called_number_from_the_request_uri_then_to_picks_the_line() {
        let ruri = invite("sip:15550100100@10.0.0.1", "<sip:frontdesk@pbx.example>", "");
        assert_eq!(lines().route(&CallFacts::from_invite(&ruri)).name, "acme");
        let to = invite("sip:backstop@10.0.0.1", "<sip:+15550100100@pbx.example>", "");
        assert_eq!(lines().route(&CallFacts::from_invite(&to)).name, "acme");
        let neither = invite("sip:backstop@10.0.0.1", "<sip:+15559990000@pbx.example>", "");
        assert_eq!(lines().route(&CallFacts::from_invite(&neither)).name, DEFAULT_LINE);
        // Through a registration whose username is numeric, the Request-URI names the
        // account, which no line claims: the number dialled is the To's.
        let numeric_account = invite("sip:17775551234@10.0.0.1", "<sip:5550100100@pbx.example>", "");
        assert_eq!(lines().route(&CallFacts::from_invite(&numeric_account)).name, "acme", "NANP without the 1");
    }

    #[test]
    fn the_original_called_number_and_the_account_pick_the_line() {
        let diverted = invite(
            "sip:overflow@10.0.0.1",
            "<sip:overflow@pbx.example>",
            "Diversion: <sip:+15550100200@pbx.example>;reason=no-answer\r\n",
        );
        assert_eq!(lines().route(&CallFacts::from_invite(&diverted)).name, "bolt");
        let facts = CallFacts { account: Some("Overflow@PBX.example".into()), ..Default::default() };
        assert_eq!(lines().route(&facts).name, "bolt");
        assert_eq!(lines().route(&CallFacts::default()).name, DEFAULT_LINE);
        assert_eq!(lines().all().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["acme", "bolt", "default"]);
    }

    #[test]
    fn check_reports_overlaps_unreachable_lines_and_unknown_accounts() {
        let a = m(&["+15550100100"], &[], &["sales@pbx"]);
        let b = m(&["1-555-010-0100", "+15550100999"], &[], &[]);
        let c = m(&["15550100999"], &[], &[]);
        let d = LineMatch::default();
        let e = m(&[], &[], &["nobody@pbx"]);
        let accounts = vec!["sales@pbx".to_string()];
        let f = findings(&[("a", &a), ("b", &b), ("c", &c), ("d", &d), ("e", &e)], &accounts);
        let text: Vec<String> = f.iter().map(ToString::to_string).collect();
        assert_eq!(
            f,
            vec![
                Finding::Overlap {
                    line: "b".into(),
                    earlier: "a".into(),
                    what: "called",
                    value: "1-555-010-0100".into()
                },
                Finding::Overlap { line: "c".into(), earlier: "b".into(), what: "called", value: "15550100999".into() },
                Finding::Unreachable { line: "c".into() },
                Finding::NoMatch { line: "d".into() },
                Finding::UnknownAccount { line: "e".into(), account: "nobody@pbx".into() },
                Finding::Unreachable { line: "e".into() },
            ],
            "{text:#?}"
        );
        assert!(findings(&[("a", &a)], &accounts).is_empty());
    }
}
