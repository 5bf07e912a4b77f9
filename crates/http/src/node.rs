//! Node endpoints: `GET /ping` (liveness), `GET /stats` (Riak's status: this node's view of the
//! ring and its request counters, as JSON) and `GET /metrics` (Prometheus text from the node).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Response, Uri};
use dynamo_coordinator::{Metrics, Replicas};
use prometheus_client::registry::Registry;
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
}

/// `GET /stats`: JSON, pretty-printed as `text/plain` when the client prefers that (as Riak does).
pub(crate) async fn stats<R: Replicas>(
    State(api): State<Arc<Api<R>>>,
    headers: HeaderMap,
) -> Result<Response<Body>> {
    let stats = collect(&api)?;
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

fn collect<R: Replicas>(api: &Api<R>) -> Result<Stats> {
    let status = api.coordinator.status();
    let ring = api.coordinator.ring();
    let mut stats = Stats {
        node: status.node,
        ring_epoch: status.ring_epoch,
        ring_members: ring.members().iter().map(|m| m.id.to_string()).collect(),
        ring_num_partitions: ring.q(),
        partitions_owned: status.partitions_owned,
        hints_pending: status.hints_pending,
        uptime_secs: status.uptime_secs,
        node_gets_total: 0,
        node_puts_total: 0,
        node_deletes_total: 0,
        requests: BTreeMap::new(),
        quorum_failures: BTreeMap::new(),
        read_repairs_total: 0,
        forwarded_total: 0,
        background_write_failures_total: 0,
        clock_entries_pruned_total: 0,
    };
    for sample in counter_samples(api.coordinator.metrics())? {
        let op = sample.label("op").to_string();
        match sample.name.as_str() {
            "dynamo_requests_total" => {
                let outcome = sample.label("outcome").to_string();
                *stats
                    .requests
                    .entry(op)
                    .or_default()
                    .entry(outcome)
                    .or_default() += sample.value;
            }
            "dynamo_quorum_failures_total" => {
                *stats.quorum_failures.entry(op).or_default() += sample.value;
            }
            "dynamo_read_repairs_total" => stats.read_repairs_total += sample.value,
            "dynamo_forwarded_total" => stats.forwarded_total += sample.value,
            "dynamo_background_write_failures_total" => {
                stats.background_write_failures_total += sample.value;
            }
            "dynamo_clock_entries_pruned_total" => stats.clock_entries_pruned_total += sample.value,
            _ => {}
        }
    }
    let total = |op: &str| stats.requests.get(op).map_or(0, |m| m.values().sum());
    stats.node_gets_total = total("get");
    stats.node_puts_total = total("put");
    stats.node_deletes_total = total("delete");
    Ok(stats)
}

/// One counter sample from the text encoding.
#[derive(Debug, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: u64,
}

impl Sample {
    fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// The coordinator's counters. Its label types are not exported, so the series are read back
/// from the text encoding of a private registry holding the same (shared) metric handles.
fn counter_samples(metrics: &Metrics) -> Result<Vec<Sample>> {
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .map_err(|e| Error::Internal(format!("metrics did not encode: {e}")))?;
    Ok(text.lines().filter_map(parse_sample).collect())
}

/// Parses `name{a="x",b="y"} 3` (labels optional); other lines (comments, `# EOF`) give `None`.
fn parse_sample(line: &str) -> Option<Sample> {
    if line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse::<f64>().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}')?),
        None => (series, ""),
    };
    let labels = labels
        .split(',')
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.to_string(), v.trim_matches('"').to_string()))
        })
        .collect();
    Some(Sample {
        name: name.to_string(),
        labels,
        value: value.max(0.0) as u64,
    })
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
    use super::*;

    #[test]
    fn samples_parse_with_and_without_labels() {
        assert_eq!(
            parse_sample(r#"dynamo_requests_total{op="get",outcome="ok"} 3"#),
            Some(Sample {
                name: "dynamo_requests_total".into(),
                labels: vec![("op".into(), "get".into()), ("outcome".into(), "ok".into())],
                value: 3,
            })
        );
        assert_eq!(
            parse_sample("dynamo_forwarded_total 2").map(|s| s.value),
            Some(2)
        );
        assert_eq!(parse_sample("# TYPE dynamo_forwarded counter"), None);
        assert_eq!(parse_sample("# EOF"), None);
    }

    #[test]
    fn coordinator_counters_are_read_back() {
        let metrics = Metrics::default();
        metrics.read_repairs.inc_by(4);
        metrics.forwarded.inc();
        let samples = counter_samples(&metrics).unwrap();
        let value = |name: &str| samples.iter().find(|s| s.name == name).map(|s| s.value);
        assert_eq!(value("dynamo_read_repairs_total"), Some(4));
        assert_eq!(value("dynamo_forwarded_total"), Some(1));
    }
}
