//! The anti-entropy worker: builds trees, exchanges each (partition, replica) pair on a
//! schedule, confirms and repairs differences, at most as many tasks at once as the admission
//! controller allows.
//!
//! Every pair is exchanged at least every `exchange_interval` (jittered down by up to a quarter
//! so pairs spread out), and again after `confirm_delay` when an exchange left differences to
//! confirm, repaired some, or hit its caps. One replica of each pair initiates (the smaller node
//! id), so a pair costs one exchange, not two. Trees are built when a partition starts being
//! tracked and rebuilt every `rebuild_interval` (jittered).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dynamo_ring::{NodeId, PartitionId};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::exchange::{Ask, Confirmations, Exchange, RepairPlan, Step};
use crate::peers::{MAX_BATCH, Peers};
use crate::service::{AntiEntropy, PeerStatus};
use crate::trees::{Built, Trees};

/// A unit of background work.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Job {
    /// Build or rebuild a partition's tree.
    Build(PartitionId),
    /// Exchange a partition with a peer.
    Exchange(PartitionId, NodeId),
}

/// What one exchange did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExchangeReport {
    /// Differing keys found.
    pub differences: usize,
    /// Keys repaired (confirmed differences).
    pub repaired: usize,
    /// Differences left waiting for confirmation.
    pub pending: usize,
    /// Whether caps left differing leaves for a later exchange.
    pub truncated: bool,
    /// Bytes of exchange and repair payloads, both ways.
    pub bytes: u64,
}

enum Outcome {
    Built(Result<Built>),
    Exchanged(Result<ExchangeReport>),
}

/// One pair's schedule and history.
#[derive(Debug, Default)]
pub(crate) struct Pair {
    due: Option<Instant>,
    confirmations: Confirmations,
    last_ms: Option<u64>,
    differences: u64,
    repaired: u64,
    last_error: Option<String>,
}

/// When each job is due, and which run.
#[derive(Debug)]
pub(crate) struct Schedule {
    rng: u64,
    pairs: BTreeMap<(PartitionId, NodeId), Pair>,
    rebuild_due: BTreeMap<PartitionId, Instant>,
    running: BTreeSet<Job>,
}

impl Schedule {
    pub(crate) fn new(seed: u64) -> Schedule {
        Schedule {
            rng: seed,
            pairs: BTreeMap::new(),
            rebuild_due: BTreeMap::new(),
            running: BTreeSet::new(),
        }
    }

