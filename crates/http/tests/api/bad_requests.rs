//! Every documented client mistake gets its 4xx, and leaves the stored data as it was.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use bytes::Bytes;
use dynamo_storage::Limits;

use crate::common::{TestNode, node, node_with};

const KEY: &str = "/buckets/b/keys/k";

/// A node holding "old" at [`KEY`].
async fn with_old_value() -> TestNode {
    let node = node();
    assert_eq!(
        node.put(KEY, "old", None).await.status,
        StatusCode::NO_CONTENT
    );
    node
}

async fn assert_unchanged(node: &TestNode) {
    let get = node.get(KEY).await;
    assert_eq!(get.status, StatusCode::OK, "{}", get.text());
    assert_eq!(get.text(), "old");
}

#[tokio::test]
async fn a_malformed_vclock_is_refused() {
    let node = with_old_value().await;
    for vclock in ["not base64!", "AAAA", "////"] {
        let put = node.put(KEY, "new", Some(vclock)).await;
        assert_eq!(put.status, StatusCode::BAD_REQUEST, "{vclock}");
        assert!(put.text().contains("X-Riak-Vclock"), "{}", put.text());
        assert_eq!(
            put.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
    }
    let delete = node
        .call(
            Method::DELETE,
            KEY,
            &[("x-riak-vclock", "%%%")],
            Body::empty(),
        )
        .await;
    assert_eq!(delete.status, StatusCode::BAD_REQUEST);
    assert_unchanged(&node).await;
}

#[tokio::test]
async fn a_quorum_above_n_is_refused() {
    let node = with_old_value().await;
    let get = node.get("/buckets/b/keys/k?r=2").await;
    assert_eq!(get.status, StatusCode::BAD_REQUEST);
    assert!(get.text().contains("n_val"), "{}", get.text());
    for uri in [
        "/buckets/b/keys/k?w=2",
        "/buckets/b/keys/k?dw=5",
        "/buckets/b/keys/k?pw=3",
    ] {
        assert_eq!(
            node.put(uri, "new", None).await.status,
            StatusCode::BAD_REQUEST,
            "{uri}"
        );
    }
    let delete = node
        .call(Method::DELETE, "/buckets/b/keys/k?w=9", &[], Body::empty())
        .await;
    assert_eq!(delete.status, StatusCode::BAD_REQUEST);
    assert_unchanged(&node).await;
}

#[tokio::test]
async fn unparseable_parameters_are_refused() {
    let node = with_old_value().await;
    for query in [
        "w=lots",
        "dw=-1",
        "pw=1.5",
        "timeout=abc",
        "timeout=0",
        "returnbody=maybe",
        "w=%zz",
    ] {
        let put = node.put(&format!("{KEY}?{query}"), "new", None).await;
        assert_eq!(put.status, StatusCode::BAD_REQUEST, "{query}");
    }
    for query in ["r=most", "pr=x", "timeout=-5"] {
        let get = node.get(&format!("{KEY}?{query}")).await;
        assert_eq!(get.status, StatusCode::BAD_REQUEST, "{query}");
    }
    let delete = node
        .call(
            Method::DELETE,
            &format!("{KEY}?rw=some"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(delete.status, StatusCode::BAD_REQUEST);
    let delete_pr = node
        .call(Method::DELETE, &format!("{KEY}?pr=9"), &[], Body::empty())
        .await;
    assert_eq!(delete_pr.status, StatusCode::BAD_REQUEST);
    assert_unchanged(&node).await;
}

fn small_node() -> TestNode {
    let limits = Limits {
        max_value_len: 1024,
        ..Limits::default()
    };
    node_with(limits, dynamo_http::Options::default())
}

#[tokio::test]
async fn an_oversize_value_is_refused_by_its_declared_length() {
    let node = small_node();
    node.put(KEY, "old", None).await;
    let big = "x".repeat(1025);
    let put = node.put(KEY, &big, None).await;
    assert_eq!(put.status, StatusCode::PAYLOAD_TOO_LARGE);
    // A declared length over the limit is refused before any body byte is read.
    let lying = node
        .call(
            Method::PUT,
            KEY,
            &[("content-length", "1000000000")],
            Body::empty(),
        )
        .await;
    assert_eq!(lying.status, StatusCode::PAYLOAD_TOO_LARGE);
    let exact = "y".repeat(1024);
    let at_limit = node
        .call(Method::PUT, "/buckets/b/keys/other", &[], exact)
        .await;
    assert_eq!(at_limit.status, StatusCode::NO_CONTENT);
    assert_unchanged(&node).await;
}

#[tokio::test]
async fn an_oversize_chunked_value_is_refused() {
    let node = small_node();
    node.put(KEY, "old", None).await;
    let chunks = (0..4).map(|_| Ok::<_, Infallible>(Bytes::from(vec![b'z'; 400])));
    let body = Body::from_stream(futures::stream::iter(chunks));
    let put = node.call(Method::PUT, KEY, &[], body).await;
    assert_eq!(put.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_unchanged(&node).await;
}

#[tokio::test]
async fn oversize_metadata_is_refused_by_the_engine() {
    let node = small_node();
    node.put(KEY, "old", None).await;
    let meta = "m".repeat(1024);
    let put = node
        .call(
            Method::PUT,
            KEY,
            &[("x-riak-meta-big", meta.as_str())],
            "new",
        )
        .await;
    assert_eq!(put.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_unchanged(&node).await;
}

#[tokio::test]
async fn bad_paths_are_refused() {
    let node = with_old_value().await;
    let typed = node.get("/types/maps/buckets/b/keys/k").await;
    assert_eq!(typed.status, StatusCode::NOT_FOUND);
    assert!(typed.text().contains("maps"), "{}", typed.text());
    let put_typed = node.put("/types/maps/buckets/b/keys/k", "new", None).await;
    assert_eq!(put_typed.status, StatusCode::NOT_FOUND);
    assert_eq!(
        node.put("/buckets/b/keys/%G0", "new", None).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(node.get("/nowhere").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        node.get("/buckets/b/keys/k/extra").await.status,
        StatusCode::NOT_FOUND
    );
    let long_key = format!("/buckets/b/keys/{}", "k".repeat(5000));
    assert_eq!(
        node.put(&long_key, "new", None).await.status,
        StatusCode::BAD_REQUEST
    );
    let wrong_method = node.call(Method::PATCH, KEY, &[], "new").await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_unchanged(&node).await;
}

#[tokio::test]
async fn malformed_headers_are_refused() {
    let node = with_old_value().await;
    let request = axum::http::Request::builder()
        .method(Method::PUT)
        .uri(KEY)
        .header(
            "x-riak-meta-bad",
            axum::http::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        )
        .body(Body::from("new"))
        .unwrap();
    assert_eq!(node.send(request).await.status, StatusCode::BAD_REQUEST);
    let content_type = axum::http::Request::builder()
        .method(Method::PUT)
        .uri(KEY)
        .header(
            "content-type",
            axum::http::HeaderValue::from_bytes(b"text/\xff").unwrap(),
        )
        .body(Body::from("new"))
        .unwrap();
    assert_eq!(
        node.send(content_type).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_unchanged(&node).await;
}
