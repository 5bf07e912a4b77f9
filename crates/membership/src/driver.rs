//! The async driver: a thin shell around the pure core that gossips once per interval, persists
//! every change, runs this node's transfers through a [`PartitionMover`], releases partitions
//! this node no longer replicates, and serves peers and operators ([`MembershipService`]).
//!
//! Peers are reached through [`GossipPeers`] (the rpc crate implements it over tarpc; tests
//! implement it in-process) and the state is persisted through [`StateStore`] (the node
//! implements it over the storage engine's metadata). The driver never decides anything itself:
//! every decision is a call into [`ClusterState`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dynamo_ring::{NodeId, PartitionId, Ring, Transfer};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{Error, Result};
use crate::gossip::GossipDigest;
use crate::plan::{Change, PlanId};
use crate::state::{ClusterState, Phase, Progress};
use crate::views::{AdminCommand, AdminReply, PlanView};

/// How often a node gossips (paper 4.8.1: "every second").
pub const GOSSIP_INTERVAL: Duration = Duration::from_secs(1);

/// How long one gossip call may take. Loopback and LAN peers answer in milliseconds; a peer
/// slower than this is treated as unreachable for this round.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a peer that failed an exchange is skipped when choosing the random peer (it is
/// still contacted if it is a seed, or if every peer failed).
pub const PEER_BACKOFF: Duration = Duration::from_secs(5);

/// Transfers this node sends at once, by default (issue #7): enough to overlap one transfer's
/// final sync with the next one's stream without taking the disk from foreground requests.
pub const MAX_CONCURRENT_TRANSFERS: usize = 2;

/// The rest of the cluster, as gossip needs it. Every call carries the time the caller is
/// willing to wait and must give up with an error after it. Calls are idempotent (a merge
/// applied twice changes nothing) and cancellation safe from the caller's side.
pub trait GossipPeers: Send + Sync + 'static {
    /// Sends this node's digest to `address`; the peer answers `None` when in sync, else its
    /// encoded state.
    fn exchange_digest(
        &self,
        address: &str,
        digest: GossipDigest,
        timeout: Duration,
    ) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;

    /// Sends this node's encoded state to `address`, which merges it.
    fn push_state(
        &self,
        address: &str,
        state: Vec<u8>,
        timeout: Duration,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Fetches the encoded state of the node at `address` (to join through it).
    fn pull_state(
        &self,
        address: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<u8>>> + Send;
}

/// Where the state is persisted. `save` must be durable when it returns: the driver only
/// publishes a state (and gossips it) after it was saved, so a restart never forgets a state
/// that other nodes already saw from this one.
pub trait StateStore: Send + Sync + 'static {
    /// The last saved encoding, if any.
    fn load(&self) -> Result<Option<Vec<u8>>>;
    /// Saves an encoding, durably.
    fn save(&self, state: &[u8]) -> Result<()>;
}

/// Called by a [`PartitionMover`] with cumulative `(keys, bytes)` sent so far.
pub type ProgressReport = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// What a finished transfer sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Keys sent (tombstones included).
    pub keys: u64,
    /// Bytes sent.
    pub bytes: u64,
}

/// Moves partition data; the node implements it with the coordinator's transfer functions.
/// Membership decides *when* (which transfer, how many at once, when to drop), the mover does
/// the copying.
pub trait PartitionMover: Send + Sync + 'static {
    /// Streams `transfer.partition` from this node to `transfer.to` and resolves once the
    /// receiver confirmed a final sync: it then holds every version this node held when the
    /// sync started (writes since then reach it anyway, since it is among the next ring's
    /// owners). Must resume from a persisted cursor rather than start over after a crash or a
    /// failed attempt, and may be called again for a transfer that already finished (it then
    /// only syncs). Dropping the future cancels the transfer (its cursor stays). `report` may be
    /// called with cumulative progress.
    fn transfer(
        &self,
        transfer: Transfer,
        next: Ring,
        report: ProgressReport,
    ) -> BoxFuture<'static, Result<TransferStats>>;

    /// Drops this node's copies of `partitions`, which it no longer replicates under `ring`,
    /// now that every member has seen that ring. Must delete only versions that did not change
    /// meanwhile, and be idempotent.
    fn release(&self, partitions: Vec<PartitionId>, ring: Ring) -> BoxFuture<'static, Result<()>>;
}

