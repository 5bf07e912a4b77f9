//! The crate's one error type.

use crate::NodeId;

/// Everything that can go wrong when building, changing or decoding a ring.
///
/// Every variant is a validation failure of the caller's (or a peer's) input: the ring is pure, so nothing
/// here is transient and retrying the same call gives the same error. A call that fails changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A node name is empty, too long or uses characters outside `[A-Za-z0-9._-]`.
    #[error("invalid node id {name:?}: {reason}")]
    InvalidNodeId {
        /// The rejected name (possibly truncated for display by the caller).
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Q is not a power of two in `MIN_PARTITIONS..=MAX_PARTITIONS`.
    #[error(
        "invalid partition count {0}: Q must be a power of two in {min}..={max}",
        min = crate::MIN_PARTITIONS,
        max = crate::MAX_PARTITIONS
    )]
    InvalidPartitionCount(u32),
    /// A ring needs at least one member.
    #[error("a ring needs at least one member")]
    NoMembers,
    /// The same node id appears twice among the members.
    #[error("duplicate member {0}")]
    DuplicateMember(NodeId),
    /// A member's weight (capacity) is zero.
    #[error("member {0} has weight 0; weights must be at least 1")]
    ZeroWeight(NodeId),
    /// A member's zone is empty or longer than `MAX_ZONE_LEN` bytes.
    #[error("member {node} has an invalid zone: {reason}")]
    InvalidZone {
        /// The member whose zone was rejected.
        node: NodeId,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The named node is not a member of the ring.
    #[error("{0} is not a member of the ring")]
    UnknownMember(NodeId),
    /// The last member cannot leave: a ring with no members owns nothing.
    #[error("{0} is the last member and cannot leave the ring")]
    LastMember(NodeId),
    /// A partition number is not below the ring's Q.
    #[error("partition {partition} is out of range for a ring of {q} partitions")]
    PartitionOutOfRange {
        /// The rejected partition number.
        partition: u32,
        /// The ring's partition count.
        q: u32,
    },
    /// A decoded ring is inconsistent (wrong format version, owner table of the wrong length, an owner that is
    /// not a member).
    #[error("invalid ring: {0}")]
    InvalidRing(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Whether retrying the same call could succeed. Always `false`: the ring does no I/O, so every error is a
    /// property of the input. Provided so callers can classify errors uniformly across crates.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_offending_input() {
        let e = Error::InvalidPartitionCount(100);
        assert_eq!(
            e.to_string(),
            "invalid partition count 100: Q must be a power of two in 8..=1024"
        );
        let e = Error::PartitionOutOfRange {
            partition: 70,
            q: 64,
        };
        assert!(e.to_string().contains("70"));
        assert!(!e.is_retryable());
    }
}
