//! Ring diffs: which data has to move when the ring changes.

use serde::{Deserialize, Serialize};

use crate::hash::partition_start;
use crate::{NodeId, PartitionId, Ring};

/// One partition's worth of data that must be copied from one node to another after a ring change.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Transfer {
    /// The partition, numbered as in the newer ring.
    pub partition: PartitionId,
    /// A node holding the data under the older ring.
    pub from: NodeId,
    /// The node that must hold it under the newer ring.
    pub to: NodeId,
}

impl Ring {
    /// Ownership changes between this ring and `newer`: one transfer per partition whose owner changed.
    ///
    /// If the two rings have different Q (a different cluster layout, not produced by joins and leaves), each
    /// partition of `newer` is compared with every partition of `self` covering part of its hash range.
    pub fn diff(&self, newer: &Ring) -> Vec<Transfer> {
        let mut transfers = Vec::new();
        for p in newer.partitions() {
            let to = newer.owner(p);
            for old in self.covering(p, newer.q()) {
                let from = self.owner(old);
                if from != to {
                    transfers.push(Transfer {
                        partition: p,
                        from: from.clone(),
                        to: to.clone(),
                    });
                }
            }
        }
        transfers.sort();
        transfers.dedup();
        transfers
    }

    /// Replica-set changes between this ring and `newer` for replication factor `n`: for every partition, one
    /// transfer per node that is a primary under `newer` but was not under `self`.
    ///
    /// `from` is a node that stops being a primary for that partition (paired in preference order), or, when
    /// more nodes gain the partition than lose it, the first old primary. A node that appears as `from` and is
    /// not a primary under `newer` may drop the partition once its transfers are done.
    pub fn replica_transfers(&self, newer: &Ring, n: usize) -> Vec<Transfer> {
        let mut transfers = Vec::new();
        for p in newer.partitions() {
            let new_set = newer.primary_indices(p.0 as usize, n);
            let mut old_set: Vec<&NodeId> = Vec::new();
            for old in self.covering(p, newer.q()) {
                for i in self.primary_indices(old.0 as usize, n) {
                    let id = &self.members()[i].id;
                    if !old_set.contains(&id) {
                        old_set.push(id);
                    }
                }
            }
            let new_ids: Vec<&NodeId> = new_set.iter().map(|&i| &newer.members()[i].id).collect();
            let mut leaving = old_set.iter().filter(|id| !new_ids.contains(id));
            for to in new_ids.iter().filter(|id| !old_set.contains(id)) {
                let Some(from) = leaving.next().or(old_set.first()) else {
                    continue;
                };
                transfers.push(Transfer {
                    partition: p,
                    from: (*from).clone(),
                    to: (*to).clone(),
                });
            }
        }
        transfers
    }

    /// Partitions of `self` whose hash range overlaps partition `p` of a ring with `q` partitions. With equal Q
    /// that is just `p`; both Qs are powers of two, so the ranges nest.
    fn covering(&self, p: PartitionId, q: u32) -> impl Iterator<Item = PartitionId> {
        let first = self.partition_for_hash(partition_start(p.0, q));
        let count = (self.q() / q.max(1)).max(1);
        (first.0..first.0 + count).map(PartitionId)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Member, NodeId, PartitionId, Ring};

    fn ring(q: u32, s: usize) -> Ring {
        Ring::new(
            q,
            (1..=s)
                .map(|i| Member::new(NodeId::new(format!("n{i}")).unwrap()))
                .collect(),
            3,
        )
        .unwrap()
    }

    #[test]
    fn diff_lists_exactly_the_partitions_that_changed_owner() {
        let old = ring(64, 4);
        let new = old
            .with_member_joined(Member::new(NodeId::new("n5").unwrap()), 3)
            .unwrap();
        let transfers = old.diff(&new);
        let changed = old
            .partitions()
            .filter(|&p| old.owner(p) != new.owner(p))
            .count();
        assert_eq!(transfers.len(), changed);
        for t in &transfers {
            assert_eq!(old.owner(t.partition), &t.from);
            assert_eq!(new.owner(t.partition), &t.to);
            assert_eq!(t.to.as_str(), "n5");
        }
        assert!(old.diff(&old).is_empty());
    }

    #[test]
    fn replica_transfers_bring_every_new_primary_its_data() {
        let old = ring(64, 4);
        let n5 = NodeId::new("n5").unwrap();
        let new = old.with_member_joined(Member::new(n5.clone()), 3).unwrap();
        let transfers = old.replica_transfers(&new, 3);
        for p in new.partitions() {
            let before = old.preference_list_for_partition(p, 3);
            let after = new.preference_list_for_partition(p, 3);
            for node in after.primaries().iter().filter(|x| !before.is_primary(x)) {
                let t = transfers.iter().find(|t| t.partition == p && &t.to == node);
                assert!(t.is_some_and(|t| before.is_primary(&t.from)), "{p} {node}");
            }
        }
        // n5 must receive every partition it now replicates.
        assert_eq!(
            transfers.iter().filter(|t| t.to == n5).count(),
            new.partitions_replicated_by(&n5, 3).len()
        );
    }

    #[test]
    fn diff_across_different_q_compares_covering_ranges() {
        let small = ring(8, 3);
        let big = ring(64, 3);
        for t in small.diff(&big) {
            assert_eq!(small.owner(PartitionId(t.partition.0 / 8)), &t.from);
        }
        for t in big.diff(&small) {
            assert!(t.partition.0 < 8);
            assert_eq!(small.owner(t.partition), &t.to);
        }
    }
}
