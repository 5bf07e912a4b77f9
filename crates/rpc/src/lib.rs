//! Internode and client RPC for Dynamo in Rust. This is the only crate that knows tarpc.
//!
//! It owns the wire: one tarpc [`Node`] service whose methods carry the coordinator's requests
//! (paper section 4.5 forwarding and 6.4 client-driven coordination) and the replica side of
//! reads and writes; bincode frames with a shared [`MAX_FRAME_LEN`] over streams with
//! TCP_NODELAY; an HMAC challenge-response handshake ([`ClusterAuth`]) that every connection
//! passes before a frame is read; and a reconnecting [`PeerPool`] that implements the
//! coordinator's [`Replicas`](dynamo_coordinator::Replicas) trait and anti-entropy's
//! [`Peers`](dynamo_anti_entropy::Peers) trait (exchange rounds, fetch and push of repairs).
//! Deadlines travel with each call in tarpc's context, taken from the client's request
//! timeout. Membership gossip and the
//! operator's membership commands go by address through a [`GossipClient`], which implements
//! the membership crate's [`GossipPeers`](dynamo_membership::GossipPeers); the server hands
//! them to the node's [`MembershipService`](dynamo_membership::MembershipService).
//!
//! Streams come from a [`Connector`] and a [`Listener`], so the same node runs over real TCP
//! ([`TcpConnector`], [`TcpListener`]) or a simulated network in tests.
//!
//! Not here: what the requests mean (coordinator), TLS (run the cluster on a private network or
//! under a tunnel), and client-facing HTTP (http crate).

mod auth;
mod error;
mod gossip;
mod pool;
mod server;
mod service;
mod transport;

pub use auth::{ClusterAuth, MAGIC, MAX_CLUSTER_NAME_LEN, MIN_SECRET_LEN, PROTOCOL_VERSION};
pub use error::{Error, Result};
pub use gossip::GossipClient;
pub use pool::{CONNECT_TIMEOUT, PeerPool};
pub use server::{
    AddressBook, HANDSHAKE_TIMEOUT, NodeServer, decode_bucket_props, encode_bucket_props,
};
pub use service::{AeError, ClusterMap, Node, NodeClient};
pub use transport::{Connector, Listener, MAX_FRAME_LEN, Stream, TcpConnector, TcpListener};
