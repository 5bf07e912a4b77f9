//! The load generator's error type: what stops a benchmark before or between phases. Failures of
//! single operations are counted, not raised (see [`crate::store::OpError`]).

use thiserror::Error;

/// Why a benchmark could not run.
#[derive(Debug, Error)]
pub enum Error {
    /// The command line asks for something impossible (no endpoints, zero records...).
    #[error("configuration: {0}")]
    Config(String),
    /// The Rust client could not connect to the cluster.
    #[error("client: {0}")]
    Client(#[from] dynamo_client::Error),
    /// A worker task died instead of returning its figures.
    #[error("worker task failed: {0}")]
    Worker(String),
}

/// The load generator's result type.
pub type Result<T> = std::result::Result<T, Error>;
