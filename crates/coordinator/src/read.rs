//! The read path (paper 4.5): ask the key's top N, answer after R replies with every causally
//! concurrent version, then linger briefly and repair replicas that answered with stale data.

use std::time::Instant;

use dynamo_ring::NodeId;
use dynamo_storage::{ObjectKey, VersionedObject};
use tokio::sync::mpsc;

use crate::api::{GetRequest, GetResponse, ReplicaPut};
use crate::coordinator::{Coordinator, reconcile};
use crate::error::{Error, Result};
use crate::quorum::{ReadReply, ReadTally, Verdict};
use crate::replicas::Replicas;
use crate::targets::Target;

type Replies = mpsc::UnboundedReceiver<(Target, Result<Option<VersionedObject>>)>;

impl<R: Replicas> Coordinator<R> {
    /// Reads a key (paper 4.1 `get`): every live concurrent version and one context covering them.
    /// A key that was never written or was deleted answers with no siblings
    /// ([`GetResponse::is_not_found`]) but still carries a context.
    pub async fn get(&self, request: GetRequest) -> Result<GetResponse> {
        let started = Instant::now();
        let result = self.get_inner(request).await;
        let not_found = matches!(&result, Ok(r) if r.is_not_found());
        if let Ok(r) = &result {
            self.inner
                .metrics
                .siblings_per_read
                .observe(r.siblings().len() as f64);
        }
        self.observe("get", started, &result, not_found);
        result
    }

    async fn get_inner(&self, request: GetRequest) -> Result<GetResponse> {
        self.check_key(&request.bucket, &request.key)?;
        let props = self.bucket_props(&request.bucket);
        let r = request.r.resolve(props.n_val, props.r, "r")?;
        let pr = request.pr.resolve(props.n_val, props.pr, "pr")?;
        let timeout = self.timeout(request.timeout_ms);
        let pl = self.preference_list(&request.bucket, &request.key, props.n_val);
        let key = self.object_key(&pl, &request.bucket, &request.key);
        let targets = self.targets(&pl);
        let primaries = targets.iter().filter(|t| t.primary).count();
        let mut tally = ReadTally::new(r, pr, targets.len(), primaries);
        let (tx, mut rx) = mpsc::unbounded_channel();
        for target in targets {
            self.spawn_replica_get(target, key.clone(), timeout, tx.clone());
        }
        drop(tx);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let verdict = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((target, result))) => {
                    let reply = match result {
                        Ok(object) => ReadReply::Found(object),
                        Err(e) => ReadReply::Failed(e.to_string()),
                    };
                    tally.record(&target.node, target.primary, reply)
                }
                Ok(None) => Verdict::Failed(tally.give_up()),
                Err(_) => {
                    return Err(Error::Timeout(
                        u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                    ));
                }
            };
            match verdict {
                Verdict::Pending => continue,
                Verdict::Failed(e) => return Err(e),
                Verdict::Succeeded => break,
            }
        }
        let replies = tally.replies().to_vec();
        let mut object = reconcile(&replies);
        if props.resolves_by_timestamp() {
            object.resolve_lww();
        }
        self.spawn_read_repair(key, replies, rx, props.last_write_wins);
        Ok(GetResponse { object })
    }

    /// After answering, waits up to the linger for the remaining replies, then writes the merge of
    /// everything seen to every replica whose answer lacked part of it.
    fn spawn_read_repair(
        &self,
        key: ObjectKey,
        mut replies: Vec<(NodeId, Option<VersionedObject>)>,
        mut rx: Replies,
        lww: bool,
    ) {
        let this = self.clone();
        let linger = self.inner.options.read_repair_linger;
        self.spawn(async move {
            let deadline = tokio::time::Instant::now() + linger;
            while let Ok(Some((target, result))) =
                tokio::time::timeout_at(deadline, rx.recv()).await
            {
                if let Ok(object) = result {
                    replies.push((target.node, object));
                }
            }
            let mut merged = reconcile(&replies);
            if lww {
                merged.resolve_lww();
            }
            if merged.is_empty() && merged.clock().is_empty() {
                return;
            }
            // Only replicas of the key as of now: a fallback that answered keeps no copy worth
            // repairing (its hints deliver), and a node the ring moved the key away from while
            // the repair lingered has dropped, or will drop, the partition; a repair there would
            // be a copy nobody reads or removes.
            let n = usize::from(this.bucket_props(&key.bucket).n_val);
            let replicates = |node: &NodeId| {
                let holds = |ring: &dynamo_ring::Ring| {
                    ring.preference_list_for_partition(key.partition, n)
                        .is_primary(node)
                };
                holds(&this.ring()) || this.next_ring().is_some_and(|r| holds(&r))
            };
            for (node, object) in replies {
                if !is_stale(object.as_ref(), &merged) || !replicates(&node) {
                    continue;
                }
                this.inner.metrics.read_repairs.inc();
                tracing::debug!(%node, key = ?key, "read repair");
                let put = ReplicaPut::new(key.clone(), merged.clone(), lww);
                let target = Target {
                    node,
                    primary: true,
                    hint: None,
                };
                this.spawn_replica_put(target, put, this.inner.options.default_timeout, None, None);
            }
        });
    }
}

/// Whether a replica's answer lacks something the merged version has.
fn is_stale(replica: Option<&VersionedObject>, merged: &VersionedObject) -> bool {
    match replica {
        None => true,
        Some(object) => {
            let mut combined = object.clone();
            combined.merge(merged);
            &combined != object
        }
    }
}
