//! The runtime: the tokio glue around the Sans-IO cores. Read it in one
//! sitting.
//!
//! * One dispatcher task reads every SIP message (UDP and TCP), validates it,
//!   answers what needs no call (OPTIONS, errors, 481s) and routes the rest
//!   by Call-ID to the call's task. It alone owns the call table, so no lock.
//! * One task per call owns its [`Call`], its RTP socket and one timer,
//!   reset to the call's next deadline each time round the loop.
//! * Leads go to the lead writer thread.
//! * Shutdown: the watch channel flips; every call hangs up, and the
//!   dispatcher waits (bounded) for their leads.

use crate::call::{Call, CallEvent, CallSetup, Transmit};
use crate::config::Config;
use crate::intake::lead::rfc3339;
use crate::intake::script::Script;
use crate::media::prompt::PromptSet;
use crate::sink::delivery::Publisher;
use crate::sink::event::{Event, EventType};
use crate::sip::dialog::DialogConfig;
use crate::sip::message::{
    ALLOW, Incoming, Method, Rejection, Request, Response, SUPPORTED, build_response, read_message,
};
use crate::sip::transport::{Inbound, ReplyPath, serve_tcp, serve_udp};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

enum CallInput {
    Request(Box<Request>),
    Response(Box<Response>),
}

/// Everything a call task needs that is shared by all calls.
struct Shared {
    cfg: Config,
    prompts: Arc<PromptSet>,
    events: Publisher,
    local_sip: SocketAddr,
}

/// Bound sockets, ready to run.
pub struct Agent {
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    shared: Arc<Shared>,
}

