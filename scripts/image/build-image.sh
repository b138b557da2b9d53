#!/usr/bin/env bash
# Builds the Dockerfile with podman on the project's machines, where no image registry is
# reachable: the three bases are made offline first (scripts/image/bases.sh, reused when
# present) and passed as RUST_IMAGE, PYTHON_IMAGE and RUNTIME_IMAGE.
#
#   bash scripts/image/build-image.sh [TAG]   # default localhost/akidb-rest:check
#
# Build-time only (podman build -v for the build and fetch stages; none of it is in the
# image, scripts/image-check.sh checks that):
#   - the host's network (--network host): RUN steps reach cargo's, pip's and apt's
#     registries as the host does;
#   - the host's CA bundle, read-only, at /etc/ssl/certs/ca-certificates.crt: HTTPS from the
#     RUN steps trusts what the host trusts;
#   - cargo's registry and the build's target folder from AKIDB_IMAGE_CACHE
#     (target/image-cache): a second build downloads no crate and recompiles only what
#     changed. A clean clone starts without them (a cold build).
# Prints the build's wall time. BAKE_MINILM (1) is passed on.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source scripts/lib/podman.sh

say() { echo "image/build-image: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }

tag="${1:-$AKIDB_IMAGE}"
cache="${AKIDB_IMAGE_CACHE:-target/image-cache}"
ca_bundle=/etc/ssl/certs/ca-certificates.crt

bash scripts/image/bases.sh
podman_setup || die "podman could not be set up"
[ -s "$ca_bundle" ] || die "no CA bundle at $ca_bundle (apt-get install ca-certificates)"
mkdir -p "$cache/cargo-registry" "$cache/target"
cache="$(cd "$cache" && pwd)"

# podman (buildah) leaves an empty mount point in the image for every -v of a RUN step, so
# the mounts are given only to builds of the stages that need them, and the image itself is
# built last without any: its build and fetch steps then come from the layer cache the two
# first builds filled (checked below), and its runtime step runs with nothing mounted.
common=(--network host --pull=never
  --build-arg RUST_IMAGE="$AKIDB_RUST_IMAGE"
  --build-arg PYTHON_IMAGE="$AKIDB_PYTHON_IMAGE"
  --build-arg RUNTIME_IMAGE="$AKIDB_DEBIAN_IMAGE"
  --build-arg BAKE_MINILM="${BAKE_MINILM:-1}"
  -f Dockerfile)
started=$(date +%s)
say "podman build --target build (bases $AKIDB_RUST_IMAGE, $AKIDB_PYTHON_IMAGE, $AKIDB_DEBIAN_IMAGE)"
podman build "${common[@]}" --target build \
  -v "$ca_bundle:$ca_bundle:ro" \
  -v "$cache/cargo-registry:/usr/local/cargo/registry" \
  -v "$cache/target:/src/target" \
  . >"$cache/build.log" 2>&1 \
  || die "podman build --target build failed: $(tail -20 "$cache/build.log")"
say "podman build --target fetch"
podman build "${common[@]}" --target fetch -v "$ca_bundle:$ca_bundle:ro" \
  . >"$cache/fetch.log" 2>&1 \
  || die "podman build --target fetch failed: $(tail -20 "$cache/fetch.log")"
say "podman build -t $tag"
podman build "${common[@]}" -t "$tag" . >"$cache/image.log" 2>&1 \
  || die "podman build of $tag failed: $(tail -20 "$cache/image.log")"
for step in 'RUN bash scripts/image/build.sh /out' 'RUN bash scripts/image/fetch.sh'; do
  grep -A1 -F "$step" "$cache/image.log" | grep -q -- '--> Using cache' \
    || die "the image's '$step' did not come from the cache of the stage builds ($cache/image.log)"
done
say "built $tag in $(( $(date +%s) - started )) s (logs: $cache/{build,fetch,image}.log)"