    /// A uniform draw in [0, 1) (splitmix64 on the seeded state).
    fn draw(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `d` shortened by a random part of up to `fraction` of it.
    fn jittered(&mut self, d: Duration, fraction: f64) -> Duration {
        d.mul_f64(1.0 - fraction * self.draw())
    }

    /// Keeps exactly `pairs` (new ones are first due at a random point of one interval).
    pub(crate) fn set_pairs(&mut self, pairs: &BTreeSet<(PartitionId, NodeId)>) {
        self.pairs.retain(|k, _| pairs.contains(k));
        for pair in pairs {
            self.pairs.entry(pair.clone()).or_default();
        }
        let partitions: BTreeSet<PartitionId> = pairs.iter().map(|(p, _)| *p).collect();
        self.rebuild_due.retain(|p, _| partitions.contains(p));
    }

    /// The next job due at `now`: first builds of unbuilt trees, then rebuilds, then the most
    /// overdue exchange of a pair whose tree is ready.
    fn next_job(&mut self, now: Instant, trees: &Trees, interval: Duration) -> Option<Job> {
        for p in trees.tracked() {
            let job = Job::Build(p);
            // Unbuilt trees have no due time yet: build them now.
            let due = self.rebuild_due.get(&p).is_none_or(|d| *d <= now);
            if due && !self.running.contains(&job) {
                self.running.insert(job.clone());
                return Some(job);
            }
        }
        let mut best: Option<(Instant, (PartitionId, NodeId))> = None;
        let keys: Vec<(PartitionId, NodeId)> = self.pairs.keys().cloned().collect();
        for key in keys {
            let due = match self.pairs.get(&key).and_then(|pair| pair.due) {
                Some(due) => due,
                None => {
                    let due = now + self.jittered(interval, 1.0);
                    if let Some(pair) = self.pairs.get_mut(&key) {
                        pair.due = Some(due);
                    }
                    due
                }
            };
            let job = Job::Exchange(key.0, key.1.clone());
            if due <= now
                && trees.is_ready(key.0)
                && !self.running.contains(&job)
                && best.as_ref().is_none_or(|(d, _)| due < *d)
            {
                best = Some((due, key));
            }
        }
        let (_, (p, peer)) = best?;
        let job = Job::Exchange(p, peer);
        self.running.insert(job.clone());
        Some(job)
    }

    /// The status of `p`'s pairs this node initiates.
    pub(crate) fn peer_status(&self, p: PartitionId) -> Vec<PeerStatus> {
        self.pairs
            .iter()
            .filter(|((q, _), _)| *q == p)
            .map(|((_, peer), pair)| PeerStatus {
                peer: peer.to_string(),
                initiator: true,
                last_exchange_ms: pair.last_ms,
                differences: pair.differences,
                keys_repaired: pair.repaired,
                pending: pair.confirmations.pending(),
                last_error: pair.last_error.clone(),
            })
            .collect()
    }
}

type JobFuture = Pin<Box<dyn Future<Output = (Job, Outcome)> + Send>>;

/// The bincode size of a payload, for the bytes-exchanged metric.
fn size_of<T: Serialize>(value: &T) -> u64 {
    bincode::serialized_size(value).unwrap_or(0)
}

impl AntiEntropy {
    /// The worker: runs until `shutdown` is cancelled. Spawn it on the node's task tracker.
    pub async fn run_worker<P: Peers>(self, peers: Arc<P>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.inner.options.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut running: FuturesUnordered<JobFuture> = FuturesUnordered::new();
        let mut permits = 1;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some((job, outcome)) = running.next(), if !running.is_empty() => {
                    self.finished(job, outcome);
                    // A finished job frees a permit: start the next due job now, not a tick later.
                    self.launch(&mut running, permits, &peers);
                }
                _ = tick.tick() => {
                    permits = self.admit();
                    self.launch(&mut running, permits, &peers);
                }
            }
        }
    }

    /// Starts due jobs until `permits` run.
    fn launch<P: Peers>(
        &self,
        running: &mut FuturesUnordered<JobFuture>,
        permits: usize,
        peers: &Arc<P>,
    ) {
        let interval = self.inner.options.exchange_interval;
        while running.len() < permits {
            let next =
                self.inner
                    .schedule
                    .lock()
                    .next_job(Instant::now(), &self.inner.trees, interval);
            let Some(job) = next else { break };
            running.push(Box::pin(self.clone().run_job(job, Arc::clone(peers))));
        }
    }

    /// Feeds the foreground latencies recorded since the last tick to the admission controller
    /// and returns the permits for background work.
    fn admit(&self) -> usize {
        let samples = self.inner.latency.drain();
        let mut admission = self.inner.admission.lock();
        for s in samples {
            admission.observe(s);
        }
        let permits = if self.inner.options.admission_control {
            admission.adjust();
            admission.permits()
        } else {
            admission.options().max_permits
        };
        self.inner.metrics.share.set(admission.share());
        self.inner
            .metrics
            .permits
            .set(i64::try_from(permits).unwrap_or(i64::MAX));
        permits
    }

    async fn run_job<P: Peers>(self, job: Job, peers: Arc<P>) -> (Job, Outcome) {
        let outcome = match &job {
            Job::Build(p) => Outcome::Built(self.build(*p).await),
            Job::Exchange(p, peer) => Outcome::Exchanged(self.exchange(&*peers, *p, peer).await),
        };
        (job, outcome)
    }

    fn finished(&self, job: Job, outcome: Outcome) {
        let now = Instant::now();
        let options = &self.inner.options;
        let mut schedule = self.inner.schedule.lock();
        schedule.running.remove(&job);
        match (job, outcome) {
            (Job::Build(p), Outcome::Built(result)) => {
                let next = match result {
                    Ok(built) if built.first && built.touched > 0 => options.confirm_delay,
                    Ok(_) => schedule.jittered(options.rebuild_interval, 0.25),
                    Err(e) => {
                        tracing::warn!(partition = p.0, error = %e, "tree build failed");
                        options.confirm_delay
                    }
                };
                if self.inner.trees.is_tracked(p) {
                    schedule.rebuild_due.insert(p, now + next);
                }
            }
            (Job::Exchange(p, peer), Outcome::Exchanged(result)) => {
                let jittered = schedule.jittered(options.exchange_interval, 0.25);
                let at_ms = (self.inner.now_ms)();
                let Some(pair) = schedule.pairs.get_mut(&(p, peer.clone())) else {
                    return;
                };
                let next = match result {
                    Ok(report) => {
                        pair.last_ms = Some(at_ms);
                        pair.last_error = None;
                        let again = report.pending > 0 || report.repaired > 0 || report.truncated;
                        if again {
                            options.confirm_delay
                        } else {
                            jittered
                        }
                    }
                    Err(e) => {
                        tracing::debug!(partition = p.0, %peer, error = %e, "exchange failed");
                        self.inner.metrics.exchange_failures.inc();
                        pair.last_error = Some(e.to_string());
                        options.confirm_delay.min(options.exchange_interval)
                    }
                };
                pair.due = Some(now + next);
            }
            _ => {}
        }
    }

    /// One exchange of `p` with `peer`, then the repair of what it confirmed.
    pub async fn exchange<P: Peers>(
        &self,
        peers: &P,
        p: PartitionId,
        peer: &NodeId,
    ) -> Result<ExchangeReport> {
        let (timeout, caps) = (self.inner.options.timeout, self.inner.options.caps);
        let me = self.inner.me.clone();
        let local = self.inner.trees.snapshot(p)?;
        let mut bytes = 0;
        let mut exchange = Exchange::new(caps);
        let remote_root = peers.ae_root(peer, p, &me, timeout).await?;
        bytes += 2 * size_of(&remote_root);
        let mut step = exchange.roots(local.root(), remote_root)?;
        let found = loop {
            step = match step {
                Step::Done(found) => break found,
                Step::Ask(Ask::Branches) => {
                    let remote = peers.ae_branches(peer, p, timeout).await?;
                    bytes += 2 * size_of(&remote);
                    exchange.branches(local.branches(), &remote)?
                }
                Step::Ask(Ask::Leaves(branches)) => {
                    let mine: Vec<Vec<u64>> = branches
                        .iter()
                        .map(|&b| local.branch_leaves(b).to_vec())
                        .collect();
                    bytes += size_of(&branches);
                    let remote = peers.ae_leaves(peer, p, branches, timeout).await?;
                    bytes += 2 * size_of(&remote);
                    exchange.leaves(&mine, &remote)?
                }
                Step::Ask(Ask::KeyClocks(leaves)) => {
                    bytes += size_of(&leaves);
                    let remote = peers
                        .ae_key_clocks(peer, p, leaves.clone(), caps.max_keys, timeout)
                        .await?;
                    let mine = self.serve_key_clocks(p, leaves, caps.max_keys).await?;
                    bytes += size_of(&remote) + size_of(&mine);
                    exchange.key_clocks(&mine, &remote)?
                }
            };
        };
        let (plan, pending) = {
            let mut schedule = self.inner.schedule.lock();
            let pair = schedule.pairs.entry((p, peer.clone())).or_default();
            let plan = pair.confirmations.confirm(&found);
            pair.differences += found.differences.len() as u64;
            (plan, pair.confirmations.pending())
        };
        let metrics = &self.inner.metrics;
        metrics.exchanges.inc();
        metrics.differences.inc_by(found.differences.len() as u64);
        let repaired = self.repair(peers, p, peer, &plan, &mut bytes).await?;
        if let Some(pair) = self.inner.schedule.lock().pairs.get_mut(&(p, peer.clone())) {
            pair.repaired += repaired as u64;
        }
        metrics.keys_repaired.inc_by(repaired as u64);
        metrics.bytes.inc_by(bytes);
        Ok(ExchangeReport {
            differences: found.differences.len(),
            repaired,
            pending,
            truncated: found.truncated,
            bytes,
        })
    }

    /// Carries out a repair plan: pulls (the peer's versions merged here), then pushes (this
    /// replica's merged versions merged there). Returns the keys repaired.
    async fn repair<P: Peers>(
        &self,
        peers: &P,
        p: PartitionId,
        peer: &NodeId,
        plan: &RepairPlan,
        bytes: &mut u64,
    ) -> Result<usize> {
        let timeout = self.inner.options.timeout;
        for chunk in plan.pull.chunks(MAX_BATCH) {
            *bytes += size_of(&chunk);
            let fetched = peers.ae_fetch(peer, p, chunk.to_vec(), timeout).await?;
            *bytes += size_of(&fetched);
            if fetched.len() > chunk.len() {
                return Err(Error::Protocol(format!(
                    "{peer} answered {} objects for {} keys",
                    fetched.len(),
                    chunk.len()
                )));
            }
            self.merge_local(p, fetched).await?;
        }
        for chunk in plan.push.chunks(MAX_BATCH) {
            let mut objects = self.serve_fetch(p, chunk.to_vec()).await?;
            objects.retain(|o| o.object.is_some());
            *bytes += size_of(&objects);
            peers
                .ae_push(peer, p, &self.inner.me, objects, timeout)
                .await?;
        }
        Ok(plan.keys())
    }
}
