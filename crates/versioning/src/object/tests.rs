//! Unit tests of [`Object`]: the semantics the storage and coordinator crates rely on.

use super::*;
use crate::clock::Causality;

const SX: Actor = Actor { node: 1, epoch: 0 };
const SY: Actor = Actor { node: 2, epoch: 0 };
const SZ: Actor = Actor { node: 3, epoch: 0 };

fn dots<V>(object: &Object<V>) -> Vec<(u64, u64)> {
    object
        .siblings()
        .iter()
        .map(|s| (s.dot.actor.node, s.dot.counter))
        .collect()
}

fn clock_of<V>(object: &Object<V>) -> Vec<(u64, u32, u64)> {
    object
        .clock()
        .iter()
        .map(|(a, c, _)| (a.node, a.epoch, c))
        .collect()
}

#[test]
fn put_discards_exactly_the_siblings_its_context_covers() {
    let mut replica = Object::new();
    replica.put(SX, &Context::empty(), "a", 1);
    let saw_a = replica.context();
    replica.put(SX, &Context::empty(), "b", 2); // blind write: concurrent with "a"
    replica.put(SX, &Context::empty(), "c", 3); // concurrent with both
    assert_eq!(replica.values(), vec![&"a", &"b", &"c"]);

    // A client that read only "a" replaces "a" and nothing else.
    let dot = replica.put(SX, &saw_a, "a2", 4);
    assert_eq!(dot, Dot::new(SX, 4));
    assert_eq!(replica.values(), vec![&"b", &"c", &"a2"]);
    assert_eq!(dots(&replica), vec![(1, 2), (1, 3), (1, 4)]);
    assert_eq!(clock_of(&replica), vec![(1, 0, 4)]);
}

#[test]
fn two_puts_with_the_same_stale_context_through_one_coordinator_are_both_kept() {
    let mut replica = Object::new();
    replica.put(SX, &Context::empty(), 1, 10);
    let stale = replica.context();
    replica.put(SX, &stale, 2, 20);
    replica.put(SX, &stale, 3, 21);
    assert_eq!(replica.values(), vec![&2, &3], "neither write is lost");
    assert_eq!(clock_of(&replica).len(), 1, "one coordinator, one entry");
}

#[test]
fn identical_concurrent_values_appear_once_in_values() {
    let mut replica = Object::new();
    replica.put(SX, &Context::empty(), "same", 1);
    replica.put(SY, &Context::empty(), "same", 2);
    replica.put(SZ, &Context::empty(), "other", 3);
    assert_eq!(replica.siblings().len(), 3, "each write keeps its own dot");
    assert_eq!(replica.values(), vec![&"same", &"other"]);
}

#[test]
fn a_context_that_dominates_every_sibling_collapses_them_to_one() {
    let mut replica = Object::new();
    for (i, actor) in [SX, SY, SZ, SX].into_iter().enumerate() {
        replica.put(actor, &Context::empty(), i, i as u64);
    }
    assert_eq!(replica.siblings().len(), 4);
    let everything = replica.context();
    replica.put(SY, &everything, 99, 10);
    assert_eq!(replica.values(), vec![&99]);
    assert_eq!(
        replica.context().clock().compare(everything.clock()),
        Causality::After
    );
}

#[test]
fn reconcile_returns_the_causally_maximal_set_and_a_subsuming_context() {
    // Replica x has v1; y has v2 written on top of v1; z has a concurrent v3 written blind.
    let mut x = Object::new();
    x.put(SX, &Context::empty(), "v1", 1);
    let mut y = x.clone();
    y.put(SY, &x.context(), "v2", 2);
    let mut z = Object::new();
    z.put(SZ, &Context::empty(), "v3", 3);

    let answer = Object::reconcile([x.clone(), y.clone(), z.clone()]);
    assert_eq!(
        answer.values(),
        vec![&"v2", &"v3"],
        "v1 is superseded by v2"
    );
    for replica in [&x, &y, &z] {
        assert!(answer.clock().descends(replica.clock()));
    }
    // The same answer whatever order the replicas answered in.
    assert_eq!(Object::reconcile([z, y, x]), answer);
    assert!(Object::<u8>::reconcile([]).is_empty());
}

