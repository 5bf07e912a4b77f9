//! Failure handling proven on real processes (paper 4.6): three `dynamo server` processes on
//! loopback take a write load from the Rust client while one of them is killed with SIGKILL and
//! restarted from its data directory, or frozen with SIGSTOP and let go. Afterwards every write
//! the cluster acknowledged must be readable, every hint must have been handed back to its owner,
//! and every acknowledged value must sit on both of its primary replicas.
//!
//! The load bucket has `n_val = 2` (so R = W = 2): with three nodes that leaves one fallback per
//! key, so a write whose primary is down lands on the fallback with a hint. With the default
//! N = 3 every node is a primary of every key, no fallback exists, and hinted handoff would not
//! be exercised at all.
//!
//! Each test prints one short report: writes attempted, acknowledged, failed (by error kind),
//! lost, hints left on the fallbacks during the outage, hint counters, and time to drain.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use dynamo_client::{Client, ClientConfig, Context, GetRequest, Quorum};
use dynamo_coordinator::Replicas;
use dynamo_integration_tests::procs::ProcCluster;
use dynamo_rpc::{ClusterAuth, PeerPool, TcpConnector};
use dynamo_storage::ObjectKey;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The bucket the load writes to.
const BUCKET: &str = "faults";

/// Every node's extra configuration: the load bucket keeps two replicas (see the module doc).
const EXTRA_TOML: &str = "[buckets.faults]\nn_val = 2\n";

/// Replicas per key in [`BUCKET`].
const N_VAL: usize = 2;

/// The node the faults hit (`n2`).
const VICTIM: usize = 1;

/// Concurrent writers: enough that a fault lands while writes are in flight on every node.
const WRITERS: usize = 4;

/// Upper bound on each writer's writes, so the load ends even if a phase never does.
const MAX_WRITES_PER_WRITER: u64 = 2_000;

/// Acknowledged writes each phase (before, during and after a fault) waits for: some hundreds of
/// keys spread over all 64 partitions, seconds of load on a debug build.
const ACKS_PER_PHASE: u64 = 300;

/// Longest a phase may take to see its acknowledgements. An always-writable cluster with one
/// node down should take a few seconds; twenty allows for a loaded machine.
const PHASE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the frozen node stays frozen (the task's figure): longer than the client's timeout,
/// so coordinators see it time out, mark it down and write hints.
const PAUSE: Duration = Duration::from_secs(5);

/// Longest the fallbacks may take to hand every hint back after the fault ends. Handoff runs
/// every half second in batches of 256, so a few hundred hints need about a second.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The client's request timeout: short, so writers stuck on a frozen node retry elsewhere
/// within the pause instead of after it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

/// Timeout of the checking reads and replica reads, once every node is up again.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Concurrent tasks checking acknowledged keys.
const CHECK_TASKS: usize = 8;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynamo-under-test"))
}

async fn start_cluster() -> anyhow::Result<(ProcCluster, Client)> {
    let cluster = ProcCluster::start(binary(), 3, EXTRA_TOML).await?;
    let config = ClientConfig {
        request_timeout: CLIENT_TIMEOUT,
        ..cluster.client_config()
    };
    let client = Client::connect(config).await?;
    Ok((cluster, client))
}

/// What one writer did.
#[derive(Default)]
struct WriterLog {
    attempted: u64,
    acked: Vec<String>,
    failed: Vec<String>,
    errors: BTreeMap<String, u64>,
}

/// A running write load: `WRITERS` tasks writing unique keys blindly until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    acked: watch::Receiver<u64>,
    writers: Vec<tokio::task::JoinHandle<WriterLog>>,
}

/// The value written under `key`: unique per key, so a read shows which write it returns.
fn value_of(key: &str) -> String {
    format!("value of {key}")
}

/// The error's kind, without its details (`Timeout`, `Unreachable`, ...).
fn kind(e: &dynamo_client::Error) -> String {
    let shown = match e {
        dynamo_client::Error::Request(inner) => format!("{inner:?}"),
        other => format!("{other:?}"),
    };
    shown
        .split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_string()
}

