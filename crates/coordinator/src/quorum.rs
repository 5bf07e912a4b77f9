//! Pure quorum bookkeeping for one request (paper section 4.5): which replies have arrived, whether
//! the request can answer yet, and whether it can still succeed at all. No I/O and no clocks; the
//! async driver ([`Coordinator`](crate::Coordinator)) feeds replies in and acts on the verdicts.

use dynamo_ring::NodeId;
use dynamo_storage::VersionedObject;

use crate::error::Error;

/// A replica's answer to one replica write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteReply {
    /// Stored; `durable` when it reached stable storage before the ack.
    Stored {
        /// The ack came after an fsync (counts towards DW).
        durable: bool,
    },
    /// The replica failed or did not answer.
    Failed(String),
}

/// Where a write stands after a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep waiting.
    Pending,
    /// Every quorum is met: answer the client now (outstanding replica writes go on in the background).
    Succeeded,
    /// A quorum can no longer be met, even if every outstanding replica answers.
    Failed(Error),
}

/// Counts write acknowledgements towards W, DW and PW.
#[derive(Clone, Debug)]
pub struct WriteTally {
    w: u8,
    dw: u8,
    pw: u8,
    outstanding: usize,
    acks: u8,
    durable: u8,
    primary_acks: u8,
    primaries_outstanding: usize,
    errors: Vec<String>,
    decided: bool,
}

impl WriteTally {
    /// A write sent to `sent` replicas, `primaries` of which are primaries for the key, waiting for
    /// `w` acks of which `dw` durable and `pw` from primaries.
    pub fn new(w: u8, dw: u8, pw: u8, sent: usize, primaries: usize) -> WriteTally {
        WriteTally {
            w,
            dw,
            pw,
            outstanding: sent,
            acks: 0,
            durable: 0,
            primary_acks: 0,
            primaries_outstanding: primaries,
            errors: Vec::new(),
            decided: false,
        }
    }

    /// Records one reply from a replica (`primary` says whether it is one of the key's top N) and
    /// returns the verdict. Once a verdict other than `Pending` was returned, later replies return
    /// `Pending` again: the request was already answered.
    pub fn record(&mut self, from: &NodeId, primary: bool, reply: WriteReply) -> Verdict {
        self.outstanding = self.outstanding.saturating_sub(1);
        if primary {
            self.primaries_outstanding = self.primaries_outstanding.saturating_sub(1);
        }
        match reply {
            WriteReply::Stored { durable } => {
                self.acks = self.acks.saturating_add(1);
                if durable {
                    self.durable = self.durable.saturating_add(1);
                }
                if primary {
                    self.primary_acks = self.primary_acks.saturating_add(1);
                }
            }
            WriteReply::Failed(e) => self.errors.push(format!("{from}: {e}")),
        }
        if self.decided {
            return Verdict::Pending;
        }
        let verdict = self.verdict();
        if verdict != Verdict::Pending {
            self.decided = true;
        }
        verdict
    }

    /// The verdict if no further reply arrives (deadline passed).
    pub fn give_up(&mut self) -> Error {
        self.decided = true;
        self.shortfall()
            .unwrap_or_else(|| Error::Internal("write gave up after succeeding".into()))
    }

    fn verdict(&self) -> Verdict {
        if self.acks >= self.w && self.durable >= self.dw && self.primary_acks >= self.pw {
            return Verdict::Succeeded;
        }
        let can_reach =
            |have: u8, more: usize, need: u8| usize::from(have) + more >= usize::from(need);
        if !can_reach(self.acks, self.outstanding, self.w)
            || !can_reach(self.durable, self.outstanding, self.dw)
            || !can_reach(self.primary_acks, self.primaries_outstanding, self.pw)
        {
            return Verdict::Failed(
                self.shortfall()
                    .unwrap_or_else(|| Error::Internal("tally".into())),
            );
        }
        Verdict::Pending
    }

