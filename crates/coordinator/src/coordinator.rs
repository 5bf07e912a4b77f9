//! The coordinator: one handle per node that runs get, put and delete requests against the key's
//! preference list (paper section 4.5) and serves the replica side of other coordinators' requests.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamo_ring::{NodeId, PreferenceList, Ring};
use dynamo_storage::{Engine, ObjectKey, VersionedObject};
use dynamo_versioning::{Actor, Object, PrunePolicy};
use parking_lot::RwLock;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::api::{NodeStatus, ReplicaPut, timeout_of};
use crate::buckets::Buckets;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::metrics::{Metrics, OpLabels, OpOnly};
use crate::props::BucketProps;
use crate::replicas::Replicas;

/// How long a request may take when the client does not say. Long enough for a quorum on a loaded
/// cluster, short enough that a client notices a stuck request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest timeout a client may ask for; beyond it a request holds resources for nothing.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a read keeps listening for slower replicas after it has answered, to repair them
/// (paper 4.5: "the coordinator waits for a brief period"). A few loopback round trips.
pub const READ_REPAIR_LINGER: Duration = Duration::from_millis(200);

/// Tunables of a coordinator.
#[derive(Clone, Debug)]
pub struct Options {
    /// Timeout for requests that do not carry one.
    pub default_timeout: Duration,
    /// Upper bound on any request's timeout.
    pub max_timeout: Duration,
    /// How long a read waits for late replies to repair stale replicas.
    pub read_repair_linger: Duration,
    /// Vector clock pruning on write (paper 4.4).
    pub prune: PrunePolicy,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            default_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_timeout: MAX_REQUEST_TIMEOUT,
            read_repair_linger: READ_REPAIR_LINGER,
            prune: PrunePolicy::default(),
        }
    }
}

/// A cheap-to-clone handle on this node's coordinator.
pub struct Coordinator<R> {
    pub(crate) inner: Arc<Inner<R>>,
}

impl<R> Clone for Coordinator<R> {
    fn clone(&self) -> Self {
        Coordinator {
            inner: Arc::clone(&self.inner),
        }
    }
}

pub(crate) struct Inner<R> {
    pub(crate) me: NodeId,
    pub(crate) actor: Actor,
    pub(crate) ring: RwLock<Arc<Ring>>,
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) replicas: Arc<R>,
    pub(crate) buckets: Buckets,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) options: Options,
    pub(crate) metrics: Metrics,
    pub(crate) tasks: TaskTracker,
    pub(crate) started: Instant,
}

/// Everything a coordinator is built from.
pub struct Parts<R> {
    /// This node.
    pub me: NodeId,
    /// The actor this node mints dots as (its node id and current epoch).
    pub actor: Actor,
    /// The ring in force.
    pub ring: Ring,
    /// Local storage.
    pub engine: Arc<dyn Engine>,
    /// The way to other nodes.
    pub replicas: Arc<R>,
    /// Bucket properties.
    pub buckets: Buckets,
    /// Wall-clock time for version timestamps.
    pub clock: Arc<dyn Clock>,
    /// Tunables.
    pub options: Options,
}

/// A replica in a request's fan-out.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) node: NodeId,
    pub(crate) primary: bool,
}

impl<R: Replicas> Coordinator<R> {
    /// Builds a coordinator. It spawns nothing until requests arrive.
    pub fn new(parts: Parts<R>) -> Coordinator<R> {
        Coordinator {
            inner: Arc::new(Inner {
                me: parts.me,
                actor: parts.actor,
                ring: RwLock::new(Arc::new(parts.ring)),
                engine: parts.engine,
                replicas: parts.replicas,
                buckets: parts.buckets,
                clock: parts.clock,
                options: parts.options,
                metrics: Metrics::default(),
                tasks: TaskTracker::new(),
                started: Instant::now(),
            }),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.inner.me
    }

    /// The ring this coordinator routes with.
    pub fn ring(&self) -> Arc<Ring> {
        Arc::clone(&self.inner.ring.read())
    }

    /// Installs a newer ring (ignored if its epoch is not newer).
    pub fn set_ring(&self, ring: Ring) {
        let mut current = self.inner.ring.write();
        if ring.epoch() > current.epoch() {
            *current = Arc::new(ring);
        }
    }

    /// The coordinator's metrics, for the node to register.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The local storage engine.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.inner.engine
    }

