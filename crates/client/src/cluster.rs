//! The client's view of the cluster: the cached [`ClusterMap`], how it is fetched (from members,
//! falling back to the seeds) and kept fresh by a background task, and the per-bucket `n_val`
//! cache that routing needs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dynamo_coordinator::DEFAULT_N_VAL;
use dynamo_ring::NodeId;
use dynamo_rpc::{ClusterAuth, ClusterMap, PeerPool, TcpConnector};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::client::Inner;
use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::routing::{self, Spread};

/// Least time between two refreshes. Errors from a down node ask for a refresh on every failed
/// request; this coalesces them into at most one map fetch per gap.
const MIN_REFRESH_GAP: Duration = Duration::from_millis(500);

/// How many members a refresh asks before it falls back to the seeds. A few cover a node or two
/// being down without making one refresh wait out many connect timeouts.
const REFRESH_TRIES: usize = 3;

/// Most buckets whose `n_val` is cached; past it the cache starts afresh. Ten thousand entries
/// are under a megabyte, and an application touching more buckets than that pays one extra
/// properties lookup per bucket per refresh interval.
const MAX_CACHED_BUCKETS: usize = 10_000;

/// The cached cluster map with its `n_val` cache.
pub(crate) struct ClusterView {
    map: RwLock<Arc<ClusterMap>>,
    n_vals: Mutex<HashMap<Vec<u8>, (usize, Instant)>>,
}

impl ClusterView {
    /// A view starting from `map`.
    pub(crate) fn new(map: ClusterMap) -> ClusterView {
        ClusterView {
            map: RwLock::new(Arc::new(map)),
            n_vals: Mutex::new(HashMap::new()),
        }
    }

    /// The map in force.
    pub(crate) fn map(&self) -> Arc<ClusterMap> {
        Arc::clone(&self.map.read())
    }

    /// Installs `map` unless it is empty or older (lower ring epoch) than the one held; returns the
    /// addresses to hand to the connection pool when it changed anything.
    pub(crate) fn install(&self, map: ClusterMap) -> Option<BTreeMap<NodeId, String>> {
        if map.ring.members().is_empty() {
            return None;
        }
        let mut current = self.map.write();
        if map.ring.epoch() < current.ring.epoch() || map == **current {
            return None;
        }
        let addresses = map.addresses.clone();
        *current = Arc::new(map);
        Some(addresses)
    }

    /// The cached `n_val` of `bucket`, if still fresh at `now`.
    pub(crate) fn n_val(&self, bucket: &[u8], now: Instant) -> Option<usize> {
        match self.n_vals.lock().get(bucket) {
            Some((n, until)) if *until > now => Some(*n),
            _ => None,
        }
    }

    /// Remembers `n` as `bucket`'s `n_val` until `until`.
    pub(crate) fn remember_n_val(&self, bucket: &[u8], n: usize, until: Instant) {
        let mut cache = self.n_vals.lock();
        if cache.len() >= MAX_CACHED_BUCKETS && !cache.contains_key(bucket) {
            cache.clear();
        }
        cache.insert(bucket.to_vec(), (n, until));
    }
}

/// The `n_val` to assume for a bucket whose properties could not be read: the cluster default.
pub(crate) const FALLBACK_N_VAL: usize = DEFAULT_N_VAL as usize;

/// Fetches the cluster map from the first seed that answers.
pub(crate) async fn map_from_seeds(
    config: &ClientConfig,
    auth: &ClusterAuth,
) -> Result<ClusterMap> {
    let mut failures = Vec::new();
    for (i, seed) in config.seeds.iter().enumerate() {
        // The seed's real node id is unknown until it answers; the pool only needs a valid name.
        let placeholder = NodeId::new(format!("seed-{i}"))
            .map_err(|e| Error::Config(format!("seed {seed}: {e}")))?;
        let addresses = BTreeMap::from([(placeholder.clone(), seed.clone())]);
        let pool = PeerPool::new(TcpConnector, auth.clone(), addresses);
        match pool.cluster_map(&placeholder, config.request_timeout).await {
            Ok(map) if map.ring.members().is_empty() => {
                failures.push(format!("{seed}: its map has no members"));
            }
            Ok(map) => return Ok(map),
            Err(e) => failures.push(format!("{seed}: {e}")),
        }
    }
    Err(Error::NoSeed(failures.join("; ")))
}

