"""The operator end to end: `tfleet run` against a cluster, driven with kubectl.

Runs unchanged on the local control plane or on a kind cluster (TFLEET_E2E_KUBECONFIG).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.tests import waiting

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

pytestmark = pytest.mark.usefixtures("operator_process")


def manifest(name: str, namespace: str, **spec: Any) -> str:
    body = {
        "apiVersion": "tfleet.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"basePath": "gs://bucket/models/half_plus_two", "version": 1}, **spec},
    }
    return yaml.safe_dump(body)


def get(kubectl: Callable[..., Any], *args: str) -> dict[str, Any]:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)  # type: ignore[no-any-return]


def wait_for(predicate: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    return waiting.wait_for(predicate, timeout, what)


def deployments(kubectl: Callable[..., Any], namespace: str, name: str) -> list[dict[str, Any]]:
    return get(kubectl, "deployments", "-n", namespace, "-l", f"tfleet.dev/inferenceservice={name}")["items"]  # type: ignore[no-any-return]


def the_deployment(kubectl: Callable[..., Any], namespace: str, name: str) -> dict[str, Any]:
    (dep,) = [d for d in deployments(kubectl, namespace, name) if d["spec"]["replicas"] > 0]
    return dep


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return cond  # type: ignore[no-any-return]
    return {}


def apply_and_wait_ready(kubectl: Callable[..., Any], text: str, namespace: str, name: str) -> dict[str, Any]:
    kubectl("apply", "-f", "-", input=text)
    kubectl("wait", "--for=condition=Ready", f"tfis/{name}", "-n", namespace, "--timeout=60s")
    return get(kubectl, "tfis", name, "-n", namespace)


def operator_writes(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Writes sent by the operator process (tfleet's own client and kopf's)."""
    return [
        r for r in requests
        if r["method"] in ("POST", "PUT", "PATCH", "DELETE") and not r["user_agent"].startswith("kubectl")
    ]


def test_an_applied_inference_service_gets_its_children_and_a_ready_status(kubectl, namespace):
    isvc = apply_and_wait_ready(kubectl, manifest("resnet", namespace, replicas=2), namespace, "resnet")

    status = isvc["status"]
    assert status["observedGeneration"] == isvc["metadata"]["generation"]
    assert status["readyReplicas"] == 2 and status["ready"] == "2/2"
    assert status["servingVersion"] == 1
    assert status["selector"] == "tfleet.dev/inferenceservice=resnet"
    assert status["endpoints"]["grpc"] == f"resnet.{namespace}.svc:8500"
    assert status["endpoints"]["grpcHeadless"] == f"dns:///resnet-grpc.{namespace}.svc:8500"
    for type_, expected in (("Ready", "True"), ("ModelAvailable", "True"), ("Degraded", "False")):
        assert condition(isvc, type_)["status"] == expected, type_

    uid = isvc["metadata"]["uid"]
    revision = isvc["status"]["rollout"]["stableRevision"]
    assert isvc["status"]["rollout"]["phase"] == "Idle"
    for kind, name in (("configmap", f"resnet-{revision}"), ("deployment", f"resnet-{revision}"),
                       ("service", "resnet"), ("service", "resnet-grpc"), ("poddisruptionbudget", "resnet")):
        child = get(kubectl, kind, name, "-n", namespace)
        owners = child["metadata"]["ownerReferences"]
        assert [(o["kind"], o["uid"], o["controller"]) for o in owners] == [("InferenceService", uid, True)], name
        assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tfleet"

    events = get(kubectl, "events", "-n", namespace, "--field-selector", "involvedObject.name=resnet")
    messages = " ".join(e["message"] for e in events["items"])
    assert f"Created Deployment resnet-{revision}" in messages


@pytest.mark.simulated  # reads the local control plane's request log
def test_a_converged_inference_service_causes_no_writes(kubectl, namespace, local_cluster):
    apply_and_wait_ready(kubectl, manifest("idle", namespace), namespace, "idle")
    time.sleep(1.0)  # let the last watch events of the rollout arrive
    start = len(local_cluster.request_log)
    time.sleep(3.0)
    assert operator_writes(local_cluster.request_log[start:]) == []


def test_drift_in_a_child_is_reverted_and_foreign_annotations_are_kept(kubectl, namespace):
    apply_and_wait_ready(kubectl, manifest("drift", namespace), namespace, "drift")
    name = the_deployment(kubectl, namespace, "drift")["metadata"]["name"]
    kubectl("annotate", "deployment", name, "-n", namespace, "team.example.com/owner=search")
    kubectl("set", "image", f"deployment/{name}", "-n", namespace, "tensorflow-serving=evil/image:latest")

    def image_restored() -> bool:
        dep = get(kubectl, "deployment", name, "-n", namespace)
        return dep["spec"]["template"]["spec"]["containers"][0]["image"] == "tensorflow/serving:2.19.0"

    wait_for(image_restored, what="the operator to revert the image")
    dep = get(kubectl, "deployment", name, "-n", namespace)
    assert dep["metadata"]["annotations"]["team.example.com/owner"] == "search"


