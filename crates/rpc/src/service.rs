//! The one tarpc service every node serves: client-facing operations (for forwarding and for the
//! client-driven Rust client), the replica side of coordination, cluster information, and
//! partition transfer. Later concerns (gossip, Merkle exchange) add methods here, bumping
//! [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION) when they change existing ones.
//!
//! New methods go at the end: bincode numbers enum variants by position, so appending keeps
//! every existing request and response encoded as before (the transfer methods were added that
//! way, without a version bump; a node that predates them fails those calls, and may drop the
//! connection they came on, which the pool redials).

use std::collections::BTreeMap;

use dynamo_anti_entropy::{KeyClocks, KeyObject, Leaf, Status as AeStatus};
use dynamo_coordinator::{
    BucketProps, DeleteRequest, DeleteResponse, Error, GetRequest, GetResponse, NodeStatus,
    PartitionSummary, PutRequest, PutResponse, ReplicaPut, TransferStatus,
};
use dynamo_membership::{AdminCommand, AdminReply, GossipDigest};
use dynamo_ring::{NodeId, PartitionId, Ring};
use dynamo_storage::{Entry, ObjectKey, VersionedObject};
use dynamo_versioning::VectorClock;
use serde::{Deserialize, Serialize};

/// What a client needs to route requests itself: the ring and where each member listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// The ring in force at the answering node.
    pub ring: Ring,
    /// Internode (and client) RPC address of every member.
    pub addresses: BTreeMap<NodeId, String>,
}

/// The node service.
#[tarpc::service]
pub trait Node {
    /// Liveness and a summary of the answering node.
    async fn ping() -> NodeStatus;
    /// The answering node's ring and member addresses.
    async fn cluster_map() -> ClusterMap;
    /// Coordinate a read.
    async fn get(request: GetRequest) -> Result<GetResponse, Error>;
    /// Coordinate a write (forwarded by a node outside the top N, or sent by a client).
    async fn put(request: PutRequest) -> Result<PutResponse, Error>;
    /// Coordinate a delete.
    async fn delete(request: DeleteRequest) -> Result<DeleteResponse, Error>;
    /// List a bucket's live keys across the cluster.
    async fn list_keys(bucket: Vec<u8>) -> Result<Vec<Vec<u8>>, Error>;
    /// A bucket's properties.
    async fn bucket_props(bucket: Vec<u8>) -> BucketProps;
    /// Set a bucket's properties on every member.
    async fn set_bucket_props(bucket: Vec<u8>, props: BucketProps) -> Result<(), Error>;
    /// Replica side: the local version of a key.
    async fn replica_get(key: ObjectKey) -> Result<Option<VersionedObject>, Error>;
    /// Replica side: merge a version into local storage; answers whether it is durable.
    async fn replica_put(put: ReplicaPut) -> Result<bool, Error>;
    /// Replica side: the live keys of a bucket stored here.
    async fn replica_list_keys(bucket: Vec<u8>) -> Result<Vec<Vec<u8>>, Error>;
    /// Replica side: apply bucket properties announced by another member.
    async fn replica_set_bucket_props(bucket: Vec<u8>, props: BucketProps) -> Result<(), Error>;

    // ---- anti-entropy
    /// Anti-entropy: the root of the answering node's tree of `partition`; `from` names the
    /// node exchanging with it.
    async fn ae_root(partition: PartitionId, from: NodeId) -> Result<u64, AeError>;
    /// Anti-entropy: every branch hash of the tree of `partition`.
    async fn ae_branches(partition: PartitionId) -> Result<Vec<u64>, AeError>;
    /// Anti-entropy: the leaf hashes under each of `branches`.
    async fn ae_leaves(
        partition: PartitionId,
        branches: Vec<usize>,
    ) -> Result<Vec<Vec<u64>>, AeError>;
    /// Anti-entropy: the key clocks of `leaves` from storage, at most `max_keys` (whole leaves).
    async fn ae_key_clocks(
        partition: PartitionId,
        leaves: Vec<Leaf>,
        max_keys: u64,
    ) -> Result<KeyClocks, AeError>;
    /// Anti-entropy: the stored objects of `keys` of `partition`.
    async fn ae_fetch(
        partition: PartitionId,
        keys: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Vec<KeyObject>, AeError>;
    /// Anti-entropy: merge `objects` of `partition` (a repair pushed by `from`).
    async fn ae_push(
        partition: PartitionId,
        from: NodeId,
        objects: Vec<KeyObject>,
    ) -> Result<(), AeError>;
    /// Anti-entropy: the answering node's per-partition status (`dynamo admin aae`).
    async fn ae_status() -> Result<AeStatus, AeError>;
    // ---- partition transfer (paper 4.9)
    /// Receiver side: merge a batch of a partition's objects durably; answers how many.
    async fn transfer_batch(partition: PartitionId, entries: Vec<Entry>) -> Result<u64, Error>;
    /// Receiver side: of these keys and the sender's clocks, those not held at least as new.
    async fn transfer_verify(
        partition: PartitionId,
        clocks: Vec<(ObjectKey, VectorClock)>,
    ) -> Result<Vec<ObjectKey>, Error>;
    /// Receiver side: the final sync; what this node durably holds of the partition.
    async fn transfer_sync(partition: PartitionId) -> Result<PartitionSummary, Error>;
    /// The partition transfers the answering node is sending (`dynamo admin transfers`).
    async fn transfers() -> Vec<TransferStatus>;
    /// The answering node's transfer concurrency limit.
    async fn transfer_limit() -> usize;
    /// Changes the answering node's transfer concurrency limit.
    async fn set_transfer_limit(limit: usize) -> Result<(), Error>;
    // ---- membership
    /// Gossip: a peer's digest; answers `None` when in sync, else this node's encoded state.
    async fn gossip_digest(digest: GossipDigest) -> Result<Option<Vec<u8>>, String>;
    /// Gossip: a peer's encoded state, for this node to merge.
    async fn gossip_push(state: Vec<u8>) -> Result<(), String>;
    /// Gossip: this node's encoded state (a joining node copies it).
    async fn gossip_pull() -> Result<Vec<u8>, String>;
    /// An operator's membership command (`dynamo admin ...`), run by the answering node.
    async fn membership_admin(command: AdminCommand) -> Result<AdminReply, String>;
}

/// The anti-entropy crate's error, as it crosses the wire.
pub use dynamo_anti_entropy::Error as AeError;