impl Load {
    fn start(client: &Client, tag: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, acked) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let writers = (0..WRITERS)
            .map(|w| {
                let (client, stop, tx) = (client.clone(), Arc::clone(&stop), Arc::clone(&tx));
                let prefix = format!("{tag}-w{w}");
                tokio::spawn(async move {
                    let mut log = WriterLog::default();
                    while !stop.load(Ordering::Relaxed) && log.attempted < MAX_WRITES_PER_WRITER {
                        let key = format!("{prefix}-{:06}", log.attempted);
                        log.attempted += 1;
                        let put =
                            client.put(BUCKET, key.as_str(), value_of(&key), Context::empty());
                        match put.await {
                            Ok(_) => {
                                log.acked.push(key);
                                tx.send_modify(|n| *n += 1);
                            }
                            Err(e) => {
                                *log.errors.entry(kind(&e)).or_default() += 1;
                                log.failed.push(key);
                            }
                        }
                    }
                    log
                })
            })
            .collect();
        Load {
            stop,
            acked,
            writers,
        }
    }

    /// Acknowledged writes so far.
    fn acked(&self) -> u64 {
        *self.acked.borrow()
    }

    /// Waits until `more` writes beyond the current count are acknowledged; returns how many
    /// were acknowledged meanwhile.
    async fn reach(&mut self, more: u64, phase: &str) -> anyhow::Result<u64> {
        let from = self.acked();
        let target = from + more;
        let reached = tokio::time::timeout(PHASE_TIMEOUT, self.acked.wait_for(|n| *n >= target))
            .await
            .map(|r| r.is_ok());
        match reached {
            Ok(true) => Ok(self.acked() - from),
            Ok(false) => bail!("every writer ended before {target} acknowledgements ({phase})"),
            Err(_) => bail!(
                "only {} of {more} writes acknowledged within {PHASE_TIMEOUT:?} {phase}",
                self.acked() - from
            ),
        }
    }

    /// Stops the writers and gathers what they did.
    async fn finish(mut self) -> anyhow::Result<WriterLog> {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = WriterLog::default();
        for writer in std::mem::take(&mut self.writers) {
            let log = writer.await.context("a writer panicked")?;
            total.attempted += log.attempted;
            total.acked.extend(log.acked);
            total.failed.extend(log.failed);
            for (k, n) in log.errors {
                *total.errors.entry(k).or_default() += n;
            }
        }
        Ok(total)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `hints_pending` from node `i`'s `/stats`.
async fn hints_pending(cluster: &ProcCluster, i: usize) -> anyhow::Result<u64> {
    let reply = cluster.http_get(i, "/stats").await?;
    if reply.status != 200 {
        bail!("GET /stats answered {}: {}", reply.status, reply.body);
    }
    let stats: serde_json::Value = serde_json::from_str(&reply.body)?;
    stats["hints_pending"]
        .as_u64()
        .context("/stats has no hints_pending")
}

/// Hints pending on the nodes `which`, summed.
async fn hints_pending_on(cluster: &ProcCluster, which: &[usize]) -> anyhow::Result<u64> {
    let mut total = 0;
    for &i in which {
        total += hints_pending(cluster, i).await?;
    }
    Ok(total)
}

/// Polls every node's `/stats` until no node holds a hint; returns how long that took.
async fn wait_for_hints_to_drain(cluster: &ProcCluster) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let mut pending = Vec::new();
        for i in 0..cluster.nodes.len() {
            pending.push(hints_pending(cluster, i).await.map_err(|e| e.to_string()));
        }
        if pending.iter().all(|p| p == &Ok(0)) {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= DRAIN_TIMEOUT {
            let logs: Vec<String> = (0..cluster.nodes.len())
                .map(|i| format!("--- n{} ---\n{}", i + 1, cluster.log_tail(i, 15)))
                .collect();
            bail!(
                "hints still pending after {DRAIN_TIMEOUT:?}: {pending:?}\n{}",
                logs.join("\n")
            );
        }
        tokio::time::sleep(dynamo_integration_tests::procs::POLL_INTERVAL).await;
    }
}

/// The sum over every node of the Prometheus series `name`, or `None` when no node exports it.
async fn metric_sum(cluster: &ProcCluster, name: &str) -> Option<u64> {
    let mut found = None;
    for i in 0..cluster.nodes.len() {
        let Ok(reply) = cluster.http_get(i, "/metrics").await else {
            continue;
        };
        for line in reply.body.lines() {
            let mut parts = line.split_whitespace();
            if parts.next() == Some(name)
                && let Some(value) = parts.next().and_then(|v| v.parse::<f64>().ok())
            {
                // Counters are whole numbers; the cast only drops the ".0".
                *found.get_or_insert(0) += value as u64;
            }
        }
    }
    found
}

/// What the checks found about the acknowledged writes.
#[derive(Debug, Default)]
struct Verdict {
    /// Acknowledged keys a read (R = all) did not find.
    lost: Vec<String>,
    /// Acknowledged keys read with some other value or more than one sibling.
    unexpected: Vec<String>,
    /// Acknowledged keys a read could not be made for.
    unreadable: Vec<String>,
    /// Acknowledged keys missing from one of their primary replicas after the hints drained.
    missing_on_primary: Vec<String>,
    /// Unacknowledged writes that are readable anyway (allowed: Dynamo never rolls back).
    recovered: usize,
}

