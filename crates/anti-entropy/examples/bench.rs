//! Anti-entropy costs. Measures and prints; asserts nothing.
//!
//! ```text
//! cargo run --release -p dynamo-anti-entropy --example bench [-- RUNS [admission]]
//! ```
//!
//! Files go under `$DYNAMO_BENCH_DIR` (default: the system temp dir). Figures are medians of
//! RUNS rounds (default 3).
//!
//! 1. Tree maintenance per write: hashing the old and the new object's causal metadata and
//!    applying the XOR to the tree (what [`TrackingEngine`] adds to every write), in ns.
//! 2. Put throughput with the tracking wrapper on and off, in the same run: `put_local` with
//!    `Durability::Sync` from 64 threads on redb (as the storage bench measures it), and from
//!    one thread on the memory engine (no fsync: the wrapper's CPU cost at its most visible).
//! 3. Bytes exchanged per partition, with the real service over in-process peers: replicas that
//!    agree, and that differ by d keys, for a partition of 15,625 keys (a 1M-key store on 64
//!    partitions), until the pair agrees again (two exchanges per round: find, then confirm and
//!    repair).
//! 4. Repairing a wiped replica of 100,000 keys (redb, sync) by exchanges, beside copying the
//!    same objects raw (scan and merge, no exchange).
//! 5. Admission control: the p99 of a foreground writer on a node (sync puts, one thread) while
//!    that node's worker (up to 4 jobs at once) repairs a wiped peer of 50,000 keys, with the
//!    controller off, on (10 ms target), on with a 1 ms target, and alone (no background work).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamo_anti_entropy::{
    AntiEntropy, HashTree, KeyClocks, KeyObject, LatencySamples, Leaf, Options, Parts, Peers,
    Result, TrackingEngine, Trees, leaf_of, value_hash,
};
use dynamo_ring::{Member, NodeId, PartitionId, Ring};
use dynamo_storage::{
    Content, Durability, Engine, EngineExt, MemoryEngine, ObjectKey, RedbEngine, VersionedObject,
};
use dynamo_versioning::{Actor, Context};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BoxError = Box<dyn std::error::Error>;

const VALUE_LEN: usize = 100;
const WRITERS: usize = 64;
const ROWS_PER_WRITER: usize = 200;
const SERIAL_PUTS: usize = 200_000;
const HASHES: usize = 1_000_000;
const PARTITION_KEYS: usize = 15_625;
const WIPED_KEYS: usize = 100_000;
const Q: u32 = 64;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// An object as a coordinator writes it: one sibling, a clock of three actors.
fn object(i: usize) -> VersionedObject {
    let mut o = VersionedObject::new();
    for actor in 1..=3u64 {
        let ctx = o.context();
        o.put(
            Actor::new(actor, 7),
            &ctx,
            Content::new(vec![b'v'; VALUE_LEN]),
            i as u64,
        );
    }
    o
}

fn tree_maintenance() -> f64 {
    let objects: Vec<(Vec<u8>, VersionedObject, VersionedObject)> = (0..1000)
        .map(|i| {
            let old = object(i);
            let mut new = old.clone();
            let ctx = new.context();
            new.put(Actor::new(1, 7), &ctx, Content::new("w"), 1);
            (format!("key-{i:08}").into_bytes(), old, new)
        })
        .collect();
    let mut tree = HashTree::new();
    let started = Instant::now();
    for n in 0..HASHES {
        let (k, old, new) = &objects[n % objects.len()];
        // What the tracking engine does per write: the leaf, the old and the new hash.
        let leaf = leaf_of(b"bench", k);
        let o = value_hash(b"bench", k, old);
        let n = value_hash(b"bench", k, new);
        tree.update(leaf, o, n);
    }
    std::hint::black_box(tree.root());
    started.elapsed().as_nanos() as f64 / HASHES as f64
}

fn tracked(inner: Arc<dyn Engine>) -> Arc<dyn Engine> {
    let trees = Trees::new();
    trees.track(&(0..Q).map(PartitionId).collect());
    for p in 0..Q {
        trees.begin_build(PartitionId(p)).ok();
        trees.finish_build(PartitionId(p), &HashTree::new(), 0).ok();
    }
    Arc::new(TrackingEngine::new(
        inner,
        trees,
        Arc::new(LatencySamples::default()),
    ))
}

