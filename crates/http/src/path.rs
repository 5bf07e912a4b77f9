//! Resource paths: which bucket and key a request names, taken from the raw (still
//! percent-encoded) URL so that keys may be any bytes, including `/` (`%2F`) and non-UTF-8 (`%FF`).
//!
//! Three URL families name the same objects (Riak 2.x's two and its 1.x one):
//! `/buckets/{bucket}/keys/{key}`, `/types/default/buckets/{bucket}/keys/{key}` and
//! `/riak/{bucket}/{key}`. Only the `default` bucket type exists here.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::{Error, Result};

/// The only bucket type this node serves; Riak's bucket types are not implemented.
pub const DEFAULT_BUCKET_TYPE: &str = "default";

/// Which URL family a request used; URLs in answers (`Location`, `Link`) use the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathStyle {
    /// `/buckets/{bucket}/keys/{key}`.
    Buckets,
    /// `/types/default/buckets/{bucket}/keys/{key}`.
    Typed,
    /// Riak 1.x: `/riak/{bucket}/{key}`.
    Legacy,
}

impl PathStyle {
    /// The URL of a bucket in this family (the target of `Link: <...>; rel="up"`).
    pub fn bucket_url(self, bucket: &[u8]) -> String {
        let b = encode_segment(bucket);
        match self {
            PathStyle::Buckets => format!("/buckets/{b}"),
            PathStyle::Typed => format!("/types/{DEFAULT_BUCKET_TYPE}/buckets/{b}"),
            PathStyle::Legacy => format!("/riak/{b}"),
        }
    }

    /// The URL of an object in this family (the `Location` of a created object).
    pub fn object_url(self, bucket: &[u8], key: &[u8]) -> String {
        let k = encode_segment(key);
        match self {
            PathStyle::Legacy => format!("{}/{k}", self.bucket_url(bucket)),
            _ => format!("{}/keys/{k}", self.bucket_url(bucket)),
        }
    }
}

/// The object a request names: bucket and key as bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectPath {
    /// The bucket name, percent-decoded.
    pub bucket: Vec<u8>,
    /// The key, percent-decoded.
    pub key: Vec<u8>,
    /// The URL family used.
    pub style: PathStyle,
}

/// The bucket a request names (key listing, properties, server-assigned keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketPath {
    /// The bucket name, percent-decoded.
    pub bucket: Vec<u8>,
    /// The URL family used.
    pub style: PathStyle,
}

/// Splits a raw path into its resource: the URL family, the bucket and, for object paths, the key.
fn parse(path: &str) -> Result<(PathStyle, Vec<u8>, Option<Vec<u8>>)> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (style, bucket, key) = match segments.as_slice() {
        ["buckets", b, "keys", k] => (PathStyle::Buckets, *b, Some(*k)),
        ["buckets", b, "keys" | "props"] => (PathStyle::Buckets, *b, None),
        ["types", t, "buckets", b, "keys", k] => {
            check_bucket_type(t)?;
            (PathStyle::Typed, *b, Some(*k))
        }
        ["types", t, "buckets", b, "keys" | "props"] => {
            check_bucket_type(t)?;
            (PathStyle::Typed, *b, None)
        }
        ["riak", b, k] => (PathStyle::Legacy, *b, Some(*k)),
        ["riak", b] => (PathStyle::Legacy, *b, None),
        _ => return Err(Error::NotFound(format!("no resource at {path}"))),
    };
    let bucket = decode_segment(bucket)?;
    if bucket.is_empty() {
        return Err(Error::BadRequest("bucket name is empty".into()));
    }
    let key = key.map(decode_segment).transpose()?;
    if key.as_ref().is_some_and(Vec::is_empty) {
        return Err(Error::BadRequest("key is empty".into()));
    }
    Ok((style, bucket, key))
}

