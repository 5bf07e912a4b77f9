//! Local persistence for a Dynamo node: versioned objects, hints and node metadata.
//!
//! # What this crate owns
//!
//! Each Dynamo node keeps its replicas in a pluggable local persistence engine (paper section 5:
//! "Dynamo's local persistence component allows for different storage engines to be plugged
//! in"). This crate is that component:
//!
//! - [`Engine`]: a small synchronous, object-safe contract (get, atomic read-modify-write
//!   [`Engine::update`], ordered partition and bucket scans, hints, metadata, flush), with
//!   [`EngineExt`] adding Dynamo's rules once for every adapter: merging a replica's version
//!   ([`EngineExt::put_merge`]), the coordinator's write that mints a dot
//!   ([`EngineExt::put_local`]), tombstone listing and reaping.
//! - Two adapters: [`MemoryEngine`], the reference (a map behind a lock), and [`RedbEngine`], the
//!   production engine on one redb file. Both pass one [conformance suite](crate::conformance)
//!   (enable the `conformance` feature to run it against an adapter of your own).
//! - What is stored ([`ObjectKey`], [`Content`], [`VersionedObject`], [`Hint`]), the paper's
//!   section 4.1 interface (`get(key)` returns the siblings and a context, `put(key, context,
//!   object)`) seen from one replica.
//! - Durability (section 6.1): [`Durability::Sync`] fsyncs before acknowledging, and concurrent
//!   writes share one fsync by group commit ([`WriterStats`] shows how well);
//!   [`Durability::Buffered`] is the paper's write buffer
//!   (acknowledge from memory, a writer thread flushes within a bounded interval) so that a
//!   coordinator can ask one replica for a durable write and let the others buffer.
//! - The on-disk format: a format version and magic in the file, a version byte in front of
//!   every record, and refusal (never a panic) of files and records this build cannot read.
//!
//! # What it deliberately does not do
//!
//! It does not hash keys or choose replicas (the caller passes the
//! [`PartitionId`](dynamo_ring::PartitionId) the ring computed), does not decide when a tombstone
//! may be reaped (only that a reap never erases a newer write), does not deliver hints or run
//! anti-entropy, and does not pick epochs: it stores the metadata the node decides on. It keeps
//! no secondary indexes beyond the hint owner index: listing a bucket walks every partition that
//! holds keys. Nothing here is async: callers in async code run engine calls on a blocking
//! thread.
//!
//! ```
//! use dynamo_ring::PartitionId;
//! use dynamo_storage::{Content, EngineExt, MemoryEngine, ObjectKey, Engine};
//! use dynamo_versioning::{Actor, Context};
//!
//! let engine = MemoryEngine::new();
//! let key = ObjectKey::new(PartitionId(3), "users", "alice");
//! let (_dot, stored) =
//!     engine.put_local(&key, Actor::new(1, 0), &Context::empty(), Content::new("v1"), 1_000)?;
//! assert_eq!(engine.get(&key)?, Some(stored));
//! # Ok::<(), dynamo_storage::Error>(())
//! ```

mod codec;
#[cfg(any(test, doc, feature = "conformance"))]
pub mod conformance;
mod engine;
mod error;
mod memory;
mod object;
mod options;
mod redb_engine;

pub use codec::RECORD_VERSION;
pub use engine::{AppliedFn, Engine, EngineExt, UpdateDone, UpdateFn};
pub use error::{Error, Result};
pub use memory::MemoryEngine;
pub use object::{Content, Entry, Hint, ObjectKey, VersionedObject, is_deleted};
pub use options::{
    DEFAULT_CACHE_BYTES, DEFAULT_FLUSH_INTERVAL, DEFAULT_MAX_BATCH, DEFAULT_MAX_BUCKET_LEN,
    DEFAULT_MAX_KEY_LEN, DEFAULT_MAX_VALUE_LEN, DEFAULT_QUEUE_DEPTH, Durability, Limits,
    MAX_META_NAME_LEN, META_EPOCH, META_NODE_ID, Options,
};
pub use redb_engine::{FORMAT_MAGIC, FORMAT_VERSION, RedbEngine, WriterStats};
