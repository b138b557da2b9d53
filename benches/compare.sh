#!/usr/bin/env bash
# Side-by-side latency/throughput/memory of the three implementations, same machine, same
# run, same files, same texts (benches/texts.json), same ONNX Runtime library:
#   akidb      cargo run --release --example latency
#   python     benches/python_baseline.py (onnxruntime + tokenizers, the original python-bridge)
#   fastembed  benches/fastembed-bench (fastembed-rs 7.7.0, UserDefinedEmbeddingModel)
# Models: all-MiniLM-L6-v2 int8 (.akidb/models), the tiny EmbeddingGemma double
# (../shared/models/tiny-embeddinggemma) and, when AKIDB_GEMMA_DIR names a folder, a real
# EmbeddingGemma export (AKIDB_GEMMA_VARIANT, default fp32; in MODELS, a name
# `embeddinggemma-<variant>` says the variant, e.g. `embeddinggemma-q8=DIR` for a folder made by
# `cargo run --release --example quantize`).
#
# Needs scripts/setup.sh to have run. Installs the Python requirements and builds both Rust
# programs itself. Prints a markdown table per model (medians over ROUNDS interleaved rounds,
# each round visiting every model;
# cold start: median of COLD_RUNS fresh processes) and leaves the raw JSON lines in $OUT.
#
# Environment: THREADS (2), RUNS (200 calls per text), ROUNDS (3), COLD_RUNS (5),
# OUT (target/bench-compare), IMPLS ("akidb python fastembed"), MODELS (space-separated
# name=folder pairs, replacing the default list), CANDIDATE_BIN (a latency binary built from a
# changed copy of the library; add `candidate` to IMPLS to measure it beside the others), NICE (e.g. -10: run the measured processes
# at that priority, as root, so builds sharing the machine disturb them less).
# The load average is sampled every 5 s during the run and summarised at the end.
set -euo pipefail

# NICE: see priority.sh.
source "$(dirname "${BASH_SOURCE[0]}")/priority.sh"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
threads="${THREADS:-2}"
runs="${RUNS:-200}"
rounds="${ROUNDS:-3}"
cold_runs="${COLD_RUNS:-5}"
out="${OUT:-$root/target/bench-compare}"
impls="${IMPLS:-akidb python fastembed}"
python="${PYTHON:-python3}"

runtime="${ORT_DYLIB_PATH:-$root/.akidb/runtime/libonnxruntime.so}"
if [[ ! -e "$runtime" ]]; then
  echo "compare: no ONNX Runtime at $runtime; run scripts/setup.sh first" >&2
  exit 1
fi
export ORT_DYLIB_PATH="$runtime"

if [[ -n "${MODELS:-}" ]]; then
  read -r -a models <<<"$MODELS"
else
  models=("minilm-int8=$root/.akidb/models/all-MiniLM-L6-v2"
          "tiny-gemma=$root/../shared/models/tiny-embeddinggemma")
  if [[ -n "${AKIDB_GEMMA_DIR:-}" ]]; then
    models+=("embeddinggemma-${AKIDB_GEMMA_VARIANT:-fp32}=$AKIDB_GEMMA_DIR")
  fi
fi

echo "compare: installing Python requirements" >&2
"$python" -m pip install --quiet --disable-pip-version-check -r benches/requirements.txt >&2
echo "compare: building examples/latency and (when measured) benches/fastembed-bench (release)" >&2
cargo build --quiet --release --example latency >&2
if [[ " $impls " == *" fastembed "* ]]; then
  cargo build --quiet --release --manifest-path benches/fastembed-bench/Cargo.toml >&2
fi

akidb_bin="$root/target/release/examples/latency"
fastembed_bin="$root/benches/fastembed-bench/target/release/fastembed-bench"
mkdir -p "$out"

run_impl() { # impl folder variant extra-args...
  local impl="$1" folder="$2" variant="$3"
  shift 3
  case "$impl" in
    akidb) "$akidb_bin" --model "$folder" --variant "$variant" --threads "$threads" "$@" ;;
    candidate) "${CANDIDATE_BIN:?set CANDIDATE_BIN to a latency binary}" --model "$folder" --variant "$variant" --threads "$threads" "$@" ;;
    python) "$python" "$root/benches/python_baseline.py" --model "$folder" --variant "$variant" --threads "$threads" "$@" ;;
    fastembed) "$fastembed_bin" --model "$folder" --variant "$variant" --threads "$threads" "$@" ;;
    *) echo "compare: unknown implementation $impl" >&2; return 1 ;;
  esac
}

