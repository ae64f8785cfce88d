//! Spreads the calls' packet clocks evenly over the 20 ms frame: each new
//! call takes the least used millisecond. Calls that arrive together (a
//! burst, or a load generator's batches) would otherwise all wake, build and
//! send in the same millisecond, and the last of them would go out late.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(super) struct PhaseSlots {
    reference: Instant,
    used: Mutex<[u32; 20]>,
}

impl PhaseSlots {
    pub(super) fn new() -> PhaseSlots {
        PhaseSlots { reference: Instant::now(), used: Mutex::new([0; 20]) }
    }

    /// The least used slot, held until the guard drops: `(reference, offset)`.
    pub(super) fn take(&self) -> (PhaseGuard<'_>, (Instant, Duration)) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let slot = (0..used.len()).min_by_key(|i| used[*i]).unwrap_or(0);
        used[slot] += 1;
        (PhaseGuard(self, slot), (self.reference, Duration::from_millis(slot as u64)))
    }
}

/// A call's millisecond, given back when the call ends.
pub(super) struct PhaseGuard<'a>(&'a PhaseSlots, usize);

impl Drop for PhaseGuard<'_> {
    fn drop(&mut self) {
        let mut used = self.0.used.lock().unwrap_or_else(|e| e.into_inner());
        used[self.1] = used[self.1].saturating_sub(1);
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
