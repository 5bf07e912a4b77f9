//! What the load generator needs from the system under test, and its implementation over the
//! Rust client (client-driven coordination). The HTTP implementation is in [`crate::http`].

use std::future::Future;

use bytes::Bytes;
use dynamo_client::{Client, Context};

/// A failed operation, classified for counting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpError {
    /// Short stable name of the failure (`timeout`, `unavailable`, `http_503`...).
    pub kind: String,
    /// The full message, shown once per kind.
    pub detail: String,
}

impl OpError {
    /// A failure of `kind` described by `detail`.
    pub fn new(kind: impl Into<String>, detail: impl ToString) -> OpError {
        OpError {
            kind: kind.into(),
            detail: detail.to_string(),
        }
    }
}

/// What a read found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadOutcome<V> {
    /// Whether the key had a live value.
    pub found: bool,
    /// The version to send with a write that supersedes what was read.
    pub version: V,
}

/// The key-value operations a benchmark runs. Implementations are shared by every worker task.
pub trait Store: Send + Sync + 'static {
    /// What a read hands to a following write so that the write supersedes it (a causal context).
    /// The default value stands for a blind write.
    type Version: Default + Send + 'static;

    /// Reads `key`. Fails only when the system did not answer with a value or a not-found.
    fn read(
        &self,
        key: &[u8],
    ) -> impl Future<Output = Result<ReadOutcome<Self::Version>, OpError>> + Send;

    /// Writes `value` to `key`, superseding `version`.
    fn write(
        &self,
        key: &[u8],
        value: Bytes,
        version: Self::Version,
    ) -> impl Future<Output = Result<(), OpError>> + Send;
}

/// The cluster through the Rust client, one bucket.
#[derive(Clone, Debug)]
pub struct ClientStore {
    client: Client,
    bucket: Vec<u8>,
}

impl ClientStore {
    /// Operations on `bucket` through `client`.
    pub fn new(client: Client, bucket: impl Into<Vec<u8>>) -> ClientStore {
        ClientStore {
            client,
            bucket: bucket.into(),
        }
    }
}

/// The counting name of a client error.
pub fn client_error_kind(e: &dynamo_client::Error) -> &'static str {
    use dynamo_client::Error as E;
    use dynamo_client::RequestError as C;
    match e {
        E::Request(C::InvalidRequest(_)) => "invalid",
        E::Request(C::TooLarge(_)) => "too_large",
        E::Request(C::Unavailable { .. }) => "unavailable",
        E::Request(C::Timeout(_)) => "timeout",
        E::Request(C::Unreachable(_)) => "unreachable",
        E::Request(C::Overloaded(_)) => "overloaded",
        E::Request(C::Storage(_)) => "storage",
        E::Request(C::Internal(_)) => "internal",
        E::Request(C::Cancelled(_)) => "cancelled",
        E::Config(_) => "config",
        E::NoSeed(_) => "no_seed",
        E::EmptyCluster => "empty_cluster",
    }
}

impl Store for ClientStore {
    type Version = Context;

    async fn read(&self, key: &[u8]) -> Result<ReadOutcome<Context>, OpError> {
        match self.client.get(self.bucket.clone(), key.to_vec()).await {
            Ok(response) => Ok(ReadOutcome {
                found: !response.is_not_found(),
                version: response.context(),
            }),
            Err(e) => Err(OpError::new(client_error_kind(&e), e)),
        }
    }

    async fn write(&self, key: &[u8], value: Bytes, version: Context) -> Result<(), OpError> {
        match self
            .client
            .put(self.bucket.clone(), key.to_vec(), value, version)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(OpError::new(client_error_kind(&e), e)),
        }
    }
}
