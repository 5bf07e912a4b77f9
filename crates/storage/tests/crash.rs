//! Crash test: every acknowledged write survives SIGKILL.
//!
//! The test re-runs its own binary as a child process (selected by an environment variable) that
//! writes through a [`RedbEngine`] from several threads and prints `ACK <key> <value>` for each
//! write once it was acknowledged as durable. The parent kills the child with SIGKILL after a
//! seeded, varying number of acknowledgements, reopens the file, and checks that every
//! acknowledged write is there. Iterations alternate between `Sync` durability (each write is
//! acknowledged once its group commit is fsynced) and `Buffered` durability with an explicit
//! `flush()` (writes are acknowledged only after the flush returns), and they share one file,
//! so each one also recovers a file the previous one left mid-write.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dynamo_ring::PartitionId;
use dynamo_storage::{Content, Durability, Engine, EngineExt, ObjectKey, Options, RedbEngine};
use dynamo_versioning::{Actor, Context};

/// Set in the child: `<data file>|<sync|buffered>|<iteration>`.
const CHILD_ENV: &str = "DYNAMO_STORAGE_CRASH_CHILD";
/// Overrides the default seed of the kill points.
const SEED_ENV: &str = "DYNAMO_STORAGE_CRASH_SEED";
/// Default seed, so a failure reproduces.
const DEFAULT_SEED: u64 = 0x5eed_d1a0;
/// Kill/reopen rounds: enough to hit different points of the commit cycle in both modes while
/// keeping the test to a few seconds.
const ITERATIONS: u64 = 8;
/// Writer threads in the child, so acknowledgements come from shared group commits.
const CHILD_THREADS: u64 = 4;
/// Writes per thread between two flushes in buffered mode.
const BUFFERED_BATCH: u64 = 8;
/// The child gives up on its own after this long, so it can never outlive a broken parent.
const CHILD_LIFETIME: Duration = Duration::from_secs(30);
/// The parent waits at most this long for the acknowledgements it wants.
const ACK_DEADLINE: Duration = Duration::from_secs(20);

fn key_for(iteration: u64, thread: u64, i: u64) -> ObjectKey {
    let partition = PartitionId(((thread * 31 + i) % 16) as u32);
    ObjectKey::new(partition, "crash", format!("it{iteration}-t{thread}-{i}"))
}

/// splitmix64: a tiny seeded generator for the kill points.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        run_child(&spec);
        return;
    }
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    println!("crash test seed {seed} (set {SEED_ENV} to reproduce)");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("crash.redb");
    let mut rng = seed;
    let mut acknowledged = Vec::new();
    for iteration in 0..ITERATIONS {
        let mode = if iteration % 2 == 0 {
            "sync"
        } else {
            "buffered"
        };
        let kill_after = 20 + next_random(&mut rng) % 300;
        let acks = run_and_kill(&path, mode, iteration, kill_after);
        assert!(
            acks.len() as u64 >= kill_after,
            "iteration {iteration}: child stopped after {} of {kill_after} acks",
            acks.len()
        );
        acknowledged.extend(acks);
        check_all_present(&path, &acknowledged, iteration);
    }
    println!(
        "{} acknowledged writes survived {ITERATIONS} SIGKILLs",
        acknowledged.len()
    );
}

/// Runs one child, kills it after `kill_after` acks, and returns every ack it printed.
fn run_and_kill(path: &Path, mode: &str, iteration: u64, kill_after: u64) -> Vec<(String, String)> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "acknowledged_writes_survive_sigkill",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{}|{mode}|{iteration}", path.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut acks = Vec::new();
    let deadline = Instant::now() + ACK_DEADLINE;
    while (acks.len() as u64) < kill_after && Instant::now() < deadline {
        match lines.next() {
            Some(line) => acks.extend(parse_ack(&line.unwrap())),
            None => break,
        }
    }
    // SIGKILL on Unix: no destructor, no flush, no clean close.
    child.kill().unwrap();
    child.wait().unwrap();
    // Lines already in the pipe were printed after their write was acknowledged: check them too.
    for line in lines {
        acks.extend(parse_ack(&line.unwrap()));
    }
    acks
}

fn parse_ack(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("ACK ")?;
    let (key, value) = rest.split_once(' ')?;
    Some((key.to_owned(), value.to_owned()))
}

/// Reopens the file after a crash and checks every acknowledged write.
fn check_all_present(path: &Path, acknowledged: &[(String, String)], iteration: u64) {
    let engine = RedbEngine::open(path, Options::default()).unwrap();
    for (key, value) in acknowledged {
        let object_key = parse_key(key);
        let stored = engine.get(&object_key).unwrap();
        let values: Vec<String> = stored
            .iter()
            .flat_map(|o| o.values())
            .map(|c| String::from_utf8_lossy(&c.value).into_owned())
            .collect();
        assert_eq!(
            values,
            vec![value.clone()],
            "iteration {iteration}: lost acknowledged write {key}"
        );
    }
    engine.close().unwrap();
}

/// Inverse of the `ACK` key format `<partition>/<key>`.
fn parse_key(text: &str) -> ObjectKey {
    let (p, key) = text.split_once('/').unwrap();
    ObjectKey::new(PartitionId(p.parse().unwrap()), "crash", key)
}

fn show_key(key: &ObjectKey) -> String {
    format!("{}/{}", key.partition.0, String::from_utf8_lossy(&key.key))
}

/// The child: write until killed (or until `CHILD_LIFETIME`), printing acknowledgements.
fn run_child(spec: &str) {
    let mut parts = spec.split('|');
    let path = PathBuf::from(parts.next().unwrap());
    let mode = parts.next().unwrap();
    let iteration: u64 = parts.next().unwrap().parse().unwrap();
    let durability = if mode == "sync" {
        Durability::Sync
    } else {
        Durability::Buffered
    };
    let engine = RedbEngine::open(&path, Options::with_durability(durability)).unwrap();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..CHILD_THREADS {
            let engine = &engine;
            scope.spawn(move || {
                let actor = Actor::new(thread + 1, iteration as u32);
                let mut pending = Vec::new();
                let mut i = 0;
                while started.elapsed() < CHILD_LIFETIME {
                    let key = key_for(iteration, thread, i);
                    let value = format!("v{iteration}.{thread}.{i}");
                    engine
                        .put_local(
                            &key,
                            actor,
                            &Context::empty(),
                            Content::new(value.clone()),
                            i,
                        )
                        .unwrap();
                    pending.push((key, value));
                    if durability == Durability::Sync || pending.len() as u64 >= BUFFERED_BATCH {
                        if durability == Durability::Buffered {
                            engine.flush().unwrap();
                        }
                        for (key, value) in pending.drain(..) {
                            println!("ACK {} {value}", show_key(&key));
                        }
                    }
                    i += 1;
                }
            });
        }
    });
}
