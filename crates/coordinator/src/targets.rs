//! Which replicas a request goes to: the sloppy quorum of paper 4.6. A request uses the first N
//! *healthy* nodes of the preference list rather than strictly the top N. A fallback that stands
//! in for a primary is told which primary it replaces (the hint), keeps the write, and hands it
//! back when that primary is reachable again. Pure: health is passed in.
//!
//! During an ownership change (paper 4.9: a node joining or leaving moves partitions) a write
//! also goes to the key's owners in the *next* ring that are not already targets
//! ([`transition_targets`]), so nothing written while a partition is copied is missing at its
//! new owners. Those extra writes never count towards W, DW or PW: the quorum stays on the
//! current ring's targets until the ring switches.

use dynamo_ring::{NodeId, PreferenceList};

/// A replica in a request's fan-out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Where the request goes.
    pub node: NodeId,
    /// Whether `node` is one of the key's top N (counts towards PR and PW).
    pub primary: bool,
    /// For a fallback: the primary it stands in for.
    pub hint: Option<NodeId>,
}

/// The first N healthy nodes of `pl` (N = the number of primaries), fallbacks carrying the primary
/// they replace. `me` is always considered healthy. When too few nodes are healthy, the
/// unhealthy primaries are tried anyway: this node's view may be stale, and a request that tries
/// costs a timeout while one that does not try is certain to fail.
pub fn sloppy_targets(
    pl: &PreferenceList,
    me: &NodeId,
    is_up: impl Fn(&NodeId) -> bool,
) -> Vec<Target> {
    let healthy = |n: &NodeId| n == me || is_up(n);
    let mut targets = Vec::with_capacity(pl.primaries().len());
    let mut missing: Vec<NodeId> = Vec::new();
    for p in pl.primaries() {
        if healthy(p) {
            targets.push(Target {
                node: p.clone(),
                primary: true,
                hint: None,
            });
        } else {
            missing.push(p.clone());
        }
    }
    let mut missing = missing.into_iter();
    let mut unfilled = Vec::new();
    let mut fallbacks = pl.fallbacks().iter().filter(|f| healthy(f));
    for owner in missing.by_ref() {
        match fallbacks.next() {
            Some(f) => targets.push(Target {
                node: f.clone(),
                primary: false,
                hint: Some(owner),
            }),
            None => unfilled.push(owner),
        }
    }
    for owner in unfilled {
        targets.push(Target {
            node: owner,
            primary: true,
            hint: None,
        });
    }
    targets
}

/// Where a write goes while a next ring is known: the quorum targets of the current ring, and the
/// next ring's primaries that are not already among them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteTargets {
    /// The current ring's sloppy-quorum targets ([`sloppy_targets`]); only their replies count
    /// towards W, DW and PW.
    pub quorum: Vec<Target>,
    /// Next-ring primaries that get the write too, without counting towards any quorum. Never
    /// the coordinator itself (it stores the write anyway) nor a node already in `quorum`.
    pub extra: Vec<NodeId>,
}

