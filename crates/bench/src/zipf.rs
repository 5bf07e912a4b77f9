//! Key choice: YCSB's scrambled zipfian distribution and a uniform one, as pure functions of a
//! random source, so their shape can be tested without a cluster.
//!
//! The zipfian generator is the rejection-free method of Gray et al. ("Quickly generating
//! billion-record synthetic databases", SIGMOD 1994) that YCSB uses: item `i` (0-based rank) is
//! drawn with probability proportional to `1 / (i + 1)^theta`. Left alone, rank 0 would be key 0,
//! so the popular keys would all be the oldest, neighbouring ones; "scrambled" maps ranks to keys
//! through a fixed pseudo-random permutation so the hot keys are spread over the key space (and
//! the ring). YCSB scrambles by hashing ranks from a ten-billion item space modulo the record
//! count, which merges some ranks; a true permutation keeps each key's share exactly zipfian.

use rand::{Rng, RngExt};

/// YCSB's zipfian constant (`theta`): the skew of its standard workloads.
pub const ZIPFIAN_CONSTANT: f64 = 0.99;

/// Rounds of mixing in the scrambling permutation: three multiply-xorshift rounds spread every
/// input bit over the output, which is all key placement needs (it is not cryptography).
const SCRAMBLE_ROUNDS: usize = 3;

/// Odd multipliers for the scrambling rounds (from splitmix64; any odd constants would do).
const SCRAMBLE_MULTIPLIERS: [u64; SCRAMBLE_ROUNDS] = [
    0x9E37_79B9_7F4A_7C15,
    0xBF58_476D_1CE4_E5B9,
    0x94D0_49BB_1331_11EB,
];

/// Why a distribution cannot be built.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ZipfError {
    /// There must be at least one item to choose from.
    #[error("a key distribution needs at least one record")]
    NoItems,
    /// The skew must lie strictly between 0 and 1 for this generator.
    #[error("zipfian theta must be in (0, 1), got {0}")]
    BadTheta(f64),
}

/// Zipfian ranks over `0..n`: rank 0 is the most popular.
#[derive(Clone, Debug)]
pub struct Zipfian {
    n: u64,
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
}

/// `sum_{i=1..n} 1 / i^theta`. Linear in `n`: a million records take milliseconds.
fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| (i as f64).powf(-theta)).sum()
}

impl Zipfian {
    /// A generator over `n` items with skew `theta` (use [`ZIPFIAN_CONSTANT`]).
    pub fn new(n: u64, theta: f64) -> Result<Zipfian, ZipfError> {
        if n == 0 {
            return Err(ZipfError::NoItems);
        }
        if !(theta > 0.0 && theta < 1.0) {
            return Err(ZipfError::BadTheta(theta));
        }
        let zeta_n = zeta(n, theta);
        let zeta_2 = zeta(2.min(n), theta);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n);
        Ok(Zipfian {
            n,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta_n,
            eta,
        })
    }

    /// The rank drawn for a uniform `u` in `[0, 1)`; always below `n`.
    pub fn rank(&self, u: f64) -> u64 {
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let r = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(self.n - 1)
    }
}

/// A fixed pseudo-random bijection of `0..n` (cycle-walking over the next power of two).
#[derive(Clone, Debug)]
pub struct Permutation {
    n: u64,
    bits: u32,
    mask: u64,
}

impl Permutation {
    /// The permutation of `0..n` (`n` at least 1).
    pub fn new(n: u64) -> Permutation {
        let bits = 64 - n.saturating_sub(1).leading_zeros();
        let mask = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        Permutation { n, bits, mask }
    }

    /// One bijective step on `0..=mask`.
    fn step(&self, mut x: u64) -> u64 {
        let shift = (self.bits / 2).max(1);
        for m in SCRAMBLE_MULTIPLIERS {
            x = x.wrapping_mul(m) & self.mask;
            x ^= x >> shift;
        }
        x
    }

    /// Where `i` (below `n`) goes. Walks the cycle until it lands below `n`, which takes under
    /// two steps on average because `n` is more than half the power of two.
    pub fn apply(&self, i: u64) -> u64 {
        if self.n <= 1 {
            return 0;
        }
        let mut x = self.step(i & self.mask);
        while x >= self.n {
            x = self.step(x);
        }
        x
    }
}

