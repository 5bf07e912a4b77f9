//! Operator changes (join, leave, remove, replace), the plan they give, commit, and the
//! claimant's transitions (paper 4.8.1: membership changes are explicit, made by an operator).
//!
//! The operator stages changes on any node; `plan` shows what they would do; `commit` accepts
//! that exact plan (identified by a hash of it) once every member has seen the latest state.
//! Only the claimant (the first valid member in id order) then turns the committed changes into
//! a pending next ring, and only it installs that ring once every transfer is synced and every
//! member has seen that. Everything here is deterministic: the same state gives the same plan
//! on every node, so the plan an operator saw is the one the claimant carries out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use dynamo_ring::{NodeId, PartitionId, Ring, Transfer};
use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::state::{ClusterState, MemberInfo, Pending, Phase, Progress, Status};

/// Identifies a plan: the first 8 bytes of an MD5 over the current ring's epoch, the changes and
/// the resulting ring and transfers. Shown to operators as 16 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PlanId(pub u64);

impl fmt::Display for PlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for PlanId {
    type Err = Error;

    fn from_str(s: &str) -> Result<PlanId> {
        u64::from_str_radix(s, 16)
            .map(PlanId)
            .map_err(|_| Error::Refused(format!("{s:?} is not a plan id (16 hex digits)")))
    }
}

/// One staged operator change.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// A joining member takes its share of partitions.
    Join {
        /// The joining member.
        node: NodeId,
    },
    /// A member hands off everything and exits.
    Leave {
        /// The leaving member.
        node: NodeId,
    },
    /// An unreachable member is removed; its replicas are rebuilt from the others.
    Remove {
        /// The removed member.
        node: NodeId,
    },
    /// A joining member takes over a member's partitions, which then exits.
    Replace {
        /// The member replaced.
        old: NodeId,
        /// The joining member taking its place.
        new: NodeId,
    },
}

impl Change {
    /// The nodes this change is about.
    pub fn nodes(&self) -> Vec<&NodeId> {
        match self {
            Change::Join { node } | Change::Leave { node } | Change::Remove { node } => vec![node],
            Change::Replace { old, new } => vec![old, new],
        }
    }
}

/// Partition counts of one node before and after a plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCounts {
    /// Partitions owned (first in the preference list) now.
    pub owned_before: usize,
    /// Partitions owned after the plan.
    pub owned_after: usize,
    /// Partitions replicated (among the first N) now.
    pub replicated_before: usize,
    /// Partitions replicated after the plan.
    pub replicated_after: usize,
}

/// What committing the staged changes would do. The same state always gives the same plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The plan's identity; `commit` must name it.
    pub id: PlanId,
    /// Epoch of the ring the plan starts from.
    pub from_epoch: u64,
    /// The staged changes, in the order they are applied.
    pub changes: Vec<Change>,
    /// The ring that becomes current when the transfers finish.
    pub next: Ring,
    /// Partition copies to make before the switch.
    pub transfers: Vec<Transfer>,
    /// Partitions whose owner changes.
    pub owners_moved: usize,
    /// Distinct partitions with at least one transfer.
    pub partitions_moving: usize,
    /// Per node counts (every node of either ring).
    pub nodes: BTreeMap<NodeId, NodeCounts>,
}

impl Plan {
    /// Fewest and most partitions owned by one node after the plan.
    pub fn balance(&self) -> (usize, usize) {
        let after = self
            .nodes
            .iter()
            .filter(|(id, _)| self.next.member(id).is_some())
            .map(|(_, c)| c.owned_after);
        (after.clone().min().unwrap_or(0), after.max().unwrap_or(0))
    }
}

