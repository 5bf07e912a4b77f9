//! Laws of the membership core, over states reached by random operator commands, gossip and
//! transfers in a model cluster (`common`).

mod common;

use std::collections::BTreeSet;

use common::{Op, Sim, id};
use dynamo_membership::{ClusterState, Error, Status};
use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..16usize, 0..16usize).prop_map(|(a, b)| Op::Gossip(a, b)),
        1 => (0..16usize).prop_map(Op::Join),
        1 => (0..16usize, 0..16usize).prop_map(|(a, b)| Op::Leave(a, b)),
        1 => (0..16usize, 0..16usize).prop_map(|(a, b)| Op::Remove(a, b)),
        2 => (0..16usize).prop_map(Op::Commit),
        3 => (0..16usize).prop_map(Op::Sync),
        1 => (0..16usize, any::<u8>()).prop_map(|(a, v)| Op::Props(a, v)),
        1 => (0..16usize).prop_map(Op::Clear),
        1 => Just(Op::Settle),
        2 => (0..16usize).prop_map(Op::PatientCommit),
    ]
}

fn run(size: usize, unreachable: usize, ops: &[Op]) -> Sim {
    let mut sim = Sim::new(size, unreachable);
    // Halfway, let gossip and transfers run to the end, so that histories contain installed
    // rings and the operations after it start from them.
    for (i, op) in ops.iter().enumerate() {
        if i == ops.len() / 2 {
            sim.drain();
            check_invariants(&sim);
        }
        sim.apply(op);
        check_invariants(&sim);
    }
    sim.drain();
    check_invariants(&sim);
    sim
}

fn merged(a: &ClusterState, b: &ClusterState) -> ClusterState {
    let mut m = a.clone();
    m.merge(b).expect("states of one history always merge");
    m
}

