//! Partition transfer (paper 4.9): moving a partition's objects to a node that is about to own it,
//! and dropping them from a node that no longer does.
//!
//! The sender pages through its copy of the partition in key order and sends bounded batches,
//! objects and tombstones alike (deletes must move like values, or they come back). The receiver
//! merges each batch into its storage durably before it acknowledges, and the sender then
//! persists a cursor (the last acknowledged key) in its engine's metadata, so a transfer stopped
//! by a crash, a network partition or a cancel resumes after that key instead of from the start.
//! Writes that land behind the cursor meanwhile reach the receiver through dual writes (the
//! caller installs the next ring with [`Coordinator::set_next_ring`] before it starts a
//! transfer). After the stream, a verification pass pages through the sender's copy once more
//! and asks the receiver which keys it does not hold at least as new (by vector clock); those
//! are sent again, so a receiver that lost data after acknowledging it, or a write that has not
//! reached it yet, is repaired rather than restarted. A final sync then answers what the receiver
//! durably holds, and the cursor is cleared.
//!
//! Dropping after the ownership switch removes each object only if it is unchanged since it was
//! read, so a write that arrived meanwhile (a late replica write, a hint) is kept.
//!
//! When a transfer runs and when a partition may be dropped is decided elsewhere (membership);
//! this module only provides the mechanics and refuses drops that would lose a replica.

use std::collections::BTreeSet;

use dynamo_ring::{NodeId, PartitionId};
use dynamo_storage::{Durability, Entry, ObjectKey, VersionedObject, is_deleted};
use dynamo_versioning::VectorClock;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::coordinator::Coordinator;
use crate::error::{Error, Result};
use crate::replicas::Replicas;
use crate::transfer_state::{
    Cursor, PartitionSummary, Registration, TransferOptions, TransferReport, TransferStatus,
    cursor_name,
};

/// Objects scanned per page when dropping a partition.
const DROP_PAGE: usize = 512;

/// Conditional removals run concurrently when dropping, so the engine's group commit can put
/// them in one transaction instead of one fsync each.
const DROP_PARALLELISM: usize = 16;

/// What [`Coordinator::drop_partition`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropReport {
    /// Objects removed.
    pub removed: u64,
    /// Objects kept because they changed after they were read.
    pub kept_changed: u64,
}

/// One admitted transfer: what it sends where, how, and how to stop it.
struct Job<'a> {
    partition: PartitionId,
    to: &'a NodeId,
    options: &'a TransferOptions,
    cancel: &'a tokio_util::sync::CancellationToken,
    registration: &'a Registration,
}

/// Where a running transfer stands.
#[derive(Default)]
struct Progress {
    /// The ring epoch it serves (recorded in the cursor).
    epoch: u64,
    /// The last acknowledged key.
    after: Option<ObjectKey>,
    /// Objects and payload bytes acknowledged over every run.
    keys_total: u64,
    bytes_total: u64,
    /// Objects, payload bytes and batches acknowledged in this run.
    keys_sent: u64,
    bytes_sent: u64,
    batches: u64,
}

/// Payload bytes of an object for progress and batch sizing: bucket, key, and every sibling's
/// value and metadata (not the wire encoding, which adds clocks and framing).
pub(crate) fn entry_bytes(key: &ObjectKey, object: &VersionedObject) -> u64 {
    let siblings: usize = object.siblings().iter().map(|s| s.value.size()).sum();
    u64::try_from(key.bucket.len() + key.key.len() + siblings).unwrap_or(u64::MAX)
}

/// Cuts a page into batches of at most `max_bytes` payload bytes (an object larger than that
/// travels alone).
fn batches(page: Vec<Entry>, max_bytes: usize) -> Vec<(Vec<Entry>, u64)> {
    let max = u64::try_from(max_bytes).unwrap_or(u64::MAX);
    let mut out: Vec<(Vec<Entry>, u64)> = Vec::new();
    for entry in page {
        let size = entry_bytes(&entry.0, &entry.1);
        match out.last_mut() {
            Some((batch, bytes)) if *bytes + size <= max => {
                batch.push(entry);
                *bytes += size;
            }
            _ => out.push((vec![entry], size)),
        }
    }
    out
}

