"""Regenerate ``protobuf_schema.json`` from Kubernetes' ``generated.proto`` files.

Usage: ``python -m e2e.localcluster.gen_protobuf_schema OUT.json FILE.proto...`` with the
``generated.proto`` files of k8s.io/api (core/v1, apps/v1, ...) and k8s.io/apimachinery
(meta/v1, runtime, util/intstr, api/resource). Only field numbers, names and types are
kept: the table lets the server read protobuf request bodies, which typed Go clients
(Helm's release storage, ``kubectl create namespace``) send for built-in kinds.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

_PACKAGE = re.compile(r"^package\s+([\w.]+);")
_MESSAGE = re.compile(r"^message\s+(\w+)\s*\{")
_FIELD = re.compile(r"^\s*(optional|repeated)\s+([\w.]+)\s+(\w+)\s*=\s*(\d+)")
_MAP = re.compile(r"^\s*map<\s*([\w.]+)\s*,\s*([\w.]+)\s*>\s+(\w+)\s*=\s*(\d+)")
SCALARS = {"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "double", "float",
           "sint32", "sint64", "fixed32", "fixed64"}

# Kinds whose objects typed clients send; the table holds them and what they reference.
ROOTS = {
    "v1/Secret": "k8s.io.api.core.v1.Secret",
    "v1/ConfigMap": "k8s.io.api.core.v1.ConfigMap",
    "v1/Namespace": "k8s.io.api.core.v1.Namespace",
    "v1/ServiceAccount": "k8s.io.api.core.v1.ServiceAccount",
    "v1/Pod": "k8s.io.api.core.v1.Pod",
    "v1/Service": "k8s.io.api.core.v1.Service",
    "v1/Event": "k8s.io.api.core.v1.Event",
    "v1/Endpoints": "k8s.io.api.core.v1.Endpoints",
    "v1/Node": "k8s.io.api.core.v1.Node",
    "v1/PersistentVolumeClaim": "k8s.io.api.core.v1.PersistentVolumeClaim",
    "apps/v1/Deployment": "k8s.io.api.apps.v1.Deployment",
    "apps/v1/ReplicaSet": "k8s.io.api.apps.v1.ReplicaSet",
    "apps/v1/StatefulSet": "k8s.io.api.apps.v1.StatefulSet",
    "apps/v1/DaemonSet": "k8s.io.api.apps.v1.DaemonSet",
    "batch/v1/Job": "k8s.io.api.batch.v1.Job",
    "batch/v1/CronJob": "k8s.io.api.batch.v1.CronJob",
    "policy/v1/PodDisruptionBudget": "k8s.io.api.policy.v1.PodDisruptionBudget",
    "coordination.k8s.io/v1/Lease": "k8s.io.api.coordination.v1.Lease",
    "autoscaling/v1/Scale": "k8s.io.api.autoscaling.v1.Scale",
    "autoscaling/v2/HorizontalPodAutoscaler": "k8s.io.api.autoscaling.v2.HorizontalPodAutoscaler",
    "discovery.k8s.io/v1/EndpointSlice": "k8s.io.api.discovery.v1.EndpointSlice",
    "events.k8s.io/v1/Event": "k8s.io.api.events.v1.Event",
    "networking.k8s.io/v1/Ingress": "k8s.io.api.networking.v1.Ingress",
    "networking.k8s.io/v1/NetworkPolicy": "k8s.io.api.networking.v1.NetworkPolicy",
    "rbac.authorization.k8s.io/v1/Role": "k8s.io.api.rbac.v1.Role",
    "rbac.authorization.k8s.io/v1/RoleBinding": "k8s.io.api.rbac.v1.RoleBinding",
    "rbac.authorization.k8s.io/v1/ClusterRole": "k8s.io.api.rbac.v1.ClusterRole",
    "rbac.authorization.k8s.io/v1/ClusterRoleBinding": "k8s.io.api.rbac.v1.ClusterRoleBinding",
    "meta/v1/DeleteOptions": "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions",
}


def parse(paths: list[Path]) -> dict[str, dict[str, list[Any]]]:
    messages: dict[str, dict[str, list[Any]]] = {}
    for path in paths:
        package, current = "", None
        for line in path.read_text().splitlines():
            if m := _PACKAGE.match(line):
                package = m.group(1)
            elif m := _MESSAGE.match(line):
                current = f"{package}.{m.group(1)}"
                messages[current] = {}
            elif line.startswith("}"):
                current = None
            elif current and (m := _MAP.match(line)):
                key, value, name, number = m.groups()
                messages[current][number] = [name, "map", _qualify(key, package), _qualify(value, package)]
            elif current and (m := _FIELD.match(line)):
                label, ftype, name, number = m.groups()
                messages[current][number] = [name, label, _qualify(ftype, package)]
    return messages


def _qualify(ftype: str, package: str) -> str:
    if ftype in SCALARS:
        return ftype
    return ftype.lstrip(".") if ftype.startswith(".") else f"{package}.{ftype}"


def closure(messages: dict[str, dict[str, list[Any]]], roots: list[str]) -> dict[str, dict[str, list[Any]]]:
    out: dict[str, dict[str, list[Any]]] = {}
    todo = [*roots, "k8s.io.apimachinery.pkg.runtime.Unknown"]
    while todo:
        name = todo.pop()
        if name in out or name not in messages:
            continue
        out[name] = messages[name]
        for field in messages[name].values():
            todo.extend(t for t in field[2:] if t not in SCALARS)
    return dict(sorted(out.items()))


def main(argv: list[str]) -> int:
    out, protos = Path(argv[0]), [Path(p) for p in argv[1:]]
    messages = closure(parse(protos), list(ROOTS.values()))
    missing = [k for k, v in ROOTS.items() if v not in messages]
    if missing:
        print(f"missing messages for {missing}", file=sys.stderr)
    out.write_text(json.dumps({"kinds": ROOTS, "messages": messages}, indent=0, sort_keys=True) + "\n")
    print(f"Wrote {len(messages)} messages to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
