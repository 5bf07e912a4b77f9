//! Workload clients and the history they record. Set clients add unique elements to sets under
//! a few keys by read-modify-write (siblings merged by union, written back with the read's
//! context); put clients write many keys once each, blind. Every client talks to a random node
//! through its own peer pool; a node outside the key's top N forwards. A write that failed or
//! timed out is indeterminate, never failed: it may still land.
//!
//! After the faults heal and the cluster settles, [`final_phase`] reads every key with R = N and
//! then polls each key's primaries (`replica_get`) until they hold the same siblings.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use dynamo_coordinator::{GetRequest, GetResponse, PutRequest, Quorum, Replicas};
use dynamo_ring::NodeId;
use dynamo_rpc::PeerPool;
use dynamo_storage::{Content, ObjectKey, VersionedObject};
use parking_lot::Mutex;

use super::checker::{FinalRead, SetHistory, decode_set, encode_set};
use super::cluster::{Cluster, SIM_REQUEST_TIMEOUT};
use super::net::TurmoilConnector;
use super::rng::SimRng;

/// Bucket of the set workload that keeps siblings (`allow_mult`): it must lose nothing.
pub const SETS_BUCKET: &str = "sets";

/// Bucket of the set workload with last-write-wins resolution: it loses concurrent additions by
/// design, and the run reports how many.
pub const LWW_BUCKET: &str = "lww";

/// Bucket of the blind single-write workload.
pub const PUTS_BUCKET: &str = "puts";

/// How long a client waits for a node's answer: above the node's own request timeout plus a
/// forward to every primary in turn, so the node answers (or gives up) first.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(4);

/// Longest pause between a client's operations, in milliseconds (think time).
const THINK_MS: u64 = 20;

/// Tries per key for the final read before the key counts as unread.
const FINAL_READ_TRIES: usize = 5;

/// Keys read or checked at once in the final phase: enough to finish quickly in simulated time,
/// few enough not to flood one node.
const CONCURRENT_KEYS: usize = 16;

/// How often the convergence check polls the replicas.
const CONVERGE_POLL: Duration = Duration::from_millis(100);

/// The simulated time since the simulation started.
pub fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// Everything the clients observed, shared by all of them and read by the driver afterwards.
#[derive(Default)]
pub struct Recorder {
    log: Mutex<Vec<String>>,
    sets: Mutex<BTreeMap<String, SetHistory>>,
    finals: Mutex<BTreeMap<String, FinalRead>>,
    convergence: Mutex<Option<Convergence>>,
    store_convergence: Mutex<Option<Convergence>>,
}

/// When (and whether) the replicas converged after the heal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Convergence {
    /// Simulated time from the heal until every key's primaries held the same siblings; `None`
    /// when the deadline passed first.
    pub after_heal: Option<Duration>,
    /// Keys whose primaries still disagreed (or could not be read) at the deadline.
    pub divergent: Vec<String>,
}

impl Recorder {
    /// Appends a line to the history, stamped with the simulated time.
    pub fn log(&self, line: impl AsRef<str>) {
        self.log_at(now(), line);
    }

    /// Appends a line stamped with `at` (for the driver, which runs outside any host).
    pub fn log_at(&self, at: Duration, line: impl AsRef<str>) {
        let at = at.as_millis();
        self.log.lock().push(format!("{at:>7} {}", line.as_ref()));
    }

    /// Records an attempted addition.
    pub fn attempt(&self, bucket: &str, key: &str, element: u64) {
        self.sets
            .lock()
            .entry(bucket.to_string())
            .or_default()
            .attempt(key, element);
    }

    /// Records the outcome of an addition.
    pub fn outcome(&self, bucket: &str, key: &str, element: u64, acknowledged: bool) {
        self.sets
            .lock()
            .entry(bucket.to_string())
            .or_default()
            .outcome(key, element, acknowledged);
    }

