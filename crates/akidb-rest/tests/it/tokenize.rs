//! `POST /tokenize` (text-embeddings-inference's shape) over a real socket, with the mock,
//! all-MiniLM-L6-v2 and the tiny EmbeddingGemma double: the ids the embedding path uses, and
//! for every text token the bytes of the input it stands for.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::sync::Arc;

use akidb_embedding_core::{
    EmbedRequest, EmbeddingProvider, Encoding, ModelInfo, Result as EmbedResult, TokenizedRequest,
};
use async_trait::async_trait;
use serde_json::{Value, json};

use common::{Fixture, TestServer, config};

crate::for_each_fixture!(
    tokens_carry_byte_spans_of_the_input_and_the_embedding_ids,
    prompt_tokens_have_no_offsets_and_offsets_refer_to_the_input,
);

/// Accents, CJK, emoji, code, odd whitespace.
const TEXTS: [&str; 5] = [
    "Hello, world!",
    "Café crème brûlée, naïve façade",
    "東京駅はどこですか？",
    "🚂🌊 the train 🧭 leaves 👍🏽",
    "  fn main() {\tprintln!(\"hi\"); }\n",
];

/// What the library says of `text` under `prompt`: the embedding path's ids, and which of
/// those tokens are special (from its spans).
async fn library_view(
    provider: &Arc<dyn EmbeddingProvider>,
    text: &str,
    prompt: Option<&str>,
) -> (Vec<u32>, Vec<bool>) {
    let mut request = EmbedRequest::new([text]);
    request.prompt_name = prompt.map(str::to_string);
    let ids = provider.tokenize(request.clone()).await.unwrap().encodings[0]
        .ids
        .clone();
    let special = match provider.token_spans(request).await {
        Ok(spans) => spans[0].iter().map(|t| t.is_special()).collect(),
        Err(_) => vec![false; ids.len()],
    };
    (ids, special)
}

/// Checks one text's answer against the library's view: the ids, special tokens marked and
/// without offsets (left out when `specials` is false), text tokens slicing `input` (bytes, on
/// character boundaries) back to their `text`. Returns how many tokens had no offsets
/// without being special (prompt tokens).
fn check_tokens(
    input: &str,
    tokens: &Value,
    view: &(Vec<u32>, Vec<bool>),
    specials: bool,
) -> usize {
    let (ids, special_flags) = view;
    let tokens = tokens.as_array().expect("an array of tokens per text");
    let got: Vec<u32> = tokens
        .iter()
        .map(|t| t["id"].as_u64().unwrap() as u32)
        .collect();
    let expected: Vec<(u32, bool)> = ids
        .iter()
        .copied()
        .zip(special_flags.iter().copied())
        .filter(|&(_, special)| specials || !special)
        .collect();
    let want: Vec<u32> = expected.iter().map(|&(id, _)| id).collect();
    assert_eq!(got, want, "{input:?}: the ids embedding uses");
    assert!(
        special_flags.first() == Some(&true),
        "{input:?}: every model here opens a text with a special token"
    );
    let mut without_offsets = 0;
    for (token, &(_, expected_special)) in tokens.iter().zip(&expected) {
        let keys: Vec<&str> = token
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 5, "TEI's five fields: {token}");
        let special = token["special"].as_bool().expect("special is filled");
        let text = token["text"].as_str().expect("text is filled");
        assert_eq!(special, expected_special, "{input:?}: {token}");
        match (token["start"].as_u64(), token["stop"].as_u64()) {
            (Some(start), Some(stop)) => {
                assert!(!special, "{token}");
                let (start, stop) = (start as usize, stop as usize);
                assert!(start <= stop && stop <= input.len(), "{input:?}: {token}");
                assert!(
                    input.is_char_boundary(start) && input.is_char_boundary(stop),
                    "{input:?}: {token} splits a character"
                );
                assert_eq!(&input.as_bytes()[start..stop], text.as_bytes(), "{token}");
            }
            (None, None) => {
                assert!(token["start"].is_null() && token["stop"].is_null());
                assert!(!text.is_empty(), "{token}");
                if !special {
                    without_offsets += 1;
                }
            }
            _ => panic!("start and stop come together: {token}"),
        }
    }
    without_offsets
}

