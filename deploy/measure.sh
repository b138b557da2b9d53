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
# MEASURE_IMAGE=IMAGE (e.g. localhost/akidb-rest:check, from scripts/image/build-image.sh)
# measures the image instead: each start a podman container on the host's network with a
# read-only root and no capabilities, a folder mounted read-only at /models/<its name> (a model
# id is looked up in the image, e.g. the baked sentence-transformers/all-MiniLM-L6-v2), and
# also reports the container's peak memory as its cgroup counts it (what a memory limit
# is enforced against).
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
image="${MEASURE_IMAGE:-}"
if [ -n "$image" ]; then
  source scripts/lib/podman.sh
  podman_setup
  podman image exists "$image" || { echo "no image $image: bash scripts/image/build-image.sh $image" >&2; exit 1; }
else
  # The executable the image ships.
  bash scripts/image/build.sh "$out/bin" >/dev/null
fi
# The soak client as the test suite builds it.
cargo build --quiet --locked -p akidb-rest --example soak_client
bin="$out/bin/akidb-rest"
client="${CARGO_TARGET_DIR:-target}/debug/examples/soak_client"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"

rss_mib() { awk '/^VmRSS:/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
# The kernel's own peak RSS of process PID (VmHWM), in MiB: unlike the soak client's samples
# (one a second) it cannot miss a short peak.
hwm_mib() { awk '/^VmHWM:/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
# The peak of the memory cgroup (v1 or v2) that process PID is in, in MiB.
cgroup_peak_mib() {
  local v1 v2
  v1="$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' "/proc/$1/cgroup")"
  v2="$(awk -F: '$1 == "0" {print $3}' "/proc/$1/cgroup")"
  if [ -n "$v1" ] && [ -r "/sys/fs/cgroup/memory$v1/memory.max_usage_in_bytes" ]; then
    awk '{printf "%.0f", $1 / 1048576}' "/sys/fs/cgroup/memory$v1/memory.max_usage_in_bytes"
  elif [ -r "/sys/fs/cgroup$v2/memory.peak" ]; then
    awk '{printf "%.0f", $1 / 1048576}' "/sys/fs/cgroup$v2/memory.peak"
  else
    echo "?"
  fi
}
# start NAME MODEL THREADS MAPPING LOG: starts the service (a process, or a container of
# MEASURE_IMAGE) and sets pid to its process.
start() {
  local name="$1" model="$2" threads="$3" mapping="$4" log="$5" mount=()
  if [ -z "$image" ]; then
    AKIDB_BIND="127.0.0.1:$port" AKIDB_EMBEDDING_MODEL="$model" AKIDB_THREADS="$threads" \
      AKIDB_WEIGHTS_MAPPING="$mapping" RUST_LOG=info "$bin" 2>"$log" &
    pid=$!
    return
  fi
  if [ -d "$model" ]; then
    mount=(-v "$(cd "$model" && pwd):/models/$(basename "$model"):ro")
    model="/models/$(basename "$model")"
  fi
  podman rm -f -t 0 "akidb-measure-$name" >/dev/null 2>&1 || true
  podman run -d --name "akidb-measure-$name" --network host --read-only --cap-drop ALL \
    --security-opt no-new-privileges "${mount[@]}" \
    -e AKIDB_BIND="127.0.0.1:$port" -e AKIDB_EMBEDDING_MODEL="$model" -e AKIDB_THREADS="$threads" \
    -e AKIDB_WEIGHTS_MAPPING="$mapping" -e NO_COLOR=1 "$image" >/dev/null
  pid="$(podman inspect -f '{{.State.Pid}}' "akidb-measure-$name")"
}
# stop NAME: SIGTERM and wait (podman stop for a container; its log is kept beside the others).
stop() {
  if [ -z "$image" ]; then
    kill -TERM "$pid"; wait "$pid" || true
  else
    podman stop -t 40 "akidb-measure-$1" >/dev/null || true
    podman logs "akidb-measure-$1" >>"$log" 2>&1 || true
    podman rm -f "akidb-measure-$1" >/dev/null
  fi
}

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
    start "$name" "$folder" "$threads" "$mapping" "$log"
    until curl -sf -o /dev/null "http://127.0.0.1:$port/health"; do
      kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; [ -z "$image" ] || podman logs "akidb-measure-$name" >&2; exit 1; }
      sleep 0.02
    done
    ready=$(date +%s.%N)
    loads+=("$(python3 -c "print(f'{$ready - $began:.2f}')")")
    ready_rss=$(rss_mib "$pid")
    if [ "$run" -lt "$starts" ]; then
      stop "$name"
    fi
  done
  summary="$out/$name-soak.json"
  "$client" --url "http://127.0.0.1:$port" --seconds "$seconds" --warmup-seconds 0 \
    --clients "$clients" --pid "$pid" --sample-seconds 1 --json "$summary" >/dev/null 2>"$out/$name-soak.log" || true
  cgroup_peak="$( [ -z "$image" ] && echo - || cgroup_peak_mib "$pid")"
  hwm="$(hwm_mib "$pid")"
  stop "$name"
  python3 - "$name" "$threads" "$ready_rss" "$summary" "$cgroup_peak" "$hwm" "${loads[@]}" <<'PY'
import json, statistics, sys
name, threads, ready_rss, path, cgroup_peak, hwm, *loads = sys.argv[1:]
s = json.load(open(path))
loads = sorted(float(x) for x in loads)
print(f"{name}: {threads} thread(s); load to ready {statistics.median(loads):.2f} s "
      f"(median of {len(loads)}: {', '.join(f'{x:.2f}' for x in loads)}); RSS ready {ready_rss} MiB, "
      f"peak under the soak mix {hwm} MiB (VmHWM; sampled {s['rss_mib']['max']:.0f}), end {s['rss_mib']['end']:.0f} MiB; "
      f"{s['requests_per_s']} requests/s, {s['texts_embedded_per_s']} texts/s over {s['measured_s']} s "
      f"with {s['clients']} clients; unexpected {s['unexpected']}"
      + ("" if cgroup_peak == "-" else f"; container memory peak (cgroup) {cgroup_peak} MiB"))
PY
done
