"""kopf wiring: the operator process's start and stop. No logic lives here.

kopf runs the process: its event loop, signal handling, and the start-up and clean-up
activities below. It watches nothing: every watch is the operator's own
(`tfleet.runtime.watch`), a LIST and then a WATCH per kind, so that

- the children are asked for with a server-side label selector (kopf filters by labels on
  the client side, after receiving and decoding every ConfigMap, Service, Deployment,
  autoscaler and PodDisruptionBudget of the cluster, tfleet's or not);
- an event costs a JSON decode and a dictionary update on the watch's own thread, where
  kopf spent several times that on its per-object workers, causes and handler calls.

The watches feed the fleet's cache and queue reconciles; the work queue stays closed until
every watch has listed what exists (`tfleet.runtime.startup_sync`), so the first reconcile
after a start already sees every existing child and rewrites nothing. The operator's only
writes are its children, the status and Events: no finalizers, no kopf annotations.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import kopf

from tfleet.api.vocabulary import API_VERSION, DEFAULTS_KIND, KIND
from tfleet.runtime.cluster_defaults import ClusterDefaults
from tfleet.runtime.context import OperatorRuntime
from tfleet.runtime.fleet import Fleet
from tfleet.runtime.kube import Kube, load_config
from tfleet.runtime.startup_sync import wait_until_synced, watched_kinds
from tfleet.runtime.watch import Deliver, Watch, WatchClient, Watches

HEARTBEAT_SECONDS = 5.0
# Reconciles wait on the API most of the time (three round trips for a new InferenceService):
# enough of them keep up with a bulk create on a busy API server.
RECONCILE_WORKERS = 32

Manifest = dict[str, Any]


def _runtime(memo: kopf.Memo) -> OperatorRuntime:
    runtime = memo.get("runtime")
    if runtime is None:  # kopf run without `tfleet run`: defaults
        runtime = memo.runtime = OperatorRuntime()
    return runtime  # type: ignore[no-any-return]


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    runtime = _runtime(memo)
    # kopf would otherwise turn log lines into Kubernetes Events (API writes).
    settings.posting.enabled = False
    # kopf serves no resource: it needs no view of the cluster's CRDs (watching them would
    # need a cluster-wide grant in namespaced mode, too).
    settings.scanning.disabled = True
    settings.networking.request_timeout = 60
    if runtime.fleet is None:
        metrics = runtime.metrics
        kube = Kube(load_config(runtime.kubeconfig), on_write=metrics.record_write if metrics else None)
        defaults = runtime.defaults = ClusterDefaults(kube)
        fleet = runtime.fleet = Fleet(kube, hooks=metrics.fleet_hooks() if metrics else None,
                                      max_rollouts=runtime.max_rollouts, drain_key=runtime.drain_key,
                                      defaults=defaults.in_force)
        defaults.on_change = fleet.enqueue_all
        # Reconciles of different InferenceServices overlap while one waits on the API; the
        # GIL, not the thread count, bounds the CPU they use. They start once the watches
        # have listed what exists.
        fleet.start_workers(RECONCILE_WORKERS, open_now=False)
        # The watches have a connection pool of their own: a long-lived stream never waits
        # for a connection a reconcile holds, nor the other way round.
        watches = runtime.watches = operator_watches(Kube(load_config(runtime.kubeconfig)), fleet, defaults,
                                                     runtime.namespaces)
        watches.start()
        threading.Thread(target=_open_when_synced, args=(runtime, fleet, watches), name="tfleet-synced",
                         daemon=True).start()


def operator_watches(client: WatchClient, fleet: Fleet, defaults: ClusterDefaults,
                     namespaces: tuple[str, ...]) -> Watches:
    """A watch per kind the operator reads (`startup_sync.watched_kinds`), per namespace; the
    cluster-scoped InferenceServiceDefaults in one watch, whatever the namespaces."""
    watches = []
    for api_version, kind, selector in watched_kinds():
        if (api_version, kind) == (API_VERSION, DEFAULTS_KIND):
            watches.append(Watch(client, api_version, kind, None, defaults_delivery(defaults), label_selector=None))
            continue
        deliver = isvc_delivery(fleet) if (api_version, kind) == (API_VERSION, KIND) else child_delivery(fleet)
        for namespace in namespaces or (None,):
            watches.append(Watch(client, api_version, kind, namespace, deliver, label_selector=selector))
    return Watches(watches)


def _open_when_synced(runtime: OperatorRuntime, fleet: Fleet, watches: Watches) -> None:
    """Open the work queue once the cache holds what every watch listed. Until then a
    reconcile could take a child not yet seen for a missing one, or a running rollout not
    yet seen for a free slot."""
    listed = wait_until_synced(watches, runtime.stopping)
    if listed is None:
        return
    runtime.listed = listed
    fleet.queue.open()
    runtime.synced.set()


@kopf.on.startup(id="tfleet-heartbeat")
async def start_heartbeat(memo: kopf.Memo, **_: Any) -> None:
    """A tick on kopf's event loop, so /healthz sees a stuck loop."""
    runtime = _runtime(memo)
    health = runtime.health
    if health is None:
        return

    async def tick() -> None:
        while True:
            health.beat()
            await asyncio.sleep(HEARTBEAT_SECONDS)

    runtime.heartbeat = asyncio.get_running_loop().create_task(tick())


