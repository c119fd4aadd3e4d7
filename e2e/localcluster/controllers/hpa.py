"""A HorizontalPodAutoscaler (autoscaling/v2) controller for a cluster without metrics.

There is no metrics server, so no metric can be read: like the real controller in that
situation, it reports ``ScalingActive=False`` (``FailedGetResourceMetric``) and leaves
the replica count alone, except that it still brings a target below ``minReplicas`` or
above ``maxReplicas`` back within bounds through the target's ``/scale`` subresource.
A target scaled to zero counts as autoscaling disabled (``ScalingDisabled``).

Each HPA is looked at when it changes and every ``sync_seconds`` after (the real
controller's resync), and its status is written only when it changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .common import (
    Informer,
    Key,
    Obj,
    WorkQueue,
    error_code,
    fmt_time,
    key_of,
    log,
    meta,
    now_utc,
    run_worker,
    status_patch,
)

RESOURCE = "autoscaling/v2/horizontalpodautoscalers"
STATUS_FIELDS = (
    "observedGeneration",
    "currentReplicas",
    "desiredReplicas",
    "conditions",
    "currentMetrics",
    "lastScaleTime",
)
BUILTIN_SCALABLE = {
    ("apps", "Deployment"): "apps/v1/deployments",
    ("apps", "ReplicaSet"): "apps/v1/replicasets",
    ("apps", "StatefulSet"): "apps/v1/statefulsets",
}


@dataclass
class Decision:
    current: int
    desired: int
    rescale: bool
    conditions: list[tuple[str, str, str, str]]  # (type, status, reason, message)


def metric_failure(metric: Mapping[str, Any]) -> tuple[str, str]:
    """(reason, message) the real controller reports when a metric cannot be read."""
    kind = metric.get("type")
    if kind == "Resource":
        name = (metric.get("resource") or {}).get("name", "cpu")
        target = ((metric.get("resource") or {}).get("target") or {}).get("type", "Utilization")
        what = f"{name} utilization" if target == "Utilization" else f"{name} resource metric value"
        return (
            "FailedGetResourceMetric",
            f"the HPA was unable to compute the replica count: failed to get {what}: unable to get metrics "
            f"for resource {name}: no metrics returned from resource metrics API",
        )
    if kind == "ContainerResource":
        name = (metric.get("containerResource") or {}).get("name", "cpu")
        return (
            "FailedGetContainerResourceMetric",
            f"the HPA was unable to compute the replica count: failed to get {name} utilization: unable to get "
            f"metrics for resource {name}: no metrics returned from resource metrics API",
        )
    if kind == "Pods":
        name = ((metric.get("pods") or {}).get("metric") or {}).get("name", "")
        return (
            "FailedGetPodsMetric",
            f"the HPA was unable to compute the replica count: unable to get metric {name}: no custom metrics API registered",
        )
    if kind == "Object":
        name = ((metric.get("object") or {}).get("metric") or {}).get("name", "")
        return (
            "FailedGetObjectMetric",
            f"the HPA was unable to compute the replica count: unable to get metric {name}: no custom metrics API registered",
        )
    return (
        "FailedGetExternalMetric",
        "the HPA was unable to compute the replica count: unable to get external metric: no external metrics API registered",
    )


def decide(hpa: Mapping[str, Any], current: int) -> Decision:
    spec = hpa.get("spec") or {}
    low = int(spec.get("minReplicas") or 1)
    high = int(spec.get("maxReplicas") or low)
    able = (
        "AbleToScale",
        "True",
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
    )
    if current == 0 and low != 0:
        return Decision(
            0,
            0,
            False,
            [
                able,
                (
                    "ScalingActive",
                    "False",
                    "ScalingDisabled",
                    "scaling is disabled since the replica count of the target is zero",
                ),
            ],
        )
    if current > high:
        return Decision(
            current,
            high,
            True,
            [
                (
                    "AbleToScale",
                    "True",
                    "SucceededRescale",
                    f"the HPA controller was able to update the target scale to {high}",
                ),
                (
                    "ScalingLimited",
                    "True",
                    "TooManyReplicas",
                    "the desired replica count is more than the maximum replica count",
                ),
            ],
        )
    if current < low:
        return Decision(
            current,
            low,
            True,
            [
                (
                    "AbleToScale",
                    "True",
                    "SucceededRescale",
                    f"the HPA controller was able to update the target scale to {low}",
                ),
                (
                    "ScalingLimited",
                    "True",
                    "TooFewReplicas",
                    "the desired replica count is less than the minimum replica count",
                ),
            ],
        )
    metrics = spec.get("metrics") or [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80},
            },
        }
    ]
    reason, message = metric_failure(metrics[0])
    return Decision(current, current, False, [able, ("ScalingActive", "False", reason, message)])


def hpa_status(
    hpa: Mapping[str, Any], decision: Decision, now: datetime, rescaled: bool
) -> dict[str, Any]:
    current = hpa.get("status") or {}
    old = {c.get("type"): c for c in current.get("conditions") or []}
    conditions = []
    for kind, value, reason, message in decision.conditions:
        previous = old.get(kind)
        transition = (
            previous.get("lastTransitionTime")
            if previous and previous.get("status") == value
            else fmt_time(now)
        )
        conditions.append(
            {
                "type": kind,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": transition,
            }
        )
    # keep the order stable and the conditions we did not touch (ScalingLimited from a past rescale)
    status: dict[str, Any] = {
        "observedGeneration": meta(hpa).get("generation") or 1,
        "currentReplicas": decision.current,
        "desiredReplicas": decision.desired,
        "conditions": conditions,
    }
    if rescaled:
        status["lastScaleTime"] = fmt_time(now)
    elif current.get("lastScaleTime"):
        status["lastScaleTime"] = current["lastScaleTime"]
    return status


def replicas_at(obj: Mapping[str, Any], path: str) -> int | None:
    """Value at a scale subresource's specReplicasPath ('.spec.replicas')."""
    node: Any = obj
    for part in path.strip(".").split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return int(node) if isinstance(node, int | float) else None


