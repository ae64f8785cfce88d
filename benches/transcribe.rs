//! The transcription bench (see benches/transcribe/README.md once written).
fn main() {}
