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
//! Failures (paper 4.6 and 4.8.3): a local failure detector ([`Health`]) marks peers that do not
//! answer as down and a background probe marks them up again; requests go to the first N
//! *healthy* nodes of the preference list ([`sloppy_targets`]), a fallback keeping the write with
//! a hint naming the primary it replaces; a handoff worker returns hinted writes to their owner
//! once it answers, deleting a hint only after the owner's durable acknowledgement
//! ([`Coordinator::spawn_workers`]). PR and PW count primaries only.
//!
//! The quorum arithmetic and the choice of targets are pure ([`quorum`], [`sloppy_targets`]);
//! the async driver reaches peers only through the [`Replicas`] trait, which the rpc crate
//! implements over tarpc and tests implement in-process. Wall-clock time comes from an injected
//! [`Clock`].
//!
//! Partition transfer (paper 4.9): while a next ring is installed
//! ([`Coordinator::set_next_ring`]) writes also reach the next owners; a partition is streamed to
//! its next owner in bounded batches with a persisted resume cursor and a confirmed final sync
//! ([`Coordinator::transfer_partition`]) under a run-time adjustable concurrency limit, and a
//! node drops a partition it no longer replicates only object by object if unchanged
//! ([`Coordinator::drop_partition`]).
//!
//! Not here: the network (rpc crate), membership changes (the rings are installed from outside
//! with [`Coordinator::set_ring`] and [`Coordinator::set_next_ring`], and membership decides when
//! transfers and drops run), Merkle anti-entropy, tombstone reaping (tombstones are kept) and
//! admission control.

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
mod transfer;
mod transfer_state;
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
pub use targets::{Target, WriteTargets, sloppy_targets, transition_targets};
pub use transfer::DropReport;
pub use transfer_state::{
    DEFAULT_TRANSFER_LIMIT, MAX_TRANSFER_LIMIT, PartitionSummary, TRANSFER_BATCH_BYTES,
    TRANSFER_BATCH_KEYS, TRANSFER_TIMEOUT, TransferLimiter, TransferOptions, TransferPermit,
    TransferPhase, TransferReport, TransferStatus,
};
