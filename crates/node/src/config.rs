//! The node's configuration: a TOML file, overridden by `DYNAMO_*` environment variables, then by
//! command-line flags. Every field is validated once at start-up; an invalid configuration is one
//! clear error naming the field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use dynamo_coordinator::{BucketProps, Quorum};
use dynamo_ring::{Member, NodeId};
use dynamo_storage::Durability;
use serde::{Deserialize, Serialize};

/// Shortest cluster secret accepted (bytes), matching the rpc crate's handshake rule.
pub const MIN_SECRET_LEN: usize = dynamo_rpc::MIN_SECRET_LEN;

/// A configuration problem, naming the field.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    /// The offending field, dotted (`members[1].address`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A member of the static member list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// The member's node id.
    pub id: String,
    /// Its internode RPC address (`host:port`).
    pub address: String,
    /// Its zone (rack or data centre), if zones are used.
    #[serde(default)]
    pub zone: Option<String>,
    /// Its capacity weight (partitions are claimed in proportion).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// A quorum as written in the config: a number or one of "one", "quorum", "all", "default".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum QuorumValue {
    /// An explicit count.
    Count(u8),
    /// A symbolic value.
    Word(String),
}

impl QuorumValue {
    fn parse(&self, field: &str) -> Result<Quorum, ConfigError> {
        match self {
            QuorumValue::Count(c) => Ok(Quorum::Count(*c)),
            QuorumValue::Word(w) => w.parse().map_err(|e| invalid(field, format!("{e}"))),
        }
    }
}

/// Bucket properties as written in the config; absent fields keep the defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    /// Replicas per key.
    pub n_val: Option<u8>,
    /// Read quorum.
    pub r: Option<QuorumValue>,
    /// Write quorum.
    pub w: Option<QuorumValue>,
    /// Durable write quorum.
    pub dw: Option<QuorumValue>,
    /// Primary read quorum.
    pub pr: Option<QuorumValue>,
    /// Primary write quorum.
    pub pw: Option<QuorumValue>,
    /// Keep siblings.
    pub allow_mult: Option<bool>,
    /// Resolve by timestamp.
    pub last_write_wins: Option<bool>,
}

impl BucketConfig {
    fn apply(&self, base: &BucketProps, field: &str) -> Result<BucketProps, ConfigError> {
        let mut p = base.clone();
        if let Some(n) = self.n_val {
            p.n_val = n;
        }
        for (name, value, slot) in [
            ("r", &self.r, &mut p.r),
            ("w", &self.w, &mut p.w),
            ("dw", &self.dw, &mut p.dw),
            ("pr", &self.pr, &mut p.pr),
            ("pw", &self.pw, &mut p.pw),
        ] {
            if let Some(v) = value {
                *slot = v.parse(&format!("{field}.{name}"))?;
            }
        }
        if let Some(b) = self.allow_mult {
            p.allow_mult = b;
        }
        if let Some(b) = self.last_write_wins {
            p.last_write_wins = b;
            if b && self.allow_mult.is_none() {
                p.allow_mult = false;
            }
        }
        p.validate().map_err(|e| invalid(field, e.to_string()))?;
        Ok(p)
    }
}

/// Storage durability as written in the config.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityConfig {
    /// fsync before acknowledging (group commit).
    #[default]
    Sync,
    /// The paper's write buffer: acknowledge from memory, flush in the background.
    Buffered,
    /// Never fsync (tests).
    None,
}

