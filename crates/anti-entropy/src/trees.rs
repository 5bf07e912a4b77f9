//! The trees of the partitions this node replicates, kept current by every local write and
//! rebuilt from storage scans.
//!
//! A write and a rebuild scan run concurrently, and a write's tree update lands after its commit,
//! so a scan can see a write whose update is still to come, or miss one that was applied. The
//! rule that keeps a rebuilt tree exact: every write registers itself on its key's leaf before
//! it reaches storage and unregisters after its update ([`WriteGuard`]); a rebuild marks every
//! leaf with a write registered while it runs (or when it starts) as *touched*, and at the end
//! adopts the scanned hash only for untouched leaves, keeping the incrementally maintained hash
//! of touched ones. A partition's first build has no maintained hash to keep, so its touched
//! leaves are reported and the driver builds it again soon; until then an exchange may dig into
//! such a leaf for nothing (key clocks come from storage, so it never repairs wrongly).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use dynamo_ring::PartitionId;
use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::tree::{HashTree, LEAVES, Leaf};

/// Bytes of bookkeeping per tracked partition beyond its tree: in-flight counters and the
/// touched-leaf set of a rebuild.
pub const TRACKING_BYTES: usize = LEAVES * (std::mem::size_of::<u32>() + 1);

/// One tracked partition.
#[derive(Debug)]
pub(crate) struct PartitionState {
    pub(crate) tree: HashTree,
    /// A build has completed: the tree stands for storage and may be exchanged.
    pub(crate) ready: bool,
    /// When the last build completed (wall clock, ms).
    pub(crate) built_at_ms: Option<u64>,
    /// Completed builds.
    pub(crate) builds: u64,
    /// Writes registered per leaf and not finished yet.
    in_flight: Box<[u32]>,
    /// While a build runs: the leaves written meanwhile.
    touched: Option<Box<[bool]>>,
}

impl PartitionState {
    fn new() -> PartitionState {
        PartitionState {
            tree: HashTree::new(),
            ready: false,
            built_at_ms: None,
            builds: 0,
            in_flight: vec![0; LEAVES].into_boxed_slice(),
            touched: None,
        }
    }
}

/// The trees of every tracked partition. Shared by the [`TrackingEngine`](crate::TrackingEngine)
/// (which updates them) and the anti-entropy service (which builds and exchanges them).
#[derive(Debug, Default)]
pub struct Trees {
    partitions: RwLock<BTreeMap<PartitionId, Arc<Mutex<PartitionState>>>>,
}

/// A write registered on its key's leaf; [`WriteGuard::finish`] applies its change, and
/// dropping it unfinished (the write failed) just unregisters it.
pub struct WriteGuard {
    state: Arc<Mutex<PartitionState>>,
    leaf: Leaf,
    done: bool,
}

impl WriteGuard {
    /// Applies the key's change from `old` to `new` (hash values; `None` for absent) and
    /// unregisters the write.
    pub fn finish(mut self, old: Option<u64>, new: Option<u64>) {
        let mut state = self.state.lock();
        state.tree.update(self.leaf, old, new);
        let i = self.leaf.index();
        state.in_flight[i] = state.in_flight[i].saturating_sub(1);
        self.done = true;
    }

    /// The leaf of the key being written.
    pub fn leaf(&self) -> Leaf {
        self.leaf
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        if !self.done {
            let mut state = self.state.lock();
            let i = self.leaf.index();
            state.in_flight[i] = state.in_flight[i].saturating_sub(1);
        }
    }
}

/// What finishing a build found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Built {
    /// Leaves written during the build (their maintained hash was kept).
    pub touched: usize,
    /// Whether this was the partition's first build (touched leaves are then not exact).
    pub first: bool,
}

impl Trees {
    /// No partition tracked.
    pub fn new() -> Arc<Trees> {
        Arc::new(Trees::default())
    }

    /// Tracks exactly `wanted`: drops the trees of other partitions and adds (unbuilt) trees for
    /// new ones. Returns the partitions added.
    pub fn track(&self, wanted: &BTreeSet<PartitionId>) -> Vec<PartitionId> {
        let mut partitions = self.partitions.write();
        partitions.retain(|p, _| wanted.contains(p));
        let mut added = Vec::new();
        for p in wanted {
            if !partitions.contains_key(p) {
                partitions.insert(*p, Arc::new(Mutex::new(PartitionState::new())));
                added.push(*p);
            }
        }
        added
    }

    /// The tracked partitions, in order.
    pub fn tracked(&self) -> Vec<PartitionId> {
        self.partitions.read().keys().copied().collect()
    }

