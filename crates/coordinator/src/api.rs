//! Requests and responses of the client-facing operations. They are serializable because the same
//! request travels when a node forwards it (paper 4.5) or a client sends it straight to a
//! coordinator (paper 6.4).

use std::time::Duration;

use dynamo_storage::{Content, VersionedObject};
use dynamo_versioning::{Context, Sibling};
use serde::{Deserialize, Serialize};

use crate::props::Quorum;

/// Read one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetRequest {
    /// Bucket name.
    pub bucket: Vec<u8>,
    /// Key within the bucket.
    pub key: Vec<u8>,
    /// Replies to wait for (R).
    pub r: Quorum,
    /// Replies needed from primary replicas (PR).
    pub pr: Quorum,
    /// How long the client is willing to wait, in milliseconds (`None`: the node's default).
    pub timeout_ms: Option<u64>,
}

impl GetRequest {
    /// A read with the bucket's default quorums.
    pub fn new(bucket: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> GetRequest {
        GetRequest {
            bucket: bucket.into(),
            key: key.into(),
            r: Quorum::Default,
            pr: Quorum::Default,
            timeout_ms: None,
        }
    }
}

/// What a read found: every causally concurrent version and the context that covers them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetResponse {
    /// The reconciled object: its siblings include tombstones, which [`GetResponse::siblings`] hides.
    pub object: VersionedObject,
}

impl GetResponse {
    /// The live (non-deleted) versions, one per distinct value, in a deterministic order.
    pub fn siblings(&self) -> Vec<&Sibling<Content>> {
        let mut out: Vec<&Sibling<Content>> = Vec::new();
        for s in self.object.siblings() {
            if !s.value.deleted && !out.iter().any(|o| o.value == s.value) {
                out.push(s);
            }
        }
        out
    }

    /// Whether the key has no live version (never written, or deleted).
    pub fn is_not_found(&self) -> bool {
        self.siblings().is_empty()
    }

    /// The context to send with the next write of this key; it covers every version returned,
    /// tombstones included, so a write with it supersedes them all.
    pub fn context(&self) -> Context {
        self.object.context()
    }
}

/// Write one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    /// Bucket name.
    pub bucket: Vec<u8>,
    /// Key within the bucket.
    pub key: Vec<u8>,
    /// The new value and its metadata.
    pub content: Content,
    /// The context from the read this write is based on (empty for a blind write).
    pub context: Context,
    /// Acknowledgements to wait for (W).
    pub w: Quorum,
    /// Durable acknowledgements to wait for (DW).
    pub dw: Quorum,
    /// Acknowledgements needed from primary replicas (PW).
    pub pw: Quorum,
    /// How long the client is willing to wait, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Set by a node that forwarded the request: the receiver coordinates it and never forwards
    /// again, so a disagreement about the ring cannot make a loop.
    pub forwarded: bool,
}

impl PutRequest {
    /// A write with the bucket's default quorums.
    pub fn new(
        bucket: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
        content: Content,
        context: Context,
    ) -> PutRequest {
        PutRequest {
            bucket: bucket.into(),
            key: key.into(),
            content,
            context,
            w: Quorum::Default,
            dw: Quorum::Default,
            pw: Quorum::Default,
            timeout_ms: None,
            forwarded: false,
        }
    }
}

/// What a write stored at its coordinator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    /// The coordinator's version after the write: the new sibling plus every concurrent one it knew
    /// (Riak's `returnbody`).
    pub object: VersionedObject,
}

/// Delete one key (a write of a tombstone, paper 4.1's `put` of a deletion marker).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRequest {
    /// Bucket name.
    pub bucket: Vec<u8>,
    /// Key within the bucket.
    pub key: Vec<u8>,
    /// The context of the versions to delete; `None` reads the key first and deletes what it finds.
    pub context: Option<Context>,
    /// Replies to wait for when reading first (R).
    pub r: Quorum,
    /// Replies needed from primaries when reading first (PR).
    pub pr: Quorum,
    /// Acknowledgements to wait for (W).
    pub w: Quorum,
    /// Durable acknowledgements (DW).
    pub dw: Quorum,
    /// Primary acknowledgements (PW).
    pub pw: Quorum,
    /// Milliseconds the client is willing to wait.
    pub timeout_ms: Option<u64>,
    /// See [`PutRequest::forwarded`].
    pub forwarded: bool,
}

impl DeleteRequest {
    /// A delete with the bucket's default quorums.
    pub fn new(
        bucket: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
        context: Option<Context>,
    ) -> Self {
        DeleteRequest {
            bucket: bucket.into(),
            key: key.into(),
            context,
            r: Quorum::Default,
            pr: Quorum::Default,
            w: Quorum::Default,
            dw: Quorum::Default,
            pw: Quorum::Default,
            timeout_ms: None,
            forwarded: false,
        }
    }
}

/// What a delete did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResponse {
    /// Whether a live version existed (as far as the context or the read showed).
    pub existed: bool,
}

/// A replica write: store `object` by merging it with what the replica has (paper 4.5, and the
/// receiving side of read repair and hinted handoff).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaPut {
    /// Where the object lives.
    pub key: dynamo_storage::ObjectKey,
    /// The coordinator's version.
    pub object: VersionedObject,
    /// Resolve siblings by timestamp after merging (LWW buckets).
    pub last_write_wins: bool,
    /// Set when the receiver is a fallback standing in for this primary (sloppy quorum, paper
    /// 4.6): it keeps the object and a hint, and hands the object back when the primary returns.
    pub hint: Option<dynamo_ring::NodeId>,
    /// Ask the receiver to make the write durable (fsync) before answering, whatever its
    /// default durability (hinted handoff needs this before it may drop a hint).
    pub durable: bool,
}

impl ReplicaPut {
    /// A plain replica write of `object` under `key`.
    pub fn new(
        key: dynamo_storage::ObjectKey,
        object: VersionedObject,
        last_write_wins: bool,
    ) -> ReplicaPut {
        ReplicaPut {
            key,
            object,
            last_write_wins,
            hint: None,
            durable: false,
        }
    }
}

/// One node's view of the cluster, for `status` commands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The answering node.
    pub node: String,
    /// Its ring's epoch.
    pub ring_epoch: u64,
    /// Partitions it owns.
    pub partitions_owned: usize,
    /// Objects stored (approximate is fine), when the engine knows.
    pub hints_pending: u64,
    /// Seconds since the node started.
    pub uptime_secs: u64,
}

/// Converts a client's timeout in milliseconds into a duration, capped at `max`.
pub(crate) fn timeout_of(timeout_ms: Option<u64>, default: Duration, max: Duration) -> Duration {
    timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(default)
        .min(max)
}
