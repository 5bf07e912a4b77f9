//! Storage throughput against a raw redb baseline. Measures and prints; asserts nothing.
//!
//! ```text
//! cargo run --release -p dynamo-storage --example bench [-- RUNS [all|puts|gets]]
//! ```
//!
//! Files go under `$DYNAMO_BENCH_DIR` (default: the system temp dir); point it at the disk you
//! care about (not a tmpfs). Each figure is the median of RUNS rounds (default 3) on fresh
//! files; a round runs every scenario once, and ratios are taken within a round.
//!
//! Baselines (raw redb, no group commit, no versioning, no record encoding):
//! - one row per transaction with `Durability::Immediate` (one fsync per row), one writer;
//! - 64 rows per transaction with `Durability::Immediate` (what a perfect 64-writer group commit
//!   could reach), once with sequential keys (every transaction touches a few neighbouring
//!   pages) and once with the adapter's keys in the order its 64 writers send them (every row
//!   lands on another page, as in a real store);
//! - gets, one read transaction per get.
//!
//! Adapter figures: `put_local` (read-modify-write of a versioned object) with `Durability::Sync`
//! from 1 and from 64 threads, the same write through `update_then` with 64 in flight from one
//! thread (how a node's async coordinator drives the engine), and `get` (read transaction plus
//! record decode).

use std::path::Path;
use std::time::{Duration, Instant};

use dynamo_ring::PartitionId;
use dynamo_storage::{Content, Durability, Engine, EngineExt, ObjectKey, Options, RedbEngine};
use dynamo_versioning::{Actor, Context};
use redb::{Database, ReadableDatabase as _, TableDefinition};

/// Raw baseline table: key bytes to value bytes.
const RAW: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raw");
/// Bytes of every value written: a small object, as in the paper's workloads.
const VALUE_LEN: usize = 100;
/// Rows for the fsync-per-row scenarios (about a second at a few thousand fsyncs per second).
const SERIAL_ROWS: usize = 2_000;
/// Concurrent writers of the group-commit scenarios.
const WRITERS: usize = 64;
/// Rows each of the 64 writers puts.
const ROWS_PER_WRITER: usize = 300;
/// Keys preloaded for the get scenarios, and gets measured.
const GET_KEYS: usize = 20_000;
/// Gets per measured run (each side).
const GETS: usize = 400_000;

type BoxError = Box<dyn std::error::Error>;

/// The allocator the `dynamo` binary uses, so the adapter is measured as it runs in a node (the
/// raw baseline runs in the same process, with the same allocator).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn raw_key(i: usize) -> Vec<u8> {
    format!("key-{i:08}").into_bytes()
}

fn object_key(i: usize) -> ObjectKey {
    ObjectKey::new(PartitionId((i % 64) as u32), "bench", raw_key(i))
}

/// A cheap deterministic spread of key indices for reads.
fn spread(i: usize, n: usize) -> usize {
    (i.wrapping_mul(2_654_435_761)) % n
}

fn raw_db(dir: &Path) -> Result<Database, BoxError> {
    let mut builder = Database::builder();
    builder.set_cache_size(256 << 20);
    Ok(builder.create(dir.join("raw.redb"))?)
}

fn engine(dir: &Path) -> Result<RedbEngine, BoxError> {
    Ok(RedbEngine::open(
        dir.join("engine.redb"),
        Options::with_durability(Durability::Sync),
    )?)
}

/// Raw redb: `keys` in order, in transactions of `per_txn` rows, each fsynced. Rows/s.
fn raw_puts(dir: &Path, keys: &[Vec<u8>], per_txn: usize) -> Result<f64, BoxError> {
    let db = raw_db(dir)?;
    let value = vec![7u8; VALUE_LEN];
    let start = Instant::now();
    for chunk in keys.chunks(per_txn) {
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(RAW)?;
            for key in chunk {
                table.insert(key.as_slice(), value.as_slice())?;
            }
        }
        txn.commit()?;
    }
    Ok(keys.len() as f64 / start.elapsed().as_secs_f64())
}

/// The adapter's table key of `key`, rebuilt for the raw baseline: partition, bucket, key.
fn adapter_layout(key: &ObjectKey) -> Vec<u8> {
    let mut out = key.partition.0.to_be_bytes().to_vec();
    out.extend_from_slice(&key.bucket);
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&key.key);
    out
}

/// Keys in the order the 64-writer adapter scenario writes them: round `i` holds every
/// writer's `i`-th key, which lands all over the tree.
fn group_commit_order() -> Vec<Vec<u8>> {
    (0..ROWS_PER_WRITER)
        .flat_map(|i| {
            (0..WRITERS).map(move |w| adapter_layout(&object_key(w * ROWS_PER_WRITER + i)))
        })
        .collect()
}

