//! The conformance suite: what every [`Engine`] must do, written once and run against every adapter.
//!
//! Each case is a function taking a fresh, empty engine and panicking (like a test assertion)
//! when the engine breaks the contract. [`engine_conformance_tests!`](crate::engine_conformance_tests)
//! turns the whole suite into one `#[test]` per case for an adapter:
//!
//! ```ignore
//! dynamo_storage::engine_conformance_tests!(Box::new(MyEngine::new()));
//! ```
//!
//! The expression is evaluated once per case and must dereference to the engine (a `Box`, or a
//! fixture that also owns a temporary directory). Other crates enable the `conformance` feature
//! to test their own adapters.

use std::collections::BTreeSet;

use dynamo_ring::{NodeId, PartitionId};
use dynamo_versioning::{Actor, Context};

use crate::engine::{Engine, EngineExt};
use crate::error::Error;
use crate::object::{Content, ObjectKey, VersionedObject};

/// Generates one `#[test]` per conformance case for the engine built by `$new`.
#[macro_export]
macro_rules! engine_conformance_tests {
    ($new:expr) => {
        $crate::engine_conformance_tests!(@cases $new;
            absent_keys_read_as_none,
            put_then_get_returns_the_write,
            concurrent_writes_become_siblings_and_a_covering_write_replaces_them,
            replica_merge_keeps_concurrent_versions_and_drops_dominated_ones,
            concurrent_updates_lose_nothing,
            update_then_reports_every_outcome_once,
            update_staged_shows_the_object_before_the_commit_answer,
            a_failed_or_panicking_update_changes_nothing,
            partition_scan_is_ordered_and_pages_with_a_cursor,
            bucket_listing_spans_partitions_and_pages,
            hints_round_trip_and_ids_are_never_reused,
            metadata_round_trips,
            limits_are_enforced_and_a_refused_write_leaves_nothing,
            remove_if_unchanged_refuses_a_changed_object,
            tombstones_are_listed_and_reaped_only_when_unchanged,
        );
    };
    (@cases $new:expr; $($case:ident),+ $(,)?) => {$(
        #[test]
        fn $case() {
            let fixture = $new;
            $crate::conformance::$case(&*fixture);
        }
    )+};
}

fn key(p: u32, bucket: &str, key: &str) -> ObjectKey {
    ObjectKey::new(PartitionId(p), bucket, key)
}

fn actor(node: u64) -> Actor {
    Actor::new(node, 0)
}

fn node(name: &str) -> NodeId {
    match NodeId::new(name) {
        Ok(id) => id,
        Err(err) => panic!("test node name {name:?} is invalid: {err}"),
    }
}

/// Values of an object's siblings as UTF-8 strings, in sibling order.
fn values(object: &VersionedObject) -> Vec<String> {
    object
        .values()
        .iter()
        .map(|c| String::from_utf8_lossy(&c.value).into_owned())
        .collect()
}

/// Writes `value` at `k` as a new version on top of whatever is stored.
fn write<E: Engine + ?Sized>(engine: &E, k: &ObjectKey, value: &str) -> VersionedObject {
    let context = engine
        .get(k)
        .unwrap()
        .map(|o| o.context())
        .unwrap_or_default();
    engine
        .put_local(k, actor(1), &context, Content::new(value.to_owned()), 1)
        .unwrap()
        .1
}

/// A key that was never written reads as `None` and scans as nothing.
pub fn absent_keys_read_as_none<E: Engine + ?Sized>(engine: &E) {
    assert_eq!(engine.get(&key(0, "b", "k")).unwrap(), None);
    assert!(
        engine
            .scan_partition(PartitionId(0), None, 10)
            .unwrap()
            .is_empty()
    );
    assert!(engine.scan_bucket(b"b", None, 10).unwrap().is_empty());
}

