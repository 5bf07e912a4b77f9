//! Anti-entropy metrics, registered by the node into its Prometheus registry.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The anti-entropy metrics. Cheap to clone (every handle is shared).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Exchanges this node initiated and completed.
    pub exchanges: Counter,
    /// Exchanges that failed (peer unreachable, tree not ready, storage error).
    pub exchange_failures: Counter,
    /// Differing keys found (confirmed or not).
    pub differences: Counter,
    /// Keys repaired (pulled or pushed after confirmation).
    pub keys_repaired: Counter,
    /// Bytes of exchange and repair messages, both ways (bincode sizes of the payloads).
    pub bytes: Counter,
    /// Tree builds and rebuilds completed.
    pub rebuilds: Counter,
    /// The background share the admission controller allows, in [floor, 1].
    pub share: Gauge<f64, AtomicU64>,
    /// Background tasks (exchanges, builds) allowed at once now.
    pub permits: Gauge,
}

impl Metrics {
    /// Registers every series in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "dynamo_aae_exchanges",
            "Anti-entropy exchanges completed",
            self.exchanges.clone(),
        );
        registry.register(
            "dynamo_aae_exchange_failures",
            "Anti-entropy exchanges that failed",
            self.exchange_failures.clone(),
        );
        registry.register(
            "dynamo_aae_differences",
            "Keys found to differ between replicas",
            self.differences.clone(),
        );
        registry.register(
            "dynamo_aae_keys_repaired",
            "Keys repaired by anti-entropy",
            self.keys_repaired.clone(),
        );
        registry.register(
            "dynamo_aae_bytes",
            "Bytes of anti-entropy messages",
            self.bytes.clone(),
        );
        registry.register(
            "dynamo_aae_tree_rebuilds",
            "Hash tree builds and rebuilds",
            self.rebuilds.clone(),
        );
        registry.register(
            "dynamo_aae_admission_share",
            "Share of background work the admission controller allows",
            self.share.clone(),
        );
        registry.register(
            "dynamo_aae_admission_permits",
            "Background tasks allowed at once",
            self.permits.clone(),
        );
    }
}
