//! Claim: deciding which member owns each of the Q partitions (paper 6.2, strategy 3).
//!
//! Three steps, all deterministic:
//!
//! 1. [`targets`]: how many partitions each member should own, its weighted share rounded down or up (so
//!    within one partition of the share), rounding up where that avoids moving a partition.
//! 2. [`initial_claim`]: lay the targets out around a fresh ring, choosing at each position a member that does
//!    not repeat a node (then a zone) among the N - 1 owners on either side, preferring members that would
//!    otherwise run out of room before the ring wraps, then those with the most left to place, then those that
//!    have rarely sat near the current neighbours; finally [`repair`] what conflicts remain by swapping owners.
//! 3. [`rebalance`]: after a join, leave or weight change, move partitions one at a time from members above
//!    their target to members below it, each time picking the partition and receiver that create the fewest
//!    node/zone repeats within N consecutive partitions. Only partitions that must move do move.
//!
//! Owners here are indices into a member slice sorted by id; the ring maps them back to [`crate::NodeId`]s.

use std::cmp::Reverse;

use crate::Member;

/// Marks a position of the owner table that the initial claim has not filled yet.
const UNPLACED: usize = usize::MAX;

/// How much worse a repeated node is than a repeated zone within a window of N partitions. Must exceed the
/// largest possible zone-repeat count at one position (2 * window < Q <= 1024), so that any node repeat
/// outweighs every zone repeat: a repeated node costs a replica, a repeated zone only costs zone diversity.
const NODE_REPEAT_COST: u64 = 4096;

/// Upper bound on improvement passes of [`repair`]. Each pass only applies strictly improving swaps, so this
/// only bounds the work on pathological inputs; in practice the first pass fixes everything fixable.
const MAX_REPAIR_PASSES: usize = 8;

/// What the claim needs to know about the members and the replication factor it spreads for.
pub(crate) struct Layout {
    /// Failure-domain class per member: equal for members sharing a zone, unique for members without one.
    zone_class: Vec<usize>,
    /// How many partitions on each side of a position count as "nearby": N - 1, clipped so both sides of the
    /// window never overlap on a small ring.
    window: usize,
}

/// The failure-domain class of each member: members sharing a zone share a class; a member without a zone is a
/// class of its own. Classes are dense indices `0..classes`.
pub(crate) fn zone_classes(members: &[Member]) -> Vec<usize> {
    // Named zones take classes 0..z in order of first appearance; unzoned members take classes after them.
    let mut names: Vec<&str> = Vec::new();
    for zone in members.iter().filter_map(|m| m.zone.as_deref()) {
        if !names.contains(&zone) {
            names.push(zone);
        }
    }
    let mut next_unzoned = names.len();
    members
        .iter()
        .map(|m| {
            match m
                .zone
                .as_deref()
                .and_then(|z| names.iter().position(|n| *n == z))
            {
                Some(class) => class,
                None => {
                    next_unzoned += 1;
                    next_unzoned - 1
                }
            }
        })
        .collect()
}

impl Layout {
    /// A layout for `members` (sorted by id) on a ring of `q` partitions, spreading replicas for `n_hint`.
    pub(crate) fn new(members: &[Member], q: usize, n_hint: usize) -> Layout {
        Layout {
            zone_class: zone_classes(members),
            window: n_hint.saturating_sub(1).min(q.saturating_sub(1) / 2),
        }
    }

    /// Cost of `member` owning position `pos`: repeats of the same node (heavily) and the same zone among the
    /// owners within `window` positions on either side. Unplaced positions count as nothing.
    fn cost(&self, owners: &[usize], pos: usize, member: usize) -> u64 {
        let q = owners.len();
        let mut cost = 0;
        for d in 1..=self.window {
            for other in [owners[(pos + d) % q], owners[(pos + q - d) % q]] {
                if other == UNPLACED {
                    continue;
                }
                if other == member {
                    cost += NODE_REPEAT_COST;
                }
                if self.zone_class[other] == self.zone_class[member] {
                    cost += 1;
                }
            }
        }
        cost
    }