impl Inner {
    /// Fetches the map from a few members (healthy ones first), then from the seeds, and installs
    /// it if it is not older than the one held.
    pub(crate) async fn refresh(&self) -> Result<()> {
        let current = self.cluster.map();
        let order = {
            let suspects = self.suspects.lock();
            let now = Instant::now();
            routing::member_order(&current.ring, Spread::Rotate(self.next_rotation()), |n| {
                suspects.is_suspect(n, now)
            })
        };
        for node in order.iter().take(REFRESH_TRIES) {
            match self
                .pool
                .cluster_map(node, self.config.request_timeout)
                .await
            {
                Ok(map) => {
                    self.install(map);
                    return Ok(());
                }
                Err(e) => {
                    tracing::debug!(%node, error = %e, "cluster map refresh failed");
                    self.note_failure(node, &Error::from(e));
                }
            }
        }
        let map = map_from_seeds(&self.config, &self.auth).await?;
        self.install(map);
        Ok(())
    }

    /// Installs `map` in the view and points the connection pool at its addresses.
    pub(crate) fn install(&self, map: ClusterMap) {
        let epoch = map.ring.epoch();
        if let Some(addresses) = self.cluster.install(map) {
            tracing::debug!(epoch, members = addresses.len(), "installed cluster map");
            self.pool.set_addresses(addresses);
        }
    }
}

/// Starts the task that refreshes `inner`'s map every `interval` and whenever `wake` is notified,
/// at most once per [`MIN_REFRESH_GAP`]. It stops when `stop` is cancelled or `inner` is gone.
pub(crate) fn spawn_refresher(
    inner: Weak<Inner>,
    wake: Arc<Notify>,
    stop: CancellationToken,
    interval: Duration,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
                _ = wake.notified() => {}
            }
            let Some(inner) = inner.upgrade() else {
                return;
            };
            if let Err(e) = inner.refresh().await {
                tracing::warn!(error = %e, "could not refresh the cluster map");
            }
            drop(inner);
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(MIN_REFRESH_GAP) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use dynamo_ring::{Member, Ring};

    use super::*;

    fn map(nodes: &[&str], epoch_bumps: usize) -> ClusterMap {
        let members = nodes
            .iter()
            .map(|n| Member::new(NodeId::new(*n).unwrap()))
            .collect();
        let mut ring = Ring::new(64, members, 3).unwrap();
        for _ in 0..epoch_bumps {
            let first = ring.members()[0].id.clone();
            ring = ring
                .with_member_weight(&first, 1 + ring.epoch() as u32, 3)
                .unwrap();
        }
        let addresses = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (NodeId::new(*n).unwrap(), format!("127.0.0.1:{}", 7001 + i)))
            .collect();
        ClusterMap { ring, addresses }
    }

    #[test]
    fn newer_maps_replace_older_ones_but_never_the_reverse() {
        let view = ClusterView::new(map(&["n1", "n2"], 1));
        assert!(view.install(map(&["n1", "n2"], 0)).is_none(), "older map");
        assert!(view.install(map(&["n1", "n2"], 1)).is_none(), "same map");
        let newer = map(&["n1", "n2"], 2);
        assert_eq!(view.install(newer.clone()), Some(newer.addresses.clone()));
        assert_eq!(*view.map(), newer);
    }

    #[test]
    fn an_address_change_at_the_same_epoch_is_taken() {
        let view = ClusterView::new(map(&["n1", "n2"], 0));
        let mut moved = map(&["n1", "n2"], 0);
        moved
            .addresses
            .insert(NodeId::new("n2").unwrap(), "127.0.0.1:9999".into());
        assert!(view.install(moved.clone()).is_some());
        assert_eq!(view.map().addresses, moved.addresses);
    }

    #[test]
    fn n_vals_are_cached_until_they_expire() {
        let view = ClusterView::new(map(&["n1"], 0));
        let now = Instant::now();
        assert_eq!(view.n_val(b"b", now), None);
        view.remember_n_val(b"b", 5, now + Duration::from_secs(1));
        assert_eq!(view.n_val(b"b", now), Some(5));
        assert_eq!(view.n_val(b"b", now + Duration::from_secs(1)), None);
    }

    #[test]
    fn the_n_val_cache_stays_bounded() {
        let view = ClusterView::new(map(&["n1"], 0));
        let until = Instant::now() + Duration::from_secs(60);
        for i in 0..=MAX_CACHED_BUCKETS {
            view.remember_n_val(format!("b{i}").as_bytes(), 3, until);
        }
        assert!(view.n_vals.lock().len() <= MAX_CACHED_BUCKETS);
    }
}
