//! A pool of authenticated connections to other nodes, keyed by node id. tarpc clients never
//! reconnect by themselves, so the pool drops a connection as soon as a call on it fails at the
//! transport level or times out (a half-open or wedged connection looks like a timeout) and dials
//! again on the next call.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dynamo_anti_entropy::{KeyClocks, KeyObject, Leaf, Peers, Status as AeStatus};
use dynamo_coordinator::{
    BucketProps, DeleteRequest, DeleteResponse, Error, GetRequest, GetResponse, NodeStatus,
    PartitionSummary, PutRequest, PutResponse, ReplicaPut, Replicas, Result, TransferStatus,
};
use dynamo_ring::{NodeId, PartitionId};
use dynamo_storage::{Entry, ObjectKey, VersionedObject};
use dynamo_versioning::VectorClock;
use parking_lot::{Mutex, RwLock};
use tarpc::client::RpcError;

use crate::auth::ClusterAuth;
use crate::server::AddressBook;
use crate::service::{AeError, ClusterMap, NodeClient};
use crate::transport::{Connector, framed};

/// How long dialling and authenticating a peer may take. Loopback and LAN peers answer in
/// microseconds; a second means the peer is down or overloaded.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Extra time granted to tarpc's wall-clock deadline beyond the caller's timeout, so the
/// caller's (runtime-timer) timeout always decides first.
pub const DEADLINE_GRACE: Duration = Duration::from_secs(1);

/// After a failed dial, further calls to the same peer fail at once for this long instead of
/// each dialling again. Without it, callers queued behind a dial to a dead peer would each wait
/// out their own dial in turn, stalling for seconds (the failure detector's probe included).
/// Shorter than the probe interval, so the probe always gets to dial.
pub const DIAL_BACKOFF: Duration = Duration::from_millis(200);

/// One peer's connection state.
#[derive(Default)]
struct Slot {
    /// The connected client, if any.
    client: Option<NodeClient>,
    /// When the last dial failed.
    failed_at: Option<tokio::time::Instant>,
}

/// Connections to other nodes.
pub struct PeerPool<C> {
    connector: C,
    auth: ClusterAuth,
    addresses: RwLock<BTreeMap<NodeId, String>>,
    clients: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl<C: Connector> PeerPool<C> {
    /// A pool dialling with `connector`, proving `auth`, with the given member addresses.
    pub fn new(
        connector: C,
        auth: ClusterAuth,
        addresses: BTreeMap<NodeId, String>,
    ) -> PeerPool<C> {
        PeerPool {
            connector,
            auth,
            addresses: RwLock::new(addresses),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the known addresses (a client refreshing its cluster map). Connections to nodes
    /// whose address changed are dropped.
    pub fn set_addresses(&self, addresses: BTreeMap<NodeId, String>) {
        let mut current = self.addresses.write();
        let mut clients = self.clients.lock();
        clients.retain(|node, _| current.get(node) == addresses.get(node));
        *current = addresses;
    }

    fn address(&self, node: &NodeId) -> Result<String> {
        self.addresses
            .read()
            .get(node)
            .cloned()
            .ok_or_else(|| Error::Unreachable(format!("no address known for node {node}")))
    }

    fn slot(&self, node: &NodeId) -> Arc<tokio::sync::Mutex<Slot>> {
        Arc::clone(self.clients.lock().entry(node.clone()).or_default())
    }

    /// A connected client for `node`, dialling if there is none, and whether it was reused from an
    /// earlier dial. Concurrent callers share one dial.
    async fn client(&self, node: &NodeId) -> Result<(NodeClient, bool)> {
        let slot = self.slot(node);
        let mut guard = slot.lock().await;
        if let Some(client) = guard.client.as_ref() {
            return Ok((client.clone(), true));
        }
        if let Some(at) = guard.failed_at
            && at.elapsed() < DIAL_BACKOFF
        {
            return Err(Error::Unreachable(format!(
                "{node}: the last dial failed {} ms ago",
                at.elapsed().as_millis()
            )));
        }
        let addr = self.address(node)?;
        let dial = async {
            let mut stream = self
                .connector
                .connect(&addr)
                .await
                .map_err(|e| e.to_string())?;
            self.auth
                .connect(&mut stream)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(stream)
        };
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, dial).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                guard.failed_at = Some(tokio::time::Instant::now());
                return Err(Error::Unreachable(format!("{node} at {addr}: {e}")));
            }
            Err(_) => {
                guard.failed_at = Some(tokio::time::Instant::now());
                return Err(Error::Unreachable(format!(
                    "{node} at {addr}: connect timed out"
                )));
            }
        };
        let client = NodeClient::new(tarpc::client::Config::default(), framed(stream)).spawn();
        guard.client = Some(client.clone());
        guard.failed_at = None;
        Ok((client, false))
    }

