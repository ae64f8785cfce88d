//! Giving memory back after a load: glibc's malloc keeps what calls freed
//! in its arenas (one per thread that allocated), so after a burst of calls
//! the agent's RSS stays at the burst's height. Every few seconds this looks
//! at the calls in progress, and once they have fallen to half the peak seen
//! since the last trim (or to none), it asks malloc to return its free pages
//! (`malloc_trim`). Not under steady load: pages returned then would only be
//! faulted back in.

use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;

/// Cap malloc's arenas at two per core (at least 4); call before any thread
/// is started. glibc gives each thread that allocates an arena of its own,
/// up to eight per core; every blocking thread that writes a recording then
/// keeps a heap of freed buffers, some 3 MB in all after a load on two cores.
/// The call tasks run on one tokio worker per core, so two arenas per core
/// leave them and the blocking threads little to contend for.
pub fn limit_arenas() {
    let arenas = std::thread::available_parallelism().map_or(4, |n| (2 * n.get()).max(4));
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc parameter; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, i32::try_from(arenas).unwrap_or(i32::MAX));
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

/// How often the calls in progress are looked at.
const EVERY: Duration = Duration::from_secs(5);

/// When to trim: the peak of calls in progress since the last trim.
#[derive(Debug, Default)]
pub(super) struct TrimPolicy {
    peak: u64,
}

impl TrimPolicy {
    /// `calls` in progress now: whether to trim.
    pub(super) fn observe(&mut self, calls: u64) -> bool {
        self.peak = self.peak.max(calls);
        if self.peak > 0 && calls <= self.peak / 2 {
            self.peak = calls;
            return true;
        }
        false
    }
}

/// Run until the runtime stops.
pub(super) async fn run(metrics: Arc<Metrics>) {
    let mut policy = TrimPolicy::default();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if policy.observe(metrics.calls_in_progress()) {
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks and releases malloc's own free memory.
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(released = released != 0, "malloc_trim after the load fell");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_the_load_falls_to_half_its_peak_and_not_under_steady_load() {
        let mut p = TrimPolicy::default();
        assert!(!p.observe(0), "never loaded: nothing to give back");
        let seen: Vec<bool> =
            [10, 100, 1000, 990, 1000, 600, 500, 400, 300, 0, 0].iter().map(|c| p.observe(*c)).collect();
        assert_eq!(seen, [false, false, false, false, false, false, true, false, false, true, false]);
        // Steady load again after a trim: no more trims.
        assert!(![200, 200, 200].iter().any(|c| p.observe(*c)));
    }
}
