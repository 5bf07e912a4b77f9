//! Growing and shrinking a cluster of real processes under load (issue 7's end-to-end test).
//!
//! Three `dynamo server` processes take a preload, then a bounded client write load of unique
//! keys (every acknowledged key is recorded) runs the whole time while: two lone nodes join
//! through `dynamo admin cluster join`, `plan` and `commit`; a sender is SIGKILLed while it
//! streams a partition and started again from its data directory (the transfer resumes from its
//! persisted cursor: the sender logs `resumed=true` when it does); the next ring is installed on
//! every node with no transfer pending; then `n3` leaves (plan, commit) until it is removed and the
//! ring no longer lists it. Afterwards every acknowledged write must be readable with R = PR =
//! all, every member must hold the same ring, the leaver's data file (opened after the process
//! stopped) must hold no object of any partition, and every member must show it as removed.
//!
//! The test prints a short report (acked, lost, phase times, keys transferred); it asserts no
//! time.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use dynamo_client::{Client, GetRequest, Quorum};
use dynamo_integration_tests::procs::{ProcCluster, poll_until};
use dynamo_ring::PartitionId;
use dynamo_storage::{Engine as _, Options, RedbEngine};
use futures::StreamExt as _;
use parking_lot::Mutex;
use serde_json::Value;

/// Keys written before the join (a debug build with fsync on every group commit writes a few
/// hundred a second on a loaded two-core machine).
/// `GROW_SHRINK_PRELOAD` overrides it (for measurements).
const PRELOAD: usize = 2_000;

/// Bytes of every value.
/// `GROW_SHRINK_VALUE_BYTES` overrides it (for measurements).
const VALUE_BYTES: usize = 256;

/// `name`'s value as a number, or `default` when it is unset or not a number.
fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn preload_keys() -> usize {
    setting("GROW_SHRINK_PRELOAD", PRELOAD)
}

/// Seconds of steady load before the join and again before the leave: 0 in CI;
/// `GROW_SHRINK_STEADY_SECS` sets it for measurements of the write load around a change.
fn steady() -> Duration {
    Duration::from_secs(setting("GROW_SHRINK_STEADY_SECS", 0) as u64)
}

fn value_bytes() -> usize {
    setting("GROW_SHRINK_VALUE_BYTES", VALUE_BYTES)
}

/// Requests in flight at once (preload and reads).
const CONCURRENCY: usize = 16;

/// Writers of the background load: enough to keep writes flowing through every phase, few
/// enough to leave the transfers some of the two cores.
const LOAD_WRITERS: usize = 4;

/// Most keys the background load writes, and the longest it runs: the bounds of the loop.
const LOAD_MAX_KEYS: u64 = 200_000;
const LOAD_MAX_TIME: Duration = Duration::from_secs(150);

/// Longest one phase (gossip, transfers, a restart) may take on a loaded debug build.
const PHASE_TIMEOUT: Duration = Duration::from_secs(90);

/// Pause between two polls of the admin commands.
const POLL: Duration = Duration::from_millis(100);

/// Partitions per ring in [`ProcCluster`].
const Q: u32 = 64;

const BUCKET: &[u8] = b"grow";

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynamo-under-test"))
}

async fn admin_json(cluster: &ProcCluster, i: usize, args: &[&str]) -> anyhow::Result<Value> {
    cluster.admin_json(i, args).await
}

/// Polls `check` until it returns `Some`, failing after [`PHASE_TIMEOUT`] with the last error
/// or value seen.
async fn poll<T, F, Fut>(what: &str, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    poll_until(what, PHASE_TIMEOUT, POLL, check).await
}

fn value_of(key: &str) -> Vec<u8> {
    let mut v = key.as_bytes().to_vec();
    v.resize(value_bytes(), b'.');
    v
}

/// The background load: unique keys `w{i}`, each recorded once the cluster acknowledged it.
struct Load {
    started: Instant,
    acked: Mutex<Vec<String>>,
    /// (when it was acknowledged, since `started`; its latency) of every acknowledged write.
    samples: Mutex<Vec<(Duration, Duration)>>,
    failed: AtomicU64,
    next: AtomicU64,
    stop: AtomicBool,
}

