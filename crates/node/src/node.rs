//! Starting and stopping one node: storage, identity (node id and epoch), membership (which
//! holds the ring), peer pool, coordinator, the RPC listener and the HTTP API, under one
//! shutdown token.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use dynamo_anti_entropy::{AntiEntropy, LatencySamples, TrackingEngine, Trees};
use dynamo_coordinator::{Buckets, Clock, Coordinator, Options, Parts, SystemClock};
use dynamo_ring::{NodeId, Ring};
use dynamo_rpc::{ClusterAuth, GossipClient, NodeServer, PeerPool, TcpConnector, TcpListener};
use dynamo_storage::{Engine, EngineExt, RedbEngine};
use dynamo_versioning::Actor;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::NodeConfig;
use crate::membership::{self, NodeMembership};
use crate::mover::CoordinatorMover;
use dynamo_membership::PartitionMover;

/// Name of the data file inside `data_dir`.
pub const DATA_FILE: &str = "dynamo.redb";

const META_NODE_ID: &str = "node_id";
const META_EPOCH: &str = "epoch";
/// Set to 1 by a clean stop (after everything was flushed), to 0 while the node runs.
const META_CLEAN_STOP: &str = "clean_stop";

/// The coordinator type a node runs.
pub type NodeCoordinator = Coordinator<PeerPool<TcpConnector>>;

/// Listeners bound before the node starts (tests bind port 0 first so they can write every
/// member's real address into the configs).
pub struct Listeners {
    /// Internode RPC.
    pub rpc: TcpListener,
    /// Client HTTP.
    pub http: tokio::net::TcpListener,
}

impl Listeners {
    /// Binds the addresses in `config`.
    pub async fn bind(config: &NodeConfig) -> anyhow::Result<Listeners> {
        let rpc = TcpListener::bind(&config.rpc_listen)
            .await
            .with_context(|| format!("cannot listen for RPC on {}", config.rpc_listen))?;
        let http = tokio::net::TcpListener::bind(&config.http_listen)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", config.http_listen))?;
        Ok(Listeners { rpc, http })
    }
}

