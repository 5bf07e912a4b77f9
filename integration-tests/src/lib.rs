//! Test harness for multi-node tests: a cluster of real nodes in this process, each with its own
//! redb data directory and its own RPC and HTTP listeners on 127.0.0.1 (port 0, so tests run in
//! parallel). The tests themselves live under `tests/`.

pub mod procs;
pub mod sim;

use std::collections::BTreeMap;
use std::time::Duration;

use dynamo_client::{Client, ClientConfig};
use dynamo_node::config::{BucketConfig, DurabilityConfig, LogFormat, MemberConfig, NodeConfig};
use dynamo_node::{Listeners, RunningNode};
use tempfile::TempDir;

/// Cluster name used by test clusters.
pub const CLUSTER: &str = "itest";

/// Shared secret used by test clusters.
pub const SECRET: &str = "integration-test-secret";

/// A running test cluster.
pub struct TestCluster {
    /// The nodes, `n1` first.
    pub nodes: Vec<RunningNode>,
    /// Each node's configuration (with its real addresses).
    pub configs: Vec<NodeConfig>,
    _dir: TempDir,
}

impl TestCluster {
    /// Starts `size` nodes with default bucket properties (N=3, R=2, W=2) and the given
    /// per-bucket overrides.
    pub async fn start(
        size: usize,
        buckets: BTreeMap<String, BucketConfig>,
    ) -> anyhow::Result<TestCluster> {
        let dir = tempfile::tempdir()?;
        let mut listeners = Vec::new();
        for _ in 0..size {
            listeners.push(Listeners {
                rpc: dynamo_rpc::TcpListener::bind("127.0.0.1:0").await?,
                http: tokio::net::TcpListener::bind("127.0.0.1:0").await?,
            });
        }
        let mut members = Vec::new();
        for (i, l) in listeners.iter().enumerate() {
            members.push(MemberConfig {
                id: format!("n{}", i + 1),
                address: l.rpc.local_addr()?.to_string(),
                zone: None,
                weight: 1,
            });
        }
        let mut configs = Vec::new();
        let mut nodes = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let config = NodeConfig {
                node_id: format!("n{}", i + 1),
                rpc_listen: l.rpc.local_addr()?.to_string(),
                http_listen: l.http.local_addr()?.to_string(),
                data_dir: dir.path().join(format!("n{}", i + 1)),
                cluster_name: CLUSTER.into(),
                cluster_secret: SECRET.into(),
                partitions: 64,
                members: members.clone(),
                seeds: Vec::new(),
                rpc_advertise: None,
                zone: None,
                weight: 1,
                bucket_defaults: BucketConfig::default(),
                buckets: buckets.clone(),
                durability: DurabilityConfig::Sync,
                max_value_bytes: 1024 * 1024,
                log_format: LogFormat::Human,
                anti_entropy: Default::default(),
            };
            nodes.push(RunningNode::start_with(config.clone(), l).await?);
            configs.push(config);
        }
        Ok(TestCluster {
            nodes,
            configs,
            _dir: dir,
        })
    }

    /// The HTTP base URL of node `i` (0-based).
    pub fn http(&self, i: usize) -> String {
        format!("http://{}", self.nodes[i].http_addr)
    }

    /// A Rust client seeded with every node.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let config = ClientConfig {
            request_timeout: Duration::from_secs(5),
            ..ClientConfig::new(
                self.nodes.iter().map(|n| n.rpc_addr.to_string()),
                CLUSTER,
                SECRET.as_bytes().to_vec(),
            )
        };
        Ok(Client::connect(config).await?)
    }

    /// Index of node `id` ("n2" -> 1).
    pub fn index_of(&self, id: &dynamo_ring::NodeId) -> usize {
        self.nodes
            .iter()
            .position(|n| &n.id == id)
            .unwrap_or(usize::MAX)
    }

    /// Stops every node gracefully.
    pub async fn stop(self) -> anyhow::Result<()> {
        for n in self.nodes {
            n.stop().await?;
        }
        Ok(())
    }
}
