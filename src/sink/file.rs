//! JSON-lines files (`leads.jsonl`, `events.jsonl`): one object per line,
//! appended and fsynced before the write counts as delivered.
//!
//! The outbox may retry a write whose acknowledgement was lost (the process
//! died between the fsync and recording it), so [`LeadFile::append_once`]
//! first looks for the object's id near the end of the file, and
//! [`LeadFile::append_line_once`] for the very same line (a lead appears
//! again, with its `id`, when it is updated: the latest line is the lead).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// How far back from the end a re-delivery looks for an earlier copy.
const TAIL: u64 = 256 * 1024;

pub struct LeadFile {
    file: File,
}

impl LeadFile {
    /// Open (creating it and its directory if needed) for appending.
    pub fn open(path: &Path) -> std::io::Result<LeadFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).read(true).open(path)?;
        Ok(LeadFile { file })
    }

    /// Append `value` as one line of JSON and fsync, unless a line with
    /// `"id":"<id>"` is already in the file's tail.
    pub fn append_once(&mut self, id: &str, value: &impl serde::Serialize) -> std::io::Result<()> {
        if !id.is_empty() && self.tail_contains(&format!("\"id\":\"{id}\""))? {
            return Ok(());
        }
        let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
        line.push(b'\n');
        // One write per line: with O_APPEND a line is never interleaved with another.
        self.file.write_all(&line)?;
        self.file.sync_data()
    }

    /// Append `value` as one line of JSON and fsync, unless that very line
    /// is already in the file's tail.
    pub fn append_line_once(&mut self, value: &impl serde::Serialize) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut needle = String::from("\n");
        needle.push_str(std::str::from_utf8(&line).map_err(std::io::Error::other)?);
        let at_start = self.file.metadata()?.len() == 0;
        if !at_start && (self.tail_contains(&needle)? || self.head_is(&line)?) {
            return Ok(());
        }
        self.file.write_all(&line)?;
        self.file.sync_data()
    }

    /// Whether the file starts with `line` (the first line has no newline before it).
    fn head_is(&mut self, line: &[u8]) -> std::io::Result<bool> {
        self.file.seek(SeekFrom::Start(0))?;
        let mut buf = vec![0; line.len()];
        match self.file.read_exact(&mut buf) {
            Ok(()) => Ok(buf == line),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn tail_contains(&mut self, needle: &str) -> std::io::Result<bool> {
        let len = self.file.metadata()?.len();
        let start = len.saturating_sub(TAIL);
        self.file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        (&self.file).take(TAIL).read_to_end(&mut buf)?;
        Ok(buf.windows(needle.len()).any(|w| w == needle.as_bytes()))
    }
}

/// One lead of `leads.jsonl` as its latest line says it.
#[derive(Debug, Clone)]
pub struct LatestLead {
    /// The line, parsed.
    pub value: serde_json::Value,
    /// The line as written (without its newline).
    pub line: String,
}

/// The leads of a `leads.jsonl` stream, and how many lines were not leads.
#[derive(Debug, Default)]
pub struct LatestLeads {
    /// Each lead id's latest line, in the order the ids first appear.
    pub leads: Vec<LatestLead>,
    /// Non-blank lines that are not a JSON object with a string `id` (not
    /// UTF-8, not JSON, or a line cut short by a write in progress); reading
    /// goes on after each. A read error ends the reading and counts as one.
    pub skipped: u64,
}

/// Every lead of a `leads.jsonl` stream as its latest line: a lead updated
/// after its call (transcripts) appears again with the same `id`, and the
/// later line is the lead. The one reader of the file for the report, the
/// test call and `leads tail`.
pub fn read_latest(reader: impl std::io::BufRead) -> LatestLeads {
    let mut order: Vec<String> = Vec::new();
    let mut latest: std::collections::HashMap<String, LatestLead> = Default::default();
    let mut skipped = 0;
    for line in reader.split(b'\n') {
        let Ok(line) = line else {
            // The file itself could not be read on: what came before stands.
            skipped += 1;
            break;
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = String::from_utf8(line).ok().and_then(|line| {
            let value: serde_json::Value = serde_json::from_str(&line).ok()?;
            let id = value.get("id")?.as_str()?.to_string();
            Some((id, LatestLead { value, line }))
        });
        match parsed {
            Some((id, lead)) => {
                if latest.insert(id.clone(), lead).is_none() {
                    order.push(id);
                }
            }
            None => skipped += 1,
        }
    }
    LatestLeads { leads: order.into_iter().filter_map(|id| latest.remove(&id)).collect(), skipped }
}

/// [`read_latest`] of the file at `path`.
pub fn read_latest_file(path: &Path) -> std::io::Result<LatestLeads> {
    Ok(read_latest(std::io::BufReader::new(File::open(path)?)))
}

/// The last `n` leads of `leads.jsonl`, oldest first, each as its latest
/// line (as [`read_latest`] takes them), for `backstop leads tail`: unlike
/// there, a line without a readable `id` (blank, not JSON, cut short) is
/// kept as it is, in its place, so that the operator sees it; and a byte
/// that is not UTF-8 is shown as U+FFFD rather than failing the whole tail.
/// Not built on [`read_latest`], which drops such lines (what the report
/// and the test call want) and keeps no place for them.
pub fn latest_leads(path: &Path, n: usize) -> std::io::Result<Vec<String>> {
    let text = read_lossy(path)?;
    let mut order: Vec<String> = Vec::new();
    let mut latest: std::collections::HashMap<String, String> = Default::default();
    for (i, line) in text.lines().enumerate() {
        let id = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_string))
            .unwrap_or_else(|| format!("\0line{i}"));
        if latest.insert(id.clone(), line.to_string()).is_none() {
            order.push(id);
        }
    }
    let start = order.len().saturating_sub(n);
    Ok(order[start..].iter().map(|id| latest[id].clone()).collect())
}

