#!/usr/bin/env python3
"""Checks deploy/kubernetes against the service it runs (run by scripts/test.sh, so by CI).

    python3 deploy/tests/check_manifests.py path/to/akidb-rest

Every default comes from `akidb-rest --help` (the service's own configuration code), never
from a copy, and the image's environment from the Dockerfile. For the base and for each
overlay (its patch merged the way kustomize's strategic merge does for the fields read here):

- probes: all three on /health, on the container port the image's AKIDB_BIND names; the
  startup budget covers the measured load time (annotation) ten times over; readiness takes
  a pod out of rotation within the drain delay; liveness never fires within a whole drain;
- drain timing: AKIDB_DRAIN_DELAY_MS set above zero, and terminationGracePeriodSeconds covers
  the preStop sleep + the drain delay + AKIDB_SHUTDOWN_TIMEOUT_MS;
- limits: memory request = limit >= 1.2 x the measured peak RSS (annotation), CPU request =
  limit = AKIDB_THREADS (ONNX Runtime threads), every AKIDB_* variable is one the service
  knows;
- wiring: the API key from a Secret; the Service, HPA and PDB select or target the
  Deployment; the kustomization lists every manifest of its folder;
- deploy/compose.yaml: `docker stop` waits out the drain and the shutdown timeout.

Prints one line per check and, last, `N passed, F failed`; exits 1 if any failed.
"""

import copy
import json
import math
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

import os

ROOT = Path(__file__).resolve().parents[2]
# AKIDB_KUBE_DIR: check a copy instead (deploy/tests/run.sh breaks one on purpose).
KUBE = Path(os.environ.get("AKIDB_KUBE_DIR", ROOT / "deploy" / "kubernetes"))

passed = 0
failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok: {what}")
    else:
        failed += 1
        print(f"FAILED: {what}")


def service_defaults(binary):
    """{env var: default or None} from `akidb-rest --help`."""
    text = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout
    defaults = {}
    for block in re.split(r"\n(?=\s*--)", text):
        env = re.search(r"\[env: (AKIDB_[A-Z0-9_]+)[=\]]", block)
        if not env:
            continue
        default = re.search(r"\[default: ([^\]]*)\]", block)
        defaults[env.group(1)] = default.group(1) if default else None
    return defaults


def image_env():
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def load(path):
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def merge_named(base, patch, key="name"):
    """Strategic merge of two lists of objects keyed by `key`."""
    merged = copy.deepcopy(base or [])
    for item in patch or []:
        target = next((m for m in merged if m.get(key) == item.get(key)), None)
        if target is None:
            merged.append(copy.deepcopy(item))
        else:
            target.update(merge(target, item))
    return merged


NAMED_LISTS = {"containers", "initContainers", "env", "volumes", "volumeMounts"}


