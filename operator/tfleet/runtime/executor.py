"""Carrying a plan out: the writes a `ChildPlan` and a `StatusPlan` call for, in order.

Every response goes back into the cache, so the next step of the same reconcile (and the
next reconcile) sees what the write left behind without reading the API again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from tfleet.api.vocabulary import EventType
from tfleet.engine.plan import ChildPlan, Event, StatusPlan
from tfleet.runtime.cache import FleetCache, Key
from tfleet.runtime.kube import KubeClient, KubeError

log = logging.getLogger(__name__)

Manifest = dict[str, Any]

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

    def may_wait(self, key: Key, urgent: bool) -> float | None:
        """None: write now. Otherwise hold the write back; a number asks for a reconcile after
        that many seconds (0 when one is already due)."""
        now = self._monotonic()
        hold = self.coalesce_seconds
        with self._guard:
            due = self._due.get(key)
            if urgent or self.coalesce_seconds <= 0 or (due is not None and now >= due):
                self._due.pop(key, None)
                return None
            if due is not None:
                return 0.0
            self._due[key] = now + hold
        return hold

    def clear(self, key: Key) -> None:
        with self._guard:
            self._due.pop(key, None)


class Executor:
    def __init__(self, kube: KubeClient, cache: FleetCache):
        self.kube = kube
        self.cache = cache

    def carry_out_children(self, body: Manifest, plan: ChildPlan) -> str | None:
        """Apply, scale, delete, post. Returns the API server's refusal of a child, if any:
        then nothing after it is written, and the status reports it."""
        for manifest in plan.apply:
            try:
                self.cache.observe_child("APPLIED", self.kube.apply(manifest))
            except KubeError as exc:
                if exc.retryable:
                    raise
                # The API server refused what the spec asked for (for example an invalid
                # affinity passed through): report it on the object instead of retrying.
                return f"{manifest['kind']} {manifest['metadata']['name']} was rejected: {exc.message}"
        for deployment, replicas in plan.scale:
            self.cache.observe_child("SCALED", self.kube.scale(deployment, replicas))
        for obj in plan.delete:
            self.kube.delete(obj)
            self.cache.observe_child("REMOVED", obj)
        # The rollout's transitions: posted before the status that records them, and a failure
        # to post fails the pass, so the retry decides (and names) the same Event again
        # instead of the status recording a transition nobody was told of.
        self.post(body, plan.events)
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

    def post(self, body: Manifest, events: list[Event], best_effort: bool = False) -> None:
        """Log and post `events`. A KubeError still failing after the client's retries is
        raised, unless `best_effort` (Events after the status write: the next pass would not
        decide them again, so failing it gains nothing)."""
        meta = body["metadata"]
        for event in events:
            if event.type == EventType.WARNING:
                log.warning("%s %s/%s: %s", event.reason, meta["namespace"], meta["name"], event.message)
            else:
                log.info("%s %s/%s: %s", event.reason, meta["namespace"], meta["name"], event.message)
            try:
                self.kube.post_event(body, str(event.type), str(event.reason), event.message)
            except KubeError:
                if not best_effort:
                    raise
