"""The disruption controller: status of PodDisruptionBudgets (policy/v1).

From the pods a budget selects: ``currentHealthy`` (Ready and not terminating),
``desiredHealthy`` and ``expectedPods`` as the real controller derives them (an integer
``minAvailable`` counts the pods; a percentage or ``maxUnavailable`` scales against the
replicas of the pods' controllers, rounding up), ``disruptionsAllowed``, and the
``DisruptionAllowed`` condition (``SufficientPods`` / ``InsufficientPods``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from .common import (
    BATCH_SECONDS,
    Informer,
    Key,
    Obj,
    SelectorIndex,
    WorkQueue,
    fmt_time,
    is_terminating,
    key_of,
    labels_of,
    match_selector,
    meta,
    now_utc,
    run_worker,
    select_by_labels,
    status_patch,
)
from .replicaset import is_ready

RESOURCE = "policy/v1/poddisruptionbudgets"
STATUS_FIELDS = (
    "observedGeneration",
    "disruptionsAllowed",
    "currentHealthy",
    "desiredHealthy",
    "expectedPods",
    "conditions",
)


def scaled(value: int | str, total: int) -> int:
    """An IntOrString against ``total``; percentages round up, as for budgets."""
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.endswith("%"):
        return math.ceil(int(text[:-1]) * total / 100)
    return int(text)


def budget_status(
    pdb: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    controller_scale: int | None,
    now: datetime,
) -> dict[str, Any]:
    """The status of a budget over the pods it selects. ``controller_scale`` is the sum
    of the replicas of those pods' controllers (None when a pod has none)."""
    spec = pdb.get("spec") or {}
    healthy = sum(1 for p in pods if not is_terminating(p) and is_ready(p))
    scale = controller_scale if controller_scale is not None else len(pods)
    if spec.get("maxUnavailable") is not None:
        expected = scale
        desired = max(expected - scaled(spec["maxUnavailable"], expected), 0)
    elif isinstance(spec.get("minAvailable"), int) or (
        isinstance(spec.get("minAvailable"), str) and not spec["minAvailable"].endswith("%")
    ):
        expected = len(pods)
        desired = scaled(spec["minAvailable"], expected)
    elif spec.get("minAvailable") is not None:
        expected = scale
        desired = scaled(spec["minAvailable"], expected)
    else:
        expected, desired = len(pods), 0
    allowed = max(healthy - desired, 0) if expected > 0 else 0
    generation = meta(pdb).get("generation") or 1
    old = next(
        (
            c
            for c in (pdb.get("status") or {}).get("conditions") or []
            if c.get("type") == "DisruptionAllowed"
        ),
        None,
    )
    status_value = "True" if allowed > 0 else "False"
    condition = {
        "type": "DisruptionAllowed",
        "status": status_value,
        "reason": "SufficientPods" if allowed > 0 else "InsufficientPods",
        "message": "",
        "observedGeneration": generation,
        "lastTransitionTime": old["lastTransitionTime"]
        if old and old.get("status") == status_value and old.get("lastTransitionTime")
        else fmt_time(now),
    }
    return {
        "observedGeneration": generation,
        "disruptionsAllowed": allowed,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "conditions": [condition],
    }


class DisruptionController:
    def __init__(self, cluster: Any, pods: Informer, replicasets: Informer, deployments: Informer):
        self.cluster = cluster
        self.pods = pods
        self.replicasets = replicasets
        self.deployments = deployments
        self.budgets = Informer(cluster, RESOURCE)
        self.selectors = SelectorIndex()
        self.queue = WorkQueue()
        self.budgets.add_handler(self._on_budget)
        pods.add_handler(self._on_pod)

    def informers(self) -> list[Informer]:
        return [self.budgets]

    def tasks(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(
                run_worker(
                    "disruption",
                    self.queue,
                    self.reconcile,
                    [self.budgets, self.pods, self.replicasets, self.deployments],
                ),
                name="localcluster-disruption",
            )
        ]

    def _on_budget(self, event_type: str, old: Obj | None, new: Obj | None) -> None:
        key = key_of(new or old or {})
        self.selectors.put(
            key, (new.get("spec") or {}).get("selector") if new is not None else None
        )
        if old is not None and new is not None and old.get("spec") == new.get("spec"):
            return
        if new is not None:
            self.queue.add(key)

    def _on_pod(self, event_type: str, old: Obj | None, new: Obj | None) -> None:
        ns = meta(new or old or {}).get("namespace") or ""
        keys: set[Key] = set()
        for obj in (old, new):
            if obj is not None:
                keys |= self.selectors.matching(ns, labels_of(obj))
        for key in keys:
            self.queue.add_after(key, BATCH_SECONDS)

    def _controller_scale(self, pods: Sequence[Mapping[str, Any]]) -> int | None:
        """Sum of replicas of the pods' controllers (a ReplicaSet owned by a Deployment
        counts as the Deployment), or None if some pod has no known controller."""
        seen: dict[str, int] = {}
        for pod in pods:
            ref = next(
                (r for r in meta(pod).get("ownerReferences") or [] if r.get("controller")), None
            )
            if ref is None or ref.get("kind") != "ReplicaSet":
                return None
            rs = next(iter(self.replicasets.by_index("uid", ref.get("uid"))), None)
            if rs is None:
                return None
            owner = next(
                (
                    r
                    for r in meta(rs).get("ownerReferences") or []
                    if r.get("controller") and r.get("kind") == "Deployment"
                ),
                None,
            )
            if owner is not None:
                d = self.deployments.get(meta(rs).get("namespace"), owner.get("name"))
                if d is not None:
                    seen[owner.get("uid")] = int((d.get("spec") or {}).get("replicas", 1))
                    continue
            seen[ref.get("uid")] = int((rs.get("spec") or {}).get("replicas", 1))
        return sum(seen.values())

    async def reconcile(self, key: Key) -> None:
        pdb = self.budgets.get(*key)
        if pdb is None or is_terminating(pdb):
            return
        selector = (pdb.get("spec") or {}).get("selector")
        pods: list[dict[str, Any]] = []
        if selector is not None:
            candidates = select_by_labels(self.pods, key[0], selector.get("matchLabels") or {})
            pods = [p for p in candidates if match_selector(selector, labels_of(p))]
        status = budget_status(pdb, pods, self._controller_scale(pods), now_utc())
        patch = status_patch(pdb.get("status"), status, STATUS_FIELDS)
        if patch:
            self.budgets.observe(
                await self.cluster.patch(
                    RESOURCE, key[0], key[1], {"status": patch}, subresource="status"
                )
            )