/// A write is returned by the next read, with its metadata.
pub fn put_then_get_returns_the_write<E: Engine + ?Sized>(engine: &E) {
    let k = key(5, "users", "alice");
    let content = Content {
        value: bytes::Bytes::from_static(b"{\"age\":30}"),
        content_type: Some("application/json".into()),
        user_meta: vec![("color".into(), "blue".into())],
        deleted: false,
    };
    let (dot, stored) = engine
        .put_local(&k, actor(1), &Context::empty(), content.clone(), 7)
        .unwrap();
    assert_eq!(dot.actor, actor(1));
    let read = engine.get(&k).unwrap().expect("the write is visible");
    assert_eq!(read, stored);
    assert_eq!(read.values(), vec![&content]);
    assert_eq!(read.siblings()[0].timestamp_ms, 7);
    // Other keys are untouched.
    assert_eq!(engine.get(&key(5, "users", "bob")).unwrap(), None);
    assert_eq!(engine.get(&key(6, "users", "alice")).unwrap(), None);
}

/// Two writes on the same context are both kept; a write covering both replaces them.
pub fn concurrent_writes_become_siblings_and_a_covering_write_replaces_them<E: Engine + ?Sized>(
    engine: &E,
) {
    let k = key(1, "b", "k");
    let base = write(engine, &k, "v0").context();
    engine
        .put_local(&k, actor(1), &base, Content::new("left"), 2)
        .unwrap();
    let (_, both) = engine
        .put_local(&k, actor(2), &base, Content::new("right"), 3)
        .unwrap();
    let mut seen = values(&both);
    seen.sort();
    assert_eq!(seen, vec!["left", "right"]);
    assert_eq!(engine.get(&k).unwrap(), Some(both.clone()));
    let (_, resolved) = engine
        .put_local(&k, actor(2), &both.context(), Content::new("merged"), 4)
        .unwrap();
    assert_eq!(values(&resolved), vec!["merged"]);
    assert_eq!(
        engine.get(&k).unwrap().map(|o| values(&o)),
        Some(vec!["merged".to_owned()])
    );
}

/// Replica writes merge: concurrent versions become siblings, a dominating one replaces, and
/// merging the same version again changes nothing.
pub fn replica_merge_keeps_concurrent_versions_and_drops_dominated_ones<E: Engine + ?Sized>(
    engine: &E,
) {
    let k = key(2, "b", "k");
    let mut on_a = VersionedObject::new();
    on_a.put(actor(1), &Context::empty(), Content::new("a"), 1);
    let mut on_b = VersionedObject::new();
    on_b.put(actor(2), &Context::empty(), Content::new("b"), 2);

    engine.put_merge(&k, on_a.clone()).unwrap();
    let merged = engine.put_merge(&k, on_b.clone()).unwrap();
    let mut seen = values(&merged);
    seen.sort();
    assert_eq!(seen, vec!["a", "b"]);
    assert_eq!(
        engine.put_merge(&k, on_b.clone()).unwrap(),
        merged,
        "merge is idempotent"
    );

    let mut newer = merged.clone();
    newer.put(actor(3), &merged.context(), Content::new("c"), 3);
    engine.put_merge(&k, newer.clone()).unwrap();
    assert_eq!(engine.get(&k).unwrap(), Some(newer.clone()));
    // An old version arriving late is absorbed, not resurrected.
    assert_eq!(engine.put_merge(&k, on_a).unwrap(), newer);
}

/// Many threads incrementing one counter through `update` lose no increment.
pub fn concurrent_updates_lose_nothing<E: Engine + ?Sized>(engine: &E) {
    const THREADS: u64 = 8;
    const INCREMENTS: u64 = 25;
    let k = key(3, "counters", "c");
    let parse = |object: &VersionedObject| -> u64 {
        object
            .values()
            .first()
            .and_then(|c| std::str::from_utf8(&c.value).ok()?.parse().ok())
            .unwrap_or(0)
    };
    let seen = std::sync::Mutex::new(BTreeSet::new());
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (seen, k) = (&seen, &k);
            scope.spawn(move || {
                for _ in 0..INCREMENTS {
                    let stored = engine
                        .update(
                            k,
                            Box::new(move |stored| {
                                let mut object = stored.unwrap_or_default();
                                let next = parse(&object) + 1;
                                let context = object.context();
                                object.put(
                                    actor(thread),
                                    &context,
                                    Content::new(next.to_string()),
                                    1,
                                );
                                Ok(object)
                            }),
                        )
                        .unwrap();
                    seen.lock().unwrap().insert(parse(&stored));
                }
            });
        }
    });
    let last = engine.get(&k).unwrap().expect("counter exists");
    assert_eq!(last.siblings().len(), 1);
    assert_eq!(parse(&last), THREADS * INCREMENTS);
    // Every update saw a distinct predecessor: each value was returned exactly once.
    assert_eq!(
        seen.into_inner().unwrap(),
        (1..=THREADS * INCREMENTS).collect()
    );
}

