//! Prints how many gossip rounds (one per second per node, paper 4.8.1) a change needs to reach
//! every member, and until every member knows that everyone has it, for 3, 10, 32 and 128 nodes,
//! with no seed and with one seed; median of five runs with different peer choices.
//!
//! `cargo run --release -p dynamo-membership --example convergence`

use dynamo_membership::memnet::MemCluster;

/// Runs per configuration; the median is printed.
const RUNS: u64 = 5;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    println!(
        "nodes  seeds  rounds-until-all-have-it  rounds-until-all-know-it  (median of {RUNS}; 1 round = 1 s)"
    );
    for size in [3, 10, 32, 128] {
        for seeds in [vec![], vec![0]] {
            let mut have = Vec::new();
            let mut know = Vec::new();
            for run in 0..RUNS {
                let cluster = match MemCluster::new(size, 0, &seeds, run, |_| None) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("cannot build the cluster: {e}");
                        return;
                    }
                };
                let (h, k) = cluster.spread(200).await;
                have.push(h.unwrap_or(usize::MAX));
                know.push(k.unwrap_or(usize::MAX));
            }
            have.sort_unstable();
            know.sort_unstable();
            let mid = have.len() / 2;
            println!(
                "{size:>5}  {:>5}  {:>24}  {:>24}",
                seeds.len(),
                have[mid],
                know[mid]
            );
        }
    }
}
