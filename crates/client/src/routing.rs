//! Where a request goes: the pure part of client-driven coordination (paper 6.4), with no network
//! and no clock of its own, so that target choice and retry order can be tested directly.
//!
//! A key's request goes to one of the top N nodes of its preference list, so the node that
//! receives it coordinates it without a forwarding hop. Writes start at the first primary: one
//! coordinator per key keeps its version vector short and its siblings few. Reads rotate their
//! starting point across the top N to spread load. Nodes that recently failed to answer
//! ("suspects") move to the back: healthy primaries first, then healthy fallbacks (which still
//! coordinate a read, or forward a write in one hop), then the suspects. Retries walk this order
//! and wrap round it, backing off once per lap.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dynamo_ring::{NodeId, Ring};

/// How long a node that failed to answer stays at the back of every order. About the time a
/// restarted node needs to come back; short enough that a healthy node is not shunned for long
/// after one lost packet.
pub(crate) const SUSPECT_PERIOD: Duration = Duration::from_secs(2);

/// Pause before each further lap round a request's order, once every candidate has failed: lets
/// a briefly overloaded or restarting cluster recover instead of being hammered in a tight loop.
pub(crate) const RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// How a request picks its first node among the top N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Spread {
    /// Start at the first primary (writes).
    First,
    /// Start at primary `k % N` (reads and keyless calls), with `k` a per-client counter.
    Rotate(usize),
}

/// One try of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Attempt {
    /// The node to send it to.
    pub(crate) node: NodeId,
    /// How long to wait before sending (zero except at the start of a new lap).
    pub(crate) backoff: Duration,
}

/// Nodes that recently failed to answer, each until a deadline.
#[derive(Debug, Default)]
pub(crate) struct Suspects {
    until: HashMap<NodeId, Instant>,
}

impl Suspects {
    /// Records that `node` did not answer at `now`; it stays suspect for [`SUSPECT_PERIOD`].
    pub(crate) fn mark(&mut self, node: &NodeId, now: Instant) {
        self.until.retain(|_, until| *until > now);
        self.until.insert(node.clone(), now + SUSPECT_PERIOD);
    }

    /// Records that `node` answered: it is healthy again at once.
    pub(crate) fn clear(&mut self, node: &NodeId) {
        self.until.remove(node);
    }

    /// Whether `node` is still suspect at `now`.
    pub(crate) fn is_suspect(&self, node: &NodeId, now: Instant) -> bool {
        self.until.get(node).is_some_and(|until| *until > now)
    }
}

/// The order in which to try nodes for a key: the preference list's top `n` rotated by `spread`,
/// then its fallbacks, with suspects moved to the back (keeping relative order). Every member of
/// `ring` appears exactly once.
pub(crate) fn key_order(
    ring: &Ring,
    bucket: &[u8],
    key: &[u8],
    n: usize,
    spread: Spread,
    is_suspect: impl Fn(&NodeId) -> bool,
) -> Vec<NodeId> {
    let list = ring.preference_list(bucket, key, n.max(1));
    arrange(list.primaries(), list.fallbacks(), spread, is_suspect)
}

/// The order in which to try nodes for a call about no key in particular (listing keys, bucket
/// properties, fetching the map): every member, rotated by `spread`, suspects last.
pub(crate) fn member_order(
    ring: &Ring,
    spread: Spread,
    is_suspect: impl Fn(&NodeId) -> bool,
) -> Vec<NodeId> {
    let members: Vec<NodeId> = ring.members().iter().map(|m| m.id.clone()).collect();
    arrange(&members, &[], spread, is_suspect)
}

/// `primaries` rotated by `spread`, then `rest`, healthy before suspect.
fn arrange(
    primaries: &[NodeId],
    rest: &[NodeId],
    spread: Spread,
    is_suspect: impl Fn(&NodeId) -> bool,
) -> Vec<NodeId> {
    let start = match spread {
        Spread::First => 0,
        Spread::Rotate(k) => k.checked_rem(primaries.len()).unwrap_or(0),
    };
    let rotated = primaries
        .iter()
        .skip(start)
        .chain(primaries.iter().take(start));
    let all: Vec<&NodeId> = rotated.chain(rest.iter()).collect();
    let (healthy, suspect): (Vec<&NodeId>, Vec<&NodeId>) =
        all.into_iter().partition(|node| !is_suspect(node));
    healthy.into_iter().chain(suspect).cloned().collect()
}