/// A running node.
pub struct RunningNode {
    /// This node's id.
    pub id: NodeId,
    /// Where the RPC listener is bound.
    pub rpc_addr: SocketAddr,
    /// Where the HTTP API is bound.
    pub http_addr: SocketAddr,
    /// The actor (node id hash and epoch) this node writes as.
    pub actor: Actor,
    coordinator: NodeCoordinator,
    anti_entropy: Option<AntiEntropy>,
    membership: NodeMembership,
    engine: Arc<dyn Engine>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl RunningNode {
    /// Binds the configured addresses and starts.
    pub async fn start(config: NodeConfig) -> anyhow::Result<RunningNode> {
        let listeners = Listeners::bind(&config).await?;
        RunningNode::start_with(config, listeners).await
    }

    /// Starts on listeners bound by the caller.
    pub async fn start_with(
        config: NodeConfig,
        listeners: Listeners,
    ) -> anyhow::Result<RunningNode> {
        let valid = config.validate()?;
        let options = dynamo_storage::Options {
            durability: config.durability.into(),
            limits: dynamo_storage::Limits {
                max_value_len: config.max_value_bytes,
                ..dynamo_storage::Limits::default()
            },
            ..dynamo_storage::Options::default()
        };
        let path = config.data_dir.join(DATA_FILE);
        let raw: Arc<dyn Engine> = {
            let open_path = path.clone();
            let opened =
                tokio::task::spawn_blocking(move || RedbEngine::open(&open_path, options)).await?;
            Arc::new(opened.with_context(|| format!("cannot open {}", path.display()))?)
        };
        // Anti-entropy keeps its trees current by wrapping storage: every local write (client,
        // replica, handoff, read repair, repair) updates the tree of its partition.
        let trees = Trees::new();
        let latency = Arc::new(LatencySamples::default());
        let engine: Arc<dyn Engine> = if config.anti_entropy.enabled {
            Arc::new(TrackingEngine::new(
                raw,
                Arc::clone(&trees),
                Arc::clone(&latency),
            ))
        } else {
            raw
        };
        let actor = load_identity(engine.as_ref(), &valid.me)?;
        let auth = ClusterAuth::new(
            config.cluster_name.clone(),
            config.cluster_secret.as_bytes().to_vec(),
        )?;
        let mover = CoordinatorMover::new();
        // The ring and the members come from membership: the stored state, or on a fresh data
        // directory the static member list (or this node alone).
        let membership = membership::open(
            &config,
            &valid,
            GossipClient::new(TcpConnector, auth.clone()),
            Arc::clone(&engine),
            Some(Arc::clone(&mover) as Arc<dyn PartitionMover>),
        )?;
        let state = membership.state();
        let ring: Ring = state.ring().clone();
        let pool = Arc::new(PeerPool::new(TcpConnector, auth.clone(), state.addresses()));
        let buckets = Buckets::load(
            valid.bucket_defaults.clone(),
            valid.buckets.clone(),
            Arc::clone(&engine),
        )?;
        let coordinator = Coordinator::new(Parts {
            me: valid.me.clone(),
            actor,
            ring: ring.clone(),
            engine: Arc::clone(&engine),
            replicas: Arc::clone(&pool),
            buckets,
            clock: Arc::new(SystemClock),
            options: Options::default(),
        });

        // Membership decides how many transfers run at once (`dynamo admin transfer-limit`);
        // the coordinator's own limiter must not hold them back a second time.
        coordinator.set_transfer_limit(dynamo_coordinator::MAX_TRANSFER_LIMIT)?;
        mover.attach(coordinator.clone());
        let shutdown = CancellationToken::new();
        let mut registry = Registry::default();
        coordinator.metrics().register(&mut registry);
        let n_hint = usize::from(valid.bucket_defaults.n_val);
        let anti_entropy = config.anti_entropy.enabled.then(|| {
            let lww = coordinator.clone();
            AntiEntropy::new(dynamo_anti_entropy::Parts {
                me: valid.me.clone(),
                ring,
                engine: Arc::clone(&engine),
                trees,
                latency,
                now_ms: Arc::new(|| SystemClock.now_ms()),
                is_lww: Arc::new(move |bucket| lww.bucket_props(bucket).last_write_wins),
                seed: rand::random(),
                options: config.anti_entropy.options(n_hint),
            })
        });
        if let Some(ae) = &anti_entropy {
            ae.metrics().register(&mut registry);
        }
        let membership_metrics = membership::MembershipMetrics::default();
        membership_metrics.register(&mut registry);
        let registry = Arc::new(registry);
        let render: dynamo_http::MetricsRender = Arc::new(move || {
            let mut out = String::new();
            if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
                tracing::warn!(error = %e, "cannot render metrics");
            }
            out
        });

        coordinator.spawn_workers(shutdown.clone());
        let rpc_addr = listeners.rpc.local_addr()?;
        let http_addr = listeners.http.local_addr()?;
        let tasks = TaskTracker::new();
        let mut server = NodeServer::new(coordinator.clone(), Arc::clone(&pool) as _)
            .with_membership(Arc::new(membership.clone()));
        // Background exchanges get connections of their own: a repair's large frames never
        // queue ahead of client requests on a shared connection, and a dial that fails in the
        // background does not hold back the coordinator's next call (the pool's dial backoff is
        // per pool). Its addresses follow membership like the coordinator's pool.
        let ae_pool = Arc::new(PeerPool::new(TcpConnector, auth.clone(), state.addresses()));
        if let Some(ae) = &anti_entropy {
            server = server.with_anti_entropy(ae.clone());
            tasks.spawn(
                ae.clone()
                    .run_worker(Arc::clone(&ae_pool), shutdown.clone()),
            );
        }
        membership.spawn(shutdown.clone());
        tasks.spawn(membership::follow(
            membership.clone(),
            membership::Followers {
                coordinator: coordinator.clone(),
                pool: Arc::clone(&pool),
                anti_entropy: anti_entropy.clone().map(|ae| (ae, ae_pool)),
            },
            membership_metrics,
            shutdown.clone(),
        ));
        tasks.spawn(server.run(listeners.rpc, auth, shutdown.clone()));
        let router = dynamo_http::router(coordinator.clone(), render);
        let http_shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = dynamo_http::serve(listeners.http, router, http_shutdown).await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        tracing::info!(node = %valid.me, %rpc_addr, %http_addr, epoch = actor.epoch, "node started");
        Ok(RunningNode {
            id: valid.me,
            rpc_addr,
            http_addr,
            actor,
            coordinator,
            anti_entropy,
            membership,
            engine,
            shutdown,
            tasks,
        })
    }

    /// The node's membership (for in-process tests and tools).
    pub fn membership(&self) -> &NodeMembership {
        &self.membership
    }

    /// The node's coordinator (for in-process tests and tools).
    pub fn coordinator(&self) -> &NodeCoordinator {
        &self.coordinator
    }

