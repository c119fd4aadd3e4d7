"""Fluent builders for InferenceService manifests used by the core tests.

`make_isvc("x").gpu(1).canary(10, 50).batching(32, [8, 16, 32])` is a plain manifest dict
(the builder subclasses dict), so it can be handed to `parse_object`, dumped as YAML for the
CLI, or given to the planner as a watched body. Every method mutates in place and returns the
builder, so a table case is one readable expression.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tfleet.api.model import InferenceService, parse_object
from tfleet.api.vocabulary import API_VERSION, KIND

REPO = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO / "examples"
EXAMPLE_FILES = sorted(EXAMPLES_DIR.glob("*.yaml"))


def load_example(name: str) -> dict[str, Any]:
    """The (single) InferenceService document of examples/<name>.yaml."""
    docs = [d for d in yaml.safe_load_all((EXAMPLES_DIR / f"{name}.yaml").read_text()) if d]
    assert len(docs) == 1, f"examples/{name}.yaml holds {len(docs)} documents"
    doc: dict[str, Any] = docs[0]
    return doc


def example_names() -> list[str]:
    return [p.stem for p in EXAMPLE_FILES]


class IsvcBuilder(dict[str, Any]):
    """An InferenceService manifest with chainable setters."""

    def __init__(self, name: str, namespace: str | None = "ml", base_path: str | None = None) -> None:
        metadata: dict[str, Any] = {"name": name, "uid": f"uid-{name}", "generation": 1}
        if namespace is not None:
            metadata["namespace"] = namespace
        super().__init__(
            apiVersion=API_VERSION,
            kind=KIND,
            metadata=metadata,
            spec={"model": {"basePath": base_path or f"gs://models/{name}"}},
        )

    # ------------------------------------------------------------------ generic

    def set(self, path: str, value: Any) -> IsvcBuilder:
        """Set a dotted path such as "spec.server.grpcPort", creating objects on the way."""
        *parents, last = path.split(".")
        node: Any = self
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
        return self

    def unset(self, path: str) -> IsvcBuilder:
        *parents, last = path.split(".")
        node: Any = self
        for key in parents:
            node = node[key]
        node.pop(last, None)
        return self

    def clone(self) -> IsvcBuilder:
        return copy.deepcopy(self)

    def manifest(self) -> dict[str, Any]:
        """A plain deep copy, safe to hand to code that may mutate it."""
        return copy.deepcopy(dict(self))

    def isvc(self) -> InferenceService:
        return parse_object(self.manifest())

    @property
    def spec(self) -> dict[str, Any]:
        return self["spec"]  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ model

    def base_path(self, path: str) -> IsvcBuilder:
        return self.set("spec.model.basePath", path)

    def version(self, version: int | None) -> IsvcBuilder:
        if version is None:
            return self.unset("spec.model.version")
        return self.set("spec.model.version", version)

    def model_name(self, name: str) -> IsvcBuilder:
        return self.set("spec.model.name", name)

    def credentials(self, secret: str) -> IsvcBuilder:
        return self.set("spec.model.credentialsSecret", secret)

    # ------------------------------------------------------------------ pods

    def image(self, image: str) -> IsvcBuilder:
        return self.set("spec.image", image)

    def replicas(self, n: int) -> IsvcBuilder:
        return self.set("spec.replicas", n)

    def resources(self, requests: dict[str, Any] | None = None, limits: dict[str, Any] | None = None) -> IsvcBuilder:
        if requests is not None:
            self.set("spec.resources.requests", requests)
        if limits is not None:
            self.set("spec.resources.limits", limits)
        return self

    def gpu(
        self,
        count: int,
        resource_name: str | None = None,
        node_selector: dict[str, str] | None = None,
        tolerations: list[dict[str, Any]] | None = None,
    ) -> IsvcBuilder:
        gpu: dict[str, Any] = {"count": count}
        if resource_name is not None:
            gpu["resourceName"] = resource_name
        if node_selector is not None:
            gpu["nodeSelector"] = node_selector
        if tolerations is not None:
            gpu["tolerations"] = tolerations
        return self.set("spec.gpu", gpu)

    def pod(self, **fields: Any) -> IsvcBuilder:
        for key, value in fields.items():
            self.set(f"spec.pod.{key}", value)
        return self

    # ------------------------------------------------------------------ features

    def batching(self, max_batch_size: int, allowed: list[int] | None = None, **fields: Any) -> IsvcBuilder:
        batching: dict[str, Any] = {"maxBatchSize": max_batch_size, **fields}
        if allowed is not None:
            batching["allowedBatchSizes"] = allowed
        return self.set("spec.batching", batching)

    def autoscaling(self, min_replicas: int | None, max_replicas: int, target: int | None = None) -> IsvcBuilder:
        autoscaling: dict[str, Any] = {"maxReplicas": max_replicas}
        if min_replicas is not None:
            autoscaling["minReplicas"] = min_replicas
        if target is not None:
            autoscaling["targetCPUUtilizationPercentage"] = target
        return self.set("spec.autoscaling", autoscaling)

    def canary(self, *weights: int, pause: str = "30s") -> IsvcBuilder:
        self.set("spec.rollout.strategy", "Canary")
        return self.set("spec.rollout.steps", [{"weight": w, "pause": pause} for w in weights])

    def rolling_update(self) -> IsvcBuilder:
        return self.set("spec.rollout.strategy", "RollingUpdate")

    def server(self, **fields: Any) -> IsvcBuilder:
        for key, value in fields.items():
            self.set(f"spec.server.{key}", value)
        return self

    def monitoring(self, enabled: bool) -> IsvcBuilder:
        return self.set("spec.server.monitoring", enabled)

    def headless(self, enabled: bool) -> IsvcBuilder:
        return self.set("spec.service.headless", enabled)

    def service_type(self, type_: str) -> IsvcBuilder:
        return self.set("spec.service.type", type_)


def make_isvc(name: str = "demo", namespace: str | None = "ml", base_path: str | None = None) -> IsvcBuilder:
    return IsvcBuilder(name, namespace, base_path)


# --------------------------------------------------------------------------- objects as the API server keeps them


def as_stored(manifest: dict[str, Any], resource_version: int = 100) -> dict[str, Any]:
    """`manifest` as the API server stores and returns it: metadata, defaults and status added."""
    obj = copy.deepcopy(manifest)
    meta = obj["metadata"]
    meta.update({"uid": f"uid-{obj['kind']}-{meta['name']}", "resourceVersion": str(resource_version),
                 "generation": 1, "creationTimestamp": "2025-12-31T23:00:00Z",
                 "managedFields": [{"manager": "tfleet", "operation": "Apply"}]})
    kind, spec = obj["kind"], obj.get("spec") or {}
    if kind == "Deployment":
        pod = spec["template"]["spec"]
        pod.update({"restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "schedulerName": "default-scheduler"})
        for container in pod["containers"]:
            # Defaults fill in only what the manifest left out, as the API server's do.
            for field, default in (("imagePullPolicy", "IfNotPresent"), ("terminationMessagePath", "/dev/termination-log"),
                                   ("terminationMessagePolicy", "File")):
                container.setdefault(field, default)
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


def make_pod(
    revision: str,
    name: str | None = None,
    *,
    ready: bool = True,
    restarts: int = 0,
    waiting: str | None = None,
    unschedulable: str | None = None,
    scheduling_reason: str = "Unschedulable",
    image: str | None = None,
    sidecar_restarts: int = 0,
    deleting: bool = False,
    isvc: str = "x",
) -> dict[str, Any]:
    """A serving pod of `revision` as the kubelet and scheduler report it. `unschedulable` is
    the message of a PodScheduled=False condition with `scheduling_reason`; `image` the serving
    container's image in its status."""
    conditions: list[dict[str, Any]] = []
    if unschedulable is not None:
        conditions.append({"type": "PodScheduled", "status": "False", "reason": scheduling_reason,
                           "message": unschedulable})
    else:
        conditions.append({"type": "PodScheduled", "status": "True"})
        conditions.append({"type": "Ready", "status": "True" if ready else "False"})
    state: dict[str, Any] = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name or f"{isvc}-{revision}-pod", "namespace": "ml",
                     "labels": {"tfleet.dev/inferenceservice": isvc, "tfleet.dev/revision": revision}},
        "status": {
            "phase": "Pending" if unschedulable is not None else "Running",
            "conditions": conditions,
            "containerStatuses": [] if unschedulable is not None else [
                {"name": "tensorflow-serving", "ready": ready, "restartCount": restarts, "state": state}],
            "initContainerStatuses": [] if unschedulable is not None else [
                {"name": "health-bridge", "ready": True, "restartCount": sidecar_restarts, "state": {"running": {}}}],
        },
    }
    if image is not None:
        for status in pod["status"]["containerStatuses"]:
            status["image"] = image
    if deleting:
        pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return pod


# --------------------------------------------------------------------------- CRD schema helpers


def strict_jsonschema(node: Any) -> Any:
    """An OpenAPI schema node of the CRD as plain JSON Schema, as the API server applies it with
    strict field validation: x-kubernetes-* keys dropped, unknown fields refused except in
    pass-throughs (x-kubernetes-preserve-unknown-fields)."""
    if isinstance(node, list):
        return [strict_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict_jsonschema(v) for k, v in node.items()
           if not k.startswith("x-kubernetes-") and k not in ("properties", "default")}
    if "properties" in node:
        out["properties"] = {k: strict_jsonschema(v) for k, v in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    return out
