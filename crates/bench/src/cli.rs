//! The command line and the benchmark it describes: connect to the system under test, run the
//! requested phases one after the other, and gather their figures in a [`Report`].

use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use dynamo_client::{Client, ClientConfig};
use serde::Serialize;

use crate::driver::{PhaseOptions, run_phase};
use crate::error::{Error, Result};
use crate::http::HttpStore;
use crate::store::{ClientStore, Store};
use crate::summary::PhaseSummary;
use crate::workload::{Distribution, Mix, UpdateMode, Workload};

/// Largest value size accepted: the node's default value limit. Each worker keeps two values'
/// worth of random bytes, so this also bounds the generator's own memory.
pub const MAX_VALUE_SIZE: usize = 16 * 1024 * 1024;

/// Most records accepted: building the zipfian generator sums over every record (about a second
/// per hundred million), and a load phase beyond this would take hours on one client anyway.
pub const MAX_RECORDS: u64 = 100_000_000;

/// How requests reach the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Through the Rust client, straight to a coordinator in the key's top N (paper 6.4).
    Client,
    /// Through the HTTP API, round-robin over the endpoints; nodes forward as needed.
    Http,
}

/// A phase of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PhaseName {
    /// Insert every record once.
    Load,
    /// Run the workload's mix of reads and updates.
    Run,
}

/// `dynamo-bench`: a YCSB-style load generator for Dynamo in Rust.
#[derive(Clone, Debug, Parser)]
#[command(name = "dynamo-bench", version, about)]
pub struct Args {
    /// Client-driven (Rust client) or server-driven (HTTP) coordination.
    #[arg(long, value_enum, default_value_t = Mode::Client)]
    pub mode: Mode,
    /// RPC addresses of one or more nodes (client mode), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:7001")]
    pub seeds: Vec<String>,
    /// The cluster's name (client mode).
    #[arg(long, default_value = "dev")]
    pub cluster_name: String,
    /// The cluster's shared secret (client mode).
    #[arg(long, env = "DYNAMO_CLUSTER_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// HTTP endpoints (`host:port`), comma separated, used in turn (http mode).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:8098")]
    pub http: Vec<String>,
    /// The bucket the records live in.
    #[arg(long, default_value = "ycsb")]
    pub bucket: String,
    /// Phases to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "load,run")]
    pub phases: Vec<PhaseName>,
    /// YCSB core workload of the run phase.
    #[arg(long, value_enum, default_value_t = Workload::A)]
    pub workload: Workload,
    /// How the run phase chooses records.
    #[arg(long, value_enum, default_value_t = Distribution::Zipfian)]
    pub distribution: Distribution,
    /// Number of records (the load phase inserts them all).
    #[arg(long, default_value_t = 1000)]
    pub records: u64,
    /// Most operations in the run phase.
    #[arg(long, default_value_t = 10_000)]
    pub operations: u64,
    /// Most seconds per phase.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Bytes per value.
    #[arg(long, default_value_t = 1024)]
    pub value_size: usize,
    /// Concurrent client tasks.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Open loop at this many operations per second (default: closed loop).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Updates read first and write with the context read (rmw), or write blind.
    #[arg(long, value_enum, default_value_t = UpdateMode::Rmw)]
    pub update_mode: UpdateMode,
    /// Per-request timeout in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Seed of the random streams (keys, operation mix, values).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What a benchmark measured, with the settings that matter to read it.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// How requests reached the cluster.
    pub mode: Mode,
    /// The run phase's workload.
    pub workload: Workload,
    /// The run phase's key distribution.
    pub distribution: Distribution,
    /// Records in the key space.
    pub records: u64,
    /// Concurrent client tasks.
    pub clients: usize,
    /// Open-loop rate, if any.
    pub rate: Option<f64>,
    /// Bytes per value.
    pub value_size: usize,
    /// How updates were sent.
    pub update_mode: UpdateMode,
    /// The random seed.
    pub seed: u64,
    /// Figures per phase, in the order run.
    pub phases: Vec<PhaseSummary>,
}

