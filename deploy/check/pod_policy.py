#!/usr/bin/env python3
"""Checks the rendered chart against the pod rules AEX relies on, for deploy/check.sh.

    pod_policy.py RENDERED.yaml

Every pod (server and migration Job): non-root, read-only root filesystem, no capabilities,
no privilege escalation, RuntimeDefault seccomp, a writable /tmp from an emptyDir, no service
links (they inject AEX_-prefixed variables that AEX would reject as unknown settings), no
service account token. The server Deployment also: listens on its container port, rolling
updates, /ready and /health probes, a grace period of drain timeout + preStop sleep + 10 s,
config checksum annotations, and no fixed replica count under an HPA. The migration Job is a
pre-install/pre-upgrade hook and the servers then do not migrate themselves.
"""

from __future__ import annotations

import sys
import tomllib
from typing import Any

import yaml


def pod_errors(where: str, pod: dict[str, Any]) -> list[str]:
    errors = []
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        errors.append(f"{where}: pod securityContext.runAsNonRoot is not true")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        errors.append(f"{where}: pod seccompProfile is not RuntimeDefault")
    if pod.get("enableServiceLinks") is not False:
        errors.append(f"{where}: enableServiceLinks is not false")
    if pod.get("automountServiceAccountToken") is not False:
        errors.append(f"{where}: automountServiceAccountToken is not false")
    empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    for c in pod.get("containers", []):
        cw = f"{where} container {c['name']}"
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            errors.append(f"{cw}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            errors.append(f"{cw}: readOnlyRootFilesystem is not true")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            errors.append(f"{cw}: capabilities do not drop ALL")
        if sc.get("runAsNonRoot") is False:
            errors.append(f"{cw}: runAsNonRoot is false")
        if not any(
            m["mountPath"] == "/tmp" and m["name"] in empty_dirs for m in c.get("volumeMounts", [])
        ):
            errors.append(f"{cw}: /tmp is not an emptyDir")
        if not c.get("resources", {}).get("requests"):
            errors.append(f"{cw}: no resource requests")
    return errors


def probe_path(container: dict[str, Any], probe: str) -> str | None:
    return container.get(probe, {}).get("httpGet", {}).get("path")


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    errors: list[str] = []

    settings = tomllib.loads(by_kind["ConfigMap"][0]["data"]["aex.toml"])
    drain = settings.get("cluster", {}).get("drain_timeout_seconds", 30)

    deployments = by_kind.get("Deployment", [])
    if len(deployments) != 1:
        errors.append(f"expected one Deployment, found {len(deployments)}")
    for d in deployments:
        where = f"Deployment/{d['metadata']['name']}"
        spec, pod = d["spec"], d["spec"]["template"]["spec"]
        errors += pod_errors(where, pod)
        if spec.get("strategy", {}).get("type") != "RollingUpdate":
            errors.append(f"{where}: strategy is not RollingUpdate")
        if by_kind.get("HorizontalPodAutoscaler") and "replicas" in spec:
            errors.append(f"{where}: sets replicas although an HPA scales it")
        if "checksum/config" not in d["spec"]["template"]["metadata"].get("annotations", {}):
            errors.append(f"{where}: no checksum/config annotation")
        (server,) = pod["containers"]
        if probe_path(server, "readinessProbe") != "/ready":
            errors.append(f"{where}: readiness probe is not GET /ready")
        if probe_path(server, "livenessProbe") != "/health":
            errors.append(f"{where}: liveness probe is not GET /health")
        pre_stop = server.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        sleep = int(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0
        grace = pod.get("terminationGracePeriodSeconds")
        if grace != drain + sleep + 10:
            errors.append(
                f"{where}: terminationGracePeriodSeconds {grace} != drain {drain} + preStop {sleep} + 10"
            )
        listen = {e["name"]: e.get("value") for e in server.get("env", [])}.get("AEX_LISTEN", "")
        ports = {p["containerPort"] for p in server.get("ports", [])}
        if not listen.endswith(tuple(f":{p}" for p in ports)) or not listen:
            errors.append(
                f"{where}: AEX_LISTEN {listen!r} is not on a container port {sorted(ports)}"
            )
        if server.get("args") != ["serve"]:
            errors.append(f"{where}: container args are not [serve]")

    jobs = by_kind.get("Job", [])
    for j in jobs:
        where = f"Job/{j['metadata']['name']}"
        errors += pod_errors(where, j["spec"]["template"]["spec"])
        ann = j["metadata"].get("annotations", {})
        if set(ann.get("helm.sh/hook", "").split(",")) != {"pre-install", "pre-upgrade"}:
            errors.append(f"{where}: not a pre-install,pre-upgrade hook")
        if "helm.sh/hook-delete-policy" not in ann:
            errors.append(f"{where}: no hook-delete-policy")
        if j["spec"]["template"]["spec"]["containers"][0].get("args") != ["migrate"]:
            errors.append(f"{where}: container args are not [migrate]")
    if settings.get("auto_migrate") is not (not jobs):
        errors.append(
            f"aex.toml: auto_migrate is {settings.get('auto_migrate')} with {len(jobs)} migration Job(s)"
        )

    for e in errors:
        print(f"error: {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
