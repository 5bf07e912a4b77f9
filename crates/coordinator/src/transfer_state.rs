//! Bookkeeping of partition transfers (paper 4.9, ownership handoff): the options and reports of
//! one transfer, the persisted resume cursor, the registry of running transfers that
//! `dynamo admin transfers` reads, and the per-node concurrency limit. No I/O here: the driver in
//! `transfer.rs` reads and writes the cursor through the engine's metadata.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dynamo_ring::{NodeId, PartitionId};
use dynamo_storage::ObjectKey;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// Objects read from storage per scan page and sent at most per batch. Large enough that the
/// per-batch round trip and cursor fsync are amortised, small enough that a batch holds little
/// memory and an interrupted batch costs little to resend.
pub const TRANSFER_BATCH_KEYS: usize = 512;

/// Payload bytes per batch at most (a single larger object still goes alone). Far below the rpc
/// frame limit, and a few milliseconds of a LAN link, so a cancel takes effect quickly.
pub const TRANSFER_BATCH_BYTES: usize = 4 << 20;

/// Transfers one node sends at the same time unless changed at run time (Riak's
/// `handoff_concurrency` default is 2: enough to use the disk and the link, little enough that
/// foreground requests keep their latency).
pub const DEFAULT_TRANSFER_LIMIT: usize = 2;

/// The highest concurrency limit accepted; more would only thrash the disk.
pub const MAX_TRANSFER_LIMIT: usize = 64;

/// How long one batch (a durable merge of up to [`TRANSFER_BATCH_BYTES`] on the receiver) or the
/// final sync may take before the transfer stops and can be resumed.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);

/// Version byte of the persisted cursor encoding.
pub(crate) const CURSOR_VERSION: u8 = 1;

/// How one partition transfer runs.
#[derive(Clone, Debug)]
pub struct TransferOptions {
    /// Objects per scan page and per batch at most.
    pub batch_keys: usize,
    /// Payload bytes per batch at most.
    pub batch_bytes: usize,
    /// Time allowed for each batch and for the final sync.
    pub timeout: Duration,
    /// The ring epoch this transfer serves (a cursor left by a transfer for another epoch is not
    /// resumed). `None`: the next ring's epoch, or the current ring's if there is no next ring.
    pub epoch: Option<u64>,
    /// Objects expected in the partition, if the caller knows (a plan's estimate); gives an ETA.
    pub expected_keys: Option<u64>,
    /// Cancels the transfer; the cursor stays, so a later call resumes.
    pub cancel: CancellationToken,
}

impl Default for TransferOptions {
    fn default() -> Self {
        TransferOptions {
            batch_keys: TRANSFER_BATCH_KEYS,
            batch_bytes: TRANSFER_BATCH_BYTES,
            timeout: TRANSFER_TIMEOUT,
            epoch: None,
            expected_keys: None,
            cancel: CancellationToken::new(),
        }
    }
}

/// What a receiver holds of a partition, answered by the final sync once every batch it
/// acknowledged is durably merged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSummary {
    /// Objects stored for the partition, tombstones included.
    pub objects: u64,
    /// Of which every sibling is a tombstone.
    pub tombstones: u64,
    /// Payload bytes (bucket, key, sibling values and metadata).
    pub bytes: u64,
}

/// The outcome of a completed transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferReport {
    /// The partition sent.
    pub partition: PartitionId,
    /// The node it was sent to.
    pub to: NodeId,
    /// Whether this run continued from a cursor left by an interrupted one.
    pub resumed: bool,
    /// Objects sent by this run.
    pub keys_sent: u64,
    /// Payload bytes sent by this run.
    pub bytes_sent: u64,
    /// Objects sent over every run of this transfer (earlier interrupted runs included).
    pub keys_total: u64,
    /// Payload bytes sent over every run.
    pub bytes_total: u64,
    /// Batches sent by this run's stream.
    pub batches: u64,
    /// Objects sent again because verification found the receiver lacking them.
    pub resent: u64,
    /// What the receiver confirmed holding in the final sync.
    pub receiver: PartitionSummary,
    /// Milliseconds this run took (injected clock), waiting for a permit excluded.
    pub elapsed_ms: u64,
    /// Of which verification and the final sync took this many.
    pub verify_ms: u64,
}

/// Where a registered transfer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferPhase {
    /// Waiting for a permit of the concurrency limit.
    Waiting,
    /// Streaming batches.
    Sending,
    /// Verifying what the receiver holds, then waiting for its final sync.
    Syncing,
}

