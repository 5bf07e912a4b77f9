//! The exchange between two replicas of a partition, as a pure state machine (paper 4.7).
//!
//! The initiator holds both sides' answers and calls one method per round:
//! [`Exchange::roots`] (equal roots end the exchange), [`Exchange::branches`] (which branches
//! differ), [`Exchange::leaves`] (which leaves of those differ, at most
//! [`Caps::max_leaves`]), then [`Exchange::key_clocks`] with both sides' key clocks of those
//! leaves, which yields the differing keys. A difference is not repaired at once: writes in
//! flight look like differences, so [`Confirmations`] keeps the keys one exchange found and
//! repairs only those the next exchange of the same pair finds again. The [`RepairPlan`] says
//! which keys to pull (the peer has a version) and which to push (this replica has one); repair
//! itself always merges, so it is idempotent and never loses a sibling.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hash::key_hash;
use crate::tree::{BRANCHES, LEAVES, LEAVES_PER_BRANCH, Leaf};
use dynamo_storage::VersionedObject;

/// Leaves whose key clocks one exchange asks for, at most. A quarter of the tree: a heavily
/// diverged partition (a wiped replica) is repaired a quarter at a time, so a round's key
/// listing stays bounded.
pub const MAX_LEAVES: usize = 256;

/// Key clocks one answer carries, at most (whole leaves are kept together; at least one leaf is
/// always sent). About 60 KiB of key clocks for short keys.
pub const MAX_KEYS: usize = 2048;

/// Limits of one exchange round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caps {
    /// Differing leaves whose key clocks are fetched per exchange.
    pub max_leaves: usize,
    /// Key clocks one side returns per exchange.
    pub max_keys: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            max_leaves: MAX_LEAVES,
            max_keys: MAX_KEYS,
        }
    }
}

/// One key's hash on one replica, as the key-clock listing returns it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KeyClock {
    /// The leaf the key lands in.
    pub leaf: Leaf,
    /// Bucket name.
    pub bucket: Vec<u8>,
    /// Key within the bucket.
    pub key: Vec<u8>,
    /// The key's hash (its causal metadata digest, see [`crate::key_hash`]).
    pub hash: u64,
}

/// The key clocks of some leaves of one replica's partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyClocks {
    /// Leaves listed completely (every key of these leaves is in `clocks`).
    pub complete: Vec<Leaf>,
    /// The keys of those leaves, sorted by (leaf, bucket, key).
    pub clocks: Vec<KeyClock>,
}

/// Lists the key clocks of `leaves` among `entries` (a scan of one partition), keeping whole
/// leaves in leaf order while the total stays within `max_keys` (the first leaf always).
pub fn key_clocks<'a>(
    entries: impl IntoIterator<Item = (&'a [u8], &'a [u8], &'a VersionedObject)>,
    leaves: &[Leaf],
    max_keys: usize,
) -> KeyClocks {
    let mut collector = KeyClockCollector::new(leaves);
    for (bucket, key, object) in entries {
        collector.add(bucket, key, object);
    }
    collector.finish(max_keys)
}

/// [`key_clocks`] one scanned entry at a time, so a partition is listed page by page.
#[derive(Clone, Debug)]
pub struct KeyClockCollector {
    by_leaf: BTreeMap<Leaf, Vec<KeyClock>>,
}

impl KeyClockCollector {
    /// Collects the keys of `leaves`.
    pub fn new(leaves: &[Leaf]) -> KeyClockCollector {
        KeyClockCollector {
            by_leaf: leaves.iter().map(|l| (*l, Vec::new())).collect(),
        }
    }

    /// Looks at one stored key: kept if it lands in a wanted leaf.
    pub fn add(&mut self, bucket: &[u8], key: &[u8], object: &VersionedObject) {
        let Some(h) = key_hash(bucket, key, object) else {
            return;
        };
        if let Some(list) = self.by_leaf.get_mut(&h.leaf) {
            list.push(KeyClock {
                leaf: h.leaf,
                bucket: bucket.to_vec(),
                key: key.to_vec(),
                hash: h.value,
            });
        }
    }

    /// The listing: whole leaves in order while within `max_keys` (the first leaf always).
    pub fn finish(self, max_keys: usize) -> KeyClocks {
        let mut out = KeyClocks::default();
        for (leaf, mut list) in self.by_leaf {
            if !out.complete.is_empty() && out.clocks.len() + list.len() > max_keys {
                break;
            }
            list.sort();
            out.complete.push(leaf);
            out.clocks.extend(list);
        }
        out
    }
}

