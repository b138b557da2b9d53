#!/usr/bin/env bash
# Sets up a fresh machine and runs the whole test suite: formatting, lints, every test.
# Under CI=true, tests that need a model or ../shared fail instead of skipping.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
# The client tests drive the service with the official Python clients (openai, huggingface_hub,
# LangChain) and parse /metrics with prometheus_client: about 15 s to install.
python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked
