//! The command line of the `dynamo` binary: run a node, run a local development cluster, or talk
//! to a cluster. `src/main.rs` only calls [`main`]; the integration tests build the same program
//! under another name.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{DurabilityConfig, LogFormat, NodeConfig};
use crate::dev::{self, DevOptions};
use crate::{RunningNode, telemetry};
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use dynamo_client::{Client, ClientConfig};
use dynamo_versioning::Context;

#[derive(Parser, Debug)]
#[command(
    name = "dynamo",
    version,
    about = "Dynamo in Rust: a highly available key-value store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one node from a configuration file (DYNAMO_<FIELD> variables override it).
    Server(ServerArgs),
    /// Run a local development cluster on 127.0.0.1 in this process.
    Dev(DevArgs),
    /// Read a key and print its value(s).
    Get {
        #[command(flatten)]
        conn: ConnArgs,
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// Write a key (the value comes from --value or standard input).
    Put {
        #[command(flatten)]
        conn: ConnArgs,
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The value; read from standard input when absent.
        #[arg(long)]
        value: Option<String>,
        /// The context (X-Riak-Vclock) of the versions this write supersedes; by default the
        /// key is read first and its current context is used.
        #[arg(long)]
        context: Option<String>,
    },
    /// Delete a key.
    Delete {
        #[command(flatten)]
        conn: ConnArgs,
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// Show the members, ring ownership and each node's health.
    Status {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Membership administration: join, leave, remove, replace, plan, commit; members, ring
    /// and transfers.
    Admin(crate::admin::AdminArgs),
}

#[derive(Args, Debug)]
struct ServerArgs {
    /// Configuration file (TOML).
    #[arg(long, short)]
    config: PathBuf,
    /// Override node_id.
    #[arg(long)]
    node_id: Option<String>,
    /// Override data_dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Override http_listen.
    #[arg(long)]
    http_listen: Option<String>,
    /// Override rpc_listen.
    #[arg(long)]
    rpc_listen: Option<String>,
    /// Log as JSON lines.
    #[arg(long)]
    json_logs: bool,
}

#[derive(Args, Debug)]
struct DevArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Parent directory of the nodes' data directories.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// First HTTP port (node i listens on port + i).
    #[arg(long, default_value_t = dev::DEV_HTTP_PORT)]
    http_port: u16,
    /// First RPC port (node i listens on port + i).
    #[arg(long, default_value_t = dev::DEV_RPC_PORT)]
    rpc_port: u16,
    /// Storage durability: sync, buffered or none.
    #[arg(long, default_value = "sync")]
    durability: String,
}

/// How a command reaches the cluster.
#[derive(Args, Debug)]
pub(crate) struct ConnArgs {
    /// RPC addresses of one or more nodes (comma separated); admin commands address the first.
    #[arg(
        long,
        env = "DYNAMO_SEEDS",
        default_value = "127.0.0.1:7001",
        value_delimiter = ','
    )]
    pub(crate) seeds: Vec<String>,
    /// Cluster name.
    #[arg(long, env = "DYNAMO_CLUSTER_NAME", default_value = dev::DEV_CLUSTER_NAME)]
    pub(crate) cluster_name: String,
    /// Cluster secret.
    #[arg(long, env = "DYNAMO_CLUSTER_SECRET", default_value = dev::DEV_SECRET, hide_default_value = true)]
    pub(crate) secret: String,
    /// Request timeout in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub(crate) timeout_ms: u64,
}

impl ConnArgs {
    async fn client(&self) -> anyhow::Result<Client> {
        let config = ClientConfig {
            seeds: self.seeds.clone(),
            cluster_name: self.cluster_name.clone(),
            secret: self.secret.as_bytes().to_vec(),
            request_timeout: Duration::from_millis(self.timeout_ms),
            ..ClientConfig::default()
        };
        Client::connect(config)
            .await
            .context("cannot reach the cluster")
    }
}

