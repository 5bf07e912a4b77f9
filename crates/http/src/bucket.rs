//! Bucket endpoints (Riak's get-bucket-props, set-bucket-props and list-keys):
//! `GET`/`PUT /buckets/{bucket}/props` and `GET /buckets/{bucket}/keys?keys=true|stream`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Response, StatusCode};
use bytes::Bytes;
use dynamo_coordinator::{BucketProps, Quorum, Replicas};
use serde_json::{Map, Value, json};

use crate::Api;
use crate::error::{Error, Result};
use crate::object::read_limited;
use crate::params::Params;
use crate::path::BucketPath;

/// GET a bucket's properties as `{"props": {...}}`.
pub(crate) async fn get_props<R: Replicas>(
    State(api): State<Arc<Api<R>>>,
    path: BucketPath,
) -> Result<Response<Body>> {
    let props = api.coordinator.bucket_props(&path.bucket);
    Ok(json_response(
        &json!({ "props": props_json(&path.bucket, &props) }),
    ))
}

/// PUT a bucket's properties: the given fields replace the current ones, the rest stay.
pub(crate) async fn set_props<R: Replicas>(
    State(api): State<Arc<Api<R>>>,
    path: BucketPath,
    headers: HeaderMap,
    body: Body,
) -> Result<Response<Body>> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return Err(Error::UnsupportedMediaType(format!(
            "bucket properties must be sent as application/json, not {content_type:?}"
        )));
    }
    let body = read_limited(body, api.options.max_props_body).await?;
    let current = api.coordinator.bucket_props(&path.bucket);
    let props = merge_props(&path.bucket, current, &body)?;
    api.coordinator
        .set_bucket_props(&path.bucket, props)
        .await?;
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

/// GET a bucket's keys: `keys=true` in one JSON object, `keys=stream` as a chunked series of them.
pub(crate) async fn list_keys<R: Replicas>(
    State(api): State<Arc<Api<R>>>,
    path: BucketPath,
    params: Params,
) -> Result<Response<Body>> {
    let stream = match params.get("keys") {
        Some("true") => false,
        Some("stream") => true,
        other => {
            return Err(Error::BadRequest(format!(
                "keys={} is not allowed: list keys with keys=true or keys=stream",
                other.map_or_else(|| "<missing>".to_string(), |v| format!("{v:?}"))
            )));
        }
    };
    let keys: Vec<String> = api
        .coordinator
        .list_keys(&path.bucket)
        .await?
        .into_iter()
        // JSON strings are Unicode: a key that is not UTF-8 is listed with U+FFFD in place of
        // its invalid bytes (fetch it with its percent-encoded bytes).
        .map(|k| String::from_utf8_lossy(&k).into_owned())
        .collect();
    if !stream {
        return Ok(json_response(&json!({ "keys": keys })));
    }
    let chunk = api.options.keys_stream_chunk.max(1);
    let mut pieces: Vec<Bytes> = keys
        .chunks(chunk)
        .map(|c| Bytes::from(json!({ "keys": c }).to_string()))
        .collect();
    if pieces.is_empty() {
        pieces.push(Bytes::from_static(b"{\"keys\":[]}"));
    }
    let body = Body::from_stream(futures::stream::iter(
        pieces.into_iter().map(Ok::<_, Infallible>),
    ));
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// A bucket's properties as Riak shows them: quorums as numbers or `"quorum"`/`"one"`/`"all"`.
pub(crate) fn props_json(bucket: &[u8], props: &BucketProps) -> Value {
    let quorum = |q: Quorum| match q {
        Quorum::Count(c) => json!(c),
        other => json!(other.to_string()),
    };
    json!({
        "name": String::from_utf8_lossy(bucket),
        "n_val": props.n_val,
        "r": quorum(props.r),
        "w": quorum(props.w),
        "dw": quorum(props.dw),
        "pr": quorum(props.pr),
        "pw": quorum(props.pw),
        "allow_mult": props.allow_mult,
        "last_write_wins": props.last_write_wins,
    })
}

/// Applies a `{"props": {...}}` body to `current`. Unknown fields and badly typed values are a
/// 400; whether the result makes sense as a whole is checked when it is set.
pub(crate) fn merge_props(
    bucket: &[u8],
    mut props: BucketProps,
    body: &[u8],
) -> Result<BucketProps> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest(format!("bucket properties are not valid JSON: {e}")))?;
    let fields = match value {
        Value::Object(mut top) if top.len() == 1 => match top.remove("props") {
            Some(Value::Object(fields)) => fields,
            _ => return Err(props_shape()),
        },
        _ => return Err(props_shape()),
    };
    apply_fields(bucket, &mut props, fields)?;
    Ok(props)
}

