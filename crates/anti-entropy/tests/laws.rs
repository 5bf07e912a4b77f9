//! Laws of the hash tree and the exchange, as proptests.

use std::collections::BTreeMap;

use dynamo_anti_entropy::{
    Ask, Caps, Confirmations, Exchange, Found, HashTree, KeyClocks, LEAVES, Step, key_clocks,
    key_hash,
};
use dynamo_storage::{Content, VersionedObject};
use dynamo_versioning::Actor;
use proptest::prelude::*;

type Key = (Vec<u8>, Vec<u8>);
type Replica = BTreeMap<Key, VersionedObject>;

fn key(i: u8) -> Key {
    (
        format!("b{}", i % 3).into_bytes(),
        format!("k{i}").into_bytes(),
    )
}

/// Applies a coordinator-style write of key `i` by `actor` on top of what `replica` holds.
fn write(replica: &mut Replica, i: u8, actor: u64, n: u64) {
    let object = replica.entry(key(i)).or_default();
    let ctx = object.context();
    let deleted = n.is_multiple_of(5);
    let content = if deleted {
        Content::tombstone()
    } else {
        Content::new(format!("v{n}"))
    };
    object.put(Actor::new(actor, 1), &ctx, content, n);
}

fn tree_of(replica: &Replica) -> HashTree {
    HashTree::from_hashes(replica.iter().filter_map(|((b, k), o)| key_hash(b, k, o)))
}

fn clocks(replica: &Replica, leaves: &[dynamo_anti_entropy::Leaf], max: usize) -> KeyClocks {
    key_clocks(
        replica
            .iter()
            .map(|((b, k), o)| (b.as_slice(), k.as_slice(), o)),
        leaves,
        max,
    )
}

/// Runs one exchange between two in-memory replicas.
fn exchange(local: &Replica, remote: &Replica, caps: Caps) -> Found {
    let (lt, rt) = (tree_of(local), tree_of(remote));
    let mut ex = Exchange::new(caps);
    let mut step = ex.roots(lt.root(), rt.root()).unwrap();
    loop {
        step = match step {
            Step::Done(found) => return found,
            Step::Ask(Ask::Branches) => ex.branches(lt.branches(), rt.branches()).unwrap(),
            Step::Ask(Ask::Leaves(branches)) => {
                let side = |t: &HashTree| -> Vec<Vec<u64>> {
                    branches
                        .iter()
                        .map(|b| t.branch_leaves(*b).to_vec())
                        .collect()
                };
                ex.leaves(&side(&lt), &side(&rt)).unwrap()
            }
            Step::Ask(Ask::KeyClocks(leaves)) => ex
                .key_clocks(
                    &clocks(local, &leaves, caps.max_keys),
                    &clocks(remote, &leaves, caps.max_keys),
                )
                .unwrap(),
        };
    }
}

/// Carries out a repair plan with merges, both ways.
fn repair(local: &mut Replica, remote: &mut Replica, found: &Found) {
    let mut confirmations = Confirmations::default();
    assert!(confirmations.confirm(found).is_empty(), "seen once only");
    let plan = confirmations.confirm(found);
    for k in &plan.pull {
        let theirs = remote.get(k).cloned().unwrap_or_default();
        local.entry(k.clone()).or_default().merge(&theirs);
    }
    for k in &plan.push {
        let mine = local.get(k).cloned().unwrap_or_default();
        remote.entry(k.clone()).or_default().merge(&mine);
    }
}

fn writes() -> impl Strategy<Value = Vec<(u8, u64)>> {
    proptest::collection::vec((0u8..40, 1u64..4), 0..60)
}

