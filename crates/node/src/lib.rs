//! The `dynamo` node: a thin composition of the other crates (paper section 5: every node runs
//! the same components — request coordination, membership, failure detection and a local
//! persistence engine — and there is no master).
//!
//! This crate reads configuration files ([`config`]), installs tracing ([`telemetry`]), and
//! starts and stops every service of a node ([`node`]) or of a local development cluster
//! ([`dev`]). It holds no protocol logic: a request's meaning lives in `dynamo-coordinator`, the
//! wire in `dynamo-rpc`, the HTTP API in `dynamo-http`, storage in `dynamo-storage`.
//! Nothing depends on this crate except the integration tests.

mod admin;
pub mod cli;
pub mod config;
pub mod dev;
pub mod membership;
pub mod mover;
pub mod node;
pub mod telemetry;

pub use config::{ConfigError, NodeConfig};
pub use node::{Listeners, RunningNode};
