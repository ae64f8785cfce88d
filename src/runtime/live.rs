//! What a SIGHUP can replace while calls run: the lines, with their
//! scripts, prompts, schedules and junk rules. A call takes the set that is
//! current when its INVITE arrives and keeps it to the end, so a reload
//! never changes a call in progress; the next call runs the new set.

use backstop_core::route::line::Lines;
use std::sync::{Arc, RwLock};

/// The current lines, replaced whole on reload. Read once per call (and
/// once per finished transcript), never in the media path.
pub struct LiveLines(RwLock<Arc<Lines>>);

impl LiveLines {
    pub fn new(lines: Lines) -> Arc<LiveLines> {
        Arc::new(LiveLines(RwLock::new(Arc::new(lines))))
    }

    /// The lines as they are now: a new call's, kept for its whole life.
    pub fn current(&self) -> Arc<Lines> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// From the next call on, `lines`.
    pub fn replace(&self, lines: Lines) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(lines);
    }
}