    /// Forgets the connection to `node` so the next call dials again.
    fn evict(&self, node: &NodeId) {
        self.clients.lock().remove(node);
    }

    /// Runs one call on `node` with a deadline `timeout` from now, mapping transport failures.
    async fn call<T, F, Fut>(&self, node: &NodeId, timeout: Duration, mut f: F) -> Result<T>
    where
        F: FnMut(NodeClient, tarpc::context::Context) -> Fut,
        Fut: Future<Output = std::result::Result<T, RpcError>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || Error::Timeout(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        let mut redialled = false;
        loop {
            let (client, reused) = self.client(node).await?;
            let mut ctx = tarpc::context::current();
            // The caller's wait is enforced by the runtime's timer below; tarpc's own deadline (a
            // wall-clock instant the server also honours) gets a grace period so it never decides
            // first: under a simulated clock, wall-clock deadlines would leak real time into the run.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            ctx.deadline = std::time::Instant::now() + left + DEADLINE_GRACE;
            let outcome = match tokio::time::timeout_at(deadline, f(client, ctx)).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    self.evict(node);
                    return Err(timed_out());
                }
            };
            return match outcome {
                Ok(value) => Ok(value),
                // A pooled connection that turns out to be dead (the peer restarted since it was
                // dialled): the request was never sent, so dial once more rather than report a
                // healthy peer as unreachable.
                Err(RpcError::Shutdown | RpcError::Send(_)) if reused && !redialled => {
                    self.evict(node);
                    redialled = true;
                    continue;
                }
                Err(RpcError::DeadlineExceeded) => {
                    self.evict(node);
                    Err(timed_out())
                }
                Err(RpcError::Server(e)) => Err(Error::Internal(format!("{node}: {e}"))),
                Err(e) => {
                    self.evict(node);
                    Err(Error::Unreachable(format!("{node}: {e}")))
                }
            };
        }
    }

    /// Pings `node`.
    pub async fn ping(&self, node: &NodeId, timeout: Duration) -> Result<NodeStatus> {
        self.call(node, timeout, |c, ctx| async move { c.ping(ctx).await })
            .await
    }

    /// Fetches `node`'s ring and member addresses.
    pub async fn cluster_map(&self, node: &NodeId, timeout: Duration) -> Result<ClusterMap> {
        self.call(
            node,
            timeout,
            |c, ctx| async move { c.cluster_map(ctx).await },
        )
        .await
    }

    /// Asks `node` to coordinate a read.
    pub async fn get(
        &self,
        node: &NodeId,
        request: GetRequest,
        timeout: Duration,
    ) -> Result<GetResponse> {
        self.call(node, timeout, |c, ctx| {
            let request = request.clone();
            async move { c.get(ctx, request).await }
        })
        .await?
    }

    /// Asks `node` to coordinate a write.
    pub async fn put(
        &self,
        node: &NodeId,
        request: PutRequest,
        timeout: Duration,
    ) -> Result<PutResponse> {
        self.call(node, timeout, |c, ctx| {
            let request = request.clone();
            async move { c.put(ctx, request).await }
        })
        .await?
    }

    /// Asks `node` to coordinate a delete.
    pub async fn delete(
        &self,
        node: &NodeId,
        request: DeleteRequest,
        timeout: Duration,
    ) -> Result<DeleteResponse> {
        self.call(node, timeout, |c, ctx| {
            let request = request.clone();
            async move { c.delete(ctx, request).await }
        })
        .await?
    }

    /// Asks `node` to list a bucket's keys across the cluster.
    pub async fn list_keys(
        &self,
        node: &NodeId,
        bucket: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<Vec<u8>>> {
        self.call(node, timeout, |c, ctx| {
            let bucket = bucket.clone();
            async move { c.list_keys(ctx, bucket).await }
        })
        .await?
    }

    /// Reads a bucket's properties from `node`.
    pub async fn bucket_props(
        &self,
        node: &NodeId,
        bucket: Vec<u8>,
        timeout: Duration,
    ) -> Result<BucketProps> {
        self.call(node, timeout, |c, ctx| {
            let bucket = bucket.clone();
            async move { c.bucket_props(ctx, bucket).await }
        })
        .await
    }

    /// Sets a bucket's properties cluster-wide through `node`.
    pub async fn set_bucket_props(
        &self,
        node: &NodeId,
        bucket: Vec<u8>,
        props: BucketProps,
        timeout: Duration,
    ) -> Result<()> {
        self.call(node, timeout, |c, ctx| {
            let (bucket, props) = (bucket.clone(), props.clone());
            async move { c.set_bucket_props(ctx, bucket, props).await }
        })
        .await?
    }

    // ---- partition transfer

    /// The partition transfers `node` is sending, with progress (`dynamo admin transfers`).
    pub async fn transfers(&self, node: &NodeId, timeout: Duration) -> Result<Vec<TransferStatus>> {
        self.call(
            node,
            timeout,
            |c, ctx| async move { c.transfers(ctx).await },
        )
        .await
    }

    /// `node`'s transfer concurrency limit.
    pub async fn transfer_limit(&self, node: &NodeId, timeout: Duration) -> Result<usize> {
        self.call(node, timeout, |c, ctx| async move {
            c.transfer_limit(ctx).await
        })
        .await
    }

    /// Changes `node`'s transfer concurrency limit.
    pub async fn set_transfer_limit(
        &self,
        node: &NodeId,
        limit: usize,
        timeout: Duration,
    ) -> Result<()> {
        self.call(node, timeout, |c, ctx| async move {
            c.set_transfer_limit(ctx, limit).await
        })
        .await?
    }
}

