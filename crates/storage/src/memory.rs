//! The reference engine: ordered maps behind one lock, nothing on disk.
//!
//! It defines what the [`Engine`] contract means in the simplest possible code; the conformance
//! suite and the redb adapter's model-based test compare against it. It is also the engine of
//! simulated clusters. Durability settings are accepted and ignored: nothing survives the process.

use std::collections::BTreeMap;
use std::ops::Bound;

use dynamo_ring::{NodeId, PartitionId};
use parking_lot::RwLock;

use crate::engine::{Engine, UpdateFn, call_update};
use crate::error::Result;
use crate::object::{Entry, Hint, ObjectKey, VersionedObject, check_object};
use crate::options::{Durability, Limits, check_meta_name};

/// Everything the engine holds.
#[derive(Default)]
struct State {
    objects: BTreeMap<ObjectKey, VersionedObject>,
    hints: BTreeMap<u64, Hint>,
    /// Last hint id issued (ids start at 1 and are never reused).
    last_hint_id: u64,
    meta: BTreeMap<String, Vec<u8>>,
}

/// An in-memory [`Engine`].
#[derive(Default)]
pub struct MemoryEngine {
    limits: Limits,
    state: RwLock<State>,
}

impl MemoryEngine {
    /// An empty engine with default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty engine checking `limits`.
    pub fn with_limits(limits: Limits) -> Self {
        MemoryEngine {
            limits,
            state: RwLock::default(),
        }
    }
}

/// The first key of a scan of partition `p` that starts after `after`.
fn partition_start(p: PartitionId, after: Option<&ObjectKey>) -> Result<Bound<ObjectKey>> {
    ObjectKey::check_partition_cursor(after, p)?;
    Ok(match after {
        None => Bound::Included(ObjectKey::new(p, Vec::new(), Vec::new())),
        Some(after) => Bound::Excluded(after.clone()),
    })
}

impl Engine for MemoryEngine {
    fn limits(&self) -> Limits {
        self.limits
    }

    fn durability(&self) -> Durability {
        Durability::None
    }

    fn get(&self, key: &ObjectKey) -> Result<Option<VersionedObject>> {
        Ok(self.state.read().objects.get(key).cloned())
    }

    fn update_with(&self, key: &ObjectKey, _: Durability, f: UpdateFn) -> Result<VersionedObject> {
        key.check(&self.limits)?;
        let mut state = self.state.write();
        let current = state.objects.get(key).cloned();
        let updated = call_update(f, current)?;
        check_object(&self.limits, &updated)?;
        state.objects.insert(key.clone(), updated.clone());
        Ok(updated)
    }

    fn scan_partition(
        &self,
        p: PartitionId,
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        let start = partition_start(p, after)?;
        let state = self.state.read();
        Ok(state
            .objects
            .range((start, Bound::Unbounded))
            .take_while(|(key, _)| key.partition == p)
            .take(limit)
            .map(|(key, object)| (key.clone(), object.clone()))
            .collect())
    }

    fn scan_bucket(
        &self,
        bucket: &[u8],
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        ObjectKey::check_bucket_cursor(after, bucket)?;
        let position = |key: &ObjectKey| (key.partition, key.key.clone());
        let after = after.map(position);
        let state = self.state.read();
        Ok(state
            .objects
            .iter()
            .filter(|(key, _)| key.bucket == bucket)
            .filter(|(key, _)| after.as_ref().is_none_or(|after| position(key) > *after))
            .take(limit)
            .map(|(key, object)| (key.clone(), object.clone()))
            .collect())
    }

    fn remove_if_unchanged(&self, key: &ObjectKey, expected: &VersionedObject) -> Result<bool> {
        let mut state = self.state.write();
        if state.objects.get(key) != Some(expected) {
            return Ok(false);
        }
        state.objects.remove(key);
        Ok(true)
    }

    fn put_hint(
        &self,
        owner: &NodeId,
        key: &ObjectKey,
        object: &VersionedObject,
        now_ms: u64,
    ) -> Result<u64> {
        key.check(&self.limits)?;
        check_object(&self.limits, object)?;
        let mut state = self.state.write();
        let id = state.last_hint_id + 1;
        state.last_hint_id = id;
        let hint = Hint {
            id,
            owner: owner.clone(),
            key: key.clone(),
            object: object.clone(),
            created_ms: now_ms,
        };
        state.hints.insert(id, hint);
        Ok(id)
    }

    fn hints(
        &self,
        owner: Option<&NodeId>,
        after_id: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Hint>> {
        let start = after_id.map_or(Bound::Unbounded, Bound::Excluded);
        let state = self.state.read();
        Ok(state
            .hints
            .range((start, Bound::Unbounded))
            .map(|(_, hint)| hint)
            .filter(|hint| owner.is_none_or(|owner| hint.owner == *owner))
            .take(limit)
            .cloned()
            .collect())
    }

    fn remove_hint(&self, id: u64) -> Result<()> {
        self.state.write().hints.remove(&id);
        Ok(())
    }

    fn hint_count(&self) -> Result<u64> {
        Ok(self.state.read().hints.len() as u64)
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        check_meta_name(name)?;
        Ok(self.state.read().meta.get(name).cloned())
    }

    fn set_meta(&self, name: &str, value: &[u8]) -> Result<()> {
        check_meta_name(name)?;
        self.state
            .write()
            .meta
            .insert(name.to_owned(), value.to_vec());
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::engine_conformance_tests!(Box::new(MemoryEngine::new()));

    #[test]
    fn limits_given_at_construction_are_the_ones_checked() {
        let limits = Limits {
            max_bucket_len: 1,
            max_key_len: 1,
            max_value_len: 1,
        };
        assert_eq!(MemoryEngine::with_limits(limits).limits(), limits);
    }
}
