#!/usr/bin/env bash
# akidb-rest against text-embeddings-inference (TEI v1.9.3, its `ort` backend) on the same
# machine, the same model files, the same ONNX Runtime library, the same route (`POST /embed`,
# TEI's dialect, which both serve) and the same client (wrk, one thread, keep-alive, a Lua script
# per body). Both servers run at once on 127.0.0.1 for a model; the cells are interleaved: each
# round runs every cell on both servers back to back, the order swapped every cell and round, so
# neither is always first. Figures per cell are medians over rounds.
#
# Cells: MiniLM int8 (short text, 50-word text, 8 texts per request; 1, 8 and 32 connections),
# EmbeddingGemma fp32 (short, 50-word; 1 and 4 connections). Per cell: req/s, P50/P99 latency
# (wrk), non-2xx answers and socket errors. Per server: RSS (process and children, VmRSS) after
# load and warm-up, and after the run. Targets, ours/TEI: req/s >= 0.97 in every cell; P99 at 1
# connection <= 1.1; RSS after load and after the run <= 1.05.
#
# Threads: both servers get 2 intra-op ONNX Runtime threads (ours: AKIDB_THREADS=$THREADS; TEI's
# ort backend always takes num_cpus: the script stops unless nproc = THREADS), TEI 2 tokenization
# workers (--tokenization-workers $THREADS). Everything else at each server's defaults (batch
# tokens 16384 both, CPU arena on both).
#
# Getting a TEI binary: ../shared/tools/tei/build.sh builds TEI v1.9.3's router offline from git
# mirrors (read its header; ~20 min on 2 cores):
#   TEI_MIRROR=... CANDLE_MIRROR=... bash ../shared/tools/tei/build.sh ~/tei
# then TEI_BIN=~/tei/bin/text-embeddings-router. TEI's code is never part of this repository.
#
# Run:
#   bash scripts/setup.sh && cargo build --release -p akidb-rest
#   TEI_BIN=~/tei/bin/text-embeddings-router GEMMA_DIR=~/models/embeddinggemma-300m-ONNX \
#     NICE=-15 bash benches/vs_tei.sh
# Variables:
#   AKIDB_BIN     our server (default target/release/akidb-rest; never built by this script)
#   TEI_BIN       TEI's text-embeddings-router (default ~/tei/bin/text-embeddings-router)
#   ORT_DYLIB_PATH  libonnxruntime.so for both (default .akidb/runtime/libonnxruntime.so)
#   MINILM_DIR    (.akidb/models/all-MiniLM-L6-v2, its model.onnx is the int8 export)
#   GEMMA_DIR     EmbeddingGemma-300m ONNX folder with onnx/model.onnx (fp32); its cells are
#                 skipped with a message when unset or missing
#   MODELS        ("minilm gemma") which models to run
#   ROUNDS (2), DURATION (10 s per cell and server), GEMMA_DURATION (20 s: a Gemma request takes
#   up to ~1 s), WARMUP (3 s per server and model),
#   THREADS (2), PORT_OURS (18091), PORT_TEI (18092), NICE (e.g. -15, see priority.sh),
#   RESULTS (benches/results/vs_tei.txt; raw wrk lines beside it in vs_tei.jsonl),
#   LOGS (target/vs-tei: server logs, Lua scripts)
# Time: MiniLM 9 cells x 2 servers x ROUNDS x DURATION + Gemma 4 x 2 x ROUNDS x GEMMA_DURATION,
# plus loads and warm-ups: about 13 min at the defaults, 19 min with ROUNDS=3.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/priority.sh"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
akidb_bin="${AKIDB_BIN:-$root/target/release/akidb-rest}"
tei_bin="${TEI_BIN:-$HOME/tei/bin/text-embeddings-router}"
ort="${ORT_DYLIB_PATH:-$root/.akidb/runtime/libonnxruntime.so}"
minilm="${MINILM_DIR:-$root/.akidb/models/all-MiniLM-L6-v2}"
gemma="${GEMMA_DIR:-}"
models="${MODELS:-minilm gemma}"
rounds="${ROUNDS:-2}"
duration="${DURATION:-10}"
gemma_duration="${GEMMA_DURATION:-20}"
warmup="${WARMUP:-3}"
threads="${THREADS:-2}"
port_ours="${PORT_OURS:-18091}"
port_tei="${PORT_TEI:-18092}"
results="${RESULTS:-$root/benches/results/vs_tei.txt}"
raw="${results%.txt}.jsonl"
logs="${LOGS:-$root/target/vs-tei}"

