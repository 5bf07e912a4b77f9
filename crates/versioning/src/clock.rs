//! Actors, dots and vector clocks (paper section 4.4).
//!
//! A [`VectorClock`] maps each [`Actor`] that coordinated a write to the number of writes it
//! coordinated (its counter), plus the wall-clock time the entry last advanced, which is used only
//! to choose what to prune. Causality between clocks ignores the timestamps entirely.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The largest counter accepted from untrusted input. Half the `u64` range: a valid clock can then be
/// incremented 2^63 more times before counters saturate, so honest use never gets near the edge,
/// while a forged context cannot push a counter to the point where adding one would overflow.
pub const MAX_COUNTER: u64 = u64::MAX >> 1;

/// The paper's example bound on vector clock size (section 4.4: "say 10").
pub const DEFAULT_MAX_CLOCK_ENTRIES: usize = 10;

/// A replica identity that issues dots. `node` identifies the physical node (the node crate derives
/// it from the node's name), `epoch` increases whenever the node restarts without its data (kv679).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// Stable identifier of the physical node.
    pub node: u64,
    /// Incarnation of the node's data: bumped when the node lost its data, so that its new writes
    /// never reuse a counter that the rest of the cluster has already seen.
    pub epoch: u32,
}

impl Actor {
    /// The actor for `node` in incarnation `epoch`.
    pub fn new(node: u64, epoch: u32) -> Self {
        Actor { node, epoch }
    }
}

/// One event: the `counter`-th write coordinated by `actor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The actor that coordinated the write.
    pub actor: Actor,
    /// Its sequence number for this key, starting at 1.
    pub counter: u64,
}

impl Dot {
    /// The dot `(actor, counter)`.
    pub fn new(actor: Actor, counter: u64) -> Self {
        Dot { actor, counter }
    }
}

/// How two clocks are causally related: the result of `a.compare(&b)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Causality {
    /// `a` happened before `b`: `b` has seen everything `a` has, and more.
    Before,
    /// `a` happened after `b`: `a` has seen everything `b` has, and more.
    After,
    /// Both have seen exactly the same events.
    Equal,
    /// Each has seen an event the other has not: the versions are in conflict.
    Concurrent,
}

impl Causality {
    /// The relation seen from the other side: `b.compare(&a)` given `a.compare(&b)`.
    pub fn reverse(self) -> Self {
        match self {
            Causality::Before => Causality::After,
            Causality::After => Causality::Before,
            other => other,
        }
    }
}

/// One clock entry. Private: the sorted-by-actor, nonzero-counter invariant is kept by this module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) actor: Actor,
    pub(crate) counter: u64,
    pub(crate) timestamp_ms: u64,
}

/// Vector clock of (actor, counter, timestamp_ms) entries, sorted by actor.
///
/// ```
/// use dynamo_versioning::{Actor, Causality, VectorClock};
///
/// let (sx, sy) = (Actor::new(1, 0), Actor::new(2, 0));
/// let mut a = VectorClock::new();
/// a.increment(sx, 1_000);
/// let mut b = a.clone();
/// b.increment(sy, 2_000);
/// assert_eq!(a.compare(&b), Causality::Before);
/// a.increment(sx, 3_000);
/// assert_eq!(a.compare(&b), Causality::Concurrent);
/// a.merge(&b);
/// assert!(a.descends(&b));
/// assert_eq!(a.get(&sx), 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ClockRepr")]
pub struct VectorClock {
    entries: Vec<Entry>,
}

/// Serde shadow of [`VectorClock`]: deserialized first, then validated.
#[derive(Deserialize)]
struct ClockRepr {
    entries: Vec<Entry>,
}

impl TryFrom<ClockRepr> for VectorClock {
    type Error = Error;
    fn try_from(repr: ClockRepr) -> Result<Self> {
        validate_entries(&repr.entries)?;
        Ok(VectorClock {
            entries: repr.entries,
        })
    }
}