    /// Whether `p` is tracked.
    pub fn is_tracked(&self, p: PartitionId) -> bool {
        self.partitions.read().contains_key(&p)
    }

    /// Whether `p` is tracked and its tree has been built.
    pub fn is_ready(&self, p: PartitionId) -> bool {
        self.state(p).is_ok_and(|s| s.lock().ready)
    }

    pub(crate) fn state(&self, p: PartitionId) -> Result<Arc<Mutex<PartitionState>>> {
        self.partitions
            .read()
            .get(&p)
            .cloned()
            .ok_or(Error::NotTracked(p.0))
    }

    /// Registers a write of a key in leaf `leaf` of `p`; `None` when `p` is not tracked (a
    /// fallback's copy of another partition: no tree to keep).
    pub fn begin_write(&self, p: PartitionId, leaf: Leaf) -> Option<WriteGuard> {
        let state = self.partitions.read().get(&p).cloned()?;
        {
            let mut s = state.lock();
            let i = leaf.index();
            s.in_flight[i] = s.in_flight[i].saturating_add(1);
            if let Some(touched) = s.touched.as_mut() {
                touched[i] = true;
            }
        }
        Some(WriteGuard {
            state,
            leaf,
            done: false,
        })
    }

    /// A copy of `p`'s tree, if it is ready to be exchanged.
    pub fn snapshot(&self, p: PartitionId) -> Result<HashTree> {
        let state = self.state(p)?;
        let s = state.lock();
        if !s.ready {
            return Err(Error::NotReady(p.0));
        }
        Ok(s.tree.clone())
    }

    /// Starts a build of `p`: from now on, leaves written are marked touched.
    pub fn begin_build(&self, p: PartitionId) -> Result<()> {
        let state = self.state(p)?;
        let mut s = state.lock();
        let touched: Box<[bool]> = s.in_flight.iter().map(|&n| n > 0).collect();
        s.touched = Some(touched);
        Ok(())
    }

    /// Ends a build of `p` with the tree its scan produced (at `now_ms`).
    pub fn finish_build(&self, p: PartitionId, scanned: &HashTree, now_ms: u64) -> Result<Built> {
        let state = self.state(p)?;
        let mut s = state.lock();
        let touched = s
            .touched
            .take()
            .unwrap_or_else(|| vec![true; LEAVES].into());
        let first = !s.ready;
        let mut count = 0;
        for (i, &t) in touched.iter().enumerate() {
            if t {
                count += 1;
            } else {
                s.tree.set_leaf(Leaf(i as u16), scanned.leaves()[i]);
            }
        }
        if count == 0 || first {
            s.tree.set_keys(scanned.keys());
        }
        s.ready = true;
        s.built_at_ms = Some(now_ms);
        s.builds += 1;
        Ok(Built {
            touched: count,
            first,
        })
    }

    /// Abandons a build of `p` (its scan failed).
    pub fn abort_build(&self, p: PartitionId) {
        if let Ok(state) = self.state(p) {
            state.lock().touched = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::KeyHash;

    #[test]
    fn a_rebuild_keeps_the_maintained_hash_of_leaves_written_meanwhile() {
        let trees = Trees::new();
        let p = PartitionId(1);
        trees.track(&[p].into_iter().collect());
        assert!(matches!(trees.snapshot(p), Err(Error::NotReady(1))));
        trees.begin_build(p).unwrap();
        trees.finish_build(p, &HashTree::new(), 5).unwrap();
        assert_eq!(trees.snapshot(p).unwrap(), HashTree::new());

        // A rebuild runs while a write of leaf 7 lands: the scan may or may not have seen it.
        trees.begin_build(p).unwrap();
        let guard = trees.begin_write(p, Leaf(7)).unwrap();
        guard.finish(None, Some(42));
        let stale_scan = HashTree::from_hashes([KeyHash {
            leaf: Leaf(9),
            value: 3,
        }]);
        let built = trees.finish_build(p, &stale_scan, 6).unwrap();
        assert_eq!(built.touched, 1);
        let tree = trees.snapshot(p).unwrap();
        assert_eq!(tree.leaf(Leaf(7)), 42, "the maintained hash was kept");
        assert_eq!(tree.leaf(Leaf(9)), 3, "an untouched leaf follows the scan");

        // An untracked partition has no tree to update.
        assert!(trees.begin_write(PartitionId(2), Leaf(0)).is_none());
        trees.track(&BTreeSet::new());
        assert!(!trees.is_tracked(p));
    }
}
