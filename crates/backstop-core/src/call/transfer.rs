//! The walk over a `transfer` step's targets (a "waterfall": the on-call
//! tech, then the backup), Sans-IO and without a dialog inside: the call
//! carries out its [`TransferAction`]s on the dialog (`UasDialog::refer`,
//! `hangup`) and feeds it the dialog's news ([`DialogEvent::Refer`]).
//!
//! Each target gets one REFER and `per_target` from the REFER going out
//! until a final NOTIFY. Its attempt ends as:
//! * `Transferred`: a NOTIFY with a 2xx sipfrag. The walk is over, and the
//!   call hangs up its leg (BYE after the 200 to that NOTIFY, RFC 5589 §6.1).
//! * `Rejected`: the REFER was answered 3xx–6xx (or 408 by Timer F), or could
//!   not be sent at all (no code).
//! * `Failed`: a NOTIFY with a 3xx–6xx sipfrag, or one that terminated the
//!   subscription with no final status (a 1xx sipfrag, or none readable).
//! * `Timeout`: no final NOTIFY within `per_target` (the peers' "202 then
//!   silence").
//! * `HungUp`: the caller hung up while it ran; the walk is over.
//!
//! An attempt's `sip_code` is the last SIP status heard for it: the REFER's
//! answer (202), then each sipfrag's. So a timeout after "202, NOTIFY 180"
//! reads 180, after a bare 202 reads 202, and with nothing heard is `None`.
//!
//! A failed target is never a reason to hang up: the next one is tried, and
//! after the last the step's `on_failure` runs ([`TransferAction::Failed`]).
//!
//! Two things reach past the current target:
//! * The dialog has one REFER transaction at a time. A target whose REFER
//!   was never answered (not even 202) times out while the REFER is still
//!   being resent; the next target's REFER then waits (`Busy`) until the
//!   old one is answered or given up (Timer F), instead of being counted
//!   as refused: a peer that drops REFERs still gets the whole waterfall.
//! * A target that timed out may still take the call: its subscription
//!   goes on. A 2xx NOTIFY for any REFER of the run, even after the run
//!   failed over to `on_failure`, means the caller is with that target:
//!   the attempt becomes `Transferred` and the call hangs up its leg.
//!   Other news of an earlier attempt is ignored.
//!
//! [`DialogEvent::Refer`]: crate::sip::dialog::DialogEvent::Refer

use crate::sip::dialog::{ReferError, ReferEvent};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How one target's attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferStatus {
    Transferred,
    Failed,
    Timeout,
    Rejected,
    HungUp,
}

/// One target tried. Fields in alphabetical order (the lead's keys go out in declaration order).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransferAttempt {
    pub sip_code: Option<u16>,
    pub status: TransferStatus,
    pub target: String,
}

/// The lead's `transfer`: the outcome (the last attempt's target, status
/// and code) and every attempt. Alphabetical fields.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Transfer {
    pub attempts: Vec<TransferAttempt>,
    pub sip_code: Option<u16>,
    pub status: TransferStatus,
    pub target: String,
}

/// What the walker asks of the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferAction {
    /// Send a REFER to this target (call `UasDialog::refer` and tell the
    /// walker the id with [`TransferRun::referred`]).
    Refer(String),
    /// The transfer succeeded: hang up (BYE) now.
    Transferred,
    /// Every target failed: go on with the script's `on_failure`.
    Failed,
}

/// The target being tried.
#[derive(Debug, Clone)]
struct Current {
    target: String,
    /// The REFER's CSeq, once it went out.
    id: Option<u32>,
    /// When the target's time is up; set when the REFER goes out.
    deadline: Option<Instant>,
    /// The last SIP status heard for this attempt.
    last_code: Option<u16>,
    /// The dialog was busy with an earlier REFER: send this one once that is answered.
    waiting: bool,
}

/// One run of a `transfer` step over its targets.
#[derive(Debug, Clone)]
pub struct TransferRun {
    /// Targets not tried yet, in order.
    queue: VecDeque<String>,
    per_target: Duration,
    current: Option<Current>,
    attempts: Vec<TransferAttempt>,
    /// The REFER id of each ended attempt that had one (index into `attempts`).
    ids: Vec<(u32, usize)>,
    actions: VecDeque<TransferAction>,
    done: bool,
    /// A late 2xx has already handed the caller over.
    late_success: bool,
    /// The caller hung up: nothing counts any more.
    hung_up: bool,
}

