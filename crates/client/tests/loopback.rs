//! The client against a real three-node cluster in this process, over loopback TCP: routing,
//! the read-modify-write cycle, keyless calls, and retrying past a node that went down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dynamo_client::{BucketProps, Client, ClientConfig, Context, Error, NodeId};
use dynamo_coordinator::{Buckets, Coordinator, Options, Parts, SystemClock};
use dynamo_ring::{Member, Ring};
use dynamo_rpc::{ClusterAuth, NodeServer, PeerPool, TcpConnector, TcpListener};
use dynamo_storage::MemoryEngine;
use dynamo_versioning::Actor;
use tokio_util::sync::CancellationToken;

const CLUSTER: &str = "loopback";
const SECRET: &[u8] = b"0123456789abcdef-test";

/// A running node: its address, its coordinator and the token that stops it.
struct TestNode {
    id: NodeId,
    addr: String,
    coordinator: Coordinator<PeerPool<TcpConnector>>,
    stop: CancellationToken,
}

/// Starts `n` nodes on loopback ports sharing one ring.
async fn cluster(n: usize) -> Vec<TestNode> {
    let auth = ClusterAuth::new(CLUSTER, SECRET.to_vec()).unwrap();
    let mut listeners = Vec::new();
    let mut addresses = BTreeMap::new();
    for i in 1..=n {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let id = NodeId::new(format!("n{i}")).unwrap();
        addresses.insert(id.clone(), listener.local_addr().unwrap().to_string());
        listeners.push((id, listener));
    }
    let members = addresses.keys().cloned().map(Member::new).collect();
    let ring = Ring::new(64, members, 3).unwrap();
    let mut nodes = Vec::new();
    for (id, listener) in listeners {
        let engine: Arc<dyn dynamo_storage::Engine> = Arc::new(MemoryEngine::new());
        let pool = Arc::new(PeerPool::new(TcpConnector, auth.clone(), addresses.clone()));
        let buckets =
            Buckets::load(BucketProps::default(), BTreeMap::new(), Arc::clone(&engine)).unwrap();
        let coordinator = Coordinator::new(Parts {
            me: id.clone(),
            actor: Actor::new(id.actor_id(), 0),
            ring: ring.clone(),
            engine,
            replicas: Arc::clone(&pool),
            buckets,
            clock: Arc::new(SystemClock),
            options: Options::default(),
        });
        let stop = CancellationToken::new();
        let server = NodeServer::new(coordinator.clone(), pool);
        tokio::spawn(server.run(listener, auth.clone(), stop.clone()));
        nodes.push(TestNode {
            addr: addresses[&id].clone(),
            id,
            coordinator,
            stop,
        });
    }
    nodes
}

fn config(nodes: &[TestNode]) -> ClientConfig {
    let mut config = ClientConfig::new(
        nodes.iter().map(|n| n.addr.clone()),
        CLUSTER,
        SECRET.to_vec(),
    );
    config.request_timeout = Duration::from_secs(2);
    config
}

#[tokio::test]
async fn put_get_update_delete_through_the_client() {
    let nodes = cluster(3).await;
    let client = Client::connect(config(&nodes)).await.unwrap();
    assert_eq!(client.cluster_map().ring.members().len(), 3);

    let missing = client.get("users", "alice").await.unwrap();
    assert!(missing.is_not_found());

    client
        .put("users", "alice", &b"v1"[..], Context::empty())
        .await
        .unwrap();
    let read = client.get("users", "alice").await.unwrap();
    let values: Vec<&[u8]> = read.siblings().iter().map(|s| &s.value.value[..]).collect();
    assert_eq!(values, [b"v1"]);

    client
        .put("users", "alice", &b"v2"[..], read.context())
        .await
        .unwrap();
    let read = client.get("users", "alice").await.unwrap();
    let values: Vec<&[u8]> = read.siblings().iter().map(|s| &s.value.value[..]).collect();
    assert_eq!(
        values,
        [b"v2"],
        "a write with the read's context supersedes it"
    );

    assert_eq!(
        client.list_keys("users").await.unwrap(),
        [b"alice".to_vec()]
    );

    let deleted = client
        .delete("users", "alice", Some(read.context()))
        .await
        .unwrap();
    assert!(deleted.existed);
    assert!(client.get("users", "alice").await.unwrap().is_not_found());
}

