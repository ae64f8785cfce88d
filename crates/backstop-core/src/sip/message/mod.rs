//! SIP wire messages, in three steps: `frame` finds a message and its
//! header fields, `validate` checks a request as RFC 3261 asks before
//! anything acts on it (and reads a response to ours), and `build` writes
//! our responses and the requests we originate. `name_addr` reads the
//! From/To/Contact values all three deal in.
//!
//! rsipstack's parser is lenient (it accepts a Content-Length larger than the
//! body, a CSeq whose method differs from the request's, and a wrong SIP
//! version), and it cannot represent an unknown method at all, so a 501 could
//! not be built from it. So the first pass is ours: every field stays text
//! until validation. The URIs and name-addrs inside are then parsed with
//! rsipstack's typed parsers, and what we send is serialised with its
//! `Request` and `Response`.
//!
//! This module holds what the steps hand each other: [`read_message`], the
//! one entry for bytes from the network, and the [`Request`], [`Response`]
//! and [`Rejection`] it returns.

mod build;
mod frame;
mod name_addr;
mod validate;

pub(crate) use build::branch;
pub use build::{OutgoingRequest, build_bare_response, build_response};
pub use frame::{Field, Frame, FrameError, StartLine, stream_message_len};
pub(crate) use name_addr::with_tag;
pub use name_addr::{NameAddr, split_name_addrs};

use crate::sip::via::Via;
use rsipstack::sip::Uri;
use std::net::SocketAddr;

/// Largest message we accept, in bytes (UDP datagrams are smaller anyway).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Request methods Backstop acts on. Everything else is answered 405 or 501.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Info,
    /// Answered 405 in a dialog: we send REFERs (transfers) but do not take them.
    Refer,
    /// The notifications of the implicit subscription of a REFER we sent (RFC 3515).
    Notify,
    /// A method SIP defines that we do not implement (REGISTER, MESSAGE, ...): 405.
    NotAllowed(String),
}

/// Methods we list in Allow: what we accept. Not REFER: we send it, but a
/// caller may not transfer our leg of the call.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, NOTIFY";
/// Extensions we support (Require/Supported); none yet (not `norefersub`:
/// our REFERs always want their NOTIFYs).
pub const SUPPORTED: &str = "";

/// A request that passed validation, with the fields we act on parsed.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub frame: Frame,
    pub via: Via,
    /// The top Via as we echo it in responses, with received/rport filled in.
    pub via_reply: String,
    pub from: NameAddr,
    pub to: NameAddr,
    pub call_id: String,
    pub cseq: u32,
    pub contact: Option<NameAddr>,
    pub source: SocketAddr,
}

/// What to do with a request that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Send this response (already built) back.
    Respond { code: u16, why: String, bytes: Vec<u8>, dest: SocketAddr, call_id: Option<String> },
    /// Nothing can be sent back (no usable Via): log and drop.
    Drop { why: String },
}

/// A response we received (to a request we sent).
#[derive(Debug, Clone)]
pub struct Response {
    pub code: u16,
    pub frame: Frame,
    pub call_id: String,
    pub cseq: u32,
    pub cseq_method: String,
    pub branch: Option<String>,
}

/// The result of reading one message from the network.
#[derive(Debug)]
pub enum Incoming {
    Request(Box<Request>),
    Response(Box<Response>),
    Rejected(Rejection),
}

/// Frame and validate one message received from `source`.
pub fn read_message(data: &[u8], source: SocketAddr) -> Incoming {
    let frame = match Frame::parse(data) {
        Ok(f) => f,
        Err(e) => return Incoming::Rejected(Rejection::Drop { why: e.to_string() }),
    };
    if let StartLine::Response { code, .. } = frame.start {
        return match validate::read_response(frame, code) {
            Some(r) => Incoming::Response(Box::new(r)),
            None => Incoming::Rejected(Rejection::Drop { why: "malformed response".into() }),
        };
    }
    match validate::validate_request(frame, source) {
        Ok(r) => Incoming::Request(Box::new(r)),
        Err(rej) => Incoming::Rejected(rej),
    }
}
