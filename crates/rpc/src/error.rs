//! The rpc crate's error type.

use thiserror::Error;

/// What can go wrong setting up or using a connection.
#[derive(Debug, Error)]
pub enum Error {
    /// Invalid credentials or addresses in the configuration.
    #[error("rpc configuration: {0}")]
    Config(String),
    /// The handshake failed: wrong secret, another cluster, another protocol version, or garbage.
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    /// The peer's address is not known.
    #[error("no address known for node {0}")]
    UnknownPeer(String),
    /// Connecting or talking to the peer failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer did not answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
}

impl Error {
    /// Whether trying again (possibly after reconnecting) may help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Io(_) | Error::Timeout(_))
    }
}

/// The rpc crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
