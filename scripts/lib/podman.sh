# shellcheck shell=bash
# Shared by scripts/image-check.sh, scripts/image/{bases,build-image}.sh,
# scripts/rolling-restart.sh and deploy/measure.sh (sourced, not run): podman as the
# project's machines can run it.
#
# podman_setup: installs podman, runc and debootstrap with apt-get when one is missing (needs
# root, as every container here runs as root), and points podman at
# scripts/image/containers.conf (runc, ulimits the host allows) through CONTAINERS_CONF, so
# the machine's own /etc/containers stays as it is.

podman_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# The images the project makes and runs; bases are made offline by scripts/image/bases.sh.
AKIDB_DEBIAN_IMAGE="${AKIDB_DEBIAN_IMAGE:-localhost/debian:bookworm-slim}"
AKIDB_RUST_IMAGE="${AKIDB_RUST_IMAGE:-localhost/akidb-rust:1.95.0-bookworm}"
AKIDB_PYTHON_IMAGE="${AKIDB_PYTHON_IMAGE:-localhost/akidb-python:3.11-bookworm}"
AKIDB_IMAGE="${AKIDB_IMAGE:-localhost/akidb-rest:check}"

podman_setup() {
  local missing=() tool
  for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "podman: ${missing[*]} missing and installing needs root (apt-get install ${missing[*]})" >&2
      return 1
    fi
    echo "podman: installing ${missing[*]} (apt-get)" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  export CONTAINERS_CONF="$podman_root/scripts/image/containers.conf"
}

# podman_image_exists NAME: whether the local store has the image NAME.
podman_image_exists() {
  podman image exists "$1"
}
