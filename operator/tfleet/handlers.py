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

import logging
from typing import Any

import kopf

from tfleet import GROUP, PLURAL, VERSION
from tfleet.builders import MANAGER
from tfleet.fleet import Fleet
from tfleet.kube import Kube, load_config

MANAGED = {"app.kubernetes.io/managed-by": MANAGER}
RECONCILE_WORKERS = 8
CHILD_RESOURCES = (
    ("", "v1", "configmaps"),
    ("", "v1", "services"),
    ("apps", "v1", "deployments"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("policy", "v1", "poddisruptionbudgets"),
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


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
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
    if "fleet" not in memo:
        memo.fleet = Fleet(Kube(load_config(memo.get("kubeconfig"))))
        if memo.get("metrics") is not None:
            from tfleet.metrics import instrument

            instrument(memo.fleet, memo.metrics)
        # Reconciles of different InferenceServices overlap while one waits on the API; the
        # GIL, not the thread count, bounds the CPU they use.
        memo.fleet.start_workers(RECONCILE_WORKERS)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)


@kopf.index(GROUP, VERSION, PLURAL)
def inference_service_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.fleet.observe_isvc("INDEXED", dict(body))


@kopf.on.event(GROUP, VERSION, PLURAL)
def inference_service_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    fleet: Fleet = memo.fleet
    key = fleet.observe_isvc(type, dict(body))
    # The echo of tfleet's own status write brings nothing new: no reconcile for it.
    if type != "DELETED" and fleet.take_news(key):
        fleet.enqueue(key)


def _child_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.fleet.observe_child("INDEXED", dict(body))


def _child_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    fleet: Fleet = memo.fleet
    key = fleet.observe_child(type, dict(body))
    # A child seen before its parent is reconciled when the parent's own event arrives; the
    # echo of tfleet's own apply brings nothing new.
    if key is not None and fleet.take_news(key) and fleet.knows(key):
        fleet.enqueue(key)


for _group, _version, _plural in CHILD_RESOURCES:
    _resource = (_group, _version, _plural) if _group else (_version, _plural)
    kopf.index(*_resource, labels=MANAGED, id=f"index-{_plural}")(_child_index)
    kopf.on.event(*_resource, labels=MANAGED, id=f"child-{_plural}")(_child_event)