/// `update_then` answers every update exactly once, with what was stored (or the refusal), and
/// updates queued without waiting lose nothing.
pub fn update_then_reports_every_outcome_once<E: Engine + ?Sized>(engine: &E) {
    const UPDATES: u64 = 50;
    let k = key(4, "async", "k");
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..UPDATES {
        let tx = tx.clone();
        engine.update_then(
            &k,
            engine.durability(),
            Box::new(move |stored| {
                let mut object = stored.unwrap_or_default();
                let context = object.context();
                object.put(actor(1), &context, Content::new(i.to_string()), 1);
                Ok(object)
            }),
            Box::new(move |outcome| {
                let _ = tx.send(outcome.map(|o| values(&o)));
            }),
        );
    }
    let refused = key(4, "", "empty-bucket");
    let tx2 = tx.clone();
    engine.update_then(
        &refused,
        engine.durability(),
        Box::new(|stored| Ok(stored.unwrap_or_default())),
        Box::new(move |outcome| {
            let _ = tx2.send(outcome.map(|o| values(&o)));
        }),
    );
    drop(tx);
    let answers: Vec<_> = rx.iter().collect();
    assert_eq!(answers.len() as u64, UPDATES + 1, "one answer per update");
    assert_eq!(
        answers.iter().filter(|a| a.is_err()).count(),
        1,
        "only the empty bucket is refused"
    );
    let last = engine.get(&k).unwrap().expect("written");
    assert_eq!(values(&last), vec![(UPDATES - 1).to_string()]);
    assert_eq!(last.clock().get(&actor(1)), UPDATES);
}

/// `update_staged` reports the staged object (what is then committed) before the commit's answer,
/// and never reports one for an update that is refused.
pub fn update_staged_shows_the_object_before_the_commit_answer<E: Engine + ?Sized>(engine: &E) {
    let k = key(5, "staged", "k");
    let (tx, rx) = std::sync::mpsc::channel();
    let applied_tx = tx.clone();
    engine.update_staged(
        &k,
        engine.durability(),
        Box::new(|stored| {
            let mut object = stored.unwrap_or_default();
            object.put(actor(1), &Context::empty(), Content::new("v".to_owned()), 1);
            Ok(object)
        }),
        Box::new(move |object| {
            let _ = applied_tx.send(("applied", Ok(values(object))));
        }),
        Box::new(move |outcome| {
            let _ = tx.send(("done", outcome.map(|o| values(&o))));
        }),
    );
    let first = rx.recv().unwrap();
    let second = rx.recv().unwrap();
    assert_eq!(first.0, "applied");
    assert_eq!(second.0, "done");
    assert_eq!(first.1.unwrap(), vec!["v".to_owned()]);
    assert_eq!(second.1.unwrap(), vec!["v".to_owned()]);

    let (tx, rx) = std::sync::mpsc::channel();
    let applied_tx = tx.clone();
    engine.update_staged(
        &k,
        engine.durability(),
        Box::new(|_| Err(Error::Rejected("no".into()))),
        Box::new(move |_| {
            let _ = applied_tx.send("applied");
        }),
        Box::new(move |outcome| {
            assert!(outcome.is_err());
            let _ = tx.send("done");
        }),
    );
    let answers: Vec<&str> = rx.iter().collect();
    assert_eq!(
        answers,
        vec!["done"],
        "a refused update is never reported as staged"
    );
    assert_eq!(
        values(&engine.get(&k).unwrap().unwrap()),
        vec!["v".to_owned()]
    );
}

