"""`tfleet run`: the operator process, wired together.

    metrics and health endpoints ─▶ (optional) wait for the leader Lease ─▶ the drain key
    ─▶ kopf with the handlers of `tfleet.runtime.handlers` ─▶ on exit: release the Lease,
    stop the endpoints

Exit status 0 when a signal stopped it, 1 when it lost the leader Lease, 2 when the drain
key could not be read or created (see `tfleet.runtime.drain_key`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tfleet.runtime.operator_health import Health, Phase

if TYPE_CHECKING:
    from tfleet.runtime.context import OperatorRuntime
    from tfleet.runtime.leader import LeaderElector
    from tfleet.runtime.metrics import Metrics

log = logging.getLogger("tfleet.run")


@dataclass(frozen=True)
class RunOptions:
    namespaces: tuple[str, ...] = ()
    kubeconfig: str | None = None
    metrics_port: int | None = None
    health_port: int | None = None
    leader_election: bool = False
    lease_namespace: str | None = None
    lease_name: str = "tfleet-operator"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    max_concurrent_rollouts: int | None = None  # None: no bound
    # The Secret holding the drain key (None: serving pods of new revisions get no drain
    # token), and its namespace (None: the operator's own, see leader.default_namespace).
    drain_key_secret: str | None = "tfleet-drain-key"
    drain_key_namespace: str | None = None


@contextmanager
def _signals_set(flag: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set `flag` (kopf installs its own handlers once it runs)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda *_: flag.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class _Process:
    """The operator process's moving parts, stopped in reverse order of their start."""

    opts: RunOptions
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    # `stop_flag` ends the standby wait and the renewals; `operator_stop` ends kopf. kopf waits
    # for a threading flag in an executor thread that would outlive its loop, so it gets an
    # asyncio one, set through its own loop.
    stop_flag: threading.Event = field(default_factory=threading.Event)
    operator_stop: asyncio.Event = field(default_factory=asyncio.Event)
    ready_flag: threading.Event = field(default_factory=threading.Event)
    lost: threading.Event = field(default_factory=threading.Event)
    stoppers: list[Callable[[], None]] = field(default_factory=list)
    metrics: Metrics | None = None
    elector: LeaderElector | None = None
    drain_key: bytes | None = None
    runtime: OperatorRuntime | None = None  # kopf's handlers' runtime, once kopf runs


# The garbage collector's thresholds (see `_tune_gc`).
GC_THRESHOLDS = (50_000, 50, 100)


def _tune_gc() -> None:
    """Collect young objects far less often than CPython's default (every 700 allocations).

    The operator's heap is mostly its cache: the decoded JSON of every object it watches,
    dicts and lists without reference cycles, freed by reference counting. Decoding one
    watch event allocates hundreds of objects, so with the defaults the collector ran after
    almost every event, and its full passes over the whole cache were a fifth of the
    operator's CPU in a bulk create of 200 InferenceServices (measured with gc.callbacks).
    """
    import gc

    gc.set_threshold(*GC_THRESHOLDS)


# glibc's mallopt parameter M_ARENA_MAX (malloc.h), and the arenas the operator keeps.
_M_ARENA_MAX = -8
MALLOC_ARENAS = 2


