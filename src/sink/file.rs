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

/// The last `n` leads of `leads.jsonl`, oldest first, each as its latest
/// line: a lead updated after its call (transcripts) appears again with the
/// same `id`, and the later line is the lead. A line without a readable
/// `id` is kept as it is.
pub fn latest_leads(path: &Path, n: usize) -> std::io::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)?;
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

/// The last `n` lines of a JSON-lines file, oldest first.
pub fn tail_lines(path: &Path, n: usize) -> std::io::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)?;
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    Ok(lines[lines.len().saturating_sub(n)..].to_vec())
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
}
