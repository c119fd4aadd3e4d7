"""The ReplicaSet controller: keeps the number of live pods at spec.replicas.

Pods are named ``<replicaset>-<5 random chars>``, carry the template's labels and
annotations and a controller owner reference. Scaling down deletes the pods that
matter least first (unscheduled before scheduled, pending before running, not ready
before ready, recently ready before long ready, more restarts before fewer, newer
before older), as the real controller ranks them.
"""

from __future__ import annotations

import asyncio
import copy
import random
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from .common import (
    BATCH_SECONDS,
    Informer,
    Key,
    Obj,
    Recorder,
    WorkQueue,
    add_seconds,
    error_code,
    is_terminating,
    key_of,
    labels_of,
    log,
    match_labels,
    meta,
    now_utc,
    owner_reference,
    parse_time,
    run_worker,
    seconds_until,
    uid_of,
)

NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # no vowels: no accidental words


# ------------------------------------------------------------------------ pure logic


def random_suffix(n: int = 5, rng: random.Random | None = None) -> str:
    r = rng or random
    return "".join(r.choice(NAME_ALPHABET) for _ in range(n))


def is_active(pod: Mapping[str, Any]) -> bool:
    return not is_terminating(pod) and (pod.get("status") or {}).get("phase") not in (
        "Succeeded",
        "Failed",
    )


