//! The one tarpc service every node serves: client-facing operations (for forwarding and for the
//! client-driven Rust client), the replica side of coordination, and cluster information. Later
//! concerns (gossip, Merkle exchange, partition transfer) add methods here, bumping
//! [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION) when they change existing ones.

use std::collections::BTreeMap;

use dynamo_coordinator::{
    BucketProps, DeleteRequest, DeleteResponse, Error, GetRequest, GetResponse, NodeStatus,
    PutRequest, PutResponse, ReplicaPut,
};
use dynamo_membership::{AdminCommand, AdminReply, GossipDigest};
use dynamo_ring::{NodeId, Ring};
use dynamo_storage::{ObjectKey, VersionedObject};
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
