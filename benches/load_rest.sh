#!/usr/bin/env bash
# Load benchmark of the akidb-rest service: POST /api/v1/embed with one short text per request
# ({"inputs":["Hello, world!"]}), at 1, 4, 16 and 64 concurrent clients (keep-alive
# connections), with dynamic batching on and off. Prints requests/s, P50 and P99 per level as a
# markdown table, then checks the targets (16 clients >= 3x the req/s of 1 client; P99 within
# 4x P50).
#
# Uses wrk (apt-get install wrk; installed here when missing and apt-get is usable). Starts the
# release build of akidb-rest itself on 127.0.0.1:$PORT and stops it (only that process) after.
# On a small machine the load generator shares the cores with the service: wrk is used because
# it is light (one event loop per thread, at most 2 threads here).
#
# Environment: MODEL (.akidb/models/all-MiniLM-L6-v2), THREADS (2, ONNX Runtime intra-op
# threads of the service), CLIENTS ("1 4 16 64"), BATCHING ("true false"), DURATION (15 s per
# level), WARMUP (3 s), PORT (18089), TEXT ("Hello, world!"), AKIDB_API_KEY (sent if set),
# OUT (target/bench-load: raw results and server logs), SERVER_BIN (an akidb-rest binary built
# elsewhere, e.g. from a changed copy of the library, instead of this tree's release build), NICE (e.g. -10: run service and wrk at
# that priority, as root, so builds sharing the machine disturb them less).
set -euo pipefail

# NICE: see priority.sh.
source "$(dirname "${BASH_SOURCE[0]}")/priority.sh"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
model="${MODEL:-$root/.akidb/models/all-MiniLM-L6-v2}"
threads="${THREADS:-2}"
clients="${CLIENTS:-1 4 16 64}"
batching_modes="${BATCHING:-true false}"
duration="${DURATION:-15}"
warmup="${WARMUP:-3}"
port="${PORT:-18089}"
text="${TEXT:-Hello, world!}"
out="${OUT:-$root/target/bench-load}"
mkdir -p "$out"

if ! command -v wrk >/dev/null; then
  echo "load_rest: installing wrk with apt-get" >&2
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
command -v curl >/dev/null || { echo "load_rest: curl is needed" >&2; exit 1; }

if [[ -n "${SERVER_BIN:-}" ]]; then
  server_bin="$SERVER_BIN"
else
  echo "load_rest: building akidb-rest (release)" >&2
  cargo build --quiet --release -p akidb-rest >&2
  server_bin="$root/target/release/akidb-rest"
fi

script="$out/post.lua"
body="$(TEXT="$text" python3 -c 'import json, os; print(json.dumps({"inputs": [os.environ["TEXT"]]}))')"
cat >"$script" <<LUA
wrk.method = "POST"
wrk.body = [[$body]]
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("AKIDB_API_KEY")
if key and key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT {\"requests\":%d,\"duration_us\":%d,\"p50_us\":%d,\"p99_us\":%d,\"mean_us\":%.1f,\"errors\":%d,\"status_errors\":%d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean,
    e.connect + e.read + e.write + e.timeout, e.status))
end
LUA

server_pid=""
stop_server() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=""
}
trap stop_server EXIT

start_server() { # batching
  AKIDB_BIND="127.0.0.1:$port" AKIDB_EMBEDDING_MODEL="$model" AKIDB_EMBEDDING_PROVIDER=onnx \
    AKIDB_THREADS="$threads" AKIDB_DYNAMIC_BATCHING="$1" ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-}" \
    "$server_bin" >"$out/server-batching-$1.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 600); do
    if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
      return 0
    fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "load_rest: the service did not become healthy; see $out/server-batching-$1.log" >&2
  tail -20 "$out/server-batching-$1.log" >&2
  exit 1
}

url="http://127.0.0.1:$port/api/v1/embed"
results="$out/results.jsonl"
: >"$results"
{
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); date: $(date -u '+%Y-%m-%d %H:%M UTC'); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "service: akidb-rest, model $(basename "$model"), $threads intra-op threads; load: wrk, ${duration}s per level, body $body"
} | tee "$out/machine.txt"

for batching in $batching_modes; do
  start_server "$batching"
  wrk -t 1 -c 4 -d "${warmup}s" -s "$script" "$url" >/dev/null
  for c in $clients; do
    wrk_threads=$((c < 2 ? c : 2))
    echo "load_rest: batching=$batching, $c clients" >&2
    line="$(wrk -t "$wrk_threads" -c "$c" -d "${duration}s" --timeout 30s -s "$script" "$url" | sed -n 's/^RESULT //p')"
    echo "{\"batching\":$batching,\"clients\":$c,\"wrk\":$line}" >>"$results"
  done
  stop_server
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("\n| dynamic batching | clients | requests/s | P50 (ms) | P99 (ms) | P99/P50 | errors |")
print("|---|---|---|---|---|---|---|")
by = {}
for r in rows:
    w = r["wrk"]
    rps = w["requests"] / (w["duration_us"] / 1e6)
    p50, p99 = w["p50_us"] / 1e3, w["p99_us"] / 1e3
    by[(r["batching"], r["clients"])] = (rps, p50, p99)
    print(f"| {'on' if r['batching'] else 'off'} | {r['clients']} | {rps:.1f} | {p50:.2f} | {p99:.2f} | "
          f"{p99 / p50 if p50 else float('nan'):.1f}× | {w['errors'] + w['status_errors']} |")
print()
for batching in (True, False):
    one, sixteen = by.get((batching, 1)), by.get((batching, 16))
    if one and sixteen:
        scale = sixteen[0] / one[0]
        tail = sixteen[2] / sixteen[1]
        print(f"batching {'on' if batching else 'off'}: 16 clients = {scale:.2f}x the req/s of 1 client "
              f"(target >= 3x: {'met' if scale >= 3 else 'MISSED'}); P99/P50 at 16 clients = {tail:.2f} "
              f"(target <= 4: {'met' if tail <= 4 else 'MISSED'})")
PY
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
