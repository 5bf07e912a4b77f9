//! The simulated cluster: real nodes (coordinator, in-memory storage, tarpc server and peer pool)
//! each running as a turmoil host, plus what outlives a crash. A node's [`MemoryEngine`] lives
//! outside the host's software and stands for its disk: a crash and restart keeps it, a wipe
//! replaces it and bumps the node's epoch, so the restarted node mints dots as a new actor
//! (Riak's kv679 lesson).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dynamo_anti_entropy::{AntiEntropy, LatencySamples, TrackingEngine, Trees};
use dynamo_coordinator::{
    BucketProps, Buckets, Coordinator, Metrics, Options, Parts, READ_REPAIR_LINGER,
};
use dynamo_ring::{Member, NodeId, PreferenceList, Ring};
use dynamo_rpc::{AddressBook, ClusterAuth, NodeServer, PeerPool};
use dynamo_storage::{Engine, MemoryEngine, ObjectKey, VersionedObject};
use dynamo_versioning::Actor;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::clock::SimClock;
use super::membership::{self, MembershipSetup};
use super::net::{RPC_PORT, TurmoilConnector, TurmoilListener, rpc_address};
use super::{Error, Result};

/// Cluster name every simulated node and client authenticates with.
pub const SIM_CLUSTER: &str = "sim";

/// Shared secret of simulated clusters (at least the rpc crate's minimum length).
pub const SIM_SECRET: &str = "simulation-shared-secret";

/// Partitions of the simulated ring: small, so key placement is varied yet cheap to compute.
pub const SIM_PARTITIONS: u32 = 16;

/// Replicas per key (N), the paper's and Riak's usual 3.
pub const SIM_N: u8 = 3;

/// Request timeout of simulated nodes: a few hundred simulated round trips, short enough that a
/// partition is detected well inside a fault episode.
pub const SIM_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// Probe and handoff interval: several passes fit into the settle period after the faults heal.
pub const SIM_WORKER_INTERVAL: Duration = Duration::from_millis(300);

/// Longest time between two anti-entropy exchanges of a pair in the simulation: several
/// exchanges fit between the heal and the convergence deadline.
pub const SIM_EXCHANGE_INTERVAL: Duration = Duration::from_millis(2_000);

/// The anti-entropy options of every simulated node: short simulated intervals, storage inline.
pub fn sim_anti_entropy_options() -> dynamo_anti_entropy::Options {
    dynamo_anti_entropy::Options {
        n: usize::from(SIM_N),
        exchange_interval: SIM_EXCHANGE_INTERVAL,
        confirm_delay: Duration::from_millis(200),
        // A rebuild every few simulated seconds, so rebuilds run under the nemesis too.
        rebuild_interval: Duration::from_secs(4),
        tick: Duration::from_millis(200),
        timeout: SIM_REQUEST_TIMEOUT,
        inline_storage: true,
        ..dynamo_anti_entropy::Options::default()
    }
}

/// The coordinator options of every simulated node.
pub fn sim_options() -> Options {
    Options {
        default_timeout: SIM_REQUEST_TIMEOUT,
        read_repair_linger: READ_REPAIR_LINGER / 2,
        // Storage calls stay on the node's simulated runtime: no real threads, no real time.
        inline_storage: true,
        probe_interval: SIM_WORKER_INTERVAL,
        handoff_interval: SIM_WORKER_INTERVAL,
        ..Options::default()
    }
}

/// A node's durable state: what survives its crash.
struct Disk {
    engine: Arc<MemoryEngine>,
    epoch: u32,
}

/// One simulated node: identity, clock, disk, and the metrics of every incarnation.
pub struct SimNode {
    /// The node's id, which is also its turmoil host name.
    pub id: NodeId,
    /// Its clock; the nemesis skews it.
    pub clock: SimClock,
    disk: Mutex<Disk>,
    incarnations: Mutex<Vec<Metrics>>,
}

impl SimNode {
    fn new(id: NodeId) -> SimNode {
        SimNode {
            id,
            clock: SimClock::new(),
            disk: Mutex::new(Disk {
                engine: Arc::new(MemoryEngine::new()),
                epoch: 1,
            }),
            incarnations: Mutex::new(Vec::new()),
        }
    }

    /// The node's host name.
    pub fn name(&self) -> &str {
        self.id.as_str()
    }

    /// Replaces the disk with an empty one and bumps the epoch (the node lost its data). Only
    /// while the node is crashed: the running software holds the old engine.
    pub fn wipe(&self) {
        let mut disk = self.disk.lock();
        disk.engine = Arc::new(MemoryEngine::new());
        disk.epoch = disk.epoch.saturating_add(1);
    }

    /// The current epoch (1 until the first wipe).
    pub fn epoch(&self) -> u32 {
        self.disk.lock().epoch
    }

    /// The object `key` has on the node's disk right now, read directly (no request: the
    /// convergence check must not repair what it reads).
    pub fn stored(&self, key: &ObjectKey) -> Option<VersionedObject> {
        let engine = Arc::clone(&self.disk.lock().engine);
        engine.get(key).ok().flatten()
    }

