//! The driver over an in-process fake network (no sockets): how many gossip rounds a change
//! needs to reach every member, for 3, 10, 32 and 128 nodes (printed; run with `--nocapture`),
//! and a join carried out end to end through the admin commands with a fake partition mover.

use std::sync::Arc;

use dynamo_membership::memnet::MemCluster;
use dynamo_membership::{
    AdminCommand, AdminReply, Error, PartitionMover, ProgressReport, Result, Status, TransferStats,
};
use dynamo_ring::{NodeId, PartitionId, Ring, Transfer};
use futures::future::BoxFuture;
use parking_lot::Mutex;

/// A mover that "copies" at once and records what it was asked.
#[derive(Default)]
struct FakeMover {
    sent: Mutex<Vec<Transfer>>,
    released: Mutex<Vec<PartitionId>>,
}

impl PartitionMover for FakeMover {
    fn transfer(
        &self,
        transfer: Transfer,
        _: Ring,
        report: ProgressReport,
    ) -> BoxFuture<'static, Result<TransferStats>> {
        self.sent.lock().push(transfer);
        Box::pin(async move {
            report(10, 1000);
            Ok(TransferStats {
                keys: 10,
                bytes: 1000,
            })
        })
    }

    fn release(&self, partitions: Vec<PartitionId>, _: Ring) -> BoxFuture<'static, Result<()>> {
        self.released.lock().extend(partitions);
        Box::pin(async { Ok(()) })
    }
}

fn id(i: usize) -> NodeId {
    MemCluster::id(i)
}

fn addr(i: usize) -> String {
    MemCluster::address(i)
}

#[tokio::test]
async fn gossip_reaches_every_member_in_few_rounds() {
    println!("nodes  seeds  rounds-until-all-have-it  rounds-until-all-know-it");
    for size in [3, 10, 32] {
        for seeds in [vec![], vec![0]] {
            let cluster = MemCluster::new(size, 0, &seeds, 1, |_| None).unwrap();
            let (have, know) = cluster.spread(100).await;
            let (have, know) = (have.unwrap(), know.unwrap());
            println!("{size:>5}  {:>5}  {have:>24}  {know:>24}", seeds.len());
            // Epidemic spread: logarithmic in the cluster size, with a generous margin.
            let bound = 4 * (usize::BITS - size.leading_zeros()) as usize + 4;
            assert!(have <= bound, "{size} nodes took {have} rounds");
        }
    }
}

#[tokio::test]
async fn an_unreachable_member_is_skipped_but_never_removed() {
    let cluster = MemCluster::new(5, 0, &[0], 2, |_| None).unwrap();
    cluster.net.set_down(&addr(2), true);
    let (have, know) = cluster.spread(30).await;
    // The others get the change; nobody can know n002 saw it, and nobody marks it down.
    assert!(have.is_none());
    assert!(know.is_none());
    for (i, n) in cluster.nodes.iter().enumerate() {
        if i != 2 {
            assert!(n.state().buckets().contains_key(b"spread".as_slice()));
            assert_eq!(n.state().member(&id(2)).unwrap().status, Status::Valid);
            assert!(!n.state().converged());
        }
    }
    cluster.net.set_down(&addr(2), false);
    for r in 0..20 {
        cluster.round(r).await;
    }
    assert!(cluster.nodes.iter().all(|n| n.state().converged()));
}

