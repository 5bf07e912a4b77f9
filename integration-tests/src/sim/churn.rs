//! Membership changes under faults (paper 4.8 and 4.9, issue 7): the randomized simulation of
//! [`run`](super::run) (nemesis, set and put clients, Jepsen's set checker) on a cluster whose
//! nodes run membership, while an operator joins a node and then makes one leave, removes a
//! crashed one or replaces one, and strikes at the worst moments of each change: the claimant
//! crashed mid-transfer, a receiver crashed right after its final sync, a sender crashed while
//! streaming (its transfer resumes), old and new owners partitioned from each other, a leaving
//! node partitioned away; keys are deleted while partitions move.
//!
//! Afterwards: nothing acknowledged is lost and nothing unexpected appears; every member holds
//! the same ring with nothing pending; every key's primaries under that ring hold every
//! acknowledged element; deleted keys stay deleted; and no node keeps objects of a partition it
//! does not replicate (the [`MemoryEngine`](dynamo_storage::MemoryEngine)s are read directly).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dynamo_coordinator::{DeleteRequest, GetRequest, PutRequest, Quorum};
use dynamo_membership::{AdminCommand, AdminReply, ClusterState, Phase, Status};
use dynamo_ring::{NodeId, Ring, Transfer};
use dynamo_storage::Content;

use super::Result;
use super::checker::{SetVerdict, check};
use super::cluster::{Cluster, SIM_N};
use super::control::{Control, Fault};
use super::membership::{admin, stored_state};
use super::nemesis::{FaultMix, Schedule, plan, play};
use super::net::rpc_address;
use super::rng::SimRng;
use super::run::{Harness, STORE_CONVERGE_WITHIN, sim_buckets};
use super::stores::{BucketCheck, stores_converge};
use super::workload::{
    CLIENT_TIMEOUT, ClientSetup, Convergence, LWW_BUCKET, PUTS_BUCKET, Recorder, SETS_BUCKET,
    final_phase, now, put_client, set_client,
};

/// Founders (`n1`..`n4`) and nodes that start alone (`n5`, `n6`).
pub const FOUNDERS: usize = 4;
/// Nodes in a churn run.
pub const NODES: usize = 6;

/// Bucket of the keys deleted while partitions move (keeps siblings).
pub const DELS_BUCKET: &str = "dels";
/// Keys written to [`DELS_BUCKET`] before the first change; the first half is deleted during it.
const DEL_KEYS: usize = 8;

/// How long one operator step (a commit accepted, a ring installed) may take, simulated.
const STEP_DEADLINE: Duration = Duration::from_secs(45);
/// How long after the last change every member may take to settle, and old owners to drop.
const SETTLE_DEADLINE: Duration = Duration::from_secs(20);
/// The operator's polling interval (simulated; it reads the disks, no request).
const POLL: Duration = Duration::from_millis(20);
/// How long nothing may be pending or committed after a commit before the operator commits
/// again.
const COMMIT_DROPPED_AFTER: Duration = Duration::from_secs(2);
/// How long the operator's crashes and partitions last.
const FAULT_FOR: Duration = Duration::from_millis(1_500);
/// Simulated time the settle phase leaves handoff and probes before the checks.
const SETTLE: Duration = Duration::from_secs(1);

/// What the operator strikes with during a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strike {
    /// The claimant crashes while a transfer streams.
    ClaimantMidTransfer,
    /// A receiver crashes right after one of its copies synced.
    ReceiverAfterSync,
    /// A sender crashes while streaming; its transfer resumes after the restart.
    SenderMidStream,
    /// The senders and receivers of the change cannot reach each other for a while.
    SplitOldFromNew,
    /// The leaving node is partitioned from everyone right after the commit.
    LeaverAway,
}

const STRIKES: [Strike; 4] = [
    Strike::ClaimantMidTransfer,
    Strike::ReceiverAfterSync,
    Strike::SenderMidStream,
    Strike::SplitOldFromNew,
];

/// The second change of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Departure {
    /// The node leaves (its data moves off it).
    Leave(String),
    /// The node crashes and the operator removes it.
    Remove(String),
    /// `n6` joins and takes the node's place.
    Replace(String),
}

