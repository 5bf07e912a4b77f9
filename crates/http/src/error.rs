//! The HTTP layer's error type and how each error becomes a status code and a short text body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use thiserror::Error;

/// Why a request was refused or failed. Every variant maps to one HTTP status (see
/// [`Error::status`]); client mistakes are always 4xx, never 500.
#[derive(Debug, Error)]
pub enum Error {
    /// A malformed path, query parameter, header or body (HTTP 400). Nothing was changed.
    #[error("{0}")]
    BadRequest(String),
    /// The resource does not exist: an unknown bucket type, an unknown sibling vtag, or a path
    /// this API does not serve (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// The request body is not in a media type the endpoint accepts (HTTP 415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A value or body over the configured size limit (HTTP 413). Nothing was changed.
    #[error("{0}")]
    TooLarge(String),
    /// The coordinator refused or failed the request; its variant decides the status.
    #[error(transparent)]
    Coordinator(#[from] dynamo_coordinator::Error),
    /// Something inside this node went wrong while building the answer (HTTP 500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        use dynamo_coordinator::Error as C;
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Coordinator(e) => match e {
                C::InvalidRequest(_) => StatusCode::BAD_REQUEST,
                C::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                C::Unavailable { .. } | C::Timeout(_) | C::Unreachable(_) | C::Overloaded(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                C::Storage(_) | C::Internal(_) | C::Cancelled(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
        }
    }

    /// Whether the client may get a different answer by sending the same request again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Coordinator(e) => e.is_retryable(),
            Error::Internal(_) => true,
            _ => false,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(%status, error = %self, "request failed");
        } else {
            tracing::debug!(%status, error = %self, "request refused");
        }
        let mut response = (status, format!("{self}\n")).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

/// The HTTP layer's result type.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;
    use dynamo_coordinator::Error as C;

    #[test]
    fn coordinator_errors_map_to_riak_statuses() {
        let cases = [
            (C::InvalidRequest("r".into()), 400),
            (C::TooLarge("v".into()), 413),
            (
                C::Unavailable {
                    kind: "r".into(),
                    needed: 2,
                    got: 1,
                    detail: String::new(),
                },
                503,
            ),
            (C::Timeout(10), 503),
            (C::Unreachable("x".into()), 503),
            (C::Overloaded("x".into()), 503),
            (C::Storage("disk".into()), 500),
            (C::Internal("bug".into()), 500),
        ];
        for (e, code) in cases {
            assert_eq!(Error::from(e.clone()).status().as_u16(), code, "{e}");
        }
    }

    #[test]
    fn error_bodies_are_short_plain_text() {
        let response =
            Error::BadRequest("timeout must be a positive integer".into()).into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
    }
}
