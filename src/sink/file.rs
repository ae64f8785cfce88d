//! JSON-lines files (`leads.jsonl`, `events.jsonl`): one object per line,
//! appended and fsynced before the write counts as delivered.
//!
//! The outbox may retry a write whose acknowledgement was lost (the process
//! died between the fsync and recording it), so [`LeadFile::append_once`]
//! first looks for the object's id near the end of the file.

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

    fn tail_contains(&mut self, needle: &str) -> std::io::Result<bool> {
        let len = self.file.metadata()?.len();
        let start = len.saturating_sub(TAIL);
        self.file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        (&self.file).take(TAIL).read_to_end(&mut buf)?;
        Ok(buf.windows(needle.len()).any(|w| w == needle.as_bytes()))
    }
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
}
