//! An in-process network for tests and examples: every node's [`MembershipService`] by
//! address, reached through [`MemPeers`] (a [`GossipPeers`] with no sockets), and a
//! [`MemStore`] that keeps the saved state in memory. Addresses can be taken down to model an
//! unreachable node.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use dynamo_ring::NodeId;

use crate::driver::{
    GossipPeers, Identity, Membership, MembershipService, Options, PartitionMover, StateStore,
};
use crate::error::{Error, Result};
use crate::gossip::GossipDigest;
use crate::state::{ClusterState, MemberInfo, Status};

/// Every node's service by address; addresses in `down` do not answer.
#[derive(Default)]
pub struct MemNet {
    nodes: RwLock<HashMap<String, Arc<dyn MembershipService>>>,
    down: RwLock<BTreeSet<String>>,
}

impl MemNet {
    /// Makes `service` reachable at `address`.
    pub fn register(&self, address: &str, service: Arc<dyn MembershipService>) {
        self.nodes.write().insert(address.to_string(), service);
    }

    /// Makes `address` unreachable (`true`) or reachable again.
    pub fn set_down(&self, address: &str, down: bool) {
        if down {
            self.down.write().insert(address.to_string());
        } else {
            self.down.write().remove(address);
        }
    }

    /// Whether `address` is unreachable.
    pub fn is_down(&self, address: &str) -> bool {
        self.down.read().contains(address)
    }
}

/// [`GossipPeers`] over a [`MemNet`].
#[derive(Clone)]
pub struct MemPeers(pub Arc<MemNet>);

impl MemPeers {
    fn reach(&self, address: &str) -> Result<Arc<dyn MembershipService>> {
        let unreachable = || Error::Peer {
            peer: address.to_string(),
            reason: "unreachable".into(),
        };
        if self.0.is_down(address) {
            return Err(unreachable());
        }
        self.0
            .nodes
            .read()
            .get(address)
            .cloned()
            .ok_or_else(unreachable)
    }
}

impl GossipPeers for MemPeers {
    async fn exchange_digest(
        &self,
        address: &str,
        digest: GossipDigest,
        _: Duration,
    ) -> Result<Option<Vec<u8>>> {
        self.reach(address)?.on_digest(digest)
    }

    async fn push_state(&self, address: &str, state: Vec<u8>, _: Duration) -> Result<()> {
        self.reach(address)?.on_push(state)
    }

    async fn pull_state(&self, address: &str, _: Duration) -> Result<Vec<u8>> {
        Ok(self.reach(address)?.on_pull())
    }
}

/// A [`StateStore`] in memory.
#[derive(Default)]
pub struct MemStore(Mutex<Option<Vec<u8>>>);

impl StateStore for MemStore {
    fn load(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.0.lock().clone())
    }

    fn save(&self, state: &[u8]) -> Result<()> {
        *self.0.lock() = Some(state.to_vec());
        Ok(())
    }
}

/// A cluster of drivers on one [`MemNet`], for convergence tests and figures.
pub struct MemCluster {
    /// The network.
    pub net: Arc<MemNet>,
    /// The nodes, `MemCluster::id(0)` first.
    pub nodes: Vec<Membership<MemPeers>>,
}

/// Q of a [`MemCluster`]'s ring.
pub const MEM_CLUSTER_Q: u32 = 64;

impl MemCluster {
    /// The id of node `i`.
    pub fn id(i: usize) -> NodeId {
        // Infallible: three digits and a letter are a valid node id.
        NodeId::new(format!("n{i:03}")).unwrap_or_else(|_| unreachable!())
    }

    /// The address of node `i`.
    pub fn address(i: usize) -> String {
        format!("10.0.{}.{}:7001", i / 250, i % 250)
    }

    /// `size` members bootstrapped from one static list, then `extra` lone nodes (to join it),
    /// with nodes `seeds` as seeds; node `i` runs transfers with `mover(i)`.
    pub fn new(
        size: usize,
        extra: usize,
        seeds: &[usize],
        rng_seed: u64,
        mover: impl Fn(usize) -> Option<Arc<dyn PartitionMover>>,
    ) -> Result<MemCluster> {
        let net = Arc::new(MemNet::default());
        let info = |i: usize| MemberInfo {
            version: 0,
            address: MemCluster::address(i),
            zone: None,
            weight: 1,
            status: Status::Valid,
        };
        let members: Vec<(NodeId, MemberInfo)> =
            (0..size).map(|i| (MemCluster::id(i), info(i))).collect();
        let mut nodes = Vec::new();
        for i in 0..size + extra {
            let members = if i < size {
                members.clone()
            } else {
                vec![(MemCluster::id(i), info(i))]
            };
            let options = Options {
                seeds: seeds.iter().map(|&s| MemCluster::address(s)).collect(),
                rng_seed: rng_seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
                ..Options::default()
            };
            let node = Membership::open(
                Identity {
                    me: MemCluster::id(i),
                    address: MemCluster::address(i),
                },
                || ClusterState::bootstrap("mem", MEM_CLUSTER_Q, 3, members),
                MemPeers(Arc::clone(&net)),
                Arc::new(MemStore::default()),
                mover(i),
                options,
            )?;
            net.register(&MemCluster::address(i), Arc::new(node.clone()));
            nodes.push(node);
        }
        Ok(MemCluster { net, nodes })
    }

    /// Round `r`: every reachable node gossips once, in an order that changes every round (so
    /// a change can travel more than one hop in a round, as with real timers out of phase).
    pub async fn round(&self, r: usize) {
        let n = self.nodes.len();
        let step = [1, 3, 7, 11, 13]
            .into_iter()
            .rev()
            .find(|s| !n.is_multiple_of(*s))
            .unwrap_or(1);
        for k in 0..n {
            let i = (k * step + r) % n;
            if !self.net.is_down(&MemCluster::address(i)) {
                self.nodes[i].gossip_round().await;
            }
        }
    }

    /// Makes a change at the last node, then gossips until every node holds it (the first
    /// number) and every node knows every member has seen it (the second), each at most
    /// `max_rounds`.
    pub async fn spread(&self, max_rounds: usize) -> (Option<usize>, Option<usize>) {
        let bucket = b"spread".to_vec();
        let Some(last) = self.nodes.last() else {
            return (None, None);
        };
        let version = last.state().buckets().get(&bucket).map_or(0, |b| b.version);
        if last.set_bucket_props(bucket.clone(), vec![1]).is_err() {
            return (None, None);
        }
        let (mut have, mut know) = (None, None);
        for r in 1..=max_rounds {
            self.round(r).await;
            let all = self.nodes.iter().all(|n| {
                n.state()
                    .buckets()
                    .get(&bucket)
                    .is_some_and(|b| b.version > version)
            });
            if all && have.is_none() {
                have = Some(r);
            }
            if all && self.nodes.iter().all(|n| n.state().converged()) {
                know = Some(r);
                break;
            }
        }
        (have, know)
    }
}
