//! The instant text-back: a sink that takes `call.missed` and, when the
//! policy allows, texts the caller through the Twilio Messages API (or a
//! compatible one). (Stub.)

use crate::config::Config;
use crate::sink::delivery::Sink;
use crate::sink::event::Event;
use crate::sink::retry::Attempt;

/// Sends the text-backs of one `[[text_back]]`.
pub struct Sender {}

impl Sender {
    /// Decide and, if allowed, send: the outbox retries what this reports as retryable.
    pub async fn deliver(&self, event: &Event) -> Attempt {
        let _ = event;
        Attempt::Status { code: 200, retry_after: None }
    }

    /// The sink's name, for logs.
    pub fn name(&self) -> String {
        String::new()
    }
}

/// The text-back sinks the config asks for.
pub fn sinks(cfg: &Config) -> anyhow::Result<Vec<Sink>> {
    let _ = cfg;
    Ok(Vec::new())
}

/// The text-back's tables (numbers texted, opt-outs), created with the outbox's.
pub const SCHEMA: &str = "";
