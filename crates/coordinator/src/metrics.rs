//! Request metrics, registered by the node into its Prometheus registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels for per-operation series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// "get", "put" or "delete".
    pub op: &'static str,
    /// "ok", "not_found", "invalid", "unavailable", "timeout" or "error".
    pub outcome: &'static str,
}

/// Labels for series that only split by operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpOnly {
    /// "get", "put" or "delete".
    pub op: &'static str,
}

/// Every operation label value.
pub const OPS: [&str; 3] = ["get", "put", "delete"];

/// Every outcome label value.
pub const OUTCOMES: [&str; 6] = [
    "ok",
    "not_found",
    "invalid",
    "unavailable",
    "timeout",
    "error",
];

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s in 16 doubling steps: covers a loopback round trip up to a stuck quorum.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

fn siblings_histogram() -> Histogram {
    Histogram::new([1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0])
}

/// The coordinator's metrics. Cheap to clone (every handle is shared).
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Requests by operation and outcome.
    pub requests: Family<OpLabels, Counter>,
    /// Request latency in seconds, by operation.
    pub latency: Family<OpOnly, Histogram, fn() -> Histogram>,
    /// Requests that failed to meet a quorum, by operation.
    pub quorum_failures: Family<OpOnly, Counter>,
    /// Siblings returned per successful read.
    pub siblings_per_read: Histogram,
    /// Requests forwarded to another coordinator because this node is not in the key's top N.
    pub forwarded: Counter,
    /// Replica writes sent to stale or missing replicas after a read (read repair, paper 4.5).
    pub read_repairs: Counter,
    /// Replica writes that failed after the client had been answered.
    pub background_write_failures: Counter,
    /// Vector clock entries removed by pruning (paper 4.4).
    pub clock_entries_pruned: Counter,
    /// Hints this node stored as a fallback (sloppy quorum, paper 4.6).
    pub hints_stored: Counter,
    /// Hints handed off to their owner and removed.
    pub hints_delivered: Counter,
    /// Hints waiting for their owner (updated by the handoff worker).
    pub hints_pending: Gauge,
    /// Times a peer was marked down by this node's failure detector.
    pub nodes_marked_down: Counter,
    /// Time for a local storage write to commit (including any group-commit fsync), in seconds.
    pub storage_commit_latency: Histogram,
    /// Objects this node sent in partition transfers (acknowledged batches).
    pub transfer_keys_sent: Counter,
    /// Payload bytes this node sent in partition transfers.
    pub transfer_bytes_sent: Counter,
    /// Objects this node received and merged from partition transfers.
    pub transfer_keys_received: Counter,
    /// Partition transfers this node is sending now.
    pub transfers_active: Gauge,
    /// Partition transfers this node completed (final sync confirmed).
    pub transfers_completed: Counter,
    /// Objects removed by dropping partitions this node no longer replicates.
    pub transfer_objects_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            quorum_failures: Family::default(),
            siblings_per_read: siblings_histogram(),
            forwarded: Counter::default(),
            read_repairs: Counter::default(),
            background_write_failures: Counter::default(),
            clock_entries_pruned: Counter::default(),
            storage_commit_latency: latency_histogram(),
            hints_stored: Counter::default(),
            hints_delivered: Counter::default(),
            hints_pending: Gauge::default(),
            nodes_marked_down: Counter::default(),
            transfer_keys_sent: Counter::default(),
            transfer_bytes_sent: Counter::default(),
            transfer_keys_received: Counter::default(),
            transfers_active: Gauge::default(),
            transfers_completed: Counter::default(),
            transfer_objects_dropped: Counter::default(),
        }
    }
}

impl Metrics {
    /// Requests of `op` that ended with `outcome` so far.
    pub fn requests_total(&self, op: &'static str, outcome: &'static str) -> u64 {
        self.requests.get_or_create(&OpLabels { op, outcome }).get()
    }

    /// Requests of `op` that missed their quorum so far.
    pub fn quorum_failures_total(&self, op: &'static str) -> u64 {
        self.quorum_failures.get_or_create(&OpOnly { op }).get()
    }