/// What peers and operators can ask of a node's membership, object safe so the rpc server can
/// hold it without knowing the driver's type parameters.
pub trait MembershipService: Send + Sync + 'static {
    /// A peer's digest: answers `None` when in sync, else this node's encoded state.
    fn on_digest(&self, digest: GossipDigest) -> Result<Option<Vec<u8>>>;
    /// A peer pushed its encoded state: merge it.
    fn on_push(&self, state: Vec<u8>) -> Result<()>;
    /// A joining node asks for this node's encoded state.
    fn on_pull(&self) -> Vec<u8>;
    /// Runs an operator command.
    fn admin(&self, command: AdminCommand) -> BoxFuture<'static, Result<AdminReply>>;
    /// Sets a bucket's cluster-wide properties (opaque bytes), spread by gossip.
    fn set_bucket_props(&self, bucket: Vec<u8>, props: Vec<u8>) -> Result<()>;
}

/// The driver's settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Time between two gossip rounds.
    pub gossip_interval: Duration,
    /// Time one gossip call may take.
    pub exchange_timeout: Duration,
    /// Seed addresses contacted every round (paper 4.8.2).
    pub seeds: Vec<String>,
    /// How long a failed peer is skipped when choosing the random peer.
    pub peer_backoff: Duration,
    /// Transfers sent at once (also settable at run time).
    pub max_transfers: usize,
    /// Seed of the random peer choice (tests fix it; nodes take a random one).
    pub rng_seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            gossip_interval: GOSSIP_INTERVAL,
            exchange_timeout: EXCHANGE_TIMEOUT,
            seeds: Vec::new(),
            peer_backoff: PEER_BACKOFF,
            max_transfers: MAX_CONCURRENT_TRANSFERS,
            rng_seed: 0,
        }
    }
}

/// Everything the loaded or bootstrapped state must know about this node.
#[derive(Clone, Debug)]
pub struct Identity {
    /// This node's id.
    pub me: NodeId,
    /// Where this node's RPC listener can be reached by peers.
    pub address: String,
}

struct Inner<P> {
    id: Identity,
    peers: P,
    store: Arc<dyn StateStore>,
    mover: Option<Arc<dyn PartitionMover>>,
    options: Options,
    max_transfers: AtomicUsize,
    state: Mutex<Arc<ClusterState>>,
    changes: watch::Sender<Arc<ClusterState>>,
    shown_plan: Mutex<Option<PlanId>>,
    failed: Mutex<HashMap<String, Instant>>,
    warned: Mutex<HashSet<String>>,
    rng: Mutex<StdRng>,
    running: Mutex<BTreeSet<Transfer>>,
    live_progress: Mutex<HashMap<Transfer, (u64, u64)>>,
    released_epoch: AtomicU64,
    /// Woken when a transfer ends, so the loop starts the next one at once instead of at the
    /// next gossip tick (with the default limit of 2 and a tick per second, a change of many
    /// small partitions would otherwise take a second per two copies).
    transfer_ended: tokio::sync::Notify,
    tasks: TaskTracker,
}

/// A node's membership: the current state, the gossip loop and the operator commands. Cheap to
/// clone (a handle).
pub struct Membership<P> {
    inner: Arc<Inner<P>>,
}

