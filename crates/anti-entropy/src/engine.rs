//! Keeping trees current on every local write without touching the coordinator: an [`Engine`]
//! that delegates to the real one and, after each successful write or removal of a key in a
//! tracked partition, applies `hash(old) XOR hash(new)` to that partition's tree. It also times
//! writes, the foreground latency the admission controller follows.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use dynamo_ring::{NodeId, PartitionId};
use dynamo_storage::{
    AppliedFn, Durability, Engine, Entry, Hint, Limits, ObjectKey, Result, UpdateDone, UpdateFn,
    VersionedObject,
};
use parking_lot::Mutex;

use crate::hash::{leaf_of, value_of};
use crate::trees::{Trees, WriteGuard};

/// Write latencies kept for the admission controller until it collects them: a bound, so an
/// idle controller never lets them pile up.
pub const LATENCY_BACKLOG: usize = 4096;

/// Foreground write latencies, collected by the anti-entropy worker.
#[derive(Debug, Default)]
pub struct LatencySamples {
    samples: Mutex<VecDeque<Duration>>,
}

impl LatencySamples {
    /// Records one write's latency (the oldest is dropped past [`LATENCY_BACKLOG`]).
    pub fn record(&self, latency: Duration) {
        let mut samples = self.samples.lock();
        if samples.len() >= LATENCY_BACKLOG {
            samples.pop_front();
        }
        samples.push_back(latency);
    }

    /// Takes every sample recorded since the last call.
    pub fn drain(&self) -> Vec<Duration> {
        self.samples.lock().drain(..).collect()
    }
}

/// An [`Engine`] that keeps the [`Trees`] of tracked partitions current.
pub struct TrackingEngine {
    inner: Arc<dyn Engine>,
    trees: Arc<Trees>,
    latency: Arc<LatencySamples>,
}

impl TrackingEngine {
    /// Wraps `inner`, updating `trees` and recording write latencies in `latency`.
    pub fn new(
        inner: Arc<dyn Engine>,
        trees: Arc<Trees>,
        latency: Arc<LatencySamples>,
    ) -> TrackingEngine {
        TrackingEngine {
            inner,
            trees,
            latency,
        }
    }

    /// The wrapped engine.
    pub fn inner(&self) -> &Arc<dyn Engine> {
        &self.inner
    }

    fn guard(&self, key: &ObjectKey) -> Option<WriteGuard> {
        if !self.trees.is_tracked(key.partition) {
            // A fallback's copy of another partition: no tree, no hashing.
            return None;
        }
        self.trees
            .begin_write(key.partition, leaf_of(&key.bucket, &key.key))
    }

    /// Wraps an update function so it records the hash of the object it replaces.
    fn hashing(key: &ObjectKey, f: UpdateFn) -> (UpdateFn, Arc<Mutex<Option<Option<u64>>>>) {
        let slot = Arc::new(Mutex::new(None));
        let seen = Arc::clone(&slot);
        let (bucket, k) = (key.bucket.clone(), key.key.clone());
        let wrapped: UpdateFn = Box::new(move |stored: Option<VersionedObject>| {
            *seen.lock() = Some(value_of(&bucket, &k, stored.as_ref()));
            f(stored)
        });
        (wrapped, slot)
    }
}

/// Finishes a tracked write: applies old -> new to the tree, or just unregisters on failure.
fn finish(
    guard: Option<WriteGuard>,
    key: &ObjectKey,
    old: &Mutex<Option<Option<u64>>>,
    result: &Result<VersionedObject>,
) {
    let (Some(guard), Ok(object)) = (guard, result) else {
        return;
    };
    if let Some(old) = old.lock().take() {
        guard.finish(old, value_of(&key.bucket, &key.key, Some(object)));
    }
}

impl Engine for TrackingEngine {
    fn limits(&self) -> Limits {
        self.inner.limits()
    }

    fn durability(&self) -> Durability {
        self.inner.durability()
    }

    fn get(&self, key: &ObjectKey) -> Result<Option<VersionedObject>> {
        self.inner.get(key)
    }

    fn update_with(
        &self,
        key: &ObjectKey,
        durability: Durability,
        f: UpdateFn,
    ) -> Result<VersionedObject> {
        let started = tokio::time::Instant::now();
        let result = match self.guard(key) {
            None => self.inner.update_with(key, durability, f),
            Some(guard) => {
                let (f, old) = TrackingEngine::hashing(key, f);
                let result = self.inner.update_with(key, durability, f);
                finish(Some(guard), key, &old, &result);
                result
            }
        };
        self.latency.record(started.elapsed());
        result
    }

