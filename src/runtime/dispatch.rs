//! The dispatcher: carries out what the core's [`Admission`] decides for
//! each SIP message, and logs it. It owns the call table (Call-ID to the
//! call task's inbox), the registrations' inboxes, the RTP port pool and the
//! admission state; tasks tell it what it must know through [`Notice`]s
//! (a call ended, a source verified, a registrar resolved), so nothing here
//! is shared or locked.

use super::Shared;
use super::call_task::CallTask;
use super::ports::PortPool;
use super::shutdown::Shutdown;
use crate::metrics::Metrics;
use crate::transport::{Inbound, ReplyPath};
use backstop_core::sip::admission::{
    Admission, Answer, Arrival, Decision, Dropped, NewCall, Reason, Reply, Route, Routes,
};
use backstop_core::sip::message::{Method, Request, Response};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

/// What the dispatcher hands a call task.
pub(super) enum CallInput {
    /// An in-dialog request, its size on the wire, and the way it came (a
    /// TCP peer may open a new connection for it).
    Request(Box<Request>, usize, ReplyPath),
    Response(Box<Response>),
}

/// What the tasks tell the dispatcher.
pub(super) enum Notice {
    /// A call task has finished.
    CallEnded(String),
    /// A caller acknowledged our answer from this address: it is real.
    Verified(IpAddr),
    /// A registrar resolved to this address: trusted from now on.
    Registrar(IpAddr),
}

/// Where each Call-ID goes.
#[derive(Default)]
struct Table {
    calls: HashMap<String, mpsc::UnboundedSender<CallInput>>,
    registrations: HashMap<String, mpsc::UnboundedSender<Box<Response>>>,
}

impl Routes for Table {
    fn route(&self, call_id: &str) -> Option<Route> {
        if self.registrations.contains_key(call_id) {
            Some(Route::Registration)
        } else if self.calls.contains_key(call_id) {
            Some(Route::Call)
        } else {
            None
        }
    }

    fn calls(&self) -> usize {
        self.calls.len()
    }
}

pub(super) struct Dispatcher {
    shared: Arc<Shared>,
    admission: Admission,
    table: Table,
    ports: PortPool,
    notices: mpsc::UnboundedSender<Notice>,
    shutdown: watch::Receiver<Shutdown>,
}

impl Dispatcher {
    pub(super) fn new(
        shared: Arc<Shared>,
        admission: Admission,
        notices: mpsc::UnboundedSender<Notice>,
        shutdown: watch::Receiver<Shutdown>,
    ) -> Dispatcher {
        let ports = PortPool::new(shared.cfg.rtp.port_min, shared.cfg.rtp.port_max);
        Dispatcher { shared, admission, table: Table::default(), ports, notices, shutdown }
    }

    /// Route a registration's responses (by the Call-ID it will use) to `inbox`.
    pub(super) fn add_registration(&mut self, call_id: String, inbox: mpsc::UnboundedSender<Box<Response>>) {
        self.table.registrations.insert(call_id, inbox);
    }

    pub(super) fn calls(&self) -> usize {
        self.table.calls.len()
    }

    pub(super) fn notice(&mut self, notice: Notice) {
        match notice {
            Notice::CallEnded(call_id) => {
                self.table.calls.remove(&call_id);
            }
            Notice::Verified(ip) => {
                self.admission.mark_verified(ip);
                tracing::debug!(source = %ip, "source verified");
            }
            Notice::Registrar(ip) => self.admission.add_registrar(ip),
        }
    }

    /// Ask admission about one message and do what it says.
    pub(super) async fn dispatch(&mut self, msg: Inbound) {
        let Inbound { at, bytes, from, reply } = msg;
        if *self.shutdown.borrow() != Shutdown::Running {
            self.admission.drain();
        }
        let arrival = Arrival { bytes: &bytes, from, transport: reply.transport() };
        match self.admission.admit(Instant::now(), arrival, &self.table) {
            Decision::ToCall { request, len } => {
                if let Some(tx) = self.table.calls.get(&request.call_id) {
                    let _ = tx.send(CallInput::Request(request, len, reply.clone()));
                }
            }
            Decision::CallResponse(resp) => {
                if let Some(tx) = self.table.calls.get(&resp.call_id) {
                    let _ = tx.send(CallInput::Response(resp));
                }
            }
            Decision::RegistrationResponse(resp) => {
                if let Some(tx) = self.table.registrations.get(&resp.call_id) {
                    let _ = tx.send(resp);
                }
            }
            Decision::NewCall(call) => self.start_call(call, reply, at).await,
            Decision::Answer(answer) => answer_with(answer, from, &reply, &self.shared.metrics).await,
            Decision::Drop(dropped) => log_drop(dropped, from, bytes.len()),
        }
    }

