//! The crate's single error type.
//!
//! Every error here describes malformed input: a context, clock or object that came from a client, a
//! peer or a disk and breaks a rule of the format. None of them is transient, so none is worth
//! retrying with the same bytes: callers map them to "bad request" answers.

use crate::clock::{Actor, Dot};

/// What went wrong while reading a context, a clock or an object from untrusted input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input had no bytes at all; an absent context must be expressed as "no context", not as
    /// zero bytes.
    #[error("empty context: expected at least a format version byte")]
    Empty,
    /// The first byte names a context format this build does not know.
    #[error("unsupported context format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version byte that was read.
        found: u8,
        /// The only version this build reads.
        supported: u8,
    },
    /// The input ended in the middle of a field.
    #[error("truncated context: input ended while reading {field}")]
    Truncated {
        /// The field that was being read.
        field: &'static str,
    },
    /// A varint used more bytes than needed (the format is canonical: one value, one encoding).
    #[error("non-canonical varint while reading {field}")]
    NonCanonicalVarint {
        /// The field that was being read.
        field: &'static str,
    },
    /// A varint encodes a value that does not fit its field.
    #[error("value out of range while reading {field}")]
    OutOfRange {
        /// The field that was being read.
        field: &'static str,
    },
    /// Bytes were left over after the last entry.
    #[error("{count} trailing bytes after the last context entry")]
    TrailingBytes {
        /// How many bytes were left over.
        count: usize,
    },
    /// The entry count exceeds what a context may hold.
    #[error("context declares {count} entries, more than the limit of {max}")]
    TooManyEntries {
        /// The declared entry count.
        count: u64,
        /// The limit, [`crate::MAX_CONTEXT_ENTRIES`].
        max: usize,
    },
    /// Entries are not in strictly increasing actor order.
    #[error(
        "clock entries are not sorted by actor: {actor:?} at position {index} follows a greater actor"
    )]
    UnsortedActors {
        /// Position of the offending entry.
        index: usize,
        /// Its actor.
        actor: Actor,
    },
    /// The same actor appears twice.
    #[error("duplicate clock entry for actor {actor:?} at position {index}")]
    DuplicateActor {
        /// Position of the second occurrence.
        index: usize,
        /// The repeated actor.
        actor: Actor,
    },
    /// An entry has counter zero, which names no event (absent actors are simply left out).
    #[error("clock entry for actor {actor:?} at position {index} has counter zero")]
    ZeroCounter {
        /// Position of the offending entry.
        index: usize,
        /// Its actor.
        actor: Actor,
    },
    /// A counter is above [`crate::MAX_COUNTER`].
    #[error("clock entry for actor {actor:?} has counter {counter}, above the limit")]
    CounterTooLarge {
        /// The actor of the offending entry.
        actor: Actor,
        /// The counter that was read.
        counter: u64,
    },
    /// The text is not valid standard base64.
    #[error("invalid base64 context: {0}")]
    Base64(#[from] base64::DecodeError),
    /// The base64 text is longer than any valid context could be.
    #[error("base64 context of {len} characters exceeds the limit of {max}")]
    Base64TooLong {
        /// Length of the text.
        len: usize,
        /// The longest text that can hold a valid context.
        max: usize,
    },
    /// A stored object lists a sibling whose dot its own clock does not cover.
    #[error("sibling {dot:?} is not covered by the object's clock")]
    SiblingNotCovered {
        /// The offending sibling's dot.
        dot: Dot,
    },
    /// A stored object's siblings are not in the canonical (dot, timestamp) order.
    #[error("siblings are not in canonical order at position {index}")]
    UnsortedSiblings {
        /// Position of the first sibling out of order.
        index: usize,
    },
    /// A stored object's sibling has counter zero.
    #[error("sibling at position {index} has a dot with counter zero")]
    ZeroDot {
        /// Position of the offending sibling.
        index: usize,
    },
}

/// Result alias used by every fallible function of this crate.
pub type Result<T> = std::result::Result<T, Error>;