fn check_bucket_type(raw: &str) -> Result<()> {
    let t = decode_segment(raw)?;
    if t == DEFAULT_BUCKET_TYPE.as_bytes() {
        Ok(())
    } else {
        Err(Error::NotFound(format!(
            "unknown bucket type {:?}: only the {DEFAULT_BUCKET_TYPE:?} type exists",
            String::from_utf8_lossy(&t)
        )))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ObjectPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self> {
        match parse(parts.uri.path())? {
            (style, bucket, Some(key)) => Ok(ObjectPath { bucket, key, style }),
            (_, _, None) => Err(Error::NotFound(format!(
                "{} names a bucket, not an object",
                parts.uri.path()
            ))),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for BucketPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self> {
        match parse(parts.uri.path())? {
            (style, bucket, None) => Ok(BucketPath { bucket, style }),
            (_, _, Some(_)) => Err(Error::NotFound(format!(
                "{} names an object, not a bucket",
                parts.uri.path()
            ))),
        }
    }
}

/// Percent-decodes one path segment into bytes (`+` stays a plus sign, as in any URL path).
pub fn decode_segment(raw: &str) -> Result<Vec<u8>> {
    percent_decode(raw.as_bytes(), false)
        .ok_or_else(|| Error::BadRequest(format!("malformed percent-encoding in {raw:?}")))
}

/// Percent-decodes one query-string component (`+` means a space, as in HTML forms).
pub fn decode_query_component(raw: &str) -> Result<String> {
    let bytes = percent_decode(raw.as_bytes(), true)
        .ok_or_else(|| Error::BadRequest(format!("malformed percent-encoding in {raw:?}")))?;
    String::from_utf8(bytes)
        .map_err(|_| Error::BadRequest(format!("query parameter {raw:?} is not UTF-8")))
}

fn percent_decode(raw: &[u8], plus_is_space: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'%' => {
                let hi = hex_value(*bytes.next()?)?;
                let lo = hex_value(*bytes.next()?)?;
                out.push(hi << 4 | lo);
            }
            b'+' if plus_is_space => out.push(b' '),
            other => out.push(other),
        }
    }
    Some(out)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes bytes as one path segment: RFC 3986's unreserved characters stay as they are,
/// every other byte becomes `%XX`.
pub fn encode_segment(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_three_url_families_name_the_same_object() {
        for path in [
            "/buckets/b%20x/keys/k%2Fy",
            "/types/default/buckets/b%20x/keys/k%2Fy",
            "/riak/b%20x/k%2Fy",
        ] {
            let (_, bucket, key) = parse(path).unwrap();
            assert_eq!(bucket, b"b x");
            assert_eq!(key.unwrap(), b"k/y");
        }
    }

    #[test]
    fn keys_may_be_any_bytes() {
        let (_, _, key) = parse("/buckets/b/keys/%FF%00a+").unwrap();
        assert_eq!(key.unwrap(), vec![0xff, 0, b'a', b'+']);
    }

    #[test]
    fn other_bucket_types_are_not_found() {
        let err = parse("/types/maps/buckets/b/keys/k").unwrap_err();
        assert!(
            matches!(err, Error::NotFound(ref m) if m.contains("maps")),
            "{err}"
        );
    }

    #[test]
    fn malformed_percent_encoding_is_a_bad_request() {
        for path in [
            "/buckets/b/keys/%G1",
            "/buckets/b/keys/a%2",
            "/buckets/%/props",
        ] {
            assert!(matches!(parse(path), Err(Error::BadRequest(_))), "{path}");
        }
    }

    #[test]
    fn urls_in_answers_follow_the_request_family() {
        assert_eq!(
            PathStyle::Buckets.object_url(b"b", b"a/b"),
            "/buckets/b/keys/a%2Fb"
        );
        assert_eq!(
            PathStyle::Typed.object_url(b"b", b"k"),
            "/types/default/buckets/b/keys/k"
        );
        assert_eq!(PathStyle::Legacy.object_url(b"b", b"k"), "/riak/b/k");
    }

    #[test]
    fn query_components_decode_plus_as_space() {
        assert_eq!(decode_query_component("a+b%21").unwrap(), "a b!");
        assert!(decode_query_component("%FF").is_err());
    }

    proptest! {
        #[test]
        fn encoding_then_decoding_a_segment_gives_the_bytes_back(
            bytes in proptest::collection::vec(any::<u8>(), 0..64)
        ) {
            let encoded = encode_segment(&bytes);
            prop_assert!(!encoded.contains('/'));
            prop_assert_eq!(decode_segment(&encoded).unwrap(), bytes);
        }
    }
}
