//! Jepsen's set checker. Clients add unique elements to sets (one set per key); the history says
//! which additions were attempted, which were acknowledged and which ended indeterminate (timed
//! out or failed: they may still have landed). After the faults heal, one final read of every key
//! says what the database kept. Then:
//!
//! * lost = acknowledged but not in the final read (must be empty for a sibling-keeping bucket);
//! * unexpected = in the final read but never attempted (must always be empty);
//! * recovered = indeterminate and in the final read (allowed: Dynamo never rolls a write back).
//!
//! Pure: no I/O, no clocks.

use std::collections::{BTreeMap, BTreeSet};

/// One element added to the set under one key.
pub type Item = (String, u64);

/// Encodes a set as its value: the elements in ascending order, comma separated.
pub fn encode_set(elements: &BTreeSet<u64>) -> Vec<u8> {
    elements
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes()
}

/// Decodes a value written by [`encode_set`]; anything else is an error naming the bad part.
pub fn decode_set(value: &[u8]) -> Result<BTreeSet<u64>, String> {
    let text = std::str::from_utf8(value).map_err(|e| format!("value is not UTF-8: {e}"))?;
    if text.is_empty() {
        return Ok(BTreeSet::new());
    }
    text.split(',')
        .map(|part| {
            part.parse::<u64>()
                .map_err(|_| format!("not an element: {part:?}"))
        })
        .collect()
}

/// What the clients did, as far as they know.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetHistory {
    /// Every element a client tried to add.
    pub attempted: BTreeSet<Item>,
    /// Elements whose write was acknowledged.
    pub acknowledged: BTreeSet<Item>,
    /// Elements whose write timed out or failed.
    pub indeterminate: BTreeSet<Item>,
}

impl SetHistory {
    /// Records that a client is about to write `element` under `key`.
    pub fn attempt(&mut self, key: &str, element: u64) {
        self.attempted.insert((key.to_string(), element));
    }

    /// Records the outcome of that write.
    pub fn outcome(&mut self, key: &str, element: u64, acknowledged: bool) {
        let item = (key.to_string(), element);
        if acknowledged {
            self.acknowledged.insert(item);
        } else {
            self.indeterminate.insert(item);
        }
    }

    /// Every key a client tried to write.
    pub fn keys(&self) -> BTreeSet<String> {
        self.attempted.iter().map(|(k, _)| k.clone()).collect()
    }
}

/// The final read of every key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FinalRead {
    /// Each key's elements: the union of its live siblings.
    pub sets: BTreeMap<String, BTreeSet<u64>>,
    /// Keys whose final read failed, with the last error.
    pub unread: BTreeMap<String, String>,
    /// Values that did not decode as sets, with their key.
    pub garbage: Vec<(String, String)>,
}

/// The checker's verdict for one bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetVerdict {
    /// Elements attempted.
    pub attempted: usize,
    /// Elements acknowledged.
    pub acknowledged: usize,
    /// Elements whose write was indeterminate.
    pub indeterminate: usize,
    /// Acknowledged elements missing from the final read (of keys that were read).
    pub lost: BTreeSet<Item>,
    /// Elements in the final read that no client attempted.
    pub unexpected: BTreeSet<Item>,
    /// Indeterminate elements that are in the final read.
    pub recovered: BTreeSet<Item>,
    /// Keys whose final read failed.
    pub unread: BTreeMap<String, String>,
    /// Values that were not sets.
    pub garbage: Vec<(String, String)>,
}

impl SetVerdict {
    /// Whether nothing unexpected, unreadable or undecodable turned up; `lost_allowed` says
    /// whether losing acknowledged elements is by design (last-write-wins buckets).
    pub fn is_valid(&self, lost_allowed: bool) -> bool {
        (lost_allowed || self.lost.is_empty())
            && self.unexpected.is_empty()
            && self.unread.is_empty()
            && self.garbage.is_empty()
    }
}

