//! The anti-entropy service of one node: which partitions it tracks (from the ring), building
//! their trees from storage, and answering the peer side of exchanges (`serve_*`). The worker
//! that initiates exchanges is in `driver.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use dynamo_ring::{NodeId, PartitionId, Ring};
use dynamo_storage::{Durability, Engine, ObjectKey, VersionedObject};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::admission::{Admission, AdmissionOptions};
use crate::driver::Schedule;
use crate::engine::LatencySamples;
use crate::error::{Error, Result};
use crate::exchange::{Caps, KeyClockCollector, KeyClocks};
use crate::hash::key_hash;
use crate::metrics::Metrics;
use crate::peers::{KeyObject, MAX_BATCH};
use crate::tree::{BRANCHES, HashTree, LEAVES, Leaf};
use crate::trees::Trees;

/// Default time between two exchanges of the same (partition, replica) pair: every pair at least
/// every two minutes, so a replica that lost writes converges within minutes with no read.
pub const EXCHANGE_INTERVAL: Duration = Duration::from_secs(120);

/// Default delay before the exchange that confirms differences: long enough for writes in flight
/// (a request timeout is 5 s) to land, short enough that repair follows quickly.
pub const CONFIRM_DELAY: Duration = Duration::from_secs(10);

/// Default time between rebuilds of one tree from storage: daily, a backstop against a tree
/// drifting from storage (trees are also rebuilt at every start).
pub const REBUILD_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Default scheduling tick of the worker.
pub const TICK: Duration = Duration::from_secs(1);

/// Default number of exchanges and builds one node runs at once (K) at a full share.
pub const MAX_CONCURRENT: usize = 2;

/// Default wait for one exchange message.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Objects read per page of a tree build or key listing.
pub const SCAN_PAGE: usize = 512;

/// Value bytes one fetch or push carries before it stops adding objects: a quarter of the rpc
/// frame limit, so objects at the storage value limit still fit.
pub const BATCH_BYTES: usize = 32 * 1024 * 1024;

/// Bytes of an object's siblings (values and metadata).
fn object_bytes(object: &VersionedObject) -> usize {
    object.siblings().iter().map(|s| s.value.size()).sum()
}

/// Tunables of anti-entropy.
#[derive(Clone, Debug)]
pub struct Options {
    /// Replicas per key (N) whose trees are compared: the node's default `n_val`.
    pub n: usize,
    /// Longest time between two exchanges of one pair.
    pub exchange_interval: Duration,
    /// Delay before the exchange that confirms differences found (and after a failed one).
    pub confirm_delay: Duration,
    /// Time between rebuilds of a tree from storage (jittered down by up to a quarter).
    pub rebuild_interval: Duration,
    /// The worker's scheduling tick.
    pub tick: Duration,
    /// Caps of one exchange.
    pub caps: Caps,
    /// Wait for one exchange message.
    pub timeout: Duration,
    /// Whether the admission controller scales the concurrency (off: always the maximum).
    pub admission_control: bool,
    /// The admission controller; `max_permits` is the most exchanges and builds at once (K).
    pub admission: AdmissionOptions,
    /// Run storage calls on the calling task (deterministic simulations with in-memory storage
    /// only), instead of a blocking thread.
    pub inline_storage: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            n: 3,
            exchange_interval: EXCHANGE_INTERVAL,
            confirm_delay: CONFIRM_DELAY,
            rebuild_interval: REBUILD_INTERVAL,
            tick: TICK,
            caps: Caps::default(),
            timeout: TIMEOUT,
            admission_control: true,
            admission: AdmissionOptions {
                max_permits: MAX_CONCURRENT,
                ..AdmissionOptions::default()
            },
            inline_storage: false,
        }
    }
}

/// Wall-clock time in milliseconds since the Unix epoch (injected, for status timestamps).
pub type NowMs = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Whether a bucket resolves conflicts by last write wins (repairs then resolve as replica
/// writes do).
pub type IsLww = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Everything the service is built from.
pub struct Parts {
    /// This node.
    pub me: NodeId,
    /// The ring in force.
    pub ring: Ring,
    /// Local storage: the [`TrackingEngine`](crate::TrackingEngine) wrapping the real one, so
    /// repairs update the trees.
    pub engine: Arc<dyn Engine>,
    /// The trees the engine keeps current.
    pub trees: Arc<Trees>,
    /// Foreground latencies the engine records.
    pub latency: Arc<LatencySamples>,
    /// Wall-clock time.
    pub now_ms: NowMs,
    /// Last-write-wins buckets.
    pub is_lww: IsLww,
    /// Seed of the schedule's jitter.
    pub seed: u64,
    /// Tunables.
    pub options: Options,
}

/// What a peer did with this node for one partition (the peer initiated).
#[derive(Clone, Debug, Default)]
pub(crate) struct Served {
    pub(crate) last_ms: Option<u64>,
    pub(crate) keys_pushed: u64,
}

pub(crate) struct Inner {
    pub(crate) me: NodeId,
    pub(crate) ring: RwLock<Arc<Ring>>,
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) trees: Arc<Trees>,
    pub(crate) latency: Arc<LatencySamples>,
    pub(crate) now_ms: NowMs,
    pub(crate) is_lww: IsLww,
    pub(crate) options: Options,
    pub(crate) metrics: Metrics,
    pub(crate) admission: Mutex<Admission>,
    pub(crate) schedule: Mutex<Schedule>,
    pub(crate) served: Mutex<BTreeMap<(PartitionId, NodeId), Served>>,
}