impl<R: Replicas> Coordinator<R> {
    /// Sends this node's copy of `partition` to `to` (its next owner) and returns once `to`
    /// confirmed holding it. Waits for a permit of the node's transfer limit first. Resumes
    /// after the last acknowledged key if an earlier run for the same epoch was interrupted.
    ///
    /// Errors leave the cursor in place (call again to resume); [`Error::Cancelled`] when
    /// `options.cancel` or [`Coordinator::cancel_transfer`] stopped it. Refused if the same
    /// partition is already being sent to `to`.
    pub async fn transfer_partition(
        &self,
        partition: PartitionId,
        to: NodeId,
        options: TransferOptions,
    ) -> Result<TransferReport> {
        if to == self.inner.me {
            return Err(Error::InvalidRequest(
                "a node cannot transfer a partition to itself".into(),
            ));
        }
        self.check_partition(partition)?;
        if options.batch_keys == 0 || options.batch_bytes == 0 {
            return Err(Error::InvalidRequest(
                "transfer batches must allow at least one object and one byte".into(),
            ));
        }
        let cancel = options.cancel.child_token();
        let registration =
            self.inner
                .transfers
                .register(partition, &to, options.expected_keys, cancel.clone())?;
        let _permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(cancelled(partition, &to)),
            permit = self.inner.limiter.acquire() => permit,
        };
        self.inner.metrics.transfers_active.inc();
        let job = Job {
            partition,
            to: &to,
            options: &options,
            cancel: &cancel,
            registration: &registration,
        };
        let result = self.run_transfer(&job).await;
        self.inner.metrics.transfers_active.dec();
        match &result {
            Ok(report) => {
                self.inner.metrics.transfers_completed.inc();
                tracing::info!(partition = partition.0, %to, keys = report.keys_total, resumed = report.resumed, "partition transfer complete");
            }
            Err(e) => {
                tracing::info!(partition = partition.0, %to, error = %e, "partition transfer stopped");
            }
        }
        result
    }

    /// The transfer itself, once registered and admitted.
    async fn run_transfer(&self, job: &Job<'_>) -> Result<TransferReport> {
        let epoch = job.options.epoch.unwrap_or_else(|| {
            self.next_ring()
                .map_or_else(|| self.ring().epoch(), |r| r.epoch())
        });
        let cursor = self.load_cursor(job.partition, job.to, epoch).await?;
        let resumed = cursor.is_some();
        let mut progress = Progress {
            epoch,
            ..Progress::default()
        };
        if let Some(c) = cursor {
            (progress.after, progress.keys_total, progress.bytes_total) =
                (Some(c.after), c.keys, c.bytes);
        }
        let started = self.inner.clock.now_ms();
        job.registration
            .start(started, progress.keys_total, progress.bytes_total, resumed);
        self.stream_partition(job, &mut progress).await?;
        job.registration.syncing();
        let verify_started = self.inner.clock.now_ms();
        let resent = self.verify_partition(job).await?;
        let receiver = self.final_sync(job).await?;
        Ok(TransferReport {
            partition: job.partition,
            to: job.to.clone(),
            resumed,
            keys_sent: progress.keys_sent,
            bytes_sent: progress.bytes_sent,
            keys_total: progress.keys_total,
            bytes_total: progress.bytes_total,
            batches: progress.batches,
            resent,
            receiver,
            elapsed_ms: self.inner.clock.now_ms().saturating_sub(started),
            verify_ms: self.inner.clock.now_ms().saturating_sub(verify_started),
        })
    }

    /// Sends every page of the partition after `progress.after`, one acknowledged batch at a
    /// time. The cursor past each acknowledged batch is persisted while the next batch is in
    /// flight (an fsync off the critical path); a crash in between resends one batch.
    async fn stream_partition(&self, job: &Job<'_>, progress: &mut Progress) -> Result<()> {
        let partition = job.partition;
        let mut unsaved: Option<Vec<u8>> = None;
        loop {
            let from = progress.after.clone();
            let limit = job.options.batch_keys;
            let page = self
                .blocking(move |engine| engine.scan_partition(partition, from.as_ref(), limit))
                .await?;
            let exhausted = page.len() < limit;
            for (batch, bytes) in batches(page, job.options.batch_bytes) {
                unsaved = self
                    .send_batch(job, batch, bytes, progress, unsaved.take())
                    .await?;
            }
            if exhausted {
                if let Some(cursor) = unsaved {
                    self.store_cursor(partition, job.to, cursor).await?;
                }
                return Ok(());
            }
        }
    }

    /// Sends one batch while persisting `unsaved` (the cursor past the previous acknowledged
    /// batch), waits for both, and returns the cursor past this batch, still to be persisted.
    async fn send_batch(
        &self,
        job: &Job<'_>,
        batch: Vec<Entry>,
        bytes: u64,
        progress: &mut Progress,
        unsaved: Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>> {
        let (partition, to) = (job.partition, job.to);
        let keys = batch.len() as u64;
        let Some(last) = batch.last().map(|(k, _)| k.clone()) else {
            return Ok(unsaved);
        };
        let send = self
            .inner
            .replicas
            .transfer_batch(to, partition, batch, job.options.timeout);
        let send = async {
            tokio::select! {
                biased;
                _ = job.cancel.cancelled() => Err(cancelled(partition, to)),
                acked = send => acked,
            }
        };
        let save = async {
            match unsaved {
                Some(cursor) => self.store_cursor(partition, to, cursor).await,
                None => Ok(()),
            }
        };
        let (acked, saved) = tokio::join!(send, save);
        if !matches!(acked, Err(Error::Cancelled(_))) {
            self.observe_peer(to, &acked);
        }
        saved?;
        acked?;
        job.registration.sent(keys, bytes);
        self.inner.metrics.transfer_keys_sent.inc_by(keys);
        self.inner.metrics.transfer_bytes_sent.inc_by(bytes);
        progress.keys_total += keys;
        progress.bytes_total += bytes;
        progress.keys_sent += keys;
        progress.bytes_sent += bytes;
        progress.batches += 1;
        progress.after = Some(last.clone());
        let cursor = Cursor {
            epoch: progress.epoch,
            after: last,
            keys: progress.keys_total,
            bytes: progress.bytes_total,
        };
        Ok(Some(cursor.encode()))
    }

    /// Checks, page by page, that the receiver holds every object of the partition at least as
    /// new as this node does now, and sends again whatever it lacks (it lost data since it
    /// acknowledged it, or a write reached this node but not yet the receiver). Returns how many
    /// objects were sent again.
    async fn verify_partition(&self, job: &Job<'_>) -> Result<u64> {
        let (partition, to) = (job.partition, job.to);
        let mut after: Option<ObjectKey> = None;
        let mut resent = 0;
        loop {
            let from = after.clone();
            let limit = job.options.batch_keys;
            let page = self
                .blocking(move |engine| engine.scan_partition(partition, from.as_ref(), limit))
                .await?;
            let exhausted = page.len() < limit;
            after = page.last().map(|(k, _)| k.clone());
            let clocks = page
                .iter()
                .map(|(k, o)| (k.clone(), o.clock().clone()))
                .collect();
            let verify =
                self.inner
                    .replicas
                    .transfer_verify(to, partition, clocks, job.options.timeout);
            let missing = tokio::select! {
                biased;
                _ = job.cancel.cancelled() => return Err(cancelled(partition, to)),
                missing = verify => missing,
            };
            self.observe_peer(to, &missing);
            let missing: BTreeSet<ObjectKey> = missing?.into_iter().collect();
            if !missing.is_empty() {
                let lacking: Vec<Entry> = page
                    .into_iter()
                    .filter(|(k, _)| missing.contains(k))
                    .collect();
                tracing::info!(partition = partition.0, %to, lacking = lacking.len(), "the receiver lacks objects it was sent or missed; sending them again");
                for (batch, _) in batches(lacking, job.options.batch_bytes) {
                    resent += batch.len() as u64;
                    self.resend(job, batch).await?;
                }
            }
            if exhausted {
                return Ok(resent);
            }
        }
    }

    /// Sends a batch found missing by verification (no cursor: verification always runs whole).
    async fn resend(&self, job: &Job<'_>, batch: Vec<Entry>) -> Result<()> {
        let (partition, to) = (job.partition, job.to);
        let send = self
            .inner
            .replicas
            .transfer_batch(to, partition, batch, job.options.timeout);
        let acked = tokio::select! {
            biased;
            _ = job.cancel.cancelled() => return Err(cancelled(partition, to)),
            acked = send => acked,
        };
        self.observe_peer(to, &acked);
        acked.map(|_| ())
    }

    /// The final sync: the receiver answers what it durably holds of the partition, and the
    /// cursor is cleared (the transfer is complete).
    async fn final_sync(&self, job: &Job<'_>) -> Result<PartitionSummary> {
        let (partition, to) = (job.partition, job.to);
        let sync = self
            .inner
            .replicas
            .transfer_sync(to, partition, job.options.timeout);
        let receiver = tokio::select! {
            biased;
            _ = job.cancel.cancelled() => return Err(cancelled(partition, to)),
            summary = sync => summary,
        };
        self.observe_peer(to, &receiver);
        let receiver = receiver?;
        self.store_cursor(partition, to, Vec::new()).await?;
        Ok(receiver)
    }

    /// The cursor an interrupted transfer of `partition` to `to` for `epoch` left, if any. A
    /// cursor of another epoch, or one that does not decode, is ignored (the transfer starts
    /// over, which is always safe: merges are idempotent).
    async fn load_cursor(
        &self,
        partition: PartitionId,
        to: &NodeId,
        epoch: u64,
    ) -> Result<Option<Cursor>> {
        let name = cursor_name(partition, to);
        let Some(bytes) = self.blocking(move |engine| engine.get_meta(&name)).await? else {
            return Ok(None);
        };
        match Cursor::decode(partition, &bytes) {
            Ok(Some(c)) if c.epoch == epoch => Ok(Some(c)),
            Ok(Some(c)) => {
                tracing::info!(partition = partition.0, %to, cursor_epoch = c.epoch, epoch, "ignoring the cursor of a transfer for another ring epoch");
                Ok(None)
            }
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::warn!(partition = partition.0, %to, error = %e, "unreadable transfer cursor; starting over");
                Ok(None)
            }
        }
    }

    /// Persists (durably) the cursor of `partition`'s transfer to `to`; empty clears it.
    async fn store_cursor(
        &self,
        partition: PartitionId,
        to: &NodeId,
        value: Vec<u8>,
    ) -> Result<()> {
        let name = cursor_name(partition, to);
        self.blocking(move |engine| engine.set_meta(&name, &value))
            .await
    }

    /// Forgets the cursor of an abandoned transfer (a plan that was cleared), so a later transfer
    /// of the same partition to the same node starts from the beginning. Refused while that
    /// transfer runs.
    pub async fn forget_transfer(&self, partition: PartitionId, to: &NodeId) -> Result<()> {
        self.check_partition(partition)?;
        if self
            .inner
            .transfers
            .statuses(&self.inner.me, 0)
            .iter()
            .any(|s| s.partition == partition && &s.to == to)
        {
            return Err(Error::InvalidRequest(format!(
                "partition {} is being sent to {to}; cancel it first",
                partition.0
            )));
        }
        self.store_cursor(partition, to, Vec::new()).await
    }

    /// Cancels the running transfer of `partition` to `to`; whether there was one. Its cursor
    /// stays, so transferring again resumes.
    pub fn cancel_transfer(&self, partition: PartitionId, to: &NodeId) -> bool {
        self.inner.transfers.cancel(partition, to)
    }

    /// Every transfer this node is sending or waiting to send, with progress, rate and ETA.
    pub fn transfers(&self) -> Vec<TransferStatus> {
        self.inner
            .transfers
            .statuses(&self.inner.me, self.inner.clock.now_ms())
    }

    /// How many transfers this node sends at once.
    pub fn transfer_limit(&self) -> usize {
        self.inner.limiter.limit()
    }

    /// Changes how many transfers this node sends at once; running transfers above a lowered
    /// limit finish, waiting ones start as permits free up. 0 pauses new transfers.
    pub fn set_transfer_limit(&self, limit: usize) -> Result<()> {
        self.inner.limiter.set_limit(limit)
    }

    /// The receiving side of a transfer batch: validates every entry (keys within limits and in
    /// `partition` under this node's ring), then merges each into local storage durably and
    /// answers how many objects were merged. An invalid batch is refused whole and changes
    /// nothing. Idempotent: a batch sent twice (a resend after a lost acknowledgement) stores
    /// the same objects.
    pub async fn replica_transfer_batch(
        &self,
        partition: PartitionId,
        entries: Vec<Entry>,
    ) -> Result<u64> {
        self.check_partition(partition)?;
        let ring = self.ring();
        let limits = self.inner.engine.limits();
        for (key, object) in &entries {
            self.check_key(&key.bucket, &key.key)?;
            if key.partition != partition
                || ring.partition_for_key(&key.bucket, &key.key) != partition
            {
                return Err(Error::InvalidRequest(format!(
                    "{key} does not belong to partition {}",
                    partition.0
                )));
            }
            for sibling in object.siblings() {
                if sibling.value.size() > limits.max_value_len {
                    return Err(Error::TooLarge(format!(
                        "{key}: a sibling of {} bytes is over the limit of {}",
                        sibling.value.size(),
                        limits.max_value_len
                    )));
                }
            }
        }
        let count = entries.len() as u64;
        // Submit every merge before waiting for any, without an fsync each, then make them all
        // durable with one flush: a few commits and one fsync per batch instead of one per
        // object.
        let mut pending = Vec::with_capacity(entries.len());
        for (key, incoming) in entries {
            let lww = self.bucket_props(&key.bucket).last_write_wins;
            let (tx, rx) = oneshot::channel();
            self.inner.engine.update_then(
                &key,
                Durability::None,
                Box::new(move |stored: Option<VersionedObject>| {
                    let mut merged = stored.unwrap_or_default();
                    merged.merge(&incoming);
                    if lww {
                        merged.resolve_lww();
                    }
                    Ok(merged)
                }),
                Box::new(move |outcome| {
                    let _ = tx.send(outcome);
                }),
            );
            pending.push(rx);
        }
        for rx in pending {
            match rx.await {
                Ok(outcome) => {
                    outcome?;
                }
                Err(_) => {
                    return Err(Error::Storage(
                        "the storage engine dropped a transfer merge".into(),
                    ));
                }
            }
        }
        self.blocking(|engine| engine.flush()).await?;
        self.inner.metrics.transfer_keys_received.inc_by(count);
        Ok(count)
    }

    /// The receiving side of a transfer's verification: of `clocks`, the keys this node does
    /// not hold at least as new (absent, or its clock does not descend the sender's). Reads
    /// only; keys outside `partition` are refused.
    pub async fn replica_transfer_verify(
        &self,
        partition: PartitionId,
        clocks: Vec<(ObjectKey, VectorClock)>,
    ) -> Result<Vec<ObjectKey>> {
        self.check_partition(partition)?;
        if let Some((key, _)) = clocks.iter().find(|(k, _)| k.partition != partition) {
            return Err(Error::InvalidRequest(format!(
                "{key} does not belong to partition {}",
                partition.0
            )));
        }
        self.blocking(move |engine| {
            let mut lacking = Vec::new();
            for (key, clock) in clocks {
                let held = engine
                    .get(&key)?
                    .is_some_and(|stored| stored.clock().descends(&clock));
                if !held {
                    lacking.push(key);
                }
            }
            Ok(lacking)
        })
        .await
    }

    /// The receiving side of the final sync: makes everything stored durable and answers what
    /// this node holds of `partition`. The sender calls it only after every batch was
    /// acknowledged, and batches are acknowledged only once durably merged.
    pub async fn replica_transfer_sync(&self, partition: PartitionId) -> Result<PartitionSummary> {
        self.check_partition(partition)?;
        self.blocking(move |engine| {
            engine.flush()?;
            let mut summary = PartitionSummary::default();
            let mut after: Option<ObjectKey> = None;
            loop {
                let page = engine.scan_partition(partition, after.as_ref(), DROP_PAGE)?;
                let done = page.len() < DROP_PAGE;
                for (key, object) in &page {
                    summary.objects += 1;
                    summary.tombstones += u64::from(is_deleted(object));
                    summary.bytes += entry_bytes(key, object);
                }
                after = page.last().map(|(k, _)| k.clone());
                if done {
                    return Ok(summary);
                }
            }
        })
        .await
    }

    /// Deletes this node's copy of `partition`, which it no longer replicates, each object only
    /// if unchanged since it was read (a write that arrived meanwhile is kept, and a later call
    /// removes it once it is settled).
    ///
    /// Refused (nothing removed) while the current or the next ring lists this node among the
    /// partition's primaries for the default n_val or any bucket's configured n_val (one bucket's
    /// larger N may still need the copy; the check is per partition, not per bucket), or while a
    /// transfer of the partition from this node is running. The caller must also know that every
    /// member has seen the ownership switch (membership's job).
    pub async fn drop_partition(&self, partition: PartitionId) -> Result<DropReport> {
        self.check_partition(partition)?;
        self.check_droppable(partition)?;
        let mut report = DropReport::default();
        let mut after: Option<ObjectKey> = None;
        loop {
            let from = after.clone();
            let page = self
                .blocking(move |engine| engine.scan_partition(partition, from.as_ref(), DROP_PAGE))
                .await?;
            let done = page.len() < DROP_PAGE;
            after = page.last().map(|(k, _)| k.clone());
            let (removed, kept) = self.remove_unchanged(page).await?;
            report.removed += removed;
            report.kept_changed += kept;
            if done {
                break;
            }
        }
        self.inner
            .metrics
            .transfer_objects_dropped
            .inc_by(report.removed);
        tracing::info!(
            partition = partition.0,
            removed = report.removed,
            kept = report.kept_changed,
            "dropped a partition this node no longer replicates"
        );
        Ok(report)
    }

    /// Why `partition` may not be dropped here, if it may not.
    fn check_droppable(&self, partition: PartitionId) -> Result<()> {
        if self.inner.transfers.is_sending(partition) {
            return Err(Error::InvalidRequest(format!(
                "partition {} is being transferred from this node",
                partition.0
            )));
        }
        let n_vals: BTreeSet<u8> = self.inner.buckets.n_vals();
        let rings =
            std::iter::once(("current", self.ring())).chain(self.next_ring().map(|r| ("next", r)));
        for (which, ring) in rings {
            for &n in &n_vals {
                if ring
                    .preference_list_for_partition(partition, usize::from(n))
                    .is_primary(&self.inner.me)
                {
                    return Err(Error::InvalidRequest(format!(
                        "this node replicates partition {} in the {which} ring (n_val {n}); refusing to drop it",
                        partition.0
                    )));
                }
            }
        }
        Ok(())
    }

    /// Removes each entry that is still exactly as read; returns (removed, kept).
    async fn remove_unchanged(&self, page: Vec<Entry>) -> Result<(u64, u64)> {
        let chunk = page.len().div_ceil(DROP_PARALLELISM).max(1);
        let mut tasks = Vec::new();
        let mut page = page;
        while !page.is_empty() {
            let rest = page.split_off(chunk.min(page.len()));
            let part = std::mem::replace(&mut page, rest);
            let this = self.clone();
            tasks.push(tokio::spawn(async move {
                this.blocking(move |engine| {
                    let mut removed = 0u64;
                    for (key, object) in &part {
                        removed += u64::from(engine.remove_if_unchanged(key, object)?);
                    }
                    Ok((removed, part.len() as u64 - removed))
                })
                .await
            }));
        }
        let (mut removed, mut kept) = (0, 0);
        for task in tasks {
            let (r, k) = task
                .await
                .map_err(|e| Error::Internal(format!("drop task failed: {e}")))??;
            removed += r;
            kept += k;
        }
        Ok((removed, kept))
    }

    /// Checks that `partition` exists in this node's ring.
    fn check_partition(&self, partition: PartitionId) -> Result<()> {
        let q = self.ring().q();
        if partition.0 >= q {
            return Err(Error::InvalidRequest(format!(
                "partition {} does not exist (the ring has {q})",
                partition.0
            )));
        }
        Ok(())
    }
}

