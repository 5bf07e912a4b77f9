//! Measures the HTTP API end to end on loopback: a one-node cluster (memory engine) served by
//! `dynamo_http::serve`, driven by keep-alive HTTP/1.1 connections that PUT then GET distinct
//! keys. Prints throughput and latency percentiles; asserts nothing about time.
//!
//! `cargo run --release -p dynamo-http --example loopback_bench -- [requests] [connections] [value_bytes]`

#[allow(dead_code)]
#[path = "../tests/api/common.rs"]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Requests per run when none is given: enough for stable percentiles, a few seconds in release.
const DEFAULT_REQUESTS: usize = 20_000;
/// Concurrent connections when none is given: one per core of the reference machine, twice.
const DEFAULT_CONNECTIONS: usize = 4;
/// Value size when none is given: a small JSON document.
const DEFAULT_VALUE_BYTES: usize = 256;

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// Reads one HTTP/1.1 response (status line, headers, Content-Length body); returns the status.
async fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<u16> {
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line).await?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await?;
    Ok(status)
}

/// One connection's share: PUT then GET `count` keys; returns (put, get) latency histograms.
async fn client(
    addr: SocketAddr,
    id: usize,
    count: usize,
    value: &[u8],
) -> anyhow::Result<(Histogram<u64>, Histogram<u64>)> {
    let mut reader = BufReader::new(TcpStream::connect(addr).await?);
    reader.get_mut().set_nodelay(true)?;
    let mut puts = Histogram::new(3)?;
    let mut gets = Histogram::new(3)?;
    for i in 0..count {
        let path = format!("/buckets/bench/keys/c{id}-k{i}");
        let put = format!(
            "PUT {path} HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            value.len()
        );
        let started = Instant::now();
        reader.get_mut().write_all(put.as_bytes()).await?;
        reader.get_mut().write_all(value).await?;
        anyhow::ensure!(read_response(&mut reader).await? == 204, "put failed");
        puts.record(started.elapsed().as_micros() as u64)?;
        let get = format!("GET {path} HTTP/1.1\r\nHost: b\r\n\r\n");
        let started = Instant::now();
        reader.get_mut().write_all(get.as_bytes()).await?;
        anyhow::ensure!(read_response(&mut reader).await? == 200, "get failed");
        gets.record(started.elapsed().as_micros() as u64)?;
    }
    Ok((puts, gets))
}

fn report(op: &str, h: &Histogram<u64>, elapsed: Duration) {
    println!(
        "{op}: {} requests, {:.0}/s, latency µs p50 {} p99 {} p99.9 {} max {}",
        h.len(),
        h.len() as f64 / elapsed.as_secs_f64(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let requests = arg(1, DEFAULT_REQUESTS).max(1);
    let connections = arg(2, DEFAULT_CONNECTIONS).max(1);
    let value = vec![b'x'; arg(3, DEFAULT_VALUE_BYTES)];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(dynamo_http::serve(
        listener,
        common::node().router,
        shutdown.clone(),
    ));
    let per_connection = requests.div_ceil(connections);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for id in 0..connections {
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            client(addr, id, per_connection, &value).await
        }));
    }
    let mut puts = Histogram::<u64>::new(3)?;
    let mut gets = Histogram::<u64>::new(3)?;
    for task in tasks {
        let (p, g) = task.await??;
        puts.add(p)?;
        gets.add(g)?;
    }
    let elapsed = started.elapsed();
    println!(
        "{connections} connections, {} byte values, {:.2} s",
        value.len(),
        elapsed.as_secs_f64()
    );
    report("put", &puts, elapsed);
    report("get", &gets, elapsed);
    shutdown.cancel();
    server.await??;
    Ok(())
}
