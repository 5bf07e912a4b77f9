//! The [`Ring`]: partition ownership table with an epoch, and the changes made to it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::claim::{self, Layout};
use crate::{Error, Member, NodeId, PartitionId, Result, key_hash, partition_of};

/// Q a new cluster uses unless configured otherwise: enough partitions to balance a cluster of up to about 16
/// nodes within a few percent (64 / 16 = 4 per node), few enough that per-partition work (Merkle trees, handoff
/// bookkeeping) stays small.
pub const DEFAULT_PARTITIONS: u32 = 64;

/// Smallest accepted Q: below 8 a 3-node cluster cannot even be balanced within one partition of its share.
pub const MIN_PARTITIONS: u32 = 8;

/// Largest accepted Q: 1024 partitions balance a cluster of a few hundred nodes while the owner table stays a
/// few KiB to gossip, and the claim (quadratic in Q) stays in the milliseconds.
pub const MAX_PARTITIONS: u32 = 1024;

/// Version of the serialized ring layout; decoding rejects any other value. Bump it when the wire form changes.
pub const RING_FORMAT_VERSION: u32 = 1;

/// Partition -> owner table with an epoch (bumped on every change).
///
/// The hash space is cut into Q equal partitions (paper 6.2, strategy 3); each partition has one owner, the
/// first node of its preference list. Members are kept sorted by id. A `Ring` is immutable: changes return a
/// new ring with `epoch + 1`, so a ring can be shared and compared freely. Decoding validates everything, so a
/// ring received from a peer upholds the same invariants as one built locally.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RingWire", into = "RingWire")]
pub struct Ring {
    /// Number of partitions, a power of two in `MIN_PARTITIONS..=MAX_PARTITIONS`.
    q: u32,
    /// Bumped by every change.
    epoch: u64,
    /// Members sorted by id, no duplicates, each valid.
    members: Vec<Member>,
    /// Owner of each partition, as an index into `members`.
    owners: Vec<usize>,
    /// Failure-domain class per member (see [`claim::zone_classes`]).
    pub(crate) zone_class: Vec<usize>,
    /// Whether any member has a zone (otherwise preference lists need no zone pass).
    pub(crate) zoned: bool,
}

/// The serialized form of a [`Ring`]: owners by name, with a format version.
#[derive(Serialize, Deserialize)]
struct RingWire {
    format: u32,
    q: u32,
    epoch: u64,
    members: Vec<Member>,
    owners: Vec<NodeId>,
}

impl From<Ring> for RingWire {
    fn from(ring: Ring) -> RingWire {
        let owners = ring
            .owners
            .iter()
            .map(|&i| ring.members[i].id.clone())
            .collect();
        RingWire {
            format: RING_FORMAT_VERSION,
            q: ring.q,
            epoch: ring.epoch,
            members: ring.members,
            owners,
        }
    }
}

impl TryFrom<RingWire> for Ring {
    type Error = Error;

    fn try_from(wire: RingWire) -> Result<Ring> {
        if wire.format != RING_FORMAT_VERSION {
            return Err(Error::InvalidRing(format!(
                "format version {} (this build reads {RING_FORMAT_VERSION})",
                wire.format
            )));
        }
        check_q(wire.q)?;
        let members = checked_members(wire.members)?;
        if wire.owners.len() != wire.q as usize {
            return Err(Error::InvalidRing(format!(
                "{} owners for {} partitions",
                wire.owners.len(),
                wire.q
            )));
        }
        let owners = wire
            .owners
            .iter()
            .map(|id| {
                members
                    .binary_search_by(|m| m.id.cmp(id))
                    .map_err(|_| Error::InvalidRing(format!("owner {id} is not a member")))
            })
            .collect::<Result<Vec<usize>>>()?;
        Ok(Ring::assemble(wire.q, wire.epoch, members, owners))
    }
}

/// Checks that `q` is a power of two in `MIN_PARTITIONS..=MAX_PARTITIONS`.
fn check_q(q: u32) -> Result<()> {
    if q.is_power_of_two() && (MIN_PARTITIONS..=MAX_PARTITIONS).contains(&q) {
        Ok(())
    } else {
        Err(Error::InvalidPartitionCount(q))
    }
}

/// Validates members and returns them sorted by id: at least one, each valid, no duplicate ids.
fn checked_members(mut members: Vec<Member>) -> Result<Vec<Member>> {
    if members.is_empty() {
        return Err(Error::NoMembers);
    }
    for m in &members {
        m.validate()?;
    }
    members.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(pair) = members.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(Error::DuplicateMember(pair[0].id.clone()));
    }
    Ok(members)
}