/// One churn run's parameters, all derived from the seed.
#[derive(Clone, Debug)]
pub struct ChurnConfig {
    /// The seed.
    pub seed: u64,
    /// Read-modify-write clients.
    pub set_clients: u64,
    /// Blind-put clients.
    pub put_clients: u64,
    /// Keys per set bucket.
    pub set_keys: u64,
    /// When the nemesis heals everything and clients stop.
    pub heal_at: Duration,
    /// The founder `n5` joins through.
    pub join_seed: String,
    /// The strike during the join.
    pub join_strike: Strike,
    /// The second change.
    pub departure: Departure,
    /// The strike during it.
    pub departure_strike: Strike,
}

impl ChurnConfig {
    /// The configuration of `seed`.
    pub fn for_seed(seed: u64) -> ChurnConfig {
        let mut rng = SimRng::derive(seed, 10);
        let founder = |rng: &mut SimRng| format!("n{}", 1 + rng.index(FOUNDERS));
        let join_strike = STRIKES[rng.index(STRIKES.len())];
        let leaver = founder(&mut rng);
        let departure = match rng.index(3) {
            0 => Departure::Leave(leaver),
            1 => Departure::Remove(leaver),
            _ => Departure::Replace(leaver),
        };
        let departure_strike = match departure {
            Departure::Leave(_) => Strike::LeaverAway,
            _ => STRIKES[rng.index(STRIKES.len())],
        };
        ChurnConfig {
            seed,
            set_clients: rng.between(2, 3),
            put_clients: 1,
            set_keys: rng.between(2, 4),
            heal_at: Duration::from_millis(rng.between(3_500, 5_500)),
            join_seed: founder(&mut rng),
            join_strike,
            departure,
            departure_strike,
        }
    }
}

/// What a churn run found.
#[derive(Clone, Debug)]
pub struct ChurnReport {
    /// The run's configuration.
    pub config: ChurnConfig,
    /// The nemesis' faults.
    pub schedule: Schedule,
    /// The set checker on the sibling-keeping bucket.
    pub sets: SetVerdict,
    /// The set checker on the blind puts.
    pub puts: SetVerdict,
    /// Store convergence of the primaries under the final ring (no reads).
    pub store_convergence: Option<Convergence>,
    /// Read convergence after the final reads.
    pub convergence: Option<Convergence>,
    /// Problems the churn checks found (membership, stray copies, deletes, operator).
    pub churn_problems: Vec<String>,
    /// Epoch of the ring the members ended with.
    pub final_epoch: u64,
    /// Simulated time of the run.
    pub sim_time: Duration,
    /// Real time (printed, never asserted).
    pub wall_time: Duration,
    /// Digest of the history: the same seed gives the same digest.
    pub digest: u64,
    /// The history, one line per client operation, fault, operator step and final read.
    pub history: Vec<String>,
}

impl ChurnReport {
    /// Everything that must not happen, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut out = self.churn_problems.clone();
        for (name, v) in [(SETS_BUCKET, &self.sets), (PUTS_BUCKET, &self.puts)] {
            if !v.lost.is_empty() {
                out.push(format!("{name}: lost acknowledged {:?}", v.lost));
            }
            if !v.unexpected.is_empty() {
                out.push(format!("{name}: unexpected {:?}", v.unexpected));
            }
            if !v.unread.is_empty() {
                out.push(format!("{name}: final read failed {:?}", v.unread));
            }
        }
        for (what, c) in [
            ("replica stores", &self.store_convergence),
            ("replicas", &self.convergence),
        ] {
            match c {
                None => out.push(format!("{what}: check did not finish")),
                Some(c) if c.after_heal.is_none() => {
                    out.push(format!("{what} did not converge: {:?}", c.divergent))
                }
                Some(_) => {}
            }
        }
        out
    }

    /// One line of figures.
    pub fn summary(&self) -> String {
        let c = &self.config;
        format!(
            "seed {} | join n5 via {} strike {:?} | {:?} strike {:?} | sets acked {} lost {} \
             unexpected {} | puts acked {} lost {} | final epoch {} | sim {} ms wall {} ms \
             | digest {:016x}",
            c.seed,
            c.join_seed,
            c.join_strike,
            c.departure,
            c.departure_strike,
            self.sets.acknowledged,
            self.sets.lost.len(),
            self.sets.unexpected.len(),
            self.puts.acknowledged,
            self.puts.lost.len(),
            self.final_epoch,
            self.sim_time.as_millis(),
            self.wall_time.as_millis(),
            self.digest,
        )
    }
}

/// The command that reruns one churn seed.
pub fn rerun_command(seed: u64) -> String {
    format!(
        "CHURN_SEED={seed} cargo test -p dynamo-integration-tests --test simulation_membership \
         -- churn_seeds --nocapture"
    )
}

