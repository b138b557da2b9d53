#!/usr/bin/env bash
# Builds the image with podman and runs it (run by scripts/test.sh, so by CI):
#
#   1. scripts/image/build-image.sh: the three bases made offline when missing
#      (scripts/image/bases.sh: debootstrap, podman import; podman, runc and debootstrap
#      installed with apt-get when missing), then `podman build` of the Dockerfile;
#   2. the image as built: its user is numeric and not root, its size, and none of the
#      build-time mounts (the host's CA bundle, cargo's registry, the target folder) in it;
#   3. one container as a cluster would run it: its own network namespace with only loopback
#      (the image's own AKIDB_BIND=0.0.0.0:8080, reached with nsenter), read-only root file
#      system, every capability dropped, no-new-privileges, the model folder of
#      scripts/setup.sh mounted read-only at /models, an API key and the key-less metrics
#      port (AKIDB_METRICS_BIND) as deploy/kubernetes sets them. Checks the process's uid and
#      capabilities, every vector of ../shared/reference/all-minilm-l6-v2-int8.ort.json (the
#      library's own vectors, which the test suite reproduces) through the container with
#      cosine >= 0.9999, /metrics without a key on the metrics port only, then `podman stop`:
#      /health answers 503 during AKIDB_DRAIN_DELAY_MS and the container exits 0;
#   4. deploy/compose.yaml with podman-compose (the version scripts/requirements-test.txt
#      pins, installed with pip when missing): up with the image just built, one embedding
#      from the baked model, down.
#
# Last line: `image ok: user <uid>, <N> MB, vector <dim>, drain exit 0`.
# Needs root. The build is cold on a clean clone (bases about 3 minutes, then the release
# build); AKIDB_IMAGE_CACHE (target/image-cache) keeps cargo's registry and target folder for
# the next build. Settings: AKIDB_IMAGE (localhost/akidb-rest:check), IMAGE_CHECK_DRAIN_MS
# (2000).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib/podman.sh

