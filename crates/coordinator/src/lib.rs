//! Request coordination for Dynamo in Rust: the get, put and delete paths of paper section 4.5
//! and the replica side that serves them.
//!
//! A [`Coordinator`] runs on every node. For a client request it computes the key's preference
//! list from the ring, fans the request out to the top N replicas, and answers once R (reads) or
//! W (writes) of them replied, with DW, PR and PW refinements taken from Riak. Writes mint a new
//! version with this node's actor from the client's context (paper 4.4, via `dynamo-versioning`),
//! so any of the top N may coordinate; a node outside the top N forwards the write to the first
//! of them, exactly one hop. Replica writes still outstanding when W is reached keep running in
//! the background and are never dropped. Reads reconcile every answer syntactically, return every
//! causally concurrent version plus one context, then linger briefly to repair stale replicas.
//! Deletes are writes of tombstones.
//!
//! The quorum arithmetic is pure ([`quorum`]); the async driver reaches peers only through the
//! [`Replicas`] trait, which the rpc crate implements over tarpc and tests implement in-process.
//!
//! Not here: the network (rpc crate), failure detection, sloppy quorum and hinted handoff (the
//! failure-handling work plugs into the choice of target replicas), membership changes (the ring is
//! installed from outside with [`Coordinator::set_ring`]), and anti-entropy.

mod api;
mod buckets;
mod clock;
mod coordinator;
mod error;
mod handoff;
mod health;
mod metrics;
mod props;
pub mod quorum;
mod read;
mod replica;
mod replicas;
mod targets;
mod write;

pub use api::{
    DeleteRequest, DeleteResponse, GetRequest, GetResponse, NodeStatus, PutRequest, PutResponse,
    ReplicaPut,
};
pub use buckets::Buckets;
pub use clock::{Clock, ManualClock, SystemClock};
pub use coordinator::{
    Coordinator, DEFAULT_REQUEST_TIMEOUT, HANDOFF_BATCH, HANDOFF_INTERVAL, MAX_REQUEST_TIMEOUT,
    Options, PROBE_INTERVAL, Parts, READ_REPAIR_LINGER,
};
pub use error::{Error, Result};
pub use health::Health;
pub use metrics::{Metrics, OPS, OUTCOMES, OpLabels, OpOnly};
pub use props::{BucketProps, DEFAULT_N_VAL, MAX_N_VAL, Quorum};
pub use replicas::Replicas;
pub use targets::{Target, sloppy_targets};