/// What must hold in every state any node reaches.
fn check_invariants(sim: &Sim) {
    let state = sim.history.last().unwrap();
    let n = usize::from(state.n());
    // No partition is ever without its N owners: every live primary of the ring in force
    // holds the partition's data, and there are N of them while there are N members.
    for p in state.ring().partitions() {
        let pl = state.ring().preference_list_for_partition(p, n);
        assert_eq!(
            pl.primaries().len(),
            n.min(state.ring().members().len()),
            "{p}"
        );
        for node in pl.primaries() {
            let dead = sim.nodes.iter().any(|x| &x.id == node && !x.alive);
            assert!(
                dead || sim.holders[&p].contains(node),
                "{node} serves partition {p} at epoch {} without holding it",
                state.ring().epoch()
            );
        }
    }
    // The plan an operator committed is the one that runs.
    if let Some(p) = state.pending() {
        assert_eq!(sim.committed[&p.plan_id].next, p.next);
    }
    // Gossip never removes anyone: a member no operator named keeps its status and its place.
    for (node, m) in state.members() {
        if !sim.named.contains(node) {
            assert_eq!(m.status, Status::Valid, "{node}");
            assert!(state.ring().member(node).is_some(), "{node}");
        }
    }
    assert_eq!(ClusterState::decode(&state.encode()).as_ref(), Ok(state));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn merge_is_a_join(ops in prop::collection::vec(op(), 1..60), picks in prop::collection::vec(any::<prop::sample::Index>(), 3)) {
        let sim = run(4, 0, &ops);
        let h = &sim.history;
        let (a, b, c) = (picks[0].get(h), picks[1].get(h), picks[2].get(h));
        prop_assert_eq!(merged(a, a), a.clone());
        prop_assert_eq!(merged(a, b), merged(b, a));
        prop_assert_eq!(merged(&merged(a, b), c), merged(a, &merged(b, c)));
    }

    #[test]
    fn reachable_states_keep_the_invariants_and_converge(ops in prop::collection::vec(op(), 1..80), unreachable in 0..2usize) {
        let sim = run(5, unreachable, &ops);
        // Live nodes agree, and a change whose senders are all alive finished.
        let live: Vec<&ClusterState> = sim.nodes.iter().filter(|n| n.alive).map(|n| &n.state).collect();
        for s in &live {
            prop_assert_eq!(s.full_digest(), live[0].full_digest());
        }
        // A change finishes unless a copy can never be made: its receiver died, or its only
        // senders never answered and were never declared down.
        let dead = |id: &dynamo_ring::NodeId| sim.nodes.iter().any(|n| &n.id == id && !n.alive);
        let stuck = live[0].pending().is_some_and(|p| {
            p.pairs().iter().any(|((_, to), synced)| !synced && dead(to))
                || p.transfers.keys().any(|t| sim.unreachable.contains(&t.from))
        });
        if !stuck {
            prop_assert!(live[0].pending().is_none(), "a change never finished");
        }
    }

    #[test]
    fn plans_are_deterministic(ops in prop::collection::vec(op(), 1..60)) {
        let sim = run(4, 0, &ops);
        for s in sim.history.iter().rev().take(20) {
            let again = ClusterState::decode(&s.encode()).unwrap();
            prop_assert_eq!(s.plan(), again.plan());
        }
    }

    #[test]
    fn a_join_moves_only_what_must_move(size in 1..8usize) {
        let mut sim = Sim::new(size, 0);
        sim.apply(&Op::Join(0));
        let joiner = id(size);
        let state = &sim.nodes[0].state;
        let plan = state.plan().unwrap();
        let current = state.ring();
        for p in current.partitions() {
            if current.owner(p) != plan.next.owner(p) {
                prop_assert_eq!(plan.next.owner(p), &joiner);
            }
        }
        prop_assert_eq!(plan.owners_moved, plan.nodes[&joiner].owned_after);
        // Every copy made lands on the joiner or on a node the joiner pushed down a list.
        let gained: BTreeSet<_> = plan.transfers.iter().map(|t| t.to.clone()).collect();
        prop_assert!(gained.contains(&joiner));
        prop_assert_eq!(plan.transfers.iter().filter(|t| t.to == joiner).count(), plan.nodes[&joiner].replicated_after);
    }
}

#[test]
fn separate_histories_and_split_brains_are_reported_not_mixed() {
    let a = Sim::new(3, 0).nodes[0].state.clone();
    // Bootstrapped apart: another history.
    let lone = ClusterState::bootstrap(
        common::CLUSTER,
        common::Q,
        common::N,
        vec![(id(7), common::info(7))],
    )
    .unwrap();
    let mut x = a.clone();
    assert!(matches!(
        x.merge(&lone),
        Err(Error::DifferentHistory { .. })
    ));
    assert_eq!(x, a, "a refused merge changes nothing");
    // Same history, same epoch, different rings: two claimants acting apart.
    let mut left = Sim::new(4, 0);
    let mut right = Sim::new(4, 0);
    for sim in [&mut left, &mut right] {
        sim.apply(&Op::Join(0));
        sim.drain();
    }
    right.apply(&Op::Join(1));
    right.drain();
    left.apply(&Op::Leave(0, 3));
    left.apply(&Op::Commit(0));
    left.drain();
    let (l, r) = (&left.nodes[0].state, &right.nodes[0].state);
    if l.ring().epoch() == r.ring().epoch() && l.ring() != r.ring() {
        let mut m = l.clone();
        assert!(matches!(m.merge(r), Err(Error::DivergentRings { .. })));
    }
    let mut other = a.clone();
    let mut wrong = ClusterState::bootstrap(
        "other",
        common::Q,
        common::N,
        vec![(id(0), common::info(0))],
    )
    .unwrap();
    assert!(matches!(
        other.merge(&wrong),
        Err(Error::WrongCluster { .. })
    ));
    assert!(matches!(wrong.merge(&a), Err(Error::WrongCluster { .. })));
}
