"""Servable life cycle: the state monitor, the loader harness and the manager.

Modelled on tensorflow_serving/core:

- servable_state_monitor.cc: every state a version ever reached is kept (GetModelStatus
  lists versions that ended, with their error); a wait for `Latest(name)` is satisfied by
  the first version of that stream (lowest number) that is AVAILABLE or END;
- loader_harness.cc + util/retrier.cc: a load is tried 1 + max_num_load_retries times,
  load_retry_interval_micros apart, logging each failure; retries stop when the version is
  no longer aspired ("Retrying of ... was cancelled.");
- basic_manager.cc: START when a version is first managed, LOADING when its load runs,
  AVAILABLE after it (or END with the load's error), UNLOADING then END on unload; a
  handle is served only for READY versions (`Latest` is the highest);
- aspired_versions_manager.cc: every 100 ms the manage-state thread drops un-aspired
  finished harnesses, applies pending aspired-version lists and takes one action chosen by
  the policy (unloads before loads); with num_load_threads 0 a load runs in that thread,
  blocking every other action until it ends (the first load uses 4 threads per CPU);
- availability_preserving_policy.cc: unload an un-aspired version only when an aspired one
  is ready (or none is aspired, or more than one un-aspired one is ready); otherwise load
  the highest new aspired version. A new version is thus loaded before the old one goes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from e2e.standin import logs
from e2e.standin.status import OK, Status, not_found

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"
MANAGE_STATE_INTERVAL_SECONDS = 0.1


def servable_id(name: str, version: int) -> str:
    """ServableId::DebugString."""
    return f"{{name: {name} version: {version}}}"


@dataclass(frozen=True)
class ServableState:
    name: str
    version: int
    state: str
    health: Status


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[ServableState], None]] = []

    def subscribe(self, fn: Callable[[ServableState], None]) -> None:
        with self._lock:
            self._subscribers.append(fn)

    def unsubscribe(self, fn: Callable[[ServableState], None]) -> None:
        with self._lock:
            self._subscribers.remove(fn)

    def publish(self, state: ServableState) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for fn in subscribers:
            fn(state)


class StateMonitor:
    """ServableStateMonitor: the states seen on the bus since it was created."""

    def __init__(self, bus: EventBus) -> None:
        self._cond = threading.Condition()
        self._states: dict[str, dict[int, ServableState]] = {}
        self._bus = bus
        bus.subscribe(self._on_event)

    def close(self) -> None:
        self._bus.unsubscribe(self._on_event)

    def _on_event(self, state: ServableState) -> None:
        with self._cond:
            self._states.setdefault(state.name, {})[state.version] = state
            self._cond.notify_all()

    def get_state(self, name: str, version: int) -> ServableState | None:
        with self._cond:
            return self._states.get(name, {}).get(version)

    def version_states(self, name: str) -> dict[int, ServableState]:
        with self._cond:
            return dict(sorted(self._states.get(name, {}).items()))

    def _reached(self, name: str, goal: str) -> ServableState | None:
        for _, state in sorted(self._states.get(name, {}).items()):
            if state.state in (goal, END):
                return state
        return None

    def wait_until_reached(self, names: list[str], goal: str) -> tuple[bool, list[ServableState]]:
        """WaitUntilServablesReachState for Latest(name) requests, without timeout."""
        with self._cond:
            while True:
                reached = [self._reached(n, goal) for n in names]
                if all(r is not None for r in reached):
                    states = [r for r in reached if r is not None]
                    return all(s.state == goal for s in states), states
                self._cond.wait()


def unavailable_message(noun: str, states: list[ServableState]) -> str:
    """The message of ConnectSourcesWithFastInitialLoad ("servable(s)", load_servables_fast.cc)
    and of ServerCore::WaitUntilModelsAvailable ("model(s)", server_core.cc)."""
    failed = [s for s in sorted(states, key=lambda s: (s.name, s.version)) if s.state != AVAILABLE]
    message = f"{len(failed)} {noun} did not become available: {{"
    for s in failed:
        error = "" if s.health.ok else f" due to error: {s.health}"
        message += f"{{{servable_id(s.name, s.version)}{error}}}, "
    return message + "}"


class Loader(Protocol):
    def load(self) -> tuple[Status, Any]: ...

    def unload(self) -> None: ...


@dataclass
class Harness:
    """LoaderHarness: one managed version."""

    name: str
    version: int
    path: str
    loader: Loader
    is_aspired: bool = True
    state: str = "new"  # new, load_requested, load_approved, loading, ready, quiescing,
    # quiesced, unloading, disabled, error
    status: Status = field(default_factory=lambda: OK)
    servable: Any = None
    cancel_retry: threading.Event = field(default_factory=threading.Event)

    @property
    def id(self) -> str:
        return servable_id(self.name, self.version)


@dataclass(frozen=True)
class ManagerOptions:
    max_num_load_retries: int
    load_retry_interval_micros: int
    num_load_threads: int
    num_unload_threads: int
    num_initial_load_threads: int


LoaderFactory = Callable[[str, int, str], Loader]


class Manager:
    """AspiredVersionsManager over a BasicManager, with the AvailabilityPreservingPolicy."""

    def __init__(self, bus: EventBus, options: ManagerOptions, loader_factory: LoaderFactory) -> None:
        self._bus = bus
        self._options = options
        self._loader_factory = loader_factory
        self._lock = threading.RLock()
        self._harnesses: dict[str, dict[int, Harness]] = {}
        self._pending: dict[str, list[tuple[int, str]]] = {}
        self._serving: dict[str, dict[int, Any]] = {}
        self._num_load_threads = options.num_load_threads
        self._executor: ThreadPoolExecutor | None = None
        self._busy = 0  # loads or unloads running
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._manage_state, name="ManageState", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def set_num_load_threads(self, n: int) -> None:
        with self._lock:
            self._num_load_threads = n
            self._executor = ThreadPoolExecutor(n, thread_name_prefix="load") if n > 0 else None

    # ----- the source's callback --------------------------------------------------------

    def set_aspired_versions(self, name: str, versions: list[tuple[int, str]]) -> None:
        with self._lock:
            self._pending[name] = list(versions)

    # ----- requests ---------------------------------------------------------------------

    def servable_handle(self, name: str, version: int | None) -> tuple[Status, Any, int]:
        """GetServableHandle for Latest(name) or Specific(name, version)."""
        with self._lock:
            available = self._serving.get(name, {})
            if version is None:
                if available:
                    v = max(available)
                    return OK, available[v], v
                return not_found(f"Servable not found for request: Latest({name})"), None, 0
            if version in available:
                return OK, available[version], version
        return not_found(f"Servable not found for request: Specific({name}, {version})"), None, 0

    def available_versions(self, name: str) -> list[int]:
        with self._lock:
            return sorted(self._serving.get(name, {}))

    # ----- the manage-state thread ------------------------------------------------------

    def _manage_state(self) -> None:
        while not self._stop.is_set():
            self._flush_servables()
            self._handle_pending()
            self._invoke_policy_and_execute_action()
            self._stop.wait(MANAGE_STATE_INTERVAL_SECONDS)

    def _publish(self, h: Harness, state: str, health: Status = OK) -> None:
        self._bus.publish(ServableState(h.name, h.version, state, health))

    def _flush_servables(self) -> None:
        with self._lock:
            for versions in self._harnesses.values():
                for version, h in list(versions.items()):
                    if h.state in ("new", "disabled", "error") and not h.is_aspired:
                        del versions[version]

    def _handle_pending(self) -> None:
        with self._lock:
            for name, versions in list(self._pending.items()):
                managed = self._harnesses.setdefault(name, {})
                wanted = {v for v, _ in versions}
                # A re-aspired version must finish leaving first (ContainsAnyReaspiredVersions).
                if any(not h.is_aspired and v in wanted for v, h in managed.items()):
                    continue
                del self._pending[name]
                for version, h in managed.items():
                    if version not in wanted and h.is_aspired:
                        h.is_aspired = False
                        h.cancel_retry.set()
                for version, path in versions:
                    if version not in managed:
                        h = Harness(name, version, path, self._loader_factory(name, version, path))
                        managed[version] = h
                        self._publish(h, START)

    def _next_action(self) -> tuple[str, Harness] | None:
        actions: list[tuple[str, Harness]] = []
        for versions in self._harnesses.values():
            all_versions = list(versions.values())
            aspired = [h for h in all_versions if h.is_aspired]
            has_aspired_serving = any(h.state == "ready" for h in aspired)
            unaspired_serving = [h for h in all_versions if not h.is_aspired and h.state == "ready"]
            if (not aspired or has_aspired_serving or len(unaspired_serving) > 1) and unaspired_serving:
                actions.append(("unload", min(unaspired_serving, key=lambda h: h.version)))
                continue
            new = [h for h in aspired if h.state == "new"]
            if new:
                actions.append(("load", max(new, key=lambda h: h.version)))
        actions.sort(key=lambda a: a[0] != "unload")
        return actions[0] if actions else None

    def _invoke_policy_and_execute_action(self) -> None:
        with self._lock:
            action = self._next_action()
            if action is None:
                return
            kind, h = action
            if kind == "load":
                logs.info(
                    f"{logs.BASIC_MANAGER}:786",
                    f"Successfully reserved resources to load servable {h.id}",
                )
                h.state = "load_approved"
                logs.info(f"{logs.LOADER_HARNESS}:70", f"Approving load for servable version {h.id}")
                executor = self._executor
            else:
                h.state = "quiescing"
                logs.info(f"{logs.LOADER_HARNESS}:168", f"Quiescing servable version {h.id}")
                executor = None  # num_unload_threads 0: unloads run in this thread
            self._busy += 1
        run = self._execute_load if kind == "load" else self._execute_unload
        if executor is None:
            run(h)
        else:
            executor.submit(run, h)

    def _execute_load(self, h: Harness) -> None:
        try:
            self._publish(h, LOADING)
            with self._lock:
                h.state = "loading"
            logs.info(f"{logs.LOADER_HARNESS}:78", f"Loading servable version {h.id}")
            status, servable = self._load_with_retries(h)
            if status.ok:
                with self._lock:
                    h.state = "ready"
                    h.servable = servable
                    self._serving.setdefault(h.name, {})[h.version] = servable
                logs.info(f"{logs.LOADER_HARNESS}:108", f"Successfully loaded servable version {h.id}")
                self._publish(h, AVAILABLE)
                if hasattr(servable, "became_available"):
                    servable.became_available()
            else:
                with self._lock:
                    h.state = "error"
                    h.status = status
                self._publish(h, END, status)
                logs.info(
                    f"{logs.LOADER_HARNESS}:185",
                    f"Encountered an error for servable version {h.id}: {status}",
                )
                logs.error(
                    f"{logs.ASPIRED_MANAGER}:420", f"Servable {h.id} cannot be loaded: {status}"
                )
        finally:
            with self._lock:
                self._busy -= 1

    def _load_with_retries(self, h: Harness) -> tuple[Status, Any]:
        """util/retrier.cc Retry around Loader::Load."""
        description = f"Loading servable: {h.id}"
        max_retries = self._options.max_num_load_retries
        if max_retries < 0:
            max_retries = 2**32 + max_retries  # the flag is stored in a uint32
        interval = self._options.load_retry_interval_micros / 1e6
        tries = 0
        status: Status = OK
        servable: Any = None
        while True:
            if tries > 0:
                if interval > 0:
                    time.sleep(interval)  # Env::SleepForMicroseconds: not cut short
                logs.info(f"{logs.RETRIER}:36", f"Retrying of {description} retry: {tries}")
            status, servable = h.loader.load()
            if not status.ok:
                logs.error(f"{logs.RETRIER}:40", f"{description} failed: {status}")
            tries += 1
            if status.ok or tries >= max_retries + 1 or h.cancel_retry.is_set():
                break
        if h.cancel_retry.is_set():
            logs.info(f"{logs.RETRIER}:47", f"Retrying of {description} was cancelled.")
        if tries == max_retries + 1:
            logs.info(
                f"{logs.RETRIER}:50",
                f"Retrying of {description} exhausted max_num_retries: {max_retries}",
            )
        if status.ok and h.cancel_retry.is_set():
            # Loaded, but no longer wanted: unload at once and report a cancelled load.
            logs.info(f"{logs.LOADER_HARNESS}:132", f"Unloading just-loaded servable version {h.id}")
            h.loader.unload()
            logs.info(f"{logs.LOADER_HARNESS}:140", f"Done unloading servable version {h.id}")
            return Status("CANCELLED", "Loading of servable cancelled"), None
        return status, servable

    def _execute_unload(self, h: Harness) -> None:
        try:
            with self._lock:
                self._serving.get(h.name, {}).pop(h.version, None)
            self._publish(h, UNLOADING)
            logs.info(f"{logs.LOADER_HARNESS}:175", f"Done quiescing servable version {h.id}")
            with self._lock:
                h.state = "unloading"
            logs.info(f"{logs.LOADER_HARNESS}:132", f"Unloading just-loaded servable version {h.id}")
            h.loader.unload()
            with self._lock:
                h.state = "disabled"
                h.servable = None
            logs.info(f"{logs.LOADER_HARNESS}:140", f"Done unloading servable version {h.id}")
            self._publish(h, END)
        finally:
            with self._lock:
                self._busy -= 1
