#!/usr/bin/env bash
# Soak test of the service (not part of every CI run): builds release, starts akidb-rest with
# all-MiniLM-L6-v2 on loopback, and drives it with the soak client
# (crates/akidb-rest/examples/soak_client.rs): 32 concurrent clients, a mix of good requests
# (1-32 texts, short to past the 256-token cap, both routes) and bad ones, each with the
# status it must get. Reports unexpected answers, requests/s, latency percentiles and the
# server's RSS after the warm-up and at the end; then stops the server with SIGTERM and
# checks it exits cleanly.
#
#   bash scripts/soak.sh                      # 5 minutes
#   SOAK_SECONDS=60 bash scripts/soak.sh
#
# Settings: SOAK_SECONDS (measured, default 300), SOAK_WARMUP_SECONDS (default 30),
# SOAK_CLIENTS (default 32), SOAK_MODEL (folder or id, default the MiniLM that
# scripts/setup.sh installs), SOAK_THREADS (AKIDB_THREADS; default: ONNX Runtime's choice),
# SOAK_OUT (folder for server.log and summary.json, default target/soak).
# Run it on an otherwise idle machine: the figures are only as good as the CPU it gets.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${SOAK_SECONDS:-300}"
warmup="${SOAK_WARMUP_SECONDS:-30}"
clients="${SOAK_CLIENTS:-32}"
model="${SOAK_MODEL:-.akidb/models/all-MiniLM-L6-v2}"
out="${SOAK_OUT:-target/soak}"

if [ ! -e "$model" ] && [ "$model" = ".akidb/models/all-MiniLM-L6-v2" ]; then
  echo "soak: $model is missing; run scripts/setup.sh first" >&2
  exit 1
fi
echo "soak: load average before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores" >&2
echo "soak: building (release)" >&2
cargo build --quiet --release -p akidb-rest --bin akidb-rest --example soak_client

mkdir -p "$out"
log="$out/server.log"
env_settings=(AKIDB_BIND=127.0.0.1:0 "AKIDB_EMBEDDING_MODEL=$model" RUST_LOG=info)
[ -n "${SOAK_THREADS:-}" ] && env_settings+=("AKIDB_THREADS=$SOAK_THREADS")
env "${env_settings[@]}" target/release/akidb-rest 2>"$log" &
server=$!
stop_server() {
  if kill -0 "$server" 2>/dev/null; then kill -TERM "$server" 2>/dev/null || true; fi
}
trap stop_server EXIT

addr=""
for _ in $(seq 1 600); do
  addr="$(grep -o 'addr=[0-9.:]*' "$log" | head -1 | cut -d= -f2 || true)"
  [ -n "$addr" ] && break
  if ! kill -0 "$server" 2>/dev/null; then
    echo "soak: the server ended at start:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done
[ -n "$addr" ] || { echo "soak: the server never logged its address" >&2; exit 1; }
echo "soak: server pid $server on $addr; ${warmup}s warm-up, then ${seconds}s with $clients clients" >&2

set +e
target/release/examples/soak_client --url "http://$addr" --seconds "$seconds" \
  --warmup-seconds "$warmup" --clients "$clients" --pid "$server" --json "$out/summary.json"
client_status=$?
set -e

kill -TERM "$server"
stopped_at=$(date +%s)
server_status=0
for _ in $(seq 1 400); do
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$server" 2>/dev/null; then
  echo "soak: the server did not exit within 40 s of SIGTERM" >&2
  server_status=1
else
  wait "$server" || server_status=$?
fi
echo "soak: server exited with status $server_status, $(($(date +%s) - stopped_at)) s after SIGTERM" >&2
errors=$(grep -cE ' ERROR |panicked' "$log" || true)
echo "soak: server log: $errors error lines ($log)" >&2
echo "soak: summary in $out/summary.json" >&2

[ "$client_status" -eq 0 ] && [ "$server_status" -eq 0 ] && [ "$errors" -eq 0 ]
