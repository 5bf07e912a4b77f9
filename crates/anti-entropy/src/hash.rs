//! What a tree hashes: one 64-bit value per stored key, from the key and a canonical digest of
//! its causal metadata, and the leaf (segment) the key belongs to.
//!
//! The value bytes are deliberately not hashed (Riak's Tictac AAE does the same): two replicas
//! that saw the same writes hold the same dots, so the causal metadata alone says whether they
//! agree, and hashing a few dozen bytes of clock costs the same whatever the value's size.
//!
//! MD5 (the `md-5` crate, already the ring's key hash) is used because it is fast on short
//! inputs, well kept, and collision resistance against an adversary is not needed here: a
//! collision can only hide a difference, and two independent 64-bit truncations of it (leaf and
//! value) make an accidental miss about 2^-64 per key.

use dynamo_storage::VersionedObject;
use md5::{Digest, Md5};

use crate::tree::{LEAVES, Leaf};

/// Version of the canonical digest below. Part of every hashed input, so a future change of the
/// digest changes every hash (a mixed-version cluster then sees differences, never false
/// agreement).
pub const DIGEST_VERSION: u8 = 1;

/// A key's place and value in a tree: which leaf it lands in and what it contributes (XOR).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyHash {
    /// The leaf (segment) of the key: fixed by the bucket and key alone.
    pub leaf: Leaf,
    /// The key's contribution: a hash of the key and its causal metadata, never 0.
    pub value: u64,
}

/// The leaf of `bucket`/`key`: the same whatever version is stored.
pub fn leaf_of(bucket: &[u8], key: &[u8]) -> Leaf {
    let digest: [u8; 16] = key_hasher(bucket, key).finalize().into();
    leaf_from(&digest)
}

fn leaf_from(digest: &[u8; 16]) -> Leaf {
    let low = u16::from_le_bytes([digest[0], digest[1]]);
    Leaf(low % LEAVES as u16)
}

fn key_hasher(bucket: &[u8], key: &[u8]) -> Md5 {
    let mut md5 = Md5::new();
    md5.update([DIGEST_VERSION]);
    md5.update((bucket.len() as u64).to_le_bytes());
    md5.update(bucket);
    md5.update((key.len() as u64).to_le_bytes());
    md5.update(key);
    md5
}

/// The hash of `bucket`/`key` holding `object`, or `None` when the object is absent (no
/// siblings: never written here), which is what an absent key contributes to a tree.
///
/// The digest covers, in a fixed order: the clock's entries (actor node, actor epoch, counter,
/// sorted by actor), then each sibling's dot and whether it is a tombstone (siblings are kept
/// sorted by dot). Timestamps and values are left out; so is the pruning watermark, a local
/// detail.
pub fn key_hash(bucket: &[u8], key: &[u8], object: &VersionedObject) -> Option<KeyHash> {
    if object.is_empty() {
        return None;
    }
    let placed = key_hasher(bucket, key);
    let leaf_digest: [u8; 16] = placed.clone().finalize().into();
    let mut md5 = placed;
    let clock = object.clock();
    md5.update((clock.len() as u64).to_le_bytes());
    for (actor, counter, _timestamp) in clock.iter() {
        md5.update(actor.node.to_le_bytes());
        md5.update(actor.epoch.to_le_bytes());
        md5.update(counter.to_le_bytes());
    }
    md5.update((object.siblings().len() as u64).to_le_bytes());
    for sibling in object.siblings() {
        md5.update(sibling.dot.actor.node.to_le_bytes());
        md5.update(sibling.dot.actor.epoch.to_le_bytes());
        md5.update(sibling.dot.counter.to_le_bytes());
        md5.update([u8::from(sibling.value.deleted)]);
    }
    let digest: [u8; 16] = md5.finalize().into();
    let mut value = [0u8; 8];
    value.copy_from_slice(&digest[..8]);
    Some(KeyHash {
        leaf: leaf_from(&leaf_digest),
        value: u64::from_le_bytes(value).max(1),
    })
}

/// [`key_hash`]'s value part, or `None` for an absent object.
pub fn value_of(bucket: &[u8], key: &[u8], object: Option<&VersionedObject>) -> Option<u64> {
    object
        .and_then(|o| key_hash(bucket, key, o))
        .map(|h| h.value)
}

#[cfg(test)]
mod tests {
    use dynamo_storage::Content;
    use dynamo_versioning::{Actor, Context};

    use super::*;

    fn written(value: &str, actor: u64) -> VersionedObject {
        let mut object = VersionedObject::new();
        object.put(
            Actor::new(actor, 1),
            &Context::empty(),
            Content::new(value.to_string()),
            1_000,
        );
        object
    }

    #[test]
    fn the_value_bytes_do_not_matter_but_the_dots_do() {
        let a = key_hash(b"b", b"k", &written("one", 1)).unwrap();
        let b = key_hash(b"b", b"k", &written("two", 1)).unwrap();
        let c = key_hash(b"b", b"k", &written("one", 2)).unwrap();
        assert_eq!(a, b, "same dots, different bytes: the same hash");
        assert_ne!(a.value, c.value, "another actor's dot: another hash");
        assert_eq!(a.leaf, c.leaf, "the leaf depends on the key only");
        assert_eq!(a.leaf, leaf_of(b"b", b"k"));
    }

    #[test]
    fn bucket_and_key_are_length_prefixed() {
        let object = written("v", 1);
        assert_ne!(
            key_hash(b"a", b"bc", &object),
            key_hash(b"ab", b"c", &object)
        );
    }

    #[test]
    fn a_tombstone_hashes_differently_from_a_value() {
        let mut deleted = written("v", 1);
        let ctx = deleted.context();
        let mut live = deleted.clone();
        deleted.put(Actor::new(1, 1), &ctx, Content::tombstone(), 2_000);
        live.put(Actor::new(1, 1), &ctx, Content::new("w"), 2_000);
        assert_ne!(key_hash(b"b", b"k", &deleted), key_hash(b"b", b"k", &live));
        assert_eq!(key_hash(b"b", b"k", &VersionedObject::new()), None);
    }
}
