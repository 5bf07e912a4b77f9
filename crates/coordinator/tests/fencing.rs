//! A coordinator whose own commit fails after it shared the staged version must stop issuing
//! dots under its epoch: otherwise the lost commit's dot could be issued again for another value
//! and replicas holding the first would silently drop the second.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dynamo_coordinator::{
    BucketProps, Buckets, Coordinator, DeleteRequest, DeleteResponse, Error, ManualClock, Options,
    Parts, PutRequest, PutResponse, ReplicaPut, Replicas, Result,
};
use dynamo_ring::{Member, NodeId, PartitionId, Ring};
use dynamo_storage::{
    AppliedFn, Content, Durability, Engine, Hint, Limits, MemoryEngine, ObjectKey, UpdateDone,
    UpdateFn, VersionedObject,
};
use dynamo_versioning::{Actor, Context};

/// A memory engine whose staged updates fail to commit while `fail_commits` is set.
struct FlakyDisk {
    inner: MemoryEngine,
    fail_commits: AtomicBool,
}

impl Engine for FlakyDisk {
    fn limits(&self) -> Limits {
        self.inner.limits()
    }
    fn durability(&self) -> Durability {
        Durability::Sync
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
    fn update_staged(
        &self,
        key: &ObjectKey,
        _: Durability,
        f: UpdateFn,
        applied: AppliedFn,
        done: UpdateDone,
    ) {
        let current = match self.inner.get(key) {
            Ok(current) => current,
            Err(e) => return done(Err(e)),
        };
        match f(current) {
            Ok(object) if self.fail_commits.load(Ordering::SeqCst) => {
                applied(&object);
                done(Err(std::io::Error::other("disk full").into()));
            }
            Ok(object) => {
                let stored =
                    self.inner
                        .update_with(key, Durability::Sync, Box::new(move |_| Ok(object)));
                if let Ok(o) = &stored {
                    applied(o);
                }
                done(stored);
            }
            Err(e) => done(Err(e)),
        }
    }
    fn scan_partition(
        &self,
        p: PartitionId,
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> dynamo_storage::Result<Vec<(ObjectKey, VersionedObject)>> {
        self.inner.scan_partition(p, after, limit)
    }
    fn scan_bucket(
        &self,
        bucket: &[u8],
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> dynamo_storage::Result<Vec<(ObjectKey, VersionedObject)>> {
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

/// Replicas that always store successfully (the other two nodes of a three-node cluster).
struct HealthyPeers;

impl Replicas for HealthyPeers {
    async fn ping(&self, _: &NodeId, _: Duration) -> Result<()> {
        Ok(())
    }
    async fn get(&self, _: &NodeId, _: &ObjectKey, _: Duration) -> Result<Option<VersionedObject>> {
        Ok(None)
    }
    async fn put(&self, _: &NodeId, _: ReplicaPut, _: Duration) -> Result<bool> {
        Ok(true)
    }
    async fn forward_put(&self, _: &NodeId, _: PutRequest, _: Duration) -> Result<PutResponse> {
        Err(Error::Unreachable("no forwarding in this test".into()))
    }
    async fn forward_delete(
        &self,
        _: &NodeId,
        _: DeleteRequest,
        _: Duration,
    ) -> Result<DeleteResponse> {
        Err(Error::Unreachable("no forwarding in this test".into()))
    }
    async fn list_keys(&self, _: &NodeId, _: &[u8], _: Duration) -> Result<Vec<Vec<u8>>> {
        Ok(Vec::new())
    }
    async fn set_bucket_props(
        &self,
        _: &NodeId,
        _: &[u8],
        _: &BucketProps,
        _: Duration,
    ) -> Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_failed_local_commit_after_sharing_fences_the_coordinator() {
    let ids: Vec<NodeId> = (1..=3)
        .map(|i| NodeId::new(format!("n{i}")).unwrap())
        .collect();
    let ring = Ring::new(64, ids.iter().cloned().map(Member::new).collect(), 3).unwrap();
    let disk = Arc::new(FlakyDisk {
        inner: MemoryEngine::new(),
        fail_commits: AtomicBool::new(false),
    });
    let engine: Arc<dyn Engine> = disk.clone();
    let coordinator = Coordinator::new(Parts {
        me: ids[0].clone(),
        actor: Actor::new(ids[0].actor_id(), 7),
        ring,
        engine: Arc::clone(&engine),
        replicas: Arc::new(HealthyPeers),
        buckets: Buckets::load(BucketProps::default(), BTreeMap::new(), engine).unwrap(),
        clock: Arc::new(ManualClock::new(1_000)),
        options: Options::default(),
    });
    let put = |v: &str| PutRequest::new("b", "k", Content::new(v.to_owned()), Context::empty());

    coordinator.put(put("v1")).await.unwrap();
    assert!(!coordinator.is_fenced());

    // The local commit fails after the version went to the replicas: W=2 is still met by them,
    // so the client's write is acknowledged, but the coordinator is fenced.
    disk.fail_commits.store(true, Ordering::SeqCst);
    coordinator.put(put("v2")).await.unwrap();
    for _ in 0..100 {
        if coordinator.is_fenced() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(coordinator.is_fenced());

    // Even with the disk healthy again, no new dot is issued under this epoch.
    disk.fail_commits.store(false, Ordering::SeqCst);
    let err = coordinator.put(put("v3")).await.unwrap_err();
    assert!(
        matches!(err, Error::Storage(ref m) if m.contains("restart")),
        "{err}"
    );
}
