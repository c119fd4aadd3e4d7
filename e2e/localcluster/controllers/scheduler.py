"""The scheduler: binds pending pods to nodes.

Filters run in the order of the real default profile and stop at the first one that
rejects a node: NodeUnschedulable, TaintToleration, NodeAffinity (nodeSelector and
required node affinity), NodeResourcesFit. Among the nodes that pass, the least
allocated one wins (ties by name), which spreads replicas the way the default scoring
roughly does. A pod that fits nowhere stays Pending with ``PodScheduled=False``,
reason ``Unschedulable``, the real message format and a ``FailedScheduling`` event.
Unschedulable pods are retried when a node changes or a bound pod goes away.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Any

from .common import (
    Informer,
    Key,
    Obj,
    Recorder,
    WorkQueue,
    error_code,
    fmt_time,
    is_terminating,
    key_of,
    labels_of,
    log,
    match_labels,
    match_requirement,
    now_utc,
    parse_quantity,
    run_worker,
)

SCHEDULER_NAME = "default-scheduler"

NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_VICTIMS = "No preemption victims found for incoming pod"


# ------------------------------------------------------------------------ pure logic


def container_requests(container: Mapping[str, Any]) -> dict[str, Fraction]:
    """A container's requests; a resource with only a limit requests its limit (as the
    API server defaults it)."""
    resources = container.get("resources") or {}
    out = {name: parse_quantity(v) for name, v in (resources.get("limits") or {}).items()}
    out.update({name: parse_quantity(v) for name, v in (resources.get("requests") or {}).items()})
    return out


def pod_requests(pod: Mapping[str, Any]) -> dict[str, Fraction]:
    """Effective requests: the sum over containers, at least the largest init container
    (they run one at a time before the others), plus the pod overhead."""
    spec = pod.get("spec") or {}
    total: dict[str, Fraction] = {}
    for c in spec.get("containers") or []:
        for name, qty in container_requests(c).items():
            total[name] = total.get(name, Fraction(0)) + qty
    for c in spec.get("initContainers") or []:
        for name, qty in container_requests(c).items():
            if qty > total.get(name, 0):
                total[name] = qty
    for name, qty in (spec.get("overhead") or {}).items():
        total[name] = total.get(name, Fraction(0)) + parse_quantity(qty)
    return {k: v for k, v in total.items() if v}


_ALLOCATABLE_CACHE: dict[tuple[str, str], dict[str, Fraction]] = {}


def node_allocatable(node: Mapping[str, Any]) -> dict[str, Fraction]:
    status = node.get("status") or {}
    alloc = status.get("allocatable") or status.get("capacity") or {}
    # Parsed once per node version: this runs for every node for every pod scheduled.
    cache_key = (
        (node.get("metadata") or {}).get("uid") or "",
        (node.get("metadata") or {}).get("resourceVersion") or "",
    )
    if cache_key[1] and cache_key in _ALLOCATABLE_CACHE:
        return _ALLOCATABLE_CACHE[cache_key]
    parsed = {name: parse_quantity(v) for name, v in alloc.items()}
    if cache_key[1]:
        if len(_ALLOCATABLE_CACHE) > 1000:
            _ALLOCATABLE_CACHE.clear()
        _ALLOCATABLE_CACHE[cache_key] = parsed
    return parsed


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return not key or key == taint.get("key")
    if key != taint.get("key"):
        return False
    return (toleration.get("value") or "") == (taint.get("value") or "")


def untolerated_taint(pod: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The first NoSchedule/NoExecute taint of the node that the pod does not tolerate."""
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(tolerates(t, taint) for t in tolerations):
            return dict(taint)
    return None