die() { echo "vs_tei: $*" >&2; exit 1; }
[[ -x "$akidb_bin" ]] || die "no akidb-rest at $akidb_bin (cargo build --release -p akidb-rest, or set AKIDB_BIN)"
[[ -x "$tei_bin" ]] || die "no TEI router at $tei_bin (set TEI_BIN; ../shared/tools/tei/build.sh builds one)"
[[ -f "$ort" ]] || die "no ONNX Runtime library at $ort (bash scripts/setup.sh, or set ORT_DYLIB_PATH)"
[[ -f "$minilm/model.onnx" ]] || die "no MiniLM at $minilm (bash scripts/setup.sh, or set MINILM_DIR)"
command -v curl >/dev/null || die "curl is needed"
command -v python3 >/dev/null || die "python3 is needed"
if ! command -v wrk >/dev/null; then
  echo "vs_tei: installing wrk with apt-get" >&2
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; } \
    || die "wrk is needed (apt-get install wrk)"
fi
[[ "$(nproc)" == "$threads" ]] || die "TEI's ort backend uses one thread per core ($(nproc)); THREADS must equal nproc"
if [[ " $models " == *" gemma "* ]] && [[ -z "$gemma" || ! -f "$gemma/onnx/model.onnx" ]]; then
  echo "vs_tei: GEMMA_DIR unset or without onnx/model.onnx: EmbeddingGemma cells skipped" >&2
  models="${models//gemma/}"
fi
mkdir -p "$logs" "$(dirname "$results")"
: >"$raw"

# ---- servers ------------------------------------------------------------------------------
pid_ours=""; pid_tei=""
stop() { # pid
  local pid="$1"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}
cleanup() { stop "$pid_ours"; stop "$pid_tei"; pid_ours=""; pid_tei=""; }
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_healthy() { # name port pid log
  for _ in $(seq 1 1800); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$2/health" 2>/dev/null; then return 0; fi
    kill -0 "$3" 2>/dev/null || break
    sleep 0.2
  done
  tail -20 "$4" >&2
  die "$1 did not become healthy on port $2 (log: $4)"
}

# RSS in KiB of a process and its descendants (TEI's ort backend runs in-process; counted anyway).
rss_kib() { # pid
  python3 - "$1" <<'PY'
import os, sys
root = int(sys.argv[1]); kids = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(d))
        except OSError:
            pass
total, todo = 0, [root]
while todo:
    pid = todo.pop()
    todo += kids.get(pid, [])
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    except OSError:
        pass
print(total)
PY
}

start_ours() { # model_dir name
  AKIDB_BIND="127.0.0.1:$port_ours" AKIDB_EMBEDDING_MODEL="$1" AKIDB_EMBEDDING_PROVIDER=onnx \
    AKIDB_EMBEDDING_VARIANT=fp32 AKIDB_THREADS="$threads" ORT_DYLIB_PATH="$ort" \
    AKIDB_ORT_LIBRARY="$ort" "$akidb_bin" >"$logs/ours-$2.log" 2>&1 &
  pid_ours=$!
  wait_healthy akidb-rest "$port_ours" "$pid_ours" "$logs/ours-$2.log"
}
start_tei() { # model_dir name
  local extra=()
  [[ -f "$1/1_Pooling/config.json" ]] || extra+=(--pooling mean)
  HF_HUB_OFFLINE=1 ORT_DYLIB_PATH="$ort" "$tei_bin" --model-id "$1" --hostname 127.0.0.1 \
    --port "$port_tei" --tokenization-workers "$threads" "${extra[@]}" >"$logs/tei-$2.log" 2>&1 &
  pid_tei=$!
  wait_healthy TEI "$port_tei" "$pid_tei" "$logs/tei-$2.log"
}

