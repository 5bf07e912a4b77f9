//! Tests of the redb adapter: the conformance suite, persistence across reopen, format checks,
//! and a model-based comparison against the memory engine.

use std::ops::Deref;

use dynamo_versioning::{Actor, Context};
use proptest::prelude::*;
use tempfile::TempDir;

use super::*;
use crate::engine::EngineExt;
use crate::memory::MemoryEngine;
use crate::object::Content;

/// An engine on a fresh file in its own temporary directory (removed after the engine closes).
struct Fixture {
    engine: RedbEngine,
    dir: TempDir,
}

impl Fixture {
    fn new(durability: Durability) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            cache_bytes: 16 << 20,
            ..Options::with_durability(durability)
        };
        let engine = RedbEngine::open(dir.path().join("data.redb"), options).unwrap();
        Fixture { engine, dir }
    }

    /// Closes the engine and opens the same file again.
    fn reopen(self) -> Fixture {
        let Fixture { engine, dir } = self;
        let options = engine.options().clone();
        let path = engine.path().to_path_buf();
        engine.close().unwrap();
        Fixture {
            engine: RedbEngine::open(path, options).unwrap(),
            dir,
        }
    }
}

impl Deref for Fixture {
    type Target = RedbEngine;
    fn deref(&self) -> &RedbEngine {
        &self.engine
    }
}

mod sync {
    crate::engine_conformance_tests!(super::Fixture::new(super::Durability::Sync));
}

mod buffered {
    crate::engine_conformance_tests!(super::Fixture::new(super::Durability::Buffered));
}

fn key(p: u32, k: &str) -> ObjectKey {
    ObjectKey::new(PartitionId(p), "b", k)
}

fn put(engine: &dyn Engine, k: &ObjectKey, value: &str) -> VersionedObject {
    let context = engine
        .get(k)
        .unwrap()
        .map(|o| o.context())
        .unwrap_or_default();
    engine
        .put_local(
            k,
            Actor::new(1, 0),
            &context,
            Content::new(value.to_owned()),
            1,
        )
        .unwrap()
        .1
}

#[test]
fn reopening_keeps_objects_hints_metadata_and_the_hint_counter() {
    for durability in [Durability::Sync, Durability::Buffered, Durability::None] {
        let fixture = Fixture::new(durability);
        let object = put(&*fixture, &key(1, "a"), "v1");
        put(&*fixture, &key(2, "b"), "v2");
        let owner = NodeId::new("n2").unwrap();
        let first = fixture.put_hint(&owner, &key(1, "a"), &object, 5).unwrap();
        let second = fixture.put_hint(&owner, &key(1, "a"), &object, 6).unwrap();
        fixture.remove_hint(second).unwrap();
        fixture.set_meta("epoch", b"7").unwrap();

        let fixture = fixture.reopen();
        assert_eq!(
            fixture.get(&key(1, "a")).unwrap(),
            Some(object.clone()),
            "{durability:?}"
        );
        assert_eq!(fixture.scan_bucket(b"b", None, 10).unwrap().len(), 2);
        let hints = fixture.hints(None, None, 10).unwrap();
        assert_eq!(hints.iter().map(|h| h.id).collect::<Vec<_>>(), vec![first]);
        assert_eq!(fixture.get_meta("epoch").unwrap(), Some(b"7".to_vec()));
        let third = fixture.put_hint(&owner, &key(1, "a"), &object, 7).unwrap();
        assert!(third > second, "hint ids continue after reopen");
    }
}

#[test]
fn flush_is_answered_in_every_mode() {
    for durability in [Durability::Sync, Durability::Buffered, Durability::None] {
        let fixture = Fixture::new(durability);
        fixture.flush().unwrap();
        put(&*fixture, &key(1, "a"), "v");
        fixture.flush().unwrap();
        fixture.flush().unwrap();
        assert!(fixture.get(&key(1, "a")).unwrap().is_some());
    }
}