impl Ring {
    /// Fresh ring: claim for the given members (strategy 3), spreading replicas for `n_hint` (the N of the
    /// buckets that matter most). Epoch 1. Errors on an invalid Q, no members, duplicate ids, zero weights or
    /// invalid zones. Deterministic: the same members (in any order) give the same ring.
    pub fn new(q: u32, members: Vec<Member>, n_hint: usize) -> Result<Ring> {
        check_q(q)?;
        let members = checked_members(members)?;
        let layout = Layout::new(&members, q as usize, n_hint);
        let everyone = vec![true; members.len()];
        let targets = claim::targets(&members, q, &vec![0; members.len()], &everyone);
        let owners = claim::initial_claim(&layout, &targets);
        Ok(Ring::assemble(q, 1, members, owners))
    }

    /// A fresh ring like [`Ring::new`] but at epoch 0: the ring of a node that starts alone and
    /// may later join an existing cluster, whose rings (epoch 1 and later) then supersede it.
    pub fn provisional(q: u32, members: Vec<Member>, n_hint: usize) -> Result<Ring> {
        let mut ring = Ring::new(q, members, n_hint)?;
        ring.epoch = 0;
        Ok(ring)
    }

    /// Builds a ring from parts already known to be consistent, deriving the zone classes.
    fn assemble(q: u32, epoch: u64, members: Vec<Member>, owners: Vec<usize>) -> Ring {
        let zone_class = claim::zone_classes(&members);
        let zoned = members.iter().any(|m| m.zone.is_some());
        Ring {
            q,
            epoch,
            members,
            owners,
            zone_class,
            zoned,
        }
    }

    /// Number of partitions Q.
    pub fn q(&self) -> u32 {
        self.q
    }

    /// The ring's epoch: 1 for a fresh ring, bumped by every change. Higher is newer.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Members, sorted by id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member named `id`, if it belongs to the ring.
    pub fn member(&self, id: &NodeId) -> Option<&Member> {
        self.member_index(id).map(|i| &self.members[i])
    }

    /// Index of `id` in the sorted member list.
    pub(crate) fn member_index(&self, id: &NodeId) -> Option<usize> {
        self.members.binary_search_by(|m| m.id.cmp(id)).ok()
    }

    /// Owner of partition `p` (the first node of its preference list). A `p` at or above Q is taken modulo Q;
    /// use [`Ring::check_partition`] to reject such input instead.
    pub fn owner(&self, p: PartitionId) -> &NodeId {
        &self.members[self.owner_index(p.0 as usize)].id
    }

    /// Member index owning partition `p mod Q`.
    pub(crate) fn owner_index(&self, p: usize) -> usize {
        self.owners[p % self.owners.len()]
    }

    /// `p` itself if it is below Q, else [`Error::PartitionOutOfRange`]. For partition numbers from peers.
    pub fn check_partition(&self, p: PartitionId) -> Result<PartitionId> {
        if p.0 < self.q {
            Ok(p)
        } else {
            Err(Error::PartitionOutOfRange {
                partition: p.0,
                q: self.q,
            })
        }
    }

    /// The partition a ring position falls in.
    pub fn partition_for_hash(&self, hash: u128) -> PartitionId {
        partition_of(hash, self.q)
    }

    /// The partition a key falls in: `partition_of(key_hash(bucket, key), Q)`.
    pub fn partition_for_key(&self, bucket: &[u8], key: &[u8]) -> PartitionId {
        partition_of(key_hash(bucket, key), self.q)
    }

