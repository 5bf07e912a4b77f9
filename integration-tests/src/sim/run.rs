//! Running a simulation: the [`Harness`] (a turmoil world with the cluster's nodes, clients, and
//! a driver loop that carries out faults), and [`run_seed`], one full randomized run with its
//! [`RunReport`].

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use dynamo_coordinator::BucketProps;

use super::checker::{SetVerdict, check};
use super::clock::SIM_EPOCH_MS;
use super::cluster::Cluster;
use super::control::{Control, Executor};
use super::nemesis::{FaultMix, Schedule, plan, play};
use super::rng::SimRng;
use super::stores::{BucketCheck, stores_converge};
use super::workload::{
    ClientSetup, Convergence, LWW_BUCKET, PUTS_BUCKET, Recorder, SETS_BUCKET, final_phase, now,
    put_client, set_client,
};
use super::{Error, Result};

/// Simulated time per step: turmoil's default, fine enough for millisecond timers.
pub const TICK: Duration = Duration::from_millis(1);

/// Network latency, fixed. A range would make turmoil draw a random latency per message, and
/// when a host crashes tokio drops its tasks (and so closes its sockets) in an order that depends
/// on process-global task ids; the closing segments would then consume those draws in a different
/// order from run to run and the seed would no longer reproduce the history. Reordering still
/// comes from holds, partitions, crashes and concurrent clients.
pub const LATENCY: (Duration, Duration) = (Duration::from_millis(2), Duration::from_millis(2));

/// Segments a simulated TCP stream buffers: far above what one request has in flight.
const TCP_CAPACITY: usize = 4_096;

/// A run that is still going after this much simulated time is stuck: the run fails.
pub const SIM_LIMIT: Duration = Duration::from_secs(120);

/// Time between the heal (and the last client operation) and the final reads: several probe
/// and handoff intervals, so every node is marked up again and hints are handed back.
pub const SETTLE: Duration = Duration::from_secs(2);

/// How long after the final reads the replicas have to agree.
pub const CONVERGE_WITHIN: Duration = Duration::from_secs(10);

/// How long after the heal every replica's store has to converge with no client read (hinted
/// handoff and anti-entropy only): many exchange intervals.
pub const STORE_CONVERGE_WITHIN: Duration = Duration::from_secs(30);

/// How often the final phase checks whether the workload clients are done.
const DONE_POLL: Duration = Duration::from_millis(50);

/// A turmoil world with a cluster installed, ready for clients.
pub struct Harness {
    /// The cluster.
    pub cluster: Arc<Cluster>,
    /// Where clients send faults.
    pub control: Arc<Control>,
    /// What clients observed.
    pub recorder: Arc<Recorder>,
    sim: turmoil::Sim<'static>,
    executor: Executor,
}

impl Harness {
    /// A world seeded with `seed` running `cluster`'s nodes.
    pub fn new(seed: u64, cluster: Arc<Cluster>) -> Harness {
        let mut sim = turmoil::Builder::new()
            .rng_seed(seed)
            .epoch(UNIX_EPOCH + Duration::from_millis(SIM_EPOCH_MS))
            .simulation_duration(SIM_LIMIT)
            .tick_duration(TICK)
            .min_message_latency(LATENCY.0)
            .max_message_latency(LATENCY.1)
            .tcp_capacity(TCP_CAPACITY)
            .build();
        cluster.install(&mut sim);
        Harness {
            cluster,
            control: Arc::new(Control::default()),
            recorder: Arc::new(Recorder::default()),
            sim,
            executor: Executor::new(),
        }
    }

    /// Adds a client host named `name` running `client`. An error it returns fails the run.
    pub fn client(&mut self, name: &str, client: impl Future<Output = Result<()>> + 'static) {
        self.sim.client(name, async move {
            client
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)
        });
    }

    /// Runs until every client finished, carrying out faults as clients ask. Returns the
    /// simulated time it took.
    pub fn run(&mut self) -> Result<Duration> {
        loop {
            for (fault, done) in self.control.take() {
                self.executor
                    .execute(&mut self.sim, &self.cluster, &fault)?;
                self.recorder
                    .log_at(self.sim.elapsed(), format!("nemesis {fault}"));
                // The client may have given up waiting; the fault happened all the same.
                let _ = done.send(());
            }
            match self.sim.step() {
                Ok(true) => return Ok(self.sim.elapsed()),
                Ok(false) => {}
                Err(e) => return Err(Error::Sim(e.to_string())),
            }
        }
    }
}

