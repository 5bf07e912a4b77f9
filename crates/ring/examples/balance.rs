//! Prints how well the strategy-3 claim balances partitions and how much a join or a leave moves.
//!
//! Run with `cargo run -p dynamo-ring --release --example balance`. For each cluster size S and partition
//! count Q it builds a ring of S equal-weight nodes (N = 3), then adds one node and, separately, removes one,
//! and prints:
//!
//! - `max/mean`: the most partitions any node owns over the mean Q/S (1.00 is perfect balance);
//! - `join`: partitions moved when node S+1 joins, next to the ideal Q/(S+1);
//! - `leave`: partitions moved when the first node leaves, next to what it owned;
//! - `skips`: partitions whose first N owners clockwise are not N distinct nodes (so the preference list has
//!   to walk further), for the fresh ring / after the join / after the leave;
//! - `claim ms`: wall time of the fresh claim plus the join and the leave (a figure, not a promise).
//!
//! It ends with the cost of computing preference lists on the largest ring, the hot path of every request.

use std::time::Instant;

use dynamo_ring::{Member, NodeId, PartitionId, Result, Ring};

/// Replication factor the rings are spread for, the paper's usual N.
const N: usize = 3;

/// Cluster sizes to tabulate.
const SIZES: &[usize] = &[3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64];

/// Partition counts to tabulate.
const PARTITIONS: &[u32] = &[64, 128, 256, 512, 1024];

fn member(i: usize) -> Result<Member> {
    Ok(Member::new(NodeId::new(format!("n{i:03}"))?))
}

/// Most partitions owned by one node, over the mean.
fn max_over_mean(ring: &Ring) -> f64 {
    let max = ring.ownership().values().copied().max().unwrap_or(0);
    max as f64 * ring.members().len() as f64 / f64::from(ring.q())
}

/// Partitions whose first N owners clockwise are not N distinct nodes.
fn skips(ring: &Ring) -> usize {
    let q = ring.q();
    let n = N.min(ring.members().len());
    ring.partitions()
        .filter(|p| {
            let mut owners: Vec<&NodeId> = (0..n as u32)
                .map(|d| ring.owner(PartitionId((p.0 + d) % q)))
                .collect();
            owners.sort();
            owners.dedup();
            owners.len() < n
        })
        .count()
}

fn main() -> Result<()> {
    println!(
        "{:>4} {:>5} | {:>8} | {:>11} | {:>11} | {:>14} | {:>8}",
        "S", "Q", "max/mean", "join(ideal)", "leave(held)", "skips new/j/l", "claim ms"
    );
    for &q in PARTITIONS {
        for &s in SIZES {
            let started = Instant::now();
            let ring = Ring::new(q, (1..=s).map(member).collect::<Result<_>>()?, N)?;
            let joined = ring.with_member_joined(member(s + 1)?, N)?;
            let leaver = NodeId::new("n001")?;
            let left = ring.with_member_left(&leaver, N)?;
            let elapsed = started.elapsed();
            let held = ring.ownership().get(&leaver).copied().unwrap_or(0);
            println!(
                "{:>4} {:>5} | {:>8.3} | {:>4} ({:>4.1}) | {:>4} ({:>4}) | {:>4}/{:>3}/{:>3}  | {:>8.2}",
                s,
                q,
                max_over_mean(&ring),
                ring.diff(&joined).len(),
                f64::from(q) / (s + 1) as f64,
                ring.diff(&left).len(),
                held,
                skips(&ring),
                skips(&joined),
                skips(&left),
                elapsed.as_secs_f64() * 1e3,
            );
        }
    }
    preference_list_cost()
}

/// Times preference lists (key hash included) on a 64-node ring of 1024 partitions.
fn preference_list_cost() -> Result<()> {
    const LOOKUPS: u32 = 200_000;
    let ring = Ring::new(1024, (1..=64).map(member).collect::<Result<_>>()?, N)?;
    let started = Instant::now();
    let mut primaries = 0;
    for i in 0..LOOKUPS {
        primaries += ring
            .preference_list(b"bucket", &i.to_be_bytes(), N)
            .primaries()
            .len();
    }
    let elapsed = started.elapsed();
    println!(
        "\npreference_list (S = 64, Q = 1024, N = 3, full list with fallbacks): {:.2} us per key ({} primaries)",
        elapsed.as_secs_f64() * 1e6 / f64::from(LOOKUPS),
        primaries
    );
    Ok(())
}