    /// Owners placed within `window` positions of `pos` on either side.
    fn neighbours<'o>(&self, owners: &'o [usize], pos: usize) -> impl Iterator<Item = usize> + 'o {
        let q = owners.len();
        (1..=self.window)
            .flat_map(move |d| [owners[(pos + d) % q], owners[(pos + q - d) % q]])
            .filter(|&o| o != UNPLACED)
    }

    /// Circular distance from `pos` to the nearest other position owned by `member` (`q` if there is none).
    fn spacing(&self, owners: &[usize], pos: usize, member: usize) -> usize {
        let q = owners.len();
        (1..=q / 2)
            .find(|&d| owners[(pos + d) % q] == member || owners[(pos + q - d) % q] == member)
            .unwrap_or(q)
    }
}

/// Partition counts per member (indices into the member slice) for an owner table.
pub(crate) fn counts(owners: &[usize], members: usize) -> Vec<u32> {
    let mut counts = vec![0u32; members];
    for &owner in owners {
        if let Some(c) = counts.get_mut(owner) {
            *c += 1;
        }
    }
    counts
}

/// How many of the `q` partitions each member should own: `q * weight / total weight` rounded down, plus one
/// for as many members as needed to sum to exactly `q`, so every target is within one partition of its
/// weighted share.
///
/// Which members get the extra partition is chosen to move as little as possible: first members that already
/// own more than the rounded-down share (otherwise they would have to shed a partition a join or leave may not
/// take from them), then members in `receivers` (they can take a partition in this change), then the rest;
/// within each tier by largest remainder, then by current count, then by index. Members whose share is a whole
/// number never get the extra one. For a fresh ring (`current` all zero) this is plain largest remainder.
pub(crate) fn targets(members: &[Member], q: u32, current: &[u32], receivers: &[bool]) -> Vec<u32> {
    let total: u64 = members
        .iter()
        .map(|m| u64::from(m.weight))
        .sum::<u64>()
        .max(1);
    let q64 = u64::from(q);
    let mut targets: Vec<u32> = Vec::with_capacity(members.len());
    let mut candidates = Vec::with_capacity(members.len());
    for (i, m) in members.iter().enumerate() {
        let share = q64 * u64::from(m.weight);
        // share / total <= q, so it fits in u32.
        let floor = u32::try_from(share / total).unwrap_or(q);
        targets.push(floor);
        let remainder = share % total;
        if remainder == 0 {
            continue;
        }
        let cur = current.get(i).copied().unwrap_or(0);
        let tier = if cur > floor {
            0
        } else if receivers.get(i).copied().unwrap_or(false) {
            1
        } else {
            2
        };
        candidates.push((tier, Reverse(remainder), Reverse(cur), i));
    }
    candidates.sort();
    let leftover = q.saturating_sub(targets.iter().sum()) as usize;
    for &(_, _, _, i) in candidates.iter().take(leftover) {
        targets[i] += 1;
    }
    targets
}

/// Owner table for a fresh ring: every member gets exactly its target, laid out so that the same node (then the
/// same zone) does not own two partitions within `window` positions when that can be avoided.
///
/// Among equally good candidates the claim prefers the member that has been a near neighbour of the
/// already-placed neighbours least often. That varies who sits next to whom from one round to the next, so
/// when a member later leaves, its partitions are surrounded by different nodes and can be handed to many
/// different receivers without repeats (a strictly periodic layout leaves only a few conflict-free receivers).
pub(crate) fn initial_claim(layout: &Layout, targets: &[u32]) -> Vec<usize> {
    let q: usize = targets.iter().map(|&t| t as usize).sum();
    let s = targets.len();
    let mut owners = vec![UNPLACED; q];
    let mut remaining = targets.to_vec();
    let mut last_placed: Vec<Option<usize>> = vec![None; s];
    let mut near = NearMatrix::new(targets);
    let mut first_placed: Vec<Option<usize>> = vec![None; s];
    let span = layout.window + 1;
    // Latest position for m's next partition such that its remaining ones, `span` apart, still end `span`
    // before its first one comes round again.
    let deadline = |remaining: u32, first: Option<usize>| -> usize {
        let need = span * remaining as usize;
        match first {
            Some(f) => (q + f).saturating_sub(need),
            None => (q + span).saturating_sub(need + 1),
        }
    };
    for pos in 0..q {
        let neighbours: Vec<usize> = layout.neighbours(&owners, pos).collect();
        let best = (0..s).filter(|&m| remaining[m] > 0).min_by_key(|&m| {
            (
                layout.cost(&owners, pos, m),
                Reverse(deadline(remaining[m], first_placed[m]) < pos + span),
                Reverse(remaining[m]),
                neighbours.iter().map(|&x| near.get(x, m)).sum::<u32>(),
                last_placed[m],
                m,
            )
        });
        // The targets sum to q, so some member always has a partition left to place.
        if let Some(m) = best {
            owners[pos] = m;
            remaining[m] -= 1;
            last_placed[m] = Some(pos);
            first_placed[m].get_or_insert(pos);
            for &x in &neighbours {
                near.bump(x, m);
            }
        }
    }
    let movable = vec![true; q];
    repair(layout, &mut owners, &movable);
    owners
}

