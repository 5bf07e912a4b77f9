//! The nemesis: a seeded schedule of fault episodes (partitions into halves, one node isolated,
//! one-way partitions, held messages, a crash and restart, at most one wipe, clock skew), played
//! by a simulated client through [`Control`]. Episodes run one after another inside the fault
//! window; clock skews stay until the window ends, when everything heals at once.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use super::Result;
use super::control::{Control, Fault};
use super::rng::SimRng;

/// When the first fault may strike: the cluster has connected and clients have started.
pub const FIRST_FAULT_AT: Duration = Duration::from_millis(300);

/// Shortest and longest fault episode, in milliseconds: from a few request timeouts' worth of
/// confusion to long enough for handoff-worthy hints and failure detection to kick in.
const EPISODE_MS: (u64, u64) = (300, 1_500);

/// Quiet time between episodes, in milliseconds: lets probes mark nodes up again sometimes.
const GAP_MS: (u64, u64) = (50, 500);

/// Largest clock skew in milliseconds, either way: several seconds, more than a write's lifetime,
/// so last-write-wins timestamps order concurrent writes wrongly.
const MAX_SKEW_MS: u64 = 5_000;

/// A fault schedule: faults and the simulated time they strike at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    /// `(at, fault)` in time order; the last one heals everything.
    pub steps: Vec<(Duration, Fault)>,
}

impl Schedule {
    /// One line per step, for reports.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (at, fault) in &self.steps {
            let _ = write!(out, "{}ms {fault}; ", at.as_millis());
        }
        out
    }
}

/// Which faults the nemesis may choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultMix {
    /// Network partitions (halves, isolation, one-way) and holds.
    pub network: bool,
    /// Crash and restart of one node at a time.
    pub crashes: bool,
    /// At most one node loses its disk (once per run).
    pub wipes: bool,
    /// Clock skew between nodes.
    pub skew: bool,
}

impl Default for FaultMix {
    fn default() -> Self {
        FaultMix {
            network: true,
            crashes: true,
            wipes: true,
            skew: true,
        }
    }
}

/// Plans the faults for nodes `names` between [`FIRST_FAULT_AT`] and `heal_at` (when everything
/// heals). Pure: the same inputs give the same schedule.
pub fn plan(rng: &mut SimRng, names: &[String], heal_at: Duration, mix: FaultMix) -> Schedule {
    let mut steps = Vec::new();
    let mut t = FIRST_FAULT_AT.as_millis() as u64;
    let end = heal_at.as_millis() as u64;
    let mut wiped = false;
    let mut kinds: Vec<u8> = Vec::new();
    if mix.network {
        kinds.extend([0, 1, 2, 3]);
    }
    if mix.crashes {
        kinds.push(4);
    }
    if mix.skew {
        kinds.push(5);
    }
    while t + EPISODE_MS.0 < end {
        let (Some(&kind), Some(node)) = (rng.pick(&kinds), rng.pick(names).cloned()) else {
            break;
        };
        let length = rng.between(EPISODE_MS.0, EPISODE_MS.1).min(end - t);
        let at = Duration::from_millis(t);
        let until = Duration::from_millis(t + length);
        let others: Vec<String> = names.iter().filter(|n| **n != node).cloned().collect();
        match kind {
            0 => {
                let mut shuffled = names.to_vec();
                rng.shuffle(&mut shuffled);
                let cut = 1 + rng.index(shuffled.len().saturating_sub(1).max(1));
                let (a, b) = shuffled.split_at(cut.min(shuffled.len()));
                steps.push((at, Fault::Partition(a.to_vec(), b.to_vec())));
                steps.push((until, Fault::Heal(a.to_vec(), b.to_vec())));
            }
            1 => {
                steps.push((at, Fault::Partition(vec![node.clone()], others.clone())));
                steps.push((until, Fault::Heal(vec![node], others)));
            }
            2 => {
                let (from, to) = if rng.percent(50) {
                    (vec![node], others)
                } else {
                    (others, vec![node])
                };
                steps.push((at, Fault::PartitionOneway(from.clone(), to.clone())));
                steps.push((until, Fault::Heal(from, to)));
            }
            3 => {
                steps.push((at, Fault::Hold(vec![node.clone()], others.clone())));
                steps.push((until, Fault::Heal(vec![node], others)));
            }
            4 if mix.wipes && !wiped && rng.percent(25) => {
                wiped = true;
                steps.push((at, Fault::Wipe(node)));
            }
            4 => {
                steps.push((at, Fault::Crash(node.clone())));
                steps.push((until, Fault::Restart(node)));
            }
            _ => {
                let skew = rng.between(100, MAX_SKEW_MS) as i64;
                let skew = if rng.percent(50) { skew } else { -skew };
                steps.push((at, Fault::Skew(node, skew)));
                t += rng.between(GAP_MS.0, GAP_MS.1);
                continue;
            }
        }
        t += length + rng.between(GAP_MS.0, GAP_MS.1);
    }
    steps.push((heal_at, Fault::HealAll));
    Schedule { steps }
}

/// Plays `schedule` against the cluster: sleeps (in simulated time) until each step is due and
/// has the driver carry it out.
pub async fn play(control: Arc<Control>, schedule: Schedule) -> Result<()> {
    let start = tokio::time::Instant::now()
        .checked_sub(turmoil::sim_elapsed().unwrap_or_default())
        .unwrap_or_else(tokio::time::Instant::now);
    for (at, fault) in schedule.steps {
        tokio::time::sleep_until(start + at).await;
        control.apply(fault).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    #[test]
    fn plans_are_reproducible_bounded_and_end_healed() {
        for seed in 0..200 {
            let heal = Duration::from_secs(5);
            let a = plan(&mut SimRng::new(seed), &names(5), heal, FaultMix::default());
            let b = plan(&mut SimRng::new(seed), &names(5), heal, FaultMix::default());
            assert_eq!(a, b);
            assert_eq!(a.steps.last(), Some(&(heal, Fault::HealAll)));
            assert!(
                a.steps.windows(2).all(|w| w[0].0 <= w[1].0),
                "{}",
                a.describe()
            );
            assert!(a.steps.iter().all(|(at, _)| *at <= heal));
            let wipes = a
                .steps
                .iter()
                .filter(|(_, f)| matches!(f, Fault::Wipe(_)))
                .count();
            assert!(wipes <= 1, "{}", a.describe());
            for (_, f) in &a.steps {
                if let Fault::Partition(x, y) = f {
                    assert!(!x.is_empty() && !y.is_empty(), "{}", a.describe());
                }
            }
        }
    }

    #[test]
    fn a_mix_without_faults_only_heals() {
        let none = FaultMix {
            network: false,
            crashes: false,
            wipes: false,
            skew: false,
        };
        let s = plan(&mut SimRng::new(1), &names(3), Duration::from_secs(3), none);
        assert_eq!(s.steps, vec![(Duration::from_secs(3), Fault::HealAll)]);
    }
}
