//! Preference lists (paper 4.3): the nodes responsible for a key, in the order requests should try them.

use serde::{Deserialize, Serialize};

use crate::{NodeId, PartitionId, Ring};

/// The nodes responsible for one partition: `n` primaries followed by every other member as fallbacks.
///
/// Primaries are the first N distinct physical nodes met walking the ring clockwise from the partition (with
/// zones, one per zone first). Fallbacks are the remaining members in ring order, then members owning no
/// partition in id order: the sloppy quorum (paper 4.6) sends to them, with a hint, when a primary is down.
/// Every member appears exactly once.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PreferenceList {
    /// The partition this list is for.
    partition: PartitionId,
    /// Primaries, then fallbacks.
    nodes: Vec<NodeId>,
    /// How many of `nodes` are primaries.
    n: usize,
}

impl PreferenceList {
    /// The first N distinct nodes: the replicas that hold the key. Shorter than N only if the ring has fewer
    /// than N members.
    pub fn primaries(&self) -> &[NodeId] {
        self.nodes.get(..self.n).unwrap_or(&self.nodes)
    }

    /// Every other member, in the order a sloppy quorum should try them.
    pub fn fallbacks(&self) -> &[NodeId] {
        self.nodes.get(self.n..).unwrap_or(&[])
    }

    /// Primaries then fallbacks: every member exactly once.
    pub fn all(&self) -> &[NodeId] {
        &self.nodes
    }

    /// The partition this list is for.
    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    /// Whether `node` is one of the primaries.
    pub fn is_primary(&self, node: &NodeId) -> bool {
        self.primaries().contains(node)
    }

    /// Position of `node` in the list (0 = owner / first coordinator), if it is a member.
    pub fn position(&self, node: &NodeId) -> Option<usize> {
        self.nodes.iter().position(|x| x == node)
    }
}

impl Ring {
    /// Preference list for a key: the N distinct physical nodes responsible (distinct zones first when zones are
    /// set), followed by every other member in ring order (fallbacks for the sloppy quorum).
    pub fn preference_list(&self, bucket: &[u8], key: &[u8], n: usize) -> PreferenceList {
        self.preference_list_for_partition(self.partition_for_key(bucket, key), n)
    }

    /// Preference list for partition `p` (taken modulo Q, see [`Ring::check_partition`]) with `n` primaries.
    pub fn preference_list_for_partition(&self, p: PartitionId, n: usize) -> PreferenceList {
        let p = PartitionId(p.0 % self.q());
        let (order, primaries) = self.walk(p.0 as usize, n, false);
        let members = self.members();
        PreferenceList {
            partition: p,
            nodes: order.iter().map(|&i| members[i].id.clone()).collect(),
            n: primaries,
        }
    }

    /// Partitions for which `node` is among the first `n` of the preference list: what it must store. Empty
    /// for a node that is not a member.
    pub fn partitions_replicated_by(&self, node: &NodeId, n: usize) -> Vec<PartitionId> {
        let Some(index) = self.member_index(node) else {
            return Vec::new();
        };
        (0..self.q() as usize)
            .filter(|&p| {
                let (order, primaries) = self.walk(p, n, true);
                order[..primaries].contains(&index)
            })
            .map(|p| PartitionId(p as u32))
            .collect()
    }

    /// Primaries of partition `p` as member indices, in preference order.
    pub(crate) fn primary_indices(&self, p: usize, n: usize) -> Vec<usize> {
        let (mut order, primaries) = self.walk(p, n, true);
        order.truncate(primaries);
        order
    }

