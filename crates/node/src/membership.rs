//! The node's side of membership: where the state is persisted (the storage engine's
//! metadata), how a fresh node's state is built from its configuration, and how every new
//! state reaches the rest of the node (the coordinator's ring, the peer pool's addresses, the
//! bucket properties).
//!
//! Partition transfers run through the coordinator's transfer functions, plugged in as a
//! [`PartitionMover`] (`crate::mover`).

use std::collections::BTreeMap;
use std::sync::Arc;

use dynamo_anti_entropy::AntiEntropy;
use dynamo_coordinator::Coordinator;
use dynamo_membership::{
    ClusterState, Error, GossipPeers, Identity, MemberInfo, Membership, Options, PartitionMover,
    StateStore, Status,
};
use dynamo_rpc::{Connector, GossipClient, PeerPool, decode_bucket_props};
use dynamo_storage::Engine;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::config::{NodeConfig, Validated};

/// Metadata name of the persisted membership state (its bytes carry their own format version).
pub const META_MEMBERSHIP: &str = "membership";

/// The membership a node runs: gossip over tarpc, by address.
pub type NodeMembership = Membership<GossipClient<dynamo_rpc::TcpConnector>>;

/// Persists the membership state in the engine's metadata (written durably by `set_meta`).
pub struct EngineStore(pub Arc<dyn Engine>);

impl StateStore for EngineStore {
    fn load(&self) -> dynamo_membership::Result<Option<Vec<u8>>> {
        self.0
            .get_meta(META_MEMBERSHIP)
            .map_err(|e| Error::Store(e.to_string()))
    }

    fn save(&self, state: &[u8]) -> dynamo_membership::Result<()> {
        self.0
            .set_meta(META_MEMBERSHIP, state)
            .map_err(|e| Error::Store(e.to_string()))
    }
}

/// The state of a cluster that does not exist yet: the static member list, or this node alone.
///
/// A lone node with seeds is expected to join their cluster, so its ring gets epoch 0 (see
/// [`ClusterState::bootstrap_alone`]): the coordinator only installs newer epochs, and the
/// cluster's ring must replace the joiner's own. A lone node without seeds founds a cluster
/// (epoch 1), so that a node joining it later (epoch 0) takes its ring at once.
pub fn bootstrap(
    config: &NodeConfig,
    valid: &Validated,
) -> dynamo_membership::Result<ClusterState> {
    let n = valid.bucket_defaults.n_val;
    if valid.members.is_empty() {
        let info = MemberInfo {
            version: 0,
            address: valid.address.clone(),
            zone: valid.zone.clone(),
            weight: valid.weight,
            status: Status::Valid,
        };
        let (cluster, me) = (config.cluster_name.clone(), valid.me.clone());
        return if valid.seeds.is_empty() {
            ClusterState::bootstrap(cluster, config.partitions, n, vec![(me, info)])
        } else {
            ClusterState::bootstrap_alone(cluster, config.partitions, n, me, info)
        };
    }
    let members = valid
        .members
        .iter()
        .map(|m| {
            let info = MemberInfo {
                version: 0,
                address: valid.addresses[&m.id].clone(),
                zone: m.zone.clone(),
                weight: m.weight,
                status: Status::Valid,
            };
            (m.id.clone(), info)
        })
        .collect();
    ClusterState::bootstrap(config.cluster_name.clone(), config.partitions, n, members)
}

/// Opens this node's membership: the stored state, or a fresh one from the configuration.
/// Refuses a stored state of another cluster.
pub fn open<P: GossipPeers>(
    config: &NodeConfig,
    valid: &Validated,
    peers: P,
    engine: Arc<dyn Engine>,
    mover: Option<Arc<dyn PartitionMover>>,
) -> anyhow::Result<Membership<P>> {
    let options = Options {
        seeds: valid.seeds.clone(),
        rng_seed: rand::random(),
        ..Options::default()
    };
    let identity = Identity {
        me: valid.me.clone(),
        address: valid.address.clone(),
    };
    let membership = Membership::open(
        identity,
        || bootstrap(config, valid),
        peers,
        Arc::new(EngineStore(engine)),
        mover,
        options,
    )?;
    let cluster = membership.state().cluster().to_string();
    if cluster != config.cluster_name {
        anyhow::bail!(
            "the data directory holds the membership of cluster {cluster:?}, not {:?}",
            config.cluster_name
        );
    }
    Ok(membership)
}

/// What membership looks like from this node, as gauges (set on every state change).
#[derive(Clone, Debug, Default)]
pub struct MembershipMetrics {
    /// Epoch of the ring in force.
    pub ring_epoch: Gauge,
    /// Members taking part in gossip (joining, valid, leaving, exiting).
    pub members: Gauge,
    /// 1 when every member has seen the latest state, else 0.
    pub converged: Gauge,
    /// Partitions of the pending change still moving.
    pub partitions_pending: Gauge,
    /// Keys the pending change's transfers sent so far (all senders).
    pub transfer_keys: Gauge,
    /// Bytes the pending change's transfers sent so far (all senders).
    pub transfer_bytes: Gauge,
}

