//! The [`Client`]: routes each request straight to a coordinator in the key's top N and retries
//! on the next node when that one fails.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dynamo_coordinator::{
    BucketProps, DeleteRequest, DeleteResponse, GetRequest, GetResponse, MAX_REQUEST_TIMEOUT,
    NodeStatus, PutRequest, PutResponse,
};
use dynamo_ring::NodeId;
use dynamo_rpc::{ClusterAuth, ClusterMap, PeerPool, TcpConnector};
use dynamo_storage::Content;
use dynamo_versioning::Context;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::cluster::{self, ClusterView, FALLBACK_N_VAL};
use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::routing::{self, Spread, Suspects};

/// Extra time the client waits beyond a request's own timeout before giving up on the node, so
/// that the coordinator's answer at its deadline (say, which quorum failed) arrives rather than a
/// bare client-side timeout. Covers a loopback or LAN round trip with room to spare.
const RPC_DEADLINE_SLACK: Duration = Duration::from_millis(250);

/// A handle on a Dynamo cluster. Cheap to clone: clones share the cluster map, the connections and
/// the background refresh task, which stops when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// State shared by every clone of a [`Client`].
pub(crate) struct Inner {
    pub(crate) config: ClientConfig,
    pub(crate) auth: ClusterAuth,
    pub(crate) pool: PeerPool<TcpConnector>,
    pub(crate) cluster: ClusterView,
    pub(crate) suspects: Mutex<Suspects>,
    rotation: AtomicUsize,
    wake_refresher: Arc<Notify>,
    _stop_refresher: DropGuard,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let map = self.inner.cluster.map();
        f.debug_struct("Client")
            .field("cluster", &self.inner.auth.name())
            .field("ring_epoch", &map.ring.epoch())
            .field("members", &map.ring.members().len())
            .finish()
    }
}

