//! Stored record encoding: one format-version byte, then bincode.
//!
//! Every value this crate writes to disk (objects, hints) goes through here, so a future change of
//! encoding bumps [`RECORD_VERSION`] and old records stay readable by dispatching on the byte. A
//! record that does not decode is an [`Error::Decode`] naming the record, never a panic, and the
//! decoder never allocates more than the record's own length.

use bincode::Options as _;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Version byte in front of every stored record written by this build.
pub const RECORD_VERSION: u8 = 1;

/// The bincode configuration of record version 1: variable-length integers, little endian, and
/// trailing bytes refused (they would mean the record is not what we think it is).
fn bincode_v1() -> impl bincode::Options {
    bincode::DefaultOptions::new()
        .with_varint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
}

/// Encodes `value` as a record: `[RECORD_VERSION] ++ bincode(value)`.
///
/// `what` names the record for the error message.
pub fn encode<T: Serialize + ?Sized>(value: &T, what: impl FnOnce() -> String) -> Result<Vec<u8>> {
    let mut out = vec![RECORD_VERSION];
    bincode_v1()
        .serialize_into(&mut out, value)
        .map_err(|e| Error::Encode {
            what: what(),
            reason: e.to_string(),
        })?;
    Ok(out)
}

/// Decodes a record written by [`encode`] (any supported version).
///
/// `what` names the record (for objects: the key) in the error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: impl FnOnce() -> String) -> Result<T> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(Error::Decode {
            what: what(),
            reason: "record is empty".into(),
        });
    };
    match version {
        RECORD_VERSION => bincode_v1()
            .with_limit(body.len() as u64)
            .deserialize(body)
            .map_err(|e| Error::Decode {
                what: what(),
                reason: e.to_string(),
            }),
        other => Err(Error::Decode {
            what: what(),
            reason: format!(
                "record version {other} is not supported (this build writes {RECORD_VERSION})"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        id: u64,
        name: String,
        data: Vec<u8>,
    }

    fn what() -> String {
        "sample k1".to_owned()
    }

    #[test]
    fn records_start_with_the_version_byte() {
        let bytes = encode(
            &Sample {
                id: 1,
                name: "a".into(),
                data: vec![],
            },
            what,
        )
        .unwrap();
        assert_eq!(bytes[0], RECORD_VERSION);
    }

    #[test]
    fn unknown_record_version_is_an_error_naming_the_record() {
        let mut bytes = encode(
            &Sample {
                id: 1,
                name: "a".into(),
                data: vec![],
            },
            what,
        )
        .unwrap();
        bytes[0] = 99;
        let err = decode::<Sample>(&bytes, what).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sample k1"), "{text}");
        assert!(text.contains("version 99"), "{text}");
    }

    #[test]
    fn empty_and_truncated_records_are_errors() {
        assert!(matches!(
            decode::<Sample>(&[], what),
            Err(Error::Decode { .. })
        ));
        let bytes = encode(
            &Sample {
                id: 7,
                name: "abc".into(),
                data: vec![1; 40],
            },
            what,
        )
        .unwrap();
        for cut in 1..bytes.len() {
            assert!(
                decode::<Sample>(&bytes[..cut], what).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(
            &Sample {
                id: 7,
                name: "abc".into(),
                data: vec![],
            },
            what,
        )
        .unwrap();
        bytes.push(0);
        assert!(decode::<Sample>(&bytes, what).is_err());
    }

    #[test]
    fn a_huge_length_prefix_does_not_allocate_it() {
        // Version byte, id 0, then a string length of u64::MAX in varint form (0xFF marker + 8 bytes).
        let bytes = [
            RECORD_VERSION,
            0,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
        ];
        assert!(decode::<Sample>(&bytes, what).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn encode_then_decode_is_identity(id: u64, name in ".{0,20}", data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let sample = Sample { id, name, data };
            let bytes = encode(&sample, what).unwrap();
            prop_assert_eq!(decode::<Sample>(&bytes, what).unwrap(), sample);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode::<Sample>(&bytes, what);
        }
    }
}
