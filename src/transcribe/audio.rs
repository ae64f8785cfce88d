//! Recorded answers as an engine takes them: 8 kHz G.711 (or PCM) WAV
//! decoded and brought up to 16 kHz.
