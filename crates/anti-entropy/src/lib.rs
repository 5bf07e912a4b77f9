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
//! Everything above is pure: no I/O, no clock, no randomness.
//!
//! # What it deliberately does not do
//!
//! It does not read configuration, know tarpc (the rpc crate implements the peer side), choose
//! replicas (the ring does) or coordinate requests. Trees are a cache of storage, never the
//! truth: they are not persisted, and are rebuilt from a storage scan at start.

mod admission;
mod error;
mod exchange;
mod hash;
mod tree;

pub use admission::{Admission, AdmissionOptions, DECREASE, FLOOR, INCREASE, TARGET_P99, WINDOW};
pub use error::{Error, Result};
pub use exchange::{
    Ask, Caps, Confirmations, Difference, Exchange, Found, KeyClock, KeyClocks, MAX_KEYS,
    MAX_LEAVES, RepairPlan, Step, key_clocks,
};
pub use hash::{DIGEST_VERSION, KeyHash, key_hash, leaf_of, value_of};
pub use tree::{BRANCHES, HashTree, LEAVES, LEAVES_PER_BRANCH, Leaf, TREE_BYTES};