/// A cheap-to-clone handle on this node's anti-entropy.
#[derive(Clone)]
pub struct AntiEntropy {
    pub(crate) inner: Arc<Inner>,
}

impl AntiEntropy {
    /// Builds the service and starts tracking the partitions `parts.me` replicates under
    /// `parts.ring` (their trees are built by the worker).
    pub fn new(parts: Parts) -> AntiEntropy {
        let admission = Admission::new(parts.options.admission);
        let ae = AntiEntropy {
            inner: Arc::new(Inner {
                me: parts.me,
                ring: RwLock::new(Arc::new(parts.ring.clone())),
                engine: parts.engine,
                trees: parts.trees,
                latency: parts.latency,
                now_ms: parts.now_ms,
                is_lww: parts.is_lww,
                options: parts.options,
                metrics: Metrics::default(),
                admission: Mutex::new(admission),
                schedule: Mutex::new(Schedule::new(parts.seed)),
                served: Mutex::new(BTreeMap::new()),
            }),
        };
        ae.set_ring(parts.ring);
        ae
    }

    /// Installs the ring in force: tracks exactly the partitions this node replicates under it
    /// (dropping the trees of the others, adding unbuilt trees for new ones) and recomputes the
    /// exchange pairs. A fallback's copies of other partitions are never tracked.
    pub fn set_ring(&self, ring: Ring) {
        let n = self.inner.options.n.max(1);
        let mine: BTreeSet<PartitionId> = ring
            .partitions_replicated_by(&self.inner.me, n)
            .into_iter()
            .collect();
        self.inner.trees.track(&mine);
        let mut pairs = BTreeSet::new();
        for &p in &mine {
            for peer in ring.preference_list_for_partition(p, n).primaries() {
                // One exchange per pair of replicas: the smaller id initiates.
                if *peer > self.inner.me {
                    pairs.insert((p, peer.clone()));
                }
            }
        }
        *self.inner.ring.write() = Arc::new(ring);
        self.inner.schedule.lock().set_pairs(&pairs);
        self.inner
            .served
            .lock()
            .retain(|(p, _), _| mine.contains(p));
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.inner.me
    }

    /// The metrics, for the node to register.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The partitions whose trees this node keeps.
    pub fn tracked(&self) -> Vec<PartitionId> {
        self.inner.trees.tracked()
    }

