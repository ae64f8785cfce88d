//! The runtime: the tokio glue around the Sans-IO cores. Read it in one
//! sitting.
//!
//! * One dispatcher task reads every SIP message (UDP and TCP), passes it
//!   through the [`Guard`] (limits, scanners, per-source rate), validates it,
//!   answers what needs no call (OPTIONS, errors, 481s; bare and never bigger
//!   than the request to an unverified source) and routes the rest by
//!   Call-ID to the call's task. It alone owns the call table, so no lock.
//! * One task per call owns its [`Call`], its RTP socket and one timer,
//!   re-armed when the call's next deadline moves. Its events
//!   (`call.missed`, `lead.completed`) are committed to the outbox. Its RTP
//!   goes to the [`Pacer`] thread, which sends each packet at its instant;
//!   its packet clock starts in the least used millisecond of the 20 ms
//!   frame ([`PhaseSlots`]), so calls do not all wake together.
//! * One task per `[[register]]` account keeps it registered.
//!   Until its caller's address is verified, a call's SIP output is capped by
//!   the bytes the caller sent (no amplification).
//! * Shutdown in two steps: `Draining` refuses new calls (503) and lets calls
//!   run on; `Now` hangs them up. Then accounts unregister, while the
//!   dispatcher keeps routing their responses (bounded).

use crate::config::{Config, RegisterConfig, VadKind, sip_target};
use crate::media_files::write_recording;
use crate::pacer::Pacer;
use crate::sink::delivery::Publisher;
use crate::sink::event::{Event, EventType};
use crate::transport::{Inbound, ReplyPath, TcpLimits, serve_tcp, serve_udp};
use backstop_core::call::{Call, CallEvent, CallSetup, Intake, Transmit};
use backstop_core::intake::lead::rfc3339;
use backstop_core::intake::program::Program;
use backstop_core::media::prompt::PromptSet;
use backstop_core::media::vad::{EarshotVad, VoiceDetector, WebRtcVad};
use backstop_core::sip::auth::Credentials;
use backstop_core::sip::dialog::DialogConfig;
use backstop_core::sip::guard::{Guard, Opening, Verdict};
use backstop_core::sip::message::{
    ALLOW, Incoming, Method, Rejection, Request, Response, SUPPORTED, build_bare_response, build_response, read_message,
};
use backstop_core::sip::register::{AccountSetup, RegEvent, RegState, Registration};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

enum CallInput {
    /// An in-dialog request and its size on the wire.
    Request(Box<Request>, usize),
    Response(Box<Response>),
}

/// Everything a call task needs that is shared by all calls.
struct Shared {
    cfg: Config,
    prompts: Arc<PromptSet>,
    program: Arc<Program>,
    events: Publisher,
    local_sip: SocketAddr,
    /// Networks whose INVITEs are answered (with the registrars' addresses), when enforced.
    trusted: Vec<ipnet::IpNet>,
    registrar_ips: std::sync::RwLock<Vec<IpAddr>>,
    /// `[security] verified_sources`: addresses that cannot be spoofed here.
    verified_nets: Vec<ipnet::IpNet>,
    /// Addresses that have acknowledged one of our answers (bounded).
    verified: std::sync::Mutex<std::collections::HashSet<IpAddr>>,
    /// Which millisecond of the 20 ms frame each call sends in.
    phases: PhaseSlots,
    /// Puts every call's RTP on the wire at its instant.
    pacer: Pacer,
}

/// Spreads the calls' packet clocks evenly over the 20 ms frame: each new
/// call takes the least used millisecond. Calls that arrive together (a
/// burst, or a load generator's batches) would otherwise all wake, build and
/// send in the same millisecond, and the last of them would go out late.
struct PhaseSlots {
    reference: Instant,
    used: std::sync::Mutex<[u32; 20]>,
}

impl PhaseSlots {
    fn new() -> PhaseSlots {
        PhaseSlots { reference: Instant::now(), used: std::sync::Mutex::new([0; 20]) }
    }

    /// The least used slot, held until the guard drops: `(reference, offset)`.
    fn take(&self) -> (PhaseGuard<'_>, (Instant, Duration)) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let slot = (0..used.len()).min_by_key(|i| used[*i]).unwrap_or(0);
        used[slot] += 1;
        (PhaseGuard(self, slot), (self.reference, Duration::from_millis(slot as u64)))
    }
}