say() { echo "image-check: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (podman, debootstrap, nsenter); CI runs as root"
reference=../shared/reference/all-minilm-l6-v2-int8.ort.json
sentences=../shared/reference/sentences.json
[ -f "$reference" ] && [ -f "$sentences" ] || die "$reference or $sentences is missing (../shared beside the repository)"
bash scripts/setup.sh >/dev/null
models="$(pwd)/.akidb/models"
[ -f "$models/all-MiniLM-L6-v2/model.onnx" ] || die "scripts/setup.sh left no all-MiniLM-L6-v2 in $models"

work=target/image-check
rm -rf "$work"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
drain_ms="${IMAGE_CHECK_DRAIN_MS:-2000}"
container=akidb-image-check
compose_project=akidb-image-check-compose

cleanup() {
  podman rm -f -t 0 "$container" >/dev/null 2>&1 || true
  podman ps -a -q --filter "label=io.podman.compose.project=$compose_project" \
    | xargs -r podman rm -f -t 0 >/dev/null 2>&1 || true
  if [ -n "${compose_port:-}" ]; then
    AKIDB_API_KEY=x AKIDB_BIND="127.0.0.1:$compose_port" \
      python3 -m podman_compose -p "$compose_project" -f deploy/compose.yaml down >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
podman_setup || die "podman could not be set up"
cleanup   # what an interrupted earlier run may have left (same names)

# 1. Build.
started=$(date +%s)
bash scripts/image/build-image.sh "$AKIDB_IMAGE"
build_s=$(( $(date +%s) - started ))

# 2. The image as built.
user="$(podman image inspect -f '{{.Config.User}}' "$AKIDB_IMAGE")"
uid="${user%%:*}"
[[ "$uid" =~ ^[0-9]+$ ]] && [ "$uid" -ne 0 ] || die "the image's USER is '$user': Kubernetes' runAsNonRoot needs a numeric, non-root one"
size_mb=$(( $(podman image inspect -f '{{.Size}}' "$AKIDB_IMAGE") / 1000000 ))
# Build-time mounts leave nothing behind: no CA bundle (the runtime base has none of its own),
# no cargo registry, no sources or target folder.
leftovers="$(podman run --rm --network none --entrypoint /bin/sh "$AKIDB_IMAGE" -c \
  'for p in /etc/ssl/certs/ca-certificates.crt /usr/local/cargo /src; do [ ! -e "$p" ] || echo "$p"; done')"
[ -z "$leftovers" ] || die "build-time files left in the image: $leftovers"
say "image $AKIDB_IMAGE: user $user, $size_mb MB, no build-time mount left in it (build $build_s s)"

# 3. One container, as a cluster runs it.
api_key="image-check-$$"
podman run -d --name "$container" --network none --read-only --cap-drop ALL \
  --security-opt no-new-privileges --stop-timeout 40 \
  -v "$models:/models:ro" \
  -e AKIDB_EMBEDDING_MODEL=/models/all-MiniLM-L6-v2 -e AKIDB_THREADS=1 \
  -e AKIDB_API_KEY="$api_key" -e AKIDB_METRICS_BIND=0.0.0.0:9000 \
  -e AKIDB_DRAIN_DELAY_MS="$drain_ms" -e NO_COLOR=1 \
  "$AKIDB_IMAGE" >/dev/null || die "podman run failed"
pid="$(podman inspect -f '{{.State.Pid}}' "$container")"
[ "$pid" -gt 0 ] || die "the container has no process: $(podman logs "$container" 2>&1 | tail -5)"
# curl from the host's file system inside the container's network namespace.
in_container() { nsenter --target "$pid" --net -- "$@"; }
for _ in $(seq 1 300); do
  in_container curl -sf -o /dev/null http://127.0.0.1:8080/health && break
  [ "$(podman inspect -f '{{.State.Running}}' "$container")" = true ] \
    || die "the container ended at start: $(podman logs "$container" 2>&1 | tail -5)"
  sleep 0.1
done
in_container curl -sf -o /dev/null http://127.0.0.1:8080/health \
  || die "no /health 200 after 30 s: $(podman logs "$container" 2>&1 | tail -5)"

running_uid="$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")"
[ "$running_uid" = "$uid" ] || die "the service runs as uid $running_uid, the image says $uid"
caps="$(awk '/^Cap(Prm|Eff|Bnd|Amb):/ {printf "%s=%s ", $1, $2}' "/proc/$pid/status")"
[ -z "$(awk '/^Cap(Prm|Eff|Bnd|Amb):/ && $2 != "0000000000000000"' "/proc/$pid/status")" ] \
  || die "the service holds capabilities: $caps"
grep -q '^NoNewPrivs:[[:space:]]*1' "/proc/$pid/status" || die "no-new-privileges is not set"
say "serving as uid $running_uid, capabilities $caps"

# Every reference sentence in one request, with the key.
python3 -c 'import json,sys; print(json.dumps({"inputs": [s["text"] for s in json.load(open(sys.argv[1]))]}))' \
  "$sentences" >"$work/request.json"
in_container curl -sf -o "$work/answer.json" http://127.0.0.1:8080/api/v1/embed \
  -H "Authorization: Bearer $api_key" -H 'Content-Type: application/json' -d @"$work/request.json" \
  || die "the embedding request failed: $(podman logs "$container" 2>&1 | tail -5)"
dimension="$(python3 - "$sentences" "$reference" "$work/answer.json" <<'PY'
import json, math, sys
sentences, reference, answer = (json.load(open(p)) for p in sys.argv[1:4])
vectors = answer["embeddings"] if "embeddings" in answer else [d["embedding"] for d in answer["data"]]
assert len(vectors) == len(sentences), (len(vectors), len(sentences))
worst = 1.0
for sentence, vector in zip(sentences, vectors):
    expected = reference["items"][sentence["id"]]["embedding"]
    assert len(vector) == len(expected), (sentence["id"], len(vector), len(expected))
    dot = sum(a * b for a, b in zip(vector, expected))
    cosine = dot / (math.sqrt(sum(a * a for a in vector)) * math.sqrt(sum(b * b for b in expected)))
    worst = min(worst, cosine)
    assert cosine >= 0.9999, f"{sentence['id']}: cosine {cosine} through the container"
print(f"worst cosine {worst:.6f} over {len(vectors)} texts", file=sys.stderr)
print(len(vectors[0]))
PY
)" || die "the container's vectors differ from the library's ($work/answer.json)"
say "$dimension-dimension vectors equal the library's reference"

