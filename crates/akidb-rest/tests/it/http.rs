//! The HTTP contract over a real socket, run with the mock and with real ONNX models.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use akidb_embedding_core::EmbedRequest;
use akidb_rest::Config;
use serde_json::{Value, json};

use common::{Fixture, TestServer, assert_error, config, decode_base64, vectors};

crate::for_each_fixture!(
    seed_route_answers_the_documented_shape,
    seed_route_honours_options,
    openai_route_answers_float_and_base64,
    every_error_has_its_status_and_the_one_shape,
    metrics_count_requests_batches_and_tokens,
    concurrent_clients_get_their_own_vectors,
    models_route_describes_the_served_model,
    a_100k_character_text_is_truncated_or_refused_by_its_token_count,
);

const TEXTS: [&str; 3] = [
    "The train station is two blocks north.",
    "東京駅はどこですか？",
    "fn main() { println!(\"hi\"); }",
];

async fn seed_route_answers_the_documented_shape(fixture: Fixture) {
    let loaded = fixture.load().await;
    let server = TestServer::start(config(), vec![loaded.provider.clone()]).await;
    let (status, body) = server
        .post(
            "/api/v1/embed",
            &json!({"model": loaded.info().id, "inputs": TEXTS, "normalize": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["count", "dimension", "embeddings"],
        "exactly these fields"
    );
    assert_eq!(body["count"], 3);
    assert_eq!(body["dimension"], loaded.info().dimension);
    let got = vectors(&body);
    for vector in &got {
        let norm: f32 = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "normalised: {norm}");
    }
    loaded.assert_same_vectors(&got, &loaded.direct(EmbedRequest::new(TEXTS)).await);

    // `model` may be left out when one model is served.
    let (status, without_model) = server
        .post("/api/v1/embed", &json!({"inputs": TEXTS}))
        .await;
    assert_eq!(status, 200);
    loaded.assert_same_vectors(&vectors(&without_model), &got);
    server.stop().await.unwrap();
}

async fn seed_route_honours_options(fixture: Fixture) {
    let loaded = fixture.load().await;
    let server = TestServer::start(config(), vec![loaded.provider.clone()]).await;
    let info = loaded.info().clone();
    let smallest = *info.dimensions.last().unwrap();
    let cases = [
        (
            json!({"inputs": TEXTS, "normalize": false}),
            EmbedRequest::new(TEXTS).with_normalize(false),
        ),
        (
            json!({"inputs": TEXTS, "prompt_name": "query"}),
            EmbedRequest::new(TEXTS).with_prompt("query"),
        ),
        (
            json!({"inputs": TEXTS, "dimensions": smallest, "prompt_name": "document"}),
            EmbedRequest::new(TEXTS)
                .with_dimensions(smallest)
                .with_prompt("document"),
        ),
        (
            json!({"inputs": ["short"], "truncate": false}),
            EmbedRequest::new(["short"]).with_truncation(akidb_embedding_core::Truncation::Error),
        ),
    ];
    for (body, request) in cases {
        let (status, answer) = server.post("/api/v1/embed", &body).await;
        assert_eq!(status, 200, "{body} → {answer}");
        let want = loaded.direct(request).await;
        assert_eq!(answer["dimension"], want[0].len(), "{body}");
        loaded.assert_same_vectors(&vectors(&answer), &want);
    }
    server.stop().await.unwrap();
}

async fn openai_route_answers_float_and_base64(fixture: Fixture) {
    let loaded = fixture.load().await;
    let server = TestServer::start(config(), vec![loaded.provider.clone()]).await;
    let id = loaded.info().id.clone();
    let direct = loaded
        .provider
        .embed(EmbedRequest::new(TEXTS))
        .await
        .unwrap();

    let (status, float) = server
        .post("/v1/embeddings", &json!({"model": id, "input": TEXTS}))
        .await;
    assert_eq!(status, 200, "{float}");
    assert_eq!(float["object"], "list");
    assert_eq!(float["model"], id.as_str());
    assert_eq!(
        float["usage"],
        json!({"prompt_tokens": direct.total_tokens(), "total_tokens": direct.total_tokens()})
    );
    let data = float["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    let mut floats = Vec::new();
    for (index, item) in data.iter().enumerate() {
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], index);
        floats.push(
            item["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect::<Vec<f32>>(),
        );
    }
    loaded.assert_same_vectors(&floats, &direct.embeddings);

    let (status, encoded) = server
        .post(
            "/v1/embeddings",
            &json!({"model": id, "input": TEXTS, "encoding_format": "base64"}),
        )
        .await;
    assert_eq!(status, 200, "{encoded}");
    let decoded: Vec<Vec<f32>> = encoded["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| decode_base64(item["embedding"].as_str().unwrap()))
        .collect();
    loaded.assert_same_vectors(&decoded, &direct.embeddings);

    // A single string, `dimensions`, and fields OpenAI clients add are accepted.
    let smallest = *loaded.info().dimensions.last().unwrap();
    let (status, single) = server
        .post(
            "/v1/embeddings",
            &json!({"model": id, "input": TEXTS[0], "dimensions": smallest, "user": "u-1", "encoding_format": "float"}),
        )
        .await;
    assert_eq!(status, 200, "{single}");
    assert_eq!(single["data"].as_array().unwrap().len(), 1);
    let want = loaded
        .direct(EmbedRequest::new([TEXTS[0]]).with_dimensions(smallest))
        .await;
    let got: Vec<f32> = single["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    loaded.assert_same_vectors(&[got], &want);
    server.stop().await.unwrap();
}

async fn every_error_has_its_status_and_the_one_shape(fixture: Fixture) {
    let loaded = fixture.load().await;
    let info = loaded.info().clone();
    let config = Config {
        max_inputs: 4,
        max_body_bytes: 64 * 1024,
        ..config()
    };
    let server = TestServer::start(config, vec![loaded.provider.clone()]).await;
    let embed = "/api/v1/embed";

    let (status, body) = server
        .post_raw(embed, "application/json", b"{\"inputs\": [".to_vec())
        .await;
    assert_error(status, &body, 400, "invalid_json");

    let (status, body) = server.post(embed, &json!({"inputs": [1, 2]})).await;
    let message = assert_error(status, &body, 422, "invalid_request");
    assert!(message.contains("inputs[0]"), "{message}");

    let (status, body) = server.post(embed, &json!({"texts": ["a"]})).await;
    assert_error(status, &body, 422, "invalid_request");

    let (status, body) = server
        .post(embed, &json!({"inputs": ["a"], "normalise": true}))
        .await;
    let message = assert_error(status, &body, 422, "invalid_request");
    assert!(message.contains("normalise"), "{message}");

    let (status, body) = server.post(embed, &json!({"inputs": []})).await;
    assert_error(status, &body, 422, "invalid_request");

    let (status, body) = server
        .post(embed, &json!({"inputs": ["a", "b", "c", "d", "e"]}))
        .await;
    let message = assert_error(status, &body, 413, "payload_too_large");
    assert!(message.contains("5 texts"), "{message}");

    // Over the (here 64 KiB) body limit: the only size limit before tokenisation.
    let (status, body) = server
        .post(embed, &json!({"inputs": ["x".repeat(100_000)]}))
        .await;
    let message = assert_error(status, &body, 413, "payload_too_large");
    assert!(message.contains("body"), "{message}");

    let (status, body) = server
        .post(embed, &json!({"model": "no/such-model", "inputs": ["a"]}))
        .await;
    let message = assert_error(status, &body, 404, "model_not_found");
    assert!(
        message.contains(&info.id),
        "names what is served: {message}"
    );

    let (status, body) = server
        .post(
            embed,
            &json!({"inputs": ["a"], "prompt_name": "no-such-prompt"}),
        )
        .await;
    let message = assert_error(status, &body, 422, "invalid_request");
    assert!(message.contains("no-such-prompt"), "{message}");

    let (status, body) = server
        .post(
            embed,
            &json!({"inputs": ["a"], "dimensions": info.dimension + 1}),
        )
        .await;
    let message = assert_error(status, &body, 422, "invalid_request");
    assert!(
        message.contains(&(info.dimension + 1).to_string()),
        "{message}"
    );

    let long = "word ".repeat(info.max_tokens + 10);
    let (status, body) = server
        .post(
            embed,
            &json!({"inputs": ["short", long], "truncate": false}),
        )
        .await;
    let message = assert_error(status, &body, 422, "invalid_request");
    assert!(
        message.contains("index 1") && message.contains("tokens"),
        "names index and token count: {message}"
    );
    // Truncation (the default) embeds the same text.
    let (status, _) = server
        .post(embed, &json!({"inputs": ["short", long]}))
        .await;
    assert_eq!(status, 200);

    let (status, body) = server
        .post_raw(embed, "text/plain", b"{\"inputs\": [\"a\"]}".to_vec())
        .await;
    assert_error(status, &body, 415, "unsupported_media_type");

    let (status, body) = server
        .post("/v1/embeddings", &json!({"input": [[1, 2, 3]]}))
        .await;
    let message = assert_error(status, &body, 422, "invalid_request");
    assert!(message.contains("token arrays"), "{message}");

    let (status, body) = server
        .post(
            "/v1/embeddings",
            &json!({"input": "a", "encoding_format": "int8"}),
        )
        .await;
    assert_error(status, &body, 422, "invalid_request");

    let (status, body) = server.post("/v1/embeddings", &json!({"input": []})).await;
    assert_error(status, &body, 422, "invalid_request");

    let (status, body) = common::json_of(server.get("/api/v1/nothing").await).await;
    assert_error(status, &body, 404, "not_found");

    let (status, body) = common::json_of(server.get(embed).await).await;
    assert_error(status, &body, 405, "method_not_allowed");
    server.stop().await.unwrap();
}

async fn metrics_count_requests_batches_and_tokens(fixture: Fixture) {
    let loaded = fixture.load().await;
    let id = loaded.info().id.clone();
    let server = TestServer::start(config(), vec![loaded.provider.clone()]).await;
    for _ in 0..2 {
        let (status, _) = server
            .post("/api/v1/embed", &json!({"inputs": TEXTS}))
            .await;
        assert_eq!(status, 200);
    }
    let (status, _) = server.post("/api/v1/embed", &json!({"inputs": []})).await;
    assert_eq!(status, 422);
    let response = server.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();
    let tokens = loaded
        .provider
        .embed(EmbedRequest::new(TEXTS))
        .await
        .unwrap()
        .total_tokens();
    let model = id.replace('\\', "\\\\").replace('"', "\\\"");
    for line in [
        "akidb_http_requests_total{route=\"/api/v1/embed\",status=\"200\"} 2".to_string(),
        "akidb_http_requests_total{route=\"/api/v1/embed\",status=\"422\"} 1".to_string(),
        "akidb_http_request_duration_seconds_count{route=\"/api/v1/embed\"} 3".to_string(),
        format!("akidb_batch_size_count{{model=\"{model}\"}} 2"),
        format!("akidb_batch_size_bucket{{model=\"{model}\",le=\"4\"}} 2"),
        format!(
            "akidb_tokens_embedded_total{{model=\"{model}\"}} {}",
            2 * tokens
        ),
        format!("akidb_queue_depth{{model=\"{model}\"}} 0"),
        "akidb_models_ready 1".to_string(),
        "# TYPE akidb_http_request_duration_seconds histogram".to_string(),
    ] {
        assert!(text.contains(&line), "missing `{line}` in:\n{text}");
    }
    server.stop().await.unwrap();
}

async fn concurrent_clients_get_their_own_vectors(fixture: Fixture) {
    // The mock takes 30 ms a run, so requests pile up behind the first and must merge.
    let loaded = fixture
        .load_mock_with(|mock| mock.with_latency(Duration::from_millis(30)))
        .await;
    let config = Config {
        batch_wait_ms: 10,
        ..config()
    };
    let server = Arc::new(TestServer::start(config, vec![loaded.provider.clone()]).await);
    let smallest = *loaded.info().dimensions.last().unwrap();
    let body = |i: usize| {
        let texts = vec![format!("client {i} asks about topic {}", i * 7); 1 + i % 3];
        let mut body = json!({"inputs": texts});
        if i % 4 == 1 {
            body["normalize"] = json!(false);
        }
        if i % 4 == 2 {
            body["dimensions"] = json!(smallest);
        }
        body
    };
    let answers = server
        .post_all_at_once("/api/v1/embed", (0..32).map(body).collect())
        .await;
    // The first runs are the calibration before the model was ready.
    let served_runs = loaded.mock.as_ref().map(|mock| {
        mock.batch_sizes()
            .split_off(akidb_rest::engine::batcher::CALIBRATION_RUNS)
    });
    for (i, (status, answer)) in answers.into_iter().enumerate() {
        assert_eq!(status, 200, "client {i}: {answer}");
        let request: Value = body(i);
        let texts: Vec<String> = serde_json::from_value(request["inputs"].clone()).unwrap();
        let mut alone = EmbedRequest::new(texts);
        alone.normalize = request["normalize"].as_bool().unwrap_or(true);
        alone.dimensions = request["dimensions"].as_u64().map(|d| d as usize);
        loaded.assert_same_vectors(&vectors(&answer), &loaded.direct(alone).await);
    }
    if let Some(runs) = served_runs {
        let texts: usize = (0..32).map(|i| 1 + i % 3).sum();
        assert_eq!(
            runs.iter().sum::<usize>(),
            texts,
            "every text ran once: {runs:?}"
        );
        assert!(runs.len() < 32, "requests were merged: {runs:?}");
        assert!(
            runs.iter().all(|&size| size <= 32),
            "batch size bound: {runs:?}"
        );
    }
}

async fn models_route_describes_the_served_model(fixture: Fixture) {
    let loaded = fixture.load().await;
    let server = TestServer::start(config(), vec![loaded.provider.clone()]).await;
    let response = server.get("/api/v1/models").await;
    let (status, body) = common::json_of(response).await;
    assert_eq!(status, 200);
    let info = loaded.info();
    assert_eq!(
        body,
        json!({"models": [{
            "id": info.id,
            "dimension": info.dimension,
            "max_tokens": info.max_tokens,
            "dimensions": info.dimensions,
            "prompts": info.prompts,
        }]})
    );
    let (status, health) = common::json_of(server.get("/health").await).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["models"], json!([info.id]));
    // Served without the loader (the test hands providers in): no per-source states.
    assert!(health["states"].is_array(), "{health}");
    server.stop().await.unwrap();
}

/// Truncation means truncation: a 100,000-character text, inside the body limit, is embedded
/// from its first tokens with `truncate` on (the vector the provider gives for it), and
/// refused with `truncate: false`, naming its index and token count.
async fn a_100k_character_text_is_truncated_or_refused_by_its_token_count(fixture: Fixture) {
    let loaded = fixture.load().await;
    let info = loaded.info().clone();
    let server = TestServer::start(config(), vec![loaded.provider.clone()]).await;
    let words = [
        "vector",
        "database",
        "東京駅",
        "naïve",
        "embedding",
        "search,",
    ];
    let mut long = String::new();
    for word in words.iter().cycle() {
        if long.chars().count() >= 100_000 {
            break;
        }
        long.push_str(word);
        long.push(' ');
    }
    assert!(long.chars().count() >= 100_000);

    let (status, body) = server
        .post("/api/v1/embed", &json!({"inputs": ["short", long]}))
        .await;
    assert_eq!(status, 200, "{body}");
    let want = loaded
        .direct(EmbedRequest::new(["short", long.as_str()]))
        .await;
    loaded.assert_same_vectors(&vectors(&body), &want);
    let (status, body) = server.post("/v1/embeddings", &json!({"input": long})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["usage"]["total_tokens"].as_u64(),
        Some(info.max_tokens as u64),
        "cut to the model's cap"
    );

    let (status, body) = server
        .post(
            "/api/v1/embed",
            &json!({"inputs": ["short", long], "truncate": false}),
        )
        .await;
    let message = assert_error(status, &body, 422, "invalid_request");
    assert!(
        message.contains("index 1") && message.contains("tokens"),
        "names the index and the token count: {message}"
    );
    server.stop().await.unwrap();
}