impl From<DurabilityConfig> for Durability {
    fn from(d: DurabilityConfig) -> Durability {
        match d {
            DurabilityConfig::Sync => Durability::Sync,
            DurabilityConfig::Buffered => Durability::Buffered,
            DurabilityConfig::None => Durability::None,
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Everything a node needs to start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id; must appear in `members`.
    pub node_id: String,
    /// Address the internode RPC listener binds.
    pub rpc_listen: String,
    /// Address the HTTP API binds.
    pub http_listen: String,
    /// Directory for the data file.
    pub data_dir: PathBuf,
    /// Cluster name; peers of another cluster are refused.
    pub cluster_name: String,
    /// Shared secret every member proves when connecting (at least 16 bytes).
    pub cluster_secret: String,
    /// Partitions on the ring (Q): a power of two in 8..=1024, fixed at cluster creation.
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// The static member list that bootstraps a fresh cluster (every member given the same
    /// list). Empty: this node starts as a one-node cluster and grows by `dynamo admin cluster
    /// join`. Only read when the data directory holds no membership state yet.
    #[serde(default)]
    pub members: Vec<MemberConfig>,
    /// RPC addresses of nodes to gossip with every round (paper 4.8.2), so that members started
    /// apart always learn of each other. `DYNAMO_SEEDS` (comma separated) overrides it.
    #[serde(default)]
    pub seeds: Vec<String>,
    /// The RPC address other nodes reach this one at, when it is not in `members`; defaults to
    /// `rpc_listen`.
    #[serde(default)]
    pub rpc_advertise: Option<String>,
    /// This node's zone when it is not in `members` (it joins with it).
    #[serde(default)]
    pub zone: Option<String>,
    /// This node's capacity weight when it is not in `members` (it joins with it).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Properties of buckets that have no override.
    #[serde(default)]
    pub bucket_defaults: BucketConfig,
    /// Per-bucket overrides.
    #[serde(default)]
    pub buckets: BTreeMap<String, BucketConfig>,
    /// Storage durability.
    #[serde(default)]
    pub durability: DurabilityConfig,
    /// Largest value accepted, in bytes.
    #[serde(default = "default_max_value")]
    pub max_value_bytes: usize,
    /// Log format.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Anti-entropy (`[anti_entropy]`; every field has a default).
    #[serde(default)]
    pub anti_entropy: AntiEntropyConfig,
}

/// Anti-entropy and admission control as written in the config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AntiEntropyConfig {
    /// Keep hash trees and exchange them with the other replicas.
    pub enabled: bool,
    /// Longest time between two exchanges of one (partition, replica) pair, in milliseconds.
    pub exchange_interval_ms: u64,
    /// Delay before the exchange that confirms differences, in milliseconds.
    pub confirm_delay_ms: u64,
    /// Time between rebuilds of a tree from storage, in milliseconds.
    pub rebuild_interval_ms: u64,
    /// Exchanges and tree builds one node runs at once at most (K).
    pub max_concurrent: usize,
    /// Scale background work by foreground latency (paper 6.5).
    pub admission_control: bool,
    /// Foreground storage-write p99 above which background work backs off, in milliseconds.
    pub target_p99_ms: u64,
}

impl Default for AntiEntropyConfig {
    fn default() -> Self {
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        AntiEntropyConfig {
            enabled: true,
            exchange_interval_ms: ms(dynamo_anti_entropy::EXCHANGE_INTERVAL),
            confirm_delay_ms: ms(dynamo_anti_entropy::CONFIRM_DELAY),
            rebuild_interval_ms: ms(dynamo_anti_entropy::REBUILD_INTERVAL),
            max_concurrent: dynamo_anti_entropy::MAX_CONCURRENT,
            admission_control: true,
            target_p99_ms: ms(dynamo_anti_entropy::TARGET_P99),
        }
    }
}

impl AntiEntropyConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("exchange_interval_ms", self.exchange_interval_ms),
            ("confirm_delay_ms", self.confirm_delay_ms),
            ("rebuild_interval_ms", self.rebuild_interval_ms),
            ("target_p99_ms", self.target_p99_ms),
        ] {
            if value == 0 {
                return Err(invalid(
                    format!("anti_entropy.{field}"),
                    "must be at least 1",
                ));
            }
        }
        if self.max_concurrent == 0 {
            return Err(invalid("anti_entropy.max_concurrent", "must be at least 1"));
        }
        Ok(())
    }

    /// The anti-entropy options these settings give, for replicas per key `n`.
    pub fn options(&self, n: usize) -> dynamo_anti_entropy::Options {
        use std::time::Duration;
        let defaults = dynamo_anti_entropy::Options::default();
        dynamo_anti_entropy::Options {
            n,
            exchange_interval: Duration::from_millis(self.exchange_interval_ms),
            confirm_delay: Duration::from_millis(self.confirm_delay_ms),
            rebuild_interval: Duration::from_millis(self.rebuild_interval_ms),
            admission_control: self.admission_control,
            admission: dynamo_anti_entropy::AdmissionOptions {
                max_permits: self.max_concurrent,
                target_p99: Duration::from_millis(self.target_p99_ms),
                ..defaults.admission
            },
            // Tick at most every second, and several times per exchange interval.
            tick: defaults.tick.min(Duration::from_millis(
                (self.exchange_interval_ms / 4).max(10),
            )),
            ..defaults
        }
    }
}

