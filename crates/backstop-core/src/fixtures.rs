//! Test audio, compiled into the tests (the core reads no files): the
//! shipped prompts and the recorded test answers, decoded to 8 kHz PCM.

use crate::media::prompt::Prompt;

macro_rules! wav {
    ($dir:literal, $name:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../", $dir, "/", $name, ".wav")).as_slice()
    };
}

fn decode(name: &str, bytes: &[u8]) -> Vec<i16> {
    Prompt::from_bytes(name, "wav", bytes).unwrap_or_else(|e| panic!("{name}: {e}")).pcm
}

/// A shipped prompt (`prompts/<name>.wav`): real speech (espeak-ng).
pub fn prompt(name: &str) -> Vec<i16> {
    let bytes = match name {
        "greeting" => wav!("prompts", "greeting"),
        "name" => wav!("prompts", "name"),
        "need" => wav!("prompts", "need"),
        "callback_number" => wav!("prompts", "callback_number"),
        "zip" => wav!("prompts", "zip"),
        "urgency" => wav!("prompts", "urgency"),
        "goodbye" => wav!("prompts", "goodbye"),
        "sorry" => wav!("prompts", "sorry"),
        other => panic!("no prompt {other}"),
    };
    decode(name, bytes)
}

/// A recorded test answer (`tests/fixtures/speech/<file>`).
pub fn speech(file: &str) -> Vec<i16> {
    let bytes = match file {
        "name.wav" => wav!("tests/fixtures/speech", "name"),
        "need.wav" => wav!("tests/fixtures/speech", "need"),
        "need_first.wav" => wav!("tests/fixtures/speech", "need_first"),
        "need_second.wav" => wav!("tests/fixtures/speech", "need_second"),
        other => panic!("no test speech {other}"),
    };
    decode(file, bytes)
}
