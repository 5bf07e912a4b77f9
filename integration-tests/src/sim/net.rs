//! The rpc crate's [`Connector`] and [`Listener`] over turmoil's simulated TCP, so real nodes (tarpc
//! client and server, handshake, framing, peer pool) talk over a network the simulation controls.

use std::io;

use dynamo_rpc::{Connector, Listener};

/// The port every simulated node serves RPC on (each node is its own turmoil host).
pub const RPC_PORT: u16 = 7000;

/// The RPC address of the turmoil host `host`, as the peer pool dials it.
pub fn rpc_address(host: &str) -> String {
    format!("{host}:{RPC_PORT}")
}

/// Splits `host:port`; a malformed address is an `InvalidInput` error, not a panic.
fn split_address(addr: &str) -> io::Result<(String, u16)> {
    let invalid = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a host:port address: {addr:?}"),
        )
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(invalid)?;
    if host.is_empty() {
        return Err(invalid());
    }
    let port = port.parse::<u16>().map_err(|_| invalid())?;
    Ok((host.to_string(), port))
}

/// Dials simulated TCP connections by turmoil host name (`"n1:7000"`).
#[derive(Clone, Copy, Debug, Default)]
pub struct TurmoilConnector;

impl Connector for TurmoilConnector {
    type Stream = turmoil::net::TcpStream;

    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        let (host, port) = split_address(addr)?;
        let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Accepts simulated TCP connections on this turmoil host.
pub struct TurmoilListener(turmoil::net::TcpListener);

impl TurmoilListener {
    /// Binds `port` on every address of the current turmoil host.
    pub async fn bind(port: u16) -> io::Result<TurmoilListener> {
        let listener = turmoil::net::TcpListener::bind((
            std::net::IpAddr::from(std::net::Ipv4Addr::UNSPECIFIED),
            port,
        ))
        .await?;
        Ok(TurmoilListener(listener))
    }
}

impl Listener for TurmoilListener {
    type Stream = turmoil::net::TcpStream;

    async fn accept(&mut self) -> io::Result<(Self::Stream, String)> {
        let (stream, peer) = self.0.accept().await?;
        stream.set_nodelay(true)?;
        Ok((stream, peer.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(split_address("n1:7000").unwrap(), ("n1".to_string(), 7000));
        assert_eq!(rpc_address("n3"), "n3:7000");
        for bad in ["n1", ":7000", "n1:", "n1:99999", "n1:x"] {
            let err = split_address(bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
    }
}