impl<P> Clone for Membership<P> {
    fn clone(&self) -> Self {
        Membership {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<P: GossipPeers> Membership<P> {
    /// Loads the persisted state, or (when none is stored) the one `bootstrap` builds, records
    /// this node's current address in it, and saves it. `mover` runs this node's transfers;
    /// without one, transfers this node must send wait (and so does the pending change).
    pub fn open(
        id: Identity,
        bootstrap: impl FnOnce() -> Result<ClusterState>,
        peers: P,
        store: Arc<dyn StateStore>,
        mover: Option<Arc<dyn PartitionMover>>,
        options: Options,
    ) -> Result<Membership<P>> {
        let mut state = match store.load()? {
            Some(bytes) => ClusterState::decode(&bytes)?,
            None => bootstrap()?,
        };
        state.set_own_address(&id.me, &id.address);
        state.settle(&id.me);
        store.save(&state.encode())?;
        let state = Arc::new(state);
        let (changes, _) = watch::channel(Arc::clone(&state));
        Ok(Membership {
            inner: Arc::new(Inner {
                max_transfers: AtomicUsize::new(options.max_transfers),
                rng: Mutex::new(StdRng::seed_from_u64(options.rng_seed)),
                id,
                peers,
                store,
                mover,
                options,
                state: Mutex::new(state),
                changes,
                shown_plan: Mutex::new(None),
                failed: Mutex::new(HashMap::new()),
                warned: Mutex::new(HashSet::new()),
                running: Mutex::new(BTreeSet::new()),
                live_progress: Mutex::new(HashMap::new()),
                released_epoch: AtomicU64::new(0),
                transfer_ended: tokio::sync::Notify::new(),
                tasks: TaskTracker::new(),
            }),
        })
    }

    /// This node's id.
    pub fn me(&self) -> &NodeId {
        &self.inner.id.me
    }

    /// The current state.
    pub fn state(&self) -> Arc<ClusterState> {
        Arc::clone(&self.inner.state.lock())
    }

    /// A receiver that sees every new state (the node installs rings and addresses from it).
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.inner.changes.subscribe()
    }

    /// Sets how many transfers this node sends at once (at least 1).
    pub fn set_max_transfers(&self, n: usize) {
        self.inner.max_transfers.store(n.max(1), Ordering::Relaxed);
    }

    /// Applies `f` to a copy of the state, settles it, and if it changed, saves and publishes
    /// it. On error (from `f` or the store) nothing changes.
    fn update<T>(&self, f: impl FnOnce(&mut ClusterState) -> Result<T>) -> Result<T> {
        let me = &self.inner.id.me;
        let mut guard = self.inner.state.lock();
        let mut next = (**guard).clone();
        let out = f(&mut next)?;
        next.settle(me);
        if next != **guard {
            self.inner.store.save(&next.encode())?;
            *guard = Arc::new(next);
            self.inner.changes.send_replace(Arc::clone(&guard));
        }
        Ok(out)
    }

    /// Starts the gossip and transfer loop; it stops when `shutdown` is cancelled, and
    /// [`Membership::wait`] waits for it and for running transfers.
    pub fn spawn(&self, shutdown: CancellationToken) {
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            let mut tick = tokio::time::interval(this.inner.options.gossip_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        this.gossip_round().await;
                        this.drive_once(&shutdown).await;
                    }
                    () = this.inner.transfer_ended.notified() => {
                        this.drive_transfers(&shutdown);
                    }
                }
            }
        });
    }

    /// Waits for the loop and every transfer task to end (after the shutdown token fired).
    pub async fn wait(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// One gossip round: the random live peer and every seed, concurrently.
    pub async fn gossip_round(&self) {
        let random = self.inner.rng.lock().random::<u64>();
        let now = Instant::now();
        let backoff = self.inner.options.peer_backoff;
        let failed: HashMap<String, Instant> = self.inner.failed.lock().clone();
        let state = self.state();
        let live = |id: &NodeId| {
            state.member(id).is_none_or(|m| {
                failed
                    .get(&m.address)
                    .is_none_or(|at| now.duration_since(*at) >= backoff)
            })
        };
        let targets = state.gossip_targets(
            &self.inner.id.me,
            &self.inner.id.address,
            &self.inner.options.seeds,
            random,
            live,
        );
        let exchanges = targets.iter().map(|addr| self.exchange(addr));
        futures::future::join_all(exchanges).await;
    }

    /// Reconciles with the node at `address`: digest, then state both ways if they differ.
    pub async fn exchange(&self, address: &str) {
        let timeout = self.inner.options.exchange_timeout;
        let digest = self.state().gossip_digest();
        let outcome = async {
            let Some(bytes) = self
                .inner
                .peers
                .exchange_digest(address, digest, timeout)
                .await?
            else {
                return Ok(());
            };
            let remote = ClusterState::decode(&bytes)?;
            let me = self.inner.id.me.clone();
            let absorbed = self.update(|s| s.absorb(&me, &remote))?;
            if absorbed.peer_behind {
                let mine = self.state().encode();
                self.inner.peers.push_state(address, mine, timeout).await?;
            }
            Ok::<(), Error>(())
        }
        .await;
        match outcome {
            Ok(()) => {
                self.inner.failed.lock().remove(address);
            }
            Err(e) => {
                let foreign = matches!(
                    e,
                    Error::WrongCluster { .. }
                        | Error::DifferentHistory { .. }
                        | Error::DivergentRings { .. }
                        | Error::DivergentPending { .. }
                );
                // A peer of another history needs an operator (join it, or fix the seeds):
                // say so once per peer, loudly; unreachable peers are routine.
                if foreign && self.inner.warned.lock().insert(address.to_string()) {
                    tracing::warn!(peer = address, error = %e, "gossip refused a peer's state");
                } else {
                    tracing::debug!(peer = address, error = %e, "gossip exchange failed");
                }
                self.inner
                    .failed
                    .lock()
                    .insert(address.to_string(), Instant::now());
            }
        }
    }

    /// The loop's work after gossip: starts this node's pending transfers (as tasks that stop
    /// when `shutdown` fires), folds the progress of running ones into the state, and releases
    /// partitions this node no longer replicates once every member has seen the ring that
    /// moved them.
    pub async fn drive_once(&self, shutdown: &CancellationToken) {
        self.drive_transfers(shutdown);
        self.release_if_due().await;
    }

    /// Starts this node's pending transfers, up to the concurrency limit, and folds progress
    /// reported by running ones into the state.
    fn drive_transfers(&self, shutdown: &CancellationToken) {
        let progress: Vec<(Transfer, (u64, u64))> =
            self.inner.live_progress.lock().drain().collect();
        for (t, (keys, bytes)) in progress {
            let grew = Progress {
                phase: Phase::Streaming,
                keys,
                bytes,
            };
            if let Err(e) = self.update(|s| Ok(s.record_progress(&t, grew))) {
                tracing::warn!(error = %e, "cannot record transfer progress");
            }
        }
        let Some(mover) = self.inner.mover.clone() else {
            return;
        };
        let state = self.state();
        let Some(pending) = state.pending() else {
            return;
        };
        // A next owner must be in every coordinator's write set before copying starts (the
        // DESIGN's rule 1), or a write that only reached the old owners after the stream passed
        // its key would be dropped with the old copy. Every member has seen the pending change
        // once the state converged; a transfer already under way means that was seen before.
        let started = pending.transfers.values().any(|p| p.phase > Phase::Waiting);
        if !started && !state.converged() {
            return;
        }
        let limit = self.inner.max_transfers.load(Ordering::Relaxed);
        for (transfer, _) in state.transfers_to_send(&self.inner.id.me) {
            {
                let mut running = self.inner.running.lock();
                if running.len() >= limit {
                    break;
                }
                if !running.insert(transfer.clone()) {
                    continue;
                }
            }
            let started = Progress {
                phase: Phase::Streaming,
                ..Progress::default()
            };
            if let Err(e) = self.update(|s| Ok(s.record_progress(&transfer, started))) {
                tracing::warn!(error = %e, "cannot record a transfer start");
            }
            let live = Arc::clone(&self.inner);
            let key = transfer.clone();
            let report: ProgressReport = Arc::new(move |keys, bytes| {
                live.live_progress.lock().insert(key.clone(), (keys, bytes));
            });
            let run = mover.transfer(transfer.clone(), pending.next.clone(), report);
            let this = self.clone();
            let stop = shutdown.clone();
            self.inner.tasks.spawn(async move {
                let outcome = tokio::select! {
                    biased;
                    _ = stop.cancelled() => None,
                    outcome = run => Some(outcome),
                };
                this.finish_transfer(&transfer, outcome);
            });
        }
    }

    fn finish_transfer(&self, transfer: &Transfer, outcome: Option<Result<TransferStats>>) {
        self.inner.live_progress.lock().remove(transfer);
        match &outcome {
            Some(Ok(stats)) => {
                let done = Progress {
                    phase: Phase::Synced,
                    keys: stats.keys,
                    bytes: stats.bytes,
                };
                match self.update(|s| Ok(s.record_progress(transfer, done))) {
                    Ok(_) => {
                        tracing::info!(partition = %transfer.partition, to = %transfer.to, keys = stats.keys, "transfer synced")
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot record a synced transfer"),
                }
            }
            Some(Err(e)) => {
                tracing::warn!(partition = %transfer.partition, to = %transfer.to, error = %e, "transfer failed; will resume");
            }
            None => {}
        }
        // Only once the sync is recorded: a loop that saw the copy neither running nor synced
        // would start it again.
        self.inner.running.lock().remove(transfer);
        if matches!(outcome, Some(Ok(_))) {
            // A failed copy waits for the next tick rather than spin. notify_one keeps a permit
            // when the loop is busy, so no end is missed.
            self.inner.transfer_ended.notify_one();
        }
    }

    /// Drops partitions this node no longer replicates, once every member has seen the ring
    /// that moved them (once per ring epoch).
    async fn release_if_due(&self) {
        let Some(mover) = self.inner.mover.clone() else {
            return;
        };
        let state = self.state();
        let epoch = state.ring().epoch();
        let me = &self.inner.id.me;
        if !state.may_release(me) || self.inner.released_epoch.load(Ordering::Relaxed) == epoch {
            return;
        }
        let parts = state.partitions_not_replicated(me);
        let count = parts.len();
        if !parts.is_empty()
            && let Err(e) = mover.release(parts, state.ring().clone()).await
        {
            tracing::warn!(error = %e, "cannot release partitions; will retry");
            return;
        }
        self.inner.released_epoch.store(epoch, Ordering::Relaxed);
        if let Some(crate::Status::Exiting | crate::Status::Removed) =
            state.member(me).map(|m| m.status)
        {
            tracing::info!(
                partitions = count,
                "this node released every partition it replicated; it holds no data of the cluster"
            );
        }
    }

    /// Joins the cluster of the node at `seed`: adopts its state, stages this node's join and
    /// tells the seed.
    pub async fn join(&self, seed: &str) -> Result<()> {
        let timeout = self.inner.options.exchange_timeout;
        let bytes = self.inner.peers.pull_state(seed, timeout).await?;
        let remote = ClusterState::decode(&bytes)?;
        let me = self.inner.id.me.clone();
        self.update(|s| {
            *s = s.joined_through(&remote, &me)?;
            Ok(())
        })?;
        self.inner
            .peers
            .push_state(seed, self.state().encode(), timeout)
            .await
    }

    /// Runs an operator command.
    pub async fn run_admin(&self, command: AdminCommand) -> Result<AdminReply> {
        let me = self.inner.id.me.clone();
        let done = |s: String| Ok(AdminReply::Done(s));
        match command {
            AdminCommand::Join { seed } => {
                self.join(&seed).await?;
                done(format!(
                    "{me} joined through {seed} and is staged to join; run plan, then commit"
                ))
            }
            AdminCommand::Leave { node } => {
                let node = node.unwrap_or(me);
                self.update(|s| s.stage(Change::Leave { node: node.clone() }))?;
                done(format!("staged: {node} leaves"))
            }
            AdminCommand::Remove { node } => {
                let during = self.update(|s| {
                    let during = s.pending().is_some();
                    s.stage(Change::Remove { node: node.clone() })?;
                    Ok(during)
                })?;
                if during {
                    // `stage` only marks the node down while a change is under way.
                    done(format!(
                        "{node} is marked down (an ownership change is in progress); stage its \
                         removal again once the change finished"
                    ))
                } else {
                    done(format!("staged: {node} is removed"))
                }
            }
            AdminCommand::Replace { old, new } => {
                self.update(|s| {
                    s.stage(Change::Replace {
                        old: old.clone(),
                        new: new.clone(),
                    })
                })?;
                done(format!("staged: {new} replaces {old}"))
            }
            AdminCommand::Plan => {
                let plan = self.state().plan()?;
                *self.inner.shown_plan.lock() = Some(plan.id);
                Ok(AdminReply::Plan(PlanView::from(&plan)))
            }
            AdminCommand::Commit { plan } => {
                let shown = match plan.or(*self.inner.shown_plan.lock()) {
                    Some(id) => id,
                    None => {
                        return Err(Error::Refused(
                            "no plan was shown by this node; run plan first".into(),
                        ));
                    }
                };
                let plan = self.update(|s| s.commit(shown))?;
                done(format!(
                    "committed plan {}: {} partitions move",
                    plan.id, plan.partitions_moving
                ))
            }
            AdminCommand::Clear => {
                self.update(|s| {
                    s.clear_staged();
                    Ok(())
                })?;
                *self.inner.shown_plan.lock() = None;
                done("cleared the staged changes".into())
            }
            AdminCommand::Members => Ok(AdminReply::Members(self.state().member_views())),
            AdminCommand::Ring => Ok(AdminReply::Ring(self.state().ring_view())),
            AdminCommand::Transfers => Ok(AdminReply::Transfers(self.state().transfers_view())),
            AdminCommand::TransferLimit { limit } => {
                self.set_max_transfers(limit);
                let now = self.inner.max_transfers.load(Ordering::Relaxed);
                done(format!("{me} now sends at most {now} transfers at once"))
            }
        }
    }
}

impl<P: GossipPeers> MembershipService for Membership<P> {
    fn on_digest(&self, digest: GossipDigest) -> Result<Option<Vec<u8>>> {
        self.state().answer_digest(&digest)
    }

    fn on_push(&self, state: Vec<u8>) -> Result<()> {
        let remote = ClusterState::decode(&state)?;
        let me = self.inner.id.me.clone();
        self.update(|s| s.absorb(&me, &remote)).map(|_| ())
    }

    fn on_pull(&self) -> Vec<u8> {
        self.state().encode()
    }

    fn admin(&self, command: AdminCommand) -> BoxFuture<'static, Result<AdminReply>> {
        let this = self.clone();
        Box::pin(async move { this.run_admin(command).await })
    }

    fn set_bucket_props(&self, bucket: Vec<u8>, props: Vec<u8>) -> Result<()> {
        let me = self.inner.id.me.clone();
        self.update(|s| {
            s.set_bucket_props(&me, &bucket, props);
            Ok(())
        })
    }
}