{
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB RAM"
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "onnxruntime: $(readlink -f "$runtime" | xargs basename), threads: $threads, runs per text: $runs, rounds: $rounds, cold runs: $cold_runs"
} | tee "$out/machine.txt"

# Load average every 5 s while measuring: other work on the machine shows up here.
: >"$out/load.txt"
(while sleep 5; do cut -d' ' -f1 /proc/loadavg >>"$out/load.txt"; done) &
sampler=$!
trap 'kill "$sampler" 2>/dev/null || true' EXIT

# Every round visits every model, so each model's medians are taken over the same stretches
# of the run: a quiet or a loud minute of the host falls on all models alike, and a target
# that compares two models (q8 against Python's fp32) compares figures measured side by side.
names=()
folders=()
variants=()
for entry in "${models[@]}"; do
  name="${entry%%=*}"
  folder="${entry#*=}"
  variant="fp32"
  # embeddinggemma-<variant>=folder: the name says the variant (fp32, q8, quantized, q4...).
  [[ "$name" == embeddinggemma-* ]] && variant="${name#embeddinggemma-}"
  if [[ ! -d "$folder" ]]; then
    echo "compare: skipping $name: no folder $folder" >&2
    continue
  fi
  names+=("$name")
  folders+=("$folder")
  variants+=("$variant")
  : >"$out/$name.jsonl"
