"""Node objects of the simulated cluster, built from a topology.

A topology is a dict (normally parsed from YAML)::

    nodes:
      - name: cpu-1                # required, unique
        count: 1                   # optional: n > 1 makes cpu-1-1 ... cpu-1-n
        labels: {zone: a}          # merged over the standard node labels
        taints: [{key: k, value: v, effect: NoSchedule}]
        allocatable: {cpu: "8", memory: 32Gi, pods: "110", nvidia.com/gpu: "4"}
        unschedulable: false       # spec.unschedulable (cordoned)

A bare list of nodes is accepted as well. ``allocatable`` is also used as capacity.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .common import WorkQueue, error_code, fmt_time, log, now_utc, parse_quantity, run_worker

KUBELET_VERSION = "v1.35.2"

DEFAULT_TOPOLOGY: dict[str, Any] = {
    "nodes": [
        *(
            {
                "name": f"cpu-{i}",
                "allocatable": {
                    "cpu": "8",
                    "memory": "32Gi",
                    "pods": "110",
                    "ephemeral-storage": "100Gi",
                },
            }
            for i in (1, 2, 3)
        ),
        *(
            {
                "name": f"gpu-{i}",
                "labels": {"nvidia.com/gpu.present": "true"},
                "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
                "allocatable": {
                    "cpu": "16",
                    "memory": "64Gi",
                    "pods": "110",
                    "ephemeral-storage": "100Gi",
                    "nvidia.com/gpu": "4",
                },
            }
            for i in (1, 2)
        ),
    ]
}


class TopologyError(ValueError):
    pass


def expand_topology(topology: Mapping[str, Any] | list[Any] | None) -> list[dict[str, Any]]:
    """The node entries of a topology, validated, with ``count`` expanded."""
    if topology is None:
        topology = DEFAULT_TOPOLOGY
    entries = topology if isinstance(topology, list) else topology.get("nodes")
    if not isinstance(entries, list) or not entries:
        raise TopologyError("topology: 'nodes' must be a non-empty list")
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not entry.get("name"):
            raise TopologyError(f"topology: nodes[{i}].name is required")
        count = int(entry.get("count", 1))
        if count < 1:
            raise TopologyError(f"topology: nodes[{i}].count must be at least 1")
        for taint in entry.get("taints") or []:
            if taint.get("effect") not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
                raise TopologyError(
                    f"topology: nodes[{i}].taints: effect must be NoSchedule, PreferNoSchedule or NoExecute"
                )
        for res, qty in (entry.get("allocatable") or {}).items():
            try:
                parse_quantity(qty)
            except ValueError as exc:
                raise TopologyError(f"topology: nodes[{i}].allocatable[{res}]: {exc}") from None
        for n in range(1, count + 1):
            item = dict(entry)
            item.pop("count", None)
            if count > 1:
                item["name"] = f"{entry['name']}-{n}"
            out.append(item)
    names = [e["name"] for e in out]
    if len(set(names)) != len(names):
        raise TopologyError("topology: node names must be unique")
    return out


def build_node(
    entry: Mapping[str, Any],
    index: int,
    now: datetime,
    default_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A Node object (with status) for one topology entry; ``index`` picks its pod CIDR
    10.244.<index>.0/24 and its address. ``default_labels`` apply unless the entry sets
    the same label."""
    name = entry["name"]
    allocatable = {str(k): str(v) for k, v in (entry.get("allocatable") or {}).items()}
    allocatable.setdefault("pods", "110")
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        **dict(default_labels or {}),
        **{str(k): str(v) for k, v in (entry.get("labels") or {}).items()},
    }
    ts = fmt_time(now)
    spec: dict[str, Any] = {
        "podCIDR": f"10.244.{index}.0/24",
        "podCIDRs": [f"10.244.{index}.0/24"],
        "providerID": f"localcluster://{name}",
    }
    if entry.get("taints"):
        spec["taints"] = [dict(t) for t in entry["taints"]]
    if entry.get("unschedulable"):
        spec["unschedulable"] = True

    def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": ts,
            "lastTransitionTime": ts,
        }

    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
        "status": {
            "capacity": dict(allocatable),
            "allocatable": dict(allocatable),
            "conditions": [
                condition(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                condition(
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                ),
                condition(
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": f"172.18.0.{index + 2}"},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": f"{index:032x}",
                "systemUUID": f"00000000-0000-0000-0000-{index:012x}",
                "bootID": f"00000000-0000-0000-0000-{index:012x}",
                "kernelVersion": "6.1.0-localcluster",
                "osImage": "Local Cluster",
                "containerRuntimeVersion": "containerd://2.1.0",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }


def node_is_ready(node: Mapping[str, Any]) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def node_internal_ip(node: Mapping[str, Any]) -> str | None:
    for addr in (node.get("status") or {}).get("addresses") or []:
        if addr.get("type") == "InternalIP":
            return str(addr.get("address") or "") or None
    return None


async def ensure_nodes(
    cluster: Any,
    topology: Mapping[str, Any] | list[Any] | None,
    now: datetime,
    default_labels: Mapping[str, str] | None = None,
) -> list[str]:
    """Create the topology's nodes that do not exist yet (an existing node is left as it
    is, so a restarted control plane keeps what tests changed). Returns their names."""
    names = []
    for index, entry in enumerate(expand_topology(topology), start=1):
        node = build_node(entry, index, now, default_labels)
        names.append(node["metadata"]["name"])
        try:
            created = await cluster.create("v1/nodes", copy.deepcopy(node))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if error_code(exc) == 409:
                continue
            raise
        if (created.get("status") or {}).get("conditions") != node["status"]["conditions"]:
            # The store drops status on create when nodes have a status subresource.
            await cluster.patch(
                "v1/nodes",
                None,
                node["metadata"]["name"],
                {"status": node["status"]},
                subresource="status",
            )
        log.info("Registered Node %s", node["metadata"]["name"])
    return names


# ------------------------------------------------------------------- node lifecycle

NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"


def ready_status(node: Mapping[str, Any]) -> str:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status") or "Unknown")
    return "Unknown"


def lifecycle_taints(node: Mapping[str, Any], now: datetime) -> list[dict[str, Any]]:
    """The node's taints as the node lifecycle controller keeps them: a node whose Ready
    condition is False gets ``node.kubernetes.io/not-ready``, Unknown gets
    ``node.kubernetes.io/unreachable`` (NoSchedule and NoExecute), a Ready one neither.
    Other taints are left alone, and an existing taint keeps its timeAdded."""
    current = [dict(t) for t in (node.get("spec") or {}).get("taints") or []]
    ours = (NOT_READY_TAINT, UNREACHABLE_TAINT)
    kept = [t for t in current if t.get("key") not in ours]
    status = ready_status(node)
    wanted_key = {"False": NOT_READY_TAINT, "Unknown": UNREACHABLE_TAINT}.get(status)
    if wanted_key is None:
        return kept
    for effect in ("NoSchedule", "NoExecute"):
        existing = next(
            (t for t in current if t.get("key") == wanted_key and t.get("effect") == effect), None
        )
        taint: dict[str, Any] = existing or {"key": wanted_key, "effect": effect}
        if effect == "NoExecute" and "timeAdded" not in taint:
            taint["timeAdded"] = fmt_time(now)
        kept.append(taint)
    return kept


class NodeLifecycleController:
    """Taints nodes that stop being Ready (and untaints them when they recover), so that
    the scheduler avoids them and the kubelet's taint manager evicts their pods."""

    def __init__(self, cluster: Any, nodes: Any) -> None:
        self.cluster = cluster
        self.nodes = nodes
        self.queue = WorkQueue()
        nodes.add_handler(self._on_node)

    def tasks(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(
                run_worker("node-lifecycle", self.queue, self.reconcile, [self.nodes]),
                name="localcluster-node-lifecycle",
            )
        ]

    def _on_node(
        self, event_type: str, old: dict[str, Any] | None, new: dict[str, Any] | None
    ) -> None:
        if new is not None and (
            old is None
            or ready_status(old) != ready_status(new)
            or (old.get("spec") or {}).get("taints") != (new.get("spec") or {}).get("taints")
        ):
            self.queue.add(new["metadata"]["name"])

    async def reconcile(self, name: str) -> None:
        node = self.nodes.get(None, name)
        if node is None:
            return
        taints = lifecycle_taints(node, now_utc())
        if taints == ((node.get("spec") or {}).get("taints") or []):
            return
        updated = await self.cluster.patch(
            "v1/nodes", None, name, {"spec": {"taints": taints or None}}
        )
        self.nodes.observe(updated)
        log.info("Updated the lifecycle taints of Node %s (Ready=%s)", name, ready_status(node))
