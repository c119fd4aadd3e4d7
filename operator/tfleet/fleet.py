"""The operator's runtime: an in-memory view of the fleet, and the reconcile loop over it.

Watch events (delivered by kopf) and the responses of tfleet's own writes both feed one
cache, so a reconcile never re-reads the API and never acts on a view older than its own
last write. Reconciles are level-based: whatever triggered one, it computes the whole
desired state and writes only the difference.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from tfleet import analysis, podhealth, reconcile, rollout, status
from tfleet.builders import LABEL_ISVC, MANAGER
from tfleet.kube import Kube, KubeError
from tfleet.reconcile import PodSummary
from tfleet.schema import duration_seconds

log = logging.getLogger(__name__)

Manifest = dict[str, Any]
Key = tuple[str, str]  # (namespace, name) of an InferenceService

MAX_BACKOFF_SECONDS = 60.0
# Event types from the watches (kopf's initial listing has None; the index handlers pass
# INDEXED); the cache also takes the responses of tfleet's own writes.
WATCHED = (None, "ADDED", "MODIFIED", "DELETED", "INDEXED")
# How long a status change that nobody waits for may be held back so that the changes
# right behind it (pods turning ready one by one) go out in the same write.
STATUS_COALESCE_SECONDS = 1.0
# The first status of a new InferenceService waits longer, for Ready: nobody waits for a
# first status that says "not ready yet" (kubectl wait waits for the flip itself).
FIRST_STATUS_SECONDS = 10.0
# How often a pod that is not ready has its health bridge asked why.
BRIDGE_POLL_SECONDS = 5.0
# How long an InferenceService may stay not Ready before its pods are looked at for a reason.
PODS_LOOKED_AT_AFTER_SECONDS = 10.0


utcnow = rollout.utc_now


def _rv(obj: Manifest) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


def _slim(obj: Manifest) -> Manifest:
    """The object as the cache keeps it: managedFields can be most of an object's size, and
    nothing in tfleet reads them."""
    meta = obj.get("metadata") or {}
    if "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def _newer(candidate: Manifest, current: Manifest | None) -> bool:
    # resourceVersions are opaque by contract, but every apiserver we target (etcd-backed and
    # the local one) issues increasing integers; a non-integer one is always taken.
    return current is None or _rv(candidate) == 0 or _rv(candidate) >= _rv(current)


class Fleet:
    def __init__(self, kube: Kube, clock: Callable[[], datetime] = utcnow,
                 schedule: Callable[[float, Callable[[], None]], Any] | None = None,
                 status_coalesce_seconds: float = STATUS_COALESCE_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic):
        self.kube = kube
        self.clock = clock
        self.monotonic = monotonic
        self.status_coalesce_seconds = status_coalesce_seconds
        self._status_due: dict[Key, float] = {}  # monotonic deadline of a held-back status write
        self._schedule = schedule or _timer
        self._isvcs: dict[Key, Manifest] = {}
        self._children: dict[Key, dict[reconcile.ChildKey, Manifest]] = {}
        self._wakeups: dict[Key, float] = {}  # monotonic time of the next scheduled reconcile
        self._checks: dict[Key, tuple[str, float, analysis.Result]] = {}  # canary, when, result
        self._bridge_answers: dict[tuple[str, str], tuple[float, str]] = {}  # (ns, pod) -> (when, load error)
        self._locks: dict[Key, threading.Lock] = {}
        self._failures: dict[Key, int] = {}
        self._guard = threading.Lock()
        # Keys whose watch brought something the cache did not have yet (not the echo of
        # tfleet's own write, whose response is cached already).
        self._news: set[Key] = set()
        # The work queue: a key is queued at most once; a key that changes while it is being
        # reconciled is reconciled again right after, by the same worker pool.
        self._queue: queue.SimpleQueue[Key] = queue.SimpleQueue()
        self._queued: set[Key] = set()
        self._running: set[Key] = set()
        self._dirty: set[Key] = set()
        self._workers: list[threading.Thread] = []

    # ------------------------------------------------------------------ observing

    def observe_isvc(self, event_type: str | None, body: Manifest) -> Key:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        with self._guard:
            if event_type == "DELETED":
                self._isvcs.pop(key, None)
                self._children.pop(key, None)
                self._failures.pop(key, None)
                self._news.discard(key)
            elif _newer(body, self._isvcs.get(key)):
                if event_type in WATCHED and _rv(body) != _rv(self._isvcs.get(key) or {"metadata": {}}):
                    self._news.add(key)
                self._isvcs[key] = _slim(body)
        return key

    def observe_child(self, event_type: str | None, body: Manifest) -> Key | None:
        meta = body["metadata"]
        parent = (meta.get("labels") or {}).get(LABEL_ISVC)
        if not parent:
            return None
        key = (meta["namespace"], parent)
        child = reconcile.child_key(body)
        with self._guard:
            children = self._children.setdefault(key, {})
            if event_type in ("DELETED", "REMOVED"):
                if children.get(child, {}).get("metadata", {}).get("uid") == meta.get("uid"):
                    children.pop(child, None)
                    if event_type == "DELETED":
                        self._news.add(key)
            elif _newer(body, children.get(child)):
                if event_type in WATCHED and _rv(body) != _rv(children.get(child) or {"metadata": {}}):
                    self._news.add(key)
                children[child] = _slim(body)
        return key

    def take_news(self, key: Key) -> bool:
        """Whether a watch brought news for `key` since the last call."""
        with self._guard:
            if key in self._news:
                self._news.discard(key)
                return True
            return False

    def knows(self, key: Key) -> bool:
        with self._guard:
            return key in self._isvcs

    def snapshot(self, key: Key) -> tuple[Manifest | None, dict[reconcile.ChildKey, Manifest]]:
        with self._guard:
            return self._isvcs.get(key), dict(self._children.get(key, {}))

    def pods(self, key: Key, body: Manifest) -> list[PodSummary]:
        """The serving pods, read only when someone waits for them (see `_pods_matter`).

        Pods are the most numerous and the busiest objects of a fleet; watching them all
        would cost the operator far more than these few reads during rollouts and outages.
        """
        if not self._pods_matter(body):
            return []
        items = self.kube.list_pods(key[0], f"{LABEL_ISVC}={key[1]}")
        return [s for s in (reconcile.summarize_pod(p) for p in items) if s is not None]

    def _pods_matter(self, body: Manifest) -> bool:
        """During a rollout (restarts and failures gate the steps), and once the
        InferenceService has not been Ready for a while (the status says why)."""
        st = body.get("status") or {}
        if ((st.get("rollout") or {}).get("phase")) in rollout.ACTIVE_PHASES:
            return True
        return self._not_ready_for(body) >= PODS_LOOKED_AT_AFTER_SECONDS

    def _not_ready_for(self, body: Manifest) -> float:
        ready = status.condition(body.get("status") or {}, status.READY) or {}
        since = rollout.parse_time(ready.get("lastTransitionTime"))
        # An invalid spec is not waiting for pods: the spec says why.
        if ready.get("status") != "False" or ready.get("reason") == status.INVALID_SPEC or since is None:
            return -1.0
        return (self.clock() - since).total_seconds()

    # ------------------------------------------------------------------ reconciling

    # ------------------------------------------------------------------ work queue

    def start_workers(self, count: int) -> None:
        """Reconcile from a queue with `count` threads instead of in the caller's thread."""
        for i in range(count):
            worker = threading.Thread(target=self._work, name=f"{MANAGER}-worker-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def enqueue(self, key: Key) -> None:
        """Ask for a reconcile of `key`: never blocks; bursts of events collapse into one."""
        if not self._workers:
            self.reconcile(key)
            return
        with self._guard:
            if key in self._running:
                self._dirty.add(key)
                return
            if key in self._queued:
                return
            self._queued.add(key)
        self._queue.put(key)

    def _work(self) -> None:
        while True:
            key = self._queue.get()
            with self._guard:
                self._queued.discard(key)
                self._running.add(key)
            try:
                self.reconcile(key)
            except Exception:  # a bug must not take a worker down with it
                log.exception("Failed to reconcile InferenceService %s/%s", *key)
            finally:
                with self._guard:
                    self._running.discard(key)
                    again = key in self._dirty
                    self._dirty.discard(key)
                if again:
                    self.enqueue(key)

    def _lock(self, key: Key) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def reconcile(self, key: Key) -> None:
        """Bring one InferenceService's children and status to the desired state."""
        with self._lock(key):
            try:
                self._reconcile(key)
            except KubeError as exc:
                self._on_failure(key, exc)
            else:
                with self._guard:
                    self._failures.pop(key, None)

    def _reconcile(self, key: Key) -> None:
        body, children = self.snapshot(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        namespace, name = key
        now = self.clock()
        pods = self._with_bridge_reports(key, body, self.pods(key, body))
        plan = reconcile.plan_children(body, children, pods, now, self._metric_check(key, body))
        rejected: str | None = None
        for manifest in plan.apply:
            try:
                self.observe_child("APPLIED", self.kube.apply(manifest))
            except KubeError as exc:
                if exc.retryable:
                    raise
                # The API server refused what the spec asked for (for example an invalid
                # affinity passed through): report it on the object instead of retrying.
                rejected = f"{manifest['kind']} {manifest['metadata']['name']} was rejected: {exc.message}"
                break
        if rejected is None:
            for deployment, replicas in plan.scale:
                self.observe_child("SCALED", self.kube.scale(deployment, replicas))
            for obj in plan.delete:
                self.kube.delete(obj)
                self.observe_child("REMOVED", obj)
            for event in plan.events:
                log.info("%s %s/%s: %s", event.reason, namespace, name, event.message)
                self.kube.post_event(body, event.type, event.reason, event.message)

        body, children = self.snapshot(key)
        if body is None:
            return
        status_plan = reconcile.plan_status(body, children, pods, rollout.format_time(now),
                                            plan.rollout, rejected=rejected)
        first = not (body.get("status") or {}).get("conditions")
        if status_plan.status is not None and self._status_may_wait(key, status_plan.status_urgent, first):
            pass
        elif status_plan.status is not None:
            updated = self.kube.patch_status(namespace, name, status_plan.status)
            self.observe_isvc("PATCHED", updated)
            log.debug("Updated status of InferenceService %s/%s", namespace, name)
        else:
            with self._guard:
                self._status_due.pop(key, None)
        for event in status_plan.events:
            if event.type == "Warning":
                log.warning("%s %s/%s: %s", event.reason, namespace, name, event.message)
            self.kube.post_event(body, event.type, event.reason, event.message)
        if plan.requeue_after is not None and rejected is None:
            self._wake_up(key, plan.requeue_after)
        latest, _ = self.snapshot(key)
        waited = self._not_ready_for(latest or {})
        if 0 <= waited < PODS_LOOKED_AT_AFTER_SECONDS:
            # Nothing may change on its own while pods fail to come up: look again then.
            self._wake_up(key, PODS_LOOKED_AT_AFTER_SECONDS - waited)

    def _status_may_wait(self, key: Key, urgent: bool, first: bool = False) -> bool:
        """Hold a non-urgent status change back for up to `status_coalesce_seconds` (a first
        status: up to FIRST_STATUS_SECONDS)."""
        now = self.monotonic()
        hold = max(self.status_coalesce_seconds, FIRST_STATUS_SECONDS) if first else self.status_coalesce_seconds
        with self._guard:
            due = self._status_due.get(key)
            if urgent or self.status_coalesce_seconds <= 0 or (due is not None and now >= due):
                self._status_due.pop(key, None)
                return False
            if due is not None:
                return True
            self._status_due[key] = now + hold
        self._wake_up(key, hold)
        return True

    def _with_bridge_reports(self, key: Key, body: Manifest, pods: list[PodSummary]) -> list[PodSummary]:
        """Ask the health bridges of pods that are not ready whether TF Serving failed to load
        the model. Only while someone waits for those pods: during a rollout, or while the
        InferenceService is not Ready. A healthy fleet is never polled."""
        waiting = [p for p in pods if not p.ready and p.ip and not p.crash_looping and not p.image_pull_failing]
        if not waiting:
            return pods
        ready = status.condition(body.get("status") or {}, status.READY) or {}
        phase = ((body.get("status") or {}).get("rollout") or {}).get("phase")
        if ready.get("status") != "False" and phase not in rollout.ACTIVE_PHASES:
            return pods
        now = self.monotonic()
        answers: dict[str, str] = {}
        for pod in waiting:
            with self._guard:
                cached = self._bridge_answers.get((key[0], pod.name))
            if cached is None or now - cached[0] >= BRIDGE_POLL_SECONDS:
                error = podhealth.fetch_load_error(pod.ip) or ""
                cached = (now, error)
                with self._guard:
                    self._bridge_answers[(key[0], pod.name)] = cached
                if error:
                    log.info("Pod %s/%s reports a model load failure: %s", key[0], pod.name, error)
            answers[pod.name] = cached[1]
        self._wake_up(key, BRIDGE_POLL_SECONDS)
        return [replace(p, load_error=answers[p.name]) if answers.get(p.name) else p for p in pods]

    def _metric_check(self, key: Key, body: Manifest) -> analysis.Result | None:
        """Run the canary's metric gate when it is due (once per interval per rollout)."""
        if not ((body.get("spec") or {}).get("rollout") or {}).get("analysis"):
            return None
        isvc, _ = reconcile.parse(body)
        gate = isvc.spec.rollout.analysis if isvc else None
        state = rollout.State.from_status((body.get("status") or {}).get("rollout"))
        if isvc is None or gate is None or gate.prometheus is None or state.canary is None:
            return None
        if state.phase not in (rollout.PROGRESSING, rollout.PROMOTING):
            return None
        interval = duration_seconds(gate.prometheus.interval)
        with self._guard:
            cached = self._checks.get(key)
        if cached and cached[0] == state.canary and time.monotonic() - cached[1] < interval:
            return cached[2]
        query = analysis.render_query(gate.prometheus, revision=state.canary, namespace=key[0], name=key[1])
        result = analysis.query_prometheus(gate.prometheus, query)
        with self._guard:
            self._checks[key] = (state.canary, time.monotonic(), result)
        log.info("Ran the metric check of InferenceService %s/%s: %s", *key, result.message)
        self._wake_up(key, interval)
        return result

    def _wake_up(self, key: Key, delay: float) -> None:
        """Reconcile again after `delay` seconds (a pause ends, a deadline passes).

        Only rollouts in progress ask for this; one pending wake-up per InferenceService.
        The small margin makes the pause measurably over when the reconcile runs.
        """
        due = time.monotonic() + delay + 0.05
        with self._guard:
            pending = self._wakeups.get(key)
            if pending is not None and pending <= due and pending > time.monotonic():
                return
            self._wakeups[key] = due

        def fire() -> None:
            with self._guard:
                if self._wakeups.get(key) == due:
                    del self._wakeups[key]
            self.enqueue(key)

        self._schedule(max(0.0, delay) + 0.05, fire)

    def _on_failure(self, key: Key, exc: KubeError) -> None:
        with self._guard:
            attempts = self._failures.get(key, 0) + 1
            self._failures[key] = attempts
        delay = min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** (attempts - 1))
        if exc.retryable:
            log.warning("Failed to reconcile InferenceService %s/%s, retrying in %.1fs: %s", *key, delay, exc)
            self._schedule(delay, lambda: self.enqueue(key))
        else:
            log.error("Failed to reconcile InferenceService %s/%s: %s", *key, exc)


def _timer(delay: float, fn: Callable[[], None]) -> threading.Timer:
    timer = threading.Timer(delay, fn)
    timer.daemon = True
    timer.name = f"{MANAGER}-retry"
    timer.start()
    return timer
