//! Simulated wall-clock time for version timestamps, with a per-node skew the nemesis can set.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use dynamo_coordinator::Clock;

/// The wall-clock reading at simulated time zero (milliseconds since the Unix epoch). Fixed so a
/// seed reproduces the same timestamps; any recent date works.
pub const SIM_EPOCH_MS: u64 = 1_700_000_000_000;

/// A node's clock: simulated elapsed time since the simulation started, plus a skew in
/// milliseconds (positive runs ahead, negative behind) shared with the nemesis.
#[derive(Clone, Debug, Default)]
pub struct SimClock {
    skew_ms: Arc<AtomicI64>,
}

impl SimClock {
    /// A clock with no skew.
    pub fn new() -> SimClock {
        SimClock::default()
    }

    /// Sets the skew (the nemesis's clock-skew fault; 0 heals it).
    pub fn set_skew_ms(&self, skew_ms: i64) {
        self.skew_ms.store(skew_ms, Ordering::SeqCst);
    }

    /// The skew in force.
    pub fn skew_ms(&self) -> i64 {
        self.skew_ms.load(Ordering::SeqCst)
    }

    /// The reading at simulated time `elapsed_ms`.
    fn reading(&self, elapsed_ms: u64) -> u64 {
        SIM_EPOCH_MS
            .saturating_add(elapsed_ms)
            .saturating_add_signed(self.skew_ms())
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        // Outside a running simulation (never the case for node code) time stands at zero.
        let elapsed = turmoil::sim_elapsed().unwrap_or_default();
        self.reading(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_moves_the_reading_both_ways_and_heals() {
        let clock = SimClock::new();
        assert_eq!(clock.reading(5), SIM_EPOCH_MS + 5);
        clock.clone().set_skew_ms(-2_000);
        assert_eq!(clock.reading(5), SIM_EPOCH_MS + 5 - 2_000);
        clock.set_skew_ms(750);
        assert_eq!(clock.reading(0), SIM_EPOCH_MS + 750);
        clock.set_skew_ms(0);
        assert_eq!(
            clock.now_ms(),
            SIM_EPOCH_MS,
            "outside a simulation time is zero"
        );
    }
}