    /// Member indices in preference order for partition `p`, and how many of them are primaries.
    ///
    /// Walks the owners clockwise from `p` collecting distinct members, appends members owning nothing, then
    /// (with zones) moves one member per zone to the front until `n` primaries are chosen. With
    /// `primaries_only`, stops walking as soon as the primaries are settled; the tail is then incomplete.
    fn walk(&self, p: usize, n: usize, primaries_only: bool) -> (Vec<usize>, usize) {
        let s = self.members().len();
        let n = n.min(s);
        let owners = self.owner_indices();
        let q = owners.len();
        let mut seen = vec![false; s];
        let mut zone_seen = vec![false; s];
        let mut zones = 0;
        let mut walk = Vec::with_capacity(s);
        let mut settled = false;
        for i in 0..q {
            let m = owners[(p + i) % q];
            if seen[m] {
                continue;
            }
            seen[m] = true;
            walk.push(m);
            if !zone_seen[self.zone_class[m]] {
                zone_seen[self.zone_class[m]] = true;
                zones += 1;
            }
            settled = if self.zoned {
                zones >= n
            } else {
                walk.len() >= n
            };
            if walk.len() == s || (primaries_only && settled) {
                break;
            }
        }
        if !(primaries_only && settled) {
            walk.extend((0..s).filter(|&m| !seen[m]));
        }
        if !self.zoned {
            return (walk, n);
        }
        // Zones first: the first member of each new zone, in walk order, until n are chosen; then fill from the
        // rest in walk order. The rest keep walk order as fallbacks.
        let mut used = vec![false; s];
        let mut picked = Vec::with_capacity(walk.len());
        let mut rest = Vec::with_capacity(walk.len());
        for m in walk {
            if picked.len() < n && !used[self.zone_class[m]] {
                used[self.zone_class[m]] = true;
                picked.push(m);
            } else {
                rest.push(m);
            }
        }
        let fill = n.saturating_sub(picked.len()).min(rest.len());
        picked.extend(rest.drain(..fill));
        picked.extend(rest);
        (picked, n)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Member, NodeId, PartitionId, Ring};

    fn member(name: &str, zone: Option<&str>) -> Member {
        let m = Member::new(NodeId::new(name).unwrap());
        match zone {
            Some(z) => m.with_zone(z),
            None => m,
        }
    }

    #[test]
    fn primaries_are_the_owners_walking_clockwise() {
        let ring = Ring::new(
            64,
            (1..=5).map(|i| member(&format!("n{i}"), None)).collect(),
            3,
        )
        .unwrap();
        for p in ring.partitions() {
            let list = ring.preference_list_for_partition(p, 3);
            assert_eq!(list.partition(), p);
            assert_eq!(&list.primaries()[0], ring.owner(p));
            // The claim spaces owners, so the first three owners clockwise are already distinct.
            let next: Vec<&NodeId> = (0..3)
                .map(|d| ring.owner(PartitionId((p.0 + d) % 64)))
                .collect();
            assert_eq!(list.primaries().iter().collect::<Vec<_>>(), next);
            assert_eq!(list.fallbacks().len(), 2);
            assert_eq!(list.all().len(), 5);
            assert!(list.is_primary(ring.owner(p)));
            assert_eq!(list.position(ring.owner(p)), Some(0));
        }
    }

    #[test]
    fn n_larger_than_the_cluster_makes_everyone_primary() {
        let ring = Ring::new(8, vec![member("a", None), member("b", None)], 3).unwrap();
        let list = ring.preference_list(b"bucket", b"key", 3);
        assert_eq!(list.primaries().len(), 2);
        assert!(list.fallbacks().is_empty());
    }

    #[test]
    fn zones_come_first() {
        // Four nodes in zone a, one each in b and c: most windows of three owners repeat zone a.
        let members = vec![
            member("a1", Some("a")),
            member("a2", Some("a")),
            member("a3", Some("a")),
            member("a4", Some("a")),
            member("b1", Some("b")),
            member("c1", Some("c")),
        ];
        let ring = Ring::new(64, members, 3).unwrap();
        for p in ring.partitions() {
            let list = ring.preference_list_for_partition(p, 3);
            let mut zones: Vec<&str> = list
                .primaries()
                .iter()
                .map(|id| {
                    ring.member(id)
                        .and_then(|m| m.zone.as_deref())
                        .unwrap_or("")
                })
                .collect();
            zones.sort();
            assert_eq!(zones, vec!["a", "b", "c"], "{p}");
            assert_eq!(&list.primaries()[0], ring.owner(p));
        }
    }

    #[test]
    fn replicated_partitions_match_preference_lists() {
        let ring = Ring::new(
            64,
            (1..=4).map(|i| member(&format!("n{i}"), None)).collect(),
            3,
        )
        .unwrap();
        let n1 = NodeId::new("n1").unwrap();
        let mine = ring.partitions_replicated_by(&n1, 3);
        let expected: Vec<PartitionId> = ring
            .partitions()
            .filter(|&p| ring.preference_list_for_partition(p, 3).is_primary(&n1))
            .collect();
        assert_eq!(mine, expected);
        assert_eq!(mine.len(), 48);
        assert!(
            ring.partitions_replicated_by(&NodeId::new("stranger").unwrap(), 3)
                .is_empty()
        );
    }
}