/// A key whose versions differ between the two replicas.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Difference {
    /// Bucket name.
    pub bucket: Vec<u8>,
    /// Key within the bucket.
    pub key: Vec<u8>,
    /// This replica's hash of the key (`None`: absent here).
    pub local: Option<u64>,
    /// The peer's hash (`None`: absent there).
    pub remote: Option<u64>,
}

/// What one exchange found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// Keys that differ, in (bucket, key) order.
    pub differences: Vec<Difference>,
    /// Whether the caps left differing leaves unlisted (another exchange will reach them).
    pub truncated: bool,
}

/// What the initiator must fetch from both replicas next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Both sides' [`BRANCHES`] branch hashes.
    Branches,
    /// Both sides' leaf hashes of these branches.
    Leaves(Vec<usize>),
    /// Both sides' key clocks of these leaves.
    KeyClocks(Vec<Leaf>),
}

/// The outcome of one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Fetch this from both replicas and call the matching method.
    Ask(Ask),
    /// The exchange is over.
    Done(Found),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Roots,
    Branches,
    Leaves(Vec<usize>),
    KeyClocks { leaves: Vec<Leaf>, truncated: bool },
    Done,
}

/// One exchange between this replica and a peer for one partition.
#[derive(Clone, Debug)]
pub struct Exchange {
    caps: Caps,
    phase: Phase,
}

impl Exchange {
    /// A new exchange; the first round compares the roots.
    pub fn new(caps: Caps) -> Exchange {
        Exchange {
            caps: Caps {
                max_leaves: caps.max_leaves.max(1),
                max_keys: caps.max_keys.max(1),
            },
            phase: Phase::Roots,
        }
    }

    fn expect(&self, phase: &str, ok: bool) -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(Error::Protocol(format!(
                "exchange got {phase} while in phase {:?}",
                self.phase
            )))
        }
    }

    /// Round 1: the roots. Equal roots: nothing differs.
    pub fn roots(&mut self, local: u64, remote: u64) -> Result<Step> {
        self.expect("roots", self.phase == Phase::Roots)?;
        if local == remote {
            self.phase = Phase::Done;
            return Ok(Step::Done(Found::default()));
        }
        self.phase = Phase::Branches;
        Ok(Step::Ask(Ask::Branches))
    }

    /// Round 2: the branch hashes of both sides.
    pub fn branches(&mut self, local: &[u64], remote: &[u64]) -> Result<Step> {
        self.expect("branches", self.phase == Phase::Branches)?;
        if local.len() != BRANCHES || remote.len() != BRANCHES {
            return Err(Error::Protocol(format!(
                "expected {BRANCHES} branches, got {} and {}",
                local.len(),
                remote.len()
            )));
        }
        let differing: Vec<usize> = (0..BRANCHES).filter(|&b| local[b] != remote[b]).collect();
        if differing.is_empty() {
            // The roots differed but no branch does: a tree changed between the two rounds.
            self.phase = Phase::Done;
            return Ok(Step::Done(Found::default()));
        }
        self.phase = Phase::Leaves(differing.clone());
        Ok(Step::Ask(Ask::Leaves(differing)))
    }

    /// Round 3: the leaf hashes of the differing branches, one slice of
    /// [`LEAVES_PER_BRANCH`] per branch asked, in the order asked.
    pub fn leaves(&mut self, local: &[Vec<u64>], remote: &[Vec<u64>]) -> Result<Step> {
        let Phase::Leaves(branches) = &self.phase else {
            return self
                .expect("leaves", false)
                .map(|_| Step::Ask(Ask::Branches));
        };
        let ok = |side: &[Vec<u64>]| {
            side.len() == branches.len() && side.iter().all(|l| l.len() == LEAVES_PER_BRANCH)
        };
        if !ok(local) || !ok(remote) {
            return Err(Error::Protocol("leaf hashes of the wrong shape".into()));
        }
        let mut differing = Vec::new();
        for (i, &branch) in branches.iter().enumerate() {
            for j in 0..LEAVES_PER_BRANCH {
                if local[i][j] != remote[i][j] {
                    differing.push(Leaf((branch * LEAVES_PER_BRANCH + j) as u16));
                }
            }
        }
        let truncated = differing.len() > self.caps.max_leaves;
        differing.truncate(self.caps.max_leaves);
        if differing.is_empty() {
            self.phase = Phase::Done;
            return Ok(Step::Done(Found::default()));
        }
        self.phase = Phase::KeyClocks {
            leaves: differing.clone(),
            truncated,
        };
        Ok(Step::Ask(Ask::KeyClocks(differing)))
    }

    /// Round 4: both sides' key clocks of the differing leaves. Only leaves both sides listed
    /// completely are compared.
    pub fn key_clocks(&mut self, local: &KeyClocks, remote: &KeyClocks) -> Result<Step> {
        let Phase::KeyClocks { leaves, truncated } = &self.phase else {
            return self
                .expect("key clocks", false)
                .map(|_| Step::Ask(Ask::Branches));
        };
        let asked: BTreeSet<Leaf> = leaves.iter().copied().collect();
        let complete = |k: &KeyClocks| -> BTreeSet<Leaf> {
            k.complete
                .iter()
                .copied()
                .filter(|l| asked.contains(l))
                .collect()
        };
        let both: BTreeSet<Leaf> = complete(local)
            .intersection(&complete(remote))
            .copied()
            .collect();
        let truncated = *truncated || both.len() < asked.len();
        let map = |k: &KeyClocks| -> BTreeMap<(Vec<u8>, Vec<u8>), u64> {
            k.clocks
                .iter()
                .filter(|c| both.contains(&c.leaf) && usize::from(c.leaf.0) < LEAVES)
                .map(|c| ((c.bucket.clone(), c.key.clone()), c.hash))
                .collect()
        };
        let (mine, theirs) = (map(local), map(remote));
        let keys: BTreeSet<&(Vec<u8>, Vec<u8>)> = mine.keys().chain(theirs.keys()).collect();
        let differences = keys
            .into_iter()
            .filter_map(|k| {
                let (l, r) = (mine.get(k).copied(), theirs.get(k).copied());
                (l != r).then(|| Difference {
                    bucket: k.0.clone(),
                    key: k.1.clone(),
                    local: l,
                    remote: r,
                })
            })
            .collect();
        self.phase = Phase::Done;
        Ok(Step::Done(Found {
            differences,
            truncated,
        }))
    }
}

