//! Ping, stats, metrics, and serving over a real loopback socket with graceful shutdown.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::common::node;

#[tokio::test]
async fn ping_answers_ok() {
    let ping = node().get("/ping").await;
    assert_eq!(ping.status, StatusCode::OK);
    assert_eq!(ping.text(), "OK");
}

#[tokio::test]
async fn stats_report_the_ring_and_request_counters() {
    let node = node();
    node.put("/buckets/b/keys/k", "v", None).await;
    node.get("/buckets/b/keys/k").await;
    node.get("/buckets/b/keys/missing").await;
    node.call(Method::DELETE, "/buckets/b/keys/k", &[], Body::empty())
        .await;
    let stats = node.get("/stats").await;
    assert_eq!(stats.status, StatusCode::OK);
    assert_eq!(stats.header("content-type"), Some("application/json"));
    let s = stats.json();
    assert_eq!(s["node"], "node-a");
    assert_eq!(s["ring_members"], serde_json::json!(["node-a"]));
    assert_eq!(s["ring_num_partitions"], 64);
    assert_eq!(s["partitions_owned"], 64);
    assert_eq!(s["hints_pending"], 0);
    assert!(s["ring_epoch"].is_u64());
    assert!(s["uptime_secs"].is_u64());
    assert_eq!(s["node_puts_total"], 1);
    // Two client reads plus the read a delete without a context makes.
    assert_eq!(s["node_gets_total"], 3);
    assert_eq!(s["node_deletes_total"], 1);
    assert_eq!(s["requests"]["get"]["not_found"], 1);
    assert_eq!(s["requests"]["put"]["ok"], 1);

    let plain = node
        .call(
            Method::GET,
            "/stats",
            &[("accept", "text/plain")],
            Body::empty(),
        )
        .await;
    assert_eq!(plain.header("content-type"), Some("text/plain"));
    assert!(
        plain.text().contains("\n  \"node\": \"node-a\""),
        "{}",
        plain.text()
    );
}

#[tokio::test]
async fn metrics_render_what_the_node_hands_in() {
    let metrics = node().get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(metrics.text().contains("up 1\n"));
}

/// Sends one raw HTTP/1.1 request and reads the whole answer.
async fn raw_request(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer
}

#[tokio::test]
async fn serve_answers_on_loopback_and_stops_when_cancelled() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(dynamo_http::serve(
        listener,
        node().router,
        shutdown.clone(),
    ));
    let bounded = Duration::from_secs(20);
    let put = "PUT /buckets/b/keys/k HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n\
               Content-Length: 5\r\nConnection: close\r\n\r\nhello";
    let answer = tokio::time::timeout(bounded, raw_request(addr, put))
        .await
        .expect("answered in time");
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    let get = "GET /buckets/b/keys/k HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let answer = tokio::time::timeout(bounded, raw_request(addr, get))
        .await
        .expect("answered in time");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nhello"), "{answer}");

    shutdown.cancel();
    let stopped = tokio::time::timeout(bounded, server)
        .await
        .expect("stopped in time")
        .expect("server task");
    assert!(stopped.is_ok(), "{stopped:?}");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
