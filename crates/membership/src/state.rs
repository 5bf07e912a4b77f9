//! The cluster state every member gossips, and its merge (a join-semilattice).
//!
//! Every piece of the state is either a register ordered by a version (member records, the
//! staged changes, bucket properties, what each member has seen: the larger wins) or the ring
//! slot, ordered by ring epoch with the pending change's transfer progress growing in place.
//! Because each piece merges by taking a maximum in a total order (or a pointwise maximum),
//! [`ClusterState::merge`] is commutative, associative and idempotent: nodes may exchange
//! states in any order, any number of times, and still agree. The one thing a merge refuses is
//! two different rings (or next rings) at the same epoch, which means two states that never
//! shared a history.

use std::collections::BTreeMap;

use dynamo_ring::{NodeId, PartitionId, Ring, Transfer};
use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::{Change, PlanId};

/// A member's place in the membership life cycle (Riak's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Known to the cluster, owns nothing yet; takes ownership through plan and commit.
    Joining,
    /// A full member.
    Valid,
    /// Committed to leave: hands off everything it replicates, then exits.
    Leaving,
    /// Owns nothing any more; waits until every member has seen that, then is removed.
    Exiting,
    /// Removed by an operator while unreachable; its replicas are rebuilt from the others.
    Down,
    /// Gone for good. The record stays (a tombstone), so gossip never brings the node back.
    Removed,
}

impl Status {
    /// Whether a member in this status takes part in gossip, so that convergence waits for it.
    pub fn gossips(self) -> bool {
        matches!(
            self,
            Status::Joining | Status::Valid | Status::Leaving | Status::Exiting
        )
    }

    /// The lowercase name used in commands and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Joining => "joining",
            Status::Valid => "valid",
            Status::Leaving => "leaving",
            Status::Exiting => "exiting",
            Status::Down => "down",
            Status::Removed => "removed",
        }
    }
}

/// One member's record: a register whose larger `(version, ...)` wins a merge.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Bumped by whoever changes the record; the larger version wins.
    pub version: u64,
    /// Internode RPC address (`host:port`).
    pub address: String,
    /// Failure domain, if zones are used.
    pub zone: Option<String>,
    /// Relative capacity, at least 1.
    pub weight: u32,
    /// Life-cycle status.
    pub status: Status,
}

impl MemberInfo {
    /// The ring's view of this member.
    pub fn ring_member(&self, id: &NodeId) -> dynamo_ring::Member {
        let mut m = dynamo_ring::Member::new(id.clone()).with_weight(self.weight);
        if let Some(zone) = &self.zone {
            m = m.with_zone(zone.clone());
        }
        m
    }
}

/// Progress of one transfer. Monotone: `Waiting < Streaming < Synced`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Not started.
    #[default]
    Waiting,
    /// The sender is streaming the partition.
    Streaming,
    /// The receiver confirmed a final sync: it holds everything the sender held.
    Synced,
}

impl Phase {
    /// The lowercase name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Waiting => "waiting",
            Phase::Streaming => "streaming",
            Phase::Synced => "synced",
        }
    }
}

/// What is known of one transfer; merges by componentwise maximum (every field only grows).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Progress {
    /// How far it got.
    pub phase: Phase,
    /// Keys sent so far.
    pub keys: u64,
    /// Bytes sent so far.
    pub bytes: u64,
}

impl Progress {
    fn join(self, other: Progress) -> Progress {
        Progress {
            phase: self.phase.max(other.phase),
            keys: self.keys.max(other.keys),
            bytes: self.bytes.max(other.bytes),
        }
    }
}

/// A committed ownership change not yet installed: the next ring and its transfers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The plan that was committed.
    pub plan_id: PlanId,
    /// The operator's changes it carries out.
    pub changes: Vec<Change>,
    /// The ring that becomes current once every transfer is synced.
    pub next: Ring,
    /// Every partition copy that must happen first, with its progress.
    pub transfers: BTreeMap<Transfer, Progress>,
}

