#!/usr/bin/env bash
# Rolling restart under load, with no failed request (run by scripts/test.sh, so by CI):
#
#   - starts RR_REPLICAS (3) akidb-rest replicas on loopback ports, all-MiniLM-L6-v2, one
#     intra-op thread each, AKIDB_DRAIN_DELAY_MS=RR_DRAIN_MS (3000);
#   - puts nginx (the Debian package; installed with apt-get when missing, which needs root)
#     in front with its own upstream retry settings (deploy/nginx/akidb.conf.template:
#     `proxy_next_upstream error timeout http_502 http_503 non_idempotent`, `max_fails`,
#     upstream keep-alive shorter than the drain delay);
#   - drives nginx with the project's soak client (crates/akidb-rest/examples/soak_client.rs:
#     its light mix: good requests of 1-8 texts on both routes, probes, bad requests each with
#     its status);
#   - restarts every replica in turn, RR_ROUNDS (2) times, with SIGTERM, waiting for it to
#     exit and for the new process's /health to answer 200 before the next;
#   - prints each restart's drain sequence (from the replica's log), what nginx retried, and
#     as its last line `N requests, F failed, M mismatched`. Fails unless F = 0 and M = 0,
#     and unless nginx never saw a replica close a connection it had written a request into.
#
# The replicas run the executable the image ships (built by scripts/image/build.sh: release,
# without the dev-dependencies' features), or with RR_CONTAINERS=1 (as CI runs it) the image
# itself: each replica a podman container of scripts/image/build-image.sh's image (cached
# layers when scripts/image-check.sh has just built it) on the host's network, bound to its
# loopback port, read-only root, every capability dropped, the model folder mounted
# read-only; each restart is then `podman stop` (SIGTERM, the drain, exit status 0 checked)
# and a new container. The soak client is a debug build (the test suite has built it
# already; it needs no speed here).
# Settings: RR_REPLICAS, RR_ROUNDS, RR_CLIENTS (6), RR_DRAIN_MS, RR_MODEL (default the MiniLM
# scripts/setup.sh installs), RR_OUT (target/rolling-restart), RR_CONTAINERS (0), AKIDB_IMAGE
# (localhost/akidb-rest:check).
# Takes about 1.5 minutes after the build on 2 cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

replicas="${RR_REPLICAS:-3}"
rounds="${RR_ROUNDS:-2}"
clients="${RR_CLIENTS:-6}"
drain_ms="${RR_DRAIN_MS:-3000}"
model="${RR_MODEL:-.akidb/models/all-MiniLM-L6-v2}"
out="${RR_OUT:-target/rolling-restart}"
containers="${RR_CONTAINERS:-0}"
# nginx drops an idle upstream connection after this long: shorter than the drain delay, so
# every connection nginx keeps to a draining replica is either used (and closed by the
# replica's `Connection: close` answer) or dropped by nginx before the replica's listener
# closes; and shorter than AKIDB_CLIENT_TIMEOUT_MS (10 s) for the same reason in steady state.
keepalive_timeout_s=$(( drain_ms / 1000 > 1 ? drain_ms / 1000 - 1 : 1 ))
fail_timeout_s=2

say() { echo "rolling-restart: $*" >&2; }
die() { say "$*"; exit 1; }

[ -e "$model" ] || die "$model is missing; run scripts/setup.sh first"

