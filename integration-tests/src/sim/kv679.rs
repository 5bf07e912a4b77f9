//! Riak's kv679 cases as scripted scenarios (the Riak issue of the same name: causal metadata
//! that outlives the data it describes makes newer writes lose to older ones).
//!
//! * [`wiped_node`]: a node loses its disk and restarts. Without a new epoch its actor would mint
//!   counters the other replicas have already seen, and they would drop its next write as old.
//! * [`late_tombstone`]: a delete lands on a fallback as a hint while a primary is partitioned; a
//!   newer write reaches that primary first; the hint arrives late. The tombstone must not erase
//!   the newer write (nor bring back the deleted one).
//!
//! Each scenario runs in its own seeded simulation and returns `Err(Error::Check(..))` naming
//! what it observed when an expectation fails.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dynamo_coordinator::{
    DeleteRequest, GetRequest, GetResponse, PutRequest, PutResponse, Quorum, Replicas,
};
use dynamo_ring::{NodeId, PreferenceList};
use dynamo_rpc::PeerPool;
use dynamo_storage::{Content, ObjectKey};
use dynamo_versioning::Context;

use super::cluster::{Cluster, SIM_REQUEST_TIMEOUT};
use super::control::{Control, Fault};
use super::net::TurmoilConnector;
use super::run::{Harness, sim_buckets};
use super::workload::{CLIENT_TIMEOUT, now};
use super::{Error, Result};

/// Bucket the scenarios write to (default properties: siblings kept, N=3, R=W=2).
pub const KV679_BUCKET: &str = "kv679";

/// How long a scenario waits for something that background work (failure detection, probes,
/// handoff) must bring about.
const WAIT_FOR: Duration = Duration::from_secs(10);

/// How often such a condition is checked.
const POLL: Duration = Duration::from_millis(50);

/// A scripted client: one peer pool and the fault control.
struct Script {
    cluster: Arc<Cluster>,
    control: Arc<Control>,
    pool: PeerPool<TurmoilConnector>,
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Check(what()))
    }
}

/// The `i`-th primary of a preference list.
fn replica(pl: &PreferenceList, i: usize) -> Result<NodeId> {
    pl.primaries()
        .get(i)
        .cloned()
        .ok_or_else(|| Error::Setup(format!("the key has no primary #{i}")))
}

/// The live values of a read, sorted.
fn live(response: &GetResponse) -> Vec<String> {
    let mut v: Vec<String> = response
        .siblings()
        .iter()
        .map(|s| String::from_utf8_lossy(&s.value.value).into_owned())
        .collect();
    v.sort();
    v
}

impl Script {
    fn new(harness: &Harness) -> Script {
        Script {
            cluster: Arc::clone(&harness.cluster),
            control: Arc::clone(&harness.control),
            pool: harness.cluster.pool(),
        }
    }

    async fn put(
        &self,
        via: &NodeId,
        key: &str,
        value: &str,
        context: Context,
        w: Quorum,
    ) -> Result<PutResponse> {
        let request = PutRequest {
            w,
            ..PutRequest::new(KV679_BUCKET, key, Content::new(value.to_string()), context)
        };
        Ok(self.pool.put(via, request, CLIENT_TIMEOUT).await?)
    }

    async fn get(&self, via: &NodeId, key: &str, r: Quorum) -> Result<GetResponse> {
        let request = GetRequest {
            r,
            ..GetRequest::new(KV679_BUCKET, key)
        };
        Ok(self.pool.get(via, request, CLIENT_TIMEOUT).await?)
    }

    /// The live values `node` itself stores for `key` (its replica, not a quorum read).
    async fn stored(&self, node: &NodeId, key: &str) -> Result<Vec<String>> {
        let pl = self.cluster.preference_list(KV679_BUCKET, key);
        let object_key = ObjectKey::new(pl.partition(), KV679_BUCKET, key);
        let found = Replicas::get(&self.pool, node, &object_key, SIM_REQUEST_TIMEOUT).await?;
        Ok(live(&GetResponse {
            object: found.unwrap_or_default(),
        }))
    }

    async fn pending_hints(&self, node: &NodeId) -> Option<u64> {
        self.pool
            .ping(node, SIM_REQUEST_TIMEOUT)
            .await
            .ok()
            .map(|s| s.hints_pending)
    }