impl Pending {
    /// Each `(partition, receiver)` pair with whether one of its transfers is synced. A pair may
    /// have several transfers when the claimant re-sourced it from another replica after its
    /// sender was declared down; one synced transfer completes the pair.
    pub fn pairs(&self) -> BTreeMap<(PartitionId, NodeId), bool> {
        let mut pairs: BTreeMap<(PartitionId, NodeId), bool> = BTreeMap::new();
        for (t, p) in &self.transfers {
            *pairs.entry((t.partition, t.to.clone())).or_default() |= p.phase == Phase::Synced;
        }
        pairs
    }

    /// Whether every partition copy the change needs is synced.
    pub fn all_synced(&self) -> bool {
        self.pairs().values().all(|&synced| synced)
    }

    /// Distinct partitions with a copy not synced yet.
    pub fn partitions_pending(&self) -> usize {
        let mut parts: Vec<PartitionId> = self
            .pairs()
            .into_iter()
            .filter(|(_, synced)| !synced)
            .map(|((p, _), _)| p)
            .collect();
        parts.dedup();
        parts.len()
    }
}

/// One node's staged change: a register whose larger `(version, change)` wins; `None` is a
/// change that was cleared or carried out.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StagedEntry {
    /// Bumped by every stage or clear of this node's change.
    pub version: u64,
    /// The change, if one is staged.
    pub change: Option<Change>,
}

/// The operator's commit: a register whose larger `(version, plan)` wins.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct CommitMark {
    /// Bumped by every commit and every time the claimant takes or drops one.
    pub version: u64,
    /// The plan the operator accepted, for the claimant to carry out.
    pub plan: Option<PlanId>,
}

/// The operator's staged changes: one register per node the change is about (a replacement is
/// filed under the node replaced), so changes staged on different nodes at the same time all
/// survive the merge, plus the commit mark.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Staged {
    /// Each node's staged change.
    pub entries: BTreeMap<NodeId, StagedEntry>,
    /// The commit waiting for the claimant.
    pub commit: CommitMark,
}

impl Staged {
    /// The staged changes, in node id order.
    pub fn changes(&self) -> Vec<Change> {
        self.entries
            .values()
            .filter_map(|e| e.change.clone())
            .collect()
    }

    /// The plan committed and not yet carried out, if any.
    pub fn committed(&self) -> Option<PlanId> {
        self.commit.plan
    }

    /// Sets `node`'s entry to `change` with a version above the current one.
    pub(crate) fn put(&mut self, node: &NodeId, change: Option<Change>) {
        let entry = self.entries.entry(node.clone()).or_default();
        entry.version += 1;
        entry.change = change;
    }

    /// Sets the commit mark, with a version above the current one.
    pub(crate) fn mark(&mut self, plan: Option<PlanId>) {
        self.commit.version += 1;
        self.commit.plan = plan;
    }

    fn join(&mut self, other: &Staged) {
        join_maps(&mut self.entries, &other.entries);
        self.commit = self.commit.max(other.commit);
    }
}

/// A cluster-wide bucket property set: opaque bytes, last writer wins by `(version, node)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BucketEntry {
    /// Bumped by every set of this bucket.
    pub version: u64,
    /// The member that set it (breaks ties between concurrent sets).
    pub node: NodeId,
    /// The encoded properties (the coordinator's format; membership does not read them).
    pub props: Vec<u8>,
}

/// Which state a member has seen: its own counter (only it writes its entry) and the digest of
/// the content it saw.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Seen {
    /// Bumped each time the member's view changes.
    pub counter: u64,
    /// [`ClusterState::content_digest`] of what it saw.
    pub digest: [u8; 16],
}

/// The ring slot: the current ring, the ring before it (so old owners know what to drop) and
/// the pending change. Ordered by the current ring's epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingSlot {
    /// The ring requests are routed with.
    pub current: Ring,
    /// The ring `current` replaced, if any.
    pub previous: Option<Ring>,
    /// The committed change in progress, if any.
    pub pending: Option<Pending>,
}

