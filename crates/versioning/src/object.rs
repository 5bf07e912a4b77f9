//! The versioned state of one key: siblings tagged with dots, under one causal context
//! (paper sections 4.4 and 6.3).
//!
//! This is a dotted causal container: the object's [`VectorClock`] records every write the replica
//! has seen for the key, and each [`Sibling`] carries the [`Dot`] of the write that created it. A
//! sibling is obsolete exactly when some clock has seen its dot but no longer holds it. Because each
//! version has its own dot, two clients writing through one coordinator with the same stale context
//! get two siblings (never a silent overwrite), yet the clock stays one entry per coordinator.

use serde::{Deserialize, Serialize};

use crate::clock::{Actor, Dot, PrunePolicy, VectorClock};
use crate::context::Context;
use crate::error::{Error, Result};

/// A version's value together with the dot of the write that created it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sibling<V> {
    /// The write that created this version.
    pub dot: Dot,
    /// The coordinator's wall-clock time of that write (milliseconds since the Unix epoch); used
    /// only by last-write-wins resolution.
    pub timestamp_ms: u64,
    /// The value written.
    pub value: V,
}

impl<V> Sibling<V> {
    /// The canonical order of siblings inside an object.
    fn order_key(&self) -> (Dot, u64) {
        (self.dot, self.timestamp_ms)
    }
}

/// The versioned state of one key as a replica stores it: a causal context (vector clock of
/// everything this replica has seen for the key) plus the causally concurrent siblings, each with
/// its own dot (dotted version vectors / dotted causal container — an equivalent of DVVSet).
///
/// The write path: the coordinator applies [`Object::put`] to its own stored copy and sends the
/// resulting object to the other replicas, which [`Object::merge`] it into theirs. The read path
/// collects replica answers and calls [`Object::reconcile`].
///
/// ```
/// use dynamo_versioning::{Actor, Context, Object};
///
/// let coordinator = Actor::new(1, 0);
/// let mut replica = Object::new();
/// replica.put(coordinator, &Context::empty(), "milk", 1_000);
/// let seen = replica.context();
///
/// // Two clients both write on top of the version they read: neither write is lost.
/// replica.put(coordinator, &seen, "milk, eggs", 2_000);
/// replica.put(coordinator, &seen, "milk, bread", 2_001);
/// assert_eq!(replica.values(), vec![&"milk, eggs", &"milk, bread"]);
///
/// // A client that read both siblings resolves them with one write.
/// replica.put(coordinator, &replica.context(), "milk, eggs, bread", 3_000);
/// assert_eq!(replica.values(), vec![&"milk, eggs, bread"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ObjectRepr<V>")]
pub struct Object<V> {
    /// Everything this replica has seen for the key. Covers every sibling's dot.
    clock: VectorClock,
    /// The concurrent versions, sorted by (dot, timestamp).
    siblings: Vec<Sibling<V>>,
    /// The largest counter ever pruned from `clock` (0 if none). New dots are issued above it, so
    /// an actor whose entry was pruned can never reuse one of its old counters.
    pruned_counter: u64,
}

/// Serde shadow of [`Object`]: deserialized first, then validated.
#[derive(Deserialize)]
struct ObjectRepr<V> {
    clock: VectorClock,
    siblings: Vec<Sibling<V>>,
    pruned_counter: u64,
}

impl<V> TryFrom<ObjectRepr<V>> for Object<V> {
    type Error = Error;
    fn try_from(repr: ObjectRepr<V>) -> Result<Self> {
        for (index, sibling) in repr.siblings.iter().enumerate() {
            if sibling.dot.counter == 0 {
                return Err(Error::ZeroDot { index });
            }
            if !repr.clock.contains(&sibling.dot) {
                return Err(Error::SiblingNotCovered { dot: sibling.dot });
            }
        }
        if let Some(index) = repr
            .siblings
            .windows(2)
            .position(|pair| matches!(pair, [a, b] if a.order_key() > b.order_key()))
        {
            return Err(Error::UnsortedSiblings { index: index + 1 });
        }
        Ok(Object {
            clock: repr.clock,
            siblings: repr.siblings,
            pruned_counter: repr.pruned_counter,
        })
    }
}

