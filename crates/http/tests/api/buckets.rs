//! Bucket properties and key listing.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{node, node_with};

#[tokio::test]
async fn props_show_the_defaults_as_riak_does() {
    let node = node();
    let get = node.get("/buckets/test/props").await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.header("content-type"), Some("application/json"));
    let props = &get.json()["props"];
    assert_eq!(props["name"], "test");
    assert_eq!(props["n_val"], 1);
    assert_eq!(props["r"], "quorum");
    assert_eq!(props["w"], "quorum");
    assert_eq!(props["dw"], 0);
    assert_eq!(props["allow_mult"], true);
    assert_eq!(props["last_write_wins"], false);
    let typed = node.get("/types/default/buckets/test/props").await;
    assert_eq!(typed.json(), get.json());
}

#[tokio::test]
async fn a_partial_update_merges_with_the_current_props() {
    let node = node();
    let set = node
        .set_props(
            "b",
            r#"{"props":{"n_val":3,"r":2,"w":"all","allow_mult":false}}"#,
        )
        .await;
    assert_eq!(set.status, StatusCode::NO_CONTENT, "{}", set.text());
    let set = node.set_props("b", r#"{"props":{"dw":"one"}}"#).await;
    assert_eq!(set.status, StatusCode::NO_CONTENT, "{}", set.text());
    let props = node.get("/buckets/b/props").await.json()["props"].clone();
    assert_eq!(props["n_val"], 3);
    assert_eq!(props["r"], 2);
    assert_eq!(props["w"], "all");
    assert_eq!(props["dw"], "one");
    assert_eq!(props["allow_mult"], false);
    // Other buckets keep the defaults.
    assert_eq!(
        node.get("/buckets/other/props").await.json()["props"]["n_val"],
        1
    );
}

#[tokio::test]
async fn bad_props_are_refused_and_change_nothing() {
    let node = node();
    let before = node.get("/buckets/b/props").await.json();
    for body in [
        r#"{"props":{"last_write_wins":true}}"#,
        r#"{"props":{"n_val":0}}"#,
        r#"{"props":{"r":5}}"#,
        r#"{"props":{"w":0}}"#,
        r#"{"props":{"precommit":[]}}"#,
        r#"{"props":{"n_val":"three"}}"#,
        r#"{"props":{"n_val":2},"keys":true}"#,
        r#"{"n_val":2}"#,
        r#"{"props":"#,
    ] {
        let set = node.set_props("b", body).await;
        assert_eq!(
            set.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            set.text()
        );
    }
    let form = node
        .call(
            Method::PUT,
            "/buckets/b/props",
            &[("content-type", "application/x-www-form-urlencoded")],
            r#"{"props":{"n_val":2}}"#,
        )
        .await;
    assert_eq!(form.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = format!(r#"{{"props":{{"n_val":2}}}}{}"#, " ".repeat(100_000));
    assert_eq!(
        node.set_props("b", &huge).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(node.get("/buckets/b/props").await.json(), before);
}

#[tokio::test]
async fn a_quorum_the_cluster_cannot_meet_is_unavailable() {
    let node = node();
    // Three replicas wanted, one node to hold them: a majority cannot answer.
    let set = node.set_props("wide", r#"{"props":{"n_val":3}}"#).await;
    assert_eq!(set.status, StatusCode::NO_CONTENT);
    let put = node.put("/buckets/wide/keys/k", "v", None).await;
    assert_eq!(
        put.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        put.text()
    );
    assert!(put.text().contains("quorum"), "{}", put.text());
    let get = node.get("/buckets/wide/keys/k").await;
    assert_eq!(
        get.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        get.text()
    );
    // Dynamo never rolls a write back: the one replica that took it still has it.
    let one = node.get("/buckets/wide/keys/k?r=1").await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text());
    assert_eq!(one.text(), "v");
}

#[tokio::test]
async fn keys_are_listed_in_one_object() {
    let node = node();
    for k in ["c", "a", "b"] {
        node.put(&format!("/buckets/list/keys/{k}"), "v", None)
            .await;
    }
    node.put("/buckets/elsewhere/keys/z", "v", None).await;
    let list = node.get("/buckets/list/keys?keys=true").await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.header("content-type"), Some("application/json"));
    assert_eq!(list.json(), json!({"keys": ["a", "b", "c"]}));
    let typed = node.get("/types/default/buckets/list/keys?keys=true").await;
    assert_eq!(typed.json(), list.json());
    let empty = node.get("/buckets/nothing/keys?keys=true").await;
    assert_eq!(empty.json(), json!({"keys": []}));
}

#[tokio::test]
async fn keys_stream_in_chunks() {
    let options = dynamo_http::Options {
        keys_stream_chunk: 2,
        ..dynamo_http::Options::default()
    };
    let node = node_with(dynamo_storage::Limits::default(), options);
    for k in ["k1", "k2", "k3", "k4", "k5"] {
        node.put(&format!("/buckets/s/keys/{k}"), "v", None).await;
    }
    let stream = node.get("/buckets/s/keys?keys=stream").await;
    assert_eq!(stream.status, StatusCode::OK);
    let objects: Vec<Value> = serde_json::Deserializer::from_slice(&stream.body)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .expect("a series of JSON objects");
    assert_eq!(objects.len(), 3);
    let keys: Vec<Value> = objects
        .iter()
        .flat_map(|o| o["keys"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(keys, ["k1", "k2", "k3", "k4", "k5"]);
    let empty = node.get("/buckets/none/keys?keys=stream").await;
    assert_eq!(empty.json(), json!({"keys": []}));
}

#[tokio::test]
async fn listing_needs_the_keys_parameter() {
    let node = node();
    for uri in [
        "/buckets/b/keys",
        "/buckets/b/keys?keys=false",
        "/buckets/b/keys?keys=yes",
    ] {
        let get = node.get(uri).await;
        assert_eq!(get.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(get.text().contains("keys=true"), "{}", get.text());
    }
}
