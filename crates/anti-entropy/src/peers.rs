//! What anti-entropy needs from the other replicas. The trait lives here, with the code that uses
//! it; the rpc crate implements it over tarpc (the server side calls [`AntiEntropy`]'s `serve_*`
//! methods) and tests may implement it in-process.
//!
//! [`AntiEntropy`]: crate::AntiEntropy

use std::future::Future;
use std::time::Duration;

use dynamo_ring::{NodeId, PartitionId};
use dynamo_storage::VersionedObject;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::exchange::KeyClocks;
use crate::tree::Leaf;

/// Keys one fetch or push carries at most: bounds a message (objects are at most the storage
/// value limit each) and the work one request does on the answering node.
pub const MAX_BATCH: usize = 64;

/// One key's object, as fetched or pushed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyObject {
    /// Bucket name.
    pub bucket: Vec<u8>,
    /// Key within the bucket.
    pub key: Vec<u8>,
    /// The stored object (`None`: absent on the answering replica; never `None` in a push).
    pub object: Option<VersionedObject>,
}

/// Another replica's side of an exchange, addressed by node id. Every call carries the time the
/// caller is still willing to wait; an implementation gives up with `Error::Timeout` after it.
/// All calls but [`Peers::ae_push`] only read; a push merges, so it is idempotent and may be
/// retried freely.
pub trait Peers: Send + Sync + 'static {
    /// The root of `to`'s tree of `p` (`from` names the asking node, for `to`'s status).
    fn ae_root(
        &self,
        to: &NodeId,
        p: PartitionId,
        from: &NodeId,
        timeout: Duration,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Every branch hash of `to`'s tree of `p`.
    fn ae_branches(
        &self,
        to: &NodeId,
        p: PartitionId,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<u64>>> + Send;

    /// The leaf hashes under each of `branches`, in that order.
    fn ae_leaves(
        &self,
        to: &NodeId,
        p: PartitionId,
        branches: Vec<usize>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<Vec<u64>>>> + Send;

    /// The key clocks of `leaves` from `to`'s storage, at most `max_keys` (whole leaves).
    fn ae_key_clocks(
        &self,
        to: &NodeId,
        p: PartitionId,
        leaves: Vec<Leaf>,
        max_keys: usize,
        timeout: Duration,
    ) -> impl Future<Output = Result<KeyClocks>> + Send;

    /// `to`'s objects of `keys` (at most [`MAX_BATCH`]), in the order asked.
    fn ae_fetch(
        &self,
        to: &NodeId,
        p: PartitionId,
        keys: Vec<(Vec<u8>, Vec<u8>)>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<KeyObject>>> + Send;

    /// Merges `objects` (at most [`MAX_BATCH`]) into `to`'s storage.
    fn ae_push(
        &self,
        to: &NodeId,
        p: PartitionId,
        from: &NodeId,
        objects: Vec<KeyObject>,
        timeout: Duration,
    ) -> impl Future<Output = Result<()>> + Send;
}
