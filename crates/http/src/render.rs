//! How an object becomes an HTTP answer, as Riak's fetch-object documents it: one sibling is a
//! 200 with the value as the body; several are a 300 with either a `multipart/mixed` body holding
//! every sibling or a `Siblings:` list of vtags; none is a 404. Every answer carries the context
//! as `X-Riak-Vclock` so the client's next write supersedes what it read.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Response, StatusCode};
use dynamo_storage::Content;
use dynamo_versioning::{Context, Dot, Sibling};
use md5::{Digest, Md5};

use crate::error::{Error, Result};
use crate::path::PathStyle;

/// Riak's header carrying the opaque causal context.
pub const VCLOCK_HEADER: &str = "x-riak-vclock";

/// Prefix of the headers that carry user metadata.
pub const META_PREFIX: &str = "x-riak-meta-";

/// The media type of a value stored without a `Content-Type`.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Digits of a vtag or generated key: 62^22 > 2^128, so 22 base-62 digits hold any 128-bit number,
/// the same length as Riak's vtags.
const BASE62_DIGITS: usize = 22;

/// The last instant an HTTP date can express (31 Dec 9999 23:59:59 UTC), in milliseconds; later
/// timestamps (a wild clock) are shown as this.
const MAX_HTTP_DATE_MS: u64 = 253_402_300_799_000;

/// How many random boundaries a multipart answer tries before giving up; a 128-bit boundary
/// collides with a value only if a client planted it, and then a fresh one will not.
const MAX_BOUNDARY_ATTEMPTS: usize = 8;

/// Writes `n` as 22 base-62 digits (`0-9A-Za-z`): URL-safe, fixed width.
pub fn base62(mut n: u128) -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut digits = [b'0'; BASE62_DIGITS];
    for d in digits.iter_mut().rev() {
        *d = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    digits.iter().map(|&b| char::from(b)).collect()
}

/// A sibling's vtag (its `ETag`): base 62 of an MD5 of the dot of the write that made it. Dots are
/// never reused, so vtags are unique per version and the same on every node and build.
pub fn vtag(dot: &Dot) -> String {
    let mut hasher = Md5::new();
    hasher.update(b"dynamo-vtag-v1");
    hasher.update(dot.actor.node.to_be_bytes());
    hasher.update(dot.actor.epoch.to_be_bytes());
    hasher.update(dot.counter.to_be_bytes());
    let digest: [u8; 16] = hasher.finalize().into();
    base62(u128::from_be_bytes(digest))
}

/// The wall-clock time of a write as a `SystemTime`, clamped to what an HTTP date can show.
fn write_time(timestamp_ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(timestamp_ms.min(MAX_HTTP_DATE_MS))
}

/// A timestamp in the HTTP date format (RFC 1123, always GMT), for `Last-Modified`.
pub fn http_date(timestamp_ms: u64) -> String {
    httpdate::fmt_http_date(write_time(timestamp_ms))
}

/// Whether an `Accept` header prefers `multipart/mixed` to `text/plain` (the two ways Riak answers
/// with siblings). Quality values count; an exact type beats a wildcard with the same quality.
pub fn prefers_multipart(accept: Option<&HeaderValue>) -> bool {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let (multipart, plain) = (
        quality(accept, "multipart", "mixed"),
        quality(accept, "text", "plain"),
    );
    multipart.0 > 0 && multipart > plain
}

/// The quality `accept` gives `kind/sub`, with the specificity of the range that gave it
/// (2 exact, 1 `kind/*`, 0 `*/*`); `(0, -1)` when nothing matches.
fn quality(accept: &str, kind: &str, sub: &str) -> (u16, i8) {
    let mut best: Option<(i8, u16)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0)
            .clamp(0.0, 1.0);
        let specificity = match media.split_once('/') {
            Some((k, s)) if k == kind && s == sub => 2,
            Some((k, "*")) if k == kind => 1,
            Some(("*", "*")) => 0,
            _ => continue,
        };
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, (q * 1000.0) as u16));
        }
    }
    best.map_or((0, -1), |(s, q)| (q, s))
}

/// What a GET or a `returnbody` write answers about one key.
pub struct ObjectView<'a> {
    /// The bucket, for the `Link` header.
    pub bucket: &'a [u8],
    /// The URL family of the request.
    pub style: PathStyle,
    /// The context covering every version returned.
    pub context: Context,
    /// The live siblings.
    pub siblings: Vec<&'a Sibling<Content>>,
}

/// How to answer: what the request asked for.
pub struct Negotiation<'a> {
    /// Status of a single-sibling answer (200, or 201 for a created object).
    pub single: StatusCode,
    /// Whether the client prefers every sibling in one multipart body.
    pub multipart: bool,
    /// The sibling the client selected with `?vtag=`.
    pub vtag: Option<&'a str>,
    /// Request headers for conditional GETs (`If-None-Match`, `If-Modified-Since`).
    pub conditions: Option<&'a HeaderMap>,
}