# ---- bodies and the wrk script --------------------------------------------------------------
body_file() { # kind -> path of a JSON body for POST /embed
  local f="$logs/body-$1.json"
  python3 - "$1" "$f" <<'PY'
import json, sys
kind, path = sys.argv[1:3]
texts = json.load(open("benches/texts.json"))
inputs = {"short": texts["short"], "medium": texts["medium"], "batch8": texts["batch32"][:8]}[kind]
json.dump({"inputs": inputs}, open(path, "w"))
PY
  echo "$f"
}
lua="$logs/embed.lua"
cat >"$lua" <<'LUA'
-- POST /embed with the body in $BODY_FILE; prints one JSON line with the run's figures.
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT {\"requests\":%d,\"duration_us\":%d,\"p50_us\":%d,\"p99_us\":%d,\"mean_us\":%.1f,\"socket_errors\":%d,\"non2xx\":%d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean,
    e.connect + e.read + e.write + e.timeout, e.status))
end
LUA

run_wrk() { # port body_file connections seconds -> RESULT json
  BODY_FILE="$2" wrk -t 1 -c "$3" -d "${4}s" --timeout 60s -s "$lua" "http://127.0.0.1:$1/embed" \
    | sed -n 's/^RESULT //p'
}

# Both servers embed the 50-word text: the vectors must agree, or the comparison is void.
check_same_vectors() { # model
  local a b
  a="$(curl -fsS -H 'Content-Type: application/json' --data-binary @"$(body_file medium)" "http://127.0.0.1:$port_ours/embed")"
  b="$(curl -fsS -H 'Content-Type: application/json' --data-binary @"$(body_file medium)" "http://127.0.0.1:$port_tei/embed")"
  python3 - "$1" "$a" "$b" "$raw" <<'PY'
import json, math, sys
model, a, b, raw = sys.argv[1], json.loads(sys.argv[2])[0], json.loads(sys.argv[3])[0], sys.argv[4]
cos = sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
print(f"vs_tei: {model}: cosine ours/TEI on the 50-word text = {cos:.6f} (dims {len(a)}/{len(b)})", file=sys.stderr)
with open(raw, "a") as f:
    f.write(json.dumps({"model": model, "cosine": cos, "dims": [len(a), len(b)]}) + "\n")
if len(a) != len(b) or cos < 0.999:
    sys.exit(f"vs_tei: {model}: the two servers do not embed alike (cosine {cos:.6f}); not comparing")
PY
}

record_rss() { # model server when pid
  echo "{\"model\":\"$1\",\"server\":\"$2\",\"rss\":\"$3\",\"kib\":$(rss_kib "$4")}" >>"$raw"
}

# ---- the run --------------------------------------------------------------------------------
{
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB"
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "ours: $akidb_bin ($("$akidb_bin" --version 2>/dev/null || echo '?'); tree $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
  echo "TEI:  $tei_bin ($("$tei_bin" --version 2>/dev/null || echo '?'))"
  echo "ONNX Runtime: $ort; threads: $threads intra-op both, TEI --tokenization-workers $threads"
  echo "client: wrk 1 thread, keep-alive, POST /embed; ${duration}s (MiniLM) / ${gemma_duration}s (Gemma) per cell and server, $rounds rounds interleaved, NICE=${NICE:-unset}"
} >"$logs/header.txt"
cat "$logs/header.txt" >&2

for model in $models; do
  case "$model" in
    minilm) dir="$minilm"; kinds="short medium batch8"; conns="1 8 32"; secs="$duration" ;;
    gemma) dir="$gemma"; kinds="short medium"; conns="1 4"; secs="$gemma_duration" ;;
    *) die "unknown model $model (minilm, gemma)" ;;
  esac
  echo "vs_tei: $model: starting both servers on $dir" >&2
  start_ours "$dir" "$model"
  start_tei "$dir" "$model"
  check_same_vectors "$model"
  # Warm-up: every body once, then a short wrk per server; then the RSS "after load".
  for server in ours tei; do
    port=$port_ours; [[ $server == tei ]] && port=$port_tei
    for kind in $kinds; do run_wrk "$port" "$(body_file "$kind")" 1 1 >/dev/null; done
    run_wrk "$port" "$(body_file medium)" 4 "$warmup" >/dev/null
  done
  sleep 1
  record_rss "$model" ours after_load "$pid_ours"
  record_rss "$model" tei after_load "$pid_tei"
  cell=0
  for round in $(seq 1 "$rounds"); do
    for kind in $kinds; do
      for c in $conns; do
        cell=$((cell + 1))
        order="ours tei"; (( (cell + round) % 2 )) && order="tei ours"
        for server in $order; do
          port=$port_ours; [[ $server == tei ]] && port=$port_tei
          line="$(run_wrk "$port" "$(body_file "$kind")" "$c" "$secs")"
          [[ -n "$line" ]] || die "wrk gave no result for $server $model $kind c=$c"
          echo "{\"model\":\"$model\",\"server\":\"$server\",\"round\":$round,\"text\":\"$kind\",\"connections\":$c,\"wrk\":$line}" >>"$raw"
          echo "vs_tei: round $round $model $kind c=$c $server: $line" >&2
        done
      done
    done
  done
  sleep 2
  record_rss "$model" ours after_run "$pid_ours"
  record_rss "$model" tei after_run "$pid_tei"
  cleanup