#[test]
fn a_wiped_node_with_a_new_epoch_neither_loses_to_nor_overwrites_older_writes() {
    // Node 7 coordinated two writes in epoch 0; the cluster (replica `peer`) has seen them.
    let old = Actor::new(7, 0);
    let mut node = Object::new();
    node.put(old, &Context::empty(), "first", 1);
    node.put(old, &node.context(), "kept", 2);
    let mut peer = Object::new();
    peer.merge(&node);

    // The node loses its disk and comes back with an empty object and a new epoch.
    let reborn = Actor::new(7, 1);
    let mut wiped = Object::new();
    let dot = wiped.put(reborn, &Context::empty(), "blind", 3);
    assert_eq!(
        dot,
        Dot::new(reborn, 1),
        "counters restart, under a new actor"
    );

    // The blind write is concurrent with the old one: both survive, in either merge direction.
    let mut at_peer = peer.clone();
    at_peer.merge(&wiped);
    let mut at_node = wiped.clone();
    at_node.merge(&peer);
    assert_eq!(at_peer.values(), vec![&"kept", &"blind"]);
    assert_eq!(at_node, at_peer);

    // Had the node reused its old actor, its new dot (7:0, 1) would look already seen: lost.
    let mut reused = Object::new();
    reused.put(old, &Context::empty(), "blind", 3);
    let mut lossy = peer.clone();
    lossy.merge(&reused);
    assert_eq!(
        lossy.values(),
        vec![&"kept"],
        "this is the kv679 bug epochs prevent"
    );

    // A write through the wiped node that read the cluster's context supersedes the old value.
    let mut wiped = Object::new();
    wiped.put(reborn, &peer.context(), "update", 4);
    let mut at_peer = peer.clone();
    at_peer.merge(&wiped);
    assert_eq!(at_peer.values(), vec![&"update"]);
}

#[test]
fn put_issues_counters_above_what_the_context_has_seen_for_the_actor() {
    // Even without a new epoch, a coordinator that lost the key but receives a context naming its
    // own earlier writes continues above them instead of reusing a counter.
    let mut elsewhere = Object::new();
    elsewhere.put(SX, &Context::empty(), "v1", 1);
    elsewhere.put(SX, &elsewhere.context(), "v2", 2);
    let mut empty_copy = Object::new();
    let dot = empty_copy.put(SX, &elsewhere.context(), "v3", 3);
    assert_eq!(dot, Dot::new(SX, 3));
}

#[test]
fn shopping_cart_history_of_section_4_4() {
    // D1 and D2 are written through Sx; the second overwrites the first.
    let mut sx = Object::new();
    sx.put(SX, &Context::empty(), "D1", 1);
    sx.put(SX, &sx.context(), "D2", 2);
    assert_eq!(sx.values(), vec![&"D2"]);
    assert_eq!(clock_of(&sx), vec![(1, 0, 2)]);
    let (mut sy, mut sz) = (sx.clone(), sx.clone());

    // D3 through Sy and D4 through Sz, both written on top of D2: concurrent.
    let read_d2 = sx.context();
    sy.put(SY, &read_d2, "D3", 3);
    sz.put(SZ, &read_d2, "D4", 4);
    assert_eq!(clock_of(&sy), vec![(1, 0, 2), (2, 0, 1)]);
    assert_eq!(clock_of(&sz), vec![(1, 0, 2), (3, 0, 1)]);
    assert_eq!(sy.clock().compare(sz.clock()), Causality::Concurrent);

    // A client reads both versions, reconciles them and writes D5 through Sx.
    let read = Object::reconcile([sy.clone(), sz.clone()]);
    assert_eq!(read.values(), vec![&"D3", &"D4"]);
    sx.put(SX, &read.context(), "D5", 5);
    assert_eq!(clock_of(&sx), vec![(1, 0, 3), (2, 0, 1), (3, 0, 1)]);

    // D5 subsumes everything: once replicas sync, only D5 remains everywhere.
    sy.merge(&sx);
    sz.merge(&sy);
    for replica in [&sx, &sy, &sz] {
        assert_eq!(replica.values(), vec![&"D5"]);
    }
}

#[test]
fn merge_drops_what_the_other_side_superseded_and_keeps_what_it_never_saw() {
    let mut a = Object::new();
    a.put(SX, &Context::empty(), "old", 1);
    let mut b = a.clone();
    b.put(SY, &a.context(), "new", 2);
    a.put(SX, &Context::empty(), "unseen by b", 3);
    a.merge(&b);
    assert_eq!(a.values(), vec![&"unseen by b", &"new"]);
}

#[test]
fn prune_keeps_at_most_max_entries_oldest_first_and_reports_how_many() {
    let mut replica = Object::new();
    for node in 1..=6 {
        replica.put(Actor::new(node, 0), &Context::empty(), node, node * 100);
    }
    // One write collapses all six siblings; its coordinator is the newest entry.
    replica.put(SZ, &replica.context(), 0, 1_000);
    assert_eq!(replica.clock().len(), 6);
    let removed = replica.prune(&PrunePolicy { max_entries: 3 });
    assert_eq!(removed, 3);
    let kept: Vec<u64> = clock_of(&replica).iter().map(|e| e.0).collect();
    assert_eq!(
        kept,
        vec![3, 5, 6],
        "entries written at 100, 200 and 400 went first"
    );
    assert_eq!(replica.prune(&PrunePolicy { max_entries: 3 }), 0);
    assert_eq!(
        replica.values(),
        vec![&0],
        "pruning never removes a sibling"
    );
}

