//! Scenarios through the membership life cycle, step by step on a model cluster: a join, a
//! leave, a removal of a dead node and a replacement, each planned, committed, transferred and
//! installed; and the refusals an operator meets on the way.

mod common;

use common::{Op, Sim, id};
use dynamo_membership::{Change, Error, Status};

fn status(sim: &Sim, node: usize) -> Status {
    sim.nodes[0].state.member(&id(node)).unwrap().status
}

#[test]
fn a_join_is_planned_committed_transferred_and_installed() {
    let mut sim = Sim::new(3, 0);
    sim.apply(&Op::Join(1));
    sim.drain();
    assert_eq!(status(&sim, 3), Status::Joining);
    let plan = sim.nodes[0].state.plan().unwrap();
    assert_eq!(plan.from_epoch, 1);
    assert!(plan.partitions_moving > 0);
    sim.apply(&Op::Commit(2));
    // Before the transfers finish the ring in force is still the old one; the next one is known.
    sim.drain_gossip_only();
    for n in &sim.nodes {
        assert_eq!(n.state.ring().epoch(), 1);
        assert_eq!(n.state.pending().unwrap().next, plan.next);
    }
    sim.drain();
    for n in &sim.nodes {
        assert_eq!(n.state.ring(), &plan.next, "{}", n.id);
        assert!(n.state.pending().is_none());
        assert_eq!(n.state.member(&id(3)).unwrap().status, Status::Valid);
        assert!(n.state.converged());
    }
    // The old owners may now drop what they no longer replicate.
    let released: usize = (0..3)
        .map(|i| sim.nodes[i].state.partitions_to_release(&id(i)).len())
        .sum();
    assert!(released > 0);
    assert!(sim.nodes[3].state.partitions_to_release(&id(3)).is_empty());
    // What a node may release does not depend on the previous ring: everything it does not
    // replicate now (a superset of the previous ring's difference).
    for (i, n) in sim.nodes.iter().enumerate() {
        let loose = n.state.partitions_not_replicated(&id(i));
        let kept = n.state.ring().partitions_replicated_by(&id(i), 3);
        assert!(loose.iter().all(|p| !kept.contains(p)), "{}", n.id);
        assert_eq!(
            loose.len() + kept.len(),
            n.state.ring().partitions().count()
        );
        for p in n.state.partitions_to_release(&id(i)) {
            assert!(loose.contains(&p));
        }
    }
}

#[test]
fn a_leaver_hands_off_then_exits_and_is_removed() {
    let mut sim = Sim::new(4, 0);
    sim.apply(&Op::Leave(0, 2));
    sim.drain();
    sim.apply(&Op::Commit(0));
    sim.drain();
    let state = &sim.nodes[0].state;
    assert_eq!(status(&sim, 2), Status::Removed);
    assert!(state.ring().member(&id(2)).is_none());
    assert_eq!(state.ring().epoch(), 2);
    // The leaver itself saw its exit, and has everything to release.
    let leaver = &sim.nodes[2].state;
    assert!(leaver.ring().member(&id(2)).is_none());
    assert!(!leaver.partitions_to_release(&id(2)).is_empty());
}

/// A removed leaver drops its data even when it never sees a converged state again: here node
/// 1 changes the state after the removal and the leaver hears of it before nodes 0 and 3 do
/// (found on real processes: a leaver stopped soon after its removal had released nothing).
#[test]
fn a_removed_leaver_releases_without_waiting_for_convergence() {
    let mut sim = Sim::new(4, 0);
    sim.apply(&Op::Leave(0, 2));
    sim.drain();
    sim.apply(&Op::Commit(0));
    sim.drain();
    assert_eq!(status(&sim, 2), Status::Removed);
    sim.apply(&Op::Props(1, 2));
    sim.gossip(2, 1);
    let leaver = &sim.nodes[2].state;
    assert!(!leaver.converged());
    assert!(leaver.may_release(&id(2)));
    assert!(!leaver.partitions_to_release(&id(2)).is_empty());
    // A member still in the ring waits for convergence.
    let member = &sim.nodes[1].state;
    assert!(!member.converged());
    assert!(!member.may_release(&id(1)));
}

