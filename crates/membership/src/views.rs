//! What the admin commands show: plain, serializable views of the state with stable field names
//! (scripts read them as JSON), and the command and reply types that travel over RPC.

use dynamo_ring::NodeId;
use serde::{Deserialize, Serialize};

use crate::plan::{Change, Plan, PlanId};
use crate::state::{ClusterState, Phase};

/// One member as `dynamo admin members` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Node id.
    pub id: String,
    /// RPC address.
    pub address: String,
    /// Zone, if any.
    pub zone: Option<String>,
    /// Capacity weight.
    pub weight: u32,
    /// Life-cycle status (`joining`, `valid`, `leaving`, `exiting`, `down`, `removed`).
    pub status: String,
    /// Partitions owned now.
    pub partitions: usize,
    /// Partitions owned once the pending change is installed (equal to `partitions` if none).
    pub partitions_next: usize,
    /// Partitions replicated now (among a key's first N).
    pub replicas: usize,
    /// Whether this member is the claimant.
    pub claimant: bool,
    /// Whether it has seen the latest state.
    pub seen_latest: bool,
}

/// The ring as `dynamo admin ring` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingView {
    /// Current ring epoch.
    pub epoch: u64,
    /// Partitions (Q).
    pub q: u32,
    /// Replication factor ownership is computed for.
    pub n: u8,
    /// Owner of each partition, in partition order.
    pub owners: Vec<String>,
    /// Epoch of the pending ring, if a change is in progress.
    pub next_epoch: Option<u64>,
    /// Owners under the pending ring.
    pub next_owners: Option<Vec<String>>,
    /// Whether every member has seen the latest state.
    pub converged: bool,
    /// Members that have not.
    pub not_seen_by: Vec<String>,
}

/// One transfer as `dynamo admin transfers` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferView {
    /// Partition number.
    pub partition: u32,
    /// Sending node.
    pub from: String,
    /// Receiving node.
    pub to: String,
    /// `waiting`, `streaming` or `synced`.
    pub phase: String,
    /// Keys sent so far.
    pub keys_sent: u64,
    /// Bytes sent so far.
    pub bytes_sent: u64,
}

/// The transfers of the pending change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransfersView {
    /// Partitions still moving.
    pub pending: usize,
    /// Transfers not synced yet.
    pub active: Vec<TransferView>,
    /// Transfers synced.
    pub synced: usize,
    /// The plan being carried out, if any.
    pub plan_id: Option<String>,
}

/// One node's line of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanNodeView {
    /// Node id.
    pub id: String,
    /// Partitions owned now.
    pub owned_before: usize,
    /// Partitions owned after.
    pub owned_after: usize,
    /// Partitions replicated now.
    pub replicated_before: usize,
    /// Partitions replicated after.
    pub replicated_after: usize,
}

/// A plan as `dynamo admin cluster plan` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanView {
    /// The id `commit` must name.
    pub id: String,
    /// Epoch of the ring the plan starts from.
    pub from_epoch: u64,
    /// Epoch of the ring it installs.
    pub next_epoch: u64,
    /// The staged changes.
    pub changes: Vec<Change>,
    /// Partitions with at least one transfer.
    pub partitions_moving: usize,
    /// Partitions whose owner changes.
    pub owners_moved: usize,
    /// Partition copies to make.
    pub transfers: usize,
    /// Per node partition counts.
    pub nodes: Vec<PlanNodeView>,
    /// Fewest partitions owned by one node after the plan.
    pub balance_min: usize,
    /// Most partitions owned by one node after the plan.
    pub balance_max: usize,
    /// Owner of each partition under the ring the plan installs.
    pub next_owners: Vec<String>,
}

impl From<&Plan> for PlanView {
    fn from(plan: &Plan) -> PlanView {
        let (balance_min, balance_max) = plan.balance();
        PlanView {
            id: plan.id.to_string(),
            from_epoch: plan.from_epoch,
            next_epoch: plan.next.epoch(),
            changes: plan.changes.clone(),
            partitions_moving: plan.partitions_moving,
            owners_moved: plan.owners_moved,
            transfers: plan.transfers.len(),
            nodes: plan
                .nodes
                .iter()
                .map(|(id, c)| PlanNodeView {
                    id: id.to_string(),
                    owned_before: c.owned_before,
                    owned_after: c.owned_after,
                    replicated_before: c.replicated_before,
                    replicated_after: c.replicated_after,
                })
                .collect(),
            balance_min,
            balance_max,
            next_owners: plan
                .next
                .partitions()
                .map(|p| plan.next.owner(p).to_string())
                .collect(),
        }
    }
}

