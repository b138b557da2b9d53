#!/usr/bin/env bash
# Sets up a fresh machine and runs the whole test suite: formatting, lints, every test, and
# the deployment checks (manifests, the Dockerfile's steps, a rolling restart behind nginx).
# A missing required fixture (MiniLM from scripts/setup.sh, ../shared) fails its tests. Tests
# whose asset is optional are #[ignore = "why"]: those that need the Python packages installed
# below run here with --ignored, those that need the real EmbeddingGemma when AKIDB_GEMMA_DIR is
# set. The last lines count the tests `cargo test` ignored, by reason, and say which ran.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

test_log="$(mktemp)"
ignored_log="$(mktemp)"
# The reasons given to #[ignore] (see crates/akidb-test-support/src/lib.rs).
python_reason="needs the Python test packages"
gemma_reason="needs AKIDB_GEMMA_DIR"

# The names of the tests `cargo test` ignored for the reason $1.
ignored_for() {
  sed -nE "s/^test (.+) \.\.\. ignored, $1\r?$/\1/p" "$test_log" | sort -u
}

summarise_ignored() {
  local status=$?
  if grep -q ' \.\.\. ignored' "$test_log"; then
    echo
    echo "Tests ignored by \`cargo test\`, by reason:"
    sed -nE 's/^test .+ \.\.\. ignored(, (.*))?\r?$/\2/p' "$test_log" | sed 's/^$/(no reason given)/' |
      sort | uniq -c | awk '{count = $1; $1 = ""; printf "  %4d %s\n", count, substr($0, 2)}'
    local ran passed
    ran="$(sed -nE 's/^test result: .* ([0-9]+) passed; ([0-9]+) failed.*/\1 \2/p' "$ignored_log" |
      awk '{p += $1; f += $2} END {print p + f}')"
    passed="$(sed -nE 's/^test result: .* ([0-9]+) passed;.*/\1/p' "$ignored_log" | awk '{p += $1} END {print p + 0}')"
    echo "  of these, run with --ignored: ${ran:-0} (${passed} passed)"
    if [[ -z "${AKIDB_GEMMA_DIR:-}" ]]; then
      echo "  not run: '$gemma_reason' (set AKIDB_GEMMA_DIR to the real EmbeddingGemma-300m, see tests/it/real_gemma.rs)"
    fi
  fi
  rm -f "$test_log" "$ignored_log"
  exit "$status"
}
trap summarise_ignored EXIT

bash scripts/setup.sh
# The client tests drive the service with the official Python clients (openai, huggingface_hub,
# LangChain) and parse /metrics with prometheus_client; kubernetes-validate checks deploy/kubernetes;
# onnxruntime/onnx are the q8 quantiser's reference.
python3 -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The service's layers import one way: no circle between akidb-rest's modules.
python3 scripts/module-cycles.py crates/akidb-rest/src
cargo test --workspace --all-targets --locked 2>&1 | tee "$test_log"
cargo test --workspace --doc --locked 2>&1 | tee -a "$test_log"
# The ignored tests whose asset this script provides or the caller named, by their exact names
# (`--tests`: the criterion benches take one filter, not a list of names).
mapfile -t run_ignored < <(
  ignored_for "$python_reason"
  [[ -z "${AKIDB_GEMMA_DIR:-}" ]] || ignored_for "$gemma_reason"
)
if ((${#run_ignored[@]})); then
  cargo test --workspace --tests --locked -- --ignored --exact "${run_ignored[@]}" 2>&1 | tee "$ignored_log"
fi

# Deployment (docs/deploy.md): manifests validated and checked against the service's
# defaults; the image built with podman (bases made offline) and run: its vectors, its
# drain on `podman stop`, the compose file; then every replica, a container of that image,
# restarted under load behind nginx with `podman stop` and no failed request.
bash deploy/tests/run.sh
bash scripts/image-check.sh
RR_CONTAINERS=1 bash scripts/rolling-restart.sh