/// The parameters of one randomized run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed every random choice derives from.
    pub seed: u64,
    /// Cluster size (3 to 5).
    pub nodes: usize,
    /// Read-modify-write clients of the set buckets.
    pub set_clients: u64,
    /// Blind-put clients.
    pub put_clients: u64,
    /// Keys per set bucket.
    pub set_keys: u64,
    /// When the faults end and clients stop starting operations.
    pub heal_at: Duration,
    /// Which faults the nemesis uses.
    pub faults: FaultMix,
}

impl SimConfig {
    /// The configuration seed `seed` runs with: 3 to 5 nodes, a few clients of each kind, and a
    /// fault window of 3 to 5 simulated seconds.
    pub fn for_seed(seed: u64) -> SimConfig {
        let mut rng = SimRng::derive(seed, 0);
        SimConfig {
            seed,
            nodes: 3 + rng.index(3),
            set_clients: rng.between(2, 4),
            put_clients: rng.between(1, 2),
            set_keys: rng.between(2, 4),
            heal_at: Duration::from_millis(rng.between(3_000, 5_000)),
            faults: FaultMix::default(),
        }
    }
}

/// Bucket properties of a run: `sets` and `puts` keep siblings (the defaults), `lww` resolves
/// by timestamp.
pub fn sim_buckets() -> BTreeMap<Vec<u8>, BucketProps> {
    let lww = BucketProps {
        last_write_wins: true,
        allow_mult: false,
        ..BucketProps::default()
    };
    [(LWW_BUCKET.as_bytes().to_vec(), lww)]
        .into_iter()
        .collect()
}

/// What one run found.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The run's configuration.
    pub config: SimConfig,
    /// The faults the nemesis played.
    pub schedule: Schedule,
    /// The set checker's verdict on the sibling-keeping bucket.
    pub sets: SetVerdict,
    /// The verdict on the last-write-wins bucket (lost elements expected).
    pub lww: SetVerdict,
    /// The verdict on the blind puts.
    pub puts: SetVerdict,
    /// Hints stored by fallbacks, over every node and incarnation.
    pub hints_stored: u64,
    /// Hints handed off to their owners.
    pub hints_delivered: u64,
    /// Hints still on a fallback's disk when the run ended (a wipe also discards hints).
    pub hints_pending: u64,
    /// Whether and when the replicas converged after the heal.
    pub convergence: Option<Convergence>,
    /// Whether and when every replica's store converged after the heal with no client read.
    pub store_convergence: Option<Convergence>,
    /// Simulated time of the whole run.
    pub sim_time: Duration,
    /// Real time the run took (printed, never asserted).
    pub wall_time: Duration,
    /// Digest of the history and results: the same seed must give the same digest.
    pub digest: u64,
    /// The history, one line per client operation, fault and final read.
    pub history: Vec<String>,
}

impl RunReport {
    /// Everything that must not happen, one line each; empty for a correct run.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, verdict, lost_allowed) in [
            (SETS_BUCKET, &self.sets, false),
            (PUTS_BUCKET, &self.puts, false),
            (LWW_BUCKET, &self.lww, true),
        ] {
            if !lost_allowed && !verdict.lost.is_empty() {
                out.push(format!("{name}: lost acknowledged {:?}", verdict.lost));
            }
            if !verdict.unexpected.is_empty() {
                out.push(format!("{name}: unexpected {:?}", verdict.unexpected));
            }
            if !verdict.unread.is_empty() {
                out.push(format!("{name}: final read failed {:?}", verdict.unread));
            }
            if !verdict.garbage.is_empty() {
                out.push(format!("{name}: undecodable values {:?}", verdict.garbage));
            }
        }
        match &self.store_convergence {
            None => out.push("the store convergence check did not finish".into()),
            Some(c) if c.after_heal.is_none() => out.push(format!(
                "replica stores did not converge without reads: {:?}",
                c.divergent
            )),
            Some(_) => {}
        }
        match &self.convergence {
            None => out.push("the final phase did not finish".into()),
            Some(c) if c.after_heal.is_none() => {
                out.push(format!("replicas did not converge: {:?}", c.divergent))
            }
            Some(_) => {}
        }
        out
    }

    /// One line of figures for the run.
    pub fn summary(&self) -> String {
        let c = &self.config;
        let converged = match &self.convergence {
            Some(Convergence {
                after_heal: Some(d),
                ..
            }) => format!("{} ms", d.as_millis()),
            _ => "never".into(),
        };
        let stores = match &self.store_convergence {
            Some(Convergence {
                after_heal: Some(d),
                ..
            }) => format!("{} ms", d.as_millis()),
            _ => "never".into(),
        };
        format!(
            "seed {} nodes {} | sets: attempted {} acked {} lost {} recovered {} unexpected {} \
             | puts: attempted {} acked {} lost {} recovered {} | lww: acked {} lost {} \
             | hints stored {} delivered {} pending {} | stores converged {stores} after heal \
             (no reads) | converged {converged} after heal \
             | sim {} ms wall {} ms | digest {:016x}",
            c.seed,
            c.nodes,
            self.sets.attempted,
            self.sets.acknowledged,
            self.sets.lost.len(),
            self.sets.recovered.len(),
            self.sets.unexpected.len(),
            self.puts.attempted,
            self.puts.acknowledged,
            self.puts.lost.len(),
            self.puts.recovered.len(),
            self.lww.acknowledged,
            self.lww.lost.len(),
            self.hints_stored,
            self.hints_delivered,
            self.hints_pending,
            self.sim_time.as_millis(),
            self.wall_time.as_millis(),
            self.digest,
        )
    }
}

