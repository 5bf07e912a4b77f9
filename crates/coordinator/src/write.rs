//! The write path (paper 4.5): put and delete, coordinated by a node in the key's top N.

use std::time::{Duration, Instant};

use std::sync::Arc;

use dynamo_ring::{NodeId, PreferenceList};
use dynamo_storage::{Content, ObjectKey, VersionedObject};
use dynamo_versioning::Context;
use tokio::sync::{mpsc, oneshot};

use crate::api::{DeleteRequest, DeleteResponse, GetRequest, PutRequest, PutResponse, ReplicaPut};
use crate::coordinator::Coordinator;
use crate::error::{Error, Result};
use crate::props::{BucketProps, Quorum};
use crate::quorum::{Verdict, WriteReply, WriteTally};
use crate::replicas::Replicas;
use crate::targets::{Target, WriteTargets, transition_targets};

/// The pending answer of a coordinator's local commit.
pub(crate) type LocalCommit = oneshot::Receiver<dynamo_storage::Result<VersionedObject>>;

/// One write to replicate: the coordinator's version and how it must be acknowledged.
struct Replication {
    key: ObjectKey,
    object: VersionedObject,
    lww: bool,
    quorum: WriteQuorum,
    timeout: Duration,
}

/// Resolved write quorums.
#[derive(Clone, Copy, Debug)]
struct WriteQuorum {
    w: u8,
    dw: u8,
    pw: u8,
}

impl WriteQuorum {
    /// The request's quorums against the bucket's N, its own settings standing for `Default`.
    fn resolve(props: &BucketProps, w: Quorum, dw: Quorum, pw: Quorum) -> Result<WriteQuorum> {
        Ok(WriteQuorum {
            w: w.resolve(props.n_val, props.w, "w")?,
            dw: dw.resolve(props.n_val, props.dw, "dw")?,
            pw: pw.resolve(props.n_val, props.pw, "pw")?,
        })
    }
}

impl<R: Replicas> Coordinator<R> {
    /// Writes a value (paper 4.1 `put`). The coordinator mints a new version from the request's
    /// context, stores it, sends it to the other replicas and answers after W acknowledgements;
    /// the remaining replica writes finish in the background.
    pub async fn put(&self, request: PutRequest) -> Result<PutResponse> {
        let started = Instant::now();
        let result = self.put_inner(request).await;
        self.observe("put", started, &result, false);
        result
    }

    async fn put_inner(&self, request: PutRequest) -> Result<PutResponse> {
        self.check_key(&request.bucket, &request.key)?;
        self.inner
            .engine
            .limits()
            .check_value(&request.content.value)?;
        let props = self.bucket_props(&request.bucket);
        let quorum = WriteQuorum::resolve(&props, request.w, request.dw, request.pw)?;
        let timeout = self.timeout(request.timeout_ms);
        let pl = self.preference_list(&request.bucket, &request.key, props.n_val);
        if !pl.primaries().contains(&self.inner.me) && !request.forwarded {
            return self.forward_put(&pl, request, timeout).await;
        }
        let key = self.object_key(&pl, &request.bucket, &request.key);
        let lww = props.last_write_wins;
        let (stored, local) = self
            .mint(key.clone(), request.context, request.content, lww)
            .await?;
        let write = Replication {
            key,
            object: stored.clone(),
            lww,
            quorum,
            timeout,
        };
        self.replicate(&pl, props.n_val, write, local).await?;
        Ok(PutResponse { object: stored })
    }

    /// Deletes a key by writing a tombstone that supersedes the versions in the context. Without a
    /// context the key is read first (R) and the tombstone covers what the read found.
    pub async fn delete(&self, request: DeleteRequest) -> Result<DeleteResponse> {
        let started = Instant::now();
        let result = self.delete_inner(request).await;
        self.observe(
            "delete",
            started,
            &result,
            matches!(result, Ok(DeleteResponse { existed: false })),
        );
        result
    }

