//! A three-node cluster on loopback, used the way a user uses it: over HTTP (Riak's API) and
//! through the Rust client.

use std::collections::BTreeMap;
use std::time::Duration;

use dynamo_coordinator::ReplicaPut;
use dynamo_integration_tests::{CLUSTER, SECRET, TestCluster};
use dynamo_node::config::BucketConfig;
use dynamo_ring::NodeId;
use dynamo_rpc::{ClusterAuth, PeerPool, TcpConnector};
use dynamo_storage::{Content, ObjectKey};
use dynamo_versioning::{Actor, Context, Object};
use reqwest::StatusCode;

fn buckets() -> BTreeMap<String, BucketConfig> {
    let mut b = BTreeMap::new();
    b.insert(
        "lww".to_string(),
        BucketConfig {
            last_write_wins: Some(true),
            allow_mult: Some(false),
            ..BucketConfig::default()
        },
    );
    b.insert(
        "single".to_string(),
        BucketConfig {
            n_val: Some(1),
            r: Some(dynamo_node::config::QuorumValue::Count(1)),
            w: Some(dynamo_node::config::QuorumValue::Count(1)),
            ..BucketConfig::default()
        },
    );
    b
}

async fn cluster() -> TestCluster {
    TestCluster::start(3, buckets())
        .await
        .expect("cluster starts")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get_text(url: &str) -> (StatusCode, String) {
    let r = http().get(url).send().await.unwrap();
    let status = r.status();
    (status, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_written_over_http_are_read_by_the_client_and_back() {
    let c = cluster().await;
    let r = http()
        .put(format!("{}/buckets/users/keys/alice", c.http(0)))
        .header("Content-Type", "text/plain")
        .body("from http")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let client = c.client().await.unwrap();
    let got = client.get("users", "alice").await.unwrap();
    let values: Vec<&[u8]> = got
        .siblings()
        .iter()
        .map(|s| s.value.value.as_ref())
        .collect();
    assert_eq!(values, vec![b"from http".as_slice()]);
    assert_eq!(
        got.siblings()[0].value.content_type.as_deref(),
        Some("text/plain")
    );

    client
        .put("users", "alice", "from client", got.context())
        .await
        .unwrap();
    for i in 0..3 {
        let (status, body) = get_text(&format!("{}/buckets/users/keys/alice", c.http(i))).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "from client"),
            "through n{}",
            i + 1
        );
    }
    c.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_contexts_make_siblings_over_http_and_the_merged_context_collapses_them() {
    let c = cluster().await;
    let url = format!("{}/buckets/carts/keys/k1", c.http(0));
    http().put(&url).body("v0").send().await.unwrap();
    let r = http().get(&url).send().await.unwrap();
    let stale = r.headers()["x-riak-vclock"].to_str().unwrap().to_string();

    for (node, value) in [(1, "left"), (2, "right")] {
        let r = http()
            .put(format!("{}/buckets/carts/keys/k1", c.http(node)))
            .header("X-Riak-Vclock", &stale)
            .header("Content-Type", "text/plain")
            .body(value)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }

    let r = http().get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::MULTIPLE_CHOICES);
    let merged = r.headers()["x-riak-vclock"].to_str().unwrap().to_string();
    let listing = r.text().await.unwrap();
    assert!(listing.starts_with("Siblings:"), "{listing}");
    assert_eq!(listing.lines().count(), 3, "two vtags: {listing}");

    let r = http()
        .get(&url)
        .header("Accept", "multipart/mixed")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MULTIPLE_CHOICES);
    let body = r.text().await.unwrap();
    assert!(body.contains("left") && body.contains("right"), "{body}");

    let r = http()
        .put(&url)
        .header("X-Riak-Vclock", &merged)
        .body("resolved")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(
        get_text(&url).await,
        (StatusCode::OK, "resolved".to_string())
    );
    c.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_lww_bucket_keeps_exactly_one_value() {
    let c = cluster().await;
    for (node, value) in [(0, "first"), (1, "second"), (2, "third")] {
        let r = http()
            .put(format!("{}/buckets/lww/keys/k", c.http(node)))
            .body(value)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        // Distinct millisecond timestamps make the winner well defined.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, body) = get_text(&format!("{}/buckets/lww/keys/k", c.http(0))).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "third"));
    c.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_then_get_answers_404() {
    let c = cluster().await;
    let url = format!("{}/buckets/b/keys/gone", c.http(1));
    http().put(&url).body("x").send().await.unwrap();
    let r = http().delete(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for i in 0..3 {
        let (status, _) = get_text(&format!("{}/buckets/b/keys/gone", c.http(i))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let client = c.client().await.unwrap();
    assert!(client.get("b", "gone").await.unwrap().is_not_found());
    c.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_sent_to_a_node_outside_the_preference_list_is_forwarded() {
    let c = cluster().await;
    // Bucket "single" keeps one replica, so two of the three nodes are outside every key's top N.
    let ring = c.nodes[0].coordinator().ring();
    let owner = ring.preference_list(b"single", b"k", 1).primaries()[0].clone();
    let outsider = (0..3).find(|&i| c.nodes[i].id != owner).unwrap();
    let r = http()
        .put(format!("{}/buckets/single/keys/k", c.http(outsider)))
        .body("fwd")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(c.nodes[outsider].coordinator().metrics().forwarded.get(), 1);
    let key = ObjectKey::new(ring.partition_for_key(b"single", b"k"), "single", "k");
    let stored_at_owner = c.nodes[c.index_of(&owner)]
        .coordinator()
        .engine()
        .get(&key)
        .unwrap();
    assert!(
        stored_at_owner.is_some(),
        "the owner coordinated and stored the write"
    );
    let stored_at_outsider = c.nodes[outsider].coordinator().engine().get(&key).unwrap();
    assert!(
        stored_at_outsider.is_none(),
        "the forwarding node keeps no copy"
    );
    c.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_documented_4xx_and_changes_nothing() {
    let c = cluster().await;
    let url = format!("{}/buckets/b/keys/k", c.http(0));
    http().put(&url).body("original").send().await.unwrap();
    let unchanged = || async { get_text(&url).await };

    // An oversize value (the test cluster's limit is 1 MiB).
    let r = http()
        .put(&url)
        .body(vec![b'x'; 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(unchanged().await, (StatusCode::OK, "original".to_string()));

    // r above n_val, and a write quorum above n_val.
    let (status, _) = get_text(&format!("{url}?r=4")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let r = http()
        .put(format!("{url}?w=5"))
        .body("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(unchanged().await, (StatusCode::OK, "original".to_string()));

    // A malformed X-Riak-Vclock.
    let r = http()
        .put(&url)
        .header("X-Riak-Vclock", "%%not-base64%%")
        .body("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = http()
        .put(&url)
        .header("X-Riak-Vclock", "AAAA")
        .body("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(unchanged().await, (StatusCode::OK, "original".to_string()));

    // Invalid bucket properties.
    let props_url = format!("{}/buckets/b/props", c.http(0));
    let before = get_text(&props_url).await;
    for bad in [
        r#"{"props":{"n_val":0}}"#,
        r#"{"props":{"r":7}}"#,
        r#"{"props":{"allow_mult":"maybe"}}"#,
        "not json",
    ] {
        let r = http()
            .put(&props_url)
            .header("Content-Type", "application/json")
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(get_text(&props_url).await, before);
    for i in 1..3 {
        let other = get_text(&format!("{}/buckets/b/props", c.http(i))).await;
        assert_eq!(other, before, "props on n{} unchanged", i + 1);
    }
    c.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_the_wrong_cluster_secret_is_refused_and_nothing_it_sends_is_applied() {
    let c = cluster().await;
    let target = c.nodes[0].id.clone();
    let addresses: BTreeMap<NodeId, String> =
        [(target.clone(), c.nodes[0].rpc_addr.to_string())].into();
    let intruder = PeerPool::new(
        TcpConnector,
        ClusterAuth::new(CLUSTER, b"not-the-secret-at-all".to_vec()).unwrap(),
        addresses,
    );
    let ring = c.nodes[0].coordinator().ring();
    let key = ObjectKey::new(ring.partition_for_key(b"b", b"evil"), "b", "evil");
    let mut object = Object::new();
    object.put(
        Actor::new(42, 1),
        &Context::empty(),
        Content::new("evil"),
        1,
    );
    let put = ReplicaPut::new(key.clone(), object, false);
    let result =
        dynamo_coordinator::Replicas::put(&intruder, &target, put, Duration::from_secs(2)).await;
    assert!(result.is_err(), "the intruder was served: {result:?}");
    assert!(
        c.nodes[0]
            .coordinator()
            .engine()
            .get(&key)
            .unwrap()
            .is_none()
    );

    // A client with the wrong secret cannot connect either.
    let bad = dynamo_client::ClientConfig::new(
        [c.nodes[0].rpc_addr.to_string()],
        CLUSTER,
        b"wrong-secret-0123456".to_vec(),
    );
    assert!(dynamo_client::Client::connect(bad).await.is_err());
    // The right secret still works.
    let good = dynamo_client::ClientConfig::new(
        [c.nodes[0].rpc_addr.to_string()],
        CLUSTER,
        SECRET.as_bytes().to_vec(),
    );
    assert!(dynamo_client::Client::connect(good).await.is_ok());
    c.stop().await.unwrap();
}
