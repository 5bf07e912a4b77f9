//! What a coordinator needs from its peers. The trait lives here, with the code that uses it; the
//! rpc crate implements it over tarpc and tests implement it in-process.

use std::future::Future;
use std::time::Duration;

use dynamo_ring::{NodeId, PartitionId};
use dynamo_storage::{Entry, ObjectKey, VersionedObject};
use dynamo_versioning::VectorClock;

use crate::api::{DeleteRequest, DeleteResponse, PutRequest, PutResponse, ReplicaPut};
use crate::error::{Error, Result};
use crate::props::BucketProps;
use crate::transfer_state::PartitionSummary;

/// Remote replicas, addressed by node id. Every call carries the time the caller is still willing
/// to wait; an implementation must give up (with `Error::Timeout`) when it passes. Calls are
/// cancellation safe from the caller's side: dropping the future abandons the reply, not the
/// remote effect (a replica write that was sent may still be applied).
pub trait Replicas: Send + Sync + 'static {
    /// Checks that `to` answers (the failure detector's probe).
    fn ping(&self, to: &NodeId, timeout: Duration) -> impl Future<Output = Result<()>> + Send;

    /// Reads the replica's version of `key` (`None` when it has never stored the key).
    fn get(
        &self,
        to: &NodeId,
        key: &ObjectKey,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<VersionedObject>>> + Send;

    /// Merges `put.object` into the replica's version. Idempotent: sending the same object twice
    /// stores it once. Returns whether the replica made it durable before answering.
    fn put(
        &self,
        to: &NodeId,
        put: ReplicaPut,
        timeout: Duration,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Asks `to` to coordinate a write (this node is not in the key's top N).
    fn forward_put(
        &self,
        to: &NodeId,
        request: PutRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<PutResponse>> + Send;

    /// Asks `to` to coordinate a delete.
    fn forward_delete(
        &self,
        to: &NodeId,
        request: DeleteRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<DeleteResponse>> + Send;

    /// Lists the live keys `to` stores for `bucket`.
    fn list_keys(
        &self,
        to: &NodeId,
        bucket: &[u8],
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<Vec<u8>>>> + Send;

    /// Tells `to` about a bucket's new properties.
    fn set_bucket_props(
        &self,
        to: &NodeId,
        bucket: &[u8],
        props: &BucketProps,
        timeout: Duration,
    ) -> impl Future<Output = Result<()>> + Send;

    // ---- partition transfer (paper 4.9). The defaults refuse, for transports (test doubles,
    // clients) that never move partitions.

    /// Merges a batch of `partition`'s objects (tombstones included) into `to`'s storage,
    /// durably, before answering with the number merged. Idempotent like [`Replicas::put`]. A
    /// batch whose acknowledgement was lost is simply sent again.
    fn transfer_batch(
        &self,
        to: &NodeId,
        partition: PartitionId,
        entries: Vec<Entry>,
        timeout: Duration,
    ) -> impl Future<Output = Result<u64>> + Send {
        let _ = (partition, entries, timeout);
        let refused = Error::Internal(format!("{to}: this transport cannot transfer partitions"));
        async move { Err(refused) }
    }

    /// Verification after a transfer's stream: of `clocks` (keys of `partition` with the
    /// sender's clock for each), the keys `to` does not hold at least as new (absent, or a clock
    /// that does not descend the sender's). Reads only.
    fn transfer_verify(
        &self,
        to: &NodeId,
        partition: PartitionId,
        clocks: Vec<(ObjectKey, VectorClock)>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<ObjectKey>>> + Send {
        let _ = (partition, clocks, timeout);
        let refused = Error::Internal(format!("{to}: this transport cannot transfer partitions"));
        async move { Err(refused) }
    }

    /// The final sync of a transfer: `to` answers what it holds of `partition` once every batch
    /// it acknowledged is durable.
    fn transfer_sync(
        &self,
        to: &NodeId,
        partition: PartitionId,
        timeout: Duration,
    ) -> impl Future<Output = Result<PartitionSummary>> + Send {
        let _ = (partition, timeout);
        let refused = Error::Internal(format!("{to}: this transport cannot transfer partitions"));
        async move { Err(refused) }
    }
}
