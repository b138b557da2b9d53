# Sourced by the benchmark scripts (compare.sh, load_rest.sh), first thing after `set -euo pipefail`.
#
# NICE (e.g. -10): raise the benchmark's priority so builds sharing the machine disturb it less.
# The kernel groups processes by session (autogroup), so a plain `nice` only competes with this
# session's own processes: re-run the calling script in a new session and set that session's
# group priority (root), or fall back to renice where there is no autogroup.
if [[ -n "${NICE:-}" && "${AKIDB_BENCH_SESSION:-}" != 1 ]] && command -v setsid >/dev/null; then
  exec env AKIDB_BENCH_SESSION=1 setsid -w bash "$0" "$@"
fi
if [[ -n "${NICE:-}" ]]; then
  echo "$NICE" >/proc/self/autogroup 2>/dev/null || true
  renice -n "$NICE" -p $$ >/dev/null 2>&1 || true
fi
