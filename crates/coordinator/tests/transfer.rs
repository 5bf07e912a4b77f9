//! Partition transfer between coordinators in one process: a four-node cluster gains a fifth node
//! (the next ring), partitions stream to it while clients write, and old owners drop what they no
//! longer replicate. The in-memory `Replicas` can fail, hold or count transfer batches.

mod transfer_support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dynamo_coordinator::{
    BucketProps, Coordinator, DeleteRequest, Error, GetRequest, Quorum, TransferOptions,
    TransferPhase,
};
use dynamo_ring::{Member, NodeId, PartitionId, Ring};
use dynamo_storage::{
    Content, Durability, Engine, MemoryEngine, ObjectKey, VersionedObject, is_deleted,
};
use dynamo_versioning::{Actor, Context};
use tokio::sync::Semaphore;
use transfer_support::{Cluster, Net, Q, eventually, id, put, small_batches, values};

#[tokio::test]
async fn dual_writes_reach_the_next_owners_and_a_missed_one_is_handed_off() {
    let c = Cluster::new();
    c.begin_transition();
    let n5 = id("n5");
    let owned_by_n5 = |key: &str| {
        c.next
            .preference_list(b"b", key.as_bytes(), 3)
            .is_primary(&n5)
    };
    let keys: Vec<String> = (0..200)
        .map(|i| format!("k{i}"))
        .filter(|k| owned_by_n5(k))
        .take(20)
        .collect();
    assert!(!keys.is_empty());
    for k in &keys {
        c.node("n1").put(put(k, "v1")).await.unwrap();
    }
    for k in &keys {
        eventually("the next owner to get the write", || {
            c.stored("n5", "b", k).is_some_and(|o| values(&o) == ["v1"])
        })
        .await;
    }
    // With the next owner down, writes still meet their quorum on the current owners...
    c.net.down.write().insert(n5.clone());
    for k in &keys {
        c.node("n2").put(put(k, "v2")).await.unwrap();
    }
    // ...and reach it through hinted handoff once it is back.
    for node in c.every_node() {
        node.drain().await;
    }
    c.net.down.write().remove(&n5);
    for node in c.every_node() {
        node.health().mark_up(&n5);
        node.hand_off_hints().await.unwrap();
    }
    for k in &keys {
        let stored = c.stored("n5", "b", k).unwrap();
        assert!(values(&stored).contains(&"v2".to_string()), "{k}");
    }
    // Installing the next ring as current ends the transition.
    c.switch();
    assert!(c.every_node().iter().all(|n| n.next_ring().is_none()));
}

