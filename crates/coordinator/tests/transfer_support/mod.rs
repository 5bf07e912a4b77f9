//! The harness of `transfer.rs`: an in-process network whose transfer batches can be held,
//! failed and counted, an engine with a scan hook, and a four-node cluster with a joiner.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dynamo_coordinator::{
    BucketProps, Buckets, Coordinator, DeleteRequest, DeleteResponse, Error, ManualClock, Options,
    PartitionSummary, Parts, PutRequest, PutResponse, ReplicaPut, Replicas, Result,
    TransferOptions,
};
use dynamo_ring::{Member, NodeId, PartitionId, Ring};
use dynamo_storage::{
    Content, Durability, Engine, Entry, Hint, Limits, MemoryEngine, ObjectKey, UpdateFn,
    VersionedObject,
};
use dynamo_versioning::{Actor, Context, VectorClock};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Semaphore;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T>> + Send>>;

/// Partitions of the test rings: few, so each holds many keys.
pub const Q: u32 = 8;

/// The in-process network.
#[derive(Default)]
pub struct Net {
    pub nodes: RwLock<HashMap<NodeId, Coordinator<Net>>>,
    pub down: RwLock<BTreeSet<NodeId>>,
    /// Transfer batches wait for a permit of this semaphore when set.
    pub gate: RwLock<Option<Arc<Semaphore>>>,
    /// Transfer batches fail once this many more have passed.
    pub fail_batches_after: Mutex<Option<u64>>,
    /// Objects delivered in transfer batches, per receiver.
    pub received: Mutex<BTreeMap<NodeId, u64>>,
}

impl Net {
    pub fn node(&self, to: &NodeId) -> Result<Coordinator<Net>> {
        if self.down.read().contains(to) {
            return Err(Error::Unreachable(format!("{to} is down")));
        }
        self.nodes
            .read()
            .get(to)
            .cloned()
            .ok_or_else(|| Error::Unreachable(format!("{to} unknown")))
    }
}

impl Replicas for Net {
    async fn ping(&self, to: &NodeId, _: Duration) -> Result<()> {
        self.node(to).map(|_| ())
    }

    async fn get(
        &self,
        to: &NodeId,
        key: &ObjectKey,
        _: Duration,
    ) -> Result<Option<VersionedObject>> {
        self.node(to)?.replica_get(key.clone()).await
    }

    async fn put(&self, to: &NodeId, put: ReplicaPut, _: Duration) -> Result<bool> {
        self.node(to)?.replica_put(put).await
    }

    fn forward_put(
        &self,
        to: &NodeId,
        request: PutRequest,
        _: Duration,
    ) -> impl Future<Output = Result<PutResponse>> + Send {
        let node = self.node(to);
        let fut: BoxFuture<PutResponse> = Box::pin(async move { node?.put(request).await });
        fut
    }

    fn forward_delete(
        &self,
        to: &NodeId,
        request: DeleteRequest,
        _: Duration,
    ) -> impl Future<Output = Result<DeleteResponse>> + Send {
        let node = self.node(to);
        let fut: BoxFuture<DeleteResponse> = Box::pin(async move { node?.delete(request).await });
        fut
    }

    async fn list_keys(&self, to: &NodeId, bucket: &[u8], _: Duration) -> Result<Vec<Vec<u8>>> {
        self.node(to)?.local_keys(bucket.to_vec()).await
    }

    async fn set_bucket_props(
        &self,
        to: &NodeId,
        bucket: &[u8],
        props: &BucketProps,
        _: Duration,
    ) -> Result<()> {
        self.node(to)?
            .replica_set_bucket_props(bucket, props.clone())
    }

    async fn transfer_batch(
        &self,
        to: &NodeId,
        partition: PartitionId,
        entries: Vec<Entry>,
        _: Duration,
    ) -> Result<u64> {
        let node = self.node(to)?;
        let gate = self.gate.read().clone();
        if let Some(gate) = gate {
            gate.acquire()
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
                .forget();
        }
        if let Some(left) = self.fail_batches_after.lock().as_mut() {
            if *left == 0 {
                return Err(Error::Unreachable(format!("{to}: link cut")));
            }
            *left -= 1;
        }
        let count = entries.len() as u64;
        let merged = node.replica_transfer_batch(partition, entries).await?;
        *self.received.lock().entry(to.clone()).or_default() += count;
        Ok(merged)
    }