impl TransferRun {
    /// Start with the first target (its REFER is the first action). With no
    /// targets at all the run fails at once.
    pub fn new(_now: Instant, targets: Vec<String>, per_target: Duration) -> TransferRun {
        let mut run = TransferRun {
            queue: targets.into(),
            per_target,
            current: None,
            attempts: Vec::new(),
            ids: Vec::new(),
            actions: VecDeque::new(),
            done: false,
            late_success: false,
            hung_up: false,
        };
        run.next_target();
        run
    }

    /// Move on to the next target, or fail the run when none is left.
    fn next_target(&mut self) {
        match self.queue.pop_front() {
            Some(target) => {
                self.actions.push_back(TransferAction::Refer(target.clone()));
                self.current = Some(Current { target, id: None, deadline: None, last_code: None, waiting: false });
            }
            None => {
                self.done = true;
                self.actions.push_back(TransferAction::Failed);
            }
        }
    }

    /// End the current attempt with `status` and `sip_code`.
    fn finish(&mut self, status: TransferStatus, sip_code: Option<u16>) {
        if let Some(c) = self.current.take() {
            if let Some(id) = c.id {
                self.ids.push((id, self.attempts.len()));
            }
            self.attempts.push(TransferAttempt { sip_code, status, target: c.target });
        }
    }

    /// End the current attempt with `status` and the last code heard, and try the next target.
    fn fail(&mut self, status: TransferStatus) {
        let code = self.current.as_ref().and_then(|c| c.last_code);
        self.finish(status, code);
        self.next_target();
    }

    /// The REFER for the current target went out with this id, or could not
    /// be sent (`Err`: that attempt is `Rejected` with no code, and the next
    /// target is tried).
    pub fn referred(&mut self, now: Instant, id: Result<u32, ReferError>) {
        let Some(c) = self.current.as_mut().filter(|c| c.id.is_none()) else { return };
        match id {
            Ok(id) => {
                c.id = Some(id);
                c.waiting = false;
                c.deadline = Some(now + self.per_target);
            }
            // An earlier REFER is still unanswered: send this one when it is.
            Err(ReferError::Busy) => c.waiting = true,
            Err(_) => {
                self.finish(TransferStatus::Rejected, None);
                self.next_target();
            }
        }
    }

    /// News of the REFER `id` from the dialog; other ids than the current
    /// attempt's are stale and ignored.
    pub fn handle_refer_event(&mut self, _now: Instant, id: u32, event: ReferEvent) {
        if self.hung_up {
            return;
        }
        if self.current.as_ref().is_none_or(|c| c.id != Some(id)) {
            self.earlier_news(id, event);
            return;
        }
        let Some(c) = self.current.as_mut() else { return };
        match event {
            ReferEvent::Accepted { code } => c.last_code = Some(code),
            ReferEvent::Rejected { code } => {
                self.finish(TransferStatus::Rejected, Some(code));
                self.next_target();
            }
            ReferEvent::Notify { code, terminated } => {
                c.last_code = Some(code);
                if (200..300).contains(&code) {
                    self.finish(TransferStatus::Transferred, Some(code));
                    self.queue.clear();
                    self.done = true;
                    self.actions.push_back(TransferAction::Transferred);
                } else if code >= 300 || terminated {
                    self.fail(TransferStatus::Failed);
                }
            }
            ReferEvent::Terminated => self.fail(TransferStatus::Failed),
        }
    }

    /// News of a REFER other than the current attempt's: its transaction
    /// ending frees the dialog for a REFER that waits; its 2xx NOTIFY means
    /// the caller went to that target after all.
    fn earlier_news(&mut self, id: u32, event: ReferEvent) {
        match event {
            ReferEvent::Accepted { .. } | ReferEvent::Rejected { .. } => {
                if let Some(c) = self.current.as_mut().filter(|c| c.waiting && c.id.is_none()) {
                    c.waiting = false;
                    self.actions.push_back(TransferAction::Refer(c.target.clone()));
                }
            }
            ReferEvent::Notify { code, .. } if (200..300).contains(&code) && !self.late_success => {
                let Some(&(_, index)) = self.ids.iter().find(|(i, _)| *i == id) else { return };
                self.late_success = true;
                self.supersede();
                self.attempts[index].status = TransferStatus::Transferred;
                self.attempts[index].sip_code = Some(code);
                self.actions.push_back(TransferAction::Transferred);
            }
            _ => {}
        }
    }