def node_selector_term_matches(term: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False  # an empty term matches no objects
    labels = labels_of(node)
    if not all(match_requirement(r, labels) for r in exprs):
        return False
    node_fields = {"metadata.name": (node.get("metadata") or {}).get("name", "")}
    return all(match_requirement(r, node_fields) for r in fields)


def node_affinity_matches(pod: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    if not match_labels(spec.get("nodeSelector"), labels_of(node)):
        return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or None
    if required is None:
        return True
    terms = required.get("nodeSelectorTerms") or []
    return any(node_selector_term_matches(t, node) for t in terms)


@dataclass
class NodeVerdict:
    reasons: list[str] = field(default_factory=list)
    # True when evicting pods could not help (taints, affinity, cordon, a request
    # beyond the node's allocatable)
    unresolvable: bool = False


def filter_node(
    pod: Mapping[str, Any],
    requests: Mapping[str, Fraction],
    node: Mapping[str, Any],
    used: Mapping[str, Fraction | int],
) -> NodeVerdict:
    """Why ``pod`` cannot run on ``node`` given what the node's pods already use
    (``used`` includes a "pods" count). No reasons means it fits."""
    spec = node.get("spec") or {}
    if spec.get("unschedulable"):
        cordon = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
        if not any(tolerates(t, cordon) for t in (pod.get("spec") or {}).get("tolerations") or []):
            return NodeVerdict(["node(s) were unschedulable"], True)
    taint = untolerated_taint(pod, node)
    if taint is not None:
        return NodeVerdict(
            [f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"],
            True,
        )
    if not node_affinity_matches(pod, node):
        return NodeVerdict(["node(s) didn't match Pod's node affinity/selector"], True)
    alloc = node_allocatable(node)
    reasons = []
    # A request larger than the node's whole allocatable cannot be met by evicting
    # anything, which the preemption diagnosis reports as "not helpful".
    unresolvable = False
    if used.get("pods", 0) + 1 > alloc.get("pods", Fraction(110)):
        reasons.append("Too many pods")
    for name in sorted(requests):
        if name == "pods":
            continue
        if used.get(name, 0) + requests[name] > alloc.get(name, 0):
            reasons.append(f"Insufficient {name}")
            unresolvable = unresolvable or requests[name] > alloc.get(name, 0)
    return NodeVerdict(reasons, unresolvable)


def score(
    requests: Mapping[str, Fraction], node: Mapping[str, Any], used: Mapping[str, Fraction | int]
) -> float:
    """Lower is better: the mean fraction of cpu and memory in use after placing the pod."""
    alloc = node_allocatable(node)
    fractions = []
    for name in ("cpu", "memory"):
        cap = alloc.get(name)
        if cap:
            fractions.append(float((used.get(name, 0) + requests.get(name, 0)) / cap))
    pods_cap = alloc.get("pods") or Fraction(110)
    fractions.append(float((used.get("pods", 0) + 1) / pods_cap))
    return sum(fractions) / len(fractions)


def unschedulable_message(total_nodes: int, verdicts: Mapping[str, NodeVerdict]) -> str:
    """The FitError text of the real scheduler, preemption diagnosis included."""
    head = f"0/{total_nodes} nodes are available"
    if total_nodes == 0:
        return "no nodes available to schedule pods"
    histogram: Counter[str] = Counter()
    preemption: Counter[str] = Counter()
    for verdict in verdicts.values():
        histogram.update(verdict.reasons)
        preemption[NOT_HELPFUL if verdict.unresolvable else NO_VICTIMS] += 1
    reasons = ", ".join(sorted(f"{n} {r}" for r, n in histogram.items()))
    post = ", ".join(sorted(f"{n} {r}" for r, n in preemption.items()))
    return f"{head}: {reasons}. preemption: {head}: {post}."


@dataclass
class Decision:
    node: str | None
    message: str = ""


def schedule(
    pod: Mapping[str, Any],
    nodes: Sequence[Mapping[str, Any]],
    used_by_node: Mapping[str, Mapping[str, Fraction | int]],
) -> Decision:
    requests = pod_requests(pod)
    verdicts: dict[str, NodeVerdict] = {}
    best: tuple[float, str] | None = None
    for node in nodes:
        name = node["metadata"]["name"]
        used = used_by_node.get(name) or {}
        verdict = filter_node(pod, requests, node, used)
        if verdict.reasons:
            verdicts[name] = verdict
            continue
        candidate = (score(requests, node, used), name)
        if best is None or candidate < best:
            best = candidate
    if best is not None:
        return Decision(best[1])
    return Decision(None, unschedulable_message(len(nodes), verdicts))


def is_pending_unbound(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    if spec.get("nodeName") or is_terminating(pod):
        return False
    if (spec.get("schedulerName") or SCHEDULER_NAME) != SCHEDULER_NAME:
        return False
    return (pod.get("status") or {}).get("phase") in (None, "", "Pending")


def consumes_resources(pod: Mapping[str, Any]) -> bool:
    """Bound pods hold their requests until they finish or are gone; a terminating pod
    still holds them (its containers are still running)."""
    return bool((pod.get("spec") or {}).get("nodeName")) and (pod.get("status") or {}).get(
        "phase"
    ) not in (
        "Succeeded",
        "Failed",
    )


def scheduled_condition(
    status: str, reason: str | None, message: str | None, now: datetime
) -> dict[str, Any]:
    cond: dict[str, Any] = {
        "type": "PodScheduled",
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": fmt_time(now),
    }
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def with_condition(
    conditions: Sequence[Mapping[str, Any]], new: dict[str, Any]
) -> list[dict[str, Any]]:
    """Replace the condition of the same type, keeping lastTransitionTime when the status
    did not flip."""
    out = []
    replaced = False
    for cond in conditions:
        if cond.get("type") == new["type"]:
            merged = dict(new)
            if cond.get("status") == new["status"] and cond.get("lastTransitionTime"):
                merged["lastTransitionTime"] = cond["lastTransitionTime"]
            out.append(merged)
            replaced = True
        else:
            out.append(dict(cond))
    if not replaced:
        out.append(new)
    return out


# ----------------------------------------------------------------------- controller


class Scheduler:
    def __init__(self, cluster: Any, pods: Informer, nodes: Informer, events: Recorder):
        self.cluster = cluster
        self.pods = pods
        self.nodes = nodes
        self.events = events
        self.queue = WorkQueue()
        # node name -> resources held by the pods bound to it (kept up to date from events)
        self.used: dict[str, Counter[str]] = {}
        self._held: dict[Key, tuple[str, dict[str, Fraction]]] = {}
        self.unschedulable: set[Key] = set()
        self._retry_pending = False
        pods.add_handler(self._on_pod)
        nodes.add_handler(self._on_node)

    def tasks(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(
                run_worker("scheduler", self.queue, self.reconcile, [self.pods, self.nodes]),
                name="localcluster-scheduler",
            )
        ]

    def _account(
        self, key: Key, pod: Mapping[str, Any] | None, old: Mapping[str, Any] | None = None
    ) -> None:
        previous = self._held.get(key)
        if (
            previous is not None
            and pod is not None
            and old is not None
            and consumes_resources(pod)
            and pod["spec"]["nodeName"] == previous[0]
            and (old.get("spec") or {}).get("containers")
            == (pod.get("spec") or {}).get("containers")
        ):
            return  # a status update: same node, same requests
        previous = self._held.pop(key, None)
        if previous is not None:
            node, requests = previous
            bucket = self.used.setdefault(node, Counter())
            bucket.subtract(requests)
            bucket["pods"] -= 1
        if pod is not None and consumes_resources(pod):
            node = pod["spec"]["nodeName"]
            requests = pod_requests(pod)
            bucket = self.used.setdefault(node, Counter())
            bucket.update(requests)
            bucket["pods"] += 1
            self._held[key] = (node, requests)
        if previous is not None and key not in self._held:
            self._retry_unschedulable()

    def _on_pod(self, event_type: str, old: Obj | None, new: Obj | None) -> None:
        key = key_of(new or old or {})
        self._account(key, new, old)
        if new is not None and is_pending_unbound(new):
            self.queue.add(key)
        else:
            self.unschedulable.discard(key)

    def _on_node(self, event_type: str, old: Obj | None, new: Obj | None) -> None:
        if (
            old is None
            or new is None
            or old.get("spec") != new.get("spec")
            or (
                (old.get("status") or {}).get("allocatable")
                != (new.get("status") or {}).get("allocatable")
            )
            or labels_of(old) != labels_of(new)
        ):
            self._retry_unschedulable()

    def _retry_unschedulable(self) -> None:
        # Many deletions can arrive at once (a scale-down); one pass over the
        # unschedulable pods after a short pause serves all of them.
        if self._retry_pending or not self.unschedulable:
            return
        self._retry_pending = True
        asyncio.get_running_loop().call_later(0.05, self._requeue_unschedulable)

    def _requeue_unschedulable(self) -> None:
        self._retry_pending = False
        for key in list(self.unschedulable):
            self.queue.add(key)

    async def reconcile(self, key: Key) -> None:
        pod = self.pods.get(*key)
        if pod is None or not is_pending_unbound(pod):
            self.unschedulable.discard(key)
            return
        nodes = sorted(self.nodes.all(), key=lambda n: n["metadata"]["name"])
        decision = schedule(pod, nodes, self.used)
        now = now_utc()
        conditions = (pod.get("status") or {}).get("conditions") or []
        if decision.node is None:
            self.unschedulable.add(key)
            cond = scheduled_condition("False", "Unschedulable", decision.message, now)
            current = next((c for c in conditions if c.get("type") == "PodScheduled"), None)
            if (
                current
                and current.get("status") == "False"
                and current.get("message") == decision.message
            ):
                return
            updated = await self.cluster.patch(
                "v1/pods",
                key[0],
                key[1],
                {"status": {"conditions": with_condition(conditions, cond)}},
                subresource="status",
            )
            self.pods.observe(updated)
            log.info("Failed to schedule Pod %s/%s: %s", key[0], key[1], decision.message)
            await self.events.record(
                pod, "Pod", "v1", "Warning", "FailedScheduling", decision.message, now
            )
            return
        self.unschedulable.discard(key)
        try:
            bound = await self.cluster.patch(
                "v1/pods", key[0], key[1], {"spec": {"nodeName": decision.node}}
            )
        except Exception as exc:
            if error_code(exc) in (404, 409, 422):
                return  # deleted or bound by someone else meanwhile
            raise
        self.pods.observe(bound)
        # A fresh pod gets PodScheduled=True with the kubelet's first status a moment
        # later (one write less per pod, which counts at fleet scale); a pod that was
        # reported Unschedulable must not show that next to its node name.
        if any(c.get("type") == "PodScheduled" for c in conditions):
            cond = scheduled_condition("True", None, None, now)
            current = (bound.get("status") or {}).get("conditions") or []
            updated = await self.cluster.patch(
                "v1/pods",
                key[0],
                key[1],
                {"status": {"conditions": with_condition(current, cond)}},
                subresource="status",
            )
            self.pods.observe(updated)
        log.debug("Bound Pod %s/%s to Node %s", key[0], key[1], decision.node)
        await self.events.record(
            pod,
            "Pod",
            "v1",
            "Normal",
            "Scheduled",
            f"Successfully assigned {key[0]}/{key[1]} to {decision.node}",
            now,
        )