fn key(i: usize) -> ObjectKey {
    ObjectKey::new(
        PartitionId((i % Q as usize) as u32),
        "bench",
        format!("key-{i:08}"),
    )
}

/// `put_local` from 64 threads, `Durability::Sync`: puts/s.
fn parallel_puts(engine: &Arc<dyn Engine>) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for w in 0..WRITERS {
            let engine = Arc::clone(engine);
            scope.spawn(move || {
                for r in 0..ROWS_PER_WRITER {
                    let k = key(w * ROWS_PER_WRITER + r);
                    let content = Content::new(vec![b'v'; VALUE_LEN]);
                    let _ = engine.put_local(&k, Actor::new(1, 1), &Context::empty(), content, 1);
                }
            });
        }
    });
    (WRITERS * ROWS_PER_WRITER) as f64 / started.elapsed().as_secs_f64()
}

/// `put_local` from one thread on the memory engine: puts/s.
fn serial_puts(engine: &Arc<dyn Engine>) -> f64 {
    let started = Instant::now();
    for i in 0..SERIAL_PUTS {
        let content = Content::new(vec![b'v'; VALUE_LEN]);
        let _ = engine.put_local(&key(i), Actor::new(1, 1), &Context::empty(), content, 1);
    }
    SERIAL_PUTS as f64 / started.elapsed().as_secs_f64()
}

/// In-process peers.
struct Local(Vec<(NodeId, AntiEntropy)>);

impl Local {
    fn at(&self, to: &NodeId) -> &AntiEntropy {
        &self.0.iter().find(|(n, _)| n == to).expect("known peer").1
    }
}

impl Peers for Local {
    async fn ae_root(&self, to: &NodeId, p: PartitionId, f: &NodeId, _: Duration) -> Result<u64> {
        self.at(to).serve_root(p, f)
    }
    async fn ae_branches(&self, to: &NodeId, p: PartitionId, _: Duration) -> Result<Vec<u64>> {
        self.at(to).serve_branches(p)
    }
    async fn ae_leaves(
        &self,
        to: &NodeId,
        p: PartitionId,
        b: Vec<usize>,
        _: Duration,
    ) -> Result<Vec<Vec<u64>>> {
        self.at(to).serve_leaves(p, &b)
    }
    async fn ae_key_clocks(
        &self,
        to: &NodeId,
        p: PartitionId,
        l: Vec<Leaf>,
        m: usize,
        _: Duration,
    ) -> Result<KeyClocks> {
        self.at(to).serve_key_clocks(p, l, m).await
    }
    async fn ae_fetch(
        &self,
        to: &NodeId,
        p: PartitionId,
        k: Vec<(Vec<u8>, Vec<u8>)>,
        _: Duration,
    ) -> Result<Vec<KeyObject>> {
        self.at(to).serve_fetch(p, k).await
    }
    async fn ae_push(
        &self,
        to: &NodeId,
        p: PartitionId,
        f: &NodeId,
        o: Vec<KeyObject>,
        _: Duration,
    ) -> Result<()> {
        self.at(to).serve_push(p, f, o).await
    }
}

struct Pair {
    ring: Ring,
    a: (NodeId, Arc<dyn Engine>, AntiEntropy),
    b: (NodeId, Arc<dyn Engine>, AntiEntropy),
}

fn service(
    me: &NodeId,
    ring: &Ring,
    raw: Arc<dyn Engine>,
) -> (NodeId, Arc<dyn Engine>, AntiEntropy) {
    let trees = Trees::new();
    let latency = Arc::new(LatencySamples::default());
    let engine: Arc<dyn Engine> = Arc::new(TrackingEngine::new(
        raw,
        Arc::clone(&trees),
        Arc::clone(&latency),
    ));
    let ae = AntiEntropy::new(Parts {
        me: me.clone(),
        ring: ring.clone(),
        engine: Arc::clone(&engine),
        trees,
        latency,
        now_ms: Arc::new(|| 0),
        is_lww: Arc::new(|_| false),
        seed: 1,
        options: Options {
            n: 2,
            ..Options::default()
        },
    });
    (me.clone(), engine, ae)
}

