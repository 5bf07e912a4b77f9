//! The storage error type.
//!
//! Errors fall in four families: the caller's input broke a [`Limits`](crate::Limits) rule (nothing
//! was written), the stored data could not be understood (a record or file this build cannot
//! read), the backend failed (I/O, redb), or the engine is closed. Every variant is `Clone`, so
//! one commit failure can be answered to every write of a group commit.

use std::sync::Arc;

/// The result type of every fallible storage operation.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in the storage layer.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A bucket name was empty; buckets must be named.
    #[error("bucket name is empty")]
    EmptyBucket,

    /// A bucket name was longer than [`Limits::max_bucket_len`](crate::Limits::max_bucket_len).
    #[error("bucket name is {len} bytes, longer than the limit of {max}")]
    BucketTooLong {
        /// Length of the rejected bucket name in bytes.
        len: usize,
        /// The configured limit in bytes.
        max: usize,
    },

    /// A key was longer than [`Limits::max_key_len`](crate::Limits::max_key_len).
    #[error("key is {len} bytes, longer than the limit of {max}")]
    KeyTooLong {
        /// Length of the rejected key in bytes.
        len: usize,
        /// The configured limit in bytes.
        max: usize,
    },

    /// A sibling's value was longer than [`Limits::max_value_len`](crate::Limits::max_value_len).
    #[error("value is {len} bytes, longer than the limit of {max}")]
    ValueTooLong {
        /// Length of the rejected value in bytes.
        len: usize,
        /// The configured limit in bytes.
        max: usize,
    },

    /// A metadata name was empty or longer than [`MAX_META_NAME_LEN`](crate::MAX_META_NAME_LEN).
    #[error("metadata name {name:?} is not 1..={max} bytes long")]
    BadMetaName {
        /// The rejected name.
        name: String,
        /// The maximum length in bytes.
        max: usize,
    },

    /// A scan cursor does not belong to the scan it was passed to.
    #[error("bad scan cursor: {0}")]
    BadCursor(String),

    /// A caller-supplied update function refused the update; nothing was written.
    #[error("update rejected: {0}")]
    Rejected(String),

    /// A stored record could not be decoded; `what` names the record (for objects: the key).
    #[error("cannot decode stored {what}: {reason}")]
    Decode {
        /// Which record failed, e.g. `object partition 3 bucket "b" key "k"`.
        what: String,
        /// Why it failed.
        reason: String,
    },

    /// A record could not be encoded for storage.
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// Which record failed.
        what: String,
        /// Why it failed.
        reason: String,
    },

    /// The data file was written by a newer version of this software.
    #[error("data file {path} has format version {found}; this build reads up to {supported}")]
    NewerFormat {
        /// The file that was refused.
        path: String,
        /// Format version recorded in the file.
        found: u32,
        /// Newest format version this build understands.
        supported: u32,
    },

    /// The file is not a dynamo data file: not redb, or a redb file some other program wrote.
    #[error("{path} is not a dynamo data file: {reason}")]
    NotADataFile {
        /// The file that was refused.
        path: String,
        /// What gave it away.
        reason: String,
    },

    /// The data file is damaged.
    #[error("data file {path} is corrupt: {reason}")]
    Corrupt {
        /// The damaged file.
        path: String,
        /// What the check found.
        reason: String,
    },

    /// The data file is in use by another process.
    #[error("data file {path} is already open in another process")]
    AlreadyOpen {
        /// The file that is locked.
        path: String,
    },

    /// The redb backend failed (I/O error, full disk, commit failure, ...).
    #[error("storage backend failed: {0}")]
    Backend(#[source] Arc<redb::Error>),

    /// An operating-system I/O error outside redb.
    #[error("I/O error: {0}")]
    Io(#[source] Arc<std::io::Error>),

    /// The engine was closed or its writer thread stopped; nothing more can be written.
    #[error("storage engine is closed")]
    Closed,
}

impl Error {
    /// Whether trying the same operation again later may succeed.
    ///
    /// Backend and I/O failures may be transient (a full disk gets space back); invalid input,
    /// undecodable data, format refusals and a closed engine will fail the same way again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Backend(_) | Error::Io(_))
    }

    /// Whether the error blames the caller's input (limits, names): a client error, not a server one.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Error::EmptyBucket
                | Error::BucketTooLong { .. }
                | Error::KeyTooLong { .. }
                | Error::ValueTooLong { .. }
                | Error::BadMetaName { .. }
                | Error::BadCursor(_)
        )
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::Io(Arc::new(err))
    }
}

/// Converts every redb error type into [`Error::Backend`].
macro_rules! from_redb {
    ($($ty:ty),+ $(,)?) => {$(
        impl From<$ty> for Error {
            fn from(err: $ty) -> Self {
                Error::Backend(Arc::new(redb::Error::from(err)))
            }
        }
    )+};
}

from_redb!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_errors_report_sizes_and_are_client_errors() {
        let err = Error::KeyTooLong {
            len: 5000,
            max: 4096,
        };
        assert_eq!(
            err.to_string(),
            "key is 5000 bytes, longer than the limit of 4096"
        );
        assert!(err.is_invalid_input());
        assert!(!err.is_retryable());
    }

    #[test]
    fn backend_errors_are_retryable_and_keep_their_source() {
        let err = Error::from(redb::StorageError::Io(std::io::Error::other("disk full")));
        assert!(err.is_retryable());
        assert!(!err.is_invalid_input());
        assert!(err.to_string().contains("disk full"));
        assert!(std::error::Error::source(&err).is_some());
    }
}
