#!/usr/bin/env bash
# Supply-chain checks of the workspace and of fuzz/ (not part of every CI run):
#   1. cargo deny check licenses bans sources  (policy: deny.toml; needs no network)
#   2. cargo deny check advisories             (needs the RustSec advisory database)
#   3. cargo audit                             (the same database)
# Installs cargo-deny and cargo-audit if missing (cargo install --locked).
#
# Exit status: 0 every check ran and passed; 1 a check found a problem; 2 the policy checks
# passed but the advisory database could not be fetched, so advisories were NOT checked
# (the script says so; a stale local copy is used when one exists, and named).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

for tool in cargo-deny cargo-audit; do
  if ! cargo "${tool#cargo-}" --version >/dev/null 2>&1; then
    echo "audit: installing $tool" >&2
    cargo install --locked "$tool" || { echo "audit: cannot install $tool" >&2; exit 1; }
  fi
done

manifests=(Cargo.toml)
[ -f fuzz/Cargo.lock ] && manifests+=(fuzz/Cargo.toml)
failed=0
unchecked=0
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

for manifest in "${manifests[@]}"; do
  echo "== cargo deny check licenses bans sources ($manifest)"
  if ! cargo deny --manifest-path "$manifest" --config deny.toml check licenses bans sources; then
    failed=1
  fi
done

db_unreachable() {
  grep -qiE "couldn.t fetch|failed to fetch|unable to fetch|could not resolve|talking to the server|network|timed out|resolve host|unable to access|error sending request" "$log"
}

for manifest in "${manifests[@]}"; do
  echo "== cargo deny check advisories ($manifest)"
  if cargo deny --manifest-path "$manifest" --config deny.toml check advisories 2>&1 | tee "$log"; then
    :
  elif db_unreachable; then
    echo "audit: the advisory database could not be fetched: advisories NOT checked by cargo deny" >&2
    if cargo deny --manifest-path "$manifest" --config deny.toml --offline check advisories >"$log" 2>&1; then
      echo "audit: a local copy of the database was found and passed (it may be stale)" >&2
    fi
    unchecked=1
  else
    failed=1
  fi
done

echo "== cargo audit"
for lock in Cargo.lock fuzz/Cargo.lock; do
  [ -f "$lock" ] || continue
  if cargo audit --file "$lock" 2>&1 | tee "$log"; then
    :
  elif db_unreachable; then
    echo "audit: the advisory database could not be fetched: cargo audit did NOT check $lock" >&2
    if [ -d "${CARGO_HOME:-$HOME/.cargo}/advisory-db" ]; then
      echo "audit: retrying with the local copy in ${CARGO_HOME:-$HOME/.cargo}/advisory-db (may be stale)" >&2
      cargo audit --no-fetch --stale --file "$lock" || failed=1
    fi
    unchecked=1
  else
    failed=1
  fi
done

if [ "$failed" -ne 0 ]; then
  echo "audit: FAILED (see above)" >&2
  exit 1
fi
if [ "$unchecked" -ne 0 ]; then
  echo "audit: licenses, bans and sources pass; advisories were NOT checked (database unreachable)" >&2
  exit 2
fi
echo "audit: all checks passed"
