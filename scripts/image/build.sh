#!/usr/bin/env bash
# The image's build stage (Dockerfile `build`): builds akidb-rest in release, with the
# lock file, and installs the executable as DEST/akidb-rest.
#   bash scripts/image/build.sh DEST
# CI runs it inside the image build (scripts/image-check.sh, scripts/image/build-image.sh).
set -euo pipefail
dest="${1:?usage: build.sh DEST}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cargo build --release --locked -p akidb-rest --bin akidb-rest
install -D -m 0755 "${CARGO_TARGET_DIR:-target}/release/akidb-rest" "$dest/akidb-rest"
echo "image/build: $dest/akidb-rest"