/// Transfers from `current` to `next` for replication factor `n`, each sourced from a node that
/// can send: a source in `gone` (removed while unreachable) is replaced by another current
/// primary of the partition that is not gone, when there is one.
fn transfers(current: &Ring, next: &Ring, n: usize, gone: &BTreeSet<NodeId>) -> Vec<Transfer> {
    let mut out: Vec<Transfer> = current
        .replica_transfers(next, n)
        .into_iter()
        .map(|mut t| {
            if gone.contains(&t.from) {
                let before = current.preference_list_for_partition(t.partition, n);
                if let Some(alive) = before.primaries().iter().find(|x| !gone.contains(x)) {
                    t.from = alive.clone();
                }
            }
            t
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Partitions owned and replicated by every node of either ring, before and after.
fn node_counts(current: &Ring, next: &Ring, n: usize) -> BTreeMap<NodeId, NodeCounts> {
    let mut nodes: BTreeMap<NodeId, NodeCounts> = BTreeMap::new();
    for (ring, after) in [(current, false), (next, true)] {
        for (id, owned) in ring.ownership() {
            let replicated = ring.partitions_replicated_by(&id, n).len();
            let c = nodes.entry(id).or_default();
            if after {
                (c.owned_after, c.replicated_after) = (owned, replicated);
            } else {
                (c.owned_before, c.replicated_before) = (owned, replicated);
            }
        }
    }
    nodes
}

/// A plan's identity: the first 8 bytes of an MD5 over everything it does.
fn plan_id(epoch: u64, changes: &[Change], next: &Ring, transfers: &[Transfer]) -> PlanId {
    let mut hash = Md5::new();
    hash.update(crate::codec::canonical_bytes(&(
        epoch, changes, next, transfers,
    )));
    let digest: [u8; 16] = hash.finalize().into();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    PlanId(u64::from_be_bytes(id))
}

impl ClusterState {
    /// Stages `change`, replacing any staged change about the same nodes. Checks only what the
    /// change alone must satisfy; [`ClusterState::plan`] checks the changes together.
    pub fn stage(&mut self, change: Change) -> Result<()> {
        if let (Some(_), Change::Remove { node }) = (&self.ring.pending, &change) {
            // During a change, a member that died (a leaver, a sender) can only be declared
            // down: convergence stops waiting for it and the claimant re-sources its transfers.
            // Its ring place is dealt with by a removal after the change.
            let status = self.members.get(node).map(|m| m.status);
            if !status.is_some_and(Status::gossips) {
                return Err(Error::UnknownMember(node.clone()));
            }
            self.set_status(node, Status::Down);
            return Ok(());
        }
        if self.ring.pending.is_some() {
            return Err(Error::Refused(
                "an ownership change is in progress; wait for it to finish (one at a time)".into(),
            ));
        }
        let status = |id: &NodeId| {
            self.members
                .get(id)
                .map(|m| m.status)
                .ok_or_else(|| Error::UnknownMember(id.clone()))
        };
        let in_ring = |id: &NodeId| self.ring.current.member(id).is_some();
        match &change {
            Change::Join { node } => {
                if status(node)? != Status::Joining {
                    return Err(Error::Refused(format!("{node} is not joining")));
                }
            }
            Change::Leave { node } => {
                if status(node)? != Status::Valid || !in_ring(node) {
                    return Err(Error::Refused(format!("{node} is not a valid member")));
                }
            }
            Change::Remove { node } => {
                if !matches!(status(node)?, Status::Valid | Status::Down) || !in_ring(node) {
                    return Err(Error::Refused(format!(
                        "{node} is not a member of the ring"
                    )));
                }
            }
            Change::Replace { old, new } => {
                if status(old)? != Status::Valid || !in_ring(old) {
                    return Err(Error::Refused(format!("{old} is not a valid member")));
                }
                if status(new)? != Status::Joining {
                    return Err(Error::Refused(format!(
                        "{new} is not joining (join it first)"
                    )));
                }
            }
        }
        // One change per node: drop staged changes about the nodes this one is about.
        let touched: Vec<NodeId> = change.nodes().into_iter().cloned().collect();
        let stale: Vec<NodeId> = self
            .staged
            .entries
            .iter()
            .filter(|(_, e)| {
                e.change
                    .as_ref()
                    .is_some_and(|c| c.nodes().iter().any(|n| touched.contains(n)))
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            self.staged.put(&key, None);
        }
        // A node being removed is unreachable: from now on convergence no longer waits for it
        // (an operator's word, never gossip's: paper 4.8.3).
        if let Change::Remove { node } = &change {
            self.set_status(node, Status::Down);
        }
        let key = change.nodes()[0].clone();
        self.staged.put(&key, Some(change));
        if self.staged.committed().is_some() {
            self.staged.mark(None);
        }
        Ok(())
    }

    /// Drops every staged change (and a commit not yet carried out).
    pub fn clear_staged(&mut self) {
        let keys: Vec<NodeId> = self
            .staged
            .entries
            .iter()
            .filter(|(_, e)| e.change.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.staged.put(&key, None);
        }
        if self.staged.committed().is_some() {
            self.staged.mark(None);
        }
    }

    /// The plan the staged changes give now.
    pub fn plan(&self) -> Result<Plan> {
        if self.ring.pending.is_some() {
            return Err(Error::Refused("an ownership change is in progress".into()));
        }
        let mut changes = self.staged.changes();
        if changes.is_empty() {
            return Err(Error::Refused("no changes are staged".into()));
        }
        let n = usize::from(self.n);
        let current = &self.ring.current;
        // Joins first (so a replacing node exists), then replacements, then departures.
        changes.sort_by_key(|c| match c {
            Change::Join { .. } => 0,
            Change::Replace { .. } => 1,
            Change::Leave { .. } | Change::Remove { .. } => 2,
        });
        let mut next = current.clone();
        // Members an operator declared down cannot send; their partitions come from others.
        let mut gone: BTreeSet<NodeId> = self
            .members
            .iter()
            .filter(|(_, m)| m.status == Status::Down)
            .map(|(id, _)| id.clone())
            .collect();
        for change in &changes {
            next = match change {
                Change::Join { node } => next.with_member_joined(self.ring_member(node)?, n)?,
                Change::Leave { node } => next.with_member_left(node, n)?,
                Change::Remove { node } => {
                    gone.insert(node.clone());
                    next.with_member_left(node, n)?
                }
                Change::Replace { old, new } => next
                    .with_member_joined(self.ring_member(new)?, n)?
                    .with_member_left(old, n)?,
            };
        }
        let transfers = transfers(current, &next, n, &gone);
        let nodes = node_counts(current, &next, n);
        let owners_moved = current
            .partitions()
            .filter(|&p| current.owner(p) != next.owner(p))
            .count();
        let partitions_moving = transfers
            .iter()
            .map(|t| t.partition)
            .collect::<BTreeSet<PartitionId>>()
            .len();
        Ok(Plan {
            id: plan_id(current.epoch(), &changes, &next, &transfers),
            from_epoch: current.epoch(),
            changes,
            next,
            transfers,
            owners_moved,
            partitions_moving,
            nodes,
        })
    }

    fn ring_member(&self, id: &NodeId) -> Result<dynamo_ring::Member> {
        self.members
            .get(id)
            .map(|m| m.ring_member(id))
            .ok_or_else(|| Error::UnknownMember(id.clone()))
    }

    /// Accepts plan `shown` for the claimant to carry out. Refused while an ownership change is in
    /// progress, while some member has not seen the latest state, or if the staged changes now
    /// give another plan.
    pub fn commit(&mut self, shown: PlanId) -> Result<Plan> {
        let plan = self.plan()?;
        let lagging = self.not_seen_by();
        if !lagging.is_empty() {
            let names: Vec<&str> = lagging.iter().map(NodeId::as_str).collect();
            return Err(Error::NotConverged(names.join(", ")));
        }
        if plan.id != shown {
            return Err(Error::PlanChanged {
                shown: shown.to_string(),
                current: plan.id.to_string(),
            });
        }
        self.staged.mark(Some(plan.id));
        Ok(plan)
    }

    /// The claimant's part of the protocol, run by every node after each merge: it does
    /// something only on the claimant. Turns a committed plan into the pending change, installs
    /// the next ring once every transfer is synced and every member has seen that, and removes
    /// exiting members once every member has seen them exit. Returns whether it changed the
    /// state.
    pub fn claimant_step(&mut self, me: &NodeId) -> bool {
        if self.claimant() != Some(me) {
            return false;
        }
        if let Some(committed) = self.staged.committed() {
            match self.plan() {
                Ok(plan) if plan.id == committed && self.ring.pending.is_none() => self.begin(plan),
                // The staged changes moved on since the commit (or a change is already under
                // way): the operator must look again.
                _ => self.staged.mark(None),
            }
            return true;
        }
        if self.resource_transfers() {
            return true;
        }
        if !self.converged() {
            return false;
        }
        if self.ring.pending.as_ref().is_some_and(Pending::all_synced) {
            self.install();
            return true;
        }
        let exiting: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, m)| m.status == Status::Exiting)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &exiting {
            self.set_status(id, Status::Removed);
        }
        !exiting.is_empty()
    }

    fn status_of(&self, id: &NodeId) -> Option<Status> {
        self.members.get(id).map(|m| m.status)
    }

    /// Gives every copy of the pending change whose senders are all down another sender: a
    /// current replica of the partition that is up. Returns whether it added any.
    fn resource_transfers(&mut self) -> bool {
        let n = usize::from(self.n);
        let down = |s: &ClusterState, id: &NodeId| {
            matches!(s.status_of(id), Some(Status::Down | Status::Removed) | None)
        };
        let Some(pending) = &self.ring.pending else {
            return false;
        };
        let mut added = Vec::new();
        for ((partition, to), synced) in pending.pairs() {
            let senders: Vec<&NodeId> = pending
                .transfers
                .keys()
                .filter(|t| t.partition == partition && t.to == to)
                .map(|t| &t.from)
                .collect();
            if synced || senders.iter().any(|f| !down(self, f)) {
                continue;
            }
            let list = self
                .ring
                .current
                .preference_list_for_partition(partition, n);
            if let Some(from) = list
                .primaries()
                .iter()
                .find(|x| **x != to && !down(self, x) && !senders.contains(x))
            {
                added.push(Transfer {
                    partition,
                    from: from.clone(),
                    to,
                });
            }
        }
        let Some(pending) = self.ring.pending.as_mut() else {
            return false;
        };
        for t in &added {
            pending.transfers.insert(t.clone(), Progress::default());
        }
        !added.is_empty()
    }

    /// Makes `plan` the pending change and marks departing members.
    fn begin(&mut self, plan: Plan) {
        for change in &plan.changes {
            match change {
                Change::Join { .. } => {}
                Change::Leave { node } if self.status_of(node) != Some(Status::Down) => {
                    self.set_status(node, Status::Leaving)
                }
                Change::Leave { .. } => {}
                Change::Remove { node } => self.set_status(node, Status::Down),
                Change::Replace { old, .. } => self.set_status(old, Status::Leaving),
            }
        }
        let transfers = plan
            .transfers
            .iter()
            .map(|t| (t.clone(), Progress::default()))
            .collect();
        let plan_changes = plan.changes.clone();
        self.ring.pending = Some(Pending {
            plan_id: plan.id,
            changes: plan.changes,
            next: plan.next,
            transfers,
        });
        // The changes carried out leave the stage; any staged since stay for the next plan.
        for change in &plan_changes {
            let key = change.nodes()[0].clone();
            self.staged.put(&key, None);
        }
        self.staged.mark(None);
    }

    /// Installs the pending ring as current and moves members to their next status.
    fn install(&mut self) {
        let Some(pending) = self.ring.pending.take() else {
            return;
        };
        let next = pending.next;
        let updates: Vec<(NodeId, Status)> = self
            .members
            .iter()
            .filter_map(|(id, m)| {
                let in_next = next.member(id).is_some();
                let status = match (m.status, in_next) {
                    (Status::Joining, true) => Status::Valid,
                    (Status::Leaving, false) => Status::Exiting,
                    (Status::Down, false) => Status::Removed,
                    _ => return None,
                };
                Some((id.clone(), status))
            })
            .collect();
        for (id, status) in updates {
            self.set_status(&id, status);
        }
        let old = std::mem::replace(&mut self.ring.current, next);
        self.ring.previous = Some(old);
    }

    /// Adopts `seed`'s state as this node's own and joins it as `me`: the joining node forgets
    /// its one-node cluster (which must own no other member) and stages its own join.
    pub fn joined_through(&self, seed: &ClusterState, me: &NodeId) -> Result<ClusterState> {
        if self.cluster != seed.cluster {
            return Err(Error::WrongCluster {
                ours: self.cluster.clone(),
                theirs: seed.cluster.clone(),
            });
        }
        if self.members.len() > 1 {
            return Err(Error::Refused(format!(
                "{me} already belongs to a cluster of {} members",
                self.members.len()
            )));
        }
        if let Some(existing) = seed.members.get(me)
            && existing.status != Status::Joining
        {
            return Err(Error::Refused(format!(
                "{me} is already known to the cluster as {}",
                existing.status.as_str()
            )));
        }
        let mine = self
            .members
            .get(me)
            .cloned()
            .ok_or_else(|| Error::UnknownMember(me.clone()))?;
        let mut joined = seed.clone();
        joined.put_member(
            me,
            MemberInfo {
                status: Status::Joining,
                ..mine
            },
        );
        joined.stage(Change::Join { node: me.clone() })?;
        joined.mark_seen(me);
        Ok(joined)
    }

    /// Partitions this node replicated under the previous ring and no longer does under the
    /// current one: data it may drop once every member has seen the current ring.
    pub fn partitions_to_release(&self, me: &NodeId) -> Vec<PartitionId> {
        let Some(previous) = &self.ring.previous else {
            return Vec::new();
        };
        let n = usize::from(self.n);
        let now: BTreeSet<PartitionId> = self
            .ring
            .current
            .partitions_replicated_by(me, n)
            .into_iter()
            .collect();
        let pending_next: BTreeSet<PartitionId> = self
            .ring
            .pending
            .as_ref()
            .map(|p| p.next.partitions_replicated_by(me, n).into_iter().collect())
            .unwrap_or_default();
        previous
            .partitions_replicated_by(me, n)
            .into_iter()
            .filter(|p| !now.contains(p) && !pending_next.contains(p))
            .collect()
    }

    /// Whether `me` may drop what [`ClusterState::partitions_to_release`] names: once every
    /// member has seen the ring in force (converged), or once `me` is removed. The claimant
    /// removes an exiting member only when every member has seen it exit, that is, has seen
    /// the ring without it; a removed node no longer counts towards convergence and may never
    /// see a converged state again (the others change on without it), so waiting for one would
    /// keep its data forever.
    pub fn may_release(&self, me: &NodeId) -> bool {
        self.converged() || self.status_of(me) == Some(Status::Removed)
    }

    /// Every partition `me` replicates neither in the current ring nor in the pending one,
    /// once the ring has changed at least once: what the node may release. Unlike
    /// [`ClusterState::partitions_to_release`] it does not depend on the previous ring, so a node
    /// that missed a release (it was down or cut off while a ring was in force and the next
    /// change was installed before it caught up) still drops what it kept of older rings.
    /// Copies it holds only as a fallback go too; their hints carry the data to the owners.
    pub fn partitions_not_replicated(&self, me: &NodeId) -> Vec<PartitionId> {
        if self.ring.previous.is_none() {
            return Vec::new();
        }
        let n = usize::from(self.n);
        let mut keep: BTreeSet<PartitionId> = self
            .ring
            .current
            .partitions_replicated_by(me, n)
            .into_iter()
            .collect();
        if let Some(p) = &self.ring.pending {
            keep.extend(p.next.partitions_replicated_by(me, n));
        }
        self.ring
            .current
            .partitions()
            .filter(|p| !keep.contains(p))
            .collect()
    }

    /// Transfers of the pending change that `me` must send and that are not synced yet.
    pub fn transfers_to_send(&self, me: &NodeId) -> Vec<(Transfer, Progress)> {
        self.ring
            .pending
            .as_ref()
            .map(|p| {
                let pairs = p.pairs();
                p.transfers
                    .iter()
                    .filter(|(t, pr)| &t.from == me && pr.phase != Phase::Synced)
                    .filter(|(t, _)| pairs.get(&(t.partition, t.to.clone())) == Some(&false))
                    .map(|(t, pr)| (t.clone(), *pr))
                    .collect()
            })
            .unwrap_or_default()
    }
}
