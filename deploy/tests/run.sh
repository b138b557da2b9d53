#!/usr/bin/env bash
# Validates deploy/kubernetes (run by scripts/test.sh, so by CI):
#   1. every manifest, and every overlay's Deployment with its patch merged, against the
#      Kubernetes API schemas bundled in the pinned PyPI package kubernetes-validate
#      (scripts/requirements-test.txt; works offline), strictly (unknown fields refused), for
#      the oldest and the newest Kubernetes version the manifests support;
#   2. deploy/tests/check_manifests.py: probes, limits and drain timing against the
#      service's own defaults (`akidb-rest --help`).
#   bash deploy/tests/run.sh [path/to/akidb-rest]    # default: the debug build
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
binary="${1:-${CARGO_TARGET_DIR:-target}/debug/akidb-rest}"
[ -x "$binary" ] || cargo build --quiet --locked -p akidb-rest --bin akidb-rest
# The preStop `sleep` action is enabled by default from Kubernetes 1.30; 1.32 is the oldest
# schema the package bundles.
versions=(1.32.0 1.37.0)
command -v kubernetes-validate >/dev/null || { echo "kubernetes-validate is missing: pip install -r scripts/requirements-test.txt" >&2; exit 1; }

merged="$(mktemp -d)"
trap 'rm -rf "$merged"' EXIT
python3 - "$merged" <<'PY'
import sys, yaml
from pathlib import Path
sys.path.insert(0, "deploy/tests")
import check_manifests as cm
out = Path(sys.argv[1])
for folder in sorted(p for p in (cm.KUBE / "overlays").iterdir() if p.is_dir()):
    for resource in cm.kustomize(folder):
        path = out / f"{folder.name}-{resource['kind'].lower()}-{resource['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(resource))
PY
files=()
while IFS= read -r file; do
  # Kustomizations and patches are not API objects; the merged overlays stand for the patches.
  case "$(basename "$file")" in kustomization.yaml|*-patch.yaml) continue ;; esac
  files+=("$file")
done < <(find deploy/kubernetes -name '*.yaml' | sort)
files+=("$merged"/*.yaml)
for version in "${versions[@]}"; do
  echo "== kubernetes-validate --strict, Kubernetes $version: ${#files[@]} files"
  kubernetes-validate --strict --quiet -k "$version" "${files[@]}"
done
echo "== manifests against the service's defaults ($binary --help)"
python3 deploy/tests/check_manifests.py "$binary"

# The check must be able to fail: a copy whose grace period no longer covers the drain and the
# shutdown timeout, and whose memory limit is under the measured peak, must be refused.
broken="$merged/broken/kubernetes"
mkdir -p "$broken"
cp -r deploy/kubernetes/. "$broken/"
sed -i 's/terminationGracePeriodSeconds: .*/terminationGracePeriodSeconds: 30/' "$broken/deployment.yaml"
sed -i 's/memory: .*Gi$/memory: 256Mi/' "$broken/deployment.yaml"
if AKIDB_KUBE_DIR="$broken" python3 deploy/tests/check_manifests.py "$binary" >"$merged/broken.log"; then
  echo "the manifest check passed a broken copy:" >&2; cat "$merged/broken.log" >&2; exit 1
fi
for expected in "FAILED: kubernetes: terminationGracePeriodSeconds 30" "FAILED: kubernetes: memory limit 256 MiB"; do
  grep -qF "$expected" "$merged/broken.log" || { echo "the broken copy was refused, but not for: $expected" >&2; cat "$merged/broken.log" >&2; exit 1; }
done
echo "ok: a copy with a short grace period and a small memory limit is refused"