/// Builds the answer for `view`.
pub fn render(view: &ObjectView<'_>, how: &Negotiation<'_>) -> Result<Response<Body>> {
    let mut headers = HeaderMap::new();
    if !view.context.is_empty() {
        let vclock = HeaderValue::from_str(&view.context.to_base64())
            .map_err(|e| Error::Internal(format!("context is not a header value: {e}")))?;
        headers.insert(HeaderName::from_static(VCLOCK_HEADER), vclock);
    }
    let chosen: Vec<&Sibling<Content>> = match how.vtag {
        Some(tag) => match view.siblings.iter().find(|s| vtag(&s.dot) == tag) {
            Some(s) => vec![*s],
            None => return Err(Error::NotFound(format!("no sibling has vtag {tag:?}"))),
        },
        None => view.siblings.clone(),
    };
    match chosen.as_slice() {
        [] => Ok(finish(
            StatusCode::NOT_FOUND,
            headers,
            "not found\n".into(),
            None,
        )),
        [one] => {
            let link = format!("<{}>; rel=\"up\"", view.style.bucket_url(view.bucket));
            if let Ok(link) = HeaderValue::from_str(&link) {
                headers.insert(header::LINK, link);
            }
            sibling_headers(one, &mut headers);
            if how.conditions.is_some_and(|c| not_modified(one, c)) {
                return Ok(finish(
                    StatusCode::NOT_MODIFIED,
                    headers,
                    Body::empty(),
                    None,
                ));
            }
            let body = Body::from(one.value.value.clone());
            Ok(finish(how.single, headers, body, None))
        }
        many if how.multipart => {
            headers.insert(header::VARY, HeaderValue::from_static("Accept"));
            let (boundary, body) = multipart(many)?;
            let content_type = format!("multipart/mixed; boundary={boundary}");
            Ok(finish(
                StatusCode::MULTIPLE_CHOICES,
                headers,
                body.into(),
                Some(content_type),
            ))
        }
        many => {
            headers.insert(header::VARY, HeaderValue::from_static("Accept"));
            let mut body = String::from("Siblings:\n");
            for s in many {
                body.push_str(&vtag(&s.dot));
                body.push('\n');
            }
            let plain = Some("text/plain".to_string());
            Ok(finish(
                StatusCode::MULTIPLE_CHOICES,
                headers,
                body.into(),
                plain,
            ))
        }
    }
}

fn finish(
    status: StatusCode,
    mut headers: HeaderMap,
    body: Body,
    content_type: Option<String>,
) -> Response<Body> {
    if let Some(ct) = content_type.and_then(|ct| HeaderValue::from_str(&ct).ok()) {
        headers.insert(header::CONTENT_TYPE, ct);
    } else if !headers.contains_key(header::CONTENT_TYPE) {
        let plain = HeaderValue::from_static("text/plain; charset=utf-8");
        headers.insert(header::CONTENT_TYPE, plain);
    }
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// `Content-Type`, `ETag`, `Last-Modified` and `X-Riak-Meta-*` of one sibling. Metadata that
/// cannot be a header (stored by a non-HTTP client) is left out rather than failing the read.
fn sibling_headers(s: &Sibling<Content>, headers: &mut HeaderMap) {
    for (name, value) in part_headers(s) {
        headers.append(name, value);
    }
}

fn part_headers(s: &Sibling<Content>) -> Vec<(HeaderName, HeaderValue)> {
    let content_type = s
        .value
        .content_type
        .as_deref()
        .and_then(|ct| HeaderValue::from_str(ct).ok())
        .unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
    let mut out = vec![(header::CONTENT_TYPE, content_type)];
    if let Ok(etag) = HeaderValue::from_str(&vtag(&s.dot)) {
        out.push((header::ETAG, etag));
    }
    if let Ok(date) = HeaderValue::from_str(&http_date(s.timestamp_ms)) {
        out.push((header::LAST_MODIFIED, date));
    }
    for (name, value) in &s.value.user_meta {
        let header_name = HeaderName::from_bytes(format!("{META_PREFIX}{name}").as_bytes());
        match (header_name, HeaderValue::from_bytes(value.as_bytes())) {
            (Ok(n), Ok(v)) => out.push((n, v)),
            _ => tracing::debug!(meta = %name, "metadata that is not a valid header left out"),
        }
    }
    out
}

/// Whether a conditional GET's validators say the client's copy is current.
fn not_modified(s: &Sibling<Content>, request: &HeaderMap) -> bool {
    if let Some(tags) = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        let mine = vtag(&s.dot);
        return tags
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
            .any(|t| t == "*" || t == mine);
    }
    let since = request
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    // Last-Modified has one-second resolution: compare whole seconds.
    let written = write_time(s.timestamp_ms - s.timestamp_ms % 1000);
    since.is_some_and(|since| written <= since)
}