/// What reading one key found.
enum Found {
    Expected,
    Absent,
    Other(String),
    Unreadable(String),
}

async fn read(client: &Client, key: &str) -> Found {
    let request = GetRequest {
        r: Quorum::All,
        timeout_ms: Some(u64::try_from(CHECK_TIMEOUT.as_millis()).unwrap_or(u64::MAX)),
        ..GetRequest::new(BUCKET, key)
    };
    match client.get_with(request).await {
        Err(e) => Found::Unreadable(e.to_string()),
        Ok(got) if got.is_not_found() => Found::Absent,
        Ok(got) => {
            let values: Vec<String> = got
                .siblings()
                .iter()
                .map(|s| String::from_utf8_lossy(&s.value.value).into_owned())
                .collect();
            if values == [value_of(key)] {
                Found::Expected
            } else {
                Found::Other(format!("{values:?}"))
            }
        }
    }
}

/// Whether every primary replica of `key` stores its value, asked of each replica directly.
async fn on_every_primary(client: &Client, pool: &PeerPool<TcpConnector>, key: &str) -> bool {
    let map = client.cluster_map();
    let list = map
        .ring
        .preference_list(BUCKET.as_bytes(), key.as_bytes(), N_VAL);
    let object_key = ObjectKey::new(list.partition(), BUCKET, key);
    for node in list.primaries() {
        let held = Replicas::get(pool, node, &object_key, CHECK_TIMEOUT).await;
        let ok = matches!(&held, Ok(Some(object)) if object
            .values()
            .iter()
            .any(|c| !c.deleted && c.value.as_ref() == value_of(key).as_bytes()));
        if !ok {
            return false;
        }
    }
    true
}

/// Reads every acknowledged key (and every failed one, to count those that landed anyway) and
/// asks each acknowledged key's primaries for it directly.
async fn check(client: &Client, log: &WriterLog) -> anyhow::Result<Verdict> {
    let map = client.cluster_map();
    let auth = ClusterAuth::new(
        dynamo_integration_tests::CLUSTER,
        dynamo_integration_tests::SECRET.as_bytes().to_vec(),
    )?;
    let pool = Arc::new(PeerPool::new(TcpConnector, auth, map.addresses.clone()));
    let mut tasks = JoinSet::new();
    let all: Vec<(String, bool)> = log
        .acked
        .iter()
        .map(|k| (k.clone(), true))
        .chain(log.failed.iter().map(|k| (k.clone(), false)))
        .collect();
    for chunk in all.chunks(all.len().div_ceil(CHECK_TASKS).max(1)) {
        let (chunk, client, pool) = (chunk.to_vec(), client.clone(), Arc::clone(&pool));
        tasks.spawn(async move {
            let mut verdict = Verdict::default();
            for (key, acked) in chunk {
                let found = read(&client, &key).await;
                match (acked, found) {
                    (false, Found::Expected) => verdict.recovered += 1,
                    (false, _) => {}
                    (true, Found::Expected) => {
                        if !on_every_primary(&client, &pool, &key).await {
                            verdict.missing_on_primary.push(key);
                        }
                    }
                    (true, Found::Absent) => verdict.lost.push(key),
                    (true, Found::Other(v)) => verdict.unexpected.push(format!("{key}: {v}")),
                    (true, Found::Unreadable(e)) => verdict.unreadable.push(format!("{key}: {e}")),
                }
            }
            verdict
        });
    }
    let mut total = Verdict::default();
    while let Some(part) = tasks.join_next().await {
        let part = part.context("a checking task panicked")?;
        total.lost.extend(part.lost);
        total.unexpected.extend(part.unexpected);
        total.unreadable.extend(part.unreadable);
        total.missing_on_primary.extend(part.missing_on_primary);
        total.recovered += part.recovered;
    }
    Ok(total)
}

/// Figures about the fault, for the report.
struct FaultFigures {
    acked_during_fault: u64,
    hints_during_fault: u64,
    /// From spawning the killed node again to its answering `/ping` (SIGKILL only).
    restart_took: Option<Duration>,
    drained_in: Duration,
}

