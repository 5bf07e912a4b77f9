//! Membership under network faults, deterministically (turmoil's simulated TCP, real tarpc
//! servers and gossip clients): three members bootstrapped from a static list, two lone nodes
//! that join through different seeds while the network is split in two, a commit that is refused
//! until the halves heal and everyone has seen the joins, then installed by the claimant; then a
//! member leaves and is cut off from everyone in the middle of its change. Every node must end
//! with the same state: the joiners valid, the leaver removed, one ring. The partition mover is a
//! stand-in that reports each copy synced after a short simulated delay (moving data is the
//! coordinator's part); membership decides when copies run and when the ring switches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dynamo_coordinator::{BucketProps, Buckets, Coordinator, ManualClock, Options, Parts};
use dynamo_integration_tests::sim::net::{
    RPC_PORT, TurmoilConnector, TurmoilListener, rpc_address,
};
use dynamo_membership::memnet::MemStore;
use dynamo_membership::{
    AdminCommand, AdminReply, ClusterState, Identity, MemberInfo, Membership, PartitionMover,
    ProgressReport, StateStore, Status, TransferStats,
};
use dynamo_ring::{NodeId, PartitionId, Ring, Transfer};
use dynamo_rpc::{ClusterAuth, GossipClient, NodeServer, PeerPool};
use dynamo_storage::{Engine, MemoryEngine};
use dynamo_versioning::Actor;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

const CLUSTER: &str = "sim";
const SECRET: &str = "simulation-shared-secret";
const NODES: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];
/// Simulated time the whole scenario may take.
const LIMIT: Duration = Duration::from_secs(300);
/// How long the operator waits for one step (a commit accepted, a ring installed).
const STEP_DEADLINE: Duration = Duration::from_secs(90);
/// The operator's polling interval (simulated).
const POLL: Duration = Duration::from_millis(500);
/// How long the stand-in mover takes per copy (simulated).
const COPY_TIME: Duration = Duration::from_millis(300);

type SimMembership = Membership<GossipClient<TurmoilConnector>>;

/// Copies "take" [`COPY_TIME`]; releases are recorded.
#[derive(Default)]
struct StandInMover {
    released: Mutex<Vec<PartitionId>>,
}

impl PartitionMover for StandInMover {
    fn transfer(
        &self,
        _: Transfer,
        _: Ring,
        report: ProgressReport,
    ) -> BoxFuture<'static, dynamo_membership::Result<TransferStats>> {
        Box::pin(async move {
            tokio::time::sleep(COPY_TIME).await;
            report(1, 100);
            Ok(TransferStats {
                keys: 1,
                bytes: 100,
            })
        })
    }

    fn release(
        &self,
        parts: Vec<PartitionId>,
        _: Ring,
    ) -> BoxFuture<'static, dynamo_membership::Result<()>> {
        self.released.lock().extend(parts);
        Box::pin(async { Ok(()) })
    }
}

/// What outlives a node's software: its stored membership, its mover's record, and the live
/// handle (read by the test after the run).
#[derive(Default)]
struct Node {
    store: Arc<MemStore>,
    mover: Arc<StandInMover>,
    handle: Mutex<Option<SimMembership>>,
}

