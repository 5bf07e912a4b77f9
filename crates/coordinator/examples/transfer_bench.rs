//! Partition transfer throughput between two redb engines in one process, beside the raw redb
//! scan-and-write rate measured in the same run. Measures and prints; asserts nothing.
//!
//! ```text
//! cargo run --release -p dynamo-coordinator --example transfer_bench [-- KEYS VALUE_LEN RUNS]
//! ```
//!
//! Defaults: 50 000 objects of 1 024 bytes in one partition, 3 runs, medians printed. Files go
//! under `$DYNAMO_BENCH_DIR` (default: the system temp dir); point it at the disk you care about.
//!
//! - **transfer**: `Coordinator::transfer_partition` from a node on one redb file to a node on
//!   another, through an in-process `Replicas` that calls the receiver's
//!   `replica_transfer_batch` directly (no network, no serialization): scan pages, durable
//!   group-committed merges on the receiver, a durable cursor write per batch on the sender, the
//!   verification pass (a second scan of the sender, clock checks on the receiver) and the final
//!   sync (a flush and a counting scan on the receiver).
//! - **raw**: the same number of rows with the same payload, copied between two plain redb files
//!   by scanning the source in pages of the transfer's batch size and inserting each page in one
//!   fsynced write transaction: the least a transfer over redb can cost.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamo_coordinator::{
    BucketProps, Buckets, Coordinator, DeleteRequest, DeleteResponse, Error, Options,
    PartitionSummary, Parts, PutRequest, PutResponse, ReplicaPut, Replicas, Result, SystemClock,
    TRANSFER_BATCH_KEYS, TransferOptions,
};
use dynamo_ring::{Member, NodeId, PartitionId, Ring};
use dynamo_storage::{
    Content, Durability, Engine, EngineExt, Entry, ObjectKey, RedbEngine, VersionedObject,
};
use dynamo_versioning::{Actor, Context, VectorClock};
use redb::{Database, ReadableDatabase as _, TableDefinition};

type BoxError = Box<dyn std::error::Error>;

/// The allocator the `dynamo` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Raw baseline table: key bytes to value bytes.
const RAW: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raw");

/// Partitions of the bench ring.
const Q: u32 = 8;

/// The receiving coordinator, reached by direct calls.
struct Direct {
    receiver: parking_lot::RwLock<Option<Coordinator<Direct>>>,
}

impl Direct {
    fn receiver(&self) -> Result<Coordinator<Direct>> {
        self.receiver
            .read()
            .clone()
            .ok_or_else(|| Error::Unreachable("no receiver".into()))
    }
}

impl Replicas for Direct {
    async fn ping(&self, _: &NodeId, _: Duration) -> Result<()> {
        Ok(())
    }
    async fn get(&self, _: &NodeId, _: &ObjectKey, _: Duration) -> Result<Option<VersionedObject>> {
        Err(Error::Internal("not used by the bench".into()))
    }
    async fn put(&self, _: &NodeId, _: ReplicaPut, _: Duration) -> Result<bool> {
        Err(Error::Internal("not used by the bench".into()))
    }
    async fn forward_put(&self, _: &NodeId, _: PutRequest, _: Duration) -> Result<PutResponse> {
        Err(Error::Internal("not used by the bench".into()))
    }
    async fn forward_delete(
        &self,
        _: &NodeId,
        _: DeleteRequest,
        _: Duration,
    ) -> Result<DeleteResponse> {
        Err(Error::Internal("not used by the bench".into()))
    }
    async fn list_keys(&self, _: &NodeId, _: &[u8], _: Duration) -> Result<Vec<Vec<u8>>> {
        Err(Error::Internal("not used by the bench".into()))
    }
    async fn set_bucket_props(
        &self,
        _: &NodeId,
        _: &[u8],
        _: &BucketProps,
        _: Duration,
    ) -> Result<()> {
        Err(Error::Internal("not used by the bench".into()))
    }
    async fn transfer_batch(
        &self,
        _: &NodeId,
        partition: PartitionId,
        entries: Vec<Entry>,
        _: Duration,
    ) -> Result<u64> {
        self.receiver()?
            .replica_transfer_batch(partition, entries)
            .await
    }
    async fn transfer_verify(
        &self,
        _: &NodeId,
        partition: PartitionId,
        clocks: Vec<(ObjectKey, VectorClock)>,
        _: Duration,
    ) -> Result<Vec<ObjectKey>> {
        self.receiver()?
            .replica_transfer_verify(partition, clocks)
            .await
    }
    async fn transfer_sync(
        &self,
        _: &NodeId,
        partition: PartitionId,
        _: Duration,
    ) -> Result<PartitionSummary> {
        self.receiver()?.replica_transfer_sync(partition).await
    }
}

