//! `dynamo dev`: a ready local cluster on 127.0.0.1, every node in this one process.

use std::path::{Path, PathBuf};

use crate::config::{BucketConfig, DurabilityConfig, LogFormat, MemberConfig, NodeConfig};
use crate::node::RunningNode;

/// Cluster name of the development cluster.
pub const DEV_CLUSTER_NAME: &str = "dev";

/// Shared secret of the development cluster. Public by design: `dynamo dev` is for a laptop.
pub const DEV_SECRET: &str = "dynamo-dev-secret-change-me";

/// First HTTP port (Riak's default HTTP port); node i listens on `DEV_HTTP_PORT + i`.
pub const DEV_HTTP_PORT: u16 = 8098;

/// First RPC port; node i listens on `DEV_RPC_PORT + i`.
pub const DEV_RPC_PORT: u16 = 7001;

/// What a development cluster looks like.
#[derive(Clone, Debug)]
pub struct DevOptions {
    /// Number of nodes.
    pub nodes: u16,
    /// Parent directory of every node's data directory.
    pub data_dir: PathBuf,
    /// First HTTP port.
    pub http_port: u16,
    /// First RPC port.
    pub rpc_port: u16,
    /// Storage durability.
    pub durability: DurabilityConfig,
}

impl Default for DevOptions {
    fn default() -> Self {
        DevOptions {
            nodes: 3,
            data_dir: PathBuf::from("data"),
            http_port: DEV_HTTP_PORT,
            rpc_port: DEV_RPC_PORT,
            durability: DurabilityConfig::Sync,
        }
    }
}

/// The configuration of node `i` (0-based) of a development cluster.
pub fn node_config(options: &DevOptions, i: u16) -> NodeConfig {
    let members = (0..options.nodes)
        .map(|j| MemberConfig {
            id: format!("n{}", j + 1),
            address: format!("127.0.0.1:{}", options.rpc_port + j),
            zone: None,
            weight: 1,
        })
        .collect();
    NodeConfig {
        node_id: format!("n{}", i + 1),
        rpc_listen: format!("127.0.0.1:{}", options.rpc_port + i),
        http_listen: format!("127.0.0.1:{}", options.http_port + i),
        data_dir: data_dir_of(&options.data_dir, i),
        cluster_name: DEV_CLUSTER_NAME.into(),
        cluster_secret: DEV_SECRET.into(),
        partitions: dynamo_ring::DEFAULT_PARTITIONS,
        members,
        seeds: Vec::new(),
        rpc_advertise: None,
        zone: None,
        weight: 1,
        bucket_defaults: BucketConfig::default(),
        buckets: Default::default(),
        durability: options.durability,
        max_value_bytes: dynamo_storage::DEFAULT_MAX_VALUE_LEN,
        log_format: LogFormat::Human,
        anti_entropy: Default::default(),
    }
}

fn data_dir_of(parent: &Path, i: u16) -> PathBuf {
    parent.join(format!("n{}", i + 1))
}

/// Starts every node of a development cluster.
pub async fn start(options: &DevOptions) -> anyhow::Result<Vec<RunningNode>> {
    if options.nodes == 0 {
        anyhow::bail!("--nodes must be at least 1");
    }
    let mut nodes = Vec::new();
    for i in 0..options.nodes {
        nodes.push(RunningNode::start(node_config(options, i)).await?);
    }
    Ok(nodes)
}