    /// The properties in force for `bucket`.
    pub fn bucket_props(&self, bucket: &[u8]) -> BucketProps {
        self.inner.buckets.get(bucket)
    }

    /// Sets a bucket's properties here and on every other member (best effort: members that
    /// cannot be reached are named in the error, and keep their old properties until told again).
    pub async fn set_bucket_props(&self, bucket: &[u8], props: BucketProps) -> Result<()> {
        self.inner.buckets.set(bucket, props.clone())?;
        let ring = self.ring();
        let timeout = self.inner.options.default_timeout;
        let mut failed = Vec::new();
        for m in ring.members() {
            if m.id == self.inner.me {
                continue;
            }
            if let Err(e) = self
                .inner
                .replicas
                .set_bucket_props(&m.id, bucket, &props, timeout)
                .await
            {
                failed.push(format!("{}: {e}", m.id));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Error::Unavailable {
                kind: "members".into(),
                needed: u8::try_from(ring.members().len()).unwrap_or(u8::MAX),
                got: u8::try_from(ring.members().len() - failed.len()).unwrap_or(u8::MAX),
                detail: failed.join("; "),
            })
        }
    }

    /// Waits for every background replica write and read repair to finish (at shutdown).
    pub async fn drain(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// This node's status.
    pub fn status(&self) -> NodeStatus {
        let ring = self.ring();
        NodeStatus {
            node: self.inner.me.to_string(),
            ring_epoch: ring.epoch(),
            partitions_owned: ring.ownership().get(&self.inner.me).copied().unwrap_or(0),
            hints_pending: self.inner.engine.hint_count().unwrap_or(0),
            uptime_secs: self.inner.started.elapsed().as_secs(),
        }
    }

    // ---- shared helpers for the read and write paths ----

    pub(crate) fn timeout(&self, timeout_ms: Option<u64>) -> Duration {
        timeout_of(
            timeout_ms,
            self.inner.options.default_timeout,
            self.inner.options.max_timeout,
        )
    }

    pub(crate) fn preference_list(&self, bucket: &[u8], key: &[u8], n: u8) -> PreferenceList {
        self.ring().preference_list(bucket, key, usize::from(n))
    }

    /// The replicas a request fans out to: the key's top N.
    pub(crate) fn targets(&self, pl: &PreferenceList) -> Vec<Target> {
        pl.primaries()
            .iter()
            .map(|n| Target {
                node: n.clone(),
                primary: true,
            })
            .collect()
    }

    /// Whether local writes are fsynced before they are acknowledged (they count towards DW).
    pub(crate) fn durable_writes(&self) -> bool {
        self.inner.engine.durability() == dynamo_storage::Durability::Sync
    }

    /// Runs a storage update off the async worker threads and records its commit latency.
    pub(crate) async fn update(
        &self,
        key: ObjectKey,
        f: dynamo_storage::UpdateFn,
    ) -> Result<VersionedObject> {
        let started = Instant::now();
        let result = self.blocking(move |engine| engine.update(&key, f)).await;
        self.inner
            .metrics
            .storage_commit_latency
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Runs a blocking storage call off the async worker threads.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Engine) -> dynamo_storage::Result<T> + Send + 'static,
    {
        let engine = Arc::clone(&self.inner.engine);
        tokio::task::spawn_blocking(move || f(engine.as_ref()))
            .await
            .map_err(|e| Error::Internal(format!("storage task failed: {e}")))?
            .map_err(Error::from)
    }

    /// Merges `put.object` into local storage (the replica side of a write).
    pub(crate) async fn store_locally(&self, put: ReplicaPut) -> Result<VersionedObject> {
        let ReplicaPut {
            key,
            object,
            last_write_wins,
        } = put;
        self.update(
            key,
            Box::new(move |stored: Option<VersionedObject>| {
                let mut merged = stored.unwrap_or_default();
                merged.merge(&object);
                if last_write_wins {
                    merged.resolve_lww();
                }
                Ok(merged)
            }),
        )
        .await
    }

    /// Spawns `fut` on the coordinator's task tracker, so shutdown waits for it.
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.inner.tasks.spawn(fut);
    }

