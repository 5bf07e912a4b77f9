//! Membership changes under faults, deterministically (see
//! `dynamo_integration_tests::sim::churn`): joins, leaves, removes and replaces during the
//! nemesis and the workload, with the claimant, receivers and senders crashed at the worst
//! moments, old and new owners split, a leaver partitioned away and keys deleted mid-transfer.
//!
//! Environment:
//! * `CHURN_SEEDS` — how many seeds `churn_seeds` runs (default 50), from `CHURN_SEED_START`
//!   (default 0);
//! * `CHURN_SEED` — run only this seed (what a failure prints);
//! * `CHURN_HISTORY` — print a failing seed's whole history.
//!
//! Thousands of seeds, in release mode:
//! `CHURN_SEEDS=5000 cargo test --release -p dynamo-integration-tests --test simulation_membership -- churn_seeds --nocapture`

use dynamo_integration_tests::sim::churn::{ChurnConfig, rerun_command, run_churn};

/// Seeds CI runs: every strike and every kind of departure several times.
const DEFAULT_SEEDS: u64 = 50;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn churn_seeds() {
    let seeds: Vec<u64> = match env_u64("CHURN_SEED") {
        Some(seed) => vec![seed],
        None => {
            let start = env_u64("CHURN_SEED_START").unwrap_or(0);
            (start..start + env_u64("CHURN_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect()
        }
    };
    let (mut failed, mut sim_ms, mut wall_ms, mut acked) = (Vec::new(), 0, 0, 0);
    let count = seeds.len();
    for seed in seeds {
        match run_churn(&ChurnConfig::for_seed(seed)) {
            Ok(report) => {
                println!("{}", report.summary());
                sim_ms += report.sim_time.as_millis();
                wall_ms += report.wall_time.as_millis();
                acked += report.sets.acknowledged + report.puts.acknowledged;
                let problems = report.problems();
                if !problems.is_empty() {
                    if std::env::var_os("CHURN_HISTORY").is_some() {
                        for line in &report.history {
                            println!("    {line}");
                        }
                    }
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
    println!("TOTAL {count} seeds | acked {acked} | sim {sim_ms} ms wall {wall_ms} ms");
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
}

/// A seed whose run crashes a node during a change (replayed twice below).
const REPLAY_SEED: u64 = 3;

#[test]
fn the_same_churn_seed_replays_the_same_history() {
    let config = ChurnConfig::for_seed(REPLAY_SEED);
    let first = run_churn(&config).expect("first run");
    let second = run_churn(&config).expect("second run");
    println!("{}\n{}", first.summary(), second.summary());
    assert_eq!(first.schedule, second.schedule);
    assert_eq!(
        first.digest,
        second.digest,
        "churn seed {REPLAY_SEED} did not replay the same history; rerun: {}",
        rerun_command(REPLAY_SEED)
    );
}