    /// Another target took the call (a late 2xx, of this run or an earlier
    /// transfer step's): the run is over. The target being tried is recorded
    /// as failed if its REFER went out, and forgotten if it never did.
    pub fn supersede(&mut self) {
        if self.done {
            return;
        }
        match self.current.as_ref() {
            Some(c) if c.id.is_some() => {
                let last = c.last_code;
                self.finish(TransferStatus::Failed, last);
            }
            _ => self.current = None,
        }
        self.queue.clear();
        self.actions.clear();
        self.done = true;
    }

    /// The current target's time is up (from its REFER going out to a final NOTIFY).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.current.as_ref().and_then(|c| c.deadline).is_some_and(|d| now >= d) {
            self.fail(TransferStatus::Timeout);
        }
    }

    /// The caller hung up (or the call ended otherwise): the current attempt
    /// is `HungUp` and the run is over, with nothing more to do.
    pub fn handle_hangup(&mut self) {
        if self.done {
            self.hung_up = true;
            return;
        }
        self.hung_up = true;
        let code = self.current.as_ref().and_then(|c| c.last_code);
        self.finish(TransferStatus::HungUp, code);
        self.queue.clear();
        self.actions.clear();
        self.done = true;
    }

    pub fn poll_action(&mut self) -> Option<TransferAction> {
        self.actions.pop_front()
    }

    /// When [`TransferRun::handle_timeout`] is due: the current target's deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.current.as_ref().and_then(|c| c.deadline)
    }

    /// Transferred, every target failed, or the caller hung up.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The lead's `transfer` so far: the attempts that have ended (`None`
    /// before the first one has).
    pub fn report(&self) -> Option<Transfer> {
        Transfer::of(self.attempts.clone())
    }

    /// Whether a target took the call.
    pub fn transferred(&self) -> bool {
        self.attempts.iter().any(|a| a.status == TransferStatus::Transferred)
    }
}