fn id(name: &str) -> NodeId {
    NodeId::new(name).expect("valid node id")
}

fn ring() -> std::result::Result<Ring, BoxError> {
    Ok(Ring::new(
        Q,
        vec![Member::new(id("a")), Member::new(id("b"))],
        2,
    )?)
}

/// `count` keys of bucket "bench" that hash to partition 0.
fn keys(ring: &Ring, count: usize) -> Vec<ObjectKey> {
    (0..)
        .map(|i| format!("key-{i:09}"))
        .filter(|k| ring.partition_for_key(b"bench", k.as_bytes()) == PartitionId(0))
        .take(count)
        .map(|k| ObjectKey::new(PartitionId(0), "bench", k))
        .collect()
}

fn coordinator(
    me: &str,
    ring: &Ring,
    engine: Arc<dyn Engine>,
    replicas: Arc<Direct>,
) -> std::result::Result<Coordinator<Direct>, BoxError> {
    let buckets = Buckets::load(BucketProps::default(), BTreeMap::new(), Arc::clone(&engine))?;
    Ok(Coordinator::new(Parts {
        me: id(me),
        actor: Actor::new(id(me).actor_id(), 1),
        ring: ring.clone(),
        engine,
        replicas,
        buckets,
        clock: Arc::new(SystemClock),
        options: Options::default(),
    }))
}

/// What one transfer run measured.
struct Measured {
    /// Payload MB/s over the whole transfer.
    mb_per_sec: f64,
    /// Objects/s over the whole transfer.
    objects_per_sec: f64,
    /// Payload MB/s of the stream alone (verification and final sync excluded).
    stream_mb_per_sec: f64,
}

/// Transfers `keys` objects of `value_len` bytes from one redb engine to another.
async fn transfer(
    dir: &Path,
    keys: &[ObjectKey],
    value_len: usize,
) -> std::result::Result<Measured, BoxError> {
    let ring = ring()?;
    let options = dynamo_storage::Options::with_durability(Durability::Sync);
    let sender_engine = Arc::new(RedbEngine::open(dir.join("sender.redb"), options.clone())?);
    let receiver_engine = Arc::new(RedbEngine::open(dir.join("receiver.redb"), options)?);
    let content = Content::new(vec![7u8; value_len]);
    for key in keys {
        let mut object = VersionedObject::new();
        object.put(Actor::new(9, 1), &Context::empty(), content.clone(), 1);
        sender_engine.put_merge_with(key, Durability::None, object)?;
    }
    sender_engine.flush()?;
    let net = Arc::new(Direct {
        receiver: parking_lot::RwLock::new(None),
    });
    let sender = coordinator("a", &ring, sender_engine.clone(), Arc::clone(&net))?;
    let receiver = coordinator("b", &ring, receiver_engine.clone(), Arc::clone(&net))?;
    *net.receiver.write() = Some(receiver);
    let start = Instant::now();
    let report = sender
        .transfer_partition(PartitionId(0), id("b"), TransferOptions::default())
        .await?;
    let secs = start.elapsed().as_secs_f64();
    if report.receiver.objects != keys.len() as u64 {
        return Err(format!("receiver holds {} objects", report.receiver.objects).into());
    }
    *net.receiver.write() = None;
    drop(sender);
    let stream_secs = (report.elapsed_ms.saturating_sub(report.verify_ms)).max(1) as f64 / 1e3;
    Ok(Measured {
        mb_per_sec: report.bytes_total as f64 / secs / 1e6,
        objects_per_sec: report.keys_total as f64 / secs,
        stream_mb_per_sec: report.bytes_total as f64 / stream_secs / 1e6,
    })
}

