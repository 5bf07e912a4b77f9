//! The engine contract every local persistence engine implements, and the conveniences built on it.
//!
//! The paper's section 5 keeps the local persistence engine pluggable (Berkeley DB, MySQL, an
//! in-memory buffer); [`Engine`] is that plug: a small, synchronous, object-safe trait in the
//! style of toydb's storage engine. Everything Dynamo-specific that can be written once on top of
//! it (merging a replica's version, minting a coordinator's dot, tombstone reaping) lives in
//! [`EngineExt`], so adapters stay small and cannot disagree on those rules.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use dynamo_ring::{NodeId, PartitionId};
use dynamo_versioning::{Actor, Context, Dot};
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::object::{Content, Entry, Hint, ObjectKey, VersionedObject, is_deleted};
use crate::options::{Durability, Limits};

/// The read-modify-write step of [`Engine::update`]: sees the stored object (`None` if absent)
/// and returns the object to store, or an error that aborts the update.
pub type UpdateFn = Box<dyn FnOnce(Option<VersionedObject>) -> Result<VersionedObject> + Send>;

/// Receives the outcome of [`Engine::update_then`].
pub type UpdateDone = Box<dyn FnOnce(Result<VersionedObject>) + Send>;

/// Receives the object an update is about to commit ([`Engine::update_staged`]).
pub type AppliedFn = Box<dyn FnOnce(&VersionedObject) + Send>;

