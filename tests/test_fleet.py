"""Reconcile decisions of the operator runtime, with a recording API in place of a cluster.

The e2e suite covers the same behaviour through kopf and the local control plane; these
cases pin the decisions (what is written, and how often) where they are cheap to read.
"""

from __future__ import annotations

import copy
import itertools
import logging
from datetime import datetime, timedelta
from typing import Any

import pytest

from tfleet.api.kubemeta import event_name
from tfleet.runtime.fleet import Fleet
from tfleet.runtime.kube import KubeClient, KubeError

Manifest = dict[str, Any]


class RecordingKube:
    """Answers like an API server that accepts everything, and records every write."""

    def __init__(self) -> None:
        self.rv = itertools.count(100)
        self.calls: list[tuple[str, str, str]] = []
        self.events: list[tuple[str, str, str]] = []
        self.event_names: list[str] = []  # as the real client names them: one per transition
        self.fail_next_apply: KubeError | None = None
        # The next apply of a kind: applied on the server, then its answer lost with this error.
        self.lose_apply_answer_of: dict[str, KubeError] = {}
        self.fail_next_status: KubeError | None = None
        self.lose_next_status_response = False  # the next status write is applied, its answer lost
        self.fail_events: KubeError | None = None  # every Event post fails with this, until cleared
        self.pods: list[Manifest] = []
        self.pod_lists = 0
        self.isvc: Manifest = {}

    def list_pods(self, namespace: str, label_selector: str) -> list[Manifest]:
        self.pod_lists += 1
        return copy.deepcopy(self.pods)

    def apply(self, manifest: Manifest) -> Manifest:
        if self.fail_next_apply is not None:
            exc, self.fail_next_apply = self.fail_next_apply, None
            raise exc
        self.calls.append(("apply", manifest["kind"], manifest["metadata"]["name"]))
        out = copy.deepcopy(manifest)
        out["metadata"]["resourceVersion"] = str(next(self.rv))
        out["metadata"].setdefault("uid", f"uid-{manifest['metadata']['name']}")
        lost = self.lose_apply_answer_of.pop(manifest["kind"], None)
        if lost is not None:
            raise lost
        return out

    def scale(self, deployment: Manifest, replicas: int) -> Manifest:
        self.calls.append(("scale", "Deployment", deployment["metadata"]["name"]))
        out = copy.deepcopy(deployment)
        out["spec"]["replicas"] = replicas
        out["metadata"]["resourceVersion"] = str(next(self.rv))
        return out

    def delete(self, manifest: Manifest) -> None:
        self.calls.append(("delete", manifest["kind"], manifest["metadata"]["name"]))

    def patch_status(self, namespace: str, name: str, status: dict[str, Any],
                     resource_version: str | None = None) -> Manifest:
        if self.fail_next_status is not None:
            exc, self.fail_next_status = self.fail_next_status, None
            raise exc
        if resource_version is not None and resource_version != self.isvc["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", "the object has been modified; please apply your changes to the latest version")
        self.calls.append(("status", "InferenceService", name))
        body = copy.deepcopy(self.isvc)
        body["status"] = copy.deepcopy(status)
        body["metadata"]["resourceVersion"] = str(next(self.rv))
        self.isvc = body
        if self.lose_next_status_response:
            self.lose_next_status_response = False
            raise KubeError(500, "InternalError", "the connection dropped after the write")
        return body

    def get_isvc(self, namespace: str, name: str) -> Manifest:
        self.calls.append(("get", "InferenceService", name))
        if not self.isvc:
            raise KubeError(404, "NotFound", f'inferenceservices.tfleet.dev "{name}" not found')
        return copy.deepcopy(self.isvc)

    def annotate_isvc(self, namespace: str, name: str, annotations: dict[str, str | None],
                      resource_version: str | None = None) -> Manifest:
        if resource_version is not None and resource_version != self.isvc["metadata"]["resourceVersion"]:
            raise KubeError(409, "Conflict", "the object has been modified; please apply your changes to the latest version")
        self.calls.append(("annotate", "InferenceService", name))
        body = copy.deepcopy(self.isvc)
        current = body["metadata"].setdefault("annotations", {})
        for k, v in annotations.items():
            if v is None:
                current.pop(k, None)
            else:
                current[k] = v
        body["metadata"]["resourceVersion"] = str(next(self.rv))
        self.isvc = body
        return body

    def post_event(self, regarding: Manifest, type_: str, reason: str, message: str) -> None:
        if self.fail_events is not None:
            raise self.fail_events
        self.events.append((type_, reason, message))
        self.event_names.append(event_name(regarding, type_, reason, message))


# The type checker holds the recorder to the client's interface (`make lint`).
_RECORDER_IS_A_CLIENT: type[KubeClient] = RecordingKube


def isvc(**spec: Any) -> Manifest:
    return {
        "apiVersion": "tfleet.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "resnet", "namespace": "ml", "uid": "isvc-uid", "generation": 1,
                     "resourceVersion": "1"},
        "spec": {"model": {"basePath": "s3://models/resnet", "version": 3}, "replicas": 2, **spec},
    }


@pytest.fixture
def setup() -> tuple[Fleet, RecordingKube]:
    kube = RecordingKube()
    fleet = Fleet(kube, clock=lambda: datetime(2026, 1, 1), schedule=lambda d, fn: None,  # type: ignore[arg-type]
                  status_coalesce_seconds=0)
    return fleet, kube


def start(fleet: Fleet, kube: RecordingKube, body: Manifest) -> tuple[str, str]:
    kube.isvc = body
    key = fleet.observe_isvc("ADDED", body)
    fleet.reconcile(key)
    return key


def bump(obj: Manifest, kube: RecordingKube) -> Manifest:
    """A later version of `obj`, as the watch would deliver it."""
    obj["metadata"]["resourceVersion"] = str(next(kube.rv))
    return obj


def deployment(fleet: Fleet) -> Manifest:
    _, children = fleet.snapshot(("ml", "resnet"))
    (dep,) = [v for (kind, _), v in children.items() if kind == "Deployment"]
    return copy.deepcopy(dep)


def add_pods(fleet: Fleet, kube: RecordingKube, ready: bool, count: int = 2) -> None:
    """Serving pods of the current revision, as the API lists them."""
    rev = deployment(fleet)["metadata"]["labels"]["tfleet.dev/revision"]
    kube.pods = [
        {
            "metadata": {"name": f"resnet-{i}", "namespace": "ml",
                         "labels": {"tfleet.dev/inferenceservice": "resnet", "tfleet.dev/revision": rev}},
            "status": {"podIP": f"10.0.0.{i}", "conditions": [{"type": "Ready", "status": str(ready)}]},
        }
        for i in range(count)
    ]


