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
use crate::health::Health;
use crate::metrics::{Metrics, OpLabels, OpOnly};
use crate::props::BucketProps;
use crate::replicas::Replicas;
use crate::targets::{Target, sloppy_targets};

/// How long a request may take when the client does not say. Long enough for a quorum on a loaded
/// cluster, short enough that a client notices a stuck request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest timeout a client may ask for; beyond it a request holds resources for nothing.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a read keeps listening for slower replicas after it has answered, to repair them
/// (paper 4.5: "the coordinator waits for a brief period"). A few loopback round trips.
pub const READ_REPAIR_LINGER: Duration = Duration::from_millis(200);

/// How often a peer marked down is probed. Short enough that a returning node is used again within
/// a second, long enough that probing a dead node costs nothing noticeable.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// How often the hint store is scanned for deliverable hints.
pub const HANDOFF_INTERVAL: Duration = Duration::from_millis(500);

/// Hints handed off per scan at most: bounds the burst a returning node receives (at the default
/// interval, about 512 objects a second).
pub const HANDOFF_BATCH: usize = 256;

/// Healthy fallbacks a request may still use, shared by its replica writes.
pub(crate) type Spares = Arc<parking_lot::Mutex<std::collections::VecDeque<NodeId>>>;

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
    /// Run storage calls on the calling task instead of a blocking thread. Only for
    /// deterministic simulations with an in-memory engine, where a blocking thread would let
    /// real time leak into the schedule.
    pub inline_storage: bool,
    /// How often unreachable peers are probed.
    pub probe_interval: Duration,
    /// How often the hint store is scanned for hints to hand off.
    pub handoff_interval: Duration,
    /// Hints delivered per scan at most (rate limit for handoff, paper 4.6 and 6.5).
    pub handoff_batch: usize,
    /// Partition transfers sent at once (changeable at run time with
    /// [`Coordinator::set_transfer_limit`]).
    pub transfer_limit: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            default_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_timeout: MAX_REQUEST_TIMEOUT,
            read_repair_linger: READ_REPAIR_LINGER,
            prune: PrunePolicy::default(),
            inline_storage: false,
            probe_interval: PROBE_INTERVAL,
            handoff_interval: HANDOFF_INTERVAL,
            handoff_batch: HANDOFF_BATCH,
            transfer_limit: crate::transfer_state::DEFAULT_TRANSFER_LIMIT,
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
    /// The ring being moved to while partitions change owner (dual writes), if any. Locked after
    /// `ring` when both are needed.
    pub(crate) next_ring: RwLock<Option<Arc<Ring>>>,
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) replicas: Arc<R>,
    pub(crate) buckets: Buckets,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) options: Options,
    pub(crate) metrics: Metrics,
    pub(crate) tasks: TaskTracker,
    pub(crate) started: Instant,
    pub(crate) health: Health,
    /// Set when a local commit failed after its version had been shared: this node must not
    /// issue more dots under its epoch until it restarts (and takes a new one).
    pub(crate) fenced: std::sync::atomic::AtomicBool,
    /// Partition transfers this node is sending.
    pub(crate) transfers: Arc<crate::transfer_state::Registry>,
    /// The per-node limit on concurrent transfers.
    pub(crate) limiter: crate::transfer_state::TransferLimiter,
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