/// Parses the command line and runs the command on a new multi-threaded runtime.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Server(args) => server(args).await.map(|_| ExitCode::SUCCESS),
        Command::Dev(args) => dev_cluster(args).await.map(|_| ExitCode::SUCCESS),
        Command::Get { conn, bucket, key } => {
            let client = conn.client().await?;
            let found = client.get(bucket.as_bytes(), key.as_bytes()).await?;
            if found.is_not_found() {
                eprintln!("not found");
                return Ok(ExitCode::from(2));
            }
            let siblings = found.siblings();
            if siblings.len() > 1 {
                eprintln!("{} siblings", siblings.len());
            }
            for s in siblings {
                println!("{}", String::from_utf8_lossy(&s.value.value));
            }
            eprintln!("context: {}", found.context().to_base64());
            Ok(ExitCode::SUCCESS)
        }
        Command::Put {
            conn,
            bucket,
            key,
            value,
            context,
        } => {
            let value = match value {
                Some(v) => v.into_bytes(),
                None => {
                    let mut buf = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut buf)
                        .context("cannot read the value from stdin")?;
                    buf
                }
            };
            let client = conn.client().await?;
            let context = match context {
                Some(c) => Context::from_base64(&c).context("--context is not a valid context")?,
                None => client
                    .get(bucket.as_bytes(), key.as_bytes())
                    .await?
                    .context(),
            };
            let stored = client
                .put(bucket.as_bytes(), key.as_bytes(), value, context)
                .await?;
            eprintln!("stored; context: {}", stored.object.context().to_base64());
            Ok(ExitCode::SUCCESS)
        }
        Command::Delete { conn, bucket, key } => {
            let client = conn.client().await?;
            let deleted = client
                .delete(bucket.as_bytes(), key.as_bytes(), None)
                .await?;
            if deleted.existed {
                eprintln!("deleted");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("not found");
                Ok(ExitCode::from(2))
            }
        }
        Command::Admin(args) => crate::admin::run(args).await,
        Command::Status { conn } => {
            let client = conn.client().await?;
            let map = client.cluster_map();
            let owned = map.ring.ownership();
            println!(
                "ring epoch {}, {} partitions",
                map.ring.epoch(),
                map.ring.q()
            );
            println!(
                "{:<12} {:<24} {:>10} {:<8}",
                "node", "address", "partitions", "health"
            );
            for (node, status) in client.status().await? {
                let address = map.addresses.get(&node).cloned().unwrap_or_default();
                let health = match status {
                    Ok(s) => format!("up ({}s, {} hints)", s.uptime_secs, s.hints_pending),
                    Err(e) => format!("down: {e}"),
                };
                let parts = owned.get(&node).copied().unwrap_or(0);
                println!(
                    "{:<12} {:<24} {:>10} {}",
                    node.as_str(),
                    address,
                    parts,
                    health
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `dynamo admin aae`: asks every member for its anti-entropy status.
pub(crate) async fn admin_aae(conn: ConnArgs, json: bool) -> anyhow::Result<ExitCode> {
    let client = conn.client().await?;
    let map = client.cluster_map();
    let auth = dynamo_rpc::ClusterAuth::new(conn.cluster_name.clone(), conn.secret.into_bytes())?;
    let pool = dynamo_rpc::PeerPool::new(dynamo_rpc::TcpConnector, auth, map.addresses.clone());
    let timeout = Duration::from_millis(conn.timeout_ms);
    let mut answers = Vec::new();
    for member in map.ring.members() {
        answers.push((member.id.clone(), pool.ae_status(&member.id, timeout).await));
    }
    let failed = answers.iter().any(|(_, a)| a.is_err());
    if json {
        let out: Vec<serde_json::Value> = answers
            .iter()
            .map(|(node, answer)| match answer {
                Ok(status) => serde_json::json!({ "node": node.as_str(), "status": status }),
                Err(e) => serde_json::json!({ "node": node.as_str(), "error": e.to_string() }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let now_ms = u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(u64::MAX);
        for (node, answer) in &answers {
            match answer {
                Ok(status) => print_aae(status, now_ms),
                Err(e) => println!("node {node}: unreachable: {e}\n"),
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// How long ago `at_ms` was, for people.
fn ago(at_ms: Option<u64>, now_ms: u64) -> String {
    match at_ms {
        None => "never".into(),
        Some(at) => format!("{}s ago", now_ms.saturating_sub(at) / 1000),
    }
}

fn print_aae(status: &dynamo_anti_entropy::Status, now_ms: u64) {
    println!(
        "node {}: {} partitions, {} keys, background share {:.2} ({} at once)",
        status.node,
        status.partitions.len(),
        status.keys(),
        status.share,
        status.permits
    );
    println!(
        "{:>9} {:>8} {:>12} {:>8}  {:<10} {:<9} {:>14} {:>8} {:>7}  last error",
        "partition",
        "keys",
        "tree built",
        "builds",
        "replica",
        "initiator",
        "last exchange",
        "repaired",
        "pending"
    );
    for p in &status.partitions {
        let built = if p.ready {
            ago(p.built_at_ms, now_ms)
        } else {
            "building".into()
        };
        let head = format!(
            "{:>9} {:>8} {:>12} {:>8}",
            p.partition, p.keys, built, p.builds
        );
        if p.peers.is_empty() {
            println!("{head}");
        }
        for (i, peer) in p.peers.iter().enumerate() {
            let lead = if i == 0 {
                head.clone()
            } else {
                " ".repeat(head.len())
            };
            println!(
                "{lead}  {:<10} {:<9} {:>14} {:>8} {:>7}  {}",
                peer.peer,
                if peer.initiator { "here" } else { "peer" },
                ago(peer.last_exchange_ms, now_ms),
                peer.keys_repaired,
                peer.pending,
                peer.last_error.as_deref().unwrap_or("")
            );
        }
    }
    println!();
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let mut config = NodeConfig::load(Some(&args.config))?;
    if let Some(v) = args.node_id {
        config.node_id = v;
    }
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = args.http_listen {
        config.http_listen = v;
    }
    if let Some(v) = args.rpc_listen {
        config.rpc_listen = v;
    }
    if args.json_logs {
        config.log_format = LogFormat::Json;
    }
    config.validate()?;
    telemetry::init(config.log_format);
    let node = RunningNode::start(config).await?;
    wait_for_signal().await;
    node.stop().await
}

async fn dev_cluster(args: DevArgs) -> anyhow::Result<()> {
    telemetry::init(LogFormat::Human);
    let durability = match args.durability.as_str() {
        "sync" => DurabilityConfig::Sync,
        "buffered" => DurabilityConfig::Buffered,
        "none" => DurabilityConfig::None,
        other => anyhow::bail!("--durability {other:?} is not sync, buffered or none"),
    };
    let options = DevOptions {
        nodes: args.nodes,
        data_dir: args.data_dir,
        http_port: args.http_port,
        rpc_port: args.rpc_port,
        durability,
    };
    let nodes = dev::start(&options).await?;
    println!(
        "dynamo dev cluster \"{}\" with {} nodes is up:",
        dev::DEV_CLUSTER_NAME,
        nodes.len()
    );
    for n in &nodes {
        println!("  {}  http://{}  rpc {}", n.id, n.http_addr, n.rpc_addr);
    }
    println!("Press Ctrl-C to stop.");
    wait_for_signal().await;
    for n in nodes {
        n.stop().await?;
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        biased;
        _ = ctrl_c => tracing::info!("Ctrl-C received, stopping"),
        _ = term => tracing::info!("SIGTERM received, stopping"),
    }
}
