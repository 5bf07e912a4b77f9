//! The replica side: what this node does when another coordinator (or a client, through the rpc
//! crate) asks it to read, merge, list or configure. Thin wrappers over local storage.

use dynamo_storage::{ObjectKey, VersionedObject};

use crate::api::ReplicaPut;
use crate::coordinator::Coordinator;
use crate::error::Result;
use crate::props::BucketProps;
use crate::replicas::Replicas;

/// How many objects one step of a bucket listing scans; bounds the memory a listing holds.
const LIST_KEYS_CHUNK: usize = 1024;

impl<R: Replicas> Coordinator<R> {
    /// Reads the local version of `key` for a remote coordinator.
    pub async fn replica_get(&self, key: ObjectKey) -> Result<Option<VersionedObject>> {
        self.check_key(&key.bucket, &key.key)?;
        self.read_local(&key)
    }

    /// Merges a remote coordinator's version into local storage. Returns whether the write was
    /// durable before this answer: always when the sender asked for it (the engine was told to
    /// commit with `Durability::Sync`), otherwise when this node's storage is `sync`.
    pub async fn replica_put(&self, put: ReplicaPut) -> Result<bool> {
        self.check_key(&put.key.bucket, &put.key.key)?;
        let asked = put.durable;
        self.store_locally(put).await?;
        Ok(asked || self.durable_writes())
    }

    /// The live keys of `bucket` stored on this node, in order.
    pub async fn local_keys(&self, bucket: Vec<u8>) -> Result<Vec<Vec<u8>>> {
        self.blocking(move |engine| {
            let mut keys = Vec::new();
            let mut after: Option<ObjectKey> = None;
            loop {
                let chunk = engine.scan_bucket(&bucket, after.as_ref(), LIST_KEYS_CHUNK)?;
                let done = chunk.len() < LIST_KEYS_CHUNK;
                after = chunk.last().map(|(k, _)| k.clone());
                for (k, object) in chunk {
                    if object.siblings().iter().any(|s| !s.value.deleted) {
                        keys.push(k.key);
                    }
                }
                if done {
                    break;
                }
            }
            Ok(keys)
        })
        .await
    }

    /// Applies bucket properties another node announced.
    pub fn replica_set_bucket_props(&self, bucket: &[u8], props: BucketProps) -> Result<()> {
        self.inner.buckets.set(bucket, props)
    }

    /// Lists the live keys of a bucket across the cluster (Riak's list-keys: expensive, it asks
    /// every member). Members that do not answer are an error: a partial listing would look
    /// complete.
    pub async fn list_keys(&self, bucket: &[u8]) -> Result<Vec<Vec<u8>>> {
        if bucket.is_empty() {
            return Err(crate::error::Error::InvalidRequest(
                "bucket name is empty".into(),
            ));
        }
        let ring = self.ring();
        let timeout = self.inner.options.default_timeout;
        let mut all = std::collections::BTreeSet::new();
        for m in ring.members() {
            let keys = if m.id == self.inner.me {
                self.local_keys(bucket.to_vec()).await?
            } else {
                self.inner
                    .replicas
                    .list_keys(&m.id, bucket, timeout)
                    .await?
            };
            all.extend(keys);
        }
        Ok(all.into_iter().collect())
    }
}
