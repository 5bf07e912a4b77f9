//! Anti-entropy for Dynamo in Rust: replicas of a partition find and repair their differences
//! without any client read (paper section 4.7, "handling permanent failures: replica
//! synchronization"), and background work yields to foreground work (section 6.5).
//!
//! # What this crate owns
//!
//! - [`HashTree`]: one hash tree per partition in the shape of Riak's Tictac AAE: [`LEAVES`]
//!   leaves holding the XOR of the hashes of their keys, [`BRANCHES`] branches, one root. A key's
//!   hash ([`key_hash`]) covers its bucket, key and a canonical digest of its causal metadata
//!   (clock, sibling dots, tombstone flags), never the value bytes. XOR makes the tree
//!   independent of insertion order and lets a write be applied as `old XOR new` with no scan.
//!   **Memory per partition:** the tree is [`TREE_BYTES`] (8,448 bytes: 1,024 + 32 u64s); with
//!   the bookkeeping of a tracked partition (in-flight write counters, a rebuild's touched-leaf
//!   set) about 13 KiB. A node replicating 48 of 64 partitions holds about 620 KiB.
//! - [`Exchange`]: the pure exchange protocol between two replicas (roots, then differing
//!   branches, then the key clocks of differing leaves, with [`Caps`] per round), and
//!   [`Confirmations`]: a difference is repaired only once two consecutive exchanges of the same
//!   pair found it, so writes in flight are not mistaken for divergence; [`RepairPlan`] lists the
//!   keys to pull and push. Repair always merges (a lattice join), so it is idempotent and never
//!   loses a sibling.
//! - [`Admission`]: the AIMD controller of the background share from foreground latency samples
//!   (p99 over a sliding window against a target, with a floor).
//!
//! Everything above is pure: no I/O, no clock, no randomness. Around it:
//!
//! - [`Trees`] and [`TrackingEngine`]: the trees of the partitions this node replicates under
//!   the current ring, kept current by wrapping the storage [`Engine`](dynamo_storage::Engine):
//!   after each successful write or removal of a key in a tracked partition, `hash(old) XOR
//!   hash(new)` is applied to its tree, so the coordinator is unchanged. A fallback's copies of
//!   other partitions are not tracked. Builds from a storage scan stay exact while writes run
//!   (see [`Trees`]).
//! - [`AntiEntropy`]: the node's service: tracks partitions from the ring ([`AntiEntropy::set_ring`]
//!   drops trees of partitions no longer replicated and adds new ones), builds and rebuilds trees
//!   on a jittered schedule, answers the peer side of exchanges (`serve_*`), and runs the worker
//!   ([`AntiEntropy::run_worker`]) that exchanges every (partition, replica) pair at least every
//!   [`Options::exchange_interval`], repairs confirmed differences in both directions by merging,
//!   and runs at most as many exchanges and builds at once as the admission controller allows.
//!   Peers are reached through the [`Peers`] trait, which the rpc crate implements.
//!
//! # What it deliberately does not do
//!
//! It does not read configuration, know tarpc (the rpc crate implements the peer side), choose
//! replicas (the ring does) or coordinate requests. Trees are a cache of storage, never the
//! truth: they are not persisted, and are rebuilt from a storage scan at start.

mod admission;
mod driver;
mod engine;
mod error;
mod exchange;
mod hash;
mod metrics;
mod peers;
mod service;
mod tree;
mod trees;

pub use admission::{Admission, AdmissionOptions, DECREASE, FLOOR, INCREASE, TARGET_P99, WINDOW};
pub use driver::ExchangeReport;
pub use engine::{LATENCY_BACKLOG, LatencySamples, TrackingEngine};
pub use error::{Error, Result};
pub use exchange::{
    Ask, Caps, Confirmations, Difference, Exchange, Found, KeyClock, KeyClockCollector, KeyClocks,
    MAX_KEYS, MAX_LEAVES, RepairPlan, Step, key_clocks,
};
pub use hash::{DIGEST_VERSION, KeyHash, key_hash, leaf_of, value_hash, value_of};
pub use metrics::Metrics;
pub use peers::{KeyObject, MAX_BATCH, Peers};
pub use service::{
    AntiEntropy, BATCH_BYTES, CONFIRM_DELAY, EXCHANGE_INTERVAL, IsLww, MAX_CONCURRENT, NowMs,
    Options, PartitionStatus, Parts, PeerStatus, REBUILD_INTERVAL, SCAN_PAGE, Status, TICK,
    TIMEOUT,
};
pub use tree::{BRANCHES, HashTree, LEAVES, LEAVES_PER_BRANCH, Leaf, TREE_BYTES};
pub use trees::{Built, TRACKING_BYTES, Trees, WriteGuard};