    /// The node's anti-entropy service (`None` when disabled in the config).
    pub fn anti_entropy(&self) -> Option<&AntiEntropy> {
        self.anti_entropy.as_ref()
    }

    /// A token that stops the node when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting requests, waits for in-flight work (including background replica writes),
    /// flushes storage and records the clean stop (so the next start keeps the epoch).
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.membership.wait().await;
        self.coordinator.drain().await;
        let engine = Arc::clone(&self.engine);
        // A fenced coordinator shared versions whose local commit failed: the next start must
        // take a new epoch, so this stop is not recorded as clean.
        let clean = !self.coordinator.is_fenced();
        tokio::task::spawn_blocking(move || {
            engine.flush()?;
            if clean {
                engine.set_meta_u64(META_CLEAN_STOP, 1)?;
            }
            Ok::<(), dynamo_storage::Error>(())
        })
        .await??;
        tracing::info!(node = %self.id, "node stopped");
        Ok(())
    }
}

/// Reads (or, for a fresh data directory, records) which node this data belongs to and the
/// epoch this node writes under, and marks the data directory as in use.
///
/// The epoch changes whenever the node may have forgotten a dot it issued: a fresh data
/// directory (the node lost its data: Riak's kv679), and any start after a stop that was not
/// clean (a crash can lose writes that were acknowledged from the write buffer, or whose
/// replicas got the version while the local commit never landed). Reusing the epoch then could
/// mint the same dot twice for two different values, and replicas would keep only one of them.
/// Epochs are random 32-bit numbers different from the previous one, so two incarnations
/// collide with probability about 2^-32.
fn load_identity(engine: &dyn Engine, me: &NodeId) -> anyhow::Result<Actor> {
    match engine.get_meta(META_NODE_ID)? {
        Some(stored) if stored != me.as_str().as_bytes() => bail!(
            "the data directory belongs to node {:?}, not {me}; point data_dir elsewhere",
            String::from_utf8_lossy(&stored)
        ),
        Some(_) => {}
        None => engine.set_meta(META_NODE_ID, me.as_str().as_bytes())?,
    }
    let previous = match engine.get_meta_u64(META_EPOCH)? {
        Some(e) => Some(u32::try_from(e).context("stored epoch is out of range")?),
        None => None,
    };
    let clean = engine.get_meta_u64(META_CLEAN_STOP)? == Some(1);
    let epoch = match previous {
        Some(epoch) if clean => epoch,
        _ => {
            let mut epoch = rand::random::<u32>().max(1);
            while Some(epoch) == previous {
                epoch = rand::random::<u32>().max(1);
            }
            if previous.is_some() {
                tracing::warn!(
                    node = %me,
                    epoch,
                    "the last stop was not clean; writing under a new epoch"
                );
            }
            engine.set_meta_u64(META_EPOCH, u64::from(epoch))?;
            epoch
        }
    };
    // Until a clean stop says otherwise, the next start must assume a crash.
    engine.set_meta_u64(META_CLEAN_STOP, 0)?;
    Ok(Actor::new(me.actor_id(), epoch))
}

#[cfg(test)]
mod tests {
    use dynamo_storage::MemoryEngine;

    use super::*;

    fn n1() -> NodeId {
        NodeId::new("n1").unwrap()
    }

    #[test]
    fn a_clean_stop_keeps_the_epoch_and_a_crash_changes_it() {
        let engine = MemoryEngine::new();
        let first = load_identity(&engine, &n1()).unwrap();
        assert_eq!(first.node, n1().actor_id());

        // A start after a crash (no clean-stop mark): a new epoch.
        let after_crash = load_identity(&engine, &n1()).unwrap();
        assert_ne!(after_crash.epoch, first.epoch);

        // A clean stop, then a start: the same epoch.
        engine.set_meta_u64(META_CLEAN_STOP, 1).unwrap();
        let after_clean_stop = load_identity(&engine, &n1()).unwrap();
        assert_eq!(after_clean_stop.epoch, after_crash.epoch);
        assert_eq!(
            engine.get_meta_u64(META_CLEAN_STOP).unwrap(),
            Some(0),
            "running again"
        );
    }

    #[test]
    fn another_nodes_data_directory_is_refused() {
        let engine = MemoryEngine::new();
        load_identity(&engine, &n1()).unwrap();
        let err = load_identity(&engine, &NodeId::new("n2").unwrap()).unwrap_err();
        assert!(err.to_string().contains("belongs to node"), "{err}");
    }
}
