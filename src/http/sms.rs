//! `POST /sms/inbound`: Twilio's inbound-message webhook. Checks
//! `X-Twilio-Signature` and records STOP/START opt-outs. (Stub: filled in
//! with the text-back.)

use crate::config::Config;
use axum::Router;

/// What the webhook needs: the accounts' auth tokens, the public URL, the opt-out table.
#[derive(Clone)]
pub struct SmsState {}

impl SmsState {
    /// `None` when no `[[text_back]]` is configured.
    pub fn from_config(cfg: &Config) -> anyhow::Result<Option<SmsState>> {
        let _ = cfg;
        Ok(None)
    }
}

/// The webhook's routes, merged into the HTTP face's router.
pub fn routes(state: SmsState) -> Router {
    let _ = state;
    Router::new()
}