/// One running transfer as `dynamo admin transfers` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferStatus {
    /// The partition being sent.
    pub partition: PartitionId,
    /// The sending node (this one).
    pub from: NodeId,
    /// The receiving node.
    pub to: NodeId,
    /// Where the transfer is.
    pub phase: TransferPhase,
    /// When this run started sending (ms since the Unix epoch, injected clock); 0 while waiting.
    pub started_ms: u64,
    /// Objects sent so far, earlier interrupted runs included.
    pub keys_sent: u64,
    /// Payload bytes sent so far, earlier runs included.
    pub bytes_sent: u64,
    /// Whether this run resumed from a cursor.
    pub resumed: bool,
    /// Objects expected in the partition, if known.
    pub expected_keys: Option<u64>,
    /// Payload bytes per second over this run.
    pub bytes_per_sec: u64,
    /// Objects per second over this run.
    pub keys_per_sec: u64,
    /// Seconds left at the current rate, when the partition's size is known.
    pub eta_secs: Option<u64>,
}

/// The persisted position of an interrupted transfer: everything up to `after` is acknowledged
/// by the receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// The ring epoch the transfer served.
    pub(crate) epoch: u64,
    /// The last acknowledged key.
    pub(crate) after: ObjectKey,
    /// Objects acknowledged so far.
    pub(crate) keys: u64,
    /// Payload bytes acknowledged so far.
    pub(crate) bytes: u64,
}

/// The metadata name of the cursor of `partition`'s transfer to `to`.
pub(crate) fn cursor_name(partition: PartitionId, to: &NodeId) -> String {
    format!("transfer/{}/{}", partition.0, to)
}

