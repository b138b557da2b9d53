#!/usr/bin/env bash
# Measures what the deploy manifests are sized from (not part of CI; figures in docs/deploy.md):
# for each model, the release akidb-rest's time from process start to /health 200, its RSS
# once ready, and its peak RSS and throughput under the soak client's mix (which opens with
# its largest request, 32 texts past MiniLM's 256-token cap, so ONNX Runtime's arena reaches
# its peak).
#
#   bash deploy/measure.sh name=folder[:threads[:mapping]] ...
#   bash deploy/measure.sh minilm=.akidb/models/all-MiniLM-L6-v2:1 \
#       gemma=$HOME/models/embeddinggemma-300m-ONNX:2:in-place
#
# Settings: MEASURE_SECONDS (soak time per model, default 60), MEASURE_CLIENTS (8),
# MEASURE_STARTS (cold starts per model for the load time, default 3), MEASURE_OUT
# (target/measure), NICE (benches/priority.sh). Run on an idle machine: the figures are only as good as the CPU it gets.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# NICE (e.g. -15): own session with a raised group priority, as the benches do.
source benches/priority.sh

seconds="${MEASURE_SECONDS:-60}"
clients="${MEASURE_CLIENTS:-8}"
starts="${MEASURE_STARTS:-3}"
out="${MEASURE_OUT:-target/measure}"
mkdir -p "$out"
# The executable the image ships; the soak client as the test suite builds it.
bash scripts/image/build.sh "$out/bin" >/dev/null
cargo build --quiet --locked -p akidb-rest --example soak_client
bin="$out/bin/akidb-rest"
client="${CARGO_TARGET_DIR:-target}/debug/examples/soak_client"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"

rss_mib() { awk '/^VmRSS:/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average $(cut -d' ' -f1-3 /proc/loadavg)"
for entry in "$@"; do
  name="${entry%%=*}"
  spec="${entry#*=}"
  IFS=: read -r folder threads mapping <<<"$spec"
  threads="${threads:-1}"
  mapping="${mapping:-private-copy}"
  loads=()
  for run in $(seq 1 "$starts"); do
    log="$out/$name-$run.log"
    began=$(date +%s.%N)
    AKIDB_BIND="127.0.0.1:$port" AKIDB_EMBEDDING_MODEL="$folder" AKIDB_THREADS="$threads" \
      AKIDB_WEIGHTS_MAPPING="$mapping" RUST_LOG=info "$bin" 2>"$log" &
    pid=$!
    until curl -sf -o /dev/null "http://127.0.0.1:$port/health"; do
      kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
      sleep 0.02
    done
    ready=$(date +%s.%N)
    loads+=("$(python3 -c "print(f'{$ready - $began:.2f}')")")
    ready_rss=$(rss_mib "$pid")
    if [ "$run" -lt "$starts" ]; then
      kill -TERM "$pid"; wait "$pid" || true
    fi
  done
  summary="$out/$name-soak.json"
  "$client" --url "http://127.0.0.1:$port" --seconds "$seconds" --warmup-seconds 0 \
    --clients "$clients" --pid "$pid" --sample-seconds 1 --json "$summary" >/dev/null 2>"$out/$name-soak.log" || true
  kill -TERM "$pid"; wait "$pid" || true
  python3 - "$name" "$threads" "$ready_rss" "$summary" "${loads[@]}" <<'PY'
import json, statistics, sys
name, threads, ready_rss, path, *loads = sys.argv[1:]
s = json.load(open(path))
loads = sorted(float(x) for x in loads)
print(f"{name}: {threads} thread(s); load to ready {statistics.median(loads):.2f} s "
      f"(median of {len(loads)}: {', '.join(f'{x:.2f}' for x in loads)}); RSS ready {ready_rss} MiB, "
      f"peak under the soak mix {s['rss_mib']['max']:.0f} MiB, end {s['rss_mib']['end']:.0f} MiB; "
      f"{s['requests_per_s']} requests/s, {s['texts_embedded_per_s']} texts/s over {s['measured_s']} s "
      f"with {s['clients']} clients; unexpected {s['unexpected']}")
PY
done