/// Which keys to repair, and how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairPlan {
    /// Keys whose peer version is merged into this replica.
    pub pull: Vec<(Vec<u8>, Vec<u8>)>,
    /// Keys whose version here (after the pulls) is merged into the peer.
    pub push: Vec<(Vec<u8>, Vec<u8>)>,
}

impl RepairPlan {
    /// Whether nothing is to be repaired.
    pub fn is_empty(&self) -> bool {
        self.pull.is_empty() && self.push.is_empty()
    }

    /// Distinct keys the plan touches.
    pub fn keys(&self) -> usize {
        let all: BTreeSet<&(Vec<u8>, Vec<u8>)> = self.pull.iter().chain(&self.push).collect();
        all.len()
    }
}

/// The differences one pair's previous exchange found and left unconfirmed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Confirmations {
    pending: BTreeSet<(Vec<u8>, Vec<u8>)>,
}

impl Confirmations {
    /// Takes one exchange's findings: keys found again (they differed in the previous exchange
    /// of this pair too) go into the plan; the others wait for the next exchange.
    pub fn confirm(&mut self, found: &Found) -> RepairPlan {
        let mut plan = RepairPlan::default();
        let mut unconfirmed = BTreeSet::new();
        for d in &found.differences {
            let id = (d.bucket.clone(), d.key.clone());
            if !self.pending.contains(&id) {
                unconfirmed.insert(id);
                continue;
            }
            if d.remote.is_some() {
                plan.pull.push(id.clone());
            }
            if d.local.is_some() {
                plan.push.push(id);
            }
        }
        self.pending = unconfirmed;
        plan
    }

    /// Keys waiting for confirmation.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_out_of_order_are_refused() {
        let mut exchange = Exchange::new(Caps::default());
        assert!(exchange.branches(&[0; BRANCHES], &[0; BRANCHES]).is_err());
        assert_eq!(
            exchange.roots(1, 2).unwrap(),
            Step::Ask(Ask::Branches),
            "different roots go on to the branches"
        );
        assert!(exchange.branches(&[0; 3], &[0; BRANCHES]).is_err());
    }

    #[test]
    fn a_difference_is_repaired_only_when_seen_twice() {
        let found = Found {
            differences: vec![Difference {
                bucket: b"b".to_vec(),
                key: b"k".to_vec(),
                local: Some(1),
                remote: None,
            }],
            truncated: false,
        };
        let mut confirmations = Confirmations::default();
        assert!(confirmations.confirm(&found).is_empty());
        assert_eq!(confirmations.pending(), 1);
        let plan = confirmations.confirm(&found);
        assert_eq!(plan.push, vec![(b"b".to_vec(), b"k".to_vec())]);
        assert!(plan.pull.is_empty());
        assert_eq!(confirmations.pending(), 0);
        assert!(confirmations.confirm(&Found::default()).is_empty());
    }
}
