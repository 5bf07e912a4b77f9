//! Which replicas a request goes to: the sloppy quorum of paper 4.6. A request uses the first N
//! *healthy* nodes of the preference list rather than strictly the top N. A fallback that stands
//! in for a primary is told which primary it replaces (the hint), keeps the write, and hands it
//! back when that primary is reachable again. Pure: health is passed in.

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

#[cfg(test)]
mod tests {
    use dynamo_ring::{Member, Ring};

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
}