impl Agent {
    /// Bind SIP on UDP and TCP at the configured address (same port).
    pub async fn bind(cfg: Config, prompts: Arc<PromptSet>, events: Publisher) -> anyhow::Result<Agent> {
        use anyhow::Context;
        let listen = cfg.listen();
        let udp = UdpSocket::bind(listen).await.with_context(|| format!("binding SIP UDP on {listen}"))?;
        let local_sip = udp.local_addr()?;
        let tcp = TcpListener::bind(local_sip).await.with_context(|| format!("binding SIP TCP on {local_sip}"))?;
        Ok(Agent { udp: Arc::new(udp), tcp, shared: Arc::new(Shared { cfg, prompts, events, local_sip }) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_sip
    }

    /// Serve until `shutdown` becomes true; then hang up every call and return.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let (in_tx, mut in_rx) = mpsc::channel::<Inbound>(1024);
        let udp_task = tokio::spawn(serve_udp(self.udp.clone(), in_tx.clone()));
        let tcp_task = tokio::spawn(serve_tcp(self.tcp, in_tx));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
        let mut calls: HashMap<String, mpsc::UnboundedSender<CallInput>> = HashMap::new();
        let mut ports = PortPool::new(self.shared.cfg.rtp.port_min, self.shared.cfg.rtp.port_max);
        tracing::info!(listen = %self.shared.local_sip, "backstop listening for SIP on UDP and TCP");
        loop {
            tokio::select! {
                Some(msg) = in_rx.recv() => {
                    self.shared.dispatch(msg, &mut calls, &mut ports, &done_tx, &shutdown).await;
                }
                Some(call_id) = done_rx.recv() => {
                    calls.remove(&call_id);
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { break; }
                }
            }
        }
        tracing::info!(calls = calls.len(), "shutting down: hanging up calls in progress");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !calls.is_empty() {
            tokio::select! {
                Some(call_id) = done_rx.recv() => { calls.remove(&call_id); }
                // Keep routing BYE responses to the calls while they finish.
                Some(msg) = in_rx.recv() => {
                    self.shared.dispatch(msg, &mut calls, &mut ports, &done_tx, &shutdown).await;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(calls = calls.len(), "calls still open at shutdown deadline");
                    break;
                }
            }
        }
        udp_task.abort();
        tcp_task.abort();
        Ok(())
    }
}

impl Shared {
    async fn dispatch(
        self: &Arc<Self>,
        msg: Inbound,
        calls: &mut HashMap<String, mpsc::UnboundedSender<CallInput>>,
        ports: &mut PortPool,
        done_tx: &mpsc::UnboundedSender<String>,
        shutdown: &watch::Receiver<bool>,
    ) {
        let Inbound { bytes, from, reply } = msg;
        match read_message(&bytes, from) {
            Incoming::Rejected(Rejection::Drop { why }) => {
                tracing::debug!(%from, why, "dropped unusable message");
            }
            Incoming::Rejected(Rejection::Respond { code, why, bytes: response, dest }) => {
                let call_id =
                    crate::sip::message::Frame::parse(&bytes).ok().and_then(|f| f.get("Call-ID").map(str::to_string));
                tracing::info!(%from, code, why, call_id = call_id.as_deref().unwrap_or("-"), "rejected request");
                let dest = if reply.is_reliable() { from } else { dest };
                reply.send(dest, response).await;
            }
            Incoming::Response(resp) => match calls.get(&resp.call_id) {
                Some(tx) => {
                    let _ = tx.send(CallInput::Response(resp));
                }
                None => tracing::debug!(%from, code = resp.code, call_id = %resp.call_id, "stray response dropped"),
            },
            Incoming::Request(req) => {
                if let Some(tx) = calls.get(&req.call_id) {
                    let _ = tx.send(CallInput::Request(req));
                    return;
                }
                let dest = if reply.is_reliable() { from } else { req.via.response_addr(from) };
                let respond = |code: u16, extra: &[(&str, String)]| {
                    build_response(&req.frame, &req.via_reply, code, Some("bs0"), extra, None)
                };
                match &req.method {
                    Method::Invite if req.to.tag.is_none() => {
                        if *shutdown.borrow() || calls.len() >= self.cfg.sip.max_calls {
                            let b = respond(503, &[("Retry-After", "5".into())]);
                            reply.send(dest, b).await;
                            return;
                        }
                        let Some(rtp) = ports.bind(self.rtp_ip()).await else {
                            tracing::error!(call_id = %req.call_id, "no free RTP port in the configured range");
                            let b = respond(503, &[("Retry-After", "5".into())]);
                            reply.send(dest, b).await;
                            return;
                        };
                        let (tx, rx) = mpsc::unbounded_channel();
                        calls.insert(req.call_id.clone(), tx);
                        let shared = self.clone();
                        let done = done_tx.clone();
                        let shutdown = shutdown.clone();
                        let span = tracing::info_span!("call", call_id = %req.call_id);
                        tokio::spawn(
                            async move {
                                let call_id = req.call_id.clone();
                                shared.call_task(*req, reply, rtp, rx, shutdown).await;
                                let _ = done.send(call_id);
                            }
                            .instrument(span),
                        );
                    }
                    Method::Options => {
                        let b = respond(
                            200,
                            &[
                                ("Allow", ALLOW.into()),
                                ("Accept", "application/sdp".into()),
                                ("Supported", SUPPORTED.into()),
                            ],
                        );
                        reply.send(dest, b).await;
                    }
                    Method::Ack => tracing::debug!(call_id = %req.call_id, "ACK for no call, absorbed"),
                    Method::NotAllowed(m) => {
                        tracing::info!(%from, method = %m, "method not allowed");
                        let b = respond(405, &[("Allow", ALLOW.into())]);
                        reply.send(dest, b).await;
                    }
                    _ => {
                        let b = respond(481, &[]);
                        reply.send(dest, b).await;
                    }
                }
            }
        }
    }

    /// Commit an event to the outbox; if that fails (disk full), the event is
    /// logged whole so that it can still be recovered from the log.
    async fn publish(&self, event: Event) {
        let kind = event.kind.as_str();
        match self.events.publish(event).await {
            Ok(()) => tracing::debug!(kind, "event committed"),
            Err(e) => tracing::error!(kind, error = %e, "could not commit the event to the outbox"),
        }
    }

    fn rtp_ip(&self) -> IpAddr {
        self.local_sip.ip()
    }

    /// The address a peer can reach us at: `advertise`, the listen IP, or the
    /// local address the kernel routes to that peer from.
    fn local_ip_for(&self, peer: SocketAddr) -> IpAddr {
        if let Some(ip) = self.cfg.advertise() {
            return ip;
        }
        if !self.local_sip.ip().is_unspecified() {
            return self.local_sip.ip();
        }
        let probe = std::net::UdpSocket::bind(match peer {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => "[::]:0".parse().expect("literal"),
        });
        probe
            .and_then(|s| s.connect(peer).and_then(|_| s.local_addr()))
            .map(|a| a.ip())
            .unwrap_or(Ipv4Addr::LOCALHOST.into())
    }

