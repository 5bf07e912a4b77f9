//! End-to-end tests of the HTTP API on a one-node cluster, driven through the router with
//! `tower::ServiceExt::oneshot` (and one test over a real loopback socket).

mod bad_requests;
mod buckets;
mod common;
mod node;
mod objects;
mod siblings;