def test_scaling_the_inference_service_scales_the_deployment(kubectl, namespace):
    isvc = apply_and_wait_ready(kubectl, manifest("scaled", namespace), namespace, "scaled")
    revision = isvc["status"]["rollout"]["stableRevision"]
    kubectl("scale", "tfis/scaled", "-n", namespace, "--replicas=3")
    wait_for(lambda: get(kubectl, "deployment", f"scaled-{revision}", "-n", namespace)["spec"]["replicas"] == 3,
             what="Deployment replicas 3")
    kubectl("wait", "--for=jsonpath={.status.readyReplicas}=3", "tfis/scaled", "-n", namespace, "--timeout=30s")
    # A replica change is not a new revision: still one Deployment, no rollout.
    assert [d["metadata"]["name"] for d in deployments(kubectl, namespace, "scaled")] == [f"scaled-{revision}"]
    assert get(kubectl, "tfis", "scaled", "-n", namespace)["status"]["rollout"]["stableRevision"] == revision


def test_a_batching_change_is_a_new_revision_with_its_own_config(kubectl, namespace):
    fast = {"steps": [{"weight": 50, "pause": "1s"}]}
    isvc = apply_and_wait_ready(kubectl, manifest("batched", namespace, rollout=fast), namespace, "batched")
    old = isvc["status"]["rollout"]["stableRevision"]
    kubectl("apply", "-f", "-", input=manifest("batched", namespace, rollout=fast, batching={"maxBatchSize": 16}))

    def promoted() -> str | None:
        rollout = get(kubectl, "tfis", "batched", "-n", namespace)["status"]["rollout"]
        return rollout["stableRevision"] if rollout["phase"] == "Succeeded" else None

    new = wait_for(promoted, what="the batching change to roll out")
    assert new != old
    config = get(kubectl, "configmap", f"batched-{new}", "-n", namespace)
    assert "max_batch_size" in config["data"]["batching.config"]
    assert config["immutable"] is True
    replicas = {d["metadata"]["name"]: d["spec"]["replicas"] for d in deployments(kubectl, namespace, "batched")}
    assert replicas == {f"batched-{new}": 1, f"batched-{old}": 0}


