//! The coordinator's error type.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a get, put or delete did not succeed. Serializable so that a forwarded or client-driven request
/// carries the same answer back over the wire.
#[derive(Clone, Debug, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum Error {
    /// The request itself is wrong (a quorum above N, a bad bucket name, an oversize value...). Retrying
    /// it unchanged will fail the same way; nothing was written.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A value, key or bucket name is over the configured size limit (HTTP 413).
    #[error("too large: {0}")]
    TooLarge(String),
    /// Fewer replicas answered than the quorum needs. For a write, the replicas that did answer keep
    /// the value (Dynamo never rolls back), so the write may still become visible.
    #[error("quorum not met: needed {needed} {kind}, got {got} ({detail})")]
    Unavailable {
        /// Which quorum failed: "r", "w", "dw", "pr" or "pw".
        kind: String,
        /// How many replies were needed.
        needed: u8,
        /// How many arrived in time.
        got: u8,
        /// The replicas' own errors, summarised.
        detail: String,
    },
    /// The deadline passed before the quorum answered; the outcome of a write is unknown.
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// A peer could not be reached (refused, reset, or its connection broke).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The node is shedding load (admission control, paper section 6.5).
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The local storage engine failed.
    #[error("storage: {0}")]
    Storage(String),
    /// Anything else that went wrong inside the node or on the way to a peer.
    #[error("internal: {0}")]
    Internal(String),
    /// A long-running operation (a partition transfer) was cancelled; what it did so far is kept.
    #[error("cancelled: {0}")]
    Cancelled(String),
}

impl Error {
    /// Whether the same request may succeed if sent again (to this or another coordinator).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. }
                | Error::Timeout(_)
                | Error::Unreachable(_)
                | Error::Overloaded(_)
                | Error::Internal(_)
        )
    }
}

impl From<dynamo_storage::Error> for Error {
    fn from(e: dynamo_storage::Error) -> Self {
        if matches!(e, dynamo_storage::Error::ValueTooLong { .. }) {
            Error::TooLarge(e.to_string())
        } else if e.is_invalid_input() {
            Error::InvalidRequest(e.to_string())
        } else {
            Error::Storage(e.to_string())
        }
    }
}

/// The coordinator's result type.
pub type Result<T> = std::result::Result<T, Error>;