impl Cursor {
    /// Version byte, epoch, keys, bytes (u64 LE each), then bucket and key, each with a u32 LE
    /// length. The partition is in the metadata name.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(41 + self.after.bucket.len() + self.after.key.len());
        out.push(CURSOR_VERSION);
        for n in [self.epoch, self.keys, self.bytes] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        for part in [&self.after.bucket, &self.after.key] {
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// Decodes a stored cursor of `partition`; `Ok(None)` for a cleared one (empty value).
    pub(crate) fn decode(partition: PartitionId, bytes: &[u8]) -> Result<Option<Cursor>> {
        if bytes.is_empty() {
            return Ok(None);
        }
        let bad = |why: &str| {
            Error::Storage(format!(
                "transfer cursor of partition {}: {why}",
                partition.0
            ))
        };
        let (&version, mut rest) = bytes.split_first().ok_or_else(|| bad("empty"))?;
        if version != CURSOR_VERSION {
            return Err(bad(&format!("unknown format version {version}")));
        }
        let mut u64s = [0u64; 3];
        for n in &mut u64s {
            let (head, tail) = rest.split_at_checked(8).ok_or_else(|| bad("truncated"))?;
            *n = u64::from_le_bytes(head.try_into().map_err(|_| bad("truncated"))?);
            rest = tail;
        }
        let mut parts: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        for part in &mut parts {
            let (head, tail) = rest.split_at_checked(4).ok_or_else(|| bad("truncated"))?;
            let len = u32::from_le_bytes(head.try_into().map_err(|_| bad("truncated"))?);
            let len = usize::try_from(len).map_err(|_| bad("length out of range"))?;
            let (body, tail) = tail.split_at_checked(len).ok_or_else(|| bad("truncated"))?;
            *part = body.to_vec();
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        let [bucket, key] = parts;
        let [epoch, keys, bytes] = u64s;
        Ok(Some(Cursor {
            epoch,
            after: ObjectKey {
                partition,
                bucket,
                key,
            },
            keys,
            bytes,
        }))
    }
}

/// A per-node limit on concurrent transfers whose size can change while transfers run.
/// Lowering it below the number running lets those finish and admits no new one until the
/// count is under the new limit.
pub struct TransferLimiter {
    semaphore: Arc<Semaphore>,
    /// The limit and the permits still to retire as running transfers finish.
    state: Arc<Mutex<LimitState>>,
}

#[derive(Debug)]
struct LimitState {
    limit: usize,
    debt: usize,
}

/// The right to run one transfer; returned to the limiter when dropped.
pub struct TransferPermit {
    permit: Option<OwnedSemaphorePermit>,
    state: Arc<Mutex<LimitState>>,
}

impl Drop for TransferPermit {
    fn drop(&mut self) {
        let mut state = self.state.lock();
        if let Some(permit) = self.permit.take()
            && state.debt > 0
        {
            state.debt -= 1;
            permit.forget();
        }
    }
}

impl TransferLimiter {
    /// A limiter admitting `limit` transfers at once (capped at [`MAX_TRANSFER_LIMIT`]).
    pub fn new(limit: usize) -> TransferLimiter {
        let limit = limit.min(MAX_TRANSFER_LIMIT);
        TransferLimiter {
            semaphore: Arc::new(Semaphore::new(limit)),
            state: Arc::new(Mutex::new(LimitState { limit, debt: 0 })),
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.state.lock().limit
    }

    /// Changes the limit; 0 pauses every transfer not yet running. Above
    /// [`MAX_TRANSFER_LIMIT`] is refused.
    pub fn set_limit(&self, limit: usize) -> Result<()> {
        if limit > MAX_TRANSFER_LIMIT {
            return Err(Error::InvalidRequest(format!(
                "transfer limit {limit} is above the maximum {MAX_TRANSFER_LIMIT}"
            )));
        }
        let mut state = self.state.lock();
        if limit >= state.limit {
            let grow = limit - state.limit;
            let repaid = grow.min(state.debt);
            state.debt -= repaid;
            self.semaphore.add_permits(grow - repaid);
        } else {
            let shrink = state.limit - limit;
            let forgotten = self.semaphore.forget_permits(shrink);
            state.debt += shrink - forgotten;
        }
        state.limit = limit;
        Ok(())
    }

    /// A permit if one is free now.
    pub fn try_acquire(&self) -> Option<TransferPermit> {
        let permit = Arc::clone(&self.semaphore).try_acquire_owned().ok()?;
        Some(TransferPermit {
            permit: Some(permit),
            state: Arc::clone(&self.state),
        })
    }

    /// Waits for a permit.
    pub async fn acquire(&self) -> TransferPermit {
        let permit = Arc::clone(&self.semaphore).acquire_owned().await.ok();
        TransferPermit {
            permit,
            state: Arc::clone(&self.state),
        }
    }
}

/// One registered transfer.
struct Active {
    phase: TransferPhase,
    started_ms: u64,
    run_keys: u64,
    run_bytes: u64,
    keys: u64,
    bytes: u64,
    resumed: bool,
    expected_keys: Option<u64>,
    cancel: CancellationToken,
}

/// The transfers this node is sending, by (partition, receiver).
#[derive(Default)]
pub(crate) struct Registry {
    active: Mutex<BTreeMap<(PartitionId, NodeId), Active>>,
}

impl Registry {
    /// Registers a transfer; refused if the same partition is already being sent to `to`.
    pub(crate) fn register(
        self: &Arc<Self>,
        partition: PartitionId,
        to: &NodeId,
        expected_keys: Option<u64>,
        cancel: CancellationToken,
    ) -> Result<Registration> {
        let mut active = self.active.lock();
        let id = (partition, to.clone());
        if active.contains_key(&id) {
            return Err(Error::InvalidRequest(format!(
                "partition {} is already being sent to {to}",
                partition.0
            )));
        }
        active.insert(
            id.clone(),
            Active {
                phase: TransferPhase::Waiting,
                started_ms: 0,
                run_keys: 0,
                run_bytes: 0,
                keys: 0,
                bytes: 0,
                resumed: false,
                expected_keys,
                cancel,
            },
        );
        Ok(Registration {
            registry: Arc::clone(self),
            id,
        })
    }

    /// Whether `partition` is being sent anywhere.
    pub(crate) fn is_sending(&self, partition: PartitionId) -> bool {
        self.active.lock().keys().any(|(p, _)| *p == partition)
    }

    /// Cancels the transfer of `partition` to `to`; whether one was running.
    pub(crate) fn cancel(&self, partition: PartitionId, to: &NodeId) -> bool {
        match self.active.lock().get(&(partition, to.clone())) {
            Some(a) => {
                a.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Every registered transfer as seen at `now_ms`.
    pub(crate) fn statuses(&self, from: &NodeId, now_ms: u64) -> Vec<TransferStatus> {
        self.active
            .lock()
            .iter()
            .map(|((partition, to), a)| status(*partition, from, to, a, now_ms))
            .collect()
    }
}

/// The status line of one transfer: rates over this run, ETA from the expected size.
fn status(
    partition: PartitionId,
    from: &NodeId,
    to: &NodeId,
    a: &Active,
    now_ms: u64,
) -> TransferStatus {
    let elapsed_ms = now_ms.saturating_sub(a.started_ms);
    let per_sec = |n: u64| {
        if a.phase == TransferPhase::Waiting || elapsed_ms == 0 {
            0
        } else {
            u64::try_from(u128::from(n) * 1000 / u128::from(elapsed_ms)).unwrap_or(u64::MAX)
        }
    };
    let keys_per_sec = per_sec(a.run_keys);
    let eta_secs = match (a.expected_keys, keys_per_sec) {
        (Some(expected), rate) if rate > 0 => Some(expected.saturating_sub(a.keys).div_ceil(rate)),
        _ => None,
    };
    TransferStatus {
        partition,
        from: from.clone(),
        to: to.clone(),
        phase: a.phase,
        started_ms: a.started_ms,
        keys_sent: a.keys,
        bytes_sent: a.bytes,
        resumed: a.resumed,
        expected_keys: a.expected_keys,
        bytes_per_sec: per_sec(a.run_bytes),
        keys_per_sec,
        eta_secs,
    }
}

/// A registered transfer; unregistered when dropped (completed, failed or cancelled).
pub(crate) struct Registration {
    registry: Arc<Registry>,
    id: (PartitionId, NodeId),
}

impl Registration {
    fn with(&self, f: impl FnOnce(&mut Active)) {
        if let Some(a) = self.registry.active.lock().get_mut(&self.id) {
            f(a);
        }
    }

    /// The transfer got its permit and starts (or resumes) at `now_ms` with the totals of
    /// earlier runs.
    pub(crate) fn start(&self, now_ms: u64, keys: u64, bytes: u64, resumed: bool) {
        self.with(|a| {
            a.phase = TransferPhase::Sending;
            a.started_ms = now_ms;
            a.keys = keys;
            a.bytes = bytes;
            a.resumed = resumed;
        });
    }

    /// A batch of `keys` objects and `bytes` payload bytes was acknowledged.
    pub(crate) fn sent(&self, keys: u64, bytes: u64) {
        self.with(|a| {
            a.run_keys += keys;
            a.run_bytes += bytes;
            a.keys += keys;
            a.bytes += bytes;
        });
    }

    /// Every batch is acknowledged; the final sync runs.
    pub(crate) fn syncing(&self) {
        self.with(|a| a.phase = TransferPhase::Syncing);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.active.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn a_cursor_decodes_to_what_was_encoded(
            epoch in any::<u64>(),
            keys in any::<u64>(),
            bytes in any::<u64>(),
            bucket in proptest::collection::vec(any::<u8>(), 1..40),
            key in proptest::collection::vec(any::<u8>(), 0..40),
            cut in any::<prop::sample::Index>(),
        ) {
            let p = PartitionId(7);
            let cursor = Cursor { epoch, after: ObjectKey::new(p, bucket, key), keys, bytes };
            let encoded = cursor.encode();
            prop_assert_eq!(Cursor::decode(p, &encoded).unwrap(), Some(cursor));
            // Any truncation is an error, never a panic or a wrong cursor.
            let cut = cut.index(encoded.len() - 1) + 1;
            prop_assert!(Cursor::decode(p, &encoded[..cut]).is_err() || cut == encoded.len());
        }
    }

    #[test]
    fn a_cleared_or_foreign_cursor_is_none_or_an_error() {
        let p = PartitionId(0);
        assert_eq!(Cursor::decode(p, &[]).unwrap(), None);
        assert!(Cursor::decode(p, &[9, 0, 0]).is_err());
    }

    #[test]
    fn the_limit_can_shrink_and_grow_while_permits_are_held() {
        let limiter = TransferLimiter::new(2);
        let a = limiter.try_acquire().unwrap();
        let b = limiter.try_acquire().unwrap();
        assert!(limiter.try_acquire().is_none());
        limiter.set_limit(1).unwrap();
        drop(a);
        // Both permits were in use: the one returned first is retired, so none is free.
        assert!(limiter.try_acquire().is_none());
        drop(b);
        let c = limiter.try_acquire().unwrap();
        assert!(limiter.try_acquire().is_none());
        limiter.set_limit(3).unwrap();
        let _d = limiter.try_acquire().unwrap();
        let _e = limiter.try_acquire().unwrap();
        assert!(limiter.try_acquire().is_none());
        drop(c);
        assert!(limiter.try_acquire().is_some());
        assert_eq!(limiter.limit(), 3);
        limiter.set_limit(0).unwrap();
        assert!(limiter.set_limit(MAX_TRANSFER_LIMIT + 1).is_err());
    }
}