fn props_shape() -> Error {
    Error::BadRequest("the body must be a JSON object {\"props\": {...}}".into())
}

fn apply_fields(bucket: &[u8], props: &mut BucketProps, fields: Map<String, Value>) -> Result<()> {
    for (name, value) in fields {
        match name.as_str() {
            "name" => {
                if value.as_str() != Some(String::from_utf8_lossy(bucket).as_ref()) {
                    return Err(Error::BadRequest(format!(
                        "name={value} does not match the bucket in the URL"
                    )));
                }
            }
            "n_val" => props.n_val = small_number(&name, &value)?,
            "r" => props.r = quorum_value(&name, &value)?,
            "w" => props.w = quorum_value(&name, &value)?,
            "dw" => props.dw = quorum_value(&name, &value)?,
            "pr" => props.pr = quorum_value(&name, &value)?,
            "pw" => props.pw = quorum_value(&name, &value)?,
            "allow_mult" => props.allow_mult = boolean(&name, &value)?,
            "last_write_wins" => props.last_write_wins = boolean(&name, &value)?,
            _ => {
                return Err(Error::BadRequest(format!(
                    "unknown bucket property {name:?} (known: n_val, r, w, dw, pr, pw, \
                     allow_mult, last_write_wins, name)"
                )));
            }
        }
    }
    Ok(())
}

fn small_number(name: &str, value: &Value) -> Result<u8> {
    value
        .as_u64()
        .and_then(|n| u8::try_from(n).ok())
        .ok_or_else(|| Error::BadRequest(format!("{name}={value} must be a small whole number")))
}

fn quorum_value(name: &str, value: &Value) -> Result<Quorum> {
    match value {
        Value::Number(_) => small_number(name, value).map(Quorum::Count),
        Value::String(s) => s.parse().map_err(|_| {
            Error::BadRequest(format!(
                "{name}={value} must be a number or one of \"one\", \"quorum\", \"all\", \"default\""
            ))
        }),
        _ => Err(Error::BadRequest(format!(
            "{name}={value} must be a number or a string"
        ))),
    }
}

fn boolean(name: &str, value: &Value) -> Result<bool> {
    value
        .as_bool()
        .ok_or_else(|| Error::BadRequest(format!("{name}={value} must be true or false")))
}

fn json_response(value: &Value) -> Response<Body> {
    let mut response = Response::new(Body::from(value.to_string()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn props_show_quorums_as_riak_does() {
        let v = props_json(b"test", &BucketProps::default());
        assert_eq!(v["name"], "test");
        assert_eq!(v["n_val"], 3);
        assert_eq!(v["r"], "quorum");
        assert_eq!(v["dw"], 0);
        assert_eq!(v["allow_mult"], true);
    }

    #[test]
    fn partial_updates_keep_the_other_fields() {
        let body = br#"{"props":{"n_val":5,"r":"all","w":2,"allow_mult":false}}"#;
        let p = merge_props(b"b", BucketProps::default(), body).unwrap();
        assert_eq!(p.n_val, 5);
        assert_eq!(p.r, Quorum::All);
        assert_eq!(p.w, Quorum::Count(2));
        assert!(!p.allow_mult);
        assert_eq!(p.dw, BucketProps::default().dw);
    }

    #[test]
    fn the_name_may_be_echoed_back() {
        let body = br#"{"props":{"name":"b","n_val":2}}"#;
        assert_eq!(
            merge_props(b"b", BucketProps::default(), body)
                .unwrap()
                .n_val,
            2
        );
        let wrong = br#"{"props":{"name":"other"}}"#;
        assert!(merge_props(b"b", BucketProps::default(), wrong).is_err());
    }

    #[test]
    fn bad_bodies_are_bad_requests() {
        for body in [
            &br#"not json"#[..],
            br#"[]"#,
            br#"{"props":1}"#,
            br#"{"props":{},"extra":1}"#,
            br#"{"props":{"color":"red"}}"#,
            br#"{"props":{"n_val":"3"}}"#,
            br#"{"props":{"n_val":300}}"#,
            br#"{"props":{"n_val":-1}}"#,
            br#"{"props":{"r":"most"}}"#,
            br#"{"props":{"r":true}}"#,
            br#"{"props":{"allow_mult":"yes"}}"#,
        ] {
            let result = merge_props(b"b", BucketProps::default(), body);
            assert!(
                matches!(result, Err(Error::BadRequest(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
