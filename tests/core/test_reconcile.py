"""The reconcile plan: desired children against observed ones, and the status write decision.

Observed objects are what an API server returns for an applied manifest: tfleet's fields plus
server-set metadata, defaults and status. A plan that finds nothing to change has no writes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tfleet import reconcile
from tfleet.reconcile import ChildKey, Plan, plan_children, plan_status

from .builders import IsvcBuilder, make_isvc

NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:01:00Z"

Manifest = dict[str, Any]


def as_stored(manifest: Manifest, resource_version: int = 100) -> Manifest:
    """`manifest` as the API server stores and returns it: metadata, defaults and status added."""
    obj = copy.deepcopy(manifest)
    meta = obj["metadata"]
    meta.update({"uid": f"uid-{obj['kind']}-{meta['name']}", "resourceVersion": str(resource_version),
                 "generation": 1, "creationTimestamp": "2025-12-31T23:00:00Z",
                 "managedFields": [{"manager": "tfleet", "operation": "Apply"}]})
    kind, spec = obj["kind"], obj.get("spec")
    if kind == "Deployment":
        pod = spec["template"]["spec"]
        pod.update({"restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler"})
        for container in pod["containers"]:
            container.update({"imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log",
                              "terminationMessagePolicy": "File"})
        obj["status"] = {"observedGeneration": 1, "replicas": spec["replicas"], "readyReplicas": spec["replicas"],
                         "availableReplicas": spec["replicas"], "updatedReplicas": spec["replicas"]}
    elif kind == "Service":
        if spec.get("clusterIP") != "None":
            spec.update({"clusterIP": "10.96.0.17", "clusterIPs": ["10.96.0.17"]})
        spec.update({"sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                     "internalTrafficPolicy": "Cluster"})
        obj["status"] = {"loadBalancer": {}}
    elif kind == "HorizontalPodAutoscaler":
        obj["status"] = {"currentReplicas": 2, "desiredReplicas": 2}
    elif kind == "PodDisruptionBudget":
        obj["status"] = {"currentHealthy": 2, "desiredHealthy": 1, "disruptionsAllowed": 1, "expectedPods": 2}
    return obj


def converged(body: Manifest) -> dict[ChildKey, Manifest]:
    """The children a first reconcile creates, as read back from the API server."""
    first = plan_children(body, {})
    return {reconcile.child_key(m): as_stored(m) for m in first.apply}


def keys(manifests: list[Manifest]) -> list[str]:
    return [f"{m['kind']}/{m['metadata']['name']}" for m in manifests]


FULL = make_isvc("x").version(3).replicas(3).autoscaling(2, 6).batching(8, [4, 8]).credentials("c") \
    .resources(requests={"cpu": "0.5", "memory": "1Gi"}, limits={"memory": "1536Mi"})


# --------------------------------------------------------------------------- children


def test_first_reconcile_creates_every_child_owned_and_stamped() -> None:
    result = plan_children(FULL.manifest(), {})
    assert keys(result.apply) == ["ConfigMap/x-config", "Deployment/x", "Service/x", "Service/x-grpc",
                                  "HorizontalPodAutoscaler/x", "PodDisruptionBudget/x"]
    assert result.delete == []
    for child in result.apply:
        meta = child["metadata"]
        assert meta["ownerReferences"] == [{
            "apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceService", "name": "x", "uid": "uid-x",
            "controller": True, "blockOwnerDeletion": True,
        }]
        assert len(meta["annotations"][reconcile.ANNOTATION_APPLIED]) == 16
    assert [(e.type, e.reason) for e in result.events] == [("Normal", "ChildrenChanged")]
    assert result.events[0].message.startswith("Created ConfigMap x-config, Created Deployment x, ")


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


def _configmap_data(c: Manifest) -> None:
    c["data"]["models.config"] = c["data"]["models.config"].replace("versions: 3", "versions: 2")


def _service_port(s: Manifest) -> None:
    s["spec"]["ports"][0]["port"] = 9999


def _deployment_replicas(d: Manifest) -> None:
    d["spec"]["replicas"] = 1


def _stamp(d: Manifest) -> None:
    d["metadata"]["annotations"][reconcile.ANNOTATION_APPLIED] = "0" * 16


DRIFT_CASES = [
    pytest.param(lambda children: None, [], id="nothing changed: no writes"),
    pytest.param(_edit(("Deployment", "x"), _other_annotations), [], id="annotations and labels added by other tools"),
    pytest.param(_edit(("Deployment", "x"), _pod_template_annotation), [], id="a rollout restart annotation"),
    pytest.param(_edit(("HorizontalPodAutoscaler", "x"), _hpa_status), [], id="the autoscaler's status and defaults"),
    pytest.param(_edit(("Deployment", "x"), _canonical_quantities), [],
                 id="quantities read back in canonical form (0.5 as 500m, 1536Mi as 1.5Gi)"),
    pytest.param(_edit(("Deployment", "x"), _set_image), ["Deployment/x"], id="an edited image is reverted"),
    pytest.param(_edit(("Deployment", "x"), _deployment_replicas), ["Deployment/x"],
                 id="replicas edited on the Deployment are reverted"),
    pytest.param(_edit(("Deployment", "x"), _extra_container), ["Deployment/x"],
                 id="an injected container is drift"),
    pytest.param(_edit(("ConfigMap", "x-config"), _configmap_data), ["ConfigMap/x-config"],
                 id="edited config data is reverted"),
    pytest.param(_edit(("Service", "x"), _service_port), ["Service/x"], id="an edited Service port is reverted"),
    pytest.param(_edit(("Deployment", "x"), _stamp), ["Deployment/x"],
                 id="an object applied from an older desired state is re-applied"),
]


@pytest.mark.parametrize(("mutate", "applied"), DRIFT_CASES)
def test_drift(mutate: Callable[[dict[ChildKey, Manifest]], None], applied: list[str]) -> None:
    body = FULL.manifest()
    children = converged(body)
    mutate(children)
    result = plan_children(body, children)
    assert keys(result.apply) == applied
    assert result.delete == []
    assert result.writes == len(applied)
    assert [e.reason for e in result.events] == (["Updated"] if applied else [])


def test_reapplied_object_is_the_desired_one_not_the_observed() -> None:
    body = FULL.manifest()
    children = converged(body)
    _set_image(children[("Deployment", "x")])
    (deployment,) = plan_children(body, children).apply
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "tensorflow/serving:2.19.0"
    assert "status" not in deployment and "resourceVersion" not in deployment["metadata"]


SPEC_CHANGE_CASES = [
    pytest.param(lambda b: b.headless(False), [], ["Service/x-grpc"], id="headless off deletes the gRPC Service"),
    pytest.param(lambda b: b.unset("spec.autoscaling").replicas(1), ["Deployment/x"],
                 ["HorizontalPodAutoscaler/x", "PodDisruptionBudget/x"],
                 id="autoscaling off at one replica deletes the HPA and the PDB"),
    pytest.param(lambda b: b.version(4), ["ConfigMap/x-config", "Deployment/x"], [],
                 id="a new model version rewrites the config and rolls the pods"),
    pytest.param(lambda b: b.replicas(5), ["Deployment/x"], [], id="a new replica count updates only the Deployment"),
    pytest.param(lambda b: b.monitoring(False), ["ConfigMap/x-config", "Deployment/x"], [],
                 id="fields tfleet stops setting are noticed through the applied hash"),
    pytest.param(lambda b: b.set("metadata.labels", {"team": "a"}), [], [],
                 id="labels on the InferenceService change no child"),
]


@pytest.mark.parametrize(("change", "applied", "deleted"), SPEC_CHANGE_CASES)
def test_spec_changes(change: Callable[[IsvcBuilder], IsvcBuilder], applied: list[str], deleted: list[str]) -> None:
    children = converged(FULL.manifest())
    result = plan_children(change(FULL.clone()).manifest(), children)
    assert keys(result.apply) == applied
    assert keys(result.delete) == deleted
    if deleted:
        # Deletes carry the observed object (its uid and resourceVersion allow a precondition).
        assert all(d["metadata"]["resourceVersion"] for d in result.delete)


def test_objects_not_owned_are_never_touched() -> None:
    body = make_isvc("x").headless(False).manifest()
    foreign = as_stored({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "x-grpc", "namespace": "ml", "labels": {"tfleet.dev/inferenceservice": "x"},
                     "ownerReferences": [{"apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceService",
                                          "name": "x", "uid": "uid-of-an-earlier-x", "controller": True}]},
        "spec": {"clusterIP": "None", "ports": [{"port": 8500}]},
    })
    children = converged(body)
    children[("Service", "x-grpc")] = foreign
    result = plan_children(body, children)
    assert result.delete == [] and result.apply == []


def test_invalid_spec_plans_no_child_writes() -> None:
    body = FULL.manifest()
    children = converged(body)
    broken = FULL.clone().batching(32, [8, 16]).headless(False).manifest()
    result = plan_children(broken, children)
    assert (result.apply, result.delete, result.events) == ([], [], [])
    assert result.invalid == "spec.batching.allowedBatchSizes: last size (16) must equal maxBatchSize (32)"


# --------------------------------------------------------------------------- status


def _with_status(body: Manifest, plan: Plan) -> Manifest:
    out = copy.deepcopy(body)
    out["status"] = plan.status
    return out


def test_status_is_written_once_then_left_alone() -> None:
    body = FULL.manifest()
    children = converged(body)
    first = plan_status(body, children, NOW)
    assert first.status is not None and first.writes == 1
    ready = next(c for c in first.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Available")
    assert [(e.type, e.reason) for e in first.events] == [("Normal", "Ready")]
    # The next reconcile (a minute later, same observations) writes nothing and posts nothing.
    again = plan_status(_with_status(body, first), children, LATER)
    assert (again.status, again.events, again.writes) == (None, [], 0)
    assert plan_children(_with_status(body, first), children).writes == 0


def test_status_follows_the_deployment() -> None:
    body = FULL.manifest()
    children = converged(body)
    first = plan_status(body, children, NOW)
    children[("Deployment", "x")]["status"]["readyReplicas"] = 1
    children[("Deployment", "x")]["status"]["availableReplicas"] = 1
    second = plan_status(_with_status(body, first), children, LATER)
    assert second.status is not None
    assert (second.status["readyReplicas"], second.status["ready"]) == (1, "1/3")
    # Ready going False is visible in the status; only becoming Ready posts an Event.
    assert second.events == []


def test_unowned_deployment_does_not_count_for_status() -> None:
    body = FULL.manifest()
    children = converged(body)
    children[("Deployment", "x")]["metadata"]["ownerReferences"] = []
    result = plan_status(body, children, NOW)
    assert result.status is not None
    ready = next(c for c in result.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "DeploymentMissing"


def test_invalid_spec_sets_the_condition_and_warns_once() -> None:
    body = FULL.manifest()
    children = converged(body)
    serving = _with_status(body, plan_status(body, children, NOW))
    broken = copy.deepcopy(serving)
    broken["spec"]["rollout"] = {"steps": [{"weight": 50}, {"weight": 20}]}
    broken["metadata"]["generation"] = 2
    message = "spec.rollout.steps[1].weight: step weights must be strictly increasing, but 20 follows 50"

    first = plan_status(broken, children, LATER)
    assert first.invalid == message
    assert first.status is not None
    ready = next(c for c in first.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "InvalidSpec", message)
    assert first.status["observedGeneration"] == 2
    assert [(e.type, e.reason, e.message) for e in first.events] == [("Warning", "InvalidSpec", message)]
    # Nothing changes until the spec does: no status write, no second Event, no hot loop.
    second = plan_status(_with_status(broken, first), children, "2026-01-01T00:02:00Z")
    assert (second.status, second.events, second.writes) == (None, [], 0)
    assert plan_children(broken, children).writes == 0


def test_a_child_the_api_server_rejects_makes_the_spec_invalid() -> None:
    body = FULL.manifest()
    children = converged(body)
    rejection = 'Deployment.apps "x" is invalid: spec.template.spec.priorityClassName: Not found: "gold"'
    result = plan_status(body, children, NOW, rejected=rejection)
    assert result.invalid == rejection
    assert result.status is not None
    ready = next(c for c in result.status["conditions"] if c["type"] == "Ready")
    assert (ready["reason"], ready["message"]) == ("InvalidSpec", rejection)
    assert [e.type for e in result.events] == ["Warning"]


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
def test_quantities_compare_by_value(want: Any, have: Any, same: bool) -> None:
    assert reconcile.is_subset({"q": want}, {"q": have}) is same


def test_booleans_are_not_quantities() -> None:
    assert reconcile.is_subset({"readOnly": False}, {"readOnly": "0"}) is False
