"""The operator's keeper of the cluster's InferenceServiceDefaults (runtime.cluster_defaults),
with a recording API: what it writes, what it puts in force and when, how it fails, and that a
change reconciles every InferenceService again with the new defaults."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from tfleet.api.defaults import BUILT_IN
from tfleet.runtime.cluster_defaults import ClusterDefaults
from tfleet.runtime.fleet import Fleet
from tfleet.runtime.kube import KubeError

from .test_fleet import RecordingKube, isvc, start

Manifest = dict[str, Any]


class DefaultsApi:
    """The API calls the keeper makes, answered as an API server would."""

    def __init__(self) -> None:
        self.rv = itertools.count(50)
        self.stored: Manifest | None = None
        self.status_writes: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str, str]] = []
        self.fail_next: KubeError | None = None

    def store(self, spec: dict[str, Any], generation: int = 1) -> Manifest:
        status = (self.stored or {}).get("status")
        self.stored = {"apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceServiceDefaults",
                       "metadata": {"name": "cluster", "uid": "d-1", "generation": generation,
                                    "resourceVersion": str(next(self.rv))}, "spec": spec}
        if status is not None:
            self.stored["status"] = status
        return copy.deepcopy(self.stored)

    def patch_defaults_status(self, name: str, status: dict[str, Any], resource_version: str | None) -> Manifest:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        assert self.stored is not None and name == "cluster"
        if resource_version != self.stored["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", "the object has been modified")
        self.status_writes.append(copy.deepcopy(status))
        self.stored = {**self.stored, "status": copy.deepcopy(status),
                       "metadata": {**self.stored["metadata"], "resourceVersion": str(next(self.rv))}}
        return copy.deepcopy(self.stored)

    def post_event(self, regarding: Manifest, type_: str, reason: str, message: str) -> None:
        self.events.append((regarding["kind"], type_, reason, message))


@pytest.fixture
def keeper() -> tuple[ClusterDefaults, DefaultsApi, list[int], list[tuple[float, Callable[[], None]]]]:
    api = DefaultsApi()
    changes: list[int] = []
    retries: list[tuple[float, Callable[[], None]]] = []
    kept = ClusterDefaults(api, on_change=lambda: changes.append(1), clock=lambda: datetime(2026, 1, 1),
                           later=lambda delay, fn: retries.append((delay, fn)))
    return kept, api, changes, retries


def event(kept: ClusterDefaults, type_: str | None, body: Manifest) -> None:
    """A watch event, as the operator's watch passes it on (`handlers.defaults_delivery`)."""
    if kept.observe(type_, body):
        kept.settle()


def test_an_accepted_object_is_recorded_first_then_in_force(keeper):
    kept, api, changes, _ = keeper
    event(kept, "ADDED", api.store({"pod": {"labels": {"team": "platform"}}}))
    assert len(api.status_writes) == 1 and api.status_writes[0]["appliedGeneration"] == 1
    assert kept.in_force().generation == 1 and kept.in_force().spec.pod.labels == {"team": "platform"}
    assert changes == [1]
    assert [(e[0], e[2]) for e in api.events] == [("InferenceServiceDefaults", "DefaultsAccepted")]
    # The echo of its own status write changes nothing and writes nothing.
    event(kept, "MODIFIED", copy.deepcopy(api.stored))
    assert len(api.status_writes) == 1 and changes == [1] and len(api.events) == 1


def test_a_restarted_operator_renders_with_what_is_recorded_and_writes_nothing(keeper):
    kept, api, _, _ = keeper
    event(kept, "ADDED", api.store({"pod": {"priorityClassName": "ml"}}))
    recorded = copy.deepcopy(api.stored)
    # A new process: the object comes in the watch's initial listing. Announcing it queues a
    # reconcile of every InferenceService, which waits until every watch has listed (the
    # work queue opens then); the recorded status is the outcome already, so nothing is written.
    announced: list[int] = []
    fresh = ClusterDefaults(api, on_change=lambda: announced.append(1), clock=lambda: datetime(2026, 1, 1))
    writes = len(api.status_writes)
    event(fresh, "LISTED", recorded)
    assert fresh.in_force() == kept.in_force() and announced == [1] and len(api.status_writes) == writes


