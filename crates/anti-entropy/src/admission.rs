//! Admission control of background work (paper 6.5): background tasks get a share of the node
//! that follows the foreground's latency.
//!
//! [`Admission`] keeps the last [`AdmissionOptions::window`] foreground latency samples and, at
//! each [`Admission::adjust`], compares their p99 with a target: under the target the share grows
//! by an additive step, above it the share is multiplied down (AIMD, as TCP does with its
//! window), never below a floor so background work always progresses. The share turns into
//! permits: how many background tasks (exchanges, rebuilds) may run at once. Pure: samples and
//! adjustments are calls; no clock.

use std::collections::VecDeque;
use std::time::Duration;

/// Default foreground p99 target: a local storage write (one group-commit fsync on an SSD takes
/// about a millisecond) should stay well under 10 ms.
pub const TARGET_P99: Duration = Duration::from_millis(10);

/// Samples in the sliding window: enough for a meaningful p99 (the 10th-largest of 1,000).
pub const WINDOW: usize = 1000;

/// Share background work always keeps (a tenth of its maximum), so repairs never starve.
pub const FLOOR: f64 = 0.1;

/// Share added per adjustment under the target.
pub const INCREASE: f64 = 0.1;

/// Factor the share is multiplied by per adjustment above the target.
pub const DECREASE: f64 = 0.5;

/// Tunables of the controller.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdmissionOptions {
    /// Foreground p99 above which background work backs off.
    pub target_p99: Duration,
    /// Latency samples kept (the sliding window).
    pub window: usize,
    /// Lowest share, in (0, 1].
    pub floor: f64,
    /// Additive increase per adjustment.
    pub increase: f64,
    /// Multiplicative decrease per adjustment, in (0, 1).
    pub decrease: f64,
    /// Background tasks allowed at once at a full share.
    pub max_permits: usize,
}

impl Default for AdmissionOptions {
    fn default() -> Self {
        AdmissionOptions {
            target_p99: TARGET_P99,
            window: WINDOW,
            floor: FLOOR,
            increase: INCREASE,
            decrease: DECREASE,
            max_permits: 2,
        }
    }
}

/// The AIMD controller of the background share.
#[derive(Clone, Debug)]
pub struct Admission {
    options: AdmissionOptions,
    share: f64,
    samples: VecDeque<Duration>,
}

impl Admission {
    /// A controller starting at a full share (nothing measured yet says to hold back).
    pub fn new(options: AdmissionOptions) -> Admission {
        let floor = if options.floor.is_finite() {
            options.floor.clamp(0.01, 1.0)
        } else {
            FLOOR
        };
        let decrease = if options.decrease.is_finite() && options.decrease > 0.0 {
            options.decrease.min(0.99)
        } else {
            DECREASE
        };
        let increase = if options.increase.is_finite() {
            options.increase.clamp(0.0, 1.0)
        } else {
            INCREASE
        };
        Admission {
            options: AdmissionOptions {
                floor,
                decrease,
                increase,
                window: options.window.max(1),
                max_permits: options.max_permits.max(1),
                ..options
            },
            share: 1.0,
            samples: VecDeque::new(),
        }
    }

    /// Records one foreground latency sample; the oldest falls out of the window.
    pub fn observe(&mut self, latency: Duration) {
        if self.samples.len() == self.options.window {
            self.samples.pop_front();
        }
        self.samples.push_back(latency);
    }

    /// The p99 of the window (`None` while it is empty).
    pub fn p99(&self) -> Option<Duration> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted: Vec<Duration> = self.samples.iter().copied().collect();
        sorted.sort_unstable();
        let rank = (sorted.len() * 99).div_ceil(100).saturating_sub(1);
        sorted.get(rank).copied()
    }

    /// One control step: grows the share under the target (or with no samples), shrinks it
    /// above. Returns the new share.
    pub fn adjust(&mut self) -> f64 {
        let over = self.p99().is_some_and(|p| p > self.options.target_p99);
        self.share = if over {
            (self.share * self.options.decrease).max(self.options.floor)
        } else {
            (self.share + self.options.increase).min(1.0)
        };
        self.share
    }

    /// The current share, in [floor, 1].
    pub fn share(&self) -> f64 {
        self.share
    }

    /// Background tasks allowed at once now: the share of the maximum, at least one.
    pub fn permits(&self) -> usize {
        let permits = (self.share * self.options.max_permits as f64).ceil() as usize;
        permits.clamp(1, self.options.max_permits)
    }

    /// The tunables in force (after clamping).
    pub fn options(&self) -> &AdmissionOptions {
        &self.options
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn controller() -> Admission {
        Admission::new(AdmissionOptions {
            max_permits: 8,
            window: 100,
            ..AdmissionOptions::default()
        })
    }

    #[test]
    fn shrinks_above_the_target_and_grows_back_under_it() {
        let mut a = controller();
        assert_eq!(a.permits(), 8);
        for _ in 0..100 {
            a.observe(Duration::from_millis(50));
        }
        assert_eq!(a.adjust(), 0.5);
        assert_eq!(a.permits(), 4);
        for _ in 0..10 {
            a.adjust();
        }
        assert_eq!(a.share(), FLOOR, "never below the floor");
        assert_eq!(a.permits(), 1, "background work never starves");
        for _ in 0..100 {
            a.observe(Duration::from_millis(1));
        }
        let before = a.share();
        assert!(a.adjust() > before);
        for _ in 0..20 {
            a.adjust();
        }
        assert_eq!(a.share(), 1.0);
    }

    #[test]
    fn one_slow_sample_in_a_hundred_does_not_count_as_the_p99() {
        let mut a = controller();
        for i in 0..100 {
            a.observe(Duration::from_millis(if i == 0 { 500 } else { 1 }));
        }
        assert_eq!(a.p99(), Some(Duration::from_millis(1)));
        a.observe(Duration::from_millis(500));
        assert_eq!(
            a.p99(),
            Some(Duration::from_millis(1)),
            "the first fell out"
        );
        a.observe(Duration::from_millis(500));
        assert_eq!(a.p99(), Some(Duration::from_millis(500)));
    }

    proptest! {
        /// Whatever the latencies, the share stays within [floor, 1], falls when the p99 is above
        /// the target and never falls when it is under.
        #[test]
        fn the_share_stays_in_bounds_and_follows_the_p99(
            rounds in proptest::collection::vec(proptest::collection::vec(0u64..40, 1..50), 1..40)
        ) {
            let mut a = controller();
            for samples in rounds {
                for ms in samples {
                    a.observe(Duration::from_millis(ms));
                }
                let before = a.share();
                let over = a.p99().unwrap() > TARGET_P99;
                let after = a.adjust();
                prop_assert!((FLOOR..=1.0).contains(&after));
                if over {
                    prop_assert!(after <= before);
                } else {
                    prop_assert!(after >= before);
                }
                prop_assert!((1..=8).contains(&a.permits()));
            }
        }
    }
}