fn pair(raw_a: Arc<dyn Engine>, raw_b: Arc<dyn Engine>) -> Result<Pair> {
    let (a, b) = (
        NodeId::new("a").map_err(err)?,
        NodeId::new("b").map_err(err)?,
    );
    let ring =
        Ring::new(Q, vec![Member::new(a.clone()), Member::new(b.clone())], 2).map_err(err)?;
    Ok(Pair {
        a: service(&a, &ring, raw_a),
        b: service(&b, &ring, raw_b),
        ring,
    })
}

fn err(e: impl std::fmt::Display) -> dynamo_anti_entropy::Error {
    dynamo_anti_entropy::Error::Internal(e.to_string())
}

/// The `i`-th key of partition `p` of `ring` (bucket "bench").
fn keys_of(ring: &Ring, p: PartitionId, count: usize) -> Vec<ObjectKey> {
    (0..)
        .map(|i| format!("key-{i:09}"))
        .filter(|k| ring.partition_for_key(b"bench", k.as_bytes()) == p)
        .take(count)
        .map(|k| ObjectKey::new(p, "bench", k))
        .collect()
}

/// Exchanges `p` between the pair until it agrees; returns (exchanges, bytes).
async fn converge(pair: &Pair, p: PartitionId, peers: &Local) -> Result<(usize, u64)> {
    let (mut exchanges, mut bytes) = (0, 0);
    loop {
        let report = pair.a.2.exchange(peers, p, &pair.b.0).await?;
        exchanges += 1;
        bytes += report.bytes;
        if report.differences == 0 && !report.truncated {
            return Ok((exchanges, bytes));
        }
    }
}

async fn bytes_per_partition(differing: usize) -> Result<(usize, u64)> {
    let mem = || -> Arc<dyn Engine> { Arc::new(MemoryEngine::new()) };
    let pair = pair(mem(), mem())?;
    let p = PartitionId(5);
    for (_, _, ae) in [&pair.a, &pair.b] {
        ae.build(p).await?;
    }
    let keys = keys_of(&pair.ring, p, PARTITION_KEYS);
    for (i, k) in keys.iter().enumerate() {
        let o = object(i);
        pair.a.1.put_merge(k, o.clone())?;
        pair.b.1.put_merge(k, o)?;
    }
    for k in keys.iter().take(differing) {
        let stored = pair.a.1.get(k)?.unwrap_or_default();
        pair.a.1.put_local(
            k,
            Actor::new(9, 1),
            &stored.context(),
            Content::new("new"),
            2,
        )?;
    }
    let peers = Local(vec![
        (pair.a.0.clone(), pair.a.2.clone()),
        (pair.b.0.clone(), pair.b.2.clone()),
    ]);
    converge(&pair, p, &peers).await
}

async fn wipe_repair(dir: &Path) -> std::result::Result<(f64, f64), BoxError> {
    let open = |name: &str| -> std::result::Result<Arc<dyn Engine>, BoxError> {
        Ok(Arc::new(RedbEngine::open(
            dir.join(name),
            dynamo_storage::Options::with_durability(Durability::Sync),
        )?))
    };
    let pair = pair(open("a.redb")?, open("b.redb")?)?;
    // Load A in batches (one flush each) so loading does not dominate the run.
    for chunk in (0..WIPED_KEYS).collect::<Vec<_>>().chunks(1000) {
        for &i in chunk {
            let k = format!("key-{i:09}");
            let p = pair.ring.partition_for_key(b"bench", k.as_bytes());
            pair.a
                .1
                .put_merge_with(&ObjectKey::new(p, "bench", k), Durability::None, object(i))?;
        }
        pair.a.1.flush()?;
    }
    let partitions: Vec<PartitionId> = (0..Q).map(PartitionId).collect();
    for &p in &partitions {
        pair.a.2.build(p).await?;
        pair.b.2.build(p).await?;
    }
    let peers = Local(vec![
        (pair.a.0.clone(), pair.a.2.clone()),
        (pair.b.0.clone(), pair.b.2.clone()),
    ]);
    let started = Instant::now();
    for &p in &partitions {
        converge(&pair, p, &peers).await?;
    }
    let repair = started.elapsed().as_secs_f64();

    let copy = open("copy.redb")?;
    let started = Instant::now();
    for &p in &partitions {
        let mut after: Option<ObjectKey> = None;
        loop {
            let page = pair.a.1.scan_partition(p, after.as_ref(), 512)?;
            for (k, o) in &page {
                copy.put_merge_with(k, Durability::None, o.clone())?;
            }
            copy.flush()?;
            if page.len() < 512 {
                break;
            }
            after = page.last().map(|(k, _)| k.clone());
        }
    }
    Ok((repair, started.elapsed().as_secs_f64()))
}

