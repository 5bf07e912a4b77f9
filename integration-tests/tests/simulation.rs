//! Deterministic fault simulation (see `dynamo_integration_tests::sim`): real nodes over
//! turmoil's simulated TCP, a seeded nemesis, and Jepsen's set checker.
//!
//! Environment:
//! * `SIM_SEEDS` — how many seeds `random_seeds` runs (default 50), starting at `SIM_SEED_START`
//!   (default 0);
//! * `SIM_SEED` — run only this seed (what a failure prints).
//!
//! Thousands of seeds, in release mode:
//! `SIM_SEEDS=5000 cargo test --release -p dynamo-integration-tests --test simulation -- random_seeds --nocapture`

use dynamo_integration_tests::sim::{SimConfig, rerun_command, run_seed};

/// Seeds CI runs: enough to cover every fault kind on every cluster size several times.
const DEFAULT_SEEDS: u64 = 50;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn random_seeds() {
    let seeds: Vec<u64> = match env_u64("SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let start = env_u64("SIM_SEED_START").unwrap_or(0);
            (start..start + env_u64("SIM_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect()
        }
    };
    let mut failed = Vec::new();
    for seed in seeds {
        let config = SimConfig::for_seed(seed);
        match run_seed(&config) {
            Ok(report) => {
                println!("{}", report.summary());
                let problems = report.problems();
                if !problems.is_empty() {
                    println!("  faults: {}", report.schedule.describe());
                    for p in &problems {
                        println!("  PROBLEM: {p}");
                    }
                    println!("  rerun: {}", rerun_command(seed));
                    failed.push(seed);
                }
            }
            Err(e) => {
                println!(
                    "seed {seed}: the run failed: {e}\n  rerun: {}",
                    rerun_command(seed)
                );
                failed.push(seed);
            }
        }
    }
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
}
