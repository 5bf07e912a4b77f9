//! Deterministic fault simulation of a Dynamo cluster with a Jepsen-style checker (paper
//! sections 4.6 and 4.8: sloppy quorum, hinted handoff and failure detection, proven under
//! faults).
//!
//! Three to five real nodes (coordinator, in-memory storage, tarpc server and peer pool) run in
//! one process over turmoil's simulated TCP, each as a turmoil host; everything that happens is a
//! function of the seed. A nemesis partitions the network (halves, one node isolated, one way),
//! holds messages, crashes and restarts a node (its [`MemoryEngine`](dynamo_storage::MemoryEngine)
//! survives, standing for its disk), wipes at most one node (new disk, new epoch) and skews
//! clocks, for a bounded simulated time; then everything heals. Clients meanwhile add unique
//! elements to sets by read-modify-write and write fresh keys blind. After a settle period a
//! final read with R = N of every key feeds Jepsen's set checker: nothing acknowledged may be
//! lost (in buckets that keep siblings), nothing unexpected may appear, and every key's primaries
//! must converge to the same siblings within a bounded simulated time.
//!
//! Before those reads, with no client read at all, [`stores`] checks every primary's store
//! directly: hinted handoff and Merkle anti-entropy (every node runs its worker with short
//! simulated intervals) must make every key's primaries agree and hold every acknowledged
//! element within [`run::STORE_CONVERGE_WITHIN`] of the heal, wiped replicas and N equal to
//! the cluster size (three-node seeds) included.
//!
//! Not here: real processes and hosts (other integration tests). The ring is fixed in
//! [`run`]; [`churn`] runs the same nemesis and workload on nodes that run membership
//! ([`membership`]) while an operator joins, removes, replaces nodes and makes them leave.
//! Determinism: every choice comes from the seed and all time is simulated. Two leaks were found
//! and closed: tarpc deadlines are wall-clock instants (the rpc crate's `PeerPool` now enforces
//! the caller's timeout with a runtime timer and gives tarpc's deadline a grace period so it
//! never decides), and per-message random latency interacted with tokio's task-id-ordered
//! teardown of a crashed host (latency is now fixed; see [`run::LATENCY`]). Our own `select!`s
//! are `biased`. `the_same_seed_replays_the_same_history` in `tests/simulation.rs` checks it.

pub mod checker;
pub mod churn;
pub mod clock;
pub mod cluster;
pub mod control;
pub mod kv679;
pub mod membership;
pub mod nemesis;
pub mod net;
pub mod rng;
pub mod run;
pub mod stores;
pub mod workload;

pub use checker::{FinalRead, Item, SetHistory, SetVerdict, check, decode_set, encode_set};
pub use clock::SimClock;
pub use cluster::{Cluster, SimNode};
pub use control::{Control, Fault};
pub use nemesis::{FaultMix, Schedule};
pub use net::{TurmoilConnector, TurmoilListener};
pub use rng::SimRng;
pub use run::{Harness, RunReport, SimConfig, rerun_command, run_seed};

/// What can go wrong running a simulation (as opposed to what the checker finds).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster or a client could not be set up.
    #[error("setup: {0}")]
    Setup(String),
    /// The simulation itself failed: a host errored or the run exceeded its simulated limit.
    #[error("simulation: {0}")]
    Sim(String),
    /// A scripted scenario observed something it must not.
    #[error("check failed: {0}")]
    Check(String),
    /// A request a scripted scenario needed failed.
    #[error("request: {0}")]
    Request(#[from] dynamo_coordinator::Error),
    /// Simulated I/O failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The simulation's result type.
pub type Result<T> = std::result::Result<T, Error>;
