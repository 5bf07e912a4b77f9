//! Membership in the simulation (paper 4.8 and 4.9): each simulated node runs the real
//! [`Membership`] driver over turmoil, with gossip through the rpc crate's [`GossipClient`] on
//! simulated TCP, its state in the node's [`MemoryEngine`] metadata (so it survives a crash
//! like a disk would), and the node's own [`CoordinatorMover`] moving partitions through the
//! coordinator. The node follows every new state exactly as a real node does
//! ([`dynamo_node::membership::follow`]): current and next ring, addresses, anti-entropy's ring.
//!
//! A cluster built with [`Cluster::with_membership`](super::cluster::Cluster::with_membership)
//! has founders (`n1`..`nF`, bootstrapped from a static list) and spare nodes that start alone
//! and join through an operator command. Gossip intervals are short and simulated; the peer
//! choice is seeded from the run's seed, so a seed replays the same history.

use std::sync::Arc;
use std::time::Duration;

use dynamo_anti_entropy::AntiEntropy;
use dynamo_coordinator::Coordinator;
use dynamo_membership::{
    AdminCommand, AdminReply, ClusterState, Identity, MemberInfo, Membership, Options,
    PartitionMover, StateStore, Status,
};
use dynamo_node::membership::{EngineStore, Followers, META_MEMBERSHIP, MembershipMetrics, follow};
use dynamo_node::mover::CoordinatorMover;
use dynamo_ring::{NodeId, PartitionId};
use dynamo_rpc::{ClusterAuth, GossipClient, NodeServer, PeerPool};
use dynamo_storage::{Engine, MemoryEngine};
use tokio_util::sync::CancellationToken;

use super::cluster::{Cluster, SIM_CLUSTER, SIM_N, SIM_PARTITIONS, SIM_REQUEST_TIMEOUT, SimNode};
use super::net::{TurmoilConnector, rpc_address};
use super::{Error, Result};

/// Time between two gossip rounds of a simulated node: short, so a change is seen by every
/// member within about a simulated second.
pub const SIM_GOSSIP_INTERVAL: Duration = Duration::from_millis(200);

/// How long one transfer request (a batch, a verification page, the final sync) may take in
/// the simulation: a receiver that crashed or was cut off is noticed within a few seconds, not
/// the real node's 30.
pub const SIM_TRANSFER_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a simulated node skips a peer it failed to reach.
pub const SIM_PEER_BACKOFF: Duration = Duration::from_millis(1_000);

/// Membership of a simulated node: gossip by address over simulated TCP.
pub type SimMembership = Membership<GossipClient<TurmoilConnector>>;

/// The partition mover of a simulated node: the node's own type, over simulated TCP.
pub type SimMover = CoordinatorMover<PeerPool<TurmoilConnector>>;

/// The coordinator of a simulated node.
pub type SimCoordinator = Coordinator<PeerPool<TurmoilConnector>>;

/// How a simulated cluster runs membership.
#[derive(Clone, Debug)]
pub struct MembershipSetup {
    /// Nodes `n1`..`nF` bootstrapped from a static list; the others start alone.
    pub founders: usize,
    /// The run's seed: every node's peer choice derives from it.
    pub seed: u64,
}

impl MembershipSetup {
    /// Whether `node` is a founder.
    pub fn is_founder(&self, cluster: &Cluster, node: &NodeId) -> bool {
        cluster
            .nodes
            .iter()
            .take(self.founders)
            .any(|n| &n.id == node)
    }
}

fn info(name: &str) -> MemberInfo {
    MemberInfo {
        version: 0,
        address: rpc_address(name),
        zone: None,
        weight: 1,
        status: Status::Valid,
    }
}

/// The founders' first state (the same on every founder, so they share one history).
pub fn founding_state(cluster: &Cluster, founders: usize) -> Result<ClusterState> {
    let members = cluster
        .nodes
        .iter()
        .take(founders)
        .map(|n| (n.id.clone(), info(n.name())))
        .collect();
    ClusterState::bootstrap(SIM_CLUSTER, SIM_PARTITIONS, SIM_N, members)
        .map_err(|e| Error::Setup(format!("membership bootstrap: {e}")))
}

/// The gossip client every simulated node and operator uses.
pub fn gossip_client(auth: ClusterAuth) -> GossipClient<TurmoilConnector> {
    GossipClient::new(TurmoilConnector, auth)
}

