//! Tunables: durability mode, input limits and group-commit settings.

use std::time::Duration;

use crate::error::{Error, Result};

/// Default longest bucket name: bucket names are identifiers (Riak uses the same bound), and a
/// short bound keeps per-key overhead in every index small.
pub const DEFAULT_MAX_BUCKET_LEN: usize = 255;

/// Default longest key: generous for path-like keys while keeping a key well inside one redb page.
pub const DEFAULT_MAX_KEY_LEN: usize = 4096;

/// Default largest value: the paper's objects are "usually less than 1 MB"; 16 MiB leaves room
/// while keeping one replica transfer bounded in memory and time.
pub const DEFAULT_MAX_VALUE_LEN: usize = 16 * 1024 * 1024;

/// Longest metadata name in bytes: names are short constants like `node_id` or `epoch`.
pub const MAX_META_NAME_LEN: usize = 255;

/// Metadata name under which a node records its id, so a data directory is never reused by
/// another node by mistake.
pub const META_NODE_ID: &str = "node_id";

/// Metadata name under which a node records its actor epoch (see
/// [`dynamo_versioning::Actor`]). A node that finds none (a fresh or wiped data directory) must
/// pick an epoch it has never used, so that no dot is ever issued twice.
pub const META_EPOCH: &str = "epoch";

/// Default cap on how many queued writes one group commit applies: large enough that 64 or more
/// concurrent writers share one fsync, small enough that one transaction's dirty pages stay in
/// cache and the first writer in the batch is not held back long.
pub const DEFAULT_MAX_BATCH: usize = 256;

/// Default depth of the writer queue. When it is full, writers block (back-pressure) instead of
/// piling up unbounded memory while the disk is slow.
pub const DEFAULT_QUEUE_DEPTH: usize = 4096;

/// Default bound on how long a [`Durability::Buffered`] write may sit acknowledged but not yet
/// fsynced. The paper's write buffer is flushed "periodically by a writer thread"; 100 ms bounds
/// what a power loss can take to a tenth of a second of writes (the other replicas still hold
/// them) while one fsync serves every write in the interval.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Default redb page cache: enough to keep the hot part of a node's objects in memory on a
/// small machine without taking redb's 1 GiB default from every test and engine in a process.
pub const DEFAULT_CACHE_BYTES: usize = 256 * 1024 * 1024;

/// When an acknowledged write reaches the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Durability {
    /// Never fsync on the write path (tests, throwaway nodes). `flush()` and a clean close
    /// still make everything durable; a crash loses every write since the last of those.
    /// redb also holds on to pages freed by non-durable commits until the next durable one,
    /// so a long run without `flush()` grows the file.
    None,
    /// The paper's write buffer (section 6.1): acknowledge once the write is committed in
    /// memory and visible to reads; a background flush makes it durable within
    /// [`Options::flush_interval`]. A crash loses at most that window.
    Buffered,
    /// fsync before acknowledging: an acknowledged write survives a crash or power loss.
    #[default]
    Sync,
}

/// Size limits checked on every write; a write that breaks one is refused and changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest bucket name in bytes (bucket names must also be non-empty).
    pub max_bucket_len: usize,
    /// Longest key in bytes.
    pub max_key_len: usize,
    /// Longest value of any one sibling in bytes.
    pub max_value_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bucket_len: DEFAULT_MAX_BUCKET_LEN,
            max_key_len: DEFAULT_MAX_KEY_LEN,
            max_value_len: DEFAULT_MAX_VALUE_LEN,
        }
    }
}

impl Limits {
    /// Checks a bucket name and key; `Err` names the broken limit and the offending size.
    pub fn check_key(&self, bucket: &[u8], key: &[u8]) -> Result<()> {
        if bucket.is_empty() {
            return Err(Error::EmptyBucket);
        }
        if bucket.len() > self.max_bucket_len {
            return Err(Error::BucketTooLong {
                len: bucket.len(),
                max: self.max_bucket_len,
            });
        }
        if key.len() > self.max_key_len {
            return Err(Error::KeyTooLong {
                len: key.len(),
                max: self.max_key_len,
            });
        }
        Ok(())
    }

    /// Checks one value's length.
    pub fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.max_value_len {
            return Err(Error::ValueTooLong {
                len: value.len(),
                max: self.max_value_len,
            });
        }
        Ok(())
    }
}

/// Checks a metadata name: 1 to [`MAX_META_NAME_LEN`] bytes.
pub(crate) fn check_meta_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_META_NAME_LEN {
        return Err(Error::BadMetaName {
            name: name.to_owned(),
            max: MAX_META_NAME_LEN,
        });
    }
    Ok(())
}

/// How an engine is run. `Options::default()` is what a production node should use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Default durability of object and hint writes (metadata writes are always [`Durability::Sync`]).
    pub durability: Durability,
    /// Size limits checked on every write.
    pub limits: Limits,
    /// Most writes applied in one group-commit transaction.
    pub max_batch: usize,
    /// Writes that may wait for the writer before callers block.
    pub queue_depth: usize,
    /// Longest time a [`Durability::Buffered`] write stays un-fsynced.
    pub flush_interval: Duration,
    /// Bytes of page cache redb may use.
    pub cache_bytes: usize,
    /// Verify every page checksum when opening (slow on big files; catches files damaged
    /// outside redb, which a plain open trusts).
    pub verify_on_open: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::default(),
            limits: Limits::default(),
            max_batch: DEFAULT_MAX_BATCH,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            cache_bytes: DEFAULT_CACHE_BYTES,
            verify_on_open: false,
        }
    }
}

impl Options {
    /// The default options with another durability.
    pub fn with_durability(durability: Durability) -> Self {
        Options {
            durability,
            ..Options::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_accept_boundaries_and_reject_one_past() {
        let limits = Limits {
            max_bucket_len: 3,
            max_key_len: 4,
            max_value_len: 5,
        };
        assert!(limits.check_key(b"abc", b"abcd").is_ok());
        assert!(limits.check_key(b"abc", b"").is_ok());
        assert!(matches!(
            limits.check_key(b"", b"k"),
            Err(Error::EmptyBucket)
        ));
        assert!(matches!(
            limits.check_key(b"abcd", b"k"),
            Err(Error::BucketTooLong { len: 4, max: 3 })
        ));
        assert!(matches!(
            limits.check_key(b"a", b"abcde"),
            Err(Error::KeyTooLong { len: 5, max: 4 })
        ));
        assert!(limits.check_value(b"12345").is_ok());
        assert!(matches!(
            limits.check_value(b"123456"),
            Err(Error::ValueTooLong { len: 6, max: 5 })
        ));
    }

    #[test]
    fn meta_names_must_be_short_and_non_empty() {
        assert!(check_meta_name("epoch").is_ok());
        assert!(check_meta_name("").is_err());
        assert!(check_meta_name(&"x".repeat(MAX_META_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn durability_orders_from_weakest_to_strongest() {
        assert!(Durability::None < Durability::Buffered);
        assert!(Durability::Buffered < Durability::Sync);
        assert_eq!(Options::default().durability, Durability::Sync);
    }
}
