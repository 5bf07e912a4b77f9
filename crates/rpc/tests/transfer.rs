//! Partition transfer over the real wire: a joining node receives a partition (values and a
//! tombstone) from a current owner through the `PeerPool`, and an operator reads and changes the
//! transfer limit over rpc.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dynamo_coordinator::{
    BucketProps, Buckets, Coordinator, DeleteRequest, Options, Parts, PutRequest, SystemClock,
    TransferOptions,
};
use dynamo_ring::{Member, NodeId, Ring};
use dynamo_rpc::{ClusterAuth, NodeServer, PeerPool, TcpConnector, TcpListener};
use dynamo_storage::{Content, Engine, MemoryEngine, is_deleted};
use dynamo_versioning::{Actor, Context};
use tokio_util::sync::CancellationToken;

const CLUSTER: &str = "transfer";
const SECRET: &[u8] = b"0123456789abcdef-test";
const TIMEOUT: Duration = Duration::from_secs(5);

struct TestNode {
    coordinator: Coordinator<PeerPool<TcpConnector>>,
    engine: Arc<MemoryEngine>,
    pool: Arc<PeerPool<TcpConnector>>,
    _stop: tokio_util::sync::DropGuard,
}

/// Members n1..n3 and a joiner n4 that only the next ring names; every pool knows every address.
async fn cluster() -> (BTreeMap<NodeId, TestNode>, Ring, Ring) {
    let auth = ClusterAuth::new(CLUSTER, SECRET.to_vec()).unwrap();
    let mut listeners = Vec::new();
    let mut addresses = BTreeMap::new();
    for i in 1..=4 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let id = NodeId::new(format!("n{i}")).unwrap();
        addresses.insert(id.clone(), listener.local_addr().unwrap().to_string());
        listeners.push((id, listener));
    }
    let members = addresses.keys().take(3).cloned().map(Member::new).collect();
    let current = Ring::new(8, members, 3).unwrap();
    let joiner = Member::new(NodeId::new("n4").unwrap());
    let next = current.with_member_joined(joiner, 3).unwrap();
    let mut nodes = BTreeMap::new();
    for (id, listener) in listeners {
        let engine = Arc::new(MemoryEngine::new());
        let dyn_engine: Arc<dyn Engine> = engine.clone();
        let pool = Arc::new(PeerPool::new(TcpConnector, auth.clone(), addresses.clone()));
        let buckets = Buckets::load(
            BucketProps::default(),
            BTreeMap::new(),
            Arc::clone(&dyn_engine),
        )
        .unwrap();
        let coordinator = Coordinator::new(Parts {
            me: id.clone(),
            actor: Actor::new(id.actor_id(), 0),
            ring: current.clone(),
            engine: dyn_engine,
            replicas: Arc::clone(&pool),
            buckets,
            clock: Arc::new(SystemClock),
            options: Options::default(),
        });
        let stop = CancellationToken::new();
        let server = NodeServer::new(coordinator.clone(), Arc::clone(&pool) as _);
        tokio::spawn(server.run(listener, auth.clone(), stop.clone()));
        nodes.insert(
            id,
            TestNode {
                coordinator,
                engine,
                pool,
                _stop: stop.drop_guard(),
            },
        );
    }
    (nodes, current, next)
}

#[tokio::test]
async fn a_partition_moves_to_a_joining_node_over_rpc() {
    let (nodes, current, next) = cluster().await;
    let n = |name: &str| &nodes[&NodeId::new(name).unwrap()];
    for i in 0..200 {
        let request = PutRequest::new(
            "b",
            format!("k{i}"),
            Content::new(format!("v{i}")),
            Context::empty(),
        );
        n("n1").coordinator.put(request).await.unwrap();
    }
    let joiner = NodeId::new("n4").unwrap();
    let p = next.partitions_replicated_by(&joiner, 3)[0];
    let from = current.preference_list_for_partition(p, 3).primaries()[0].clone();
    let sender = &nodes[&from];
    let keys = sender.engine.scan_partition(p, None, usize::MAX).unwrap();
    assert!(!keys.is_empty());
    let deleted = keys[0].0.key.clone();
    n("n1")
        .coordinator
        .delete(DeleteRequest::new("b", deleted.clone(), None))
        .await
        .unwrap();
    for node in nodes.values() {
        node.coordinator.drain().await;
        node.coordinator.set_next_ring(Some(next.clone())).unwrap();
    }
    let report = sender
        .coordinator
        .transfer_partition(
            p,
            joiner.clone(),
            TransferOptions {
                batch_keys: 7,
                ..TransferOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(report.keys_total, keys.len() as u64);
    assert_eq!(report.receiver.objects, keys.len() as u64);
    assert_eq!(report.receiver.tombstones, 1);
    assert_eq!(report.resent, 0, "verification found nothing missing");
    let received = n("n4").engine.scan_partition(p, None, usize::MAX).unwrap();
    assert_eq!(received.len(), keys.len());
    for (key, object) in &received {
        assert_eq!(is_deleted(object), key.key == deleted, "{key}");
    }
    // Progress and the limit, as `dynamo admin transfers` reads and sets them.
    let pool = &n("n1").pool;
    assert!(pool.transfers(&from, TIMEOUT).await.unwrap().is_empty());
    assert_eq!(pool.transfer_limit(&from, TIMEOUT).await.unwrap(), 2);
    pool.set_transfer_limit(&from, 4, TIMEOUT).await.unwrap();
    assert_eq!(sender.coordinator.transfer_limit(), 4);
    assert!(
        pool.set_transfer_limit(&from, 10_000, TIMEOUT)
            .await
            .is_err()
    );
}
