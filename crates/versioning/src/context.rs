//! The opaque causal context handed to clients, and its compact binary encoding.
//!
//! Format, version 1 (every integer an unsigned LEB128 varint in its shortest form):
//!
//! ```text
//! version byte (0x01) | entry count | count x (node, epoch, counter, timestamp_ms)
//! ```
//!
//! Entries are strictly increasing by actor `(node, epoch)`, counters are nonzero. The encoding is
//! canonical: each context has exactly one encoding, and the decoder rejects anything else, so a
//! decoded context re-encodes to the very bytes it came from.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::clock::{Actor, Entry, VectorClock, validate_entries};
use crate::error::{Error, Result};

/// The context format this build writes and reads.
pub const CONTEXT_FORMAT_VERSION: u8 = 1;

/// The most entries a context may declare. Pruned clocks hold about ten (paper 4.4); 1024 leaves
/// room for clusters that prune late or not at all, while bounding what a forged context can make
/// a decoder allocate (about 36 KiB of entries).
pub const MAX_CONTEXT_ENTRIES: usize = 1024;

/// Longest varint for a `u64`: ceil(64 / 7).
const MAX_VARINT_LEN: usize = 10;
/// Smallest encoded entry: four one-byte varints.
const MIN_ENTRY_LEN: usize = 4;
/// Longest encoded entry: node, epoch (u32, 5 bytes), counter, timestamp.
const MAX_ENTRY_LEN: usize = MAX_VARINT_LEN * 3 + 5;
/// Longest valid encoding: version byte, count, entries.
const MAX_ENCODED_LEN: usize = 1 + MAX_VARINT_LEN + MAX_CONTEXT_ENTRIES * MAX_ENTRY_LEN;
/// Longest base64 text that can hold a valid encoding (4 characters per 3 bytes, padded).
pub const MAX_BASE64_LEN: usize = MAX_ENCODED_LEN.div_ceil(3) * 4;

/// The opaque causal context handed to clients (Riak's X-Riak-Vclock). Wraps a [`VectorClock`].
///
/// A client reads a key, gets its siblings and a context, and sends the context back with its
/// next write: the write then supersedes exactly the versions the client saw.
///
/// ```
/// use dynamo_versioning::{Actor, Context, VectorClock};
///
/// let mut clock = VectorClock::new();
/// clock.increment(Actor::new(42, 0), 1_700_000_000_000);
/// let context = Context::from_clock(clock);
/// let header = context.to_base64();
/// assert_eq!(Context::from_base64(&header)?, context);
/// assert!(Context::decode(b"\x07garbage").is_err());
/// # Ok::<(), dynamo_versioning::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context(VectorClock);

impl Context {
    /// The context of a client that has seen nothing (a blind write).
    pub fn empty() -> Self {
        Context(VectorClock::new())
    }

    /// The clock inside.
    pub fn clock(&self) -> &VectorClock {
        &self.0
    }

    /// Wraps a clock.
    pub fn from_clock(clock: VectorClock) -> Self {
        Context(clock)
    }

    /// Unwraps the clock.
    pub fn into_clock(self) -> VectorClock {
        self.0
    }

    /// Absorbs `other`: the result has seen what either has.
    pub fn merge(&mut self, other: &Context) {
        self.0.merge(&other.0);
    }

    /// True when no version has been seen.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The compact binary form; the first byte is [`CONTEXT_FORMAT_VERSION`].
    ///
    /// A clock with more than [`MAX_CONTEXT_ENTRIES`] entries encodes, but will not decode: prune
    /// clocks before handing them out.
    pub fn encode(&self) -> Vec<u8> {
        let entries = self.0.entries();
        let mut out = Vec::with_capacity(2 + entries.len() * 12);
        out.push(CONTEXT_FORMAT_VERSION);
        put_varint(&mut out, entries.len() as u64);
        for e in entries {
            put_varint(&mut out, e.actor.node);
            put_varint(&mut out, u64::from(e.actor.epoch));
            put_varint(&mut out, e.counter);
            put_varint(&mut out, e.timestamp_ms);
        }
        out
    }