/// Compares the history with the final read.
pub fn check(history: &SetHistory, read: &FinalRead) -> SetVerdict {
    let in_final = |item: &Item| {
        read.sets
            .get(&item.0)
            .is_some_and(|set| set.contains(&item.1))
    };
    let lost = history
        .acknowledged
        .iter()
        .filter(|item| !read.unread.contains_key(&item.0) && !in_final(item))
        .cloned()
        .collect();
    let unexpected = read
        .sets
        .iter()
        .flat_map(|(k, set)| set.iter().map(move |e| (k.clone(), *e)))
        .filter(|item| !history.attempted.contains(item))
        .collect();
    let recovered = history
        .indeterminate
        .iter()
        .filter(|item| in_final(item))
        .cloned()
        .collect();
    SetVerdict {
        attempted: history.attempted.len(),
        acknowledged: history.acknowledged.len(),
        indeterminate: history.indeterminate.len(),
        lost,
        unexpected,
        recovered,
        unread: read.unread.clone(),
        garbage: read.garbage.clone(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn set(items: &[u64]) -> BTreeSet<u64> {
        items.iter().copied().collect()
    }

    #[test]
    fn sets_round_trip_and_garbage_is_refused() {
        for s in [set(&[]), set(&[7]), set(&[1, 2, 30])] {
            assert_eq!(decode_set(&encode_set(&s)).unwrap(), s);
        }
        assert_eq!(encode_set(&set(&[3, 1])), b"1,3".to_vec());
        assert!(decode_set(b"1,x").unwrap_err().contains("\"x\""));
        assert!(decode_set(&[0xff]).is_err());
    }

    #[test]
    fn lost_unexpected_and_recovered_are_told_apart() {
        let mut h = SetHistory::default();
        for e in 1..=4 {
            h.attempt("k", e);
        }
        h.outcome("k", 1, true);
        h.outcome("k", 2, true);
        h.outcome("k", 3, false);
        h.outcome("k", 4, false);
        let mut read = FinalRead::default();
        read.sets.insert("k".into(), set(&[1, 3, 9]));
        let v = check(&h, &read);
        assert_eq!((v.attempted, v.acknowledged, v.indeterminate), (4, 2, 2));
        assert_eq!(v.lost, [("k".to_string(), 2)].into_iter().collect());
        assert_eq!(v.unexpected, [("k".to_string(), 9)].into_iter().collect());
        assert_eq!(v.recovered, [("k".to_string(), 3)].into_iter().collect());
        assert!(!v.is_valid(true), "unexpected elements are never valid");
    }

    #[test]
    fn an_unread_key_is_invalid_but_not_counted_as_lost() {
        let mut h = SetHistory::default();
        h.attempt("k", 1);
        h.outcome("k", 1, true);
        let mut read = FinalRead::default();
        read.unread.insert("k".into(), "timed out".into());
        let v = check(&h, &read);
        assert!(v.lost.is_empty());
        assert!(!v.is_valid(false));
        assert_eq!(h.keys(), ["k".to_string()].into_iter().collect());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every acknowledged element is either lost or in the final read; every recovered
        /// element was indeterminate; every final element is attempted or unexpected.
        #[test]
        fn the_verdict_partitions_the_history(
            acked in proptest::collection::btree_set(0u64..40, 0..20),
            failed in proptest::collection::btree_set(40u64..80, 0..20),
            kept in proptest::collection::btree_set(0u64..100, 0..40),
        ) {
            let mut h = SetHistory::default();
            for &e in acked.iter().chain(&failed) {
                h.attempt("k", e);
                h.outcome("k", e, acked.contains(&e));
            }
            let mut read = FinalRead::default();
            read.sets.insert("k".into(), kept.clone());
            let v = check(&h, &read);
            for &e in &acked {
                let item = ("k".to_string(), e);
                prop_assert_eq!(v.lost.contains(&item), !kept.contains(&e));
            }
            for item in &v.recovered {
                prop_assert!(failed.contains(&item.1) && kept.contains(&item.1));
            }
            for &e in &kept {
                let item = ("k".to_string(), e);
                let attempted = acked.contains(&e) || failed.contains(&e);
                prop_assert_eq!(v.unexpected.contains(&item), !attempted);
            }
        }
    }
}