struct PhaseGuard<'a>(&'a PhaseSlots, usize);

impl Drop for PhaseGuard<'_> {
    fn drop(&mut self) {
        let mut used = self.0.used.lock().unwrap_or_else(|e| e.into_inner());
        used[self.1] = used[self.1].saturating_sub(1);
    }
}

/// Addresses remembered as verified, at most; the set starts over beyond it.
const MAX_VERIFIED: usize = 100_000;

/// What the dispatcher owns: where to route each Call-ID, and the RTP ports.
struct Table {
    calls: HashMap<String, mpsc::UnboundedSender<CallInput>>,
    registrations: HashMap<String, mpsc::UnboundedSender<Box<Response>>>,
    ports: PortPool,
    done_tx: mpsc::UnboundedSender<String>,
    /// Limits, scanner and flood defence for everything that arrives.
    guard: Guard,
}

/// Where a shutdown stands (a `watch` channel from the signal handler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    Running,
    /// New calls get 503; calls in progress go on.
    Draining,
    /// Calls in progress are ended now (BYE).
    Now,
}

/// How long hung-up calls, and unregistering accounts, get to finish.
const HANGUP_WAIT: Duration = Duration::from_secs(5);

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
        let trusted = cfg.trusted_nets();
        let program = Arc::new(cfg.program().map_err(|e| anyhow::anyhow!("intake script: {e:?}"))?);
        let verified_nets = cfg.verified_nets();
        let pacer = Pacer::start().context("starting the RTP pacer thread")?;
        let shared = Shared {
            cfg,
            prompts,
            program,
            events,
            local_sip,
            trusted,
            registrar_ips: Default::default(),
            verified_nets,
            verified: Default::default(),
            phases: PhaseSlots::new(),
            pacer,
        };
        Ok(Agent { udp: Arc::new(udp), tcp, shared: Arc::new(shared) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_sip
    }

    /// Serve until `shutdown` leaves `Running`. While `Draining`, new calls
    /// get 503 and calls in progress go on; at `Now` they are hung up (BYE)
    /// and given 5 s to finish. Then accounts unregister and this returns.
    pub async fn run(self, mut shutdown: watch::Receiver<Shutdown>) -> anyhow::Result<()> {
        let (in_tx, mut in_rx) = mpsc::channel::<Inbound>(1024);
        let udp_task = tokio::spawn(serve_udp(self.udp.clone(), in_tx.clone()));
        let tcp_limits = TcpLimits {
            max_connections: self.shared.cfg.security.max_tcp_connections,
            idle: Duration::from_secs(self.shared.cfg.security.tcp_idle_secs),
        };
        let tcp_task = tokio::spawn(serve_tcp(self.tcp, in_tx, tcp_limits));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
        let cfg = &self.shared.cfg;
        let mut table = Table {
            calls: HashMap::new(),
            registrations: HashMap::new(),
            ports: PortPool::new(cfg.rtp.port_min, cfg.rtp.port_max),
            done_tx,
            guard: Guard::new(cfg.security.guard()),
        };
        let mut registrations = Vec::new();
        let (unregister_tx, unregister_rx) = watch::channel(false);
        for account in cfg.register.clone() {
            let seed = rand::random::<u64>();
            let (tx, rx) = mpsc::unbounded_channel();
            table.registrations.insert(Registration::call_id_for(seed), tx);
            let span = tracing::info_span!("account", name = %format!("{}@{}", account.username, account.domain()));
            let task =
                self.shared.clone().registration_task(account, seed, self.udp.clone(), rx, unregister_rx.clone());
            registrations.push(tokio::spawn(task.instrument(span)));
        }
        if !cfg.trust_enforced() {
            tracing::warn!("trunk mode with no [sip] trusted_sources: INVITEs from any address are answered");
        }
        tracing::info!(listen = %self.shared.local_sip, accounts = registrations.len(), "backstop listening for SIP on UDP and TCP");
        loop {
            tokio::select! {
                Some(msg) = in_rx.recv() => self.shared.dispatch(msg, &mut table, &shutdown).await,
                Some(call_id) = done_rx.recv() => { table.calls.remove(&call_id); }
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() != Shutdown::Running { break; }
                }
            }
        }
        tracing::info!(calls = table.calls.len(), "shutting down: new calls get 503; calls in progress may finish");
        // Set once the calls are being hung up: they get this long to send their BYEs and leads.
        let mut hangup_deadline =
            (*shutdown.borrow() == Shutdown::Now).then(|| tokio::time::Instant::now() + HANGUP_WAIT);
        while !table.calls.is_empty() {
            tokio::select! {
                Some(call_id) = done_rx.recv() => { table.calls.remove(&call_id); }
                // Keep routing in-dialog requests and responses (and refusing new calls).
                Some(msg) = in_rx.recv() => self.shared.dispatch(msg, &mut table, &shutdown).await,
                r = shutdown.changed(), if hangup_deadline.is_none() => {
                    if r.is_err() || *shutdown.borrow() == Shutdown::Now {
                        tracing::info!(calls = table.calls.len(), "ending the calls still in progress");
                        hangup_deadline = Some(tokio::time::Instant::now() + HANGUP_WAIT);
                    }
                }
                _ = tokio::time::sleep_until(hangup_deadline.unwrap_or_else(tokio::time::Instant::now)), if hangup_deadline.is_some() => {
                    tracing::warn!(calls = table.calls.len(), "calls still open at the shutdown deadline");
                    break;
                }
            }
        }
        let _ = unregister_tx.send(true);
        let deadline = tokio::time::Instant::now() + HANGUP_WAIT;
        while registrations.iter().any(|r| !r.is_finished()) {
            tokio::select! {
                // Keep routing the REGISTER responses while accounts unregister.
                Some(msg) = in_rx.recv() => self.shared.dispatch(msg, &mut table, &shutdown).await,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!("accounts still unregistering at the shutdown deadline");
                    break;
                }
            }
        }
        udp_task.abort();
        tcp_task.abort();
        let p = &self.shared.pacer.stats;
        tracing::info!(
            sent = p.sent.load(Ordering::Relaxed),
            late = p.late.load(Ordering::Relaxed),
            failed = p.failed.load(Ordering::Relaxed),
            "RTP pacer totals"
        );
        Ok(())
    }
}

