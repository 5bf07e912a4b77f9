//! Node authentication: before any RPC frame is read, both ends of a connection prove that they
//! know the cluster's name and shared secret with an HMAC-SHA256 challenge-response. A peer that
//! fails is refused and logged; nothing it sends reaches the service.
//!
//! ```text
//! client -> server: MAGIC, PROTOCOL_VERSION (u16 BE), name length (u8), cluster name, client nonce (32)
//! server -> client: server nonce (32), HMAC(secret, "server" | name | client nonce | server nonce)
//! client -> server: HMAC(secret, "client" | name | server nonce | client nonce)
//! server -> client: ACCEPTED or REFUSED (1 byte)
//! ```
//! The secret never crosses the wire, each side's proof covers the other side's fresh nonce (no
//! replay), and the client learns the server is genuine before it sends any request.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};

/// First bytes of every connection: identifies the protocol before anything else is parsed.
pub const MAGIC: &[u8; 4] = b"DYNR";

/// Wire protocol version. Bumped whenever a service method or message changes incompatibly; a
/// node refuses peers speaking another version rather than misreading their frames.
pub const PROTOCOL_VERSION: u16 = 1;

/// Longest cluster name (it is sent in one length byte).
pub const MAX_CLUSTER_NAME_LEN: usize = 64;

/// Shortest accepted secret: 16 bytes keep an HMAC key out of brute-force reach.
pub const MIN_SECRET_LEN: usize = 16;

const NONCE_LEN: usize = 32;
const MAC_LEN: usize = 32;
const ACCEPTED: u8 = 1;
const REFUSED: u8 = 0;

type HmacSha256 = Hmac<Sha256>;

/// The credentials every member of one cluster shares.
#[derive(Clone)]
pub struct ClusterAuth {
    name: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for ClusterAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterAuth")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl ClusterAuth {
    /// Credentials for cluster `name` with shared `secret`.
    pub fn new(name: impl Into<String>, secret: impl Into<Vec<u8>>) -> Result<ClusterAuth> {
        let name = name.into();
        let secret = secret.into();
        if name.is_empty() || name.len() > MAX_CLUSTER_NAME_LEN {
            return Err(Error::Config(format!(
                "cluster name must be 1..={MAX_CLUSTER_NAME_LEN} bytes, got {}",
                name.len()
            )));
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(Error::Config(format!(
                "cluster secret must be at least {MIN_SECRET_LEN} bytes, got {}",
                secret.len()
            )));
        }
        Ok(ClusterAuth { name, secret })
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn mac(&self, role: &[u8], first: &[u8], second: &[u8]) -> HmacSha256 {
        // new_from_slice accepts any key length for HMAC; MIN_SECRET_LEN keeps it non-empty.
        let mut mac = match HmacSha256::new_from_slice(&self.secret) {
            Ok(mac) => mac,
            Err(_) => unreachable_hmac(),
        };
        mac.update(role);
        mac.update(self.name.as_bytes());
        mac.update(first);
        mac.update(second);
        mac
    }

    /// Runs the connecting side of the handshake on a fresh stream.
    pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: &mut S) -> Result<()> {
        let client_nonce: [u8; NONCE_LEN] = rand::random();
        let mut hello = Vec::with_capacity(4 + 2 + 1 + self.name.len() + NONCE_LEN);
        hello.extend_from_slice(MAGIC);
        hello.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        hello.push(u8::try_from(self.name.len()).unwrap_or(u8::MAX));
        hello.extend_from_slice(self.name.as_bytes());
        hello.extend_from_slice(&client_nonce);
        stream.write_all(&hello).await?;
        stream.flush().await?;

        let mut server_nonce = [0u8; NONCE_LEN];
        let mut server_mac = [0u8; MAC_LEN];
        stream.read_exact(&mut server_nonce).await?;
        stream.read_exact(&mut server_mac).await?;
        self.mac(b"server", &client_nonce, &server_nonce)
            .verify_slice(&server_mac)
            .map_err(|_| {
                Error::AuthFailed("the server does not know this cluster's secret".into())
            })?;

        let proof = self
            .mac(b"client", &server_nonce, &client_nonce)
            .finalize()
            .into_bytes();
        stream.write_all(&proof).await?;
        stream.flush().await?;
        let mut verdict = [0u8; 1];
        stream.read_exact(&mut verdict).await?;
        if verdict[0] != ACCEPTED {
            return Err(Error::AuthFailed("the server refused our proof".into()));
        }
        Ok(())
    }

