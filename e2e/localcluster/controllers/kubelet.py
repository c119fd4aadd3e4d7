"""The kubelet of every simulated node: runs bound pods according to their behaviour.

A pod's status is a pure function of its spec, its behaviour, when that behaviour took
effect and the current time (``pod_status``). The controller recomputes it when the pod
or the behaviour rules change and when the next transition is due (a timer per pod, not
a polling loop), and writes it only when it differs from what is stored.

Graceful deletion: once the API server has set ``deletionTimestamp``, the kubelet waits
``min(deletionGracePeriodSeconds, deletion_grace_seconds)`` and removes the pod.

Pods of nodes labelled ``localcluster.tfleet.dev/runtime: process`` are not simulated: the
process runtime (``process/``) runs their containers as real processes.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import yaml

from . import behaviour as bh
from .common import (
    Informer,
    Key,
    Obj,
    Recorder,
    WorkQueue,
    add_seconds,
    error_code,
    fmt_time,
    is_terminating,
    key_of,
    log,
    meta,
    now_utc,
    parse_time,
    run_worker,
    seconds_until,
    uid_of,
)
from .nodes import node_internal_ip, node_is_ready
from .process.runtime import is_process_node
from .replicaset import refresh
from .scheduler import tolerates, with_condition

KUBELET_OWNED_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")


@dataclass(frozen=True)
class Runtime:
    """What the kubelet remembers about a pod it runs."""

    behaviour: bh.Behaviour
    since: datetime  # when the current behaviour took effect (containers (re)started)
    started: datetime  # status.startTime
    pod_ip: str
    host_ip: str
    restart_base: int = 0  # restarts counted before ``since``


@dataclass(frozen=True)
class Timing:
    ready_delay: float = 0.2
    crash_interval: float = 0.3


# ------------------------------------------------------------------------ pure logic


def image_id(image: str) -> str:
    name = image.split("@", 1)[0]
    repo = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    first = repo.split("/", 1)[0]
    if "/" not in repo:
        repo = f"docker.io/library/{repo}"
    elif "." not in first and ":" not in first and first != "localhost":
        repo = f"docker.io/{repo}"
    return f"{repo}@sha256:{hashlib.sha256(name.encode()).hexdigest()}"


def container_id(pod_uid: str, name: str, restarts: int) -> str:
    return "containerd://" + hashlib.sha256(f"{pod_uid}/{name}/{restarts}".encode()).hexdigest()


def _condition(
    kind: str, ok: bool, now: datetime, reason: str | None = None, message: str | None = None
) -> dict[str, Any]:
    cond: dict[str, Any] = {
        "type": kind,
        "status": "True" if ok else "False",
        "lastProbeTime": None,
        "lastTransitionTime": fmt_time(now),
    }
    if not ok and reason:
        cond["reason"] = reason
    if not ok and message:
        cond["message"] = message
    return cond


def pod_status(
    pod: Mapping[str, Any], rt: Runtime, now: datetime, timing: Timing
) -> tuple[dict[str, Any], float | None]:
    """The status the kubelet reports for ``pod`` at ``now``, and the number of seconds
    until it would next change (None when it is stable)."""
    spec = pod.get("spec") or {}
    metadata = pod.get("metadata") or {}
    uid = metadata.get("uid") or ""
    elapsed = (now - rt.since).total_seconds()
    kind = rt.behaviour.kind
    next_change: float | None = None
    since = fmt_time(rt.since)

    statuses = []
    phase = "Running"
    all_ready = True
    not_ready: list[str] = []
    for c in spec.get("containers") or []:
        name = c.get("name", "")
        image = c.get("image", "")
        st: dict[str, Any] = {
            "name": name,
            "image": image,
            "imageID": image_id(image),
            "restartCount": rt.restart_base,
            "lastState": {},
            "started": True,
            "ready": False,
        }
        if kind == bh.READY:
            delay = (
                timing.ready_delay if rt.behaviour.ready_after is None else rt.behaviour.ready_after
            )
            st["containerID"] = container_id(uid, name, rt.restart_base)
            st["state"] = {"running": {"startedAt": since}}
            st["ready"] = elapsed >= delay
            if not st["ready"]:
                next_change = max(delay - elapsed, 0.0)
        elif kind == bh.NEVER_READY:
            st["containerID"] = container_id(uid, name, rt.restart_base)
            st["state"] = {"running": {"startedAt": since}}
        elif kind == bh.CRASH_LOOP and spec.get("restartPolicy") == "Never":
            # Nothing restarts it: the container exits once and the pod has Failed.
            phase = "Failed"
            st["started"] = False
            st["containerID"] = container_id(uid, name, rt.restart_base)
            st["state"] = {
                "terminated": {
                    "exitCode": 1,
                    "reason": "Error",
                    "message": "container exited with code 1",
                    "startedAt": since,
                    "finishedAt": since,
                    "containerID": container_id(uid, name, rt.restart_base),
                }
            }
        elif kind == bh.CRASH_LOOP:
            crashes = int(elapsed // timing.crash_interval)
            restarts = rt.restart_base + 1 + crashes
            last_start = add_seconds(rt.since, crashes * timing.crash_interval)
            st["restartCount"] = restarts
            st["started"] = False
            st["containerID"] = container_id(uid, name, restarts - 1)
            st["lastState"] = {
                "terminated": {
                    "exitCode": 1,
                    "reason": "Error",
                    "message": "container exited with code 1",
                    "startedAt": fmt_time(last_start),
                    "finishedAt": fmt_time(last_start),
                    "containerID": container_id(uid, name, restarts - 1),
                }
            }
            st["state"] = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off 10s restarting failed container={name} "
                    f"pod={metadata.get('name')}_{metadata.get('namespace')}({uid})",
                }
            }
            next_change = (crashes + 1) * timing.crash_interval - elapsed
        elif kind == bh.IMAGE_PULL_ERROR:
            phase = "Pending"
            st["started"] = False
            if elapsed < timing.crash_interval:
                st["state"] = {
                    "waiting": {
                        "reason": "ErrImagePull",
                        "message": f'failed to pull and unpack image "{image}": failed to resolve reference '
                        f'"{image}": {image}: not found',
                    }
                }
                next_change = timing.crash_interval - elapsed
            else:
                st["state"] = {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": f'Back-off pulling image "{image}"',
                    }
                }
        if not st["ready"]:
            all_ready = False
            not_ready.append(name)
        statuses.append(st)

    init_statuses = []
    for c in spec.get("initContainers") or []:
        name = c.get("name", "")
        init_statuses.append(
            {
                "name": name,
                "image": c.get("image", ""),
                "imageID": image_id(c.get("image", "")),
                "containerID": container_id(uid, name, 0),
                "restartCount": 0,
                "ready": True,
                "started": False,
                "lastState": {},
                "state": {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "startedAt": fmt_time(rt.started),
                        "finishedAt": fmt_time(rt.started),
                    }
                },
            }
        )

    existing = (pod.get("status") or {}).get("conditions") or []
    by_type = {c.get("type"): c for c in existing}
    ready = all_ready and bool(statuses)
    ready_reason, ready_message = (
        "ContainersNotReady",
        f"containers with unready status: [{' '.join(not_ready)}]",
    )
    if ready:
        for gate in spec.get("readinessGates") or []:
            gate_type = gate.get("conditionType")
            gate_cond = by_type.get(gate_type)
            if gate_cond is None:
                ready, ready_reason = False, "ReadinessGatesNotReady"
                ready_message = (
                    f'corresponding condition of pod readiness gate "{gate_type}" does not exist.'
                )
                break
            if gate_cond.get("status") != "True":
                ready, ready_reason = False, "ReadinessGatesNotReady"
                ready_message = f'the status of pod readiness gate "{gate_type}" is not "True", but {gate_cond.get("status")}'
                break

    conditions = [dict(c) for c in existing]
    for cond in (
        _condition("PodReadyToStartContainers", True, now),
        _condition("Initialized", True, now),
        _condition("Ready", ready, now, ready_reason, ready_message),
        _condition(
            "ContainersReady",
            all_ready and bool(statuses),
            now,
            "ContainersNotReady",
            ready_message if not all_ready else None,
        ),
        _condition("PodScheduled", True, now),
    ):
        if (
            cond["type"] == "PodScheduled"
            and cond["type"] in by_type
            and by_type["PodScheduled"].get("status") == "True"
        ):
            continue
        conditions = with_condition(conditions, cond)
    order = {
        "PodReadyToStartContainers": 0,
        "Initialized": 1,
        "Ready": 2,
        "ContainersReady": 3,
        "PodScheduled": 4,
    }
    conditions.sort(key=lambda c: order.get(str(c.get("type")), 5))

    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": rt.host_ip,
        "hostIPs": [{"ip": rt.host_ip}],
        "podIP": rt.pod_ip,
        "podIPs": [{"ip": rt.pod_ip}],
        "startTime": fmt_time(rt.started),
        "containerStatuses": statuses,
    }
    if init_statuses:
        status["initContainerStatuses"] = init_statuses
    return status, next_change


def eviction_delay(pod: Mapping[str, Any], node: Mapping[str, Any], now: datetime) -> float | None:
    """Seconds until the pod must be evicted for the node's NoExecute taints (0: now),
    or None if it tolerates them all for good (the taint manager's rule)."""
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    delay: float | None = None
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") != "NoExecute":
            continue
        matching = [t for t in tolerations if tolerates(t, taint)]
        if not matching:
            return 0.0
        limits = [
            t["tolerationSeconds"] for t in matching if t.get("tolerationSeconds") is not None
        ]
        if not limits:
            continue  # tolerated forever
        added = parse_time(taint.get("timeAdded")) or now
        remaining = max(seconds_until(add_seconds(added, max(0, min(limits))), now), 0.0)
        delay = remaining if delay is None else min(delay, remaining)
    return delay


def not_ready_conditions(pod: Mapping[str, Any], now: datetime) -> list[dict[str, Any]]:
    """The pod's conditions with Ready turned False, as the node lifecycle controller
    marks the pods of a node that stopped reporting."""
    conditions = [dict(c) for c in (pod.get("status") or {}).get("conditions") or []]
    return with_condition(conditions, _condition("Ready", False, now))


def status_changes(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level status fields whose value differs from what is stored."""
    current = current or {}
    return {k: v for k, v in desired.items() if current.get(k) != v}


def restart_count(pod: Mapping[str, Any]) -> int:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return max((int(s.get("restartCount") or 0) for s in statuses), default=0)


class IPAllocator:
    """Pod IPs from each node's podCIDR, lowest free address first."""

    def __init__(self) -> None:
        self._used: dict[str, set[str]] = {}

    def allocate(self, node: Mapping[str, Any]) -> str:
        name = node["metadata"]["name"]
        cidr = (node.get("spec") or {}).get("podCIDR") or "10.244.0.0/24"
        network = ipaddress.ip_network(cidr, strict=False)
        used = self._used.setdefault(name, set())
        for host in network.hosts():
            ip = str(host)
            if host == network.network_address + 1:
                continue  # the node's own bridge address
            if ip not in used:
                used.add(ip)
                return ip
        raise RuntimeError(f"pod CIDR {cidr} of Node {name} is exhausted")

    def claim(self, node_name: str, ip: str) -> None:
        self._used.setdefault(node_name, set()).add(ip)

    def release(self, node_name: str, ip: str) -> None:
        self._used.get(node_name, set()).discard(ip)


# ----------------------------------------------------------------------- controller


class Kubelet:
    def __init__(
        self,
        cluster: Any,
        pods: Informer,
        nodes: Informer,
        events: Recorder,
        timing: Timing,
        deletion_grace: float = 0.2,
        process_options: Mapping[str, Any] | None = None,
    ):
        from .process import ProcessRuntime

        self.cluster = cluster
        self.pods = pods
        self.nodes = nodes
        self.events = events
        self.timing = timing
        self.deletion_grace = deletion_grace
        self.queue = WorkQueue()
        self.runtimes: dict[Key, Runtime] = {}
        self._runtime_node: dict[Key, str] = {}
        self._uids: dict[Key, str] = {}
        self.ips = IPAllocator()
        self.rules: list[bh.Rule] = []
        self.rules_synced = asyncio.Event()
        self._invalid_annotation_reported: set[str] = set()
        self._terminating_seen: dict[Key, datetime] = {}
        # names of every node ever seen: a pod bound to one that disappeared is orphaned
        self._known_nodes: set[str] = set()
        popts = dict(process_options or {})
        self.process = ProcessRuntime(
            cluster, pods, events, self.ips,
            storage_root=popts.get("storage_root"),
            backoff_scale=float(popts.get("backoff_scale", 1.0)),
            images=popts.get("images"),
        )
        self.process.requeue = self.queue.add
        self._process_unavailable_reported: set[str] = set()
        pods.add_handler(self._on_pod)
        nodes.add_handler(self._on_node)

    def tasks(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self._watch_rules(), name="localcluster-kubelet-rules"),
            asyncio.create_task(self._run(), name="localcluster-kubelet"),
        ]

    async def _run(self) -> None:
        try:
            await self.rules_synced.wait()
            await run_worker("kubelet", self.queue, self.reconcile, [self.pods, self.nodes])
        finally:
            await self.process.shutdown()

    def _on_pod(self, event_type: str, old: Obj | None, new: Obj | None) -> None:
        obj = new or old or {}
        key = key_of(obj)
        if (obj.get("spec") or {}).get("nodeName") or key in self.runtimes or key in self.process.workers:
            self.queue.add(key_of(obj))

    def _on_node(self, event_type: str, old: Obj | None, new: Obj | None) -> None:
        node = new or old or {}
        name = meta(node).get("name") or ""
        self._known_nodes.add(name)
        if (
            old is not None
            and new is not None
            and node_is_ready(old) == node_is_ready(new)
            and (old.get("spec") or {}).get("taints") == (new.get("spec") or {}).get("taints")
        ):
            return
        for pod in self.pods.by_index("node", name):
            self.queue.add(key_of(pod))

    # -- behaviour rules

    async def _watch_rules(self) -> None:
        queue = self.cluster.subscribe("v1/configmaps")
        try:
            try:
                cm = await self.cluster.get("v1/configmaps", bh.RULES_NAMESPACE, bh.RULES_CONFIGMAP)
            except Exception as exc:
                if error_code(exc) != 404:
                    raise
                cm = None
            await self._set_rules(cm)
            self.rules_synced.set()
            while True:
                event_type, obj = await queue.get()
                m = meta(obj)
                if m.get("namespace") != bh.RULES_NAMESPACE or m.get("name") != bh.RULES_CONFIGMAP:
                    continue
                await self._set_rules(None if event_type == "DELETED" else obj)
                for key in list(self.runtimes):
                    self.queue.add(key)
        finally:
            self.rules_synced.set()
            self.cluster.unsubscribe("v1/configmaps", queue)

    async def _set_rules(self, cm: Obj | None) -> None:
        try:
            self.rules = bh.rules_from_configmap(cm)
            if cm is not None:
                log.info(
                    "Loaded %d behaviour rule(s) from ConfigMap %s/%s",
                    len(self.rules),
                    bh.RULES_NAMESPACE,
                    bh.RULES_CONFIGMAP,
                )
        except (bh.BehaviourError, yaml.YAMLError) as exc:
            self.rules = []
            log.error(
                "Ignored invalid behaviour rules in ConfigMap %s/%s: %s",
                bh.RULES_NAMESPACE,
                bh.RULES_CONFIGMAP,
                exc,
            )
            if cm is not None:
                await self.events.record(
                    cm, "ConfigMap", "v1", "Warning", "InvalidBehaviourRules", str(exc)
                )

    # -- reconcile

    def _forget(self, key: Key) -> None:
        self.process.forget(key)
        rt = self.runtimes.pop(key, None)
        node = self._runtime_node.pop(key, None)
        self._uids.pop(key, None)
        self._terminating_seen.pop(key, None)
        if rt is not None and node is not None:
            self.ips.release(node, rt.pod_ip)

    async def reconcile(self, key: Key) -> None:
        pod = self.pods.get(*key)
        if pod is not None and key in self._uids and self._uids[key] != uid_of(pod):
            self._forget(key)  # a new pod with the same name
        if pod is None:
            self._forget(key)
            return
        node_name: str = (pod.get("spec") or {}).get("nodeName") or ""
        if not node_name:
            return  # not scheduled yet
        node = self.nodes.get(None, node_name)
        now = now_utc()
        if node is None:
            if node_name in self._known_nodes:
                # Its node is gone: the pod garbage collector removes orphans for good.
                await self._remove(key, pod, "Removed Pod %s/%s of deleted Node %s", node_name)
            return  # otherwise bound to a node nobody registered: it never starts
        if not node_is_ready(node):
            # A node that stopped reporting: nobody runs or finishes its pods; they are
            # only marked unready (and still evicted by NoExecute taints, below).
            if not is_terminating(pod):
                await self._evict_if_due(key, pod, node, now)
                conditions = not_ready_conditions(pod, now)
                if conditions != (pod.get("status") or {}).get("conditions"):
                    updated = await self.cluster.patch(
                        "v1/pods",
                        key[0],
                        key[1],
                        {"status": {"conditions": conditions}},
                        subresource="status",
                    )
                    self.pods.observe(updated)
            return
        if is_process_node(node) or key in self.process.workers:
            await self._reconcile_process(key, pod, node, now)
            return
        if is_terminating(pod):
            await self._finish_deletion(key, pod, now)
            return
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        if await self._evict_if_due(key, pod, node, now):
            return
        behaviour = await self._behaviour(pod)
        rt = self.runtimes.get(key)
        if rt is None:
            ip = (pod.get("status") or {}).get("podIP")
            fixed_ip = ((pod.get("metadata") or {}).get("annotations") or {}).get(bh.POD_IP_ANNOTATION)
            if fixed_ip:
                # A test runs the pod's processes itself (say, on 127.0.0.1) and points the
                # pod there; the address is not taken from the node's range.
                ip = fixed_ip
            elif ip:
                self.ips.claim(node_name, ip)
            else:
                ip = self.ips.allocate(node)
            started = parse_time((pod.get("status") or {}).get("startTime")) or now
            rt = Runtime(
                behaviour,
                now,
                started,
                ip,
                node_internal_ip(node) or "172.18.0.1",
                restart_count(pod),
            )
            self.runtimes[key] = rt
            self._runtime_node[key] = node_name
            self._uids[key] = uid_of(pod)
            await self._announce(pod, rt, now)
        elif rt.behaviour != behaviour:
            # The behaviour changed (a rule or the annotation): the containers restart
            # into the new one, keeping the restart count they had.
            rt = replace(rt, behaviour=behaviour, since=now, restart_base=restart_count(pod))
            self.runtimes[key] = rt
            log.info("Switched Pod %s/%s to behaviour %s", key[0], key[1], behaviour.source)
            await self._announce(pod, rt, now)
        desired, next_change = pod_status(pod, rt, now, self.timing)
        changes = status_changes(pod.get("status"), desired)
        if changes:
            updated = await self.cluster.patch(
                "v1/pods", key[0], key[1], {"status": changes}, subresource="status"
            )
            self.pods.observe(updated)
        if next_change is not None:
            # a few ms late, so that the recomputation lands after the threshold
            self.queue.add_after(key, next_change + 0.005)

    async def _reconcile_process(self, key: Key, pod: Obj, node: Obj, now: datetime) -> None:
        """A pod of a process node: its pod worker runs it (process/worker.py)."""
        from .process import ProcessRuntimeUnavailable

        if key in self._uids and self._uids[key] != uid_of(pod):
            self._forget(key)
        if is_terminating(pod) and key not in self.process.workers:
            # Deleted before anything of it ran here: nothing to stop, only the final delete.
            await self._remove(key, pod, "Removed Pod %s/%s that never ran on Node %s",
                               node["metadata"]["name"])
            return
        if not self.process.started:
            try:
                self.process.start()
            except ProcessRuntimeUnavailable as exc:
                if uid_of(pod) not in self._process_unavailable_reported:
                    self._process_unavailable_reported.add(uid_of(pod))
                    log.error("Cannot run Pod %s/%s: %s", key[0], key[1], exc)
                    await self.events.record(pod, "Pod", "v1", "Warning",
                                             "FailedCreatePodSandBox", str(exc), now)
                return
        if not is_terminating(pod) and await self._evict_if_due(key, pod, node, now):
            return
        self._uids[key] = uid_of(pod)
        self.process.ensure(key, pod, node)

    async def _behaviour(self, pod: Obj) -> bh.Behaviour:
        try:
            return bh.behaviour_for(pod, self.rules)
        except bh.PodBehaviourError as exc:
            uid = uid_of(pod)
            if uid not in self._invalid_annotation_reported:
                self._invalid_annotation_reported.add(uid)
                log.warning("Ignored invalid behaviour of Pod %s/%s: %s", *key_of(pod), exc)
                await self.events.record(pod, "Pod", "v1", "Warning", "InvalidBehaviour", str(exc))
            return bh.DEFAULT

    async def _announce(self, pod: Obj, rt: Runtime, now: datetime) -> None:
        kind = rt.behaviour.kind
        if kind == bh.CRASH_LOOP:
            await self.events.record(
                pod, "Pod", "v1", "Warning", "BackOff", "Back-off restarting failed container", now
            )
        elif kind == bh.IMAGE_PULL_ERROR:
            images = ", ".join(
                c.get("image", "") for c in (pod.get("spec") or {}).get("containers") or []
            )
            await self.events.record(
                pod,
                "Pod",
                "v1",
                "Warning",
                "Failed",
                f'Failed to pull image "{images}": not found',
                now,
            )
        # No Normal "Started" event for healthy pods: a write per pod that nobody reads.

    async def _evict_if_due(self, key: Key, pod: Obj, node: Obj, now: datetime) -> bool:
        delay = eviction_delay(pod, node, now)
        if delay is None:
            return False
        if delay > 0:
            self.queue.add_after(key, delay + 0.005)
            return False
        try:
            await self.cluster.delete("v1/pods", key[0], key[1])
        except Exception as exc:
            if error_code(exc) != 404:
                raise
        await refresh(self.cluster, self.pods, "v1/pods", pod)
        log.info(
            "Evicted Pod %s/%s from Node %s for a NoExecute taint",
            key[0],
            key[1],
            node["metadata"]["name"],
        )
        await self.events.record(
            pod,
            "Pod",
            "v1",
            "Normal",
            "TaintManagerEviction",
            f"Marking for deletion Pod {key[0]}/{key[1]}",
            now,
        )
        return True

    async def _remove(self, key: Key, pod: Obj, message: str, node_name: str) -> None:
        try:
            await force_delete(self.cluster, "v1/pods", key[0], key[1])
        except Exception as exc:
            if error_code(exc) != 404:
                raise
        self.pods.observe_deleted(pod)
        self._forget(key)
        log.info(message, key[0], key[1], node_name)

    async def _finish_deletion(self, key: Key, pod: Obj, now: datetime) -> None:
        grace = meta(pod).get("deletionGracePeriodSeconds")
        grace_seconds = float(grace) if grace is not None else 30.0
        # The simulated containers stop within ``deletion_grace`` of the moment the
        # kubelet saw the deletion, rather than using the whole grace period.
        seen = self._terminating_seen.setdefault(key, now)
        due = add_seconds(seen, min(grace_seconds, self.deletion_grace))
        wait = seconds_until(due, now)
        if wait > 0:
            self.queue.add_after(key, wait)
            return
        try:
            await force_delete(self.cluster, "v1/pods", key[0], key[1])
        except Exception as exc:
            if error_code(exc) != 404:
                raise
        self.pods.observe_deleted(pod)
        self._forget(key)
        log.debug("Removed terminated Pod %s/%s", *key)


async def force_delete(cluster: Any, resource: str, namespace: str | None, name: str) -> None:
    """Delete with a zero grace period: the kubelet confirming that the containers are
    gone. Stores without a grace parameter delete immediately anyway."""
    try:
        await cluster.delete(resource, namespace, name, grace_period_seconds=0)
    except TypeError:
        await cluster.delete(resource, namespace, name)