impl<R: Replicas> Coordinator<R> {
    /// Builds a coordinator. It spawns nothing until requests arrive.
    pub fn new(parts: Parts<R>) -> Coordinator<R> {
        let limiter = crate::transfer_state::TransferLimiter::new(parts.options.transfer_limit);
        Coordinator {
            inner: Arc::new(Inner {
                me: parts.me,
                actor: parts.actor,
                ring: RwLock::new(Arc::new(parts.ring)),
                next_ring: RwLock::new(None),
                engine: parts.engine,
                replicas: parts.replicas,
                buckets: parts.buckets,
                clock: parts.clock,
                options: parts.options,
                metrics: Metrics::default(),
                tasks: TaskTracker::new(),
                started: Instant::now(),
                health: Health::default(),
                fenced: std::sync::atomic::AtomicBool::new(false),
                transfers: Arc::default(),
                limiter,
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

    /// Installs a newer ring (ignored if its epoch is not newer). A next ring (see
    /// [`Coordinator::set_next_ring`]) whose epoch is not above the new ring's is cleared: the
    /// transition it described is over.
    pub fn set_ring(&self, ring: Ring) {
        let mut current = self.inner.ring.write();
        if ring.epoch() > current.epoch() {
            let mut next = self.inner.next_ring.write();
            if next.as_ref().is_some_and(|n| n.epoch() <= ring.epoch()) {
                *next = None;
            }
            *current = Arc::new(ring);
        }
    }

    /// The ring partitions are moving to, while a transition is under way.
    pub fn next_ring(&self) -> Option<Arc<Ring>> {
        self.inner.next_ring.read().clone()
    }

    /// Starts (`Some`) or abandons (`None`) a transition to `next`. While a next ring is set,
    /// every put and delete this node coordinates is also sent to the key's primaries in `next`
    /// that are not already targets (paper 4.9's "the new owner must receive the writes"); those
    /// extra writes do not count towards W, DW or PW, and reads stay on the current ring. A next
    /// owner that cannot be reached gets the write later through hinted handoff.
    ///
    /// Refused (nothing changes) if `next` has another partition count than the current ring or
    /// is not newer than it.
    pub fn set_next_ring(&self, next: Option<Ring>) -> Result<()> {
        let current = self.inner.ring.read();
        let mut slot = self.inner.next_ring.write();
        let Some(next) = next else {
            *slot = None;
            return Ok(());
        };
        if next.q() != current.q() {
            return Err(Error::InvalidRequest(format!(
                "the next ring has {} partitions, the current one {}: Q is fixed at cluster creation",
                next.q(),
                current.q()
            )));
        }
        if next.epoch() <= current.epoch() {
            return Err(Error::InvalidRequest(format!(
                "the next ring's epoch {} is not newer than the current ring's {}",
                next.epoch(),
                current.epoch()
            )));
        }
        *slot = Some(Arc::new(next));
        Ok(())
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

    /// The replicas a request fans out to: the first N healthy nodes (sloppy quorum).
    pub(crate) fn targets(&self, pl: &PreferenceList) -> Vec<Target> {
        sloppy_targets(pl, &self.inner.me, |n| self.inner.health.is_up(n))
    }

    /// Whether a local commit failed after its version was shared with replicas. A fenced
    /// coordinator refuses to coordinate writes; the node must restart under a new epoch (its
    /// stop must not be recorded as clean).
    pub fn is_fenced(&self) -> bool {
        self.inner.fenced.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits for a coordinator's own local commit and reports it like a replica's answer. A
    /// failed commit fences the coordinator (see [`Coordinator::is_fenced`]).
    pub(crate) fn spawn_local_commit(
        &self,
        target: Target,
        local: crate::write::LocalCommit,
        tx: mpsc::UnboundedSender<(Target, Result<bool>)>,
    ) {
        let this = self.clone();
        let started = Instant::now();
        self.spawn(async move {
            let result = match local.await {
                Ok(Ok(_)) => Ok(this.durable_writes()),
                Ok(Err(e)) => Err(Error::from(e)),
                Err(_) => Err(Error::Storage("the storage engine dropped a commit".into())),
            };
            this.inner
                .metrics
                .storage_commit_latency
                .observe(started.elapsed().as_secs_f64());
            if let Err(e) = &result {
                this.inner.fenced.store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::error!(error = %e, "a local commit failed after its version was shared; this node now refuses to coordinate writes until it restarts");
            }
            let _ = tx.send((target, result));
        });
    }

    /// This node's failure detector.
    pub fn health(&self) -> &Health {
        &self.inner.health
    }

    /// Records the outcome of a call to `node` in the failure detector.
    pub(crate) fn observe_peer<T>(&self, node: &NodeId, result: &Result<T>) {
        if node == &self.inner.me {
            return;
        }
        match result {
            Err(e) if Health::is_failure(e) => {
                if self.inner.health.mark_down(node) {
                    self.inner.metrics.nodes_marked_down.inc();
                    tracing::info!(%node, error = %e, "peer marked down");
                }
            }
            _ => {
                if self.inner.health.mark_up(node) {
                    tracing::info!(%node, "peer is up again");
                }
            }
        }
    }

    /// Whether local writes are fsynced before they are acknowledged (they count towards DW).
    pub(crate) fn durable_writes(&self) -> bool {
        self.inner.engine.durability() == dynamo_storage::Durability::Sync
    }

    /// Runs a storage update off the async worker threads and records its commit latency.
    pub(crate) async fn update(
        &self,
        key: ObjectKey,
        durability: dynamo_storage::Durability,
        f: dynamo_storage::UpdateFn,
    ) -> Result<VersionedObject> {
        let started = Instant::now();
        // The engine answers from its group-commit writer once the batch is committed; awaiting
        // that answer parks no thread.
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner.engine.update_then(
            &key,
            durability,
            f,
            Box::new(move |outcome| {
                let _ = tx.send(outcome);
            }),
        );
        let result = match rx.await {
            Ok(outcome) => outcome.map_err(Error::from),
            Err(_) => Err(Error::Storage(
                "the storage engine dropped an update".into(),
            )),
        };
        self.inner
            .metrics
            .storage_commit_latency
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Reads the local version of a key on the calling task. A point read is a short read
    /// transaction served from the engine's page cache; moving it to a blocking thread would cost
    /// two thread switches for a few microseconds of work.
    pub(crate) fn read_local(&self, key: &ObjectKey) -> Result<Option<VersionedObject>> {
        self.inner.engine.get(key).map_err(Error::from)
    }

    /// Runs a blocking storage call off the async worker threads.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Engine) -> dynamo_storage::Result<T> + Send + 'static,
    {
        let engine = Arc::clone(&self.inner.engine);
        if self.inner.options.inline_storage {
            return f(engine.as_ref()).map_err(Error::from);
        }
        tokio::task::spawn_blocking(move || f(engine.as_ref()))
            .await
            .map_err(|e| Error::Internal(format!("storage task failed: {e}")))?
            .map_err(Error::from)
    }

    /// Merges `put.object` into local storage (the replica side of a write). A fallback first
    /// records the hint, so a crash between the two steps still hands the object off.
    pub(crate) async fn store_locally(&self, put: ReplicaPut) -> Result<VersionedObject> {
        let ReplicaPut {
            key,
            object,
            last_write_wins,
            hint,
            durable,
        } = put;
        if let Some(owner) = hint {
            let (k, o) = (key.clone(), object.clone());
            let now = self.inner.clock.now_ms();
            self.blocking(move |engine| engine.put_hint(&owner, &k, &o, now))
                .await?;
            self.inner.metrics.hints_stored.inc();
        }
        let durability = if durable {
            dynamo_storage::Durability::Sync
        } else {
            self.inner.engine.durability()
        };
        self.update(
            key,
            durability,
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
                this.read_local(&key)
            } else {
                this.inner.replicas.get(&target.node, &key, timeout).await
            };
            this.observe_peer(&target.node, &result);
            let _ = tx.send((target, result));
        });
    }

    /// Writes one replica, locally or over the network, and sends the outcome to `tx`. The write
    /// runs to completion even if nobody listens any more (the client was already answered).
    /// If the replica cannot be reached and `spares` has another healthy node, the write goes
    /// there instead with a hint naming the replica it replaces (sloppy quorum, paper 4.6), so a
    /// write still reaches N nodes when one of them fails mid-request.
    pub(crate) fn spawn_replica_put(
        &self,
        target: Target,
        put: ReplicaPut,
        timeout: Duration,
        tx: Option<mpsc::UnboundedSender<(Target, Result<bool>)>>,
        spares: Option<Spares>,
    ) {
        let this = self.clone();
        self.spawn(async move {
            let (mut target, mut put) = (target, put);
            let result = loop {
                let result = if target.node == this.inner.me {
                    this.store_locally(put.clone()).await.map(|_| this.durable_writes())
                } else {
                    this.inner.replicas.put(&target.node, put.clone(), timeout).await
                };
                this.observe_peer(&target.node, &result);
                let failed = matches!(&result, Err(e) if Health::is_failure(e));
                let spare = if failed { spares.as_ref().and_then(|s| s.lock().pop_front()) } else { None };
                match spare {
                    Some(node) => {
                        let owner = target.hint.clone().unwrap_or_else(|| target.node.clone());
                        tracing::debug!(failed = %target.node, fallback = %node, "replica unreachable; writing to a fallback");
                        put.hint = Some(owner.clone());
                        target = Target {
                            node,
                            primary: false,
                            hint: Some(owner),
                        };
                    }
                    None => break result,
                }
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

    /// The healthy fallbacks of `pl` not already among `targets`, for replica writes that fail.
    pub(crate) fn spares(&self, pl: &PreferenceList, targets: &[Target]) -> Spares {
        let spare: std::collections::VecDeque<NodeId> = pl
            .fallbacks()
            .iter()
            .filter(|n| **n != self.inner.me && self.inner.health.is_up(n))
            .filter(|n| !targets.iter().any(|t| &t.node == *n))
            .cloned()
            .collect();
        Arc::new(parking_lot::Mutex::new(spare))
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