    fn shortfall(&self) -> Option<Error> {
        let (kind, needed, got) = if self.acks < self.w {
            ("w", self.w, self.acks)
        } else if self.durable < self.dw {
            ("dw", self.dw, self.durable)
        } else if self.primary_acks < self.pw {
            ("pw", self.pw, self.primary_acks)
        } else {
            return None;
        };
        Some(Error::Unavailable {
            kind: kind.into(),
            needed,
            got,
            detail: self.detail(),
        })
    }

    fn detail(&self) -> String {
        if self.errors.is_empty() {
            "no reply in time".into()
        } else {
            self.errors.join("; ")
        }
    }
}

/// One replica's answer to a replica read.
#[derive(Clone, Debug)]
pub enum ReadReply {
    /// The replica's version of the key (`None`: it has never seen the key).
    Found(Option<VersionedObject>),
    /// The replica failed or did not answer.
    Failed(String),
}

/// Collects replica answers towards R and PR.
#[derive(Clone, Debug)]
pub struct ReadTally {
    r: u8,
    pr: u8,
    outstanding: usize,
    primaries_outstanding: usize,
    primary_ok: u8,
    replies: Vec<(NodeId, Option<VersionedObject>)>,
    errors: Vec<String>,
    decided: bool,
}

impl ReadTally {
    /// A read sent to `sent` replicas, `primaries` of them primaries, waiting for `r` answers of
    /// which `pr` from primaries.
    pub fn new(r: u8, pr: u8, sent: usize, primaries: usize) -> ReadTally {
        ReadTally {
            r,
            pr,
            outstanding: sent,
            primaries_outstanding: primaries,
            primary_ok: 0,
            replies: Vec::new(),
            errors: Vec::new(),
            decided: false,
        }
    }

    /// Records one replica's answer and returns the verdict (see [`WriteTally::record`]).
    pub fn record(&mut self, from: &NodeId, primary: bool, reply: ReadReply) -> Verdict {
        self.outstanding = self.outstanding.saturating_sub(1);
        if primary {
            self.primaries_outstanding = self.primaries_outstanding.saturating_sub(1);
        }
        match reply {
            ReadReply::Found(object) => {
                if primary {
                    self.primary_ok = self.primary_ok.saturating_add(1);
                }
                self.replies.push((from.clone(), object));
            }
            ReadReply::Failed(e) => self.errors.push(format!("{from}: {e}")),
        }
        if self.decided {
            return Verdict::Pending;
        }
        let verdict = self.verdict();
        if verdict != Verdict::Pending {
            self.decided = true;
        }
        verdict
    }

    /// The answers collected so far, by replica.
    pub fn replies(&self) -> &[(NodeId, Option<VersionedObject>)] {
        &self.replies
    }

    /// The verdict if no further reply arrives.
    pub fn give_up(&mut self) -> Error {
        self.decided = true;
        self.shortfall()
    }

    fn verdict(&self) -> Verdict {
        let ok = self.replies.len();
        if ok >= usize::from(self.r) && self.primary_ok >= self.pr {
            return Verdict::Succeeded;
        }
        if ok + self.outstanding < usize::from(self.r)
            || usize::from(self.primary_ok) + self.primaries_outstanding < usize::from(self.pr)
        {
            return Verdict::Failed(self.shortfall());
        }
        Verdict::Pending
    }

