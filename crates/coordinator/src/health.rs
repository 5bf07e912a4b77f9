//! Local failure detection (paper 4.8.3): a node that fails to answer (refused, reset, timed out)
//! is marked down in this node's view alone and skipped by later requests; a background probe
//! marks it up again once it answers. There is no global view and no agreement protocol: two
//! nodes may disagree about a third, and that is fine, because every request tolerates a replica
//! that turns out to be down.

use std::collections::BTreeSet;

use dynamo_ring::NodeId;
use parking_lot::RwLock;

use crate::error::Error;

/// This node's opinion of which peers are down.
#[derive(Debug, Default)]
pub struct Health {
    down: RwLock<BTreeSet<NodeId>>,
}

impl Health {
    /// Whether `node` is believed reachable (every node is, until a request to it fails).
    pub fn is_up(&self, node: &NodeId) -> bool {
        !self.down.read().contains(node)
    }

    /// Marks `node` down; returns whether it was up before.
    pub fn mark_down(&self, node: &NodeId) -> bool {
        self.down.write().insert(node.clone())
    }

    /// Marks `node` up; returns whether it was down before.
    pub fn mark_up(&self, node: &NodeId) -> bool {
        if !self.down.read().contains(node) {
            return false;
        }
        self.down.write().remove(node)
    }

    /// The peers currently believed down.
    pub fn down(&self) -> Vec<NodeId> {
        self.down.read().iter().cloned().collect()
    }

    /// Whether an error from a call to a peer means the peer should be considered down: it could
    /// not be reached or did not answer in time. A peer that answered with an error is up.
    pub fn is_failure(error: &Error) -> bool {
        matches!(error, Error::Unreachable(_) | Error::Timeout(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_local_and_reversible() {
        let h = Health::default();
        let n = NodeId::new("n2").unwrap();
        assert!(h.is_up(&n));
        assert!(h.mark_down(&n));
        assert!(!h.mark_down(&n), "already down");
        assert!(!h.is_up(&n));
        assert_eq!(h.down(), vec![n.clone()]);
        assert!(h.mark_up(&n));
        assert!(h.is_up(&n));
        assert!(!h.mark_up(&n));
    }

    #[test]
    fn only_silence_counts_as_failure() {
        assert!(Health::is_failure(&Error::Timeout(5)));
        assert!(Health::is_failure(&Error::Unreachable("x".into())));
        assert!(!Health::is_failure(&Error::InvalidRequest("x".into())));
        assert!(!Health::is_failure(&Error::Storage("disk".into())));
    }
}
