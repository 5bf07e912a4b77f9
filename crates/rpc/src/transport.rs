//! Byte streams under the RPC framing: a listener/connector abstraction (real TCP here; tests and
//! the simulator plug in their own), TCP_NODELAY on both ends, and the length-delimited bincode
//! framing with one maximum frame length shared by both ends.

use std::future::Future;
use std::io;

use serde::{Deserialize, Serialize};
use tarpc::serde_transport::Transport;
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::LengthDelimitedCodec;
use tokio::io::{AsyncRead, AsyncWrite};

/// Largest frame either end sends or accepts. A frame carries one request or response; the
/// largest is an object with several siblings at the 16 MiB value limit, so 8 such siblings fit.
/// A larger frame is a protocol error that closes the connection.
pub const MAX_FRAME_LEN: usize = 128 * 1024 * 1024;

/// A connected byte stream.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// Opens outgoing connections.
pub trait Connector: Send + Sync + 'static {
    /// The stream type produced.
    type Stream: Stream;
    /// Connects to `addr` (a `host:port` string). Implementations disable Nagle's algorithm.
    fn connect(&self, addr: &str) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// Accepts incoming connections.
pub trait Listener: Send + 'static {
    /// The stream type produced.
    type Stream: Stream;
    /// Waits for the next connection; returns it with the peer's address for logs.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, String)>> + Send;
}

/// Real TCP connections with TCP_NODELAY (tarpc's own helpers leave Nagle on, which adds 40 ms
/// delayed-ACK stalls to small request/response exchanges).
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    type Stream = tokio::net::TcpStream;

    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// A TCP listener whose accepted streams have TCP_NODELAY set.
#[derive(Debug)]
pub struct TcpListener(tokio::net::TcpListener);

impl TcpListener {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(addr: &str) -> io::Result<TcpListener> {
        Ok(TcpListener(tokio::net::TcpListener::bind(addr).await?))
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.0.local_addr()
    }
}

impl Listener for TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&mut self) -> io::Result<(Self::Stream, String)> {
        let (stream, peer) = self.0.accept().await?;
        stream.set_nodelay(true)?;
        Ok((stream, peer.to_string()))
    }
}

/// Wraps an authenticated stream in tarpc's length-delimited bincode transport.
pub(crate) fn framed<S, In, Out>(stream: S) -> Transport<S, In, Out, Bincode<In, Out>>
where
    S: Stream,
    In: for<'de> Deserialize<'de>,
    Out: Serialize,
{
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_LEN)
        .new_codec();
    tarpc::serde_transport::new(
        tarpc::tokio_util::codec::Framed::new(stream, codec),
        Bincode::default(),
    )
}