def ready_since(pod: Mapping[str, Any]) -> datetime | None:
    """When the pod became Ready, or None if it is not Ready."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            if cond.get("status") != "True":
                return None
            return parse_time(cond.get("lastTransitionTime")) or datetime.min.replace(tzinfo=None)
    return None


def is_ready(pod: Mapping[str, Any]) -> bool:
    return ready_since(pod) is not None


def available_in(pod: Mapping[str, Any], min_ready_seconds: int, now: datetime) -> float | None:
    """0 if the pod is available now, the seconds until it will be if it is Ready but
    not yet for minReadySeconds, None if it is not Ready."""
    since = ready_since(pod)
    if since is None:
        return None
    if min_ready_seconds <= 0 or since.tzinfo is None:
        return 0.0
    return seconds_until(add_seconds(since, min_ready_seconds), now)


def build_pod(rs: Mapping[str, Any], name: str) -> dict[str, Any]:
    template = (rs.get("spec") or {}).get("template") or {}
    tmeta = template.get("metadata") or {}
    metadata: dict[str, Any] = {
        "name": name,
        "generateName": f"{meta(rs).get('name')}-",
        "namespace": meta(rs).get("namespace"),
        "labels": dict(tmeta.get("labels") or {}),
        "ownerReferences": [owner_reference(rs, "apps/v1", "ReplicaSet")],
    }
    if tmeta.get("annotations"):
        metadata["annotations"] = dict(tmeta["annotations"])
    if tmeta.get("finalizers"):
        metadata["finalizers"] = list(tmeta["finalizers"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": copy.deepcopy(template.get("spec") or {}),
    }


_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def deletion_rank(pod: Mapping[str, Any]) -> tuple[Any, ...]:
    """Sort key: pods that sort first are deleted first."""
    status = pod.get("status") or {}
    since = ready_since(pod)
    restarts = max(
        (int(s.get("restartCount") or 0) for s in status.get("containerStatuses") or []), default=0
    )
    created = meta(pod).get("creationTimestamp") or ""
    return (
        1 if (pod.get("spec") or {}).get("nodeName") else 0,
        _PHASE_RANK.get(status.get("phase") or "Pending", 0),
        1 if since is not None else 0,
        # recently ready first: a later timestamp sorts first
        -(since.timestamp() if since is not None and since.tzinfo is not None else 0),
        -restarts,
        # newer first
        tuple(-ord(ch) for ch in created),
        meta(pod).get("name") or "",
    )


def pods_to_delete(pods: Sequence[Mapping[str, Any]], count: int) -> Sequence[Mapping[str, Any]]:
    return sorted(pods, key=deletion_rank)[: max(count, 0)]


def replicaset_status(
    rs: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], now: datetime
) -> tuple[dict[str, Any], float | None]:
    """status of a ReplicaSet from its pods, and when to look again for minReadySeconds."""
    spec = rs.get("spec") or {}
    min_ready = int(spec.get("minReadySeconds") or 0)
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    active = [p for p in pods if is_active(p)]
    ready = available = 0
    recheck: float | None = None
    for pod in active:
        wait = available_in(pod, min_ready, now)
        if wait is None:
            continue
        ready += 1
        if wait <= 0:
            available += 1
        else:
            recheck = wait if recheck is None else min(recheck, wait)
    status: dict[str, Any] = {
        "replicas": len(active),
        "fullyLabeledReplicas": sum(
            1 for p in active if match_labels(template_labels, labels_of(p))
        ),
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": meta(rs).get("generation") or 1,
    }
    terminating = sum(1 for p in pods if is_terminating(p))
    status["terminatingReplicas"] = terminating
    return status, recheck


def status_differs(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    current = current or {}
    # The API omits zero counts; treat absent and 0 alike so a write is never repeated.
    return any((current.get(k) or 0) != (v or 0) for k, v in desired.items())


# ----------------------------------------------------------------------- controller


class ReplicaSetController:
    def __init__(self, cluster: Any, replicasets: Informer, pods: Informer, events: Recorder):
        self.cluster = cluster
        self.replicasets = replicasets
        self.pods = pods
        self.events = events
        self.queue = WorkQueue()
        replicasets.add_handler(self._on_rs)
        pods.add_handler(self._on_pod)

    def tasks(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(
                run_worker("replicaset", self.queue, self.reconcile, [self.replicasets, self.pods]),
                name="localcluster-replicaset",
            )
        ]

    def _on_rs(self, event_type: str, old: Obj | None, new: Obj | None) -> None:
        if (
            new is not None
            and old is not None
            and old.get("spec") == new.get("spec")
            and meta(old).get("deletionTimestamp") == meta(new).get("deletionTimestamp")
        ):
            return  # our own status write
        self.queue.add(key_of(new or old or {}))

    def _on_pod(self, event_type: str, old: Obj | None, new: Obj | None) -> None:
        uid = None
        for obj in (new, old):
            if obj is None:
                continue
            for ref in meta(obj).get("ownerReferences") or []:
                if ref.get("controller") and ref.get("kind") == "ReplicaSet":
                    uid = ref.get("uid")
        if uid is None:
            return
        for rs in self.replicasets.by_index("uid", uid):
            self.queue.add_after(key_of(rs), BATCH_SECONDS)

    async def reconcile(self, key: Key) -> None:
        rs = self.replicasets.get(*key)
        if rs is None:
            return
        now = now_utc()
        pods = self.pods.by_index("controller", uid_of(rs))
        if not is_terminating(rs):
            desired = int((rs.get("spec") or {}).get("replicas", 1) or 0)
            active = [p for p in pods if is_active(p)]
            diff = len(active) - desired
            if diff < 0:
                await self._create_pods(rs, -diff, now)
            elif diff > 0:
                await self._delete_pods(rs, pods_to_delete(active, diff), now)
            pods = self.pods.by_index("controller", uid_of(rs))
        status, recheck = replicaset_status(rs, pods, now)
        if status_differs(rs.get("status"), status):
            updated = await self.cluster.patch(
                "apps/v1/replicasets", key[0], key[1], {"status": status}, subresource="status"
            )
            self.replicasets.observe(updated)
        if recheck is not None:
            self.queue.add_after(key, recheck + 0.01)

    async def _create_pods(self, rs: Obj, count: int, now: datetime) -> None:
        ns, name = key_of(rs)
        for _ in range(count):
            for _attempt in range(5):
                pod = build_pod(rs, f"{name}-{random_suffix()}")
                try:
                    created = await self.cluster.create("v1/pods", pod)
                except Exception as exc:
                    if error_code(exc) == 409:
                        continue  # name taken: draw another
                    raise
                self.pods.observe(created)
                log.debug("Created Pod %s/%s", ns, created["metadata"]["name"])
                await self.events.record(
                    rs,
                    "ReplicaSet",
                    "apps/v1",
                    "Normal",
                    "SuccessfulCreate",
                    f"Created pod: {created['metadata']['name']}",
                    now,
                )
                break

    async def _delete_pods(
        self, rs: Obj, victims: Sequence[Mapping[str, Any]], now: datetime
    ) -> None:
        for pod in victims:
            ns, name = key_of(pod)
            try:
                await self.cluster.delete("v1/pods", ns, name)
            except Exception as exc:
                if error_code(exc) != 404:
                    raise
            await refresh(self.cluster, self.pods, "v1/pods", pod)
            log.debug("Deleted Pod %s/%s", ns, name)
            await self.events.record(
                rs,
                "ReplicaSet",
                "apps/v1",
                "Normal",
                "SuccessfulDelete",
                f"Deleted pod: {name}",
                now,
            )


async def refresh(cluster: Any, informer: Informer, resource: str, obj: Mapping[str, Any]) -> None:
    """After a delete: learn whether the object is gone or terminating, so the next
    decision does not count it as live before its watch event arrives."""
    ns, name = key_of(obj)
    try:
        current = await cluster.get(resource, ns or None, name)
    except Exception as exc:
        if error_code(exc) != 404:
            raise
        informer.observe_deleted(dict(obj))
        return
    if uid_of(current) != uid_of(obj):
        informer.observe_deleted(dict(obj))
    informer.observe(current)
