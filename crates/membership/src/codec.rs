//! The versioned binary encoding of [`ClusterState`], for the storage engine's metadata and for
//! the wire.
//!
//! Layout: one format byte ([`STATE_FORMAT_VERSION`]) followed by the state in bincode
//! (fixed-width integers, little endian). Decoding is bounded ([`MAX_STATE_BYTES`]), rejects
//! trailing bytes, validates every node id and ring on the way in (their serde impls do), and
//! then checks the invariants that tie the parts together, so a state from a hostile peer or a
//! corrupt disk is an error, never a panic and never a state the rest of the code cannot trust.

use bincode::Options as _;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::state::ClusterState;

/// Version of the encoded state; decoding rejects any other value. Bump it when the layout
/// changes.
pub const STATE_FORMAT_VERSION: u8 = 1;

/// Largest encoded state accepted. A 1024-partition ring with a few hundred members and their
/// bucket properties is well under a megabyte; sixteen leaves room without letting a peer make
/// this node allocate without bound.
pub const MAX_STATE_BYTES: u64 = 16 * 1024 * 1024;

fn options() -> impl bincode::Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(MAX_STATE_BYTES)
        .reject_trailing_bytes()
}

/// Deterministic bytes of a value (for digests and plan ids). Infallible for the crate's own
/// types: they hold only maps, strings, integers and rings, which bincode always encodes.
pub(crate) fn canonical_bytes<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .serialize(value)
        .unwrap_or_default()
}

impl ClusterState {
    /// Encodes the state: format byte, then bincode.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![STATE_FORMAT_VERSION];
        out.extend(canonical_bytes(self));
        out
    }

    /// Decodes and validates an encoded state. Never panics on any input.
    pub fn decode(bytes: &[u8]) -> Result<ClusterState> {
        let (&format, body) = bytes
            .split_first()
            .ok_or_else(|| Error::Decode("empty input".into()))?;
        if format != STATE_FORMAT_VERSION {
            return Err(Error::Decode(format!(
                "format version {format} (this build reads {STATE_FORMAT_VERSION})"
            )));
        }
        if body.len() as u64 > MAX_STATE_BYTES {
            return Err(Error::Decode(format!(
                "{} bytes is more than the {MAX_STATE_BYTES}-byte limit",
                body.len()
            )));
        }
        let state: ClusterState = options()
            .deserialize(body)
            .map_err(|e| Error::Decode(e.to_string()))?;
        state.validate()?;
        Ok(state)
    }

    /// Checks the invariants that tie the parts of a state together: a named cluster, N >= 1,
    /// every ring member a known member with a sensible address, rings of the same Q, pending
    /// transfers naming partitions of the ring and members of the cluster.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::Decode(why));
        if self.cluster.is_empty() || self.cluster.len() > 255 {
            return bad("the cluster name must be 1..=255 bytes".into());
        }
        if self.n == 0 {
            return bad("the replication factor is 0".into());
        }
        for (id, m) in &self.members {
            if m.address.is_empty() || m.address.len() > 255 {
                return bad(format!("member {id} has an invalid address"));
            }
            if m.weight == 0 {
                return bad(format!("member {id} has weight 0"));
            }
        }
        let q = self.ring.current.q();
        let mut rings = vec![&self.ring.current];
        rings.extend(self.ring.previous.as_ref());
        rings.extend(self.ring.pending.as_ref().map(|p| &p.next));
        for ring in rings {
            if ring.q() != q {
                return bad(format!("rings of {} and {q} partitions", ring.q()));
            }
            if let Some(m) = ring
                .members()
                .iter()
                .find(|m| !self.members.contains_key(&m.id))
            {
                return bad(format!("ring member {} is not a member", m.id));
            }
        }
        if let Some(p) = &self.ring.pending {
            if p.next.epoch() <= self.ring.current.epoch() {
                return bad("the pending ring is not newer than the current one".into());
            }
            for t in p.transfers.keys() {
                if t.partition.0 >= q
                    || !self.members.contains_key(&t.from)
                    || !self.members.contains_key(&t.to)
                {
                    return bad(format!("transfer {t:?} names an unknown partition or node"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use dynamo_ring::NodeId;
    use proptest::prelude::*;

    use super::*;
    use crate::state::{MemberInfo, Status};

    fn sample() -> ClusterState {
        let members = (1..=3)
            .map(|i| {
                (
                    NodeId::new(format!("n{i}")).unwrap(),
                    MemberInfo {
                        version: 0,
                        address: format!("127.0.0.1:700{i}"),
                        zone: None,
                        weight: 1,
                        status: Status::Valid,
                    },
                )
            })
            .collect();
        let mut s = ClusterState::bootstrap("c", 16, 3, members).unwrap();
        s.set_bucket_props(&NodeId::new("n1").unwrap(), b"b", vec![1, 2, 3]);
        s.mark_seen(&NodeId::new("n1").unwrap());
        s
    }

    #[test]
    fn encoding_round_trips_and_carries_its_version() {
        let s = sample();
        let bytes = s.encode();
        assert_eq!(bytes[0], STATE_FORMAT_VERSION);
        assert_eq!(ClusterState::decode(&bytes), Ok(s));
    }

    #[test]
    fn bad_input_is_an_error_naming_the_problem() {
        let good = sample().encode();
        let err = |b: &[u8]| ClusterState::decode(b).unwrap_err().to_string();
        assert!(err(&[]).contains("empty"));
        let mut v2 = good.clone();
        v2[0] = 2;
        assert!(err(&v2).contains("format version 2"));
        assert!(err(&good[..good.len() - 1]).contains("cannot decode"));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(err(&trailing).contains("cannot decode"));
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut input = vec![STATE_FORMAT_VERSION];
            input.extend(bytes);
            let _ = ClusterState::decode(&input);
        }

        #[test]
        fn corrupted_states_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
            let mut bytes = sample().encode();
            for (i, b) in flips {
                let at = i.index(bytes.len());
                bytes[at] = b;
            }
            if let Ok(s) = ClusterState::decode(&bytes) {
                // Whatever decodes is a state the code can use.
                prop_assert!(s.validate().is_ok());
                let _ = s.plan();
                let _ = s.member_views();
            }
        }
    }
}