/// The last `n` lines of a JSON-lines file, oldest first (a byte that is
/// not UTF-8 as U+FFFD).
pub fn tail_lines(path: &Path, n: usize) -> std::io::Result<Vec<String>> {
    let text = read_lossy(path)?;
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    Ok(lines[lines.len().saturating_sub(n)..].to_vec())
}

/// The file's text, each byte sequence that is not UTF-8 replaced by U+FFFD.
/// The same as doing so line by line: a newline is never part of an
/// invalid sequence, so the lines stay where they were.
fn read_lossy(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    Ok(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_one_object_per_line_and_never_twice() {
        let dir = std::env::temp_dir().join(format!("backstop-leadfile-{}", std::process::id()));
        let path = dir.join("sub/leads.jsonl");
        let mut f = LeadFile::open(&path).unwrap();
        for i in 0..3 {
            f.append_once(&format!("id{i}"), &serde_json::json!({"id": format!("id{i}"), "n": i})).unwrap();
        }
        // A re-delivery of id1 (its acknowledgement was lost) writes nothing.
        let mut again = LeadFile::open(&path).unwrap();
        again.append_once("id1", &serde_json::json!({"id": "id1", "n": 1})).unwrap();
        let lines = tail_lines(&path, 10).unwrap();
        let ids: Vec<String> = lines
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, ["id0", "id1", "id2"]);
        assert_eq!(tail_lines(&path, 1).unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_updated_lead_is_a_new_line_and_the_latest_line_is_the_lead() {
        let dir = std::env::temp_dir().join(format!("backstop-leadfile-upd-{}", std::process::id()));
        let path = dir.join("leads.jsonl");
        let mut f = LeadFile::open(&path).unwrap();
        let first = serde_json::json!({"id": "a", "v": 1});
        let updated = serde_json::json!({"id": "a", "v": 2});
        f.append_line_once(&first).unwrap();
        f.append_line_once(&serde_json::json!({"id": "b", "v": 1})).unwrap();
        f.append_line_once(&updated).unwrap();
        // Re-deliveries of any of them write nothing.
        for v in [&first, &updated] {
            LeadFile::open(&path).unwrap().append_line_once(v).unwrap();
        }
        assert_eq!(tail_lines(&path, 10).unwrap().len(), 3);
        let latest: Vec<serde_json::Value> =
            latest_leads(&path, 10).unwrap().iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(latest, [updated, serde_json::json!({"id": "b", "v": 1})]);
        assert_eq!(latest_leads(&path, 1).unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_lines_are_counted_and_the_latest_line_of_a_lead_wins() {
        let text =
            "{\"id\":\"a\",\"v\":1}\nnot json\n\n{\"id\":\"b\"}\n\u{0}\u{ff}\n[1]\n{\"id\":\"a\",\"v\":2}\n{\"trunc";
        let mut bytes = text.as_bytes().to_vec();
        bytes.extend_from_slice(&[b'\n', 0xff, 0xfe, b'\n']);
        let read = read_latest(&bytes[..]);
        let ids: Vec<&str> = read.leads.iter().map(|l| l.value["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["a", "b"], "first-seen order");
        assert_eq!(read.leads[0].line, "{\"id\":\"a\",\"v\":2}", "the latest line, as written");
        // not json, NUL+U+FFFF, [1] (no id), the cut-short line, the non-UTF-8 bytes.
        assert_eq!(read.skipped, 5);
    }
}
