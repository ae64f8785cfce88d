//! The caller-facing conversation: the script a call follows and the lead it produces.
pub mod answer;
pub mod endpoint;
pub mod forwarding;
pub mod lead;
pub mod program;
pub mod script;
pub mod summary;
pub mod transcript;
