//! Several coordinators in one process, wired by an in-memory `Replicas` with switchable faults.
//! These tests exercise the request paths exactly as a client sees them, without a network.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dynamo_coordinator::{
    BucketProps, Buckets, Coordinator, DeleteRequest, DeleteResponse, Error, GetRequest,
    GetResponse, ManualClock, Options, Parts, PutRequest, PutResponse, Quorum, ReplicaPut,
    Replicas, Result,
};
use dynamo_ring::{Member, NodeId, Ring};
use dynamo_storage::{Content, Engine, MemoryEngine, ObjectKey, VersionedObject};
use dynamo_versioning::{Actor, Context};
use parking_lot::RwLock;

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T>> + Send>>;

/// The in-process network: every coordinator by id, and the nodes currently unreachable.
#[derive(Default)]
struct Net {
    nodes: RwLock<HashMap<NodeId, Coordinator<Net>>>,
    down: RwLock<BTreeSet<NodeId>>,
    /// Replica writes to these nodes are delayed (they still happen).
    slow: RwLock<BTreeSet<NodeId>>,
}

impl Net {
    fn node(&self, to: &NodeId) -> Result<Coordinator<Net>> {
        if self.down.read().contains(to) {
            return Err(Error::Unreachable(format!("{to} is down")));
        }
        self.nodes
            .read()
            .get(to)
            .cloned()
            .ok_or_else(|| Error::Unreachable(format!("{to} unknown")))
    }
}

impl Replicas for Net {
    async fn ping(&self, to: &NodeId, _: Duration) -> Result<()> {
        self.node(to).map(|_| ())
    }

    async fn get(
        &self,
        to: &NodeId,
        key: &ObjectKey,
        _: Duration,
    ) -> Result<Option<VersionedObject>> {
        self.node(to)?.replica_get(key.clone()).await
    }

    async fn put(&self, to: &NodeId, put: ReplicaPut, _: Duration) -> Result<bool> {
        let node = self.node(to)?;
        if self.slow.read().contains(to) {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        node.replica_put(put).await
    }

    // Forwarding re-enters a coordinator, so the future type would contain itself: box it.
    fn forward_put(
        &self,
        to: &NodeId,
        request: PutRequest,
        _: Duration,
    ) -> impl Future<Output = Result<PutResponse>> + Send {
        let node = self.node(to);
        let fut: BoxFuture<PutResponse> = Box::pin(async move { node?.put(request).await });
        fut
    }

    fn forward_delete(
        &self,
        to: &NodeId,
        request: DeleteRequest,
        _: Duration,
    ) -> impl Future<Output = Result<DeleteResponse>> + Send {
        let node = self.node(to);
        let fut: BoxFuture<DeleteResponse> = Box::pin(async move { node?.delete(request).await });
        fut
    }

    async fn list_keys(&self, to: &NodeId, bucket: &[u8], _: Duration) -> Result<Vec<Vec<u8>>> {
        self.node(to)?.local_keys(bucket.to_vec()).await
    }

    async fn set_bucket_props(
        &self,
        to: &NodeId,
        bucket: &[u8],
        props: &BucketProps,
        _: Duration,
    ) -> Result<()> {
        self.node(to)?
            .replica_set_bucket_props(bucket, props.clone())
    }
}

struct Cluster {
    net: Arc<Net>,
    ids: Vec<NodeId>,
    engines: Vec<Arc<MemoryEngine>>,
    clock: Arc<ManualClock>,
}

impl Cluster {
    fn new(size: usize) -> Cluster {
        let net = Arc::new(Net::default());
        let ids: Vec<NodeId> = (1..=size)
            .map(|i| NodeId::new(format!("n{i}")).unwrap())
            .collect();
        let ring = Ring::new(64, ids.iter().cloned().map(Member::new).collect(), 3).unwrap();
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let mut engines = Vec::new();
        for id in &ids {
            let engine = Arc::new(MemoryEngine::new());
            let dyn_engine: Arc<dyn Engine> = engine.clone();
            let buckets = Buckets::load(
                BucketProps::default(),
                BTreeMap::new(),
                Arc::clone(&dyn_engine),
            )
            .unwrap();
            let coordinator = Coordinator::new(Parts {
                me: id.clone(),
                actor: Actor::new(id.actor_id(), 1),
                ring: ring.clone(),
                engine: dyn_engine,
                replicas: Arc::clone(&net),
                buckets,
                clock: clock.clone(),
                options: Options {
                    default_timeout: Duration::from_secs(2),
                    read_repair_linger: Duration::from_millis(100),
                    ..Options::default()
                },
            });
            net.nodes.write().insert(id.clone(), coordinator);
            engines.push(engine);
        }
        Cluster {
            net,
            ids,
            engines,
            clock,
        }
    }