    /// Runs a storage call off the async worker threads (or inline, in simulations).
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Engine) -> Result<T> + Send + 'static,
    {
        let engine = Arc::clone(&self.inner.engine);
        if self.inner.options.inline_storage {
            return f(engine.as_ref());
        }
        tokio::task::spawn_blocking(move || f(engine.as_ref()))
            .await
            .map_err(|e| Error::Internal(format!("storage task failed: {e}")))?
    }

    /// Builds (or rebuilds) `p`'s tree from a scan of storage. Writes during the scan are
    /// accounted for as `trees.rs` explains. Returns the number of leaves written meanwhile and
    /// whether it was the first build.
    pub async fn build(&self, p: PartitionId) -> Result<crate::trees::Built> {
        self.inner.trees.begin_build(p)?;
        let scanned = self
            .blocking(move |engine| {
                let mut tree = HashTree::new();
                let mut after: Option<ObjectKey> = None;
                loop {
                    let page = engine.scan_partition(p, after.as_ref(), SCAN_PAGE)?;
                    for (k, object) in &page {
                        if let Some(h) = key_hash(&k.bucket, &k.key, object) {
                            tree.insert(h);
                        }
                    }
                    if page.len() < SCAN_PAGE {
                        return Ok(tree);
                    }
                    after = page.last().map(|(k, _)| k.clone());
                }
            })
            .await;
        let scanned = match scanned {
            Ok(tree) => tree,
            Err(e) => {
                self.inner.trees.abort_build(p);
                return Err(e);
            }
        };
        let built = self
            .inner
            .trees
            .finish_build(p, &scanned, (self.inner.now_ms)())?;
        self.inner.metrics.rebuilds.inc();
        Ok(built)
    }

    fn ready(&self, p: PartitionId) -> Result<HashTree> {
        self.inner.trees.snapshot(p)
    }

    /// The root of `p`'s tree; records that `from` exchanged with this node.
    pub fn serve_root(&self, p: PartitionId, from: &NodeId) -> Result<u64> {
        let root = self.ready(p)?.root();
        if *from != self.inner.me {
            let mut served = self.inner.served.lock();
            served.entry((p, from.clone())).or_default().last_ms = Some((self.inner.now_ms)());
        }
        Ok(root)
    }

    /// Every branch hash of `p`'s tree.
    pub fn serve_branches(&self, p: PartitionId) -> Result<Vec<u64>> {
        Ok(self.ready(p)?.branches().to_vec())
    }

    /// The leaf hashes under each of `branches`.
    pub fn serve_leaves(&self, p: PartitionId, branches: &[usize]) -> Result<Vec<Vec<u64>>> {
        if branches.len() > BRANCHES || branches.iter().any(|&b| b >= BRANCHES) {
            return Err(Error::Invalid(format!(
                "branches must be fewer than {BRANCHES} indexes below {BRANCHES}"
            )));
        }
        let tree = self.ready(p)?;
        Ok(branches
            .iter()
            .map(|&b| tree.branch_leaves(b).to_vec())
            .collect())
    }

    /// The key clocks of `leaves` of `p`, from a scan of storage.
    pub async fn serve_key_clocks(
        &self,
        p: PartitionId,
        leaves: Vec<Leaf>,
        max_keys: usize,
    ) -> Result<KeyClocks> {
        if leaves.len() > LEAVES || leaves.iter().any(|l| usize::from(l.0) >= LEAVES) {
            return Err(Error::Invalid(format!(
                "leaves must be at most {LEAVES} indexes below {LEAVES}"
            )));
        }
        if !self.inner.trees.is_tracked(p) {
            return Err(Error::NotTracked(p.0));
        }
        self.blocking(move |engine| {
            let mut collector = KeyClockCollector::new(&leaves);
            let mut after: Option<ObjectKey> = None;
            loop {
                let page = engine.scan_partition(p, after.as_ref(), SCAN_PAGE)?;
                for (k, object) in &page {
                    collector.add(&k.bucket, &k.key, object);
                }
                if page.len() < SCAN_PAGE {
                    return Ok(collector.finish(max_keys));
                }
                after = page.last().map(|(k, _)| k.clone());
            }
        })
        .await
    }

    /// Checks a batch of keys of `p`: tracked, at most [`MAX_BATCH`], each in `p`.
    fn check_keys<'a>(
        &self,
        p: PartitionId,
        keys: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<()> {
        if !self.inner.trees.is_tracked(p) {
            return Err(Error::NotTracked(p.0));
        }
        if keys.len() > MAX_BATCH {
            return Err(Error::Invalid(format!(
                "{} keys in one batch; at most {MAX_BATCH}",
                keys.len()
            )));
        }
        let ring = Arc::clone(&self.inner.ring.read());
        for (bucket, key) in keys {
            if ring.partition_for_key(bucket, key) != p {
                return Err(Error::Invalid(format!(
                    "bucket {:?} key {:?} is not in partition {}",
                    bucket.escape_ascii().to_string(),
                    key.escape_ascii().to_string(),
                    p.0
                )));
            }
        }
        Ok(())
    }

    /// The stored objects of `keys` of `p`, in order, stopping early (always after at least one)
    /// once they hold [`BATCH_BYTES`] of values: a fetch or push stays far below the frame limit,
    /// and the keys left out are found again by the next exchange.
    pub async fn serve_fetch(
        &self,
        p: PartitionId,
        keys: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Vec<KeyObject>> {
        self.check_keys(p, keys.iter().map(|(b, k)| (b.as_slice(), k.as_slice())))?;
        self.blocking(move |engine| {
            let mut out = Vec::new();
            let mut total = 0;
            for (bucket, key) in keys {
                if !out.is_empty() && total >= BATCH_BYTES {
                    break;
                }
                let object = engine.get(&ObjectKey::new(p, bucket.clone(), key.clone()))?;
                total += object.as_ref().map_or(0, object_bytes);
                out.push(KeyObject {
                    bucket,
                    key,
                    object,
                });
            }
            Ok(out)
        })
        .await
    }

    /// Merges `objects` of `p` pushed by `from` into local storage. The whole batch is checked
    /// before anything is written.
    pub async fn serve_push(
        &self,
        p: PartitionId,
        from: &NodeId,
        objects: Vec<KeyObject>,
    ) -> Result<()> {
        self.check_keys(
            p,
            objects
                .iter()
                .map(|o| (o.bucket.as_slice(), o.key.as_slice())),
        )?;
        if objects.iter().any(|o| o.object.is_none()) {
            return Err(Error::Invalid("a pushed key carries no object".into()));
        }
        let count = objects.len() as u64;
        self.merge_local(p, objects).await?;
        let mut served = self.inner.served.lock();
        served.entry((p, from.clone())).or_default().keys_pushed += count;
        Ok(())
    }

    /// Merges objects into local storage (a lattice join; LWW buckets then resolve, as a
    /// replica write does), durably: the batch is flushed before this returns. Idempotent.
    pub(crate) async fn merge_local(&self, p: PartitionId, objects: Vec<KeyObject>) -> Result<()> {
        let is_lww = Arc::clone(&self.inner.is_lww);
        self.blocking(move |engine| {
            // Each merge is staged without its own fsync; one flush makes the batch durable
            // before the answer (a batch costs one fsync, not one per key).
            for o in objects {
                let Some(incoming) = o.object else { continue };
                let lww = is_lww(&o.bucket);
                engine.update_with(
                    &ObjectKey::new(p, o.bucket, o.key),
                    Durability::None,
                    Box::new(move |stored: Option<VersionedObject>| {
                        let mut merged = stored.unwrap_or_default();
                        merged.merge(&incoming);
                        if lww {
                            merged.resolve_lww();
                        }
                        Ok(merged)
                    }),
                )?;
            }
            engine.flush()?;
            Ok(())
        })
        .await
    }

    /// The status of every tracked partition, for `dynamo admin aae`.
    pub fn status(&self) -> Status {
        let schedule = self.inner.schedule.lock();
        let served = self.inner.served.lock();
        let mut partitions = Vec::new();
        for p in self.inner.trees.tracked() {
            let Ok(state) = self.inner.trees.state(p) else {
                continue;
            };
            let (ready, keys, built_at_ms, builds) = {
                let s = state.lock();
                (s.ready, s.tree.keys(), s.built_at_ms, s.builds)
            };
            let mut peers = schedule.peer_status(p);
            for ((sp, peer), s) in served.range((p, self.inner.me.clone())..) {
                if *sp != p {
                    break;
                }
                peers.push(PeerStatus {
                    peer: peer.to_string(),
                    initiator: false,
                    last_exchange_ms: s.last_ms,
                    differences: 0,
                    keys_repaired: s.keys_pushed,
                    pending: 0,
                    last_error: None,
                });
            }
            peers.sort_by(|a, b| a.peer.cmp(&b.peer));
            partitions.push(PartitionStatus {
                partition: p.0,
                ready,
                keys,
                built_at_ms,
                builds,
                peers,
            });
        }
        let admission = self.inner.admission.lock();
        Status {
            node: self.inner.me.to_string(),
            share: admission.share(),
            permits: admission.permits(),
            partitions,
        }
    }
}