def mark_deployment_ready(fleet: Fleet, kube: RecordingKube, replicas: int = 2) -> None:
    dep = deployment(fleet)
    dep["metadata"]["generation"] = 1
    bump(dep, kube)
    dep["status"] = {"observedGeneration": 1, "replicas": replicas, "readyReplicas": replicas,
                     "availableReplicas": replicas, "updatedReplicas": replicas}
    fleet.observe_child("MODIFIED", dep)


def test_first_reconcile_creates_every_child_and_writes_status_once(setup):
    fleet, kube = setup
    start(fleet, kube, isvc())
    applies = [c for c in kube.calls if c[0] == "apply"]
    assert {kind for _, kind, _ in applies} == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}
    assert len(applies) == 5  # two Services
    assert [c for c in kube.calls if c[0] == "status"] == [("status", "InferenceService", "resnet")]
    assert len(kube.events) == 1 and kube.events[0][1] == "ChildrenChanged"
    assert "Created Deployment resnet-" in kube.events[0][2]


def test_a_second_reconcile_with_nothing_changed_writes_nothing(setup):
    fleet, kube = setup
    key = start(fleet, kube, isvc())
    fleet.observe_isvc("MODIFIED", kube.isvc)
    kube.calls.clear()
    fleet.reconcile(key)
    assert kube.calls == []


