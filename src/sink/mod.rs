//! Where events and leads go: the durable outbox, its delivery workers, the
//! JSON-lines files and signed webhooks.
pub mod delivery;
pub mod event;
pub mod file;
pub mod outbox;
pub mod retry;
pub mod webhook;
mod worker;