impl<C: Connector> AddressBook for PeerPool<C> {
    fn addresses(&self) -> BTreeMap<NodeId, String> {
        self.addresses.read().clone()
    }
}

impl<C: Connector> Replicas for PeerPool<C> {
    async fn ping(&self, to: &NodeId, timeout: Duration) -> Result<()> {
        PeerPool::ping(self, to, timeout).await.map(|_| ())
    }

    async fn get(
        &self,
        to: &NodeId,
        key: &ObjectKey,
        timeout: Duration,
    ) -> Result<Option<VersionedObject>> {
        let key = key.clone();
        self.call(to, timeout, |c, ctx| {
            let key = key.clone();
            async move { c.replica_get(ctx, key).await }
        })
        .await?
    }

    async fn put(&self, to: &NodeId, put: ReplicaPut, timeout: Duration) -> Result<bool> {
        self.call(to, timeout, |c, ctx| {
            let put = put.clone();
            async move { c.replica_put(ctx, put).await }
        })
        .await?
    }

    async fn forward_put(
        &self,
        to: &NodeId,
        request: PutRequest,
        timeout: Duration,
    ) -> Result<PutResponse> {
        PeerPool::put(self, to, request, timeout).await
    }

    async fn forward_delete(
        &self,
        to: &NodeId,
        request: DeleteRequest,
        timeout: Duration,
    ) -> Result<DeleteResponse> {
        PeerPool::delete(self, to, request, timeout).await
    }

    async fn list_keys(
        &self,
        to: &NodeId,
        bucket: &[u8],
        timeout: Duration,
    ) -> Result<Vec<Vec<u8>>> {
        let bucket = bucket.to_vec();
        self.call(to, timeout, |c, ctx| {
            let bucket = bucket.clone();
            async move { c.replica_list_keys(ctx, bucket).await }
        })
        .await?
    }

    async fn set_bucket_props(
        &self,
        to: &NodeId,
        bucket: &[u8],
        props: &BucketProps,
        timeout: Duration,
    ) -> Result<()> {
        let bucket = bucket.to_vec();
        let props = props.clone();
        self.call(to, timeout, |c, ctx| {
            let (bucket, props) = (bucket.clone(), props.clone());
            async move { c.replica_set_bucket_props(ctx, bucket, props).await }
        })
        .await?
    }

    // ---- partition transfer

    async fn transfer_batch(
        &self,
        to: &NodeId,
        partition: PartitionId,
        entries: Vec<Entry>,
        timeout: Duration,
    ) -> Result<u64> {
        self.call(to, timeout, |c, ctx| {
            let entries = entries.clone();
            async move { c.transfer_batch(ctx, partition, entries).await }
        })
        .await?
    }