impl Args {
    /// Checks the settings that do not depend on the mode.
    fn validate(&self) -> Result<Duration> {
        if self.records == 0 || self.records > MAX_RECORDS {
            return Err(Error::Config(format!(
                "--records must be in 1..={MAX_RECORDS}"
            )));
        }
        if self.value_size > MAX_VALUE_SIZE {
            return Err(Error::Config(format!(
                "--value-size must be at most {MAX_VALUE_SIZE}"
            )));
        }
        if self.phases.is_empty() {
            return Err(Error::Config("--phases names no phase".into()));
        }
        if self.timeout_ms == 0 {
            return Err(Error::Config("--timeout-ms must be above zero".into()));
        }
        if self.bucket.is_empty() {
            return Err(Error::Config("--bucket must not be empty".into()));
        }
        Duration::try_from_secs_f64(self.duration)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| Error::Config("--duration must be a positive number of seconds".into()))
    }

    /// The options of phase `phase`.
    fn phase_options(&self, phase: PhaseName, duration: Duration) -> Result<PhaseOptions> {
        let (mix, operations) = match phase {
            PhaseName::Load => (Mix::Load, self.records),
            PhaseName::Run => {
                let keys = self
                    .distribution
                    .chooser(self.records)
                    .map_err(|e| Error::Config(e.to_string()))?;
                let mix = Mix::Run {
                    read_proportion: self.workload.read_proportion(),
                    keys,
                };
                (mix, self.operations)
            }
        };
        Ok(PhaseOptions {
            name: format!("{phase:?}").to_lowercase(),
            mix,
            clients: self.clients,
            operations,
            duration,
            rate: self.rate,
            value_size: self.value_size,
            update_mode: self.update_mode,
            seed: self.seed.wrapping_add(phase as u64),
        })
    }

    /// Connects as the mode says and runs every phase.
    pub async fn execute(&self) -> Result<Report> {
        let duration = self.validate()?;
        let timeout = Duration::from_millis(self.timeout_ms);
        let phases = match self.mode {
            Mode::Client => {
                let secret = self.secret.clone().ok_or_else(|| {
                    Error::Config("client mode needs --secret or DYNAMO_CLUSTER_SECRET".into())
                })?;
                let mut config = ClientConfig::new(
                    self.seeds.clone(),
                    self.cluster_name.clone(),
                    secret.into_bytes(),
                );
                config.request_timeout = timeout;
                let client = Client::connect(config).await?;
                let store = ClientStore::new(client, self.bucket.clone());
                self.run_phases(Arc::new(store), duration).await?
            }
            Mode::Http => {
                let store = HttpStore::new(&self.http, self.bucket.as_bytes(), timeout)?;
                self.run_phases(Arc::new(store), duration).await?
            }
        };
        Ok(Report {
            mode: self.mode,
            workload: self.workload,
            distribution: self.distribution,
            records: self.records,
            clients: self.clients,
            rate: self.rate,
            value_size: self.value_size,
            update_mode: self.update_mode,
            seed: self.seed,
            phases,
        })
    }

    async fn run_phases<S: Store>(
        &self,
        store: Arc<S>,
        duration: Duration,
    ) -> Result<Vec<PhaseSummary>> {
        let mut summaries = Vec::new();
        for &phase in &self.phases {
            let options = self.phase_options(phase, duration)?;
            eprintln!(
                "dynamo-bench: {} phase: up to {} operations in {:.1} s with {} clients",
                options.name,
                options.operations,
                duration.as_secs_f64(),
                options.clients
            );
            summaries.push(run_phase(Arc::clone(&store), options).await?);
        }
        Ok(summaries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Args {
        let mut argv = vec!["dynamo-bench"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn the_documented_command_line_parses() {
        let args = parse(&[
            "--mode",
            "client",
            "--seeds",
            "127.0.0.1:7001,127.0.0.1:7002",
            "--cluster-name",
            "dev",
            "--secret",
            "0123456789abcdef",
            "--workload",
            "b",
            "--distribution",
            "uniform",
            "--phases",
            "run",
            "--rate",
            "500",
            "--json",
        ]);
        assert_eq!(args.seeds.len(), 2);
        assert_eq!(args.workload, Workload::B);
        assert_eq!(args.phases, [PhaseName::Run]);
        assert_eq!(args.rate, Some(500.0));
        assert!(args.json);
    }

    #[test]
    fn defaults_load_then_run_workload_a() {
        let args = parse(&[]);
        assert_eq!(args.phases, [PhaseName::Load, PhaseName::Run]);
        assert_eq!(args.workload, Workload::A);
        assert_eq!(args.distribution, Distribution::Zipfian);
        assert_eq!(args.value_size, 1024);
        assert!(args.validate().is_ok());
    }

    #[test]
    fn impossible_settings_are_refused_before_connecting() {
        for extra in [
            &["--records", "0"][..],
            &["--duration", "0"],
            &["--duration=-3"],
            &["--value-size", "999999999"],
            &["--timeout-ms", "0"],
            &["--bucket", ""],
        ] {
            let args = parse(extra);
            assert!(
                matches!(args.validate(), Err(Error::Config(_))),
                "{extra:?}"
            );
        }
    }

    #[tokio::test]
    async fn client_mode_without_a_secret_is_a_config_error() {
        let mut args = parse(&[]);
        args.secret = None;
        assert!(matches!(args.execute().await, Err(Error::Config(_))));
    }

    #[test]
    fn the_load_phase_inserts_every_record_and_the_run_phase_uses_the_budget() {
        let args = parse(&["--records", "300", "--operations", "50"]);
        let d = Duration::from_secs(1);
        let load = args.phase_options(PhaseName::Load, d).unwrap();
        assert_eq!((load.name.as_str(), load.operations), ("load", 300));
        let run = args.phase_options(PhaseName::Run, d).unwrap();
        assert_eq!((run.name.as_str(), run.operations), ("run", 50));
    }
}
