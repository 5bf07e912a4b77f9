//! One partition's hash tree (Tictac shape): [`LEAVES`] leaves, each the XOR of the hashes of the
//! keys that land in it, grouped in [`BRANCHES`] branches (XOR of their leaves), under one root
//! (XOR of the branches).
//!
//! XOR makes the tree a function of the *set* of (key, version) hashes: insertion order does not
//! matter, removing is inserting again, and a write is applied as `old XOR new` without reading
//! anything else. Two levels suffice: an exchange of replicas that agree costs one root (8
//! bytes); one that differs by a few keys costs the 32 branches (256 bytes), the leaves of the
//! differing branches (256 bytes each), then the key clocks of the differing leaves.

use serde::{Deserialize, Serialize};

use crate::hash::KeyHash;

/// Leaves (segments) per partition tree. 1,024 leaves keep a leaf to a few keys for partitions
/// of up to ~10^4 keys, so a difference narrows to a few key clocks; more would make the tree
/// bigger than the exchanges it saves.
pub const LEAVES: usize = 1024;

/// Branches per tree: the middle level. 32 branches of 32 leaves balance the two fetches of an
/// exchange (each at most 256 bytes per branch).
pub const BRANCHES: usize = 32;

/// Leaves under one branch.
pub const LEAVES_PER_BRANCH: usize = LEAVES / BRANCHES;

/// Bytes of memory one tree holds: the leaves and branches (plus a small header).
pub const TREE_BYTES: usize = (LEAVES + BRANCHES) * std::mem::size_of::<u64>();

/// A leaf index, below [`LEAVES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Leaf(pub u16);

impl Leaf {
    /// The branch this leaf belongs to.
    pub fn branch(self) -> usize {
        usize::from(self.0) / LEAVES_PER_BRANCH
    }

    /// The leaf as an index into [`HashTree::leaves`].
    pub fn index(self) -> usize {
        usize::from(self.0) % LEAVES
    }
}

/// A partition's hash tree. Cheap to clone (about [`TREE_BYTES`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashTree {
    leaves: Box<[u64]>,
    branches: [u64; BRANCHES],
    keys: u64,
}

impl Default for HashTree {
    fn default() -> Self {
        HashTree::new()
    }
}

impl HashTree {
    /// The empty tree (every hash 0): the tree of a partition with no keys.
    pub fn new() -> HashTree {
        HashTree {
            leaves: vec![0; LEAVES].into_boxed_slice(),
            branches: [0; BRANCHES],
            keys: 0,
        }
    }

    /// A tree holding exactly `hashes`.
    pub fn from_hashes(hashes: impl IntoIterator<Item = KeyHash>) -> HashTree {
        let mut tree = HashTree::new();
        for h in hashes {
            tree.insert(h);
        }
        tree
    }

    /// The root: XOR of every key hash in the tree.
    pub fn root(&self) -> u64 {
        self.branches.iter().fold(0, |acc, b| acc ^ b)
    }

    /// The branch hashes.
    pub fn branches(&self) -> &[u64; BRANCHES] {
        &self.branches
    }

    /// Every leaf hash, in leaf order.
    pub fn leaves(&self) -> &[u64] {
        &self.leaves
    }

    /// The leaves under `branch` (empty if `branch` is out of range).
    pub fn branch_leaves(&self, branch: usize) -> &[u64] {
        let start = branch.saturating_mul(LEAVES_PER_BRANCH).min(LEAVES);
        let end = (start + LEAVES_PER_BRANCH).min(LEAVES);
        &self.leaves[start..end]
    }

    /// One leaf's hash.
    pub fn leaf(&self, leaf: Leaf) -> u64 {
        self.leaves[leaf.index()]
    }

    /// Keys counted in the tree (inserts minus removes).
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// Applies a key's change from `old` to `new` (either `None` for absent) in its leaf,
    /// without reading anything else: the incremental update of every local write.
    pub fn update(&mut self, leaf: Leaf, old: Option<u64>, new: Option<u64>) {
        let delta = old.unwrap_or(0) ^ new.unwrap_or(0);
        let i = leaf.index();
        self.leaves[i] ^= delta;
        self.branches[i / LEAVES_PER_BRANCH] ^= delta;
        match (old, new) {
            (None, Some(_)) => self.keys += 1,
            (Some(_), None) => self.keys = self.keys.saturating_sub(1),
            _ => {}
        }
    }

    /// Adds a key's hash.
    pub fn insert(&mut self, h: KeyHash) {
        self.update(h.leaf, None, Some(h.value));
    }

    /// Removes a key's hash (the hash it was inserted with).
    pub fn remove(&mut self, h: KeyHash) {
        self.update(h.leaf, Some(h.value), None);
    }

    /// Replaces one leaf's hash (a rebuild adopting a freshly scanned leaf), keeping its branch
    /// consistent. The key count is the caller's to set with [`HashTree::set_keys`].
    pub fn set_leaf(&mut self, leaf: Leaf, value: u64) {
        let i = leaf.index();
        let delta = self.leaves[i] ^ value;
        self.leaves[i] = value;
        self.branches[i / LEAVES_PER_BRANCH] ^= delta;
    }

    /// Sets the key count (after a rebuild).
    pub fn set_keys(&mut self, keys: u64) {
        self.keys = keys;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branches_and_root_follow_the_leaves() {
        let mut tree = HashTree::new();
        tree.insert(KeyHash {
            leaf: Leaf(33),
            value: 0xff,
        });
        assert_eq!(tree.leaf(Leaf(33)), 0xff);
        assert_eq!(tree.branches()[1], 0xff);
        assert_eq!(tree.root(), 0xff);
        tree.set_leaf(Leaf(33), 0x0f);
        assert_eq!(tree.branches()[1], 0x0f);
        assert_eq!(tree.branch_leaves(1)[1], 0x0f);
        assert!(tree.branch_leaves(BRANCHES).is_empty());
    }
}
