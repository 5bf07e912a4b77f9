//! Object endpoints (Riak's fetch-object, store-object and delete-object): GET, PUT and POST on
//! `/buckets/{bucket}/keys/{key}`, POST on `/buckets/{bucket}/keys` for a server-assigned key, and
//! DELETE. Each validates everything the client sent (parameters, headers, body size) before the
//! coordinator runs, so a bad request changes nothing.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Response, StatusCode};
use bytes::{Bytes, BytesMut};
use dynamo_coordinator::{
    DeleteRequest, GetRequest, GetResponse, PutRequest, PutResponse, Quorum, Replicas,
};
use dynamo_storage::Content;
use dynamo_versioning::Context;
use futures::StreamExt;

use crate::Api;
use crate::error::{Error, Result};
use crate::params::Params;
use crate::path::{BucketPath, ObjectPath, PathStyle};
use crate::render::{self, META_PREFIX, Negotiation, ObjectView, VCLOCK_HEADER};

/// GET an object: its value, or its siblings, or 404.
pub(crate) async fn fetch<R: Replicas>(
    State(api): State<Arc<Api<R>>>,
    path: ObjectPath,
    params: Params,
    headers: HeaderMap,
) -> Result<Response<Body>> {
    let request = GetRequest {
        r: params.quorum("r")?,
        pr: params.quorum("pr")?,
        timeout_ms: params.timeout_ms()?,
        ..GetRequest::new(path.bucket.clone(), path.key)
    };
    let response = api.coordinator.get(request).await?;
    let view = ObjectView {
        bucket: &path.bucket,
        style: path.style,
        context: response.context(),
        siblings: response.siblings(),
    };
    render::render(
        &view,
        &Negotiation {
            single: StatusCode::OK,
            multipart: render::prefers_multipart(headers.get(header::ACCEPT)),
            vtag: params.get("vtag"),
            conditions: Some(&headers),
        },
    )
}

/// PUT (or POST) an object under the client's key: 204, or the stored object with `returnbody`.
pub(crate) async fn store<R: Replicas>(
    State(api): State<Arc<Api<R>>>,
    path: ObjectPath,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response<Body>> {
    let returnbody = params.flag("returnbody")?;
    let stored = write(&api, &path.bucket, &path.key, &params, &headers, body).await?;
    if !returnbody {
        return Ok(empty(StatusCode::NO_CONTENT));
    }
    answer_with_body(
        &api,
        &path.bucket,
        path.style,
        stored,
        &headers,
        StatusCode::OK,
    )
}

/// POST to a bucket: stores the value under a fresh random key and answers 201 with its Location.
pub(crate) async fn create<R: Replicas>(
    State(api): State<Arc<Api<R>>>,
    path: BucketPath,
    params: Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response<Body>> {
    let returnbody = params.flag("returnbody")?;
    let key = render::base62(rand::random::<u128>()).into_bytes();
    let stored = write(&api, &path.bucket, &key, &params, &headers, body).await?;
    let mut response = if returnbody {
        answer_with_body(
            &api,
            &path.bucket,
            path.style,
            stored,
            &headers,
            StatusCode::CREATED,
        )?
    } else {
        empty(StatusCode::CREATED)
    };
    let location = HeaderValue::from_str(&path.style.object_url(&path.bucket, &key))
        .map_err(|e| Error::Internal(format!("location is not a header value: {e}")))?;
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// DELETE an object: 204 when something was deleted, 404 when there was nothing to delete.
pub(crate) async fn delete<R: Replicas>(
    State(api): State<Arc<Api<R>>>,
    path: ObjectPath,
    params: Params,
    headers: HeaderMap,
) -> Result<Response<Body>> {
    // Riak's `rw` stands for both quorums of a delete's read-then-write when r or w is not given.
    let rw = params.quorum("rw")?;
    let or_rw = |name: &str| -> Result<Quorum> {
        let q = params.quorum(name)?;
        Ok(if q == Quorum::Default { rw } else { q })
    };
    let request = DeleteRequest {
        r: or_rw("r")?,
        pr: params.quorum("pr")?,
        w: or_rw("w")?,
        dw: params.quorum("dw")?,
        pw: params.quorum("pw")?,
        timeout_ms: params.timeout_ms()?,
        ..DeleteRequest::new(path.bucket, path.key, vclock(&headers)?)
    };
    let response = api.coordinator.delete(request).await?;
    if response.existed {
        Ok(empty(StatusCode::NO_CONTENT))
    } else {
        Err(Error::NotFound("not found".into()))
    }
}

/// Validates a write's parameters, headers and body, then runs it through the coordinator.
async fn write<R: Replicas>(
    api: &Api<R>,
    bucket: &[u8],
    key: &[u8],
    params: &Params,
    headers: &HeaderMap,
    body: Body,
) -> Result<PutResponse> {
    let (w, dw, pw) = (
        params.quorum("w")?,
        params.quorum("dw")?,
        params.quorum("pw")?,
    );
    let timeout_ms = params.timeout_ms()?;
    let context = vclock(headers)?.unwrap_or_else(Context::empty);
    // Without a Content-Type nothing is stored: reads show DEFAULT_CONTENT_TYPE, and a value
    // exactly at the size limit (which counts metadata too) still fits.
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| Error::BadRequest("Content-Type is not visible ASCII".into()))?
                .trim()
                .to_string(),
        ),
    };
    let user_meta = user_meta(headers)?;
    let limit = api.coordinator.engine().limits().max_value_len;
    check_content_length(headers, limit)?;
    let value = read_limited(body, limit).await?;
    let request = PutRequest {
        w,
        dw,
        pw,
        timeout_ms,
        ..PutRequest::new(
            bucket,
            key,
            Content {
                value,
                content_type,
                user_meta,
                deleted: false,
            },
            context,
        )
    };
    Ok(api.coordinator.put(request).await?)
}