impl Transfer {
    /// The lead's `transfer` for these attempts: the one that took the call,
    /// else the last (`None` without any).
    pub fn of(attempts: Vec<TransferAttempt>) -> Option<Transfer> {
        let outcome = attempts.iter().find(|a| a.status == TransferStatus::Transferred).or(attempts.last())?.clone();
        Some(Transfer { attempts, sip_code: outcome.sip_code, status: outcome.status, target: outcome.target })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(20);

    fn run(targets: &[&str]) -> (TransferRun, Instant) {
        let t0 = Instant::now();
        let r = TransferRun::new(t0, targets.iter().map(|t| t.to_string()).collect(), WAIT);
        (r, t0)
    }

    fn actions(r: &mut TransferRun) -> Vec<TransferAction> {
        std::iter::from_fn(|| r.poll_action()).collect()
    }

    fn refer(target: &str) -> TransferAction {
        TransferAction::Refer(target.into())
    }

    fn attempt(target: &str, status: TransferStatus, sip_code: Option<u16>) -> TransferAttempt {
        TransferAttempt { sip_code, status, target: target.into() }
    }

    fn statuses(r: &TransferRun) -> Vec<TransferAttempt> {
        r.report().map(|t| t.attempts).unwrap_or_default()
    }

    fn notify(code: u16, terminated: bool) -> ReferEvent {
        ReferEvent::Notify { code, terminated }
    }

    #[test]
    fn refer_202_notify_100_then_200_is_transferred() {
        let (mut r, t0) = run(&["sip:a@x", "sip:b@x"]);
        assert_eq!(actions(&mut r), [refer("sip:a@x")]);
        assert_eq!(r.report(), None, "nothing has ended yet");
        assert_eq!(r.poll_timeout(), None, "the clock starts with the REFER");
        r.referred(t0, Ok(7));
        assert_eq!(r.poll_timeout(), Some(t0 + WAIT));
        r.handle_refer_event(t0, 7, ReferEvent::Accepted { code: 202 });
        r.handle_refer_event(t0, 7, notify(100, false));
        assert!(actions(&mut r).is_empty() && !r.is_done());
        r.handle_refer_event(t0, 7, notify(200, true));
        assert_eq!(actions(&mut r), [TransferAction::Transferred]);
        assert!(r.is_done());
        assert_eq!(r.poll_timeout(), None);
        let report = r.report().unwrap();
        assert_eq!(
            report,
            Transfer {
                attempts: vec![attempt("sip:a@x", TransferStatus::Transferred, Some(200))],
                sip_code: Some(200),
                status: TransferStatus::Transferred,
                target: "sip:a@x".into(),
            }
        );
        // The caller's BYE after our hang-up changes nothing.
        r.handle_hangup();
        assert_eq!(r.report(), Some(report));
        assert!(actions(&mut r).is_empty());
    }

    #[test]
    fn every_way_to_fail_moves_on_and_the_last_failure_goes_to_on_failure() {
        let (mut r, t0) = run(&["sip:a@x", "sip:b@x", "tel:+15551230000", "sip:d@x", "sip:e@x"]);
        assert_eq!(actions(&mut r), [refer("sip:a@x")]);
        // a: the REFER itself is refused.
        r.referred(t0, Ok(2));
        r.handle_refer_event(t0, 2, ReferEvent::Rejected { code: 405 });
        assert_eq!(actions(&mut r), [refer("sip:b@x")]);
        // b: accepted, then the referred INVITE got 486.
        r.referred(t0, Ok(3));
        r.handle_refer_event(t0, 3, ReferEvent::Accepted { code: 202 });
        r.handle_refer_event(t0, 3, notify(100, false));
        r.handle_refer_event(t0, 3, notify(486, true));
        assert_eq!(actions(&mut r), [refer("tel:+15551230000")]);
        // c: 202, a 180, then silence until the deadline.
        let t1 = t0 + Duration::from_secs(1);
        r.referred(t1, Ok(4));
        r.handle_refer_event(t1, 4, ReferEvent::Accepted { code: 202 });
        r.handle_refer_event(t1, 4, notify(180, false));
        r.handle_timeout(t1 + WAIT - Duration::from_millis(1));
        assert!(actions(&mut r).is_empty(), "not yet");
        assert_eq!(r.poll_timeout(), Some(t1 + WAIT));
        r.handle_timeout(t1 + WAIT);
        assert_eq!(actions(&mut r), [refer("sip:d@x")]);
        assert_eq!(r.poll_timeout(), None);
        // d: the subscription ends while the referred call only rang.
        let t2 = t1 + WAIT;
        r.referred(t2, Ok(5));
        r.handle_refer_event(t2, 5, notify(180, true));
        assert_eq!(actions(&mut r), [refer("sip:e@x")]);
        // e: the REFER could not be sent at all.
        r.referred(t2, Err(ReferError::NotConfirmed));
        assert_eq!(actions(&mut r), [TransferAction::Failed]);
        assert!(r.is_done());
        assert_eq!(
            statuses(&r),
            [
                attempt("sip:a@x", TransferStatus::Rejected, Some(405)),
                attempt("sip:b@x", TransferStatus::Failed, Some(486)),
                attempt("tel:+15551230000", TransferStatus::Timeout, Some(180)),
                attempt("sip:d@x", TransferStatus::Failed, Some(180)),
                attempt("sip:e@x", TransferStatus::Rejected, None),
            ]
        );
        let report = r.report().unwrap();
        assert_eq!(
            (report.status, report.sip_code, report.target.as_str()),
            (TransferStatus::Rejected, None, "sip:e@x")
        );
        // Over: a hang-up now is no attempt of the transfer's.
        r.handle_hangup();
        assert_eq!(r.report(), Some(report));
    }

    #[test]
    fn a_202_and_no_notify_times_out_with_the_202() {
        let (mut r, t0) = run(&["sip:a@x"]);
        actions(&mut r);
        r.referred(t0, Ok(2));
        r.handle_refer_event(t0, 2, ReferEvent::Accepted { code: 202 });
        r.handle_timeout(t0 + WAIT);
        assert_eq!(actions(&mut r), [TransferAction::Failed]);
        assert_eq!(statuses(&r), [attempt("sip:a@x", TransferStatus::Timeout, Some(202))]);
        // And with no answer at all, no code.
        let (mut r, t0) = run(&["sip:a@x"]);
        actions(&mut r);
        r.referred(t0, Ok(2));
        r.handle_timeout(t0 + WAIT);
        assert_eq!(statuses(&r), [attempt("sip:a@x", TransferStatus::Timeout, None)]);
    }

    #[test]
    fn a_subscription_ended_without_a_status_is_a_failure() {
        let (mut r, t0) = run(&["sip:a@x"]);
        actions(&mut r);
        r.referred(t0, Ok(2));
        r.handle_refer_event(t0, 2, ReferEvent::Accepted { code: 202 });
        r.handle_refer_event(t0, 2, ReferEvent::Terminated);
        assert_eq!(actions(&mut r), [TransferAction::Failed]);
        assert_eq!(statuses(&r), [attempt("sip:a@x", TransferStatus::Failed, Some(202))]);
    }

    #[test]
    fn news_of_an_earlier_refer_is_ignored_but_its_late_success_counts() {
        let (mut r, t0) = run(&["sip:a@x", "sip:b@x"]);
        actions(&mut r);
        r.referred(t0, Ok(2));
        r.handle_refer_event(t0, 2, ReferEvent::Accepted { code: 202 });
        r.handle_timeout(t0 + WAIT);
        assert_eq!(actions(&mut r), [refer("sip:b@x")]);
        r.referred(t0 + WAIT, Ok(3));
        // The timed-out target's subscription goes on; its failures are not the current attempt's.
        r.handle_refer_event(t0 + WAIT, 2, notify(180, false));
        r.handle_refer_event(t0 + WAIT, 2, ReferEvent::Rejected { code: 408 });
        r.handle_refer_event(t0 + WAIT, 99, notify(200, true));
        assert!(actions(&mut r).is_empty() && !r.is_done());
        r.handle_refer_event(t0 + WAIT, 3, notify(180, false));
        // a answered after all: the caller is with a, whoever else rang.
        r.handle_refer_event(t0 + WAIT, 2, notify(200, true));
        assert_eq!(actions(&mut r), [TransferAction::Transferred]);
        assert!(r.is_done() && r.transferred());
        assert_eq!(
            statuses(&r),
            [
                attempt("sip:a@x", TransferStatus::Transferred, Some(200)),
                attempt("sip:b@x", TransferStatus::Failed, Some(180)),
            ]
        );
        let report = r.report().unwrap();
        assert_eq!((report.status, report.target.as_str()), (TransferStatus::Transferred, "sip:a@x"));
        // Even after every target failed and on_failure runs.
        let (mut r, t0) = run(&["sip:a@x"]);
        actions(&mut r);
        r.referred(t0, Ok(2));
        r.handle_refer_event(t0, 2, ReferEvent::Accepted { code: 202 });
        r.handle_timeout(t0 + WAIT);
        assert_eq!(actions(&mut r), [TransferAction::Failed]);
        r.handle_refer_event(t0 + WAIT, 2, notify(200, true));
        assert_eq!(actions(&mut r), [TransferAction::Transferred]);
        r.handle_refer_event(t0 + WAIT, 2, notify(200, true));
        assert!(actions(&mut r).is_empty(), "once");
        // Before its REFER is out, an attempt takes no news, and a second `referred` is ignored.
        let (mut r, t0) = run(&["sip:a@x"]);
        r.handle_refer_event(t0, 2, notify(200, true));
        r.referred(t0, Ok(2));
        r.referred(t0, Err(ReferError::NotConfirmed));
        assert!(!r.is_done());
        assert_eq!(r.poll_timeout(), Some(t0 + WAIT));
    }

    /// a's REFER (id 2) is never answered, not even 202: a times out, and
    /// b's REFER finds the dialog busy with it.
    fn b_waiting_behind_an_unanswered_a() -> (TransferRun, Instant) {
        let (mut r, t0) = run(&["sip:a@x", "sip:b@x"]);
        actions(&mut r);
        r.referred(t0, Ok(2));
        r.handle_timeout(t0 + WAIT);
        assert_eq!(actions(&mut r), [refer("sip:b@x")]);
        r.referred(t0 + WAIT, Err(ReferError::Busy));
        (r, t0)
    }

    #[test]
    fn a_refer_the_dialog_is_busy_for_goes_out_when_the_old_one_is_answered() {
        let (mut r, t0) = b_waiting_behind_an_unanswered_a();
        assert!(actions(&mut r).is_empty() && !r.is_done(), "b waits, not refused");
        assert_eq!(r.poll_timeout(), None, "its time starts with its REFER");
        // Timer F gives a's REFER up: b's REFER goes out now.
        let t1 = t0 + Duration::from_secs(32);
        r.handle_refer_event(t1, 2, ReferEvent::Rejected { code: 408 });
        assert_eq!(actions(&mut r), [refer("sip:b@x")]);
        r.referred(t1, Ok(3));
        assert_eq!(r.poll_timeout(), Some(t1 + WAIT));
        r.handle_refer_event(t1, 3, ReferEvent::Accepted { code: 202 });
        r.handle_refer_event(t1, 3, notify(200, true));
        assert_eq!(actions(&mut r), [TransferAction::Transferred]);
        assert_eq!(
            statuses(&r),
            [
                attempt("sip:a@x", TransferStatus::Timeout, None),
                attempt("sip:b@x", TransferStatus::Transferred, Some(200))
            ]
        );
    }

    #[test]
    fn a_target_whose_refer_never_went_out_is_not_recorded_when_an_earlier_one_takes_the_call() {
        let (mut r, t0) = b_waiting_behind_an_unanswered_a();
        // a's NOTIFY 200 overtakes its 202: the dialog reports both; b never got a REFER.
        r.handle_refer_event(t0 + WAIT, 2, ReferEvent::Accepted { code: 202 });
        r.handle_refer_event(t0 + WAIT, 2, notify(200, true));
        let acts = actions(&mut r);
        assert_eq!(acts.last(), Some(&TransferAction::Transferred), "{acts:?}");
        assert_eq!(statuses(&r), [attempt("sip:a@x", TransferStatus::Transferred, Some(200))]);
    }

    #[test]
    fn the_caller_hanging_up_ends_the_run_where_it_was() {
        let (mut r, t0) = run(&["sip:a@x", "sip:b@x"]);
        actions(&mut r);
        r.referred(t0, Ok(2));
        r.handle_refer_event(t0, 2, notify(486, true));
        assert_eq!(actions(&mut r), [refer("sip:b@x")]);
        r.referred(t0, Ok(3));
        r.handle_refer_event(t0, 3, ReferEvent::Accepted { code: 202 });
        r.handle_refer_event(t0, 3, notify(180, false));
        r.handle_hangup();
        assert!(r.is_done());
        assert!(actions(&mut r).is_empty());
        assert_eq!(r.poll_timeout(), None);
        let report = r.report().unwrap();
        assert_eq!(
            (report.status, report.sip_code, report.target.as_str()),
            (TransferStatus::HungUp, Some(180), "sip:b@x")
        );
        // Nothing after that counts.
        r.handle_refer_event(t0, 3, notify(200, true));
        r.handle_timeout(t0 + WAIT);
        assert!(actions(&mut r).is_empty());
        assert_eq!(r.report(), Some(report));
        // A hang-up before the first REFER is answered.
        let (mut r, _) = run(&["sip:a@x", "sip:b@x"]);
        r.handle_hangup();
        assert!(actions(&mut r).is_empty(), "the queued REFER is dropped");
        assert_eq!(statuses(&r), [attempt("sip:a@x", TransferStatus::HungUp, None)]);
    }

    #[test]
    fn no_targets_fails_at_once() {
        let (mut r, _) = run(&[]);
        assert_eq!(actions(&mut r), [TransferAction::Failed]);
        assert!(r.is_done());
        assert_eq!(r.report(), None);
    }

    #[test]
    fn the_report_reads_as_the_lead_writes_it() {
        let (mut r, t0) = run(&["sip:a@x", "tel:+15551230000"]);
        actions(&mut r);
        r.referred(t0, Ok(2));
        r.handle_refer_event(t0, 2, ReferEvent::Rejected { code: 403 });
        r.referred(t0, Ok(3));
        r.handle_hangup();
        let json = serde_json::to_string(&r.report().unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"attempts":[{"sip_code":403,"status":"rejected","target":"sip:a@x"},{"sip_code":null,"status":"hung_up","target":"tel:+15551230000"}],"sip_code":null,"status":"hung_up","target":"tel:+15551230000"}"#
        );
        assert_eq!(serde_json::from_str::<Transfer>(&json).unwrap(), r.report().unwrap());
        for (s, name) in [
            (TransferStatus::Transferred, "transferred"),
            (TransferStatus::Failed, "failed"),
            (TransferStatus::Timeout, "timeout"),
            (TransferStatus::Rejected, "rejected"),
            (TransferStatus::HungUp, "hung_up"),
        ] {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{name}\""));
        }
    }
}
