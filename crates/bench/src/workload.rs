//! YCSB's core workloads as operation mixes, and the names of their records.

use clap::ValueEnum;
use rand::{Rng, RngExt};
use serde::Serialize;

use crate::zipf::KeyChooser;

/// Which YCSB core workload the run phase executes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Update heavy: 50% reads, 50% updates (a session store).
    A,
    /// Read mostly: 95% reads, 5% updates (photo tagging).
    B,
    /// Read only (a user profile cache).
    C,
}

impl Workload {
    /// The share of operations that are reads.
    pub fn read_proportion(self) -> f64 {
        match self {
            Workload::A => 0.5,
            Workload::B => 0.95,
            Workload::C => 1.0,
        }
    }
}

/// How the run phase picks keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// YCSB's scrambled zipfian (constant 0.99): a few keys are hot.
    Zipfian,
    /// Every record equally likely.
    Uniform,
}

impl Distribution {
    /// The chooser for `records` records.
    pub fn chooser(self, records: u64) -> Result<KeyChooser, crate::zipf::ZipfError> {
        match self {
            Distribution::Zipfian => KeyChooser::zipfian(records),
            Distribution::Uniform => KeyChooser::uniform(records),
        }
    }
}

/// What an update sends as its causal context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateMode {
    /// Read the key, then write with the context read (how a Dynamo application updates); the
    /// update's latency covers both round trips. Siblings stay few.
    Rmw,
    /// Write with an empty context, as YCSB does against stores without versions. Every blind
    /// write is concurrent with what is stored, so siblings pile up unless the bucket is
    /// last-write-wins.
    Blind,
}

/// One benchmark operation on record `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Load phase: write a new record.
    Insert(u64),
    /// Read a record.
    Read(u64),
    /// Overwrite a record.
    Update(u64),
}

impl Op {
    /// The operation's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::Insert(_) => "insert",
            Op::Read(_) => "read",
            Op::Update(_) => "update",
        }
    }

    /// The record the operation touches.
    pub fn record(self) -> u64 {
        match self {
            Op::Insert(i) | Op::Read(i) | Op::Update(i) => i,
        }
    }
}

/// The key of record `index` (YCSB names its records `user...`).
pub fn key_name(index: u64) -> Vec<u8> {
    format!("user{index}").into_bytes()
}

/// What a phase does with each ticket it hands out.
#[derive(Clone, Debug)]
pub enum Mix {
    /// Ticket `i` inserts record `i`.
    Load,
    /// Each ticket is a read or an update of a chosen record.
    Run {
        /// The share of reads.
        read_proportion: f64,
        /// How records are chosen.
        keys: KeyChooser,
    },
}

impl Mix {
    /// The operation for `ticket`.
    pub fn next<R: Rng + ?Sized>(&self, ticket: u64, rng: &mut R) -> Op {
        match self {
            Mix::Load => Op::Insert(ticket),
            Mix::Run {
                read_proportion,
                keys,
            } => {
                let record = keys.next(rng);
                if rng.random::<f64>() < *read_proportion {
                    Op::Read(record)
                } else {
                    Op::Update(record)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn reads(workload: Workload) -> usize {
        let mix = Mix::Run {
            read_proportion: workload.read_proportion(),
            keys: KeyChooser::uniform(100).unwrap(),
        };
        let mut rng = StdRng::seed_from_u64(9);
        (0..10_000)
            .filter(|&t| matches!(mix.next(t, &mut rng), Op::Read(_)))
            .count()
    }

    #[test]
    fn workloads_mix_reads_and_updates_in_ycsb_proportions() {
        let a = reads(Workload::A);
        let b = reads(Workload::B);
        assert!((4_700..5_300).contains(&a), "{a}");
        assert!((9_350..9_650).contains(&b), "{b}");
        assert_eq!(reads(Workload::C), 10_000);
    }

    #[test]
    fn the_load_mix_inserts_each_ticket_once() {
        let mut rng = StdRng::seed_from_u64(1);
        let ops: Vec<Op> = (0..3).map(|t| Mix::Load.next(t, &mut rng)).collect();
        assert_eq!(ops, [Op::Insert(0), Op::Insert(1), Op::Insert(2)]);
        assert_eq!(key_name(ops[2].record()), b"user2");
    }

    #[test]
    fn run_ops_stay_within_the_records() {
        let mix = Mix::Run {
            read_proportion: 0.5,
            keys: Distribution::Zipfian.chooser(50).unwrap(),
        };
        let mut rng = StdRng::seed_from_u64(2);
        assert!((0..1000).all(|t| mix.next(t, &mut rng).record() < 50));
    }
}
