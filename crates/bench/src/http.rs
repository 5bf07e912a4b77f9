//! The cluster through its Riak-compatible HTTP API (server-driven coordination): each request
//! goes to the next endpoint of a list in turn, as a round-robin load balancer would send it, and
//! the receiving node coordinates it or forwards it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;

use crate::error::{Error, Result};
use crate::store::{OpError, ReadOutcome, Store};

/// The header carrying an object's causal context in Riak's HTTP API.
pub const VCLOCK_HEADER: &str = "x-riak-vclock";

/// One bucket on a list of HTTP endpoints.
#[derive(Debug)]
pub struct HttpStore {
    http: reqwest::Client,
    /// Base URL of each endpoint's bucket, e.g. `http://127.0.0.1:8098/buckets/ycsb/keys/`.
    bases: Vec<String>,
    next: AtomicUsize,
}

impl HttpStore {
    /// Requests to `bucket` spread over `endpoints` (`host:port` or `http://host:port`), each
    /// given up after `timeout`.
    pub fn new(endpoints: &[String], bucket: &[u8], timeout: Duration) -> Result<HttpStore> {
        if endpoints.is_empty() {
            return Err(Error::Config("--http needs at least one endpoint".into()));
        }
        let mut bases = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let root = if endpoint.contains("://") {
                endpoint.trim_end_matches('/').to_string()
            } else {
                format!("http://{}", endpoint.trim_end_matches('/'))
            };
            if !root.starts_with("http://") {
                return Err(Error::Config(format!(
                    "endpoint {endpoint:?}: only plain http:// is supported"
                )));
            }
            bases.push(format!("{root}/buckets/{}/keys/", encode_segment(bucket)));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Config(format!("http client: {e}")))?;
        Ok(HttpStore {
            http,
            bases,
            next: AtomicUsize::new(0),
        })
    }

    /// The URL of `key` on the next endpoint.
    fn url(&self, key: &[u8]) -> String {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.bases.len();
        format!("{}{}", self.bases[i], encode_segment(key))
    }
}

/// Percent-encodes every byte outside RFC 3986's unreserved set, so any bytes can be a path
/// segment.
pub fn encode_segment(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The counting name of a transport error.
fn transport_error(e: &reqwest::Error) -> OpError {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "http_io"
    };
    OpError::new(kind, e)
}

/// The counting name of an unexpected status, with the body's first line as detail.
fn status_error(status: StatusCode, body: &[u8]) -> OpError {
    let text = String::from_utf8_lossy(body);
    let first = text.lines().next().unwrap_or("");
    OpError::new(
        format!("http_{}", status.as_u16()),
        format!("{status}: {first}"),
    )
}

impl Store for HttpStore {
    type Version = Option<String>;

    async fn read(&self, key: &[u8]) -> std::result::Result<ReadOutcome<Self::Version>, OpError> {
        let response = self
            .http
            .get(self.url(key))
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = response.status();
        let version = response
            .headers()
            .get(VCLOCK_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Read the whole body so the connection can be reused.
        let body = response.bytes().await.map_err(|e| transport_error(&e))?;
        match status {
            // 300 Multiple Choices: siblings, still a successful read.
            StatusCode::OK | StatusCode::MULTIPLE_CHOICES => Ok(ReadOutcome {
                found: true,
                version,
            }),
            StatusCode::NOT_FOUND => Ok(ReadOutcome {
                found: false,
                version,
            }),
            other => Err(status_error(other, &body)),
        }
    }

    async fn write(
        &self,
        key: &[u8],
        value: Bytes,
        version: Self::Version,
    ) -> std::result::Result<(), OpError> {
        let mut request = self
            .http
            .put(self.url(key))
            .header("content-type", "application/octet-stream")
            .body(value);
        if let Some(vclock) = version {
            request = request.header(VCLOCK_HEADER, vclock);
        }
        let response = request.send().await.map_err(|e| transport_error(&e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| transport_error(&e))?;
        if status.is_success() {
            Ok(())
        } else {
            Err(status_error(status, &body))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment(b"user42"), "user42");
        assert_eq!(encode_segment(b"a/b c"), "a%2Fb%20c");
        assert_eq!(encode_segment(&[0xFF]), "%FF");
    }

    #[test]
    fn requests_rotate_over_the_endpoints() {
        let endpoints = vec![
            "127.0.0.1:8098".to_string(),
            "http://127.0.0.1:8099/".into(),
        ];
        let store = HttpStore::new(&endpoints, b"ycsb", Duration::from_secs(1)).unwrap();
        let urls: Vec<String> = (0..3).map(|_| store.url(b"k")).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:8098/buckets/ycsb/keys/k",
                "http://127.0.0.1:8099/buckets/ycsb/keys/k",
                "http://127.0.0.1:8098/buckets/ycsb/keys/k",
            ]
        );
    }

    #[test]
    fn bad_endpoints_are_refused() {
        let timeout = Duration::from_secs(1);
        assert!(HttpStore::new(&[], b"b", timeout).is_err());
        assert!(HttpStore::new(&["https://x:1".into()], b"b", timeout).is_err());
    }
}
