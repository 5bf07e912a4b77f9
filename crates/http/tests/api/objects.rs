//! Storing, fetching and deleting objects: the success paths of Riak's object endpoints.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use dynamo_http::{encode_segment, http_date};

use crate::common::{START_MS, node};

#[tokio::test]
async fn a_stored_value_comes_back_with_riak_headers() {
    let node = node();
    let headers = [
        ("content-type", "application/json"),
        ("x-riak-meta-color", "blue"),
    ];
    let put = node
        .call(
            Method::PUT,
            "/buckets/test/keys/doc",
            &headers,
            r#"{"foo":"bar"}"#,
        )
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    assert!(put.body.is_empty());

    let get = node.get("/buckets/test/keys/doc").await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.text(), r#"{"foo":"bar"}"#);
    assert_eq!(get.header("content-type"), Some("application/json"));
    assert_eq!(get.header("x-riak-meta-color"), Some("blue"));
    assert!(get.header("x-riak-vclock").is_some_and(|v| !v.is_empty()));
    assert!(get.header("etag").is_some_and(|e| e.len() == 22));
    assert_eq!(
        get.header("last-modified"),
        Some(http_date(START_MS).as_str())
    );
    assert_eq!(get.header("link"), Some("</buckets/test>; rel=\"up\""));
}

#[tokio::test]
async fn a_value_without_content_type_is_octet_stream() {
    let node = node();
    let put = node
        .call(Method::PUT, "/buckets/b/keys/k", &[], Body::from("raw"))
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let get = node.get("/buckets/b/keys/k").await;
    assert_eq!(get.header("content-type"), Some("application/octet-stream"));
    assert_eq!(get.text(), "raw");
}

#[tokio::test]
async fn the_three_url_families_reach_the_same_object() {
    let node = node();
    node.put("/types/default/buckets/b/keys/k", "v1", None)
        .await;
    assert_eq!(node.get("/buckets/b/keys/k").await.text(), "v1");
    let legacy = node.get("/riak/b/k").await;
    assert_eq!(legacy.text(), "v1");
    let vclock = legacy.header("x-riak-vclock").expect("vclock");
    let post = node
        .call(
            Method::POST,
            "/riak/b/k",
            &[("x-riak-vclock", vclock)],
            "v2",
        )
        .await;
    assert_eq!(post.status, StatusCode::NO_CONTENT);
    let typed = node.get("/types/default/buckets/b/keys/k").await;
    assert_eq!(typed.text(), "v2");
    assert_eq!(
        typed.header("link"),
        Some("</types/default/buckets/b>; rel=\"up\"")
    );
}

