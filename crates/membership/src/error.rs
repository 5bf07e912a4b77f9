//! The crate's one error type.

use dynamo_ring::NodeId;

/// Everything that can go wrong in membership: refused operator commands, states that cannot be
/// merged, undecodable bytes, and (from the driver) peers or storage that failed.
///
/// A call that returns an error changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The other state belongs to another cluster.
    #[error("state of cluster {theirs:?} cannot merge into cluster {ours:?}")]
    WrongCluster {
        /// This node's cluster name.
        ours: String,
        /// The other state's cluster name.
        theirs: String,
    },
    /// The other state has the cluster's name but another history: it was bootstrapped apart
    /// (a node started alone, or another cluster of the same name) and never joined this one.
    #[error(
        "a state of cluster {cluster:?} with another history (bootstrapped apart; join it instead)"
    )]
    DifferentHistory {
        /// The cluster's name.
        cluster: String,
    },
    /// Two states share a cluster name and a ring epoch but hold different rings: they were never
    /// merged (two halves that formed separate clusters, or a node restored from another
    /// cluster's backup). Mixing them would lose placements, so the merge is refused.
    #[error("split brain: cluster {cluster:?} has two different rings at epoch {epoch}")]
    DivergentRings {
        /// The cluster's name.
        cluster: String,
        /// The epoch both rings carry.
        epoch: u64,
    },
    /// Two states agree on the current ring but hold different pending next rings.
    #[error("cluster {cluster:?} has two different pending rings after epoch {epoch}")]
    DivergentPending {
        /// The cluster's name.
        cluster: String,
        /// The current ring's epoch.
        epoch: u64,
    },
    /// The two states were created with different replication factors.
    #[error("replication factor differs: {ours} here, {theirs} in the other state")]
    ReplicationMismatch {
        /// This state's N.
        ours: u8,
        /// The other state's N.
        theirs: u8,
    },
    /// An operator command is not valid in the current state; the reason says why.
    #[error("refused: {0}")]
    Refused(String),
    /// The named node is not a member.
    #[error("{0} is not a member")]
    UnknownMember(NodeId),
    /// `commit` was asked while some member has not seen the latest state.
    #[error("the cluster has not converged: {0} have not seen the latest state")]
    NotConverged(String),
    /// `commit` was asked for a plan that is no longer the one the staged changes give.
    #[error("the plan changed since it was shown (shown {shown}, now {current}); run plan again")]
    PlanChanged {
        /// The plan id the operator saw.
        shown: String,
        /// The plan id the state gives now.
        current: String,
    },
    /// The ring refused a change (last member leaving, bad weight, ...).
    #[error("ring: {0}")]
    Ring(#[from] dynamo_ring::Error),
    /// Bytes that are not a valid encoded state (wrong version, truncated, inconsistent).
    #[error("cannot decode cluster state: {0}")]
    Decode(String),
    /// A peer could not be reached or failed the exchange.
    #[error("peer {peer}: {reason}")]
    Peer {
        /// The peer's address.
        peer: String,
        /// What went wrong.
        reason: String,
    },
    /// Persisting or loading the state failed.
    #[error("state store: {0}")]
    Store(String),
    /// The remote node refused the request; the message is its own error.
    #[error("{0}")]
    Remote(String),
    /// A partition transfer failed.
    #[error("transfer: {0}")]
    Transfer(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Whether retrying the same call later could succeed: peer, store and transfer failures
    /// are transient, and convergence comes with time; everything else is a property of the
    /// input.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Peer { .. } | Error::Store(_) | Error::Transfer(_) | Error::NotConverged(_)
        )
    }
}