impl MembershipMetrics {
    /// Registers every series under the `dynamo_membership_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let series: [(&str, &str, &Gauge); 6] = [
            (
                "dynamo_membership_ring_epoch",
                "Epoch of the ring in force",
                &self.ring_epoch,
            ),
            (
                "dynamo_membership_members",
                "Members taking part in gossip",
                &self.members,
            ),
            (
                "dynamo_membership_converged",
                "1 when every member has seen the latest state",
                &self.converged,
            ),
            (
                "dynamo_membership_partitions_pending",
                "Partitions of the committed change still moving",
                &self.partitions_pending,
            ),
            (
                "dynamo_membership_transfer_keys",
                "Keys sent by the committed change's transfers",
                &self.transfer_keys,
            ),
            (
                "dynamo_membership_transfer_bytes",
                "Bytes sent by the committed change's transfers",
                &self.transfer_bytes,
            ),
        ];
        for (name, help, gauge) in series {
            registry.register(name, help, gauge.clone());
        }
    }

    fn observe(&self, state: &ClusterState) {
        let gauge = |g: &Gauge, v: u64| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        gauge(&self.ring_epoch, state.ring().epoch());
        let members = state.members().values().filter(|m| m.status.gossips());
        gauge(&self.members, members.count() as u64);
        gauge(&self.converged, u64::from(state.converged()));
        let (mut pending, mut keys, mut bytes) = (0, 0, 0);
        if let Some(p) = state.pending() {
            pending = p.partitions_pending() as u64;
            for progress in p.transfers.values() {
                keys += progress.keys;
                bytes += progress.bytes;
            }
        }
        gauge(&self.partitions_pending, pending);
        gauge(&self.transfer_keys, keys);
        gauge(&self.transfer_bytes, bytes);
    }
}

/// Applies every new membership state to the rest of the node until `shutdown` fires.
pub async fn follow<P: GossipPeers, C: Connector>(
    membership: Membership<P>,
    followers: Followers<C>,
    metrics: MembershipMetrics,
    shutdown: CancellationToken,
) {
    let mut changes = membership.subscribe();
    let mut applied = Applied::default();
    let mut status = None;
    loop {
        let state = Arc::clone(&changes.borrow_and_update());
        apply(&state, &followers, &mut applied);
        metrics.observe(&state);
        let now = state.member(membership.me()).map(|m| m.status);
        if now != status {
            match now {
                Some(Status::Exiting) => tracing::info!(
                    "this node left the ring; it is removed once every member has seen that"
                ),
                Some(Status::Removed) => tracing::info!(
                    "this node is no longer a member of the cluster; it can be stopped once it released every partition it replicated"
                ),
                Some(s) => tracing::info!(status = s.as_str(), "membership status"),
                None => {}
            }
            status = now;
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            changed = changes.changed() => if changed.is_err() { break },
        }
    }
}

/// What follows membership inside a node: the coordinator (current and next ring, bucket
/// properties), the peer pools (addresses) and anti-entropy (which partitions it tracks).
pub struct Followers<C: Connector> {
    /// The coordinator.
    pub coordinator: Coordinator<PeerPool<C>>,
    /// The coordinator's peer pool.
    pub pool: Arc<PeerPool<C>>,
    /// Anti-entropy and its own peer pool, when it runs.
    pub anti_entropy: Option<(AntiEntropy, Arc<PeerPool<C>>)>,
}

/// What [`apply`] has installed so far.
#[derive(Debug, Default)]
pub struct Applied {
    /// Bucket properties applied, by their stamp.
    buckets: BTreeMap<Vec<u8>, (u64, dynamo_ring::NodeId)>,
    /// Epoch of the ring anti-entropy tracks.
    tracked_epoch: Option<u64>,
}

/// Installs `state`'s current and next ring and addresses, and the bucket properties not
/// applied yet.
pub fn apply<C: Connector>(state: &ClusterState, followers: &Followers<C>, applied: &mut Applied) {
    let coordinator = &followers.coordinator;
    let pool = &followers.pool;
    coordinator.set_ring(state.ring().clone());
    // Writes reach the next owners from the moment this node knows them (the claimant starts
    // transfers only once every member has seen the pending change).
    let next = state.pending().map(|p| p.next.clone());
    if let Err(e) = coordinator.set_next_ring(next) {
        tracing::warn!(error = %e, "cannot install the pending ring");
    }
    if let Some((ae, ae_pool)) = &followers.anti_entropy {
        ae_pool.set_addresses(state.addresses());
        let epoch = state.ring().epoch();
        if applied.tracked_epoch != Some(epoch) {
            ae.set_ring(state.ring().clone());
            applied.tracked_epoch = Some(epoch);
        }
    }
    let routed = coordinator.ring();
    if routed.epoch() == state.ring().epoch() && *routed != *state.ring() {
        tracing::error!(
            epoch = routed.epoch(),
            "membership and the coordinator hold different rings at one epoch; the coordinator keeps its own"
        );
    }
    pool.set_addresses(state.addresses());
    for (bucket, entry) in state.buckets() {
        let stamp = (entry.version, entry.node.clone());
        if applied.buckets.get(bucket) == Some(&stamp) {
            continue;
        }
        match decode_bucket_props(&entry.props)
            .and_then(|props| coordinator.replica_set_bucket_props(bucket, props))
        {
            Ok(()) => {
                applied.buckets.insert(bucket.clone(), stamp);
            }
            Err(e) => tracing::warn!(
                bucket = %String::from_utf8_lossy(bucket),
                error = %e,
                "cannot apply gossiped bucket properties"
            ),
        }
    }
}
