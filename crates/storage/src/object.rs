//! What is stored: keys, sibling contents, versioned objects and hints.

use std::fmt;

use bytes::Bytes;
use dynamo_ring::{NodeId, PartitionId};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::options::Limits;

/// What a sibling holds: the user's bytes plus metadata, or a tombstone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    /// The opaque value the client wrote (empty for a tombstone).
    pub value: Bytes,
    /// The value's media type, if the client gave one (e.g. `application/json`).
    pub content_type: Option<String>,
    /// Client metadata pairs (Riak's `X-Riak-Meta-*`), in the order given.
    pub user_meta: Vec<(String, String)>,
    /// Whether this sibling records a delete rather than a value.
    pub deleted: bool,
}

impl Content {
    /// A live value with no metadata.
    pub fn new(value: impl Into<Bytes>) -> Content {
        Content {
            value: value.into(),
            ..Content::default()
        }
    }

    /// The marker a delete writes: it supersedes what it deletes like any write, so the delete
    /// itself is versioned and replicated (paper 4.4: a delete is a put of a tombstone).
    pub fn tombstone() -> Content {
        Content {
            deleted: true,
            ..Content::default()
        }
    }

    /// Bytes this sibling occupies for [`Limits::max_value_len`]: the value plus its metadata.
    pub fn size(&self) -> usize {
        let meta: usize = self.user_meta.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.value.len() + self.content_type.as_ref().map_or(0, String::len) + meta
    }
}

/// The versioned state of one key as stored: siblings of [`Content`] under one causal context.
pub type VersionedObject = dynamo_versioning::Object<Content>;

/// Whether every sibling of `object` is a tombstone (and there is at least one): the key reads
/// as deleted. An object with no siblings at all is "absent", not deleted.
pub fn is_deleted(object: &VersionedObject) -> bool {
    !object.siblings().is_empty() && object.siblings().iter().all(|s| s.value.deleted)
}

/// Checks every sibling of `object` against `limits`.
pub(crate) fn check_object(limits: &Limits, object: &VersionedObject) -> Result<()> {
    for sibling in object.siblings() {
        let size = sibling.value.size();
        if size > limits.max_value_len {
            return Err(crate::Error::ValueTooLong {
                len: size,
                max: limits.max_value_len,
            });
        }
    }
    Ok(())
}

/// A key with its stored object, as scans return them.
pub type Entry = (ObjectKey, VersionedObject);

/// Where an object lives: one partition's keys are contiguous and scan in (bucket, key) order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    /// The ring partition the key hashes to (the caller computes it with the ring).
    pub partition: PartitionId,
    /// The bucket name (non-empty).
    pub bucket: Vec<u8>,
    /// The key within the bucket (may be empty).
    pub key: Vec<u8>,
}

impl ObjectKey {
    /// Checks that a scan cursor (the last key of the previous page) lies in partition `p`.
    pub(crate) fn check_partition_cursor(
        cursor: Option<&ObjectKey>,
        p: PartitionId,
    ) -> crate::error::Result<()> {
        match cursor {
            Some(after) if after.partition != p => Err(crate::error::Error::BadCursor(format!(
                "cursor {after} is not in partition {}",
                p.0
            ))),
            _ => Ok(()),
        }
    }

    /// Checks that a bucket-listing cursor lies in `bucket`.
    pub(crate) fn check_bucket_cursor(
        cursor: Option<&ObjectKey>,
        bucket: &[u8],
    ) -> crate::error::Result<()> {
        match cursor {
            Some(after) if after.bucket != bucket => Err(crate::error::Error::BadCursor(format!(
                "cursor {after} is not in this bucket"
            ))),
            _ => Ok(()),
        }
    }

    /// Builds a key from its parts.
    pub fn new(
        partition: PartitionId,
        bucket: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Self {
        ObjectKey {
            partition,
            bucket: bucket.into(),
            key: key.into(),
        }
    }

    /// Checks the bucket and key against `limits`.
    pub fn check(&self, limits: &Limits) -> Result<()> {
        limits.check_key(&self.bucket, &self.key)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "partition {} bucket \"{}\" key \"{}\"",
            self.partition.0,
            self.bucket.escape_ascii(),
            self.key.escape_ascii()
        )
    }
}

/// A write held for a node that was down (hinted handoff, paper 4.6): the replica that took the
/// write in the owner's place keeps it here until it can hand it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    /// Identifier assigned by the store; unique and never reused within one data file.
    pub id: u64,
    /// The node the write was meant for.
    pub owner: NodeId,
    /// The key written.
    pub key: ObjectKey,
    /// The version to hand back (merged into the owner's copy on delivery).
    pub object: VersionedObject,
    /// When the hint was stored (milliseconds since the Unix epoch, from the caller's clock).
    pub created_ms: u64,
}

/// How a hint is stored: everything but the id, which is the table key.
#[derive(Serialize, Deserialize)]
pub(crate) struct HintRecord {
    /// See [`Hint::owner`].
    pub(crate) owner: NodeId,
    /// See [`Hint::key`].
    pub(crate) key: ObjectKey,
    /// See [`Hint::object`].
    pub(crate) object: VersionedObject,
    /// See [`Hint::created_ms`].
    pub(crate) created_ms: u64,
}

impl HintRecord {
    /// The hint this record stores under `id`.
    pub(crate) fn into_hint(self, id: u64) -> Hint {
        Hint {
            id,
            owner: self.owner,
            key: self.key,
            object: self.object,
            created_ms: self.created_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynamo_versioning::{Actor, Context};

    #[test]
    fn keys_order_by_partition_then_bucket_then_key() {
        let k = |p, b: &str, k: &str| ObjectKey::new(PartitionId(p), b, k);
        let mut keys = vec![
            k(2, "a", "a"),
            k(1, "b", "a"),
            k(1, "a", "b"),
            k(1, "a", ""),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                k(1, "a", ""),
                k(1, "a", "b"),
                k(1, "b", "a"),
                k(2, "a", "a")
            ]
        );
    }

    #[test]
    fn key_display_escapes_binary_bytes() {
        let key = ObjectKey::new(PartitionId(7), b"bu\"ck".to_vec(), vec![0u8, b'k']);
        assert_eq!(
            key.to_string(),
            "partition 7 bucket \"bu\\\"ck\" key \"\\x00k\""
        );
    }

    #[test]
    fn deleted_means_only_tombstones() {
        let actor = Actor::new(1, 0);
        let mut object = VersionedObject::new();
        assert!(!is_deleted(&object));
        object.put(actor, &Context::empty(), Content::tombstone(), 1);
        assert!(is_deleted(&object));
        object.put(actor, &Context::empty(), Content::new("v"), 2);
        assert!(!is_deleted(&object));
    }

    #[test]
    fn content_size_counts_value_and_metadata() {
        let content = Content {
            value: Bytes::from_static(b"12345"),
            content_type: Some("text/plain".into()),
            user_meta: vec![("a".into(), "bc".into())],
            deleted: false,
        };
        assert_eq!(content.size(), 5 + 10 + 3);
        let limits = Limits {
            max_value_len: 17,
            ..Limits::default()
        };
        let mut object = VersionedObject::new();
        object.put(Actor::new(1, 0), &Context::empty(), content, 1);
        assert!(matches!(
            check_object(&limits, &object),
            Err(crate::Error::ValueTooLong { len: 18, max: 17 })
        ));
    }
}
