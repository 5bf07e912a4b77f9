//! The client's error type.

use thiserror::Error;

/// Why a client call failed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum Error {
    /// The cluster answered with an error (or the last node tried could not be reached). For a
    /// write that failed with a retryable error the outcome is unknown: Dynamo never rolls back,
    /// so the value may still become visible.
    #[error(transparent)]
    Request(#[from] dynamo_coordinator::Error),
    /// The [`ClientConfig`](crate::ClientConfig) is unusable (no seeds, a short secret, a zero
    /// timeout...). Nothing was sent.
    #[error("client configuration: {0}")]
    Config(String),
    /// None of the seeds answered with a cluster map, so the client cannot route.
    #[error("no seed answered with a cluster map: {0}")]
    NoSeed(String),
    /// The cluster map the client holds names no member to send the request to.
    #[error("the cluster map has no members")]
    EmptyCluster,
}

impl Error {
    /// Whether the same call may succeed if made again later (the client has already retried on
    /// other nodes up to [`ClientConfig::retries`](crate::ClientConfig::retries) times).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Request(e) => e.is_retryable(),
            Error::NoSeed(_) | Error::EmptyCluster => true,
            Error::Config(_) => false,
        }
    }

    /// Whether this error says a node could not be reached or did not answer in time: a sign
    /// that the node is down or the client's cluster map is stale.
    pub(crate) fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Error::Request(
                dynamo_coordinator::Error::Unreachable(_) | dynamo_coordinator::Error::Timeout(_)
            )
        )
    }
}

/// The client's result type.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;
    use dynamo_coordinator::Error as Coord;

    #[test]
    fn client_mistakes_are_final_and_cluster_trouble_is_retryable() {
        assert!(!Error::Request(Coord::InvalidRequest("r=5".into())).is_retryable());
        assert!(!Error::Request(Coord::TooLarge("value".into())).is_retryable());
        assert!(!Error::Config("no seeds".into()).is_retryable());
        assert!(Error::Request(Coord::Timeout(10)).is_retryable());
        assert!(Error::Request(Coord::Unreachable("n1".into())).is_retryable());
        assert!(Error::NoSeed("refused".into()).is_retryable());
    }

    #[test]
    fn only_transport_failures_count_as_unreachable() {
        assert!(Error::Request(Coord::Timeout(10)).is_unreachable());
        assert!(Error::Request(Coord::Unreachable("n1".into())).is_unreachable());
        assert!(!Error::Request(Coord::Overloaded("busy".into())).is_unreachable());
        assert!(!Error::NoSeed("refused".into()).is_unreachable());
    }

    #[test]
    fn coordinator_errors_display_unchanged() {
        let e = Error::from(Coord::Timeout(250));
        assert_eq!(e.to_string(), "timed out after 250 ms");
    }
}
