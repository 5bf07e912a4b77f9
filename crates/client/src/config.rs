//! What a client needs to know to reach a cluster, and the client's tunables.

use std::fmt;
use std::time::Duration;

use dynamo_rpc::ClusterAuth;

use crate::error::{Error, Result};

/// Default time a request may take, end to end on the node. Matches the node's own default
/// (`dynamo_coordinator::DEFAULT_REQUEST_TIMEOUT`), so a client that says nothing gets the same
/// patience as an HTTP user.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = dynamo_coordinator::DEFAULT_REQUEST_TIMEOUT;

/// Default period between cluster map refreshes. Membership changes are operator actions that take
/// minutes to gossip and hand off; meanwhile a stale map costs at most one forwarding hop, so ten
/// seconds keeps routing current without loading the cluster with map requests.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// Shortest accepted refresh interval: every refresh fetches the whole ring, so a smaller value
/// would turn many clients into a load on the cluster for no routing benefit.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// Default number of retries on other nodes after the first attempt: with N = 3 a request gets to
/// try every replica of the top N once.
pub const DEFAULT_RETRIES: usize = 2;

/// Largest accepted retry count. Retries go round the preference list, so more than a few dozen
/// only repeat nodes that already failed and hold the caller for many timeouts.
pub const MAX_RETRIES: usize = 32;

/// How to reach a cluster and how patient to be with it.
#[derive(Clone)]
pub struct ClientConfig {
    /// `host:port` of the RPC listener of one or more nodes; the first that answers supplies the
    /// cluster map, after which the client talks to every member directly.
    pub seeds: Vec<String>,
    /// The cluster's name, as configured on its nodes.
    pub cluster_name: String,
    /// The cluster's shared secret (at least `dynamo_rpc::MIN_SECRET_LEN` bytes).
    pub secret: Vec<u8>,
    /// How long one attempt of a request may take unless the request carries its own timeout.
    pub request_timeout: Duration,
    /// How often the cluster map is fetched again in the background.
    pub refresh_interval: Duration,
    /// How many times a request that failed with a retryable error is sent again, each time to
    /// the next node of the key's preference list.
    pub retries: usize,
}

impl ClientConfig {
    /// A configuration for cluster `cluster_name` reached through `seeds`, with default tunables.
    pub fn new(
        seeds: impl IntoIterator<Item = impl Into<String>>,
        cluster_name: impl Into<String>,
        secret: impl Into<Vec<u8>>,
    ) -> ClientConfig {
        ClientConfig {
            seeds: seeds.into_iter().map(Into::into).collect(),
            cluster_name: cluster_name.into(),
            secret: secret.into(),
            ..ClientConfig::default()
        }
    }

    /// Checks every field and builds the credentials; an error names the first bad field.
    pub(crate) fn validate(&self) -> Result<ClusterAuth> {
        if self.seeds.is_empty() {
            return Err(Error::Config("at least one seed address is needed".into()));
        }
        if let Some(bad) = self.seeds.iter().find(|s| !looks_like_host_port(s)) {
            return Err(Error::Config(format!(
                "seed {bad:?} is not a host:port address"
            )));
        }
        if self.request_timeout.is_zero() {
            return Err(Error::Config("request_timeout must be above zero".into()));
        }
        if self.refresh_interval < MIN_REFRESH_INTERVAL {
            return Err(Error::Config(format!(
                "refresh_interval must be at least {MIN_REFRESH_INTERVAL:?}"
            )));
        }
        if self.retries > MAX_RETRIES {
            return Err(Error::Config(format!(
                "retries must be at most {MAX_RETRIES}, got {}",
                self.retries
            )));
        }
        ClusterAuth::new(self.cluster_name.clone(), self.secret.clone())
            .map_err(|e| Error::Config(e.to_string()))
    }
}

/// Whether `s` has a non-empty host and a numeric port (`[::1]:7001` included).
fn looks_like_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

impl Default for ClientConfig {
    /// No seeds and no credentials (which [`Client::connect`](crate::Client::connect) refuses),
    /// with the default tunables.
    fn default() -> Self {
        ClientConfig {
            seeds: Vec::new(),
            cluster_name: String::new(),
            secret: Vec::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            retries: DEFAULT_RETRIES,
        }
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("seeds", &self.seeds)
            .field("cluster_name", &self.cluster_name)
            .field("secret", &"<redacted>")
            .field("request_timeout", &self.request_timeout)
            .field("refresh_interval", &self.refresh_interval)
            .field("retries", &self.retries)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> ClientConfig {
        ClientConfig::new(["127.0.0.1:7001"], "dev", b"0123456789abcdef".to_vec())
    }

    #[test]
    fn a_complete_config_validates() {
        let auth = good().validate().unwrap();
        assert_eq!(auth.name(), "dev");
        let mut ipv6 = good();
        ipv6.seeds = vec!["[::1]:7001".into(), "node-2.local:7001".into()];
        assert!(ipv6.validate().is_ok());
    }

    /// Spoils one field of a good config.
    type Spoil = fn(&mut ClientConfig);

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(Spoil, &str)> = vec![
            (|c| c.seeds.clear(), "seed"),
            (|c| c.seeds = vec!["localhost".into()], "host:port"),
            (|c| c.seeds = vec![":7001".into()], "host:port"),
            (|c| c.request_timeout = Duration::ZERO, "request_timeout"),
            (
                |c| c.refresh_interval = Duration::from_millis(1),
                "refresh_interval",
            ),
            (|c| c.retries = MAX_RETRIES + 1, "retries"),
            (|c| c.secret = b"short".to_vec(), "secret"),
            (|c| c.cluster_name.clear(), "cluster name"),
        ];
        for (spoil, word) in cases {
            let mut config = good();
            spoil(&mut config);
            match config.validate() {
                Err(Error::Config(msg)) => assert!(msg.contains(word), "{msg:?} lacks {word:?}"),
                other => panic!("expected a config error naming {word}, got {other:?}"),
            }
        }
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let shown = format!("{:?}", good());
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("redacted"));
    }
}