    /// Every partition, in ring order.
    pub fn partitions(&self) -> impl Iterator<Item = PartitionId> + '_ {
        (0..self.q).map(PartitionId)
    }

    /// Partitions owned by each member (members owning none included, with 0).
    pub fn ownership(&self) -> BTreeMap<NodeId, usize> {
        let counts = claim::counts(&self.owners, self.members.len());
        self.members
            .iter()
            .zip(counts)
            .map(|(m, c)| (m.id.clone(), c as usize))
            .collect()
    }

    /// A new ring with `m` added, epoch + 1. The joiner takes its weighted share only from members above their
    /// new share (so about Q/(S+1) partitions move for equal weights, all of them *to* the joiner), choosing
    /// partitions that keep it out of windows of `n_hint` consecutive partitions it already owns.
    pub fn with_member_joined(&self, m: Member, n_hint: usize) -> Result<Ring> {
        m.validate()?;
        let j = match self.members.binary_search_by(|x| x.id.cmp(&m.id)) {
            Ok(_) => return Err(Error::DuplicateMember(m.id)),
            Err(slot) => slot,
        };
        let mut members = self.members.clone();
        members.insert(j, m);
        // Old indices at or after the joiner's slot shift up by one.
        let mut owners: Vec<usize> = self
            .owners
            .iter()
            .map(|&o| if o >= j { o + 1 } else { o })
            .collect();
        let donors: Vec<bool> = (0..members.len()).map(|i| i != j).collect();
        let receivers: Vec<bool> = (0..members.len()).map(|i| i == j).collect();
        let current = claim::counts(&owners, members.len());
        let targets = claim::targets(&members, self.q, &current, &receivers);
        let layout = Layout::new(&members, self.q as usize, n_hint);
        claim::rebalance(&layout, &mut owners, &targets, &donors, &receivers);
        Ok(Ring::assemble(self.q, self.next_epoch()?, members, owners))
    }

    /// A new ring without `id`, epoch + 1. Only the leaver's partitions move, each to a member below its new
    /// weighted share, choosing receivers that do not already own a nearby partition. Errors if `id` is not a
    /// member or is the last one.
    pub fn with_member_left(&self, id: &NodeId, n_hint: usize) -> Result<Ring> {
        let leaver = self
            .member_index(id)
            .ok_or_else(|| Error::UnknownMember(id.clone()))?;
        if self.members.len() == 1 {
            return Err(Error::LastMember(id.clone()));
        }
        let mut owners = self.owners.clone();
        let current = claim::counts(&owners, self.members.len());
        let mut remaining = self.members.clone();
        remaining.remove(leaver);
        let mut remaining_current = current.clone();
        remaining_current.remove(leaver);
        let mut targets = claim::targets(
            &remaining,
            self.q,
            &remaining_current,
            &vec![true; remaining.len()],
        );
        targets.insert(leaver, 0);
        let donors: Vec<bool> = (0..self.members.len()).map(|i| i == leaver).collect();
        let receivers: Vec<bool> = donors.iter().map(|d| !d).collect();
        let layout = Layout::new(&self.members, self.q as usize, n_hint);
        claim::rebalance(&layout, &mut owners, &targets, &donors, &receivers);
        // Targets of the others sum to Q, so their deficits cover every partition the leaver held.
        let owners = owners
            .into_iter()
            .map(|o| if o > leaver { o - 1 } else { o })
            .collect();
        Ok(Ring::assemble(
            self.q,
            self.next_epoch()?,
            remaining,
            owners,
        ))
    }

    /// A new ring where member `id` has capacity `weight`, epoch + 1. Partitions move only from members above
    /// their new share to members below it. Errors on an unknown member or a zero weight.
    pub fn with_member_weight(&self, id: &NodeId, weight: u32, n_hint: usize) -> Result<Ring> {
        let i = self
            .member_index(id)
            .ok_or_else(|| Error::UnknownMember(id.clone()))?;
        let mut members = self.members.clone();
        members[i].weight = weight;
        members[i].validate()?;
        let mut owners = self.owners.clone();
        let everyone = vec![true; members.len()];
        let current = claim::counts(&owners, members.len());
        let targets = claim::targets(&members, self.q, &current, &everyone);
        let layout = Layout::new(&members, self.q as usize, n_hint);
        claim::rebalance(&layout, &mut owners, &targets, &everyone, &everyone);
        Ok(Ring::assemble(self.q, self.next_epoch()?, members, owners))
    }

    /// The epoch of the next change; an error rather than a wrap-around if a (decoded) ring is at `u64::MAX`.
    fn next_epoch(&self) -> Result<u64> {
        self.epoch.checked_add(1).ok_or_else(|| {
            Error::InvalidRing("epoch is at its maximum and cannot be bumped".into())
        })
    }

    /// Owner of every partition as member indices, in partition order.
    pub(crate) fn owner_indices(&self) -> &[usize] {
        &self.owners
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<Member> {
        (1..=n)
            .map(|i| Member::new(NodeId::new(format!("n{i}")).unwrap()))
            .collect()
    }

    #[test]
    fn new_validates_its_input() {
        assert_eq!(
            Ring::new(100, ids(3), 3),
            Err(Error::InvalidPartitionCount(100))
        );
        assert_eq!(
            Ring::new(4, ids(3), 3),
            Err(Error::InvalidPartitionCount(4))
        );
        assert_eq!(
            Ring::new(2048, ids(3), 3),
            Err(Error::InvalidPartitionCount(2048))
        );
        assert_eq!(Ring::new(64, vec![], 3), Err(Error::NoMembers));
        let mut dup = ids(3);
        dup.push(dup[0].clone());
        assert_eq!(
            Ring::new(64, dup, 3),
            Err(Error::DuplicateMember(NodeId::new("n1").unwrap()))
        );
        let mut zero = ids(3);
        zero[1].weight = 0;
        assert_eq!(
            Ring::new(64, zero, 3),
            Err(Error::ZeroWeight(NodeId::new("n2").unwrap()))
        );
    }

    #[test]
    fn new_is_deterministic_and_independent_of_member_order() {
        let a = Ring::new(64, ids(5), 3).unwrap();
        let mut reversed = ids(5);
        reversed.reverse();
        let b = Ring::new(64, reversed, 3).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.epoch(), 1);
        assert_eq!(a.q(), 64);
        assert_eq!(a.members().len(), 5);
    }

    #[test]
    fn ownership_is_balanced_for_equal_weights() {
        let ring = Ring::new(64, ids(3), 3).unwrap();
        let counts: Vec<usize> = ring.ownership().into_values().collect();
        assert_eq!(counts, vec![22, 21, 21]);
    }

    #[test]
    fn changes_bump_the_epoch_and_validate() {
        let ring = Ring::new(64, ids(3), 3).unwrap();
        let n4 = Member::new(NodeId::new("n4").unwrap());
        let joined = ring.with_member_joined(n4.clone(), 3).unwrap();
        assert_eq!(joined.epoch(), 2);
        assert_eq!(
            joined.ownership().values().copied().collect::<Vec<_>>(),
            vec![16; 4]
        );
        assert_eq!(
            joined.with_member_joined(n4.clone(), 3),
            Err(Error::DuplicateMember(n4.id.clone()))
        );
        let left = joined.with_member_left(&n4.id, 3).unwrap();
        assert_eq!(left.epoch(), 3);
        assert_eq!(
            left.with_member_left(&n4.id, 3),
            Err(Error::UnknownMember(n4.id.clone()))
        );
        let solo = Ring::new(8, ids(1), 3).unwrap();
        let n1 = NodeId::new("n1").unwrap();
        assert_eq!(
            solo.with_member_left(&n1, 3),
            Err(Error::LastMember(n1.clone()))
        );
        assert_eq!(
            ring.with_member_weight(&n1, 0, 3),
            Err(Error::ZeroWeight(n1.clone()))
        );
        let heavier = ring.with_member_weight(&n1, 2, 3).unwrap();
        assert_eq!(heavier.ownership()[&n1], 32);
    }

    #[test]
    fn the_wire_form_names_owners_and_carries_a_version() {
        let ring = Ring::new(8, ids(2), 3).unwrap();
        let json = serde_json::to_value(&ring).unwrap();
        assert_eq!(json["format"], RING_FORMAT_VERSION);
        assert_eq!(json["owners"].as_array().map(Vec::len), Some(8));
        assert_eq!(json["owners"][0], "n1");
        let back: Ring = serde_json::from_value(json).unwrap();
        assert_eq!(back, ring);
    }

    #[test]
    fn decoding_rejects_inconsistent_rings() {
        let ring = Ring::new(8, ids(2), 3).unwrap();
        let good = serde_json::to_value(&ring).unwrap();
        let corrupt = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut v = good.clone();
            edit(&mut v);
            serde_json::from_value::<Ring>(v).unwrap_err().to_string()
        };
        assert!(corrupt(&|v| v["format"] = 2.into()).contains("format version 2"));
        assert!(corrupt(&|v| v["q"] = 12.into()).contains("invalid partition count 12"));
        assert!(corrupt(&|v| v["owners"][3] = "n9".into()).contains("owner n9 is not a member"));
        assert!(corrupt(&|v| v["owners"][3] = "bad name".into()).contains("invalid node id"));
        assert!(corrupt(&|v| v["owners"].as_array_mut().unwrap().truncate(7)).contains("7 owners"));
        assert!(corrupt(&|v| v["members"] = serde_json::json!([])).contains("at least one member"));
        assert!(
            corrupt(&|v| v["members"][1] = v["members"][0].clone()).contains("duplicate member n1")
        );
        assert!(corrupt(&|v| v["members"][1]["weight"] = 0.into()).contains("weight 0"));
    }

    #[test]
    fn an_exhausted_epoch_is_an_error_not_a_wrap() {
        let ring = Ring::new(8, ids(2), 3).unwrap();
        let mut v = serde_json::to_value(&ring).unwrap();
        v["epoch"] = u64::MAX.into();
        let last: Ring = serde_json::from_value(v).unwrap();
        let n1 = NodeId::new("n1").unwrap();
        assert!(matches!(
            last.with_member_left(&n1, 3),
            Err(Error::InvalidRing(_))
        ));
    }

    #[test]
    fn check_partition_rejects_out_of_range() {
        let ring = Ring::new(64, ids(3), 3).unwrap();
        assert_eq!(ring.check_partition(PartitionId(63)), Ok(PartitionId(63)));
        assert_eq!(
            ring.check_partition(PartitionId(64)),
            Err(Error::PartitionOutOfRange {
                partition: 64,
                q: 64
            })
        );
        // Out-of-range partitions wrap instead of panicking.
        assert_eq!(ring.owner(PartitionId(64)), ring.owner(PartitionId(0)));
    }
}
