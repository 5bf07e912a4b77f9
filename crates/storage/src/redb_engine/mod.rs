//! The redb adapter: the production [`Engine`], one data file per node.
//!
//! Reads run in their own read transactions, concurrently with each other and with the writer.
//! Every write goes through the group-commit [`writer`](self::writer): concurrent writes share
//! one transaction and one fsync. The file layout and open-time checks are in [`format`].

pub(crate) mod format;
mod keys;
pub(crate) mod writer;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dynamo_ring::{NodeId, PartitionId};
use redb::{Database, ReadableDatabase as _, ReadableTable, ReadableTableMetadata as _};

use self::format::{FORMAT, HINTS, HINTS_BY_OWNER, META, NEXT_HINT_ROW, OBJECTS};
pub use self::writer::WriterStats;
use self::writer::{Writer, WriterConfig};
use crate::codec;
use crate::engine::{AppliedFn, Engine, UpdateDone, UpdateFn, call_update};
use crate::error::{Error, Result};
use crate::object::{Entry, Hint, HintRecord, ObjectKey, VersionedObject, check_object};
use crate::options::{Durability, Limits, Options, check_meta_name};

pub use self::format::{FORMAT_MAGIC, FORMAT_VERSION};

/// Decodes a stored object record, naming `key` in any error.
fn decode_object(key: &ObjectKey, bytes: &[u8]) -> Result<VersionedObject> {
    codec::decode(bytes, || format!("object {key}"))
}

/// Decodes a stored hint record.
fn decode_hint(id: u64, bytes: &[u8]) -> Result<Hint> {
    codec::decode::<HintRecord>(bytes, || format!("hint {id}")).map(|r| r.into_hint(id))
}

/// A [`Engine`] backed by one redb file.
pub struct RedbEngine {
    /// The group-commit writer; declared first so it is flushed and joined before `db` goes.
    writer: Writer,
    db: Arc<Database>,
    options: Options,
    path: PathBuf,
}

impl RedbEngine {
    /// Queues an update on the group-commit writer; `done` gets the outcome from the writer
    /// thread, or at once if the key is invalid or the writer is gone.
    fn submit_update(
        &self,
        key: &ObjectKey,
        durability: Durability,
        f: UpdateFn,
        applied: Option<AppliedFn>,
        done: UpdateDone,
    ) {
        if let Err(e) = key.check(&self.options.limits) {
            return done(Err(e));
        }
        let job = update_job(&self.options.limits, key, f, applied);
        // `done` moves into the writer's reply; if queueing fails the job (and `done` with it)
        // is dropped, so answer through a shared slot instead.
        let slot = Arc::new(parking_lot::Mutex::new(Some(done)));
        let reply = Arc::clone(&slot);
        let queued = self.writer.run_then(durability, job, move |answer| {
            if let Some(done) = reply.lock().take() {
                done(answer);
            }
        });
        if let Err(e) = queued
            && let Some(done) = slot.lock().take()
        {
            done(Err(e));
        }
    }

    /// Opens the data file at `path`, creating it (and its directory) if absent.
    ///
    /// Refuses a file that is not a dynamo data file, has a newer format, is damaged, or is
    /// open in another process (see [`Error`]); a refused file is not modified.
    pub fn open(path: impl AsRef<Path>, options: Options) -> Result<RedbEngine> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let db = Arc::new(format::open_database(&path, &options)?);
        let writer = Writer::start(
            Arc::clone(&db),
            WriterConfig {
                max_batch: options.max_batch,
                queue_depth: options.queue_depth,
                flush_interval: options.flush_interval,
            },
        )?;
        tracing::debug!(path = %path.display(), durability = ?options.durability, "opened data file");
        Ok(RedbEngine {
            writer,
            db,
            options,
            path,
        })
    }

    /// The data file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the group-commit writer has done since the engine opened.
    pub fn writer_stats(&self) -> WriterStats {
        self.writer.stats()
    }

    /// The options the engine was opened with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Flushes, stops the writer and closes the file, reporting a failed final flush (dropping
    /// the engine does the same but can only log it).
    pub fn close(mut self) -> Result<()> {
        self.writer.close()
    }

    /// Collects objects from `start` on while their encoded key starts with `prefix`, until
    /// `out` holds `limit`. Returns whether it stopped because `out` was full.
    fn collect_objects<T: ReadableTable<&'static [u8], &'static [u8]>>(
        table: &T,
        start: Bound<&[u8]>,
        prefix: &[u8],
        limit: usize,
        out: &mut Vec<Entry>,
    ) -> Result<bool> {
        for entry in table.range::<&[u8]>((start, Bound::Unbounded))? {
            if out.len() >= limit {
                return Ok(true);
            }
            let (raw_key, value) = entry?;
            if !raw_key.value().starts_with(prefix) {
                return Ok(false);
            }
            let key = keys::decode(raw_key.value())?;
            let object = decode_object(&key, value.value())?;
            out.push((key, object));
        }
        Ok(false)
    }

    /// One partition's part of a bucket listing: objects of `bucket` in partition `p` after
    /// `after_key`. Returns the next partition holding any key, to jump to.
    fn scan_bucket_in<T: ReadableTable<&'static [u8], &'static [u8]>>(
        table: &T,
        bucket: &[u8],
        p: u32,
        after_key: Option<&[u8]>,
        limit: usize,
        out: &mut Vec<Entry>,
    ) -> Result<Option<u32>> {
        let prefix = keys::bucket_start(p, bucket);
        let after = after_key.map(|key| keys::encode(&ObjectKey::new(PartitionId(p), bucket, key)));
        let start = match &after {
            Some(after) => Bound::Excluded(after.as_slice()),
            None => Bound::Included(prefix.as_slice()),
        };
        if Self::collect_objects(table, start, &prefix, limit, out)? {
            return Ok(None);
        }
        let Some(next) = p.checked_add(1) else {
            return Ok(None);
        };
        let next_start = keys::partition_start(next);
        let mut rest = table.range::<&[u8]>(next_start.as_slice()..)?;
        match rest.next() {
            Some(entry) => Ok(Some(keys::decode(entry?.0.value())?.partition.0)),
            None => Ok(None),
        }
    }
}