/// Adapter: `writers` threads each putting `rows_each` new keys with Sync durability.
/// Returns (rows/s, writes per fsync).
fn engine_puts(dir: &Path, writers: usize, rows_each: usize) -> Result<(f64, f64), BoxError> {
    let engine = engine(dir)?;
    let content = Content::new(vec![7u8; VALUE_LEN]);
    let start = Instant::now();
    std::thread::scope(|scope| -> Result<(), BoxError> {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (engine, content) = (&engine, content.clone());
                scope.spawn(move || -> Result<(), dynamo_storage::Error> {
                    let actor = Actor::new(1, 0);
                    for i in 0..rows_each {
                        let key = object_key(w * rows_each + i);
                        engine.put_local(&key, actor, &Context::empty(), content.clone(), 1)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            handle.join().map_err(|_| "writer thread panicked")??;
        }
        Ok(())
    })?;
    let rate = (writers * rows_each) as f64 / start.elapsed().as_secs_f64();
    let stats = engine.writer_stats();
    engine.close()?;
    Ok((rate, stats.writes as f64 / stats.fsyncs.max(1) as f64))
}

/// Adapter driven the way a node drives it: one thread keeps `in_flight` updates outstanding
/// through `update_then` (the async path; no thread parks per write), `total` new keys with Sync
/// durability. Returns (rows/s, writes per fsync).
fn engine_pipelined_puts(
    dir: &Path,
    in_flight: usize,
    total: usize,
) -> Result<(f64, f64), BoxError> {
    let engine = engine(dir)?;
    let content = Content::new(vec![7u8; VALUE_LEN]);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<dynamo_storage::Result<()>>();
    let start = Instant::now();
    let mut outstanding = 0usize;
    for i in 0..total {
        if outstanding == in_flight {
            done_rx.recv()??;
            outstanding -= 1;
        }
        let (key, content, tx) = (object_key(i), content.clone(), done_tx.clone());
        engine.update_then(
            &key,
            Durability::Sync,
            Box::new(move |stored| {
                let mut object = stored.unwrap_or_default();
                object.put(Actor::new(1, 0), &Context::empty(), content, 1);
                Ok(object)
            }),
            Box::new(move |outcome| {
                let _ = tx.send(outcome.map(|_| ()));
            }),
        );
        outstanding += 1;
    }
    for _ in 0..outstanding {
        done_rx.recv()??;
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    let stats = engine.writer_stats();
    engine.close()?;
    Ok((rate, stats.writes as f64 / stats.fsyncs.max(1) as f64))
}

/// Slices the get measurement is cut into, alternating raw and adapter, so that load from
/// other processes hits both sides alike.
const GET_SLICES: usize = 20;

/// Gets over `GET_KEYS` preloaded rows: raw redb (one read transaction per get, value length
/// only) and the adapter (read transaction plus record decode), measured in alternating slices.
/// Returns (raw gets/s, adapter gets/s).
fn gets(dir: &Path) -> Result<(f64, f64), BoxError> {
    let db = raw_db(dir)?;
    let value = vec![7u8; VALUE_LEN];
    let raw_keys: Vec<Vec<u8>> = (0..GET_KEYS).map(raw_key).collect();
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(RAW)?;
        for key in &raw_keys {
            table.insert(key.as_slice(), value.as_slice())?;
        }
    }
    txn.commit()?;

    let engine = engine(dir)?;
    let object_keys: Vec<ObjectKey> = (0..GET_KEYS).map(object_key).collect();
    for key in &object_keys {
        let mut object = dynamo_storage::VersionedObject::new();
        object.put(
            Actor::new(1, 0),
            &Context::empty(),
            Content::new(value.clone()),
            1,
        );
        engine.put_merge_with(key, Durability::None, object)?;
    }
    engine.flush()?;

    let (mut raw_time, mut engine_time) = (Duration::ZERO, Duration::ZERO);
    let (mut raw_found, mut engine_found) = (0usize, 0usize);
    let per_slice = GETS / GET_SLICES;
    for slice in 0..GET_SLICES {
        let indices = (slice * per_slice..(slice + 1) * per_slice).map(|i| spread(i, GET_KEYS));
        let start = Instant::now();
        for i in indices.clone() {
            let txn = db.begin_read()?;
            let table = txn.open_table(RAW)?;
            raw_found += table
                .get(raw_keys[i].as_slice())?
                .map_or(0, |v| v.value().len());
        }
        raw_time += start.elapsed();
        let start = Instant::now();
        for i in indices {
            engine_found += engine
                .get(&object_keys[i])?
                .map_or(0, |o| o.siblings().len());
        }
        engine_time += start.elapsed();
    }
    engine.close()?;
    let total = per_slice * GET_SLICES;
    if raw_found != total * VALUE_LEN || engine_found != total {
        return Err("gets missed keys".into());
    }
    Ok((
        total as f64 / raw_time.as_secs_f64(),
        total as f64 / engine_time.as_secs_f64(),
    ))
}

/// Prints a figure's runs and returns their median.
fn median(name: &str, values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let median = values.get(values.len() / 2).copied().unwrap_or(f64::NAN);
    let show = |r: f64| {
        if r < 10.0 {
            format!("{r:.2}")
        } else {
            format!("{r:.0}")
        }
    };
    let all: Vec<String> = values.iter().map(|r| show(*r)).collect();
    println!(
        "{name:<52} median {:>9}   runs [{}]",
        show(median),
        all.join(", ")
    );
    median
}

/// Runs every put scenario once per round, so a disk slowed down by other processes hits the
/// baseline and the adapter of the same round alike, then prints medians and per-round ratios.
fn put_rounds(runs: usize, base: &Path) -> Result<(), BoxError> {
    let serial: Vec<Vec<u8>> = (0..SERIAL_ROWS)
        .map(|i| adapter_layout(&object_key(i)))
        .collect();
    let sequential: Vec<Vec<u8>> = (0..WRITERS * ROWS_PER_WRITER).map(raw_key).collect();
    let scattered = group_commit_order();
    // Per round: raw serial, raw 64 rows/txn (sequential keys, then the adapter's keys),
    // adapter 1 writer, adapter 64 writers.
    let mut rounds: Vec<[f64; 8]> = Vec::with_capacity(runs);
    for _ in 0..runs {
        let dir = || tempfile::tempdir_in(base);
        let raw_serial = raw_puts(dir()?.path(), &serial, 1)?;
        let raw_sequential = raw_puts(dir()?.path(), &sequential, WRITERS)?;
        let raw_scattered = raw_puts(dir()?.path(), &scattered, WRITERS)?;
        let (one, _) = engine_puts(dir()?.path(), 1, SERIAL_ROWS)?;
        let (group, per_fsync) = engine_puts(dir()?.path(), WRITERS, ROWS_PER_WRITER)?;
        let (piped, piped_per_fsync) =
            engine_pipelined_puts(dir()?.path(), WRITERS, WRITERS * ROWS_PER_WRITER)?;
        rounds.push([
            raw_serial,
            raw_sequential,
            raw_scattered,
            one,
            group,
            per_fsync,
            piped,
            piped_per_fsync,
        ]);
    }
    let column = |i: usize| rounds.iter().map(|r| r[i]).collect::<Vec<f64>>();
    let ratio = |a: usize, b: usize| rounds.iter().map(|r| r[a] / r[b]).collect::<Vec<f64>>();
    median("raw put, 1 row/txn, fsync (/s)", &mut column(0));
    median(
        "raw put, 64 rows/txn, fsync, sequential keys (/s)",
        &mut column(1),
    );
    median(
        "raw put, 64 rows/txn, fsync, adapter's keys (/s)",
        &mut column(2),
    );
    median("RedbEngine put_local, Sync, 1 writer (/s)", &mut column(3));
    median(
        "RedbEngine put_local, Sync, 64 writers (/s)",
        &mut column(4),
    );
    median("  writes per fsync in its group commits", &mut column(5));
    median(
        "RedbEngine update_then, Sync, 64 in flight (/s)",
        &mut column(6),
    );
    median("  writes per fsync in its group commits", &mut column(7));
    median("ratio 1 writer / raw 1 row/txn", &mut ratio(3, 0));
    median(
        "ratio 64 writers / raw 64 rows/txn sequential",
        &mut ratio(4, 1),
    );
    median(
        "ratio 64 writers / raw 64 rows/txn adapter's keys",
        &mut ratio(4, 2),
    );
    median(
        "ratio 64 in flight / raw 64 rows/txn sequential",
        &mut ratio(6, 1),
    );
    median(
        "ratio 64 in flight / raw 64 rows/txn adapter's keys",
        &mut ratio(6, 2),
    );
    Ok(())
}

/// Runs the get comparison once per round and prints medians and per-round ratios.
fn get_rounds(runs: usize, base: &Path) -> Result<(), BoxError> {
    let mut pairs = Vec::with_capacity(runs);
    for _ in 0..runs {
        pairs.push(gets(tempfile::tempdir_in(base)?.path())?);
    }
    median(
        "raw redb get, 1 read txn/get, 1 reader (/s)",
        &mut pairs.iter().map(|p| p.0).collect::<Vec<_>>(),
    );
    median(
        "RedbEngine get, 1 reader (/s)",
        &mut pairs.iter().map(|p| p.1).collect::<Vec<_>>(),
    );
    median(
        "ratio get / raw get",
        &mut pairs.iter().map(|p| p.1 / p.0).collect::<Vec<_>>(),
    );
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(3).max(1);
    let which = args.next().unwrap_or_else(|| "all".to_owned());
    let base = std::env::var_os("DYNAMO_BENCH_DIR")
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    std::fs::create_dir_all(&base)?;
    println!(
        "dynamo-storage bench: {runs} rounds, files under {}",
        base.display()
    );
    if which == "all" || which == "puts" {
        put_rounds(runs, &base)?;
    }
    if which == "all" || which == "gets" {
        get_rounds(runs, &base)?;
    }
    Ok(())
}