/// Symmetric counts of how often two members were placed near each other during the initial claim. Only
/// members with a non-zero target are ever placed, so the matrix is at most Q x Q however many members there
/// are.
struct NearMatrix {
    /// Row of each member in the matrix; `None` for members that own nothing.
    row: Vec<Option<usize>>,
    /// Number of rows (and columns).
    placed: usize,
    /// Row-major `placed * placed` counts.
    counts: Vec<u32>,
}

impl NearMatrix {
    fn new(targets: &[u32]) -> NearMatrix {
        let mut placed = 0;
        let row = targets
            .iter()
            .map(|&t| {
                (t > 0).then(|| {
                    placed += 1;
                    placed - 1
                })
            })
            .collect();
        NearMatrix {
            row,
            placed,
            counts: vec![0; placed * placed],
        }
    }

    fn index(&self, a: usize, b: usize) -> Option<usize> {
        let ra = self.row.get(a).copied().flatten()?;
        let rb = self.row.get(b).copied().flatten()?;
        Some(ra * self.placed + rb)
    }

    fn get(&self, a: usize, b: usize) -> u32 {
        self.index(a, b)
            .and_then(|i| self.counts.get(i))
            .copied()
            .unwrap_or(0)
    }

    fn bump(&mut self, a: usize, b: usize) {
        for i in [self.index(a, b), self.index(b, a)].into_iter().flatten() {
            if let Some(c) = self.counts.get_mut(i) {
                *c = c.saturating_add(1);
            }
        }
    }
}

/// Preference order of a candidate move (lower is better): nearby repeats it creates, then the donor's
/// surplus, the receiver's deficit and the receiver's spacing, each larger-is-better.
type MoveKey = (u64, Reverse<u32>, Reverse<u32>, Reverse<usize>);

/// Moves partitions from `donors` above their target to `receivers` below it until one side runs out, each
/// time choosing the move that adds the fewest nearby repeats (then from the fullest donor, to the emptiest
/// receiver, as far as possible from the receiver's other partitions). Finally [`repair`]s among the moved
/// partitions only, which keeps both the counts and the set of moved partitions.
pub(crate) fn rebalance(
    layout: &Layout,
    owners: &mut [usize],
    targets: &[u32],
    donors: &[bool],
    receivers: &[bool],
) {
    let mut counts = counts(owners, targets.len());
    let mut moved = vec![false; owners.len()];
    let is = |set: &[bool], m: usize| set.get(m).copied().unwrap_or(false);
    loop {
        let takers: Vec<usize> = (0..targets.len())
            .filter(|&m| is(receivers, m) && counts[m] < targets[m])
            .collect();
        if takers.is_empty() {
            break;
        }
        let mut best: Option<(MoveKey, usize, usize)> = None;
        for (pos, &giver) in owners.iter().enumerate() {
            if !is(donors, giver) || counts[giver] <= targets[giver] {
                continue;
            }
            let surplus = counts[giver] - targets[giver];
            for &taker in takers.iter().filter(|&&t| t != giver) {
                let key = (
                    layout.cost(owners, pos, taker),
                    Reverse(surplus),
                    Reverse(targets[taker] - counts[taker]),
                    Reverse(layout.spacing(owners, pos, taker)),
                );
                if best.as_ref().is_none_or(|(k, _, _)| key < *k) {
                    best = Some((key, pos, taker));
                }
            }
        }
        let Some((_, pos, taker)) = best else { break };
        counts[owners[pos]] -= 1;
        counts[taker] += 1;
        owners[pos] = taker;
        moved[pos] = true;
    }
    repair(layout, owners, &moved);
}