done

# ---- the table ------------------------------------------------------------------------------
python3 - "$raw" "$logs/header.txt" "$results" <<'PY'
import json, statistics, sys
raw, header, out = sys.argv[1:4]
rows = [json.loads(l) for l in open(raw) if l.strip()]
lines = [l.rstrip("\n") for l in open(header)]
lines.append("")
cells, rss, cos = {}, {}, {}
for r in rows:
    if "wrk" in r:
        w = r["wrk"]
        cells.setdefault((r["model"], r["text"], r["connections"]), {}).setdefault(r["server"], []).append(
            (w["requests"] / (w["duration_us"] / 1e6), w["p50_us"] / 1e3, w["p99_us"] / 1e3, w["non2xx"] + w["socket_errors"]))
    elif "rss" in r:
        rss[(r["model"], r["server"], r["rss"])] = r["kib"] / 1024
    elif "cosine" in r:
        cos[r["model"]] = r["cosine"]
verdicts = []
def judge(ok):
    verdicts.append(ok)
    return "met" if ok else "MISSED"
lines.append("| model | text | conns | ours req/s | TEI req/s | ratio (>= 0.97) | ours P50 / P99 ms | TEI P50 / P99 ms | P99 ratio (c=1: <= 1.1) | non-2xx+errors ours / TEI |")
lines.append("|---|---|---|---|---|---|---|---|---|---|")
for (model, text, c), by in cells.items():
    if "ours" not in by or "tei" not in by:
        continue
    med = {s: [statistics.median(x[i] for x in v) for i in range(3)] + [sum(x[3] for x in v)] for s, v in by.items()}
    o, t = med["ours"], med["tei"]
    ratio = o[0] / t[0] if t[0] else float("nan")
    p99r = o[2] / t[2] if t[2] else float("nan")
    p99cell = f"{p99r:.2f}" + (f" {judge(p99r <= 1.1)}" if c == 1 else "")
    lines.append(f"| {model} | {text} | {c} | {o[0]:.1f} | {t[0]:.1f} | {ratio:.3f} {judge(ratio >= 0.97)} | "
                 f"{o[1]:.1f} / {o[2]:.1f} | {t[1]:.1f} / {t[2]:.1f} | {p99cell} | {o[3]} / {t[3]} |")
lines.append("")
lines.append("| model | RSS | ours MiB | TEI MiB | ratio (<= 1.05) |")
lines.append("|---|---|---|---|---|")
for model in dict.fromkeys(k[0] for k in rss):
    for when in ("after_load", "after_run"):
        o, t = rss.get((model, "ours", when)), rss.get((model, "tei", when))
        if o and t:
            lines.append(f"| {model} | {when.replace('_', ' ')} | {o:.0f} | {t:.0f} | {o / t:.3f} {judge(o / t <= 1.05)} |")
lines.append("")
lines.append("same vectors (cosine ours/TEI, 50-word text): " + ", ".join(f"{m} {c:.6f}" for m, c in cos.items()))
lines.append(f"targets: {sum(verdicts)} of {len(verdicts)} met" + ("" if all(verdicts) else f", {len(verdicts) - sum(verdicts)} MISSED"))
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
PY
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$results" >&2
echo "vs_tei: results in $results, raw wrk lines in $raw" >&2