impl<V> Default for Object<V> {
    fn default() -> Self {
        Object {
            clock: VectorClock::new(),
            siblings: Vec::new(),
            pruned_counter: 0,
        }
    }
}

impl<V> Object<V> {
    /// An empty object: nothing seen, no siblings (the state of a key never written).
    pub fn new() -> Self {
        Self::default()
    }

    /// The clock, as an opaque context to hand to clients with the siblings.
    pub fn context(&self) -> Context {
        Context::from_clock(self.clock.clone())
    }

    /// Everything this replica has seen for the key.
    pub fn clock(&self) -> &VectorClock {
        &self.clock
    }

    /// The concurrent versions, in a deterministic order (by dot).
    pub fn siblings(&self) -> &[Sibling<V>] {
        &self.siblings
    }

    /// Takes the siblings out, dropping the clock.
    pub fn into_siblings(self) -> Vec<Sibling<V>> {
        self.siblings
    }

    /// True when there is no sibling (nothing written, or everything removed by [`Self::retain`]).
    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty()
    }

    /// Last-write-wins (for LWW buckets): keeps only the sibling with the greatest timestamp, ties
    /// broken by the greater dot, and returns it. The clock is unchanged. `None` when empty.
    pub fn resolve_lww(&mut self) -> Option<&Sibling<V>> {
        let winner = self
            .siblings
            .iter()
            .enumerate()
            .max_by_key(|(_, s)| (s.timestamp_ms, s.dot))
            .map(|(index, _)| index)?;
        let kept = self.siblings.swap_remove(winner);
        self.siblings.clear();
        self.siblings.push(kept);
        self.siblings.first()
    }

    /// Prunes the clock (paper 4.4) down to `policy.max_entries`, oldest entries first; returns the
    /// number of entries removed.
    ///
    /// Entries of actors that own a current sibling are never removed, so every sibling stays
    /// covered by the context clients receive and can still be superseded; the clock may therefore
    /// stay above the bound while many siblings exist. The largest pruned counter is remembered, and
    /// later [`Self::put`]s issue dots above it, so a coordinator whose own entry was pruned never
    /// reuses a counter the cluster has seen.
    ///
    /// The trade-off, as in the paper: a replica that forgot an actor can no longer tell that an
    /// older version from that actor was superseded, so a later merge with a stale replica may
    /// bring the older version back as an extra (false) sibling. Pruning never loses a write.
    pub fn prune(&mut self, policy: &PrunePolicy) -> usize {
        let siblings = &self.siblings;
        let removed = self.clock.prune_where(policy.max_entries, |actor| {
            !siblings.iter().any(|s| s.dot.actor == *actor)
        });
        if let Some(largest) = removed.iter().map(|e| e.counter).max() {
            self.pruned_counter = self.pruned_counter.max(largest);
        }
        removed.len()
    }

    /// Retains only siblings for which `f` holds (used e.g. to drop tombstones once reaped); the
    /// clock is unchanged, so the removed versions stay superseded.
    ///
    /// Keeping the (small) sibling-less object is safer than deleting the key outright: a deleted
    /// object also forgets its counters, and a later put through the same actor would then restart
    /// at 1 and reuse dots that a replica which still remembers them would treat as already seen.
    pub fn retain(&mut self, f: impl FnMut(&Sibling<V>) -> bool) {
        self.siblings.retain(f);
    }

    /// Maps values (e.g. to strip payloads); keeps dots, timestamps and clock.
    pub fn map<W>(self, mut f: impl FnMut(V) -> W) -> Object<W> {
        Object {
            clock: self.clock,
            siblings: self
                .siblings
                .into_iter()
                .map(|s| Sibling {
                    dot: s.dot,
                    timestamp_ms: s.timestamp_ms,
                    value: f(s.value),
                })
                .collect(),
            pruned_counter: self.pruned_counter,
        }
    }

    /// True when a sibling carries `dot`.
    fn has_dot(&self, dot: &Dot) -> bool {
        self.siblings.iter().any(|s| s.dot == *dot)
    }

    /// Puts `sibling` at its place in the canonical order (after any equal key).
    fn insert_sorted(&mut self, sibling: Sibling<V>) {
        let key = sibling.order_key();
        let at = self.siblings.partition_point(|s| s.order_key() <= key);
        self.siblings.insert(at, sibling);
    }
}

