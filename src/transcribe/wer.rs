//! Word error rate, for the transcription bench and tests.