/// Opens `node`'s membership on its disk (`engine`), or bootstraps it: founders from the static
/// list, the others alone (ring epoch 0, expecting to join).
pub fn open(
    cluster: &Cluster,
    setup: &MembershipSetup,
    node: &SimNode,
    engine: Arc<MemoryEngine>,
    epoch: u32,
) -> Result<(SimMembership, Arc<SimMover>)> {
    let founder = setup.is_founder(cluster, &node.id);
    let bootstrap = || {
        if founder {
            founding_state(cluster, setup.founders)
                .map_err(|e| dynamo_membership::Error::Store(e.to_string()))
        } else {
            ClusterState::bootstrap_alone(
                SIM_CLUSTER,
                SIM_PARTITIONS,
                SIM_N,
                node.id.clone(),
                info(node.name()),
            )
        }
    };
    let seeds = cluster
        .nodes
        .iter()
        .take(setup.founders.min(2))
        .map(|n| rpc_address(n.name()))
        .collect();
    let options = Options {
        gossip_interval: SIM_GOSSIP_INTERVAL,
        exchange_timeout: SIM_REQUEST_TIMEOUT,
        peer_backoff: SIM_PEER_BACKOFF,
        seeds,
        rng_seed: setup.seed ^ node.id.actor_id() ^ u64::from(epoch).rotate_left(32),
        ..Options::default()
    };
    let mover = SimMover::with_timeout(SIM_TRANSFER_TIMEOUT);
    let store: Arc<dyn StateStore> = Arc::new(EngineStore(engine));
    let membership = Membership::open(
        Identity {
            me: node.id.clone(),
            address: rpc_address(node.name()),
        },
        bootstrap,
        gossip_client(cluster.auth().clone()),
        store,
        Some(Arc::clone(&mover) as Arc<dyn PartitionMover>),
        options,
    )
    .map_err(|e| Error::Setup(format!("{}: membership: {e}", node.id)))?;
    Ok((membership, mover))
}

/// What [`start`] plugs membership into.
pub struct Running {
    /// The node's membership.
    pub membership: SimMembership,
    /// Its mover.
    pub mover: Arc<SimMover>,
    /// The coordinator.
    pub coordinator: SimCoordinator,
    /// The coordinator's peer pool.
    pub pool: Arc<PeerPool<TurmoilConnector>>,
    /// Anti-entropy and its own pool.
    pub anti_entropy: (AntiEntropy, Arc<PeerPool<TurmoilConnector>>),
}

/// Starts gossip and the follower, and plugs membership into the RPC server.
pub fn start(
    running: Running,
    server: NodeServer<PeerPool<TurmoilConnector>>,
    shutdown: &CancellationToken,
) -> NodeServer<PeerPool<TurmoilConnector>> {
    let Running {
        membership,
        mover,
        coordinator,
        pool,
        anti_entropy,
    } = running;
    mover.attach(coordinator.clone());
    let followers = Followers {
        coordinator,
        pool,
        anti_entropy: Some(anti_entropy),
    };
    tokio::spawn(follow(
        membership.clone(),
        followers,
        MembershipMetrics::default(),
        shutdown.clone(),
    ));
    membership.spawn(shutdown.clone());
    server.with_membership(Arc::new(membership))
}

/// The membership state on `node`'s disk (what it would load after a crash), if any.
pub fn stored_state(node: &SimNode) -> Option<ClusterState> {
    let bytes = node.engine().get_meta(META_MEMBERSHIP).ok().flatten()?;
    ClusterState::decode(&bytes).ok()
}

/// Keys (`bucket/key`, tombstones included) on `node`'s disk in partition `p`.
pub fn objects_in(node: &SimNode, p: PartitionId) -> Vec<String> {
    node.engine()
        .scan_partition(p, None, usize::MAX)
        .map(|entries| {
            entries
                .iter()
                .map(|(k, _)| {
                    format!(
                        "{}/{}",
                        String::from_utf8_lossy(&k.bucket),
                        String::from_utf8_lossy(&k.key)
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Runs an operator command at `node` (over simulated TCP; call it inside a turmoil host).
pub async fn admin(
    cluster: &Cluster,
    node: &str,
    command: AdminCommand,
) -> dynamo_membership::Result<AdminReply> {
    gossip_client(cluster.auth().clone())
        .admin(&rpc_address(node), command, SIM_REQUEST_TIMEOUT * 2)
        .await
}