async fn tokens_carry_byte_spans_of_the_input_and_the_embedding_ids(fixture: Fixture) {
    let loaded = fixture.load().await;
    let server = TestServer::start(config(), vec![loaded.provider.clone()]).await;
    let mut views = Vec::new();
    for text in TEXTS {
        views.push(library_view(&loaded.provider, text, None).await);
    }
    for body in [
        json!({"inputs": TEXTS}),
        json!({"inputs": TEXTS, "return_offsets": true}),
        json!({"inputs": TEXTS, "return_offsets": false, "add_special_tokens": true}),
    ] {
        let (status, answer) = server.post("/tokenize", &body).await;
        assert_eq!(status, 200, "{answer}");
        let answer = answer.as_array().unwrap();
        assert_eq!(answer.len(), TEXTS.len());
        for ((text, tokens), view) in TEXTS.iter().zip(answer).zip(&views) {
            let unplaced = check_tokens(text, tokens, view, true);
            assert_eq!(
                unplaced, 0,
                "no prompt, so every non-special token has offsets"
            );
        }
    }
    // Without special tokens: the same tokens, minus the first and the last.
    let (status, answer) = server
        .post(
            "/tokenize",
            &json!({"inputs": TEXTS, "add_special_tokens": false}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    for ((text, tokens), view) in TEXTS.iter().zip(answer.as_array().unwrap()).zip(&views) {
        check_tokens(text, tokens, view, false);
        assert!(
            tokens
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["special"] == false)
        );
    }
    // One string as `inputs`: one list of tokens.
    let (status, answer) = server.post("/tokenize", &json!({"inputs": TEXTS[2]})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer.as_array().unwrap().len(), 1);
    check_tokens(TEXTS[2], &answer[0], &views[2], true);

    // TEI's errors: 400 for no texts, 422 for an unknown prompt.
    let (status, answer) = server.post("/tokenize", &json!({"inputs": []})).await;
    assert_eq!(
        (status, answer["error_type"].as_str()),
        (400, Some("Empty")),
        "{answer}"
    );
    let (status, answer) = server
        .post("/tokenize", &json!({"inputs": "a", "prompt_name": "nope"}))
        .await;
    assert_eq!(
        (status, answer["error_type"].as_str()),
        (422, Some("Validation")),
        "{answer}"
    );
    assert!(
        answer["error"].as_str().unwrap().contains("nope"),
        "{answer}"
    );
    server.stop().await.unwrap();
}

async fn prompt_tokens_have_no_offsets_and_offsets_refer_to_the_input(fixture: Fixture) {
    let loaded = fixture.load().await;
    // MiniLM defines no prompts (`query` is the empty prompt): nothing to mark.
    let has_prompts = loaded.info().prompts.iter().any(|p| p == "query");
    let server = TestServer::start(config(), vec![loaded.provider.clone()]).await;
    let (status, answer) = server
        .post(
            "/tokenize",
            &json!({"inputs": TEXTS, "prompt_name": "query", "return_offsets": true}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    for (text, tokens) in TEXTS.iter().zip(answer.as_array().unwrap()) {
        let view = library_view(&loaded.provider, text, Some("query")).await;
        let unplaced = check_tokens(text, tokens, &view, true);
        if has_prompts {
            assert!(
                unplaced > 0,
                "{text:?}: the prompt's tokens come without offsets"
            );
            // They come first, before any token of the input.
            let tokens = tokens.as_array().unwrap();
            let first_placed = tokens.iter().position(|t| t["start"].is_u64()).unwrap();
            assert!(
                tokens[1..first_placed]
                    .iter()
                    .all(|t| t["special"] == false)
            );
            assert_eq!(first_placed, unplaced + 1, "{text:?}: prompt tokens first");
        } else {
            assert_eq!(unplaced, 0);
        }
    }

    // The model's default prompt applies when the request names none, as when embedding.
    if has_prompts {
        let mut config = config();
        config.default_prompt_names = Some("query".into());
        let defaulted = TestServer::start(config, vec![loaded.provider.clone()]).await;
        let (status, with_default) = defaulted.post("/tokenize", &json!({"inputs": TEXTS})).await;
        assert_eq!(status, 200);
        assert_eq!(with_default, answer);
        defaulted.stop().await.unwrap();
    }
    server.stop().await.unwrap();
}

/// A provider that keeps no offsets: the mock's tokens, without `token_spans`.
struct IdsOnly(Arc<dyn EmbeddingProvider>);

#[async_trait]
impl EmbeddingProvider for IdsOnly {
    fn model_info(&self) -> &ModelInfo {
        self.0.model_info()
    }
    async fn tokenize(&self, request: EmbedRequest) -> EmbedResult<TokenizedRequest> {
        self.0.tokenize(request).await
    }
    async fn run(&self, batch: Vec<Encoding>) -> EmbedResult<Vec<Vec<f32>>> {
        self.0.run(batch).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_without_spans_shows_ids_and_refuses_return_offsets() {
    let mock = Fixture::Mock.load().await;
    let provider: Arc<dyn EmbeddingProvider> = Arc::new(IdsOnly(mock.provider.clone()));
    let server = TestServer::start(config(), vec![provider]).await;
    let (status, answer) = server.post("/tokenize", &json!({"inputs": ["a b"]})).await;
    assert_eq!(status, 200, "{answer}");
    let (ids, _) = library_view(&mock.provider, "a b", None).await;
    let tokens = answer[0].as_array().unwrap();
    let got: Vec<u32> = tokens
        .iter()
        .map(|t| t["id"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(got, ids);
    for token in tokens {
        for field in ["text", "special", "start", "stop"] {
            assert!(token[field].is_null(), "{token}");
        }
    }
    for body in [
        json!({"inputs": ["a b"], "return_offsets": true}),
        json!({"inputs": ["a b"], "add_special_tokens": false}),
    ] {
        let (status, answer) = server.post("/tokenize", &body).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["error_type"], "Validation");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("does not support token spans"),
            "{answer}"
        );
    }
    server.stop().await.unwrap();
}
