//! A cluster of real `dynamo server` processes on loopback, for fault tests that need what an
//! in-process cluster cannot give: a process that dies at once with SIGKILL (no shutdown, no
//! flush), one frozen by SIGSTOP while its sockets stay open, and a restart from the same data
//! directory.
//!
//! Each node gets a TOML file and a data directory in a temporary directory, and its standard
//! output and error go to a log file beside them (read with [`ProcCluster::log_tail`] when a
//! check fails). Ports are picked by binding `127.0.0.1:0` and releasing the port; when another
//! program takes one in between, the cluster is started again on fresh ports. Every child is
//! killed when the [`ProcCluster`] is dropped, panics included.
//!
//! Not here: load generation and the checks themselves (they live with the tests), and any
//! network fault other than a stopped or dead process.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use dynamo_client::ClientConfig;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{CLUSTER, SECRET};

/// How long a node may take from spawn to answering `GET /ping`. A debug build opening (and after
/// SIGKILL, repairing) its redb file on a loaded two-core machine takes a few seconds; thirty
/// leaves room without letting a node that never comes up hang the test.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause between two readiness or status polls: short next to a node's start-up time, long
/// enough not to load the machine with connections.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Longest a single HTTP request to a node may take. A loopback request to a live node answers
/// in milliseconds; a stopped node never answers, and a poll must move on.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest HTTP response read from a node; `/metrics` and `/stats` are a few kilobytes.
pub const MAX_HTTP_RESPONSE: u64 = 4 * 1024 * 1024;

/// How many times the cluster is started on fresh ports when another program took one of the
/// picked ports before a node bound it. A clash needs a race with another binder on the same
/// machine, so a second attempt almost always succeeds; five is generous.
pub const PORT_ATTEMPTS: usize = 5;

/// Longest one `dynamo admin` command may take: it dials one node and waits for one answer
/// (a join also pulls the seed's state), milliseconds on loopback; a debug binary's start-up on
/// a loaded machine is most of it.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(20);

/// The nodes' log filter: start-up, peers marked down or up, handoff warnings, without the
/// per-request noise of `debug` (whatever `RUST_LOG` the test runs under).
const NODE_LOG_FILTER: &str = "info";

/// Log lines a failing node start shows.
const LOG_LINES_ON_ERROR: usize = 20;

/// The phrase the node's error names a listener it could not bind with.
const BIND_FAILURE: &str = "cannot listen";

/// One `dynamo server` process of a [`ProcCluster`].
pub struct ProcNode {
    /// Its node id (`n1`, `n2`, ...).
    pub id: String,
    /// Its internode and client RPC address.
    pub rpc_addr: SocketAddr,
    /// Its HTTP API address.
    pub http_addr: SocketAddr,
    /// Its configuration file.
    pub config_path: PathBuf,
    /// Where its standard output and error go (appended across restarts).
    pub log_path: PathBuf,
    child: Option<Child>,
}

/// A running cluster of `dynamo server` processes. Dropping it kills every process.
pub struct ProcCluster {
    /// The nodes, `n1` first.
    pub nodes: Vec<ProcNode>,
    binary: PathBuf,
    dir: TempDir,
}

/// A node's HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