@kopf.on.cleanup(id="tfleet-heartbeat")
async def stop_heartbeat(memo: kopf.Memo, **_: Any) -> None:
    runtime = _runtime(memo)
    if runtime.heartbeat is not None:
        runtime.heartbeat.cancel()
    # When a signal stops kopf, its waiter on our stop flag would otherwise hang on until
    # kopf gives up on it (5 s): raise the flag so shutdown does not wait.
    if runtime.operator_stop is not None:
        runtime.operator_stop.set()


@kopf.on.cleanup(id="tfleet-watches")
def stop_watches(memo: kopf.Memo, **_: Any) -> None:
    runtime = _runtime(memo)
    runtime.stopping.set()
    if runtime.watches is not None:
        runtime.watches.stop()
    if runtime.defaults is not None:
        runtime.defaults.stop()
    if runtime.fleet is not None:
        # The watches have stopped: a pass from here on would act on a view that no longer
        # follows the cluster. The passes in flight finish; nothing else starts.
        runtime.fleet.stop()


def isvc_delivery(fleet: Fleet) -> Deliver:
    """What the InferenceServices' watch calls with each object it sees (on its own thread)."""

    def deliver(event_type: str, body: Manifest) -> None:
        key = fleet.observe_isvc(event_type, body)
        # The echo of tfleet's own status write brings nothing new: no reconcile for it.
        # Anything else is a change someone made to the object: it goes ahead of the
        # reconciles its children's status changes asked for.
        if event_type != "DELETED" and fleet.take_news(key):
            fleet.enqueue(key, first=True)

    return deliver


def child_delivery(fleet: Fleet) -> Callable[[str, Manifest], None]:
    """What the children's watches call with each object they see (on their own threads)."""

    def deliver(event_type: str, body: Manifest) -> None:
        key = fleet.observe_child(event_type, body)
        # A child seen before its parent is reconciled when the parent's own event arrives;
        # the echo of tfleet's own apply brings nothing new.
        if key is not None and fleet.take_news(key) and fleet.knows(key):
            fleet.enqueue(key)

    return deliver


def defaults_delivery(defaults: ClusterDefaults) -> Deliver:
    """What the InferenceServiceDefaults' watch calls with each object it sees (on its own
    thread). A change in force asks for every InferenceService to be reconciled again; until
    the work queue opens (every watch has listed), those wait in it."""

    def deliver(event_type: str, body: Manifest) -> None:
        if defaults.observe(event_type, body):
            defaults.settle()

    return deliver
