//! The client-facing HTTP API of a Dynamo node: a Riak KV 2.x-compatible subset, so `curl` and
//! existing Riak HTTP clients work unchanged.
//!
//! # What this crate owns
//!
//! The paper's client interface (section 4.1: `get(key)` returns the versions and a context,
//! `put(key, context, object)`) and its request routing (section 4.5: a client may send any
//! request to any node, which coordinates it) as HTTP resources:
//!
//! | method and path | answer |
//! | --- | --- |
//! | `GET /buckets/{b}/keys/{k}` | 200 value, 300 siblings (`multipart/mixed` or a vtag list), 404 |
//! | `PUT`/`POST /buckets/{b}/keys/{k}` | 204, or with `returnbody=true` 200/300 like a GET |
//! | `POST /buckets/{b}/keys` | 201 with `Location` of a server-assigned key |
//! | `DELETE /buckets/{b}/keys/{k}` | 204, or 404 when there was nothing to delete |
//! | `GET /buckets/{b}/keys?keys=true\|stream` | `{"keys": [...]}`, or a chunked series of them |
//! | `GET`/`PUT /buckets/{b}/props` | `{"props": {...}}` / 204 |
//! | `GET /ping`, `/stats`, `/metrics` | "OK", JSON node status, Prometheus text |
//!
//! Object paths also exist as `/types/default/buckets/...` and Riak 1.x's `/riak/{b}/{k}`.
//! The context travels as `X-Riak-Vclock` (base64 of
//! [`Context`](dynamo_versioning::Context)), user metadata as `X-Riak-Meta-*`, each sibling's
//! vtag (a hash of the dot that wrote it) as `ETag`. Quorums (`r`, `w`, `dw`, `pr`, `pw`),
//! `timeout` (ms) and `returnbody` are query parameters. Bucket names and keys are
//! percent-decoded path segments, so keys may be any bytes.
//!
//! Status codes follow Riak's documentation: 400 for a bad parameter, header or body, 404 for
//! nothing found, 413 for an oversize value (refused by `Content-Length` before the body is
//! read), 415 for props not sent as JSON, 503 when a quorum is not met in time. A client mistake
//! is never a 500, and a refused request changes nothing.
//!
//! # What it deliberately does not do
//!
//! No request coordination (the [`Coordinator`] does it), no TLS or authentication (put a proxy
//! in front), no Riak bucket types other than `default`, secondary indexes, links, MapReduce,
//! search or CRDT data types, no conditional writes (`If-Match` on PUT) and no metrics registry
//! of its own: `/metrics` renders what the node hands in.

mod bucket;
mod error;
mod node;
mod object;
mod params;
mod path;
mod render;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use dynamo_coordinator::{Coordinator, Replicas};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::{Error, Result};
pub use node::{METRICS_CONTENT_TYPE, Stats};
pub use params::Params;
pub use path::{
    BucketPath, DEFAULT_BUCKET_TYPE, ObjectPath, PathStyle, decode_segment, encode_segment,
};
pub use render::{DEFAULT_CONTENT_TYPE, META_PREFIX, VCLOCK_HEADER, base62, http_date, vtag};

/// Renders the node's Prometheus metrics text for `GET /metrics`.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Keys per JSON object in a streamed key listing (`keys=stream`): small enough that a client
/// sees the first keys at once and each chunk stays in the tens of kilobytes, large enough that
/// framing is a negligible share of the bytes.
pub const DEFAULT_KEYS_STREAM_CHUNK: usize = 1000;

/// Largest `PUT /buckets/{b}/props` body. A full set of properties is a few hundred bytes; this
/// leaves room for pretty-printed JSON while a runaway upload is cut off early.
pub const DEFAULT_MAX_PROPS_BODY: usize = 64 * 1024;

/// Allowance above the engine's value limit for axum's body limit, so that a value exactly at
/// the limit is judged by this crate (413 with a clear message) and never by a generic layer.
pub const BODY_LIMIT_MARGIN: usize = 64 * 1024;

/// Tunables of the HTTP API.
#[derive(Clone, Debug)]
pub struct Options {
    /// Keys per chunk of a streamed key listing.
    pub keys_stream_chunk: usize,
    /// Largest bucket-properties body accepted (bytes).
    pub max_props_body: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            keys_stream_chunk: DEFAULT_KEYS_STREAM_CHUNK,
            max_props_body: DEFAULT_MAX_PROPS_BODY,
        }
    }
}

/// What every handler shares.
pub(crate) struct Api<R> {
    pub(crate) coordinator: Coordinator<R>,
    pub(crate) metrics: MetricsRender,
    pub(crate) options: Options,
}

/// The HTTP API for `coordinator`, with default [`Options`].
pub fn router<R: Replicas>(coordinator: Coordinator<R>, metrics: MetricsRender) -> Router {
    router_with_options(coordinator, metrics, Options::default())
}

/// The HTTP API for `coordinator`.
pub fn router_with_options<R: Replicas>(
    coordinator: Coordinator<R>,
    metrics: MetricsRender,
    options: Options,
) -> Router {
    let body_limit = coordinator
        .engine()
        .limits()
        .max_value_len
        .saturating_add(BODY_LIMIT_MARGIN);
    let api = Arc::new(Api {
        coordinator,
        metrics,
        options,
    });
    let object = || {
        get(object::fetch::<R>)
            .put(object::store::<R>)
            .post(object::store::<R>)
            .delete(object::delete::<R>)
    };
    let keys = || get(bucket::list_keys::<R>).post(object::create::<R>);
    let props = || get(bucket::get_props::<R>).put(bucket::set_props::<R>);
    Router::new()
        .route("/ping", get(node::ping))
        .route("/stats", get(node::stats::<R>))
        .route("/metrics", get(node::metrics::<R>))
        .route("/buckets/{bucket}/keys/{key}", object())
        .route("/types/{type}/buckets/{bucket}/keys/{key}", object())
        .route("/riak/{bucket}/{key}", object())
        .route("/buckets/{bucket}/keys", keys())
        .route("/types/{type}/buckets/{bucket}/keys", keys())
        .route("/riak/{bucket}", post(object::create::<R>))
        .route("/buckets/{bucket}/props", props())
        .route("/types/{type}/buckets/{bucket}/props", props())
        .fallback(node::not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(api)
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops accepting and waits
/// for requests in flight to finish (graceful). Accepted connections get `TCP_NODELAY`, so small
/// answers are not held back by Nagle's algorithm.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
