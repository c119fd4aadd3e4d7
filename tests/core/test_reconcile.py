"""The reconcile plan: desired children against observed ones, and the status write decision.

Observed objects are what an API server returns for an applied manifest: tfleet's fields plus
server-set metadata, defaults and status. A plan that finds nothing to change has no writes.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from tfleet.api import vocabulary
from tfleet.desired import children as builders
from tfleet.engine import plan as reconcile
from tfleet.engine import rollout
from tfleet.engine.plan import ChildKey, plan_children, plan_status
from tfleet.engine.plan import StatusPlan as Plan

from .isvc_factory import IsvcBuilder, as_stored, make_isvc, make_pod

NOW = datetime(2026, 1, 1, 0, 0, 0)
LATER = datetime(2026, 1, 1, 0, 1, 0)

Manifest = dict[str, Any]


def text(moment: datetime) -> str:
    return rollout.format_time(moment)


def keys(manifests: list[Manifest]) -> list[str]:
    return [f"{m['kind']}/{m['metadata']['name']}" for m in manifests]


def revision_of(manifest: IsvcBuilder) -> str:
    return builders.compute_revision(manifest.isvc()).name


def _with_status(body: Manifest, plan: Plan) -> Manifest:
    out = copy.deepcopy(body)
    out["status"] = plan.status
    return out


def converged(manifest: IsvcBuilder) -> tuple[Manifest, dict[ChildKey, Manifest]]:
    """The InferenceService and its children after a first reconcile, as read back from the API
    server: the children applied and ready, the status written."""
    body = manifest.manifest()
    first = plan_children(body, {}, [], NOW)
    children = {reconcile.child_key(m): as_stored(m) for m in first.apply}
    written = plan_status(body, children, [], text(NOW), first.rollout)
    assert written.status is not None
    return _with_status(body, written), children


FULL = make_isvc("x").version(3).replicas(3).autoscaling(2, 6).batching(8, [4, 8]).credentials("c") \
    .resources(requests={"cpu": "0.5", "memory": "1Gi"}, limits={"memory": "1536Mi"})
REV = revision_of(FULL)
DEPLOYMENT: ChildKey = ("Deployment", f"x-{REV}")
CONFIG_MAP: ChildKey = ("ConfigMap", f"x-{REV}")


# --------------------------------------------------------------------------- children


def test_first_reconcile_creates_every_child_owned_and_stamped() -> None:
    result = plan_children(FULL.manifest(), {}, [], NOW)
    assert keys(result.apply) == [f"ConfigMap/x-{REV}", f"Deployment/x-{REV}", "Service/x", "Service/x-grpc",
                                  "HorizontalPodAutoscaler/x", "PodDisruptionBudget/x"]
    assert result.delete == [] and result.scale == []
    for child in result.apply:
        meta = child["metadata"]
        assert meta["ownerReferences"] == [{
            "apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceService", "name": "x", "uid": "uid-x",
            "controller": True, "blockOwnerDeletion": True,
        }]
        assert len(meta["annotations"][vocabulary.ANNOTATION_APPLIED]) == 16
    # The first revision goes straight to stable, at full size.
    assert result.apply[1]["spec"]["replicas"] == 3
    assert result.rollout is not None
    assert (result.rollout.phase, result.rollout.stable, result.rollout.target_version) == ("Idle", REV, 3)
    assert [(e.type, e.reason) for e in result.events] == [("Normal", "ChildrenChanged")]
    assert result.events[0].message.startswith(f"Created ConfigMap x-{REV}, Created Deployment x-{REV}, ")


def _edit(key: ChildKey, change: Callable[[Manifest], None]) -> Callable[[dict[ChildKey, Manifest]], None]:
    def apply(children: dict[ChildKey, Manifest]) -> None:
        change(children[key])
    return apply


def _set_image(d: Manifest) -> None:
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "tensorflow/serving:nightly"


def _other_annotations(obj: Manifest) -> None:
    obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "4"
    obj["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"] = "ml:apps/Deployment:ml/x"
    obj["metadata"].setdefault("labels", {})["app.kubernetes.io/version"] = "3"


def _pod_template_annotation(d: Manifest) -> None:
    # `kubectl rollout restart` stamps this; it is not tfleet's to remove.
    d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] = "2026-01-01T00:00:00Z"


def _hpa_status(h: Manifest) -> None:
    h["status"] = {"currentReplicas": 5, "desiredReplicas": 6, "currentMetrics": []}
    h["spec"]["behavior"] = {"scaleDown": {"stabilizationWindowSeconds": 300}}


def _canonical_quantities(d: Manifest) -> None:
    resources = d["spec"]["template"]["spec"]["containers"][0]["resources"]
    resources["requests"]["cpu"] = "500m"
    resources["limits"]["memory"] = "1.5Gi"


def _extra_container(d: Manifest) -> None:
    d["spec"]["template"]["spec"]["containers"].append({"name": "injected", "image": "proxy:1"})


def _service_port(s: Manifest) -> None:
    s["spec"]["ports"][0]["port"] = 9999


def _deployment_replicas(d: Manifest) -> None:
    d["spec"]["replicas"] = 1


def _stamp(d: Manifest) -> None:
    d["metadata"]["annotations"][vocabulary.ANNOTATION_APPLIED] = "0" * 16


def _deleted(key: ChildKey) -> Callable[[dict[ChildKey, Manifest]], None]:
    def apply(children: dict[ChildKey, Manifest]) -> None:
        del children[key]
    return apply


DRIFT_CASES = [
    pytest.param(lambda children: None, [], id="nothing changed: no writes"),
    pytest.param(_edit(DEPLOYMENT, _other_annotations), [], id="annotations and labels added by other tools"),
    pytest.param(_edit(DEPLOYMENT, _pod_template_annotation), [], id="a rollout restart annotation"),
    pytest.param(_edit(("HorizontalPodAutoscaler", "x"), _hpa_status), [], id="the autoscaler's status and defaults"),
    pytest.param(_edit(DEPLOYMENT, _canonical_quantities), [],
                 id="quantities read back in canonical form (0.5 as 500m, 1536Mi as 1.5Gi)"),
    pytest.param(_edit(DEPLOYMENT, _set_image), [f"Deployment/x-{REV}"], id="an edited image is reverted"),
    pytest.param(_edit(DEPLOYMENT, _deployment_replicas), [f"Deployment/x-{REV}"],
                 id="replicas edited on the Deployment are reverted"),
    pytest.param(_edit(DEPLOYMENT, _extra_container), [f"Deployment/x-{REV}"], id="an injected container is drift"),
    pytest.param(_deleted(CONFIG_MAP), [f"ConfigMap/x-{REV}"], id="a deleted ConfigMap is created again"),
    pytest.param(_edit(("Service", "x"), _service_port), ["Service/x"], id="an edited Service port is reverted"),
    pytest.param(_edit(DEPLOYMENT, _stamp), [f"Deployment/x-{REV}"],
                 id="an object applied from an older desired state is re-applied"),
]


@pytest.mark.parametrize(("mutate", "applied"), DRIFT_CASES)
def test_drift(mutate: Callable[[dict[ChildKey, Manifest]], None], applied: list[str]) -> None:
    body, children = converged(FULL)
    mutate(children)
    result = plan_children(body, children, [], LATER)
    assert keys(result.apply) == applied
    assert result.delete == [] and result.scale == []
    assert result.writes == len(applied)
    expected_reason = ("Created" if applied and applied[0].startswith("ConfigMap") else "Updated")
    assert [e.reason for e in result.events] == ([expected_reason] if applied else [])
    # Drift is not a new revision: the rollout state stays as it was.
    assert result.rollout == rollout.State.from_status(body["status"]["rollout"])


def test_reapplied_object_is_the_desired_one_not_the_observed() -> None:
    body, children = converged(FULL)
    _set_image(children[DEPLOYMENT])
    (deployment,) = plan_children(body, children, [], LATER).apply
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "tensorflow/serving:2.19.0"
    assert "status" not in deployment and "resourceVersion" not in deployment["metadata"]


NEW = "{new}"  # the revision the changed spec makes

SPEC_CHANGE_CASES = [
    pytest.param(lambda b: b.headless(False), [], ["Service/x-grpc"], id="headless off deletes the gRPC Service"),
    pytest.param(lambda b: b.unset("spec.autoscaling").replicas(1), [f"Deployment/x-{REV}"],
                 ["HorizontalPodAutoscaler/x", "PodDisruptionBudget/x"],
                 id="autoscaling off at one replica deletes the HPA and the PDB"),
    pytest.param(lambda b: b.version(4), [f"ConfigMap/x-{NEW}", f"Deployment/x-{NEW}"], [],
                 id="a new model version is a new revision beside the stable one"),
    pytest.param(lambda b: b.replicas(5), [f"Deployment/x-{REV}"], [],
                 id="a new replica count updates only the Deployment"),
    pytest.param(lambda b: b.monitoring(False), [f"ConfigMap/x-{NEW}", f"Deployment/x-{NEW}"], [],
                 id="turning monitoring off is a new revision"),
    pytest.param(lambda b: b.set("metadata.labels", {"team": "a"}), [], [],
                 id="labels on the InferenceService change no child"),
]


@pytest.mark.parametrize(("change", "applied", "deleted"), SPEC_CHANGE_CASES)
def test_spec_changes(change: Callable[[IsvcBuilder], IsvcBuilder], applied: list[str], deleted: list[str]) -> None:
    body, children = converged(FULL)
    changed = change(FULL.clone())
    new_body = {**changed.manifest(), "status": body["status"]}
    result = plan_children(new_body, children, [], LATER)
    new = revision_of(changed)
    assert keys(result.apply) == [a.replace(NEW, new) for a in applied]
    assert keys(result.delete) == deleted
    # The stable revision keeps serving at its size: nothing is scaled down by a spec change.
    assert result.scale == []
    if deleted:
        # Deletes carry the observed object (its uid and resourceVersion allow a precondition).
        assert all(d["metadata"]["resourceVersion"] for d in result.delete)
    if new != REV:
        assert result.rollout is not None
        assert (result.rollout.phase, result.rollout.stable, result.rollout.canary) == ("Progressing", REV, new)
        assert result.apply[1]["spec"]["replicas"] == rollout.canary_replicas(3, 10)
        assert "RolloutStarted" in [e.reason for e in result.events]


def test_an_annotation_tfleet_stops_setting_is_noticed_through_the_applied_hash() -> None:
    annotated = FULL.clone().set("spec.service.annotations", {"lb.example.com/internal": "true"})
    body, children = converged(annotated)
    plain = {**FULL.manifest(), "status": body["status"]}
    # The observed Service still carries the annotation, a superset of what is desired now.
    result = plan_children(plain, children, [], LATER)
    assert keys(result.apply) == ["Service/x"]
    assert "lb.example.com/internal" not in result.apply[0]["metadata"]["annotations"]


def test_objects_not_owned_are_never_touched() -> None:
    body, children = converged(make_isvc("x").headless(False))
    foreign = as_stored({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "x-grpc", "namespace": "ml", "labels": {"tfleet.dev/inferenceservice": "x"},
                     "ownerReferences": [{"apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceService",
                                          "name": "x", "uid": "uid-of-an-earlier-x", "controller": True}]},
        "spec": {"clusterIP": "None", "ports": [{"port": 8500}]},
    })
    children[("Service", "x-grpc")] = foreign
    result = plan_children(body, children, [], LATER)
    assert result.delete == [] and result.apply == [] and result.scale == []


def test_invalid_spec_plans_no_child_writes() -> None:
    body, children = converged(FULL)
    broken = {**FULL.clone().batching(32, [8, 16]).headless(False).manifest(), "status": body["status"]}
    result = plan_children(broken, children, [], LATER)
    assert (result.apply, result.delete, result.scale, result.events) == ([], [], [], [])
    assert result.rollout is None
    assert result.invalid == "spec.batching.allowedBatchSizes: last size (16) must equal maxBatchSize (32)"


# --------------------------------------------------------------------------- status


def test_status_is_written_once_then_left_alone() -> None:
    body = FULL.manifest()
    first_children = plan_children(body, {}, [], NOW)
    children = {reconcile.child_key(m): as_stored(m) for m in first_children.apply}
    first = plan_status(body, children, [], text(NOW), first_children.rollout)
    assert first.status is not None and first.writes == 1
    ready = next(c for c in first.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Available")
    assert first.status["rollout"] == {"phase": "Idle", "stableRevision": REV, "targetVersion": 3,
                                       "message": f"Revision {REV} is stable"}
    assert first.status["servingVersion"] == 3
    # Becoming ready is visible in the status; it posts no Event of its own.
    assert first.events == []
    # A first status that is already Ready is the one write the InferenceService needs.
    assert first.status_urgent is True
    # The next reconcile (a minute later, same observations) writes nothing and posts nothing.
    body = _with_status(body, first)
    again_children = plan_children(body, children, [], LATER)
    assert (again_children.writes, again_children.events) == (0, [])
    again = plan_status(body, children, [], text(LATER), again_children.rollout)
    assert (again.status, again.events, again.writes) == (None, [], 0)


def test_status_follows_the_deployment() -> None:
    body, children = converged(FULL)
    children[DEPLOYMENT]["status"]["readyReplicas"] = 1
    children[DEPLOYMENT]["status"]["availableReplicas"] = 1
    second = plan_status(body, children, [], text(LATER), None)
    assert second.status is not None
    assert (second.status["readyReplicas"], second.status["ready"]) == (1, "1/3")
    # Ready going False is visible in the status; only becoming Ready posts an Event.
    assert second.events == []


def test_status_names_the_trouble_of_the_pods() -> None:
    body, children = converged(FULL)
    children[DEPLOYMENT]["status"]["readyReplicas"] = 2
    pods = [reconcile.summarize_pod(make_pod(REV, "a")), reconcile.summarize_pod(make_pod(REV, "b")),
            reconcile.summarize_pod(make_pod(REV, "c", ready=False, restarts=5, waiting="CrashLoopBackOff"))]
    result = plan_status(body, children, [p for p in pods if p], text(LATER), None)
    assert result.status is not None
    ready = next(c for c in result.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["message"]) == ("False", "2 of 3 pods are ready; 1 pod crash-looping")


def test_unowned_deployment_does_not_count_for_status() -> None:
    body, children = converged(FULL)
    children[DEPLOYMENT]["metadata"]["ownerReferences"] = []
    result = plan_status(body, children, [], text(LATER), None)
    assert result.status is not None
    ready = next(c for c in result.status["conditions"] if c["type"] == "Ready")
    assert (ready["reason"], ready["message"]) == ("MinimumReplicasUnavailable", "0 of 3 pods are ready")
    assert result.status["readyReplicas"] == 0


def test_invalid_spec_sets_the_condition_and_warns_once() -> None:
    serving, children = converged(FULL)
    broken = copy.deepcopy(serving)
    broken["spec"]["rollout"] = {"steps": [{"weight": 50}, {"weight": 20}]}
    broken["metadata"]["generation"] = 2
    message = "spec.rollout.steps[1].weight: step weights must be strictly increasing, but 20 follows 50"

    first = plan_status(broken, children, [], text(LATER), None)
    assert first.invalid == message
    assert first.status is not None
    ready = next(c for c in first.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "InvalidSpec", message)
    assert first.status["observedGeneration"] == 2
    assert [(e.type, e.reason, e.message) for e in first.events] == [("Warning", "InvalidSpec", message)]
    # Nothing changes until the spec does: no status write, no second Event, no hot loop.
    second = plan_status(_with_status(broken, first), children, [], "2026-01-01T00:02:00Z", None)
    assert (second.status, second.events, second.writes) == (None, [], 0)
    assert plan_children(broken, children, [], LATER).writes == 0


def test_a_child_the_api_server_rejects_makes_the_spec_invalid() -> None:
    body, children = converged(FULL)
    rejection = f'Deployment.apps "x-{REV}" is invalid: spec.template.spec.priorityClassName: Not found: "gold"'
    result = plan_status(body, children, [], text(LATER), None, rejected=rejection)
    assert result.invalid == rejection
    assert result.status is not None
    ready = next(c for c in result.status["conditions"] if c["type"] == "Ready")
    assert (ready["reason"], ready["message"]) == ("InvalidSpec", rejection)
    assert [e.type for e in result.events] == ["Warning"]


def _status(generation: int = 1, ready: str = "True", phase: str = "Idle", step: int | None = None,
            ready_replicas: int = 3, message: str = "Revision a is stable") -> Manifest:
    rollout_status: dict[str, Any] = {"phase": phase, "stableRevision": "a", "message": message}
    if step is not None:
        rollout_status.update(canaryRevision="b", step=step)
    return {"observedGeneration": generation, "readyReplicas": ready_replicas, "ready": f"{ready_replicas}/3",
            "conditions": [{"type": "Ready", "status": ready, "message": f"{ready_replicas} of 3 pods are ready"}],
            "rollout": rollout_status}


URGENCY_CASES = [
    pytest.param({}, _status(ready="False", ready_replicas=0), False, id="the first status waits for the pods coming up"),
    pytest.param({}, _status(), True, id="a first status that is already Ready goes out at once"),
    pytest.param(_status(), _status(generation=2), True, id="a new generation acknowledged"),
    pytest.param(_status(), _status(ready="False", ready_replicas=2), True, id="a condition flipped"),
    pytest.param(_status(), _status(phase="Progressing", step=0), True, id="a rollout started"),
    pytest.param(_status(phase="Progressing", step=0), _status(phase="Progressing", step=1), True,
                 id="a rollout moved to its next step"),
    pytest.param(_status(phase="Progressing", step=1), _status(phase="RolledBack"), True, id="a rollout rolled back"),
    pytest.param(_status(ready_replicas=4), _status(ready_replicas=5), False, id="counts alone can wait"),
    pytest.param(_status(phase="Progressing", step=0,
                         message="Step 1 of 2 (steps[0]), weight 10%: waiting for canary pods, 0 of 1 ready"),
                 _status(phase="Progressing", step=0,
                         message="Step 1 of 2 (steps[0]), weight 10%: 1 of 1 canary pods ready, holding for the pause"),
                 False, id="a rollout message alone can wait"),
]


@pytest.mark.parametrize(("previous", "new", "urgent"), URGENCY_CASES)
def test_which_status_changes_are_written_at_once(previous: Manifest, new: Manifest, urgent: bool) -> None:
    assert reconcile.status_is_urgent(previous, new) is urgent


def test_an_invalid_spec_is_reported_at_once() -> None:
    serving, children = converged(FULL)
    broken = copy.deepcopy(serving)
    broken["spec"]["batching"]["allowedBatchSizes"] = [2]
    result = plan_status(broken, children, [], text(LATER), None)
    assert result.status is not None and result.status_urgent is True


# --------------------------------------------------------------------------- what the rollout engine sees


POD_CASES = [
    pytest.param(make_pod("r1"), reconcile.PodSummary("r1", ready=True), id="a ready pod"),
    pytest.param(make_pod("r1", ready=False), reconcile.PodSummary("r1"), id="a pod still loading its model"),
    pytest.param(make_pod("r1", ready=False, restarts=4, waiting="CrashLoopBackOff", sidecar_restarts=1),
                 reconcile.PodSummary("r1", restarts=5, crash_looping=True),
                 id="a crash-looping pod; sidecar restarts count too"),
    pytest.param(make_pod("r1", ready=False, waiting="ImagePullBackOff"),
                 reconcile.PodSummary("r1", image_pull_failing=True), id="an image pull backing off"),
    pytest.param(make_pod("r1", ready=False, waiting="ErrImagePull"),
                 reconcile.PodSummary("r1", image_pull_failing=True), id="an image pull failing"),
    pytest.param(make_pod("r1", ready=False, waiting="InvalidImageName"),
                 reconcile.PodSummary("r1", image_pull_failing=True), id="an image name that cannot be pulled"),
    pytest.param(make_pod("r1", ready=False, waiting="ContainerCreating"), reconcile.PodSummary("r1"),
                 id="a container being created is no trouble"),
    pytest.param(make_pod("r1", unschedulable="0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
                 reconcile.PodSummary("r1", unschedulable="0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
                 id="a pod the scheduler cannot place, with its words"),
    pytest.param(make_pod("r1", deleting=True), None, id="a pod being deleted no longer counts"),
    pytest.param({**make_pod("r1"), "metadata": {"name": "p", "labels": {"tfleet.dev/inferenceservice": "x"}}}, None,
                 id="a pod without a revision is not a serving pod"),
]


@pytest.mark.parametrize(("pod", "expected"), POD_CASES)
def test_summarize_pod(pod: Manifest, expected: reconcile.PodSummary | None) -> None:
    got = reconcile.summarize_pod(pod)
    if expected is None:
        assert got is None
        return
    assert got is not None
    # The pod's identity, for asking its health bridge; the table compares the rest.
    assert (got.name, got.ip) == (pod["metadata"]["name"], pod["status"].get("podIP", ""))
    assert dataclasses.replace(got, name="", ip="") == expected


def _deployment(rev: str, replicas: int, ready: int, *, generation: int = 2, observed: int = 2,
                version: str | None = "3", deadline: bool = False) -> Manifest:
    labels = {"tfleet.dev/inferenceservice": "x", "tfleet.dev/revision": rev}
    if version is not None:
        labels["tfleet.dev/model-version"] = version
    return {
        "kind": "Deployment",
        "metadata": {"name": f"x-{rev}", "generation": generation, "labels": labels},
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": observed, "replicas": replicas, "readyReplicas": ready,
                   "updatedReplicas": replicas,
                   "conditions": [{"type": "Progressing", "status": "False" if deadline else "True",
                                   "reason": "ProgressDeadlineExceeded" if deadline else "NewReplicaSetAvailable"}]},
    }


def test_observe_revisions_joins_deployments_and_pods() -> None:
    pods = [reconcile.PodSummary("r1", ready=True, restarts=1),
            reconcile.PodSummary("r2", restarts=3, crash_looping=True),
            reconcile.PodSummary("r2", unschedulable="no GPU"), reconcile.PodSummary("r2", unschedulable="no GPU"),
            reconcile.PodSummary("r2", unschedulable="no CPU"),
            reconcile.PodSummary("gone", ready=True)]
    observed = reconcile.observe_revisions(
        [_deployment("r1", 3, 3), _deployment("r2", 4, 0, generation=3, observed=2, version=None, deadline=True),
         {"kind": "Deployment", "metadata": {"name": "unlabelled"}, "spec": {"replicas": 1}}],
        pods)
    assert observed == {
        "r1": rollout.Observed(replicas=3, ready=3, updated=3, pods=3, restarts=1, version=3),
        "r2": rollout.Observed(replicas=4, ready=0, updated=4, pods=4, current=False, restarts=3, crash_looping=1,
                               unschedulable=3, unschedulable_message="no GPU", deadline_exceeded=True),
    }


CONTROL_CASES = [
    pytest.param({}, rollout.Controls(), id="no annotations"),
    pytest.param({vocabulary.ANNOTATION_PAUSED: "true"}, rollout.Controls(paused=True), id="paused"),
    pytest.param({vocabulary.ANNOTATION_PAUSED: "True"}, rollout.Controls(paused=True), id="paused, capitalised"),
    pytest.param({vocabulary.ANNOTATION_PAUSED: "false"}, rollout.Controls(), id="explicitly not paused"),
    pytest.param({vocabulary.ANNOTATION_PROMOTE: "abc1234567"}, rollout.Controls(promote="abc1234567"),
                 id="promote names a revision"),
    pytest.param({vocabulary.ANNOTATION_ABORT: "abc1234567", vocabulary.ANNOTATION_PROMOTE: ""},
                 rollout.Controls(abort="abc1234567"), id="abort names a revision; an empty promote is none"),
]


@pytest.mark.parametrize(("annotations", "expected"), CONTROL_CASES)
def test_controls_come_from_annotations(annotations: dict[str, str], expected: rollout.Controls) -> None:
    assert reconcile.controls({"metadata": {"annotations": annotations}}) == expected


# --------------------------------------------------------------------------- comparison


QUANTITY_CASES = [
    pytest.param("0.5", "500m", True, id="0.5 is 500m"),
    pytest.param("1Gi", "1073741824", True, id="1Gi in bytes"),
    pytest.param("1536Mi", "1.5Gi", True, id="1536Mi is 1.5Gi"),
    pytest.param("2", 2, True, id="a string and an integer"),
    pytest.param("1k", "1000", True, id="decimal kilo"),
    pytest.param("1e3", "1k", True, id="an exponent"),
    pytest.param("1", "1m", False, id="one is not one milli"),
    pytest.param("1Gi", "1G", False, id="binary and decimal giga differ"),
    pytest.param("grpc", "http", False, id="plain strings compare as strings"),
]


@pytest.mark.parametrize(("want", "have", "same"), QUANTITY_CASES)
def test_quantities_compare_by_value_under_resources(want: Any, have: Any, same: bool) -> None:
    assert reconcile.is_subset({"resources": {"limits": {"q": want}}}, {"resources": {"limits": {"q": have}}}) is same


@pytest.mark.parametrize(("want", "have"), [
    pytest.param({"version": "0.5"}, {"version": "500m"}, id="quantity-like strings outside resources"),
    pytest.param({"port": "8500"}, {"port": 8500}, id="a string and an integer outside resources"),
    pytest.param({"readOnly": True}, {"readOnly": 1}, id="True is not 1"),
    pytest.param({"replicas": 1}, {"replicas": True}, id="1 is not True"),
    pytest.param({"readOnly": False}, {"readOnly": "0"}, id="False is not a quantity"),
    pytest.param({"resources": {"limits": {"cpu": True}}}, {"resources": {"limits": {"cpu": 1}}},
                 id="a boolean is not a quantity even under resources"),
])
def test_only_resources_compare_as_quantities(want: Any, have: Any) -> None:
    assert reconcile.is_subset(want, have) is False


# --------------------------------------------------------------------------- TF Serving's start-up error

START_FAILURE = ("2026-12-01 10:00:03.120 E tensorflow_serving/model_servers/main.cc Failed to start server. "
                 "Error: UNKNOWN: 1 model(s) did not become available: {{name: fraud version: 3} due to error: "
                 "NOT_FOUND: Could not find SavedModel .pb or .pbtxt at supplied export directory path: "
                 "/models/fraud/3}")


REAL_START_FAILURE = (
    "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: {{{name: fraud version: 3} "
    "due to error: NOT_FOUND: Could not find SavedModel .pb or .pbtxt at supplied export directory path: "
    "/models/fraud/3. Check that the directory exists and that you have the right permissions for accessing it.}, }")


@pytest.mark.parametrize(("message", "error"), [
    pytest.param(REAL_START_FAILURE, "NOT_FOUND: Could not find SavedModel .pb or .pbtxt at supplied export "
                 "directory path: /models/fraud/3. Check that the directory exists and that you have the right "
                 "permissions for accessing it.", id="the server's own format, with the list's closing braces"),
    pytest.param(START_FAILURE, "NOT_FOUND: Could not find SavedModel .pb or .pbtxt at supplied export "
                 "directory path: /models/fraud/3", id="tolerated: a list closed by one brace only"),
    pytest.param("Loading servable...\nRetrying...\n" + START_FAILURE + "\n", "NOT_FOUND: Could not find SavedModel "
                 ".pb or .pbtxt at supplied export directory path: /models/fraud/3", id="the last lines of a log"),
    pytest.param("Failed to start server. Error: UNKNOWN: 2 servable(s) did not become available: {{{name: a version: 1} "
                 "due to error: NOT_FOUND: x}, {{name: a version: 2} due to error: NOT_FOUND: y}, }", "NOT_FOUND: x",
                 id="several servables: the first one's error"),
    pytest.param("Segmentation fault (core dumped)", "", id="another crash is not a load error"),
    pytest.param("", "", id="no message"),
])
def test_tf_servings_start_up_error_is_read_from_the_termination_message(message: str, error: str) -> None:
    assert reconcile.startup_load_error(message) == error


def _crashed_pod(message: str, exit_code: int = 1, container: str = "tensorflow-serving") -> Manifest:
    return {
        "metadata": {"name": "p", "labels": {"tfleet.dev/revision": REV}},
        "status": {"containerStatuses": [{
            "name": container, "restartCount": 2,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": exit_code, "reason": "Error", "message": message}},
        }]},
    }


def test_a_crash_looping_serving_container_reports_tf_servings_load_error() -> None:
    summary = reconcile.summarize_pod(_crashed_pod(START_FAILURE))
    assert summary is not None and summary.crash_looping
    assert summary.load_error.startswith("NOT_FOUND: Could not find SavedModel")


def _restarted_pod(message: str) -> Manifest:
    pod = _crashed_pod(message)
    pod["status"]["containerStatuses"][0]["state"] = {"running": {"startedAt": "2026-12-01T10:00:00Z"}}
    return pod


@pytest.mark.parametrize(("pod", "why"), [
    (_crashed_pod(START_FAILURE, exit_code=0), "a clean exit"),
    (_restarted_pod(START_FAILURE), "the container runs again: its load may have worked this time"),
    (_crashed_pod(START_FAILURE, container="health-bridge"), "another container"),
])
def test_only_the_serving_containers_failed_exit_counts(pod: Manifest, why: str) -> None:
    summary = reconcile.summarize_pod(pod)
    assert summary is not None and summary.load_error == "", why
