//! Background workers of the failure handling (paper 4.6): the probe that marks unreachable peers
//! up again, and hinted handoff, which hands writes a fallback accepted back to the primary they
//! were meant for.
//!
//! Handoff reads hints in id order, merges each hint's object with the fallback's current copy of
//! the key (it may have taken newer writes since), and sends that to the owner with a durable
//! write. Only after the owner acknowledged it durably is the hint removed, so a crash of either
//! side at any point leaves the hint in place and delivery simply runs again (replica writes are
//! idempotent merges). Once a hint is delivered, a fallback that does not replicate the key itself
//! drops its own copy, unless a newer write reached it meanwhile or it replicates the key in the
//! current or the next ring.
//!
//! A hint whose owner no longer replicates the key (the ring changed while the hint waited: the
//! owner left, was removed or handed the partition on) goes to the key's current primaries
//! instead: the old owner has dropped, or will drop, the partition, and a write delivered there
//! would be a stray copy the new owners never see.

use dynamo_ring::NodeId;
use dynamo_storage::{Hint, VersionedObject};
use tokio_util::sync::CancellationToken;

use crate::api::ReplicaPut;
use crate::coordinator::Coordinator;
use crate::error::Result;
use crate::replicas::Replicas;

impl<R: Replicas> Coordinator<R> {
    /// Starts the probe and handoff workers; they stop when `shutdown` is cancelled.
    pub fn spawn_workers(&self, shutdown: CancellationToken) {
        let probe = self.clone();
        let stop = shutdown.clone();
        self.spawn(async move {
            let mut tick = tokio::time::interval(probe.inner.options.probe_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => probe.probe_down_peers().await,
                }
            }
        });
        let handoff = self.clone();
        self.spawn(async move {
            let mut tick = tokio::time::interval(handoff.inner.options.handoff_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = handoff.hand_off_hints().await {
                            tracing::warn!(error = %e, "hinted handoff pass failed");
                        }
                    }
                }
            }
        });
    }

    /// Pings every peer marked down; those that answer are marked up.
    pub async fn probe_down_peers(&self) {
        let timeout = self.inner.options.probe_interval;
        for node in self.inner.health.down() {
            let result = self.inner.replicas.ping(&node, timeout).await;
            self.observe_peer(&node, &result);
        }
    }

    /// One handoff pass: for every member believed up, delivers up to `handoff_batch` of the
    /// hints held for it (so hints for a node that is still down never hold up the others).
    /// Returns how many were delivered.
    pub async fn hand_off_hints(&self) -> Result<usize> {
        let batch = self.inner.options.handoff_batch;
        // Members of the next ring too: a joining node receives hints for the writes it missed
        // as a next owner before it is a member of the current ring.
        let next = self.next_ring();
        let owners: std::collections::BTreeSet<NodeId> = self
            .ring()
            .members()
            .iter()
            .chain(next.iter().flat_map(|r| r.members()))
            .map(|m| m.id.clone())
            .filter(|id| *id != self.inner.me && self.inner.health.is_up(id))
            .collect();
        let mut delivered = 0;
        // Hints for nodes that are in neither ring any more: redirected to the key's primaries.
        let departed: Vec<Hint> = self
            .blocking(move |engine| engine.hints(None, None, batch))
            .await?
            .into_iter()
            .filter(|h| {
                h.owner != self.inner.me
                    && self.ring().member(&h.owner).is_none()
                    && next.as_ref().is_none_or(|r| r.member(&h.owner).is_none())
            })
            .collect();
        for hint in departed {
            match self.deliver(&hint).await {
                Ok(true) => delivered += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(owner = %hint.owner, error = %e, "hint not redirected; will retry");
                    break;
                }
            }
        }
        for owner in owners {
            let for_owner = owner.clone();
            let hints = self
                .blocking(move |engine| engine.hints(Some(&for_owner), None, batch))
                .await?;
            for hint in hints {
                match self.deliver(&hint).await {
                    Ok(true) => delivered += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::debug!(%owner, error = %e, "hint not delivered; will retry");
                        break;
                    }
                }
            }
        }
        let pending = self.blocking(|engine| engine.hint_count()).await?;
        self.inner
            .metrics
            .hints_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        Ok(delivered)
    }

    /// Delivers one hint; `Ok(true)` when the owner stored it durably and the hint was removed.
    async fn deliver(&self, hint: &Hint) -> Result<bool> {
        let current: Option<VersionedObject> = self.read_local(&hint.key)?;
        let mut object = hint.object.clone();
        if let Some(current) = &current {
            object.merge(current);
        }
        let props = self.bucket_props(&hint.key.bucket);
        let lww = props.last_write_wins;
        let put = ReplicaPut {
            durable: true,
            ..ReplicaPut::new(hint.key.clone(), object, lww)
        };
        let timeout = self.inner.options.default_timeout;
        for target in self.hint_targets(hint, usize::from(props.n_val)) {
            let result = self.inner.replicas.put(&target, put.clone(), timeout).await;
            self.observe_peer(&target, &result);
            if !result? {
                tracing::warn!(owner = %target, "owner did not store the hint durably; keeping it");
                return Ok(false);
            }
        }
        let id = hint.id;
        self.blocking(move |engine| engine.remove_hint(id)).await?;
        self.inner.metrics.hints_delivered.inc();
        // A fallback's own copy has done its job once handed off. Drop it unless this node
        // replicates the key itself or a newer write landed here meanwhile (every write a
        // fallback accepts carries its own hint, so other pending hints still deliver theirs).
        let replicates = |ring: &dynamo_ring::Ring| {
            ring.preference_list_for_partition(hint.key.partition, usize::from(props.n_val))
                .is_primary(&self.inner.me)
        };
        let primary = replicates(&self.ring()) || self.next_ring().is_some_and(|r| replicates(&r));
        if let (false, Some(current)) = (primary, current) {
            let key = hint.key.clone();
            self.blocking(move |engine| engine.remove_if_unchanged(&key, &current))
                .await?;
        }
        Ok(true)
    }

    /// Where a hint goes: its owner while the owner replicates the key in the current or the
    /// next ring, else every current primary of the key but this node.
    fn hint_targets(&self, hint: &Hint, n: usize) -> Vec<NodeId> {
        let ring = self.ring();
        let list = ring.preference_list_for_partition(hint.key.partition, n);
        let still_owner = list.is_primary(&hint.owner)
            || self.next_ring().is_some_and(|r| {
                r.preference_list_for_partition(hint.key.partition, n)
                    .is_primary(&hint.owner)
            });
        if still_owner {
            return vec![hint.owner.clone()];
        }
        list.primaries()
            .iter()
            .filter(|id| **id != self.inner.me)
            .cloned()
            .collect()
    }
}
