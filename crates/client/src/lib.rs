//! The Rust client of Dynamo in Rust: client-driven coordination (paper section 6.4).
//!
//! A [`Client`] holds the cluster's ring and member addresses (a [`ClusterMap`]) fetched from a
//! seed node, so it can compute each key's preference list itself and send the request straight
//! to a node among the key's top N. That node coordinates the request without the forwarding
//! hop a load balancer's random pick would often need, which the paper credits with lower
//! latency, especially at the tail. Writes go to the first healthy primary (one coordinator per
//! key keeps version vectors short); reads rotate over the top N to spread load. A request that
//! fails with a retryable error is sent again to the next node of the preference list, up to
//! [`ClientConfig::retries`] times; invalid or oversize requests fail at once. Nodes that do not
//! answer are tried last for a short while, and trigger a map refresh; the map is also refreshed
//! periodically by a background task that ends with the last clone of the client.
//!
//! Requests and responses are the coordinator's own types ([`GetRequest`], [`PutResponse`]...),
//! re-exported here, and travel over the rpc crate's authenticated connections.
//!
//! Not here: sibling resolution (the caller gets every concurrent version and the context that
//! covers them, and decides), client-side caching of values, and any use of the HTTP API.

mod client;
mod cluster;
mod config;
mod error;
mod routing;

pub use client::Client;
pub use config::{
    ClientConfig, DEFAULT_REFRESH_INTERVAL, DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRIES, MAX_RETRIES,
    MIN_REFRESH_INTERVAL,
};
pub use error::{Error, Result};

/// What a node answered when it could not do a request (wrapped in [`Error::Request`]).
pub use dynamo_coordinator::Error as RequestError;
pub use dynamo_coordinator::{
    BucketProps, DeleteRequest, DeleteResponse, GetRequest, GetResponse, NodeStatus, PutRequest,
    PutResponse, Quorum,
};
pub use dynamo_ring::NodeId;
pub use dynamo_rpc::ClusterMap;
pub use dynamo_storage::Content;
pub use dynamo_versioning::Context;