impl ClusterState {
    /// Every member ever known, as the admin shows them.
    pub fn member_views(&self) -> Vec<MemberView> {
        let n = usize::from(self.n);
        let now = self.ring().ownership();
        let next = self
            .pending()
            .map(|p| p.next.ownership())
            .unwrap_or_else(|| now.clone());
        let lagging = self.not_seen_by();
        let claimant = self.claimant().cloned();
        self.members
            .iter()
            .map(|(id, m)| MemberView {
                id: id.to_string(),
                address: m.address.clone(),
                zone: m.zone.clone(),
                weight: m.weight,
                status: m.status.as_str().to_string(),
                partitions: now.get(id).copied().unwrap_or(0),
                partitions_next: next.get(id).copied().unwrap_or(0),
                replicas: self.ring().partitions_replicated_by(id, n).len(),
                claimant: claimant.as_ref() == Some(id),
                seen_latest: m.status.gossips() && !lagging.contains(id),
            })
            .collect()
    }

    /// The ring, as the admin shows it.
    pub fn ring_view(&self) -> RingView {
        let owners =
            |r: &dynamo_ring::Ring| r.partitions().map(|p| r.owner(p).to_string()).collect();
        RingView {
            epoch: self.ring().epoch(),
            q: self.ring().q(),
            n: self.n,
            owners: owners(self.ring()),
            next_epoch: self.pending().map(|p| p.next.epoch()),
            next_owners: self.pending().map(|p| owners(&p.next)),
            converged: self.converged(),
            not_seen_by: self.not_seen_by().iter().map(NodeId::to_string).collect(),
        }
    }

    /// The pending change's transfers, as the admin shows them.
    pub fn transfers_view(&self) -> TransfersView {
        let Some(pending) = self.pending() else {
            return TransfersView {
                pending: 0,
                active: Vec::new(),
                synced: 0,
                plan_id: None,
            };
        };
        let view = |t: &dynamo_ring::Transfer, pr: &crate::state::Progress| TransferView {
            partition: t.partition.0,
            from: t.from.to_string(),
            to: t.to.to_string(),
            phase: pr.phase.as_str().to_string(),
            keys_sent: pr.keys,
            bytes_sent: pr.bytes,
        };
        TransfersView {
            pending: pending.partitions_pending(),
            active: pending
                .transfers
                .iter()
                .filter(|(_, p)| p.phase != Phase::Synced)
                .map(|(t, p)| view(t, p))
                .collect(),
            synced: pending
                .transfers
                .values()
                .filter(|p| p.phase == Phase::Synced)
                .count(),
            plan_id: Some(pending.plan_id.to_string()),
        }
    }
}

/// An operator command, sent over RPC to the node that runs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminCommand {
    /// Run on the joining node: adopt the seed's cluster and stage this node's join.
    Join {
        /// RPC address of any member of the cluster to join.
        seed: String,
    },
    /// Stage a leave (of the addressed node when `None`).
    Leave {
        /// The leaving node.
        node: Option<NodeId>,
    },
    /// Stage the removal of an unreachable node.
    Remove {
        /// The node removed.
        node: NodeId,
    },
    /// Stage a replacement.
    Replace {
        /// The node replaced.
        old: NodeId,
        /// The joining node taking its place.
        new: NodeId,
    },
    /// Show the plan of the staged changes (and remember it as shown, for `Commit`).
    Plan,
    /// Commit the plan last shown by this node, or the one named.
    Commit {
        /// The plan to commit; the one last shown here when `None`.
        plan: Option<PlanId>,
    },
    /// Drop the staged changes.
    Clear,
    /// List the members.
    Members,
    /// Show the ring.
    Ring,
    /// Show the transfers.
    Transfers,
    /// Set how many transfers the addressed node sends at once (at least 1).
    TransferLimit {
        /// The new limit.
        limit: usize,
    },
}

/// The answer to an [`AdminCommand`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminReply {
    /// The command was carried out; the text says what happened.
    Done(String),
    /// A plan.
    Plan(PlanView),
    /// The members.
    Members(Vec<MemberView>),
    /// The ring.
    Ring(RingView),
    /// The transfers.
    Transfers(TransfersView),
}