/// Copies the same rows between two plain redb files, page by page. Returns (MB/s, rows/s).
fn raw_copy(
    dir: &Path,
    keys: &[ObjectKey],
    value_len: usize,
) -> std::result::Result<(f64, f64), BoxError> {
    let open = |name: &str| -> std::result::Result<Database, BoxError> {
        let mut builder = Database::builder();
        builder.set_cache_size(256 << 20);
        Ok(builder.create(dir.join(name))?)
    };
    let (source, dest) = (open("raw-source.redb")?, open("raw-dest.redb")?);
    let value = vec![7u8; value_len];
    let raw_keys: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| [k.bucket.as_slice(), &[0], k.key.as_slice()].concat())
        .collect();
    let txn = source.begin_write()?;
    {
        let mut table = txn.open_table(RAW)?;
        for key in &raw_keys {
            table.insert(key.as_slice(), value.as_slice())?;
        }
    }
    txn.commit()?;
    let start = Instant::now();
    let (mut after, mut rows, mut bytes): (Option<Vec<u8>>, usize, usize) = (None, 0, 0);
    loop {
        let read = source.begin_read()?;
        let table = read.open_table(RAW)?;
        let mut page: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(TRANSFER_BATCH_KEYS);
        let range = match &after {
            Some(a) => table.range::<&[u8]>((
                std::ops::Bound::Excluded(a.as_slice()),
                std::ops::Bound::Unbounded,
            ))?,
            None => table.range::<&[u8]>(..)?,
        };
        for row in range.take(TRANSFER_BATCH_KEYS) {
            let (k, v) = row?;
            page.push((k.value().to_vec(), v.value().to_vec()));
        }
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        let write = dest.begin_write()?;
        {
            let mut table = write.open_table(RAW)?;
            for (k, v) in &page {
                table.insert(k.as_slice(), v.as_slice())?;
                bytes += k.len() + v.len();
            }
        }
        write.commit()?;
        rows += page.len();
    }
    let secs = start.elapsed().as_secs_f64();
    if rows != keys.len() {
        return Err(format!("raw copy moved {rows} rows").into());
    }
    Ok((bytes as f64 / secs / 1e6, rows as f64 / secs))
}

/// Prints a figure's runs and returns their median.
fn median(name: &str, values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let median = values.get(values.len() / 2).copied().unwrap_or(f64::NAN);
    let runs: Vec<String> = values.iter().map(|v| format!("{v:.1}")).collect();
    println!(
        "{name:<44} median {median:>10.1}   runs [{}]",
        runs.join(", ")
    );
    median
}

fn main() -> std::result::Result<(), BoxError> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<std::result::Result<_, _>>()?;
    let count = args.first().copied().unwrap_or(50_000);
    let value_len = args.get(1).copied().unwrap_or(1024);
    let runs = args.get(2).copied().unwrap_or(3).max(1);
    let base = std::env::var_os("DYNAMO_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let keys = keys(&ring()?, count);
    println!(
        "{count} objects of {value_len} bytes in one partition, batches of {TRANSFER_BATCH_KEYS}, {runs} runs, files under {}",
        base.display()
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let (mut t_mb, mut t_rows, mut s_mb, mut r_mb, mut r_rows, mut ratio) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for _ in 0..runs {
        let dir = tempfile::tempdir_in(&base)?;
        let (raw_mb, raw_rows) = raw_copy(dir.path(), &keys, value_len)?;
        let m = runtime.block_on(transfer(dir.path(), &keys, value_len))?;
        t_mb.push(m.mb_per_sec);
        t_rows.push(m.objects_per_sec);
        s_mb.push(m.stream_mb_per_sec);
        r_mb.push(raw_mb);
        r_rows.push(raw_rows);
        ratio.push(100.0 * m.mb_per_sec / raw_mb);
    }
    median("transfer, payload MB/s", &mut t_mb);
    median("transfer, objects/s", &mut t_rows);
    median("transfer stream alone (no verify/sync), MB/s", &mut s_mb);
    median("raw redb scan-and-write, payload MB/s", &mut r_mb);
    median("raw redb scan-and-write, rows/s", &mut r_rows);
    median("transfer as % of raw (per run)", &mut ratio);
    Ok(())
}
