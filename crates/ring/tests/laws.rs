//! Laws of the ring (paper 4.2, 4.3, 6.2), checked on random clusters and random membership histories.

use std::collections::{BTreeMap, BTreeSet};

use dynamo_ring::{Member, NodeId, PartitionId, Ring};
use proptest::prelude::*;

/// Cases per property: enough to cover the space of small clusters, few enough that the whole file runs in a
/// few seconds in debug builds on two cores.
const CASES: u32 = 48;

/// The partition counts the properties run on (1024 is covered by the example and the unit tests).
fn q_strategy() -> impl Strategy<Value = u32> {
    prop::sample::select(vec![8u32, 16, 32, 64, 128, 256])
}

fn node(i: usize) -> NodeId {
    NodeId::new(format!("n{i:03}")).expect("generated names are valid")
}

fn equal_members(s: usize) -> Vec<Member> {
    (0..s).map(|i| Member::new(node(i))).collect()
}

/// `|count - q * w / total| < bound` for every member, in exact integer arithmetic.
fn within_share(ring: &Ring, bound: u64) -> Result<(), TestCaseError> {
    let total: u64 = ring.members().iter().map(|m| u64::from(m.weight)).sum();
    let ownership = ring.ownership();
    for m in ring.members() {
        let count = ownership[&m.id] as u64;
        let scaled = count * total;
        let share = u64::from(ring.q()) * u64::from(m.weight);
        prop_assert!(
            scaled.abs_diff(share) < bound * total,
            "{} owns {} of {} with weight {}/{}",
            m.id,
            count,
            ring.q(),
            m.weight,
            total
        );
    }
    Ok(())
}

/// Every preference list holds every member exactly once, its primaries are `min(n, S)` distinct nodes led by
/// the partition's owner, and the list is for the partition asked.
fn preference_lists_are_sound(ring: &Ring, n: usize) -> Result<(), TestCaseError> {
    let members: BTreeSet<&NodeId> = ring.members().iter().map(|m| &m.id).collect();
    for p in ring.partitions() {
        prop_assert!(members.contains(ring.owner(p)), "{p} owned by a non-member");
        let list = ring.preference_list_for_partition(p, n);
        prop_assert_eq!(list.partition(), p);
        let all: BTreeSet<&NodeId> = list.all().iter().collect();
        prop_assert_eq!(all.len(), list.all().len(), "duplicate in {:?}", list);
        prop_assert_eq!(&all, &members);
        prop_assert_eq!(list.primaries().len(), n.min(members.len()));
        prop_assert_eq!(
            list.primaries().len() + list.fallbacks().len(),
            members.len()
        );
        prop_assert_eq!(list.primaries().first(), Some(ring.owner(p)));
    }
    Ok(())
}

/// A step of a membership history.
#[derive(Clone, Debug)]
enum Change {
    /// A new node of this weight joins.
    Join(u32),
    /// The member at this index (modulo S) leaves, unless it is the last.
    Leave(usize),
    /// The member at this index (modulo S) gets this weight.
    Reweight(usize, u32),
}

fn change_strategy(max_weight: u32) -> impl Strategy<Value = Change> {
    prop_oneof![
        (1..=max_weight).prop_map(Change::Join),
        any::<usize>().prop_map(Change::Leave),
        (any::<usize>(), 1..=max_weight).prop_map(|(i, w)| Change::Reweight(i, w)),
    ]
}

