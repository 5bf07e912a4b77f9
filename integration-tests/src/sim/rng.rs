//! Seeded randomness for the simulation, so every choice a run makes comes from its seed and
//! nothing else. A thin facade over `rand`'s ChaCha8 generator with the few draws the nemesis
//! and the workload need.

use rand::rngs::ChaCha8Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, RngExt, SeedableRng};

/// A seeded generator.
#[derive(Debug)]
pub struct SimRng {
    inner: ChaCha8Rng,
}

impl SimRng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SimRng {
        SimRng {
            inner: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// A generator for a sub-stream (a client, the nemesis) derived from `seed` and `stream`, so
    /// adding a client does not shift the choices of the others.
    pub fn derive(seed: u64, stream: u64) -> SimRng {
        let mut inner = ChaCha8Rng::seed_from_u64(seed);
        inner.set_stream(stream);
        SimRng { inner }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.inner.random_range(0..n)
        }
    }

    /// A number in `lo..=hi` (`lo` when the range is empty).
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            self.inner.random_range(lo..=hi)
        }
    }

    /// An index into a slice of length `len` (0 when empty).
    pub fn index(&mut self, len: usize) -> usize {
        if len == 0 {
            0
        } else {
            self.inner.random_range(0..len)
        }
    }

    /// A random element of `items` (`None` when empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.choose(&mut self.inner)
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Shuffles `items` in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        items.shuffle(&mut self.inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_stream_and_streams_differ() {
        let a: Vec<u64> = (0..8)
            .map(|_| 0)
            .scan(SimRng::new(7), |r, _: u64| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..8)
            .map(|_| 0)
            .scan(SimRng::new(7), |r, _: u64| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        let mut c1 = SimRng::derive(7, 1);
        let mut c2 = SimRng::derive(7, 2);
        assert_ne!(c1.next_u64(), c2.next_u64());
    }

    #[test]
    fn ranges_are_respected() {
        let mut r = SimRng::new(3);
        for _ in 0..1000 {
            assert!(r.below(5) < 5);
            let x = r.between(10, 12);
            assert!((10..=12).contains(&x));
        }
        assert_eq!(r.below(0), 0);
        assert_eq!(r.between(4, 2), 4);
        assert_eq!(r.pick::<u8>(&[]), None);
        assert_eq!(r.pick(&[9]), Some(&9));
        let mut v: Vec<u32> = (0..20).collect();
        r.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..20).collect::<Vec<_>>());
    }
}