const ADMISSION_KEYS: usize = 50_000;

/// Sync puts from one thread on `engine` until `stop`; returns each put's latency.
fn foreground(
    engine: Arc<dyn Engine>,
    ring: Ring,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let mut i = 0usize;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let k = format!("fg-{i:09}");
        let p = ring.partition_for_key(b"fg", k.as_bytes());
        let started = Instant::now();
        let _ = engine.put_local(
            &ObjectKey::new(p, "fg", k),
            Actor::new(5, 1),
            &Context::empty(),
            Content::new(vec![b'f'; VALUE_LEN]),
            1,
        );
        latencies.push(started.elapsed());
        i += 1;
    }
    latencies
}

fn p99(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() * 99 / 100)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// Foreground p99 (ms) and repair time (s) with the controller `on`, or foreground alone.
async fn admission(dir: &Path, mode: &str) -> std::result::Result<(f64, f64, usize), BoxError> {
    let open = |name: &str| -> std::result::Result<Arc<dyn Engine>, BoxError> {
        Ok(Arc::new(RedbEngine::open(
            dir.join(name),
            dynamo_storage::Options::with_durability(Durability::Sync),
        )?))
    };
    let (raw_a, raw_b) = (open("a.redb")?, open("b.redb")?);
    let (a, b) = (NodeId::new("a")?, NodeId::new("b")?);
    let ring = Ring::new(Q, vec![Member::new(a.clone()), Member::new(b.clone())], 2)?;
    let options = Options {
        n: 2,
        exchange_interval: Duration::from_millis(200),
        confirm_delay: Duration::from_millis(50),
        tick: Duration::from_millis(20),
        admission_control: mode.starts_with("on"),
        admission: dynamo_anti_entropy::AdmissionOptions {
            max_permits: 4,
            // "on-1ms": a target below what this load reaches, so the controller acts.
            target_p99: if mode == "on-1ms" {
                Duration::from_millis(1)
            } else {
                dynamo_anti_entropy::TARGET_P99
            },
            ..Default::default()
        },
        ..Options::default()
    };
    let make = |me: &NodeId, raw: Arc<dyn Engine>| {
        let trees = Trees::new();
        let latency = Arc::new(LatencySamples::default());
        let engine: Arc<dyn Engine> = Arc::new(TrackingEngine::new(
            raw,
            Arc::clone(&trees),
            Arc::clone(&latency),
        ));
        let ae = AntiEntropy::new(Parts {
            me: me.clone(),
            ring: ring.clone(),
            engine: Arc::clone(&engine),
            trees,
            latency,
            now_ms: Arc::new(|| 0),
            is_lww: Arc::new(|_| false),
            seed: 3,
            options: options.clone(),
        });
        (engine, ae)
    };
    let (engine_a, ae_a) = make(&a, raw_a);
    let (_engine_b, ae_b) = make(&b, raw_b);
    for chunk in (0..ADMISSION_KEYS).collect::<Vec<_>>().chunks(1000) {
        for &i in chunk {
            let k = format!("key-{i:09}");
            let p = ring.partition_for_key(b"bench", k.as_bytes());
            engine_a.put_merge_with(&ObjectKey::new(p, "bench", k), Durability::None, object(i))?;
        }
        engine_a.flush()?;
    }
    for p in (0..Q).map(PartitionId) {
        ae_a.build(p).await?;
        ae_b.build(p).await?;
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (engine, stop, ring) = (Arc::clone(&engine_a), Arc::clone(&stop), ring.clone());
        std::thread::spawn(move || foreground(engine, ring, stop))
    };
    let started = Instant::now();
    let token = tokio_util::sync::CancellationToken::new();
    if mode == "alone" {
        tokio::time::sleep(Duration::from_secs(5)).await;
    } else {
        let peers = Arc::new(Local(vec![
            (a.clone(), ae_a.clone()),
            (b.clone(), ae_b.clone()),
        ]));
        let worker = tokio::spawn(ae_a.clone().run_worker(peers, token.clone()));
        while ae_b.status().keys() < ADMISSION_KEYS as u64
            && started.elapsed() < Duration::from_secs(300)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        token.cancel();
        worker.await?;
    }
    let repair = started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let latencies = writer
        .join()
        .map_err(|_| "the foreground writer panicked")?;
    let puts = latencies.len();
    Ok((p99(latencies), repair, puts))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::result::Result<(), BoxError> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    let base = std::env::var_os("DYNAMO_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);

    // `-- RUNS admission` runs only the admission-control figures.
    let only_admission = std::env::args().nth(2).as_deref() == Some("admission");
    if !only_admission {
        other_figures(runs, &base).await?;
    }
    admission_figures(runs, &base).await
}

async fn other_figures(runs: usize, base: &Path) -> std::result::Result<(), BoxError> {
    let ns = median((0..runs).map(|_| tree_maintenance()).collect());
    println!("tree maintenance per write (leaf + hash old + hash new + XOR update): {ns:.0} ns");

    let (mut on, mut off, mut mem_on, mut mem_off) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        for tracking in [false, true] {
            let dir = tempfile::tempdir_in(base)?;
            let raw: Arc<dyn Engine> = Arc::new(RedbEngine::open(
                dir.path().join("e.redb"),
                dynamo_storage::Options::with_durability(Durability::Sync),
            )?);
            let engine = if tracking { tracked(raw) } else { raw };
            let rate = parallel_puts(&engine);
            if tracking {
                on.push(rate)
            } else {
                off.push(rate)
            }
            let mem: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
            let mem = if tracking { tracked(mem) } else { mem };
            let rate = serial_puts(&mem);
            if tracking {
                mem_on.push(rate)
            } else {
                mem_off.push(rate)
            }
        }
    }
    let (on, off) = (median(on), median(off));
    println!(
        "redb sync, 64 threads: puts/s with tracking {on:.0}, without {off:.0} (ratio {:.3})",
        on / off
    );
    let (mem_on, mem_off) = (median(mem_on), median(mem_off));
    println!(
        "memory engine, 1 thread: puts/s with tracking {mem_on:.0}, without {mem_off:.0} (ratio {:.3})",
        mem_on / mem_off
    );

    for differing in [0, 1, 2, 157, PARTITION_KEYS / 10] {
        let (exchanges, bytes) = bytes_per_partition(differing).await?;
        println!(
            "partition of {PARTITION_KEYS} keys, {differing} differing: {exchanges} exchanges, \
             {bytes} bytes until agreement"
        );
    }

    let (mut repair, mut copy) = (vec![], vec![]);
    for _ in 0..runs {
        let dir = tempfile::tempdir_in(base)?;
        let (r, c) = wipe_repair(dir.path()).await?;
        repair.push(r);
        copy.push(c);
    }
    println!(
        "wiped replica of {WIPED_KEYS} keys (redb sync, in-process peers): repaired by exchanges in \
         {:.2} s; raw copy (scan + merge + flush per page) {:.2} s",
        median(repair),
        median(copy)
    );
    Ok(())
}

async fn admission_figures(runs: usize, base: &Path) -> std::result::Result<(), BoxError> {
    for mode in ["alone", "off", "on", "on-1ms"] {
        let (mut p99s, mut repairs, mut puts) = (vec![], vec![], vec![]);
        for _ in 0..runs {
            let dir = tempfile::tempdir_in(base)?;
            let (p, r, n) = admission(dir.path(), mode).await?;
            p99s.push(p);
            repairs.push(r);
            puts.push(n as f64 / r);
        }
        let what = match mode {
            "alone" => "no background work".to_string(),
            m => format!(
                "repairing a wiped peer of {ADMISSION_KEYS} keys, admission control {m}, took {:.2} s",
                median(repairs)
            ),
        };
        println!(
            "foreground sync puts, {what}: p99 {:.2} ms, {:.0} puts/s",
            median(p99s),
            median(puts)
        );
    }
    Ok(())
}
