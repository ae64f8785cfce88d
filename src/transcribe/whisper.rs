//! whisper.cpp through `whisper-rs`: ggml models.