# A typo in pod.affinity: the CRD keeps affinity schemaless (CEL cannot see its fields), so the
# API server stores it and only the operator can tell (tfleet.api.kubetypes).
AFFINITY_TYPO = {"nodeAfinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}


def test_an_invalid_spec_is_reported_and_the_serving_pods_keep_running(kubectl, namespace):
    apply_and_wait_ready(kubectl, manifest("broken", namespace, replicas=2), namespace, "broken")
    before = the_deployment(kubectl, namespace, "broken")
    # Passes the CRD's schema and rules, fails a rule only tfleet can check.
    bad = yaml.safe_load(manifest("broken", namespace, replicas=2, pod={"affinity": AFFINITY_TYPO}))
    kubectl("apply", "-f", "-", input=yaml.safe_dump(bad))

    def invalid() -> dict[str, Any]:
        ready = condition(get(kubectl, "tfis", "broken", "-n", namespace), "Ready")
        return ready if ready.get("reason") == "InvalidSpec" else {}

    ready = wait_for(invalid, what="Ready=False InvalidSpec")
    assert ready["status"] == "False"
    assert "spec.pod.affinity.nodeAfinity: unknown field of Affinity" in ready["message"], ready
    after = get(kubectl, "deployment", before["metadata"]["name"], "-n", namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["status"].get("readyReplicas") == 2
    events = get(kubectl, "events", "-n", namespace, "--field-selector", "reason=InvalidSpec")
    assert any("spec.pod.affinity.nodeAfinity" in e["message"] for e in events["items"])


def test_the_schema_rejects_invalid_manifests_before_the_operator_sees_them(kubectl, namespace):
    cases = {
        "allowedBatchSizes": {"batching": {"maxBatchSize": 32, "allowedBatchSizes": [8, 16]}},
        "unsupported storage in basePath": {"model": {"basePath": "ftp://models/half_plus_two"}},
        "basePath must name a bucket": {"model": {"basePath": "gs:///models/half_plus_two"}},
        "image is not a GPU image": {"image": "tensorflow/serving:2.19.0", "gpu": {"count": 1}},
    }
    for words, spec in cases.items():
        result = kubectl("apply", "-f", "-", input=manifest("rejected", namespace, **spec), check=False)
        assert result.returncode != 0, words
        assert words in result.stderr, result.stderr
    assert get(kubectl, "tfis", "-n", namespace)["items"] == []


def without_storage_rules(crd: dict[str, Any]) -> dict[str, Any]:
    """The CRD as a release before the storage rules had it: spec.model without them."""
    old = json.loads(json.dumps(crd))
    model = old["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["model"]
    storage = ("unsupported storage", "must name a bucket", "pvc://<claim>/<path>")
    model["x-kubernetes-validations"] = [r for r in model["x-kubernetes-validations"]
                                         if not any(words in r["message"] for words in storage)]
    assert len(model["x-kubernetes-validations"]) == len(
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["model"][
            "x-kubernetes-validations"]) - 3
    return old


def test_an_object_stored_before_a_rule_existed_is_reported_by_the_operator(kubectl, namespace, tfleet_crd):
    # An upgrade: the object was stored under an older CRD without the storage rules. The API
    # server keeps it, and ratcheting lets writes through that leave the invalid field alone:
    # the operator's status and a replicas change. The operator reports what admission can no
    # longer catch, and a change to the field itself meets the new rule.
    current = yaml.safe_load(Path(tfleet_crd).read_text())
    kubectl("replace", "-f", "-", input=json.dumps(without_storage_rules(current)))
    try:
        bad = yaml.safe_load(manifest("upgraded", namespace))
        bad["spec"]["model"]["basePath"] = "ftp://models/half_plus_two"
        kubectl("apply", "-f", "-", input=yaml.safe_dump(bad))
    finally:
        kubectl("replace", "-f", "-", input=json.dumps(current))
    kubectl("wait", "--for=condition=Established", "crd/inferenceservices.tfleet.dev", "--timeout=30s")
    refused = kubectl("apply", "-f", "-", input=manifest("fresh", namespace, model={"basePath": "ftp://x/y"}),
                      check=False)
    assert refused.returncode != 0 and "unsupported storage in basePath" in refused.stderr, refused.stderr

    def reported(generation: int) -> Callable[[], dict[str, Any]]:
        def check() -> dict[str, Any]:
            obj = get(kubectl, "tfis", "upgraded", "-n", namespace)
            ready = condition(obj, "Ready")
            observed = (obj.get("status") or {}).get("observedGeneration")
            return ready if ready.get("reason") == "InvalidSpec" and observed == generation else {}
        return check

    ready = wait_for(reported(1), what="Ready=False InvalidSpec on the stored object")
    assert 'spec.model.basePath: unsupported storage "ftp://"' in ready["message"], ready
    # A change elsewhere is admitted (the invalid field is unchanged), and the operator's status
    # write for the new generation passes the new CRD too.
    kubectl("patch", "tfis", "upgraded", "-n", namespace, "--type=merge", "-p", '{"spec":{"replicas":2}}')
    wait_for(reported(2), what="InvalidSpec reported for generation 2")
    # A change to the field itself meets the rule.
    changed = kubectl("patch", "tfis", "upgraded", "-n", namespace, "--type=merge",
                      "-p", '{"spec":{"model":{"basePath":"http://models/half_plus_two"}}}', check=False)
    assert changed.returncode != 0 and "unsupported storage in basePath" in changed.stderr, changed.stderr
    # Fixed, it serves.
    kubectl("patch", "tfis", "upgraded", "-n", namespace, "--type=merge",
            "-p", '{"spec":{"model":{"basePath":"gs://bucket/models/half_plus_two"}}}')
    kubectl("wait", "--for=condition=Ready", "tfis/upgraded", "-n", namespace, "--timeout=60s")


def test_deleting_an_inference_service_removes_its_children(kubectl, namespace):
    apply_and_wait_ready(kubectl, manifest("gone", namespace), namespace, "gone")
    kubectl("delete", "tfis", "gone", "-n", namespace, "--wait=true", "--timeout=30s")
    wait_for(lambda: not get(kubectl, "deployments,services,configmaps", "-n", namespace,
                             "-l", "tfleet.dev/inferenceservice=gone")["items"],
             what="children to be garbage-collected")


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_every_example_becomes_ready(kubectl, namespace, example):
    docs = [d for d in yaml.safe_load_all((EXAMPLES / example).read_text()) if d]
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
        if doc["spec"].get("model", {}).get("basePath", "").startswith("pvc://"):
            doc["spec"]["model"]["basePath"] = "/models/in-image"
    text = yaml.safe_dump_all(docs)
    kubectl("apply", "-f", "-", input=text)
    for doc in docs:
        name = doc["metadata"]["name"]
        if doc["spec"].get("gpu", {}).get("count"):
            # GPU pods need GPU nodes; the status must still converge to the truth.
            kubectl("wait", "--for=condition=ModelAvailable", f"tfis/{name}", "-n", namespace, "--timeout=60s")
        else:
            kubectl("wait", "--for=condition=Ready", f"tfis/{name}", "-n", namespace, "--timeout=60s")