fn default_partitions() -> u32 {
    dynamo_ring::DEFAULT_PARTITIONS
}

fn default_max_value() -> usize {
    dynamo_storage::DEFAULT_MAX_VALUE_LEN
}

/// Fields that a `DYNAMO_<FIELD>` environment variable may override. Only these are read, so
/// unrelated `DYNAMO_*` variables (the CLI's own) never turn into unknown-field errors.
pub const ENV_FIELDS: &[&str] = &[
    "node_id",
    "rpc_listen",
    "http_listen",
    "data_dir",
    "cluster_name",
    "cluster_secret",
    "partitions",
    "durability",
    "max_value_bytes",
    "log_format",
];

/// A configuration that passed validation, in the types the crates take.
#[derive(Clone, Debug)]
pub struct Validated {
    /// This node.
    pub me: NodeId,
    /// Static ring members in config order (empty: a one-node cluster of this node).
    pub members: Vec<Member>,
    /// Member RPC addresses.
    pub addresses: BTreeMap<NodeId, String>,
    /// Default bucket properties.
    pub bucket_defaults: BucketProps,
    /// Per-bucket overrides.
    pub buckets: BTreeMap<Vec<u8>, BucketProps>,
    /// This node's RPC address as peers reach it.
    pub address: String,
    /// This node's zone.
    pub zone: Option<String>,
    /// This node's capacity weight.
    pub weight: u32,
    /// Seed addresses to gossip with.
    pub seeds: Vec<String>,
}

impl NodeConfig {
    /// Reads `path` (TOML) and applies `DYNAMO_*` environment overrides (`DYNAMO_NODE_ID`,
    /// `DYNAMO_HTTP_LISTEN`, ...).
    pub fn load(path: Option<&Path>) -> Result<NodeConfig, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            if !path.exists() {
                return Err(invalid(
                    "--config",
                    format!("{} does not exist", path.display()),
                ));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        if let Ok(value) = std::env::var("DYNAMO_SEEDS") {
            let seeds: Vec<String> = value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            builder = builder
                .set_override("seeds", seeds)
                .map_err(|e| invalid("DYNAMO_SEEDS", e.to_string()))?;
        }
        for field in ENV_FIELDS {
            let var = format!("DYNAMO_{}", field.to_ascii_uppercase());
            if let Ok(value) = std::env::var(&var) {
                builder = builder
                    .set_override(*field, value)
                    .map_err(|e| invalid(var.as_str(), e.to_string()))?;
            }
        }
        let raw = builder
            .build()
            .map_err(|e| invalid("config", e.to_string()))?;
        raw.try_deserialize::<NodeConfig>()
            .map_err(|e| invalid("config", e.to_string()))
    }

