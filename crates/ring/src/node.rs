//! Physical nodes as the ring sees them: [`NodeId`] and [`Member`].

use std::fmt;
use std::str::FromStr;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Longest accepted node name, in bytes. Long enough for a host name plus a suffix, short enough that ids stay
/// cheap to gossip and log (a ring names every owner once per partition on the wire).
pub const MAX_NODE_ID_LEN: usize = 64;

/// Longest accepted zone name, in bytes; same reasoning as [`MAX_NODE_ID_LEN`].
pub const MAX_ZONE_LEN: usize = 64;

/// Weight given to a member when none is configured: every node counts as one unit of capacity.
pub const DEFAULT_WEIGHT: u32 = 1;

/// A physical node's name, e.g. `"n1"` (unique in the cluster).
///
/// Always 1..=64 bytes of `[A-Za-z0-9._-]`; decoding (serde or [`FromStr`]) validates the same way as
/// [`NodeId::new`], so a `NodeId` received from a peer is as trustworthy as one built locally.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

impl NodeId {
    /// Validates and wraps a node name: 1..=64 bytes of `[A-Za-z0-9._-]`.
    pub fn new(s: impl Into<String>) -> Result<NodeId> {
        let name = s.into();
        let reason = if name.is_empty() {
            Some("empty")
        } else if name.len() > MAX_NODE_ID_LEN {
            Some("longer than 64 bytes")
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            Some("only [A-Za-z0-9._-] are allowed")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidNodeId { name, reason }),
            None => Ok(NodeId(name)),
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Stable 64-bit id used as the versioning actor's node field: the first 8 bytes of `md5(name)`, read big
    /// endian. Every node computes the same value for the same name, with no coordination.
    pub fn actor_id(&self) -> u64 {
        let digest: [u8; 16] = Md5::digest(self.0.as_bytes()).into();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for NodeId {
    type Err = Error;

    fn from_str(s: &str) -> Result<NodeId> {
        NodeId::new(s)
    }
}

impl TryFrom<String> for NodeId {
    type Error = Error;

    fn try_from(s: String) -> Result<NodeId> {
        NodeId::new(s)
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> String {
        id.0
    }
}

impl AsRef<str> for NodeId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A member as the ring sees it: who it is, where it runs and how much it can hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's unique name.
    pub id: NodeId,
    /// Failure domain (rack, availability zone, data centre). Preference lists place replicas in distinct zones
    /// first; a member without a zone counts as a zone of its own.
    pub zone: Option<String>,
    /// Relative capacity, at least 1: a member of weight 2 owns about twice the partitions of one of weight 1.
    pub weight: u32,
}

impl Member {
    /// A member with no zone and the default weight of 1.
    pub fn new(id: NodeId) -> Member {
        Member {
            id,
            zone: None,
            weight: DEFAULT_WEIGHT,
        }
    }

    /// The same member placed in `zone`.
    pub fn with_zone(mut self, zone: impl Into<String>) -> Member {
        self.zone = Some(zone.into());
        self
    }

    /// The same member with capacity `weight` (validated when the member enters a ring).
    pub fn with_weight(mut self, weight: u32) -> Member {
        self.weight = weight;
        self
    }

    /// Checks the invariants a ring relies on: weight at least 1 and a zone, if any, of 1..=64 bytes.
    pub fn validate(&self) -> Result<()> {
        if self.weight == 0 {
            return Err(Error::ZeroWeight(self.id.clone()));
        }
        if let Some(zone) = &self.zone {
            let reason = if zone.is_empty() {
                Some("empty")
            } else if zone.len() > MAX_ZONE_LEN {
                Some("longer than 64 bytes")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(Error::InvalidZone {
                    node: self.id.clone(),
                    reason,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_accept_the_documented_alphabet() {
        for ok in ["n1", "node-1.example_com", "A", &"x".repeat(64)] {
            let id = NodeId::new(ok).unwrap();
            assert_eq!(id.as_str(), ok);
            assert_eq!(id.to_string(), ok);
            assert_eq!(ok.parse::<NodeId>().unwrap(), id);
        }
    }

    #[test]
    fn node_ids_reject_bad_names() {
        for bad in ["", "n 1", "n/1", "ü", &"x".repeat(65)] {
            let err = NodeId::new(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidNodeId { .. }), "{bad:?}");
        }
    }

    #[test]
    fn actor_id_is_the_first_eight_md5_bytes() {
        // python3 -c 'import hashlib; print(hashlib.md5(b"n1").hexdigest())'
        //   -> c82561ec215a6e31807ceedf3b3bd25e
        assert_eq!(NodeId::new("n1").unwrap().actor_id(), 0xc82561ec215a6e31);
    }

    #[test]
    fn members_validate_weight_and_zone() {
        let id = NodeId::new("n1").unwrap();
        assert!(Member::new(id.clone()).validate().is_ok());
        assert_eq!(
            Member::new(id.clone()).with_weight(0).validate(),
            Err(Error::ZeroWeight(id.clone()))
        );
        assert!(matches!(
            Member::new(id.clone()).with_zone("").validate(),
            Err(Error::InvalidZone { .. })
        ));
        assert!(Member::new(id).with_zone("eu-1a").validate().is_ok());
    }
}
