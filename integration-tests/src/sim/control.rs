//! Faults and the channel that carries them from simulated clients (the nemesis, scripted tests)
//! to the driver, which alone may crash and restart hosts. A client asks with
//! [`Control::apply`] and resumes once the driver has carried the fault out, before the next
//! simulation step.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::cluster::Cluster;
use super::{Error, Result};

/// One thing the nemesis can do to the cluster. Node groups are host names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// No message crosses between the two groups, either way; messages in flight are dropped.
    Partition(Vec<String>, Vec<String>),
    /// Messages from the first group to the second are dropped; the other way still works.
    PartitionOneway(Vec<String>, Vec<String>),
    /// Messages between the groups are held (delayed) until healed.
    Hold(Vec<String>, Vec<String>),
    /// The links between the groups work again both ways, and held messages are delivered.
    Heal(Vec<String>, Vec<String>),
    /// Every link between nodes works again, crashed nodes restart and clocks are set right.
    HealAll,
    /// The node's software stops at once (its disk survives).
    Crash(String),
    /// A crashed node starts again on its disk.
    Restart(String),
    /// The node crashes, loses its disk and starts on an empty one with a new epoch.
    Wipe(String),
    /// The node's clock runs this many milliseconds ahead (negative: behind).
    Skew(String, i64),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = |v: &[String]| v.join(",");
        match self {
            Fault::Partition(a, b) => write!(f, "partition [{}] | [{}]", g(a), g(b)),
            Fault::PartitionOneway(a, b) => write!(f, "partition [{}] -> [{}]", g(a), g(b)),
            Fault::Hold(a, b) => write!(f, "hold [{}] ~ [{}]", g(a), g(b)),
            Fault::Heal(a, b) => write!(f, "heal [{}] ~ [{}]", g(a), g(b)),
            Fault::HealAll => write!(f, "heal all"),
            Fault::Crash(n) => write!(f, "crash {n}"),
            Fault::Restart(n) => write!(f, "restart {n}"),
            Fault::Wipe(n) => write!(f, "wipe {n}"),
            Fault::Skew(n, ms) => write!(f, "skew {n} {ms:+} ms"),
        }
    }
}

/// The queue of faults waiting for the driver.
#[derive(Default)]
pub struct Control {
    queue: Mutex<VecDeque<(Fault, oneshot::Sender<()>)>>,
}

impl Control {
    /// Asks the driver to carry out `fault` and waits until it has.
    pub async fn apply(&self, fault: Fault) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.queue.lock().push_back((fault, tx));
        rx.await
            .map_err(|_| Error::Sim("the driver dropped a fault unapplied".into()))
    }

    /// Takes every waiting fault (the driver's side).
    pub(crate) fn take(&self) -> Vec<(Fault, oneshot::Sender<()>)> {
        self.queue.lock().drain(..).collect()
    }
}

/// Carries out faults on a simulation; remembers which nodes are down.
pub(crate) struct Executor {
    crashed: BTreeSet<String>,
}

impl Executor {
    pub(crate) fn new() -> Executor {
        Executor {
            crashed: BTreeSet::new(),
        }
    }

    /// Applies `fault` to `sim`. Names that are not nodes of `cluster` are an error.
    pub(crate) fn execute(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        cluster: &Cluster,
        fault: &Fault,
    ) -> Result<()> {
        let pairs = |a: &[String], b: &[String]| -> Result<Vec<(String, String)>> {
            for n in a.iter().chain(b) {
                cluster.node(n)?;
            }
            Ok(a.iter()
                .flat_map(|x| b.iter().map(move |y| (x.clone(), y.clone())))
                .filter(|(x, y)| x != y)
                .collect())
        };
        match fault {
            Fault::Partition(a, b) => {
                for (x, y) in pairs(a, b)? {
                    sim.partition(x.as_str(), y.as_str());
                }
            }
            Fault::PartitionOneway(a, b) => {
                for (x, y) in pairs(a, b)? {
                    sim.partition_oneway(x.as_str(), y.as_str());
                }
            }
            Fault::Hold(a, b) => {
                for (x, y) in pairs(a, b)? {
                    sim.hold(x.as_str(), y.as_str());
                }
            }
            Fault::Heal(a, b) => {
                for (x, y) in pairs(a, b)? {
                    sim.release(x.as_str(), y.as_str());
                }
            }
            Fault::HealAll => {
                let names = cluster.names();
                for (x, y) in pairs(&names, &names)? {
                    sim.release(x.as_str(), y.as_str());
                }
                for n in std::mem::take(&mut self.crashed) {
                    sim.bounce(n.as_str());
                }
                for node in &cluster.nodes {
                    node.clock.set_skew_ms(0);
                }
            }
            Fault::Crash(n) => {
                cluster.node(n)?;
                if self.crashed.insert(n.clone()) {
                    sim.crash(n.as_str());
                }
            }
            Fault::Restart(n) => {
                cluster.node(n)?;
                if self.crashed.remove(n) {
                    sim.bounce(n.as_str());
                }
            }
            Fault::Wipe(n) => {
                let node = cluster.node(n)?;
                if !self.crashed.remove(n) {
                    sim.crash(n.as_str());
                }
                node.wipe();
                sim.bounce(n.as_str());
            }
            Fault::Skew(n, ms) => cluster.node(n)?.clock.set_skew_ms(*ms),
        }
        Ok(())
    }
}