    /// Registers every series under the `dynamo_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "dynamo_requests",
            "Client requests by operation and outcome",
            self.requests.clone(),
        );
        registry.register(
            "dynamo_request_latency_seconds",
            "Request latency",
            self.latency.clone(),
        );
        registry.register(
            "dynamo_quorum_failures",
            "Requests that did not meet their quorum",
            self.quorum_failures.clone(),
        );
        registry.register(
            "dynamo_siblings_per_read",
            "Siblings returned per read",
            self.siblings_per_read.clone(),
        );
        registry.register(
            "dynamo_forwarded",
            "Requests forwarded to a coordinator in the top N",
            self.forwarded.clone(),
        );
        registry.register(
            "dynamo_read_repairs",
            "Replica writes made by read repair",
            self.read_repairs.clone(),
        );
        registry.register(
            "dynamo_background_write_failures",
            "Replica writes that failed after the client was answered",
            self.background_write_failures.clone(),
        );
        registry.register(
            "dynamo_clock_entries_pruned",
            "Vector clock entries pruned",
            self.clock_entries_pruned.clone(),
        );
        registry.register(
            "dynamo_storage_commit_latency_seconds",
            "Local storage write latency, including the group-commit fsync",
            self.storage_commit_latency.clone(),
        );
        registry.register(
            "dynamo_hints_stored",
            "Hints stored as a fallback",
            self.hints_stored.clone(),
        );
        registry.register(
            "dynamo_hints_delivered",
            "Hints handed off to their owner",
            self.hints_delivered.clone(),
        );
        registry.register(
            "dynamo_hints_pending",
            "Hints waiting for their owner",
            self.hints_pending.clone(),
        );
        registry.register(
            "dynamo_nodes_marked_down",
            "Peers marked down by this node's failure detector",
            self.nodes_marked_down.clone(),
        );
        self.register_transfers(registry);
    }

    /// Registers the partition transfer series.
    fn register_transfers(&self, registry: &mut Registry) {
        registry.register(
            "dynamo_transfer_keys_sent",
            "Objects sent in partition transfers",
            self.transfer_keys_sent.clone(),
        );
        registry.register(
            "dynamo_transfer_bytes_sent",
            "Payload bytes sent in partition transfers",
            self.transfer_bytes_sent.clone(),
        );
        registry.register(
            "dynamo_transfer_keys_received",
            "Objects received and merged from partition transfers",
            self.transfer_keys_received.clone(),
        );
        registry.register(
            "dynamo_transfers_active",
            "Partition transfers being sent",
            self.transfers_active.clone(),
        );
        registry.register(
            "dynamo_transfers_completed",
            "Partition transfers completed with a confirmed final sync",
            self.transfers_completed.clone(),
        );
        registry.register(
            "dynamo_transfer_objects_dropped",
            "Objects removed from partitions this node no longer replicates",
            self.transfer_objects_dropped.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_exported() {
        let metrics = Metrics::default();
        metrics.hints_stored.inc();
        // Families print nothing until they have a series.
        metrics
            .requests
            .get_or_create(&OpLabels {
                op: "get",
                outcome: "ok",
            })
            .inc();
        metrics
            .latency
            .get_or_create(&OpOnly { op: "get" })
            .observe(0.001);
        metrics
            .quorum_failures
            .get_or_create(&OpOnly { op: "get" })
            .inc();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in [
            "dynamo_requests",
            "dynamo_request_latency_seconds",
            "dynamo_quorum_failures",
            "dynamo_siblings_per_read",
            "dynamo_forwarded",
            "dynamo_read_repairs",
            "dynamo_background_write_failures",
            "dynamo_clock_entries_pruned",
            "dynamo_storage_commit_latency_seconds",
            "dynamo_hints_stored",
            "dynamo_hints_delivered",
            "dynamo_hints_pending",
            "dynamo_nodes_marked_down",
            "dynamo_transfer_keys_sent",
            "dynamo_transfer_bytes_sent",
            "dynamo_transfer_keys_received",
            "dynamo_transfers_active",
            "dynamo_transfers_completed",
            "dynamo_transfer_objects_dropped",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} is not exported"
            );
        }
        assert!(text.contains("dynamo_hints_stored_total 1"), "{text}");
    }
}