async fn report(name: &str, cluster: &ProcCluster, log: &WriterLog, f: &FaultFigures, v: &Verdict) {
    let counter =
        |value: Option<u64>| value.map_or("n/a (not in /metrics)".into(), |n| n.to_string());
    let stored = metric_sum(cluster, "dynamo_hints_stored_total").await;
    let delivered = metric_sum(cluster, "dynamo_hints_delivered_total").await;
    println!(
        "[{name}] writes attempted {}, acknowledged {}, failed {} {:?}; lost {}, unexpected {}, \
         unreadable {}, missing on a primary {}, failed but present {}",
        log.attempted,
        log.acked.len(),
        log.failed.len(),
        log.errors,
        v.lost.len(),
        v.unexpected.len(),
        v.unreadable.len(),
        v.missing_on_primary.len(),
        v.recovered,
    );
    println!(
        "[{name}] acknowledged during the fault {}, hints on the fallbacks at its end {}, hints \
         stored {} / delivered {} (since each process started), restart to /ping {}, hints \
         drained {:.1?} after the load",
        f.acked_during_fault,
        f.hints_during_fault,
        counter(stored),
        counter(delivered),
        f.restart_took.map_or("-".into(), |d| format!("{d:.1?}")),
        f.drained_in,
    );
}

/// The checks every test makes once the fault is over and the load stopped.
fn assert_no_acknowledged_write_lost(v: &Verdict, f: &FaultFigures) {
    let first = |keys: &[String]| keys.iter().take(5).cloned().collect::<Vec<_>>();
    assert!(
        v.lost.is_empty(),
        "acknowledged writes lost: {} (first {:?})",
        v.lost.len(),
        first(&v.lost)
    );
    assert!(
        v.unexpected.is_empty(),
        "unexpected values: {:?}",
        first(&v.unexpected)
    );
    assert!(
        v.unreadable.is_empty(),
        "reads failed with every node up: {:?}",
        first(&v.unreadable)
    );
    assert!(
        v.missing_on_primary.is_empty(),
        "hints drained but primaries lack acknowledged writes: {} (first {:?})",
        v.missing_on_primary.len(),
        first(&v.missing_on_primary)
    );
    assert!(
        f.acked_during_fault > 0,
        "no write was acknowledged while a node was down"
    );
    assert!(
        f.hints_during_fault > 0,
        "the outage left no hint: hinted handoff was not exercised"
    );
}

/// The nodes other than the victim.
fn survivors(cluster: &ProcCluster) -> Vec<usize> {
    (0..cluster.nodes.len()).filter(|&i| i != VICTIM).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_during_writes_and_restarted_loses_no_acknowledged_write()
-> anyhow::Result<()> {
    let (mut cluster, client) = start_cluster().await?;
    let mut load = Load::start(&client, "kill");
    load.reach(ACKS_PER_PHASE, "before the kill").await?;
    cluster.kill(VICTIM)?;
    let acked_during_fault = load.reach(ACKS_PER_PHASE, "with n2 dead").await?;
    let hints_during_fault = hints_pending_on(&cluster, &survivors(&cluster)).await?;
    let restarting = Instant::now();
    cluster.restart(VICTIM).await?;
    let restart_took = Some(restarting.elapsed());
    load.reach(ACKS_PER_PHASE, "after the restart").await?;
    let log = load.finish().await?;
    let drained_in = wait_for_hints_to_drain(&cluster).await?;
    let figures = FaultFigures {
        acked_during_fault,
        hints_during_fault,
        restart_took,
        drained_in,
    };
    let verdict = check(&client, &log).await?;
    report("SIGKILL n2, restart", &cluster, &log, &figures, &verdict).await;
    assert_no_acknowledged_write_lost(&verdict, &figures);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_frozen_during_writes_loses_no_acknowledged_write() -> anyhow::Result<()> {
    let (cluster, client) = start_cluster().await?;
    let mut load = Load::start(&client, "stop");
    load.reach(ACKS_PER_PHASE, "before the pause").await?;
    let before = load.acked();
    cluster.pause(VICTIM)?;
    // The fault lasts PAUSE: a duration the test imposes, not a condition it waits for.
    tokio::time::sleep(PAUSE).await;
    let acked_during_fault = load.acked() - before;
    let hints_during_fault = hints_pending_on(&cluster, &survivors(&cluster)).await?;
    cluster.resume(VICTIM)?;
    load.reach(ACKS_PER_PHASE, "after SIGCONT").await?;
    let log = load.finish().await?;
    let drained_in = wait_for_hints_to_drain(&cluster).await?;
    let figures = FaultFigures {
        acked_during_fault,
        hints_during_fault,
        restart_took: None,
        drained_in,
    };
    let verdict = check(&client, &log).await?;
    report(
        "SIGSTOP n2 5 s, SIGCONT",
        &cluster,
        &log,
        &figures,
        &verdict,
    )
    .await;
    assert_no_acknowledged_write_lost(&verdict, &figures);
    Ok(())
}
