//! `[[text_back]]` (and `[[line.text_back]]`): the instant text message to a
//! missed caller. (Stub: filled in with the text-back sink.)

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TextBackConfig {
    /// The sending number, E.164.
    pub from: String,
}

impl TextBackConfig {
    /// Problems that span keys, as `(key, message)`, under `key` (`text_back[0]`, `line[1].text_back[0]`).
    pub(super) fn problems(&self, key: &str) -> Vec<(String, String)> {
        let _ = key;
        Vec::new()
    }
}
