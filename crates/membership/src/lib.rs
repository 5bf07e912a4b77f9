//! Cluster membership for Dynamo in Rust: who is in the cluster, who owns which partition, and
//! how that changes (paper sections 4.8.1 ring membership, 4.8.2 external discovery, 4.9
//! adding and removing storage nodes).
//!
//! The core is pure, like `dynamo-ring`: no I/O, no clock, no randomness (the random peer choice
//! takes a number from the caller).
//!
//! - **State.** [`ClusterState`] is the persisted membership history every node gossips: members
//!   (address, zone, weight, [`Status`], each a versioned register), the current ring with its
//!   epoch, the pending ownership change (the next ring and the progress of each partition
//!   transfer, `waiting < streaming < synced`), the operator's staged changes, the cluster-wide
//!   bucket properties (opaque bytes, last writer wins) and which state each member has seen.
//! - **Merge.** [`ClusterState::merge`] is a join: commutative, associative, idempotent
//!   (proptests in `tests/laws.rs`), so gossip in any order converges. Two states that share a
//!   name and an epoch but hold different rings never mix: the merge reports
//!   [`Error::DivergentRings`].
//! - **Plan and commit.** An operator stages [`Change`]s on any node, looks at the
//!   deterministic [`Plan`] (partitions that move, per-node counts, balance) and commits it by
//!   id, which is refused unless every member has seen the latest state and the plan is still
//!   the one shown. Only the claimant (the first valid member in id order) turns a committed plan
//!   into a pending next ring (strategy 3 claim with minimal movement, from `dynamo-ring`), and
//!   only it installs that ring once every transfer is synced and every member has seen that.
//!   One topology change runs at a time.
//! - **Gossip.** Each second a node sends a digest to one random live member and to every seed;
//!   the full state travels only on a mismatch ([`GossipDigest`]). Failure detection stays local
//!   (4.8.3): gossip never changes a member's status; only an operator removes a node.
//! - **Driver.** [`Membership`] runs the loop on tokio, persists every change through
//!   [`StateStore`], reaches peers through [`GossipPeers`] (the rpc crate implements it), runs
//!   this node's transfers through a [`PartitionMover`] (the node implements it with the
//!   coordinator's transfer functions) and serves peers and operators through
//!   [`MembershipService`].
//!
//! Not here: moving data (the mover does it), routing requests (the coordinator takes the rings
//! this crate settles on), the wire (rpc crate) and configuration (node crate).

mod codec;
mod driver;
mod error;
mod gossip;
pub mod memnet;
mod plan;
mod state;
mod views;

pub use codec::{MAX_STATE_BYTES, STATE_FORMAT_VERSION};
pub use driver::{
    EXCHANGE_TIMEOUT, GOSSIP_INTERVAL, GossipPeers, Identity, MAX_CONCURRENT_TRANSFERS, Membership,
    MembershipService, Options, PEER_BACKOFF, PartitionMover, ProgressReport, StateStore,
    TransferStats,
};
pub use error::{Error, Result};
pub use gossip::{Absorbed, GossipDigest};
pub use plan::{Change, NodeCounts, Plan, PlanId};
pub use state::{
    BucketEntry, ClusterState, MemberInfo, Pending, Phase, Progress, RingSlot, Seen, Staged, Status,
};
pub use views::{
    AdminCommand, AdminReply, MemberView, PlanNodeView, PlanView, RingView, TransferView,
    TransfersView,
};