/// An update whose function fails, panics or returns an oversized object stores nothing.
pub fn a_failed_or_panicking_update_changes_nothing<E: Engine + ?Sized>(engine: &E) {
    let k = key(4, "b", "k");
    let before = write(engine, &k, "v1");
    let err = engine
        .update(&k, Box::new(|_| Err(Error::Rejected("no thanks".into()))))
        .unwrap_err();
    assert!(
        matches!(err, Error::Rejected(ref why) if why == "no thanks"),
        "{err}"
    );
    let err = engine
        .update(&k, Box::new(|_| panic!("update function bug")))
        .unwrap_err();
    assert!(matches!(err, Error::Rejected(_)), "{err}");
    let big = "x".repeat(engine.limits().max_value_len + 1);
    let err = engine
        .update(
            &k,
            Box::new(move |stored| {
                let mut object = stored.unwrap_or_default();
                let context = object.context();
                object.put(actor(1), &context, Content::new(big), 2);
                Ok(object)
            }),
        )
        .unwrap_err();
    assert!(matches!(err, Error::ValueTooLong { .. }), "{err}");
    assert_eq!(engine.get(&k).unwrap(), Some(before));
    // The engine still takes writes afterwards.
    assert_eq!(values(&write(engine, &k, "v2")), vec!["v2"]);
}

/// A partition scans in (bucket, key) order, pages by cursor, and excludes other partitions.
pub fn partition_scan_is_ordered_and_pages_with_a_cursor<E: Engine + ?Sized>(engine: &E) {
    let names = ["b/2", "a/1", "a/10", "a/", "b/1", "a/2", "c/0"];
    for (i, name) in names.iter().enumerate() {
        let (bucket, k) = name.split_once('/').unwrap_or((name, ""));
        for p in [1, 2, 3] {
            write(engine, &key(p, bucket, k), &format!("{p}{i}"));
        }
    }
    let mut expected: Vec<ObjectKey> = names
        .iter()
        .map(|name| {
            let (bucket, k) = name.split_once('/').unwrap_or((name, ""));
            key(2, bucket, k)
        })
        .collect();
    expected.sort();
    let mut scanned = Vec::new();
    let mut after: Option<ObjectKey> = None;
    loop {
        let page = engine
            .scan_partition(PartitionId(2), after.as_ref(), 3)
            .unwrap();
        assert!(page.len() <= 3);
        for (k, object) in &page {
            assert_eq!(engine.get(k).unwrap().as_ref(), Some(object));
        }
        scanned.extend(page.iter().map(|(k, _)| k.clone()));
        if page.len() < 3 {
            break;
        }
        after = page.last().map(|(k, _)| k.clone());
    }
    assert_eq!(scanned, expected);
    assert_eq!(
        engine.scan_partition(PartitionId(2), None, 0).unwrap(),
        vec![]
    );
    let foreign = key(1, "a", "1");
    let err = engine
        .scan_partition(PartitionId(2), Some(&foreign), 3)
        .unwrap_err();
    assert!(matches!(err, Error::BadCursor(_)), "{err}");
}

/// A bucket lists across partitions in (partition, key) order, pages, and skips other buckets.
pub fn bucket_listing_spans_partitions_and_pages<E: Engine + ?Sized>(engine: &E) {
    let mut expected = Vec::new();
    for p in [0, 5, 6, 9, 1000] {
        for (bucket, k) in [("a", "x"), ("users", "k2"), ("users", "k1"), ("z", "y")] {
            // Partition 6 holds no "users" key: the listing must jump over it.
            if p == 6 && bucket == "users" {
                continue;
            }
            let object_key = key(p, bucket, k);
            write(engine, &object_key, "v");
            if bucket == "users" {
                expected.push(object_key);
            }
        }
    }
    expected.sort();
    for page_size in [1, 2, 3, 100] {
        let mut listed = Vec::new();
        let mut after: Option<ObjectKey> = None;
        loop {
            let page = engine
                .scan_bucket(b"users", after.as_ref(), page_size)
                .unwrap();
            listed.extend(page.iter().map(|(k, _)| k.clone()));
            if page.len() < page_size {
                break;
            }
            after = page.last().map(|(k, _)| k.clone());
        }
        assert_eq!(listed, expected, "page size {page_size}");
    }
    assert!(engine.scan_bucket(b"nobody", None, 10).unwrap().is_empty());
    let err = engine
        .scan_bucket(b"users", Some(&key(0, "a", "x")), 10)
        .unwrap_err();
    assert!(matches!(err, Error::BadCursor(_)), "{err}");
}

