//! `dynamo-bench`: a YCSB-style load generator for Dynamo in Rust.
//!
//! It loads a key space (`--records` keys, the load phase) and then runs one of YCSB's core
//! workloads on it (A: 50% reads / 50% updates, B: 95/5, C: read only), choosing keys from a
//! scrambled zipfian or a uniform distribution. Requests reach the cluster either through the
//! Rust client, which routes each one straight to a coordinator in the key's top N (client-driven
//! coordination, paper section 6.4), or through the HTTP API round-robin over nodes
//! (server-driven, where a node outside the top N forwards writes) — the comparison the paper
//! draws in its table 2. Workers run closed loop (`--clients`) or open loop (`--rate`, latency
//! measured from each request's scheduled start so a stall is not hidden). Every run stops on its
//! own after `--operations` or `--duration`, and prints throughput and p50/p99/p99.9/max latency
//! per operation, with failures counted per kind rather than mixed into the latencies.
//!
//! Against the development cluster (`dynamo dev`: RPC on 7001-7003, HTTP on 8098-8100):
//!
//! ```text
//! dynamo-bench --mode client --seeds 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 \
//!     --cluster-name dev --secret "$DYNAMO_CLUSTER_SECRET" --records 10000 --workload b --clients 16
//! dynamo-bench --mode http --http 127.0.0.1:8098,127.0.0.1:8099,127.0.0.1:8100 \
//!     --phases run --records 10000 --workload b --rate 2000 --duration 10 --json
//! ```
//!
//! Not here: asserting anything about the figures (a benchmark measures and prints), YCSB's
//! scan and read-modify-write-field workloads (D, E, F), and multi-machine load.

pub mod cli;
pub mod driver;
pub mod error;
pub mod http;
pub mod store;
pub mod summary;
pub mod workload;
pub mod zipf;

pub use cli::{Args, Report};
pub use error::{Error, Result};