/// Everything members agree on by gossip: the persisted membership history of paper 4.8.1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The cluster's name; states of different clusters never merge.
    pub(crate) cluster: String,
    /// Identity of this cluster's history: a hash of the name and the first ring. Two clusters
    /// bootstrapped apart (even with one name) never merge; a joining node adopts it.
    pub(crate) genesis: u64,
    /// Replication factor the claim spreads for and transfers are computed with.
    pub(crate) n: u8,
    /// Every member ever known, by id (removed ones stay as tombstones).
    pub(crate) members: BTreeMap<NodeId, MemberInfo>,
    /// Current ring, previous ring and pending change.
    pub(crate) ring: RingSlot,
    /// The operator's staged changes.
    pub(crate) staged: Staged,
    /// Cluster-wide bucket properties by bucket name.
    pub(crate) buckets: BTreeMap<Vec<u8>, BucketEntry>,
    /// What each member has seen.
    pub(crate) seen: BTreeMap<NodeId, Seen>,
}

/// Pointwise maximum of two maps of registers.
fn join_maps<K: Ord + Clone, V: Ord + Clone>(a: &mut BTreeMap<K, V>, b: &BTreeMap<K, V>) {
    for (k, v) in b {
        match a.get_mut(k) {
            Some(mine) if *mine >= *v => {}
            Some(mine) => *mine = v.clone(),
            None => {
                a.insert(k.clone(), v.clone());
            }
        }
    }
}

impl ClusterState {
    /// A new cluster of the given members (all valid), with a fresh ring of `q` partitions
    /// claimed for replication factor `n`. Members are `(id, address, zone, weight)`.
    pub fn bootstrap(
        cluster: impl Into<String>,
        q: u32,
        n: u8,
        members: Vec<(NodeId, MemberInfo)>,
    ) -> Result<ClusterState> {
        let cluster = cluster.into();
        if cluster.is_empty() {
            return Err(Error::Refused("the cluster name is empty".into()));
        }
        if n == 0 {
            return Err(Error::Refused(
                "the replication factor must be at least 1".into(),
            ));
        }
        let members: BTreeMap<NodeId, MemberInfo> = members
            .into_iter()
            .map(|(id, mut info)| {
                info.status = Status::Valid;
                (id, info)
            })
            .collect();
        let ring_members = members.iter().map(|(id, m)| m.ring_member(id)).collect();
        let ring = Ring::new(q, ring_members, usize::from(n))?;
        let mut hash = Md5::new();
        hash.update(crate::codec::canonical_bytes(&(&cluster, n, &ring)));
        let digest: [u8; 16] = hash.finalize().into();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Ok(ClusterState {
            genesis: u64::from_be_bytes(first),
            cluster,
            n,
            members,
            ring: RingSlot {
                current: ring,
                previous: None,
                pending: None,
            },
            staged: Staged::default(),
            buckets: BTreeMap::new(),
            seen: BTreeMap::new(),
        })
    }

    /// A one-node cluster of `me`, for a node started with no member list: its ring has epoch
    /// 0, so the ring of any cluster it later joins supersedes it everywhere (the coordinator
    /// only installs newer epochs).
    pub fn bootstrap_alone(
        cluster: impl Into<String>,
        q: u32,
        n: u8,
        me: NodeId,
        info: MemberInfo,
    ) -> Result<ClusterState> {
        let mut state = ClusterState::bootstrap(cluster, q, n, vec![(me.clone(), info.clone())])?;
        state.ring.current = Ring::provisional(q, vec![info.ring_member(&me)], usize::from(n))?;
        Ok(state)
    }

    /// The cluster's name.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Identity of the cluster's history (see [`ClusterState::merge`]).
    pub fn genesis(&self) -> u64 {
        self.genesis
    }

    /// The replication factor ownership changes are computed for.
    pub fn n(&self) -> u8 {
        self.n
    }

    /// Every member ever known, removed ones included.
    pub fn members(&self) -> &BTreeMap<NodeId, MemberInfo> {
        &self.members
    }

    /// The member named `id`.
    pub fn member(&self, id: &NodeId) -> Option<&MemberInfo> {
        self.members.get(id)
    }