impl ProcCluster {
    /// Starts `size` nodes of `binary` (the `dynamo` program), each with `durability = "sync"`,
    /// and waits until every one answers `GET /ping`. `extra_toml` is appended to every node's
    /// configuration and may hold only tables (`[bucket_defaults]`, `[buckets.NAME]`).
    pub async fn start(binary: &Path, size: usize, extra_toml: &str) -> anyhow::Result<Self> {
        if size == 0 {
            bail!("a cluster needs at least one node");
        }
        let mut last = None;
        for attempt in 1..=PORT_ATTEMPTS {
            let mut cluster = ProcCluster::configure(binary, size, extra_toml)?;
            match cluster.start_all().await {
                Ok(()) => return Ok(cluster),
                Err(e) if cluster.port_clash() => {
                    eprintln!("port clash on attempt {attempt}, picking new ports: {e:#}");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt was made")))
            .context("every attempt to bind free ports clashed")
    }

    /// Writes every node's configuration on freshly picked ports; starts nothing.
    fn configure(binary: &Path, size: usize, extra_toml: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ports = free_ports(2 * size)?;
        let (rpc, http) = ports.split_at(size);
        let mut members = String::new();
        for (i, addr) in rpc.iter().enumerate() {
            writeln!(
                members,
                "\n[[members]]\nid = \"n{}\"\naddress = \"{addr}\"",
                i + 1
            )?;
        }
        let mut nodes = Vec::new();
        for (i, (rpc_addr, http_addr)) in rpc.iter().zip(http).enumerate() {
            let id = format!("n{}", i + 1);
            let data_dir = dir.path().join(&id);
            std::fs::create_dir_all(&data_dir)?;
            let config = format!(
                "node_id = \"{id}\"\nrpc_listen = \"{rpc_addr}\"\nhttp_listen = \"{http_addr}\"\n\
                 data_dir = {data}\ncluster_name = \"{CLUSTER}\"\ncluster_secret = \"{SECRET}\"\n\
                 partitions = 64\ndurability = \"sync\"\nlog_format = \"human\"\n{members}\n{extra_toml}\n",
                data = toml_string(&data_dir)?,
            );
            let config_path = dir.path().join(format!("{id}.toml"));
            std::fs::write(&config_path, config)?;
            nodes.push(ProcNode {
                log_path: dir.path().join(format!("{id}.log")),
                id,
                rpc_addr: *rpc_addr,
                http_addr: *http_addr,
                config_path,
                child: None,
            });
        }
        Ok(ProcCluster {
            nodes,
            binary: binary.to_path_buf(),
            dir,
        })
    }

    async fn start_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            self.spawn(i)?;
        }
        for i in 0..self.nodes.len() {
            self.wait_ready(i).await?;
        }
        Ok(())
    }

    /// Whether a node that exited during start-up said it could not bind its port.
    fn port_clash(&self) -> bool {
        (0..self.nodes.len()).any(|i| self.log_tail(i, LOG_LINES_ON_ERROR).contains(BIND_FAILURE))
    }

    /// The temporary directory holding every node's configuration, data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client configuration seeded with every node, for this cluster's name and secret.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::new(
            self.nodes.iter().map(|n| n.rpc_addr.to_string()),
            CLUSTER,
            SECRET.as_bytes().to_vec(),
        )
    }

    fn node(&self, i: usize) -> anyhow::Result<&ProcNode> {
        self.nodes
            .get(i)
            .with_context(|| format!("no node {i} in a cluster of {}", self.nodes.len()))
    }

    fn node_mut(&mut self, i: usize) -> anyhow::Result<&mut ProcNode> {
        let size = self.nodes.len();
        self.nodes
            .get_mut(i)
            .with_context(|| format!("no node {i} in a cluster of {size}"))
    }

    /// Starts node `i`'s process (which must not be running), logging to its log file.
    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let binary = self.binary.clone();
        let node = self.node_mut(i)?;
        if node.child.is_some() {
            bail!("{} is already running", node.id);
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)?;
        let mut command = Command::new(&binary);
        for field in dynamo_node::config::ENV_FIELDS {
            // The file alone configures the node: a DYNAMO_* variable of the test's environment
            // would silently override it.
            command.env_remove(format!("DYNAMO_{}", field.to_ascii_uppercase()));
        }
        command.env_remove("DYNAMO_SEEDS");
        let child = command
            .arg("server")
            .arg("--config")
            .arg(&node.config_path)
            .env("RUST_LOG", NODE_LOG_FILTER)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until node `i` answers `GET /ping` with "OK", failing (with its last log lines) if
    /// the process exits or [`READY_TIMEOUT`] passes first.
    pub async fn wait_ready(&mut self, i: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let node = self.node_mut(i)?;
            let id = node.id.clone();
            let exited = match node.child.as_mut() {
                Some(child) => child.try_wait()?,
                None => bail!("{id} is not running"),
            };
            if let Some(status) = exited {
                node.child = None;
                bail!(
                    "{id} exited during start-up ({status}); log:\n{}",
                    self.log_tail(i, LOG_LINES_ON_ERROR)
                );
            }
            if let Ok(reply) = self.http_get(i, "/ping").await
                && reply.status == 200
                && reply.body == "OK"
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{id} did not answer /ping within {READY_TIMEOUT:?}; log:\n{}",
                    self.log_tail(i, LOG_LINES_ON_ERROR)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Kills node `i` with SIGKILL (no shutdown, nothing flushed beyond what was synced) and
    /// reaps it.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let node = self.node_mut(i)?;
        let mut child = node
            .child
            .take()
            .with_context(|| format!("{} is not running", node.id))?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Stops node `i` gracefully with SIGTERM (it finishes in-flight writes and flushes storage)
    /// and waits until it exits, killing it if it has not after [`READY_TIMEOUT`].
    pub async fn stop(&mut self, i: usize) -> anyhow::Result<()> {
        self.signal(i, "TERM")?;
        let deadline = Instant::now() + READY_TIMEOUT;
        let node = self.node_mut(i)?;
        let id = node.id.clone();
        let mut child = node
            .child
            .take()
            .with_context(|| format!("{id} is not running"))?;
        while child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                child.kill()?;
                child.wait()?;
                bail!("{id} did not stop within {READY_TIMEOUT:?} of SIGTERM");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        Ok(())
    }

    /// Starts node `i` again with the same configuration and data directory, and waits until it
    /// answers `GET /ping`.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i)?;
        self.wait_ready(i).await
    }

    /// Freezes node `i` with SIGSTOP: its sockets stay open but nothing answers.
    pub fn pause(&self, i: usize) -> anyhow::Result<()> {
        self.signal(i, "STOP")
    }

    /// Lets node `i` run again with SIGCONT.
    pub fn resume(&self, i: usize) -> anyhow::Result<()> {
        self.signal(i, "CONT")
    }

    fn signal(&self, i: usize, signal: &str) -> anyhow::Result<()> {
        let node = self.node(i)?;
        let pid = node
            .child
            .as_ref()
            .with_context(|| format!("{} is not running", node.id))?
            .id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .context("cannot run kill")?;
        if !status.success() {
            bail!("kill -{signal} {pid} ({}) failed: {status}", node.id);
        }
        Ok(())
    }

    /// `GET path` on node `i`'s HTTP API, bounded by [`HTTP_TIMEOUT`].
    pub async fn http_get(&self, i: usize, path: &str) -> anyhow::Result<HttpReply> {
        let addr = self.node(i)?.http_addr;
        tokio::time::timeout(HTTP_TIMEOUT, http_get(addr, path))
            .await
            .with_context(|| format!("GET {path} on {addr} timed out"))?
    }

    /// Starts one more node with no member list (a one-node cluster of its own, ready to join
    /// this one), with node `n1` as its seed and `extra_toml` appended to its configuration.
    /// Returns its index. Picks fresh ports; a clash fails the call (start it again).
    pub async fn add_lone_node(&mut self, extra_toml: &str) -> anyhow::Result<usize> {
        let i = self.nodes.len();
        let id = format!("n{}", i + 1);
        let ports = free_ports(2)?;
        let (rpc_addr, http_addr) = (ports[0], ports[1]);
        let seed = self.node(0)?.rpc_addr;
        let data_dir = self.dir.path().join(&id);
        std::fs::create_dir_all(&data_dir)?;
        let config = format!(
            "node_id = \"{id}\"\nrpc_listen = \"{rpc_addr}\"\nhttp_listen = \"{http_addr}\"\n\
             data_dir = {data}\ncluster_name = \"{CLUSTER}\"\ncluster_secret = \"{SECRET}\"\n\
             partitions = 64\ndurability = \"sync\"\nlog_format = \"human\"\n\
             seeds = [\"{seed}\"]\n{extra_toml}\n",
            data = toml_string(&data_dir)?,
        );
        let config_path = self.dir.path().join(format!("{id}.toml"));
        std::fs::write(&config_path, config)?;
        self.nodes.push(ProcNode {
            log_path: self.dir.path().join(format!("{id}.log")),
            id,
            rpc_addr,
            http_addr,
            config_path,
            child: None,
        });
        self.spawn(i)?;
        self.wait_ready(i).await?;
        Ok(i)
    }

    /// Runs `dynamo admin ARGS` against node `i` and returns its standard output; a command
    /// that fails is an error carrying its standard error.
    pub async fn admin(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        let addr = self.node(i)?.rpc_addr.to_string();
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .arg("admin")
            .args(args)
            .args([
                "--seeds",
                &addr,
                "--cluster-name",
                CLUSTER,
                "--secret",
                SECRET,
            ])
            .env_remove("DYNAMO_SEEDS")
            .kill_on_drop(true);
        let output = tokio::time::timeout(ADMIN_TIMEOUT, command.output())
            .await
            .with_context(|| format!("dynamo admin {args:?} timed out"))??;
        if !output.status.success() {
            bail!(
                "dynamo admin {args:?} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs `dynamo admin ARGS --json` against node `i` and parses its answer.
    pub async fn admin_json(&self, i: usize, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut all: Vec<&str> = args.to_vec();
        all.push("--json");
        let out = self.admin(i, &all).await?;
        serde_json::from_str(&out).with_context(|| format!("not JSON: {out}"))
    }

    /// The last `lines` lines of node `i`'s log (empty when there is none yet).
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let Ok(node) = self.node(i) else {
            return String::new();
        };
        let text = std::fs::read_to_string(&node.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                // SIGKILL also ends a stopped process; errors mean it is already gone.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Picks `count` distinct free loopback ports by binding them all at once and releasing them.
fn free_ports(count: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map_err(anyhow::Error::from))
        .collect()
}

/// A path as a TOML basic string.
fn toml_string(path: &Path) -> anyhow::Result<String> {
    let s = path
        .to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => write!(out, "\\u{:04X}", u32::from(c))?,
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

/// One HTTP/1.0 GET (the server closes the connection after the answer, so the body is what is
/// left when the stream ends). No client library: the package's HTTP client is a test-only
/// dependency, and this is all the harness needs.
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<HttpReply> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.take(MAX_HTTP_RESPONSE).read_to_end(&mut raw).await?;
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> anyhow::Result<HttpReply> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("the HTTP response has no end of headers")?;
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("bad HTTP status line {status_line:?}"))?;
    Ok(HttpReply {
        status,
        body: body.to_string(),
    })
}

/// Polls `check` every `every` until it returns `Some`; fails after `timeout` naming `what`
/// and the last error or "not yet".
pub async fn poll_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => String::from("not yet"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("{what}: gave up after {timeout:?}: {last}");
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_split_into_status_and_body() {
        let reply = parse_reply(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nOK").unwrap();
        assert_eq!(
            reply,
            HttpReply {
                status: 200,
                body: "OK".into()
            }
        );
        assert!(parse_reply(b"HTTP/1.0 200 OK\r\n").is_err());
        assert!(parse_reply(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn paths_become_toml_strings_with_escapes() {
        assert_eq!(
            toml_string(Path::new("/tmp/a\"b\\c")).unwrap(),
            r#""/tmp/a\"b\\c""#
        );
    }

    #[test]
    fn free_ports_are_distinct_loopback_ports() {
        let ports = free_ports(6).unwrap();
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), 6);
        assert!(ports.iter().all(|p| p.ip().is_loopback() && p.port() != 0));
    }
}
