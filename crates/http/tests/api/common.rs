//! A one-node cluster (in-memory engine, manual clock, no peers) behind the HTTP router.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use bytes::Bytes;
use dynamo_coordinator::{
    BucketProps, Buckets, Coordinator, DeleteRequest, DeleteResponse, Error, ManualClock, Options,
    Parts, PutRequest, PutResponse, ReplicaPut, Replicas, Result,
};
use dynamo_http::MetricsRender;
use dynamo_ring::{Member, NodeId, Ring};
use dynamo_storage::{Engine, Limits, MemoryEngine, ObjectKey, VersionedObject};
use dynamo_versioning::Actor;
use tower::ServiceExt;

/// Wall-clock start of every test node: 2023-11-14 22:13:20 UTC.
pub const START_MS: u64 = 1_700_000_000_000;

/// Peers of a one-node cluster: there are none, so every call fails as unreachable.
pub struct NoPeers;

fn unreachable() -> Error {
    Error::Unreachable("this test cluster has one node".into())
}

impl Replicas for NoPeers {
    async fn ping(&self, _: &NodeId, _: Duration) -> Result<()> {
        Err(unreachable())
    }
    async fn get(&self, _: &NodeId, _: &ObjectKey, _: Duration) -> Result<Option<VersionedObject>> {
        Err(unreachable())
    }
    async fn put(&self, _: &NodeId, _: ReplicaPut, _: Duration) -> Result<bool> {
        Err(unreachable())
    }
    async fn forward_put(&self, _: &NodeId, _: PutRequest, _: Duration) -> Result<PutResponse> {
        Err(unreachable())
    }
    async fn forward_delete(
        &self,
        _: &NodeId,
        _: DeleteRequest,
        _: Duration,
    ) -> Result<DeleteResponse> {
        Err(unreachable())
    }
    async fn list_keys(&self, _: &NodeId, _: &[u8], _: Duration) -> Result<Vec<Vec<u8>>> {
        Err(unreachable())
    }
    async fn set_bucket_props(
        &self,
        _: &NodeId,
        _: &[u8],
        _: &BucketProps,
        _: Duration,
    ) -> Result<()> {
        Err(unreachable())
    }
}

/// One node and its HTTP API.
pub struct TestNode {
    /// The API under test.
    pub router: Router,
    /// The clock versions are stamped with.
    pub clock: Arc<ManualClock>,
}

/// A node with n_val=1 bucket defaults and the engine's default limits.
pub fn node() -> TestNode {
    node_with(Limits::default(), dynamo_http::Options::default())
}

/// A node with the given engine limits and HTTP options.
pub fn node_with(limits: Limits, options: dynamo_http::Options) -> TestNode {
    let id = NodeId::new("node-a").expect("valid node id");
    let ring = Ring::new(64, vec![Member::new(id.clone())], 1).expect("one-node ring");
    let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::with_limits(limits));
    let defaults = BucketProps {
        n_val: 1,
        ..BucketProps::default()
    };
    let buckets = Buckets::load(defaults, BTreeMap::new(), Arc::clone(&engine)).expect("buckets");
    let clock = Arc::new(ManualClock::new(START_MS));
    let coordinator = Coordinator::new(Parts {
        me: id.clone(),
        actor: Actor::new(id.actor_id(), 0),
        ring,
        engine,
        replicas: Arc::new(NoPeers),
        buckets,
        clock: clock.clone(),
        options: Options::default(),
    });
    let metrics: MetricsRender = Arc::new(|| "# HELP up Whether the node is up\nup 1\n".into());
    TestNode {
        router: dynamo_http::router_with_options(coordinator, metrics, options),
        clock,
    }
}

/// What the API answered.
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// A header as text (`None` when absent).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

impl TestNode {
    /// Sends one request and reads the whole answer.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        Reply {
            status,
            headers,
            body,
        }
    }

    /// `method uri` with `headers` and `body`.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Reply {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        self.send(builder.body(body.into()).expect("request")).await
    }

    /// A plain GET.
    pub async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, &[], Body::empty()).await
    }

    /// A PUT of a text/plain value, optionally with a vclock.
    pub async fn put(&self, uri: &str, value: &str, vclock: Option<&str>) -> Reply {
        let mut headers = vec![("content-type", "text/plain")];
        if let Some(v) = vclock {
            headers.push(("x-riak-vclock", v));
        }
        self.call(Method::PUT, uri, &headers, value.to_string())
            .await
    }

    /// PUTs bucket properties as JSON.
    pub async fn set_props(&self, bucket: &str, json: &str) -> Reply {
        let uri = format!("/buckets/{bucket}/props");
        let headers = [("content-type", "application/json")];
        self.call(Method::PUT, &uri, &headers, json.to_string())
            .await
    }
}