    /// The history of `bucket`.
    pub fn history(&self, bucket: &str) -> SetHistory {
        self.sets.lock().get(bucket).cloned().unwrap_or_default()
    }

    /// The final read of `bucket`.
    pub fn final_read(&self, bucket: &str) -> FinalRead {
        self.finals.lock().get(bucket).cloned().unwrap_or_default()
    }

    /// The convergence result, once the final phase finished.
    pub fn convergence(&self) -> Option<Convergence> {
        self.convergence.lock().clone()
    }

    /// Records the outcome of the store check (`sim::stores`).
    pub fn set_store_convergence(&self, convergence: Convergence) {
        *self.store_convergence.lock() = Some(convergence);
    }

    /// The store check's outcome, once it finished.
    pub fn store_convergence(&self) -> Option<Convergence> {
        self.store_convergence.lock().clone()
    }

    /// The history lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.log.lock().clone()
    }

    /// A digest of everything recorded: equal digests mean the same history and results.
    pub fn digest(&self) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        self.log.lock().hash(&mut h);
        for (bucket, history) in self.sets.lock().iter() {
            bucket.hash(&mut h);
            history.attempted.hash(&mut h);
            history.acknowledged.hash(&mut h);
            history.indeterminate.hash(&mut h);
        }
        for (bucket, read) in self.finals.lock().iter() {
            bucket.hash(&mut h);
            read.sets.hash(&mut h);
            read.unread.hash(&mut h);
        }
        format!("{:?}", self.convergence.lock()).hash(&mut h);
        format!("{:?}", self.store_convergence.lock()).hash(&mut h);
        h.finish()
    }
}

/// The union of a read's live siblings, as a set (values that are not sets are skipped here; the
/// final read reports them).
fn union_of(response: &GetResponse) -> BTreeSet<u64> {
    response
        .siblings()
        .iter()
        .filter_map(|s| decode_set(&s.value.value).ok())
        .flatten()
        .collect()
}

/// A unique element: the client's id in the high half, its counter in the low half.
fn element(client: u64, counter: u64) -> u64 {
    (client << 32) | (counter & 0xFFFF_FFFF)
}

/// What a workload client needs.
#[derive(Clone)]
pub struct ClientSetup {
    /// The cluster (for addresses and names).
    pub cluster: Arc<Cluster>,
    /// Where to record.
    pub recorder: Arc<Recorder>,
    /// The run's seed.
    pub seed: u64,
    /// This client's number (distinct across clients).
    pub id: u64,
    /// Keys per set bucket.
    pub set_keys: u64,
    /// Clients stop starting operations at this simulated time.
    pub until: Duration,
}

impl ClientSetup {
    fn pick_node(&self, rng: &mut SimRng) -> Option<NodeId> {
        rng.pick(&self.cluster.entry()).cloned()
    }
}

async fn think(rng: &mut SimRng) {
    tokio::time::sleep(Duration::from_millis(rng.between(1, THINK_MS))).await;
}

fn timeout_ms() -> Option<u64> {
    u64::try_from(SIM_REQUEST_TIMEOUT.as_millis()).ok()
}