#[tokio::test]
async fn a_next_ring_must_be_newer_and_keep_q() {
    let c = Cluster::new();
    let n1 = c.node("n1");
    assert!(matches!(
        n1.set_next_ring(Some(c.current.clone())),
        Err(Error::InvalidRequest(_))
    ));
    let other_q = Ring::new(16, c.next.members().to_vec(), 3).unwrap();
    let other_q = other_q
        .with_member_joined(Member::new(id("n6")), 3)
        .unwrap();
    assert!(matches!(
        n1.set_next_ring(Some(other_q)),
        Err(Error::InvalidRequest(_))
    ));
    assert!(n1.next_ring().is_none());
    n1.set_next_ring(Some(c.next.clone())).unwrap();
    assert_eq!(n1.next_ring().unwrap().epoch(), c.next.epoch());
    n1.set_next_ring(None).unwrap();
    assert!(n1.next_ring().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_under_concurrent_writes_loses_no_acknowledged_write() {
    let c = Arc::new(Cluster::new());
    c.write_keys(0..600).await;
    c.begin_transition();
    // Every transfer batch waits for a write to be acknowledged first, so writes interleave
    // with the transfers, behind and ahead of their cursors.
    let gate = Arc::new(Semaphore::new(0));
    *c.net.gate.write() = Some(Arc::clone(&gate));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (c, done, gate) = (Arc::clone(&c), Arc::clone(&done), Arc::clone(&gate));
        tokio::spawn(async move {
            // Overwrites of old keys and new keys, each with the context of its previous write;
            // the last acknowledged value per key is what must survive.
            let mut acked: BTreeMap<String, String> = BTreeMap::new();
            let mut contexts: HashMap<String, Context> = HashMap::new();
            let mut writes = 0u64;
            for round in 0..3000 {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let key = format!("k{}", (round * 7) % 900);
                let value = format!("w{round}");
                let mut request = put(&key, &value);
                request.context = contexts.get(&key).cloned().unwrap_or_else(Context::empty);
                let coordinator = format!("n{}", 1 + round % 4);
                if let Ok(response) = c.node(&coordinator).put(request).await {
                    contexts.insert(key.clone(), response.object.context());
                    acked.insert(key, value);
                }
                writes += 1;
                gate.add_permits(1);
            }
            gate.add_permits(100_000);
            (acked, writes)
        })
    };
    let mut transfers = Vec::new();
    for (p, from, to) in c.moves() {
        let node = c.node(from.as_str());
        transfers.push(tokio::spawn(async move {
            node.transfer_partition(p, to, small_batches()).await
        }));
    }
    let mut batches = 0;
    for t in transfers {
        let report = t.await.unwrap().unwrap();
        assert!(report.receiver.objects >= report.keys_total);
        batches += report.batches;
    }
    done.store(true, Ordering::SeqCst);
    let (acked, writes) = writer.await.unwrap();
    // Each batch waited for a write of its own: the transfers ran interleaved with the writes.
    assert!(
        writes >= batches && batches > 10,
        "{writes} writes, {batches} batches"
    );
    // Replica writes outstanding at W finish in the background: wait for them, then switch.
    for node in c.every_node() {
        node.drain().await;
    }
    c.switch();
    let initial = (0..600).map(|i| (format!("k{i}"), format!("v{i}")));
    let expected: BTreeMap<String, String> = initial.chain(acked).collect();
    for (key, value) in &expected {
        // Every new primary holds the last acknowledged value...
        let pl = c.next.preference_list(b"b", key.as_bytes(), 3);
        for owner in pl.primaries() {
            let stored = c.stored(owner.as_str(), "b", key).unwrap_or_default();
            assert!(
                values(&stored).contains(value),
                "{owner} lacks {key}={value}"
            );
        }
    }
    // ...and a client reading through the joined node sees it.
    for (key, value) in expected.iter().step_by(7) {
        let mut get = GetRequest::new("b", key.as_str());
        get.r = Quorum::All;
        let read = c.node("n5").get(get).await.unwrap();
        assert!(
            values(&read.object).contains(value),
            "{key}: {value} is lost"
        );
    }
}

#[tokio::test]
async fn a_cancelled_transfer_resumes_after_its_last_acknowledged_batch() {
    let c = Cluster::new();
    c.write_keys(0..800).await;
    c.begin_transition();
    let (p, from) = c.biggest_move();
    let total = c.count(from.as_str(), p) as u64;
    let sender = c.node(from.as_str());
    let gate = Arc::new(Semaphore::new(3));
    *c.net.gate.write() = Some(Arc::clone(&gate));
    let run = {
        let sender = sender.clone();
        tokio::spawn(async move {
            sender
                .transfer_partition(p, id("n5"), small_batches())
                .await
        })
    };
    // Three batches pass, the fourth waits at the gate.
    eventually("three batches acknowledged", || {
        sender
            .transfers()
            .first()
            .is_some_and(|s| s.keys_sent == 30)
    })
    .await;
    let status = sender.transfers().remove(0);
    assert_eq!(
        (status.partition, &status.from, &status.to),
        (p, &from, &id("n5"))
    );
    assert_eq!(status.phase, TransferPhase::Sending);
    assert!(status.bytes_sent > 0);
    assert!(sender.cancel_transfer(p, &id("n5")));
    assert!(matches!(run.await.unwrap(), Err(Error::Cancelled(_))));
    assert!(sender.transfers().is_empty());
    // Open the gate: the next run starts after the 30 acknowledged keys.
    *c.net.gate.write() = None;
    gate.add_permits(1000);
    let report = sender
        .transfer_partition(p, id("n5"), small_batches())
        .await
        .unwrap();
    assert!(report.resumed);
    assert_eq!(report.keys_total, total);
    // The batch held at the gate when cancelled may have been merged; it is sent again.
    assert!(report.keys_sent <= total - 30, "{report:?}");
    assert!(report.keys_sent < report.keys_total);
    assert_eq!(c.count("n5", p) as u64, total);
    // A completed transfer leaves no cursor: the next one starts from the beginning.
    let again = sender
        .transfer_partition(p, id("n5"), small_batches())
        .await
        .unwrap();
    assert!(!again.resumed);
    assert_eq!(again.keys_sent, total);
}

#[tokio::test]
async fn a_transfer_cut_by_the_network_resumes_and_verification_repairs_a_receiver_that_lost_data()
{
    let c = Cluster::new();
    c.write_keys(0..800).await;
    c.begin_transition();
    let (p, from) = c.biggest_move();
    let total = c.count(from.as_str(), p) as u64;
    let sender = c.node(from.as_str());
    *c.net.fail_batches_after.lock() = Some(5);
    let cut = sender
        .transfer_partition(p, id("n5"), small_batches())
        .await;
    assert!(matches!(cut, Err(Error::Unreachable(_))), "{cut:?}");
    *c.net.fail_batches_after.lock() = None;
    let before = c.net.received.lock()[&id("n5")];
    assert_eq!(before, 50);
    let report = sender
        .transfer_partition(p, id("n5"), small_batches())
        .await
        .unwrap();
    assert!(report.resumed);
    assert_eq!(report.keys_sent, total - 50);
    assert_eq!(c.net.received.lock()[&id("n5")], total);

    // The receiver loses what it held of the partition after a cut: the resumed run sends only
    // what is after its cursor, and verification finds and resends the 20 lost objects.
    let epoch_99 = || TransferOptions {
        epoch: Some(99),
        ..small_batches()
    };
    *c.net.fail_batches_after.lock() = Some(2);
    sender
        .transfer_partition(p, id("n5"), epoch_99())
        .await
        .unwrap_err();
    *c.net.fail_batches_after.lock() = None;
    let n5 = &c.engines[&id("n5")];
    for (key, object) in n5.scan_partition(p, None, usize::MAX).unwrap() {
        assert!(n5.remove_if_unchanged(&key, &object).unwrap());
    }
    let repaired = sender
        .transfer_partition(p, id("n5"), epoch_99())
        .await
        .unwrap();
    assert!(repaired.resumed);
    assert_eq!(repaired.keys_sent, total - 20);
    assert_eq!(repaired.resent, 20);
    assert_eq!(repaired.receiver.objects, total);
    assert_eq!(c.count("n5", p) as u64, total);
    // A complete transfer finds nothing to resend.
    let again = sender
        .transfer_partition(p, id("n5"), epoch_99())
        .await
        .unwrap();
    assert!(!again.resumed);
    assert_eq!(again.resent, 0);
}

#[tokio::test]
async fn tombstones_move_like_values() {
    let c = Cluster::new();
    c.write_keys(0..400).await;
    let (p, from) = c.biggest_move();
    let keys: Vec<ObjectKey> = c.engines[&from]
        .scan_partition(p, None, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let deleted: Vec<&ObjectKey> = keys.iter().step_by(3).collect();
    for key in &deleted {
        c.node("n1")
            .delete(DeleteRequest::new("b", key.key.clone(), None))
            .await
            .unwrap();
    }
    for node in c.every_node() {
        node.drain().await;
    }
    c.begin_transition();
    let report = c
        .node(from.as_str())
        .transfer_partition(p, id("n5"), TransferOptions::default())
        .await
        .unwrap();
    assert_eq!(report.receiver.tombstones, deleted.len() as u64);
    let n5 = &c.engines[&id("n5")];
    for key in &keys {
        let stored = n5.get(key).unwrap().expect("every key moved");
        assert_eq!(is_deleted(&stored), deleted.contains(&key), "{key}");
    }
    // After the switch a read through the new owner finds the deletes deleted.
    c.switch();
    for key in &deleted {
        let mut get = GetRequest::new("b", key.key.clone());
        get.r = Quorum::All;
        assert!(c.node("n5").get(get).await.unwrap().is_not_found());
    }
}

#[tokio::test]
async fn drop_partition_removes_only_what_did_not_change_and_never_a_replicated_partition() {
    let c = Cluster::new();
    c.write_keys(0..400).await;
    c.begin_transition();
    // A partition some current primary gives up to n5.
    let (p, old) = c
        .next
        .partitions_replicated_by(&id("n5"), 3)
        .into_iter()
        .find_map(|p| {
            let now = c.current.preference_list_for_partition(p, 3);
            let next = c.next.preference_list_for_partition(p, 3);
            now.primaries()
                .iter()
                .find(|n| !next.is_primary(n))
                .map(|n| (p, n.clone()))
        })
        .expect("a join moves some replica");
    let old_node = c.node(old.as_str());
    old_node
        .transfer_partition(p, id("n5"), TransferOptions::default())
        .await
        .unwrap();
    // Still a primary in the current ring: refused, nothing removed.
    let before = c.count(old.as_str(), p);
    assert!(matches!(
        old_node.drop_partition(p).await,
        Err(Error::InvalidRequest(_))
    ));
    assert_eq!(c.count(old.as_str(), p), before);
    c.switch();
    // A bucket with n_val 5 makes every member a primary: refused.
    old_node
        .replica_set_bucket_props(
            b"wide",
            BucketProps {
                n_val: 5,
                ..BucketProps::default()
            },
        )
        .unwrap();
    assert!(matches!(
        old_node.drop_partition(p).await,
        Err(Error::InvalidRequest(_))
    ));
    old_node
        .replica_set_bucket_props(b"wide", BucketProps::default())
        .unwrap();
    // A write lands on one key between the dropper's scan and its removal: that key stays.
    let entries = c.engines[&old].scan_partition(p, None, usize::MAX).unwrap();
    let (changed, _) = entries[entries.len() / 2].clone();
    let late = changed.clone();
    *c.engines[&old].after_scan.lock() = Some(Box::new(move |engine: &MemoryEngine| {
        let mut object = engine.get(&late).unwrap().unwrap();
        let context = object.context();
        object.put(Actor::new(77, 1), &context, Content::new("late"), 1);
        engine
            .update_with(&late, Durability::Sync, Box::new(move |_| Ok(object)))
            .unwrap();
    }));
    let report = old_node.drop_partition(p).await.unwrap();
    assert_eq!(report.kept_changed, 1);
    assert_eq!(report.removed, entries.len() as u64 - 1);
    let left = c.engines[&old].scan_partition(p, None, usize::MAX).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0, changed);
    assert_eq!(values(&left[0].1), ["late"]);
    // The new owners still serve every key of the partition.
    for (key, _) in entries {
        let mut get = GetRequest::new("b", key.key.clone());
        get.r = Quorum::All;
        assert!(
            !c.node("n5").get(get).await.unwrap().is_not_found(),
            "{key}"
        );
    }
}

#[tokio::test]
async fn the_concurrency_limit_queues_transfers_and_can_be_raised_at_run_time() {
    let c = Cluster::new();
    c.write_keys(0..400).await;
    c.begin_transition();
    // Two partitions of n1 sent to n5 (a transfer needs no ownership change to run).
    let from = id("n1");
    let parts: Vec<(PartitionId, NodeId)> = c
        .current
        .partitions_replicated_by(&from, 3)
        .into_iter()
        .take(2)
        .map(|p| (p, id("n5")))
        .collect();
    let sender = c.node(from.as_str());
    assert_eq!(sender.transfer_limit(), 2);
    sender.set_transfer_limit(1).unwrap();
    let gate = Arc::new(Semaphore::new(0));
    *c.net.gate.write() = Some(Arc::clone(&gate));
    let runs: Vec<_> = parts[..2]
        .iter()
        .map(|(p, to)| {
            let (sender, p, to) = (sender.clone(), *p, to.clone());
            tokio::spawn(async move { sender.transfer_partition(p, to, small_batches()).await })
        })
        .collect();
    let phases = |s: &Coordinator<Net>| {
        let mut phases: Vec<TransferPhase> = s.transfers().iter().map(|t| t.phase).collect();
        phases.sort_by_key(|p| format!("{p:?}"));
        phases
    };
    eventually("one sending, one waiting", || {
        phases(&sender) == [TransferPhase::Sending, TransferPhase::Waiting]
    })
    .await;
    sender.set_transfer_limit(2).unwrap();
    eventually("both sending", || {
        phases(&sender) == [TransferPhase::Sending, TransferPhase::Sending]
    })
    .await;
    *c.net.gate.write() = None;
    gate.add_permits(1000);
    for run in runs {
        run.await.unwrap().unwrap();
    }
    assert!(sender.transfers().is_empty());
    assert_eq!(sender.metrics().transfers_completed.get(), 2);
}

#[tokio::test]
async fn a_batch_with_a_foreign_key_is_refused_whole() {
    let c = Cluster::new();
    let n5 = c.node("n5");
    let p = c.current.partition_for_key(b"b", b"mine");
    let other = (0..100)
        .map(|i| format!("x{i}"))
        .find(|k| c.current.partition_for_key(b"b", k.as_bytes()) != p)
        .unwrap();
    let object = |v: &str| {
        let mut o = VersionedObject::new();
        o.put(
            Actor::new(1, 1),
            &Context::empty(),
            Content::new(v.to_string()),
            1,
        );
        o
    };
    let batch = vec![
        (ObjectKey::new(p, "b", "mine"), object("a")),
        (ObjectKey::new(p, "b", other.clone()), object("b")),
    ];
    assert!(matches!(
        n5.replica_transfer_batch(p, batch).await,
        Err(Error::InvalidRequest(_))
    ));
    assert!(c.stored("n5", "b", "mine").is_none());
    assert!(matches!(
        n5.replica_transfer_batch(PartitionId(Q), Vec::new()).await,
        Err(Error::InvalidRequest(_))
    ));
}

/// A hint held for an owner that the ring moved the key away from goes to the key's current
/// primaries, not to the old owner, which dropped (or will drop) the partition: delivered there it
/// would be a copy nobody reads or removes (found by the churn simulation, seed 0).
#[tokio::test]
async fn a_hint_for_an_owner_the_ring_moved_away_goes_to_the_new_primaries() {
    let cluster = Cluster::new();
    let (p, old) = cluster
        .current
        .partitions()
        .find_map(|p| {
            let next = cluster.next.preference_list_for_partition(p, 3);
            let now = cluster.current.preference_list_for_partition(p, 3);
            let old = now.primaries().iter().find(|x| !next.is_primary(x))?;
            Some((p, old.clone()))
        })
        .expect("a join moves some replica");
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| cluster.current.partition_for_key(b"b", k.as_bytes()) == p)
        .unwrap();
    cluster.node("n1").put(put(&key, "v")).await.unwrap();
    let object_key = ObjectKey::new(p, "b", key.as_str());
    // The old owner missed the write; a fallback holds a hint for it.
    let at_old = cluster.stored(old.as_str(), "b", &key).unwrap();
    cluster.engines[&old]
        .remove_if_unchanged(&object_key, &at_old)
        .unwrap();
    let fallback = ["n1", "n2", "n3", "n4"]
        .into_iter()
        .find(|n| id(n) != old)
        .unwrap();
    cluster.engines[&id(fallback)]
        .put_hint(&old, &object_key, &at_old, 1)
        .unwrap();
    cluster.switch();
    let delivered = cluster.node(fallback).hand_off_hints().await.unwrap();
    assert_eq!(delivered, 1);
    assert!(cluster.stored(old.as_str(), "b", &key).is_none());
    assert_eq!(values(&cluster.stored("n5", "b", &key).unwrap()), ["v"]);
    assert_eq!(cluster.engines[&id(fallback)].hint_count().unwrap(), 0);
}
