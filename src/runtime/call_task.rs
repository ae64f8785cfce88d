//! One task per call: owns its [`Call`], its RTP socket and one timer,
//! re-armed only when the call's next deadline moves. SIP goes back the
//! way the INVITE came, within the call's [`Budget`] until the caller is
//! verified (no amplification); RTP goes to the pacer thread; events are
//! committed to the outbox, and recordings written before the lead that
//! names them.

use super::Shared;
use super::dispatch::{CallInput, Notice};
use super::shutdown::Shutdown;
use crate::config::VadKind;
use crate::media_files::{read_head, write_block, write_recording};
use crate::sink::event::{Event, EventType};
use crate::transport::ReplyPath;
use backstop_core::call::{Call, CallEvent, CallSetup, Intake, Tally, Transmit};
use backstop_core::callback::CallbackState;
use backstop_core::intake::lead::{Lead, rfc3339};
use backstop_core::media::vad::{EarshotVad, VoiceDetector, WebRtcVad};
use backstop_core::route::line::CallFacts;
use backstop_core::sip::admission::Budget;
use backstop_core::sip::dialog::DialogConfig;
use backstop_core::sip::message::Request;
use std::net::SocketAddr;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub(super) struct CallTask {
    pub shared: Arc<Shared>,
    pub invite: Request,
    /// What may go to the caller until it is verified (from admission).
    pub budget: Budget,
    pub reply: ReplyPath,
    /// When the INVITE was read off the socket (INVITE→200 is measured from it).
    pub arrived: Instant,
    /// Non-blocking, not registered with the reactor: read on the call's tick.
    pub rtp: UdpSocket,
    pub inbox: mpsc::UnboundedReceiver<CallInput>,
    pub notices: mpsc::UnboundedSender<Notice>,
    pub shutdown: watch::Receiver<Shutdown>,
}