    /// Reads one replica, locally or over the network, and sends the answer to `tx`.
    pub(crate) fn spawn_replica_get(
        &self,
        target: Target,
        key: ObjectKey,
        timeout: Duration,
        tx: mpsc::UnboundedSender<(Target, Result<Option<VersionedObject>>)>,
    ) {
        let this = self.clone();
        self.spawn(async move {
            let result = if target.node == this.inner.me {
                let key = key.clone();
                this.blocking(move |engine| engine.get(&key)).await
            } else {
                this.inner.replicas.get(&target.node, &key, timeout).await
            };
            let _ = tx.send((target, result));
        });
    }

    /// Writes one replica, locally or over the network, and sends the outcome to `tx`. The write
    /// runs to completion even if nobody listens any more (the client was already answered).
    pub(crate) fn spawn_replica_put(
        &self,
        target: Target,
        put: ReplicaPut,
        timeout: Duration,
        tx: Option<mpsc::UnboundedSender<(Target, Result<bool>)>>,
    ) {
        let this = self.clone();
        self.spawn(async move {
            let result = if target.node == this.inner.me {
                this.store_locally(put).await.map(|_| this.durable_writes())
            } else {
                this.inner.replicas.put(&target.node, put, timeout).await
            };
            if let Err(e) = &result {
                this.inner.metrics.background_write_failures.inc();
                tracing::debug!(node = %target.node, error = %e, "replica write failed");
            }
            if let Some(tx) = tx {
                let _ = tx.send((target, result));
            }
        });
    }

    /// Records a finished request in the metrics.
    pub(crate) fn observe<T>(
        &self,
        op: &'static str,
        started: Instant,
        result: &Result<T>,
        not_found: bool,
    ) {
        let outcome = match result {
            Ok(_) if not_found => "not_found",
            Ok(_) => "ok",
            Err(Error::InvalidRequest(_) | Error::TooLarge(_)) => "invalid",
            Err(Error::Unavailable { .. }) => "unavailable",
            Err(Error::Timeout(_)) => "timeout",
            Err(_) => "error",
        };
        let m = &self.inner.metrics;
        m.requests.get_or_create(&OpLabels { op, outcome }).inc();
        m.latency
            .get_or_create(&OpOnly { op })
            .observe(started.elapsed().as_secs_f64());
        if matches!(result, Err(Error::Unavailable { .. })) {
            m.quorum_failures.get_or_create(&OpOnly { op }).inc();
        }
    }

    /// Validates a bucket and key against the engine's limits before anything is sent anywhere.
    pub(crate) fn check_key(&self, bucket: &[u8], key: &[u8]) -> Result<()> {
        if bucket.is_empty() {
            return Err(Error::InvalidRequest("bucket name is empty".into()));
        }
        if key.is_empty() {
            return Err(Error::InvalidRequest("key is empty".into()));
        }
        self.inner
            .engine
            .limits()
            .check_key(bucket, key)
            .map_err(Error::from)
    }

    /// The object key for a bucket/key pair under the current ring.
    pub(crate) fn object_key(&self, pl: &PreferenceList, bucket: &[u8], key: &[u8]) -> ObjectKey {
        ObjectKey {
            partition: pl.partition(),
            bucket: bucket.to_vec(),
            key: key.to_vec(),
        }
    }
}

/// Merges replica answers into one object (syntactic reconciliation, paper 4.4).
pub(crate) fn reconcile(replies: &[(NodeId, Option<VersionedObject>)]) -> VersionedObject {
    Object::reconcile(replies.iter().filter_map(|(_, o)| o.clone()))
}