    async fn delete_inner(&self, request: DeleteRequest) -> Result<DeleteResponse> {
        self.check_key(&request.bucket, &request.key)?;
        let props = self.bucket_props(&request.bucket);
        let quorum = WriteQuorum::resolve(&props, request.w, request.dw, request.pw)?;
        let timeout = self.timeout(request.timeout_ms);
        let pl = self.preference_list(&request.bucket, &request.key, props.n_val);
        if !pl.primaries().contains(&self.inner.me) && !request.forwarded {
            return self.forward_delete(&pl, request, timeout).await;
        }
        let (context, existed) = match request.context {
            Some(context) => (context, true),
            None => {
                let read = self
                    .get(GetRequest {
                        bucket: request.bucket.clone(),
                        key: request.key.clone(),
                        r: request.r,
                        pr: request.pr,
                        timeout_ms: Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
                    })
                    .await?;
                if read.object.is_empty() {
                    return Ok(DeleteResponse { existed: false });
                }
                (read.context(), !read.is_not_found())
            }
        };
        let key = self.object_key(&pl, &request.bucket, &request.key);
        let lww = props.last_write_wins;
        let (stored, local) = self
            .mint(key.clone(), context, Content::tombstone(), lww)
            .await?;
        let write = Replication {
            key,
            object: stored,
            lww,
            quorum,
            timeout,
        };
        self.replicate(&pl, props.n_val, write, local).await?;
        Ok(DeleteResponse { existed })
    }

    /// Sends a write this node may not coordinate to the first primary that answers.
    async fn forward_put(
        &self,
        pl: &PreferenceList,
        request: PutRequest,
        timeout: Duration,
    ) -> Result<PutResponse> {
        self.inner.metrics.forwarded.inc();
        self.try_primaries(pl, |to| {
            let mut forwarded = request.clone();
            forwarded.forwarded = true;
            let replicas = std::sync::Arc::clone(&self.inner.replicas);
            async move { replicas.forward_put(&to, forwarded, timeout).await }
        })
        .await
    }

    /// Sends a delete this node may not coordinate to the first primary that answers.
    async fn forward_delete(
        &self,
        pl: &PreferenceList,
        request: DeleteRequest,
        timeout: Duration,
    ) -> Result<DeleteResponse> {
        self.inner.metrics.forwarded.inc();
        self.try_primaries(pl, |to| {
            let mut forwarded = request.clone();
            forwarded.forwarded = true;
            let replicas = std::sync::Arc::clone(&self.inner.replicas);
            async move { replicas.forward_delete(&to, forwarded, timeout).await }
        })
        .await
    }

