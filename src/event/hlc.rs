//! A hybrid logical clock: wall-clock milliseconds in the high 48 bits, a logical counter in
//! the low 16. Timestamps from one clock strictly increase, and observing a remote timestamp
//! moves the clock past it, so last-writer-wins comparisons respect causality. An observed
//! timestamp moves the clock at most the allowed drift ahead of the wall clock: one peer's
//! clock cannot drag this node's into the future for good.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

const LOGICAL_BITS: u32 = 16;

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Hlc(pub u64);

impl Hlc {
    pub fn from_parts(millis: u64, logical: u16) -> Self {
        Self((millis << LOGICAL_BITS) | u64::from(logical))
    }

    pub fn millis(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }
}

/// The node's clock. Cheap to call from any thread.
#[derive(Debug)]
pub struct HybridClock {
    last: Mutex<u64>,
    max_ahead_ms: u64,
}

impl Default for HybridClock {
    fn default() -> Self {
        Self::with_max_drift(crate::config::DEFAULT_MAX_CLOCK_DRIFT)
    }
}

impl HybridClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock that observed timestamps move at most `max_drift` past the wall clock.
    pub fn with_max_drift(max_drift: std::time::Duration) -> Self {
        Self {
            last: Mutex::new(0),
            max_ahead_ms: u64::try_from(max_drift.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// A timestamp greater than every timestamp this clock has issued or observed.
    pub fn now(&self) -> Hlc {
        let wall = Hlc::from_parts(wall_millis(), 0).0;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        *last = if wall > *last { wall } else { *last + 1 };
        Hlc(*last)
    }

    /// Moves the clock past a timestamp seen on an event from another node, but never more
    /// than the allowed drift past the wall clock.
    pub fn observe(&self, remote: Hlc) {
        let ceiling = Hlc::from_parts(wall_millis().saturating_add(self.max_ahead_ms), 0).0;
        let remote = remote.0.min(ceiling);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if remote > *last {
            *last = remote;
        }
    }
}

fn wall_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increases_and_passes_observed_times() {
        let clock = HybridClock::new();
        let a = clock.now();
        let b = clock.now();
        assert!(b > a);
        let far = Hlc::from_parts(a.millis() + 30_000, 5);
        clock.observe(far);
        assert!(clock.now() > far);
    }

    #[test]
    fn a_timestamp_beyond_the_drift_does_not_drag_the_clock() {
        let clock = HybridClock::with_max_drift(std::time::Duration::from_secs(60));
        let start = clock.now();
        clock.observe(Hlc::from_parts(start.millis() + 3_600_000, 0));
        let after = clock.now();
        assert!(after.millis() <= wall_millis() + 60_000, "{after:?}");
    }
}