nginx_bin="$(command -v nginx || true)"
[ -z "$nginx_bin" ] && [ -x /usr/sbin/nginx ] && nginx_bin=/usr/sbin/nginx
if [ -z "$nginx_bin" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    die "nginx is not installed and installing it needs root (apt-get install -y nginx); run as root or install nginx first"
  fi
  say "installing nginx (apt-get)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
  nginx_bin=/usr/sbin/nginx
fi
[ -x "$nginx_bin" ] || die "nginx is still missing after apt-get install"

rm -rf "$out"
mkdir -p "$out/nginx/tmp"
case "$containers" in
  0)
    say "building akidb-rest as the image does (release) and the soak client (debug)"
    bash scripts/image/build.sh "$out/bin" >/dev/null
    server_bin="$out/bin/akidb-rest"
    ;;
  1)
    source scripts/lib/podman.sh
    say "building the image ($AKIDB_IMAGE) and the soak client (debug)"
    bash scripts/image/build-image.sh "$AKIDB_IMAGE"
    podman_setup || die "podman could not be set up"
    model_dir="$(cd "$model" && pwd)"
    container_model="/models/$(basename "$model_dir")"
    ;;
  *) die "RR_CONTAINERS must be 0 or 1, not '$containers'" ;;
esac
cargo build --quiet --locked -p akidb-rest --example soak_client
client_bin="${CARGO_TARGET_DIR:-target}/debug/examples/soak_client"

chmod -R a+rwx "$out/nginx/tmp"   # nginx workers may run as another user when started as root
out="$(cd "$out" && pwd)"

# Free loopback ports: nginx's and one per replica.
mapfile -t ports < <(python3 - "$((replicas + 1))" <<'PY'
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
    print(s.getsockname()[1])
PY
)
front_port="${ports[0]}"
replica_ports=("${ports[@]:1}")