class HPAController:
    def __init__(self, cluster: Any, sync_seconds: float = 15.0):
        self.cluster = cluster
        self.sync_seconds = sync_seconds
        self.hpas = Informer(cluster, RESOURCE)
        self.queue = WorkQueue()
        self.hpas.add_handler(self._on_hpa)
        # (apiVersion, kind) -> (resource, specReplicasPath, expiry): CRDs are large, and
        # a thousand HPAs must not list them all every sync period
        self._targets: dict[tuple[str, str], tuple[str, str, float]] = {}

    def tasks(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self._informer(), name="localcluster-hpa-informer"),
            asyncio.create_task(
                run_worker("hpa", self.queue, self.reconcile, [self.hpas]), name="localcluster-hpa"
            ),
        ]

    async def _informer(self) -> None:
        while True:
            try:
                await self.hpas.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Failed to watch HorizontalPodAutoscalers, restarting the watch")
                await asyncio.sleep(0.5)

    def _on_hpa(self, event_type: str, old: Obj | None, new: Obj | None) -> None:
        if old is not None and new is not None and old.get("spec") == new.get("spec"):
            return
        if new is not None:
            self.queue.add(key_of(new))

    async def _target_resource(self, api_version: str, kind: str) -> tuple[str, str]:
        """(resource, specReplicasPath) of a scale target."""
        group, _, version = api_version.rpartition("/")
        if (group, kind) in BUILTIN_SCALABLE:
            return BUILTIN_SCALABLE[(group, kind)], ".spec.replicas"
        cached = self._targets.get((api_version, kind))
        loop = asyncio.get_running_loop()
        if cached is not None and cached[2] > loop.time():
            return cached[0], cached[1]
        resource, path = await self._lookup_crd(group, version, kind)
        self._targets[(api_version, kind)] = (resource, path, loop.time() + 30.0)
        return resource, path

    async def _lookup_crd(self, group: str, version: str, kind: str) -> tuple[str, str]:
        api_version = f"{group}/{version}"
        for crd in await self.cluster.list("apiextensions.k8s.io/v1/customresourcedefinitions"):
            spec = crd.get("spec") or {}
            if spec.get("group") == group and (spec.get("names") or {}).get("kind") == kind:
                for v in spec.get("versions") or []:
                    if v.get("name") == version:
                        scale = (v.get("subresources") or {}).get("scale") or {}
                        return f"{group}/{version}/{spec['names']['plural']}", scale.get(
                            "specReplicasPath", ".spec.replicas"
                        )
        raise LookupError(f"no scalable resource {kind} in {api_version}")

    async def reconcile(self, key: Key) -> None:
        hpa = self.hpas.get(*key)
        if hpa is None:
            return
        ns, name = key
        ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        now = now_utc()
        self.queue.add_after(key, self.sync_seconds)
        try:
            resource, path = await self._target_resource(
                ref.get("apiVersion", "apps/v1"), ref.get("kind", "Deployment")
            )
            target = await self.cluster.get(resource, ns, ref.get("name", ""))
        except Exception as exc:
            if error_code(exc) != 404 and not isinstance(exc, LookupError):
                raise
            self._targets.pop(
                (ref.get("apiVersion", "apps/v1"), ref.get("kind", "Deployment")), None
            )
            decision = Decision(
                0,
                0,
                False,
                [
                    (
                        "AbleToScale",
                        "False",
                        "FailedGetScale",
                        f"the HPA controller was unable to get the target's current scale: {exc}",
                    )
                ],
            )
            await self._write_status(hpa, decision, now, False)
            return
        current = replicas_at(target, path)
        current = 1 if current is None else current
        decision = decide(hpa, current)
        rescaled = False
        if decision.rescale:
            await self.cluster.patch(
                resource,
                ns,
                ref.get("name", ""),
                {"spec": {"replicas": decision.desired}},
                subresource="scale",
            )
            rescaled = True
            # Look again soon rather than a whole period later, so the status settles on
            # the metrics verdict once the target has its new size.
            self.queue.add_after(key, min(self.sync_seconds, 0.5))
            log.info(
                "Rescaled %s %s/%s from %d to %d for HorizontalPodAutoscaler %s",
                ref.get("kind"),
                ns,
                ref.get("name"),
                current,
                decision.desired,
                name,
            )
        await self._write_status(hpa, decision, now, rescaled)

    async def _write_status(
        self, hpa: Mapping[str, Any], decision: Decision, now: datetime, rescaled: bool
    ) -> None:
        status = hpa_status(hpa, decision, now, rescaled)
        patch = status_patch(hpa.get("status"), status, STATUS_FIELDS)
        if patch:
            ns, name = key_of(hpa)
            self.hpas.observe(
                await self.cluster.patch(
                    RESOURCE, ns, name, {"status": patch}, subresource="status"
                )
            )