impl CallTask {
    pub(super) async fn run(self) {
        let CallTask { shared, invite, mut budget, reply, arrived, rtp, mut inbox, notices, mut shutdown } = self;
        let rtp = Arc::new(rtp);
        let local_ip = shared.local_ip_for(invite.source);
        let rtp_port = rtp.local_addr().map(|a| a.port()).unwrap_or(0);
        let source_ip = invite.source.ip();
        let local_tag = format!("{:016x}", rand::random::<u64>());
        let (_phase, pacing_phase) = shared.phases.take();
        let cfg = &shared.cfg;
        let setup = CallSetup {
            dialog: DialogConfig {
                answer_after: cfg.sip.answer_after,
                t1: cfg.sip.t1,
                t2: cfg.sip.t2,
                // No 100/180 to a caller that may be spoofed: the 200 alone must fit what it sent.
                provisional: budget.is_verified(),
                local_sip: SocketAddr::new(local_ip, shared.local_sip.port()),
                transport: reply.transport(),
                local_rtp: SocketAddr::new(local_ip, rtp_port),
                local_tag: local_tag.clone(),
                seed: rand::random::<u64>(),
            },
            lead_id: uuid::Uuid::new_v4().to_string(),
            received_at: SystemTime::now(),
            max_duration: cfg.call.max_duration,
            rtp_seed: (rand::random(), rand::random(), rand::random()),
            source_verified: budget.is_verified(),
            pacing_phase: Some(pacing_phase),
        };
        let from = invite.source;
        tracing::info!(%from, transport = %reply.transport(), rtp = %setup.dialog.local_rtp, caller = %invite.from.raw, called = %invite.to.raw, "INVITE");
        let mut facts = CallFacts::from_invite(&invite);
        facts.account = account_of(cfg, &invite);
        let line = shared.lines.current().route(&facts).clone();
        // The callback clock: when this caller should have been called back,
        // by the line's business hours (`[callback]`, `store::clock`).
        let due_at =
            backstop_core::callback::due_at(&cfg.callback.policy(), setup.received_at, line.schedule.as_deref());
        let callback = CallbackState::due(rfc3339(due_at));
        // Every lead the call publishes carries it, unless it is junk (no clock).
        let stamp = |lead: &mut Lead| {
            if !lead.junk.is_junk && lead.callback.is_none() {
                lead.callback = Some(callback.clone());
            }
        };
        let intake = Intake {
            // Speech answers, and speech that keeps the silence limit from ending the call.
            vad: (line.program.uses_voice() || line.junk.silent_after.is_some()).then(|| new_vad(cfg.intake.vad)),
            line,
            record_call: cfg.recordings.whole_call.then_some(cfg.recordings.max_call),
        };
        let lead_id = setup.lead_id.clone();
        let started = Instant::now();
        // Counted in progress until this task ends, however it ends.
        let _in_progress = shared.metrics.call_started(reply.transport());
        let mut call = Call::new(started, invite, setup, intake);
        let mut writes: Vec<JoinHandle<Option<String>>> = Vec::new();
        // The voice answer being written ahead, and answers dropped after some of theirs was.
        let mut spill: Option<AnswerSpill> = None;
        let mut abandoned: Vec<AnswerSpill> = Vec::new();
        let mut answers_spilled = 0u32;
        let timer = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let mut last_read = Instant::now();
        let mut buf = vec![0u8; 2048];
        // The TCP connections the caller's side used lately, by its address (the INVITE's is `reply`).
        let mut peer_paths: Vec<(SocketAddr, ReplyPath)> = Vec::new();
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
                        if !budget.spend(s.bytes.len()) {
                            tracing::debug!(
                                len = s.bytes.len(),
                                budget = budget.left(),
                                "SIP message withheld from an unverified source (no amplification)"
                            );
                            continue;
                        }
                        let path = peer_paths.iter().find(|(a, _)| *a == s.dest).map_or(&reply, |(_, p)| p);
                        Box::pin(path.send(s.dest, s.bytes)).await
                    }
                    Transmit::Rtp(p) => shared.pacer.send(&rtp, p),
                }
            }
            while let Some(ev) = call.poll_event() {
                match ev {
                    CallEvent::Progress(what, detail) => tracing::info!(event = what, "{detail}"),
                    CallEvent::Detail(what, detail) => tracing::debug!(event = what, "{detail}"),
                    CallEvent::Tally(Tally::Answered) => shared.metrics.call_answered(arrived.elapsed()),
                    CallEvent::Tally(Tally::Digit(source)) => shared.metrics.digit(source),
                    CallEvent::PromptMissing(name) => {
                        tracing::error!(prompt = %name, "script asks for a prompt that is not loaded")
                    }
                    CallEvent::Missed(mut lead) => {
                        stamp(&mut lead);
                        Box::pin(shared.publish(Event::new(EventType::CallMissed, rfc3339(SystemTime::now()), &lead)))
                            .await;
                    }
                    CallEvent::Transferred(mut lead) => {
                        stamp(&mut lead);
                        let event = Event::new(EventType::CallTransferred, rfc3339(SystemTime::now()), &lead);
                        Box::pin(shared.publish(event)).await;
                    }
                    CallEvent::AnswerAudio { offset, samples } => {
                        if offset == 0 {
                            // A new answer; one that was dropped unsaved leaves its part file behind.
                            abandoned.extend(spill.take());
                            answers_spilled += 1;
                            let name = format!("{lead_id}-answer{answers_spilled}.part");
                            spill = Some(AnswerSpill { path: cfg.recordings_dir().join(name), writes: Vec::new() });
                        }
                        if let Some(sp) = spill.as_mut() {
                            let (path, at) = (sp.path.clone(), (offset * samples.bytes_per_sample()) as u64);
                            // The block's bytes are copied off the call's task, in the write.
                            let write = move || write_block(&path, at, &samples.raw_bytes());
                            sp.writes.push(tokio::task::spawn_blocking(write));
                        }
                    }
                    CallEvent::Recording { file, samples, spilled, answer } => {
                        let done = FinishedRecording {
                            path: cfg.recordings_dir().join(&file),
                            file,
                            format: cfg.recordings.format,
                            metrics: shared.metrics.clone(),
                            // A voice answer is queued for its transcript as soon as it is on disk.
                            transcribe: answer
                                .zip(shared.transcriber.clone())
                                .map(|(step, t)| (step, t, lead_id.clone())),
                        };
                        if spilled == 0 {
                            writes.push(tokio::task::spawn_blocking(move || done.write(&samples)));
                        } else {
                            // Its start went ahead: once those blocks are down, read them back before the rest.
                            let sp = spill.take();
                            let file = done.file.clone();
                            writes.push(tokio::spawn(async move {
                                let Some(mut sp) = sp else {
                                    tracing::error!(file = %done.file, "an answer's first blocks were never written");
                                    return Some(done.file);
                                };
                                let head_ok = sp.settle().await;
                                let head_len = spilled * samples.bytes_per_sample();
                                tokio::task::spawn_blocking(move || {
                                    let head = head_ok.and_then(|()| read_head(&sp.path, head_len));
                                    let _ = std::fs::remove_file(&sp.path);
                                    match head {
                                        Ok(head) => done.write(&samples.prepend_raw(&head)),
                                        Err(e) => {
                                            tracing::error!(path = %sp.path.display(), error = %e, "could not read an answer's first blocks back");
                                            Some(done.file)
                                        }
                                    }
                                })
                                .await
                                .unwrap_or(Some(file))
                            }));
                        }
                    }
                    CallEvent::Lead(mut lead) => {
                        stamp(&mut lead);
                        // The lead may point at its recordings only once they are on disk.
                        Box::pin(forget_failed_recordings(&mut lead, writes.drain(..))).await;
                        shared.metrics.call_ended(&lead, call.media_stats());
                        if let Some(stats) = call.media_stats() {
                            tracing::info!(
                                sent = stats.packets_sent,
                                received = stats.packets_received,
                                underruns = stats.underruns,
                                "RTP totals"
                            );
                        }
                        // With transcription on, the lead waits for its transcripts (`transcribe::service`).
                        let held = match &shared.transcriber {
                            Some(t) => Box::pin(t.hold(&lead)).await,
                            None => false,
                        };
                        if !held {
                            let event = Event::new(EventType::LeadCompleted, rfc3339(SystemTime::now()), &lead);
                            Box::pin(shared.publish(event)).await;
                        }
                    }
                }
            }
            if call.is_finished() {
                break;
            }
            // RTP is read on the call's own tick, at most RECEIVE_TICK apart.
            let deadline = call
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(60))
                .min(last_read + RECEIVE_TICK);
            if armed != Some(deadline) {
                // Most packets leave the deadline as it was: no timer-wheel work then.
                timer.as_mut().reset(tokio::time::Instant::from_std(deadline));
                armed = Some(deadline);
            }
            tokio::select! {
                msg = inbox.recv() => match msg {
                    Some(CallInput::Request(r, len, path)) => {
                        // A TCP peer may send a request (a NOTIFY) on a connection of
                        // its own: what answers it goes back there.
                        if matches!(path, ReplyPath::Tcp(_)) {
                            remember_path(&mut peer_paths, r.source, path);
                        }
                        // What RTP came before this request is the call's before it: a BYE
                        // must not leave the last of the caller's audio (or a digit) unread.
                        let now = Instant::now();
                        read_rtp(&rtp, &mut buf, |src, bytes| call.handle_rtp(now, src, bytes));
                        // The caller pays for more with each retransmission, and is verified by its ACK.
                        if budget.receive(&r, len, &local_tag) {
                            let _ = notices.send(Notice::Verified(source_ip));
                        }
                        call.handle_sip_request(Instant::now(), *r)
                    }
                    Some(CallInput::Response(r)) => call.handle_sip_response(Instant::now(), *r),
                    None => break,
                },
                _ = &mut timer => {
                    armed = None;
                    let now = Instant::now();
                    last_read = now;
                    read_rtp(&rtp, &mut buf, |src, bytes| call.handle_rtp(now, src, bytes));
                    call.handle_timeout(now)
                }
                _ = &mut stop, if !shutting_down => {
                    shutting_down = true;
                    call.hangup(Instant::now(), "agent shutting down");
                }
            }
        }
        // Part files no recording claimed: removed once their writes are done
        // (the lead is out already; this only delays the call's end notice).
        abandoned.extend(spill.take());
        for mut sp in abandoned {
            sp.settle().await.ok();
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(&sp.path)).await;
        }
        tracing::debug!("call task finished");
    }
}