    /// The node's disk (its engine), as it is now.
    pub fn engine(&self) -> Arc<MemoryEngine> {
        Arc::clone(&self.disk.lock().engine)
    }

    /// Hints waiting on the node's disk for their owner.
    pub fn hints_pending(&self) -> u64 {
        let engine = Arc::clone(&self.disk.lock().engine);
        engine.hint_count().unwrap_or(0)
    }

    /// Hints stored and hints delivered, summed over every incarnation of the node.
    pub fn hint_counts(&self) -> (u64, u64) {
        self.incarnations.lock().iter().fold((0, 0), |(s, d), m| {
            (s + m.hints_stored.get(), d + m.hints_delivered.get())
        })
    }
}

/// A simulated cluster's fixed shape: members, ring, bucket properties.
pub struct Cluster {
    /// The members, `n1` first.
    pub nodes: Vec<Arc<SimNode>>,
    /// The ring every node routes with.
    pub ring: Ring,
    /// Per-bucket property overrides, installed on every node at start.
    pub buckets: BTreeMap<Vec<u8>, BucketProps>,
    /// Coordinator tunables.
    pub options: Options,
    /// Whether the nodes run membership (else the ring is fixed).
    pub membership: Option<MembershipSetup>,
    /// The nodes clients send requests to (all of them unless a test narrows it).
    entry: Mutex<Vec<NodeId>>,
    /// The ring checks route with, when a test replaced [`Cluster::ring`].
    routing: Mutex<Option<Ring>>,
    auth: ClusterAuth,
}

impl Cluster {
    /// `size` nodes named `n1`.. with the given bucket overrides.
    pub fn new(size: usize, buckets: BTreeMap<Vec<u8>, BucketProps>) -> Result<Arc<Cluster>> {
        if size == 0 {
            return Err(Error::Setup("a cluster needs at least one node".into()));
        }
        let ids = (1..=size)
            .map(|i| NodeId::new(format!("n{i}")))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Setup(format!("node id: {e}")))?;
        let ring = Ring::new(
            SIM_PARTITIONS,
            ids.iter().cloned().map(Member::new).collect(),
            usize::from(SIM_N),
        )
        .map_err(|e| Error::Setup(format!("ring: {e}")))?;
        let auth = ClusterAuth::new(SIM_CLUSTER, SIM_SECRET.as_bytes().to_vec())
            .map_err(|e| Error::Setup(format!("auth: {e}")))?;
        Ok(Arc::new(Cluster {
            entry: Mutex::new(ids.clone()),
            nodes: ids
                .into_iter()
                .map(|id| Arc::new(SimNode::new(id)))
                .collect(),
            ring,
            buckets,
            options: sim_options(),
            membership: None,
            routing: Mutex::new(None),
            auth,
        }))
    }

    /// `size` nodes running membership: `founders` of them form the cluster, the others start
    /// alone (clients do not use them until [`Cluster::set_entry`] says so). `seed` seeds gossip.
    pub fn with_membership(
        size: usize,
        founders: usize,
        buckets: BTreeMap<Vec<u8>, BucketProps>,
        seed: u64,
    ) -> Result<Arc<Cluster>> {
        let plain = Cluster::new(size, buckets)?;
        let mut cluster = Arc::into_inner(plain)
            .ok_or_else(|| Error::Setup("a new cluster is not shared".into()))?;
        if founders == 0 || founders > size {
            return Err(Error::Setup(format!("{founders} founders of {size} nodes")));
        }
        cluster.ring = membership::founding_state(&cluster, founders)?
            .ring()
            .clone();
        *cluster.entry.get_mut() = cluster.nodes[..founders]
            .iter()
            .map(|n| n.id.clone())
            .collect();
        cluster.membership = Some(MembershipSetup { founders, seed });
        Ok(Arc::new(cluster))
    }

    /// The cluster's credentials.
    pub fn auth(&self) -> &ClusterAuth {
        &self.auth
    }

    /// The nodes clients send requests to.
    pub fn entry(&self) -> Vec<NodeId> {
        self.entry.lock().clone()
    }

    /// Sets the nodes clients send requests to.
    pub fn set_entry(&self, nodes: Vec<NodeId>) {
        *self.entry.lock() = nodes;
    }

    /// Has the checks route with `ring` from now on (the ring membership ended with).
    pub fn set_routing(&self, ring: Ring) {
        *self.routing.lock() = Some(ring);
    }

    /// Every member's RPC address.
    pub fn addresses(&self) -> BTreeMap<NodeId, String> {
        self.nodes
            .iter()
            .map(|n| (n.id.clone(), rpc_address(n.name())))
            .collect()
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Result<&Arc<SimNode>> {
        self.nodes
            .iter()
            .find(|n| n.name() == name)
            .ok_or_else(|| Error::Setup(format!("no node named {name}")))
    }

    /// Every node's host name.
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name().to_string()).collect()
    }

    /// The preference list of `bucket`/`key`.
    pub fn preference_list(&self, bucket: &str, key: &str) -> PreferenceList {
        self.routing
            .lock()
            .as_ref()
            .unwrap_or(&self.ring)
            .preference_list(bucket.as_bytes(), key.as_bytes(), usize::from(SIM_N))
    }

    /// A peer pool for a client (call it inside the client's turmoil host).
    pub fn pool(&self) -> PeerPool<TurmoilConnector> {
        PeerPool::new(TurmoilConnector, self.auth.clone(), self.addresses())
    }

    /// Hints stored and delivered across the cluster (every incarnation of every node).
    pub fn hint_counts(&self) -> (u64, u64) {
        self.nodes.iter().fold((0, 0), |(s, d), n| {
            let (ns, nd) = n.hint_counts();
            (s + ns, d + nd)
        })
    }

    /// Hints still waiting on any node's disk.
    pub fn hints_pending(&self) -> u64 {
        self.nodes.iter().map(|n| n.hints_pending()).sum()
    }

    /// Adds every node to `sim` as a host running [`serve`]. A bounced host runs it again with the
    /// same disk (or the new one after a wipe).
    pub fn install(self: &Arc<Self>, sim: &mut turmoil::Sim<'_>) {
        for node in &self.nodes {
            let cluster = Arc::clone(self);
            let node = Arc::clone(node);
            sim.host(node.name().to_string(), move || {
                serve(Arc::clone(&cluster), Arc::clone(&node))
            });
        }
    }
}