done
read -r -a impl_list <<<"$impls"
for ((round = 1; round <= rounds; round++)); do
  # Each round starts with the next implementation, so none is always the first process
  # after a build or another model (that first process measured slower in some runs).
  order=()
  for ((k = 0; k < ${#impl_list[@]}; k++)); do
    order+=("${impl_list[(k + round - 1) % ${#impl_list[@]}]}")
  done
  for m in "${!names[@]}"; do
    name="${names[m]}"
    results="$out/$name.jsonl"
    for impl in "${order[@]}"; do
      echo "compare: $name, $impl, round $round/$rounds" >&2
      vectors=()
      [[ $round == 1 ]] && vectors=(--vectors "$out/$name.$impl.vectors.json")
      if line="$(run_impl "$impl" "${folders[m]}" "${variants[m]}" --runs "$runs" "${vectors[@]}")"; then
        echo "{\"kind\":\"warm\",\"impl\":\"$impl\",\"result\":$line}" >>"$results"
      else
        echo "{\"kind\":\"failed\",\"impl\":\"$impl\"}" >>"$results"
      fi
    done
  done
done
for m in "${!names[@]}"; do
  name="${names[m]}"
  results="$out/$name.jsonl"
  for ((i = 1; i <= cold_runs; i++)); do
    for impl in $impls; do
      if line="$(run_impl "$impl" "${folders[m]}" "${variants[m]}" --cold --t0-ns "$(date +%s%N)")"; then
        echo "{\"kind\":\"cold\",\"impl\":\"$impl\",\"result\":$line}" >>"$results"
      fi
    done
  done
  "$python" - "$name" "$results" "$out" "$impls" <<'PY'
import json, statistics, sys, math
name, results, out, impls = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split()
rows = [json.loads(l) for l in open(results) if l.strip()]
warm = {i: [r["result"] for r in rows if r["kind"] == "warm" and r["impl"] == i] for i in impls}
cold = {i: [r["result"] for r in rows if r["kind"] == "cold" and r["impl"] == i] for i in impls}

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def get(impl, path, source=None):
    data = (source or warm)[impl]
    vals = []
    for r in data:
        v = r
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        vals.append(v)
    return med(vals)

metrics = [  # label, getter, lower is better
    ("short P50 (ms)", lambda i: get(i, ["short", "p50"]), True),
    ("short P95 (ms)", lambda i: get(i, ["short", "p95"]), True),
    ("medium P50 (ms)", lambda i: get(i, ["medium", "p50"]), True),
    ("medium P95 (ms)", lambda i: get(i, ["medium", "p95"]), True),
    ("long P50 (ms)", lambda i: get(i, ["long", "p50"]), True),
    ("long texts/s (1000/P50)", lambda i: (1000.0 / v) if (v := get(i, ["long", "p50"])) else None, False),
    ("batch32 texts/s", lambda i: get(i, ["batch32_texts_per_s"]), False),
    ("RSS after load (MiB)", lambda i: get(i, ["rss_mb"]), True),
    ("RSS after run (MiB)", lambda i: get(i, ["rss_end_mb"]), True),
    ("load + warm-up (ms)", lambda i: get(i, ["load_ms"]), True),
    ("cold start to first vector (ms)", lambda i: get(i, ["start_to_first_ms"], cold), True),
]

def fmt(v):
    if v is None:
        return "n/a"
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"

tokens = {k: get(impls[0], [k, "tokens"]) for k in ("short", "medium", "long")}
ours = [i for i in ("akidb", "candidate") if i in impls]
pairs = [(a, b) for a in ours for b in impls if b not in ours]
print(f"\n### {name}\n")
print(f"tokens: short {tokens['short']}, medium {tokens['medium']}, long {tokens['long']}; "
      f"medians of {len(warm.get(impls[0], []))} rounds, cold start: median of {len(cold.get(impls[0], []))} processes\n")
header = "| metric | " + " | ".join(impls + [f"{a}/{b}" for a, b in pairs]) + " |"
print(header)
print("|" + "---|" * (header.count("|") - 1))
for label, getter, lower in metrics:
    values = {i: getter(i) for i in impls}
    cells = [fmt(values[i]) for i in impls]
    for x, y in pairs:
        a, b = values[x], values[y]
        cells.append(f"{a / b:.2f}×" if a is not None and b else "n/a")
    print(f"| {label} | " + " | ".join(cells) + " |")

# Do the implementations compute the same vectors? (first round's --vectors files)
def load_vectors(i):
    try:
        with open(f"{out}/{name}.{i}.vectors.json") as f:
            return json.load(f)
    except OSError:
        return None

def cos(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))

ref = load_vectors("python")
if ref:
    notes = []
    for i in impls:
        v = load_vectors(i)
        if i == "python" or v is None:
            continue
        worst = min([cos(v["medium"], ref["medium"])] + [cos(a, b) for a, b in zip(v["batch32"], ref["batch32"])])
        notes.append(f"{i} vs python: min cosine {worst:.6f} over 33 vectors")
    if notes:
        print("\nsame vectors? " + "; ".join(notes))
failed = [r["impl"] for r in rows if r["kind"] == "failed"]
if failed:
    print(f"\nfailed runs: {', '.join(failed)} (see stderr)")
PY
done
# EmbeddingGemma's q8 against Python running the fp32 graph (the q8 target's yardstick),
# both from the same rounds.
q8_results="$out/embeddinggemma-q8.jsonl"
fp32_results="$out/embeddinggemma-fp32.jsonl"
if [[ " ${names[*]} " == *" embeddinggemma-q8 "* && " ${names[*]} " == *" embeddinggemma-fp32 "* ]]; then
  "$python" - "$q8_results" "$fp32_results" <<'PY'
import json, statistics, sys

def p95s(path, impl):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    return [r["result"]["short"]["p95"] for r in rows if r["kind"] == "warm" and r["impl"] == impl]

ours, theirs = p95s(sys.argv[1], "akidb"), p95s(sys.argv[2], "python")
if ours and theirs:
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"\nq8 against Python fp32, short P95: {a:.2f} / {b:.2f} ms = {a / b:.2f}× "
          f"(per round: {', '.join(f'{x / y:.2f}' for x, y in zip(ours, theirs))})")
PY
fi
kill "$sampler" 2>/dev/null || true
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg); 1-min load during the run (every 5 s): $(sort -n "$out/load.txt" | awk '{a[NR]=$1; s+=$1} END {if (NR) printf "median %.2f, max %.2f over %d samples", a[int((NR+1)/2)], a[NR], NR}')"