    /// The ring requests are routed with.
    pub fn ring(&self) -> &Ring {
        &self.ring.current
    }

    /// The ring the current one replaced, if any.
    pub fn previous_ring(&self) -> Option<&Ring> {
        self.ring.previous.as_ref()
    }

    /// The committed ownership change in progress, if any.
    pub fn pending(&self) -> Option<&Pending> {
        self.ring.pending.as_ref()
    }

    /// The operator's staged changes.
    pub fn staged(&self) -> &Staged {
        &self.staged
    }

    /// Cluster-wide bucket properties.
    pub fn buckets(&self) -> &BTreeMap<Vec<u8>, BucketEntry> {
        &self.buckets
    }

    /// What each member has seen.
    pub fn seen(&self) -> &BTreeMap<NodeId, Seen> {
        &self.seen
    }

    /// RPC address of every member that gossips or owns partitions (not removed ones).
    pub fn addresses(&self) -> BTreeMap<NodeId, String> {
        self.members
            .iter()
            .filter(|(_, m)| m.status != Status::Removed)
            .map(|(id, m)| (id.clone(), m.address.clone()))
            .collect()
    }

    /// The claimant: the first valid member in id order. Only it turns committed changes into a
    /// next ring and installs it. When a change makes every valid member leave (all of them
    /// replaced by joiners), the first leaving member, then the first joining one, stands in,
    /// so that the change can still be installed.
    pub fn claimant(&self) -> Option<&NodeId> {
        [Status::Valid, Status::Leaving, Status::Joining]
            .into_iter()
            .find_map(|status| {
                self.members
                    .iter()
                    .find(|(_, m)| m.status == status)
                    .map(|(id, _)| id)
            })
    }

    /// Joins `other` into `self`. Commutative, associative and idempotent for states that share
    /// a history. Refuses (changing nothing) states of another cluster, of another history (a
    /// cluster bootstrapped apart under the same name), of another replication factor, and two
    /// different rings, or next rings, at the same epoch.
    pub fn merge(&mut self, other: &ClusterState) -> Result<()> {
        if self.cluster != other.cluster {
            return Err(Error::WrongCluster {
                ours: self.cluster.clone(),
                theirs: other.cluster.clone(),
            });
        }
        if self.genesis != other.genesis {
            return Err(Error::DifferentHistory {
                cluster: self.cluster.clone(),
            });
        }
        if self.n != other.n {
            return Err(Error::ReplicationMismatch {
                ours: self.n,
                theirs: other.n,
            });
        }
        let ring = join_ring_slots(&self.cluster, &self.ring, &other.ring)?;
        self.ring = ring;
        join_maps(&mut self.members, &other.members);
        self.staged.join(&other.staged);
        join_maps(&mut self.buckets, &other.buckets);
        join_maps(&mut self.seen, &other.seen);
        Ok(())
    }

    /// Digest of everything but the seen vector: what "having seen the latest state" means.
    pub fn content_digest(&self) -> [u8; 16] {
        let mut h = Md5::new();
        let content = (
            &self.cluster,
            self.genesis,
            self.n,
            &self.members,
            &self.ring,
            &self.staged,
            &self.buckets,
        );
        h.update(crate::codec::canonical_bytes(&content));
        h.finalize().into()
    }

    /// Digest of the whole state, seen vector included: equal digests mean nothing to exchange.
    pub fn full_digest(&self) -> [u8; 16] {
        let mut h = Md5::new();
        h.update(crate::codec::canonical_bytes(self));
        h.finalize().into()
    }

    /// Records that `me` has seen the state as it is now. Returns whether that changed anything.
    pub fn mark_seen(&mut self, me: &NodeId) -> bool {
        let digest = self.content_digest();
        let entry = self.seen.entry(me.clone()).or_default();
        if entry.digest == digest && entry.counter > 0 {
            return false;
        }
        entry.counter += 1;
        entry.digest = digest;
        true
    }

