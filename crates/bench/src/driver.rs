//! Running a phase: worker tasks take numbered tickets until the operation budget or the time is
//! spent, execute one operation per ticket against a [`Store`], and record its outcome.
//!
//! Closed loop: each of C workers sends its next request when the previous one has answered, so
//! the offered load follows the system's speed. Open loop: ticket `i` is scheduled at
//! `start + i / rate`, and its latency is measured from that scheduled moment, not from when a
//! worker got round to sending it. When the system stalls, requests queue behind the workers and
//! their waiting time shows in the latencies instead of being silently dropped ("coordinated
//! omission").

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::store::{OpError, Store};
use crate::summary::{OpRecorder, PhaseSummary};
use crate::workload::{Mix, Op, UpdateMode, key_name};

/// Spreads worker seeds apart (the 64-bit golden ratio, as in splitmix64), so workers seeded from
/// one `--seed` draw unrelated streams.
const SEED_STRIDE: u64 = 0x9E37_79B9_7F4A_7C15;

/// How one phase runs.
#[derive(Clone, Debug)]
pub struct PhaseOptions {
    /// Name in reports (`load` or `run`).
    pub name: String,
    /// Which operations the phase performs.
    pub mix: Mix,
    /// Concurrent worker tasks.
    pub clients: usize,
    /// Most operations to start.
    pub operations: u64,
    /// Longest time to keep starting operations.
    pub duration: Duration,
    /// Open-loop target rate in operations per second (`None`: closed loop).
    pub rate: Option<f64>,
    /// Bytes per written value.
    pub value_size: usize,
    /// How updates get their context.
    pub update_mode: UpdateMode,
    /// Seed of the workers' random streams.
    pub seed: u64,
}

/// What every worker of a phase shares.
struct Shared {
    options: PhaseOptions,
    next_ticket: AtomicU64,
    start: Instant,
    deadline: Instant,
}

impl Shared {
    /// The next ticket and when it is due, or `None` when the phase is over.
    fn take(&self) -> Option<(u64, Instant)> {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        if ticket >= self.options.operations {
            return None;
        }
        let due = match self.options.rate {
            Some(rate) => self.start + Duration::from_secs_f64(ticket as f64 / rate),
            None => Instant::now(),
        };
        (due < self.deadline).then_some((ticket, due))
    }
}

/// Runs one phase against `store` and summarizes it. Every worker stops on its own once the
/// operations or the duration are spent; requests in flight then finish within their timeout.
pub async fn run_phase<S: Store>(store: Arc<S>, options: PhaseOptions) -> Result<PhaseSummary> {
    if options.clients == 0 {
        return Err(Error::Config("at least one client task is needed".into()));
    }
    if options.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(Error::Config("--rate must be a positive number".into()));
    }
    let start = Instant::now();
    let shared = Arc::new(Shared {
        next_ticket: AtomicU64::new(0),
        start,
        deadline: start + options.duration,
        options,
    });
    let workers: Vec<_> = (0..shared.options.clients)
        .map(|w| {
            let seed = shared.options.seed ^ (w as u64 + 1).wrapping_mul(SEED_STRIDE);
            tokio::spawn(worker(Arc::clone(&store), Arc::clone(&shared), seed))
        })
        .collect();
    let mut totals: BTreeMap<String, OpRecorder> = BTreeMap::new();
    for handle in workers {
        let recorders = handle.await.map_err(|e| Error::Worker(e.to_string()))?;
        for (op, recorder) in recorders {
            totals.entry(op).or_default().merge(&recorder);
        }
    }
    Ok(PhaseSummary::new(
        &shared.options.name,
        &totals,
        start.elapsed(),
    ))
}