impl Engine for RedbEngine {
    fn limits(&self) -> Limits {
        self.options.limits
    }

    fn durability(&self) -> Durability {
        self.options.durability
    }

    fn get(&self, key: &ObjectKey) -> Result<Option<VersionedObject>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OBJECTS)?;
        match table.get(keys::encode(key).as_slice())? {
            Some(value) => decode_object(key, value.value()).map(Some),
            None => Ok(None),
        }
    }

    fn update_with(
        &self,
        key: &ObjectKey,
        durability: Durability,
        f: UpdateFn,
    ) -> Result<VersionedObject> {
        key.check(&self.options.limits)?;
        let job = update_job(&self.options.limits, key, f, None);
        self.writer.run(durability, job)
    }

    fn update_then(&self, key: &ObjectKey, durability: Durability, f: UpdateFn, done: UpdateDone) {
        self.submit_update(key, durability, f, None, done);
    }

    fn update_staged(
        &self,
        key: &ObjectKey,
        durability: Durability,
        f: UpdateFn,
        applied: AppliedFn,
        done: UpdateDone,
    ) {
        self.submit_update(key, durability, f, Some(applied), done);
    }

    fn scan_partition(
        &self,
        p: PartitionId,
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        let prefix = keys::partition_start(p.0);
        ObjectKey::check_partition_cursor(after, p)?;
        let after = after.map(keys::encode);
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OBJECTS)?;
        let mut out = Vec::new();
        let start = match &after {
            Some(after) => Bound::Excluded(after.as_slice()),
            None => Bound::Included(prefix.as_slice()),
        };
        Self::collect_objects(&table, start, &prefix, limit, &mut out)?;
        Ok(out)
    }

    fn scan_bucket(
        &self,
        bucket: &[u8],
        after: Option<&ObjectKey>,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        ObjectKey::check_bucket_cursor(after, bucket)?;
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OBJECTS)?;
        let mut out = Vec::new();
        let mut next = Some(after.map_or(0, |a| a.partition.0));
        let mut after_key = after.map(|a| a.key.as_slice());
        // Each step reads one partition's run of the bucket, then jumps to the next partition
        // that holds any key: at most two seeks per partition, whatever the other buckets hold.
        while let Some(p) = next {
            if out.len() >= limit {
                break;
            }
            next = Self::scan_bucket_in(&table, bucket, p, after_key.take(), limit, &mut out)?;
        }
        Ok(out)
    }

    fn remove_if_unchanged(&self, key: &ObjectKey, expected: &VersionedObject) -> Result<bool> {
        let key = key.clone();
        let encoded = keys::encode(&key);
        let expected = expected.clone();
        self.writer.run(self.options.durability, move |batch| {
            let table = batch.objects()?;
            let matches = match table.get(encoded.as_slice())? {
                Some(value) => decode_object(&key, value.value())? == expected,
                None => false,
            };
            if matches {
                table.remove(encoded.as_slice())?;
            }
            Ok(matches)
        })
    }

    fn put_hint(
        &self,
        owner: &NodeId,
        key: &ObjectKey,
        object: &VersionedObject,
        now_ms: u64,
    ) -> Result<u64> {
        key.check(&self.options.limits)?;
        check_object(&self.options.limits, object)?;
        let record = HintRecord {
            owner: owner.clone(),
            key: key.clone(),
            object: object.clone(),
            created_ms: now_ms,
        };
        let bytes = codec::encode(&record, || format!("hint for {key}"))?;
        let owner = owner.clone();
        self.writer.run(self.options.durability, move |batch| {
            let txn = batch.txn()?;
            let mut format = txn.open_table(FORMAT)?;
            let id = match format.get(NEXT_HINT_ROW)? {
                Some(value) => <[u8; 8]>::try_from(value.value())
                    .map(u64::from_le_bytes)
                    .ok(),
                None => None,
            };
            let id = id.ok_or_else(|| Error::Decode {
                what: "the next hint id".into(),
                reason: "missing or not 8 bytes".into(),
            })?;
            let next = id
                .checked_add(1)
                .ok_or_else(|| Error::Rejected("hint ids exhausted".into()))?;
            format.insert(NEXT_HINT_ROW, next.to_le_bytes().as_slice())?;
            txn.open_table(HINTS)?.insert(id, bytes.as_slice())?;
            txn.open_table(HINTS_BY_OWNER)?
                .insert((owner.as_str(), id), ())?;
            Ok(id)
        })
    }

    fn hints(
        &self,
        owner: Option<&NodeId>,
        after_id: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Hint>> {
        let txn = self.db.begin_read()?;
        let hints = txn.open_table(HINTS)?;
        let first = after_id.map_or(Some(0), |id| id.checked_add(1));
        let Some(first) = first else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        match owner {
            None => {
                for entry in hints.range(first..)?.take(limit) {
                    let (id, value) = entry?;
                    out.push(decode_hint(id.value(), value.value())?);
                }
            }
            Some(owner) => {
                let index = txn.open_table(HINTS_BY_OWNER)?;
                let range = (owner.as_str(), first)..=(owner.as_str(), u64::MAX);
                for entry in index.range(range)?.take(limit) {
                    let id = entry?.0.value().1;
                    let value = hints.get(id)?.ok_or_else(|| Error::Decode {
                        what: format!("hint {id}"),
                        reason: "indexed for its owner but missing".into(),
                    })?;
                    out.push(decode_hint(id, value.value())?);
                }
            }
        }
        Ok(out)
    }

    fn remove_hint(&self, id: u64) -> Result<()> {
        self.writer.run(self.options.durability, move |batch| {
            let txn = batch.txn()?;
            let removed = txn
                .open_table(HINTS)?
                .remove(id)?
                .map(|v| v.value().to_vec());
            if let Some(bytes) = removed {
                // The record names the owner, whose index entry goes too. An undecodable record
                // still counts as removed; its index entry is then found by scanning.
                match decode_hint(id, &bytes) {
                    Ok(hint) => {
                        txn.open_table(HINTS_BY_OWNER)?
                            .remove((hint.owner.as_str(), id))?;
                    }
                    Err(_) => remove_index_entries_of(txn, id)?,
                }
            }
            Ok(())
        })
    }

    fn hint_count(&self) -> Result<u64> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(HINTS)?.len()?)
    }

    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        check_meta_name(name)?;
        let txn = self.db.begin_read()?;
        let table = txn.open_table(META)?;
        Ok(table.get(name)?.map(|v| v.value().to_vec()))
    }

    fn set_meta(&self, name: &str, value: &[u8]) -> Result<()> {
        check_meta_name(name)?;
        let name = name.to_owned();
        let value = value.to_vec();
        self.writer.run(Durability::Sync, move |batch| {
            batch
                .txn()?
                .open_table(META)?
                .insert(name.as_str(), value.as_slice())?;
            Ok(())
        })
    }

    fn flush(&self) -> Result<()> {
        self.writer.flush()
    }
}