/// One incarnation of a node's software: builds the coordinator on the node's disk, starts the
/// probe and handoff workers, and serves RPC until the host is crashed.
pub async fn serve(cluster: Arc<Cluster>, node: Arc<SimNode>) -> turmoil::Result {
    let (engine, epoch) = {
        let disk = node.disk.lock();
        (Arc::clone(&disk.engine), disk.epoch)
    };
    // ---- membership (sim::membership): the ring comes from the stored or founding state.
    let joined = match &cluster.membership {
        Some(setup) => Some(membership::open(
            &cluster,
            setup,
            &node,
            Arc::clone(&engine),
            epoch,
        )?),
        None => None,
    };
    let ring = joined
        .as_ref()
        .map_or_else(|| cluster.ring.clone(), |(m, _)| m.state().ring().clone());
    // ---- end membership
    let trees = Trees::new();
    let latency = Arc::new(LatencySamples::default());
    let engine: Arc<dyn Engine> = Arc::new(TrackingEngine::new(
        engine,
        Arc::clone(&trees),
        Arc::clone(&latency),
    ));
    let buckets = Buckets::load(
        BucketProps::default(),
        cluster.buckets.clone(),
        Arc::clone(&engine),
    )
    .map_err(|e| Error::Setup(format!("{}: buckets: {e}", node.id)))?;
    let pool = Arc::new(cluster.pool());
    let coordinator = Coordinator::new(Parts {
        me: node.id.clone(),
        actor: Actor::new(node.id.actor_id(), epoch),
        ring: ring.clone(),
        engine: Arc::clone(&engine),
        replicas: Arc::clone(&pool),
        buckets,
        clock: Arc::new(node.clock.clone()),
        options: cluster.options.clone(),
    });
    node.incarnations.lock().push(coordinator.metrics().clone());
    // Never cancelled: a crash drops the whole runtime, which is the point.
    let shutdown = CancellationToken::new();
    coordinator.spawn_workers(shutdown.clone());
    let lww: BTreeMap<Vec<u8>, bool> = cluster
        .buckets
        .iter()
        .map(|(b, p)| (b.clone(), p.last_write_wins))
        .collect();
    let clock = node.clock.clone();
    let anti_entropy = AntiEntropy::new(dynamo_anti_entropy::Parts {
        me: node.id.clone(),
        ring,
        engine,
        trees,
        latency,
        now_ms: Arc::new(move || dynamo_coordinator::Clock::now_ms(&clock)),
        is_lww: Arc::new(move |bucket| lww.get(bucket).copied().unwrap_or(false)),
        seed: node.id.actor_id() ^ u64::from(epoch),
        options: sim_anti_entropy_options(),
    });
    // Anti-entropy dials its own connections, as a node does (see `dynamo_node::RunningNode`).
    let ae_pool = Arc::new(cluster.pool());
    tokio::spawn(
        anti_entropy
            .clone()
            .run_worker(Arc::clone(&ae_pool), shutdown.clone()),
    );
    let listener = TurmoilListener::bind(RPC_PORT).await?;
    let book: Arc<dyn AddressBook> = Arc::clone(&pool) as Arc<dyn AddressBook>;
    let mut server =
        NodeServer::new(coordinator.clone(), book).with_anti_entropy(anti_entropy.clone());
    // ---- membership (sim::membership): gossip, follower, transfers, admin over rpc.
    if let Some((membership, mover)) = joined {
        let running = membership::Running {
            membership,
            mover,
            coordinator,
            pool,
            anti_entropy: (anti_entropy, ae_pool),
        };
        server = membership::start(running, server, &shutdown);
    }
    // ---- end membership
    server.run(listener, cluster.auth.clone(), shutdown).await;
    Ok(())
}