/// Swaps owners between `movable` positions while that strictly lowers the total nearby-repeat cost. Swaps
/// keep every member's partition count, so balance is untouched.
pub(crate) fn repair(layout: &Layout, owners: &mut [usize], movable: &[bool]) {
    let q = owners.len();
    for _ in 0..MAX_REPAIR_PASSES {
        let mut improved = false;
        for i in (0..q).filter(|&i| movable[i]) {
            if layout.cost(owners, i, owners[i]) == 0 {
                continue;
            }
            let mut best: Option<(u64, usize)> = None;
            for j in 0..q {
                if !movable[j] || owners[j] == owners[i] {
                    continue;
                }
                let before = layout.cost(owners, i, owners[i]) + layout.cost(owners, j, owners[j]);
                owners.swap(i, j);
                let after = layout.cost(owners, i, owners[i]) + layout.cost(owners, j, owners[j]);
                owners.swap(i, j);
                if after < before && best.is_none_or(|(gain, _)| before - after > gain) {
                    best = Some((before - after, j));
                }
            }
            if let Some((_, j)) = best {
                owners.swap(i, j);
                improved = true;
            }
        }
        if !improved {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeId;

    fn members(weights: &[u32]) -> Vec<Member> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Member::new(NodeId::new(format!("n{i:02}")).unwrap()).with_weight(w))
            .collect()
    }

    fn nearby_repeats(owners: &[usize], window: usize) -> usize {
        let q = owners.len();
        (0..q)
            .filter(|&p| (1..=window).any(|d| owners[(p + d) % q] == owners[p]))
            .count()
    }

    #[test]
    fn targets_sum_to_q_and_follow_weights() {
        let ms = members(&[1, 1, 1]);
        let all = [true; 16];
        assert_eq!(targets(&ms, 64, &[0, 0, 0], &all), vec![22, 21, 21]);
        // The extra partition goes to whoever owns more already.
        assert_eq!(targets(&ms, 64, &[21, 21, 22], &all), vec![21, 21, 22]);
        // A member that cannot receive in this change is not given a target above what it owns.
        let ms4 = members(&[1, 1, 1, 1, 1]);
        assert_eq!(
            targets(
                &ms4,
                64,
                &[16, 16, 16, 16, 0],
                &[false, false, false, false, true]
            ),
            vec![13, 13, 13, 13, 12]
        );
        let ms = members(&[1, 3]);
        assert_eq!(targets(&ms, 64, &[0, 0], &all), vec![16, 48]);
        let ms = members(&[1; 10]);
        assert_eq!(targets(&ms, 8, &[0; 10], &all).iter().sum::<u32>(), 8);
    }

    #[test]
    fn initial_claim_spreads_owners_without_repeats() {
        for s in 3..12 {
            let ms = members(&vec![1; s]);
            let layout = Layout::new(&ms, 64, 3);
            let t = targets(&ms, 64, &vec![0; s], &vec![true; s]);
            let owners = initial_claim(&layout, &t);
            assert_eq!(counts(&owners, s), t);
            // No repeats within three consecutive partitions whenever every target fits at spacing three.
            let avoidable = t.iter().all(|&c| c * 3 <= 64);
            assert_eq!(nearby_repeats(&owners, 2) == 0, avoidable, "S = {s}");
        }
    }

    #[test]
    fn rebalance_moves_only_to_receivers_and_reaches_targets() {
        let ms = members(&[1, 1, 1, 1]);
        let layout = Layout::new(&ms, 64, 3);
        // Start from a three-member ring; member 3 joins.
        let old = initial_claim(
            &Layout::new(&ms[..3], 64, 3),
            &targets(&ms[..3], 64, &[0; 3], &[true; 3]),
        );
        let mut owners = old.clone();
        let receivers = [false, false, false, true];
        let t = targets(&ms, 64, &counts(&owners, 4), &receivers);
        rebalance(
            &layout,
            &mut owners,
            &t,
            &[true, true, true, false],
            &receivers,
        );
        assert_eq!(counts(&owners, 4), t);
        let moved: Vec<usize> = (0..64).filter(|&p| old[p] != owners[p]).collect();
        assert_eq!(moved.len(), 16);
        assert!(moved.iter().all(|&p| owners[p] == 3));
        assert_eq!(nearby_repeats(&owners, 2), 0);
    }

    #[test]
    fn zone_classes_group_named_zones_and_isolate_unzoned_members() {
        let mut ms = members(&[1, 1, 1, 1]);
        ms[0].zone = Some("a".into());
        ms[2].zone = Some("a".into());
        ms[3].zone = Some("b".into());
        assert_eq!(zone_classes(&ms), vec![0, 2, 0, 1]);
    }
}
