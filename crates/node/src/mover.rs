//! The node's [`PartitionMover`]: membership decides when a partition moves and when a copy may
//! be dropped; the coordinator's transfer functions do the moving.
//!
//! The mover is handed to membership before the coordinator exists (the coordinator is built
//! from the ring that membership loads), so it holds the coordinator in a cell filled once the
//! node has built it. A transfer asked for before that fails and is retried by membership.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dynamo_coordinator::{Coordinator, Replicas, TRANSFER_TIMEOUT, TransferOptions};
use dynamo_membership::{Error, PartitionMover, ProgressReport, Result, TransferStats};
use dynamo_ring::{PartitionId, Ring, Transfer};
use dynamo_rpc::{PeerPool, TcpConnector};
use futures::future::BoxFuture;

/// How often a running transfer's progress is copied into the membership state (and from there
/// to `dynamo admin transfers` on every node).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Runs membership's transfers and releases with this node's coordinator. Generic over the
/// coordinator's replica transport (the simulation runs it over simulated TCP).
pub struct CoordinatorMover<R = PeerPool<TcpConnector>> {
    coordinator: OnceLock<Coordinator<R>>,
    timeout: Duration,
}

impl<R> Default for CoordinatorMover<R> {
    fn default() -> Self {
        CoordinatorMover {
            coordinator: OnceLock::new(),
            timeout: TRANSFER_TIMEOUT,
        }
    }
}

impl<R: Replicas> CoordinatorMover<R> {
    /// A mover whose coordinator is set later with [`CoordinatorMover::attach`].
    pub fn new() -> Arc<CoordinatorMover<R>> {
        Arc::new(CoordinatorMover::default())
    }

    /// A mover whose transfer requests time out after `timeout` (the simulation's are short).
    pub fn with_timeout(timeout: Duration) -> Arc<CoordinatorMover<R>> {
        Arc::new(CoordinatorMover {
            timeout,
            ..CoordinatorMover::default()
        })
    }

    /// Gives the mover the node's coordinator (once; later calls are ignored).
    pub fn attach(&self, coordinator: Coordinator<R>) {
        let _ = self.coordinator.set(coordinator);
    }

    fn coordinator(&self) -> Result<Coordinator<R>> {
        self.coordinator
            .get()
            .cloned()
            .ok_or_else(|| Error::Transfer("the node is still starting".into()))
    }
}

impl<R: Replicas> PartitionMover for CoordinatorMover<R> {
    fn transfer(
        &self,
        transfer: Transfer,
        next: Ring,
        report: ProgressReport,
    ) -> BoxFuture<'static, Result<TransferStats>> {
        let coordinator = self.coordinator();
        let timeout = self.timeout;
        Box::pin(async move {
            let coordinator = coordinator?;
            // Dual writes must reach the next owner before the stream starts (the follower
            // installs the next ring on every node; this makes sure of it on the sender).
            coordinator
                .set_next_ring(Some(next.clone()))
                .map_err(|e| Error::Transfer(e.to_string()))?;
            let options = TransferOptions {
                epoch: Some(next.epoch()),
                timeout,
                ..TransferOptions::default()
            };
            let run =
                coordinator.transfer_partition(transfer.partition, transfer.to.clone(), options);
            tokio::pin!(run);
            let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
            let outcome = loop {
                tokio::select! {
                    biased;
                    outcome = &mut run => break outcome,
                    _ = tick.tick() => {
                        if let Some(s) = coordinator.transfers().into_iter().find(|s| {
                            s.partition == transfer.partition && s.to == transfer.to
                        }) {
                            report(s.keys_sent, s.bytes_sent);
                        }
                    }
                }
            };
            let done = outcome.map_err(|e| Error::Transfer(e.to_string()))?;
            Ok(TransferStats {
                keys: done.keys_total,
                bytes: done.bytes_total,
            })
        })
    }

    fn release(&self, partitions: Vec<PartitionId>, _ring: Ring) -> BoxFuture<'static, Result<()>> {
        let coordinator = self.coordinator();
        Box::pin(async move {
            let coordinator = coordinator?;
            // The coordinator refuses to drop a partition it still replicates under its own
            // (current or next) ring, whichever ring membership passed.
            for p in partitions {
                let dropped = coordinator
                    .drop_partition(p)
                    .await
                    .map_err(|e| Error::Transfer(format!("partition {}: {e}", p.0)))?;
                tracing::info!(
                    partition = p.0,
                    removed = dropped.removed,
                    kept = dropped.kept_changed,
                    "released a partition"
                );
            }
            Ok(())
        })
    }
}