impl Shared {
    async fn dispatch(self: &Arc<Self>, msg: Inbound, table: &mut Table, shutdown: &watch::Receiver<Shutdown>) {
        let Inbound { bytes, from, reply } = msg;
        if let Verdict::Drop(why) = table.guard.check_bytes(&bytes) {
            if table.guard.should_log(Instant::now(), from.ip()) {
                tracing::warn!(%from, why, len = bytes.len(), dropped = table.guard.dropped, "message dropped");
            }
            return;
        }
        let incoming = read_message(&bytes, from);
        // Anything that would start something new is checked for scanners and floods.
        let out_of_dialog = match &incoming {
            Incoming::Request(r) => !table.calls.contains_key(&r.call_id),
            Incoming::Rejected(Rejection::Respond { .. }) => true,
            _ => false,
        };
        if out_of_dialog {
            // New calls have an allowance of their own: a flood of anything else never starves them.
            let (opening, ua) = match &incoming {
                Incoming::Request(r) if r.method == Method::Invite && r.to.tag.is_none() => {
                    (Opening::NewCall, r.frame.get("User-Agent"))
                }
                Incoming::Request(r) => (Opening::Other, r.frame.get("User-Agent")),
                _ => (Opening::Other, None),
            };
            let now = Instant::now();
            let trusted = self.is_listed(from.ip());
            if let Verdict::Drop(why) = table.guard.check_request(now, from.ip(), opening, ua, trusted) {
                if table.guard.should_log(now, from.ip()) {
                    tracing::warn!(%from, why, user_agent = ua.unwrap_or("-"), dropped = table.guard.dropped, "request dropped (logged once per 10 s per source)");
                }
                return;
            }
        }
        match incoming {
            Incoming::Rejected(Rejection::Drop { why }) => {
                tracing::debug!(%from, why, "dropped unusable message");
            }
            Incoming::Rejected(Rejection::Respond { code, why, bytes: response, dest, call_id }) => {
                tracing::info!(%from, code, why, call_id = call_id.as_deref().unwrap_or("-"), "rejected request");
                let dest = if reply.is_reliable() { from } else { dest };
                let verified = reply.is_reliable() || self.is_verified(from.ip());
                if let Some(response) = affordable(verified, from, code, bytes.len(), response) {
                    reply.send(dest, response).await;
                }
            }
            Incoming::Response(resp) => {
                if let Some(tx) = table.registrations.get(&resp.call_id) {
                    let _ = tx.send(resp);
                } else if let Some(tx) = table.calls.get(&resp.call_id) {
                    let _ = tx.send(CallInput::Response(resp));
                } else {
                    tracing::debug!(%from, code = resp.code, call_id = %resp.call_id, "stray response dropped");
                }
            }
            Incoming::Request(req) => {
                if let Some(tx) = table.calls.get(&req.call_id) {
                    let _ = tx.send(CallInput::Request(req, bytes.len()));
                    return;
                }
                let dest = if reply.is_reliable() { from } else { req.via.response_addr(from) };
                // No amplification: to a source that may be spoofed (UDP, not listed) a
                // stateless answer is the bare form, and is not sent if still bigger than the request.
                let verified = reply.is_reliable() || self.is_verified(from.ip());
                let request_len = bytes.len();
                let respond = |code: u16, extra: &[(&str, String)]| {
                    let b = if verified {
                        build_response(&req.frame, &req.via_reply, code, Some("bs0"), extra, None)
                    } else {
                        build_bare_response(&req.frame, &req.via_reply, code, Some("bs0"), extra)
                    };
                    affordable(verified, from, code, request_len, b)
                };
                let send = |b: Option<Vec<u8>>| async {
                    if let Some(b) = b {
                        reply.send(dest, b).await;
                    }
                };
                if req.method != Method::Ack && !self.is_trusted(from.ip()) {
                    // The same answer whatever the method or user: nothing to enumerate.
                    tracing::warn!(%from, method = ?req.method, call_id = %req.call_id, caller = %req.from.raw, "request from an untrusted address refused (403)");
                    send(respond(403, &[])).await;
                    return;
                }
                match &req.method {
                    Method::Invite if req.to.tag.is_none() => {
                        if *shutdown.borrow() != Shutdown::Running || table.calls.len() >= self.cfg.sip.max_calls {
                            send(respond(503, &[("Retry-After", "5".into())])).await;
                            return;
                        }
                        let Some(rtp) = table.ports.bind(self.rtp_ip()).await else {
                            tracing::error!(call_id = %req.call_id, "no free RTP port in the configured range");
                            send(respond(503, &[("Retry-After", "5".into())])).await;
                            return;
                        };
                        let (tx, rx) = mpsc::unbounded_channel();
                        table.calls.insert(req.call_id.clone(), tx);
                        let shared = self.clone();
                        let done = table.done_tx.clone();
                        let shutdown = shutdown.clone();
                        let span = tracing::info_span!("call", call_id = %req.call_id);
                        tokio::spawn(
                            async move {
                                let call_id = req.call_id.clone();
                                shared.call_task(*req, request_len, reply, rtp, rx, shutdown).await;
                                let _ = done.send(call_id);
                            }
                            .instrument(span),
                        );
                    }
                    Method::Options => {
                        // Allow/Accept/Supported are optional: only to sources we can verify.
                        let extra: &[(&str, String)] = if verified {
                            &[
                                ("Allow", ALLOW.into()),
                                ("Accept", "application/sdp".into()),
                                ("Supported", SUPPORTED.into()),
                            ]
                        } else {
                            &[]
                        };
                        send(respond(200, extra)).await;
                    }
                    Method::Ack => tracing::debug!(call_id = %req.call_id, "ACK for no call, absorbed"),
                    Method::NotAllowed(m) => {
                        tracing::info!(%from, method = %m, "method not allowed");
                        send(respond(405, &[("Allow", ALLOW.into())])).await;
                    }
                    _ => {
                        send(respond(481, &[])).await;
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

    /// May this address place calls? Everyone in trunk mode; otherwise the listed ones.
    fn is_trusted(&self, ip: IpAddr) -> bool {
        !self.cfg.trust_enforced() || self.is_listed(ip)
    }

    /// Has this address shown it receives what we send (or can it not be spoofed)?
    fn is_verified(&self, ip: IpAddr) -> bool {
        self.is_listed(ip)
            || self.verified_nets.iter().any(|n| n.contains(&ip))
            || self.verified.lock().map(|v| v.contains(&ip)).unwrap_or(false)
    }

    fn mark_verified(&self, ip: IpAddr) {
        if let Ok(mut v) = self.verified.lock() {
            if v.len() >= MAX_VERIFIED {
                v.clear();
            }
            v.insert(ip);
        }
    }

    /// Is this address a registrar of ours or in `[sip] trusted_sources`?
    fn is_listed(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(&ip))
            || self.registrar_ips.read().map(|r| r.contains(&ip)).unwrap_or(false)
    }

    /// Keep one account registered until shutdown, then unregister.
    async fn registration_task(
        self: Arc<Self>,
        account: RegisterConfig,
        seed: u64,
        udp: Arc<UdpSocket>,
        mut inbox: mpsc::UnboundedReceiver<Box<Response>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let target = account.outbound_proxy.as_deref().unwrap_or(&account.registrar);
        let (host, port, _) = match sip_target(target) {
            Ok(t) => t,
            Err(e) => return tracing::error!("{e}"),
        };
        let retry = Duration::from_secs(account.retry_interval_s);
        // Resolve the registrar; DNS may be down at start, so keep trying.
        let dest = loop {
            match tokio::net::lookup_host((host.as_str(), port)).await.map(|mut a| a.next()) {
                Ok(Some(addr)) => break addr,
                other => tracing::error!(host = %host, result = ?other.err(), "cannot resolve the registrar; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = shutdown.changed() => return,
            }
        };
        if let Ok(mut ips) = self.registrar_ips.write() {
            ips.push(dest.ip());
        }
        let password = match account.resolved_password() {
            Ok(p) => p,
            Err(e) => return tracing::error!("no password: {e}"),
        };
        let setup = AccountSetup {
            name: format!("{}@{}", account.username, account.domain()),
            username: account.username.clone(),
            domain: account.domain(),
            credentials: Credentials {
                username: account.auth_username.clone().unwrap_or_else(|| account.username.clone()),
                password,
            },
            expires: account.expires,
            dest,
            local: SocketAddr::new(self.local_ip_for(dest), self.local_sip.port()),
            t1: self.cfg.t1(),
            t2: self.cfg.t2(),
            retry_base: retry,
            retry_max: Duration::from_secs(account.max_retry_interval_s),
            keepalive: (account.keepalive_s > 0).then(|| Duration::from_secs(account.keepalive_s)),
            seed,
        };
        let mut reg = Registration::new(setup);
        tracing::info!(registrar = %dest, "registering");
        reg.start(Instant::now());
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        let mut stopping = *shutdown.borrow();
        if stopping {
            reg.stop(Instant::now());
        }
        loop {
            while let Some(t) = reg.poll_transmit() {
                if let Err(e) = udp.send_to(&t.bytes, t.dest).await {
                    tracing::warn!(dest = %t.dest, error = %e, "REGISTER send failed");
                }
            }
            while let Some(ev) = reg.poll_event() {
                match ev {
                    RegEvent::Registered { expires, contact } => {
                        tracing::info!(expires, %contact, "registered")
                    }
                    RegEvent::Failed { why, retry_in } => {
                        tracing::error!(retry_in_ms = retry_in.as_millis() as u64, "registration failed: {why}")
                    }
                    RegEvent::Unregistered => tracing::info!("unregistered"),
                    RegEvent::ContactMoved { from, to } => {
                        tracing::info!(%from, %to, "registrar sees us at another address; re-registering that contact")
                    }
                }
            }
            if reg.state() == RegState::Stopped {
                return;
            }
            let deadline = reg.poll_timeout().unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            timer.as_mut().reset(tokio::time::Instant::from_std(deadline));
            tokio::select! {
                Some(resp) = inbox.recv() => reg.handle_response(Instant::now(), &resp),
                _ = &mut timer => reg.handle_timeout(Instant::now()),
                _ = shutdown.changed(), if !stopping => {
                    if *shutdown.borrow() {
                        stopping = true;
                        reg.stop(Instant::now());
                    }
                }
            }
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

    #[allow(clippy::too_many_arguments)]
    async fn call_task(
        self: Arc<Self>,
        invite: Request,
        invite_len: usize,
        reply: ReplyPath,
        rtp: UdpSocket,
        mut inbox: mpsc::UnboundedReceiver<CallInput>,
        mut shutdown: watch::Receiver<Shutdown>,
    ) {
        let rtp = Arc::new(rtp);
        let local_ip = self.local_ip_for(invite.source);
        let rtp_port = rtp.local_addr().map(|a| a.port()).unwrap_or(0);
        let source_ip = invite.source.ip();
        // No amplification: until the source shows it receives our answers, what
        // we send it is paid for by what it sent (the INVITE and its retransmissions).
        let mut budget: Option<usize> = (!reply.is_reliable() && !self.is_verified(source_ip)).then_some(invite_len);
        let local_tag = format!("{:016x}", rand::random::<u64>());
        let (_phase, pacing_phase) = self.phases.take();
        let setup = CallSetup {
            dialog: DialogConfig {
                answer_after: Duration::from_millis(self.cfg.sip.answer_after_ms),
                t1: self.cfg.t1(),
                t2: self.cfg.t2(),
                reliable: reply.is_reliable(),
                provisional: budget.is_none(),
                local_sip: SocketAddr::new(local_ip, self.local_sip.port()),
                transport: reply.transport(),
                local_rtp: SocketAddr::new(local_ip, rtp_port),
                local_tag: local_tag.clone(),
                seed: rand::random::<u64>(),
            },
            lead_id: uuid::Uuid::new_v4().to_string(),
            received_at: SystemTime::now(),
            max_duration: Duration::from_secs(self.cfg.call.max_duration_secs),
            rtp_seed: (rand::random(), rand::random(), rand::random()),
            source_verified: budget.is_none(),
            pacing_phase: Some(pacing_phase),
        };
        let from = invite.source;
        tracing::info!(%from, transport = %reply.transport(), rtp = %setup.dialog.local_rtp, caller = %invite.from.raw, called = %invite.to.raw, "INVITE");
        let intake = Intake {
            program: self.program.clone(),
            vad: self.program.uses_voice().then(|| new_vad(self.cfg.intake.vad)),
            record_call: self.cfg.recordings.whole_call.then(|| Duration::from_secs(self.cfg.recordings.max_call_secs)),
        };
        let mut call = Call::new(Instant::now(), invite, setup, intake, self.prompts.clone());
        let mut writes: Vec<tokio::task::JoinHandle<Option<String>>> = Vec::new();
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let mut buf = vec![0u8; 2048];
        let mut shutting_down = *shutdown.borrow() == Shutdown::Now;
        if shutting_down {
            call.hangup(Instant::now(), "agent shutting down");
        }
        // One future for the whole call, so that it stays registered with the
        // watch instead of registering anew on every packet. Draining lets
        // the call run on; only `Now` (or a vanished sender) ends it.
        let stop = async move {
            while shutdown.changed().await.is_ok() {
                if *shutdown.borrow() == Shutdown::Now {
                    return;
                }
            }
        };
        tokio::pin!(stop);
        loop {
            while let Some(t) = call.poll_transmit() {
                match t {
                    Transmit::Sip(s) => {
                        if let Some(b) = budget.as_mut() {
                            if s.bytes.len() > *b {
                                tracing::debug!(
                                    len = s.bytes.len(),
                                    budget = *b,
                                    "SIP message withheld from an unverified source (no amplification)"
                                );
                                continue;
                            }
                            *b -= s.bytes.len();
                        }
                        reply.send(s.dest, s.bytes).await
                    }
                    Transmit::Rtp(p) => self.pacer.send(&rtp, p),
                }
            }
            while let Some(ev) = call.poll_event() {
                match ev {
                    CallEvent::Progress(what, detail) => tracing::info!(event = what, "{detail}"),
                    CallEvent::PromptMissing(name) => {
                        tracing::error!(prompt = %name, "script asks for a prompt that is not loaded")
                    }
                    CallEvent::Missed(lead) => {
                        self.publish(Event::new(EventType::CallMissed, rfc3339(SystemTime::now()), &lead)).await;
                    }
                    CallEvent::Recording { file, samples } => {
                        let path = self.cfg.recordings_dir().join(&file);
                        let format = self.cfg.recordings.format;
                        writes.push(tokio::task::spawn_blocking(move || {
                            match write_recording(&path, &samples, format) {
                                Ok(()) => None,
                                Err(e) => {
                                    tracing::error!(path = %path.display(), error = %e, "could not write a recording");
                                    Some(file)
                                }
                            }
                        }));
                    }
                    CallEvent::Lead(mut lead) => {
                        // The lead may point at its recordings only once they are on disk.
                        for w in writes.drain(..) {
                            if let Ok(Some(failed)) = w.await {
                                for a in lead.answers.values_mut() {
                                    if a.recording.as_deref() == Some(failed.as_str()) {
                                        a.recording = None;
                                    }
                                }
                                if lead.recording.as_deref() == Some(failed.as_str()) {
                                    lead.recording = None;
                                }
                            }
                        }
                        if let Some(stats) = call.media_stats() {
                            tracing::info!(
                                sent = stats.packets_sent,
                                received = stats.packets_received,
                                underruns = stats.underruns,
                                "RTP totals"
                            );
                        }
                        self.publish(Event::new(EventType::LeadCompleted, rfc3339(SystemTime::now()), &lead)).await;
                    }
                }
            }
            if call.is_finished() {
                break;
            }
            let deadline = call.poll_timeout().unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
            if armed != Some(deadline) {
                // Most packets leave the deadline as it was: no timer-wheel work then.
                timer.as_mut().reset(tokio::time::Instant::from_std(deadline));
                armed = Some(deadline);
            }
            tokio::select! {
                msg = inbox.recv() => match msg {
                    Some(CallInput::Request(r, len)) => {
                        if let Some(b) = budget.as_mut() {
                            if r.to.tag.as_deref() == Some(local_tag.as_str()) && r.source.ip() == source_ip {
                                // It answered with our tag: it receives what we send. No more budget.
                                budget = None;
                                self.mark_verified(source_ip);
                                tracing::debug!(source = %source_ip, "source verified");
                            } else if r.source.ip() == source_ip {
                                *b += len;
                            }
                        }
                        call.handle_sip_request(Instant::now(), *r)
                    }
                    Some(CallInput::Response(r)) => call.handle_sip_response(Instant::now(), *r),
                    None => break,
                },
                r = rtp.recv_from(&mut buf) => {
                    if let Ok((n, src)) = r {
                        call.handle_rtp(Instant::now(), src, &buf[..n]);
                    }
                }
                _ = &mut timer => {
                    armed = None;
                    call.handle_timeout(Instant::now())
                }
                _ = &mut stop, if !shutting_down => {
                    shutting_down = true;
                    call.hangup(Instant::now(), "agent shutting down");
                }
            }
        }
        tracing::debug!("call task finished");
    }
}

/// No amplification: an answer to an unverified source is sent only if it is
/// no bigger than the request it answers.
fn affordable(verified: bool, from: SocketAddr, code: u16, request_len: usize, answer: Vec<u8>) -> Option<Vec<u8>> {
    if verified || answer.len() <= request_len {
        return Some(answer);
    }
    tracing::debug!(%from, code, request_len, answer_len = answer.len(), "answer withheld: larger than the request from an unverified source");
    None
}

/// A fresh voice activity detector of the configured kind, for one call.
fn new_vad(kind: VadKind) -> Box<dyn VoiceDetector> {
    match kind {
        VadKind::Webrtc => Box::new(WebRtcVad::new(2)),
        VadKind::Earshot => Box::new(EarshotVad::new(0.5)),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// New calls fill the least used millisecond of the frame, and a call
    /// that ends frees its millisecond for the next.
    #[test]
    fn phase_slots_spread_calls_over_the_frame() {
        let slots = PhaseSlots::new();
        let taken: Vec<_> = (0..40).map(|_| slots.take()).collect();
        let mut per_slot = [0; 20];
        for (_, (reference, offset)) in &taken {
            assert_eq!(*reference, slots.reference);
            per_slot[offset.as_millis() as usize] += 1;
        }
        assert_eq!(per_slot, [2; 20], "40 calls, two in each millisecond");
        let freed = taken[7].1.1;
        drop(taken);
        let next: Vec<_> = (0..20).map(|_| slots.take()).collect();
        assert!(next.iter().all(|(_, (_, o))| o.as_millis() < 20));
        let mut seen: Vec<u128> = next.iter().map(|(_, (_, o))| o.as_millis()).collect();
        seen.sort();
        assert_eq!(seen, (0..20).collect::<Vec<_>>(), "all freed: one per millisecond again");
        assert!(freed < Duration::from_millis(20));
    }
}
