//! One call, Sans-IO: the SIP dialog, the RTP session and the script wired
//! together, producing the lead when the dialog ends. The call's line
//! decides what runs: its script and prompts, its schedule (for `when`
//! steps and the lead), and its junk rules (603, a goodbye, or a flag, and
//! the silence limit). A `transfer` step is carried out by
//! [`transfer::TransferRun`] over the dialog's REFER.
//!
//! The runtime feeds it SIP messages, RTP datagrams and timeouts with the
//! current `Instant`, and sends whatever `poll_transmit` returns. Because
//! wall-clock times for the lead are derived from a base pair
//! (`Instant`, `SystemTime`) fixed at creation, a test can drive a whole call
//! faster than real time and still get exact timestamps.

pub mod transfer;

use crate::intake::lead::{Lead, Outcome, rfc3339};
use crate::intake::script::{Script, ScriptAction, ScriptContext};
use crate::intake::summary::summary;
use crate::media::dtmf::{DtmfEvent, DtmfMerger, DtmfSource, parse_info};
use crate::media::prompt::PromptSet;
use crate::media::recorder::Audio;
use crate::media::rtp::{MediaEvent, MediaSession, MediaStats, RtpPacket};
use crate::media::vad::VoiceDetector;
use crate::route::junk::{CallerFacts, JunkAction, JunkReason};
use crate::route::line::Line;
use crate::sip::dialog::{DialogConfig, DialogEvent, EndedBy, SipTransmit, UasDialog};
use crate::sip::message::{Request, Response};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use transfer::{Transfer, TransferAction, TransferRun};

/// Something for the runtime to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    Sip(SipTransmit),
    Rtp(RtpPacket),
}

/// What the call reports to the runtime.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// Log-worthy progress, one line each (the runtime logs it at info).
    Progress(&'static str, String),
    /// For the debug log: what is routine on many calls (RTP latching onto a
    /// NAT'd caller's address), worth a line only when looking closely.
    Detail(&'static str, String),
    /// The script asked for a prompt that is not loaded (a config problem): skipped.
    PromptMissing(String),
    /// The call has just arrived: who is calling and why it was forwarded.
    /// Also for a junk caller (`lead.junk.is_junk`): the runtime keeps it as
    /// the record that the call began (a restart closes the lead from it) but
    /// delivers it nowhere, so nothing texts a blocklisted or spoofed number back.
    Missed(Box<Lead>),
    /// A `transfer` step handed the caller over: the lead so far, with its `transfer`.
    Transferred(Box<Lead>),
    /// The next settled block of the voice answer being spoken, `offset`
    /// samples into it (0: a new answer). The runtime writes it ahead, and a
    /// [`CallEvent::Recording`] with `spilled` samples starts with these blocks.
    /// An answer dropped before it was saved leaves blocks nothing claims:
    /// the runtime removes them when the call ends.
    AnswerAudio { offset: usize, samples: Audio },
    /// Audio to write to `file` under the recordings directory, before the lead goes out.
    Recording {
        file: String,
        /// The recording after its first `spilled` samples (the answer's
        /// [`CallEvent::AnswerAudio`] blocks, which come first).
        samples: Audio,
        spilled: usize,
        /// The `ask` step whose answer it is; `None` for the whole call's recording.
        answer: Option<String>,
    },
    /// The finished lead: write it.
    Lead(Box<Lead>),
    /// Something for the runtime to count (its metrics), typed so that no
    /// one parses a progress line.
    Tally(Tally),
}

/// What a call reports for counting, as it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tally {
    /// The 200 OK to the INVITE has just been sent (INVITE→200 latency ends here).
    Answered,
    /// A key press, counted once whichever way it came.
    Digit(DtmfSource),
}

/// The intake side of a call: the line it is for and how to listen.
pub struct Intake {
    /// The script, prompts, schedule and junk rules the call runs with.
    pub line: Arc<Line>,
    /// Needed when the program listens for speech.
    pub vad: Option<Box<dyn VoiceDetector>>,
    /// Keep the caller's side of the whole call, up to this many seconds (`None`: off).
    pub record_call: Option<Duration>,
}

/// Per-call values that come from outside (randomness, identity, limits).
#[derive(Debug, Clone)]
pub struct CallSetup {
    pub dialog: DialogConfig,
    pub lead_id: String,
    pub received_at: SystemTime,
    pub max_duration: Duration,
    /// RTP SSRC, first sequence number and first timestamp (random per RFC 3550).
    pub rtp_seed: (u32, u16, u32),
    /// The source address is known to be real (see `Lead::source_verified`).
    pub source_verified: bool,
    /// `(reference, offset)`: start the packet clock `offset` into a 20 ms
    /// frame counted from `reference` (see [`MediaSession::start_in_phase`]);
    /// `None` starts it at the ACK.
    pub pacing_phase: Option<(Instant, Duration)>,
}

pub struct Call {
    dialog: UasDialog,
    media: Option<MediaSession>,
    script: Script,
    prompts: Arc<PromptSet>,
    lead: Option<Lead>,
    /// What the line's junk rules said at the INVITE (`None`: clean).
    junk_action: Option<JunkAction>,
    /// The run of each `transfer` step so far, the current one last: an
    /// earlier step's target may still take the call (a late 2xx NOTIFY).
    transfers: Vec<TransferRun>,
    base: (Instant, SystemTime),
    setup: CallSetup,
    answered: bool,
    /// We hung up before the script finished (shutdown, maximum duration).
    interrupted: bool,
    dtmf: DtmfMerger,
    /// The whole call's caller audio, when recorded, and its cap in samples.
    call_audio: Option<(Audio, usize)>,
    deadline: Instant,
    transmits: VecDeque<Transmit>,
    events: VecDeque<CallEvent>,
}