/// Answers a `returnbody` write like a GET of what the coordinator stored.
fn answer_with_body<R: Replicas>(
    api: &Api<R>,
    bucket: &[u8],
    style: PathStyle,
    stored: PutResponse,
    headers: &HeaderMap,
    single: StatusCode,
) -> Result<Response<Body>> {
    let mut object = stored.object;
    // A read of a bucket that resolves by timestamp shows one value; so does the write's answer.
    if api.coordinator.bucket_props(bucket).resolves_by_timestamp() {
        object.resolve_lww();
    }
    let response = GetResponse { object };
    let view = ObjectView {
        bucket,
        style,
        context: response.context(),
        siblings: response.siblings(),
    };
    render::render(
        &view,
        &Negotiation {
            single,
            multipart: render::prefers_multipart(headers.get(header::ACCEPT)),
            vtag: None,
            conditions: None,
        },
    )
}

/// The optional `X-Riak-Vclock` header; present but malformed is a 400.
fn vclock(headers: &HeaderMap) -> Result<Option<Context>> {
    let Some(value) = headers.get(VCLOCK_HEADER) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| Error::BadRequest("X-Riak-Vclock is not visible ASCII".into()))?;
    Context::from_base64(text)
        .map(Some)
        .map_err(|e| Error::BadRequest(format!("malformed X-Riak-Vclock: {e}")))
}

/// The `X-Riak-Meta-*` headers as (name, value) pairs, names without the prefix.
fn user_meta(headers: &HeaderMap) -> Result<Vec<(String, String)>> {
    let mut meta = Vec::new();
    for (name, value) in headers {
        let Some(suffix) = name.as_str().strip_prefix(META_PREFIX) else {
            continue;
        };
        if suffix.is_empty() {
            return Err(Error::BadRequest(
                "X-Riak-Meta- header without a name".into(),
            ));
        }
        let value = std::str::from_utf8(value.as_bytes())
            .map_err(|_| Error::BadRequest(format!("{name} is not UTF-8")))?;
        meta.push((suffix.to_string(), value.to_string()));
    }
    Ok(meta)
}

/// Refuses a body whose declared length is over the limit before reading any of it.
fn check_content_length(headers: &HeaderMap, limit: usize) -> Result<()> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(());
    };
    let len = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| Error::BadRequest("Content-Length is not a number".into()))?;
    if len > limit as u64 {
        return Err(too_large(len, limit));
    }
    Ok(())
}

fn too_large(len: impl std::fmt::Display, limit: usize) -> Error {
    Error::TooLarge(format!(
        "request body of {len} bytes is over the limit of {limit} bytes"
    ))
}

/// Reads a body of at most `limit` bytes; a longer one (even without `Content-Length`, as with
/// chunked encoding) is refused as soon as it passes the limit, without buffering the rest.
pub(crate) async fn read_limited(body: Body, limit: usize) -> Result<Bytes> {
    let mut stream = body.into_data_stream();
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    let mut len = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| Error::BadRequest(format!("could not read the request body: {e}")))?;
        len = len.saturating_add(chunk.len());
        if len > limit {
            return Err(too_large(format!("more than {limit}"), limit));
        }
        match first.take() {
            None if rest.is_empty() => first = Some(chunk),
            None => rest.extend_from_slice(&chunk),
            Some(previous) => {
                rest.extend_from_slice(&previous);
                rest.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(chunks: Vec<&'static [u8]>) -> Body {
        let stream = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::convert::Infallible>(Bytes::from_static(c))),
        );
        Body::from_stream(stream)
    }

    #[tokio::test]
    async fn bodies_are_joined_across_chunks() {
        let body = body_of(vec![b"ab", b"", b"cd", b"e"]);
        assert_eq!(
            read_limited(body, 5).await.unwrap(),
            Bytes::from_static(b"abcde")
        );
        let one = body_of(vec![b"abc"]);
        assert_eq!(
            read_limited(one, 3).await.unwrap(),
            Bytes::from_static(b"abc")
        );
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused() {
        let body = body_of(vec![b"abc", b"def"]);
        assert!(matches!(
            read_limited(body, 5).await,
            Err(Error::TooLarge(_))
        ));
    }

    #[test]
    fn declared_lengths_over_the_limit_are_refused_up_front() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("1000"));
        assert!(matches!(
            check_content_length(&h, 999),
            Err(Error::TooLarge(_))
        ));
        assert!(check_content_length(&h, 1000).is_ok());
    }

    #[test]
    fn metadata_headers_lose_their_prefix() {
        let mut h = HeaderMap::new();
        h.insert("x-riak-meta-color", HeaderValue::from_static("blue"));
        h.insert("x-other", HeaderValue::from_static("ignored"));
        assert_eq!(
            user_meta(&h).unwrap(),
            vec![("color".into(), "blue".into())]
        );
    }

    #[test]
    fn malformed_vclocks_are_bad_requests() {
        let mut h = HeaderMap::new();
        assert!(vclock(&h).unwrap().is_none());
        h.insert(VCLOCK_HEADER, HeaderValue::from_static("not base64!"));
        assert!(matches!(vclock(&h), Err(Error::BadRequest(_))));
    }
}
