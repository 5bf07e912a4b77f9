//! Order-preserving byte encoding of [`ObjectKey`]s for the objects table.
//!
//! `encode(a) < encode(b)` exactly when `a < b`, so redb compares keys with a plain `memcmp` and a
//! partition's keys are one contiguous range:
//!
//! ```text
//! partition (u32 big endian) ++ escape(bucket) ++ 0x00 0x01 ++ key
//! ```
//!
//! `escape` doubles every 0x00 of the bucket into 0x00 0xFF, so the terminator 0x00 0x01 sorts
//! below any continuation of the bucket: a bucket sorts before every longer bucket it is a prefix
//! of, just as `Vec<u8>` does. The key is last and needs no escaping.

use dynamo_ring::PartitionId;

use crate::error::{Error, Result};
use crate::object::ObjectKey;

/// Escape byte: every 0x00 inside a bucket name is written as 0x00 0xFF.
const ESCAPED_ZERO: u8 = 0xFF;
/// Byte after 0x00 that ends the bucket name.
const TERMINATOR: u8 = 0x01;

/// First encoded key of partition `p` (every key of `p` is at or after it).
pub(crate) fn partition_start(p: u32) -> Vec<u8> {
    p.to_be_bytes().to_vec()
}

/// First encoded key of `bucket` in partition `p`.
pub(crate) fn bucket_start(p: u32, bucket: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + bucket.len() + 2);
    out.extend_from_slice(&p.to_be_bytes());
    push_bucket(&mut out, bucket);
    out
}

fn push_bucket(out: &mut Vec<u8>, bucket: &[u8]) {
    // Copy the runs between zero bytes whole (bucket names rarely hold any zero).
    let mut runs = bucket.split(|&byte| byte == 0);
    if let Some(first) = runs.next() {
        out.extend_from_slice(first);
    }
    for run in runs {
        out.extend_from_slice(&[0, ESCAPED_ZERO]);
        out.extend_from_slice(run);
    }
    out.extend_from_slice(&[0, TERMINATOR]);
}

/// Encodes `key`.
pub(crate) fn encode(key: &ObjectKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + key.bucket.len() + 2 + key.key.len());
    out.extend_from_slice(&key.partition.0.to_be_bytes());
    push_bucket(&mut out, &key.bucket);
    out.extend_from_slice(&key.key);
    out
}

/// Decodes what [`encode`] wrote; anything else is an [`Error::Decode`].
pub(crate) fn decode(bytes: &[u8]) -> Result<ObjectKey> {
    let bad = |reason: &str| Error::Decode {
        what: format!("object key {}", bytes.escape_ascii()),
        reason: reason.to_owned(),
    };
    let (partition, mut rest) = match bytes.split_first_chunk::<4>() {
        Some((partition, rest)) => (u32::from_be_bytes(*partition), rest),
        None => return Err(bad("shorter than a partition number")),
    };
    let mut bucket = Vec::new();
    loop {
        match rest {
            [0, TERMINATOR, key @ ..] => {
                return Ok(ObjectKey::new(PartitionId(partition), bucket, key.to_vec()));
            }
            [0, ESCAPED_ZERO, tail @ ..] => {
                bucket.push(0);
                rest = tail;
            }
            [0, ..] | [] => return Err(bad("bucket name is not terminated")),
            [byte, tail @ ..] => {
                bucket.push(*byte);
                rest = tail;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn object_key() -> impl Strategy<Value = ObjectKey> {
        // Few distinct bytes (with zeros and escape bytes) so prefixes and ties are common.
        let bytes = proptest::collection::vec(
            prop_oneof![Just(0u8), Just(1), Just(0xFF), Just(b'a')],
            0..5,
        );
        (0u32..3, bytes.clone(), bytes).prop_map(|(p, b, k)| ObjectKey::new(PartitionId(p), b, k))
    }

    #[test]
    fn known_encoding() {
        let key = ObjectKey::new(PartitionId(2), vec![b'b', 0], b"k".to_vec());
        assert_eq!(encode(&key), vec![0, 0, 0, 2, b'b', 0, 0xFF, 0, 1, b'k']);
        assert_eq!(
            bucket_start(2, &[b'b', 0]),
            vec![0, 0, 0, 2, b'b', 0, 0xFF, 0, 1]
        );
        assert!(partition_start(2) < encode(&key) && encode(&key) < partition_start(3));
    }

    #[test]
    fn malformed_keys_are_errors() {
        for bad in [
            &[][..],
            &[0, 0, 0],
            &[0, 0, 0, 1, b'b'],
            &[0, 0, 0, 1, b'b', 0, 7],
            &[0, 0, 0, 1, 0],
        ] {
            assert!(matches!(decode(bad), Err(Error::Decode { .. })), "{bad:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn encoding_preserves_order(a in object_key(), b in object_key()) {
            prop_assert_eq!(encode(&a).cmp(&encode(&b)), a.cmp(&b));
        }

        #[test]
        fn decode_inverts_encode(key in object_key()) {
            prop_assert_eq!(decode(&encode(&key)).unwrap(), key);
        }

        #[test]
        fn a_key_lies_in_its_partition_and_bucket_range(key in object_key()) {
            let encoded = encode(&key);
            prop_assert!(encoded.starts_with(&bucket_start(key.partition.0, &key.bucket)));
            prop_assert!(encoded >= partition_start(key.partition.0));
            prop_assert!(encoded < partition_start(key.partition.0 + 1));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = decode(&bytes);
        }
    }
}