fn id(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
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

fn auth() -> ClusterAuth {
    ClusterAuth::new(CLUSTER, SECRET.as_bytes().to_vec()).unwrap()
}

/// One node's software: membership (n1..n3 from the static list, n4 and n5 alone with n1 as
/// seed), a coordinator (the server needs one) and the RPC server.
async fn serve(name: &'static str, node: Arc<Node>, seed: u64) -> turmoil::Result {
    let statics = ["n1", "n2", "n3"];
    let bootstrap = || {
        if statics.contains(&name) {
            let members = statics.iter().map(|n| (id(n), info(n))).collect();
            ClusterState::bootstrap(CLUSTER, 16, 3, members)
        } else {
            ClusterState::bootstrap_alone(CLUSTER, 16, 3, id(name), info(name))
        }
    };
    let options = dynamo_membership::Options {
        seeds: vec![rpc_address("n1")],
        rng_seed: seed ^ u64::from(name.as_bytes()[1]),
        ..dynamo_membership::Options::default()
    };
    let membership = Membership::open(
        Identity {
            me: id(name),
            address: rpc_address(name),
        },
        bootstrap,
        GossipClient::new(TurmoilConnector, auth()),
        Arc::clone(&node.store) as Arc<dyn StateStore>,
        Some(Arc::clone(&node.mover) as Arc<dyn PartitionMover>),
        options,
    )?;
    let state = membership.state();
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
    let pool = Arc::new(PeerPool::new(TurmoilConnector, auth(), state.addresses()));
    let coordinator = Coordinator::new(Parts {
        me: id(name),
        actor: Actor::new(id(name).actor_id(), 1),
        ring: state.ring().clone(),
        engine: Arc::clone(&engine),
        replicas: Arc::clone(&pool),
        buckets: Buckets::load(BucketProps::default(), BTreeMap::new(), engine)?,
        clock: Arc::new(ManualClock::new(1)),
        options: Options {
            inline_storage: true,
            ..Options::default()
        },
    });
    let shutdown = CancellationToken::new();
    membership.spawn(shutdown.clone());
    *node.handle.lock() = Some(membership.clone());
    let listener = TurmoilListener::bind(RPC_PORT).await?;
    NodeServer::new(coordinator, pool)
        .with_membership(Arc::new(membership))
        .run(listener, auth(), shutdown)
        .await;
    Ok(())
}

/// A network fault the operator asks the test loop to carry out.
enum Net {
    Split(Vec<&'static str>, Vec<&'static str>),
    HealAll,
}

async fn admin(node: &str, command: AdminCommand) -> dynamo_membership::Result<AdminReply> {
    GossipClient::new(TurmoilConnector, auth())
        .admin(&rpc_address(node), command, Duration::from_secs(2))
        .await
}

/// Plans and commits at `node`, polling until the commit is accepted; returns the plan's next
/// ring epoch.
async fn plan_and_commit(node: &str) -> Result<u64, String> {
    let deadline = tokio::time::Instant::now() + STEP_DEADLINE;
    loop {
        if let Ok(AdminReply::Plan(plan)) = admin(node, AdminCommand::Plan).await
            && admin(node, AdminCommand::Commit { plan: None })
                .await
                .is_ok()
        {
            return Ok(plan.next_epoch);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("no commit accepted at {node}"));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls until every node in `nodes` reports ring epoch `epoch` and convergence.
async fn installed(nodes: &[&str], epoch: u64) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + STEP_DEADLINE;
    loop {
        let mut all = true;
        for n in nodes {
            let ok = matches!(
                admin(n, AdminCommand::Ring).await,
                Ok(AdminReply::Ring(r)) if r.epoch == epoch && r.converged
            );
            all &= ok;
        }
        if all {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("ring epoch {epoch} not installed everywhere"));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The operator's script; network faults go to the test loop through `net`.
async fn operator(net: Arc<Mutex<Vec<Net>>>) -> Result<(), String> {
    let err = |e: dynamo_membership::Error| e.to_string();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Split the network, then join one node on each side.
    net.lock()
        .push(Net::Split(vec!["n1", "n4"], vec!["n2", "n3", "n5"]));
    tokio::time::sleep(Duration::from_secs(1)).await;
    admin(
        "n4",
        AdminCommand::Join {
            seed: rpc_address("n1"),
        },
    )
    .await
    .map_err(err)?;
    admin(
        "n5",
        AdminCommand::Join {
            seed: rpc_address("n2"),
        },
    )
    .await
    .map_err(err)?;
    // While split, nobody can have seen everything: commit is refused on both sides.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for side in ["n1", "n2"] {
        if let Ok(AdminReply::Plan(_)) = admin(side, AdminCommand::Plan).await {
            let refused = admin(side, AdminCommand::Commit { plan: None }).await;
            if refused.is_ok() {
                return Err(format!("{side} committed while the network was split"));
            }
        }
    }
    net.lock().push(Net::HealAll);
    let epoch = plan_and_commit("n1").await?;
    installed(&NODES, epoch).await?;
    // n2 leaves and is cut off from everyone for a while in the middle of its change.
    admin(
        "n3",
        AdminCommand::Leave {
            node: Some(id("n2")),
        },
    )
    .await
    .map_err(err)?;
    let epoch = plan_and_commit("n3").await?;
    net.lock()
        .push(Net::Split(vec!["n2"], vec!["n1", "n3", "n4", "n5"]));
    tokio::time::sleep(Duration::from_secs(10)).await;
    net.lock().push(Net::HealAll);
    installed(&["n1", "n3", "n4", "n5"], epoch).await?;
    // Let the leaver learn it exited and the claimant remove it.
    tokio::time::sleep(Duration::from_secs(10)).await;
    Ok(())
}

/// Runs the scenario with `seed`; returns every node's final state.
fn run(seed: u64) -> Vec<Arc<ClusterState>> {
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(LIMIT)
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(2))
        .max_message_latency(Duration::from_millis(2))
        .build();
    let nodes: Vec<Arc<Node>> = NODES.iter().map(|_| Arc::default()).collect();
    for (name, node) in NODES.iter().zip(&nodes) {
        let node = Arc::clone(node);
        sim.host(*name, move || serve(name, Arc::clone(&node), seed));
    }
    let net: Arc<Mutex<Vec<Net>>> = Arc::default();
    let script = Arc::clone(&net);
    sim.client("operator", async move {
        operator(script).await.map_err(|e| e.into())
    });
    loop {
        for action in std::mem::take(&mut *net.lock()) {
            match action {
                Net::Split(a, b) => {
                    for x in &a {
                        for y in &b {
                            sim.partition(*x, *y);
                        }
                    }
                }
                Net::HealAll => {
                    for x in NODES {
                        for y in NODES {
                            if x != y {
                                sim.repair(x, y);
                            }
                        }
                    }
                }
            }
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => panic!("seed {seed}: {e}"),
        }
    }
    nodes
        .iter()
        .map(|n| {
            n.handle
                .lock()
                .as_ref()
                .expect("every node started")
                .state()
        })
        .collect()
}

/// Seeds the scenario runs with: `MEMBERSHIP_SIM_SEEDS=1-200` runs many (inclusive range).
fn seeds() -> std::ops::RangeInclusive<u64> {
    let parsed = std::env::var("MEMBERSHIP_SIM_SEEDS").ok().and_then(|v| {
        let (a, b) = v.split_once('-')?;
        Some(a.parse().ok()?..=b.parse().ok()?)
    });
    parsed.unwrap_or(7..=7)
}

#[test]
fn joins_under_a_split_and_a_leaver_cut_off_mid_change_end_in_one_state() {
    for seed in seeds() {
        check_seed(seed);
    }
}

fn check_seed(seed: u64) {
    let states = run(seed);
    let first = &states[0];
    for (name, s) in NODES.iter().zip(&states) {
        assert_eq!(
            s.full_digest(),
            first.full_digest(),
            "seed {seed}: {name} differs"
        );
    }
    assert!(first.converged());
    assert!(first.pending().is_none());
    let status = |n: &str| first.member(&id(n)).map(|m| m.status);
    assert_eq!(status("n2"), Some(Status::Removed));
    for n in ["n1", "n3", "n4", "n5"] {
        assert_eq!(status(n), Some(Status::Valid), "{n}");
        assert!(first.ring().member(&id(n)).is_some(), "{n}");
    }
    assert!(first.ring().member(&id("n2")).is_none());
    // Same seed, same history.
    let again = run(seed);
    assert_eq!(again[0].full_digest(), first.full_digest());
}