/// A local persistence engine: objects by key, hints, and node metadata.
///
/// Implementations: [`MemoryEngine`](crate::MemoryEngine) (the reference) and
/// [`RedbEngine`](crate::RedbEngine). Both pass the same [conformance suite](crate::conformance).
/// The trait is object safe: coordinators hold an `Arc<dyn Engine>`.
///
/// Common contracts:
/// - **Validation.** Every write checks [`Engine::limits`] (bucket non-empty and short enough,
///   key short enough, every sibling's [`Content::size`] within the value limit). A refused write
///   returns the limit error and changes nothing.
/// - **Durability.** A write returns once it is as durable as its [`Durability`] asks: `Sync`
///   survives a crash, `Buffered` survives one unless the crash comes within the engine's flush
///   interval, `None` only survives [`Engine::flush`] or a clean close. Metadata writes are
///   always `Sync`.
/// - **Visibility.** Once a write has returned, every later read sees it (read-your-writes).
/// - **Errors.** Stored data that does not decode is an [`Error::Decode`] naming the key, never
///   a panic. A failed write leaves the stored state as it was.
pub trait Engine: Send + Sync + 'static {
    /// The limits this engine checks on every write.
    fn limits(&self) -> Limits;

    /// The durability of [`Engine::update`] and of hint writes.
    fn durability(&self) -> Durability;

    /// The stored object of `key`, or `None` if absent. Tombstones are returned like any object.
    fn get(&self, key: &ObjectKey) -> Result<Option<VersionedObject>>;

    /// Atomic read-modify-write of one key with the engine's default durability.
    ///
    /// See [`Engine::update_with`].
    fn update(&self, key: &ObjectKey, f: UpdateFn) -> Result<VersionedObject> {
        self.update_with(key, self.durability(), f)
    }

    /// Atomic read-modify-write of one key, durable per `durability` before returning.
    ///
    /// `f` sees the stored object (`None` if absent) and returns the object to store; the
    /// returned object is what was stored. Updates of the same key are serialised: no update is
    /// lost between another's read and write (coordinators mint dots with this; replicas merge
    /// incoming versions with it). If `f` returns an error, or panics, or its result breaks the
    /// limits, nothing changes and that error (for a panic, [`Error::Rejected`]) is returned.
    /// If `f` returns the stored object unchanged, nothing is written.
    ///
    /// `f` runs while the key is locked, possibly on another thread: it must be quick and must
    /// not call back into the engine (that would deadlock). `durability` may ask for more than
    /// the engine's default (the paper's section 6.1: the coordinator picks one replica to
    /// write durably while the others buffer).
    fn update_with(
        &self,
        key: &ObjectKey,
        durability: Durability,
        f: UpdateFn,
    ) -> Result<VersionedObject>;

    /// [`Engine::update_with`] without waiting: the outcome goes to `done`, exactly once, possibly
    /// on another thread (the group-commit writer). Async callers use this to await a commit
    /// without parking a thread. The default runs `update_with` on the calling thread and then
    /// calls `done`; adapters with a writer thread override it. `done` must be quick and must not
    /// call back into the engine.
    fn update_then(&self, key: &ObjectKey, durability: Durability, f: UpdateFn, done: UpdateDone) {
        done(self.update_with(key, durability, f));
    }

    /// [`Engine::update_then`] that also reports the object as soon as it is computed and staged
    /// for commit: `applied` runs at most once, before `done`, and only if `f` succeeded and the
    /// object passed the limits. The commit may still fail afterwards (`done` gets the error): a
    /// caller that shared the staged object (a coordinator sending it to replicas while its own
    /// commit runs) must then stop issuing dots under its current epoch. The default commits
    /// first and reports both afterwards; adapters with a writer thread report earlier.
    fn update_staged(
        &self,
        key: &ObjectKey,
        durability: Durability,
        f: UpdateFn,
        applied: AppliedFn,
        done: UpdateDone,
    ) {
        match self.update_with(key, durability, f) {
            Ok(object) => {
                applied(&object);
                done(Ok(object));
            }
            Err(e) => done(Err(e)),
        }
    }

    /// Objects of partition `p` in (bucket, key) order, starting after `after` (exclusive; it
    /// must be a key of `p`, normally the last key of the previous page), at most `limit`.
    ///
    /// Fewer than `limit` results mean the partition is exhausted. Handoff and anti-entropy
    /// page through a partition with this; each page is a consistent snapshot, but writes
    /// between pages may or may not be seen.
    fn scan_partition(
        &self,
        p: PartitionId,
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<Vec<Entry>>;

    /// Objects of one bucket across all partitions (list-keys), in (partition, key) order,
    /// starting after `after` (exclusive; its partition and key give the position, its bucket
    /// must be `bucket`), at most `limit`. Paging works as in [`Engine::scan_partition`].
    fn scan_bucket(
        &self,
        bucket: &[u8],
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<Vec<Entry>>;

    /// Removes `key` only if its stored object is still exactly `expected`; returns whether it
    /// removed it. Tombstone reaping uses this so a write that landed after the reaper looked is
    /// never erased. Idempotent: an absent key returns `false`.
    fn remove_if_unchanged(&self, key: &ObjectKey, expected: &VersionedObject) -> Result<bool>;

    /// Stores a hint for `owner` (durable per [`Engine::durability`]) and returns its id. Ids
    /// increase and are never reused within one store, so a delivered hint can be removed by id
    /// without risk of removing another.
    fn put_hint(
        &self,
        owner: &NodeId,
        key: &ObjectKey,
        object: &VersionedObject,
        now_ms: u64,
    ) -> Result<u64>;

    /// Hints in id order, for one owner or all, with ids greater than `after_id`, at most `limit`.
    fn hints(
        &self,
        owner: Option<&NodeId>,
        after_id: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Hint>>;

    /// Removes a hint (after delivery). Idempotent: removing an absent id is not an error.
    fn remove_hint(&self, id: u64) -> Result<()>;

    /// Number of stored hints.
    fn hint_count(&self) -> Result<u64>;

    /// A metadata value (node id, epoch, ...) or `None` if never set. Names are 1..=255 bytes.
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>>;

    /// Sets a metadata value, durably (always fsynced, whatever the engine's durability), so a
    /// node never acts on an epoch it could forget in a crash.
    fn set_meta(&self, name: &str, value: &[u8]) -> Result<()>;

    /// Makes everything acknowledged so far durable (shutdown, or the end of a buffered batch).
    fn flush(&self) -> Result<()>;
}

/// Runs an update function, turning a panic into [`Error::Rejected`] so a faulty caller cannot
/// take a shared writer (or a lock) down with it.
pub(crate) fn call_update(
    f: UpdateFn,
    current: Option<VersionedObject>,
) -> Result<VersionedObject> {
    match catch_unwind(AssertUnwindSafe(move || f(current))) {
        Ok(result) => result,
        Err(_) => Err(Error::Rejected("the update function panicked".into())),
    }
}

/// Dynamo's writes and reaping, written once on top of any [`Engine`].
pub trait EngineExt: Engine {
    /// Merges a version received from another replica (a replica write, read repair, handoff,
    /// anti-entropy) into the stored one and returns the result. Idempotent and commutative:
    /// merging the same version twice, or two versions in either order, stores the same object.
    fn put_merge(&self, key: &ObjectKey, incoming: VersionedObject) -> Result<VersionedObject> {
        self.put_merge_with(key, self.durability(), incoming)
    }

    /// [`EngineExt::put_merge`] with an explicit durability.
    fn put_merge_with(
        &self,
        key: &ObjectKey,
        durability: Durability,
        incoming: VersionedObject,
    ) -> Result<VersionedObject> {
        self.update_with(
            key,
            durability,
            Box::new(move |stored| {
                let mut object = stored.unwrap_or_default();
                object.merge(&incoming);
                Ok(object)
            }),
        )
    }

    /// The coordinator's write: stores `content` as a new version from `actor` that supersedes
    /// what `context` covers (paper 4.4), and returns the new version's dot and the stored object.
    fn put_local(
        &self,
        key: &ObjectKey,
        actor: Actor,
        context: &Context,
        content: Content,
        now_ms: u64,
    ) -> Result<(Dot, VersionedObject)> {
        let minted = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&minted);
        let context = context.clone();
        let stored = self.update(
            key,
            Box::new(move |stored| {
                let mut object = stored.unwrap_or_default();
                *slot.lock() = Some(object.put(actor, &context, content, now_ms));
                Ok(object)
            }),
        )?;
        let dot = minted.lock().take().ok_or(Error::Closed)?;
        Ok((dot, stored))
    }

    /// The coordinator's delete: a [`Content::tombstone`] written like any other version.
    fn delete_local(
        &self,
        key: &ObjectKey,
        actor: Actor,
        context: &Context,
        now_ms: u64,
    ) -> Result<(Dot, VersionedObject)> {
        self.put_local(key, actor, context, Content::tombstone(), now_ms)
    }

    /// Deleted objects (every sibling a tombstone) among the next `scan_limit` objects of
    /// partition `p` after `after`, and the cursor to continue from (`None` once the partition
    /// is exhausted).
    fn tombstones(
        &self,
        p: PartitionId,
        after: Option<&ObjectKey>,
        scan_limit: usize,
    ) -> Result<(Vec<Entry>, Option<ObjectKey>)> {
        let page = self.scan_partition(p, after, scan_limit)?;
        let next = if page.len() < scan_limit.max(1) {
            None
        } else {
            page.last().map(|(key, _)| key.clone())
        };
        let deleted = page
            .into_iter()
            .filter(|(_, object)| is_deleted(object))
            .collect();
        Ok((deleted, next))
    }

    /// Reaps a tombstone: removes `key` only if `expected` is deleted and still exactly what is
    /// stored. The caller must first know that every replica holds the tombstone (the paper's
    /// deletes never come back only if no replica still has the old value).
    fn reap_if_unchanged(&self, key: &ObjectKey, expected: &VersionedObject) -> Result<bool> {
        if !is_deleted(expected) {
            return Err(Error::Rejected(format!(
                "{key} is not a tombstone; refusing to reap it"
            )));
        }
        self.remove_if_unchanged(key, expected)
    }

    /// A metadata value stored as a little-endian u64 (e.g. the node's epoch).
    fn get_meta_u64(&self, name: &str) -> Result<Option<u64>> {
        let Some(bytes) = self.get_meta(name)? else {
            return Ok(None);
        };
        let array = <[u8; 8]>::try_from(bytes.as_slice()).map_err(|_| Error::Decode {
            what: format!("metadata {name:?}"),
            reason: format!("expected 8 bytes, found {}", bytes.len()),
        })?;
        Ok(Some(u64::from_le_bytes(array)))
    }

    /// Stores a u64 metadata value, durably.
    fn set_meta_u64(&self, name: &str, value: u64) -> Result<()> {
        self.set_meta(name, &value.to_le_bytes())
    }
}

impl<E: Engine + ?Sized> EngineExt for E {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryEngine;
    use proptest::prelude::*;

    /// Replica versions built from a script of (actor, sees-previous) writes.
    fn versions(script: &[(u64, bool)]) -> Vec<VersionedObject> {
        let mut latest = VersionedObject::new();
        script
            .iter()
            .enumerate()
            .map(|(i, &(actor, sees_previous))| {
                let context = if sees_previous {
                    latest.context()
                } else {
                    Context::empty()
                };
                let mut version = if sees_previous {
                    latest.clone()
                } else {
                    VersionedObject::new()
                };
                version.put(
                    Actor::new(actor, 0),
                    &context,
                    Content::new(vec![i as u8]),
                    i as u64,
                );
                latest.merge(&version);
                version
            })
            .collect()
    }

    fn key() -> ObjectKey {
        ObjectKey::new(PartitionId(0), "b", "k")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Replica writes may arrive in any order and any number of times: the stored object
        /// is the same.
        #[test]
        fn put_merge_is_order_and_repeat_independent(
            (script, order) in proptest::collection::vec((1u64..4, any::<bool>()), 1..6)
                .prop_flat_map(|script| {
                    let order: Vec<usize> = (0..script.len()).collect();
                    (Just(script), Just(order).prop_shuffle())
                }),
        ) {
            let versions = versions(&script);
            let in_order = MemoryEngine::new();
            for version in &versions {
                in_order.put_merge(&key(), version.clone()).unwrap();
            }
            let shuffled = MemoryEngine::new();
            for &i in order.iter().chain(order.iter().take(2)) {
                shuffled.put_merge(&key(), versions[i].clone()).unwrap();
            }
            prop_assert_eq!(in_order.get(&key()).unwrap(), shuffled.get(&key()).unwrap());
        }
    }
}
