//! Serving the node service: accept, authenticate, then hand each request to the coordinator.

use std::sync::Arc;
use std::time::Duration;

use dynamo_anti_entropy::{AntiEntropy, KeyClocks, KeyObject, Leaf, Status as AeStatus};
use dynamo_coordinator::{
    BucketProps, Coordinator, DeleteRequest, DeleteResponse, Error, GetRequest, GetResponse,
    NodeStatus, PartitionSummary, PutRequest, PutResponse, ReplicaPut, Replicas, TransferStatus,
};
use dynamo_membership::{AdminCommand, AdminReply, GossipDigest, MembershipService};
use dynamo_ring::{NodeId, PartitionId};
use dynamo_storage::{Entry, ObjectKey, VersionedObject};
use dynamo_versioning::VectorClock;
use futures::StreamExt;
use tarpc::context::Context;
use tarpc::server::{BaseChannel, Channel};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::ClusterAuth;
use crate::service::{AeError, ClusterMap, Node};
use crate::transport::{Listener, framed};

/// How long a connecting peer has to finish the handshake before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the server gets the member addresses it reports in [`ClusterMap`].
pub trait AddressBook: Send + Sync + 'static {
    /// Every member's RPC address.
    fn addresses(&self) -> std::collections::BTreeMap<dynamo_ring::NodeId, String>;
}

/// The service implementation: a thin adapter from tarpc calls to the coordinator.
pub struct NodeServer<R> {
    coordinator: Coordinator<R>,
    book: Arc<dyn AddressBook>,
    anti_entropy: Option<AntiEntropy>,
    membership: Option<Arc<dyn MembershipService>>,
}

impl<R> Clone for NodeServer<R> {
    fn clone(&self) -> Self {
        NodeServer {
            coordinator: self.coordinator.clone(),
            book: Arc::clone(&self.book),
            anti_entropy: self.anti_entropy.clone(),
            membership: self.membership.clone(),
        }
    }
}

/// The error a node without membership gives to gossip and admin calls.
const NO_MEMBERSHIP: &str = "this node runs without membership";

impl<R: Replicas> NodeServer<R> {
    /// Serves `coordinator`, reporting addresses from `book`.
    pub fn new(coordinator: Coordinator<R>, book: Arc<dyn AddressBook>) -> NodeServer<R> {
        NodeServer {
            coordinator,
            book,
            anti_entropy: None,
            membership: None,
        }
    }

    /// Also answers anti-entropy exchanges with `anti_entropy` (without it, they get an error).
    pub fn with_anti_entropy(mut self, anti_entropy: AntiEntropy) -> NodeServer<R> {
        self.anti_entropy = Some(anti_entropy);
        self
    }

    fn ae(&self) -> Result<&AntiEntropy, AeError> {
        self.anti_entropy
            .as_ref()
            .ok_or_else(|| AeError::Internal("anti-entropy is not running on this node".into()))
    }

    /// Serves gossip and the membership admin commands from `membership`; bucket properties
    /// set through this server then travel by gossip.
    pub fn with_membership(mut self, membership: Arc<dyn MembershipService>) -> NodeServer<R> {
        self.membership = Some(membership);
        self
    }

    /// Accepts connections from `listener` until `shutdown` fires. Each connection must pass the
    /// handshake; refused peers are logged and dropped before any request is read. Returns once
    /// the listener stopped and every connection task ended.
    pub async fn run<L: Listener>(
        self,
        mut listener: L,
        auth: ClusterAuth,
        shutdown: CancellationToken,
    ) {
        let tasks = TaskTracker::new();
        let auth = Arc::new(auth);
        loop {
            let accepted = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (mut stream, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // Back off briefly so a persistent accept error (EMFILE) does not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let server = self.clone();
            let auth = Arc::clone(&auth);
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, auth.accept(&mut stream)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, error = %e, "refused connection");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(%peer, "refused connection: handshake timed out");
                        return;
                    }
                }
                let channel = BaseChannel::with_defaults(framed(stream));
                let requests = channel
                    .execute(Node::serve(server))
                    .for_each(|request| async {
                        tokio::spawn(request);
                    });
                tokio::select! {
                    biased;
                    _ = requests => {}
                    _ = shutdown.cancelled() => {}
                }
            });
        }
        tasks.close();
        tasks.wait().await;
    }
}

impl<R: Replicas> Node for NodeServer<R> {
    async fn ping(self, _: Context) -> NodeStatus {
        self.coordinator.status()
    }

    async fn cluster_map(self, _: Context) -> ClusterMap {
        ClusterMap {
            ring: (*self.coordinator.ring()).clone(),
            addresses: self.book.addresses(),
        }
    }

    async fn get(self, _: Context, request: GetRequest) -> Result<GetResponse, Error> {
        self.coordinator.get(request).await
    }

    async fn put(self, _: Context, request: PutRequest) -> Result<PutResponse, Error> {
        self.coordinator.put(request).await
    }

    async fn delete(self, _: Context, request: DeleteRequest) -> Result<DeleteResponse, Error> {
        self.coordinator.delete(request).await
    }

    async fn list_keys(self, _: Context, bucket: Vec<u8>) -> Result<Vec<Vec<u8>>, Error> {
        self.coordinator.list_keys(&bucket).await
    }

    async fn bucket_props(self, _: Context, bucket: Vec<u8>) -> BucketProps {
        self.coordinator.bucket_props(&bucket)
    }

