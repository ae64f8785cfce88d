//! Name-addrs (From, To, Contact, P-Asserted-Identity, Record-Route
//! entries): read with rsipstack's typed parser, after our own check for
//! the invalid forms it lets through, and the tag we add to a To.

use rsipstack::sip::{Uri, typed};

/// A name-addr header (From, To, Contact, P-Asserted-Identity) parsed by rsipstack.
#[derive(Debug, Clone)]
pub struct NameAddr {
    pub raw: String,
    pub display_name: Option<String>,
    pub uri: Uri,
    pub tag: Option<String>,
}

impl NameAddr {
    pub fn parse(raw: &str) -> Option<NameAddr> {
        let parsed = typed::From::parse(raw).ok()?;
        let tag = parsed.tag().map(|t| t.to_string());
        Some(NameAddr {
            raw: raw.to_string(),
            display_name: parsed.display_name.filter(|d| !d.is_empty()),
            uri: parsed.uri,
            tag,
        })
    }

    /// The user part, which is the phone number on PSTN-facing calls.
    pub fn user(&self) -> Option<String> {
        self.uri.auth.as_ref().map(|a| a.user.clone())
    }
}

/// A From/To value with `;tag=` added when it has none: our side of a
/// dialog, in the To of our responses and the From of our requests.
pub(crate) fn with_tag(value: &str, tag: &str) -> String {
    if NameAddr::parse(value).is_some_and(|n| n.tag.is_none()) {
        format!("{value};tag={tag}")
    } else {
        value.to_string()
    }
}

/// Whether every quoted-string is closed, honouring backslash escapes.
fn quotes_balanced(value: &str) -> bool {
    let mut quoted = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                chars.next();
            }
            '"' => quoted = !quoted,
            _ => {}
        }
    }
    !quoted
}

/// rsipstack's name-addr parser accepts some invalid forms; reject the ones
/// RFC 4475 tests: empty parameters, a bare addr-spec carrying `?headers`,
/// spaces inside <>, an unquoted display name with special characters, and an
/// unbalanced quote.
pub(super) fn well_formed(value: &str) -> bool {
    let value = value.trim();
    if !quotes_balanced(value) {
        return false;
    }
    let (display, rest) = match value.find('<') {
        Some(i) => {
            let Some(close) = value[i..].find('>') else { return false };
            let inner = &value[i + 1..i + close];
            if inner.trim() != inner || inner.is_empty() {
                return false;
            }
            (&value[..i], &value[i + close + 1..])
        }
        None => {
            if value.contains('?') {
                return false;
            }
            ("", value.split_once(';').map(|(_, p)| p).unwrap_or(""))
        }
    };
    let display = display.trim();
    if !display.starts_with('"') && display.contains([',', ';', ':', '?', '@']) {
        return false;
    }
    let params = rest.trim().trim_start_matches(';');
    if rest.trim().starts_with(';') || value.find('<').is_none() {
        if !params.is_empty() && params.split(';').any(|p| p.trim().is_empty()) {
            return false;
        }
    } else if !rest.trim().is_empty() {
        return false;
    }
    true
}

/// Split a header value holding a comma-separated list of name-addrs
/// (commas inside <> or quotes do not split).
pub fn split_name_addrs(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut quoted) = (0i32, false);
    let mut cur = String::new();
    for c in value.chars() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_added_only_where_there_is_none() {
        assert_eq!(with_tag("<sip:a@b>", "x"), "<sip:a@b>;tag=x");
        assert_eq!(with_tag("<sip:a@b>;tag=y", "x"), "<sip:a@b>;tag=y");
    }

    #[test]
    fn lists_split_outside_brackets_and_quotes() {
        assert_eq!(
            split_name_addrs("\"A, B\" <sip:a@x;lr>, <sip:b@y?h=1,2>,"),
            ["\"A, B\" <sip:a@x;lr>", "<sip:b@y?h=1,2>"]
        );
    }

    #[test]
    fn the_forms_rsipstack_lets_through_are_refused() {
        assert!(well_formed("\"Bob\" <sip:b@x>;tag=1"));
        assert!(!well_formed("<sip:b@x>;tag=1;;x"));
        assert!(!well_formed("sip:b@x?subject=hi"));
        assert!(!well_formed("< sip:b@x>"));
        assert!(!well_formed("Bob@home <sip:b@x>"));
        assert!(!well_formed("\"Bob <sip:b@x>"));
    }
}
