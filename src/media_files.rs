//! Prompt and recording files: the file system side of the core's prompt
//! decoder and recording encoder. Prompts are read once at start; each
//! recording is written durably (temporary name, fsync, rename) off the
//! call's task. A long voice answer is written ahead in blocks to a part
//! file ([`write_block`]) while it is spoken, and read back ([`read_head`])
//! when the answer ends and its recording is written whole.

use backstop_core::media::prompt::{Prompt, PromptError, PromptSet};
use backstop_core::media::recorder::{Audio, RecordingFormat, wav_bytes};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A prompt file that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PromptFileError {
    #[error("prompt {name:?} ({path}): {source}")]
    Io { name: String, path: PathBuf, source: std::io::Error },
    #[error("prompt {name:?} ({path}): {source}")]
    Format { name: String, path: PathBuf, source: PromptError },
}

/// Load a prompt file; the format is chosen by extension and WAV header.
pub fn load_prompt(name: &str, path: &Path) -> Result<Prompt, PromptFileError> {
    let bytes = std::fs::read(path).map_err(|source| PromptFileError::Io {
        name: name.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    Prompt::from_bytes(name, &ext, &bytes).map_err(|source| PromptFileError::Format {
        name: name.to_string(),
        path: path.to_path_buf(),
        source,
    })
}

/// Load every prompt in `names`, each from the file `path_of` gives it.
pub fn load_prompts<'a>(
    names: impl IntoIterator<Item = &'a str>,
    path_of: impl Fn(&str) -> PathBuf,
) -> Result<PromptSet, PromptFileError> {
    let mut set = PromptSet::default();
    for name in names {
        set.insert(load_prompt(name, &path_of(name))?);
    }
    Ok(set)
}

/// Write a recording durably: to a temporary name, fsync, then rename, so
/// a crash never leaves a half-written file under the name a lead points to.
pub fn write_recording(path: &Path, audio: &Audio, format: RecordingFormat) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("wav.part");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&wav_bytes(audio, format))?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Write `bytes` at byte `offset` of the part file `path`, creating it (and
/// its directory) if need be. Blocks land where they belong whatever order
/// their writes run in.
pub fn write_block(path: &Path, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let f = std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(path)?;
    f.write_all_at(bytes, offset)
}

/// The first `len` bytes of the part file `path`; an error if it holds fewer.
pub fn read_head(path: &Path, len: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut head = vec![0; len];
    std::fs::File::open(path)?.read_exact(&mut head)?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstop_core::media::g711::Law;

    #[test]
    fn recordings_read_back_through_the_prompt_loader_and_bad_files_name_their_path() {
        let dir = std::env::temp_dir().join(format!("backstop-media-files-{}", std::process::id()));
        let samples: Vec<i16> = (0..800).map(|i| ((i as f32 / 10.0).sin() * 8000.0) as i16).collect();
        let path = dir.join("sub/r.wav");
        write_recording(&path, &Audio::from_pcm(Some(Law::Pcmu), &samples), RecordingFormat::Ulaw).unwrap();
        assert!(!path.with_extension("wav.part").exists(), "the temporary file is renamed");
        let back = load_prompt("r", &path).unwrap();
        let expected: Vec<i16> = samples.iter().map(|s| Law::Pcmu.decode(Law::Pcmu.encode(*s))).collect();
        assert_eq!(back.pcm, expected);
        let missing = load_prompt("m", &dir.join("missing.wav")).unwrap_err();
        assert!(
            matches!(missing, PromptFileError::Io { .. }) && missing.to_string().contains("missing.wav"),
            "{missing}"
        );
        std::fs::write(dir.join("bad.wav"), b"RIFFxxxxWAVE").unwrap();
        let bad = load_prompt("b", &dir.join("bad.wav")).unwrap_err();
        assert!(matches!(bad, PromptFileError::Format { .. }) && bad.to_string().contains("bad.wav"), "{bad}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
