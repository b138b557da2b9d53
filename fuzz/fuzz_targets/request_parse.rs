//! Request parsing of both HTTP shapes, through the functions the handlers call
//! (`akidb_rest::request::parse_embed` / `parse_openai`), with the default and with tight
//! limits.
//!
//! Invariants: no panic; an accepted request is within every limit and came from valid
//! UTF-8; a refused one has a client-error status (400, 413, 422); an accepted body
//! serialises and parses back to itself.

#![no_main]

use std::sync::LazyLock;

use akidb_rest::ApiError;
use akidb_rest::Config;
use akidb_rest::request::{self, EmbedBody, OpenAiBody, Parsed};
use akidb_rest::Limits;
use libfuzzer_sys::fuzz_target;

static LIMITS: LazyLock<[Limits; 2]> = LazyLock::new(|| {
    let defaults = Limits::from_config(&Config::default());
    let tight = Limits {
        max_body_bytes: 4096,
        max_inputs: 3,
    };
    [defaults, tight]
});

fuzz_target!(|data: &[u8]| {
    for limits in LIMITS.iter() {
        check(request::parse_embed(data, limits), limits, data);
        check(request::parse_openai(data, limits), limits, data);
    }
    if let Ok(body) = request::parse_json::<EmbedBody>(data) {
        let again = serde_json::to_vec(&body).expect("serialise");
        assert_eq!(request::parse_json::<EmbedBody>(&again).ok(), Some(body));
    }
    if let Ok(body) = request::parse_json::<OpenAiBody>(data) {
        let again = serde_json::to_vec(&body).expect("serialise");
        assert_eq!(request::parse_json::<OpenAiBody>(&again).ok(), Some(body));
    }
});

fn check(result: Result<Parsed, ApiError>, limits: &Limits, data: &[u8]) {
    match result {
        Ok(parsed) => {
            assert!(
                std::str::from_utf8(data).is_ok(),
                "accepted bytes that are not UTF-8"
            );
            assert!(parsed.request.texts.len() <= limits.max_inputs);
            assert!(parsed.timeout.is_none_or(|timeout| !timeout.is_zero()));
        }
        Err(error) => {
            let status = error.status().as_u16();
            assert!(
                matches!(status, 400 | 413 | 422),
                "unexpected status {status}: {error}"
            );
            assert!(!error.to_string().is_empty());
        }
    }
}