#[test]
fn a_dead_node_is_removed_by_an_operator_and_rebuilt_from_the_others() {
    let mut sim = Sim::new(4, 1);
    // n03 never answers: gossip alone changes nothing about it.
    sim.drain();
    assert_eq!(status(&sim, 3), Status::Valid);
    // Commit waits for every member to have seen the state: n03 never will.
    sim.apply(&Op::Leave(0, 1));
    let plan = sim.nodes[0].state.plan().unwrap();
    let err = sim.nodes[0].state.clone().commit(plan.id).unwrap_err();
    assert!(
        matches!(err, Error::NotConverged(ref who) if who.contains("n03")),
        "{err}"
    );
    sim.apply(&Op::Clear(0));
    // The operator removes it: it stops counting for convergence at once.
    sim.apply(&Op::Remove(0, 3));
    assert_eq!(status(&sim, 3), Status::Down);
    sim.drain();
    sim.apply(&Op::Commit(1));
    sim.drain();
    let state = &sim.nodes[0].state;
    assert_eq!(state.member(&id(3)).unwrap().status, Status::Removed);
    assert!(state.ring().member(&id(3)).is_none());
    assert!(state.pending().is_none());
}

#[test]
fn a_replacement_moves_the_old_nodes_partitions_to_the_new_one() {
    let mut sim = Sim::new(3, 0);
    sim.apply(&Op::Join(0));
    sim.drain();
    let a = &mut sim.nodes[0];
    a.state.clear_staged();
    a.state
        .stage(Change::Replace {
            old: id(1),
            new: id(3),
        })
        .unwrap();
    a.state.settle(&id(0));
    sim.drain();
    sim.apply(&Op::Commit(0));
    sim.drain();
    let state = &sim.nodes[0].state;
    assert!(state.ring().member(&id(1)).is_none());
    assert!(state.ring().member(&id(3)).is_some());
    assert_eq!(state.member(&id(1)).unwrap().status, Status::Removed);
    assert_eq!(state.member(&id(3)).unwrap().status, Status::Valid);
}

#[test]
fn operators_are_told_why_a_command_is_refused() {
    let mut sim = Sim::new(3, 0);
    let s = &mut sim.nodes[0].state;
    assert!(matches!(s.plan(), Err(Error::Refused(_))));
    assert!(matches!(
        s.stage(Change::Leave { node: id(9) }),
        Err(Error::UnknownMember(_))
    ));
    assert!(matches!(
        s.stage(Change::Join { node: id(1) }),
        Err(Error::Refused(_))
    ));
    s.stage(Change::Leave { node: id(1) }).unwrap();
    s.settle(&id(0));
    let plan = s.plan().unwrap();
    // Another change staged after the plan was shown: commit refuses the stale plan.
    s.stage(Change::Leave { node: id(2) }).unwrap();
    s.settle(&id(0));
    sim.drain();
    let s = &mut sim.nodes[0].state;
    assert!(matches!(s.commit(plan.id), Err(Error::PlanChanged { .. })));
    // Two leaves of three with N = 3 is fine for the ring; commit it, then nothing else is
    // accepted until it finishes.
    let plan = s.plan().unwrap();
    s.commit(plan.id).unwrap();
    s.settle(&id(0));
    assert!(s.pending().is_some());
    assert!(matches!(
        s.stage(Change::Leave { node: id(0) }),
        Err(Error::Refused(_))
    ));
}

#[test]
fn a_node_declared_down_that_comes_back_marks_itself_valid_unless_it_is_being_removed() {
    let mut sim = Sim::new(4, 0);
    // The operator declares n03 down (staging its removal), then thinks better of it.
    let s = &mut sim.nodes[0].state;
    s.stage(Change::Remove { node: id(3) }).unwrap();
    s.settle(&id(0));
    sim.drain_gossip_only();
    assert_eq!(status(&sim, 3), Status::Down, "the removal is staged");
    let s = &mut sim.nodes[0].state;
    s.clear_staged();
    s.settle(&id(0));
    sim.drain_gossip_only();
    // n03 is alive and gossips: it marks itself valid, and everyone converges with it again.
    assert_eq!(status(&sim, 3), Status::Valid);
    assert!(sim.nodes.iter().all(|n| n.state.converged()));
}

#[test]
fn changes_staged_on_two_nodes_at_once_both_survive_the_merge() {
    let mut sim = Sim::new(3, 0);
    // Two nodes join through different members before either hears of the other.
    sim.apply(&Op::Join(0));
    sim.apply(&Op::Join(1));
    let s = &mut sim.nodes[2].state;
    s.stage(Change::Leave { node: id(2) }).unwrap();
    s.settle(&id(2));
    sim.drain_gossip_only();
    let plan = sim.nodes[0].state.plan().unwrap();
    assert_eq!(
        plan.changes,
        vec![
            Change::Join { node: id(3) },
            Change::Join { node: id(4) },
            Change::Leave { node: id(2) },
        ]
    );
}