/// Runs one churn seed.
pub fn run_churn(config: &ChurnConfig) -> Result<ChurnReport> {
    let started = Instant::now();
    let cluster = Cluster::with_membership(NODES, FOUNDERS, sim_buckets(), config.seed)?;
    let mut harness = Harness::new(config.seed, Arc::clone(&cluster));
    // The nemesis works on the founders and n5 (n6 only ever joins by a replace).
    let targets: Vec<String> = cluster.names().into_iter().take(FOUNDERS + 1).collect();
    let mix = FaultMix {
        wipes: false,
        ..FaultMix::default()
    };
    let schedule = plan(
        &mut SimRng::derive(config.seed, 1),
        &targets,
        config.heal_at,
        mix,
    );
    let running = Arc::new(AtomicUsize::new(0));
    let recorder = Arc::clone(&harness.recorder);
    let setup = |id: u64| ClientSetup {
        cluster: Arc::clone(&cluster),
        recorder: Arc::clone(&recorder),
        seed: config.seed,
        id,
        set_keys: config.set_keys,
        until: config.heal_at,
    };
    for id in 1..=config.set_clients + config.put_clients {
        let client = setup(id);
        let sets = id <= config.set_clients;
        let count = Arc::clone(&running);
        count.fetch_add(1, Ordering::SeqCst);
        harness.client(&format!("c{id}"), async move {
            if sets {
                set_client(client).await;
            } else {
                put_client(client).await;
            }
            count.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        });
    }
    let control = Arc::clone(&harness.control);
    harness.client("nemesis", play(control, schedule.clone()));
    let outcome = Arc::new(parking_lot::Mutex::new(Outcome::default()));
    let op = Operator {
        cluster: Arc::clone(&cluster),
        control: Arc::clone(&harness.control),
        recorder: Arc::clone(&recorder),
        config: config.clone(),
        outcome: Arc::clone(&outcome),
        written: Default::default(),
        deleted: Default::default(),
    };
    let final_setup = setup(0);
    let heal_at = config.heal_at;
    harness.client("operator", async move {
        op.script().await;
        while running.load(Ordering::SeqCst) > 0 || now() < heal_at {
            tokio::time::sleep(POLL).await;
        }
        op.final_checks(final_setup).await;
        Ok(())
    });
    let sim_time = harness.run()?;
    let recorder = &harness.recorder;
    let verdict = |bucket: &str| check(&recorder.history(bucket), &recorder.final_read(bucket));
    let out = outcome.lock().clone();
    Ok(ChurnReport {
        config: config.clone(),
        schedule,
        sets: verdict(SETS_BUCKET),
        puts: verdict(PUTS_BUCKET),
        store_convergence: recorder.store_convergence(),
        convergence: recorder.convergence(),
        churn_problems: out.problems,
        final_epoch: out.final_epoch,
        sim_time,
        wall_time: started.elapsed(),
        digest: recorder.digest(),
        history: recorder.lines(),
    })
}

/// What the operator found.
#[derive(Clone, Debug, Default)]
struct Outcome {
    problems: Vec<String>,
    final_epoch: u64,
}

/// The operator: makes the changes, strikes, and checks the end state.
struct Operator {
    cluster: Arc<Cluster>,
    control: Arc<Control>,
    recorder: Arc<Recorder>,
    config: ChurnConfig,
    outcome: Arc<parking_lot::Mutex<Outcome>>,
    /// Keys of [`DELS_BUCKET`] written (acknowledged) and deleted (acknowledged).
    written: parking_lot::Mutex<BTreeSet<String>>,
    deleted: parking_lot::Mutex<BTreeSet<String>>,
}

fn id(name: &str) -> NodeId {
    NodeId::new(name).unwrap_or_else(|_| unreachable!("simulated node names are valid"))
}

impl Operator {
    fn problem(&self, p: String) {
        self.recorder.log(format!("operator PROBLEM {p}"));
        self.outcome.lock().problems.push(p);
    }

    fn log(&self, line: String) {
        self.recorder.log(format!("operator {line}"));
    }

    async fn fault(&self, fault: Fault) {
        if let Err(e) = self.control.apply(fault).await {
            self.problem(format!("fault not applied: {e}"));
        }
    }

    /// Every node's stored membership state.
    fn states(&self) -> BTreeMap<String, ClusterState> {
        self.cluster
            .nodes
            .iter()
            .filter_map(|n| stored_state(n).map(|s| (n.name().to_string(), s)))
            .collect()
    }

