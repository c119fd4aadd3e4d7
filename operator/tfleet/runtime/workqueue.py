"""The work queue: which InferenceService to reconcile next, on which thread, and when again.

- A key is queued at most once: a burst of events collapses into one reconcile.
- A key that changes while it is being reconciled is reconciled again right after.
- Wake-ups reconcile a key after a delay (a pause ends, a deadline passes); one pending
  wake-up per key, the earliest wins.
- Failures back off exponentially per key, up to a minute.

Time comes from the injected `monotonic` clock and delays from the injected `schedule`, so
tests drive both.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from tfleet.api.vocabulary import MANAGER

log = logging.getLogger(__name__)

Key = tuple[str, str]
Schedule = Callable[[float, Callable[[], None]], Any]

MAX_BACKOFF_SECONDS = 60.0
# The small margin makes a pause measurably over when the reconcile it schedules runs.
WAKE_UP_MARGIN_SECONDS = 0.05


def timer(delay: float, fn: Callable[[], None]) -> threading.Timer:
    """The default `schedule`: run `fn` on a daemon thread after `delay` seconds."""
    t = threading.Timer(delay, fn)
    t.daemon = True
    t.name = f"{MANAGER}-retry"
    t.start()
    return t


def backoff_seconds(attempts: int) -> float:
    return min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** (attempts - 1))


class WorkQueue:
    """Thread-safe. `handler` reconciles one key; it must not raise (a worker logs if it does)."""

    def __init__(self, handler: Callable[[Key], None], schedule: Schedule, monotonic: Callable[[], float]):
        self._handler = handler
        self.schedule = schedule
        self._monotonic = monotonic
        self._guard = threading.Lock()
        self._queue: queue.SimpleQueue[Key | None] = queue.SimpleQueue()  # None: a worker stops
        self._queued: set[Key] = set()
        self._running: set[Key] = set()
        self._dirty: set[Key] = set()
        self._workers: list[threading.Thread] = []
        self._wakeups: dict[Key, float] = {}  # monotonic time of the next scheduled reconcile
        self._failures: dict[Key, int] = {}
        self._stopping = False

    def stop(self, timeout: float) -> bool:
        """Take no more work, let the reconciles in flight finish (up to `timeout` seconds in
        all), and stop the workers. Whether they all stopped in time."""
        with self._guard:
            self._stopping = True
        for _ in self._workers:
            self._queue.put(None)
        deadline = self._monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - self._monotonic()))
        return not any(w.is_alive() for w in self._workers)

    def start_workers(self, count: int) -> None:
        """Reconcile from the queue with `count` threads instead of in the caller's thread."""
        for i in range(count):
            worker = threading.Thread(target=self._work, name=f"{MANAGER}-worker-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def enqueue(self, key: Key) -> None:
        """Ask for a reconcile of `key`: never blocks (without workers it runs at once)."""
        if not self._workers:
            self._handler(key)
            return
        with self._guard:
            if self._stopping:
                return
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
            if key is None:
                return
            with self._guard:
                if self._stopping:
                    return  # queued before the stop: the next leader reconciles it
                self._queued.discard(key)
                self._running.add(key)
            try:
                self._handler(key)
            except Exception:  # a bug must not take a worker down with it
                log.exception("Failed to reconcile InferenceService %s/%s", *key)
            finally:
                with self._guard:
                    self._running.discard(key)
                    again = key in self._dirty
                    self._dirty.discard(key)
                if again:
                    self.enqueue(key)

    def wake_up(self, key: Key, delay: float) -> None:
        """Reconcile `key` again after `delay` seconds, unless one is due sooner."""
        now = self._monotonic()
        due = now + delay + WAKE_UP_MARGIN_SECONDS
        with self._guard:
            pending = self._wakeups.get(key)
            if pending is not None and now < pending <= due:
                return
            self._wakeups[key] = due

        def fire() -> None:
            with self._guard:
                if self._wakeups.get(key) == due:
                    del self._wakeups[key]
            self.enqueue(key)

        self.schedule(max(0.0, delay) + WAKE_UP_MARGIN_SECONDS, fire)

    def failed(self, key: Key) -> float:
        """Count a failed reconcile of `key`; the back-off before its retry."""
        with self._guard:
            attempts = self._failures.get(key, 0) + 1
            self._failures[key] = attempts
        return backoff_seconds(attempts)

    def retry_later(self, key: Key, delay: float) -> None:
        self.schedule(delay, lambda: self.enqueue(key))

    def succeeded(self, key: Key) -> None:
        with self._guard:
            self._failures.pop(key, None)

    def forget(self, key: Key) -> None:
        with self._guard:
            self._failures.pop(key, None)
            self._wakeups.pop(key, None)
