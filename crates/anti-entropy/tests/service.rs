//! Two replicas' anti-entropy services exchanging in-process: divergent stores converge after a
//! confirmed exchange, with no read, and repair never loses a sibling.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dynamo_anti_entropy::{
    AntiEntropy, KeyClocks, KeyObject, LatencySamples, Leaf, Options, Parts, Peers, Result,
    TrackingEngine, Trees,
};
use dynamo_ring::{Member, NodeId, PartitionId, Ring};
use dynamo_storage::{Content, Engine, EngineExt, MemoryEngine, ObjectKey};
use dynamo_versioning::{Actor, Context};

/// In-process peers: node id -> its service.
#[derive(Default)]
struct Local(BTreeMap<NodeId, AntiEntropy>);

impl Local {
    fn at(&self, to: &NodeId) -> &AntiEntropy {
        &self.0[to]
    }
}

impl Peers for Local {
    async fn ae_root(
        &self,
        to: &NodeId,
        p: PartitionId,
        from: &NodeId,
        _: Duration,
    ) -> Result<u64> {
        self.at(to).serve_root(p, from)
    }
    async fn ae_branches(&self, to: &NodeId, p: PartitionId, _: Duration) -> Result<Vec<u64>> {
        self.at(to).serve_branches(p)
    }
    async fn ae_leaves(
        &self,
        to: &NodeId,
        p: PartitionId,
        branches: Vec<usize>,
        _: Duration,
    ) -> Result<Vec<Vec<u64>>> {
        self.at(to).serve_leaves(p, &branches)
    }
    async fn ae_key_clocks(
        &self,
        to: &NodeId,
        p: PartitionId,
        leaves: Vec<Leaf>,
        max_keys: usize,
        _: Duration,
    ) -> Result<KeyClocks> {
        self.at(to).serve_key_clocks(p, leaves, max_keys).await
    }
    async fn ae_fetch(
        &self,
        to: &NodeId,
        p: PartitionId,
        keys: Vec<(Vec<u8>, Vec<u8>)>,
        _: Duration,
    ) -> Result<Vec<KeyObject>> {
        self.at(to).serve_fetch(p, keys).await
    }
    async fn ae_push(
        &self,
        to: &NodeId,
        p: PartitionId,
        from: &NodeId,
        objects: Vec<KeyObject>,
        _: Duration,
    ) -> Result<()> {
        self.at(to).serve_push(p, from, objects).await
    }
}

struct Replica {
    raw: Arc<MemoryEngine>,
    engine: Arc<dyn Engine>,
    ae: AntiEntropy,
}

fn replica(me: &NodeId, ring: &Ring) -> Replica {
    let raw = Arc::new(MemoryEngine::new());
    let trees = Trees::new();
    let latency = Arc::new(LatencySamples::default());
    let engine: Arc<dyn Engine> = Arc::new(TrackingEngine::new(
        raw.clone(),
        Arc::clone(&trees),
        Arc::clone(&latency),
    ));
    let ae = AntiEntropy::new(Parts {
        me: me.clone(),
        ring: ring.clone(),
        engine: Arc::clone(&engine),
        trees,
        latency,
        now_ms: Arc::new(|| 1_000),
        is_lww: Arc::new(|_| false),
        seed: 7,
        options: Options {
            n: 2,
            inline_storage: true,
            ..Options::default()
        },
    });
    Replica { raw, engine, ae }
}

fn write(r: &Replica, ring: &Ring, key: &str, value: &str, actor: u64) {
    let k = ObjectKey::new(ring.partition_for_key(b"b", key.as_bytes()), "b", key);
    r.engine
        .put_local(
            &k,
            Actor::new(actor, 1),
            &Context::empty(),
            Content::new(value.to_string()),
            1,
        )
        .unwrap();
}