/// Applies `change`, naming joiners after `next`; returns the new ring.
fn apply(ring: &Ring, change: &Change, next: &mut usize, n: usize) -> Ring {
    let s = ring.members().len();
    let result = match *change {
        Change::Join(w) => {
            *next += 1;
            ring.with_member_joined(Member::new(node(*next)).with_weight(w), n)
        }
        Change::Leave(i) if s > 1 => ring.with_member_left(&ring.members()[i % s].id.clone(), n),
        Change::Leave(_) => return ring.clone(),
        Change::Reweight(i, w) => ring.with_member_weight(&ring.members()[i % s].id.clone(), w, n),
    };
    result.expect("changes generated from the ring's own members are valid")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn fresh_rings_are_balanced_and_sound(q in q_strategy(), s in 1usize..40, n in 1usize..6) {
        let ring = Ring::new(q, equal_members(s), n).unwrap();
        preference_lists_are_sound(&ring, n)?;
        // Equal weights: every node owns floor(Q/S) or ceil(Q/S) partitions.
        within_share(&ring, 1)?;
        prop_assert_eq!(ring.ownership().values().sum::<usize>(), q as usize);
        // Whenever each node's share fits at spacing N, the first N owners clockwise are distinct: always for
        // N <= 3, and for larger N everywhere but at most N partitions (the claim is greedy; tight layouts such
        // as S = N + 1 can leave a repeat where the ring wraps around).
        let max = ring.ownership().values().copied().max().unwrap_or(0);
        if s >= n && max * n <= q as usize {
            let skips = ring
                .partitions()
                .filter(|p| {
                    let firsts: BTreeSet<&NodeId> =
                        (0..n as u32).map(|d| ring.owner(PartitionId((p.0 + d) % q))).collect();
                    firsts.len() < n
                })
                .count();
            prop_assert!(skips == 0 || (n > 3 && skips <= n), "{} skips", skips);
        }
    }

    #[test]
    fn claim_is_deterministic_and_ignores_member_order(
        q in q_strategy(),
        weights in prop::collection::vec(1u32..4, 1..20),
        seed in any::<u64>(),
    ) {
        let members: Vec<Member> =
            weights.iter().enumerate().map(|(i, &w)| Member::new(node(i)).with_weight(w)).collect();
        let mut shuffled = members.clone();
        let len = shuffled.len();
        shuffled.rotate_left((seed as usize) % len);
        shuffled.reverse();
        prop_assert_eq!(Ring::new(q, members, 3).unwrap(), Ring::new(q, shuffled, 3).unwrap());
    }

    #[test]
    fn a_join_moves_about_q_over_s_plus_one_and_only_to_the_joiner(
        q in q_strategy(),
        s in 1usize..40,
        n in 1usize..5,
    ) {
        let ring = Ring::new(q, equal_members(s), n).unwrap();
        let joiner = node(1000);
        let joined = ring.with_member_joined(Member::new(joiner.clone()), n).unwrap();
        let transfers = ring.diff(&joined);
        // Bound: the joiner's rounded share, floor(Q/(S+1)) ..= ceil(Q/(S+1)); no slack beyond rounding.
        let (q, s1) = (q as usize, s + 1);
        prop_assert!(transfers.len() >= q / s1 && transfers.len() <= q.div_ceil(s1), "{} moved", transfers.len());
        for t in &transfers {
            prop_assert_eq!(&t.to, &joiner);
            prop_assert_eq!(&t.from, ring.owner(t.partition));
        }
        prop_assert_eq!(joined.epoch(), ring.epoch() + 1);
        within_share(&joined, 1)?;
        preference_lists_are_sound(&joined, n)?;
    }

    #[test]
    fn a_leave_moves_only_the_leavers_partitions(
        q in q_strategy(),
        s in 2usize..40,
        pick in any::<usize>(),
        n in 1usize..5,
    ) {
        let ring = Ring::new(q, equal_members(s), n).unwrap();
        let leaver = ring.members()[pick % s].id.clone();
        let left = ring.with_member_left(&leaver, n).unwrap();
        prop_assert!(left.member(&leaver).is_none());
        let held: BTreeSet<PartitionId> = ring.partitions().filter(|&p| ring.owner(p) == &leaver).collect();
        let moved: BTreeSet<PartitionId> = ring.diff(&left).iter().map(|t| t.partition).collect();
        prop_assert_eq!(moved, held);
        within_share(&left, 1)?;
        preference_lists_are_sound(&left, n)?;
    }

    #[test]
    fn equal_weight_histories_stay_within_one_partition_of_q_over_s(
        q in q_strategy(),
        s in 1usize..12,
        steps in prop::collection::vec(prop_oneof![Just(Change::Join(1)), any::<usize>().prop_map(Change::Leave)], 1..12),
    ) {
        let mut ring = Ring::new(q, equal_members(s), 3).unwrap();
        let mut next = 100;
        for step in &steps {
            let newer = apply(&ring, step, &mut next, 3);
            within_share(&newer, 1)?;
            ring = newer;
        }
        preference_lists_are_sound(&ring, 3)?;
    }

    #[test]
    fn weights_are_roughly_proportional(
        q in q_strategy(),
        weights in prop::collection::vec(1u32..5, 1..16),
        steps in prop::collection::vec(change_strategy(4), 0..8),
    ) {
        let members: Vec<Member> =
            weights.iter().enumerate().map(|(i, &w)| Member::new(node(i)).with_weight(w)).collect();
        let mut ring = Ring::new(q, members, 3).unwrap();
        // A fresh claim rounds each weighted share Q*w/W up or down.
        within_share(&ring, 1)?;
        let mut next = 100;
        for step in &steps {
            ring = apply(&ring, step, &mut next, 3);
            // A join moves partitions only to the joiner and a leave only the leaver's, so in rare rounding
            // corners (seen with weights up to 100, never with these) a member ends just over one partition off
            // its share; the assertion allows two.
            within_share(&ring, 2)?;
            preference_lists_are_sound(&ring, 3)?;
        }
    }

    #[test]
    fn with_enough_zones_primaries_span_n_zones(
        q in q_strategy(),
        zones in prop::collection::vec(0usize..6, 3..24),
        n in 1usize..4,
        joins in prop::collection::vec(0usize..6, 0..3),
    ) {
        let zoned = |i: usize, z: usize| Member::new(node(i)).with_zone(format!("z{z}"));
        let members: Vec<Member> = zones.iter().enumerate().map(|(i, &z)| zoned(i, z)).collect();
        let mut ring = Ring::new(q, members, n).unwrap();
        for (k, &z) in joins.iter().enumerate() {
            ring = ring.with_member_joined(zoned(500 + k, z), n).unwrap();
        }
        let distinct_zones: BTreeSet<&str> = ring.members().iter().filter_map(|m| m.zone.as_deref()).collect();
        preference_lists_are_sound(&ring, n)?;
        for p in ring.partitions() {
            let list = ring.preference_list_for_partition(p, n);
            let spanned: BTreeSet<&str> = list
                .primaries()
                .iter()
                .filter_map(|id| ring.member(id).and_then(|m| m.zone.as_deref()))
                .collect();
            prop_assert_eq!(spanned.len(), n.min(distinct_zones.len()), "{} {:?}", p, list);
        }
    }

    #[test]
    fn every_partition_is_replicated_exactly_n_times(q in q_strategy(), s in 1usize..20, n in 1usize..5) {
        let ring = Ring::new(q, equal_members(s), n).unwrap();
        let mut replicas: BTreeMap<PartitionId, usize> = BTreeMap::new();
        for m in ring.members() {
            for p in ring.partitions_replicated_by(&m.id, n) {
                *replicas.entry(p).or_default() += 1;
            }
        }
        prop_assert_eq!(replicas.len(), q as usize);
        prop_assert!(replicas.values().all(|&r| r == n.min(s)));
    }

    #[test]
    fn rings_survive_the_wire(q in q_strategy(), s in 1usize..20, steps in prop::collection::vec(change_strategy(3), 0..4)) {
        let mut ring = Ring::new(q, equal_members(s), 3).unwrap();
        let mut next = 100;
        for step in &steps {
            ring = apply(&ring, step, &mut next, 3);
        }
        let json = serde_json::to_string(&ring).unwrap();
        let back: Ring = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &ring);
        prop_assert_eq!(
            back.preference_list(b"b", b"k", 3),
            ring.preference_list(b"b", b"k", 3)
        );
    }

    #[test]
    fn keys_land_in_the_partition_of_their_hash(q in q_strategy(), bucket in any::<Vec<u8>>(), key in any::<Vec<u8>>()) {
        let ring = Ring::new(q, equal_members(3), 3).unwrap();
        let p = ring.partition_for_key(&bucket, &key);
        prop_assert!(p.0 < q);
        prop_assert_eq!(p, dynamo_ring::partition_of(dynamo_ring::key_hash(&bucket, &key), q));
        prop_assert_eq!(ring.preference_list(&bucket, &key, 3).partition(), p);
    }
}