    async fn transfer_verify(
        &self,
        to: &NodeId,
        partition: PartitionId,
        clocks: Vec<(ObjectKey, VectorClock)>,
        _: Duration,
    ) -> Result<Vec<ObjectKey>> {
        self.node(to)?
            .replica_transfer_verify(partition, clocks)
            .await
    }

    async fn transfer_sync(
        &self,
        to: &NodeId,
        partition: PartitionId,
        _: Duration,
    ) -> Result<PartitionSummary> {
        self.node(to)?.replica_transfer_sync(partition).await
    }
}

/// Runs once, right after a scan.
pub type ScanHook = Box<dyn FnOnce(&MemoryEngine) + Send>;

/// A memory engine that runs a hook right after a partition scan (a write landing between the
/// moment a dropper reads an object and the moment it removes it).
pub struct HookEngine {
    pub inner: MemoryEngine,
    pub after_scan: Mutex<Option<ScanHook>>,
}

impl Engine for HookEngine {
    fn limits(&self) -> Limits {
        self.inner.limits()
    }
    fn durability(&self) -> Durability {
        self.inner.durability()
    }
    fn get(&self, key: &ObjectKey) -> dynamo_storage::Result<Option<VersionedObject>> {
        self.inner.get(key)
    }
    fn update_with(
        &self,
        key: &ObjectKey,
        durability: Durability,
        f: UpdateFn,
    ) -> dynamo_storage::Result<VersionedObject> {
        self.inner.update_with(key, durability, f)
    }
    fn scan_partition(
        &self,
        p: PartitionId,
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> dynamo_storage::Result<Vec<Entry>> {
        let page = self.inner.scan_partition(p, after, limit)?;
        if let Some(hook) = self.after_scan.lock().take() {
            hook(&self.inner);
        }
        Ok(page)
    }
    fn scan_bucket(
        &self,
        bucket: &[u8],
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> dynamo_storage::Result<Vec<Entry>> {
        self.inner.scan_bucket(bucket, after, limit)
    }
    fn remove_if_unchanged(
        &self,
        key: &ObjectKey,
        expected: &VersionedObject,
    ) -> dynamo_storage::Result<bool> {
        self.inner.remove_if_unchanged(key, expected)
    }
    fn put_hint(
        &self,
        owner: &NodeId,
        key: &ObjectKey,
        object: &VersionedObject,
        now_ms: u64,
    ) -> dynamo_storage::Result<u64> {
        self.inner.put_hint(owner, key, object, now_ms)
    }
    fn hints(
        &self,
        owner: Option<&NodeId>,
        after_id: Option<u64>,
        limit: usize,
    ) -> dynamo_storage::Result<Vec<Hint>> {
        self.inner.hints(owner, after_id, limit)
    }
    fn remove_hint(&self, id: u64) -> dynamo_storage::Result<()> {
        self.inner.remove_hint(id)
    }
    fn hint_count(&self) -> dynamo_storage::Result<u64> {
        self.inner.hint_count()
    }
    fn get_meta(&self, name: &str) -> dynamo_storage::Result<Option<Vec<u8>>> {
        self.inner.get_meta(name)
    }
    fn set_meta(&self, name: &str, value: &[u8]) -> dynamo_storage::Result<()> {
        self.inner.set_meta(name, value)
    }
    fn flush(&self) -> dynamo_storage::Result<()> {
        self.inner.flush()
    }
}

/// Four members n1..n4 and a joiner n5 that owns partitions only in the next ring.
pub struct Cluster {
    pub net: Arc<Net>,
    pub current: Ring,
    pub next: Ring,
    pub engines: BTreeMap<NodeId, Arc<HookEngine>>,
}

pub fn id(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

impl Cluster {
    pub fn new() -> Cluster {
        let net = Arc::new(Net::default());
        let members: Vec<Member> = (1..=4).map(|i| Member::new(id(&format!("n{i}")))).collect();
        let current = Ring::new(Q, members, 3).unwrap();
        let next = current
            .with_member_joined(Member::new(id("n5")), 3)
            .unwrap();
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let mut engines = BTreeMap::new();
        for i in 1..=5 {
            let me = id(&format!("n{i}"));
            let engine = Arc::new(HookEngine {
                inner: MemoryEngine::new(),
                after_scan: Mutex::new(None),
            });
            let dyn_engine: Arc<dyn Engine> = engine.clone();
            let buckets = Buckets::load(
                BucketProps::default(),
                BTreeMap::new(),
                Arc::clone(&dyn_engine),
            )
            .unwrap();
            let coordinator = Coordinator::new(Parts {
                me: me.clone(),
                actor: Actor::new(me.actor_id(), 1),
                ring: current.clone(),
                engine: dyn_engine,
                replicas: Arc::clone(&net),
                buckets,
                clock: clock.clone(),
                options: Options {
                    default_timeout: Duration::from_secs(5),
                    read_repair_linger: Duration::from_millis(20),
                    ..Options::default()
                },
            });
            net.nodes.write().insert(me.clone(), coordinator);
            engines.insert(me, engine);
        }
        Cluster {
            net,
            current,
            next,
            engines,
        }
    }

    pub fn node(&self, name: &str) -> Coordinator<Net> {
        self.net.nodes.read()[&id(name)].clone()
    }

    pub fn every_node(&self) -> Vec<Coordinator<Net>> {
        self.net.nodes.read().values().cloned().collect()
    }

    /// Every node learns the next ring (before any transfer starts).
    pub fn begin_transition(&self) {
        for node in self.every_node() {
            node.set_next_ring(Some(self.next.clone())).unwrap();
        }
    }

    /// Every node switches to the next ring.
    pub fn switch(&self) {
        for node in self.every_node() {
            node.set_ring(self.next.clone());
        }
    }

    /// Every (partition, sender, receiver) the join needs: each next primary that is not a
    /// current one receives the partition from the first current primary.
    pub fn moves(&self) -> Vec<(PartitionId, NodeId, NodeId)> {
        let mut out = Vec::new();
        for p in self.current.partitions() {
            let now = self.current.preference_list_for_partition(p, 3);
            let next = self.next.preference_list_for_partition(p, 3);
            for to in next.primaries() {
                if !now.is_primary(to) {
                    out.push((p, now.primaries()[0].clone(), to.clone()));
                }
            }
        }
        out
    }

    /// The moves to n5.
    pub fn moves_to_n5(&self) -> Vec<(PartitionId, NodeId)> {
        self.moves()
            .into_iter()
            .filter(|(_, _, to)| to == &id("n5"))
            .map(|(p, from, _)| (p, from))
            .collect()
    }

    pub fn stored(&self, node: &str, bucket: &str, key: &str) -> Option<VersionedObject> {
        let p = self
            .current
            .partition_for_key(bucket.as_bytes(), key.as_bytes());
        self.engines[&id(node)]
            .get(&ObjectKey::new(p, bucket, key))
            .unwrap()
    }

    pub fn count(&self, node: &str, p: PartitionId) -> usize {
        self.engines[&id(node)]
            .scan_partition(p, None, usize::MAX)
            .unwrap()
            .len()
    }

    /// A partition n5 will own with the most keys (sent from `from`), for single-transfer tests.
    pub fn biggest_move(&self) -> (PartitionId, NodeId) {
        self.moves_to_n5()
            .into_iter()
            .max_by_key(|(p, from)| self.count(from.as_str(), *p))
            .unwrap()
    }

    pub async fn write_keys(&self, keys: std::ops::Range<usize>) {
        for i in keys {
            self.node("n1")
                .put(put(&format!("k{i}"), &format!("v{i}")))
                .await
                .unwrap();
        }
    }
}

pub fn put(key: &str, value: &str) -> PutRequest {
    PutRequest::new("b", key, Content::new(value.to_string()), Context::empty())
}

pub fn values(object: &VersionedObject) -> Vec<String> {
    object
        .siblings()
        .iter()
        .filter(|s| !s.value.deleted)
        .map(|s| String::from_utf8_lossy(&s.value.value).into())
        .collect()
}

/// Polls `f` until it holds, with a deadline.
pub async fn eventually<F: Fn() -> bool>(what: &str, f: F) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

pub fn small_batches() -> TransferOptions {
    TransferOptions {
        batch_keys: 10,
        ..TransferOptions::default()
    }
}