#[tokio::test]
async fn divergent_replicas_converge_after_a_confirmed_exchange() {
    let (a, b) = (NodeId::new("a").unwrap(), NodeId::new("b").unwrap());
    let ring = Ring::new(8, vec![Member::new(a.clone()), Member::new(b.clone())], 2).unwrap();
    let (ra, rb) = (replica(&a, &ring), replica(&b, &ring));
    for p in ra.ae.tracked() {
        ra.ae.build(p).await.unwrap();
        rb.ae.build(p).await.unwrap();
    }
    assert_eq!(
        ra.ae.tracked().len(),
        8,
        "N = 2 of 2 nodes: every partition"
    );
    for i in 0..300 {
        write(&ra, &ring, &format!("k{i}"), "common", 1);
        write(&rb, &ring, &format!("k{i}"), "common", 1);
    }
    for i in 0..40 {
        write(&ra, &ring, &format!("only-a{i}"), "x", 1);
        write(&rb, &ring, &format!("only-b{i}"), "y", 2);
    }
    // A concurrent write on each side: the repaired key must keep both siblings.
    write(&ra, &ring, "both", "from-a", 1);
    write(&rb, &ring, "both", "from-b", 2);

    let mut peers = Local::default();
    peers.0.insert(a.clone(), ra.ae.clone());
    peers.0.insert(b.clone(), rb.ae.clone());
    let mut found = 0;
    let mut repaired = 0;
    for round in 0..2 {
        for p in ra.ae.tracked() {
            let report = ra.ae.exchange(&peers, p, &b).await.unwrap();
            found += report.differences;
            repaired += report.repaired;
            if round == 0 {
                assert_eq!(
                    report.repaired, 0,
                    "nothing is repaired before confirmation"
                );
            }
        }
    }
    assert_eq!(found, 2 * 81, "every differing key, in both rounds");
    assert_eq!(repaired, 81);
    let dump = |r: &Replica| {
        ra.ae
            .tracked()
            .into_iter()
            .flat_map(|p| r.raw.scan_partition(p, None, 10_000).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(dump(&ra), dump(&rb));
    let both = ObjectKey::new(ring.partition_for_key(b"b", b"both"), "b", "both");
    assert_eq!(ra.raw.get(&both).unwrap().unwrap().siblings().len(), 2);
    for p in ra.ae.tracked() {
        let report = ra.ae.exchange(&peers, p, &b).await.unwrap();
        assert_eq!(report.differences, 0, "the trees agree after repair");
    }
    let status = rb.ae.status();
    assert_eq!(status.keys(), 381);
    assert!(status.partitions.iter().all(|p| p.ready));
}

#[tokio::test]
async fn trees_follow_the_ring() {
    let ids: Vec<NodeId> = ["a", "b", "c"]
        .iter()
        .map(|s| NodeId::new(*s).unwrap())
        .collect();
    let ring = Ring::new(16, ids.iter().cloned().map(Member::new).collect(), 2).unwrap();
    let r = replica(&ids[0], &ring);
    let mine = ring.partitions_replicated_by(&ids[0], 2);
    assert_eq!(
        r.ae.tracked(),
        mine,
        "exactly the partitions it replicates (N = 2 of 3)"
    );
    assert!(mine.len() < 16, "a fallback's partitions are not tracked");
    for p in r.ae.tracked() {
        r.ae.build(p).await.unwrap();
    }
    // A key of an untracked partition (a fallback's hinted copy) is stored but changes no tree.
    let other = (0..16)
        .map(PartitionId)
        .find(|p| !mine.contains(p))
        .unwrap();
    let before = r.ae.status();
    r.engine
        .put_merge(&ObjectKey::new(other, "b", "x"), {
            let mut o = dynamo_storage::VersionedObject::new();
            o.put(Actor::new(2, 1), &Context::empty(), Content::new("v"), 1);
            o
        })
        .unwrap();
    assert_eq!(r.ae.status(), before);
    assert!(matches!(
        r.ae.serve_root(other, &ids[1]),
        Err(dynamo_anti_entropy::Error::NotTracked(_))
    ));

    // The node leaves: it replicates nothing, and every tree is dropped.
    let without = ring.with_member_left(&ids[0], 2).unwrap();
    r.ae.set_ring(without.clone());
    assert!(r.ae.tracked().is_empty());
    // Another node leaves instead: the tracked set follows the new ring, new trees unbuilt.
    r.ae.set_ring(ring.clone());
    let after = ring.with_member_left(&ids[2], 2).unwrap();
    r.ae.set_ring(after.clone());
    assert_eq!(r.ae.tracked(), after.partitions_replicated_by(&ids[0], 2));
    assert!(r.ae.status().partitions.iter().all(|p| !p.ready));
}