impl Call {
    pub fn new(now: Instant, invite: Request, setup: CallSetup, intake: Intake) -> Call {
        let line = intake.line;
        let mut lead = Lead::from_invite(setup.lead_id.clone(), &invite, setup.received_at, setup.dialog.transport);
        lead.source_verified = setup.source_verified;
        lead.line = line.name.clone();
        lead.schedule = line.schedule.as_ref().map(|s| s.state_at(setup.received_at));
        let facts = CallerFacts::from_invite(&invite);
        lead.caller.verstat = facts.verstat;
        lead.caller.attestation = facts.attestation;
        let verdict = line.junk.judge(&facts);
        lead.junk = verdict.junk;
        let caller_number =
            lead.caller.asserted.as_ref().and_then(|a| a.number.clone()).or_else(|| lead.caller.number.clone());
        let ctx = ScriptContext {
            recording_prefix: setup.lead_id.clone(),
            caller_number,
            schedule: lead.schedule,
            silent_after: line.junk.silent_after,
            goodbye_prompt: line.junk.goodbye_prompt.clone(),
        };
        let script = Script::new(line.program.clone(), intake.vad, ctx);
        let prompts = line.prompts.clone();
        let call_audio = intake.record_call.map(|d| (Audio::new(None), (d.as_millis() as usize) * 8));
        let dialog = UasDialog::new(now, invite, setup.dialog.clone());
        let mut call = Call {
            dialog,
            media: None,
            script,
            prompts,
            lead: Some(lead),
            junk_action: verdict.action,
            transfers: Vec::new(),
            base: (now, setup.received_at),
            deadline: now + setup.max_duration,
            setup,
            answered: false,
            interrupted: false,
            dtmf: DtmfMerger::default(),
            call_audio,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        call.progress("invite", format!("INVITE received on line {}, ringing", line.name));
        if let Some(lead) = &call.lead {
            let mut snapshot = lead.clone();
            snapshot.outcome = Outcome::Ringing;
            snapshot.summary = summary(&snapshot, &line.program);
            call.events.push_back(CallEvent::Missed(Box::new(snapshot)));
        }
        if let Some(lead) = call.lead.as_ref().filter(|l| l.junk.is_junk) {
            let detail = format!("junk caller {:?}: {:?}", lead.junk.reasons, call.junk_action);
            call.progress("junk", detail);
        }
        if call.junk_action == Some(JunkAction::Reject) {
            call.dialog.decline(now, "junk caller");
        }
        call.process(now);
        call
    }

    fn wall(&self, now: Instant) -> SystemTime {
        self.base.1 + now.saturating_duration_since(self.base.0)
    }

    fn progress(&mut self, what: &'static str, detail: String) {
        self.events.push_back(CallEvent::Progress(what, detail));
    }

    pub fn handle_sip_request(&mut self, now: Instant, req: Request) {
        self.dialog.handle_request(now, req);
        self.process(now);
    }

    pub fn handle_sip_response(&mut self, now: Instant, resp: Response) {
        self.dialog.handle_response(now, resp);
        self.process(now);
    }

    pub fn handle_rtp(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if let Some(m) = self.media.as_mut() {
            let audio = m.handle_rtp(now, from, data);
            if !audio.is_empty() {
                self.script.handle_audio(now, audio);
                if let Some((rec, cap)) = self.call_audio.as_mut() {
                    let room = cap.saturating_sub(rec.len()).min(audio.len());
                    rec.push(&audio[..room]);
                }
            }
            // Only a digit or a script decision needs the machines run now; plain audio waits for the next tick.
            if m.has_events() || self.script.has_actions() {
                self.process(now);
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.deadline && self.lead.is_some() {
            self.deadline = now + Duration::from_secs(3600);
            self.interrupted = true;
            self.dialog.hangup(now, EndedBy::Timeout, "maximum call duration reached");
        }
        self.dialog.handle_timeout(now);
        if let Some(m) = self.media.as_mut() {
            m.handle_timeout(now);
        }
        self.script.handle_timeout(now);
        for t in &mut self.transfers {
            t.handle_timeout(now);
        }
        self.process(now);
    }

    /// Hang up from our side before the script ends (shutdown).
    pub fn hangup(&mut self, now: Instant, detail: &str) {
        self.interrupted = true;
        self.dialog.hangup(now, EndedBy::Agent, detail);
        self.process(now);
    }

    /// Run the three machines against each other until nothing changes.
    fn process(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(ev) = self.dialog.poll_event() {
                progressed = true;
                self.on_dialog_event(now, ev);
            }
            while let Some(action) = self.script.poll_action() {
                progressed = true;
                match action {
                    ScriptAction::Play(name) => match (self.prompts.get(&name), self.media.as_mut()) {
                        (Some(p), Some(m)) => {
                            m.play(p);
                            self.events.push_back(CallEvent::Progress("play", format!("playing prompt {name}")));
                        }
                        (None, _) => {
                            self.events.push_back(CallEvent::PromptMissing(name.clone()));
                            self.script.handle_prompt_finished(now, &name);
                        }
                        (_, None) => {}
                    },
                    ScriptAction::StopPlayback => {
                        if let Some(m) = self.media.as_mut() {
                            m.stop_playback();
                        }
                        self.progress("barge_in", format!("prompt stopped in step {}", self.script.current_step()));
                    }
                    ScriptAction::AnswerAudio { offset, samples } => {
                        self.events.push_back(CallEvent::AnswerAudio { offset, samples });
                    }
                    ScriptAction::SaveRecording { file, samples, spilled, step } => {
                        let ms = (spilled + samples.len()) / 8;
                        self.progress("answer", format!("voice answer {file}, {ms} ms of audio"));
                        self.events.push_back(CallEvent::Recording { file, samples, spilled, answer: Some(step) });
                    }
                    ScriptAction::Transfer { targets, timeout } => {
                        self.progress("transfer", format!("transferring to {}", targets.join(", ")));
                        self.transfers.push(TransferRun::new(now, targets, timeout));
                    }
                    ScriptAction::Hangup => self.dialog.hangup(now, EndedBy::Agent, "script finished"),
                }
            }
            while let Some(action) = self.transfers.iter_mut().find_map(|t| t.poll_action()) {
                progressed = true;
                self.on_transfer_action(now, action);
            }
            while let Some(ev) = self.media.as_mut().and_then(|m| m.poll_event()) {
                progressed = true;
                match ev {
                    MediaEvent::PromptFinished(name) => self.script.handle_prompt_finished(now, &name),
                    MediaEvent::Dtmf(d) => self.on_dtmf(now, d),
                    MediaEvent::Latched { from, sdp } => self
                        .events
                        .push_back(CallEvent::Detail("latched", format!("RTP latched onto {from} (SDP said {sdp:?})"))),
                }
            }
            if !progressed {
                break;
            }
        }
        while let Some(t) = self.dialog.poll_transmit() {
            self.transmits.push_back(Transmit::Sip(t));
        }
        if let Some(m) = self.media.as_mut() {
            while let Some(p) = m.poll_transmit() {
                self.transmits.push_back(Transmit::Rtp(p));
            }
        }
    }

    fn on_transfer_action(&mut self, now: Instant, action: TransferAction) {
        match action {
            TransferAction::Refer(target) => {
                let sent = self.dialog.refer(now, &target);
                self.progress("refer", format!("REFER to {target}: {sent:?}"));
                if let Some(t) = self.transfers.last_mut() {
                    t.referred(now, sent);
                }
            }
            TransferAction::Transferred => {
                self.progress("transferred", "the target took the call; hanging up our leg".into());
                for t in &mut self.transfers {
                    t.supersede();
                }
                self.script.handle_transfer_done(now, true);
                if let Some(mut snapshot) = self.lead.clone() {
                    snapshot.transfer = self.transfer_report();
                    snapshot.outcome = Outcome::Transferred;
                    snapshot.answers = self.script.answers().clone();
                    snapshot.summary = summary(&snapshot, self.script.program());
                    self.events.push_back(CallEvent::Transferred(Box::new(snapshot)));
                }
                if let Some(m) = self.media.as_mut() {
                    m.stop_playback();
                }
                // After the 200 to the final NOTIFY, which the dialog has queued already (RFC 5589 §6.1).
                self.dialog.hangup(now, EndedBy::Agent, "transferred");
            }
            TransferAction::Failed => {
                self.progress("transfer_failed", "no target took the call; the script goes on".into());
                self.script.handle_transfer_done(now, false);
            }
        }
    }

    fn on_dialog_event(&mut self, now: Instant, ev: DialogEvent) {
        match ev {
            DialogEvent::Answered => {
                self.answered = true;
                let at = rfc3339(self.wall(now));
                if let Some(l) = self.lead.as_mut() {
                    l.answered_at = Some(at);
                }
                self.progress("answered", "200 OK sent".into());
                self.events.push_back(CallEvent::Tally(Tally::Answered));
            }
            DialogEvent::Confirmed { negotiated, remote_rtp, direction } => {
                let (ssrc, seq, ts) = self.setup.rtp_seed;
                let mut m = MediaSession::new(negotiated.law, remote_rtp, ssrc, seq, ts);
                m.update(negotiated.law, remote_rtp, direction.reversed().sends());
                m.set_telephone_event(negotiated.telephone_event);
                self.script.set_law(negotiated.law);
                if let Some((rec, _)) = self.call_audio.as_mut()
                    && rec.is_empty()
                {
                    *rec = Audio::new(Some(negotiated.law));
                }
                match self.setup.pacing_phase {
                    Some((reference, offset)) => m.start_in_phase(now, reference, offset),
                    None => m.start(now),
                }
                self.media = Some(m);
                if let Some(l) = self.lead.as_mut() {
                    l.codec = Some(negotiated.law.encoding_name().to_string());
                    // The ACK carried our tag: the caller receives what we send.
                    l.source_verified = true;
                }
                self.progress(
                    "confirmed",
                    format!("ACK received; media {} to {remote_rtp:?}", negotiated.law.encoding_name()),
                );
                if self.junk_action == Some(JunkAction::Goodbye) {
                    self.script.decline(now);
                } else {
                    self.script.handle_answered(now);
                }
            }
            DialogEvent::Refer { id, event } => {
                self.progress("notify", format!("transfer news for REFER {id}: {event:?}"));
                for t in &mut self.transfers {
                    t.handle_refer_event(now, id, event.clone());
                }
            }
            DialogEvent::MediaChanged { negotiated, remote_rtp, direction } => {
                if let Some(m) = self.media.as_mut() {
                    m.update(negotiated.law, remote_rtp, direction.reversed().sends());
                    m.set_telephone_event(negotiated.telephone_event);
                }
                self.progress("reinvite", format!("media now {remote_rtp:?} {direction:?}"));
            }
            DialogEvent::Info { content_type, body } => match parse_info(&content_type, &body, now) {
                Some(d) => self.on_dtmf(now, d),
                None => self.progress("info", format!("INFO {content_type} (not a digit)")),
            },
            DialogEvent::Ended { by, detail } => {
                for t in self.transfers.iter_mut().filter(|t| !t.is_done()) {
                    t.handle_hangup();
                }
                self.script.handle_call_ended(now);
                // Answers cut short by the hang-up still get their recordings, before the lead.
                while let Some(a) = self.script.poll_action() {
                    match a {
                        ScriptAction::AnswerAudio { offset, samples } => {
                            self.events.push_back(CallEvent::AnswerAudio { offset, samples })
                        }
                        ScriptAction::SaveRecording { file, samples, spilled, step } => {
                            self.events.push_back(CallEvent::Recording { file, samples, spilled, answer: Some(step) })
                        }
                        _ => {}
                    }
                }
                let whole_call = self.call_audio.take().filter(|(rec, _)| !rec.is_empty()).map(|(rec, _)| {
                    let file = format!("{}-call.wav", self.setup.lead_id);
                    self.events.push_back(CallEvent::Recording {
                        file: file.clone(),
                        samples: rec,
                        spilled: 0,
                        answer: None,
                    });
                    file
                });
                if let Some(m) = self.media.as_mut() {
                    m.stop();
                }
                let outcome = match by {
                    _ if self.junk_action == Some(JunkAction::Reject) => Outcome::Declined,
                    EndedBy::Cancel => Outcome::HungUpWhileRinging,
                    EndedBy::Error if !self.answered => Outcome::Rejected,
                    EndedBy::Timeout if !self.dialog.is_confirmed() && self.media.is_none() => Outcome::NoAck,
                    _ if self.interrupted && !self.script.completed() => {
                        Outcome::InterruptedDuring(self.script.current_step().to_string())
                    }
                    _ => self.script.outcome(),
                };
                let ended = self.wall(now);
                if let Some(mut lead) = self.lead.take() {
                    lead.ended_at = Some(rfc3339(ended));
                    lead.duration_ms = Some(now.saturating_duration_since(self.base.0).as_millis() as u64);
                    lead.ended_by = Some(by);
                    lead.outcome = outcome;
                    lead.answers = self.script.answers().clone();
                    lead.recording = whole_call;
                    lead.transfer = self.transfer_report();
                    if self.script.silent() {
                        lead.junk.is_junk = true;
                        lead.junk.reasons.push(JunkReason::Silent);
                    }
                    lead.summary = summary(&lead, self.script.program());
                    self.progress("ended", format!("call ended by {by:?}: {detail}; outcome {}", lead.outcome));
                    self.events.push_back(CallEvent::Lead(Box::new(lead)));
                }
            }
        }
    }

    /// The lead's `transfer`: every attempt of every transfer step of the call.
    fn transfer_report(&self) -> Option<Transfer> {
        let attempts = self.transfers.iter().filter_map(|t| t.report()).flat_map(|t| t.attempts).collect();
        Transfer::of(attempts)
    }

    /// A key press from any of the three sources, counted once.
    fn on_dtmf(&mut self, now: Instant, d: DtmfEvent) {
        if let Some(d) = self.dtmf.handle(d) {
            if let Some(l) = self.lead.as_mut() {
                l.dtmf.push(d.digit);
            }
            self.progress("dtmf", format!("digit {} ({:?})", d.digit, d.source));
            self.events.push_back(CallEvent::Tally(Tally::Digit(d.source)));
            self.script.handle_dtmf(now, d.digit);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.dialog.poll_timeout();
        if let Some(m) = &self.media
            && let Some(mt) = m.poll_timeout()
        {
            t = Some(t.map_or(mt, |x| x.min(mt)));
        }
        if self.lead.is_some() {
            t = Some(t.map_or(self.deadline, |x| x.min(self.deadline)));
        }
        if let Some(st) = self.script.poll_timeout() {
            t = Some(t.map_or(st, |x| x.min(st)));
        }
        for tt in self.transfers.iter().filter_map(|tr| tr.poll_timeout()) {
            t = Some(t.map_or(tt, |x| x.min(tt)));
        }
        t
    }

    /// The dialog is over and the lead has been handed out.
    pub fn is_finished(&self) -> bool {
        self.dialog.is_terminated() && self.lead.is_none()
    }

    pub fn media_stats(&self) -> Option<&MediaStats> {
        self.media.as_ref().map(|m| &m.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::transfer::TransferStatus;
    use crate::intake::program::Program;
    use crate::media::g711::Law;
    use crate::media::prompt::Prompt;
    use crate::route::junk::{JunkConfig, JunkRules};
    use crate::sip::Transport;
    use crate::sip::identity::Verstat;
    use crate::sip::message::{Incoming, read_message};
    use crate::sip::testing;

    const CALLER: &str = "127.0.0.1:5070";

    fn msg(text: &str) -> Incoming {
        read_message(text.as_bytes(), CALLER.parse().unwrap())
    }

    fn req(method: &str, cseq: u32, to_tag: bool, body: &str) -> Request {
        testing::request(method, cseq).to_tag(to_tag.then_some("local")).sdp(body).read()
    }

    fn offer(extra: &str) -> String {
        format!("v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n{extra}")
    }

    fn setup() -> CallSetup {
        CallSetup {
            dialog: DialogConfig {
                answer_after: Duration::from_millis(1000),
                t1: Duration::from_millis(500),
                t2: Duration::from_millis(4000),
                provisional: true,
                local_sip: "127.0.0.1:5060".parse().unwrap(),
                transport: Transport::Udp,
                local_rtp: "127.0.0.1:20000".parse().unwrap(),
                local_tag: "local".into(),
                seed: 1,
            },
            lead_id: "lead-1".into(),
            received_at: SystemTime::UNIX_EPOCH,
            max_duration: Duration::from_secs(600),
            rtp_seed: (7, 100, 1000),
            source_verified: false,
            pacing_phase: None,
        }
    }

    fn plain_intake() -> Intake {
        let program = Program::from_toml(
            "[[step]]\nname = \"greeting\"\nkind = \"play\"\nprompt = \"greeting\"\n\
             [[step]]\nname = \"goodbye\"\nkind = \"goodbye\"\nprompt = \"goodbye\"\n",
        )
        .unwrap();
        intake(program, JunkConfig { silent_after_secs: 0, ..Default::default() })
    }

    fn intake(program: Program, junk: JunkConfig) -> Intake {
        let line = Line {
            name: "default".into(),
            matcher: Default::default(),
            program: Arc::new(program),
            prompts: prompts(),
            schedule: None,
            junk: Arc::new(JunkRules::compile(&junk).unwrap()),
        };
        Intake { line: Arc::new(line), vad: None, record_call: None }
    }

    fn prompts() -> Arc<PromptSet> {
        let mut set = PromptSet::default();
        set.insert(Prompt::from_pcm("greeting", vec![1000; 160 * 100])); // 2 s
        set.insert(Prompt::from_pcm("goodbye", vec![-1000; 160 * 50])); // 1 s
        Arc::new(set)
    }

    struct Run {
        rtp: Vec<Vec<u8>>,
        sip: Vec<String>,
        leads: Vec<Lead>,
        /// Whole SIP messages sent, and the events other than leads.
        sent: Vec<String>,
        events: Vec<CallEvent>,
    }

    impl Run {
        fn new() -> Run {
            Run { rtp: vec![], sip: vec![], leads: vec![], sent: vec![], events: vec![] }
        }
    }

    /// Drive the call by its own deadlines until `until`, collecting output.
    fn drive(call: &mut Call, now: &mut Instant, until: Instant, run: &mut Run) {
        loop {
            while let Some(t) = call.poll_transmit() {
                match t {
                    Transmit::Rtp(p) => run.rtp.push(p.bytes().to_vec()),
                    Transmit::Sip(s) => {
                        let text = String::from_utf8(s.bytes).unwrap();
                        run.sip.push(text.lines().next().unwrap().to_string());
                        run.sent.push(text);
                    }
                }
            }
            while let Some(ev) = call.poll_event() {
                match ev {
                    CallEvent::Lead(l) => run.leads.push(*l),
                    other => run.events.push(other),
                }
            }
            match call.poll_timeout() {
                Some(t) if t <= until => {
                    *now = t.max(*now);
                    call.handle_timeout(*now);
                }
                _ => {
                    *now = until;
                    return;
                }
            }
        }
    }

    /// A call answered after its 1 s ring and acknowledged at `t0 + 1 s`.
    fn confirmed_call(t0: Instant) -> (Call, Instant, Run) {
        let mut now = t0;
        let mut run = Run::new();
        let mut call = Call::new(now, req("INVITE", 1, false, &offer("")), setup(), plain_intake());
        drive(&mut call, &mut now, t0 + Duration::from_millis(1000), &mut run);
        call.handle_sip_request(now, req("ACK", 1, true, ""));
        (call, now, run)
    }

    #[test]
    fn a_whole_call_runs_faster_than_real_time() {
        let t0 = Instant::now();
        let (mut call, mut now, mut run) = confirmed_call(t0);
        drive(&mut call, &mut now, t0 + Duration::from_secs(10), &mut run);
        assert_eq!(run.sip[..3], ["SIP/2.0 100 Trying", "SIP/2.0 180 Ringing", "SIP/2.0 200 OK"]);
        assert!(run.sip[3].starts_with("BYE sip:caller@127.0.0.1:5070"), "{:?}", run.sip);
        // 3 s of prompts = 150 packets, greeting then goodbye.
        assert_eq!(run.rtp.len(), 150);
        let payload: Vec<u8> = run.rtp.iter().flat_map(|p| p[12..].to_vec()).collect();
        let p = prompts();
        let mut expected = p.get("greeting").unwrap().encoded(Law::Pcmu).to_vec();
        expected.extend_from_slice(p.get("goodbye").unwrap().encoded(Law::Pcmu));
        assert_eq!(payload, expected);
        let lead = &run.leads[0];
        assert_eq!(lead.outcome, Outcome::Completed);
        assert!(lead.source_verified, "the ACK proved the caller's address");
        assert_eq!(lead.ended_by, Some(EndedBy::Agent));
        assert_eq!(lead.answered_at.as_deref(), Some("1970-01-01T00:00:01.000Z"));
        assert_eq!(lead.ended_at.as_deref(), Some("1970-01-01T00:00:03.980Z"));
        // The BYE goes with the last frame: 1 s ring + 149 frame intervals.
        assert_eq!(lead.duration_ms, Some(3980));
        let Incoming::Response(ok) = msg(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=local\r\nTo: <sip:c@d>;tag=caller\r\nCall-ID: c1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        ) else {
            panic!()
        };
        // The BYE's CSeq is ours; find it from what was sent and answer it.
        let mut ok = *ok;
        ok.cseq = call.dialog.local_cseq_for_tests();
        call.handle_sip_response(now, ok);
        assert!(call.is_finished());
    }

    #[test]
    fn hold_pauses_the_prompt_and_resume_continues_it() {
        let t0 = Instant::now();
        let (mut call, mut now, mut run) = confirmed_call(t0);
        drive(&mut call, &mut now, t0 + Duration::from_millis(1990), &mut run);
        assert_eq!(run.rtp.len(), 50);
        call.handle_sip_request(now, req("INVITE", 2, true, &offer("a=sendonly\r\n")));
        call.handle_sip_request(now, req("ACK", 2, true, ""));
        drive(&mut call, &mut now, t0 + Duration::from_millis(6990), &mut run);
        assert_eq!(run.rtp.len(), 50, "nothing is sent while held");
        assert!(run.leads.is_empty(), "the call is still up");
        call.handle_sip_request(now, req("INVITE", 3, true, &offer("")));
        call.handle_sip_request(now, req("ACK", 3, true, ""));
        drive(&mut call, &mut now, t0 + Duration::from_secs(20), &mut run);
        assert_eq!(run.rtp.len(), 150, "the rest of the greeting and the goodbye after resuming");
        assert_eq!(run.leads[0].outcome, Outcome::Completed);
    }

    fn rtp(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
        rtp_rs::RtpPacketBuilder::new()
            .payload_type(pt)
            .ssrc(42)
            .sequence(rtp_rs::Seq::from(seq))
            .timestamp(ts)
            .payload(payload)
            .build()
            .unwrap()
    }

    #[test]
    fn digits_from_rfc4733_and_info_reach_the_lead_once_each() {
        let t0 = Instant::now();
        let offer = "v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 0 96\r\na=rtpmap:96 telephone-event/8000\r\n";
        let mut now = t0;
        let mut run = Run::new();
        let mut call = Call::new(now, req("INVITE", 1, false, offer), setup(), plain_intake());
        drive(&mut call, &mut now, t0 + Duration::from_millis(1000), &mut run);
        call.handle_sip_request(now, req("ACK", 1, true, ""));
        let from: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        // "4" on the negotiated type 96: three packets and the end packet three times.
        for (i, d) in [160u16, 320, 480].iter().enumerate() {
            let mut p = vec![4, 10];
            p.extend_from_slice(&d.to_be_bytes());
            call.handle_rtp(now, from, &rtp(96, i as u16, 8000, &p));
        }
        for i in 0..3 {
            call.handle_rtp(now, from, &rtp(96, 3 + i, 8000, &[4, 0x8a, 0x02, 0x80]));
        }
        // The same press reported again over INFO is a duplicate; "2" over INFO is new.
        let info = |cseq: u32, digit: &str| {
            let body = format!("Signal={digit}\r\nDuration=160\r\n");
            testing::request("INFO", cseq).to_tag(Some("local")).body("application/dtmf-relay", &body).read()
        };
        call.handle_sip_request(now, info(2, "4"));
        now += Duration::from_millis(500);
        call.handle_sip_request(now, info(3, "2"));
        // Payload type 0 audio is not searched for tones when telephone-event was negotiated.
        call.handle_sip_request(now, req("BYE", 4, true, ""));
        let until = now + Duration::from_millis(100);
        drive(&mut call, &mut now, until, &mut run);
        assert_eq!(run.leads[0].dtmf, "42");
        // Counted once each, by the way each first came, and the answer once.
        assert_eq!(
            tallies(&run),
            [Tally::Answered, Tally::Digit(DtmfSource::Rfc4733), Tally::Digit(DtmfSource::SipInfo)]
        );
    }

    fn tallies(run: &Run) -> Vec<Tally> {
        run.events.iter().filter_map(|e| if let CallEvent::Tally(t) = e { Some(*t) } else { None }).collect()
    }

    #[test]
    fn in_band_digits_are_heard_when_no_telephone_event_was_negotiated() {
        let t0 = Instant::now();
        let (mut call, mut now, mut run) = confirmed_call(t0);
        let from: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        // "9" for 100 ms at −12 dBFS per tone, as μ-law RTP frames, then silence.
        let mut pcm: Vec<i16> = (0..800)
            .map(|i| {
                let t = i as f32 / 8000.0;
                let v = 0.25 * (2.0 * std::f32::consts::PI * 852.0 * t).sin()
                    + 0.25 * (2.0 * std::f32::consts::PI * 1477.0 * t).sin();
                (v * 32767.0) as i16
            })
            .collect();
        pcm.extend(vec![0i16; 800]);
        for (i, frame) in pcm.chunks(160).enumerate() {
            let payload: Vec<u8> = frame.iter().map(|s| Law::Pcmu.encode(*s)).collect();
            call.handle_rtp(now, from, &rtp(0, i as u16, i as u32 * 160, &payload));
        }
        call.handle_sip_request(now, req("BYE", 2, true, ""));
        let until = now + Duration::from_millis(100);
        drive(&mut call, &mut now, until, &mut run);
        assert_eq!(run.leads[0].dtmf, "9");
        assert_eq!(tallies(&run), [Tally::Answered, Tally::Digit(DtmfSource::InBand)]);
    }

    #[test]
    fn latching_onto_a_natd_caller_is_a_detail_not_progress() {
        let t0 = Instant::now();
        let (mut call, now, _) = confirmed_call(t0);
        while call.poll_event().is_some() {}
        // The SDP said port 4000; the caller's NAT sends from another.
        let natd: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        call.handle_rtp(now, natd, &rtp(0, 1, 160, &[0xff; 160]));
        let events: Vec<CallEvent> = std::iter::from_fn(|| call.poll_event()).collect();
        assert!(
            matches!(&events[..], [CallEvent::Detail("latched", d)] if d.contains("127.0.0.1:40000")),
            "{events:?}"
        );
    }

    /// The `call.missed` leads the call reported, junk or not.
    fn missed_junk(run: &Run) -> Vec<bool> {
        run.events
            .iter()
            .filter_map(|e| if let CallEvent::Missed(l) = e { Some(l.junk.is_junk) } else { None })
            .collect()
    }

    #[test]
    fn a_blocklisted_caller_gets_603_a_junk_lead_and_no_missed_event() {
        let t0 = Instant::now();
        let (mut now, mut run) = (t0, Run::new());
        let program =
            Program::from_toml("[[step]]\nname = \"greeting\"\nkind = \"play\"\nprompt = \"greeting\"\n").unwrap();
        let junk = JunkConfig { block: vec!["+1 555 123 0001".into()], ..Default::default() };
        let mut call = Call::new(now, req("INVITE", 1, false, &offer("")), setup(), intake(program, junk));
        drive(&mut call, &mut now, t0 + Duration::from_millis(10), &mut run);
        assert_eq!(run.sip.last().map(String::as_str), Some("SIP/2.0 603 Decline"), "{:?}", run.sip);
        call.handle_sip_request(now, req("ACK", 1, false, ""));
        drive(&mut call, &mut now, t0 + Duration::from_secs(5), &mut run);
        assert_eq!(missed_junk(&run), [true], "kept, marked junk: the runtime delivers it nowhere");
        let lead = &run.leads[0];
        assert_eq!(lead.outcome, Outcome::Declined);
        assert!(lead.junk.is_junk);
        assert_eq!(lead.junk.reasons, [JunkReason::Blocklisted]);
        assert!(run.rtp.is_empty());
        assert!(call.is_finished());
    }

    #[test]
    fn the_lead_carries_the_stir_shaken_facts_the_junk_rules_judged() {
        let t0 = Instant::now();
        let (mut now, mut run) = (t0, Run::new());
        let invite = testing::invite()
            .headers("P-Asserted-Identity: <sip:+15551230001;verstat=TN-Validation-Failed@127.0.0.1;user=phone>\r\n")
            .sdp(&offer(""))
            .read();
        let program = Program::from_toml("[[step]]\nname = \"h\"\nkind = \"hangup\"\n").unwrap();
        let mut call = Call::new(now, invite, setup(), intake(program, JunkConfig::default()));
        drive(&mut call, &mut now, t0 + Duration::from_millis(1000), &mut run);
        call.handle_sip_request(now, req("ACK", 1, true, ""));
        drive(&mut call, &mut now, t0 + Duration::from_secs(2), &mut run);
        let lead = &run.leads[0];
        assert_eq!((lead.caller.verstat, lead.caller.attestation), (Some(Verstat::Failed), None));
        assert_eq!(lead.junk.reasons, [JunkReason::VerstatFailed]);
    }

    #[test]
    fn a_flagged_caller_runs_the_script_and_a_goodbye_one_hears_only_goodbye() {
        for (action, plays, outcome) in
            [(JunkAction::Flag, 150, Outcome::Completed), (JunkAction::Goodbye, 50, Outcome::Declined)]
        {
            let t0 = Instant::now();
            let (mut now, mut run) = (t0, Run::new());
            let junk = JunkConfig { block: vec!["15551230001".into()], action, ..Default::default() };
            let program = Program::from_toml(
                "[[step]]\nname = \"greeting\"\nkind = \"play\"\nprompt = \"greeting\"\n\
                 [[step]]\nname = \"goodbye\"\nkind = \"goodbye\"\nprompt = \"goodbye\"\n",
            )
            .unwrap();
            let mut call = Call::new(now, req("INVITE", 1, false, &offer("")), setup(), intake(program, junk));
            drive(&mut call, &mut now, t0 + Duration::from_millis(1000), &mut run);
            call.handle_sip_request(now, req("ACK", 1, true, ""));
            drive(&mut call, &mut now, t0 + Duration::from_secs(10), &mut run);
            assert_eq!(run.rtp.len(), plays, "{action:?}");
            assert_eq!(missed_junk(&run), [true]);
            assert_eq!((run.leads[0].outcome.clone(), run.leads[0].junk.is_junk), (outcome, true));
        }
    }

    /// A call whose script greets, then transfers to two targets, and says goodbye when neither takes it.
    fn transfer_call(t0: Instant) -> (Call, Instant, Run) {
        let program = Program::from_toml(
            "[[step]]\nname = \"greeting\"\nkind = \"play\"\nprompt = \"greeting\"\n\
             [[step]]\nname = \"oncall\"\nkind = \"transfer\"\ntargets = [\"sip:tech@10.0.0.9\", \"tel:+15551112222\"]\n\
             timeout_ms = 5000\non_failure = \"sorry\"\n\
             [[step]]\nname = \"sorry\"\nkind = \"goodbye\"\nprompt = \"goodbye\"\n",
        )
        .unwrap();
        let (mut now, mut run) = (t0, Run::new());
        let junk = JunkConfig { silent_after_secs: 0, ..Default::default() };
        let mut call = Call::new(now, req("INVITE", 1, false, &offer("")), setup(), intake(program, junk));
        drive(&mut call, &mut now, t0 + Duration::from_millis(1000), &mut run);
        call.handle_sip_request(now, req("ACK", 1, true, ""));
        // The 2 s greeting, then the REFER.
        drive(&mut call, &mut now, t0 + Duration::from_millis(3100), &mut run);
        (call, now, run)
    }

    /// The CSeq number of the last request with this method that we sent.
    fn sent_cseq(run: &Run, method: &str) -> u32 {
        let msg = run
            .sent
            .iter()
            .rev()
            .find(|m| m.starts_with(method))
            .unwrap_or_else(|| panic!("no {method}: {:?}", run.sip));
        let line = msg.lines().find(|l| l.starts_with("CSeq:")).unwrap();
        line[5..].trim().split(' ').next().unwrap().parse().unwrap()
    }

    fn answer_refer(call: &mut Call, now: Instant, run: &Run, code: u16) {
        let text = format!(
            "SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=local\r\nTo: <sip:c@d>;tag=caller\r\nCall-ID: c1\r\nCSeq: {} REFER\r\nContent-Length: 0\r\n\r\n",
            sent_cseq(run, "REFER")
        );
        let Incoming::Response(r) = msg(&text) else { panic!() };
        call.handle_sip_response(now, *r);
    }

    fn notify(cseq: u32, sipfrag: &str, state: &str) -> Request {
        testing::request("NOTIFY", cseq)
            .to_tag(Some("local"))
            .headers(&format!("Event: refer\r\nSubscription-State: {state}\r\n"))
            .body("message/sipfrag", sipfrag)
            .read()
    }

    #[test]
    fn a_transfer_that_works_ends_our_leg_with_bye_after_the_final_notify() {
        let t0 = Instant::now();
        let (mut call, mut now, mut run) = transfer_call(t0);
        assert!(run.sip.last().unwrap().starts_with("REFER sip:caller@127.0.0.1:5070"), "{:?}", run.sip);
        let refer = run.sent.last().unwrap().clone();
        assert!(refer.contains("Refer-To: <sip:tech@10.0.0.9>"), "{refer}");
        assert!(refer.contains("Referred-By: "), "{refer}");
        answer_refer(&mut call, now, &run, 202);
        call.handle_sip_request(now, notify(2, "SIP/2.0 100 Trying\r\n", "active;expires=60"));
        call.handle_sip_request(now, notify(3, "SIP/2.0 200 OK\r\n", "terminated;reason=noresource"));
        let until = now + Duration::from_millis(100);
        drive(&mut call, &mut now, until, &mut run);
        let tail: Vec<&str> = run.sip.iter().rev().take(3).rev().map(String::as_str).collect();
        assert_eq!(tail[0], "SIP/2.0 200 OK");
        assert_eq!(tail[1], "SIP/2.0 200 OK");
        assert!(tail[2].starts_with("BYE "), "the BYE only after the 200 to the final NOTIFY: {:?}", run.sip);
        assert!(run.events.iter().any(|e| matches!(e, CallEvent::Transferred(l) if l.outcome == Outcome::Transferred)));
        let lead = &run.leads[0];
        assert_eq!(lead.outcome, Outcome::Transferred);
        let t = lead.transfer.as_ref().unwrap();
        assert_eq!(
            (t.status, t.sip_code, t.target.as_str()),
            (TransferStatus::Transferred, Some(200), "sip:tech@10.0.0.9")
        );
    }

    #[test]
    fn a_failed_transfer_tries_the_next_target_then_goes_on_with_audio() {
        let t0 = Instant::now();
        let (mut call, mut now, mut run) = transfer_call(t0);
        // The first target: 202, then a busy NOTIFY. The second: REFER refused.
        answer_refer(&mut call, now, &run, 202);
        call.handle_sip_request(now, notify(2, "SIP/2.0 486 Busy Here\r\n", "terminated;reason=noresource"));
        let until = now + Duration::from_millis(50);
        drive(&mut call, &mut now, until, &mut run);
        let second = run.sent.last().unwrap().clone();
        assert!(second.starts_with("REFER ") && second.contains("Refer-To: <tel:+15551112222>"), "{second}");
        let rtp_before = run.rtp.len();
        answer_refer(&mut call, now, &run, 405);
        let until = now + Duration::from_secs(5);
        drive(&mut call, &mut now, until, &mut run);
        assert_eq!(run.rtp.len() - rtp_before, 50, "on_failure's goodbye plays to the caller");
        assert!(run.sip.last().unwrap().starts_with("BYE "), "after the goodbye, not on the failure");
        let lead = &run.leads[0];
        assert_eq!(lead.outcome, Outcome::Completed);
        let t = lead.transfer.as_ref().unwrap();
        let attempts: Vec<(TransferStatus, Option<u16>)> = t.attempts.iter().map(|a| (a.status, a.sip_code)).collect();
        assert_eq!(attempts, [(TransferStatus::Failed, Some(486)), (TransferStatus::Rejected, Some(405))]);
        assert_eq!(t.status, TransferStatus::Rejected);
    }

    #[test]
    fn a_target_that_answers_late_still_takes_the_call_and_our_leg_ends() {
        let t0 = Instant::now();
        let (mut call, mut now, mut run) = transfer_call(t0);
        // The first target: 202, ringing past its 5 s; the second refuses; on_failure starts.
        answer_refer(&mut call, now, &run, 202);
        call.handle_sip_request(now, notify(2, "SIP/2.0 180 Ringing\r\n", "active;expires=60"));
        let until = now + Duration::from_millis(5100);
        drive(&mut call, &mut now, until, &mut run);
        answer_refer(&mut call, now, &run, 405);
        let until = now + Duration::from_millis(300);
        drive(&mut call, &mut now, until, &mut run);
        assert!(!run.sip.last().unwrap().starts_with("BYE"), "the goodbye plays: {:?}", run.sip);
        // Then the first target answers: the caller is with it.
        call.handle_sip_request(now, notify(3, "SIP/2.0 200 OK\r\n", "terminated;reason=noresource"));
        let until = now + Duration::from_millis(100);
        drive(&mut call, &mut now, until, &mut run);
        assert!(run.sip.last().unwrap().starts_with("BYE "), "{:?}", run.sip);
        let lead = &run.leads[0];
        assert_eq!(lead.outcome, Outcome::Transferred);
        let t = lead.transfer.as_ref().unwrap();
        assert_eq!((t.status, t.target.as_str()), (TransferStatus::Transferred, "sip:tech@10.0.0.9"));
        let attempts: Vec<TransferStatus> = t.attempts.iter().map(|a| a.status).collect();
        assert_eq!(attempts, [TransferStatus::Transferred, TransferStatus::Rejected]);
        assert_eq!(run.events.iter().filter(|e| matches!(e, CallEvent::Transferred(_))).count(), 1);
    }

    #[test]
    fn an_earlier_transfer_steps_target_answering_late_still_takes_the_call() {
        // First step: tech, 1 s. Its failure plays the greeting and tries the backup in a second step.
        let program = Program::from_toml(
            "[[step]]\nname = \"first\"\nkind = \"transfer\"\ntargets = [\"sip:tech@10.0.0.9\"]\ntimeout_ms = 1000\non_failure = \"wait\"\n\
             [[step]]\nname = \"wait\"\nkind = \"play\"\nprompt = \"greeting\"\n\
             [[step]]\nname = \"second\"\nkind = \"transfer\"\ntargets = [\"sip:backup@10.0.0.8\"]\ntimeout_ms = 20000\n",
        )
        .unwrap();
        let t0 = Instant::now();
        let (mut now, mut run) = (t0, Run::new());
        let junk = JunkConfig { silent_after_secs: 0, ..Default::default() };
        let mut call = Call::new(now, req("INVITE", 1, false, &offer("")), setup(), intake(program, junk));
        drive(&mut call, &mut now, t0 + Duration::from_millis(1000), &mut run);
        call.handle_sip_request(now, req("ACK", 1, true, ""));
        let until = now + Duration::from_millis(10);
        drive(&mut call, &mut now, until, &mut run);
        let first = sent_cseq(&run, "REFER");
        answer_refer(&mut call, now, &run, 202);
        // Its second passes, the greeting plays, the second step REFERs the backup.
        let until = now + Duration::from_millis(3200);
        drive(&mut call, &mut now, until, &mut run);
        assert_ne!(sent_cseq(&run, "REFER"), first, "{:?}", run.sip);
        answer_refer(&mut call, now, &run, 202);
        // Now the tech answers: the first REFER's subscription says 200.
        let late = testing::request("NOTIFY", 7)
            .to_tag(Some("local"))
            .headers(&format!("Event: refer;id={first}\r\nSubscription-State: terminated\r\n"))
            .body("message/sipfrag", "SIP/2.0 200 OK\r\n")
            .read();
        call.handle_sip_request(now, late);
        let until = now + Duration::from_millis(100);
        drive(&mut call, &mut now, until, &mut run);
        assert!(run.sip.last().unwrap().starts_with("BYE "), "{:?}", run.sip);
        let lead = &run.leads[0];
        assert_eq!(lead.outcome, Outcome::Transferred);
        let t = lead.transfer.as_ref().unwrap();
        assert_eq!((t.status, t.target.as_str()), (TransferStatus::Transferred, "sip:tech@10.0.0.9"));
        let attempts: Vec<(&str, TransferStatus)> = t.attempts.iter().map(|a| (a.target.as_str(), a.status)).collect();
        assert_eq!(
            attempts,
            [("sip:tech@10.0.0.9", TransferStatus::Transferred), ("sip:backup@10.0.0.8", TransferStatus::Failed)]
        );
    }

    #[test]
    fn a_caller_hanging_up_mid_transfer_ends_it_cleanly() {
        let t0 = Instant::now();
        let (mut call, mut now, mut run) = transfer_call(t0);
        answer_refer(&mut call, now, &run, 202);
        call.handle_sip_request(now, req("BYE", 5, true, ""));
        let until = now + Duration::from_secs(30);
        drive(&mut call, &mut now, until, &mut run);
        let lead = &run.leads[0];
        assert_eq!(lead.outcome, Outcome::HungUpDuring("oncall".into()));
        assert_eq!(lead.transfer.as_ref().unwrap().status, TransferStatus::HungUp);
        assert!(!run.sip.iter().any(|l| l.starts_with("BYE")), "no BYE of ours: {:?}", run.sip);
        assert!(call.is_finished());
    }

    #[test]
    fn caller_hanging_up_mid_greeting_names_the_step() {
        let t0 = Instant::now();
        let (mut call, mut now, mut run) = confirmed_call(t0);
        drive(&mut call, &mut now, t0 + Duration::from_millis(1500), &mut run);
        call.handle_sip_request(now, req("BYE", 2, true, ""));
        drive(&mut call, &mut now, t0 + Duration::from_millis(1600), &mut run);
        assert_eq!(run.leads[0].outcome, Outcome::HungUpDuring("greeting".into()));
        assert_eq!(run.leads[0].ended_by, Some(EndedBy::Caller));
        assert!(call.is_finished());
    }
}