#[tokio::test]
async fn keys_are_percent_decoded_bytes() {
    let node = node();
    let raw_key = [0xffu8, 0x00, b'/', b' ', b'k'];
    let uri = format!("/buckets/b%20x/keys/{}", encode_segment(&raw_key));
    assert_eq!(
        node.put(&uri, "bytes", None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(node.get(&uri).await.text(), "bytes");
    // The same bytes spelled with lowercase escapes name the same key.
    let lower = node.get("/buckets/b%20x/keys/%ff%00%2f%20k").await;
    assert_eq!(lower.text(), "bytes");
    let keys = node.get("/buckets/b%20x/keys?keys=true").await.json();
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn returnbody_answers_with_the_stored_object() {
    let node = node();
    let put = node
        .call(
            Method::PUT,
            "/buckets/b/keys/k?returnbody=true",
            &[("content-type", "text/plain")],
            "hello",
        )
        .await;
    assert_eq!(put.status, StatusCode::OK);
    assert_eq!(put.text(), "hello");
    assert_eq!(put.header("content-type"), Some("text/plain"));
    let vclock = put.header("x-riak-vclock").map(str::to_string);
    assert!(vclock.is_some());
    let get = node.get("/buckets/b/keys/k").await;
    assert_eq!(get.header("x-riak-vclock").map(str::to_string), vclock);
    assert_eq!(get.header("etag"), put.header("etag"));
}

#[tokio::test]
async fn posting_to_a_bucket_assigns_a_key() {
    let node = node();
    let post = node
        .call(
            Method::POST,
            "/buckets/test/keys",
            &[("content-type", "text/plain")],
            "this is a test",
        )
        .await;
    assert_eq!(post.status, StatusCode::CREATED);
    let location = post.header("location").expect("Location").to_string();
    let key = location
        .strip_prefix("/buckets/test/keys/")
        .expect("a key under the bucket");
    assert!(!key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(node.get(&location).await.text(), "this is a test");

    let second = node
        .call(Method::POST, "/buckets/test/keys", &[], "other")
        .await;
    assert_ne!(second.header("location"), Some(location.as_str()));

    let typed = node
        .call(
            Method::POST,
            "/types/default/buckets/test/keys?returnbody=true",
            &[],
            "typed",
        )
        .await;
    assert_eq!(typed.status, StatusCode::CREATED);
    assert_eq!(typed.text(), "typed");
    let location = typed.header("location").expect("Location");
    assert!(location.starts_with("/types/default/buckets/test/keys/"));
    assert_eq!(node.get(location).await.text(), "typed");
}

#[tokio::test]
async fn missing_keys_are_not_found() {
    let node = node();
    let get = node.get("/buckets/b/keys/never").await;
    assert_eq!(get.status, StatusCode::NOT_FOUND);
    assert_eq!(get.text(), "not found\n");
    assert!(get.header("x-riak-vclock").is_none());
}

#[tokio::test]
async fn a_deleted_key_is_not_found_but_keeps_its_context() {
    let node = node();
    node.put("/buckets/b/keys/k", "v", None).await;
    let delete = node
        .call(Method::DELETE, "/buckets/b/keys/k", &[], Body::empty())
        .await;
    assert_eq!(delete.status, StatusCode::NO_CONTENT);
    let get = node.get("/buckets/b/keys/k").await;
    assert_eq!(get.status, StatusCode::NOT_FOUND);
    assert!(get.header("x-riak-vclock").is_some());
    let keys = node.get("/buckets/b/keys?keys=true").await.json();
    assert_eq!(keys["keys"], serde_json::json!([]));
    // Deleting again finds nothing, which Riak reports as 404.
    let again = node
        .call(Method::DELETE, "/buckets/b/keys/k", &[], Body::empty())
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_delete_with_the_read_context_removes_the_value() {
    let node = node();
    node.put("/buckets/b/keys/k", "v", None).await;
    let vclock = node.get("/buckets/b/keys/k").await;
    let vclock = vclock.header("x-riak-vclock").expect("vclock");
    let delete = node
        .call(
            Method::DELETE,
            "/buckets/b/keys/k?rw=1&w=1&dw=0&pw=0",
            &[("x-riak-vclock", vclock)],
            Body::empty(),
        )
        .await;
    assert_eq!(delete.status, StatusCode::NO_CONTENT);
    assert_eq!(
        node.get("/buckets/b/keys/k").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_write_after_a_delete_brings_the_key_back() {
    let node = node();
    node.put("/buckets/b/keys/k", "old", None).await;
    node.call(Method::DELETE, "/buckets/b/keys/k", &[], Body::empty())
        .await;
    let vclock = node.get("/buckets/b/keys/k").await;
    let vclock = vclock.header("x-riak-vclock").expect("tombstone context");
    node.put("/buckets/b/keys/k", "new", Some(vclock)).await;
    let get = node.get("/buckets/b/keys/k").await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.text(), "new");
}

#[tokio::test]
async fn conditional_gets_answer_not_modified() {
    let node = node();
    node.put("/buckets/b/keys/k", "v", None).await;
    let get = node.get("/buckets/b/keys/k").await;
    let etag = get.header("etag").expect("etag");
    let same = node
        .call(
            Method::GET,
            "/buckets/b/keys/k",
            &[("if-none-match", etag)],
            Body::empty(),
        )
        .await;
    assert_eq!(same.status, StatusCode::NOT_MODIFIED);
    assert!(same.body.is_empty());
    let modified = get.header("last-modified").expect("last-modified");
    let since = node
        .call(
            Method::GET,
            "/buckets/b/keys/k",
            &[("if-modified-since", modified)],
            Body::empty(),
        )
        .await;
    assert_eq!(since.status, StatusCode::NOT_MODIFIED);
    let stale = node
        .call(
            Method::GET,
            "/buckets/b/keys/k",
            &[("if-none-match", "other")],
            Body::empty(),
        )
        .await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(stale.text(), "v");
}

#[tokio::test]
async fn quorum_and_timeout_parameters_are_accepted() {
    let node = node();
    let put = node
        .put("/buckets/b/keys/k?w=1&dw=0&pw=one&timeout=2000", "v", None)
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let get = node
        .get("/buckets/b/keys/k?r=quorum&pr=all&timeout=2000&unknown=ignored")
        .await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.text(), "v");
}

mod laws {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn any_bucket_and_key_bytes_round_trip(
            bucket in proptest::collection::vec(any::<u8>(), 1..24),
            key in proptest::collection::vec(any::<u8>(), 1..48),
            value in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let (status, body) = runtime.block_on(async {
                let node = node();
                let uri = format!(
                    "/buckets/{}/keys/{}",
                    encode_segment(&bucket),
                    encode_segment(&key)
                );
                let put = node.call(Method::PUT, &uri, &[], value.clone()).await;
                assert_eq!(put.status, StatusCode::NO_CONTENT);
                let get = node.get(&uri).await;
                (get.status, get.body)
            });
            prop_assert_eq!(status, StatusCode::OK);
            prop_assert_eq!(body.to_vec(), value);
        }
    }
}