/// The error of a cancelled transfer.
fn cancelled(partition: PartitionId, to: &NodeId) -> Error {
    Error::Cancelled(format!("transfer of partition {} to {to}", partition.0))
}

#[cfg(test)]
mod tests {
    use dynamo_storage::Content;
    use dynamo_versioning::{Actor, Context};

    use super::*;

    fn entry(i: usize, len: usize) -> Entry {
        let mut object = VersionedObject::new();
        object.put(
            Actor::new(1, 0),
            &Context::empty(),
            Content::new(vec![0u8; len]),
            0,
        );
        (
            ObjectKey::new(PartitionId(0), "b", format!("{i:03}")),
            object,
        )
    }

    #[test]
    fn batches_respect_the_byte_budget_and_keep_order() {
        let page: Vec<Entry> = (0..10).map(|i| entry(i, 100)).collect();
        // Each entry is 1 + 3 + 100 = 104 bytes: two fit in 250.
        let out = batches(page.clone(), 250);
        assert_eq!(out.len(), 5);
        assert!(out.iter().all(|(b, bytes)| b.len() == 2 && *bytes == 208));
        let flat: Vec<Entry> = out.into_iter().flat_map(|(b, _)| b).collect();
        assert_eq!(flat, page);
        // An object over the budget travels alone.
        let big = batches(vec![entry(0, 10), entry(1, 1000), entry(2, 10)], 100);
        assert_eq!(
            big.iter().map(|(b, _)| b.len()).collect::<Vec<_>>(),
            vec![1, 1, 1]
        );
    }
}