metrics_status="$(in_container curl -s -o "$work/metrics.txt" -w '%{http_code}' http://127.0.0.1:9000/metrics)"
[ "$metrics_status" = 200 ] && grep -q '^akidb_' "$work/metrics.txt" \
  || die "the metrics port answered $metrics_status without a key"
main_metrics="$(in_container curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/metrics)"
[ "$main_metrics" = 401 ] || die "/metrics on the API port answered $main_metrics without the key, not 401"
say "metrics port 9000 scraped without a key; the API port's /metrics needs it (401)"

# podman stop: SIGTERM (the image's STOPSIGNAL), the drain, exit 0.
podman stop -t 40 "$container" >/dev/null 2>"$work/stop.err" &
stop_pid=$!
draining=0
# Probe until the container is gone (the namespace goes with it) or the drain delay is over.
for _ in $(seq 1 $(( drain_ms / 50 ))); do
  kill -0 "$stop_pid" 2>/dev/null && [ -e "/proc/$pid/ns/net" ] || break
  status="$(in_container curl -s -o /dev/null -w '%{http_code}' --max-time 1 http://127.0.0.1:8080/health 2>/dev/null || true)"
  if [ "$status" = 503 ]; then draining=$((draining + 1)); fi
  sleep 0.05
done
wait "$stop_pid" || die "podman stop failed: $(cat "$work/stop.err")"
exit_code="$(podman inspect -f '{{.State.ExitCode}}' "$container")"
podman logs "$container" >"$work/service.log" 2>&1
[ "$draining" -gt 0 ] || die "/health never answered 503 during the drain ($work/service.log)"
grep -q 'shutting down: draining' "$work/service.log" || die "no drain in the log ($work/service.log)"
[ "$exit_code" = 0 ] || die "the container exited $exit_code after podman stop ($work/service.log)"
say "podman stop: /health 503 during the drain ($draining probes), exit $exit_code"
podman rm "$container" >/dev/null

# 4. deploy/compose.yaml with podman-compose, the image just built, the baked model.
pinned_compose="$(grep -E '^podman-compose==' scripts/requirements-test.txt)" || die "no podman-compose pin in scripts/requirements-test.txt"
if ! python3 -c 'import podman_compose, sys; sys.exit(podman_compose.__version__ != sys.argv[1])' "${pinned_compose#*==}" 2>/dev/null; then
  say "installing $pinned_compose (pip)"
  python3 -m pip install --quiet --disable-pip-version-check "$pinned_compose" || die "pip install $pinned_compose failed"
fi
compose() { python3 -m podman_compose -p "$compose_project" -f deploy/compose.yaml "$@"; }
compose_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
compose_key="compose-$$"
export AKIDB_API_KEY="$compose_key" AKIDB_BIND="127.0.0.1:$compose_port" AKIDB_IMAGE
compose up -d >"$work/compose-up.log" 2>&1 \
  || die "podman-compose up failed: $(tail -5 "$work/compose-up.log")"
for _ in $(seq 1 300); do
  curl -sf -o /dev/null "http://127.0.0.1:$compose_port/health" && break
  sleep 0.1
done
compose_dim="$(curl -sf "http://127.0.0.1:$compose_port/api/v1/embed" -H "Authorization: Bearer $compose_key" \
  -H 'Content-Type: application/json' -d '{"inputs": ["Where is the train station?"]}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["dimension"])')" \
  || die "no embedding from the compose service: $(tail -5 "$work/compose-up.log"; compose logs 2>&1 | tail -5)"
compose down >"$work/compose-down.log" 2>&1 \
  || die "podman-compose down failed: $(tail -5 "$work/compose-down.log")"
left="$(podman ps -a --filter "label=io.podman.compose.project=$compose_project" -q)"
[ -z "$left" ] || die "podman-compose down left containers: $left"
compose_port=""
unset AKIDB_API_KEY AKIDB_BIND
say "compose: up, one $compose_dim-dimension embedding from the baked model, down"

say "checked in $(( $(date +%s) - started )) s (build $build_s s)"
echo "image ok: user $uid, $size_mb MB, vector $dimension, drain exit $exit_code"