    /// Checks every field and converts to the crates' types.
    pub fn validate(&self) -> Result<Validated, ConfigError> {
        let me =
            NodeId::new(self.node_id.clone()).map_err(|e| invalid("node_id", e.to_string()))?;
        for (field, addr) in [
            ("rpc_listen", &self.rpc_listen),
            ("http_listen", &self.http_listen),
        ] {
            addr.parse::<SocketAddr>()
                .map_err(|e| invalid(field, format!("{addr:?} is not ip:port ({e})")))?;
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        dynamo_rpc::ClusterAuth::new(
            self.cluster_name.clone(),
            self.cluster_secret.as_bytes().to_vec(),
        )
        .map_err(|e| invalid("cluster_name/cluster_secret", e.to_string()))?;
        if !self.partitions.is_power_of_two() || !(8..=1024).contains(&self.partitions) {
            return Err(invalid(
                "partitions",
                format!("{} is not a power of two in 8..=1024", self.partitions),
            ));
        }
        let mut members = Vec::new();
        let mut addresses = BTreeMap::new();
        for (i, m) in self.members.iter().enumerate() {
            let id = NodeId::new(m.id.clone())
                .map_err(|e| invalid(format!("members[{i}].id"), e.to_string()))?;
            if addresses.contains_key(&id) {
                return Err(invalid(
                    format!("members[{i}].id"),
                    format!("{id} is listed twice"),
                ));
            }
            if m.address.is_empty() || !m.address.contains(':') {
                return Err(invalid(
                    format!("members[{i}].address"),
                    format!("{:?} is not host:port", m.address),
                ));
            }
            if m.weight == 0 {
                return Err(invalid(
                    format!("members[{i}].weight"),
                    "must be at least 1",
                ));
            }
            let mut member = Member::new(id.clone()).with_weight(m.weight);
            if let Some(zone) = &m.zone {
                member = member.with_zone(zone.clone());
            }
            addresses.insert(id, m.address.clone());
            members.push(member);
        }
        if !self.members.is_empty() && !addresses.contains_key(&me) {
            return Err(invalid("node_id", format!("{me} is not in members")));
        }
        for (i, seed) in self.seeds.iter().enumerate() {
            if seed.is_empty() || !seed.contains(':') {
                return Err(invalid(
                    format!("seeds[{i}]"),
                    format!("{seed:?} is not host:port"),
                ));
            }
        }
        if self.weight == 0 {
            return Err(invalid("weight", "must be at least 1"));
        }
        let (address, zone, weight) = match members.iter().find(|m| m.id == me) {
            Some(m) => (addresses[&me].clone(), m.zone.clone(), m.weight),
            None => (
                self.rpc_advertise
                    .clone()
                    .unwrap_or_else(|| self.rpc_listen.clone()),
                self.zone.clone(),
                self.weight,
            ),
        };
        if let Some(zone) = &zone
            && (zone.is_empty() || zone.len() > dynamo_ring::MAX_ZONE_LEN)
        {
            return Err(invalid("zone", "must be 1..=64 bytes"));
        }
        if self.max_value_bytes == 0 {
            return Err(invalid("max_value_bytes", "must be at least 1"));
        }
        self.anti_entropy.validate()?;
        let bucket_defaults = self
            .bucket_defaults
            .apply(&BucketProps::default(), "bucket_defaults")?;
        let mut buckets = BTreeMap::new();
        for (name, b) in &self.buckets {
            if name.is_empty() {
                return Err(invalid("buckets", "a bucket name is empty"));
            }
            buckets.insert(
                name.as_bytes().to_vec(),
                b.apply(&bucket_defaults, &format!("buckets.{name}"))?,
            );
        }
        Ok(Validated {
            me,
            members,
            addresses,
            bucket_defaults,
            buckets,
            address,
            zone,
            weight,
            seeds: self.seeds.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Mutation = Box<dyn Fn(&mut NodeConfig)>;

    fn sample() -> NodeConfig {
        NodeConfig {
            node_id: "n1".into(),
            rpc_listen: "127.0.0.1:7001".into(),
            http_listen: "127.0.0.1:8098".into(),
            data_dir: "data/n1".into(),
            cluster_name: "test".into(),
            cluster_secret: "0123456789abcdef".into(),
            partitions: 64,
            members: vec![MemberConfig {
                id: "n1".into(),
                address: "127.0.0.1:7001".into(),
                zone: None,
                weight: 1,
            }],
            seeds: Vec::new(),
            rpc_advertise: None,
            zone: None,
            weight: 1,
            bucket_defaults: BucketConfig::default(),
            buckets: BTreeMap::new(),
            durability: DurabilityConfig::Sync,
            max_value_bytes: 1024,
            log_format: LogFormat::Human,
            anti_entropy: AntiEntropyConfig::default(),
        }
    }

    #[test]
    fn a_good_config_validates() {
        let v = sample().validate().unwrap();
        assert_eq!(v.me.as_str(), "n1");
        assert_eq!(v.bucket_defaults, BucketProps::default());
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(&str, Mutation)> = vec![
            ("node_id", Box::new(|c| c.node_id = "n9".into())),
            ("rpc_listen", Box::new(|c| c.rpc_listen = "nowhere".into())),
            ("partitions", Box::new(|c| c.partitions = 100)),
            (
                "cluster_secret",
                Box::new(|c| c.cluster_secret = "short".into()),
            ),
            ("members[0].weight", Box::new(|c| c.members[0].weight = 0)),
            (
                "node_id",
                Box::new(|c| {
                    c.members[0].id = "n2".into();
                }),
            ),
            ("seeds[0]", Box::new(|c| c.seeds = vec!["nowhere".into()])),
            (
                "anti_entropy.max_concurrent",
                Box::new(|c| c.anti_entropy.max_concurrent = 0),
            ),
            (
                "bucket_defaults.r",
                Box::new(|c| c.bucket_defaults.r = Some(QuorumValue::Word("most".into()))),
            ),
            (
                "buckets.carts",
                Box::new(|c| {
                    c.buckets.insert(
                        "carts".into(),
                        BucketConfig {
                            n_val: Some(2),
                            r: Some(QuorumValue::Count(3)),
                            ..Default::default()
                        },
                    );
                }),
            ),
        ];
        for (field, mutate) in cases {
            let mut c = sample();
            mutate(&mut c);
            let err = c.validate().unwrap_err();
            assert!(err.field.contains(field), "expected {field}, got {err}");
        }
    }

    #[test]
    fn toml_with_quorum_words_and_numbers_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            r#"
node_id = "n1"
rpc_listen = "127.0.0.1:7001"
http_listen = "127.0.0.1:8098"
data_dir = "data"
cluster_name = "c"
cluster_secret = "0123456789abcdef"
[[members]]
id = "n1"
address = "127.0.0.1:7001"
[bucket_defaults]
r = "one"
w = 2
[buckets.sessions]
last_write_wins = true
[anti_entropy]
exchange_interval_ms = 5000
"#,
        )
        .unwrap();
        let v = NodeConfig::load(Some(&path)).unwrap().validate().unwrap();
        assert_eq!(v.bucket_defaults.r, Quorum::One);
        assert_eq!(v.bucket_defaults.w, Quorum::Count(2));
        let sessions = &v.buckets[&b"sessions".to_vec()];
        assert!(sessions.last_write_wins && !sessions.allow_mult);
        let config = NodeConfig::load(Some(&path)).unwrap();
        assert_eq!(config.anti_entropy.exchange_interval_ms, 5000);
        assert!(
            config.anti_entropy.enabled,
            "absent fields keep their defaults"
        );
    }

    #[test]
    fn a_node_without_members_is_a_one_node_cluster_at_its_advertised_address() {
        let mut c = sample();
        c.members.clear();
        c.rpc_advertise = Some("10.1.2.3:7001".into());
        c.zone = Some("eu-1a".into());
        let v = c.validate().unwrap();
        assert!(v.members.is_empty());
        assert_eq!(v.address, "10.1.2.3:7001");
        assert_eq!(v.zone.as_deref(), Some("eu-1a"));
        c.rpc_advertise = None;
        assert_eq!(c.validate().unwrap().address, "127.0.0.1:7001");
    }

    #[test]
    fn seeds_come_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            r#"
node_id = "n4"
rpc_listen = "127.0.0.1:7004"
http_listen = "127.0.0.1:8104"
data_dir = "data"
cluster_name = "c"
cluster_secret = "0123456789abcdef"
seeds = ["127.0.0.1:7001", "127.0.0.1:7002"]
"#,
        )
        .unwrap();
        let v = NodeConfig::load(Some(&path)).unwrap().validate().unwrap();
        assert_eq!(v.seeds, vec!["127.0.0.1:7001", "127.0.0.1:7002"]);
        assert!(v.members.is_empty());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "node_id = \"n1\"\nnode_idd = \"x\"\n").unwrap();
        assert!(NodeConfig::load(Some(&path)).is_err());
    }
}