impl Load {
    async fn run(self: Arc<Self>, client: Client) {
        let started = self.started;
        let workers = (0..LOAD_WRITERS).map(|_| {
            let load = Arc::clone(&self);
            let client = client.clone();
            async move {
                while !load.stop.load(Ordering::Relaxed) && started.elapsed() < LOAD_MAX_TIME {
                    let i = load.next.fetch_add(1, Ordering::Relaxed);
                    if i >= LOAD_MAX_KEYS {
                        break;
                    }
                    let key = format!("w{i}");
                    let put =
                        client.put(BUCKET, key.as_bytes(), value_of(&key), Default::default());
                    let sent = Instant::now();
                    match put.await {
                        Ok(_) => {
                            load.samples
                                .lock()
                                .push((started.elapsed(), sent.elapsed()));
                            load.acked.lock().push(key);
                        }
                        Err(_) => {
                            load.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
        futures::future::join_all(workers).await;
    }

    /// Throughput (acknowledged writes a second) and the median and 99.9th percentile latency
    /// of the writes acknowledged between `from` and `to`.
    fn window(&self, from: Instant, to: Instant) -> String {
        let (from, to) = (
            from.saturating_duration_since(self.started),
            to.saturating_duration_since(self.started),
        );
        let mut latencies: Vec<Duration> = self
            .samples
            .lock()
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, l)| *l)
            .collect();
        latencies.sort();
        let pick = |q: f64| {
            let i = ((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1);
            latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        let secs = (to - from).as_secs_f64().max(f64::EPSILON);
        format!(
            "{:7.1} writes/s  p50 {:6.1} ms  p99.9 {:7.1} ms  ({} writes in {:.1} s)",
            latencies.len() as f64 / secs,
            pick(0.5),
            pick(0.999),
            latencies.len(),
            secs
        )
    }
}

/// Joins the lone nodes `joiners` through n1, plans and commits at n1 (polling until the commit
/// is accepted), and returns the plan.
async fn join_and_commit(cluster: &ProcCluster, joiners: &[usize]) -> anyhow::Result<Value> {
    let seed = cluster.nodes[0].rpc_addr.to_string();
    for &j in joiners {
        cluster.admin(j, &["cluster", "join", &seed]).await?;
    }
    let ids: Vec<String> = joiners
        .iter()
        .map(|&j| cluster.nodes[j].id.clone())
        .collect();
    poll("the joins staged at n1", || async {
        let plan = admin_json(cluster, 0, &["cluster", "plan"]).await?;
        let staged = plan["changes"].as_array().map_or(0, Vec::len);
        Ok((staged == ids.len()).then_some(()))
    })
    .await?;
    commit(cluster).await
}

/// Plans and commits at n1 until the commit is accepted; returns the plan committed.
async fn commit(cluster: &ProcCluster) -> anyhow::Result<Value> {
    poll("commit accepted", || async {
        let plan = admin_json(cluster, 0, &["cluster", "plan"]).await?;
        Ok(cluster
            .admin(0, &["cluster", "commit"])
            .await
            .ok()
            .map(|_| plan))
    })
    .await
}

/// Waits until every node in `nodes` holds ring epoch `epoch` with no change pending, and
/// returns the ring they agree on.
async fn wait_installed(
    cluster: &ProcCluster,
    nodes: &[usize],
    epoch: u64,
) -> anyhow::Result<Value> {
    let mut rings = Vec::new();
    for &i in nodes {
        let ring = poll("the next ring installed", || async {
            let ring = admin_json(cluster, i, &["ring"]).await?;
            let transfers = admin_json(cluster, i, &["transfers"]).await?;
            Ok((ring["epoch"] == epoch
                && ring["next_epoch"].is_null()
                && transfers["pending"] == 0)
                .then_some(ring))
        })
        .await
        .with_context(|| format!("node {}", cluster.nodes[i].id))?;
        rings.push(ring);
    }
    let owners = &rings[0]["owners"];
    for (ring, i) in rings.iter().zip(nodes) {
        if ring["owners"] != *owners {
            bail!(
                "{} holds another ring: {ring} vs {}",
                cluster.nodes[*i].id,
                rings[0]
            );
        }
    }
    Ok(rings.swap_remove(0))
}

/// Every node's log length now, to read what it logs from here on with [`transfers_since`].
fn log_marks(cluster: &ProcCluster) -> anyhow::Result<Vec<usize>> {
    cluster
        .nodes
        .iter()
        .map(|n| Ok(std::fs::read_to_string(&n.log_path).map_or(0, |l| l.len())))
        .collect()
}

/// Transfers completed since `marks` as the senders logged them: (count, keys, resumed).
fn transfers_since(cluster: &ProcCluster, marks: &[usize]) -> anyhow::Result<(u64, u64, u64)> {
    let (mut count, mut keys, mut resumed) = (0, 0, 0);
    for (i, node) in cluster.nodes.iter().enumerate() {
        let log = std::fs::read_to_string(&node.log_path)?;
        let from = marks.get(i).copied().unwrap_or(0).min(log.len());
        for line in log[from..].lines().map(strip_ansi) {
            if !line.contains("partition transfer complete") {
                continue;
            }
            count += 1;
            keys += line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("keys="))
                .and_then(|k| k.parse::<u64>().ok())
                .unwrap_or(0);
            resumed += u64::from(line.contains("resumed=true"));
        }
    }
    Ok((count, keys, resumed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_from_three_to_five_and_shrink_under_load() -> anyhow::Result<()> {
    let mut cluster = ProcCluster::start(binary(), 3, "").await?;
    let client = Client::connect(cluster.client_config()).await?;
    let t = Instant::now();
    let preload_keys = preload_keys();
    futures::stream::iter(0..preload_keys)
        .map(|k| {
            let client = client.clone();
            async move {
                let key = format!("p{k}");
                client
                    .put(BUCKET, key.as_bytes(), value_of(&key), Default::default())
                    .await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let preload = t.elapsed();

    let load = Arc::new(Load {
        started: Instant::now(),
        acked: Mutex::new(Vec::new()),
        samples: Mutex::new(Vec::new()),
        failed: AtomicU64::new(0),
        next: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let load_task = tokio::spawn(Arc::clone(&load).run(client.clone()));

    // A steady load to compare with (not a wait for a condition).
    tokio::time::sleep(steady()).await;

    // Phase 1: n4 and n5 join; n2 is killed while it streams and started again.
    let t = Instant::now();
    let n4 = cluster.add_lone_node("").await?;
    let n5 = cluster.add_lone_node("").await?;
    let marks = log_marks(&cluster)?;
    let plan = join_and_commit(&cluster, &[n4, n5]).await?;
    let joined_epoch = plan["next_epoch"]
        .as_u64()
        .context("the plan's next epoch")?;
    let committed = t.elapsed();
    let join_committed_at = Instant::now();
    let stored_at_join = preload_keys + load.acked.lock().len();
    let join_copies = plan["transfers"].as_u64().unwrap_or(0);

    let t = Instant::now();
    let sender = 1;
    let sender_id = cluster.nodes[sender].id.clone();
    // Mid-change: n2 streams a copy, or some copies are synced while n2 still has some to send.
    poll("n2 in the middle of its transfers", || async {
        let transfers = admin_json(&cluster, sender, &["transfers"]).await?;
        if transfers["pending"] == 0 {
            bail!("the change finished before n2 could be killed: {transfers}");
        }
        let from_n2 = |phase: &str| {
            transfers["active"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|t| t["from"] == sender_id.as_str() && t["phase"] == phase)
            })
        };
        let synced = transfers["synced"].as_u64().unwrap_or(0);
        Ok((from_n2("streaming") || (from_n2("waiting") && synced > 0)).then_some(()))
    })
    .await?;
    let before_kill = std::fs::read_to_string(&cluster.nodes[sender].log_path)?.len();
    let at_kill = transfers_since(&cluster, &marks)?;
    cluster.kill(sender)?;
    cluster.restart(sender).await?;
    let everyone: Vec<usize> = (0..cluster.nodes.len()).collect();
    let ring = wait_installed(&cluster, &everyone, joined_epoch).await?;
    let installed = t.elapsed();
    let installed_at = Instant::now();
    let joined = transfers_since(&cluster, &marks)?;
    let sender_log = std::fs::read_to_string(&cluster.nodes[sender].log_path)?;
    let after_restart = strip_ansi(&sender_log[before_kill..]);
    let resumed = after_restart.matches("resumed=true").count();
    let completed = after_restart.matches("partition transfer complete").count();
    assert!(
        ring["owners"]
            .as_array()
            .is_some_and(|o| o.iter().any(|n| n == "n4") && o.iter().any(|n| n == "n5")),
        "{ring}"
    );

    tokio::time::sleep(steady()).await;

    // Phase 2: n3 leaves.
    let t = Instant::now();
    let leaver = 2;
    let members = admin_json(&cluster, 0, &["members"]).await?;
    let leaver_replicas = members
        .as_array()
        .and_then(|m| m.iter().find(|m| m["id"] == "n3"))
        .and_then(|m| m["replicas"].as_u64())
        .context("n3's replicated partitions")? as usize;
    let marks = log_marks(&cluster)?;
    let leave_log_mark = marks[leaver];
    cluster.admin(0, &["cluster", "leave", "n3"]).await?;
    let plan = commit(&cluster).await?;
    let leave_committed_at = Instant::now();
    let stored_at_leave = preload_keys + load.acked.lock().len();
    let leave_copies = plan["transfers"].as_u64().unwrap_or(0);
    let left_epoch = plan["next_epoch"]
        .as_u64()
        .context("the plan's next epoch")?;
    let rest: Vec<usize> = everyone.iter().copied().filter(|&i| i != leaver).collect();
    let ring = wait_installed(&cluster, &rest, left_epoch).await?;
    if ring["owners"]
        .as_array()
        .is_some_and(|o| o.iter().any(|n| n == "n3"))
    {
        bail!("the ring still lists n3: {ring}");
    }
    for &i in &rest {
        poll("n3 removed", || async {
            let members = admin_json(&cluster, i, &["members"]).await?;
            let n3 = members
                .as_array()
                .and_then(|m| m.iter().find(|m| m["id"] == "n3"))
                .map(|m| m["status"].clone());
            Ok(n3.filter(|s| s == "removed" || s == "exiting").map(|_| ()))
        })
        .await?;
    }
    let left = t.elapsed();
    let removed_at = Instant::now();
    let shrunk = transfers_since(&cluster, &marks)?;
    load.stop.store(true, Ordering::Relaxed);
    load_task.await?;

    // The leaver drops every partition it replicated once every member has seen the ring
    // without it (it logs each one), then stops; its data file must hold no object.
    let from = leave_log_mark;
    poll("n3 released its partitions", || async {
        let log = std::fs::read_to_string(&cluster.nodes[leaver].log_path)?;
        let since = log.get(from..).unwrap_or_default();
        Ok(since
            .contains("released every partition it replicated")
            .then_some(()))
    })
    .await?;
    cluster.stop(leaver).await?;
    let (live, dead) = count_objects(&cluster.dir().join("n3").join("dynamo.redb"))?;

    // Every acknowledged write reads back with every primary answering.
    let client = Client::connect(cluster.client_config()).await?;
    let acked = load.acked.lock().clone();
    let keys: Vec<String> = (0..preload_keys)
        .map(|k| format!("p{k}"))
        .chain(acked.iter().cloned())
        .collect();
    let t = Instant::now();
    let lost: Vec<String> = futures::stream::iter(keys.iter().cloned())
        .map(|key| {
            let client = client.clone();
            async move {
                let mut request = GetRequest::new(BUCKET, key.as_bytes());
                request.r = Quorum::All;
                request.pr = Quorum::All;
                let found = client.get_with(request).await;
                let ok = found.is_ok_and(|f| {
                    f.siblings()
                        .iter()
                        .map(|s| s.value.value.to_vec())
                        .collect::<Vec<_>>()
                        == vec![value_of(&key)]
                });
                (!ok).then_some(key)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|k| async move { k })
        .collect()
        .await;
    let verified = t.elapsed();

    println!("grow/shrink report");
    println!(
        "  preload            {preload_keys} keys of {} bytes in {preload:?}",
        value_bytes()
    );
    println!(
        "  load               {} acked, {} failed (not acknowledged)",
        acked.len(),
        load.failed.load(Ordering::Relaxed)
    );
    println!(
        "  writes before join  {}",
        load.window(load.started, join_committed_at)
    );
    println!(
        "  writes during join  {}",
        load.window(join_committed_at, installed_at)
    );
    println!(
        "  writes after join   {}",
        load.window(installed_at, leave_committed_at)
    );
    println!(
        "  writes during leave {}",
        load.window(leave_committed_at, removed_at)
    );
    println!("  join n4+n5         committed after {committed:?}, installed {installed:?} later");
    println!(
        "    transfers        {} copies ({join_copies} planned), {} keys sent (senders' logs); {} copies done when n2 was killed",
        joined.0, joined.1, at_kill.0
    );
    println!(
        "    ideal            {} keys ({stored_at_join} stored at commit x {join_copies} copies / Q {Q}); {:.1} MB/s of values over the install time",
        stored_at_join as u64 * join_copies / u64::from(Q),
        (joined.1 * value_bytes() as u64) as f64 / installed.as_secs_f64() / 1e6
    );
    println!("    n2 after restart {completed} copies complete, {resumed} resumed from a cursor");
    println!(
        "  leave n3           removed after {left:?}; {} copies ({leave_copies} planned), {} keys sent; ideal {} keys ({stored_at_leave} x {leave_copies} / {Q})",
        shrunk.0,
        shrunk.1,
        stored_at_leave as u64 * leave_copies / u64::from(Q)
    );
    println!(
        "  n3's data file     {live} live objects, {dead} tombstones after releasing its {leaver_replicas} partitions (redb opened after SIGTERM)"
    );
    println!(
        "  verify             {} keys read with R=PR=all in {verified:?}",
        keys.len()
    );
    println!("  lost               {}", lost.len());
    assert!(
        lost.is_empty(),
        "lost {} acked writes, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert_eq!(live, 0);
    for &i in &rest {
        let members = admin_json(&cluster, i, &["members"]).await?;
        let n3 = members
            .as_array()
            .and_then(|m| m.iter().find(|m| m["id"] == "n3"))
            .context("n3 is listed")?;
        assert!(
            n3["status"] == "removed" || n3["status"] == "exiting",
            "{members}"
        );
    }
    Ok(())
}

/// Live objects and tombstones of every partition in the data file at `path` (the node that
/// wrote it must have stopped).
fn count_objects(path: &Path) -> anyhow::Result<(u64, u64)> {
    const PAGE: usize = 1024;
    let engine = RedbEngine::open(path, Options::default())?;
    let (mut live, mut dead) = (0, 0);
    for p in 0..Q {
        let mut after = None;
        loop {
            let page = engine.scan_partition(PartitionId(p), after.as_ref(), PAGE)?;
            for e in &page {
                if dynamo_storage::is_deleted(&e.1) {
                    dead += 1;
                } else {
                    live += 1;
                }
            }
            match page.last() {
                Some(e) if page.len() == PAGE => after = Some(e.0.clone()),
                _ => break,
            }
        }
    }
    Ok((live, dead))
}

/// `text` without the terminal colour sequences (`ESC [ ... m`) the human log format puts
/// around field names.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