    async fn call_task(
        self: Arc<Self>,
        invite: Request,
        reply: ReplyPath,
        rtp: UdpSocket,
        mut inbox: mpsc::UnboundedReceiver<CallInput>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let local_ip = self.local_ip_for(invite.source);
        let rtp_port = rtp.local_addr().map(|a| a.port()).unwrap_or(0);
        let setup = CallSetup {
            dialog: DialogConfig {
                answer_after: Duration::from_millis(self.cfg.sip.answer_after_ms),
                t1: self.cfg.t1(),
                t2: self.cfg.t2(),
                reliable: reply.is_reliable(),
                local_sip: SocketAddr::new(local_ip, self.local_sip.port()),
                transport: reply.transport(),
                local_rtp: SocketAddr::new(local_ip, rtp_port),
                local_tag: format!("{:016x}", rand::random::<u64>()),
                seed: rand::random::<u64>(),
            },
            lead_id: uuid::Uuid::new_v4().to_string(),
            received_at: SystemTime::now(),
            transport: reply.transport(),
            max_duration: Duration::from_secs(self.cfg.call.max_duration_secs),
            rtp_seed: (rand::random(), rand::random(), rand::random()),
        };
        let from = invite.source;
        tracing::info!(%from, transport = reply.transport(), rtp = %setup.dialog.local_rtp, caller = %invite.from.raw, called = %invite.to.raw, "INVITE");
        let mut call = Call::new(Instant::now(), invite, setup, Script::greeting_then_goodbye(), self.prompts.clone());
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        let mut buf = vec![0u8; 2048];
        let mut shutting_down = *shutdown.borrow();
        if shutting_down {
            call.hangup(Instant::now(), "agent shutting down");
        }
        loop {
            while let Some(t) = call.poll_transmit() {
                match t {
                    Transmit::Sip(s) => reply.send(s.dest, s.bytes).await,
                    Transmit::Rtp { dest, bytes } => {
                        if let Err(e) = rtp.send_to(&bytes, dest).await {
                            tracing::debug!(%dest, error = %e, "RTP send failed");
                        }
                    }
                }
            }
            while let Some(ev) = call.poll_event() {
                match ev {
                    CallEvent::Progress(what, detail) => tracing::info!(event = what, "{detail}"),
                    CallEvent::Missed(lead) => {
                        self.publish(Event::new(EventType::CallMissed, rfc3339(SystemTime::now()), &lead)).await;
                    }
                    CallEvent::Lead(lead) => {
                        if let Some(stats) = call.media_stats() {
                            tracing::info!(sent = stats.packets_sent, received = stats.packets_received, "RTP totals");
                        }
                        self.publish(Event::new(EventType::LeadCompleted, rfc3339(SystemTime::now()), &lead)).await;
                    }
                }
            }
            if call.is_finished() {
                break;
            }
            let deadline = call.poll_timeout().unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
            timer.as_mut().reset(tokio::time::Instant::from_std(deadline));
            tokio::select! {
                msg = inbox.recv() => match msg {
                    Some(CallInput::Request(r)) => call.handle_sip_request(Instant::now(), *r),
                    Some(CallInput::Response(r)) => call.handle_sip_response(Instant::now(), *r),
                    None => break,
                },
                r = rtp.recv_from(&mut buf) => {
                    if let Ok((n, src)) = r {
                        call.handle_rtp(Instant::now(), src, &buf[..n]);
                    }
                }
                _ = &mut timer => call.handle_timeout(Instant::now()),
                _ = shutdown.changed(), if !shutting_down => {
                    if *shutdown.borrow() {
                        shutting_down = true;
                        call.hangup(Instant::now(), "agent shutting down");
                    }
                }
            }
        }
        tracing::debug!("call task finished");
    }
}

/// Hands out RTP ports from the configured range, even ports only, round robin.
struct PortPool {
    min: u16,
    max: u16,
    next: u16,
}

impl PortPool {
    fn new(min: u16, max: u16) -> PortPool {
        let min = min + (min & 1);
        PortPool { min, max, next: min }
    }

    async fn bind(&mut self, ip: IpAddr) -> Option<UdpSocket> {
        let slots = ((self.max - self.min) / 2 + 1) as usize;
        for _ in 0..slots {
            let port = self.next;
            self.next = if port + 2 > self.max { self.min } else { port + 2 };
            if let Ok(sock) = UdpSocket::bind(SocketAddr::new(ip, port)).await {
                return Some(sock);
            }
        }
        None
    }
}
