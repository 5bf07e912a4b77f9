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

use dynamo_integration_tests::sim::{RunReport, SimConfig, kv679, rerun_command, run_seed};

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
    let mut totals = Totals::default();
    for seed in seeds {
        let config = SimConfig::for_seed(seed);
        match run_seed(&config) {
            Ok(report) => {
                println!("{}", report.summary());
                totals.add(&report);
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
    println!("{}", totals.line());
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
}

/// Figures summed over every seed of a run.
#[derive(Default)]
struct Totals {
    seeds: u64,
    attempted: usize,
    acknowledged: usize,
    lost: usize,
    recovered: usize,
    lww_acknowledged: usize,
    lww_lost: usize,
    hints_stored: u64,
    hints_delivered: u64,
    slowest_convergence_ms: u128,
    slowest_store_convergence_ms: u128,
    wiped: u64,
    wiped_n_equals_size: u64,
    sim_ms: u128,
    wall_ms: u128,
}

impl Totals {
    fn add(&mut self, r: &RunReport) {
        self.seeds += 1;
        self.attempted += r.sets.attempted + r.puts.attempted;
        self.acknowledged += r.sets.acknowledged + r.puts.acknowledged;
        self.lost += r.sets.lost.len() + r.puts.lost.len();
        self.recovered += r.sets.recovered.len() + r.puts.recovered.len();
        self.lww_acknowledged += r.lww.acknowledged;
        self.lww_lost += r.lww.lost.len();
        self.hints_stored += r.hints_stored;
        self.hints_delivered += r.hints_delivered;
        let converged = r.convergence.as_ref().and_then(|c| c.after_heal);
        self.slowest_convergence_ms = self
            .slowest_convergence_ms
            .max(converged.map_or(0, |d| d.as_millis()));
        if r.schedule.describe().contains("wipe") {
            self.wiped += 1;
            if r.config.nodes == usize::from(dynamo_integration_tests::sim::cluster::SIM_N) {
                self.wiped_n_equals_size += 1;
            }
        }
        let stores = r.store_convergence.as_ref().and_then(|c| c.after_heal);
        self.slowest_store_convergence_ms = self
            .slowest_store_convergence_ms
            .max(stores.map_or(0, |d| d.as_millis()));
        self.sim_ms += r.sim_time.as_millis();
        self.wall_ms += r.wall_time.as_millis();
    }

    fn line(&self) -> String {
        format!(
            "TOTAL {} seeds | sets+puts: attempted {} acked {} lost {} recovered {} \
             | lww (allow_mult=false): acked {} lost {} \
             | hints stored {} delivered {} \
             | seeds with a wiped replica {} (N = cluster size: {}) \
             | slowest store convergence (no reads) {} ms after heal \
             | slowest convergence {} ms after heal \
             | sim {} ms wall {} ms",
            self.seeds,
            self.attempted,
            self.acknowledged,
            self.lost,
            self.recovered,
            self.lww_acknowledged,
            self.lww_lost,
            self.hints_stored,
            self.hints_delivered,
            self.wiped,
            self.wiped_n_equals_size,
            self.slowest_store_convergence_ms,
            self.slowest_convergence_ms,
            self.sim_ms,
            self.wall_ms,
        )
    }
}

/// A five-node seed whose schedule has clock skew, two crashes and a one-way partition, and whose
/// run stores hints (checked below), so the determinism check covers crashes, partitions and
/// handoff.
const REPLAY_SEED: u64 = 53;

#[test]
fn the_same_seed_replays_the_same_history() {
    let config = SimConfig::for_seed(REPLAY_SEED);
    let first = run_seed(&config).expect("first run");
    let second = run_seed(&config).expect("second run");
    println!("{}\n{}", first.summary(), second.summary());
    assert!(
        first.hints_stored > 0,
        "the replayed seed should exercise handoff"
    );
    assert_eq!(first.schedule, second.schedule);
    assert_eq!(
        first.digest,
        second.digest,
        "seed {REPLAY_SEED} did not replay the same history (real time leaked into the \
         simulation: see the sim module's doc on tarpc deadlines); rerun: {}",
        rerun_command(REPLAY_SEED)
    );
}

/// Seeds of the scripted kv679 scenarios (they do not depend on luck, so a few suffice).
const KV679_SEEDS: [u64; 3] = [1, 2, 3];

#[test]
fn kv679_a_wiped_node_does_not_make_later_writes_lose() {
    for seed in KV679_SEEDS {
        if let Err(e) = kv679::wiped_node(seed) {
            panic!("seed {seed}: {e}");
        }
    }
}

#[test]
fn kv679_a_tombstone_handed_off_late_does_not_erase_a_newer_write() {
    for seed in KV679_SEEDS {
        for blind in [false, true] {
            if let Err(e) = kv679::late_tombstone(seed, blind) {
                panic!("seed {seed}, blind {blind}: {e}");
            }
        }
    }
}