    fn update_then(&self, key: &ObjectKey, durability: Durability, f: UpdateFn, done: UpdateDone) {
        let started = tokio::time::Instant::now();
        let guard = self.guard(key);
        let (f, old) = TrackingEngine::hashing(key, f);
        let (k, latency) = (key.clone(), Arc::clone(&self.latency));
        let done: UpdateDone = Box::new(move |result| {
            finish(guard, &k, &old, &result);
            latency.record(started.elapsed());
            done(result);
        });
        self.inner.update_then(key, durability, f, done);
    }

    fn update_staged(
        &self,
        key: &ObjectKey,
        durability: Durability,
        f: UpdateFn,
        applied: AppliedFn,
        done: UpdateDone,
    ) {
        let started = tokio::time::Instant::now();
        let guard = self.guard(key);
        let (f, old) = TrackingEngine::hashing(key, f);
        let (k, latency) = (key.clone(), Arc::clone(&self.latency));
        let done: UpdateDone = Box::new(move |result| {
            finish(guard, &k, &old, &result);
            latency.record(started.elapsed());
            done(result);
        });
        self.inner.update_staged(key, durability, f, applied, done);
    }

    fn scan_partition(
        &self,
        p: PartitionId,
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        self.inner.scan_partition(p, after, limit)
    }

    fn scan_bucket(
        &self,
        bucket: &[u8],
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        self.inner.scan_bucket(bucket, after, limit)
    }

    fn remove_if_unchanged(&self, key: &ObjectKey, expected: &VersionedObject) -> Result<bool> {
        let guard = self.guard(key);
        let removed = self.inner.remove_if_unchanged(key, expected)?;
        if let (true, Some(guard)) = (removed, guard) {
            guard.finish(value_of(&key.bucket, &key.key, Some(expected)), None);
        }
        Ok(removed)
    }

    fn put_hint(
        &self,
        owner: &NodeId,
        key: &ObjectKey,
        object: &VersionedObject,
        now_ms: u64,
    ) -> Result<u64> {
        self.inner.put_hint(owner, key, object, now_ms)
    }

    fn hints(
        &self,
        owner: Option<&NodeId>,
        after_id: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Hint>> {
        self.inner.hints(owner, after_id, limit)
    }

    fn remove_hint(&self, id: u64) -> Result<()> {
        self.inner.remove_hint(id)
    }

    fn hint_count(&self) -> Result<u64> {
        self.inner.hint_count()
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.inner.get_meta(name)
    }

    fn set_meta(&self, name: &str, value: &[u8]) -> Result<()> {
        self.inner.set_meta(name, value)
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use dynamo_storage::{Content, EngineExt, MemoryEngine};
    use dynamo_versioning::{Actor, Context};

    use super::*;
    use crate::hash::key_hash;
    use crate::tree::HashTree;

    #[test]
    fn writes_keep_the_tree_equal_to_a_scan_of_storage() {
        let trees = Trees::new();
        let p = PartitionId(3);
        trees.track(&BTreeSet::from([p]));
        trees.begin_build(p).unwrap();
        trees.finish_build(p, &HashTree::new(), 0).unwrap();
        let raw: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let engine = TrackingEngine::new(
            Arc::clone(&raw),
            Arc::clone(&trees),
            Arc::new(LatencySamples::default()),
        );
        let actor = Actor::new(1, 1);
        for i in 0..20 {
            let key = ObjectKey::new(p, "b", format!("k{}", i % 7));
            let stored = engine.get(&key).unwrap().unwrap_or_default();
            engine
                .put_local(&key, actor, &stored.context(), Content::new("v"), i)
                .unwrap();
        }
        // A key of an untracked partition (a fallback's copy) changes no tree.
        let other = ObjectKey::new(PartitionId(4), "b", "x");
        engine
            .put_local(&other, actor, &Context::empty(), Content::new("v"), 1)
            .unwrap();
        let tombstone_key = ObjectKey::new(p, "b", "k1");
        let stored = engine.get(&tombstone_key).unwrap().unwrap();
        let (_, deleted) = engine
            .delete_local(&tombstone_key, actor, &stored.context(), 30)
            .unwrap();
        assert!(engine.reap_if_unchanged(&tombstone_key, &deleted).unwrap());

        let scanned = HashTree::from_hashes(
            raw.scan_partition(p, None, 1000)
                .unwrap()
                .iter()
                .filter_map(|(k, o)| key_hash(&k.bucket, &k.key, o)),
        );
        assert_eq!(trees.snapshot(p).unwrap(), scanned);
        assert_eq!(scanned.keys(), 6);
    }
}
