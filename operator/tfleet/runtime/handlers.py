"""kopf wiring: watch events in, reconciles out. No logic lives here.

Only index and event handlers are used: kopf keeps no per-object bookkeeping for them (no
diff-base or progress annotations, no finalizers), so the operator's only writes are its
children, the status and Events. The state that matters lives in the cluster; a restarted
operator rebuilds its view from the initial listing and carries on.

The index handlers feed the fleet cache. kopf holds every other handler back until the
initial listings of all indexed resources are complete, so the first reconcile after a
start already sees every existing child and rewrites nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from tfleet.api.vocabulary import DEFAULTS_PLURAL, GROUP, LABEL_MANAGED_BY, MANAGER, PLURAL, VERSION
from tfleet.runtime.cluster_defaults import ClusterDefaults
from tfleet.runtime.context import OperatorRuntime
from tfleet.runtime.fleet import Fleet
from tfleet.runtime.kube import CHILD_KINDS, PLURALS, Kube, load_config

MANAGED = {LABEL_MANAGED_BY: MANAGER}
HEARTBEAT_SECONDS = 5.0
RECONCILE_WORKERS = 8
# (group, version, plural) of each watched child kind.
CHILD_RESOURCES = tuple(
    (api_version.rpartition("/")[0], api_version.rpartition("/")[2], PLURALS[(api_version, kind)])
    for api_version, kind in CHILD_KINDS
)


class _NoDiffBase(kopf.DiffBaseStorage):
    """kopf's diff-base, kept nowhere. Only change-detecting handlers (on.create, on.update,
    ...) read it, and tfleet registers none; kopf's own storages would still deep-copy every
    watched object on every event to build it."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


class _NoProgress(kopf.ProgressStorage):
    """kopf's per-handler progress, kept nowhere: it only matters to change-detecting
    handlers with retries, and tfleet registers none."""

    def fetch(self, *, key: Any, body: kopf.Body) -> None:
        return None

    def store(self, *, key: Any, record: Any, body: kopf.Body, patch: kopf.Patch) -> None:
        pass

    def purge(self, *, key: Any, body: kopf.Body, patch: kopf.Patch) -> None:
        pass

    def touch(self, *, body: kopf.Body, patch: kopf.Patch, value: str | None) -> None:
        pass

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        return essence


def _runtime(memo: kopf.Memo) -> OperatorRuntime:
    runtime = memo.get("runtime")
    if runtime is None:  # kopf run without `tfleet run`: defaults
        runtime = memo.runtime = OperatorRuntime()
    return runtime  # type: ignore[no-any-return]


def _fleet(memo: kopf.Memo) -> Fleet:
    fleet = _runtime(memo).fleet
    assert fleet is not None, "the startup handler makes the fleet"
    return fleet


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    runtime = _runtime(memo)
    # kopf would otherwise turn handler log lines into Kubernetes Events (API writes).
    settings.posting.enabled = False
    # No kopf bookkeeping to keep (see _NoDiffBase): this saves a deep copy of every
    # watched object per event, about a tenth of the operator's CPU in a bulk create.
    settings.persistence.diffbase_storage = _NoDiffBase()
    settings.persistence.progress_storage = _NoProgress()
    # The handlers only record what they saw and queue a reconcile: a few threads suffice.
    settings.execution.max_workers = 4
    # Watches reconnect well before load balancers in front of apiservers drop them.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    if runtime.namespaced:
        # Watching CRDs (to notice ones created later) needs a cluster-wide grant; in
        # namespaced mode the resources found at start are served and RBAC stays within
        # the watched namespaces.
        settings.scanning.disabled = True
    if runtime.fleet is None:
        metrics = runtime.metrics
        kube = Kube(load_config(runtime.kubeconfig), on_write=metrics.record_write if metrics else None)
        defaults = runtime.defaults = ClusterDefaults(kube)
        runtime.fleet = Fleet(kube, hooks=metrics.fleet_hooks() if metrics else None,
                              max_rollouts=runtime.max_rollouts, drain_key=runtime.drain_key,
                              defaults=defaults.in_force)
        defaults.on_change = runtime.fleet.enqueue_all
        # Reconciles of different InferenceServices overlap while one waits on the API; the
        # GIL, not the thread count, bounds the CPU they use.
        runtime.fleet.start_workers(RECONCILE_WORKERS)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)


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
    if runtime.fleet is not None:
        # The watches have stopped: a pass from here on would act on a view that no longer
        # follows the cluster. The passes in flight finish; nothing else starts.
        await asyncio.to_thread(runtime.fleet.stop)
    # When a signal stops kopf, its waiter on our stop flag would otherwise hang on until
    # kopf gives up on it (5 s): raise the flag so shutdown does not wait.
    if runtime.operator_stop is not None:
        runtime.operator_stop.set()


@kopf.index(GROUP, VERSION, PLURAL)
def inference_service_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _fleet(memo).observe_isvc("INDEXED", dict(body))


@kopf.on.event(GROUP, VERSION, PLURAL)
def inference_service_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    fleet = _fleet(memo)
    key = fleet.observe_isvc(type, dict(body))
    # The echo of tfleet's own status write brings nothing new: no reconcile for it.
    if type != "DELETED" and fleet.take_news(key):
        fleet.enqueue(key)


def _defaults(memo: kopf.Memo) -> ClusterDefaults:
    defaults = _runtime(memo).defaults
    assert defaults is not None, "the startup handler makes the defaults with the fleet"
    return defaults


# The cluster-scoped InferenceServiceDefaults: indexed, so that kopf holds every other handler
# back until its initial listing is in, and the first reconcile already renders with it. The
# index handler asks for no reconcile: it runs before kopf has listed everything.
@kopf.index(GROUP, VERSION, DEFAULTS_PLURAL)
def defaults_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _defaults(memo).observe("INDEXED", dict(body), announce=False)


@kopf.on.event(GROUP, VERSION, DEFAULTS_PLURAL)
def defaults_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    defaults = _defaults(memo)
    if defaults.observe(type, dict(body)):
        defaults.settle()


def _child_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _fleet(memo).observe_child("INDEXED", dict(body))


def _child_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    fleet = _fleet(memo)
    key = fleet.observe_child(type, dict(body))
    # A child seen before its parent is reconciled when the parent's own event arrives; the
    # echo of tfleet's own apply brings nothing new.
    if key is not None and fleet.take_news(key) and fleet.knows(key):
        fleet.enqueue(key)


for _group, _version, _plural in CHILD_RESOURCES:
    _resource = (_group, _version, _plural) if _group else (_version, _plural)
    kopf.index(*_resource, labels=MANAGED, id=f"index-{_plural}")(_child_index)
    kopf.on.event(*_resource, labels=MANAGED, id=f"child-{_plural}")(_child_event)