fn replicas(common: &[(u8, u64)], a: &[(u8, u64)], b: &[(u8, u64)]) -> (Replica, Replica) {
    let (mut x, mut y) = (Replica::new(), Replica::new());
    for (n, &(i, actor)) in common.iter().enumerate() {
        write(&mut x, i, actor, n as u64 + 1);
    }
    y.clone_from(&x);
    for (n, &(i, actor)) in a.iter().enumerate() {
        write(&mut x, i, actor, 1_000 + n as u64);
    }
    for (n, &(i, actor)) in b.iter().enumerate() {
        write(&mut y, i, 10 + actor, 2_000 + n as u64);
    }
    (x, y)
}

fn generous() -> Caps {
    Caps {
        max_leaves: LEAVES,
        max_keys: usize::MAX,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn insertion_order_does_not_matter(
        ws in writes(),
        order in Just((0..64).collect::<Vec<usize>>()).prop_shuffle(),
    ) {
        let (replica, _) = replicas(&ws, &[], &[]);
        let hashes: Vec<_> = replica.iter().filter_map(|((b, k), o)| key_hash(b, k, o)).collect();
        let shuffled: Vec<_> = order.iter().filter_map(|&i| hashes.get(i).copied()).collect();
        prop_assert_eq!(shuffled.len(), hashes.len());
        prop_assert_eq!(HashTree::from_hashes(hashes), HashTree::from_hashes(shuffled));
    }

    #[test]
    fn insert_then_remove_is_the_identity(base in writes(), extra in writes()) {
        let (replica, _) = replicas(&base, &[], &[]);
        let mut tree = tree_of(&replica);
        let before = tree.clone();
        let (more, _) = replicas(&extra, &[], &[]);
        let added: Vec<_> = more
            .iter()
            .filter_map(|((b, k), o)| key_hash(b, k, o))
            .collect();
        for h in &added {
            tree.insert(*h);
        }
        for h in &added {
            tree.remove(*h);
        }
        prop_assert_eq!(tree, before);
    }

    #[test]
    fn incremental_updates_equal_a_rebuild(ws in writes()) {
        let mut replica = Replica::new();
        let mut tree = HashTree::new();
        for (n, &(i, actor)) in ws.iter().enumerate() {
            let (b, k) = key(i);
            let old = replica.get(&key(i)).and_then(|o| key_hash(&b, &k, o));
            write(&mut replica, i, actor, n as u64 + 1);
            let new = key_hash(&b, &k, &replica[&key(i)]).unwrap();
            tree.update(new.leaf, old.map(|h| h.value), Some(new.value));
        }
        prop_assert_eq!(tree, tree_of(&replica));
    }

    #[test]
    fn an_exchange_finds_exactly_the_differing_keys(
        common in writes(), a in writes(), b in writes(),
    ) {
        let (x, y) = replicas(&common, &a, &b);
        let found = exchange(&x, &y, generous());
        let hash = |r: &Replica, k: &Key| r.get(k).and_then(|o| key_hash(&k.0, &k.1, o)).map(|h| h.value);
        let mut expected: Vec<Key> = x.keys().chain(y.keys())
            .filter(|k| hash(&x, k) != hash(&y, k))
            .cloned()
            .collect();
        expected.sort();
        expected.dedup();
        let got: Vec<Key> = found.differences.iter().map(|d| (d.bucket.clone(), d.key.clone())).collect();
        prop_assert_eq!(got, expected);
        prop_assert!(!found.truncated);
        prop_assert!(exchange(&x, &x.clone(), generous()).differences.is_empty());
    }

    #[test]
    fn after_repair_the_trees_are_equal(
        common in writes(), a in writes(), b in writes(), max_leaves in 1usize..8, max_keys in 1usize..6,
    ) {
        let (mut x, mut y) = replicas(&common, &a, &b);
        let caps = Caps { max_leaves, max_keys };
        // Small caps need several rounds; each round repairs what it confirmed.
        for _ in 0..200 {
            let found = exchange(&x, &y, caps);
            if found.differences.is_empty() && !found.truncated {
                break;
            }
            repair(&mut x, &mut y, &found);
        }
        prop_assert_eq!(tree_of(&x), tree_of(&y));
        prop_assert_eq!(x, y);
    }
}