impl<V: Clone + PartialEq> Object<V> {
    /// Coordinator write (paper 4.5): issues a new dot from `actor`, discards exactly the siblings
    /// whose dots `context` covers, keeps the concurrent ones and adds the new sibling; the clock
    /// absorbs `context` and the dot. Returns the new dot.
    ///
    /// The counter is one above everything known for `actor` (this object's clock merged with
    /// `context`) and above any pruned counter: normally `clock[actor] + 1`. Apply puts to the
    /// coordinator's local copy one at a time: two puts on copies of the same state would issue the
    /// same dot.
    pub fn put(&mut self, actor: Actor, context: &Context, value: V, now_ms: u64) -> Dot {
        let seen = context.clock();
        self.siblings.retain(|s| !seen.contains(&s.dot));
        self.clock.merge(seen);
        let counter = self
            .clock
            .get(&actor)
            .max(self.pruned_counter)
            .saturating_add(1);
        self.clock.advance(actor, counter, now_ms);
        let dot = Dot::new(actor, counter);
        self.insert_sorted(Sibling {
            dot,
            timestamp_ms: now_ms,
            value,
        });
        dot
    }

    /// Replica synchronisation (a lattice join): keeps a sibling if the other side also has it or
    /// has not seen its dot; clocks merge. Commutative, associative and idempotent.
    pub fn merge(&mut self, other: &Object<V>) {
        let mine = std::mem::take(&mut self.siblings);
        let mut merged: Vec<Sibling<V>> = mine
            .into_iter()
            .filter(|s| other.has_dot(&s.dot) || !other.clock.contains(&s.dot))
            .collect();
        let from_self = merged.len();
        for s in &other.siblings {
            let kept_here = merged.iter().take(from_self);
            let self_has_dot = kept_here.clone().any(|m| m.dot == s.dot);
            // Exact copies are kept once; a different sibling under the same dot (only possible if
            // a dot was ever reused) is kept too, so that no write is silently dropped.
            let duplicate = kept_here.clone().any(|m| m == s);
            if (self_has_dot || !self.clock.contains(&s.dot)) && !duplicate {
                merged.push(s.clone());
            }
        }
        merged.sort_by_key(Sibling::order_key);
        self.siblings = merged;
        self.clock.merge(&other.clock);
        self.pruned_counter = self.pruned_counter.max(other.pruned_counter);
    }

    /// Syntactic reconciliation of replica answers (paper 4.4, 6.3): the causally maximal set of
    /// siblings and one context that subsumes all of them.
    pub fn reconcile<I: IntoIterator<Item = Object<V>>>(objects: I) -> Object<V> {
        let mut objects = objects.into_iter();
        let mut result = objects.next().unwrap_or_default();
        for object in objects {
            result.merge(&object);
        }
        result
    }

    /// The distinct values, in sibling order: identical concurrent values appear once.
    pub fn values(&self) -> Vec<&V> {
        let mut values: Vec<&V> = Vec::with_capacity(self.siblings.len());
        for s in &self.siblings {
            if !values.contains(&&s.value) {
                values.push(&s.value);
            }
        }
        values
    }
}

#[cfg(test)]
mod tests;