impl Client {
    /// Validates `config`, fetches the cluster map from the first seed that answers, and starts
    /// refreshing it every `config.refresh_interval`. Must be called within a tokio runtime.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        let auth = config.validate()?;
        let map = cluster::map_from_seeds(&config, &auth).await?;
        let pool = PeerPool::new(TcpConnector, auth.clone(), map.addresses.clone());
        let stop = CancellationToken::new();
        let wake = Arc::new(Notify::new());
        let interval = config.refresh_interval;
        let inner = Arc::new(Inner {
            config,
            auth,
            pool,
            cluster: ClusterView::new(map),
            suspects: Mutex::new(Suspects::default()),
            rotation: AtomicUsize::new(0),
            wake_refresher: Arc::clone(&wake),
            _stop_refresher: stop.clone().drop_guard(),
        });
        cluster::spawn_refresher(Arc::downgrade(&inner), wake, stop, interval);
        Ok(Client { inner })
    }

    /// Reads `key` from `bucket` with the bucket's default quorums.
    pub async fn get(
        &self,
        bucket: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Result<GetResponse> {
        self.get_with(GetRequest::new(bucket, key)).await
    }

    /// Reads with explicit quorums or timeout. The request goes to one of the key's top N nodes,
    /// rotating between them from call to call to spread the load.
    pub async fn get_with(&self, mut request: GetRequest) -> Result<GetResponse> {
        let deadline = self.inner.deadline(&mut request.timeout_ms);
        let spread = Spread::Rotate(self.inner.next_rotation());
        let order = self
            .inner
            .key_order(&request.bucket, &request.key, spread)
            .await;
        let pool = &self.inner.pool;
        self.inner
            .run(&order, |node| {
                let request = request.clone();
                async move { pool.get(&node, request, deadline).await }
            })
            .await
    }

    /// Writes `value` to `key` in `bucket`, superseding the versions `context` covers (the context
    /// from a previous read, or [`Context::empty()`] for a blind write).
    pub async fn put(
        &self,
        bucket: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
        value: impl Into<Bytes>,
        context: Context,
    ) -> Result<PutResponse> {
        self.put_with(PutRequest::new(bucket, key, Content::new(value), context))
            .await
    }

    /// Writes with explicit content metadata, quorums or timeout. The request goes to the first
    /// healthy node of the key's top N, which coordinates it without forwarding.
    pub async fn put_with(&self, mut request: PutRequest) -> Result<PutResponse> {
        let deadline = self.inner.deadline(&mut request.timeout_ms);
        let order = self
            .inner
            .key_order(&request.bucket, &request.key, Spread::First)
            .await;
        let pool = &self.inner.pool;
        self.inner
            .run(&order, |node| {
                let request = request.clone();
                async move { pool.put(&node, request, deadline).await }
            })
            .await
    }

    /// Deletes `key` from `bucket`: writes a tombstone superseding `context`, or, with `None`, the
    /// versions a read finds first.
    pub async fn delete(
        &self,
        bucket: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
        context: Option<Context>,
    ) -> Result<DeleteResponse> {
        self.delete_with(DeleteRequest::new(bucket, key, context))
            .await
    }

    /// Deletes with explicit quorums or timeout, routed like a write.
    pub async fn delete_with(&self, mut request: DeleteRequest) -> Result<DeleteResponse> {
        let deadline = self.inner.deadline(&mut request.timeout_ms);
        let order = self
            .inner
            .key_order(&request.bucket, &request.key, Spread::First)
            .await;
        let pool = &self.inner.pool;
        self.inner
            .run(&order, |node| {
                let request = request.clone();
                async move { pool.delete(&node, request, deadline).await }
            })
            .await
    }

    /// Every live key of `bucket`, gathered across the cluster by one node. Costly: it visits every
    /// partition; meant for tools and tests, not for request paths.
    pub async fn list_keys(&self, bucket: impl Into<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
        let bucket = bucket.into();
        let timeout = self.inner.default_deadline();
        let pool = &self.inner.pool;
        self.inner
            .run(&self.inner.any_member_order(), |node| {
                let bucket = bucket.clone();
                async move { pool.list_keys(&node, bucket, timeout).await }
            })
            .await
    }

    /// The properties of `bucket` (the defaults for a bucket never configured).
    pub async fn bucket_props(&self, bucket: impl Into<Vec<u8>>) -> Result<BucketProps> {
        self.inner.bucket_props(bucket.into()).await
    }

    /// Sets the properties of `bucket` on every member, through any one of them.
    pub async fn set_bucket_props(
        &self,
        bucket: impl Into<Vec<u8>>,
        props: BucketProps,
    ) -> Result<()> {
        let bucket = bucket.into();
        let timeout = self.inner.default_deadline();
        let pool = &self.inner.pool;
        let n_val = usize::from(props.n_val);
        self.inner
            .run(&self.inner.any_member_order(), |node| {
                let (bucket, props) = (bucket.clone(), props.clone());
                async move { pool.set_bucket_props(&node, bucket, props, timeout).await }
            })
            .await?;
        self.inner.remember_n_val(&bucket, n_val);
        Ok(())
    }

    /// Pings every member of the cluster map at once; one answer or error per member, in the
    /// ring's member order. Fails only when the map has no members.
    pub async fn status(&self) -> Result<Vec<(NodeId, std::result::Result<NodeStatus, Error>)>> {
        let map = self.inner.cluster.map();
        let members: Vec<NodeId> = map.ring.members().iter().map(|m| m.id.clone()).collect();
        if members.is_empty() {
            return Err(Error::EmptyCluster);
        }
        let timeout = self.inner.config.request_timeout;
        let pings = members.iter().map(|node| async move {
            let answer = self.inner.pool.ping(node, timeout).await;
            answer.map_err(Error::from)
        });
        let answers = futures::future::join_all(pings).await;
        Ok(members.into_iter().zip(answers).collect())
    }

    /// The cluster map the client routes with: the ring and every member's address.
    pub fn cluster_map(&self) -> ClusterMap {
        (*self.inner.cluster.map()).clone()
    }

    /// Fetches the cluster map now (from members, then seeds) instead of waiting for the next
    /// periodic refresh; useful right after a membership change. An older map than the one held
    /// is ignored.
    pub async fn refresh(&self) -> Result<()> {
        self.inner.refresh().await
    }
}

impl Inner {
    /// A fresh value of the rotation counter that spreads reads and keyless calls.
    pub(crate) fn next_rotation(&self) -> usize {
        self.rotation.fetch_add(1, Ordering::Relaxed)
    }