#[test]
fn a_second_engine_on_an_open_file_is_refused() {
    let fixture = Fixture::new(Durability::Sync);
    let err = RedbEngine::open(fixture.path(), Options::default())
        .err()
        .unwrap();
    assert!(matches!(err, Error::AlreadyOpen { .. }), "{err}");
}

#[test]
fn a_file_with_a_newer_format_is_refused() {
    let fixture = Fixture::new(Durability::Sync);
    let path = fixture.path().to_path_buf();
    let Fixture { engine, dir } = fixture;
    engine.close().unwrap();
    format::force_format_version(&path, FORMAT_VERSION + 1).unwrap();
    let err = RedbEngine::open(&path, Options::default()).err().unwrap();
    assert!(matches!(err, Error::NewerFormat { .. }), "{err}");
    drop(dir);
}

#[test]
fn a_garbage_file_is_refused_and_not_modified() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.redb");
    let garbage: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let err = RedbEngine::open(&path, Options::default()).err().unwrap();
    assert!(matches!(err, Error::NotADataFile { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
}

#[test]
fn an_undecodable_record_is_an_error_naming_its_key() {
    let fixture = Fixture::new(Durability::Sync);
    let good = key(3, "good");
    let bad = key(3, "bad\u{1}");
    put(&*fixture, &good, "v");
    let path = fixture.path().to_path_buf();
    let Fixture { engine, dir } = fixture;
    engine.close().unwrap();
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(OBJECTS)
            .unwrap()
            .insert(
                keys::encode(&bad).as_slice(),
                &[crate::RECORD_VERSION, 0xFF][..],
            )
            .unwrap();
        txn.commit().unwrap();
    }
    let engine = RedbEngine::open(&path, Options::default()).unwrap();
    let err = engine.get(&bad).unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");
    assert!(err.to_string().contains("key \"bad\\x01\""), "{err}");
    assert!(engine.scan_partition(PartitionId(3), None, 10).is_err());
    // The damage is contained: other keys read, and the bad one can be overwritten by a merge.
    assert!(engine.get(&good).unwrap().is_some());
    assert!(matches!(
        engine.put_merge(&bad, VersionedObject::new()),
        Err(Error::Decode { .. })
    ));
    assert!(
        engine
            .remove_if_unchanged(&bad, &VersionedObject::new())
            .is_err()
    );
    engine.close().unwrap();
    drop(dir);
}

#[test]
fn explicit_durability_can_exceed_the_default() {
    let fixture = Fixture::new(Durability::None);
    let k = key(1, "durable");
    let mut object = VersionedObject::new();
    object.put(Actor::new(1, 0), &Context::empty(), Content::new("v"), 1);
    let stored = fixture
        .put_merge_with(&k, Durability::Sync, object)
        .unwrap();
    assert_eq!(fixture.get(&k).unwrap(), Some(stored));
}

#[test]
fn a_small_batch_limit_still_commits_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        max_batch: 1,
        queue_depth: 1,
        ..Options::default()
    };
    let engine = RedbEngine::open(dir.path().join("d.redb"), options).unwrap();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let engine = &engine;
            scope.spawn(move || {
                for i in 0..10 {
                    put(engine, &key(t, &i.to_string()), "v");
                }
            });
        }
    });
    let total: usize = (0..4)
        .map(|p| {
            engine
                .scan_partition(PartitionId(p), None, 100)
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(total, 40);
}

/// One step of the model-based test.
#[derive(Clone, Debug)]
enum Op {
    Put {
        p: u32,
        k: u8,
        actor: u64,
        value: u8,
        fresh_context: bool,
    },
    Merge {
        p: u32,
        k: u8,
        actor: u64,
        value: u8,
    },
    RemoveIfUnchanged {
        p: u32,
        k: u8,
        stale: bool,
    },
    Hint {
        owner: u8,
        p: u32,
        k: u8,
    },
    RemoveHint {
        nth: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0u32..3;
    let k = 0u8..4;
    prop_oneof![
        (p.clone(), k.clone(), 1u64..3, any::<u8>(), any::<bool>()).prop_map(
            |(p, k, actor, value, fresh_context)| Op::Put {
                p,
                k,
                actor,
                value,
                fresh_context
            }
        ),
        (p.clone(), k.clone(), 3u64..5, any::<u8>()).prop_map(|(p, k, actor, value)| Op::Merge {
            p,
            k,
            actor,
            value
        }),
        (p.clone(), k.clone(), any::<bool>()).prop_map(|(p, k, stale)| Op::RemoveIfUnchanged {
            p,
            k,
            stale
        }),
        (0u8..2, p, k).prop_map(|(owner, p, k)| Op::Hint { owner, p, k }),
        any::<u8>().prop_map(|nth| Op::RemoveHint { nth }),
    ]
}

/// Applies `op` to `engine`; returns what a caller would observe.
fn apply(engine: &dyn Engine, op: &Op) -> String {
    let object_key = |p: u32, k: u8| ObjectKey::new(PartitionId(p), "b", vec![k]);
    match *op {
        Op::Put {
            p,
            k,
            actor,
            value,
            fresh_context,
        } => {
            let key = object_key(p, k);
            let context = if fresh_context {
                Context::empty()
            } else {
                engine
                    .get(&key)
                    .unwrap()
                    .map(|o| o.context())
                    .unwrap_or_default()
            };
            let result = engine.put_local(
                &key,
                Actor::new(actor, 0),
                &context,
                Content::new(vec![value]),
                1,
            );
            format!("{result:?}")
        }
        Op::Merge { p, k, actor, value } => {
            let mut object = VersionedObject::new();
            object.put(
                Actor::new(actor, 0),
                &Context::empty(),
                Content::new(vec![value]),
                2,
            );
            format!("{:?}", engine.put_merge(&object_key(p, k), object))
        }
        Op::RemoveIfUnchanged { p, k, stale } => {
            let key = object_key(p, k);
            let expected = match engine.get(&key).unwrap() {
                Some(object) if !stale => object,
                _ => VersionedObject::new(),
            };
            format!("{:?}", engine.remove_if_unchanged(&key, &expected))
        }
        Op::Hint { owner, p, k } => {
            let owner = NodeId::new(format!("n{owner}")).unwrap();
            let object = engine.get(&object_key(p, k)).unwrap().unwrap_or_default();
            format!(
                "{:?}",
                engine.put_hint(&owner, &object_key(p, k), &object, 9)
            )
        }
        Op::RemoveHint { nth } => {
            let hints = engine.hints(None, None, usize::MAX).unwrap();
            match hints.get(usize::from(nth) % hints.len().max(1)) {
                Some(hint) => format!("{:?}", engine.remove_hint(hint.id)),
                None => "no hints".to_owned(),
            }
        }
    }
}

/// Everything a caller can list.
fn snapshot(engine: &dyn Engine) -> String {
    let objects: Vec<_> = (0..3)
        .flat_map(|p| {
            engine
                .scan_partition(PartitionId(p), None, usize::MAX)
                .unwrap()
        })
        .collect();
    let listed = engine.scan_bucket(b"b", None, usize::MAX).unwrap();
    let hints = engine.hints(None, None, usize::MAX).unwrap();
    let n0 = engine
        .hints(Some(&NodeId::new("n0").unwrap()), None, usize::MAX)
        .unwrap();
    format!(
        "{objects:?}\n{listed:?}\n{hints:?}\n{n0:?}\n{}",
        engine.hint_count().unwrap()
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The redb engine behaves exactly like the reference engine on any sequence of operations,
    /// before and after a reopen.
    #[test]
    fn redb_matches_the_memory_model(ops in proptest::collection::vec(op(), 1..40)) {
        let model = MemoryEngine::new();
        let fixture = Fixture::new(Durability::None);
        for op in &ops {
            prop_assert_eq!(apply(&model, op), apply(&*fixture, op), "{:?}", op);
        }
        prop_assert_eq!(snapshot(&model), snapshot(&*fixture));
        let fixture = fixture.reopen();
        prop_assert_eq!(snapshot(&model), snapshot(&*fixture));
    }
}

#[test]
fn writer_stats_count_writes_commits_and_fsyncs() {
    let fixture = Fixture::new(Durability::Sync);
    let before = fixture.writer_stats();
    std::thread::scope(|scope| {
        for t in 0..8 {
            let fixture = &fixture;
            scope.spawn(move || {
                for i in 0..5 {
                    put(&**fixture, &key(t, &i.to_string()), "v");
                }
            });
        }
    });
    let after = fixture.writer_stats();
    assert_eq!(after.writes - before.writes, 40);
    assert!(after.commits - before.commits <= 40);
    assert_eq!(
        after.fsyncs - before.fsyncs,
        after.commits - before.commits,
        "Sync fsyncs every commit"
    );
    assert_eq!(after.failed_batches, 0);

    let buffered = Fixture::new(Durability::None);
    put(&*buffered, &key(1, "a"), "v");
    assert_eq!(
        buffered.writer_stats().fsyncs,
        0,
        "no fsync on the write path"
    );
    buffered.flush().unwrap();
    assert_eq!(buffered.writer_stats().fsyncs, 1, "flush fsyncs once");
}

#[test]
fn buffered_writes_are_fsynced_in_the_background_without_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        flush_interval: std::time::Duration::from_millis(10),
        ..Options::with_durability(Durability::Buffered)
    };
    let engine = RedbEngine::open(dir.path().join("d.redb"), options).unwrap();
    put(&engine, &key(1, "a"), "v");
    assert_eq!(
        engine.writer_stats().fsyncs,
        0,
        "the write itself was not fsynced"
    );
    // Poll (no fixed sleep) until the writer's background flush has run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while engine.writer_stats().fsyncs == 0 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(engine.writer_stats().fsyncs, 1);
    // Nothing left to flush: another flush does not fsync again.
    engine.flush().unwrap();
    assert_eq!(engine.writer_stats().fsyncs, 1);
}

/// Damage to any page of a closed file (a bad disk, a stray write) is either refused at open or
/// reported by the reads that meet it (or goes unnoticed where redb trusts the page), but never
/// panics. `verify_on_open` is the way to catch all of it up front.
#[test]
fn damaged_pages_never_cause_a_panic() {
    let fixture = Fixture::new(Durability::Sync);
    for i in 0..300 {
        put(&*fixture, &key(i % 4, &format!("k{i}")), &"v".repeat(200));
    }
    let path = fixture.path().to_path_buf();
    let Fixture { engine, dir } = fixture;
    engine.close().unwrap();
    let pristine = std::fs::read(&path).unwrap();
    const PAGE: usize = 4096;
    let mut refused = 0;
    for page in (1..pristine.len() / PAGE).step_by(2) {
        let mut damaged = pristine.clone();
        for byte in &mut damaged[page * PAGE + 100..page * PAGE + 200] {
            *byte ^= 0x5A;
        }
        std::fs::write(&path, &damaged).unwrap();
        let outcome =
            std::panic::catch_unwind(|| match RedbEngine::open(&path, Options::default()) {
                Err(err) => Some(err),
                Ok(engine) => {
                    for p in 0..4 {
                        let _ = engine.scan_partition(PartitionId(p), None, 1000);
                        let _ = engine.get(&key(p, "k1"));
                    }
                    None
                }
            });
        match outcome {
            Ok(Some(err)) => {
                assert!(matches!(err, Error::Corrupt { .. }), "page {page}: {err}");
                refused += 1;
            }
            Ok(None) => {}
            Err(_) => panic!("damage to page {page} caused a panic"),
        }
    }
    assert!(
        refused > 0,
        "damage to the tree's own pages is refused at open"
    );
    std::fs::write(&path, &pristine).unwrap();
    let verified = Options {
        verify_on_open: true,
        ..Options::default()
    };
    assert!(
        RedbEngine::open(&path, verified).is_ok(),
        "an intact file passes verification"
    );
    drop(dir);
}