/// Hints are stored, listed by owner in id order, paged, removed idempotently, and their ids
/// are never reused.
pub fn hints_round_trip_and_ids_are_never_reused<E: Engine + ?Sized>(engine: &E) {
    let (n2, n3) = (node("n2"), node("n3"));
    let mut object = VersionedObject::new();
    object.put(actor(1), &Context::empty(), Content::new("held"), 1);
    let k = key(7, "b", "k");
    let first = engine.put_hint(&n2, &k, &object, 100).unwrap();
    let second = engine.put_hint(&n3, &k, &object, 101).unwrap();
    let third = engine
        .put_hint(&n2, &key(8, "b", "j"), &object, 102)
        .unwrap();
    assert!(first < second && second < third);
    assert_eq!(engine.hint_count().unwrap(), 3);

    let all = engine.hints(None, None, 10).unwrap();
    assert_eq!(
        all.iter().map(|h| h.id).collect::<Vec<_>>(),
        vec![first, second, third]
    );
    assert_eq!(all[0].owner, n2);
    assert_eq!(all[0].key, k);
    assert_eq!(all[0].object, object);
    assert_eq!(all[0].created_ms, 100);

    let for_n2 = engine.hints(Some(&n2), None, 10).unwrap();
    assert_eq!(
        for_n2.iter().map(|h| h.id).collect::<Vec<_>>(),
        vec![first, third]
    );
    let paged = engine.hints(Some(&n2), Some(first), 10).unwrap();
    assert_eq!(paged.iter().map(|h| h.id).collect::<Vec<_>>(), vec![third]);
    assert_eq!(engine.hints(None, None, 1).unwrap().len(), 1);
    assert!(engine.hints(None, Some(u64::MAX), 10).unwrap().is_empty());
    assert!(
        engine
            .hints(Some(&node("n9")), None, 10)
            .unwrap()
            .is_empty()
    );

    engine.remove_hint(third).unwrap();
    engine.remove_hint(third).unwrap();
    assert_eq!(engine.hint_count().unwrap(), 2);
    assert_eq!(engine.hints(Some(&n2), None, 10).unwrap().len(), 1);
    let fourth = engine.put_hint(&n2, &k, &object, 103).unwrap();
    assert!(fourth > third, "a removed hint's id is not reused");
}

/// Metadata round-trips, overwrites, and refuses bad names.
pub fn metadata_round_trips<E: Engine + ?Sized>(engine: &E) {
    assert_eq!(engine.get_meta("node_id").unwrap(), None);
    engine.set_meta("node_id", b"n1").unwrap();
    assert_eq!(engine.get_meta("node_id").unwrap(), Some(b"n1".to_vec()));
    engine.set_meta("node_id", b"n1-renamed").unwrap();
    assert_eq!(
        engine.get_meta("node_id").unwrap(),
        Some(b"n1-renamed".to_vec())
    );
    engine.set_meta_u64("epoch", 42).unwrap();
    assert_eq!(engine.get_meta_u64("epoch").unwrap(), Some(42));
    assert!(matches!(
        engine.get_meta_u64("node_id"),
        Err(Error::Decode { .. })
    ));
    assert!(matches!(
        engine.set_meta("", b"x"),
        Err(Error::BadMetaName { .. })
    ));
    assert!(matches!(
        engine.get_meta(&"n".repeat(300)),
        Err(Error::BadMetaName { .. })
    ));
}

