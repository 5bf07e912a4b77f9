//! Query parameters (`r`, `w`, `dw`, `pr`, `pw`, `rw`, `timeout`, `returnbody`, `vtag`, `keys`),
//! parsed strictly: a parameter this API knows with a value it cannot use is a 400, so a client's
//! typo never silently falls back to a default. Unknown parameters are ignored, as Riak does.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use dynamo_coordinator::Quorum;

use crate::error::{Error, Result};
use crate::path::decode_query_component;

/// The decoded query string of one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Decodes a raw query string (`a=1&b=two`); a malformed escape is a 400.
    pub fn parse(query: Option<&str>) -> Result<Params> {
        let mut pairs = Vec::new();
        for piece in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            pairs.push((
                decode_query_component(name)?,
                decode_query_component(value)?,
            ));
        }
        Ok(Params { pairs })
    }

    /// The value of `name`; when it is repeated the first one counts (as in Riak's webmachine).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A quorum parameter: a count or `one`, `quorum`, `all`, `default`; absent means the bucket's.
    pub fn quorum(&self, name: &str) -> Result<Quorum> {
        match self.get(name) {
            None => Ok(Quorum::Default),
            Some(v) => v.parse().map_err(|_| {
                Error::BadRequest(format!(
                    "{name}={v:?} is not a number or one of one, quorum, all, default"
                ))
            }),
        }
    }

    /// `timeout` in milliseconds: a positive integer, or absent for the node's default.
    pub fn timeout_ms(&self) -> Result<Option<u64>> {
        match self.get("timeout") {
            None => Ok(None),
            Some(v) => match v.parse::<u64>() {
                Ok(ms) if ms > 0 => Ok(Some(ms)),
                _ => Err(Error::BadRequest(format!(
                    "timeout={v:?} must be a positive number of milliseconds"
                ))),
            },
        }
    }

    /// A boolean parameter (`true` or `false`); absent means false.
    pub fn flag(&self, name: &str) -> Result<bool> {
        match self.get(name) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(v) => Err(Error::BadRequest(format!(
                "{name}={v:?} must be true or false"
            ))),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self> {
        Params::parse(parts.uri.query())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorums_parse_riak_spellings_and_default_when_absent() {
        let p = Params::parse(Some("r=quorum&w=2&dw=all&pr=one")).unwrap();
        assert_eq!(p.quorum("r").unwrap(), Quorum::Quorum);
        assert_eq!(p.quorum("w").unwrap(), Quorum::Count(2));
        assert_eq!(p.quorum("dw").unwrap(), Quorum::All);
        assert_eq!(p.quorum("pr").unwrap(), Quorum::One);
        assert_eq!(p.quorum("pw").unwrap(), Quorum::Default);
    }

    #[test]
    fn bad_values_are_bad_requests() {
        let p = Params::parse(Some("r=two&timeout=0&returnbody=yes&w=-1")).unwrap();
        assert!(matches!(p.quorum("r"), Err(Error::BadRequest(_))));
        assert!(matches!(p.quorum("w"), Err(Error::BadRequest(_))));
        assert!(matches!(p.timeout_ms(), Err(Error::BadRequest(_))));
        assert!(matches!(p.flag("returnbody"), Err(Error::BadRequest(_))));
        let p = Params::parse(Some("timeout=abc")).unwrap();
        assert!(matches!(p.timeout_ms(), Err(Error::BadRequest(_))));
    }

    #[test]
    fn values_are_decoded_and_the_first_repeat_counts() {
        let p = Params::parse(Some("vtag=a%2Bb&vtag=second&flag&timeout=250")).unwrap();
        assert_eq!(p.get("vtag"), Some("a+b"));
        assert_eq!(p.get("flag"), Some(""));
        assert_eq!(p.timeout_ms().unwrap(), Some(250));
        assert!(p.flag("returnbody").is_ok_and(|b| !b));
    }

    #[test]
    fn malformed_escapes_are_refused() {
        assert!(matches!(
            Params::parse(Some("r=%zz")),
            Err(Error::BadRequest(_))
        ));
    }
}