    /// Reads a context from untrusted bytes. Never panics; rejects anything that is not the exact
    /// canonical encoding of a valid clock, with an error naming the problem.
    pub fn decode(bytes: &[u8]) -> Result<Context> {
        let mut reader = Reader { bytes };
        let version = reader.byte().ok_or(Error::Empty)?;
        if version != CONTEXT_FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: CONTEXT_FORMAT_VERSION,
            });
        }
        let count = reader.varint("entry count")?;
        if count > MAX_CONTEXT_ENTRIES as u64 {
            return Err(Error::TooManyEntries {
                count,
                max: MAX_CONTEXT_ENTRIES,
            });
        }
        // `count` is at most MAX_CONTEXT_ENTRIES here; also never reserve more than the bytes left
        // could possibly hold.
        let count = count as usize;
        let mut entries = Vec::with_capacity(count.min(reader.bytes.len() / MIN_ENTRY_LEN));
        for _ in 0..count {
            let node = reader.varint("actor node")?;
            let epoch =
                u32::try_from(reader.varint("actor epoch")?).map_err(|_| Error::OutOfRange {
                    field: "actor epoch",
                })?;
            let counter = reader.varint("counter")?;
            let timestamp_ms = reader.varint("timestamp")?;
            entries.push(Entry {
                actor: Actor::new(node, epoch),
                counter,
                timestamp_ms,
            });
        }
        if !reader.bytes.is_empty() {
            return Err(Error::TrailingBytes {
                count: reader.bytes.len(),
            });
        }
        validate_entries(&entries)?;
        Ok(Context(VectorClock::from_validated(entries)))
    }

    /// The encoding in standard base64 (with padding), for HTTP headers.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.encode())
    }

    /// Reads a context from base64 text (surrounding whitespace is ignored). Rejects text longer
    /// than [`MAX_BASE64_LEN`] before decoding it.
    pub fn from_base64(s: &str) -> Result<Context> {
        let s = s.trim();
        if s.len() > MAX_BASE64_LEN {
            return Err(Error::Base64TooLong {
                len: s.len(),
                max: MAX_BASE64_LEN,
            });
        }
        Context::decode(&STANDARD.decode(s)?)
    }
}

impl From<VectorClock> for Context {
    fn from(clock: VectorClock) -> Self {
        Context(clock)
    }
}