    /// Fills in the request's timeout if it has none and returns how long to wait for the node.
    fn deadline(&self, timeout_ms: &mut Option<u64>) -> Duration {
        let requested = timeout_ms.map_or(self.config.request_timeout, Duration::from_millis);
        let requested = requested.min(MAX_REQUEST_TIMEOUT);
        *timeout_ms = Some(u64::try_from(requested.as_millis()).unwrap_or(u64::MAX));
        requested + RPC_DEADLINE_SLACK
    }

    /// How long to wait for a call that carries no timeout of its own.
    fn default_deadline(&self) -> Duration {
        self.config.request_timeout + RPC_DEADLINE_SLACK
    }

    /// The nodes to try for a key, from the cached ring and the bucket's `n_val`.
    async fn key_order(&self, bucket: &[u8], key: &[u8], spread: Spread) -> Vec<NodeId> {
        let n = self.n_val(bucket).await;
        let map = self.cluster.map();
        let suspects = self.suspects.lock();
        let now = Instant::now();
        routing::key_order(&map.ring, bucket, key, n, spread, |node| {
            suspects.is_suspect(node, now)
        })
    }

    /// The nodes to try for a call about no particular key.
    fn any_member_order(&self) -> Vec<NodeId> {
        let map = self.cluster.map();
        let suspects = self.suspects.lock();
        let now = Instant::now();
        routing::member_order(&map.ring, Spread::Rotate(self.next_rotation()), |node| {
            suspects.is_suspect(node, now)
        })
    }

    /// The `n_val` of `bucket`: cached for a refresh interval, fetched when unknown, and assumed
    /// to be the default (for a short while) when the cluster cannot say. A wrong guess costs at
    /// most a forwarding hop, never correctness: any node can coordinate any key.
    async fn n_val(&self, bucket: &[u8]) -> usize {
        if let Some(n) = self.cluster.n_val(bucket, Instant::now()) {
            return n;
        }
        match self.bucket_props(bucket.to_vec()).await {
            Ok(props) => usize::from(props.n_val),
            Err(e) => {
                tracing::debug!(error = %e, "bucket properties unavailable; assuming the default n_val");
                let until = Instant::now() + routing::SUSPECT_PERIOD;
                self.cluster.remember_n_val(bucket, FALLBACK_N_VAL, until);
                FALLBACK_N_VAL
            }
        }
    }

    /// Reads `bucket`'s properties from any member and caches its `n_val`.
    async fn bucket_props(&self, bucket: Vec<u8>) -> Result<BucketProps> {
        let timeout = self.default_deadline();
        let pool = &self.pool;
        let props = self
            .run(&self.any_member_order(), |node| {
                let bucket = bucket.clone();
                async move { pool.bucket_props(&node, bucket, timeout).await }
            })
            .await?;
        self.remember_n_val(&bucket, usize::from(props.n_val));
        Ok(props)
    }

    fn remember_n_val(&self, bucket: &[u8], n: usize) {
        let until = Instant::now() + self.config.refresh_interval;
        self.cluster.remember_n_val(bucket, n, until);
    }

    /// Records that `node` failed with `error`: a node that did not answer becomes suspect and the
    /// map is refreshed soon, in case the node left or moved.
    pub(crate) fn note_failure(&self, node: &NodeId, error: &Error) {
        if error.is_unreachable() {
            self.suspects.lock().mark(node, Instant::now());
            self.wake_refresher.notify_one();
        }
    }

    /// Runs `call` on the planned attempts over `order` until one succeeds or fails for good.
    /// Non-retryable errors return at once; otherwise the last error is returned.
    async fn run<T, F, Fut>(&self, order: &[NodeId], mut call: F) -> Result<T>
    where
        F: FnMut(NodeId) -> Fut,
        Fut: Future<Output = dynamo_coordinator::Result<T>>,
    {
        let mut last = Error::EmptyCluster;
        for attempt in routing::plan(order, self.config.retries) {
            if !attempt.backoff.is_zero() {
                tokio::time::sleep(attempt.backoff).await;
            }
            match call(attempt.node.clone()).await {
                Ok(value) => {
                    self.suspects.lock().clear(&attempt.node);
                    return Ok(value);
                }
                Err(e) => {
                    let e = Error::from(e);
                    if !e.is_retryable() {
                        return Err(e);
                    }
                    tracing::debug!(node = %attempt.node, error = %e, "attempt failed");
                    self.note_failure(&attempt.node, &e);
                    last = e;
                }
            }
        }
        Err(last)
    }
}
