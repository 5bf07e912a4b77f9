//! Key placement (paper 4.2): MD5 of the key to a 128-bit ring position, and the position to one of Q equal
//! partitions (paper 6.2, strategy 3).

use std::fmt;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

/// One of the Q equal-sized ranges the hash space is cut into, numbered `0..Q` clockwise from position 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionId(pub u32);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// 128-bit position on the ring: MD5 over the length-prefixed bucket and key, read big endian.
///
/// The hashed bytes are `len(bucket) as u64 BE ‖ bucket ‖ len(key) as u64 BE ‖ key`, so `("a", "bc")` and
/// `("ab", "c")` land on unrelated positions. This is a wire-level contract: clients that route requests
/// themselves must hash the same way.
pub fn key_hash(bucket: &[u8], key: &[u8]) -> u128 {
    let mut md5 = Md5::new();
    md5.update((bucket.len() as u64).to_be_bytes());
    md5.update(bucket);
    md5.update((key.len() as u64).to_be_bytes());
    md5.update(key);
    let digest: [u8; 16] = md5.finalize().into();
    u128::from_be_bytes(digest)
}

/// The partition holding ring position `hash` when the ring is cut into `q` equal parts: `hash / (2^128 / q)`.
///
/// Computed as `floor(hash * q / 2^128)`, which is exactly that for the power-of-two Q a ring uses and still a
/// fair, total answer for any other `q` (a `q` of 0 is treated as 1). The result is always below `max(q, 1)`.
pub fn partition_of(hash: u128, q: u32) -> PartitionId {
    let q = u128::from(q.max(1));
    let hi = hash >> 64;
    let lo = hash & u128::from(u64::MAX);
    // hash * q = hi*q * 2^64 + lo*q; both products fit in 128 bits because q < 2^32.
    let top = (hi * q + ((lo * q) >> 64)) >> 64;
    // `top < q <= u32::MAX`, so the conversion cannot fail; saturate rather than panic regardless.
    PartitionId(u32::try_from(top).unwrap_or(u32::MAX))
}

/// First ring position of partition `p` out of `q` (a power of two, as in every ring): `p * 2^128 / q`.
pub(crate) fn partition_start(p: u32, q: u32) -> u128 {
    let shift = 128 - q.max(1).trailing_zeros();
    if shift >= 128 {
        0
    } else {
        u128::from(p) << shift
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bucket, key, md5 as u128, partition for Q = 64, 1024 and 8.
    type Known = (&'static [u8], &'static [u8], u128, u32, u32, u32);

    /// Expected values computed independently with:
    /// ```text
    /// python3 -c 'import hashlib,struct
    /// def kh(b,k): return int.from_bytes(hashlib.md5(struct.pack(">Q",len(b))+b+struct.pack(">Q",len(k))+k).digest(),"big")
    /// for b,k in [(b"",b""),(b"users",b"alice"),(b"a",b"bc"),(b"ab",b"c"),(b"photos",b"\x00\xff"),(b"b",b"k1")]:
    ///     h=kh(b,k); print(hex(h), h>>122, h>>118, h>>125)'
    /// ```
    /// (`h >> 122` is the partition for Q = 64, `>> 118` for Q = 1024, `>> 125` for Q = 8.)
    const KNOWN: &[Known] = &[
        (b"", b"", 0x4ae71336e44bf9bf79d2752e234818a5, 18, 299, 2),
        (
            b"users",
            b"alice",
            0x96f2a51f86f0d841366e5b5a214d191c,
            37,
            603,
            4,
        ),
        (b"a", b"bc", 0xb6d6f72a44aa4f71d6e041d1c9750933, 45, 731, 5),
        (b"ab", b"c", 0xfa4f70db448765d5fa0c807a97ae7749, 62, 1001, 7),
        (
            b"photos",
            b"\x00\xff",
            0x033aef6b541e23204baf9608d2796c34,
            0,
            12,
            0,
        ),
        (b"b", b"k1", 0x357ef412e3a6f55b740d531cbd026889, 13, 213, 1),
    ];

    #[test]
    fn known_keys_hash_and_partition_as_computed_by_python() {
        for &(bucket, key, hash, p64, p1024, p8) in KNOWN {
            assert_eq!(key_hash(bucket, key), hash, "{bucket:?}/{key:?}");
            assert_eq!(partition_of(hash, 64), PartitionId(p64));
            assert_eq!(partition_of(hash, 1024), PartitionId(p1024));
            assert_eq!(partition_of(hash, 8), PartitionId(p8));
        }
    }

    #[test]
    fn length_prefix_separates_bucket_from_key() {
        assert_ne!(key_hash(b"a", b"bc"), key_hash(b"ab", b"c"));
    }

    #[test]
    fn partition_boundaries_are_exact() {
        for q in [8u32, 64, 1024] {
            for p in [0, 1, q / 2, q - 1] {
                let start = partition_start(p, q);
                assert_eq!(partition_of(start, q), PartitionId(p));
                if p > 0 {
                    assert_eq!(partition_of(start - 1, q), PartitionId(p - 1));
                }
            }
            assert_eq!(partition_of(u128::MAX, q), PartitionId(q - 1));
            assert_eq!(partition_of(0, q), PartitionId(0));
        }
    }

    #[test]
    fn odd_partition_counts_never_overflow() {
        assert_eq!(partition_of(u128::MAX, 0), PartitionId(0));
        assert_eq!(partition_of(u128::MAX, 1), PartitionId(0));
        assert_eq!(partition_of(u128::MAX, 3), PartitionId(2));
        assert_eq!(partition_of(u128::MAX, u32::MAX), PartitionId(u32::MAX - 1));
        assert_eq!(partition_of(u128::MAX / 3 + 1, 3), PartitionId(1));
    }
}
