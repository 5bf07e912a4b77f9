//! The anti-entropy crate's error type. It crosses the wire (a peer's answer to an exchange
//! round), so it is serializable and carries text rather than source errors.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What can go wrong in an exchange, a rebuild or a repair.
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum Error {
    /// The answering node does not replicate this partition under its ring (or it is not a
    /// partition of the ring at all).
    #[error("partition {0} is not replicated here")]
    NotTracked(u32),
    /// The partition's tree is still being built; try the exchange later.
    #[error("the tree of partition {0} is still being built")]
    NotReady(u32),
    /// A peer answered out of protocol (wrong shape, wrong round).
    #[error("protocol: {0}")]
    Protocol(String),
    /// A request was malformed (a key outside the partition, too many keys).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Local storage failed.
    #[error("storage: {0}")]
    Storage(String),
    /// The peer could not be reached.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The peer did not answer within this many milliseconds.
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// Anything else (a task that panicked, a node shutting down).
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    /// Whether running the exchange again later may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Error::Protocol(_) | Error::Invalid(_))
    }
}

impl From<dynamo_storage::Error> for Error {
    fn from(e: dynamo_storage::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

/// The anti-entropy crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