pids=()
nginx_pid=""
client_pid=""
cleanup() {
  [ -n "$client_pid" ] && kill "$client_pid" 2>/dev/null || true
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  if [ "$containers" = 1 ]; then
    for index in $(seq 0 $((replicas - 1))); do podman rm -f -t 0 "akidb-rr-$index" >/dev/null 2>&1 || true; done
  fi
  [ -n "$nginx_pid" ] && kill -QUIT "$nginx_pid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

start_replica() {
  local index="$1" port="${replica_ports[$1]}"
  echo "=== start $(date -u +%H:%M:%S.%N)" >>"$out/replica-$index.log"
  if [ "$containers" = 1 ]; then
    # The host's network so nginx reaches it on loopback, as it reaches a process; its log is
    # appended when it has stopped (stop_replica).
    podman run -d --name "akidb-rr-$index" --network host --read-only --cap-drop ALL \
      --security-opt no-new-privileges --stop-timeout 40 \
      -v "$model_dir:$container_model:ro" \
      -e AKIDB_BIND="127.0.0.1:$port" -e AKIDB_EMBEDDING_MODEL="$container_model" \
      -e AKIDB_THREADS=1 -e AKIDB_DRAIN_DELAY_MS="$drain_ms" -e RUST_LOG=info -e NO_COLOR=1 \
      "$AKIDB_IMAGE" >/dev/null || die "podman run of replica $index failed"
    return
  fi
  env -u AKIDB_API_KEY AKIDB_BIND="127.0.0.1:$port" AKIDB_EMBEDDING_MODEL="$model" \
    AKIDB_THREADS=1 AKIDB_DRAIN_DELAY_MS="$drain_ms" RUST_LOG=info NO_COLOR=1 \
    "$server_bin" 2>>"$out/replica-$index.log" &
  pids[index]=$!
}

# alive INDEX: whether replica INDEX's process (or container) still runs.
alive() {
  if [ "$containers" = 1 ]; then
    [ "$(podman inspect -f '{{.State.Running}}' "akidb-rr-$1" 2>/dev/null)" = true ]
  else
    kill -0 "${pids[$1]}" 2>/dev/null
  fi
}

# stop_replica INDEX: SIGTERM (`podman stop` for a container), then waits for the exit and
# fails unless its status is 0.
stop_replica() {
  local index="$1" status
  if [ "$containers" = 1 ]; then
    podman stop -t 40 "akidb-rr-$index" >/dev/null || die "podman stop of replica $index failed"
    status="$(podman inspect -f '{{.State.ExitCode}}' "akidb-rr-$index")"
    podman logs "akidb-rr-$index" >>"$out/replica-$index.log" 2>&1
    podman rm "akidb-rr-$index" >/dev/null
    [ "$status" = 0 ] || die "replica $index exited with status $status after podman stop"
  else
    kill -TERM "${pids[$index]}"
    wait "${pids[$index]}" || die "replica $index exited with status $? after SIGTERM"
  fi
}

wait_ready() {
  local index="$1" port="${replica_ports[$1]}"
  for _ in $(seq 1 600); do
    if curl -sf -o /dev/null "http://127.0.0.1:$port/health"; then return 0; fi
    alive "$index" || die "replica $index ended at start: $(tail -5 "$out/replica-$index.log"; [ "$containers" = 1 ] && podman logs "akidb-rr-$index" 2>&1 | tail -5)"
    sleep 0.1
  done
  die "replica $index not ready after 60 s"
}

if [ "$containers" = 1 ]; then
  # Containers an interrupted earlier run may have left under the same names.
  for index in $(seq 0 $((replicas - 1))); do podman rm -f -t 0 "akidb-rr-$index" >/dev/null 2>&1 || true; done
fi
for index in $(seq 0 $((replicas - 1))); do start_replica "$index"; done
for index in $(seq 0 $((replicas - 1))); do wait_ready "$index"; done
say "${replicas} replicas ready on ports ${replica_ports[*]}$([ "$containers" = 1 ] && echo " (containers of $AKIDB_IMAGE)")"

upstream_servers=""
for port in "${replica_ports[@]}"; do
  upstream_servers+="    server 127.0.0.1:$port max_fails=1 fail_timeout=${fail_timeout_s}s;"$'\n'
done
python3 - "$out/nginx/nginx.conf" <<PY
import sys
template = open("deploy/nginx/akidb.conf.template").read()
values = {
    "OUT": "$out/nginx",
    "LISTEN": "127.0.0.1:$front_port",
    "UPSTREAM_SERVERS": """$upstream_servers""".rstrip(),
    "KEEPALIVE_TIMEOUT": "${keepalive_timeout_s}s",
}
for key, value in values.items():
    template = template.replace("@" + key + "@", value)
open(sys.argv[1], "w").write(template)
PY
"$nginx_bin" -t -q -p "$out/nginx" -c "$out/nginx/nginx.conf" -g 'daemon off;' \
  || die "nginx refused the configuration $out/nginx/nginx.conf"
"$nginx_bin" -p "$out/nginx" -c "$out/nginx/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
for _ in $(seq 1 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$front_port/health" && break
  sleep 0.1
done
curl -sf -o /dev/null "http://127.0.0.1:$front_port/health" || die "nginx does not answer: $(cat "$out/nginx/error.log")"
say "nginx on 127.0.0.1:$front_port (upstream keepalive_timeout ${keepalive_timeout_s}s, drain ${drain_ms} ms)"

"$client_bin" --url "http://127.0.0.1:$front_port" --seconds 600 --warmup-seconds 0 \
  --clients "$clients" --light --stop-file "$out/stop" --json "$out/summary.json" \
  >"$out/client.out" 2>"$out/client.log" &
client_pid=$!
sleep 5

started=$(date +%s)
for round in $(seq 1 "$rounds"); do
  for index in $(seq 0 $((replicas - 1))); do
    signalled=$(date +%s.%N)
    echo "${replica_ports[$index]} $signalled" >>"$out/signals"
    stop_replica "$index"
    exited=$(date +%s.%N)
    start_replica "$index"
    wait_ready "$index"
    ready=$(date +%s.%N)
    say "round $round, replica $index: exited $(python3 -c "print(f'{$exited - $signalled:.2f}')") s after $([ "$containers" = 1 ] && echo "podman stop" || echo SIGTERM), ready again $(python3 -c "print(f'{$ready - $exited:.2f}')") s later"
    # Let nginx take the replica back (fail_timeout) before the next one goes.
    sleep $((fail_timeout_s + 1))
  done
done
say "restarts done in $(( $(date +%s) - started )) s; load continues 3 s"
sleep 3
touch "$out/stop"
client_status=0
wait "$client_pid" || client_status=$?
client_pid=""

say "drain sequences (from the replicas' logs, ms after the signal):"
python3 - "$out" "$replicas" <<'PY' >&2
import glob, os, re, sys
from datetime import datetime
out, replicas = sys.argv[1], int(sys.argv[2])
steps = [("shutting down: draining", "503"), ("drain delay over", "listener closed"),
         ("no longer accepting connections", "open="), ("every connection closed", "all closed")]
stamp = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+)Z")
for index in range(replicas):
    text = open(os.path.join(out, f"replica-{index}.log")).read()
    for run in text.split("=== start ")[1:]:
        times = {}
        for line in run.splitlines():
            m = stamp.match(line)
            if not m:
                continue
            when = datetime.fromisoformat(m.group(1)[:26])
            for key, _ in steps:
                if key in line and key not in times:
                    times[key] = (when, line)
        if "shutting down: draining" not in times:
            continue
        t0 = times["shutting down: draining"][0]
        parts = []
        for key, label in steps:
            if key in times:
                ms = (times[key][0] - t0).total_seconds() * 1000
                extra = ""
                if key == "no longer accepting connections":
                    m = re.search(r"open=(\d+)", times[key][1])
                    extra = f" ({m.group(1)} open)" if m else ""
                parts.append(f"{key} +{ms:.0f}{extra}")
        print(f"  replica {index}: " + ", ".join(parts))
PY

access="$out/nginx/access.log"
# Requests nginx completed on a replica between its SIGTERM and the end of its drain delay:
# the drain was crossed under load, not avoided.
during_drain=$(python3 - "$access" "$out/signals" "$drain_ms" <<'PY'
import re, sys
access, signals, drain_ms = sys.argv[1], sys.argv[2], int(sys.argv[3])
windows = [(port, float(t), float(t) + drain_ms / 1000) for port, t in (l.split() for l in open(signals))]
count = 0
for line in open(access):
    m = re.match(r"([\d.]+) (\d+) ([\d.]+) .* upstream=(\S+?:(\d+))(?: |$)", line)
    if not m:
        continue
    done, took, port = float(m.group(1)), float(m.group(3)), m.group(5)
    if any(port == p and start <= done - took and done <= end for p, start, end in windows):
        count += 1
print(count)
PY
)
retried=$(grep -c 'upstream=[^ ]*, ' "$access" || true)
retried_503=$(grep -c 'ustatus=503, ' "$access" || true)
refused=$(grep -c 'connect() failed (111' "$out/nginx/error.log" || true)
# A request written into a connection the replica was closing shows as one of these, on the
# upstream side (nginx retried it thanks to non_idempotent, so only its log tells).
closing=$(grep -E 'prematurely closed|reset by peer|Broken pipe|broken pipe' "$out/nginx/error.log" | grep -c 'upstream' || true)
say "nginx: $(wc -l <"$access") requests proxied, $during_drain of them sent to and answered by a replica during its drain, $retried retried on another replica ($retried_503 after a 503 from a replica still loading, $refused connection attempts refused by a closed listener), $closing closed under a request"
say "client: $(tail -1 "$out/client.log")"
[ -f "$out/summary.json" ] || die "the soak client wrote no summary (status $client_status): $(tail -5 "$out/client.log")"

line=$(python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print(f\"{s['requests']} requests, {s['failed']} failed, {s['mismatched']} mismatched\")" "$out/summary.json")
status=0
if [ "$closing" -ne 0 ]; then
  say "FAILED: nginx saw a replica close a connection with a request on it ($out/nginx/error.log)"
  status=1
fi
if [ "$client_status" -ne 0 ]; then
  say "FAILED: unexpected answers; see $out/summary.json and $out/client.log"
  status=1
fi
echo "$line"
exit "$status"
