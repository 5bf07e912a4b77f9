//! Gossip and membership admin calls by address: membership talks to seeds and to members it
//! knows by `host:port` (a seed's node id is not known before it answers), so these calls do not
//! go through the [`PeerPool`](crate::PeerPool), which is keyed by node id. Connections are
//! cached per address and dropped on the first transport failure or timeout.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dynamo_membership::{AdminCommand, AdminReply, Error, GossipDigest, GossipPeers, Result};
use parking_lot::Mutex;
use tarpc::client::RpcError;

use crate::auth::ClusterAuth;
use crate::pool::{CONNECT_TIMEOUT, DEADLINE_GRACE};
use crate::service::NodeClient;
use crate::transport::{Connector, framed};

/// Authenticated connections by address, for gossip and admin commands.
pub struct GossipClient<C> {
    connector: C,
    auth: ClusterAuth,
    clients: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<NodeClient>>>>>,
}

fn peer_error(address: &str, reason: impl std::fmt::Display) -> Error {
    Error::Peer {
        peer: address.to_string(),
        reason: reason.to_string(),
    }
}

impl<C: Connector> GossipClient<C> {
    /// A client dialling with `connector` and proving `auth`.
    pub fn new(connector: C, auth: ClusterAuth) -> GossipClient<C> {
        GossipClient {
            connector,
            auth,
            clients: Mutex::new(HashMap::new()),
        }
    }

    async fn client(&self, address: &str) -> Result<NodeClient> {
        let slot = Arc::clone(self.clients.lock().entry(address.to_string()).or_default());
        let mut guard = slot.lock().await;
        if let Some(client) = guard.as_ref() {
            return Ok(client.clone());
        }
        let dial = async {
            let mut stream = self
                .connector
                .connect(address)
                .await
                .map_err(|e| e.to_string())?;
            self.auth
                .connect(&mut stream)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(stream)
        };
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, dial).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(peer_error(address, e)),
            Err(_) => return Err(peer_error(address, "connect timed out")),
        };
        let client = NodeClient::new(tarpc::client::Config::default(), framed(stream)).spawn();
        *guard = Some(client.clone());
        Ok(client)
    }

    /// Runs one call on the node at `address`, waiting at most `timeout`; a failed or timed-out
    /// call drops the cached connection.
    async fn call<T, F, Fut>(&self, address: &str, timeout: Duration, f: F) -> Result<T>
    where
        F: FnOnce(NodeClient, tarpc::context::Context) -> Fut,
        Fut: Future<Output = std::result::Result<std::result::Result<T, String>, RpcError>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let client = self.client(address).await?;
        let mut ctx = tarpc::context::current();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        ctx.deadline = std::time::Instant::now() + left + DEADLINE_GRACE;
        match tokio::time::timeout_at(deadline, f(client, ctx)).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(remote))) => Err(Error::Remote(remote)),
            Ok(Err(e)) => {
                self.clients.lock().remove(address);
                Err(peer_error(address, e))
            }
            Err(_) => {
                self.clients.lock().remove(address);
                Err(peer_error(address, "timed out"))
            }
        }
    }

    /// Runs an operator's membership command on the node at `address`.
    pub async fn admin(
        &self,
        address: &str,
        command: AdminCommand,
        timeout: Duration,
    ) -> Result<AdminReply> {
        self.call(address, timeout, |c, ctx| async move {
            c.membership_admin(ctx, command).await
        })
        .await
    }
}

impl<C: Connector> GossipPeers for GossipClient<C> {
    async fn exchange_digest(
        &self,
        address: &str,
        digest: GossipDigest,
        timeout: Duration,
    ) -> Result<Option<Vec<u8>>> {
        self.call(address, timeout, |c, ctx| async move {
            c.gossip_digest(ctx, digest).await
        })
        .await
    }

    async fn push_state(&self, address: &str, state: Vec<u8>, timeout: Duration) -> Result<()> {
        self.call(address, timeout, |c, ctx| async move {
            c.gossip_push(ctx, state).await
        })
        .await
    }

    async fn pull_state(&self, address: &str, timeout: Duration) -> Result<Vec<u8>> {
        self.call(address, timeout, |c, ctx| async move {
            c.gossip_pull(ctx).await
        })
        .await
    }
}