/// One worker: takes tickets until none are left, recording each operation's outcome.
async fn worker<S: Store>(
    store: Arc<S>,
    shared: Arc<Shared>,
    seed: u64,
) -> BTreeMap<String, OpRecorder> {
    let mut rng = StdRng::seed_from_u64(seed);
    let values = value_pool(&mut rng, shared.options.value_size);
    let mut recorders: BTreeMap<String, OpRecorder> = BTreeMap::new();
    while let Some((ticket, due)) = shared.take() {
        if shared.options.rate.is_some() {
            tokio::time::sleep_until(due).await;
        }
        let op = shared.options.mix.next(ticket, &mut rng);
        let value = pick_value(&values, shared.options.value_size, &mut rng);
        let outcome = execute(&*store, op, value, shared.options.update_mode).await;
        let recorder = recorders.entry(op.name().to_string()).or_default();
        match outcome {
            Ok(()) => recorder.record_ok(due.elapsed()),
            Err(e) => recorder.record_error(&e.kind, &e.detail),
        }
    }
    recorders
}

/// Random bytes from which every value of a worker is sliced: twice the value size, so values
/// start at random offsets and differ, without generating fresh bytes per write.
fn value_pool<R: Rng>(rng: &mut R, value_size: usize) -> Bytes {
    let mut pool = vec![0u8; value_size.saturating_mul(2)];
    rng.fill_bytes(&mut pool);
    Bytes::from(pool)
}

/// A value of `size` bytes from `pool` (a cheap reference-counted slice).
fn pick_value<R: Rng>(pool: &Bytes, size: usize, rng: &mut R) -> Bytes {
    let offset = rng.random_range(0..=pool.len() - size.min(pool.len()));
    pool.slice(offset..offset + size.min(pool.len()))
}