/// How the keys of a run are chosen.
#[derive(Clone, Debug)]
pub enum KeyChooser {
    /// Every record equally likely.
    Uniform {
        /// Number of records.
        n: u64,
    },
    /// Scrambled zipfian, YCSB's default.
    Zipfian {
        /// The rank generator.
        zipf: Zipfian,
        /// The rank-to-record permutation.
        scramble: Permutation,
    },
}

impl KeyChooser {
    /// Uniform choice among `n` records.
    pub fn uniform(n: u64) -> Result<KeyChooser, ZipfError> {
        if n == 0 {
            return Err(ZipfError::NoItems);
        }
        Ok(KeyChooser::Uniform { n })
    }

    /// Scrambled zipfian choice among `n` records with YCSB's constant.
    pub fn zipfian(n: u64) -> Result<KeyChooser, ZipfError> {
        Ok(KeyChooser::Zipfian {
            zipf: Zipfian::new(n, ZIPFIAN_CONSTANT)?,
            scramble: Permutation::new(n),
        })
    }

    /// The next record index, below the record count.
    pub fn next<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        match self {
            KeyChooser::Uniform { n } => rng.random_range(0..*n),
            KeyChooser::Zipfian { zipf, scramble } => {
                scramble.apply(zipf.rank(rng.random::<f64>()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn counts(chooser: &KeyChooser, n: u64, draws: usize) -> Vec<u64> {
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = vec![0u64; n as usize];
        for _ in 0..draws {
            counts[chooser.next(&mut rng) as usize] += 1;
        }
        counts
    }

    #[test]
    fn the_most_popular_key_gets_far_more_than_a_uniform_share() {
        let n = 1000;
        let draws = 100_000;
        let zipf = counts(&KeyChooser::zipfian(n).unwrap(), n, draws);
        let uniform_share = draws as u64 / n;
        let top = *zipf.iter().max().unwrap();
        // Rank 0 has probability 1 / zeta(1000, 0.99), about 13%: over a hundred uniform shares.
        assert!(top > 50 * uniform_share, "top key drew {top}");
        let uniform = counts(&KeyChooser::uniform(n).unwrap(), n, draws);
        assert!(*uniform.iter().max().unwrap() < 3 * uniform_share);
    }

    #[test]
    fn zipfian_ranks_fall_off_with_rank() {
        let zipf = Zipfian::new(100, ZIPFIAN_CONSTANT).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let mut counts = [0u64; 100];
        for _ in 0..50_000 {
            counts[zipf.rank(rng.random::<f64>()) as usize] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[99]);
    }

    #[test]
    fn scrambling_spreads_the_hot_keys() {
        let n = 1000;
        let perm = Permutation::new(n);
        let hot: Vec<u64> = (0..10).map(|r| perm.apply(r)).collect();
        // The ten hottest records are not the first ten.
        assert!(hot.iter().any(|&k| k >= 10), "{hot:?}");
    }

    #[test]
    fn no_records_or_bad_skew_is_an_error() {
        assert_eq!(KeyChooser::zipfian(0).unwrap_err(), ZipfError::NoItems);
        assert_eq!(KeyChooser::uniform(0).unwrap_err(), ZipfError::NoItems);
        assert!(matches!(Zipfian::new(10, 1.0), Err(ZipfError::BadTheta(_))));
    }

    #[test]
    fn one_record_is_always_chosen() {
        let mut rng = StdRng::seed_from_u64(3);
        for chooser in [
            KeyChooser::zipfian(1).unwrap(),
            KeyChooser::uniform(1).unwrap(),
        ] {
            assert!((0..100).all(|_| chooser.next(&mut rng) == 0));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The scramble is a bijection of 0..n.
        #[test]
        fn scrambling_is_a_permutation(n in 1u64..600) {
            let perm = Permutation::new(n);
            let image: HashSet<u64> = (0..n).map(|i| perm.apply(i)).collect();
            prop_assert_eq!(image.len() as u64, n);
            prop_assert!(image.iter().all(|&x| x < n));
        }

        /// Every generator stays in range whatever the random input.
        #[test]
        fn generators_stay_in_range(n in 1u64..1_000_000, u in 0.0f64..1.0, seed in any::<u64>()) {
            let zipf = Zipfian::new(n.min(5000), ZIPFIAN_CONSTANT).unwrap();
            prop_assert!(zipf.rank(u) < n.min(5000));
            let perm = Permutation::new(n);
            prop_assert!(perm.apply(seed % n) < n);
            let mut rng = StdRng::seed_from_u64(seed);
            prop_assert!(KeyChooser::uniform(n).unwrap().next(&mut rng) < n);
        }
    }
}