    /// Polls `condition` until it holds; an error if [`WAIT_FOR`] passes first.
    async fn wait_until<F, Fut>(&self, what: &str, mut condition: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = now() + WAIT_FOR;
        while !condition().await {
            if now() >= deadline {
                return Err(Error::Check(format!("timed out waiting until {what}")));
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }
}

/// Runs `script` as the only client of a fresh `size`-node cluster seeded with `seed`.
fn run_script<F, Fut>(seed: u64, size: usize, script: F) -> Result<()>
where
    F: FnOnce(Script) -> Fut,
    Fut: Future<Output = Result<()>> + 'static,
{
    let cluster = Cluster::new(size, sim_buckets())?;
    let mut harness = Harness::new(seed, cluster);
    let client = script(Script::new(&harness));
    harness.client("script", client);
    harness.run().map(|_| ())
}

/// kv679, wiped node: writes coordinated by a primary, the primary loses its disk and restarts
/// with a new epoch, then coordinates a blind write and a write with a fresh context. Both must
/// win over the versions written before the wipe.
pub fn wiped_node(seed: u64) -> Result<()> {
    run_script(seed, 3, |s| async move {
        let key = "wiped";
        let pl = s.cluster.preference_list(KV679_BUCKET, key);
        let (a, b) = (replica(&pl, 0)?, replica(&pl, 1)?);
        let v1 = s.put(&a, key, "v1", Context::empty(), Quorum::All).await?;
        s.put(&a, key, "v2", v1.object.context(), Quorum::All)
            .await?;

        s.control.apply(Fault::Wipe(a.to_string())).await?;
        let epoch = s.cluster.node(a.as_str())?.epoch();
        check(epoch == 2, || {
            format!("{a} restarted in epoch {epoch}, not 2")
        })?;
        s.wait_until("the wiped node answers", || async {
            s.pool.ping(&a, SIM_REQUEST_TIMEOUT).await.is_ok()
        })
        .await?;

        // A blind write through the wiped node: concurrent with v2, so both must survive.
        s.put(&a, key, "v3", Context::empty(), Quorum::All).await?;
        let read = s.get(&b, key, Quorum::All).await?;
        check(live(&read).contains(&"v3".to_string()), || {
            format!(
                "the wiped node's new write was lost: read {:?}",
                live(&read)
            )
        })?;

        // A write with the context of that read supersedes everything before it.
        s.put(&a, key, "v4", read.context(), Quorum::All).await?;
        let read = s.get(&b, key, Quorum::All).await?;
        check(live(&read) == ["v4"], || {
            format!("after the wipe, v4 did not supersede: {:?}", live(&read))
        })?;
        for node in pl.primaries() {
            let stored = s.stored(node, key).await?;
            check(stored == ["v4"], || {
                format!("{node} stores {stored:?}, not [v4]")
            })?;
        }
        Ok(())
    })
}

/// kv679, late tombstone: a delete reaches a fallback as a hint while primary C is partitioned;
/// a newer write (`blind`: without a context, else with the context of a read after the delete)
/// reaches C directly; then the hint is handed off. The newer write must survive on C and in a
/// read of all replicas, and the deleted value must stay deleted.
pub fn late_tombstone(seed: u64, blind: bool) -> Result<()> {
    run_script(seed, 4, move |s| async move {
        let key = if blind { "late-blind" } else { "late" };
        let pl = s.cluster.preference_list(KV679_BUCKET, key);
        let (a, b, c) = (replica(&pl, 0)?, replica(&pl, 1)?, replica(&pl, 2)?);
        let f = pl
            .fallbacks()
            .first()
            .cloned()
            .ok_or_else(|| Error::Setup("the key has no fallback".into()))?;
        let name = |n: &NodeId| n.to_string();
        s.put(&a, key, "v1", Context::empty(), Quorum::All).await?;

        s.control
            .apply(Fault::Partition(
                vec![name(&c)],
                vec![name(&a), name(&b), name(&f)],
            ))
            .await?;
        s.pool
            .delete(
                &a,
                DeleteRequest::new(KV679_BUCKET, key, None),
                CLIENT_TIMEOUT,
            )
            .await?;
        s.wait_until("the fallback holds the tombstone's hint", || async {
            s.pending_hints(&f).await.unwrap_or(0) > 0
        })
        .await?;
        let context = if blind {
            Context::empty()
        } else {
            let read = s.get(&a, key, Quorum::Quorum).await?;
            check(read.is_not_found(), || {
                format!("the delete is not visible: {:?}", live(&read))
            })?;
            read.context()
        };

        // C comes back for everyone but the fallback, which keeps the hint for now.
        s.control
            .apply(Fault::Heal(vec![name(&c)], vec![name(&a), name(&b)]))
            .await?;
        s.put(&c, key, "v2", context, Quorum::All).await?;

        s.control
            .apply(Fault::Heal(vec![name(&c)], vec![name(&f)]))
            .await?;
        s.wait_until("the hint is handed off", || async {
            s.pending_hints(&f).await == Some(0)
        })
        .await?;
        let (_, delivered) = s.cluster.node(f.as_str())?.hint_counts();
        check(delivered > 0, || format!("{f} delivered no hint"))?;

        let stored = s.stored(&c, key).await?;
        check(stored == ["v2"], || {
            format!("after the late tombstone, {c} stores {stored:?}, not [v2]")
        })?;
        let read = s.get(&a, key, Quorum::All).await?;
        check(live(&read) == ["v2"], || {
            format!(
                "after the late tombstone, a read finds {:?}, not [v2]",
                live(&read)
            )
        })?;
        Ok(())
    })
}