/// The command that reruns one seed.
pub fn rerun_command(seed: u64) -> String {
    format!(
        "SIM_SEED={seed} cargo test -p dynamo-integration-tests --test simulation -- \
         random_seeds --nocapture"
    )
}

/// Counts the workload clients still running, so the final phase starts after the last one.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs one seed: cluster, workload, nemesis, final reads, convergence, checker.
pub fn run_seed(config: &SimConfig) -> Result<RunReport> {
    let started = Instant::now();
    let cluster = Cluster::new(config.nodes, sim_buckets())?;
    let mut harness = Harness::new(config.seed, Arc::clone(&cluster));
    let schedule = plan(
        &mut SimRng::derive(config.seed, 1),
        &cluster.names(),
        config.heal_at,
        config.faults,
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
    let mut clients = Vec::new();
    for id in 1..=config.set_clients {
        clients.push((format!("c{id}"), setup(id), true));
    }
    for id in 1..=config.put_clients {
        clients.push((format!("p{id}"), setup(100 + id), false));
    }
    for (name, client, sets) in clients {
        running.fetch_add(1, Ordering::SeqCst);
        let guard = Running(Arc::clone(&running));
        harness.client(&name, async move {
            let _guard = guard;
            if sets {
                set_client(client).await;
            } else {
                put_client(client).await;
            }
            Ok(())
        });
    }
    let control = Arc::clone(&harness.control);
    let nemesis = schedule.clone();
    harness.client("nemesis", async move { play(control, nemesis).await });
    let final_setup = setup(0);
    let store_cluster = Arc::clone(&cluster);
    let store_recorder = Arc::clone(&recorder);
    let set_keys: BTreeSet<String> = (0..config.set_keys).map(|k| format!("s{k}")).collect();
    let heal_at = config.heal_at;
    harness.client("checker", async move {
        while running.load(Ordering::SeqCst) > 0 || now() < heal_at {
            tokio::time::sleep(DONE_POLL).await;
        }
        let checks = [
            (SETS_BUCKET, set_keys.clone(), false),
            (LWW_BUCKET, set_keys.clone(), true),
            (PUTS_BUCKET, BTreeSet::new(), false),
        ]
        .into_iter()
        .map(|(bucket, extra_keys, lww)| BucketCheck {
            bucket: bucket.to_string(),
            extra_keys,
            lww,
        })
        .collect();
        let started = now();
        stores_converge(
            Arc::clone(&store_cluster),
            Arc::clone(&store_recorder),
            checks,
            heal_at,
            heal_at.max(started) + STORE_CONVERGE_WITHIN,
        )
        .await;
        tokio::time::sleep(SETTLE.saturating_sub(now().saturating_sub(started))).await;
        let buckets = vec![
            (SETS_BUCKET.to_string(), set_keys.clone()),
            (LWW_BUCKET.to_string(), set_keys),
            (PUTS_BUCKET.to_string(), BTreeSet::new()),
        ];
        final_phase(final_setup, buckets, heal_at, now() + CONVERGE_WITHIN).await;
        Ok(())
    });
    let sim_time = harness.run()?;
    let recorder = &harness.recorder;
    let verdict = |bucket: &str| check(&recorder.history(bucket), &recorder.final_read(bucket));
    let (hints_stored, hints_delivered) = cluster.hint_counts();
    Ok(RunReport {
        config: config.clone(),
        schedule,
        sets: verdict(SETS_BUCKET),
        lww: verdict(LWW_BUCKET),
        puts: verdict(PUTS_BUCKET),
        hints_stored,
        hints_delivered,
        hints_pending: cluster.hints_pending(),
        convergence: recorder.convergence(),
        store_convergence: recorder.store_convergence(),
        sim_time,
        wall_time: started.elapsed(),
        digest: recorder.digest(),
        history: recorder.lines(),
    })
}