/// The attempts of a request with `retries` retries over `order`: the first attempt and each
/// retry take the next node, wrapping round with a growing [`RETRY_BACKOFF`] at the start of each
/// new lap. Empty if `order` is.
pub(crate) fn plan(order: &[NodeId], retries: usize) -> Vec<Attempt> {
    if order.is_empty() {
        return Vec::new();
    }
    (0..=retries)
        .map(|i| {
            let lap = i / order.len();
            let new_lap = i % order.len() == 0;
            let backoff = if new_lap {
                RETRY_BACKOFF.saturating_mul(u32::try_from(lap).unwrap_or(u32::MAX))
            } else {
                Duration::ZERO
            };
            Attempt {
                node: order[i % order.len()].clone(),
                backoff,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashSet};

    use dynamo_ring::Member;
    use proptest::prelude::*;

    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn ring(nodes: usize) -> Ring {
        let members = (1..=nodes)
            .map(|i| Member::new(id(&format!("n{i}"))))
            .collect();
        Ring::new(64, members, 3).unwrap()
    }

    fn nodes(order: &[Attempt]) -> Vec<NodeId> {
        order.iter().map(|a| a.node.clone()).collect()
    }

    #[test]
    fn writes_go_to_the_first_primary_and_retry_down_the_preference_list() {
        let ring = ring(5);
        let list = ring.preference_list(b"users", b"alice", 3);
        let order = key_order(&ring, b"users", b"alice", 3, Spread::First, |_| false);
        assert_eq!(order, list.all());
        let attempts = plan(&order, 2);
        assert_eq!(nodes(&attempts), list.primaries());
        assert!(attempts.iter().all(|a| a.backoff.is_zero()));
    }

    #[test]
    fn reads_rotate_over_exactly_the_top_n() {
        let ring = ring(6);
        let list = ring.preference_list(b"users", b"bob", 3);
        let mut firsts: HashMap<NodeId, usize> = HashMap::new();
        for k in 0..30 {
            let order = key_order(&ring, b"users", b"bob", 3, Spread::Rotate(k), |_| false);
            *firsts.entry(order[0].clone()).or_default() += 1;
            // A read's retries stay within the top N before leaving it.
            let top: BTreeSet<_> = order[..3].iter().collect();
            assert_eq!(top, list.primaries().iter().collect());
        }
        assert_eq!(firsts.len(), 3, "every primary starts some reads");
        assert!(firsts.values().all(|&c| c == 10), "{firsts:?}");
    }

    #[test]
    fn suspects_go_last_and_healthy_fallbacks_come_before_them() {
        let ring = ring(5);
        let list = ring.preference_list(b"b", b"k", 3);
        let down = list.primaries()[0].clone();
        let order = key_order(&ring, b"b", b"k", 3, Spread::First, |n| *n == down);
        assert_eq!(order[..2], list.primaries()[1..]);
        assert_eq!(order[2], list.fallbacks()[0]);
        assert_eq!(order.last(), Some(&down));
    }

    #[test]
    fn retries_wrap_round_with_a_growing_backoff_per_lap() {
        let order = vec![id("a"), id("b")];
        let attempts = plan(&order, 4);
        assert_eq!(
            nodes(&attempts),
            [id("a"), id("b"), id("a"), id("b"), id("a")]
        );
        let backoffs: Vec<Duration> = attempts.iter().map(|a| a.backoff).collect();
        let expected = [0, 0, 1, 0, 2].map(|laps| RETRY_BACKOFF * laps);
        assert_eq!(backoffs, expected);
    }

    #[test]
    fn nothing_to_try_gives_no_attempts() {
        assert!(plan(&[], 3).is_empty());
    }

    #[test]
    fn member_order_rotates_over_every_member() {
        let ring = ring(3);
        let firsts: HashSet<NodeId> = (0..3)
            .map(|k| member_order(&ring, Spread::Rotate(k), |_| false)[0].clone())
            .collect();
        assert_eq!(firsts.len(), 3);
    }

    #[test]
    fn suspicion_expires_and_clears() {
        let t0 = Instant::now();
        let n1 = id("n1");
        let mut suspects = Suspects::default();
        suspects.mark(&n1, t0);
        assert!(suspects.is_suspect(&n1, t0 + SUSPECT_PERIOD / 2));
        assert!(!suspects.is_suspect(&n1, t0 + SUSPECT_PERIOD));
        suspects.mark(&n1, t0);
        suspects.clear(&n1);
        assert!(!suspects.is_suspect(&n1, t0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every member appears once; the first target is a healthy primary whenever one exists;
        /// a request makes exactly `retries + 1` attempts.
        #[test]
        fn orders_are_permutations_led_by_a_healthy_primary(
            size in 1usize..8,
            n in 1usize..5,
            k in 0usize..100,
            first in any::<bool>(),
            down in proptest::collection::btree_set(1usize..8, 0..8),
            retries in 0usize..10,
            key in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let ring = ring(size);
            let down: HashSet<NodeId> = down.iter().map(|i| id(&format!("n{i}"))).collect();
            let spread = if first { Spread::First } else { Spread::Rotate(k) };
            let order = key_order(&ring, b"b", &key, n, spread, |x| down.contains(x));
            let list = ring.preference_list(b"b", &key, n);
            let mut sorted = order.clone();
            sorted.sort();
            let mut members: Vec<NodeId> = ring.members().iter().map(|m| m.id.clone()).collect();
            members.sort();
            prop_assert_eq!(sorted, members);
            if list.primaries().iter().any(|p| !down.contains(p)) {
                prop_assert!(list.is_primary(&order[0]) && !down.contains(&order[0]));
            }
            prop_assert_eq!(plan(&order, retries).len(), retries + 1);
        }
    }
}