    async fn transfer_verify(
        &self,
        to: &NodeId,
        partition: PartitionId,
        clocks: Vec<(ObjectKey, VectorClock)>,
        timeout: Duration,
    ) -> Result<Vec<ObjectKey>> {
        self.call(to, timeout, |c, ctx| {
            let clocks = clocks.clone();
            async move { c.transfer_verify(ctx, partition, clocks).await }
        })
        .await?
    }

    async fn transfer_sync(
        &self,
        to: &NodeId,
        partition: PartitionId,
        timeout: Duration,
    ) -> Result<PartitionSummary> {
        self.call(to, timeout, |c, ctx| async move {
            c.transfer_sync(ctx, partition).await
        })
        .await?
    }
}

/// A transport failure of an anti-entropy call, in the anti-entropy crate's terms.
fn ae_error(e: Error) -> AeError {
    match e {
        Error::Timeout(ms) => AeError::Timeout(ms),
        Error::Unreachable(s) => AeError::Unreachable(s),
        other => AeError::Internal(other.to_string()),
    }
}

impl<C: Connector> PeerPool<C> {
    /// Reads `node`'s anti-entropy status (`dynamo admin aae`).
    pub async fn ae_status(
        &self,
        node: &NodeId,
        timeout: Duration,
    ) -> std::result::Result<AeStatus, AeError> {
        self.call(
            node,
            timeout,
            |c, ctx| async move { c.ae_status(ctx).await },
        )
        .await
        .map_err(ae_error)?
    }
}

impl<C: Connector> Peers for PeerPool<C> {
    async fn ae_root(
        &self,
        to: &NodeId,
        p: PartitionId,
        from: &NodeId,
        timeout: Duration,
    ) -> std::result::Result<u64, AeError> {
        self.call(to, timeout, |c, ctx| {
            let from = from.clone();
            async move { c.ae_root(ctx, p, from).await }
        })
        .await
        .map_err(ae_error)?
    }

    async fn ae_branches(
        &self,
        to: &NodeId,
        p: PartitionId,
        timeout: Duration,
    ) -> std::result::Result<Vec<u64>, AeError> {
        self.call(
            to,
            timeout,
            |c, ctx| async move { c.ae_branches(ctx, p).await },
        )
        .await
        .map_err(ae_error)?
    }

    async fn ae_leaves(
        &self,
        to: &NodeId,
        p: PartitionId,
        branches: Vec<usize>,
        timeout: Duration,
    ) -> std::result::Result<Vec<Vec<u64>>, AeError> {
        self.call(to, timeout, |c, ctx| {
            let branches = branches.clone();
            async move { c.ae_leaves(ctx, p, branches).await }
        })
        .await
        .map_err(ae_error)?
    }

    async fn ae_key_clocks(
        &self,
        to: &NodeId,
        p: PartitionId,
        leaves: Vec<Leaf>,
        max_keys: usize,
        timeout: Duration,
    ) -> std::result::Result<KeyClocks, AeError> {
        let max_keys = u64::try_from(max_keys).unwrap_or(u64::MAX);
        self.call(to, timeout, |c, ctx| {
            let leaves = leaves.clone();
            async move { c.ae_key_clocks(ctx, p, leaves, max_keys).await }
        })
        .await
        .map_err(ae_error)?
    }

    async fn ae_fetch(
        &self,
        to: &NodeId,
        p: PartitionId,
        keys: Vec<(Vec<u8>, Vec<u8>)>,
        timeout: Duration,
    ) -> std::result::Result<Vec<KeyObject>, AeError> {
        self.call(to, timeout, |c, ctx| {
            let keys = keys.clone();
            async move { c.ae_fetch(ctx, p, keys).await }
        })
        .await
        .map_err(ae_error)?
    }

    async fn ae_push(
        &self,
        to: &NodeId,
        p: PartitionId,
        from: &NodeId,
        objects: Vec<KeyObject>,
        timeout: Duration,
    ) -> std::result::Result<(), AeError> {
        self.call(to, timeout, |c, ctx| {
            let (from, objects) = (from.clone(), objects.clone());
            async move { c.ae_push(ctx, p, from, objects).await }
        })
        .await
        .map_err(ae_error)?
    }
}
