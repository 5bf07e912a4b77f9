//! Key placement for Dynamo: where every key lives and which nodes replicate it.
//!
//! This crate owns the ring of the paper's sections 4.2 (partitioning), 4.3 (replication) and 6.2 (partitioning
//! strategy 3):
//!
//! - **Hashing.** A key is placed by [`key_hash`]: MD5 over the length-prefixed bucket and key, read as a
//!   128-bit ring position. The ring is cut into Q equal partitions (Q a power of two, fixed when the cluster
//!   is created, [`DEFAULT_PARTITIONS`] by default) and [`partition_of`] maps a position to its partition.
//!   Equal fixed partitions decouple partitioning from placement, which is what makes strategy 3 cheap to
//!   rebalance, archive and gossip: the table of Q owners *is* the membership's placement state.
//! - **Claim.** [`Ring::new`] gives each member about Q/S partitions, proportional to its weight, and lays them
//!   out so the same node (and, with zones, the same zone) does not own two partitions within N consecutive
//!   ones. [`Ring::with_member_joined`], [`Ring::with_member_left`] and [`Ring::with_member_weight`] move only
//!   the partitions that must move: a joiner takes about Q/(S+1) partitions, only from the most loaded
//!   members; a leaver's partitions go to the least loaded. Every change bumps the [`Ring::epoch`].
//! - **Preference lists.** [`Ring::preference_list`] gives the N distinct physical nodes responsible for a key
//!   (distinct zones first), then every other member as fallbacks for the sloppy quorum.
//! - **Diffs.** [`Ring::diff`] and [`Ring::replica_transfers`] turn two rings into the [`Transfer`]s that move
//!   data to its new owners and replicas.
//!
//! The ring is pure: no I/O, no async, no clocks, no randomness, and the same inputs always give the same
//! ring. It deliberately does not decide *when* the ring changes (membership does, by gossip of operator
//! plans), does not track which nodes are up (failure detection is local to each coordinator, which walks the
//! fallbacks), and does not move data (it only says what must move). Q never changes after cluster creation.
//!
//! ```
//! use dynamo_ring::{Member, NodeId, Ring, DEFAULT_PARTITIONS};
//!
//! let members = ["n1", "n2", "n3", "n4"]
//!     .into_iter()
//!     .map(|name| NodeId::new(name).map(Member::new))
//!     .collect::<Result<Vec<_>, _>>()?;
//! let ring = Ring::new(DEFAULT_PARTITIONS, members, 3)?;
//! let list = ring.preference_list(b"users", b"alice", 3);
//! assert_eq!(list.primaries().len(), 3);
//! assert_eq!(list.fallbacks().len(), 1);
//! # Ok::<(), dynamo_ring::Error>(())
//! ```

mod claim;
mod diff;
mod error;
mod hash;
mod node;
mod preference;
mod ring;

pub use diff::Transfer;
pub use error::{Error, Result};
pub use hash::{PartitionId, key_hash, partition_of};
pub use node::{DEFAULT_WEIGHT, MAX_NODE_ID_LEN, MAX_ZONE_LEN, Member, NodeId};
pub use preference::PreferenceList;
pub use ring::{DEFAULT_PARTITIONS, MAX_PARTITIONS, MIN_PARTITIONS, RING_FORMAT_VERSION, Ring};