    fn shortfall(&self) -> Error {
        let got = u8::try_from(self.replies.len()).unwrap_or(u8::MAX);
        let (kind, needed, got) = if got < self.r {
            ("r", self.r, got)
        } else {
            ("pr", self.pr, self.primary_ok)
        };
        let detail = if self.errors.is_empty() {
            "no reply in time".into()
        } else {
            self.errors.join("; ")
        };
        Error::Unavailable {
            kind: kind.into(),
            needed,
            got,
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u8) -> NodeId {
        NodeId::new(format!("n{i}")).unwrap()
    }

    #[test]
    fn write_succeeds_at_w_and_ignores_later_replies() {
        let mut t = WriteTally::new(2, 0, 0, 3, 3);
        assert_eq!(
            t.record(&node(1), true, WriteReply::Stored { durable: true }),
            Verdict::Pending
        );
        assert_eq!(
            t.record(&node(2), true, WriteReply::Stored { durable: true }),
            Verdict::Succeeded
        );
        assert_eq!(
            t.record(&node(3), true, WriteReply::Stored { durable: true }),
            Verdict::Pending
        );
    }

    #[test]
    fn write_fails_as_soon_as_w_is_out_of_reach() {
        let mut t = WriteTally::new(2, 0, 0, 3, 3);
        assert_eq!(
            t.record(&node(1), true, WriteReply::Failed("down".into())),
            Verdict::Pending
        );
        match t.record(&node(2), true, WriteReply::Failed("refused".into())) {
            Verdict::Failed(Error::Unavailable {
                kind,
                needed,
                got,
                detail,
            }) => {
                assert_eq!((kind.as_str(), needed, got), ("w", 2, 0));
                assert!(
                    detail.contains("n1: down") && detail.contains("n2: refused"),
                    "{detail}"
                );
            }
            other => panic!("expected failure, got {other:?}"),
        }
    }

    #[test]
    fn dw_waits_for_durable_acks() {
        let mut t = WriteTally::new(1, 2, 0, 3, 3);
        assert_eq!(
            t.record(&node(1), true, WriteReply::Stored { durable: false }),
            Verdict::Pending
        );
        assert_eq!(
            t.record(&node(2), true, WriteReply::Stored { durable: true }),
            Verdict::Pending
        );
        assert_eq!(
            t.record(&node(3), true, WriteReply::Stored { durable: true }),
            Verdict::Succeeded
        );
    }

    #[test]
    fn pw_counts_only_primaries() {
        let mut t = WriteTally::new(2, 0, 2, 3, 2);
        assert_eq!(
            t.record(&node(4), false, WriteReply::Stored { durable: true }),
            Verdict::Pending
        );
        assert_eq!(
            t.record(&node(1), true, WriteReply::Stored { durable: true }),
            Verdict::Pending
        );
        match t.record(&node(2), true, WriteReply::Failed("down".into())) {
            Verdict::Failed(Error::Unavailable { kind, .. }) => assert_eq!(kind, "pw"),
            other => panic!("expected pw failure, got {other:?}"),
        }
    }

    #[test]
    fn give_up_names_the_missing_quorum() {
        let mut t = WriteTally::new(3, 0, 0, 3, 3);
        t.record(&node(1), true, WriteReply::Stored { durable: true });
        assert!(matches!(
            t.give_up(),
            Error::Unavailable {
                got: 1,
                needed: 3,
                ..
            }
        ));
    }

    #[test]
    fn read_succeeds_at_r_and_keeps_answers() {
        let mut t = ReadTally::new(2, 0, 3, 3);
        assert_eq!(
            t.record(&node(1), true, ReadReply::Found(None)),
            Verdict::Pending
        );
        assert_eq!(
            t.record(&node(2), true, ReadReply::Failed("x".into())),
            Verdict::Pending
        );
        assert_eq!(
            t.record(&node(3), true, ReadReply::Found(None)),
            Verdict::Succeeded
        );
        assert_eq!(t.replies().len(), 2);
    }

    #[test]
    fn read_fails_when_r_is_unreachable() {
        let mut t = ReadTally::new(3, 0, 3, 3);
        assert!(matches!(
            t.record(&node(1), true, ReadReply::Failed("x".into())),
            Verdict::Failed(Error::Unavailable { .. })
        ));
    }

    #[test]
    fn pr_needs_primaries() {
        let mut t = ReadTally::new(1, 1, 2, 1);
        assert_eq!(
            t.record(&node(9), false, ReadReply::Found(None)),
            Verdict::Pending
        );
        assert!(matches!(
            t.record(&node(1), true, ReadReply::Failed("x".into())),
            Verdict::Failed(Error::Unavailable { ref kind, .. }) if kind == "pr"
        ));
    }
}
