//! Data versioning for a Dynamo-style store: vector clocks, dotted version vectors, sibling sets
//! and the opaque causal context handed to clients.
//!
//! # What this crate owns
//!
//! Dynamo (SOSP 2007) keeps every write available: a `put` never waits for conflicts to be
//! resolved, so a key may hold several causally concurrent versions ("siblings"). Section 4.4 tracks
//! causality with vector clocks: a version whose clock descends another's supersedes it, versions
//! with concurrent clocks are all returned to the client, which reconciles them and writes back with
//! the context it read (section 6.3 reports how rarely that happens).
//!
//! This crate implements that with one refinement, dotted version vectors:
//!
//! - [`VectorClock`]: `(actor, counter, timestamp)` entries; [`VectorClock::compare`] gives the
//!   [`Causality`] between two clocks. Timestamps only choose what to prune.
//! - [`Object`]: the state of one key at one replica, a clock of everything seen plus the
//!   [`Sibling`]s, each tagged with the [`Dot`] of the write that made it. [`Object::put`] is the
//!   coordinator's write, [`Object::merge`] the replica-to-replica join, [`Object::reconcile`] the
//!   read path's syntactic reconciliation. Tagging each sibling with its own dot lets one
//!   coordinator hold many concurrent siblings with a single clock entry, where plain vector clocks
//!   would either grow an entry per client or silently drop one of two concurrent writes.
//! - [`Context`]: the clock handed to clients, with a compact, versioned, canonical binary encoding
//!   and a base64 form for HTTP headers. Decoding treats its input as hostile.
//! - Pruning ([`PrunePolicy`]): the paper bounds clocks to about ten entries, oldest first. Pruning
//!   may create false siblings later but never loses a write (see [`Object::prune`]).
//!
//! [`Actor`]s carry an epoch that the node bumps whenever it restarts without its data, so it can
//! never reissue a dot the cluster has already seen (Riak's "kv679" lost-write bug: a wiped node
//! restarting its counters at 1 would have its new writes treated as old ones and discarded).
//!
//! # What it deliberately does not do
//!
//! No I/O, no async, no clocks and no randomness: the current time is passed in as `now_ms`
//! (milliseconds since the Unix epoch), actors are chosen by the caller. It does not decide
//! *where* versions are stored, how many replicas must answer, when tombstones are reaped, or how
//! to merge conflicting values semantically: those belong to the storage and coordinator crates
//! and to the application.
//!
//! ```
//! use dynamo_versioning::{Actor, Context, Object};
//!
//! let (a, b) = (Actor::new(1, 0), Actor::new(2, 0));
//! let mut replica_a: Object<&str> = Object::new();
//! let mut replica_b = Object::new();
//! replica_a.put(a, &Context::empty(), "v1", 10);
//! replica_b.merge(&replica_a);
//!
//! // During a partition both replicas accept a write on top of v1.
//! let context = replica_a.context();
//! replica_a.put(a, &context, "v2 via a", 20);
//! replica_b.put(b, &context, "v2 via b", 21);
//!
//! // A read reconciles the answers: both versions, one context covering both.
//! let answer = Object::reconcile([replica_a.clone(), replica_b.clone()]);
//! assert_eq!(answer.values(), vec![&"v2 via a", &"v2 via b"]);
//!
//! // Writing back with that context replaces both.
//! replica_a.put(a, &answer.context(), "v3", 30);
//! replica_b.merge(&replica_a);
//! assert_eq!(replica_b.values(), vec![&"v3"]);
//! ```

mod clock;
mod context;
mod error;
mod object;

pub use clock::{
    Actor, Causality, DEFAULT_MAX_CLOCK_ENTRIES, Dot, MAX_COUNTER, PrunePolicy, VectorClock,
};
pub use context::{CONTEXT_FORMAT_VERSION, Context, MAX_BASE64_LEN, MAX_CONTEXT_ENTRIES};
pub use error::{Error, Result};
pub use object::{Object, Sibling};
