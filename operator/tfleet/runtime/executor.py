"""Carrying a plan out: the writes a `ChildPlan` and a `StatusPlan` call for, in stages.

Every response goes back into the cache, so the next step of the same reconcile (and the
next reconcile) sees what the write left behind without reading the API again.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from tfleet.api.vocabulary import MANAGER, EventType
from tfleet.engine.plan import ChildPlan, Event, StatusPlan
from tfleet.runtime.cache import FleetCache, Key
from tfleet.runtime.kube import KubeClient, KubeError

log = logging.getLogger(__name__)

Manifest = dict[str, Any]
T = TypeVar("T")

# Writes of one reconcile that may be in flight at once beyond the reconciling thread's own,
# shared by every reconcile (see `Executor`).
WRITE_CONCURRENCY = 32

# How long a status change that nobody waits for may be held back so that the changes
# right behind it (pods turning ready one by one) go out in the same write.
STATUS_COALESCE_SECONDS = 1.0


class StatusHold:
    """Which status changes may wait, and until when (monotonic deadlines per key)."""

    def __init__(self, coalesce_seconds: float, monotonic: Callable[[], float]):
        self.coalesce_seconds = coalesce_seconds
        self._monotonic = monotonic
        self._guard = threading.Lock()
        self._due: dict[Key, float] = {}

    def may_wait(self, key: Key, urgent: bool, seconds: float | None = None) -> float | None:
        """None: write now. Otherwise hold the write back, at most `seconds` (the coalescing
        window by default) from now, and never past a deadline already set: the seconds until
        the write is due, when the caller must look again (the work queue keeps one wake-up
        per key, the earliest, so asking again costs nothing)."""
        now = self._monotonic()
        hold = self.coalesce_seconds if seconds is None else seconds
        with self._guard:
            due = self._due.get(key)
            if urgent or self.coalesce_seconds <= 0 or (due is not None and now >= due):
                self._due.pop(key, None)
                return None
            if due is not None and due <= now + hold:
                return due - now
            self._due[key] = now + hold
        return hold

    def clear(self, key: Key) -> None:
        with self._guard:
            self._due.pop(key, None)


class Executor:
    """Carries out child and status plans.

    The writes of one plan go out in stages, each stage's writes at once on a small pool of
    threads (the reconciling thread takes one of them itself):

    1. ConfigMaps: a Deployment mounts its revision's ConfigMap, so it never exists first;
    2. every other apply: the Deployments, Services, PodDisruptionBudget, autoscaler, which
       do not depend on each other;
    3. scales of other revisions' Deployments, then 4. deletes: the current revision's
       objects exist before an older one shrinks or goes.

    A stage starts only once every write of the one before has succeeded, so whatever
    subset of the writes a crash or a lost response leaves done is one a later reconcile
    resumes from, as it would from the same writes sent one after another. (A new
    autoscaler is left to the caller, who applies it after the status write: see
    `tfleet.runtime.fleet.after_the_status`.)

    The plan's Events (the rollout's transitions, the children changed) go out with the
    second stage, and a post that still fails after the client's retries fails the pass like
    a failed write: so they land before the status that records them, and a retry decides
    (and names) the same Events again instead of the status recording a transition nobody
    was told of. An Event named the same counts once (`Kube.post_event`). If the API server
    refuses a child of that stage for good, its Events are already posted: the status then
    reports the refusal.
    """

    def __init__(self, kube: KubeClient, cache: FleetCache, concurrency: int = WRITE_CONCURRENCY):
        self.kube = kube
        self.cache = cache
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"{MANAGER}-write") \
            if concurrency > 1 else None

    def _all(self, calls: list[Callable[[], T]]) -> list[T | KubeError]:
        """Run `calls` at once; their results (or KubeErrors) in order, once all have ended."""
        if not calls:
            return []
        if self._pool is None or len(calls) == 1:
            return [_attempt(call) for call in calls]
        # Each runs in a copy of this thread's context: log lines keep naming the object.
        futures = [self._pool.submit(contextvars.copy_context().run, _attempt, call) for call in calls[1:]]
        try:
            first = _attempt(calls[0])
        finally:
            # Even when this thread's own call failed other than with a KubeError: no write of
            # the pass may still be in flight once it ends (the next pass, or a new leader,
            # would overlap it).
            concurrent.futures.wait(futures)
        return [first, *(f.result() for f in futures)]

    def carry_out_children(self, body: Manifest, plan: ChildPlan, later: list[Manifest] | None = None) -> str | None:
        """Apply (all but `later`, which the caller applies itself), scale, delete. Returns the
        API server's refusal of a child, if any: then no later stage is written, and the
        status reports it. A retryable failure is raised once the writes of its stage have
        ended."""
        applied = [m for m in plan.apply if not any(m is other for other in later or ())]
        rejected = self.apply([m for m in applied if m["kind"] == "ConfigMap"])
        if rejected is not None:
            return rejected
        events = [functools.partial(self.post, body, plan.events)] if plan.events else []
        rejected = self.apply([m for m in applied if m["kind"] != "ConfigMap"], alongside=events)
        if rejected is not None:
            return rejected
        scaled = self._all([functools.partial(self.kube.scale, deployment, replicas)
                            for deployment, replicas in plan.scale])
        for answer in scaled:
            if not isinstance(answer, KubeError):
                self.cache.observe_child("SCALED", answer)
        _raise_first(scaled)
        deleted = self._all([functools.partial(self.kube.delete, obj) for obj in plan.delete])
        for obj, outcome in zip(plan.delete, deleted, strict=True):
            if not isinstance(outcome, KubeError):
                self.cache.observe_child("REMOVED", obj)
        _raise_first(deleted)
        return None

    def apply(self, manifests: list[Manifest], alongside: Sequence[Callable[[], None]] = ()) -> str | None:
        """Apply `manifests` at once, each response into the cache, and run the calls
        `alongside` with them. The API server's refusal of one, if any (the first in order);
        a retryable failure, or any failure of a call alongside, is raised once all ended."""
        others: list[Callable[[], Any]] = list(alongside)
        calls: list[Callable[[], Any]] = [*others, *(functools.partial(self.kube.apply, m) for m in manifests)]
        answers = self._all(calls)
        results = answers[len(others):]
        for result in results:
            if not isinstance(result, KubeError):
                self.cache.observe_child("APPLIED", result)
        _raise_first(answers[:len(others)])
        for manifest, result in zip(manifests, results, strict=True):
            if isinstance(result, KubeError):
                if result.retryable:
                    raise result
                # The API server refused what the spec asked for (for example an invalid
                # affinity passed through): report it on the object instead of retrying.
                return f"{manifest['kind']} {manifest['metadata']['name']} was rejected: {result.message}"
        return None

    def write_status(self, key: Key, plan: StatusPlan, resource_version: str | None) -> Manifest:
        """The status patch, conditional on `resource_version`, the version it was planned from;
        the InferenceService as the API server returned it."""
        assert plan.status is not None
        namespace, name = key
        written = self.kube.patch_status(namespace, name, plan.status, resource_version)
        self.cache.observe_isvc("PATCHED", written)
        log.debug("Updated status of InferenceService %s/%s", namespace, name)
        return written

    def post(self, body: Manifest, events: list[Event]) -> None:
        """Log and post `events`. A KubeError still failing after the client's retries is
        raised (`Kube.post_event` drops a refusal for good itself)."""
        meta = body["metadata"]
        for event in events:
            if event.type == EventType.WARNING:
                log.warning("%s %s/%s: %s", event.reason, meta["namespace"], meta["name"], event.message)
            else:
                log.info("%s %s/%s: %s", event.reason, meta["namespace"], meta["name"], event.message)
            self.kube.post_event(body, str(event.type), str(event.reason), event.message)


def _attempt(call: Callable[[], T]) -> T | KubeError:
    try:
        return call()
    except KubeError as exc:
        return exc


def _raise_first(results: list[Any]) -> None:
    for result in results:
        if isinstance(result, KubeError):
            raise result