    /// Members that take part in gossip but have not seen the current content.
    pub fn not_seen_by(&self) -> Vec<NodeId> {
        let digest = self.content_digest();
        self.members
            .iter()
            .filter(|(_, m)| m.status.gossips())
            .filter(|(id, _)| self.seen.get(*id).is_none_or(|s| s.digest != digest))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Whether every member that gossips has seen the current content (Riak's "ring ready").
    pub fn converged(&self) -> bool {
        self.not_seen_by().is_empty()
    }

    /// Sets `id`'s record to `info` with a version above the current one.
    pub(crate) fn put_member(&mut self, id: &NodeId, mut info: MemberInfo) {
        let version = self.members.get(id).map_or(0, |m| m.version);
        info.version = version + 1;
        self.members.insert(id.clone(), info);
    }

    /// Changes `id`'s status (no-op for an unknown member).
    pub(crate) fn set_status(&mut self, id: &NodeId, status: Status) {
        if let Some(m) = self.members.get(id).cloned()
            && m.status != status
        {
            self.put_member(id, MemberInfo { status, ..m });
        }
    }

    /// Updates this node's own address (a restart on another port); returns whether it changed.
    pub fn set_own_address(&mut self, me: &NodeId, address: &str) -> bool {
        match self.members.get(me).cloned() {
            Some(m) if m.address != address => {
                self.put_member(
                    me,
                    MemberInfo {
                        address: address.to_string(),
                        ..m
                    },
                );
                true
            }
            _ => false,
        }
    }

    /// Sets a bucket's cluster-wide properties, winning over every set this node has seen.
    pub fn set_bucket_props(&mut self, me: &NodeId, bucket: &[u8], props: Vec<u8>) {
        let version = self.buckets.get(bucket).map_or(0, |b| b.version) + 1;
        self.buckets.insert(
            bucket.to_vec(),
            BucketEntry {
                version,
                node: me.clone(),
                props,
            },
        );
    }

    /// Records progress of a transfer of the pending change (ignored for a transfer that is not
    /// pending). Returns whether anything grew.
    pub fn record_progress(&mut self, transfer: &Transfer, progress: Progress) -> bool {
        let Some(pending) = self.ring.pending.as_mut() else {
            return false;
        };
        match pending.transfers.get_mut(transfer) {
            Some(p) => {
                let joined = p.join(progress);
                let grew = joined != *p;
                *p = joined;
                grew
            }
            None => false,
        }
    }
}

/// Join of two ring slots: the newer current ring wins; at equal epochs the rings must be equal,
/// pending changes join (none < some; equal next rings join their transfer progress) and so do
/// previous rings (by epoch).
fn join_ring_slots(cluster: &str, a: &RingSlot, b: &RingSlot) -> Result<RingSlot> {
    let (ea, eb) = (a.current.epoch(), b.current.epoch());
    if ea != eb {
        return Ok(if ea > eb { a.clone() } else { b.clone() });
    }
    if a.current != b.current {
        return Err(Error::DivergentRings {
            cluster: cluster.to_string(),
            epoch: ea,
        });
    }
    let pending = match (&a.pending, &b.pending) {
        (None, None) => None,
        (Some(p), None) | (None, Some(p)) => Some(p.clone()),
        (Some(p), Some(q)) => {
            if p.next != q.next || p.plan_id != q.plan_id || p.changes != q.changes {
                return Err(Error::DivergentPending {
                    cluster: cluster.to_string(),
                    epoch: ea,
                });
            }
            let mut joined = p.clone();
            for (t, progress) in &q.transfers {
                joined
                    .transfers
                    .entry(t.clone())
                    .and_modify(|mine| *mine = mine.join(*progress))
                    .or_insert(*progress);
            }
            Some(joined)
        }
    };
    let previous = match (&a.previous, &b.previous) {
        (Some(x), Some(y)) => {
            let key = |r: &Ring| (r.epoch(), crate::codec::canonical_bytes(r));
            Some(if key(y) > key(x) {
                y.clone()
            } else {
                x.clone()
            })
        }
        (x, None) => x.clone(),
        (None, y) => y.clone(),
    };
    Ok(RingSlot {
        current: a.current.clone(),
        previous,
        pending,
    })
}
