//! Concurrent writes become siblings (paper 4.4): 300 Multiple Choices, multipart bodies, vtag
//! selection, resolution by writing back with the merged context, and LWW buckets.

use axum::body::Body;
use axum::http::{Method, StatusCode};

use crate::common::{TestNode, node};

const KEY: &str = "/buckets/b/keys/doc";

/// Writes "v0", then two values on top of the same (now stale) context; returns that context.
async fn two_siblings(node: &TestNode) -> String {
    node.put(KEY, "v0", None).await;
    let read = node.get(KEY).await;
    let stale = read.header("x-riak-vclock").expect("vclock").to_string();
    node.clock.advance(1000);
    assert_eq!(
        node.put(KEY, "left", Some(&stale)).await.status,
        StatusCode::NO_CONTENT
    );
    node.clock.advance(1000);
    assert_eq!(
        node.put(KEY, "right", Some(&stale)).await.status,
        StatusCode::NO_CONTENT
    );
    stale
}

/// The vtags listed by a plain 300 answer.
fn vtags(text: &str) -> Vec<String> {
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("Siblings:"));
    lines.map(str::to_string).collect()
}

#[tokio::test]
async fn concurrent_writes_answer_multiple_choices() {
    let node = node();
    two_siblings(&node).await;
    let get = node.get(KEY).await;
    assert_eq!(get.status, StatusCode::MULTIPLE_CHOICES);
    assert_eq!(get.header("content-type"), Some("text/plain"));
    assert!(get.header("x-riak-vclock").is_some());
    let tags = vtags(&get.text());
    assert_eq!(tags.len(), 2);
    assert_ne!(tags[0], tags[1]);

    let mut values = Vec::new();
    for tag in &tags {
        let one = node.get(&format!("{KEY}?vtag={tag}")).await;
        assert_eq!(one.status, StatusCode::OK);
        assert_eq!(one.header("etag"), Some(tag.as_str()));
        values.push(one.text());
    }
    values.sort();
    assert_eq!(values, ["left", "right"]);

    let unknown = node.get(&format!("{KEY}?vtag=nosuchvtag")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn multipart_lists_every_sibling() {
    let node = node();
    two_siblings(&node).await;
    let get = node
        .call(
            Method::GET,
            KEY,
            &[("accept", "multipart/mixed")],
            Body::empty(),
        )
        .await;
    assert_eq!(get.status, StatusCode::MULTIPLE_CHOICES);
    let content_type = get.header("content-type").expect("content type");
    let boundary = content_type
        .strip_prefix("multipart/mixed; boundary=")
        .expect("a multipart content type");
    let body = get.text();
    let parts: Vec<&str> = body
        .split(&format!("\r\n--{boundary}"))
        .filter(|p| p.starts_with("\r\n"))
        .collect();
    assert_eq!(parts.len(), 2, "{body}");
    let mut values: Vec<&str> = parts
        .iter()
        .map(|p| {
            assert!(p.contains("Content-Type: text/plain\r\n"), "{p}");
            assert!(p.contains("Etag: "), "{p}");
            assert!(p.contains("Last-Modified: "), "{p}");
            p.split_once("\r\n\r\n").map(|(_, v)| v).expect("part body")
        })
        .collect();
    values.sort();
    assert_eq!(values, ["left", "right"]);
    assert!(body.ends_with(&format!("\r\n--{boundary}--\r\n")));
}

#[tokio::test]
async fn writing_with_the_merged_context_resolves_the_siblings() {
    let node = node();
    two_siblings(&node).await;
    let read = node.get(KEY).await;
    let merged = read.header("x-riak-vclock").expect("vclock");
    let put = node
        .call(
            Method::PUT,
            &format!("{KEY}?returnbody=true"),
            &[("x-riak-vclock", merged), ("content-type", "text/plain")],
            "resolved",
        )
        .await;
    assert_eq!(put.status, StatusCode::OK);
    assert_eq!(put.text(), "resolved");
    let get = node.get(KEY).await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.text(), "resolved");
}

#[tokio::test]
async fn a_write_that_creates_siblings_returns_them() {
    let node = node();
    let stale = two_siblings(&node).await;
    let put = node
        .put(&format!("{KEY}?returnbody=true"), "third", Some(&stale))
        .await;
    assert_eq!(put.status, StatusCode::MULTIPLE_CHOICES);
    assert_eq!(vtags(&put.text()).len(), 3);
}

#[tokio::test]
async fn a_last_write_wins_bucket_keeps_one_value() {
    let node = node();
    let set = node
        .set_props(
            "lww",
            r#"{"props":{"last_write_wins":true,"allow_mult":false}}"#,
        )
        .await;
    assert_eq!(set.status, StatusCode::NO_CONTENT, "{}", set.text());
    let key = "/buckets/lww/keys/doc";
    node.put(key, "first", None).await;
    node.clock.advance(1000);
    node.put(key, "second", None).await;
    node.clock.advance(1000);
    node.put(key, "third", None).await;
    let get = node.get(key).await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.text(), "third");
}