/// Removes every owner-index entry of hint `id` (used when its record cannot say the owner).
fn remove_index_entries_of(txn: &redb::WriteTransaction, id: u64) -> Result<()> {
    let mut index = txn.open_table(HINTS_BY_OWNER)?;
    let mut owners = Vec::new();
    for entry in index.iter()? {
        let (raw_key, _) = entry?;
        let (owner, entry_id) = raw_key.value();
        if entry_id == id {
            owners.push(owner.to_owned());
        }
    }
    for owner in owners {
        index.remove((owner.as_str(), id))?;
    }
    Ok(())
}

/// The writer-thread half of an update: read the stored object, apply `f`, check the limits and
/// store the result (unless it is unchanged).
fn update_job(
    limits: &Limits,
    key: &ObjectKey,
    f: UpdateFn,
    applied: Option<AppliedFn>,
) -> impl FnOnce(&mut writer::Batch<'_>) -> Result<VersionedObject> + Send + 'static {
    let limits = *limits;
    let key = key.clone();
    let encoded = keys::encode(&key);
    move |batch| {
        let table = batch.objects()?;
        let stored = table
            .get(encoded.as_slice())?
            .map(|value| value.value().to_vec());
        let current = match &stored {
            Some(bytes) => Some(decode_object(&key, bytes)?),
            None => None,
        };
        let updated = call_update(f, current)?;
        check_object(&limits, &updated)?;
        let bytes = codec::encode(&updated, || format!("object {key}"))?;
        // An update that changes nothing (say, a replica re-sending a version already merged)
        // writes nothing.
        if stored.as_deref() != Some(bytes.as_slice()) {
            table.insert(encoded.as_slice(), bytes.as_slice())?;
        }
        if let Some(applied) = applied {
            applied(&updated);
        }
        Ok(updated)
    }
}

#[cfg(test)]
mod tests;