/// A set client: read-modify-write additions to random keys of the sets and LWW buckets.
pub async fn set_client(setup: ClientSetup) {
    let pool = setup.cluster.pool();
    let mut rng = SimRng::derive(setup.seed, 1_000 + setup.id);
    let mut counter = 0;
    while now() < setup.until {
        let bucket = if rng.percent(70) {
            SETS_BUCKET
        } else {
            LWW_BUCKET
        };
        let key = format!("s{}", rng.below(setup.set_keys));
        let Some(node) = setup.pick_node(&mut rng) else {
            return;
        };
        let read = GetRequest {
            timeout_ms: timeout_ms(),
            ..GetRequest::new(bucket, key.as_str())
        };
        let response = match pool.get(&node, read, CLIENT_TIMEOUT).await {
            Ok(r) => r,
            Err(e) => {
                setup
                    .recorder
                    .log(format!("c{} read {bucket}/{key} @{node}: {e}", setup.id));
                think(&mut rng).await;
                continue;
            }
        };
        counter += 1;
        let new = element(setup.id, counter);
        let mut set = union_of(&response);
        set.insert(new);
        setup.recorder.attempt(bucket, &key, new);
        let put = PutRequest {
            timeout_ms: timeout_ms(),
            ..PutRequest::new(
                bucket,
                key.as_str(),
                Content::new(encode_set(&set)),
                response.context(),
            )
        };
        let result = pool.put(&node, put, CLIENT_TIMEOUT).await;
        setup.recorder.outcome(bucket, &key, new, result.is_ok());
        setup.recorder.log(format!(
            "c{} add {bucket}/{key} +{new} @{node}: {}",
            setup.id,
            result
                .as_ref()
                .map_or_else(|e| format!("indeterminate ({e})"), |_| "ok".into())
        ));
        think(&mut rng).await;
    }
}

/// A put client: blind writes of fresh keys, each with a unique one-element value.
pub async fn put_client(setup: ClientSetup) {
    let pool = setup.cluster.pool();
    let mut rng = SimRng::derive(setup.seed, 2_000 + setup.id);
    let mut counter = 0;
    while now() < setup.until {
        counter += 1;
        let key = format!("p{}-{counter}", setup.id);
        let new = element(setup.id, counter);
        let Some(node) = setup.pick_node(&mut rng) else {
            return;
        };
        setup.recorder.attempt(PUTS_BUCKET, &key, new);
        let value = encode_set(&[new].into_iter().collect());
        let put = PutRequest {
            timeout_ms: timeout_ms(),
            ..PutRequest::new(
                PUTS_BUCKET,
                key.as_str(),
                Content::new(value),
                Default::default(),
            )
        };
        let result = pool.put(&node, put, CLIENT_TIMEOUT).await;
        setup
            .recorder
            .outcome(PUTS_BUCKET, &key, new, result.is_ok());
        setup.recorder.log(format!(
            "c{} put {PUTS_BUCKET}/{key} @{node}: {}",
            setup.id,
            result
                .as_ref()
                .map_or_else(|e| format!("indeterminate ({e})"), |_| "ok".into())
        ));
        think(&mut rng).await;
    }
}

/// Reads `bucket`/`key` with R = N (every replica), trying random nodes in turn.
async fn read_all(
    pool: &PeerPool<TurmoilConnector>,
    cluster: &Cluster,
    bucket: &str,
    key: &str,
    mut rng: SimRng,
) -> Result<GetResponse, String> {
    let mut last = String::from("not tried");
    for _ in 0..FINAL_READ_TRIES {
        let Some(node) = rng.pick(&cluster.entry()).cloned() else {
            break;
        };
        let read = GetRequest {
            r: Quorum::All,
            timeout_ms: timeout_ms(),
            ..GetRequest::new(bucket, key)
        };
        match pool.get(&node, read, CLIENT_TIMEOUT).await {
            Ok(r) => return Ok(r),
            Err(e) => last = format!("@{node}: {e}"),
        }
    }
    Err(last)
}

/// A generator for one key, so concurrent per-key work does not share one stream.
fn key_rng(seed: u64, bucket: &str, key: &str) -> SimRng {
    let mut h = std::hash::DefaultHasher::new();
    (bucket, key).hash(&mut h);
    SimRng::derive(seed, h.finish())
}

