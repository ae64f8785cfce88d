//! Where a key is written, from toml's own spans: the document is parsed
//! once, keeping the span of every key and value, and a problem is located
//! by walking that tree (a dotted key like `webhook[1].url` to its line, or
//! a byte offset from a deserialization error to the key written there).
//! The text is never scanned again by hand.

use std::ops::Range;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

/// One step of a dotted key: a table key, or an index into an array of tables.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// `webhook[1].url` → [Key(webhook), Index(1), Key(url)].
fn steps(dotted: &str) -> Vec<Step> {
    let mut out = Vec::new();
    for part in dotted.split('.') {
        let mut rest = part;
        if let Some(open) = rest.find('[') {
            out.push(Step::Key(rest[..open].to_string()));
            rest = &rest[open..];
            while let Some(close) = rest.find(']') {
                if let Ok(i) = rest[1..close].parse() {
                    out.push(Step::Index(i));
                }
                rest = &rest[close + 1..];
            }
        } else {
            out.push(Step::Key(rest.to_string()));
        }
    }
    out
}

fn dotted(path: &[Step]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            Step::Key(k) if s.is_empty() => s.push_str(k),
            Step::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Step::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// A TOML document with its spans.
pub(super) struct Document<'a> {
    text: &'a str,
    root: Spanned<DeTable<'a>>,
}

impl<'a> Document<'a> {
    /// Parse; on a syntax error, the error and whatever could be recovered.
    pub fn parse(text: &'a str) -> Result<Document<'a>, (toml::de::Error, Document<'a>)> {
        let (root, mut errors) = DeTable::parse_recoverable(text);
        let doc = Document { text, root };
        if errors.is_empty() { Ok(doc) } else { Err((errors.remove(0), doc)) }
    }

    pub fn root(&self) -> Spanned<DeTable<'a>> {
        self.root.clone()
    }

    /// The 1-based line of a byte offset.
    pub fn line_at(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())].matches('\n').count() + 1
    }

    /// The line a dotted key (`sip.listen`, `webhook[1].url`) is written on.
    pub fn line_of(&self, key: &str) -> Option<usize> {
        let steps = steps(key);
        let mut table = self.root.get_ref();
        let mut span = None;
        let mut i = 0;
        while i < steps.len() {
            let Step::Key(k) = &steps[i] else { return None };
            let (key, value) = table.iter().find(|(name, _)| name.get_ref().as_ref() == k.as_str())?;
            span = Some(key.span());
            i += 1;
            let mut value = value.get_ref();
            if let (Some(Step::Index(n)), DeValue::Array(items)) = (steps.get(i), value) {
                value = items.get(*n)?.get_ref();
                i += 1;
            }
            match value {
                DeValue::Table(t) => table = t,
                _ if i < steps.len() => return None,
                _ => {}
            }
        }
        span.map(|s| self.line_at(s.start))
    }

    /// The dotted key written where `offset` falls (in its key or its
    /// value), the deepest one; array elements count only in arrays of tables.
    pub fn key_at(&self, offset: usize) -> Option<String> {
        let mut path = Vec::new();
        find(self.root.get_ref(), offset, &mut path).then(|| dotted(&path))
    }

    /// Drop the entry at a dotted key, so that the rest can be read without it.
    pub fn remove(&mut self, key: &str) -> bool {
        let steps = steps(key);
        remove_in(self.root.get_mut(), &steps)
    }
}

fn contains(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

/// Depth-first: child spans are searched even when the container's span
/// does not cover them (a `[[table]]`'s span is its header).
fn find(table: &DeTable<'_>, offset: usize, path: &mut Vec<Step>) -> bool {
    for (key, value) in table.iter() {
        path.push(Step::Key(key.get_ref().to_string()));
        match value.get_ref() {
            DeValue::Table(t) => {
                if find(t, offset, path) {
                    return true;
                }
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let DeValue::Table(t) = item.get_ref() {
                        path.push(Step::Index(i));
                        if find(t, offset, path) || contains(&item.span(), offset) {
                            return true;
                        }
                        path.pop();
                    }
                }
            }
            _ => {}
        }
        if contains(&key.span(), offset) || contains(&value.span(), offset) {
            return true;
        }
        path.pop();
    }
    false
}

fn remove_in(table: &mut DeTable<'_>, steps: &[Step]) -> bool {
    let Some(Step::Key(k)) = steps.first() else { return false };
    if steps.len() == 1 {
        return table.remove(k.as_str()).is_some();
    }
    let Some(value) = table.iter_mut().find(|(name, _)| name.get_ref().as_ref() == k.as_str()).map(|(_, v)| v) else {
        return false;
    };
    match (value.get_mut(), &steps[1]) {
        (DeValue::Table(t), _) => remove_in(t, &steps[1..]),
        (DeValue::Array(items), Step::Index(i)) if steps.len() == 2 => {
            if *i >= items.len() {
                return false;
            }
            let kept: Vec<_> = items.iter().enumerate().filter(|(n, _)| n != i).map(|(_, v)| v.clone()).collect();
            *items = DeArray::new();
            for item in kept {
                items.push(item);
            }
            true
        }
        (DeValue::Array(items), Step::Index(i)) => match items.get_mut(*i).map(|v| v.get_mut()) {
            Some(DeValue::Table(t)) => remove_in(t, &steps[2..]),
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str =
        "[sip]\nlisten = \"x\"\n\n[[webhook]]\nurl = \"a\"\n\n[[webhook]]\nurl = \"b\"\nevents = [\"p\", \"q\"]\n";

    #[test]
    fn keys_to_lines_and_offsets_to_keys() {
        let doc = Document::parse(TEXT).ok().unwrap();
        assert_eq!(doc.line_of("sip.listen"), Some(2));
        assert_eq!(doc.line_of("webhook[1].url"), Some(8));
        assert_eq!(doc.line_of("webhook[0].url"), Some(5));
        assert_eq!(doc.line_of("webhook[2].url"), None);
        assert_eq!(doc.line_of("sip.nothing"), None);
        let at = |needle: &str| TEXT.find(needle).unwrap();
        assert_eq!(doc.key_at(at("\"x\"")).as_deref(), Some("sip.listen"));
        assert_eq!(doc.key_at(at("\"b\"")).as_deref(), Some("webhook[1].url"));
        assert_eq!(doc.key_at(at("\"q\"")).as_deref(), Some("webhook[1].events"), "value arrays are not indexed");
    }

    #[test]
    fn remove_drops_one_entry() {
        let mut doc = Document::parse(TEXT).ok().unwrap();
        assert!(doc.remove("webhook[1].events"));
        assert_eq!(doc.line_of("webhook[1].events"), None);
        assert_eq!(doc.line_of("webhook[1].url"), Some(8));
        assert!(doc.remove("sip"));
        assert_eq!(doc.line_of("sip.listen"), None);
        assert!(!doc.remove("sip"));
    }
}
