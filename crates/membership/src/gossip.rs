//! Gossip as pure steps (paper 4.8.1): who to talk to, what to send, what to do with what comes
//! back. The driver only moves the bytes.
//!
//! One exchange between A and B: A sends its [`GossipDigest`] (a hash of its whole state); B
//! answers nothing if its own digest is equal, or its full state; A absorbs that state (merge,
//! claimant step, mark seen) and pushes the result back only if B's state still differs. So two
//! nodes in sync exchange 16 bytes, and a change travels in one round trip plus one push.

use dynamo_ring::NodeId;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::Change;
use crate::state::{ClusterState, Status};

/// Upper bound on claimant-step and mark-seen iterations after one change. Each iteration either
/// moves the pending change forward or marks a new digest seen, and a state settles in a handful;
/// the bound only guards against a bug turning into a busy loop.
const MAX_SETTLE_STEPS: usize = 16;

/// A summary of a node's whole state: equal digests mean equal states.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipDigest {
    /// The sender's cluster name (a digest from another cluster is refused).
    pub cluster: String,
    /// [`ClusterState::full_digest`] of the sender's state.
    pub digest: [u8; 16],
}

/// What absorbing a peer's state did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Absorbed {
    /// This node's state changed.
    pub changed: bool,
    /// The peer's state differs from this node's merged one: push it back.
    pub peer_behind: bool,
}

impl ClusterState {
    /// This state's digest.
    pub fn gossip_digest(&self) -> GossipDigest {
        GossipDigest {
            cluster: self.cluster.clone(),
            digest: self.full_digest(),
        }
    }

    /// The answer to a peer's digest: `None` when in sync, else this node's encoded state.
    pub fn answer_digest(&self, remote: &GossipDigest) -> Result<Option<Vec<u8>>> {
        if remote.cluster != self.cluster {
            return Err(Error::WrongCluster {
                ours: self.cluster.clone(),
                theirs: remote.cluster.clone(),
            });
        }
        Ok((remote.digest != self.full_digest()).then(|| self.encode()))
    }

    /// Merges a peer's state, then lets the claimant act and marks the result seen by `me`. On
    /// error nothing changes.
    pub fn absorb(&mut self, me: &NodeId, remote: &ClusterState) -> Result<Absorbed> {
        let before = self.full_digest();
        let mut next = self.clone();
        next.merge(remote)?;
        next.settle(me);
        let after = next.full_digest();
        *self = next;
        Ok(Absorbed {
            changed: after != before,
            peer_behind: after != remote.full_digest(),
        })
    }

    /// After any change made at `me`: lets the claimant act and marks the state seen, until
    /// neither changes anything. Returns whether anything changed.
    pub fn settle(&mut self, me: &NodeId) -> bool {
        let mut changed = self.revive(me);
        for _ in 0..MAX_SETTLE_STEPS {
            let stepped = self.claimant_step(me);
            let seen = self.mark_seen(me);
            if !stepped && !seen {
                break;
            }
            changed = true;
        }
        changed
    }

    /// A node an operator declared down that runs again marks itself valid, unless its removal
    /// is staged or under way: it is alive, and convergence should wait for it again. (Only
    /// the node itself does this; gossip never changes another member's status.)
    fn revive(&mut self, me: &NodeId) -> bool {
        let down = self.member(me).is_some_and(|m| m.status == Status::Down);
        let in_ring = self.ring().member(me).is_some();
        let removal_staged = self
            .staged()
            .changes()
            .iter()
            .any(|c| matches!(c, Change::Remove { node } if node == me));
        let leaving_next = self.pending().is_some_and(|p| p.next.member(me).is_none());
        if down && in_ring && !removal_staged && !leaving_next {
            self.set_status(me, Status::Valid);
            return true;
        }
        false
    }

    /// Addresses to gossip with this round: one member chosen with `random` among those that
    /// take part in gossip and that `live` believes up (any of them if none is), plus every seed
    /// (so two halves started apart always meet, paper 4.8.2). Never `my_address`.
    pub fn gossip_targets(
        &self,
        me: &NodeId,
        my_address: &str,
        seeds: &[String],
        random: u64,
        live: impl Fn(&NodeId) -> bool,
    ) -> Vec<String> {
        let peers: Vec<(&NodeId, &str)> = self
            .members
            .iter()
            .filter(|(id, m)| *id != me && m.status.gossips())
            .map(|(id, m)| (id, m.address.as_str()))
            .collect();
        let up: Vec<&(&NodeId, &str)> = peers.iter().filter(|(id, _)| live(id)).collect();
        let pool: Vec<&(&NodeId, &str)> = if up.is_empty() {
            peers.iter().collect()
        } else {
            up
        };
        let mut out: Vec<String> = Vec::new();
        if !pool.is_empty() {
            let i = usize::try_from(random % pool.len() as u64).unwrap_or(0);
            out.push(pool[i].1.to_string());
        }
        for seed in seeds {
            if seed != my_address && !out.contains(seed) {
                out.push(seed.clone());
            }
        }
        out
    }
}
