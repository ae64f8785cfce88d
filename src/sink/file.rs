//! The JSON-lines lead file: one lead per line, appended and fsynced before
//! the write is reported done, so a lead that was acknowledged survives a
//! crash or power cut.

use crate::intake::lead::Lead;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct LeadFile {
    path: PathBuf,
    file: File,
}

impl LeadFile {
    /// Open (creating it and its directory if needed) for appending.
    pub fn open(path: &Path) -> std::io::Result<LeadFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(LeadFile { path: path.to_path_buf(), file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one lead as a single line, then fsync.
    pub fn append(&mut self, lead: &Lead) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(lead).map_err(std::io::Error::other)?;
        line.push(b'\n');
        // One write call per line: with O_APPEND, a line is never interleaved with another.
        self.file.write_all(&line)?;
        self.file.sync_data()
    }
}

/// A thread that owns the file and writes leads sent to it, in order.
pub struct LeadWriter {
    tx: Option<std::sync::mpsc::Sender<Lead>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LeadWriter {
    pub fn start(mut file: LeadFile) -> LeadWriter {
        let (tx, rx) = std::sync::mpsc::channel::<Lead>();
        let thread = std::thread::Builder::new()
            .name("lead-writer".into())
            .spawn(move || {
                for lead in rx {
                    match file.append(&lead) {
                        Ok(()) => tracing::info!(call_id = %lead.call_id, lead_id = %lead.id, path = %file.path().display(), "lead written"),
                        Err(e) => tracing::error!(call_id = %lead.call_id, error = %e, lead = ?serde_json::to_string(&lead).ok(), "failed to write lead"),
                    }
                }
            })
            .expect("spawn lead writer");
        LeadWriter { tx: Some(tx), thread: Some(thread) }
    }

    pub fn sender(&self) -> std::sync::mpsc::Sender<Lead> {
        self.tx.clone().expect("writer running")
    }

    /// Write everything queued, then stop.
    pub fn finish(mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Incoming, read_message};

    #[test]
    fn appends_one_json_object_per_line() {
        let dir = std::env::temp_dir().join(format!("backstop-leadfile-{}", std::process::id()));
        let path = dir.join("sub/leads.jsonl");
        let msg = "INVITE sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:1@x>;tag=1\r\nTo: <sip:2@y>\r\nCall-ID: f1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let Incoming::Request(r) = read_message(msg.as_bytes(), "127.0.0.1:5060".parse().unwrap()) else { panic!() };
        let writer = LeadWriter::start(LeadFile::open(&path).unwrap());
        for i in 0..3 {
            writer.sender().send(Lead::from_invite(format!("id{i}"), &r, std::time::SystemTime::now(), "UDP")).unwrap();
        }
        writer.finish();
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, ["id0", "id1", "id2"]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