def test_ready_deployment_flips_ready_with_one_status_write(setup):
    fleet, kube = setup
    key = start(fleet, kube, isvc())
    kube.calls.clear()
    mark_deployment_ready(fleet, kube)
    fleet.reconcile(key)
    assert kube.calls == [("status", "InferenceService", "resnet")]
    ready = next(c for c in kube.isvc["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert kube.isvc["status"]["servingVersion"] == 3
    # Becoming ready is in the condition; an Event would be one more write per object.
    assert [e[1] for e in kube.events] == ["ChildrenChanged"]


def test_an_edited_child_image_is_applied_again_once(setup):
    fleet, kube = setup
    key = start(fleet, kube, isvc())
    edited = deployment(fleet)
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"
    bump(edited, kube)
    fleet.observe_child("MODIFIED", edited)
    kube.calls.clear()
    fleet.reconcile(key)
    assert [c for c in kube.calls if c[0] == "apply"] == [("apply", "Deployment", edited["metadata"]["name"])]


def test_foreign_annotations_on_a_child_are_not_drift(setup):
    fleet, kube = setup
    key = start(fleet, kube, isvc())
    _, children = fleet.snapshot(key)
    annotated = copy.deepcopy(children[("Service", "resnet")])
    annotated["metadata"]["annotations"]["team.example.com/owner"] = "search"
    bump(annotated, kube)
    fleet.observe_child("MODIFIED", annotated)
    kube.calls.clear()
    fleet.reconcile(key)
    assert [c for c in kube.calls if c[0] == "apply"] == []


def test_turning_off_the_headless_service_deletes_it(setup):
    fleet, kube = setup
    key = start(fleet, kube, isvc())
    body = isvc(service={"headless": False})
    body["metadata"]["generation"] = 2
    bump(body, kube)
    body["status"] = kube.isvc["status"]
    kube.isvc = body
    fleet.observe_isvc("MODIFIED", body)
    kube.calls.clear()
    fleet.reconcile(key)
    assert ("delete", "Service", "resnet-grpc") in kube.calls
    assert not any(c[0] == "apply" and c[2] == "resnet-grpc" for c in kube.calls)


def test_an_invalid_spec_sets_invalid_spec_and_leaves_the_children_alone(setup):
    fleet, kube = setup
    key = start(fleet, kube, isvc())
    body = isvc()
    body["spec"]["model"]["basePath"] = "ftp://x/y"
    body["metadata"]["generation"] = 2
    bump(body, kube)
    body["status"] = kube.isvc["status"]
    kube.isvc = body
    fleet.observe_isvc("MODIFIED", body)
    kube.calls.clear()
    kube.events.clear()
    fleet.reconcile(key)
    assert kube.calls == [("status", "InferenceService", "resnet")]
    ready = next(c for c in kube.isvc["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.model.basePath" in ready["message"]
    assert kube.events == [("Warning", "InvalidSpec", ready["message"])]
    # Reconciling the same invalid spec again is not a hot loop: nothing is written.
    fleet.observe_isvc("MODIFIED", kube.isvc)
    kube.calls.clear()
    fleet.reconcile(key)
    assert kube.calls == []


def test_a_child_the_api_server_rejects_is_reported_without_retrying(setup):
    fleet, kube = setup
    scheduled: list[float] = []
    fleet._schedule = lambda delay, fn: scheduled.append(delay)  # type: ignore[method-assign]
    kube.fail_next_apply = KubeError(422, "Invalid", "spec.template.spec.affinity: Invalid value")
    start(fleet, kube, isvc())
    ready = next(c for c in kube.isvc["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec" and "was rejected" in ready["message"]
    assert scheduled == []


def test_a_transient_failure_is_retried_with_backoff(setup):
    fleet, kube = setup
    scheduled: list[float] = []
    fleet._schedule = lambda delay, fn: scheduled.append(delay)  # type: ignore[method-assign]
    kube.fail_next_apply = KubeError(503, "ServiceUnavailable", "etcd is busy")
    start(fleet, kube, isvc())
    kube.fail_next_apply = KubeError(0, "Unreachable", "connection refused")
    fleet.reconcile(("ml", "resnet"))
    assert scheduled == [0.5, 1.0]


def test_a_new_inference_service_gets_its_first_status_at_once_and_ready_when_its_pods_are():
    # An object without a status reads as Current to kstatus (Flux): the first status, with
    # observedGeneration and Reconciling=True, is never held back.
    kube = RecordingKube()
    now = [100.0]
    fleet = Fleet(kube, clock=lambda: datetime(2026, 1, 1), schedule=lambda d, fn: None,  # type: ignore[arg-type]
                  status_coalesce_seconds=1.0, monotonic=lambda: now[0])
    start(fleet, kube, isvc())
    assert [c for c in kube.calls if c[0] == "status"] == [("status", "InferenceService", "resnet")]
    conditions = {c["type"]: c["status"] for c in kube.isvc["status"]["conditions"]}
    assert (conditions["Ready"], conditions["Reconciling"], conditions["RolledOut"]) == ("False", "True", "False")
    assert kube.isvc["status"]["observedGeneration"] == 1
    fleet.observe_isvc("MODIFIED", kube.isvc)
    mark_deployment_ready(fleet, kube)
    now[0] += 3.0
    fleet.reconcile(("ml", "resnet"))
    assert [c for c in kube.calls if c[0] == "status"] == [("status", "InferenceService", "resnet")] * 2
    conditions = {c["type"]: c["status"] for c in kube.isvc["status"]["conditions"]}
    assert (conditions["Ready"], conditions["Reconciling"], conditions["RolledOut"]) == ("True", "False", "True")


def test_an_acknowledged_spec_change_is_written_at_once(setup):
    fleet, kube = setup
    key = start(fleet, kube, isvc())
    fleet.status_coalesce_seconds = 60.0
    body = isvc(replicas=3)
    body["metadata"]["generation"] = 2
    body["status"] = kube.isvc["status"]
    kube.isvc = bump(body, kube)
    fleet.observe_isvc("MODIFIED", body)
    kube.calls.clear()
    fleet.reconcile(key)
    assert ("status", "InferenceService", "resnet") in kube.calls
    assert kube.isvc["status"]["observedGeneration"] == 2


def test_pods_that_fail_to_load_their_model_say_why_in_the_status(setup, monkeypatch):
    from tfleet.runtime import bridge_client as podhealth

    fleet, kube = setup
    asked: list[str] = []

    def fake_bridge(ip: str, *args: object, **kwargs: object) -> podhealth.BridgeReport:
        asked.append(ip)
        return podhealth.BridgeReport(load_error="Could not find SavedModel at /models/resnet/3")

    monkeypatch.setattr(podhealth, "fetch_report", fake_bridge)
    now, mono = [datetime(2026, 1, 1)], [0.0]
    fleet = Fleet(kube, clock=lambda: now[0], schedule=lambda d, fn: None,  # type: ignore[arg-type]
                  status_coalesce_seconds=0, monotonic=lambda: mono[0])
    key = start(fleet, kube, isvc())
    fleet.observe_isvc("MODIFIED", kube.isvc)
    add_pods(fleet, kube, ready=False)
    fleet.reconcile(key)
    assert (kube.pod_lists, asked) == (0, [])  # not Ready for a moment: pods are not looked at yet
    now[0] += timedelta(seconds=11)
    mono[0] += 11
    fleet.reconcile(key)
    assert sorted(asked) == ["10.0.0.0", "10.0.0.1"]
    conditions = {c["type"]: c for c in kube.isvc["status"]["conditions"]}
    assert "TF Serving failed to load the model: Could not find SavedModel" in conditions["ModelAvailable"]["message"]
    assert conditions["ModelAvailable"]["status"] == "False"
    # Asked again only after the poll interval, not on every reconcile.
    fleet.reconcile(key)
    assert len(asked) == 2


def test_a_ready_fleet_is_never_polled(setup, monkeypatch):
    from tfleet.runtime import bridge_client as podhealth

    fleet, kube = setup
    monkeypatch.setattr(podhealth, "fetch_report", lambda *a, **k: pytest.fail("polled a healthy fleet"))
    key = start(fleet, kube, isvc())
    add_pods(fleet, kube, ready=True)
    mark_deployment_ready(fleet, kube)
    fleet.reconcile(key)
    fleet.observe_isvc("MODIFIED", kube.isvc)
    fleet.reconcile(key)
    assert kube.pod_lists == 0  # nor are its pods ever listed


def test_an_autoscaled_inference_service_starts_at_its_minimum(setup):
    fleet, kube = setup
    start(fleet, kube, isvc(replicas=1, autoscaling={"minReplicas": 3, "maxReplicas": 5}))
    # Starting at spec.replicas (1) would have the autoscaler resize it at once: one more write.
    assert deployment(fleet)["spec"]["replicas"] == 3
    assert kube.isvc["status"]["ready"] == "0/3"


def test_the_echo_of_tfleets_own_write_is_not_news(setup):
    fleet, kube = setup
    key = start(fleet, kube, isvc())
    fleet.take_news(key)
    echo = deployment(fleet)  # what the watch delivers after the apply: the same resourceVersion
    fleet.observe_child("MODIFIED", echo)
    assert fleet.take_news(key) is False
    edited = bump(copy.deepcopy(echo), kube)  # someone else changed it
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "someone/else:1"
    fleet.observe_child("MODIFIED", edited)
    assert fleet.take_news(key) is True
    assert fleet.take_news(key) is False


def test_only_child_changes_a_reconcile_reads_are_news(setup):
    fleet, kube = setup
    key = start(fleet, kube, isvc())
    fleet.take_news(key)
    _, children = fleet.snapshot(key)
    (pdb,) = [copy.deepcopy(v) for (kind, _), v in children.items() if kind == "PodDisruptionBudget"]
    # The disruption controller keeps the budget's status up to date: nothing tfleet reads.
    pdb["status"] = {"currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 2, "observedGeneration": 1}
    fleet.observe_child("MODIFIED", bump(pdb, kube))
    assert fleet.take_news(key) is False
    # A Deployment's conditions moving on (their timestamps) changes no count the engine reads...
    dep = deployment(fleet)
    dep["status"] = {"observedGeneration": 0, "conditions": [{"type": "Progressing", "status": "True",
                                                               "reason": "ReplicaSetUpdated",
                                                               "lastUpdateTime": "2026-01-01T00:00:01Z"}]}
    fleet.observe_child("MODIFIED", bump(dep, kube))
    assert fleet.take_news(key) is False
    # ...its pods becoming ready does.
    mark_deployment_ready(fleet, kube)
    assert fleet.take_news(key) is True
    # And a deleted child always is.
    fleet.observe_child("DELETED", pdb)
    assert fleet.take_news(key) is True


def test_a_burst_of_events_collapses_into_few_reconciles():
    import threading

    kube = RecordingKube()
    fleet = Fleet(kube, clock=lambda: datetime(2026, 1, 1), schedule=lambda d, fn: None,  # type: ignore[arg-type]
                  status_coalesce_seconds=0)
    started, release = threading.Event(), threading.Event()
    runs: list[tuple[str, str]] = []

    def slow_reconcile(key: tuple[str, str]) -> None:
        runs.append(key)
        started.set()
        release.wait(5)

    fleet.reconcile = slow_reconcile  # type: ignore[method-assign]
    fleet.start_workers(2)
    fleet.enqueue(("ml", "a"))
    assert started.wait(5)
    for _ in range(50):  # events arriving while the first reconcile runs
        fleet.enqueue(("ml", "a"))
    release.set()
    deadline = datetime.now().timestamp() + 5
    while len(runs) < 2 and datetime.now().timestamp() < deadline:
        threading.Event().wait(0.01)
    threading.Event().wait(0.1)
    assert runs == [("ml", "a"), ("ml", "a")]  # once, then once more for everything that came meanwhile


def test_crash_looping_pods_are_looked_at_again_and_their_termination_message_read():
    # A serving container whose first load failed exits with TF Serving's error and
    # crash-loops: no Deployment status changes, so the fleet must look again by itself.
    kube = RecordingKube()
    scheduled: list[float] = []
    now, mono = [datetime(2026, 1, 1)], [0.0]
    fleet = Fleet(kube, clock=lambda: now[0], schedule=lambda d, fn: scheduled.append(d),  # type: ignore[arg-type]
                  status_coalesce_seconds=0, monotonic=lambda: mono[0])
    key = start(fleet, kube, isvc())
    fleet.observe_isvc("MODIFIED", kube.isvc)
    add_pods(fleet, kube, ready=False)
    failure = ("Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: "
               "{{{name: resnet version: 3} due to error: NOT_FOUND: Could not find SavedModel .pb or .pbtxt}, }")
    for pod in kube.pods:
        pod["status"]["containerStatuses"] = [{
            "name": "tensorflow-serving", "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 255, "reason": "Error", "message": failure}}}]
    now[0] += timedelta(seconds=11)
    mono[0] += 11
    scheduled.clear()
    fleet.reconcile(key)
    assert kube.pod_lists == 1
    assert scheduled and min(scheduled) <= 5.1  # looked at again within the recheck interval
    conditions = {c["type"]: c for c in kube.isvc["status"]["conditions"]}
    assert ("TF Serving failed to load the model: NOT_FOUND: Could not find SavedModel .pb or .pbtxt"
            in conditions["Ready"]["message"])


# --------------------------------------------------------------------------- faults


def scheduling_fleet(kube: RecordingKube) -> tuple[Fleet, list[float]]:
    delays: list[float] = []
    fleet = Fleet(kube, clock=lambda: datetime(2026, 1, 1), schedule=lambda d, fn: delays.append(d),  # type: ignore[arg-type]
                  status_coalesce_seconds=0)
    return fleet, delays


def settled_then_bumped(fleet: Fleet, kube: RecordingKube, rollout: dict[str, Any], replicas: int = 2) -> tuple[str, str]:
    """An InferenceService settled at version 3, then bumped to 4 (generation 2), as the watch
    delivers it: the next reconcile starts the rollout."""
    key = start(fleet, kube, isvc(replicas=replicas, rollout=rollout))
    fleet.observe_isvc("MODIFIED", kube.isvc)
    mark_deployment_ready(fleet, kube, replicas=replicas)
    fleet.reconcile(key)
    body = isvc(replicas=replicas, rollout=rollout)
    body["spec"]["model"]["version"] = 4
    body["metadata"]["generation"] = 2
    body["status"] = kube.isvc["status"]
    kube.isvc = bump(body, kube)
    fleet.observe_isvc("MODIFIED", kube.isvc)
    return key


def test_a_status_planned_from_a_stale_view_is_never_written():
    kube = RecordingKube()
    fleet, _ = scheduling_fleet(kube)
    key = start(fleet, kube, isvc())
    stale = copy.deepcopy(kube.isvc)
    # Someone else wrote the object since this operator last saw it (its cache lags).
    kube.isvc = bump(copy.deepcopy(kube.isvc), kube)
    kube.isvc["status"]["rollout"]["message"] = "written by another operator"
    fleet.observe_isvc("MODIFIED", {**stale, "metadata": {**stale["metadata"], "generation": 2}})
    kube.calls.clear()
    fleet.reconcile(key)
    assert ("status", "InferenceService", "resnet") not in kube.calls  # the 409 stopped it
    assert ("get", "InferenceService", "resnet") in kube.calls  # and the object was read again
    body, _ = fleet.snapshot(key)
    assert body is not None and body["metadata"]["resourceVersion"] == kube.isvc["metadata"]["resourceVersion"]


def test_retry_after_is_honoured():
    kube = RecordingKube()
    fleet, delays = scheduling_fleet(kube)
    kube.isvc = isvc()
    key = fleet.observe_isvc("ADDED", kube.isvc)
    kube.fail_next_status = KubeError(429, "TooManyRequests", "slow down", retry_after=2.0)
    fleet.reconcile(key)
    assert delays == [2.0]  # not the 0.5 s of the first back-off


def test_an_object_deleted_during_its_reconcile_is_not_an_error(caplog):
    kube = RecordingKube()
    fleet, delays = scheduling_fleet(kube)
    kube.isvc = isvc()
    key = fleet.observe_isvc("ADDED", kube.isvc)
    kube.fail_next_status = KubeError(404, "NotFound", 'inferenceservices.tfleet.dev "resnet" not found')
    kube.isvc = {}  # deleted on the server meanwhile
    with caplog.at_level(logging.INFO, logger="tfleet"):
        fleet.reconcile(key)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "it is gone" in caplog.text
    assert delays == []  # no retry: the watch brings the deletion


def test_a_404_about_a_child_is_retried():
    kube = RecordingKube()
    fleet, delays = scheduling_fleet(kube)
    kube.isvc = isvc()
    key = fleet.observe_isvc("ADDED", kube.isvc)
    kube.fail_next_status = KubeError(404, "NotFound", 'deployments.apps "resnet-abc" not found')
    fleet.reconcile(key)  # the InferenceService itself is still there
    assert delays == [0.5]


def test_pods_a_busy_cluster_brings_up_slowly_are_not_looked_at_while_their_deployment_moves():
    kube = RecordingKube()
    scheduled: list[float] = []
    now, mono = [datetime(2026, 1, 1)], [0.0]
    fleet = Fleet(kube, clock=lambda: now[0], schedule=lambda d, fn: scheduled.append(d),  # type: ignore[arg-type]
                  status_coalesce_seconds=0, monotonic=lambda: mono[0])
    key = start(fleet, kube, isvc())
    fleet.observe_isvc("MODIFIED", kube.isvc)
    add_pods(fleet, kube, ready=False)
    # Not Ready for 11 s, but the Deployment moved 6 s ago (its first pod turned ready).
    now[0] += timedelta(seconds=11)
    mono[0] += 5
    mark_deployment_ready(fleet, kube, replicas=1)
    mono[0] += 6
    scheduled.clear()
    fleet.reconcile(key)
    assert kube.pod_lists == 0
    assert min(scheduled) == pytest.approx(4.05)  # looked at once it has stood still for 10 s
    mono[0] += 4
    fleet.reconcile(key)
    assert kube.pod_lists == 1


def test_pods_that_stay_broken_are_looked_at_less_and_less_often():
    kube = RecordingKube()
    scheduled: list[float] = []
    now = [datetime(2026, 1, 1)]
    mono = [0.0]
    fleet = Fleet(kube, clock=lambda: now[0], schedule=lambda d, fn: scheduled.append(d),  # type: ignore[arg-type]
                  status_coalesce_seconds=0, monotonic=lambda: mono[0])
    key = start(fleet, kube, isvc())
    fleet.observe_isvc("MODIFIED", kube.isvc)
    add_pods(fleet, kube, ready=False)
    for pod in kube.pods:
        pod["status"]["containerStatuses"] = [{"name": "tensorflow-serving", "restartCount": 1,
                                               "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]
    now[0] += timedelta(seconds=11)
    rechecks = []
    for _ in range(6):
        mono[0] += 1000  # the wake-up asked for last time has fired
        scheduled.clear()
        fleet.reconcile(key)
        rechecks.append(min(scheduled))
    assert rechecks == [5.05, 10.05, 20.05, 40.05, 60.05, 60.05]
    kube.pods[0]["status"]["containerStatuses"][0]["restartCount"] = 2  # something changed
    mono[0] += 1000
    scheduled.clear()
    fleet.reconcile(key)
    assert min(scheduled) == 5.05


def test_a_lost_status_write_after_a_canary_step_does_not_undo_the_step():
    # The step's scale-up of the canary is written, then the status write that records the
    # step fails. The next reconcile plans from the old step and must not shrink the canary.
    kube = RecordingKube()
    fleet, _ = scheduling_fleet(kube)
    key = settled_then_bumped(fleet, kube, {"steps": [{"weight": 10, "pause": "0s"}, {"weight": 50, "pause": "60s"}]},
                              replicas=4)
    fleet.reconcile(key)  # the rollout starts: a canary of 1 pod

    def canary() -> Manifest:
        stable = kube.isvc["status"]["rollout"]["stableRevision"]
        _, children = fleet.snapshot(key)
        (dep,) = [v for (kind, _), v in children.items()
                  if kind == "Deployment" and v["metadata"]["labels"]["tfleet.dev/revision"] != stable]
        return dep

    assert canary()["spec"]["replicas"] == 1
    dep = copy.deepcopy(canary())
    dep["metadata"]["generation"] = 1
    dep["status"] = {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                     "updatedReplicas": 1}
    fleet.observe_child("MODIFIED", bump(dep, kube))
    kube.fail_next_status = KubeError(500, "InternalError", "the write was lost")
    kube.events.clear()
    kube.event_names.clear()
    fleet.reconcile(key)  # step 1 (weight 50): the canary goes to 4, the status write fails
    assert "RolloutStepAdvanced" in [reason for _, reason, _ in kube.events]
    assert canary()["spec"]["replicas"] == 4
    assert kube.isvc["status"]["rollout"]["step"] == 0  # the server still says step 0
    # The watch brings the canary's Deployment: 4 pods wanted, the first one still ready.
    dep = copy.deepcopy(canary())
    dep["metadata"]["generation"] = 2
    dep["status"] = {"observedGeneration": 2, "replicas": 4, "readyReplicas": 1, "availableReplicas": 1,
                     "updatedReplicas": 4}
    fleet.observe_child("MODIFIED", bump(dep, kube))
    kube.calls.clear()
    fleet.reconcile(key)
    assert canary()["spec"]["replicas"] == 4  # not scaled back to step 0's one pod
    assert not [c for c in kube.calls if c[0] in ("apply", "scale") and c[1] == "Deployment"]
    assert kube.isvc["status"]["rollout"]["step"] == 1  # and the step is recorded now
    # The step was reported twice, as one transition: the client counts both on one Event.
    advanced = [name for (_, reason, _), name in zip(kube.events, kube.event_names, strict=True) if reason == "RolloutStepAdvanced"]
    assert len(advanced) == 2 and len(set(advanced)) == 1, advanced


def test_a_start_whose_status_response_was_lost_keeps_its_start_time():
    # The status write that records the start is applied, but its answer is lost; the retry
    # plans from the cache, which still shows the rollout not started. It must not start the
    # rollout again with a later startedAt and stepStartedAt (a reset pause).
    kube = RecordingKube()
    now = [datetime(2026, 1, 1)]
    fleet = Fleet(kube, clock=lambda: now[0], schedule=lambda d, fn: None,  # type: ignore[arg-type]
                  status_coalesce_seconds=0)
    key = settled_then_bumped(fleet, kube, {"steps": [{"weight": 50, "pause": "60s"}]})
    kube.lose_next_status_response = True
    fleet.reconcile(key)  # the rollout starts; the server has the status, the operator does not know
    written = copy.deepcopy(kube.isvc["status"]["rollout"])
    assert written["phase"] == "Progressing" and written["startedAt"]
    now[0] += timedelta(seconds=20)
    fleet.reconcile(key)  # the retry
    rollout = kube.isvc["status"]["rollout"]
    assert (rollout["startedAt"], rollout["stepStartedAt"]) == (written["startedAt"], written["stepStartedAt"])


def test_a_promote_request_is_removed_once_the_status_records_the_promotion():
    kube = RecordingKube()
    fleet, _ = scheduling_fleet(kube)
    key = settled_then_bumped(fleet, kube, {"steps": [{"weight": 50, "pause": "60s"}]})
    fleet.reconcile(key)
    canary = kube.isvc["status"]["rollout"]["canaryRevision"]
    # The request arrives; the status write that records it fails once.
    body = copy.deepcopy(kube.isvc)
    body["metadata"]["annotations"] = {"tfleet.dev/rollout-promote": canary}
    kube.isvc = bump(body, kube)
    fleet.observe_isvc("MODIFIED", kube.isvc)
    kube.fail_next_status = KubeError(500, "InternalError", "lost")
    kube.calls.clear()
    fleet.reconcile(key)
    assert ("annotate", "InferenceService", "resnet") not in kube.calls  # not before the status says so
    assert kube.isvc["metadata"]["annotations"] == {"tfleet.dev/rollout-promote": canary}
    fleet.reconcile(key)
    assert kube.isvc["status"]["rollout"]["phase"] == "Promoting"
    assert "canaryRevision" in kube.isvc["status"]["rollout"]  # still promoting: the request stays
    assert kube.isvc["metadata"]["annotations"] == {"tfleet.dev/rollout-promote": canary}
    _, children = fleet.snapshot(key)
    dep = copy.deepcopy(next(v for (kind, _), v in children.items()
                             if kind == "Deployment" and v["metadata"]["labels"]["tfleet.dev/revision"] == canary))
    dep["metadata"]["generation"] = 2
    dep["status"] = {"observedGeneration": 2, "replicas": 2, "readyReplicas": 2, "availableReplicas": 2,
                     "updatedReplicas": 2}
    fleet.observe_child("MODIFIED", bump(dep, kube))
    fleet.reconcile(key)
    assert kube.isvc["status"]["rollout"]["phase"] == "Succeeded"
    assert kube.isvc["metadata"].get("annotations") == {}  # spent, and removed


def test_a_spent_request_is_not_removed_over_a_newer_write():
    kube = RecordingKube()
    fleet, _ = scheduling_fleet(kube)
    key = start(fleet, kube, isvc())
    body = copy.deepcopy(kube.isvc)
    body["metadata"]["annotations"] = {"tfleet.dev/rollout-abort": "0123456789"}
    fleet.observe_isvc("MODIFIED", bump(body, kube))
    # Someone wrote the object again after the operator's view: the removal is refused (409).
    kube.isvc = bump(copy.deepcopy(body), kube)
    kube.calls.clear()
    fleet.reconcile(key)
    assert ("annotate", "InferenceService", "resnet") not in kube.calls
    assert kube.isvc["metadata"]["annotations"] == {"tfleet.dev/rollout-abort": "0123456789"}
    fleet.reconcile(key)  # from the fresh view it goes
    assert kube.isvc["metadata"]["annotations"] == {}


def start_canary(fleet: Fleet, kube: RecordingKube, **rollout: Any) -> tuple[tuple[str, str], str]:
    """An InferenceService of 4 ready pods of version 3, then version 4 applied: the canary's
    Deployment is created, and made ready. Returns the key and the canary revision."""
    key = start(fleet, kube, isvc(replicas=4, rollout=rollout))
    fleet.observe_isvc("MODIFIED", kube.isvc)
    mark_deployment_ready(fleet, kube, replicas=4)
    fleet.reconcile(key)
    body = isvc(replicas=4, rollout=rollout)
    body["spec"]["model"]["version"] = 4
    body["metadata"]["generation"] = 2
    body["status"] = kube.isvc["status"]
    kube.isvc = bump(body, kube)
    fleet.observe_isvc("MODIFIED", kube.isvc)
    fleet.reconcile(key)
    fleet.observe_isvc("MODIFIED", kube.isvc)
    rollout_status = kube.isvc["status"]["rollout"]
    canary_revision = rollout_status["canaryRevision"]
    _, children = fleet.snapshot(key)
    (dep,) = [copy.deepcopy(v) for (kind, _), v in children.items()
              if kind == "Deployment" and v["metadata"]["labels"]["tfleet.dev/revision"] == canary_revision]
    dep["metadata"]["generation"] = 1
    dep["status"] = {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                     "updatedReplicas": 1}
    fleet.observe_child("MODIFIED", bump(dep, kube))
    return key, canary_revision


STEPS = {"steps": [{"weight": 10, "pause": "60s"}, {"weight": 50, "pause": "60s"}]}


def test_rollbacks_and_invalid_specs_are_logged_as_warnings(setup, caplog):
    fleet, kube = setup
    key, canary = start_canary(fleet, kube, **STEPS)
    body = copy.deepcopy(kube.isvc)
    body["metadata"]["annotations"] = {"tfleet.dev/rollout-abort": canary}
    kube.isvc = bump(body, kube)
    fleet.observe_isvc("MODIFIED", kube.isvc)
    with caplog.at_level(logging.INFO, logger="tfleet"):
        fleet.reconcile(key)
    assert kube.isvc["status"]["rollout"]["phase"] == "RolledBack"
    rollback = [r for r in caplog.records if "Rolled back revision" in r.getMessage()]
    assert rollback and {r.levelno for r in rollback} == {logging.WARNING}, caplog.text
    assert "ml/resnet" in rollback[0].getMessage()

    caplog.clear()
    body = copy.deepcopy(kube.isvc)
    body["spec"]["model"]["basePath"] = "ftp://x/y"
    body["metadata"]["generation"] = 3
    kube.isvc = bump(body, kube)
    fleet.observe_isvc("MODIFIED", kube.isvc)
    with caplog.at_level(logging.INFO, logger="tfleet"):
        fleet.reconcile(key)
    invalid = [r for r in caplog.records if "spec.model.basePath" in r.getMessage()]
    assert invalid and {r.levelno for r in invalid} == {logging.WARNING}, caplog.text


def test_a_canary_whose_pod_fails_its_pre_flight_is_rolled_back_at_once_with_the_bridges_words(setup, monkeypatch):
    from tfleet.runtime import bridge_client as podhealth

    wrong = ("request 1 of 2 returned a wrong answer: predictions[0] is 7.0, expected 2.5 (tolerance 1e-05); "
             "returned [7.0], expected [2.5]")
    monkeypatch.setattr(podhealth, "fetch_report", lambda ip, *a, **k: podhealth.BridgeReport(
        preflight_error=wrong if ip == "10.0.9.9" else ""))
    fleet, kube = setup
    key, canary = start_canary(fleet, kube, **STEPS)
    fleet.observe_isvc("MODIFIED", kube.isvc)
    _, children = fleet.snapshot(key)
    (dep,) = [copy.deepcopy(v) for (kind, _), v in children.items()
              if kind == "Deployment" and v["metadata"]["labels"]["tfleet.dev/revision"] == canary]
    dep["status"] = {"observedGeneration": 1, "replicas": 1, "readyReplicas": 0, "updatedReplicas": 1}
    fleet.observe_child("MODIFIED", bump(dep, kube))
    kube.pods = [{"metadata": {"name": "resnet-canary", "namespace": "ml",
                               "labels": {"tfleet.dev/inferenceservice": "resnet", "tfleet.dev/revision": canary}},
                  "status": {"podIP": "10.0.9.9", "conditions": [{"type": "Ready", "status": "False"}]}}]
    fleet.reconcile(key)
    rollout = kube.isvc["status"]["rollout"]
    assert (rollout["phase"], rollout["reason"]) == ("RolledBack", "PreflightFailed")
    assert rollout["message"] == f"Rolled back revision {canary}: the pre-flight failed: {wrong}"
    conditions = {c["type"]: c for c in kube.isvc["status"]["conditions"]}
    assert (conditions["Progressing"]["reason"], conditions["Degraded"]["reason"]) == ("PreflightFailed", "RolledBack")
    assert ("Warning", "RolloutRolledBack", rollout["message"]) in kube.events


def test_a_metric_source_that_fails_is_named_at_once_and_warned_about_once(caplog):
    from tfleet.engine.analysis import Result
    from tfleet.runtime.observers import MetricChecks

    down = Result(None, "Prometheus at http://prometheus:9090 did not answer: [Errno 111] Connection refused",
                  source_failed=True)
    kube = RecordingKube()
    # Message-only status changes wait long here: the warning's status must not.
    fleet = Fleet(kube, clock=lambda: datetime(2026, 1, 1), schedule=lambda d, fn: None,  # type: ignore[arg-type]
                  status_coalesce_seconds=30, monotonic=lambda: 1000.0)
    queries: list[str] = []
    fleet.checks = MetricChecks(lambda: 1000.0, query=lambda check, query: queries.append(query) or down)
    analysis = {"prometheus": {"address": "http://prometheus:9090", "query": "errors", "threshold": 0.01}}
    key, _ = start_canary(fleet, kube, analysis=analysis, **STEPS)
    kube.events.clear()
    with caplog.at_level(logging.INFO, logger="tfleet"):
        fleet.reconcile(key)
    assert queries, "the metric check ran"
    assert [(t, r) for t, r, _ in kube.events] == [("Warning", "MetricCheckInconclusive")]
    assert down.message in kube.events[0][2]
    message = kube.isvc["status"]["rollout"]["message"]
    assert message == f"Step 1 of 2 (steps[0]), weight 10%: 1 of 1 canary pods ready, waiting for the metric " \
                      f"check: {down.message}"
    assert any(r.levelno == logging.WARNING and down.message in r.getMessage() for r in caplog.records)
    # Looked at again while Prometheus stays down: named in the status, not warned about again.
    fleet.observe_isvc("MODIFIED", kube.isvc)
    fleet.reconcile(key)
    assert [r for _, r, _ in kube.events] == ["MetricCheckInconclusive"]
    assert kube.isvc["status"]["rollout"]["phase"] == "Progressing"


def test_a_canary_whose_figures_fail_the_builtin_analysis_is_rolled_back_naming_them(caplog):
    from tfleet.health.traffic import TrafficFigures
    from tfleet.runtime.observers import MetricChecks

    bounds = (1000.0, 2000.0, float("inf"))
    asked: list[tuple[str, str]] = []

    def traffic(ip: str, since: str) -> TrafficFigures:
        asked.append((ip, since))
        if ip == "10.0.9.9":  # the canary: 41 of 1000 requests failed
            return TrafficFigures(requests=1000, errors=41, by_status={"OK": 959, "INTERNAL": 41},
                                  latency_bounds=bounds, latency_counts=(959, 0, 0))
        return TrafficFigures(requests=1000, errors=2, by_status={"OK": 998, "UNAVAILABLE": 2},
                              latency_bounds=bounds, latency_counts=(998, 0, 0))

    kube = RecordingKube()
    fleet = Fleet(kube, clock=lambda: datetime(2026, 1, 1), schedule=lambda d, fn: None,  # type: ignore[arg-type]
                  status_coalesce_seconds=0, monotonic=lambda: 1000.0)
    fleet.checks = MetricChecks(lambda: 1000.0, traffic=traffic)
    analysis = {"builtin": {"maxErrorRateIncrease": 0.01, "minRequests": 200}}
    key, canary = start_canary(fleet, kube, analysis=analysis, **STEPS)
    stable = kube.isvc["status"]["rollout"]["stableRevision"]
    kube.pods = [{"metadata": {"name": name, "namespace": "ml",
                               "labels": {"tfleet.dev/inferenceservice": "resnet", "tfleet.dev/revision": rev}},
                  "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}}
                 for name, rev, ip in (("c", canary, "10.0.9.9"), ("s0", stable, "10.0.0.1"), ("s1", stable, "10.0.0.2"))]
    fleet.observe_isvc("MODIFIED", kube.isvc)
    fleet.reconcile(key)
    rollout = kube.isvc["status"]["rollout"]
    step_started = rollout.get("stepStartedAt")
    assert sorted(asked) == [("10.0.0.1", step_started), ("10.0.0.2", step_started), ("10.0.9.9", step_started)]
    assert (rollout["phase"], rollout["reason"]) == ("RolledBack", "MetricCheckFailed")
    assert rollout["message"] == f"Rolled back revision {canary}: canary error rate 4.1% vs stable 0.2%, allowed +1%"
    (record,) = rollout["analysis"]
    assert (record["revision"], record["step"], record["verdict"]) == (canary, 0, "Failed")
    assert (record["canary"]["pods"], record["canary"]["errors"], record["stable"]["pods"],
            record["stable"]["requests"]) == (1, 41, 2, 2000)
    assert ("Warning", "RolloutRolledBack", rollout["message"]) in kube.events


def test_an_unpinned_fleet_reports_the_versions_its_bridges_serve(monkeypatch):
    # TF Serving picks a newer version up in place when none is pinned: only the pods' health
    # bridges know which one each serves. Asked once a minute, written only when it changes.
    from tfleet.runtime import bridge_client as podhealth

    served = {"10.0.0.0": 5, "10.0.0.1": 5}
    asked: list[str] = []

    def fake_bridge(ip: str, *args: object, **kwargs: object) -> int | None:
        asked.append(ip)
        return served[ip]

    monkeypatch.setattr(podhealth, "fetch_served_version", fake_bridge)
    kube = RecordingKube()
    mono = [0.0]
    fleet = Fleet(kube, clock=lambda: datetime(2026, 1, 1), schedule=lambda d, fn: None,  # type: ignore[arg-type]
                  status_coalesce_seconds=0, monotonic=lambda: mono[0])
    body = isvc()
    del body["spec"]["model"]["version"]
    key = start(fleet, kube, body)
    fleet.observe_isvc("MODIFIED", kube.isvc)
    mark_deployment_ready(fleet, kube)
    add_pods(fleet, kube, ready=True)
    fleet.reconcile(key)
    assert kube.isvc["status"]["servingVersion"] == 5 and "servingVersions" not in kube.isvc["status"]
    assert sorted(asked) == ["10.0.0.0", "10.0.0.1"]
    kube.calls.clear()
    fleet.reconcile(key)  # within the minute: not asked again, nothing written
    assert len(asked) == 2 and [c for c in kube.calls if c[0] == "status"] == []
    served["10.0.0.1"] = 6  # one pod picked version 6 up
    mono[0] += 61
    fleet.reconcile(key)
    assert kube.isvc["status"]["servingVersions"] == [{"version": 5, "pods": 1}, {"version": 6, "pods": 1}]


def test_a_transition_whose_event_cannot_be_posted_is_not_recorded_until_it_is():
    # Otherwise the status records a promotion that no Event tells of, and the next pass,
    # reading the recorded status, never decides (or reports) it again.
    kube = RecordingKube()
    fleet, delays = scheduling_fleet(kube)
    key = settled_then_bumped(fleet, kube, {"steps": [{"weight": 50, "pause": "60s"}]})
    kube.fail_events = KubeError(500, "InternalError", "etcd is unhappy")
    kube.calls.clear()
    fleet.reconcile(key)
    assert ("status", "InferenceService", "resnet") not in kube.calls  # the start is not recorded
    assert delays and delays[-1] == 0.5  # retried with back-off
    kube.fail_events = None
    fleet.reconcile(key)
    assert kube.isvc["status"]["rollout"]["phase"] == "Progressing"
    assert [reason for _, reason, _ in kube.events].count("RolloutStarted") == 1


def _status(generation: int, ready: str = "False", message: str = "0/2 pods ready",
            reason: str = "MinimumReplicasUnavailable", model: str = "False",
            model_reason: str = "NoReadyReplicas") -> dict[str, Any]:
    return {"observedGeneration": generation, "replicas": 2,
            "conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": message,
                            "observedGeneration": generation},
                           {"type": "ModelAvailable", "status": model,
                            "reason": model_reason if model == "False" else "ReplicasServing"}]}


@pytest.mark.parametrize(("case", "previous", "new", "child_writes", "waits"), [
    ("the autoscaler's first scale, nothing else", _status(1), _status(2), 0, True),
    ("that, and a pod more ready", _status(1), _status(2, message="1/2 pods ready"), 0, True),
    ("that, and Ready turning True", _status(1), _status(2, ready="True"), 0, False),
    ("that, and a reason why not (a load error)", _status(1), _status(2, reason="ModelLoadFailed"), 0, False),
    ("that, and the first pod serving", _status(1), _status(2, model="True"), 0, True),
    ("that, and the model no longer served", _status(1, model="True"), _status(2), 0, False),
    ("that, and why the model is not served", _status(1), _status(2, model_reason="ModelLoadFailed"), 0, False),
    ("a spec change that wrote a child", _status(1), _status(2), 1, False),
    ("an InferenceService already Ready", _status(1, ready="True"), _status(2, ready="True"), 0, False),
    ("no new generation at all", _status(1), _status(1, message="1/2 pods ready"), 0, False),
])
def test_only_an_acknowledgement_of_a_spec_change_that_changed_nothing_waits_for_ready(
        case, previous, new, child_writes, waits):
    from tfleet.engine.plan import ChildPlan
    from tfleet.runtime.fleet import acknowledges_only

    child_plan = ChildPlan(apply=[{"kind": "Deployment"}] * child_writes)
    assert acknowledges_only(previous, new, child_plan) is waits, case


def test_a_held_status_asks_for_the_look_that_writes_it_whatever_else_came_since():
    from tfleet.runtime.executor import StatusHold

    now = [0.0]
    hold = StatusHold(1.0, lambda: now[0])
    assert hold.may_wait(("ml", "a"), urgent=False) == 1.0
    now[0] = 0.4
    # Another pass meanwhile: the write stays due at 1.0, and this pass asks to look then too
    # (a wake-up set since for sooner may have replaced the first one).
    assert hold.may_wait(("ml", "a"), urgent=False) == pytest.approx(0.6)
    now[0] = 1.0
    assert hold.may_wait(("ml", "a"), urgent=False) is None


def test_an_invalid_spec_is_told_before_the_status_records_it_and_a_failed_post_waits(setup):
    fleet, kube = setup
    key = start(fleet, kube, isvc())
    fleet.observe_isvc("MODIFIED", kube.isvc)
    bad = copy.deepcopy(kube.isvc)
    bad["spec"]["model"]["basePath"] = "ftp://models/resnet"
    bad["metadata"].update(generation=2, resourceVersion=str(next(kube.rv)))
    kube.isvc = bad
    fleet.observe_isvc("MODIFIED", bad)
    kube.fail_events = KubeError(503, "ServiceUnavailable", "busy")
    kube.calls.clear()
    fleet.reconcile(key)
    assert ("status", "InferenceService", "resnet") not in kube.calls  # nobody told yet: not recorded
    kube.fail_events = None
    fleet.reconcile(key)
    ready = next(c for c in kube.isvc["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert [reason for _, reason, _ in kube.events].count("InvalidSpec") == 1


def test_an_edit_from_one_invalid_spec_to_another_is_reported_at_once():
    kube = RecordingKube()
    mono = [0.0]
    fleet = Fleet(kube, clock=lambda: datetime(2026, 1, 1), schedule=lambda d, fn: None,  # type: ignore[arg-type]
                  status_coalesce_seconds=1.0, monotonic=lambda: mono[0])
    bad = isvc()
    bad["spec"]["model"]["basePath"] = "ftp://models/resnet"
    key = start(fleet, kube, bad)
    fleet.observe_isvc("MODIFIED", kube.isvc)
    worse = copy.deepcopy(kube.isvc)
    worse["spec"]["model"]["basePath"] = "gopher://models/resnet"
    worse["metadata"].update(generation=2, resourceVersion=str(next(kube.rv)))
    kube.isvc = worse
    fleet.observe_isvc("MODIFIED", worse)
    fleet.reconcile(key)
    assert kube.isvc["status"]["observedGeneration"] == 2  # not held for a Ready that never comes
    ready = next(c for c in kube.isvc["status"]["conditions"] if c["type"] == "Ready")
    assert "gopher" in ready["message"]


def test_the_autoscalers_first_scale_of_a_new_inference_service_is_acknowledged_with_ready():
    kube = RecordingKube()
    mono = [0.0]
    fleet = Fleet(kube, clock=lambda: datetime(2026, 1, 1), schedule=lambda d, fn: None,  # type: ignore[arg-type]
                  status_coalesce_seconds=1.0, monotonic=lambda: mono[0])
    body = isvc(autoscaling={"minReplicas": 2, "maxReplicas": 4, "targetCPUUtilizationPercentage": 70})
    del body["spec"]["replicas"]
    key = start(fleet, kube, body)
    # The first status goes out before the autoscaler is created (which resizes the object).
    assert [c[0:2] for c in kube.calls][-2:] == [("status", "InferenceService"), ("apply", "HorizontalPodAutoscaler")]
    fleet.observe_isvc("MODIFIED", kube.isvc)
    scaled = copy.deepcopy(kube.isvc)
    scaled["spec"]["replicas"] = 2
    scaled["metadata"].update(generation=2, resourceVersion=str(next(kube.rv)))
    kube.isvc = scaled
    fleet.observe_isvc("MODIFIED", scaled)
    kube.calls.clear()
    mono[0] = 0.5
    fleet.reconcile(key)
    assert kube.calls == []  # the acknowledgement alone waits
    mark_deployment_ready(fleet, kube, replicas=2)
    mono[0] = 3.0
    fleet.reconcile(key)
    assert [c[0] for c in kube.calls] == ["status"]  # one write: acknowledged, and Ready
    assert kube.isvc["status"]["observedGeneration"] == 2
    assert next(c for c in kube.isvc["status"]["conditions"] if c["type"] == "Ready")["status"] == "True"


def test_a_lost_answer_to_the_autoscaler_written_after_the_status_is_resumed_without_undoing_anything():
    # The autoscaler goes out after the first status write: a crash, or a lost answer, between
    # the two leaves a status and no known autoscaler. The next pass applies the autoscaler again
    # (the same object: server-side apply) and rewrites nothing else.
    kube = RecordingKube()
    fleet, delays = scheduling_fleet(kube)
    body = isvc(autoscaling={"minReplicas": 2, "maxReplicas": 4, "targetCPUUtilizationPercentage": 70})
    del body["spec"]["replicas"]
    kube.lose_apply_answer_of["HorizontalPodAutoscaler"] = KubeError(500, "InternalError", "the connection dropped")
    key = start(fleet, kube, body)
    assert [c[:2] for c in kube.calls][-2:] == [("status", "InferenceService"), ("apply", "HorizontalPodAutoscaler")]
    assert delays, "the failed pass is retried"
    first_status = copy.deepcopy(kube.isvc["status"])
    fleet.observe_isvc("MODIFIED", kube.isvc)
    kube.calls.clear()
    fleet.reconcile(key)
    assert kube.calls == [("apply", "HorizontalPodAutoscaler", "resnet")]
    assert kube.isvc["status"] == first_status
    fleet.reconcile(key)
    assert kube.calls == [("apply", "HorizontalPodAutoscaler", "resnet")]  # and then nothing more
