//! The anti-entropy convergence check: after the heal, with no client read at all, every primary
//! replica of every key must come to hold the same siblings, and (in buckets that keep siblings)
//! every acknowledged element, within a bounded simulated time. It reads each node's store
//! directly ([`SimNode::stored`](super::cluster::SimNode::stored)), so it never repairs what it
//! checks: only hinted handoff and anti-entropy can make it pass.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use dynamo_storage::{ObjectKey, VersionedObject};

use super::checker::decode_set;
use super::cluster::Cluster;
use super::workload::{Convergence, Recorder, now};

/// How often the check looks at the stores (simulated).
const POLL: Duration = Duration::from_millis(100);

/// One bucket to check: its name, keys beyond those the history names, and whether it loses
/// concurrent additions by design (last write wins: only agreement is required).
#[derive(Clone, Debug)]
pub struct BucketCheck {
    /// Bucket name.
    pub bucket: String,
    /// Keys to check even if no client wrote them.
    pub extra_keys: BTreeSet<String>,
    /// Last-write-wins bucket.
    pub lww: bool,
}

fn elements(object: &VersionedObject) -> BTreeSet<u64> {
    object
        .siblings()
        .iter()
        .filter(|s| !s.value.deleted)
        .filter_map(|s| decode_set(&s.value.value).ok())
        .flatten()
        .collect()
}

/// The keys whose primaries' stores disagree or miss an acknowledged element.
pub fn divergent_stores(
    cluster: &Cluster,
    recorder: &Recorder,
    buckets: &[BucketCheck],
) -> Vec<String> {
    let mut out = Vec::new();
    for check in buckets {
        let history = recorder.history(&check.bucket);
        let mut keys = history.keys();
        keys.extend(check.extra_keys.iter().cloned());
        for key in keys {
            let pl = cluster.preference_list(&check.bucket, &key);
            let object_key = ObjectKey::new(pl.partition(), check.bucket.as_str(), key.as_str());
            let stored: Vec<VersionedObject> = pl
                .primaries()
                .iter()
                .map(|p| {
                    cluster
                        .node(p.as_str())
                        .ok()
                        .and_then(|n| n.stored(&object_key))
                        .unwrap_or_default()
                })
                .collect();
            let agree = stored
                .windows(2)
                .all(|w| w[0].siblings() == w[1].siblings());
            let complete = check.lww
                || stored.first().is_none_or(|first| {
                    let have = elements(first);
                    history
                        .acknowledged
                        .iter()
                        .filter(|(k, _)| *k == key)
                        .all(|(_, e)| have.contains(e))
                });
            if !agree || !complete {
                out.push(format!("{}/{key}", check.bucket));
            }
        }
    }
    out
}

/// Polls the stores until every key converged or `deadline` (simulated) passes, and records
/// the outcome. `heal_at` is when the faults healed.
pub async fn stores_converge(
    cluster: Arc<Cluster>,
    recorder: Arc<Recorder>,
    buckets: Vec<BucketCheck>,
    heal_at: Duration,
    deadline: Duration,
) {
    loop {
        let divergent = divergent_stores(&cluster, &recorder, &buckets);
        let at = now();
        if divergent.is_empty() || at >= deadline {
            let after_heal = divergent.is_empty().then(|| at.saturating_sub(heal_at));
            recorder.log(format!(
                "store convergence (no reads): {after_heal:?}, divergent {divergent:?}"
            ));
            recorder.set_store_convergence(Convergence {
                after_heal,
                divergent,
            });
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}