/// Performs `op`. A read of a missing record counts as a failure of kind `not_found`.
async fn execute<S: Store>(
    store: &S,
    op: Op,
    value: Bytes,
    update_mode: UpdateMode,
) -> std::result::Result<(), OpError> {
    let key = key_name(op.record());
    match (op, update_mode) {
        (Op::Insert(_), _) | (Op::Update(_), UpdateMode::Blind) => {
            store.write(&key, value, S::Version::default()).await
        }
        (Op::Read(_), _) => {
            let read = store.read(&key).await?;
            if read.found {
                Ok(())
            } else {
                Err(OpError::new(
                    "not_found",
                    String::from_utf8_lossy(&key).into_owned(),
                ))
            }
        }
        (Op::Update(_), UpdateMode::Rmw) => {
            let read = store.read(&key).await?;
            store.write(&key, value, read.version).await
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::store::ReadOutcome;
    use crate::zipf::KeyChooser;

    /// An in-memory store: versions are write counters, and keys listed in `failing` time out.
    #[derive(Default)]
    struct MemoryStore {
        data: Mutex<HashMap<Vec<u8>, (Bytes, u64)>>,
        failing: Vec<Vec<u8>>,
        superseded: AtomicU64,
    }

    impl Store for MemoryStore {
        type Version = u64;

        async fn read(&self, key: &[u8]) -> std::result::Result<ReadOutcome<u64>, OpError> {
            if self.failing.iter().any(|k| k == key) {
                return Err(OpError::new("timeout", "injected"));
            }
            let data = self.data.lock().unwrap();
            Ok(match data.get(key) {
                Some((_, version)) => ReadOutcome {
                    found: true,
                    version: *version,
                },
                None => ReadOutcome {
                    found: false,
                    version: 0,
                },
            })
        }

        async fn write(
            &self,
            key: &[u8],
            value: Bytes,
            version: u64,
        ) -> std::result::Result<(), OpError> {
            let mut data = self.data.lock().unwrap();
            let entry = data.entry(key.to_vec()).or_insert((Bytes::new(), 0));
            if version != 0 && version == entry.1 {
                self.superseded.fetch_add(1, Ordering::Relaxed);
            }
            *entry = (value, entry.1 + 1);
            Ok(())
        }
    }

    fn options(name: &str, mix: Mix, operations: u64) -> PhaseOptions {
        PhaseOptions {
            name: name.into(),
            mix,
            clients: 4,
            operations,
            duration: Duration::from_secs(60),
            rate: None,
            value_size: 100,
            update_mode: UpdateMode::Rmw,
            seed: 42,
        }
    }

    fn count(summary: &PhaseSummary, op: &str) -> u64 {
        summary
            .ops
            .iter()
            .find(|o| o.op == op)
            .map_or(0, |o| o.count)
    }

    #[tokio::test]
    async fn load_inserts_every_record_once() {
        let store = Arc::new(MemoryStore::default());
        let summary = run_phase(Arc::clone(&store), options("load", Mix::Load, 500))
            .await
            .unwrap();
        assert_eq!(count(&summary, "insert"), 500);
        let data = store.data.lock().unwrap();
        assert_eq!(data.len(), 500);
        assert!(data.values().all(|(v, n)| v.len() == 100 && *n == 1));
    }

    #[tokio::test]
    async fn run_stops_at_the_operation_budget_and_updates_read_first() {
        let store = Arc::new(MemoryStore::default());
        run_phase(Arc::clone(&store), options("load", Mix::Load, 20))
            .await
            .unwrap();
        let mix = Mix::Run {
            read_proportion: 0.5,
            keys: KeyChooser::zipfian(20).unwrap(),
        };
        let summary = run_phase(Arc::clone(&store), options("run", mix, 1000))
            .await
            .unwrap();
        let (reads, updates) = (count(&summary, "read"), count(&summary, "update"));
        assert_eq!(reads + updates, 1000);
        assert!(reads > 0 && updates > 0);
        // Every read-modify-write supersedes the version it read (no other writer interleaved
        // between this worker's read and write in the single-threaded test runtime).
        assert_eq!(store.superseded.load(Ordering::Relaxed), updates);
    }

    #[tokio::test]
    async fn failures_are_counted_by_kind_and_kept_out_of_latencies() {
        let store = Arc::new(MemoryStore {
            failing: vec![key_name(0)],
            ..MemoryStore::default()
        });
        let mix = Mix::Run {
            read_proportion: 1.0,
            keys: KeyChooser::uniform(2).unwrap(),
        };
        let summary = run_phase(store, options("run", mix, 400)).await.unwrap();
        let read = &summary.ops[0];
        let timeouts = read.errors["timeout"];
        let missing = read.errors["not_found"];
        assert_eq!(
            timeouts + missing,
            400,
            "record 0 times out, record 1 was never written"
        );
        assert!(timeouts > 0 && missing > 0);
        assert_eq!(read.count, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_paces_tickets_and_stops_at_the_duration() {
        let store = Arc::new(MemoryStore::default());
        let mut opts = options("load", Mix::Load, 1_000_000);
        opts.rate = Some(100.0);
        opts.duration = Duration::from_secs(2);
        let summary = run_phase(Arc::clone(&store), opts).await.unwrap();
        // Tickets due at 0.00, 0.01, ... 1.99 s: exactly 200 start before the deadline.
        assert_eq!(count(&summary, "insert"), 200);
    }

    #[tokio::test]
    async fn impossible_options_are_refused() {
        let store = Arc::new(MemoryStore::default());
        let mut opts = options("load", Mix::Load, 10);
        opts.clients = 0;
        assert!(run_phase(Arc::clone(&store), opts).await.is_err());
        let mut opts = options("load", Mix::Load, 10);
        opts.rate = Some(0.0);
        assert!(run_phase(store, opts).await.is_err());
    }

    #[test]
    fn values_have_the_requested_size_even_when_empty() {
        let mut rng = StdRng::seed_from_u64(5);
        let pool = value_pool(&mut rng, 16);
        assert_eq!(pick_value(&pool, 16, &mut rng).len(), 16);
        let empty = value_pool(&mut rng, 0);
        assert!(pick_value(&empty, 0, &mut rng).is_empty());
    }
}