#[test]
fn prune_keeps_the_entries_that_cover_current_siblings() {
    let mut replica = Object::new();
    replica.put(SX, &Context::empty(), "x", 1);
    replica.put(SY, &Context::empty(), "y", 2);
    replica.put(SZ, &Context::empty(), "z", 3);
    assert_eq!(replica.prune(&PrunePolicy { max_entries: 1 }), 0);
    // A client holding the context can still replace every sibling.
    replica.put(SX, &replica.context(), "resolved", 4);
    assert_eq!(replica.values(), vec![&"resolved"]);
}

#[test]
fn a_coordinator_whose_entry_was_pruned_never_reuses_a_counter() {
    let mut home = Object::new();
    for _ in 0..3 {
        home.put(SX, &home.context(), "sx", 1);
    }
    let peer = home.clone(); // the cluster has seen (Sx, 3)
    home.put(SY, &home.context(), "sy", 2);
    assert_eq!(home.prune(&PrunePolicy { max_entries: 1 }), 1);
    assert_eq!(home.clock().get(&SX), 0, "Sx's entry is gone");

    let dot = home.put(SX, &Context::empty(), "after prune", 3);
    assert!(
        dot.counter > 3,
        "issued {dot:?}, which the cluster has not seen"
    );
    let mut at_peer = peer;
    at_peer.merge(&home);
    assert!(at_peer.values().contains(&&"after prune"));
}

#[test]
fn resolve_lww_keeps_the_latest_timestamp_and_breaks_ties_by_dot() {
    let mut replica = Object::new();
    replica.put(SY, &Context::empty(), "late", 50);
    replica.put(SX, &Context::empty(), "early", 10);
    replica.put(SZ, &Context::empty(), "late too", 50);
    let clock_before = replica.clock().clone();
    let winner = replica.resolve_lww().map(|s| s.value);
    assert_eq!(
        winner,
        Some("late too"),
        "equal timestamps: the greater dot wins"
    );
    assert_eq!(replica.values(), vec![&"late too"]);
    assert_eq!(replica.clock(), &clock_before);
    assert_eq!(Object::<u8>::new().resolve_lww(), None);
}

#[test]
fn retain_drops_siblings_but_keeps_them_superseded() {
    let mut replica = Object::new();
    replica.put(SX, &Context::empty(), Some("v"), 1);
    let mut stale = replica.clone();
    replica.put(SX, &replica.context(), None, 2); // a tombstone
    replica.retain(|s| s.value.is_some());
    assert!(replica.is_empty());
    // The old value does not come back from a stale replica.
    stale.merge(&replica);
    assert!(stale.is_empty());
}

#[test]
fn map_keeps_dots_and_clock() {
    let mut replica = Object::new();
    replica.put(SX, &Context::empty(), "payload", 1);
    replica.put(SY, &Context::empty(), "other", 2);
    let sizes = replica.clone().map(str::len);
    assert_eq!(sizes.clock(), replica.clock());
    assert_eq!(dots(&sizes), dots(&replica));
    assert_eq!(sizes.values(), vec![&7, &5]);
}

#[test]
fn deserialization_accepts_valid_objects_and_rejects_broken_invariants() {
    let mut replica = Object::new();
    replica.put(SX, &Context::empty(), 5u8, 1);
    replica.put(SY, &Context::empty(), 6u8, 2);
    let json = serde_json::to_string(&replica).expect("serializes");
    assert_eq!(
        serde_json::from_str::<Object<u8>>(&json).ok(),
        Some(replica)
    );

    let uncovered = r#"{"clock":{"entries":[]},"siblings":[
        {"dot":{"actor":{"node":1,"epoch":0},"counter":1},"timestamp_ms":0,"value":1}],
        "pruned_counter":0}"#;
    let err = serde_json::from_str::<Object<u8>>(uncovered).map(|_| ());
    assert!(err.is_err_and(|e| e.to_string().contains("not covered")));

    let unsorted = r#"{"clock":{"entries":[{"actor":{"node":1,"epoch":0},"counter":2,"timestamp_ms":0}]},
        "siblings":[
        {"dot":{"actor":{"node":1,"epoch":0},"counter":2},"timestamp_ms":0,"value":1},
        {"dot":{"actor":{"node":1,"epoch":0},"counter":1},"timestamp_ms":0,"value":1}],
        "pruned_counter":0}"#;
    let err = serde_json::from_str::<Object<u8>>(unsorted).map(|_| ());
    assert!(err.is_err_and(|e| e.to_string().contains("canonical order")));

    let bad_clock = r#"{"entries":[{"actor":{"node":1,"epoch":0},"counter":0,"timestamp_ms":0}]}"#;
    let err = serde_json::from_str::<VectorClock>(bad_clock).map(|_| ());
    assert!(err.is_err_and(|e| e.to_string().contains("counter zero")));
}