    /// Tries `call` on each primary in order until one answers with anything but a retryable
    /// error. One hop only: the request is marked forwarded, so the receiver never forwards again.
    async fn try_primaries<T, F, Fut>(&self, pl: &PreferenceList, mut call: F) -> Result<T>
    where
        F: FnMut(NodeId) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut last = Error::Unavailable {
            kind: "coordinator".into(),
            needed: 1,
            got: 0,
            detail: "no primary replica to forward to".into(),
        };
        // Primaries believed up first, in preference order; then the others, in case this node's
        // view is stale.
        let (up, down): (Vec<&NodeId>, Vec<&NodeId>) =
            pl.primaries().iter().partition(|n| self.health().is_up(n));
        for to in up.into_iter().chain(down) {
            let result = call(to.clone()).await;
            if let Err(e) = &result
                && crate::health::Health::is_failure(e)
            {
                self.observe_peer(to, &result);
            }
            match result {
                Err(e) if e.is_retryable() => {
                    tracing::debug!(node = %to, error = %e, "forwarding failed; trying the next primary");
                    last = e;
                }
                other => return other,
            }
        }
        Err(last)
    }

    /// Creates the new version locally: atomically reads the stored object, adds a sibling with a
    /// fresh dot from this node's actor (discarding what `context` covers) and prunes the clock.
    /// Returns the staged object as soon as the engine has computed it, with the pending answer
    /// of its local commit, so the replicas can be written while the local commit runs (one
    /// fsync round per write instead of two).
    ///
    /// Sharing a version before it is durable here is safe because its dot cannot be issued
    /// again: a crash makes the next start take a new epoch, and a failed commit fences this
    /// coordinator (no more dots under this epoch until a restart).
    async fn mint(
        &self,
        key: ObjectKey,
        context: Context,
        content: Content,
        lww: bool,
    ) -> Result<(VersionedObject, LocalCommit)> {
        if self.is_fenced() {
            return Err(Error::Storage(
                "a local commit failed after its version was shared; restart this node".into(),
            ));
        }
        let actor = self.inner.actor;
        let now = self.inner.clock.now_ms();
        let policy = self.inner.options.prune;
        let metrics = self.inner.metrics.clone();
        let durability = self.inner.engine.durability();
        let (staged_tx, staged_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        self.inner.engine.update_staged(
            &key,
            durability,
            Box::new(move |stored: Option<VersionedObject>| {
                let mut object = stored.unwrap_or_default();
                object.put(actor, &context, content, now);
                if lww {
                    object.resolve_lww();
                }
                let pruned = object.prune(&policy);
                metrics.clock_entries_pruned.inc_by(pruned as u64);
                Ok(object)
            }),
            Box::new(move |object| {
                let _ = staged_tx.send(object.clone());
            }),
            Box::new(move |outcome| {
                let _ = done_tx.send(outcome);
            }),
        );
        match staged_rx.await {
            Ok(object) => Ok((object, done_rx)),
            // Never staged: the update was refused (limits, a failed read); the commit answer
            // says why.
            Err(_) => match done_rx.await {
                Ok(Err(e)) => Err(Error::from(e)),
                Ok(Ok(_)) | Err(_) => Err(Error::Storage(
                    "the storage engine did not report the staged version".into(),
                )),
            },
        }
    }

    /// Sends the coordinator's version to the other replicas and waits for the write quorum. The
    /// local commit (`local`) counts as one acknowledgement once it lands. While a next ring is
    /// known, the key's next owners that are not targets get the write too, outside the quorum.
    async fn replicate(
        &self,
        pl: &PreferenceList,
        n_val: u8,
        write: Replication,
        local: LocalCommit,
    ) -> Result<()> {
        let Replication {
            key,
            object,
            lww,
            quorum,
            timeout,
        } = write;
        let next = self
            .next_ring()
            .map(|ring| ring.preference_list_for_partition(pl.partition(), usize::from(n_val)));
        let WriteTargets {
            quorum: targets,
            extra,
        } = transition_targets(self.targets(pl), next.as_ref(), &self.inner.me);
        for node in extra {
            self.spawn_transition_put(
                node,
                ReplicaPut::new(key.clone(), object.clone(), lww),
                timeout,
            );
        }
        let spares = self.spares(pl, &targets);
        let me_primary = pl.primaries().contains(&self.inner.me);
        let remote: Vec<Target> = targets
            .into_iter()
            .filter(|t| t.node != self.inner.me)
            .collect();
        let primaries = remote.iter().filter(|t| t.primary).count() + usize::from(me_primary);
        let mut tally =
            WriteTally::new(quorum.w, quorum.dw, quorum.pw, remote.len() + 1, primaries);
        let mut verdict = Verdict::Pending;
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.spawn_local_commit(
            Target {
                node: self.inner.me.clone(),
                primary: me_primary,
                hint: None,
            },
            local,
            tx.clone(),
        );
        for target in remote {
            let put = ReplicaPut {
                hint: target.hint.clone(),
                ..ReplicaPut::new(key.clone(), object.clone(), lww)
            };
            self.spawn_replica_put(
                target,
                put,
                timeout,
                Some(tx.clone()),
                Some(Arc::clone(&spares)),
            );
        }
        drop(tx);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match verdict {
                Verdict::Succeeded => return Ok(()),
                Verdict::Failed(e) => return Err(e),
                Verdict::Pending => {}
            }
            verdict = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((target, result))) => {
                    let reply = match result {
                        Ok(durable) => WriteReply::Stored { durable },
                        Err(e) => WriteReply::Failed(e.to_string()),
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
        }
    }

    /// Sends a write to a next owner that is not one of its quorum targets (a transition is under
    /// way). Counts towards no quorum; if the owner cannot be reached the write is kept here as a
    /// hint for it, so hinted handoff delivers it once the owner answers and the owner still has
    /// every write when the ring switches, even if the partition's copy already passed this key.
    pub(crate) fn spawn_transition_put(&self, to: NodeId, put: ReplicaPut, timeout: Duration) {
        let this = self.clone();
        self.spawn(async move {
            let result = this.inner.replicas.put(&to, put.clone(), timeout).await;
            this.observe_peer(&to, &result);
            let Err(e) = result else { return };
            tracing::debug!(node = %to, error = %e, "write to a next owner failed; keeping a hint");
            let now = this.inner.clock.now_ms();
            let (key, object) = (put.key, put.object);
            let stored = this
                .blocking(move |engine| engine.put_hint(&to, &key, &object, now))
                .await;
            match stored {
                Ok(_) => {
                    this.inner.metrics.hints_stored.inc();
                }
                Err(e) => {
                    this.inner.metrics.background_write_failures.inc();
                    tracing::warn!(error = %e, "could not keep a hint for a next owner");
                }
            }
        });
    }
}