def merge(base, patch):
    result = copy.deepcopy(base)
    for key, value in patch.items():
        if key in NAMED_LISTS:
            result[key] = merge_named(base.get(key), value)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            result[key] = merge(base[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def kustomize(folder):
    """The resources a kustomization folder produces, with its patches applied."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    resources = []
    for entry in kustomization.get("resources", []):
        path = (folder / entry).resolve()
        resources += kustomize(path) if path.is_dir() else load(path)
    for patch in kustomization.get("patches", []):
        for doc in load(folder / patch["path"]):
            for index, resource in enumerate(resources):
                if resource["kind"] == doc["kind"] and resource["metadata"]["name"] == doc["metadata"]["name"]:
                    resources[index] = merge(resource, doc)
    return resources


def seconds_of(ms):
    return int(ms) / 1000


def check_folder(folder, defaults, image):
    name = folder.relative_to(KUBE.parent)
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    listed = {entry for entry in kustomization.get("resources", []) if not entry.startswith("..")}
    listed |= {patch["path"] for patch in kustomization.get("patches", [])}
    present = {path.name for path in folder.glob("*.yaml")} - {"kustomization.yaml"}
    check(listed == present, f"{name}: kustomization lists every manifest ({sorted(present)})")

    resources = kustomize(folder)
    by_kind = {}
    for resource in resources:
        by_kind.setdefault(resource["kind"], []).append(resource)
    deployment = by_kind["Deployment"][0]
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    container = next(c for c in spec["containers"] if c["name"] == "akidb-rest")
    env = {item["name"]: item for item in container.get("env", [])}

    def setting(variable):
        if variable in env and "value" in env[variable]:
            return env[variable]["value"]
        if variable in image:
            return image[variable]
        return defaults[variable]

    unknown = [variable for variable in env if variable.startswith("AKIDB_") and variable not in defaults]
    check(not unknown, f"{name}: every AKIDB_* variable is a setting of the service ({unknown or 'all known'})")

    # Port and probes.
    bind_port = int(setting("AKIDB_BIND").rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    check(ports.get("http") == bind_port, f"{name}: container port http = {ports.get('http')} = the port of AKIDB_BIND ({bind_port})")
    metrics_bind = setting("AKIDB_METRICS_BIND")
    if metrics_bind:
        # Scraped per pod without the key: the port is declared, named, and not on the Service.
        metrics_port = int(metrics_bind.rsplit(":", 1)[1])
        check(ports.get("metrics") == metrics_port, f"{name}: container port metrics = {ports.get('metrics')} = the port of AKIDB_METRICS_BIND ({metrics_port})")
        annotated = pod["metadata"].get("annotations", {}).get("prometheus.io/port")
        check(annotated in (None, str(metrics_port)), f"{name}: prometheus.io/port ({annotated}) is the metrics port")
    probes = {kind: container.get(kind) for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    for kind, probe in probes.items():
        check(
            probe is not None and probe["httpGet"]["path"] == "/health" and probe["httpGet"]["port"] in ("http", bind_port),
            f"{name}: {kind} on /health at the service's port",
        )

    annotations = deployment["metadata"].get("annotations", {})
    load_s = float(annotations["sizing.akidb/measured-load-seconds"])
    peak_mib = float(annotations["sizing.akidb/measured-peak-rss-mib"])
    startup = probes["startupProbe"]
    startup_budget = startup["periodSeconds"] * startup["failureThreshold"]
    check(startup_budget >= 10 * load_s, f"{name}: startup budget {startup_budget} s >= 10 x the measured load time {load_s} s")

    drain_s = seconds_of(setting("AKIDB_DRAIN_DELAY_MS"))
    shutdown_s = seconds_of(setting("AKIDB_SHUTDOWN_TIMEOUT_MS"))
    check(drain_s > 0, f"{name}: AKIDB_DRAIN_DELAY_MS is set ({drain_s} s; the service's default is {defaults['AKIDB_DRAIN_DELAY_MS']} ms)")
    readiness = probes["readinessProbe"]
    notice_s = readiness["periodSeconds"] * readiness["failureThreshold"] + readiness["timeoutSeconds"]
    check(notice_s <= drain_s, f"{name}: readiness notices a draining pod within {notice_s} s <= drain delay {drain_s} s")
    liveness = probes["livenessProbe"]
    liveness_s = liveness["periodSeconds"] * liveness["failureThreshold"]
    check(
        liveness_s > drain_s + shutdown_s,
        f"{name}: liveness needs {liveness_s} s of failures > drain {drain_s} s + shutdown timeout {shutdown_s} s",
    )
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    pre_stop_s = pre_stop.get("sleep", {}).get("seconds", 0)
    check(pre_stop_s > 0, f"{name}: a preStop drain ({pre_stop_s} s)")
    grace = spec["terminationGracePeriodSeconds"]
    needed = pre_stop_s + drain_s + shutdown_s
    check(
        grace >= math.ceil(needed) + 1,
        f"{name}: terminationGracePeriodSeconds {grace} >= preStop {pre_stop_s} s + drain {drain_s} s "
        f"+ AKIDB_SHUTDOWN_TIMEOUT_MS {shutdown_s} s (+1 s)",
    )

    # Resources.
    resources_ = container["resources"]
    request_mem, limit_mem = resources_["requests"]["memory"], resources_["limits"]["memory"]
    check(request_mem == limit_mem, f"{name}: memory request = limit ({limit_mem})")
    limit_mib = mebibytes(limit_mem)
    check(limit_mib >= 1.2 * peak_mib, f"{name}: memory limit {limit_mib:.0f} MiB >= 1.2 x measured peak RSS {peak_mib:.0f} MiB")
    cpu_request, cpu_limit = resources_["requests"]["cpu"], resources_["limits"]["cpu"]
    threads = setting("AKIDB_THREADS")
    check(
        threads is not None and cores(cpu_request) == cores(cpu_limit) == int(threads),
        f"{name}: CPU request = limit = AKIDB_THREADS ({cpu_request}, {cpu_limit}, {threads})",
    )

    # Wiring.
    key = env.get("AKIDB_API_KEY", {}).get("valueFrom", {}).get("secretKeyRef")
    check(key is not None and key.get("name") and key.get("key"), f"{name}: the API key comes from a Secret ({key})")
    labels = pod["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    check(all(labels.get(k) == v for k, v in selector.items()), f"{name}: the Deployment selects its pods")
    service = by_kind["Service"][0]
    check(
        all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
        and all(p["targetPort"] in ports or p["targetPort"] in ports.values() for p in service["spec"]["ports"]),
        f"{name}: the Service selects the pods and targets a container port",
    )
    exposed = {p["targetPort"] for p in service["spec"]["ports"]}
    check(
        not exposed & {"metrics", ports.get("metrics")},
        f"{name}: the key-less metrics port is not on the Service ({sorted(map(str, exposed))})",
    )
    pdb = by_kind["PodDisruptionBudget"][0]
    check(all(labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items()), f"{name}: the PDB selects the pods")
    hpa = by_kind["HorizontalPodAutoscaler"][0]
    target = hpa["spec"]["scaleTargetRef"]
    check(
        target["kind"] == "Deployment" and target["name"] == deployment["metadata"]["name"],
        f"{name}: the HPA scales the Deployment",
    )
    check(
        hpa["spec"]["minReplicas"] >= 2 and pdb["spec"].get("maxUnavailable") == 1,
        f"{name}: at least 2 replicas and one disruption at a time",
    )
    claims = {v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes", []) if "persistentVolumeClaim" in v}
    declared = {r["metadata"]["name"] for r in by_kind.get("PersistentVolumeClaim", [])}
    check(claims <= declared, f"{name}: every claimed volume is declared ({sorted(claims)})")
    model = setting("AKIDB_EMBEDDING_MODEL") or ""
    if model.startswith("/models/"):
        mounted = any(m["mountPath"] == "/models" for m in container.get("volumeMounts", []))
        check(mounted, f"{name}: the model folder {model} is on a mounted volume")


def check_compose(defaults):
    """deploy/compose.yaml: docker stop waits out the drain and the shutdown timeout."""
    service = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())["services"]["akidb-rest"]
    env = service.get("environment", {})
    drain_s = seconds_of(env.get("AKIDB_DRAIN_DELAY_MS", defaults["AKIDB_DRAIN_DELAY_MS"]))
    shutdown_s = seconds_of(env.get("AKIDB_SHUTDOWN_TIMEOUT_MS", defaults["AKIDB_SHUTDOWN_TIMEOUT_MS"]))
    grace = service.get("stop_grace_period", "10s")
    grace_s = float(grace.rstrip("s"))
    check(
        grace_s > drain_s + shutdown_s,
        f"deploy/compose.yaml: stop_grace_period {grace} > drain {drain_s} s + shutdown timeout {shutdown_s} s",
    )
    unknown = [v for v in env if v.startswith("AKIDB_") and v not in defaults]
    check(not unknown, f"deploy/compose.yaml: every AKIDB_* variable is a setting of the service ({unknown or 'all known'})")


def mebibytes(quantity):
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi)", str(quantity))
    if not match:
        raise ValueError(f"memory quantity {quantity!r}: use Ki, Mi or Gi")
    return float(match.group(1)) * units[match.group(2)]


def cores(quantity):
    quantity = str(quantity)
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: check_manifests.py path/to/akidb-rest")
    defaults = service_defaults(sys.argv[1])
    check(
        {"AKIDB_DRAIN_DELAY_MS", "AKIDB_SHUTDOWN_TIMEOUT_MS", "AKIDB_BIND", "AKIDB_THREADS"} <= set(defaults),
        f"`akidb-rest --help` names the settings read here ({len(defaults)} settings)",
    )
    image = image_env()
    check(image.get("AKIDB_BIND", "").endswith(":8080"), f"the image binds port 8080 ({image.get('AKIDB_BIND')})")
    for folder in [KUBE] + sorted(p for p in (KUBE / "overlays").iterdir() if p.is_dir()):
        check_folder(folder, defaults, image)
    check_compose(defaults)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
