#!/usr/bin/env bash
# Sets up a fresh machine and runs the whole test suite: formatting, lints, every test, and
# the deployment checks (manifests, the Dockerfile's steps, a rolling restart behind nginx).
# Under CI=true, tests that need a model or ../shared fail instead of skipping.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
# The client tests drive the service with the official Python clients (openai, huggingface_hub,
# LangChain) and parse /metrics with prometheus_client; kubernetes-validate checks deploy/kubernetes;
# onnxruntime/onnx are the q8 quantiser's reference.
python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The service's layers import one way: no circle between akidb-rest's modules.
python3 scripts/module-cycles.py crates/akidb-rest/src
cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked

# Deployment (docs/deploy.md): manifests validated and checked against the service's
# defaults; the image built with podman (bases made offline) and run: its vectors, its
# drain on `podman stop`, the compose file; then every replica, a container of that image,
# restarted under load behind nginx with `podman stop` and no failed request.
bash deploy/tests/run.sh
bash scripts/image-check.sh
RR_CONTAINERS=1 bash scripts/rolling-restart.sh
