//! Node endpoints: `GET /ping` (liveness), `GET /stats` (Riak's status: this node's view of the
//! ring and its request counters, as JSON) and `GET /metrics` (Prometheus text from the node).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Response, Uri};
use dynamo_coordinator::{OPS, OUTCOMES, Replicas};
use serde::Serialize;

use crate::Api;
use crate::error::{Error, Result};

/// The Prometheus text exposition format version `/metrics` answers with.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /ping`: 200 "OK" while the node serves requests.
pub(crate) async fn ping() -> Response<Body> {
    text_response("OK", "text/plain")
}

/// `GET /metrics`: whatever the node's metrics renderer produces.
pub(crate) async fn metrics<R: Replicas>(State(api): State<Arc<Api<R>>>) -> Response<Body> {
    text_response((api.metrics)(), METRICS_CONTENT_TYPE)
}

/// Any path this API does not serve.
pub(crate) async fn not_found(uri: Uri) -> Error {
    Error::NotFound(format!("no resource at {}", uri.path()))
}

/// What `GET /stats` reports.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// This node's id.
    pub node: String,
    /// Epoch of the ring in force here.
    pub ring_epoch: u64,
    /// Members of that ring.
    pub ring_members: Vec<String>,
    /// Partitions in the ring (Q).
    pub ring_num_partitions: u32,
    /// Partitions this node owns.
    pub partitions_owned: usize,
    /// Hints stored here for other nodes.
    pub hints_pending: u64,
    /// Seconds since the node started.
    pub uptime_secs: u64,
    /// Reads coordinated here, any outcome.
    pub node_gets_total: u64,
    /// Writes coordinated here, any outcome.
    pub node_puts_total: u64,
    /// Deletes coordinated here, any outcome.
    pub node_deletes_total: u64,
    /// Requests by operation, then outcome (`ok`, `not_found`, `invalid`, `unavailable`, ...).
    pub requests: BTreeMap<String, BTreeMap<String, u64>>,
    /// Requests that missed their quorum, by operation.
    pub quorum_failures: BTreeMap<String, u64>,
    /// Replica writes made by read repair.
    pub read_repairs_total: u64,
    /// Writes forwarded to a coordinator in the key's top N.
    pub forwarded_total: u64,
    /// Replica writes that failed after the client was answered.
    pub background_write_failures_total: u64,
    /// Vector clock entries removed by pruning.
    pub clock_entries_pruned_total: u64,
    /// Hints this node stored as a fallback.
    pub hints_stored_total: u64,
    /// Hints this node handed off to their owners.
    pub hints_delivered_total: u64,
    /// Times this node's failure detector marked a peer down.
    pub nodes_marked_down_total: u64,
    /// Peers this node currently believes down.
    pub peers_down: Vec<String>,
}

/// `GET /stats`: JSON, pretty-printed as `text/plain` when the client prefers that (as Riak does).
pub(crate) async fn stats<R: Replicas>(
    State(api): State<Arc<Api<R>>>,
    headers: HeaderMap,
) -> Result<Response<Body>> {
    let stats = collect(&api);
    let plain = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/plain") && !a.contains("application/json"));
    let encoded = if plain {
        serde_json::to_string_pretty(&stats)
    } else {
        serde_json::to_string(&stats)
    }
    .map_err(|e| Error::Internal(format!("stats did not encode: {e}")))?;
    let content_type = if plain {
        "text/plain"
    } else {
        "application/json"
    };
    Ok(text_response(encoded, content_type))
}

fn collect<R: Replicas>(api: &Api<R>) -> Stats {
    let status = api.coordinator.status();
    let ring = api.coordinator.ring();
    let m = api.coordinator.metrics();
    let mut requests: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut quorum_failures = BTreeMap::new();
    for op in OPS {
        for outcome in OUTCOMES {
            let n = m.requests_total(op, outcome);
            if n > 0 {
                requests
                    .entry(op.to_string())
                    .or_default()
                    .insert(outcome.to_string(), n);
            }
        }
        let failed = m.quorum_failures_total(op);
        if failed > 0 {
            quorum_failures.insert(op.to_string(), failed);
        }
    }
    let total = |op: &str| requests.get(op).map_or(0, |o| o.values().sum());
    Stats {
        node: status.node,
        ring_epoch: status.ring_epoch,
        ring_members: ring.members().iter().map(|m| m.id.to_string()).collect(),
        ring_num_partitions: ring.q(),
        partitions_owned: status.partitions_owned,
        hints_pending: status.hints_pending,
        uptime_secs: status.uptime_secs,
        node_gets_total: total("get"),
        node_puts_total: total("put"),
        node_deletes_total: total("delete"),
        requests,
        quorum_failures,
        read_repairs_total: m.read_repairs.get(),
        forwarded_total: m.forwarded.get(),
        background_write_failures_total: m.background_write_failures.get(),
        clock_entries_pruned_total: m.clock_entries_pruned.get(),
        hints_stored_total: m.hints_stored.get(),
        hints_delivered_total: m.hints_delivered.get(),
        nodes_marked_down_total: m.nodes_marked_down.get(),
        peers_down: api
            .coordinator
            .health()
            .down()
            .iter()
            .map(|n| n.to_string())
            .collect(),
    }
}

fn text_response(body: impl Into<Body>, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(body.into());
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use dynamo_coordinator::Metrics;

    #[test]
    fn coordinator_counters_are_read_directly() {
        let metrics = Metrics::default();
        metrics.read_repairs.inc_by(4);
        metrics
            .requests
            .get_or_create(&dynamo_coordinator::OpLabels {
                op: "get",
                outcome: "ok",
            })
            .inc();
        assert_eq!(metrics.read_repairs.get(), 4);
        assert_eq!(metrics.requests_total("get", "ok"), 1);
        assert_eq!(metrics.requests_total("put", "ok"), 0);
    }
}