    /// A call task with its own RTP port, or the 503 admission prepared.
    /// `arrived`: when its INVITE was read off the socket.
    async fn start_call(&mut self, call: NewCall, reply: ReplyPath, arrived: Instant) {
        let NewCall { invite, budget, busy } = call;
        let Some(rtp) = self.ports.bind(self.shared.rtp_ip()) else {
            tracing::error!(call_id = %invite.call_id, "no free RTP port in the configured range");
            return answer_with(busy, invite.source, &reply, &self.shared.metrics).await;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let call_id = invite.call_id.clone();
        self.table.calls.insert(call_id.clone(), tx);
        let span = tracing::info_span!("call", call_id = %call_id);
        let task = CallTask {
            shared: self.shared.clone(),
            invite: *invite,
            budget,
            reply,
            arrived,
            rtp,
            inbox: rx,
            notices: self.notices.clone(),
            shutdown: self.shutdown.clone(),
        };
        let notices = self.notices.clone();
        tokio::spawn(
            async move {
                task.run().await;
                let _ = notices.send(Notice::CallEnded(call_id));
            }
            .instrument(span),
        );
    }
}

/// Log a stateless answer's reason, count a refused call, and send it unless it is withheld.
async fn answer_with(answer: Answer, from: SocketAddr, reply: &ReplyPath, metrics: &Metrics) {
    let Answer { code, reason, dest, reply: bytes } = answer;
    // A new call refused before it had a dialog: untrusted (403), draining, full or no RTP port (503).
    let refused_call = match &reason {
        Reason::Untrusted { method, .. } => *method == Method::Invite,
        Reason::Draining | Reason::Full | Reason::NoRtpPort => true,
        Reason::Invalid { .. } | Reason::NotAllowed(_) | Reason::Options | Reason::NoCall => false,
    };
    if refused_call {
        metrics.invite_refused(code);
    }
    match &reason {
        Reason::Invalid { why, call_id } => {
            tracing::info!(%from, code, why, call_id = call_id.as_deref().unwrap_or("-"), "rejected request")
        }
        Reason::Untrusted { method, call_id, caller } => {
            // The same answer whatever the method or user: nothing to enumerate.
            tracing::warn!(%from, ?method, %call_id, %caller, "request from an untrusted address refused (403)")
        }
        // Debug: a flood of INVITEs while draining or full must not flood the log.
        Reason::Draining | Reason::Full => tracing::debug!(%from, ?reason, "new call refused (503)"),
        Reason::NotAllowed(method) => tracing::info!(%from, %method, "method not allowed"),
        Reason::NoRtpPort | Reason::Options | Reason::NoCall => {}
    }
    match bytes {
        Reply::Send(bytes) => reply.send(dest, bytes).await,
        Reply::Withheld { request_len, answer_len } => tracing::debug!(
            %from, code, request_len, answer_len,
            "answer withheld: larger than the request from an unverified source"
        ),
    }
}

fn log_drop(dropped: Dropped, from: SocketAddr, len: usize) {
    match dropped {
        Dropped::Guard { why, user_agent, log, total } => {
            if log {
                tracing::warn!(
                    %from, why, len, user_agent = user_agent.as_deref().unwrap_or("-"), dropped = total,
                    "message dropped (logged once per 10 s per source)"
                );
            }
        }
        Dropped::Unusable { why } => tracing::debug!(%from, why, "dropped unusable message"),
        Dropped::StrayResponse { code, call_id } => {
            tracing::debug!(%from, code, %call_id, "stray response dropped")
        }
        Dropped::StrayAck { call_id } => tracing::debug!(%call_id, "ACK for no call, absorbed"),
    }
}