/// Checks the canonical form: actors strictly increasing, counters in `1..=MAX_COUNTER`.
pub(crate) fn validate_entries(entries: &[Entry]) -> Result<()> {
    for (index, entry) in entries.iter().enumerate() {
        if entry.counter == 0 {
            return Err(Error::ZeroCounter {
                index,
                actor: entry.actor,
            });
        }
        if entry.counter > MAX_COUNTER {
            return Err(Error::CounterTooLarge {
                actor: entry.actor,
                counter: entry.counter,
            });
        }
        if let Some(previous) = index.checked_sub(1).and_then(|i| entries.get(i)) {
            match previous.actor.cmp(&entry.actor) {
                Ordering::Less => {}
                Ordering::Equal => {
                    return Err(Error::DuplicateActor {
                        index,
                        actor: entry.actor,
                    });
                }
                Ordering::Greater => {
                    return Err(Error::UnsortedActors {
                        index,
                        actor: entry.actor,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Bound on the size of a clock (paper section 4.4): when a clock holds more than `max_entries`
/// entries, the oldest ones (by timestamp) are dropped first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunePolicy {
    /// The most entries a clock keeps after pruning (default [`DEFAULT_MAX_CLOCK_ENTRIES`], the
    /// paper's 10).
    pub max_entries: usize,
}

impl Default for PrunePolicy {
    fn default() -> Self {
        PrunePolicy {
            max_entries: DEFAULT_MAX_CLOCK_ENTRIES,
        }
    }
}

impl VectorClock {
    /// The empty clock: nothing seen.
    pub fn new() -> Self {
        VectorClock {
            entries: Vec::new(),
        }
    }

    /// Builds a clock from `(actor, counter, timestamp_ms)` entries in any order.
    ///
    /// Rejects duplicate actors, zero counters and counters above [`MAX_COUNTER`].
    pub fn from_entries(entries: impl IntoIterator<Item = (Actor, u64, u64)>) -> Result<Self> {
        let mut entries: Vec<Entry> = entries
            .into_iter()
            .map(|(actor, counter, timestamp_ms)| Entry {
                actor,
                counter,
                timestamp_ms,
            })
            .collect();
        entries.sort_by_key(|e| e.actor);
        validate_entries(&entries)?;
        Ok(VectorClock { entries })
    }

    /// Wraps entries already checked by [`validate_entries`].
    pub(crate) fn from_validated(entries: Vec<Entry>) -> Self {
        VectorClock { entries }
    }

    /// The raw entries, sorted by actor.
    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    fn position(&self, actor: &Actor) -> std::result::Result<usize, usize> {
        self.entries.binary_search_by(|e| e.actor.cmp(actor))
    }

    /// The counter of `actor`, 0 when absent.
    pub fn get(&self, actor: &Actor) -> u64 {
        match self.position(actor) {
            Ok(i) => self.entries.get(i).map_or(0, |e| e.counter),
            Err(_) => 0,
        }
    }

    /// The timestamp of `actor`'s entry, `None` when absent.
    pub fn timestamp_ms(&self, actor: &Actor) -> Option<u64> {
        let i = self.position(actor).ok()?;
        self.entries.get(i).map(|e| e.timestamp_ms)
    }

    /// Records a new event by `actor` at `now_ms` and returns its dot (`counter = get(actor) + 1`).
    ///
    /// The entry's timestamp becomes the later of its old value and `now_ms`, so a node whose wall
    /// clock steps back never makes an entry look older than it is.
    pub fn increment(&mut self, actor: Actor, now_ms: u64) -> Dot {
        let counter = self.get(&actor).saturating_add(1);
        self.advance(actor, counter, now_ms);
        Dot { actor, counter }
    }

    /// Raises `actor`'s counter to at least `counter` and its timestamp to at least `now_ms`.
    pub(crate) fn advance(&mut self, actor: Actor, counter: u64, now_ms: u64) {
        match self.position(&actor) {
            Ok(i) => {
                if let Some(e) = self.entries.get_mut(i) {
                    e.counter = e.counter.max(counter);
                    e.timestamp_ms = e.timestamp_ms.max(now_ms);
                }
            }
            Err(i) => {
                if counter > 0 {
                    let entry = Entry {
                        actor,
                        counter,
                        timestamp_ms: now_ms,
                    };
                    self.entries.insert(i, entry);
                }
            }
        }
    }

    /// True when this clock has seen `dot`: `self[dot.actor] >= dot.counter`.
    pub fn contains(&self, dot: &Dot) -> bool {
        self.get(&dot.actor) >= dot.counter
    }

    /// Pointwise maximum of counters (and of timestamps): the least clock that has seen everything
    /// either clock has.
    pub fn merge(&mut self, other: &VectorClock) {
        if other.entries.is_empty() {
            return;
        }
        let mut merged = Vec::with_capacity(self.entries.len().max(other.entries.len()));
        let mut left = self.entries.iter().peekable();
        let mut right = other.entries.iter().peekable();
        loop {
            let next = match (left.peek(), right.peek()) {
                (Some(a), Some(b)) => match a.actor.cmp(&b.actor) {
                    Ordering::Less => left.next().copied(),
                    Ordering::Greater => right.next().copied(),
                    Ordering::Equal => {
                        let (a, b) = (**a, **b);
                        left.next();
                        right.next();
                        Some(Entry {
                            actor: a.actor,
                            counter: a.counter.max(b.counter),
                            timestamp_ms: a.timestamp_ms.max(b.timestamp_ms),
                        })
                    }
                },
                (Some(_), None) => left.next().copied(),
                (None, Some(_)) => right.next().copied(),
                (None, None) => break,
            };
            merged.extend(next);
        }
        self.entries = merged;
    }

    /// The causal relation between `self` and `other` (timestamps play no part).
    pub fn compare(&self, other: &VectorClock) -> Causality {
        let (mut self_ahead, mut other_ahead) = (false, false);
        let mut left = self.entries.iter().peekable();
        let mut right = other.entries.iter().peekable();
        loop {
            match (left.peek(), right.peek()) {
                (Some(a), Some(b)) => match a.actor.cmp(&b.actor) {
                    Ordering::Less => {
                        self_ahead = true;
                        left.next();
                    }
                    Ordering::Greater => {
                        other_ahead = true;
                        right.next();
                    }
                    Ordering::Equal => {
                        match a.counter.cmp(&b.counter) {
                            Ordering::Less => other_ahead = true,
                            Ordering::Greater => self_ahead = true,
                            Ordering::Equal => {}
                        }
                        left.next();
                        right.next();
                    }
                },
                (Some(_), None) => {
                    self_ahead = true;
                    break;
                }
                (None, Some(_)) => {
                    other_ahead = true;
                    break;
                }
                (None, None) => break,
            }
            if self_ahead && other_ahead {
                break;
            }
        }
        match (self_ahead, other_ahead) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            (true, true) => Causality::Concurrent,
        }
    }

    /// True when `self` has seen everything `other` has (`self >= other`).
    pub fn descends(&self, other: &VectorClock) -> bool {
        matches!(self.compare(other), Causality::After | Causality::Equal)
    }

    /// Number of entries (actors).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no event has been seen.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries as `(actor, counter, timestamp_ms)`, sorted by actor.
    pub fn iter(&self) -> impl Iterator<Item = (Actor, u64, u64)> + '_ {
        self.entries
            .iter()
            .map(|e| (e.actor, e.counter, e.timestamp_ms))
    }

    /// Drops the oldest entries (smallest timestamp, ties by actor) until at most
    /// `policy.max_entries` remain; returns how many were removed.
    ///
    /// Pruning forgets history, so a pruned clock may later look concurrent with a clock it
    /// descends from (paper 4.4). Objects should use [`crate::Object::prune`], which also keeps the
    /// entries its siblings need and guards against counter reuse.
    pub fn prune(&mut self, policy: &PrunePolicy) -> usize {
        self.prune_where(policy.max_entries, |_| true).len()
    }

    /// Removes the oldest entries for which `may_remove` holds, until at most `max_entries` remain
    /// or no candidate is left. Returns the removed entries.
    pub(crate) fn prune_where(
        &mut self,
        max_entries: usize,
        may_remove: impl Fn(&Actor) -> bool,
    ) -> Vec<Entry> {
        let excess = self.entries.len().saturating_sub(max_entries);
        if excess == 0 {
            return Vec::new();
        }
        let mut candidates: Vec<Entry> = self
            .entries
            .iter()
            .filter(|e| may_remove(&e.actor))
            .copied()
            .collect();
        candidates.sort_by_key(|e| (e.timestamp_ms, e.actor));
        candidates.truncate(excess);
        self.entries
            .retain(|e| !candidates.iter().any(|c| c.actor == e.actor));
        candidates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(node: u64) -> Actor {
        Actor::new(node, 0)
    }

    fn clock(entries: &[(u64, u64, u64)]) -> VectorClock {
        VectorClock::from_entries(entries.iter().map(|&(n, c, t)| (actor(n), c, t)))
            .expect("test clocks are valid")
    }

    #[test]
    fn absent_actor_reads_as_zero_and_increment_starts_at_one() {
        let mut c = VectorClock::new();
        assert_eq!(c.get(&actor(7)), 0);
        assert_eq!(c.increment(actor(7), 5), Dot::new(actor(7), 1));
        assert_eq!(c.increment(actor(7), 6), Dot::new(actor(7), 2));
        assert_eq!(c.get(&actor(7)), 2);
        assert_eq!(c.timestamp_ms(&actor(7)), Some(6));
    }

    #[test]
    fn increment_never_moves_a_timestamp_backwards() {
        let mut c = VectorClock::new();
        c.increment(actor(1), 100);
        c.increment(actor(1), 40);
        assert_eq!(c.timestamp_ms(&actor(1)), Some(100));
    }

    #[test]
    fn contains_means_counter_at_least_the_dots() {
        let c = clock(&[(1, 3, 0)]);
        assert!(c.contains(&Dot::new(actor(1), 3)));
        assert!(c.contains(&Dot::new(actor(1), 1)));
        assert!(!c.contains(&Dot::new(actor(1), 4)));
        assert!(!c.contains(&Dot::new(actor(2), 1)));
    }

    #[test]
    fn merge_takes_pointwise_maxima_of_counters_and_timestamps() {
        let mut a = clock(&[(1, 3, 10), (2, 1, 50)]);
        let b = clock(&[(2, 4, 20), (3, 1, 30)]);
        a.merge(&b);
        let got: Vec<_> = a.iter().map(|(a, c, t)| (a.node, c, t)).collect();
        assert_eq!(got, vec![(1, 3, 10), (2, 4, 50), (3, 1, 30)]);
    }

    #[test]
    fn compare_names_each_relation() {
        let a = clock(&[(1, 1, 0)]);
        let b = clock(&[(1, 2, 0)]);
        let c = clock(&[(1, 1, 0), (2, 1, 0)]);
        let d = clock(&[(1, 2, 9)]);
        assert_eq!(a.compare(&b), Causality::Before);
        assert_eq!(b.compare(&a), Causality::After);
        assert_eq!(b.compare(&c), Causality::Concurrent);
        assert_eq!(b.compare(&d), Causality::Equal, "timestamps do not matter");
        assert_eq!(VectorClock::new().compare(&a), Causality::Before);
        assert!(c.descends(&a));
        assert!(!a.descends(&c));
    }

    #[test]
    fn from_entries_rejects_duplicates_and_zero_counters() {
        let dup = VectorClock::from_entries([(actor(1), 1, 0), (actor(1), 2, 0)]);
        assert!(matches!(dup, Err(Error::DuplicateActor { .. })));
        let zero = VectorClock::from_entries([(actor(1), 0, 0)]);
        assert!(matches!(zero, Err(Error::ZeroCounter { .. })));
        let huge = VectorClock::from_entries([(actor(1), u64::MAX, 0)]);
        assert!(matches!(huge, Err(Error::CounterTooLarge { .. })));
    }

    #[test]
    fn prune_keeps_at_most_max_entries_dropping_oldest_first() {
        let mut c = clock(&[(1, 1, 500), (2, 1, 100), (3, 1, 300), (4, 1, 200)]);
        let removed = c.prune(&PrunePolicy { max_entries: 2 });
        assert_eq!(removed, 2);
        let kept: Vec<u64> = c.iter().map(|(a, _, _)| a.node).collect();
        assert_eq!(kept, vec![1, 3], "the two newest entries survive");
        assert_eq!(c.prune(&PrunePolicy { max_entries: 2 }), 0);
    }

    #[test]
    fn default_prune_policy_is_the_papers_ten_entries() {
        assert_eq!(PrunePolicy::default().max_entries, 10);
        let mut c = VectorClock::new();
        for node in 0..15 {
            c.increment(actor(node), node);
        }
        assert_eq!(c.prune(&PrunePolicy::default()), 5);
        assert_eq!(c.len(), 10);
        assert_eq!(c.iter().next().map(|(a, _, _)| a.node), Some(5));
    }
}
