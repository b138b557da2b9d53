#!/usr/bin/env bash
# Hostile load against akidb-rest on the real EmbeddingGemma (targets: every unit of work
# admitted, bounded and cancellable). Each pattern runs on a fresh server bound to
# 127.0.0.1, prints its figures and a PASS/FAIL per target; memory is VmRSS/VmHWM from
# /proc/<pid>/status and CPU from /proc/<pid>/stat, sampled every 50 ms. The clients are
# benches/hostile.py (Python 3 stdlib, asyncio and raw sockets).
#
#   a  overload: 8 clients, each posting 4 texts of 50-2,500 random words (the words of
#      benches/texts.json) to POST /api/v1/embed for 90 s. Counts 200/503/504/other.
#      Targets: 503 answered with P99 < 50 ms; <= 2 % 504; every 200 right (4 vectors, 768
#      dims, unit norm).
#   b  12 sequential requests, one 2 MB text each, "truncate": false, header `timeout: 0.05`
#      (the service reads a per-request deadline in seconds from a `timeout` header or body
#      field). Targets: the process idle (CPU < 0.03 cores over 1 s) within 5 s of the last
#      answer; peak RSS < start + 1 GiB; RSS 30 s after the last answer < start + 256 MiB.
#   c  TEI dialect POST /embed, "truncation_direction": "Left", one 2 MB text, header
#      `timeout: 0.5`: one alone (its latency, target: within the timeout), then 8 at once;
#      the checks of b.
#   d  160 raw sockets post POST /tokenize (16 texts of 2,000 words each: ~2 MB answers) and
#      never read the answer, holding the connection 10 s. Target: peak RSS < start + 512 MiB.
#   e  30 starts on 5 kinds of damaged model folder (hard-linked copies of GEMMA_DIR: missing
#      model.onnx_data, model.onnx cut in half, tokenizer.json cut to 4 kB, config.json 512
#      random bytes, an empty folder), in rounds of five cycling the traffic on GET /health
#      while it loads: none (one probe every 5 s), heavy (8 clients without pause), light (one
#      client every 0.1 s). Target: every start exits non-zero and its log says why (a line
#      with ERROR / error / cannot / failed); a start that serves counts as a failure.
#
# Run (after `bash scripts/setup.sh` for ONNX Runtime, and a release build):
#   cargo build --release -p akidb-rest
#   GEMMA_DIR=/root/models/embeddinggemma-300m-ONNX bash benches/hostile.sh
#   AKIDB_BIN=/path/to/akidb-rest PATTERNS="a e" A_SECONDS=30 bash benches/hostile.sh
# Variables (defaults):
#   AKIDB_BIN (target/release/akidb-rest; never built here), GEMMA_DIR
#   (/root/models/embeddinggemma-300m-ONNX), ORT_DYLIB_PATH (.akidb/runtime/libonnxruntime.so),
#   PATTERNS ("a b c d e"), PORT (18093), THREADS (2, AKIDB_THREADS), RESULTS (a file the output
#   is also written to; unset: none), LOGS (target/hostile: server logs, damaged folders),
#   NICE (see priority.sh), SEED (18), CLIENT_TIMEOUT (600 s per answer);
#   a: A_SECONDS (90), A_CLIENTS (8), A_TEXTS (4), A_MIN_WORDS (50), A_MAX_WORDS (2500);
#   b: B_REQUESTS (12), B_BYTES (2000000), B_TIMEOUT (0.05);
#   c: C_BYTES (2000000), C_TIMEOUT (0.5), C_CONCURRENT (8);
#   d: D_CLIENTS (160), D_TEXTS (16), D_WORDS (2000), D_HOLD (10 s);
#   e: E_STARTS (30), E_MODEL_DIR (GEMMA_DIR), E_MODES ("none heavy light"), E_LOAD_CLIENTS (8),
#      E_START_TIMEOUT (300 s);
#   idleness: IDLE_TARGET (5 s), IDLE_CORES (0.03), IDLE_OBSERVE (90 s watched at most),
#   SETTLE (30 s). Other AKIDB_* variables reach the service (e.g. AKIDB_EMBEDDING_VARIANT).
# Time: about 8-12 minutes on the current service (8 with NICE=-15; a 90 s + loads; b, c, d 40-120 s each,
# longer while the server stays busy; e 30 starts of 1-10 s). Exit status 1 when a check fails.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/priority.sh"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export AKIDB_BIN="${AKIDB_BIN:-$root/target/release/akidb-rest}"
export GEMMA_DIR="${GEMMA_DIR:-/root/models/embeddinggemma-300m-ONNX}"
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$root/.akidb/runtime/libonnxruntime.so}"
[[ -x "$AKIDB_BIN" ]] || { echo "hostile: no akidb-rest at $AKIDB_BIN (cargo build --release -p akidb-rest, or set AKIDB_BIN)" >&2; exit 2; }
[[ -f "$ORT_DYLIB_PATH" ]] || { echo "hostile: no ONNX Runtime at $ORT_DYLIB_PATH (bash scripts/setup.sh)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "hostile: python3 is needed" >&2; exit 2; }

py_pid=""
cleanup() {
  # hostile.py stops the servers it started; this only stops hostile.py itself if it is left.
  if [[ -n "$py_pid" ]] && kill -0 "$py_pid" 2>/dev/null; then
    kill "$py_pid" 2>/dev/null || true
    wait "$py_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

status=0
if [[ -n "${RESULTS:-}" ]]; then
  mkdir -p "$(dirname "$RESULTS")"
  python3 -u benches/hostile.py > >(tee "$RESULTS") 2>&1 &
else
  python3 -u benches/hostile.py &
fi
py_pid=$!
wait "$py_pid" || status=$?
py_pid=""
exit "$status"
