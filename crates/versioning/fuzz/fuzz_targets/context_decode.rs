//! Feeds arbitrary bytes to the context decoders: they must never panic, and whatever they accept
//! must re-encode to exactly the bytes it was read from (the encoding is canonical).

#![no_main]

use dynamo_versioning::Context;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(context) = Context::decode(data) {
        assert_eq!(
            context.encode(),
            data,
            "decode accepted a non-canonical encoding"
        );
        assert_eq!(Context::decode(&context.encode()), Ok(context));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(context) = Context::from_base64(text) {
            assert_eq!(Context::from_base64(&context.to_base64()), Ok(context));
        }
    }
});
