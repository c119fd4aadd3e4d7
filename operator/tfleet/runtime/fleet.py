"""The reconcile of one InferenceService, as one pass through the layers.

    observe   the cache's snapshot; pods and their bridges' reports, the metric gate
    parse     the spec, once
    plan      children (engine.plan.plan_children), then status (plan_status)
    execute   the writes (executor)
    record    the status patch, Events, when to look again (work queue)

`Fleet` wires the cache, the work queue, the executor and the observers together; each
lives in a module of its own. Reconciles are level-based: whatever triggered one, it
computes the whole desired state and writes only the difference.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tfleet.api.defaults import BUILT_IN, Defaults
from tfleet.api.times import format_time, parse_time, utc_now
from tfleet.api.vocabulary import ACTIVE_PHASES, ConditionType, EventType, Reason, isvc_selector
from tfleet.engine import plan, status
from tfleet.engine.observe import ChildKey, PodSummary, spent_controls, summarize_pod
from tfleet.engine.rollout import UNPACED, State
from tfleet.runtime import logs
from tfleet.runtime.cache import FleetCache, Key
from tfleet.runtime.executor import STATUS_COALESCE_SECONDS, Executor, StatusHold
from tfleet.runtime.kube import KubeClient, KubeError
from tfleet.runtime.observers import (
    BRIDGE_POLL_SECONDS,
    BridgeReports,
    MetricChecks,
    rollout_active,
)
from tfleet.runtime.pacing import RolloutSlots
from tfleet.runtime.workqueue import Schedule, Scheduler, WorkQueue

log = logging.getLogger(__name__)

Manifest = dict[str, Any]

# How long an InferenceService may stay not Ready, its Deployments unchanged, before its pods
# are looked at for a reason.
PODS_LOOKED_AT_AFTER_SECONDS = 10.0
# How often pods that are not ready are listed again while someone waits for them: at first,
# and at most (the interval doubles while nothing about them changes).
POD_RECHECK_SECONDS = BRIDGE_POLL_SECONDS
MAX_POD_RECHECK_SECONDS = 60.0


# How long the acknowledgement of a spec change that changes nothing tfleet does may wait
# for the next status change, while the InferenceService is not Ready (see `acknowledges_only`).
ACKNOWLEDGEMENT_HOLD_SECONDS = 60.0


def _ignore(*_: Any) -> None:
    return None


def _unpinned(body: Manifest) -> bool:
    model = ((body.get("spec") or {}).get("model") or {})
    return isinstance(model, dict) and model.get("version") is None


def after_the_status(child_plan: plan.ChildPlan, children: dict[ChildKey, Manifest]) -> list[Manifest]:
    """Children to create only once the status is written: a new autoscaler resizes its
    InferenceService at once (its spec.replicas, to within the autoscaler's bounds), and a
    status planned before that would then be refused as planned from an older version."""
    return [m for m in child_plan.apply
            if m["kind"] == "HorizontalPodAutoscaler" and ("HorizontalPodAutoscaler", m["metadata"]["name"]) not in children]


def _states(status_: dict[str, Any]) -> dict[Any, tuple[Any, Any]]:
    return {c.get("type"): (c.get("status"), c.get("reason")) for c in status_.get("conditions") or []}


def _only_counts_changed(previous: dict[str, Any], new: dict[str, Any]) -> bool:
    """No condition's status or reason changed, but for the first pod serving (ModelAvailable
    turning True: good news that Ready follows closely), and no rollout step moved."""
    before, after = _states(previous), _states(new)
    model_before, model_after = before.pop(ConditionType.MODEL_AVAILABLE, None), after.pop(ConditionType.MODEL_AVAILABLE, None)
    if before != after or (model_after != model_before and (model_after or ("",))[0] != "True"):
        return False
    old_rollout, new_rollout = previous.get("rollout") or {}, new.get("rollout") or {}
    return all(old_rollout.get(k) == new_rollout.get(k) for k in plan.ROLLOUT_KEYS)


def acknowledges_only(previous: dict[str, Any], new: dict[str, Any], child_plan: plan.ChildPlan) -> bool:
    """Whether a new status acknowledges a newer generation of a spec whose change wrote no
    child, on an InferenceService that is not Ready, and changes nothing else but counts and
    messages (`_only_counts_changed`): nobody waits for that, since until Ready every reader
    sees the object in progress, acknowledged or not."""
    if child_plan.writes or child_plan.events:
        return False
    ready = status.condition(previous, ConditionType.READY) or {}
    if ready.get("status") == "True" or previous.get("observedGeneration") == new.get("observedGeneration"):
        return False
    return _only_counts_changed(previous, new)


def _spec_of(body: Manifest) -> tuple[Any, Any]:
    """Which object and which spec version a body is: a parse is reused only for the same."""
    meta = body.get("metadata") or {}
    return meta.get("uid"), meta.get("generation")


@dataclass(frozen=True)
class _Seen:
    """One InferenceService as the pass observed it."""

    body: Manifest
    children: dict[ChildKey, Manifest]
    pods: list[PodSummary]
    now: datetime


@dataclass(frozen=True)
class FleetHooks:
    """What the fleet reports as it works (the metrics listen). Each must be quick and must
    not raise: it runs on the reconciling thread."""

    # (key, result, seconds); result is success, retry (a retryable API failure) or error.
    reconciled: Callable[[Key, str, float], None] = _ignore
    # Every InferenceService body the fleet sees: watch events and its own status writes.
    observed_isvc: Callable[[str | None, Manifest], None] = _ignore
    # (key, writes): a reconcile wrote that many children (applies, scales, deletes).
    changed_children: Callable[[Key, int], None] = _ignore


class Fleet:
    def __init__(self, kube: KubeClient, clock: Callable[[], datetime] = utc_now,
                 schedule: Schedule | None = None,
                 status_coalesce_seconds: float = STATUS_COALESCE_SECONDS,
                 monotonic: Callable[[], float] = time.monotonic,
                 hooks: FleetHooks | None = None,
                 max_rollouts: int | None = None, drain_key: bytes | None = None,
                 defaults: Callable[[], Defaults] = lambda: BUILT_IN):
        self.kube = kube
        # The cluster's InferenceServiceDefaults in force (tfleet.runtime.cluster_defaults).
        self.defaults = defaults
        # The key new revisions' drain tokens derive from (see `tfleet.runtime.drain_key`);
        # None: new revisions get no token.
        self.drain_key = drain_key
        self.clock = clock
        self.monotonic = monotonic
        self.hooks = hooks or FleetHooks()
        self.cache = FleetCache(monotonic)
        self.slots = RolloutSlots(self.cache, max_rollouts)
        # Late-bound, so that what runs is whatever `reconcile` is when the key comes up.
        self.queue = WorkQueue(lambda key: self.reconcile(key), schedule or Scheduler(), monotonic)
        self.executor = Executor(kube, self.cache)
        self.status_hold = StatusHold(status_coalesce_seconds, monotonic)
        self.bridges = BridgeReports(monotonic)
        self.checks = MetricChecks(monotonic)
        self._locks: dict[Key, threading.Lock] = {}
        self._rechecks: dict[Key, tuple[tuple[Any, ...], float]] = {}  # how the pods looked, the delay
        # What a parse read, the defaults it applied, its result.
        self._parsed: dict[Key, tuple[tuple[Any, ...], Defaults, plan.Parsed]] = {}
        self._locks_guard = threading.Lock()

    # ------------------------------------------------------------------ seams kept stable

    @property
    def status_coalesce_seconds(self) -> float:
        return self.status_hold.coalesce_seconds

    @status_coalesce_seconds.setter
    def status_coalesce_seconds(self, value: float) -> None:
        self.status_hold.coalesce_seconds = value

    @property
    def _schedule(self) -> Schedule:
        return self.queue.schedule

    @_schedule.setter
    def _schedule(self, value: Schedule) -> None:
        self.queue.schedule = value

    # ------------------------------------------------------------------ events in

    def observe_isvc(self, event_type: str | None, body: Manifest) -> Key:
        key = self.cache.observe_isvc(event_type, body)
        if event_type == "DELETED":
            self._forget(key)
        self.hooks.observed_isvc(event_type, body)
        return key

    def observe_child(self, event_type: str | None, body: Manifest) -> Key | None:
        return self.cache.observe_child(event_type, body)

    def take_news(self, key: Key) -> bool:
        return self.cache.take_news(key)

    def knows(self, key: Key) -> bool:
        return self.cache.knows(key)

    def snapshot(self, key: Key) -> tuple[Manifest | None, dict[ChildKey, Manifest]]:
        return self.cache.snapshot(key)

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop reconciling: the passes in flight finish, nothing else starts. Before the leader
        Lease is released, so that two operators never write at once."""
        return self.queue.stop(timeout)

    def start_workers(self, count: int, open_now: bool = True) -> None:
        self.queue.start_workers(count, open_now)

    def enqueue(self, key: Key, first: bool = False) -> None:
        self.queue.enqueue(key, first)

    def enqueue_all(self) -> None:
        """Reconcile every InferenceService again (the defaults in force changed)."""
        for key in self.cache.isvc_keys():
            self.queue.enqueue(key)

    # ------------------------------------------------------------------ the pass

    def _lock(self, key: Key) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def reconcile(self, key: Key) -> None:
        """Bring one InferenceService's children and status to the desired state."""
        start = time.perf_counter()
        result = "success"
        with logs.object_context(*key), self._lock(key):
            try:
                self._reconcile(key)
            except KubeError as exc:
                result = "retry" if exc.retryable else "error"
                self._on_failure(key, exc)
            except Exception:
                result = "error"
                raise
            else:
                self.queue.succeeded(key)
            finally:
                self.slots.release(key)
                self.hooks.reconciled(key, result, time.perf_counter() - start)

    def _parse(self, key: Key, body: Manifest) -> plan.Parsed:
        """The parsed spec, reused while the object's spec, what else the parse reads of it and
        the defaults in force stay the same: an InferenceService is reconciled several times
        per spec (its Deployments turning ready, its autoscaler), and parsing and hashing its
        revision is a good part of a reconcile's CPU."""
        meta = body.get("metadata") or {}
        reads = (meta.get("uid"), meta.get("name"), meta.get("namespace"), meta.get("generation"),
                 meta.get("labels"), meta.get("annotations"), body.get("spec"))
        defaults = self.defaults()
        cached = self._parsed.get(key)
        if cached is not None and cached[0] == reads and cached[1] is defaults:
            return cached[2]
        parsed = plan.parse_once(body, defaults)
        self._parsed[key] = (reads, defaults, parsed)
        return parsed

    def _reconcile(self, key: Key) -> None:
        seen = self._observe(key)
        if seen is None:
            return
        parsed = self._parse(key, seen.body)
        state = State.from_status((seen.body.get("status") or {}).get("rollout"))
        gate = self.checks.check(key, parsed.isvc, state, seen.pods, seen.now)
        if gate.look_again_after is not None:
            # Scheduled now, so that a pass that fails below still runs the next check.
            self.queue.wake_up(key, gate.look_again_after)
        pacing = self.slots.pacing(key) if plan.would_start_rollout(parsed, state) else UNPACED
        child_plan = plan.plan_children(seen.body, seen.children, seen.pods, seen.now, gate.result, parsed=parsed,
                                        pacing=pacing, drain_key=self.drain_key)
        later = after_the_status(child_plan, seen.children)
        rejected = self.executor.carry_out_children(seen.body, child_plan, later)
        if child_plan.writes:
            self.hooks.changed_children(key, child_plan.writes)
        after = self._observe_writes(key, seen)
        if after is None:
            return

        def plan_status(view: _Seen, rejected: str | None) -> plan.StatusPlan:
            nonlocal parsed
            if _spec_of(view.body) != _spec_of(seen.body):
                parsed = self._parse(key, view.body)  # a new spec arrived while the children were written
            return plan.plan_status(view.body, view.children, seen.pods, format_time(seen.now),
                                    child_plan.rollout, rejected=rejected, parsed=parsed, check=gate.result)

        status_plan = plan_status(after, rejected)
        if later and rejected is None:
            # The status goes out before the children that would change the spec under it;
            # what they change is the next reconcile's to report (a status planned now could
            # miss the autoscaler's resize, and be refused for it).
            self.executor.post(after.body, status_plan.events)
            self._write_status(key, after.body, status_plan, child_plan)
            rejected = self.executor.apply(later)
            after = self._observe_writes(key, seen)
            if after is None:
                return
            status_plan = plan.StatusPlan() if rejected is None else plan_status(after, rejected)
        self._record(key, after.body, status_plan, child_plan, rejected)
        if state.phase in ACTIVE_PHASES and child_plan.rollout is not None and \
                child_plan.rollout.phase not in ACTIVE_PHASES:
            # A slot freed: the first in the queue may start now.
            for waiting in self.slots.next_in_line():
                self.queue.enqueue(waiting)

    def _observe(self, key: Key) -> _Seen | None:
        """The cache's view of the InferenceService and its children, and its pods when they
        matter; None when there is nothing to reconcile."""
        body, children = self.cache.snapshot(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        now = self.clock()
        return _Seen(body, children, self._observe_pods(key, body), now)

    def _observe_writes(self, key: Key, seen: _Seen) -> _Seen | None:
        """The view after the children were written: their responses are in the cache."""
        body, children = self.cache.snapshot(key)
        return None if body is None else _Seen(body, children, seen.pods, seen.now)

    def _record(self, key: Key, body: Manifest, status_plan: plan.StatusPlan, child_plan: plan.ChildPlan,
                rejected: str | None) -> None:
        """The status's Events, its write (or its hold), and when to look again."""
        # Before the status that records what they report (an invalid spec, a refused child),
        # and a failed post fails the pass: once recorded, the next pass decides nothing
        # again, and nobody would be told. A status held back posts them now; the pass that
        # writes it decides the same Events, which count once (`Kube.post_event`).
        self.executor.post(body, status_plan.events)
        self._write_status(key, body, status_plan, child_plan)
        if child_plan.requeue_after is not None and rejected is None:
            self.queue.wake_up(key, child_plan.requeue_after)
        latest, _ = self.cache.snapshot(key)
        self._remove_spent_controls(key, latest)
        waited = self._not_ready_for(latest or {})
        if waited >= 0:
            due = PODS_LOOKED_AT_AFTER_SECONDS - min(waited, self.cache.still_for(key, self.monotonic()))
            if due > 0:
                # Nothing may change on its own while pods fail to come up: look again then.
                self.queue.wake_up(key, due)

    def _write_status(self, key: Key, body: Manifest, status_plan: plan.StatusPlan, child_plan: plan.ChildPlan) -> None:
        if status_plan.status is None:
            self.status_hold.clear(key)
            return
        previous = body.get("status") or {}
        # A first status goes out at once: an object without one reads as Current to
        # kstatus (Flux), and its observedGeneration and Reconciling say "not yet".
        first = not previous.get("conditions")
        # A warning is posted once because the next look finds it in the status (the
        # metric check that cannot run is named in the rollout message): no waiting then.
        warned = any(e.type == EventType.WARNING for e in child_plan.events)
        urgent = status_plan.status_urgent or first or warned
        seconds = None
        if urgent and not first and not warned and child_plan.invalid is None and \
                acknowledges_only(previous, status_plan.status, child_plan):
            # A spec change that changes nothing tfleet does (the autoscaler's first scale of
            # a new InferenceService, most often) while the object is not Ready yet: its
            # acknowledgement waits for the status change that comes with Ready.
            urgent, seconds = False, ACKNOWLEDGEMENT_HOLD_SECONDS
        hold = self.status_hold.may_wait(key, urgent, seconds)
        if hold is None:
            written = self.executor.write_status(key, status_plan, body["metadata"].get("resourceVersion"))
            self.hooks.observed_isvc("PATCHED", written)
        else:
            self.queue.wake_up(key, hold)

    def _remove_spent_controls(self, key: Key, body: Manifest | None) -> None:
        """Once the server's status records a promote or abort as done, its annotation goes.
        Only then: removed earlier, a crash before the status write would lose the request.
        Conditional on the version read, so a request set meanwhile is never removed unread."""
        spent = spent_controls(body) if body is not None else []
        if not spent or body is None:
            return
        written = self.kube.annotate_isvc(*key, dict.fromkeys(spent), body["metadata"].get("resourceVersion"))
        self.cache.observe_isvc("PATCHED", written)
        log.info("Removed the spent rollout request(s) %s of InferenceService %s/%s", ", ".join(spent), *key)

    # ------------------------------------------------------------------ observing pods

    def _observe_pods(self, key: Key, body: Manifest) -> list[PodSummary]:
        """The serving pods, read only when someone waits for them (see `_pods_matter`), with
        what their health bridges report.

        Pods are the most numerous and the busiest objects of a fleet; watching them all
        would cost the operator far more than these few reads during rollouts and outages.
        """
        if not self._pods_matter(key, body):
            return []
        items = self.kube.list_pods(key[0], isvc_selector(key[1]))
        pods = [s for s in (summarize_pod(p) for p in items) if s is not None]
        if _unpinned(body):
            versions = self.bridges.with_served_versions(key, pods)
            pods = versions.pods
            if versions.look_again_after is not None:
                self.queue.wake_up(key, versions.look_again_after)
        seen = self.bridges.with_load_errors(key, pods)
        if seen.look_again_after is not None:
            self.queue.wake_up(key, seen.look_again_after)
        elif any(not p.ready for p in pods):
            # Pods are not watched: a container that crashes or reports a load error changes
            # no Deployment status, so while someone waits for these pods they are looked at
            # again, less often while nothing about them changes.
            self.queue.wake_up(key, self._recheck_delay(key, pods))
        else:
            self._rechecks.pop(key, None)
        return seen.pods

    def _recheck_delay(self, key: Key, pods: list[PodSummary]) -> float:
        """POD_RECHECK_SECONDS, doubling up to MAX_POD_RECHECK_SECONDS while the pods look the same."""
        looks = tuple(sorted((p.name, p.ready, p.restarts, p.crash_looping, p.image_pull_failing,
                              p.unschedulable, p.load_error, p.preflight_error) for p in pods))
        last = self._rechecks.get(key)
        delay = POD_RECHECK_SECONDS if last is None or last[0] != looks else min(MAX_POD_RECHECK_SECONDS, last[1] * 2)
        self._rechecks[key] = (looks, delay)
        return delay

    def _pods_matter(self, key: Key, body: Manifest) -> bool:
        """During a rollout (restarts and failures gate the steps), and once the
        InferenceService has not been Ready for a while and its Deployments have stopped
        moving (the status says why): pods that a busy cluster brings up slowly, one
        Deployment status change after another, are nobody's worry yet. And when its version
        is unpinned: which version each pod serves only its health bridge knows."""
        if rollout_active(body) or _unpinned(body):
            return True
        return min(self._not_ready_for(body), self.cache.still_for(key, self.monotonic())) >= \
            PODS_LOOKED_AT_AFTER_SECONDS

    def _not_ready_for(self, body: Manifest) -> float:
        ready = status.condition(body.get("status") or {}, ConditionType.READY) or {}
        since = parse_time(ready.get("lastTransitionTime"))
        # An invalid spec is not waiting for pods: the spec says why.
        if ready.get("status") != "False" or ready.get("reason") == Reason.INVALID_SPEC or since is None:
            return -1.0
        return (self.clock() - since).total_seconds()

    def _forget(self, key: Key) -> None:
        """Drop what the fleet keeps about a deleted InferenceService."""
        self.queue.forget(key)
        self.status_hold.clear(key)
        self.checks.forget(key)
        self.bridges.forget(key)
        self._rechecks.pop(key, None)
        self._parsed.pop(key, None)
        with self._locks_guard:
            self._locks.pop(key, None)

    # ------------------------------------------------------------------ failures

    def _on_failure(self, key: Key, exc: KubeError) -> None:
        # 409: the status was planned from a view the API server has moved past; 404: the
        # InferenceService, or only a child, is gone. Either way, read the object again, so
        # that a retry plans from what is there now.
        if exc.code in (404, 409) and self._refresh(key) and exc.code == 404:
            log.info("Stopped reconciling InferenceService %s/%s: it is gone", *key)
            return
        delay = max(self.queue.failed(key), exc.retry_after or 0.0)
        # A 404 about a child (deleted by someone meanwhile) passes: the next pass re-creates it.
        if exc.retryable or exc.code == 404:
            log.warning("Failed to reconcile InferenceService %s/%s, retrying in %.1fs: %s", *key, delay, exc)
            self.queue.retry_later(key, delay)
        else:
            log.error("Failed to reconcile InferenceService %s/%s: %s", *key, exc)

    def _refresh(self, key: Key) -> bool:
        """Read the InferenceService again into the cache; whether it is gone."""
        try:
            self.observe_isvc("FETCHED", self.kube.get_isvc(*key))
        except KubeError as exc:
            if exc.code == 404:
                self.observe_isvc("DELETED", {"metadata": {"namespace": key[0], "name": key[1]}})
                return True
            log.warning("Failed to read InferenceService %s/%s again: %s", *key, exc)
        return False
