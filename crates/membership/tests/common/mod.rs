//! A model cluster for the property tests: every node's state in memory, operations applied as
//! an operator and gossip would, and a model of which nodes hold each partition's data.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use dynamo_membership::{Change, ClusterState, MemberInfo, Phase, Plan, PlanId, Progress, Status};
use dynamo_ring::{NodeId, PartitionId};

pub const CLUSTER: &str = "laws";
pub const Q: u32 = 16;
pub const N: u8 = 3;

pub fn id(i: usize) -> NodeId {
    NodeId::new(format!("n{i:02}")).unwrap()
}

pub fn info(i: usize) -> MemberInfo {
    MemberInfo {
        version: 0,
        address: format!("10.0.0.{i}:7001"),
        zone: None,
        weight: 1,
        status: Status::Valid,
    }
}

/// One model node.
pub struct SimNode {
    pub id: NodeId,
    pub state: ClusterState,
    pub alive: bool,
}

/// The model cluster.
pub struct Sim {
    pub nodes: Vec<SimNode>,
    /// Every state any node held, in order.
    pub history: Vec<ClusterState>,
    /// Nodes holding each partition's data.
    pub holders: BTreeMap<PartitionId, BTreeSet<NodeId>>,
    /// Nodes an operator command named.
    pub named: BTreeSet<NodeId>,
    /// Plans committed, by id.
    pub committed: BTreeMap<PlanId, Plan>,
    /// Nodes that never take part (unreachable from the start), unless an operator removes them.
    pub unreachable: BTreeSet<NodeId>,
    next: usize,
}

/// One step of the model.
#[derive(Clone, Debug)]
pub enum Op {
    Gossip(usize, usize),
    Join(usize),
    Leave(usize, usize),
    Remove(usize, usize),
    Commit(usize),
    Sync(usize),
    Props(usize, u8),
    Clear(usize),
    /// Gossip all-to-all until quiet (so that commits find a converged cluster).
    Settle,
    /// An operator who waits for convergence, then commits at a node.
    PatientCommit(usize),
}

impl Sim {
    /// `size` valid members; the last `unreachable` of them never gossip.
    pub fn new(size: usize, unreachable: usize) -> Sim {
        let members = (0..size).map(|i| (id(i), info(i))).collect();
        let state = ClusterState::bootstrap(CLUSTER, Q, N, members).unwrap();
        let mut holders = BTreeMap::new();
        for p in state.ring().partitions() {
            let pl = state
                .ring()
                .preference_list_for_partition(p, usize::from(N));
            holders.insert(p, pl.primaries().iter().cloned().collect());
        }
        let mut nodes = Vec::new();
        for i in 0..size {
            let mut s = state.clone();
            s.settle(&id(i));
            nodes.push(SimNode {
                id: id(i),
                state: s,
                alive: i + unreachable < size,
            });
        }
        let unreachable = (size - unreachable..size).map(id).collect();
        let history = nodes.iter().map(|n| n.state.clone()).collect();
        Sim {
            nodes,
            history,
            holders,
            named: BTreeSet::new(),
            committed: BTreeMap::new(),
            unreachable,
            next: size,
        }
    }