/// Adds to `quorum` (a request's current targets) the primaries of `next` (the key's preference
/// list in the next ring, if one is known) that are neither in `quorum` nor `me`, in `next`'s
/// order. The next owners are written whether or not this node believes them healthy: a write
/// they miss would be missing after the switch, so a failed extra write is kept as a hint.
pub fn transition_targets(
    quorum: Vec<Target>,
    next: Option<&PreferenceList>,
    me: &NodeId,
) -> WriteTargets {
    let extra = match next {
        Some(next) => next
            .primaries()
            .iter()
            .filter(|n| *n != me && !quorum.iter().any(|t| &t.node == *n))
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    WriteTargets { quorum, extra }
}

#[cfg(test)]
mod tests {
    use dynamo_ring::{Member, Ring};
    use proptest::prelude::*;

    use super::*;

    fn ring(size: usize) -> Ring {
        let members = (1..=size)
            .map(|i| Member::new(NodeId::new(format!("n{i}")).unwrap()))
            .collect();
        Ring::new(64, members, 3).unwrap()
    }

    #[test]
    fn all_healthy_means_the_top_n() {
        let r = ring(5);
        let pl = r.preference_list(b"b", b"k", 3);
        let t = sloppy_targets(&pl, &pl.primaries()[0], |_| true);
        assert_eq!(
            t.iter().map(|t| t.node.clone()).collect::<Vec<_>>(),
            pl.primaries()
        );
        assert!(t.iter().all(|t| t.primary && t.hint.is_none()));
    }

    #[test]
    fn a_down_primary_is_replaced_by_the_first_healthy_fallback_with_a_hint() {
        let r = ring(5);
        let pl = r.preference_list(b"b", b"k", 3);
        let down = pl.primaries()[1].clone();
        let t = sloppy_targets(&pl, &pl.primaries()[0], |n| n != &down);
        assert_eq!(t.len(), 3);
        let fallback = t.iter().find(|t| !t.primary).unwrap();
        assert_eq!(fallback.node, pl.fallbacks()[0]);
        assert_eq!(fallback.hint.as_ref(), Some(&down));
        assert!(!t.iter().any(|t| t.node == down));
    }

    #[test]
    fn with_too_few_healthy_nodes_down_primaries_are_still_tried() {
        let r = ring(3);
        let pl = r.preference_list(b"b", b"k", 3);
        let me = pl.primaries()[0].clone();
        let t = sloppy_targets(&pl, &me, |n| n == &me);
        assert_eq!(t.len(), 3);
        assert!(t.iter().all(|t| t.primary && t.hint.is_none()));
    }

    #[test]
    fn targets_are_distinct_whatever_is_down() {
        let r = ring(6);
        for mask in 0u32..64 {
            let pl = r.preference_list(b"b", b"x", 3);
            let me = pl.primaries()[0].clone();
            let up = |n: &NodeId| {
                let i: u32 = n.as_str()[1..].parse().unwrap();
                mask & (1 << (i - 1)) == 0
            };
            let t = sloppy_targets(&pl, &me, up);
            let mut nodes: Vec<_> = t.iter().map(|t| t.node.clone()).collect();
            nodes.sort();
            nodes.dedup();
            assert_eq!(nodes.len(), t.len(), "mask {mask:b}");
            assert_eq!(t.len(), 3);
        }
    }

    #[test]
    fn without_a_next_ring_there_are_no_extra_targets() {
        let r = ring(5);
        let pl = r.preference_list(b"b", b"k", 3);
        let me = pl.primaries()[0].clone();
        let quorum = sloppy_targets(&pl, &me, |_| true);
        let t = transition_targets(quorum.clone(), None, &me);
        assert_eq!(t.quorum, quorum);
        assert!(t.extra.is_empty());
    }

    #[test]
    fn a_joining_node_that_becomes_a_primary_is_an_extra_target() {
        let current = ring(4);
        let joiner = NodeId::new("n5").unwrap();
        let next = current
            .with_member_joined(Member::new(joiner.clone()), 3)
            .unwrap();
        let p = next.partitions_replicated_by(&joiner, 3)[0];
        let pl = current.preference_list_for_partition(p, 3);
        let me = pl.primaries()[0].clone();
        let quorum = sloppy_targets(&pl, &me, |_| true);
        let t = transition_targets(
            quorum.clone(),
            Some(&next.preference_list_for_partition(p, 3)),
            &me,
        );
        assert_eq!(t.quorum, quorum);
        assert_eq!(t.extra, vec![joiner]);
    }

    fn members(size: usize) -> Vec<Member> {
        (1..=size)
            .map(|i| Member::new(NodeId::new(format!("n{i}")).unwrap()))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the rings, the coordinator and the health view: the quorum targets are exactly
        /// the current ring's sloppy targets, no node is written twice, the coordinator is never an
        /// extra target, and every next primary is written (by the quorum, an extra or locally).
        #[test]
        fn transition_targets_add_next_owners_without_touching_the_quorum(
            size in 1usize..8,
            change in 0u8..3,
            n in 1usize..5,
            partition in 0u32..64,
            me_index in 0usize..9,
            down_mask in any::<u16>(),
        ) {
            let current = Ring::new(64, members(size), 3).unwrap();
            let next = match change {
                0 => current
                    .with_member_joined(Member::new(NodeId::new("n9").unwrap()), 3)
                    .unwrap(),
                1 if size > 1 => current
                    .with_member_left(&NodeId::new("n1").unwrap(), 3)
                    .unwrap(),
                _ => current
                    .with_member_joined(Member::new(NodeId::new("n0").unwrap()), 3)
                    .unwrap(),
            };
            let p = dynamo_ring::PartitionId(partition);
            let pl = current.preference_list_for_partition(p, n);
            let next_pl = next.preference_list_for_partition(p, n);
            let me = NodeId::new(format!("n{}", me_index % 10)).unwrap();
            let up = |node: &NodeId| {
                let i: u32 = node.as_str()[1..].parse().unwrap();
                down_mask & (1 << i) == 0
            };
            let quorum = sloppy_targets(&pl, &me, up);
            let t = transition_targets(quorum.clone(), Some(&next_pl), &me);
            prop_assert_eq!(&t.quorum, &quorum);
            let mut all: Vec<&NodeId> = t
                .quorum
                .iter()
                .map(|t| &t.node)
                .chain(t.extra.iter())
                .collect();
            let len = all.len();
            all.sort();
            all.dedup();
            prop_assert_eq!(all.len(), len, "a node is written twice");
            prop_assert!(!t.extra.contains(&me));
            for owner in next_pl.primaries() {
                prop_assert!(
                    owner == &me || all.contains(&owner),
                    "next owner {} is not written",
                    owner
                );
            }
            prop_assert!(t.extra.iter().all(|x| next_pl.is_primary(x)));
        }
    }
}