#[tokio::test]
async fn status_and_bucket_props_reach_every_member() {
    let nodes = cluster(3).await;
    let client = Client::connect(config(&nodes)).await.unwrap();
    let status = client.status().await.unwrap();
    let answered: Vec<&NodeId> = status
        .iter()
        .filter(|(_, s)| s.is_ok())
        .map(|(id, _)| id)
        .collect();
    assert_eq!(answered, nodes.iter().map(|n| &n.id).collect::<Vec<_>>());

    let props = BucketProps {
        n_val: 2,
        ..BucketProps::default()
    };
    client
        .set_bucket_props("small", props.clone())
        .await
        .unwrap();
    assert_eq!(client.bucket_props("small").await.unwrap(), props);
}

#[tokio::test]
async fn invalid_requests_fail_at_once_without_retrying() {
    let nodes = cluster(3).await;
    let client = Client::connect(config(&nodes)).await.unwrap();
    let mut request = dynamo_client::GetRequest::new("users", "bob");
    request.r = dynamo_client::Quorum::Count(9);
    let err = client.get_with(request).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Request(dynamo_coordinator::Error::InvalidRequest(_))
        ),
        "{err:?}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn requests_retry_past_a_stopped_node() {
    let nodes = cluster(3).await;
    let client = Client::connect(config(&nodes)).await.unwrap();
    // Stop the first primary of the key, so the write's first attempt fails.
    let ring = client.cluster_map().ring;
    let first = ring.preference_list(b"users", b"carol", 3).primaries()[0].clone();
    let down = nodes.iter().find(|n| n.id == first).unwrap();
    down.stop.cancel();
    wait_until_only_down(&client, &first).await;

    client
        .put("users", "carol", &b"still writable"[..], Context::empty())
        .await
        .unwrap();
    for _ in 0..3 {
        let read = client.get("users", "carol").await.unwrap();
        assert!(!read.is_not_found());
    }
}

/// Polls the client's status until `down` is the only member that fails to answer.
async fn wait_until_only_down(client: &Client, down: &NodeId) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = client.status().await.unwrap();
        let failed: Vec<&NodeId> = status
            .iter()
            .filter(|(_, s)| s.is_err())
            .map(|(id, _)| id)
            .collect();
        if failed == [down] {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{down} still answers: {status:?}"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_wrong_secret_or_no_reachable_seed_fails_to_connect() {
    let nodes = cluster(1).await;
    let mut wrong = config(&nodes);
    wrong.secret = b"another-secret-of-16".to_vec();
    assert!(matches!(
        Client::connect(wrong).await,
        Err(Error::NoSeed(_))
    ));
    nodes[0].stop.cancel();
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = unused.local_addr().unwrap().to_string();
    drop(unused);
    let mut nowhere = config(&nodes);
    nowhere.seeds = vec![addr];
    let err = Client::connect(nowhere).await.unwrap_err();
    assert!(
        matches!(err, Error::NoSeed(_)) && err.is_retryable(),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_cluster_map_is_refreshed_in_the_background() {
    let nodes = cluster(3).await;
    let mut config = config(&nodes);
    config.refresh_interval = dynamo_client::MIN_REFRESH_INTERVAL;
    let client = Client::connect(config).await.unwrap();
    let old = client.cluster_map().ring;
    // An operator reweights n1: every node installs the new ring (epoch + 1).
    let first = old.members()[0].id.clone();
    let newer = old.with_member_weight(&first, 2, 3).unwrap();
    for node in &nodes {
        node.coordinator.set_ring(newer.clone());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.cluster_map().ring.epoch() != newer.epoch() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client never fetched epoch {}",
            newer.epoch()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.cluster_map().ring, newer);
    // A clone shares the map; an explicit refresh of an unchanged cluster changes nothing.
    let clone = client.clone();
    clone.refresh().await.unwrap();
    assert_eq!(clone.cluster_map().ring, newer);
}
