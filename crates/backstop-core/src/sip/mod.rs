//! SIP: framing and validation of messages, the top Via, SDP offer/answer,
//! the UAS dialog state machine, registration and the admission policy.
pub mod auth;
pub mod dialog;
pub mod guard;
pub mod message;
pub mod register;
pub mod sdp;
pub mod via;