def test_a_refused_object_leaves_the_last_accepted_in_force_and_says_why(keeper, caplog):
    kept, api, changes, _ = keeper
    event(kept, "ADDED", api.store({"pod": {"labels": {"team": "platform"}}}))
    good = kept.in_force()
    with caplog.at_level("ERROR"):
        event(kept, "MODIFIED", api.store({"image": {"gpuTag": "2.18.0"}}, generation=2))
    assert kept.in_force() == good and changes == [1]
    conditions = {c["type"]: c for c in api.status_writes[-1]["conditions"]}
    assert conditions["Ready"]["reason"] == "InvalidDefaults" and "spec.image.gpuTag" in conditions["Ready"]["message"]
    assert api.events[-1][1:3] == ("Warning", "InvalidDefaults")
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert line.startswith("Refused InferenceServiceDefaults cluster generation 2: spec.image.gpuTag:")
    assert line.endswith("InferenceServices keep InferenceServiceDefaults cluster generation 1")
    # And after a restart, too.
    fresh = ClusterDefaults(api, clock=lambda: datetime(2026, 1, 1))
    fresh.observe("LISTED", copy.deepcopy(api.stored))
    fresh.settle()
    assert fresh.in_force() == good


def test_deleting_the_object_puts_the_built_in_defaults_in_force(keeper):
    kept, api, changes, _ = keeper
    event(kept, "ADDED", api.store({"pod": {"labels": {"team": "platform"}}}))
    event(kept, "DELETED", copy.deepcopy(api.stored))
    assert kept.in_force() == BUILT_IN and changes == [1, 1]


def test_objects_of_another_name_are_ignored(keeper):
    kept, api, changes, _ = keeper
    other = api.store({"pod": {"labels": {"team": "x"}}})
    other["metadata"]["name"] = "staging"
    event(kept, "ADDED", other)
    assert kept.in_force() == BUILT_IN and api.status_writes == [] and changes == []


def test_a_failed_status_write_keeps_the_old_defaults_and_is_retried(keeper, caplog):
    kept, api, changes, retries = keeper
    api.fail_next = KubeError(503, "ServiceUnavailable", "try later", retry_after=3)
    with caplog.at_level("WARNING"):
        event(kept, "ADDED", api.store({"pod": {"labels": {"team": "platform"}}}))
    assert kept.in_force() == BUILT_IN and changes == []
    assert [delay for delay, _ in retries] == [3]
    assert "Failed to record the InferenceServiceDefaults status or its Events, retrying in 3.0s" in caplog.text
    retries[0][1]()
    assert kept.in_force().generation == 1 and changes == [1]


def test_a_conflict_waits_for_the_watch_instead_of_retrying(keeper):
    kept, api, _, retries = keeper
    body = api.store({"pod": {"labels": {"team": "platform"}}})
    api.store({"pod": {"labels": {"team": "newer"}}}, generation=2)  # written meanwhile
    event(kept, "ADDED", body)
    assert retries == [] and api.status_writes == [] and kept.in_force() == BUILT_IN
    event(kept, "MODIFIED", copy.deepcopy(api.stored))
    assert kept.in_force().spec.pod.labels == {"team": "newer"}


def test_a_defaults_change_reconciles_every_inference_service_with_them():
    kube = RecordingKube()
    api = DefaultsApi()
    kept = ClusterDefaults(api, clock=lambda: datetime(2026, 1, 1))
    fleet = Fleet(kube, clock=lambda: datetime(2026, 1, 1), schedule=lambda d, fn: None,  # type: ignore[arg-type]
                  status_coalesce_seconds=0, defaults=kept.in_force)
    queued: list[tuple[str, str]] = []
    fleet.queue.enqueue = queued.append  # type: ignore[method-assign]
    kept.on_change = fleet.enqueue_all
    key = start(fleet, kube, isvc())
    assert "defaults" not in kube.isvc["status"]
    event(kept, "ADDED", api.store({"pod": {"labels": {"team": "platform"}}}, generation=7))
    assert queued == [key]
    fleet.observe_isvc("MODIFIED", kube.isvc)
    kube.calls.clear()
    fleet.reconcile(key)
    assert kube.isvc["status"]["defaults"] == {"name": "cluster", "generation": 7}
    # A new revision with the platform's label, started as a canary beside the stable one.
    applied = [c for c in kube.calls if c[:2] == ("apply", "Deployment")]
    assert len(applied) == 1
    _, children = fleet.snapshot(key)
    canary = children[("Deployment", applied[0][2])]
    assert canary["spec"]["template"]["metadata"]["labels"]["team"] == "platform"
    assert len([k for k in children if k[0] == "Deployment"]) == 2  # the stable revision's is still there
    assert kube.isvc["status"]["rollout"]["canaryRevision"] == canary["metadata"]["labels"]["tfleet.dev/revision"]
