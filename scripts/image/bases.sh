#!/usr/bin/env bash
# Makes the Dockerfile's three base images without an image registry (none is reachable from
# the project's machines), each only when podman's store lacks it:
#
#   localhost/debian:bookworm-slim       debootstrap --variant=minbase bookworm from Debian's
#                                        archive (the mirror apt uses here), trimmed like the
#                                        official slim image (no docs, man pages, locales),
#                                        imported with `podman import` (RUNTIME_IMAGE)
#   localhost/akidb-rust:1.95.0-bookworm that + gcc/g++ + the machine's own pinned toolchain
#                                        (scripts/image/bases/rust.Containerfile, RUST_IMAGE)
#   localhost/akidb-python:3.11-bookworm that + Debian's python3 and pip
#                                        (scripts/image/bases/python.Containerfile, PYTHON_IMAGE)
#
#   bash scripts/image/bases.sh          # AKIDB_REBUILD_BASES=1 remakes all three
# Needs root; installs podman, runc and debootstrap with apt-get when missing. The first run
# takes about 3 minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source scripts/lib/podman.sh

say() { echo "image/bases: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, podman); CI runs as root"
podman_setup || die "podman could not be set up"

if [ "${AKIDB_REBUILD_BASES:-0}" = 1 ]; then
  podman rmi -f "$AKIDB_RUST_IMAGE" "$AKIDB_PYTHON_IMAGE" "$AKIDB_DEBIAN_IMAGE" >/dev/null 2>&1 || true
fi

# The Debian mirror apt already uses on this machine (deb822 or one-line sources).
debian_mirror() {
  local uri
  uri="$(grep -hE '^URIs: .*/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | awk '{print $2}')"
  [ -n "$uri" ] || uri="$(grep -hE '^deb (\[[^]]*\] )?[a-z]+://[^ ]*/debian/? bookworm ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | head -1 | sed -E 's/^deb (\[[^]]*\] )?//' | awk '{print $1}')"
  [ -n "$uri" ] || return 1
  echo "${uri%/}"
}

# Every RUN of the base images' builds reaches apt (and only apt) through the host's network.
build_base() {
  local name="$1" file="$2"
  shift 2
  say "building $name ($file)"
  local log
  log="$(mktemp)"
  podman build --network host --build-arg DEBIAN_IMAGE="$AKIDB_DEBIAN_IMAGE" \
    -t "$name" -f "$file" "$@" scripts/image/bases >"$log" 2>&1 \
    || die "podman build of $name failed: $(tail -20 "$log")"
  rm -f "$log"
}

if ! podman_image_exists "$AKIDB_DEBIAN_IMAGE"; then
  mirror="$(debian_mirror)" || die "no Debian bookworm mirror found in /etc/apt/sources.list{,.d}"
  rootfs="$(mktemp -d /var/tmp/akidb-debootstrap.XXXXXX)"
  trap 'rm -rf "$rootfs"' EXIT
  say "debootstrap --variant=minbase bookworm from $mirror (about 3 minutes)"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || die "debootstrap failed: $(tail -5 "$rootfs.log")"
  rm -f "$rootfs.log"
  # What Debian's slim images leave out, and keep leaving out for later apt-get installs.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
DPKG
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  rm -rf "$rootfs"/usr/share/{man,info,locale,lintian}/* "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log
  tar -C "$rootfs" --numeric-owner -c . \
    | podman import --quiet --change 'CMD ["bash"]' - "$AKIDB_DEBIAN_IMAGE" >/dev/null \
    || die "podman import failed"
  rm -rf "$rootfs"
  trap - EXIT
fi

if ! podman_image_exists "$AKIDB_RUST_IMAGE"; then
  toolchain="$(rustc --print sysroot)" || die "no rustc: the pinned toolchain (rust-toolchain.toml) is needed"
  version="$(rustc --version | awk '{print $2}')"
  pinned="$(sed -nE 's/^channel = "([^"]+)"/\1/p' rust-toolchain.toml)"
  [ "$version" = "$pinned" ] || die "rustc here is $version, rust-toolchain.toml pins $pinned"
  build_base "$AKIDB_RUST_IMAGE" scripts/image/bases/rust.Containerfile -v "$toolchain:/toolchain:ro"
fi

if ! podman_image_exists "$AKIDB_PYTHON_IMAGE"; then
  build_base "$AKIDB_PYTHON_IMAGE" scripts/image/bases/python.Containerfile
fi

say "bases: $AKIDB_DEBIAN_IMAGE, $AKIDB_RUST_IMAGE, $AKIDB_PYTHON_IMAGE"
