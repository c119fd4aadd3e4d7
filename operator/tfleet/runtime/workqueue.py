"""The work queue: which InferenceService to reconcile next, on which thread, and when again.

- A key is queued at most once: a burst of events collapses into one reconcile.
- A key that changes while it is being reconciled is reconciled again right after.
- Keys this process has never reconciled go first, and so do keys whose object someone
  changed (a spec edit, a scale): in a bulk create, a new InferenceService gets its children
  before the ones created earlier are looked at again (their Deployments turning ready,
  their status), and in a rollout of many, an edit does not wait behind their pods. Among
  themselves both kinds are first in, first out.
- Wake-ups reconcile a key after a delay (a pause ends, a deadline passes); one pending
  wake-up per key, the earliest wins. One scheduler thread serves every delay.
- Failures back off exponentially per key, up to a minute.
- Until `open` is called, workers take nothing: the operator opens the queue once its
  caches hold the initial listings, so that no reconcile acts on a partial view.
- After `stop`, nothing more starts: the reconciles in flight finish, and what is still
  queued is left to the next leader.

Time comes from the injected `monotonic` clock and delays from the injected `schedule`, so
tests drive both.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from tfleet.api.vocabulary import MANAGER

log = logging.getLogger(__name__)

Key = tuple[str, str]
Schedule = Callable[[float, Callable[[], None]], Any]

MAX_BACKOFF_SECONDS = 60.0
# The small margin makes a pause measurably over when the reconcile it schedules runs.
WAKE_UP_MARGIN_SECONDS = 0.05


class Scheduler:
    """Runs callbacks after a delay, all on one daemon thread (a heap of due times).

    A thread per delay (threading.Timer) would cost a thread start and its stack for each of
    the thousands of wake-ups a fleet asks for at once. Callbacks must be quick: the queue's
    own only enqueue a key.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic):
        self._monotonic = monotonic
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def __call__(self, delay: float, fn: Callable[[], None]) -> None:
        due = self._monotonic() + max(0.0, delay)
        with self._cond:
            entry = (due, next(self._order), fn)
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"{MANAGER}-scheduler", daemon=True)
                self._thread.start()
            # The thread sleeps until the earliest due time: only a new earliest one wakes it
            # (waking it for every wake-up of a fleet cost more than the rest of the queue).
            if self._heap[0] is entry:
                self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > self._monotonic():
                    self._cond.wait(None if not self._heap else self._heap[0][0] - self._monotonic())
                _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception:  # a bug in one callback must not stop every later one
                log.exception("Failed to run a scheduled reconcile")


def backoff_seconds(attempts: int) -> float:
    return min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** (attempts - 1))


class WorkQueue:
    """Thread-safe. `handler` reconciles one key; it must not raise (a worker logs if it does)."""

    def __init__(self, handler: Callable[[Key], None], schedule: Schedule, monotonic: Callable[[], float]):
        self._handler = handler
        self.schedule = schedule
        self._monotonic = monotonic
        self._guard = threading.Lock()
        self._ready = threading.Condition(self._guard)
        self._fresh: deque[Key] = deque()  # never reconciled by this process
        self._again: deque[Key] = deque()
        self._reconciled: set[Key] = set()
        self._queued: set[Key] = set()
        self._running: set[Key] = set()
        self._dirty: dict[Key, bool] = {}  # changed while running: whether someone edited it
        self._open = True
        self._workers: list[threading.Thread] = []
        self._wakeups: dict[Key, float] = {}  # monotonic time of the next scheduled reconcile
        self._failures: dict[Key, int] = {}
        self._stopping = False

    def stop(self, timeout: float) -> bool:
        """Take no more work, let the reconciles in flight finish (up to `timeout` seconds in
        all), and stop the workers. Whether they all stopped in time."""
        with self._ready:
            self._stopping = True
            self._ready.notify_all()
        deadline = self._monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - self._monotonic()))
        return not any(w.is_alive() for w in self._workers)

    def start_workers(self, count: int, open_now: bool = True) -> None:
        """Reconcile from the queue with `count` threads instead of in the caller's thread;
        with `open_now` False they wait for `open`."""
        with self._guard:
            self._open = open_now
        for i in range(count):
            worker = threading.Thread(target=self._work, name=f"{MANAGER}-worker-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def open(self) -> None:
        """Let the workers take keys (see `start_workers`)."""
        with self._ready:
            self._open = True
            self._ready.notify_all()

    def depth(self) -> tuple[int, int]:
        """(keys never reconciled, keys to reconcile again) waiting for a worker."""
        with self._guard:
            return len(self._fresh), len(self._again)

    def enqueue(self, key: Key, first: bool = False) -> None:
        """Ask for a reconcile of `key`: never blocks (without workers it runs at once). With
        `first` (someone changed the object itself), it goes ahead of the re-reconciles, with
        the keys never reconciled."""
        if not self._workers:
            self._handler(key)
            return
        with self._ready:
            if self._stopping:
                return
            if key in self._running:
                self._dirty[key] = self._dirty.get(key, False) or first
                return
            if key in self._queued:
                if first and key in self._again:
                    self._again.remove(key)
                    self._fresh.append(key)
                return
            self._queued.add(key)
            (self._fresh if first or key not in self._reconciled else self._again).append(key)
            self._ready.notify()

    def _next(self) -> Key | None:
        """The next key to reconcile; None once the queue stops."""
        with self._ready:
            while not self._stopping and not (self._open and (self._fresh or self._again)):
                self._ready.wait()
            if self._stopping:
                return None  # what is still queued: the next leader reconciles it
            key = self._fresh.popleft() if self._fresh else self._again.popleft()
            self._queued.discard(key)
            self._running.add(key)
            return key

    def _work(self) -> None:
        while True:
            key = self._next()
            if key is None:
                return
            try:
                self._handler(key)
            except Exception:  # a bug must not take a worker down with it
                log.exception("Failed to reconcile InferenceService %s/%s", *key)
            finally:
                with self._guard:
                    self._running.discard(key)
                    self._reconciled.add(key)
                    again = self._dirty.pop(key, None)
                if again is not None:
                    self.enqueue(key, first=again)

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
                if self._wakeups.get(key) != due:
                    # Superseded by an earlier wake-up (whose reconcile asked again for what it
                    # still needs), or forgotten: nothing to do.
                    return
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
            self._reconciled.discard(key)