    /// Runs the accepting side of the handshake. On error the caller must drop the stream.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: &mut S) -> Result<()> {
        let mut head = [0u8; 7];
        stream.read_exact(&mut head).await?;
        if &head[..4] != MAGIC {
            return Err(Error::AuthFailed("not a dynamo peer (bad magic)".into()));
        }
        let version = u16::from_be_bytes([head[4], head[5]]);
        if version != PROTOCOL_VERSION {
            return Err(Error::AuthFailed(format!(
                "peer speaks protocol {version}, this node speaks {PROTOCOL_VERSION}"
            )));
        }
        let mut name = vec![0u8; usize::from(head[6])];
        stream.read_exact(&mut name).await?;
        let mut client_nonce = [0u8; NONCE_LEN];
        stream.read_exact(&mut client_nonce).await?;
        if name != self.name.as_bytes() {
            return Err(Error::AuthFailed(format!(
                "peer belongs to cluster {:?}, not {:?}",
                String::from_utf8_lossy(&name),
                self.name
            )));
        }

        let server_nonce: [u8; NONCE_LEN] = rand::random();
        let proof = self
            .mac(b"server", &client_nonce, &server_nonce)
            .finalize()
            .into_bytes();
        stream.write_all(&server_nonce).await?;
        stream.write_all(&proof).await?;
        stream.flush().await?;

        let mut client_mac = [0u8; MAC_LEN];
        stream.read_exact(&mut client_mac).await?;
        let ok = self
            .mac(b"client", &server_nonce, &client_nonce)
            .verify_slice(&client_mac)
            .is_ok();
        stream
            .write_all(&[if ok { ACCEPTED } else { REFUSED }])
            .await?;
        stream.flush().await?;
        if ok {
            Ok(())
        } else {
            Err(Error::AuthFailed(
                "peer does not know this cluster's secret".into(),
            ))
        }
    }
}

#[cold]
fn unreachable_hmac() -> ! {
    // HMAC is defined for keys of every length, so the constructor cannot fail.
    panic!("HMAC-SHA256 rejected a key, which the algorithm does not allow")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(name: &str, secret: &str) -> ClusterAuth {
        ClusterAuth::new(name, secret.as_bytes().to_vec()).unwrap()
    }

    /// Runs both sides; each side closes its end when it finishes, as a real peer does, so a
    /// refusal on one side ends the other side's wait.
    async fn handshake(client: ClusterAuth, server: ClusterAuth) -> (Result<()>, Result<()>) {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let connecting = async move {
            let result = client.connect(&mut a).await;
            drop(a);
            result
        };
        let accepting = async move {
            let result = server.accept(&mut b).await;
            drop(b);
            result
        };
        tokio::join!(connecting, accepting)
    }

    #[tokio::test]
    async fn same_secret_is_accepted_both_ways() {
        let (c, s) = handshake(
            auth("c1", "0123456789abcdef"),
            auth("c1", "0123456789abcdef"),
        )
        .await;
        assert!(c.is_ok() && s.is_ok(), "{c:?} {s:?}");
    }

    #[tokio::test]
    async fn wrong_secret_is_refused_on_both_sides() {
        let (c, s) = handshake(
            auth("c1", "0123456789abcdef"),
            auth("c1", "fedcba9876543210"),
        )
        .await;
        assert!(matches!(c, Err(Error::AuthFailed(_))), "{c:?}");
        // The server stops at the client's refusal to continue, or refuses the proof itself.
        assert!(s.is_err());
    }

    #[tokio::test]
    async fn another_cluster_is_refused() {
        let (c, s) = handshake(
            auth("c1", "0123456789abcdef"),
            auth("c2", "0123456789abcdef"),
        )
        .await;
        assert!(
            matches!(s, Err(Error::AuthFailed(ref m)) if m.contains("c1")),
            "{s:?}"
        );
        assert!(c.is_err());
    }

    #[tokio::test]
    async fn garbage_is_refused_without_panicking() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let server = auth("c1", "0123456789abcdef");
        let writer = async {
            a.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
            a
        };
        let (_a, res) = tokio::join!(writer, server.accept(&mut b));
        assert!(
            matches!(res, Err(Error::AuthFailed(ref m)) if m.contains("magic")),
            "{res:?}"
        );
    }

    #[test]
    fn short_secrets_and_bad_names_are_config_errors() {
        assert!(ClusterAuth::new("c1", b"short".to_vec()).is_err());
        assert!(ClusterAuth::new("", b"0123456789abcdef".to_vec()).is_err());
    }
}