/// A voice answer written ahead while it is spoken: its part file and the
/// block writes under way.
struct AnswerSpill {
    path: std::path::PathBuf,
    writes: Vec<JoinHandle<std::io::Result<()>>>,
}

impl AnswerSpill {
    /// Wait for every block write; the first failure, if any.
    async fn settle(&mut self) -> std::io::Result<()> {
        let mut result = Ok(());
        for w in self.writes.drain(..) {
            let r = w.await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

/// A recording to write whole, and what follows once it is on disk.
struct FinishedRecording {
    file: String,
    path: std::path::PathBuf,
    format: backstop_core::media::recorder::RecordingFormat,
    metrics: Arc<crate::metrics::Metrics>,
    transcribe: Option<(String, crate::transcribe::service::Transcriber, String)>,
}

impl FinishedRecording {
    /// Write it (blocking); the file's name if that failed, for the lead to forget.
    fn write(self, audio: &backstop_core::media::recorder::Audio) -> Option<String> {
        match write_recording(&self.path, audio, self.format) {
            Ok(()) => {
                self.metrics.recording_written(std::fs::metadata(&self.path).map_or(0, |m| m.len()));
                if let Some((step, t, lead_id)) = self.transcribe {
                    t.enqueue_blocking(&lead_id, &step, &self.file);
                }
                None
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "could not write a recording");
                Some(self.file)
            }
        }
    }
}

/// The longest RTP waits in the socket before the call task reads it: one
/// frame. The call's media clock wakes it this often anyway while it sends.
const RECEIVE_TICK: Duration = Duration::from_millis(20);
/// The most packets read in one tick: a caller sends one per 20 ms, so this
/// leaves room for bursts, and for a flood from elsewhere on the port (which
/// the core ignores) before the caller's own packets wait; it bounds the work
/// a flood can cause (the rest wait for the next tick, or the kernel drops them).
const READ_PER_TICK: usize = 256;

/// Read what RTP has arrived, without waiting: one system call per packet
/// and one that finds the socket empty. Packets arrive up to one tick late,
/// which the VAD, DTMF and recordings do not notice; and no task wakes per
/// packet, which halves the wake-ups of a call.
fn read_rtp(rtp: &UdpSocket, buf: &mut [u8], mut handle: impl FnMut(SocketAddr, &[u8])) {
    for _ in 0..READ_PER_TICK {
        match rtp.recv_from(buf) {
            Ok((n, src)) => handle(src, &buf[..n]),
            // Empty (WouldBlock), or an ICMP error from a send: try again next tick.
            Err(_) => return,
        }
    }
}

/// Keep the way back to `peer`, the newest few only (a call sees one or two connections).
fn remember_path(paths: &mut Vec<(SocketAddr, ReplyPath)>, peer: SocketAddr, path: ReplyPath) {
    paths.retain(|(a, _)| *a != peer);
    if paths.len() >= 4 {
        paths.remove(0);
    }
    paths.push((peer, path));
}

/// Wait for the recordings to be written; those that failed are not named in the lead.
async fn forget_failed_recordings(lead: &mut Lead, writes: impl Iterator<Item = JoinHandle<Option<String>>>) {
    for w in writes {
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
}

/// The `[[register]]` account a call came through, `username@domain`: the
/// one whose Contact (`sip:username@us`) the INVITE's Request-URI names.
/// Accounts with the same username at several registrars are told apart by
/// the domain of the INVITE's To (the AOR the registrar forwarded).
fn account_of(cfg: &crate::config::Config, invite: &Request) -> Option<String> {
    let user = invite.uri.auth.as_ref().map(|a| a.user.as_str())?;
    let named: Vec<_> = cfg.register.iter().filter(|r| r.username == user).collect();
    let to_host = invite.to.uri.host_with_port.host.to_string();
    let account = match named.as_slice() {
        [one] => *one,
        // The To's domain tells them apart; failing that, the first (as when it was the only one).
        several => *several.iter().find(|r| r.domain().eq_ignore_ascii_case(&to_host)).or(several.first())?,
    };
    Some(account.account_name())
}

/// A fresh voice activity detector of the configured kind, for one call.
fn new_vad(kind: VadKind) -> Box<dyn VoiceDetector> {
    match kind {
        VadKind::Webrtc => Box::new(WebRtcVad::new(2)),
        VadKind::Earshot => Box::new(EarshotVad::new(0.5)),
    }
}

#[cfg(test)]
mod tests {
    fn future_size<F, Fut>(_: F) -> usize
    where
        F: FnOnce(super::CallTask) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// Every call holds its task's future for its whole life: the rare awaits
    /// (publishing, SIP sends, transcripts) are boxed so that their futures
    /// do not sit in every call's state. 9,248 bytes when this was written
    /// (11,792 before the boxing; the `Call` itself is about 4.8 KB).
    #[test]
    fn a_call_task_future_stays_small() {
        let size = future_size(super::CallTask::run);
        assert!(size <= 10 * 1024, "CallTask::run's future is {size} bytes");
    }
}
