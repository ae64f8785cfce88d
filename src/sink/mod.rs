//! Where leads go. For now the JSON-lines file; the outbox and webhook join it later.
pub mod file;
