#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for a bounded time each (not part of every CI run).
#
#   bash scripts/fuzz.sh                 # every target, 60 s each
#   FUZZ_SECONDS=600 bash scripts/fuzz.sh tokenize
#
# Settings: FUZZ_SECONDS (per target, default 60), FUZZ_SANITIZER (address | none, default
# address), FUZZ_MAX_LEN (largest input in bytes, default 8192).
#
# cargo-fuzz needs nightly-only -Z flags; on the pinned stable toolchain RUSTC_BOOTSTRAP=1
# lets it pass them. The corpus each run finds stays in fuzz/corpus/<target> (ignored by
# git); the committed seeds in fuzz/seeds/<target> are read as well. A crash leaves its input
# in fuzz/artifacts/<target>/ and makes this script fail; re-run one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>
# The tokenize target needs the MiniLM files (scripts/setup.sh) and ../shared.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-address}"
max_len="${FUZZ_MAX_LEN:-8192}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

for target in "${targets[@]}"; do
  echo "fuzz: building $target (sanitizer: $sanitizer)" >&2
  cargo fuzz build --sanitizer "$sanitizer" "$target"
done

summary=()
status=0
for target in "${targets[@]}"; do
  corpus="$PWD/fuzz/corpus/$target"
  seeds="$PWD/fuzz/seeds/$target"
  mkdir -p "$corpus" "$seeds"
  log="fuzz/artifacts/$target.log"
  mkdir -p "fuzz/artifacts/$target"
  echo "fuzz: $target for ${seconds}s" >&2
  set +e
  cargo fuzz run --sanitizer "$sanitizer" "$target" "$corpus" "$seeds" -- \
    -max_total_time="$seconds" -max_len="$max_len" -print_final_stats=1 -timeout=30 \
    -rss_limit_mb=4096 >"$log" 2>&1
  code=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{s += $2} END {print s + 0}')
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | awk '{s += $2} END {print s + 0}')
  files=$(find "$corpus" -type f | wc -l)
  if [ "$code" -eq 0 ]; then
    result="no crash"
  else
    result="FAILED (exit $code): see $log and fuzz/artifacts/$target/"
    status=1
    grep -E 'panicked|ERROR: libFuzzer|SUMMARY' "$log" | head -5 >&2 || true
  fi
  summary+=("$target: ${execs} executions (${rate}/s), corpus ${files} files, $result")
done

echo
echo "fuzz summary (${seconds}s per target, sanitizer $sanitizer):"
printf '  %s\n' "${summary[@]}"
exit "$status"
