#!/usr/bin/env bash
# Runs the Dockerfile's steps outside a container (no image can be built on the project's
# machines), then runs the result the way the image would (run by scripts/test.sh, so by CI):
#
#   1. checks that every RUN of the Dockerfile calls one of the scripts below, so this check
#      and the image cannot drift apart;
#   2. runs them into a scratch root (target/image-check/rootfs): scripts/image/build.sh
#      (release build), scripts/image/fetch.sh (ONNX Runtime and all-MiniLM-L6-v2 by the
#      pinned, checksummed steps of scripts/setup.sh), scripts/image/runtime.sh (model mount
#      point, shared-library check);
#   3. starts the executable as the image does: in its own mount and network namespaces
#      (unshare), with /opt/akidb bound from the scratch root, the Dockerfile's ENV exactly
#      (AKIDB_BIND=0.0.0.0:8080 included: the namespace has its own port 8080) and its
#      numeric USER (setpriv); checks /health, one embedding (384 dimensions, from the baked
#      model), the process's user, and a clean exit on SIGTERM.
#
# Needs root (unshare, mounts, switching user). Not run: pulling the base images and the
# COPY instructions themselves (see docs/deploy.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "image-check: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (unshare, mount, setpriv); CI runs as root"

# 1. The Dockerfile's RUN steps are exactly these scripts.
mapfile -t runs < <(grep -E '^RUN ' Dockerfile)
expected=(
  'RUN bash scripts/image/build.sh /out'
  'RUN bash scripts/image/fetch.sh /opt/akidb "${BAKE_MINILM}"'
  'RUN bash /tmp/runtime.sh / && rm /tmp/runtime.sh'
)
[ "${#runs[@]}" -eq "${#expected[@]}" ] || die "the Dockerfile has ${#runs[@]} RUN steps, this check knows ${#expected[@]}: ${runs[*]}"
for index in "${!expected[@]}"; do
  [ "${runs[$index]}" = "${expected[$index]}" ] || die "Dockerfile RUN $((index + 1)) is '${runs[$index]}', expected '${expected[$index]}'"
done
grep -q '^COPY scripts/image/runtime.sh /tmp/runtime.sh$' Dockerfile || die "runtime.sh is not what the runtime stage runs"
grep -q '^ARG BAKE_MINILM=1$' Dockerfile || die "BAKE_MINILM no longer defaults to 1"
say "the Dockerfile's ${#runs[@]} RUN steps are the scripts run here"

# 2. The steps, into a scratch root.
work="$(pwd)/target/image-check"
rootfs="$work/rootfs"
rm -rf "$work"
mkdir -p "$rootfs"
bash scripts/image/build.sh "$work/out"                      # build stage: /out
install -D -m 0755 "$work/out/akidb-rest" "$rootfs/usr/local/bin/akidb-rest"   # COPY --from=build
bash scripts/image/fetch.sh "$rootfs/opt/akidb" 1            # fetch stage: /opt/akidb
bash scripts/image/runtime.sh "$rootfs"                      # runtime stage, after the COPYs
[ "$(stat -c %u "$rootfs/models")" = 65532 ] || die "/models is not owned by the service's user"
[ ! -e "$rootfs/opt/akidb/downloads" ] || die "the downloaded wheels stayed in the image"

# The image's environment and user, read from the Dockerfile.
mapfile -t image_env < <(python3 - <<'PY'
import re, shlex
text = open("Dockerfile").read().replace("\\\n", " ")
for line in text.splitlines():
    if line.startswith("ENV "):
        for pair in shlex.split(line[4:]):
            print(pair)
PY
)
user="$(grep -E '^USER ' Dockerfile | awk '{print $2}')"
entrypoint="$(python3 -c 'import json,re; print(json.loads(re.search(r"^ENTRYPOINT (.*)$", open("Dockerfile").read(), re.M).group(1))[0])')"
[ "$user" = "65532:65532" ] || die "USER is '$user'"
printf '%s\n' "${image_env[@]}" | grep -qx 'AKIDB_BIND=0.0.0.0:8080' || die "the image does not bind 0.0.0.0:8080"
say "image environment: ${image_env[*]}; user $user; entrypoint $entrypoint"

# 3. Run it as the image would, in namespaces of its own.
log="$work/service.log"
export rootfs entrypoint user log
env_file="$work/env"
printf '%s\n' "${image_env[@]}" >"$env_file"
export env_file
unshare --mount --net --propagation private bash -euo pipefail -c '
  ip link set lo up
  mount -t tmpfs -o mode=0755 none /opt
  mkdir /opt/akidb
  mount --bind -o ro "$rootfs/opt/akidb" /opt/akidb
  mapfile -t settings <"$env_file"
  bin="$rootfs$entrypoint"
  env -i PATH=/usr/bin:/bin "${settings[@]}" \
    setpriv --reuid "${user%%:*}" --regid "${user##*:}" --clear-groups --no-new-privs \
    "$bin" 2>"$log" &
  pid=$!
  for _ in $(seq 1 300); do
    curl -sf -o /dev/null http://127.0.0.1:8080/health && break
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "image-check: the service ended at start" >&2; exit 1; }
    sleep 0.1
  done
  curl -sf http://127.0.0.1:8080/health >/dev/null || { cat "$log" >&2; exit 1; }
  uid="$(awk "/^Uid:/ {print \$2}" /proc/$pid/status)"
  [ "$uid" = "${user%%:*}" ] || { echo "image-check: the service runs as uid $uid" >&2; exit 1; }
  answer="$(curl -sf http://127.0.0.1:8080/api/v1/embed -H "Content-Type: application/json" \
    -d "{\"inputs\": [\"Where is the train station?\"]}")"
  python3 -c "import json,sys; a=json.loads(sys.argv[1]); assert a[\"dimension\"] == 384 and a[\"count\"] == 1, a" "$answer"
  models="$(curl -sf http://127.0.0.1:8080/api/v1/models)"
  kill -TERM "$pid"
  wait "$pid"
  echo "image-check: served as uid $uid on 0.0.0.0:8080: $models" >&2
'
grep -q "listening; loading models" "$log" || die "no start in the log: $log"
grep -q 'addr=0.0.0.0:8080' "$log" || die "the service did not bind 0.0.0.0:8080"
say "OK: built, fetched, assembled, served one embedding as the image's user, exited cleanly"
