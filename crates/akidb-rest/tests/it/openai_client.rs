//! The official `openai` Python package against the OpenAI-compatible route: float, base64
//! and the client's default mode must all give the provider's own vectors.
//!
//! Needs `python3` with `openai` installed (`scripts/requirements-test.txt`): the tests are
//! `#[ignore = "needs the Python test packages"]`, and `scripts/test.sh` runs them with `--ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use crate::common;

use akidb_embedding_core::EmbedRequest;
use akidb_rest::Config;

use common::{Fixture, TestServer, config};

crate::for_each_fixture!(
    #[ignore = "needs the Python test packages"]
    the_official_openai_client_gets_the_providers_vectors
);

const KEY: &str = "sk-akidb-test";

async fn the_official_openai_client_gets_the_providers_vectors(fixture: Fixture) {
    common::require_python_modules("openai");
    let loaded = fixture.load().await;
    let config = Config {
        api_key: Some(KEY.parse().unwrap()),
        ..config()
    };
    let server = TestServer::start(config, vec![loaded.provider.clone()]).await;
    let texts = ["What is AkiDB?", "Vektordatenbank für Einbettungen", ""];
    let model = loaded.info().id.clone();
    let args = vec![
        server.url("/v1"),
        KEY.to_string(),
        model.clone(),
        serde_json::to_string(&texts).unwrap(),
    ];
    let report = common::run_client_script("openai_client.py", args).await;

    let direct = loaded
        .provider
        .embed(EmbedRequest::new(texts))
        .await
        .unwrap();
    assert_eq!(report["model"], model.as_str());
    assert_eq!(report["usage"]["prompt_tokens"], direct.total_tokens());
    assert_eq!(report["indexes"], serde_json::json!([0, 1, 2]));
    for mode in ["float", "base64", "default"] {
        let vectors: Vec<Vec<f32>> = serde_json::from_value(report[mode].clone()).unwrap();
        loaded.assert_same_vectors(&vectors, &direct.embeddings);
    }
    server.stop().await.unwrap();
}