#[tokio::test]
async fn a_join_through_admin_commands_installs_the_plan_that_was_shown() {
    let movers: Vec<Arc<FakeMover>> = (0..4).map(|_| Arc::default()).collect();
    let cluster = MemCluster::new(3, 1, &[0], 1, |i| {
        Some(Arc::clone(&movers[i]) as Arc<dyn PartitionMover>)
    })
    .unwrap();
    let joiner = &cluster.nodes[3];
    let reply = joiner
        .run_admin(AdminCommand::Join { seed: addr(0) })
        .await
        .unwrap();
    assert!(matches!(reply, AdminReply::Done(_)));
    // The seed knows at once; a commit before every member saw the join is refused.
    let admin = &cluster.nodes[0];
    let AdminReply::Plan(plan) = admin.run_admin(AdminCommand::Plan).await.unwrap() else {
        panic!("plan expected")
    };
    let early = admin.run_admin(AdminCommand::Commit { plan: None }).await;
    assert!(matches!(early, Err(Error::NotConverged(_))), "{early:?}");
    for r in 0..20 {
        cluster.round(r).await;
    }
    admin
        .run_admin(AdminCommand::Commit { plan: None })
        .await
        .unwrap();
    let limit = admin
        .run_admin(AdminCommand::TransferLimit { limit: 1 })
        .await
        .unwrap();
    assert!(
        matches!(limit, AdminReply::Done(ref m) if m.contains("at most 1")),
        "{limit:?}"
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    // Senders run their transfers from the loop; poll rounds until the ring is installed.
    let mut installed = false;
    for r in 0..100 {
        cluster.round(r).await;
        for n in &cluster.nodes {
            n.drive_once(&shutdown).await;
        }
        // Let the transfer tasks the loop spawned run.
        tokio::task::yield_now().await;
        if cluster
            .nodes
            .iter()
            .all(|n| n.state().ring().epoch() == plan.next_epoch && n.state().converged())
        {
            installed = true;
            break;
        }
    }
    assert!(installed, "the join was never installed");
    let state = cluster.nodes[0].state();
    assert_eq!(state.member(&id(3)).unwrap().status, Status::Valid);
    let AdminReply::Members(members) = admin.run_admin(AdminCommand::Members).await.unwrap() else {
        panic!("members expected")
    };
    let owned: usize = members.iter().map(|m| m.partitions).sum();
    assert_eq!(owned, 64);
    let joined = members.iter().find(|m| m.id == "n003").unwrap();
    assert_eq!(joined.partitions, 16);
    // Every transfer of the plan was run by its sender, and the old owners released data.
    let sent: usize = movers.iter().map(|m| m.sent.lock().len()).sum();
    assert_eq!(sent, plan.transfers);
    for n in &cluster.nodes {
        n.drive_once(&shutdown).await;
    }
    let released: usize = movers.iter().map(|m| m.released.lock().len()).sum();
    assert!(released > 0);
    // Nobody releases a partition it replicates (the joiner releases at most what it could only
    // hold as a fallback).
    for (i, mover) in movers.iter().enumerate() {
        let kept = state.ring().partitions_replicated_by(&id(i), 3);
        assert!(
            mover.released.lock().iter().all(|p| !kept.contains(p)),
            "{}",
            id(i)
        );
    }
}

/// The loop starts the next transfer as soon as one ends, not at the next gossip tick: in
/// simulated time, 48 copies with at most 2 at once per sender are installed in a few ticks
/// (found on real processes, where a join of 75 small copies took a second per two copies).
#[tokio::test(start_paused = true)]
async fn the_next_transfer_starts_when_one_ends_not_at_the_next_tick() {
    let movers: Vec<Arc<FakeMover>> = (0..4).map(|_| Arc::default()).collect();
    let cluster = MemCluster::new(3, 1, &[0], 1, |i| {
        Some(Arc::clone(&movers[i]) as Arc<dyn PartitionMover>)
    })
    .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    for n in &cluster.nodes {
        n.spawn(shutdown.clone());
    }
    let admin = &cluster.nodes[0];
    cluster.nodes[3]
        .run_admin(AdminCommand::Join { seed: addr(0) })
        .await
        .unwrap();
    let AdminReply::Plan(plan) = admin.run_admin(AdminCommand::Plan).await.unwrap() else {
        panic!("plan expected")
    };
    assert_eq!(plan.transfers, 48);
    let tick = dynamo_membership::GOSSIP_INTERVAL;
    while admin
        .run_admin(AdminCommand::Commit { plan: None })
        .await
        .is_err()
    {
        tokio::time::sleep(tick).await;
    }
    let committed = tokio::time::Instant::now();
    while !cluster
        .nodes
        .iter()
        .all(|n| n.state().ring().epoch() == plan.next_epoch)
    {
        assert!(committed.elapsed() < 60 * tick, "never installed");
        tokio::time::sleep(tick / 10).await;
    }
    // 16 copies per sender, 2 at a time: 8 ticks if each waited for a tick.
    let ticks = committed.elapsed().as_secs_f64() / tick.as_secs_f64();
    assert!(ticks < 6.0, "installed after {ticks:.1} gossip ticks");
    let sent: usize = movers.iter().map(|m| m.sent.lock().len()).sum();
    assert_eq!(sent, plan.transfers);
    shutdown.cancel();
    for n in &cluster.nodes {
        n.wait().await;
    }
}
