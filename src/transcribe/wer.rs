//! Word error rate, for the transcription bench and tests.
//!
//! Both texts are [`normalize`]d to words first, then compared by the
//! Levenshtein distance over words: the fewest substitutions, insertions
//! and deletions that turn the reference into the hypothesis. The rate is
//! those errors over the reference's word count, so an engine that invents
//! words can score over 100 %. A corpus's rate is the sum of its errors over
//! the sum of its words (add [`Wer`]s up, do not average rates).

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign};

/// Errors and reference words of one comparison, or of many added up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wer {
    /// Substitutions + insertions + deletions.
    pub errors: usize,
    /// Words in the (normalized) reference.
    pub words: usize,
}

impl Wer {
    /// `errors / words`; 1 = 100 %. An empty reference counts as one word,
    /// so its rate is the number of words the hypothesis invented (0 when
    /// both are empty).
    pub fn rate(&self) -> f64 {
        self.errors as f64 / self.words.max(1) as f64
    }
}

impl Add for Wer {
    type Output = Wer;
    fn add(self, o: Wer) -> Wer {
        Wer { errors: self.errors + o.errors, words: self.words + o.words }
    }
}

impl AddAssign for Wer {
    fn add_assign(&mut self, o: Wer) {
        *self = *self + o;
    }
}

impl Sum for Wer {
    fn sum<I: Iterator<Item = Wer>>(it: I) -> Wer {
        it.fold(Wer::default(), Add::add)
    }
}

impl fmt::Display for Wer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1} % ({}/{})", 100.0 * self.rate(), self.errors, self.words)
    }
}

/// The word error of `hypothesis` against `reference`, both normalized.
pub fn wer(reference: &str, hypothesis: &str) -> Wer {
    let r = normalize(reference);
    let h = normalize(hypothesis);
    Wer { errors: edit_distance(&r, &h), words: r.len() }
}

/// Levenshtein distance over words, in one row of memory.
fn edit_distance(r: &[String], h: &[String]) -> usize {
    // row[j]: distance between the reference so far and h[..j].
    let mut row: Vec<usize> = (0..=h.len()).collect();
    for rw in r {
        let mut diag = row[0]; // distance(r[..i-1], h[..j-1])
        row[0] += 1;
        for (j, hw) in h.iter().enumerate() {
            let sub = diag + usize::from(rw != hw);
            let del = row[j + 1] + 1; // reference word dropped
            let ins = row[j] + 1; // hypothesis word invented
            diag = row[j + 1];
            row[j + 1] = sub.min(del).min(ins);
        }
    }
    row[h.len()]
}

const UNITS: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 8] = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"];

/// Words as the comparison sees them:
/// - lowercased; hyphens, dashes and slashes split words ("x-ray" → "x ray");
/// - every other character that is not a letter or digit is dropped, so
///   punctuation goes and "don't" = "dont", "1,000" = "1000";
/// - number words from zero to ninety-nine become digits, so "two" = "2"
///   and "twenty five" = "twenty-five" = "25". That is all: "a hundred",
///   "two thousand", ordinals ("first" ≠ "1st") and digit groupings
///   ("five five five" ≠ "555") are compared as written.
pub fn normalize(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let spaced: String =
        lower.chars().map(|c| if matches!(c, '-' | '‐' | '‑' | '–' | '—' | '/') { ' ' } else { c }).collect();
    let words: Vec<String> = spaced
        .split_whitespace()
        .map(|w| w.chars().filter(|c| c.is_alphanumeric()).collect::<String>())
        .filter(|w| !w.is_empty())
        .collect();
    let mut out = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        if let Some(t) = TENS.iter().position(|x| x == w) {
            let tens = 10 * (t + 2);
            match words.get(i + 1).and_then(|n| UNITS[1..10].iter().position(|x| x == n)) {
                Some(u) => {
                    out.push((tens + u + 1).to_string());
                    i += 2;
                }
                None => {
                    out.push(tens.to_string());
                    i += 1;
                }
            }
        } else if let Some(u) = UNITS.iter().position(|x| x == w) {
            out.push(u.to_string());
            i += 1;
        } else {
            out.push(w.clone());
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(r: &str, h: &str) -> (usize, usize) {
        let x = wer(r, h);
        (x.errors, x.words)
    }

    #[test]
    fn known_vectors() {
        assert_eq!(w("the cat sat", "the cat sat"), (0, 3));
        assert_eq!(w("the cat sat", "the cat sat on"), (1, 3), "one insertion");
        assert!((wer("the cat sat", "the cat sat on").rate() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(w("the cat sat", "the bat sat"), (1, 3), "one substitution");
        assert_eq!(w("the cat sat", "cat sat"), (1, 3), "one deletion");
        assert_eq!(w("the cat sat on the mat", "cat sat on a mat please"), (3, 6));
        // Order matters: a swap is two edits.
        assert_eq!(w("john smith", "smith john"), (2, 2));
        // The classic example: kitten → sitting is 3 at the character level; here over words.
        assert_eq!(w("a b c d e f", "a x c e f g"), (3, 6));
    }

    #[test]
    fn empty_hypothesis_is_all_deletions_and_insertions_can_pass_100_percent() {
        assert_eq!(wer("my furnace stopped working", "").rate(), 1.0);
        let x = wer("maria gonzalez", "hi my name is maria gonzalez thanks");
        assert_eq!((x.errors, x.words), (5, 2));
        assert!(x.rate() > 1.0);
        assert_eq!(wer("", "").rate(), 0.0);
        assert_eq!(wer("", "hello there").rate(), 2.0, "an empty reference counts as one word");
    }

    #[test]
    fn normalization() {
        assert_eq!(normalize("Hello, World!  It's ME."), ["hello", "world", "its", "me"]);
        assert_eq!(normalize("The X-ray—broke/failed"), ["the", "x", "ray", "broke", "failed"]);
        assert_eq!(normalize("two 2 Twenty-Five twenty five 25 ninety zero"), ["2", "2", "25", "25", "25", "90", "0"]);
        assert_eq!(normalize("twenty one hundred"), ["21", "hundred"]);
        assert_eq!(normalize("1,000 dollars... - ok?"), ["1000", "dollars", "ok"]);
        assert_eq!(normalize("  \t\n"), Vec::<String>::new());
        assert_eq!(normalize("José Muñoz"), ["josé", "muñoz"]);
        assert_eq!(w("I have two kids", "i have 2 kids."), (0, 4));
        assert_eq!(w("the water heater is leaking", "The water-heater is leaking!"), (0, 5));
    }

    #[test]
    fn a_corpus_rate_sums_errors_and_words() {
        let total: Wer = [wer("a b c d", "a b c d"), wer("x", "y z")].into_iter().sum();
        assert_eq!(total, Wer { errors: 2, words: 5 });
        assert!((total.rate() - 0.4).abs() < 1e-12);
        let mut t = Wer::default();
        t += wer("a", "");
        assert_eq!(t.to_string(), "100.0 % (1/1)");
    }
}