    fn live(&self, i: usize) -> Option<usize> {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&j| self.nodes[j].alive)
            .collect();
        (!live.is_empty()).then(|| live[i % live.len()])
    }

    fn record(&mut self, i: usize) {
        let s = self.nodes[i].state.clone();
        if let Some(p) = s.pending() {
            self.committed
                .entry(p.plan_id)
                .or_insert_with(|| panic!("pending plan {} was never committed", p.plan_id));
        }
        self.history.push(s);
    }

    /// Node `a` absorbs node `b`'s state, and pushes back if `b` is behind.
    pub fn gossip(&mut self, a: usize, b: usize) {
        if a == b || !self.nodes[a].alive || !self.nodes[b].alive {
            return;
        }
        let remote = self.nodes[b].state.clone();
        let me = self.nodes[a].id.clone();
        let absorbed = self.nodes[a].state.absorb(&me, &remote).unwrap();
        self.record(a);
        if absorbed.peer_behind {
            let back = self.nodes[a].state.clone();
            let them = self.nodes[b].id.clone();
            self.nodes[b].state.absorb(&them, &back).unwrap();
            self.record(b);
        }
    }

    pub fn apply(&mut self, op: &Op) {
        match *op {
            Op::Gossip(a, b) => {
                if let (Some(a), Some(b)) = (self.live(a), self.live(b)) {
                    self.gossip(a, b);
                }
            }
            Op::Join(a) => {
                let Some(a) = self.live(a) else { return };
                if self.nodes.len() >= 9 {
                    return;
                }
                let i = self.next;
                self.next += 1;
                let fresh = ClusterState::bootstrap(CLUSTER, Q, N, vec![(id(i), info(i))]).unwrap();
                let Ok(joined) = fresh.joined_through(&self.nodes[a].state, &id(i)) else {
                    return;
                };
                self.named.insert(id(i));
                self.nodes.push(SimNode {
                    id: id(i),
                    state: joined,
                    alive: true,
                });
                let j = self.nodes.len() - 1;
                self.record(j);
                self.gossip(a, j);
            }
            Op::Leave(a, b) => self.stage(a, b, |node| Change::Leave { node }),
            Op::Remove(a, b) => {
                let Some(a) = self.live(a) else { return };
                let b = b % self.nodes.len();
                if a == b {
                    return;
                }
                // One removal per run, so a partition always keeps a live source.
                if self
                    .nodes
                    .iter()
                    .any(|n| !n.alive && !self.unreachable.contains(&n.id))
                    && !self.unreachable.contains(&self.nodes[b].id)
                {
                    return;
                }
                let node = self.nodes[b].id.clone();
                let me = self.nodes[a].id.clone();
                if self.nodes[a]
                    .state
                    .stage(Change::Remove { node: node.clone() })
                    .is_ok()
                {
                    self.nodes[a].state.settle(&me);
                    self.named.insert(node.clone());
                    // An operator removes only a node that is gone: its copies are lost.
                    self.nodes[b].alive = false;
                    for h in self.holders.values_mut() {
                        h.remove(&node);
                    }
                    self.record(a);
                }
            }
            Op::Commit(a) => {
                let Some(a) = self.live(a) else { return };
                let me = self.nodes[a].id.clone();
                let Ok(plan) = self.nodes[a].state.plan() else {
                    return;
                };
                if self.nodes[a].state.commit(plan.id).is_ok() {
                    self.committed.insert(plan.id, plan);
                    self.nodes[a].state.settle(&me);
                    self.record(a);
                }
            }
            Op::Sync(a) => {
                let Some(a) = self.live(a) else { return };
                let me = self.nodes[a].id.clone();
                let sends = self.nodes[a].state.transfers_to_send(&me);
                let Some((t, _)) = sends.first() else { return };
                // The sender streams what it holds; the receiver then holds it too.
                assert!(
                    self.holders[&t.partition].contains(&t.from),
                    "{} sends partition {} it does not hold",
                    t.from,
                    t.partition
                );
                self.holders
                    .get_mut(&t.partition)
                    .unwrap()
                    .insert(t.to.clone());
                let done = Progress {
                    phase: Phase::Synced,
                    keys: 1,
                    bytes: 1,
                };
                self.nodes[a].state.record_progress(t, done);
                self.nodes[a].state.settle(&me);
                self.record(a);
            }
            Op::Props(a, v) => {
                let Some(a) = self.live(a) else { return };
                let me = self.nodes[a].id.clone();
                self.nodes[a].state.set_bucket_props(&me, b"b", vec![v]);
                self.nodes[a].state.settle(&me);
                self.record(a);
            }
            Op::Settle => self.drain_gossip_only(),
            Op::PatientCommit(a) => {
                self.drain_gossip_only();
                self.apply(&Op::Commit(a));
            }
            Op::Clear(a) => {
                let Some(a) = self.live(a) else { return };
                let me = self.nodes[a].id.clone();
                self.nodes[a].state.clear_staged();
                self.nodes[a].state.settle(&me);
                self.record(a);
            }
        }
    }

    fn stage(&mut self, a: usize, b: usize, change: impl Fn(NodeId) -> Change) {
        let Some(a) = self.live(a) else { return };
        let node = self.nodes[b % self.nodes.len()].id.clone();
        let me = self.nodes[a].id.clone();
        if self.nodes[a].state.stage(change(node.clone())).is_ok() {
            self.named.insert(node);
            self.nodes[a].state.settle(&me);
            self.record(a);
        }
    }

    /// Gossips all-to-all until nothing changes (bounded), running no transfer.
    pub fn drain_gossip_only(&mut self) {
        for _ in 0..64 {
            let before: Vec<[u8; 16]> = self.nodes.iter().map(|n| n.state.full_digest()).collect();
            for a in 0..self.nodes.len() {
                for b in 0..self.nodes.len() {
                    self.gossip(a, b);
                }
            }
            let after: Vec<[u8; 16]> = self.nodes.iter().map(|n| n.state.full_digest()).collect();
            if before == after {
                return;
            }
        }
        panic!("the model cluster did not settle");
    }

    /// Gossips all-to-all and runs every transfer until nothing changes (bounded).
    pub fn drain(&mut self) {
        for _ in 0..64 {
            let before: Vec<[u8; 16]> = self.nodes.iter().map(|n| n.state.full_digest()).collect();
            for a in 0..self.nodes.len() {
                for b in 0..self.nodes.len() {
                    self.gossip(a, b);
                }
                for _ in 0..Q * u32::from(N) {
                    self.apply(&Op::Sync(a));
                }
            }
            let after: Vec<[u8; 16]> = self.nodes.iter().map(|n| n.state.full_digest()).collect();
            if before == after {
                return;
            }
        }
        panic!("the model cluster did not settle");
    }
}