/// Writes that break a limit are refused with the sizes involved and leave nothing behind.
pub fn limits_are_enforced_and_a_refused_write_leaves_nothing<E: Engine + ?Sized>(engine: &E) {
    let limits = engine.limits();
    let long_bucket = "b".repeat(limits.max_bucket_len + 1);
    let long_key = "k".repeat(limits.max_key_len + 1);
    let big = Content::new("v".repeat(limits.max_value_len + 1));
    let ok = Content::new("fine");
    let cases = [
        (key(1, "", "k"), ok.clone()),
        (key(1, &long_bucket, "k"), ok.clone()),
        (key(1, "b", &long_key), ok.clone()),
        (key(1, "b", "k"), big),
    ];
    for (k, content) in cases {
        let err = engine
            .put_local(&k, actor(1), &Context::empty(), content.clone(), 1)
            .unwrap_err();
        assert!(err.is_invalid_input(), "{err}");
        let mut object = VersionedObject::new();
        object.put(actor(1), &Context::empty(), content, 1);
        assert!(
            engine
                .put_merge(&k, object.clone())
                .unwrap_err()
                .is_invalid_input()
        );
        assert!(
            engine
                .put_hint(&node("n2"), &k, &object, 1)
                .unwrap_err()
                .is_invalid_input()
        );
    }
    let err = engine
        .put_local(
            &key(1, "b", &long_key),
            actor(1),
            &Context::empty(),
            ok.clone(),
            1,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "key is {} bytes, longer than the limit of {}",
            long_key.len(),
            limits.max_key_len
        )
    );
    assert!(matches!(
        engine.put_local(&key(1, "", "k"), actor(1), &Context::empty(), ok.clone(), 1),
        Err(Error::EmptyBucket)
    ));
    assert!(
        engine
            .scan_partition(PartitionId(1), None, 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(engine.hint_count().unwrap(), 0);
    // Exactly at the limits is accepted.
    let at_limit = key(
        1,
        &"b".repeat(limits.max_bucket_len),
        &"k".repeat(limits.max_key_len),
    );
    engine
        .put_local(&at_limit, actor(1), &Context::empty(), ok, 1)
        .unwrap();
    assert_eq!(
        engine
            .scan_partition(PartitionId(1), None, 10)
            .unwrap()
            .len(),
        1
    );
}

/// `remove_if_unchanged` never removes a newer write, and removes an unchanged object once.
pub fn remove_if_unchanged_refuses_a_changed_object<E: Engine + ?Sized>(engine: &E) {
    let k = key(9, "b", "k");
    let old = write(engine, &k, "v1");
    let current = write(engine, &k, "v2");
    assert!(!engine.remove_if_unchanged(&k, &old).unwrap());
    assert_eq!(engine.get(&k).unwrap(), Some(current.clone()));
    assert!(engine.remove_if_unchanged(&k, &current).unwrap());
    assert_eq!(engine.get(&k).unwrap(), None);
    assert!(
        !engine.remove_if_unchanged(&k, &current).unwrap(),
        "idempotent"
    );
}

/// Deleted keys are listed as tombstones; reaping refuses live objects and changed tombstones.
pub fn tombstones_are_listed_and_reaped_only_when_unchanged<E: Engine + ?Sized>(engine: &E) {
    let live = key(11, "b", "live");
    let gone = key(11, "b", "gone");
    let revived = key(11, "b", "revived");
    let live_object = write(engine, &live, "v");
    for k in [&gone, &revived] {
        let context = write(engine, k, "v").context();
        engine.delete_local(k, actor(1), &context, 2).unwrap();
    }
    let mut tombstones = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = engine
            .tombstones(PartitionId(11), after.as_ref(), 1)
            .unwrap();
        tombstones.extend(page);
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let keys: Vec<_> = tombstones.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(keys, vec![gone.clone(), revived.clone()]);

    assert!(matches!(
        engine.reap_if_unchanged(&live, &live_object),
        Err(Error::Rejected(_))
    ));
    assert!(engine.get(&live).unwrap().is_some());

    let revived_tombstone = tombstones[1].1.clone();
    write(engine, &revived, "back");
    assert!(
        !engine
            .reap_if_unchanged(&revived, &revived_tombstone)
            .unwrap()
    );
    assert_eq!(
        engine.get(&revived).unwrap().map(|o| values(&o)),
        Some(vec!["back".to_owned()])
    );

    assert!(engine.reap_if_unchanged(&gone, &tombstones[0].1).unwrap());
    assert_eq!(engine.get(&gone).unwrap(), None);
}