/// Anti-entropy status of one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The node.
    pub node: String,
    /// The background share the admission controller allows now.
    pub share: f64,
    /// Exchanges and builds allowed at once now.
    pub permits: usize,
    /// Every tracked partition.
    pub partitions: Vec<PartitionStatus>,
}

impl Status {
    /// Keys counted in every tracked tree (tombstones included).
    pub fn keys(&self) -> u64 {
        self.partitions.iter().map(|p| p.keys).sum()
    }
}

/// Anti-entropy status of one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// The partition.
    pub partition: u32,
    /// Whether its tree has been built and is exchanged.
    pub ready: bool,
    /// Keys in its tree.
    pub keys: u64,
    /// When its tree was last built (ms since the Unix epoch).
    pub built_at_ms: Option<u64>,
    /// Builds since this node started.
    pub builds: u64,
    /// The other replicas.
    pub peers: Vec<PeerStatus>,
}

/// Exchanges of one partition with one other replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The other replica.
    pub peer: String,
    /// Whether this node initiates the pair's exchanges (otherwise the peer does).
    pub initiator: bool,
    /// When the last exchange completed (ms since the Unix epoch).
    pub last_exchange_ms: Option<u64>,
    /// Differing keys found so far.
    pub differences: u64,
    /// Keys repaired so far (for a peer-initiated pair: keys the peer pushed here).
    pub keys_repaired: u64,
    /// Differences waiting for confirmation.
    pub pending: usize,
    /// Why the last exchange failed, if it did.
    pub last_error: Option<String>,
}
