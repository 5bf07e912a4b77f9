//! Anti-entropy on real processes (paper 4.7): three `dynamo server` processes with N = 3 take
//! [`KEYS`] writes; then one node is killed, its data directory deleted, and it is started again
//! empty. With no client read at all, Merkle exchanges must bring every key back onto it. The
//! test watches the wiped node's own count of the keys it stores (the `ae_status` RPC behind
//! `dynamo admin aae`) and prints how long the repair took; then it stops the two other nodes
//! and reads a sample of the keys from the repaired node alone (R = 1), values included.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use dynamo_client::{Client, Context, GetRequest, Quorum};
use dynamo_integration_tests::procs::{POLL_INTERVAL, ProcCluster};
use dynamo_integration_tests::{CLUSTER, SECRET};
use dynamo_ring::NodeId;
use dynamo_rpc::{ClusterAuth, PeerPool, TcpConnector};
use futures::StreamExt;

/// Keys written before the wipe (the figure). A debug build on a loaded two-core
/// machine writes them in well under a minute.
const KEYS: usize = 20_000;

/// Concurrent writers.
const WRITERS: usize = 16;

/// Tries per write: the cluster is healthy during the load, so a failure is rare and transient.
const WRITE_TRIES: usize = 3;

/// Bound on the write phase.
const WRITE_TIMEOUT: Duration = Duration::from_secs(240);

/// Bound on the repair of the wiped node (the printed figure is what matters).
const REPAIR_TIMEOUT: Duration = Duration::from_secs(300);

/// Every node's extra configuration: short anti-entropy intervals so the test runs in seconds
/// (the defaults are minutes), N = 3 (the default) so every node replicates every key.
const EXTRA_TOML: &str = "[anti_entropy]\nexchange_interval_ms = 3000\nconfirm_delay_ms = 1000\n";

/// The node that is wiped (`n3`).
const WIPED: usize = 2;

/// Every `SAMPLE_EVERY`th key is read back from the repaired node alone.
const SAMPLE_EVERY: usize = 10;

/// Timeout of each status poll and each read.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

const BUCKET: &str = "aae";

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_dynamo-under-test"))
}

fn key(i: usize) -> String {
    format!("key-{i:06}")
}

fn value_of(key: &str) -> String {
    format!("value of {key}")
}

async fn write_all(client: &Client) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..KEYS)
        .map(|i| {
            let client = client.clone();
            async move {
                let k = key(i);
                let mut last = None;
                for _ in 0..WRITE_TRIES {
                    match client
                        .put(BUCKET, k.as_str(), value_of(&k), Context::empty())
                        .await
                    {
                        Ok(_) => return Ok(()),
                        Err(e) => last = Some(e),
                    }
                }
                Err(anyhow::anyhow!("{k}: {last:?}"))
            }
        })
        .buffer_unordered(WRITERS)
        .collect()
        .await;
    let failed: Vec<_> = results.into_iter().filter_map(|r| r.err()).collect();
    if !failed.is_empty() {
        bail!("{} writes failed, first: {}", failed.len(), failed[0]);
    }
    Ok(())
}

/// The keys the node counts in its anti-entropy trees, and whether every tree is built.
async fn local_keys(pool: &PeerPool<TcpConnector>, node: &NodeId) -> anyhow::Result<(u64, bool)> {
    let status = pool
        .ae_status(node, CALL_TIMEOUT)
        .await
        .map_err(|e| anyhow::anyhow!("ae_status: {e}"))?;
    let ready = status.partitions.iter().all(|p| p.ready);
    Ok((status.keys(), ready))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_gets_every_key_back_with_no_read() -> anyhow::Result<()> {
    let mut cluster = ProcCluster::start(binary(), 3, EXTRA_TOML).await?;
    let client = Client::connect(cluster.client_config()).await?;

    let started = Instant::now();
    tokio::time::timeout(WRITE_TIMEOUT, write_all(&client))
        .await
        .context("the write phase timed out")??;
    let write_time = started.elapsed();
    println!("wrote {KEYS} keys in {write_time:.1?} (debug build, 3 nodes, N = 3, sync)");

    cluster.kill(WIPED)?;
    let data_dir = cluster.dir().join(&cluster.nodes[WIPED].id);
    std::fs::remove_dir_all(&data_dir)?;
    std::fs::create_dir_all(&data_dir)?;
    cluster.restart(WIPED).await?;
    let wiped_at = Instant::now();

    let addresses = cluster
        .nodes
        .iter()
        .map(|n| Ok((NodeId::new(n.id.clone())?, n.rpc_addr.to_string())))
        .collect::<anyhow::Result<_>>()?;
    let auth = ClusterAuth::new(CLUSTER, SECRET.as_bytes().to_vec())?;
    let pool = Arc::new(PeerPool::new(TcpConnector, auth, addresses));
    let wiped = NodeId::new(cluster.nodes[WIPED].id.clone())?;
    let mut last = (0, false);
    loop {
        if let Ok(now) = local_keys(&pool, &wiped).await {
            last = now;
        }
        if last.0 >= KEYS as u64 && last.1 {
            break;
        }
        if wiped_at.elapsed() > REPAIR_TIMEOUT {
            bail!(
                "after {REPAIR_TIMEOUT:?} the wiped node holds {} of {KEYS} keys; log:\n{}",
                last.0,
                cluster.log_tail(WIPED, 30)
            );
        }
        tokio::time::sleep(POLL_INTERVAL * 4).await;
    }
    let repair_time = wiped_at.elapsed();
    println!(
        "the wiped node holds all {} keys again {repair_time:.1?} after its restart, with no read",
        last.0
    );
    assert_eq!(last.0, KEYS as u64, "no key appeared twice or from nowhere");

    // The user's view: with the two other nodes stopped, the repaired node alone serves reads.
    cluster.kill(0)?;
    cluster.kill(1)?;
    let sample: Vec<usize> = (0..KEYS).step_by(SAMPLE_EVERY).collect();
    let misses: Vec<String> = futures::stream::iter(sample.iter().copied())
        .map(|i| {
            let (pool, wiped) = (Arc::clone(&pool), wiped.clone());
            async move {
                let k = key(i);
                let request = GetRequest {
                    r: Quorum::One,
                    ..GetRequest::new(BUCKET, k.as_str())
                };
                match pool.get(&wiped, request, CALL_TIMEOUT).await {
                    Ok(got)
                        if got
                            .siblings()
                            .iter()
                            .map(|s| s.value.value.as_ref())
                            .eq([value_of(&k).as_bytes()]) =>
                    {
                        None
                    }
                    other => Some(format!("{k}: {other:?}")),
                }
            }
        })
        .buffer_unordered(WRITERS)
        .filter_map(|miss| async move { miss })
        .collect()
        .await;
    println!(
        "read {} sampled keys from the repaired node alone: {} wrong or missing",
        sample.len(),
        misses.len()
    );
    assert!(
        misses.is_empty(),
        "first misses: {:?}",
        &misses[..misses.len().min(5)]
    );
    Ok(())
}