/// Every sibling as a part of one `multipart/mixed` body (RFC 2046), each with its own headers.
fn multipart(siblings: &[&Sibling<Content>]) -> Result<(String, Vec<u8>)> {
    let boundary = (0..MAX_BOUNDARY_ATTEMPTS)
        .map(|_| base62(rand::random::<u128>()))
        .find(|b| {
            !siblings
                .iter()
                .any(|s| contains(&s.value.value, b.as_bytes()))
        })
        .ok_or_else(|| Error::Internal("no multipart boundary avoids every value".into()))?;
    let mut body = Vec::new();
    for s in siblings {
        body.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
        for (name, value) in part_headers(s) {
            body.extend_from_slice(canonical(&name).as_bytes());
            body.extend_from_slice(b": ");
            body.extend_from_slice(value.as_bytes());
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(&s.value.value);
    }
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok((boundary, body))
}

/// Header names as Riak writes them inside multipart bodies.
fn canonical(name: &HeaderName) -> String {
    match name.as_str() {
        "content-type" => "Content-Type".into(),
        "etag" => "Etag".into(),
        "last-modified" => "Last-Modified".into(),
        other => match other.strip_prefix(META_PREFIX) {
            Some(meta) => format!("X-Riak-Meta-{meta}"),
            None => other.into(),
        },
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynamo_versioning::Actor;
    use proptest::prelude::*;

    fn sibling(node: u64, counter: u64, value: &str) -> Sibling<Content> {
        Sibling {
            dot: Dot::new(Actor::new(node, 0), counter),
            timestamp_ms: 1_268_244_701_000,
            value: Content {
                content_type: Some("application/json".into()),
                user_meta: vec![("color".into(), "blue".into())],
                ..Content::new(value.to_string())
            },
        }
    }

    #[test]
    fn base62_is_fixed_width_and_url_safe() {
        assert_eq!(base62(0), "0".repeat(22));
        let max = base62(u128::MAX);
        assert_eq!(max.len(), 22);
        assert!(max.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(base62(1), base62(2));
    }

    #[test]
    fn vtags_differ_per_dot_and_are_stable() {
        let a = Dot::new(Actor::new(1, 0), 1);
        let b = Dot::new(Actor::new(1, 0), 2);
        let c = Dot::new(Actor::new(1, 1), 1);
        assert_eq!(vtag(&a), vtag(&a));
        assert_ne!(vtag(&a), vtag(&b));
        assert_ne!(vtag(&a), vtag(&c));
    }

    #[test]
    fn http_dates_are_rfc_1123_gmt() {
        assert_eq!(
            http_date(1_268_244_701_000),
            "Wed, 10 Mar 2010 18:11:41 GMT"
        );
        assert_eq!(http_date(u64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn accept_negotiation_between_multipart_and_plain() {
        let prefers = |s: &'static str| prefers_multipart(Some(&HeaderValue::from_static(s)));
        assert!(prefers("multipart/mixed"));
        assert!(prefers("multipart/mixed, */*;q=0.5"));
        assert!(prefers("multipart/*"));
        assert!(!prefers("*/*"));
        assert!(!prefers("text/plain, multipart/mixed;q=0.5"));
        assert!(!prefers("multipart/mixed;q=0"));
        assert!(!prefers_multipart(None));
    }

    #[test]
    fn multipart_bodies_hold_every_sibling_with_its_headers() {
        let (a, b) = (sibling(1, 1, "{\"a\":1}"), sibling(2, 1, "{\"b\":2}"));
        let (boundary, body) = multipart(&[&a, &b]).unwrap();
        let text = String::from_utf8(body).unwrap();
        assert_eq!(text.matches(&format!("\r\n--{boundary}\r\n")).count(), 2);
        assert!(text.ends_with(&format!("\r\n--{boundary}--\r\n")));
        assert!(text.contains(&format!("Etag: {}\r\n", vtag(&a.dot))));
        assert!(text.contains(&format!("Etag: {}\r\n", vtag(&b.dot))));
        assert!(text.contains("Content-Type: application/json\r\n"));
        assert!(text.contains("Last-Modified: Wed, 10 Mar 2010 18:11:41 GMT\r\n"));
        assert!(text.contains("X-Riak-Meta-color: blue\r\n"));
        assert!(text.contains("\r\n\r\n{\"a\":1}\r\n--"));
    }

    #[test]
    fn conditional_gets_compare_vtag_and_whole_seconds() {
        let s = sibling(1, 1, "v");
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"{}\"", vtag(&s.dot))).unwrap(),
        );
        assert!(not_modified(&s, &h));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("other"));
        assert!(!not_modified(&s, &h));
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_MODIFIED_SINCE,
            HeaderValue::from_static("Wed, 10 Mar 2010 18:11:41 GMT"),
        );
        assert!(not_modified(&s, &h));
        h.insert(
            header::IF_MODIFIED_SINCE,
            HeaderValue::from_static("Wed, 10 Mar 2010 18:11:40 GMT"),
        );
        assert!(!not_modified(&s, &h));
        h.insert(
            header::IF_MODIFIED_SINCE,
            HeaderValue::from_static("yesterday"),
        );
        assert!(!not_modified(&s, &h));
    }

    proptest! {
        #[test]
        fn base62_is_injective(a in any::<u128>(), b in any::<u128>()) {
            prop_assert_eq!(base62(a) == base62(b), a == b);
        }
    }
}