def _limit_malloc_arenas() -> None:
    """Share glibc's malloc arenas between the operator's threads.

    glibc gives threads arenas of their own, up to eight per core; the reconcile and write
    threads each free what another allocated (response bodies, decoded events), and every
    arena keeps its own free memory, so the resident set grows with the thread count. Two
    arenas are what `MALLOC_ARENA_MAX=2` would set; it must happen before the threads start.
    Elsewhere than glibc this does nothing.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        ctypes.CDLL(name).mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
    except (OSError, AttributeError):
        return


def run(opts: RunOptions) -> int:
    """Run the operator until a signal stops it (0), it loses the leader Lease (1), or it
    cannot have its drain key (2)."""
    from tfleet.runtime.drain_key import DrainKeyError

    _tune_gc()
    _limit_malloc_arenas()
    process = _Process(opts)
    health = Health()
    try:
        _serve_endpoints(process, health)
        if opts.leader_election:
            # A standby that takes over starts at once: what it needs is imported while it waits.
            threading.Thread(target=_import_the_operator, name="tfleet-import", daemon=True).start()
        if opts.leader_election and not _wait_for_the_lease(process, health):
            log.info("Stopped before acquiring the leader Lease")
            return 0
        try:
            if not _load_drain_key(process):
                log.info("Stopped before loading the drain key")
                return 0
        except DrainKeyError as exc:
            log.error("Stopped the operator: %s", exc)
            return 2
        health.update(phase=Phase.LEADING)
        if process.metrics is not None:
            process.metrics.leader.set(1)
        _run_kopf(process, health)
    finally:
        health.update(phase=Phase.STOPPING)
        _stop(process)
    if process.lost.is_set():
        log.error("Stopped the operator: the leader Lease was lost")
        return 1
    log.info("Stopped the operator")
    return 0


def _import_the_operator() -> None:
    import kopf  # noqa: F401

    from tfleet.runtime import handlers  # noqa: F401


def _serve_endpoints(process: _Process, health: Health) -> None:
    opts = process.opts
    if opts.metrics_port is not None:
        from tfleet.runtime.metrics import Metrics

        metrics = Metrics()
        process.metrics = metrics
        process.stoppers.append(metrics.serve(opts.metrics_port))
        log.info("Serving metrics on port %d", metrics.port)
    if opts.health_port is not None:
        port, stop_health = health.serve(opts.health_port)
        process.stoppers.append(stop_health)
        log.info("Serving health checks on port %d", port)


def _wait_for_the_lease(process: _Process, health: Health) -> bool:
    """Stand by until this process holds the Lease; then keep renewing it in a thread."""
    from tfleet.runtime.kube import Kube, load_config
    from tfleet.runtime.leader import LeaderElector, Timing, default_namespace
    opts = process.opts
    timing = Timing(opts.lease_duration, opts.renew_deadline, opts.retry_period)
    on_write = process.metrics.record_write if process.metrics is not None else None
    elector = LeaderElector(Kube(load_config(opts.kubeconfig), on_write=on_write), opts.lease_namespace or default_namespace(),
                            opts.lease_name, timing=timing)
    process.elector = elector
    health.update(phase=Phase.STANDBY)

    def progress(e: LeaderElector) -> None:
        health.update(election_attempt=e.last_attempt, api_contact=e.last_contact or None)

    with _signals_set(process.stop_flag):
        if not elector.acquire(process.stop_flag, on_round=progress):
            return False

    def on_lost() -> None:
        process.lost.set()
        process.loop.call_soon_threadsafe(process.operator_stop.set)

    threading.Thread(target=elector.keep_leading, args=(process.stop_flag, on_lost),
                     name="tfleet-leader", daemon=True).start()
    return True


def _load_drain_key(process: _Process) -> bool:
    """Read (or create) the drain key before the first reconcile; False when stopped first.

    Only the leader does: a standby that takes over reads the Secret as it is then.
    """
    opts = process.opts
    if not opts.drain_key_secret:
        log.warning("Started without a drain key: serving pods of new revisions drain for anyone who can reach them")
        return True
    from tfleet.runtime import drain_key
    from tfleet.runtime.kube import Kube, load_config
    from tfleet.runtime.leader import default_namespace

    on_write = process.metrics.record_write if process.metrics is not None else None
    kube = Kube(load_config(opts.kubeconfig), on_write=on_write)
    with _signals_set(process.stop_flag):
        process.drain_key = drain_key.load(kube, opts.drain_key_namespace or default_namespace(),
                                           opts.drain_key_secret, process.stop_flag)
    return process.drain_key is not None


def _run_kopf(process: _Process, health: Health) -> None:
    import kopf

    from tfleet.runtime import handlers  # noqa: F401  (registers the handlers)
    from tfleet.runtime.context import OperatorRuntime

    opts = process.opts
    runtime = OperatorRuntime(kubeconfig=opts.kubeconfig, metrics=process.metrics,
                              health=health, namespaces=opts.namespaces,
                              max_rollouts=opts.max_concurrent_rollouts,
                              operator_stop=process.operator_stop, drain_key=process.drain_key,
                              stopping=process.stop_flag)
    process.runtime = runtime

    def mark_ready() -> None:
        # kopf's flag rises after the start-up handlers, before its watches have listed
        # anything: ready means the fleet's cache holds what the API server lists (the
        # start-up handler opens the work queue then, see handlers._open_when_synced).
        process.ready_flag.wait()
        while not runtime.synced.wait(0.1):
            if process.stop_flag.is_set():
                return
        health.update(operator_ready=True)
        # Scripts and tests wait for this line (or for /readyz).
        log.info("Started the operator: the initial listings of %d objects are in its view", runtime.listed)

    threading.Thread(target=mark_ready, name="tfleet-ready", daemon=True).start()
    asyncio.set_event_loop(process.loop)
    kopf.run(
        loop=process.loop,
        standalone=True,
        clusterwide=not opts.namespaces,
        namespaces=list(opts.namespaces),
        memo=kopf.Memo(runtime=runtime),
        stop_flag=process.operator_stop,
        ready_flag=process.ready_flag,
    )


# How long the reconciles in flight may take to finish on shutdown (within the Deployment's
# 30 s grace period, with room for the Lease release).
RECONCILES_FINISH_SECONDS = 15.0


def _stop(process: _Process) -> None:
    process.stop_flag.set()
    fleet = process.runtime.fleet if process.runtime is not None else None
    defaults = process.runtime.defaults if process.runtime is not None else None
    if defaults is not None:
        defaults.stop()
    if fleet is not None and not fleet.stop(RECONCILES_FINISH_SECONDS):
        log.warning("Stopped waiting for the reconciles in flight after %gs", RECONCILES_FINISH_SECONDS)
    if process.metrics is not None:
        process.metrics.leader.set(0)
    if process.elector is not None and not process.lost.is_set():
        process.elector.release()
    for stop in reversed(process.stoppers):
        stop()
    process.loop.close()