    /// The most advanced state on any disk (highest ring epoch, then a pending change).
    fn latest(&self) -> Option<ClusterState> {
        self.states()
            .into_values()
            .max_by_key(|s| (s.ring().epoch(), s.pending().map(|p| p.next.epoch())))
    }

    async fn script(&self) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.write_dels().await;
        let n5 = "n5";
        if self.join(n5, &self.config.join_seed.clone()).await {
            let mut entry = self.cluster.entry();
            entry.push(id(n5));
            self.cluster.set_entry(entry);
        }
        self.change(self.config.join_strike, None, true).await;
        match self.config.departure.clone() {
            Departure::Leave(x) => {
                self.stage(AdminCommand::Leave { node: Some(id(&x)) }, &x)
                    .await;
                self.leave_entry(&x);
                self.change(self.config.departure_strike, Some(&x), false)
                    .await;
            }
            Departure::Remove(x) => {
                self.leave_entry(&x);
                self.fault(Fault::Crash(x.clone())).await;
                self.stage(AdminCommand::Remove { node: id(&x) }, &x).await;
                self.change(self.config.departure_strike, Some(&x), false)
                    .await;
                // Back up after its removal: it must learn that and drop what it holds.
                self.fault(Fault::Restart(x)).await;
            }
            Departure::Replace(x) => {
                let seed = self.config.join_seed.clone();
                if self.join("n6", &seed).await {
                    let mut entry = self.cluster.entry();
                    entry.push(id("n6"));
                    self.cluster.set_entry(entry);
                }
                let replace = AdminCommand::Replace {
                    old: id(&x),
                    new: id("n6"),
                };
                self.stage(replace, &x).await;
                self.leave_entry(&x);
                self.change(self.config.departure_strike, Some(&x), false)
                    .await;
            }
        }
    }

    fn leave_entry(&self, x: &str) {
        let entry = self
            .cluster
            .entry()
            .into_iter()
            .filter(|n| n.as_str() != x)
            .collect();
        self.cluster.set_entry(entry);
    }

    /// A node the operator talks to: an entry node other than `avoid`, by turn.
    fn pick(&self, turn: usize, avoid: Option<&str>) -> String {
        let entry: Vec<NodeId> = self
            .cluster
            .entry()
            .into_iter()
            .filter(|n| Some(n.as_str()) != avoid)
            .collect();
        entry
            .get(turn % entry.len().max(1))
            .map_or_else(|| "n1".to_string(), |n| n.to_string())
    }

    /// `node` joins through `seed`; retried until its disk shows it adopted the cluster.
    async fn join(&self, node: &str, seed: &str) -> bool {
        let deadline = now() + STEP_DEADLINE;
        while now() < deadline {
            let adopted = self.cluster.node(node).ok().and_then(|n| stored_state(n));
            if adopted.is_some_and(|s| s.members().len() > 1) {
                self.log(format!("{node} joined through {seed}"));
                return true;
            }
            let command = AdminCommand::Join {
                seed: rpc_address(seed),
            };
            if let Err(e) = admin(&self.cluster, node, command).await {
                self.log(format!("join {node}: {e}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        self.problem(format!("{node} could not join through {seed}"));
        false
    }

    /// Stages `command` at an entry node (retried while the node cannot be reached).
    async fn stage(&self, command: AdminCommand, about: &str) {
        for turn in 0..100 {
            let at = self.pick(turn, Some(about));
            // A node that has not seen the last change finish refuses, or for a removal only
            // marks the node down (which lets a crashed claimant's change finish): try again.
            match admin(&self.cluster, &at, command.clone()).await {
                Ok(AdminReply::Done(text)) if text.contains("marked down") => {
                    self.log(format!("stage {command:?} at {at}: {text}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(_) => {
                    self.log(format!("staged {command:?} at {at}"));
                    return;
                }
                Err(e) => {
                    self.log(format!("stage {command:?} at {at}: {e}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        self.problem(format!("could not stage {command:?}"));
    }

    /// Plans and commits (retried until accepted), strikes, waits until the ring is installed.
    async fn change(&self, strike: Strike, leaver: Option<&str>, deletes: bool) {
        let Some(mut epoch) = self.commit(leaver).await else {
            return;
        };
        self.strike(strike, leaver).await;
        if deletes {
            self.delete_dels().await;
        }
        let deadline = now() + STEP_DEADLINE;
        let mut idle_since = now();
        while now() < deadline {
            let latest = self.latest();
            if latest
                .as_ref()
                .is_some_and(|s| s.ring().epoch() >= epoch && s.pending().is_none())
            {
                self.log(format!("ring epoch {epoch} installed"));
                return;
            }
            // The claimant drops a commit whose staged changes moved on since (documented:
            // the operator must look again): nothing pending, nothing committed, for a while.
            let dropped = latest.as_ref().is_some_and(|s| {
                s.pending().is_none() && s.staged().committed().is_none() && s.converged()
            });
            if !dropped {
                idle_since = now();
            } else if now().saturating_sub(idle_since) >= COMMIT_DROPPED_AFTER {
                self.log("the claimant dropped the commit; planning again".into());
                match self.commit(leaver).await {
                    Some(e) => epoch = e,
                    None => return,
                }
                idle_since = now();
            }
            tokio::time::sleep(POLL).await;
        }
        self.problem(format!(
            "ring epoch {epoch} not installed within {STEP_DEADLINE:?}"
        ));
    }

    async fn commit(&self, avoid: Option<&str>) -> Option<u64> {
        let deadline = now() + STEP_DEADLINE;
        let mut turn = 0;
        while now() < deadline {
            turn += 1;
            let at = self.pick(turn, avoid);
            let shown = admin(&self.cluster, &at, AdminCommand::Plan).await;
            if let Err(e) = &shown {
                self.log(format!("plan at {at}: {e}"));
            }
            if let Ok(AdminReply::Plan(plan)) = shown {
                match admin(&self.cluster, &at, AdminCommand::Commit { plan: None }).await {
                    Ok(_) => {
                        self.log(format!("committed at {at}: epoch {}", plan.next_epoch));
                        return Some(plan.next_epoch);
                    }
                    Err(e) => self.log(format!("commit at {at}: {e}")),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.problem("no commit accepted".into());
        None
    }

    /// Waits (bounded) until a transfer of the pending change matches `want`.
    async fn transfer_where(
        &self,
        want: impl Fn(&Phase) -> bool,
    ) -> Option<(Transfer, ClusterState)> {
        let deadline = now() + STEP_DEADLINE;
        while now() < deadline {
            if let Some(state) = self.latest() {
                let pending = state.pending()?;
                if let Some(t) = pending
                    .transfers
                    .iter()
                    .find(|(_, p)| want(&p.phase))
                    .map(|(t, _)| t.clone())
                {
                    return Some((t, state));
                }
            }
            tokio::time::sleep(POLL).await;
        }
        None
    }

    async fn crash_for_a_while(&self, node: String, why: &str) {
        self.log(format!("strike: crash {node} ({why})"));
        self.fault(Fault::Crash(node.clone())).await;
        tokio::time::sleep(FAULT_FOR).await;
        self.fault(Fault::Restart(node)).await;
    }

    async fn strike(&self, strike: Strike, leaver: Option<&str>) {
        match strike {
            Strike::ClaimantMidTransfer => {
                if let Some((_, state)) = self.transfer_where(|p| *p == Phase::Streaming).await
                    && let Some(claimant) = state.claimant()
                {
                    self.crash_for_a_while(claimant.to_string(), "claimant mid-transfer")
                        .await;
                }
            }
            Strike::ReceiverAfterSync => {
                if let Some((t, _)) = self.transfer_where(|p| *p == Phase::Synced).await {
                    self.crash_for_a_while(t.to.to_string(), "receiver after sync")
                        .await;
                }
            }
            Strike::SenderMidStream => {
                if let Some((t, _)) = self.transfer_where(|p| *p == Phase::Streaming).await {
                    self.crash_for_a_while(t.from.to_string(), "sender mid-stream")
                        .await;
                }
            }
            Strike::SplitOldFromNew => {
                if let Some((_, state)) = self.transfer_where(|_| true).await {
                    self.split_old_from_new(&state).await;
                }
            }
            Strike::LeaverAway => {
                if let Some(x) = leaver {
                    let others: Vec<String> = self
                        .cluster
                        .names()
                        .into_iter()
                        .filter(|n| n != x)
                        .collect();
                    self.log(format!("strike: {x} partitioned away while leaving"));
                    let (a, b) = (vec![x.to_string()], others);
                    self.fault(Fault::Partition(a.clone(), b.clone())).await;
                    tokio::time::sleep(FAULT_FOR * 2).await;
                    self.fault(Fault::Heal(a, b)).await;
                }
            }
        }
    }

    async fn split_old_from_new(&self, state: &ClusterState) {
        let Some(pending) = state.pending() else {
            return;
        };
        let receivers: BTreeSet<String> =
            pending.transfers.keys().map(|t| t.to.to_string()).collect();
        let senders: Vec<String> = pending
            .transfers
            .keys()
            .map(|t| t.from.to_string())
            .filter(|s| !receivers.contains(s))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let receivers: Vec<String> = receivers.into_iter().collect();
        if senders.is_empty() || receivers.is_empty() {
            return;
        }
        self.log(format!("strike: split {senders:?} from {receivers:?}"));
        self.fault(Fault::Partition(senders.clone(), receivers.clone()))
            .await;
        tokio::time::sleep(FAULT_FOR).await;
        self.fault(Fault::Heal(senders, receivers)).await;
    }
}

mod checks;

/// The ring every member ended with, for the checks.
fn final_ring(states: &BTreeMap<String, ClusterState>) -> Option<Ring> {
    states
        .values()
        .max_by_key(|s| s.ring().epoch())
        .map(|s| s.ring().clone())
}

/// Whether `status` is one of a member still in the cluster.
fn is_member(status: Status) -> bool {
    status == Status::Valid
}

/// The `i`th key of [`DELS_BUCKET`].
fn dels_key(i: usize) -> String {
    format!("d{i}")
}

/// A write of `key` in [`DELS_BUCKET`] (value: the key's name).
fn put(key: &str) -> PutRequest {
    PutRequest::new(
        DELS_BUCKET,
        key,
        Content::new(key.as_bytes().to_vec()),
        Default::default(),
    )
}

/// A delete of `key` in [`DELS_BUCKET`] of the versions `context` saw.
fn delete(key: &str, context: Option<dynamo_versioning::Context>) -> DeleteRequest {
    DeleteRequest::new(DELS_BUCKET, key, context)
}

/// A read of `key` in [`DELS_BUCKET`] from every replica.
fn read(key: &str) -> GetRequest {
    GetRequest {
        r: Quorum::All,
        ..GetRequest::new(DELS_BUCKET, key)
    }
}

/// Simulated time clients may take per request.
fn client_timeout() -> Duration {
    CLIENT_TIMEOUT
}

/// Replicas per key (N) of every bucket in a churn run.
fn n() -> usize {
    usize::from(SIM_N)
}

/// Store convergence deadline for churn runs.
fn store_deadline(heal_at: Duration, started: Duration) -> Duration {
    heal_at.max(started) + STORE_CONVERGE_WITHIN
}

/// The buckets the store check covers.
fn bucket_checks(set_keys: u64) -> Vec<BucketCheck> {
    let set_keys: BTreeSet<String> = (0..set_keys).map(|k| format!("s{k}")).collect();
    vec![
        BucketCheck {
            bucket: SETS_BUCKET.into(),
            extra_keys: set_keys.clone(),
            lww: false,
        },
        BucketCheck {
            bucket: LWW_BUCKET.into(),
            extra_keys: set_keys,
            lww: true,
        },
        BucketCheck {
            bucket: PUTS_BUCKET.into(),
            extra_keys: BTreeSet::new(),
            lww: false,
        },
    ]
}

/// Waits until every key's primaries under the final ring hold the same siblings and every
/// acknowledged element (no reads), then leaves handoff and probes a moment.
async fn converge_stores(op: &Operator) {
    let started = now();
    stores_converge(
        Arc::clone(&op.cluster),
        Arc::clone(&op.recorder),
        bucket_checks(op.config.set_keys),
        op.config.heal_at,
        store_deadline(op.config.heal_at, started),
    )
    .await;
    tokio::time::sleep(SETTLE).await;
}

/// The final R = N reads of every key and the replicas' read convergence.
async fn final_reads(op: &Operator, setup: ClientSetup) {
    let set_keys: BTreeSet<String> = (0..op.config.set_keys).map(|k| format!("s{k}")).collect();
    let buckets = vec![
        (SETS_BUCKET.to_string(), set_keys.clone()),
        (LWW_BUCKET.to_string(), set_keys),
        (PUTS_BUCKET.to_string(), BTreeSet::new()),
    ];
    final_phase(
        setup,
        buckets,
        op.config.heal_at,
        now() + super::run::CONVERGE_WITHIN,
    )
    .await;
}