    fn node(&self, i: usize) -> Coordinator<Net> {
        self.net.nodes.read()[&self.ids[i]].clone()
    }

    fn index_of(&self, id: &NodeId) -> usize {
        self.ids.iter().position(|i| i == id).unwrap()
    }

    /// Index of a primary replica of the key, and of a node outside its top N (if any).
    fn roles(&self, bucket: &str, key: &str) -> (Vec<usize>, Vec<usize>) {
        let pl = self
            .node(0)
            .ring()
            .preference_list(bucket.as_bytes(), key.as_bytes(), 3);
        let primaries: Vec<usize> = pl.primaries().iter().map(|n| self.index_of(n)).collect();
        let others = (0..self.ids.len())
            .filter(|i| !primaries.contains(i))
            .collect();
        (primaries, others)
    }

    fn stored(&self, i: usize, bucket: &str, key: &str) -> Option<VersionedObject> {
        let p = self
            .node(0)
            .ring()
            .partition_for_key(bucket.as_bytes(), key.as_bytes());
        self.engines[i]
            .get(&ObjectKey::new(p, bucket, key))
            .unwrap()
    }
}

fn put(bucket: &str, key: &str, value: &str, context: Context) -> PutRequest {
    PutRequest::new(bucket, key, Content::new(value.to_string()), context)
}

fn values(r: &GetResponse) -> Vec<String> {
    let mut v: Vec<String> = r
        .siblings()
        .iter()
        .map(|s| String::from_utf8_lossy(&s.value.value).into())
        .collect();
    v.sort();
    v
}

async fn eventually<F: Fn() -> bool>(what: &str, f: F) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn a_write_is_readable_from_every_node_and_stored_on_n_replicas() {
    let c = Cluster::new(5);
    c.node(0)
        .put(put("b", "k", "v1", Context::empty()))
        .await
        .unwrap();
    for i in 0..5 {
        let got = c.node(i).get(GetRequest::new("b", "k")).await.unwrap();
        assert_eq!(values(&got), ["v1"], "read through n{}", i + 1);
    }
    let (primaries, others) = c.roles("b", "k");
    eventually("all three replicas", || {
        primaries.iter().all(|&i| c.stored(i, "b", "k").is_some())
    })
    .await;
    for i in others {
        assert!(
            c.stored(i, "b", "k").is_none(),
            "n{} is not a replica but stores the key",
            i + 1
        );
    }
}

#[tokio::test]
async fn a_missing_key_is_not_found() {
    let c = Cluster::new(3);
    let got = c
        .node(1)
        .get(GetRequest::new("b", "nothing"))
        .await
        .unwrap();
    assert!(got.is_not_found());
}

#[tokio::test]
async fn two_writes_with_the_same_stale_context_make_siblings_and_a_merged_context_collapses_them()
{
    let c = Cluster::new(3);
    let first = c
        .node(0)
        .put(put("b", "k", "v0", Context::empty()))
        .await
        .unwrap();
    let stale = first.object.context();
    c.node(0)
        .put(put("b", "k", "left", stale.clone()))
        .await
        .unwrap();
    c.node(0).put(put("b", "k", "right", stale)).await.unwrap();
    let got = c.node(2).get(GetRequest::new("b", "k")).await.unwrap();
    assert_eq!(values(&got), ["left", "right"]);

    c.node(1)
        .put(put("b", "k", "merged", got.context()))
        .await
        .unwrap();
    let got = c.node(2).get(GetRequest::new("b", "k")).await.unwrap();
    assert_eq!(values(&got), ["merged"]);
}

#[tokio::test]
async fn concurrent_writes_through_different_coordinators_are_both_kept() {
    let c = Cluster::new(3);
    let (n0, n1) = (c.node(0), c.node(1));
    let (a, b) = tokio::join!(
        n0.put(put("b", "k", "from-a", Context::empty())),
        n1.put(put("b", "k", "from-b", Context::empty())),
    );
    a.unwrap();
    b.unwrap();
    let got = c
        .node(2)
        .get(GetRequest {
            r: Quorum::All,
            ..GetRequest::new("b", "k")
        })
        .await
        .unwrap();
    assert_eq!(values(&got), ["from-a", "from-b"]);
}

#[tokio::test]
async fn a_write_through_a_node_outside_the_top_n_is_forwarded() {
    let c = Cluster::new(5);
    let (primaries, others) = c.roles("b", "fwd");
    let outsider = others[0];
    c.node(outsider)
        .put(put("b", "fwd", "v", Context::empty()))
        .await
        .unwrap();
    assert_eq!(c.node(outsider).metrics().forwarded.get(), 1);
    assert!(
        c.stored(outsider, "b", "fwd").is_none(),
        "the outsider must not keep a copy"
    );
    let coordinator = primaries[0];
    assert!(c.stored(coordinator, "b", "fwd").is_some());
}

#[tokio::test]
async fn w_all_fails_with_a_replica_down_but_w_quorum_succeeds() {
    let c = Cluster::new(3);
    c.net.down.write().insert(c.ids[2].clone());
    let all = PutRequest {
        w: Quorum::All,
        ..put("b", "k", "v", Context::empty())
    };
    let err = c.node(0).put(all).await.unwrap_err();
    assert!(
        matches!(err, Error::Unavailable { ref kind, needed: 3, .. } if kind == "w"),
        "{err}"
    );
    c.node(0)
        .put(put("b", "k", "v", Context::empty()))
        .await
        .unwrap();
    let got = c.node(1).get(GetRequest::new("b", "k")).await.unwrap();
    assert_eq!(values(&got), ["v"]);
}

#[tokio::test]
async fn r_above_n_is_a_client_error_and_nothing_is_written() {
    let c = Cluster::new(3);
    let err = c
        .node(0)
        .get(GetRequest {
            r: Quorum::Count(4),
            ..GetRequest::new("b", "k")
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err}");
    let bad = PutRequest {
        w: Quorum::Count(9),
        ..put("b", "k", "v", Context::empty())
    };
    assert!(matches!(
        c.node(0).put(bad).await,
        Err(Error::InvalidRequest(_))
    ));
    for i in 0..3 {
        assert!(c.stored(i, "b", "k").is_none());
    }
}

#[tokio::test]
async fn replica_writes_outstanding_at_w_still_complete() {
    let c = Cluster::new(3);
    let (primaries, _) = c.roles("b", "slow");
    let coordinator = primaries[0];
    let slow = primaries[2];
    c.net.slow.write().insert(c.ids[slow].clone());
    let w1 = PutRequest {
        w: Quorum::One,
        ..put("b", "slow", "v", Context::empty())
    };
    c.node(coordinator).put(w1).await.unwrap();
    assert!(
        c.stored(slow, "b", "slow").is_none(),
        "the slow replica cannot have it yet"
    );
    eventually("the slow replica's write", || {
        c.stored(slow, "b", "slow").is_some()
    })
    .await;
}

#[tokio::test]
async fn read_repair_fills_a_replica_that_missed_a_write() {
    let c = Cluster::new(3);
    let (primaries, _) = c.roles("b", "rr");
    let missed = primaries[2];
    c.net.down.write().insert(c.ids[missed].clone());
    c.node(primaries[0])
        .put(put("b", "rr", "v", Context::empty()))
        .await
        .unwrap();
    assert!(c.stored(missed, "b", "rr").is_none());
    c.net.down.write().clear();
    let got = c
        .node(primaries[0])
        .get(GetRequest::new("b", "rr"))
        .await
        .unwrap();
    assert_eq!(values(&got), ["v"]);
    eventually("read repair", || c.stored(missed, "b", "rr").is_some()).await;
    assert!(c.node(primaries[0]).metrics().read_repairs.get() >= 1);
}

#[tokio::test]
async fn delete_then_get_is_not_found_but_keeps_a_context() {
    let c = Cluster::new(3);
    c.node(0)
        .put(put("b", "k", "v", Context::empty()))
        .await
        .unwrap();
    let deleted = c
        .node(1)
        .delete(DeleteRequest::new("b", "k", None))
        .await
        .unwrap();
    assert!(deleted.existed);
    let got = c.node(2).get(GetRequest::new("b", "k")).await.unwrap();
    assert!(got.is_not_found());
    assert!(
        !got.context().is_empty(),
        "a tombstone's context is still returned"
    );
    let again = c
        .node(1)
        .delete(DeleteRequest::new("b", "never", None))
        .await
        .unwrap();
    assert!(!again.existed);
}

#[tokio::test]
async fn an_lww_bucket_keeps_exactly_one_value() {
    let c = Cluster::new(3);
    let lww = BucketProps {
        allow_mult: false,
        last_write_wins: true,
        ..BucketProps::default()
    };
    c.node(0)
        .set_bucket_props(b"lww", lww.clone())
        .await
        .unwrap();
    assert_eq!(
        c.node(2).bucket_props(b"lww"),
        lww,
        "props reach every member"
    );
    c.node(0)
        .put(put("lww", "k", "first", Context::empty()))
        .await
        .unwrap();
    c.clock.advance(10);
    c.node(1)
        .put(put("lww", "k", "second", Context::empty()))
        .await
        .unwrap();
    let got = c.node(2).get(GetRequest::new("lww", "k")).await.unwrap();
    assert_eq!(values(&got), ["second"]);
}

#[tokio::test]
async fn list_keys_gathers_every_member_and_skips_deleted_keys() {
    let c = Cluster::new(4);
    for k in ["a", "b", "c"] {
        c.node(0)
            .put(put("lk", k, "v", Context::empty()))
            .await
            .unwrap();
    }
    c.node(0)
        .delete(DeleteRequest::new("lk", "b", None))
        .await
        .unwrap();
    // The third replica of each write may still be in flight: poll until the listing settles.
    let want = vec![b"a".to_vec(), b"c".to_vec()];
    let mut keys = Vec::new();
    for _ in 0..200 {
        keys = c.node(3).list_keys(b"lk").await.unwrap();
        if keys == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(keys, want);
}

#[tokio::test]
async fn an_oversize_value_is_refused_before_anything_is_stored() {
    let c = Cluster::new(3);
    let big = "x".repeat(dynamo_storage::DEFAULT_MAX_VALUE_LEN + 1);
    let err = c
        .node(0)
        .put(put("b", "big", &big, Context::empty()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge(_)), "{err}");
    for i in 0..3 {
        assert!(c.stored(i, "b", "big").is_none());
    }
}

/// The key's preference list as indexes: (primaries, fallbacks).
fn placement(c: &Cluster, key: &str) -> (Vec<usize>, Vec<usize>) {
    let pl = c.node(0).ring().preference_list(b"b", key.as_bytes(), 3);
    (
        pl.primaries().iter().map(|n| c.index_of(n)).collect(),
        pl.fallbacks().iter().map(|n| c.index_of(n)).collect(),
    )
}

#[tokio::test]
async fn with_a_primary_down_the_write_goes_to_a_fallback_with_a_hint_and_is_handed_off() {
    let c = Cluster::new(5);
    let (primaries, fallbacks) = placement(&c, "sloppy");
    let (coordinator, down, fallback) = (primaries[0], primaries[2], fallbacks[0]);
    c.net.down.write().insert(c.ids[down].clone());

    // W = all still succeeds: the fallback's acknowledgement counts (sloppy quorum).
    let all = PutRequest {
        w: Quorum::All,
        ..put("b", "sloppy", "v", Context::empty())
    };
    c.node(coordinator).put(all).await.unwrap();
    assert!(c.stored(down, "b", "sloppy").is_none());
    assert_eq!(c.engines[fallback].hint_count().unwrap(), 1);
    let hint = &c.engines[fallback].hints(None, None, 10).unwrap()[0];
    assert_eq!(hint.owner, c.ids[down]);
    assert!(c.node(coordinator).metrics().nodes_marked_down.get() >= 1);

    // While the owner is down, the hint stays.
    c.node(fallback).health().mark_down(&c.ids[down]);
    assert_eq!(c.node(fallback).hand_off_hints().await.unwrap(), 0);
    assert_eq!(c.engines[fallback].hint_count().unwrap(), 1);

    // The owner returns: the probe notices, handoff delivers and drops the hint.
    c.net.down.write().clear();
    c.node(fallback).probe_down_peers().await;
    assert!(c.node(fallback).health().is_up(&c.ids[down]));
    assert_eq!(c.node(fallback).hand_off_hints().await.unwrap(), 1);
    assert_eq!(c.engines[fallback].hint_count().unwrap(), 0);
    let handed = c
        .stored(down, "b", "sloppy")
        .expect("the owner has the write");
    assert_eq!(handed.values().len(), 1);
    assert_eq!(c.node(fallback).metrics().hints_delivered.get(), 1);
    assert!(
        c.stored(fallback, "b", "sloppy").is_none(),
        "the fallback dropped its copy after handing it off"
    );
}

#[tokio::test]
async fn a_known_down_primary_is_skipped_up_front() {
    let c = Cluster::new(5);
    let (primaries, fallbacks) = placement(&c, "known");
    let (coordinator, down) = (primaries[0], primaries[1]);
    c.node(coordinator).health().mark_down(&c.ids[down]);
    c.node(coordinator)
        .put(put("b", "known", "v", Context::empty()))
        .await
        .unwrap();
    // The fallback got the write directly; the down primary was never asked.
    let fallback = fallbacks[0];
    eventually("the fallback's copy", || {
        c.stored(fallback, "b", "known").is_some()
    })
    .await;
    assert_eq!(
        c.engines[fallback].hints(None, None, 10).unwrap()[0].owner,
        c.ids[down]
    );
}

#[tokio::test]
async fn pw_and_pr_require_primaries() {
    let c = Cluster::new(5);
    let (primaries, _) = placement(&c, "prpw");
    let (coordinator, down) = (primaries[0], primaries[2]);
    c.net.down.write().insert(c.ids[down].clone());
    let pw = PutRequest {
        pw: Quorum::All,
        ..put("b", "prpw", "v", Context::empty())
    };
    let err = c.node(coordinator).put(pw).await.unwrap_err();
    assert!(
        matches!(err, Error::Unavailable { ref kind, .. } if kind == "pw"),
        "{err}"
    );
    // PW=2 is met by the two live primaries.
    let pw2 = PutRequest {
        pw: Quorum::Count(2),
        ..put("b", "prpw", "v2", Context::empty())
    };
    c.node(coordinator).put(pw2).await.unwrap();

    let pr = GetRequest {
        pr: Quorum::All,
        ..GetRequest::new("b", "prpw")
    };
    let err = c.node(coordinator).get(pr).await.unwrap_err();
    assert!(
        matches!(err, Error::Unavailable { ref kind, .. } if kind == "pr" || kind == "r"),
        "{err}"
    );
    let pr2 = GetRequest {
        pr: Quorum::Count(2),
        ..GetRequest::new("b", "prpw")
    };
    assert!(!c.node(coordinator).get(pr2).await.unwrap().is_not_found());
}

#[tokio::test]
async fn a_hint_for_a_removed_owner_reaches_the_keys_current_primaries() {
    let c = Cluster::new(5);
    let (primaries, fallbacks) = placement(&c, "orphan");
    let (coordinator, down, fallback) = (primaries[0], primaries[2], fallbacks[0]);
    c.net.down.write().insert(c.ids[down].clone());
    // W = all: the write returns only once the fallback stored it with its hint.
    let all = PutRequest {
        w: Quorum::All,
        ..put("b", "orphan", "v", Context::empty())
    };
    c.node(coordinator).put(all).await.unwrap();
    assert_eq!(c.engines[fallback].hint_count().unwrap(), 1);

    // The operator removes the dead owner: every coordinator routes with a ring without it.
    let ring = c.node(0).ring().with_member_left(&c.ids[down], 3).unwrap();
    for i in 0..c.ids.len() {
        c.node(i).set_ring(ring.clone());
    }
    // The owner never comes back, yet the hint is delivered: to the key's new primaries.
    assert_eq!(c.node(fallback).hand_off_hints().await.unwrap(), 1);
    assert_eq!(c.engines[fallback].hint_count().unwrap(), 0);
    let now = ring.preference_list(b"b", b"orphan", 3);
    for id in now.primaries() {
        let stored = c
            .stored(c.index_of(id), "b", "orphan")
            .unwrap_or_else(|| panic!("new primary {id} lacks the write"));
        assert_eq!(stored.values().len(), 1);
    }
}
