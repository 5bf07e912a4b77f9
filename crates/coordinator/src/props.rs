//! Bucket properties (Riak's `n_val`, `r`, `w`, `dw`, `pr`, `pw`, `allow_mult`, `last_write_wins`) and
//! the quorum values a request may use to override them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default replication factor N (paper section 4.3: "N is a parameter configured per-instance"; the
/// paper's common configuration is (N, R, W) = (3, 2, 2)).
pub const DEFAULT_N_VAL: u8 = 3;

/// Largest N accepted. Beyond this a single write fans out to more replicas than a small cluster has
/// and every quorum calculation gets slower for no durability a user would notice.
pub const MAX_N_VAL: u8 = 16;

/// How many replies a request waits for, as Riak spells it: a number or a symbolic value that is
/// resolved against the bucket's `n_val` when the request runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Quorum {
    /// Use the bucket's own setting.
    Default,
    /// One reply.
    One,
    /// A majority of N: `N / 2 + 1`.
    Quorum,
    /// All N replicas.
    All,
    /// An explicit count (0 is allowed for `dw`, `pr` and `pw`: "do not wait").
    Count(u8),
}

impl Quorum {
    /// The number of replies this quorum means for a bucket with `n_val` replicas, with `default`
    /// standing for `Quorum::Default`. A count above `n_val` is a client error.
    pub fn resolve(self, n_val: u8, default: Quorum, name: &'static str) -> Result<u8> {
        let count = match self {
            Quorum::Default => return default.resolve(n_val, Quorum::Quorum, name),
            Quorum::One => 1,
            Quorum::Quorum => n_val / 2 + 1,
            Quorum::All => n_val,
            Quorum::Count(c) => c,
        };
        if count > n_val {
            return Err(Error::InvalidRequest(format!(
                "{name}={count} is larger than the bucket's n_val={n_val}"
            )));
        }
        Ok(count)
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quorum::Default => f.write_str("default"),
            Quorum::One => f.write_str("one"),
            Quorum::Quorum => f.write_str("quorum"),
            Quorum::All => f.write_str("all"),
            Quorum::Count(c) => write!(f, "{c}"),
        }
    }
}

impl FromStr for Quorum {
    type Err = Error;

    fn from_str(s: &str) -> Result<Quorum> {
        match s {
            "default" => Ok(Quorum::Default),
            "one" => Ok(Quorum::One),
            "quorum" => Ok(Quorum::Quorum),
            "all" => Ok(Quorum::All),
            other => other.parse::<u8>().map(Quorum::Count).map_err(|_| {
                Error::InvalidRequest(format!(
                    "quorum value {other:?} is not a number or one of one, quorum, all, default"
                ))
            }),
        }
    }
}

/// Per-bucket settings. Every request on a bucket uses these unless it overrides a quorum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BucketProps {
    /// Replicas per key (N).
    pub n_val: u8,
    /// Replies a read waits for (R).
    pub r: Quorum,
    /// Acknowledgements a write waits for (W).
    pub w: Quorum,
    /// Of the W acknowledgements, how many must be durable (DW).
    pub dw: Quorum,
    /// Replies a read needs from primary (non-fallback) replicas (PR).
    pub pr: Quorum,
    /// Acknowledgements a write needs from primary replicas (PW).
    pub pw: Quorum,
    /// Keep concurrent versions as siblings for the client to reconcile (paper section 4.4).
    pub allow_mult: bool,
    /// Resolve concurrent versions by timestamp instead, keeping one value. Loses concurrent writes
    /// by design; exclusive with `allow_mult`.
    pub last_write_wins: bool,
}

impl Default for BucketProps {
    fn default() -> Self {
        BucketProps {
            n_val: DEFAULT_N_VAL,
            r: Quorum::Quorum,
            w: Quorum::Quorum,
            dw: Quorum::Count(0),
            pr: Quorum::Count(0),
            pw: Quorum::Count(0),
            allow_mult: true,
            last_write_wins: false,
        }
    }
}

impl BucketProps {
    /// Checks that the properties make sense together; an invalid set is refused with the reason.
    pub fn validate(&self) -> Result<()> {
        if self.n_val == 0 || self.n_val > MAX_N_VAL {
            return Err(Error::InvalidRequest(format!(
                "n_val={} must be between 1 and {MAX_N_VAL}",
                self.n_val
            )));
        }
        for (name, q, default) in [
            ("r", self.r, Quorum::Quorum),
            ("w", self.w, Quorum::Quorum),
            ("dw", self.dw, Quorum::Count(0)),
            ("pr", self.pr, Quorum::Count(0)),
            ("pw", self.pw, Quorum::Count(0)),
        ] {
            q.resolve(self.n_val, default, name)?;
        }
        for (name, q) in [("r", self.r), ("w", self.w)] {
            if q == Quorum::Count(0) {
                return Err(Error::InvalidRequest(format!("{name} must be at least 1")));
            }
        }
        if self.allow_mult && self.last_write_wins {
            return Err(Error::InvalidRequest(
                "allow_mult and last_write_wins cannot both be true".into(),
            ));
        }
        Ok(())
    }

    /// Whether concurrent versions are resolved by timestamp (LWW) rather than kept as siblings.
    /// A bucket with neither flag set behaves as Riak's `allow_mult=false`: the newest sibling wins
    /// when a client reads, but replicas still keep the siblings until a write supersedes them.
    pub fn resolves_by_timestamp(&self) -> bool {
        self.last_write_wins || !self.allow_mult
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolic_quorums_resolve_against_n() {
        assert_eq!(Quorum::One.resolve(3, Quorum::One, "r").unwrap(), 1);
        assert_eq!(Quorum::Quorum.resolve(3, Quorum::One, "r").unwrap(), 2);
        assert_eq!(Quorum::Quorum.resolve(5, Quorum::One, "r").unwrap(), 3);
        assert_eq!(Quorum::All.resolve(5, Quorum::One, "r").unwrap(), 5);
        assert_eq!(Quorum::Default.resolve(3, Quorum::All, "r").unwrap(), 3);
    }

    #[test]
    fn a_count_above_n_is_a_client_error() {
        let err = Quorum::Count(4).resolve(3, Quorum::One, "r").unwrap_err();
        assert!(
            matches!(err, Error::InvalidRequest(ref m) if m.contains("r=4")),
            "{err}"
        );
    }

    #[test]
    fn quorum_parses_riak_spellings() {
        assert_eq!("quorum".parse::<Quorum>().unwrap(), Quorum::Quorum);
        assert_eq!("2".parse::<Quorum>().unwrap(), Quorum::Count(2));
        assert!("two".parse::<Quorum>().is_err());
        assert!("-1".parse::<Quorum>().is_err());
    }

    #[test]
    fn invalid_props_are_refused() {
        let mut p = BucketProps::default();
        assert!(p.validate().is_ok());
        p.n_val = 0;
        assert!(p.validate().is_err());
        p = BucketProps {
            r: Quorum::Count(4),
            ..BucketProps::default()
        };
        assert!(p.validate().is_err());
        p = BucketProps {
            last_write_wins: true,
            ..BucketProps::default()
        };
        assert!(p.validate().is_err());
        p = BucketProps {
            last_write_wins: true,
            allow_mult: false,
            ..BucketProps::default()
        };
        assert!(p.validate().is_ok());
    }
}