/// The final read of every key of `bucket` (`keys`), recorded under the bucket.
async fn final_reads(
    pool: &PeerPool<TurmoilConnector>,
    setup: &ClientSetup,
    bucket: &str,
    keys: &BTreeSet<String>,
) {
    let mut out = FinalRead::default();
    let keys: Vec<&String> = keys.iter().collect();
    for chunk in keys.chunks(CONCURRENT_KEYS) {
        let reads = chunk.iter().map(|key| {
            let rng = key_rng(setup.seed, bucket, key);
            read_all(pool, &setup.cluster, bucket, key, rng)
        });
        let results = futures::future::join_all(reads).await;
        for (key, result) in chunk.iter().zip(results) {
            let key = (*key).clone();
            match result {
                Ok(response) => {
                    let mut set = BTreeSet::new();
                    for s in response.siblings() {
                        match decode_set(&s.value.value) {
                            Ok(elements) => set.extend(elements),
                            Err(e) => out.garbage.push((key.clone(), e)),
                        }
                    }
                    setup
                        .recorder
                        .log(format!("final {bucket}/{key}: {} elements", set.len()));
                    out.sets.insert(key, set);
                }
                Err(e) => {
                    setup
                        .recorder
                        .log(format!("final {bucket}/{key}: unread {e}"));
                    out.unread.insert(key, e);
                }
            }
        }
    }
    setup.recorder.finals.lock().insert(bucket.to_string(), out);
}

/// Whether every primary of `bucket`/`key` holds the same siblings (absent counts as empty).
pub async fn replicas_agree(
    pool: &PeerPool<TurmoilConnector>,
    cluster: &Cluster,
    bucket: &str,
    key: &str,
) -> bool {
    let pl = cluster.preference_list(bucket, key);
    let object_key = ObjectKey::new(pl.partition(), bucket, key);
    let reads = pl
        .primaries()
        .iter()
        .map(|p| Replicas::get(pool, p, &object_key, SIM_REQUEST_TIMEOUT));
    let mut seen: Option<VersionedObject> = None;
    for found in futures::future::join_all(reads).await {
        let Ok(found) = found else { return false };
        let found = found.unwrap_or_default();
        match &seen {
            None => seen = Some(found),
            Some(first) if first.siblings() != found.siblings() => return false,
            Some(_) => {}
        }
    }
    true
}

/// The keys among `all` whose primaries disagree.
async fn divergent_keys(
    pool: &PeerPool<TurmoilConnector>,
    cluster: &Cluster,
    all: &[(String, String)],
) -> Vec<String> {
    let mut divergent = Vec::new();
    for chunk in all.chunks(CONCURRENT_KEYS) {
        let checks = chunk
            .iter()
            .map(|(bucket, key)| replicas_agree(pool, cluster, bucket, key));
        let agreed = futures::future::join_all(checks).await;
        for ((bucket, key), agrees) in chunk.iter().zip(agreed) {
            if !agrees {
                divergent.push(format!("{bucket}/{key}"));
            }
        }
    }
    divergent
}

/// After the settle period: reads every key of every bucket with R = N, then polls the replicas
/// until they agree or `deadline` (simulated) passes. `heal_at` is when the faults healed.
pub async fn final_phase(
    setup: ClientSetup,
    buckets: Vec<(String, BTreeSet<String>)>,
    heal_at: Duration,
    deadline: Duration,
) {
    let pool = setup.cluster.pool();
    let mut all = Vec::new();
    for (bucket, extra) in &buckets {
        let mut keys = setup.recorder.history(bucket).keys();
        keys.extend(extra.iter().cloned());
        final_reads(&pool, &setup, bucket, &keys).await;
        all.extend(keys.into_iter().map(|k| (bucket.clone(), k)));
    }
    loop {
        let divergent = divergent_keys(&pool, &setup.cluster, &all).await;
        let at = now();
        if divergent.is_empty() || at >= deadline {
            let after_heal = divergent.is_empty().then(|| at.saturating_sub(heal_at));
            setup.recorder.log(format!(
                "convergence: {after_heal:?}, divergent {divergent:?}"
            ));
            *setup.recorder.convergence.lock() = Some(Convergence {
                after_heal,
                divergent,
            });
            return;
        }
        tokio::time::sleep(CONVERGE_POLL).await;
    }
}
