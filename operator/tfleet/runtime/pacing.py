"""How many rollouts run at once: a bounded number of slots, taken in queue order.

A change that touches many InferenceServices at once (new defaults, an image bump through
Kustomize) would otherwise start every canary together. The count comes from the recorded
statuses in the cache (a rollout whose start is written holds a slot), plus the slots granted
to passes whose start is not recorded yet. A queued InferenceService records when it was
queued, so the order survives a restart of the operator.
"""

from __future__ import annotations

import threading

from tfleet.engine.rollout import UNPACED, Pacing
from tfleet.runtime.cache import FleetCache, Key


class RolloutSlots:
    """Thread-safe. `limit` None: unbounded."""

    def __init__(self, cache: FleetCache, limit: int | None):
        self.cache = cache
        self.limit = limit
        self._guard = threading.Lock()
        self._granted: set[Key] = set()

    def pacing(self, key: Key) -> Pacing:
        """Whether `key` may start a rollout in this pass. A grant holds until `release`: by
        then the pass has recorded the start (and the cache counts it) or has not started."""
        if self.limit is None:
            return UNPACED
        with self._guard:
            active, queued = self.cache.rollouts()
            running = active | self._granted
            if key in running:
                return UNPACED
            order = [k for _, k in sorted((since, k) for k, since in queued.items())]
            if key not in order:
                order.append(key)  # a newcomer waits behind those already queued
            position = order.index(key) + 1
            if position <= self.limit - len(running):
                self._granted.add(key)
                return UNPACED
            return Pacing(may_start=False, position=position, limit=self.limit)

    def release(self, key: Key) -> None:
        with self._guard:
            self._granted.discard(key)

    def next_in_line(self) -> list[Key]:
        """The queued InferenceServices that would get a slot now, first queued first."""
        if self.limit is None:
            return []
        with self._guard:
            active, queued = self.cache.rollouts()
            free = self.limit - len(active | self._granted)
            return [k for _, k in sorted((since, k) for k, since in queued.items())][:max(0, free)]