    async fn set_bucket_props(
        self,
        _: Context,
        bucket: Vec<u8>,
        props: BucketProps,
    ) -> Result<(), Error> {
        match &self.membership {
            // Validated and stored here first, then spread by gossip: every member applies it
            // when the state carrying it reaches it, however long it was unreachable.
            Some(membership) => {
                self.coordinator
                    .replica_set_bucket_props(&bucket, props.clone())?;
                membership
                    .set_bucket_props(bucket, encode_bucket_props(&props))
                    .map_err(|e| Error::Internal(e.to_string()))
            }
            None => self.coordinator.set_bucket_props(&bucket, props).await,
        }
    }

    async fn replica_get(
        self,
        _: Context,
        key: ObjectKey,
    ) -> Result<Option<VersionedObject>, Error> {
        self.coordinator.replica_get(key).await
    }

    async fn replica_put(self, _: Context, put: ReplicaPut) -> Result<bool, Error> {
        self.coordinator.replica_put(put).await
    }

    async fn replica_list_keys(self, _: Context, bucket: Vec<u8>) -> Result<Vec<Vec<u8>>, Error> {
        self.coordinator.local_keys(bucket).await
    }

    async fn replica_set_bucket_props(
        self,
        _: Context,
        bucket: Vec<u8>,
        props: BucketProps,
    ) -> Result<(), Error> {
        self.coordinator.replica_set_bucket_props(&bucket, props)
    }

    async fn ae_root(
        self,
        _: Context,
        partition: PartitionId,
        from: NodeId,
    ) -> Result<u64, AeError> {
        self.ae()?.serve_root(partition, &from)
    }

    async fn ae_branches(self, _: Context, partition: PartitionId) -> Result<Vec<u64>, AeError> {
        self.ae()?.serve_branches(partition)
    }

    async fn ae_leaves(
        self,
        _: Context,
        partition: PartitionId,
        branches: Vec<usize>,
    ) -> Result<Vec<Vec<u64>>, AeError> {
        self.ae()?.serve_leaves(partition, &branches)
    }

    async fn ae_key_clocks(
        self,
        _: Context,
        partition: PartitionId,
        leaves: Vec<Leaf>,
        max_keys: u64,
    ) -> Result<KeyClocks, AeError> {
        let max_keys = usize::try_from(max_keys).unwrap_or(usize::MAX);
        self.ae()?
            .serve_key_clocks(partition, leaves, max_keys)
            .await
    }

    async fn ae_fetch(
        self,
        _: Context,
        partition: PartitionId,
        keys: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Vec<KeyObject>, AeError> {
        self.ae()?.serve_fetch(partition, keys).await
    }

    async fn ae_push(
        self,
        _: Context,
        partition: PartitionId,
        from: NodeId,
        objects: Vec<KeyObject>,
    ) -> Result<(), AeError> {
        self.ae()?.serve_push(partition, &from, objects).await
    }

    async fn ae_status(self, _: Context) -> Result<AeStatus, AeError> {
        Ok(self.ae()?.status())
    }

    // ---- partition transfer

    async fn transfer_batch(
        self,
        _: Context,
        partition: PartitionId,
        entries: Vec<Entry>,
    ) -> Result<u64, Error> {
        self.coordinator
            .replica_transfer_batch(partition, entries)
            .await
    }

    async fn transfer_verify(
        self,
        _: Context,
        partition: PartitionId,
        clocks: Vec<(ObjectKey, VectorClock)>,
    ) -> Result<Vec<ObjectKey>, Error> {
        self.coordinator
            .replica_transfer_verify(partition, clocks)
            .await
    }

    async fn transfer_sync(
        self,
        _: Context,
        partition: PartitionId,
    ) -> Result<PartitionSummary, Error> {
        self.coordinator.replica_transfer_sync(partition).await
    }

    async fn transfers(self, _: Context) -> Vec<TransferStatus> {
        self.coordinator.transfers()
    }

    async fn transfer_limit(self, _: Context) -> usize {
        self.coordinator.transfer_limit()
    }

    async fn set_transfer_limit(self, _: Context, limit: usize) -> Result<(), Error> {
        self.coordinator.set_transfer_limit(limit)
    }

    async fn gossip_digest(
        self,
        _: Context,
        digest: GossipDigest,
    ) -> Result<Option<Vec<u8>>, String> {
        let membership = self.membership.ok_or(NO_MEMBERSHIP)?;
        membership.on_digest(digest).map_err(|e| e.to_string())
    }

    async fn gossip_push(self, _: Context, state: Vec<u8>) -> Result<(), String> {
        let membership = self.membership.ok_or(NO_MEMBERSHIP)?;
        membership.on_push(state).map_err(|e| e.to_string())
    }

    async fn gossip_pull(self, _: Context) -> Result<Vec<u8>, String> {
        let membership = self.membership.ok_or(NO_MEMBERSHIP)?;
        Ok(membership.on_pull())
    }

    async fn membership_admin(
        self,
        _: Context,
        command: AdminCommand,
    ) -> Result<AdminReply, String> {
        let membership = self.membership.ok_or(NO_MEMBERSHIP)?;
        membership.admin(command).await.map_err(|e| e.to_string())
    }
}

/// Encodes bucket properties for the membership state (which carries them as opaque bytes).
pub fn encode_bucket_props(props: &BucketProps) -> Vec<u8> {
    // Serializing a plain struct of numbers and booleans to JSON cannot fail.
    serde_json::to_vec(props).unwrap_or_default()
}

/// Decodes bucket properties carried by the membership state, validating them.
pub fn decode_bucket_props(bytes: &[u8]) -> Result<BucketProps, Error> {
    let props: BucketProps = serde_json::from_slice(bytes)
        .map_err(|e| Error::InvalidRequest(format!("gossiped bucket properties: {e}")))?;
    props.validate()?;
    Ok(props)
}