/// Appends `value` as an unsigned LEB128 varint.
fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A cursor over untrusted bytes.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(first)
    }

    /// Reads a shortest-form LEB128 `u64`.
    fn varint(&mut self, field: &'static str) -> Result<u64> {
        let mut value: u64 = 0;
        for i in 0..MAX_VARINT_LEN {
            let byte = self.byte().ok_or(Error::Truncated { field })?;
            let bits = u64::from(byte & 0x7f);
            let shift = 7 * i as u32;
            // The tenth byte may only carry the single top bit of a u64.
            if i == MAX_VARINT_LEN - 1 && bits > 1 {
                return Err(Error::OutOfRange { field });
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                // A final zero byte after other bytes adds nothing: a longer-than-needed form.
                if byte == 0 && i > 0 {
                    return Err(Error::NonCanonicalVarint { field });
                }
                return Ok(value);
            }
        }
        Err(Error::OutOfRange { field })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Context {
        let clock = VectorClock::from_entries([
            (Actor::new(1, 0), 3, 1_700_000_000_000),
            (Actor::new(1, 1), 1, 1_700_000_000_500),
            (Actor::new(u64::MAX, u32::MAX), crate::MAX_COUNTER, u64::MAX),
        ])
        .expect("valid clock");
        Context::from_clock(clock)
    }

    #[test]
    fn encode_decode_round_trips_including_extreme_values() {
        let context = sample();
        let bytes = context.encode();
        assert_eq!(bytes.first(), Some(&CONTEXT_FORMAT_VERSION));
        assert_eq!(Context::decode(&bytes), Ok(context.clone()));
        assert_eq!(Context::from_base64(&context.to_base64()), Ok(context));
    }

    #[test]
    fn empty_context_encodes_as_version_and_zero_count() {
        assert_eq!(Context::empty().encode(), vec![CONTEXT_FORMAT_VERSION, 0]);
        assert_eq!(Context::decode(&[1, 0]), Ok(Context::empty()));
    }

    #[test]
    fn decode_names_what_is_wrong() {
        assert_eq!(Context::decode(&[]), Err(Error::Empty));
        assert!(matches!(
            Context::decode(&[9, 0]),
            Err(Error::UnsupportedVersion { found: 9, .. })
        ));
        assert!(matches!(
            Context::decode(&[1, 1, 5]),
            Err(Error::Truncated {
                field: "actor epoch"
            })
        ));
        assert_eq!(
            Context::decode(&[1, 0, 0]),
            Err(Error::TrailingBytes { count: 1 })
        );
        assert!(matches!(
            Context::decode(&[1, 0x80, 0x10]),
            Err(Error::TooManyEntries { count: 2048, .. })
        ));
        assert!(matches!(
            Context::decode(&[1, 1, 5, 0, 0, 7]),
            Err(Error::ZeroCounter { .. })
        ));
        assert!(matches!(
            Context::decode(&[1, 2, 5, 0, 1, 0, 5, 0, 2, 0]),
            Err(Error::DuplicateActor { index: 1, .. })
        ));
        assert!(matches!(
            Context::decode(&[1, 2, 6, 0, 1, 0, 5, 0, 2, 0]),
            Err(Error::UnsortedActors { index: 1, .. })
        ));
    }

    #[test]
    fn decode_rejects_non_canonical_and_oversized_varints() {
        // Count 0 written in two bytes.
        assert!(matches!(
            Context::decode(&[1, 0x80, 0x00]),
            Err(Error::NonCanonicalVarint { .. })
        ));
        // Epoch above u32::MAX.
        let mut bytes = vec![1, 1, 1];
        put_varint(&mut bytes, u64::from(u32::MAX) + 1);
        bytes.extend([1, 0]);
        assert!(matches!(
            Context::decode(&bytes),
            Err(Error::OutOfRange {
                field: "actor epoch"
            })
        ));
        // A node varint longer than any u64.
        let mut bytes = vec![1, 1];
        bytes.extend([0xff; 10]);
        bytes.push(0x01);
        assert!(matches!(
            Context::decode(&bytes),
            Err(Error::OutOfRange {
                field: "actor node"
            })
        ));
        // Counter above MAX_COUNTER.
        let mut bytes = vec![1, 1, 1, 0];
        put_varint(&mut bytes, u64::MAX);
        bytes.push(0);
        assert!(matches!(
            Context::decode(&bytes),
            Err(Error::CounterTooLarge { .. })
        ));
    }

    #[test]
    fn base64_errors_are_reported_and_oversized_text_is_refused_early() {
        assert!(matches!(
            Context::from_base64("not base64!"),
            Err(Error::Base64(_))
        ));
        let long = "A".repeat(MAX_BASE64_LEN + 4);
        assert!(matches!(
            Context::from_base64(&long),
            Err(Error::Base64TooLong { .. })
        ));
        let padded = format!("  {}\t", sample().to_base64());
        assert_eq!(Context::from_base64(&padded), Ok(sample()));
    }

    #[test]
    fn merge_absorbs_both_contexts() {
        let mut a = Context::empty();
        let b = sample();
        a.merge(&b);
        assert_eq!(a, b);
        assert!(Context::empty().is_empty());
    }
}
