"""The pure builders of an InferenceService's children, table-driven, each object validated
strictly against the Kubernetes 1.35 schemas."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest

from tfleet.api.model import InferenceService, parse_object
from tfleet.desired import children as builders
from tfleet.desired import tfconfig

from .isvc_factory import IsvcBuilder, example_names, load_example, make_isvc

K8S_VERSION = "1.35"
ABSENT = object()
STANDARD_LABELS = {
    "app.kubernetes.io/name": "tensorflow-serving",
    "app.kubernetes.io/component": "model-server",
    "app.kubernetes.io/managed-by": "tfleet",
    "app.kubernetes.io/part-of": "tfleet",
}


def dig(obj: Any, path: str) -> Any:
    """Value at a path such as "spec.template.spec.containers[0].image"; ABSENT if missing."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            index = int(part[1:-1])
            if not isinstance(obj, list) or index >= len(obj):
                return ABSENT
            obj = obj[index]
        else:
            if not isinstance(obj, dict) or part not in obj:
                return ABSENT
            obj = obj[part]
    return obj


def children_by_key(isvc: InferenceService) -> dict[str, dict[str, Any]]:
    return {f"{c['kind']}/{c['metadata']['name']}": c for c in builders.build_children(isvc)}


def validate_strictly(obj: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        raise AssertionError(f"{obj['kind']} {obj['metadata']['name']} is invalid: {exc.message} at {list(exc.path)}") from None


# --------------------------------------------------------------------------- the table

# "{rev}" stands for the case's own revision: a Canary revision's Deployment and ConfigMap are
# both named <name>-<revision>.
DEPLOYMENT = "Deployment/x-{rev}"
CONFIG_MAP = "ConfigMap/x-{rev}"
SERVING = f"{DEPLOYMENT}:spec.template.spec.containers[0]"
POD = f"{DEPLOYMENT}:spec.template.spec"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}

# Each case: a manifest and expectations "<Kind>/<name>:<path>" -> value (ABSENT: not there),
# or "<Kind>/<name>" -> ABSENT for a child that must not be built.
CASES = [
    pytest.param(
        make_isvc("x").resources(requests={"cpu": "1", "memory": "1Gi"}, limits={"memory": "2Gi"}),
        {
            f"{SERVING}.image": "tensorflow/serving:2.19.0",
            f"{SERVING}.resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
            f"{POD}.nodeSelector": ABSENT,
            f"{POD}.tolerations": ABSENT,
            f"{DEPLOYMENT}:spec.replicas": 1,
            "PodDisruptionBudget/x": ABSENT,
            "HorizontalPodAutoscaler/x": ABSENT,
        },
        id="a CPU model runs the CPU image with the resources as given",
    ),
    pytest.param(
        make_isvc("x").gpu(1).resources(limits={"memory": "16Gi"}),
        {
            f"{SERVING}.image": "tensorflow/serving:2.19.0-gpu",
            f"{SERVING}.resources.limits": {"memory": "16Gi", "nvidia.com/gpu": "1"},
            f"{POD}.nodeSelector": {"nvidia.com/gpu.present": "true"},
            f"{POD}.tolerations": [GPU_TOLERATION],
        },
        id="a GPU model gets the -gpu image, a GPU limit, GPU nodes and the GPU toleration",
    ),
    pytest.param(
        make_isvc("x")
        .gpu(2, resource_name="amd.com/gpu", node_selector={"accelerator": "mi300"},
             tolerations=[{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}])
        .image("rocm/serving:2.19-gpu")
        .pod(nodeSelector={"topology.kubernetes.io/zone": "a"},
             tolerations=[{"key": "spot", "operator": "Exists"}]),
        {
            f"{SERVING}.image": "rocm/serving:2.19-gpu",
            f"{SERVING}.resources": {"limits": {"amd.com/gpu": "2"}},
            f"{POD}.nodeSelector": {"topology.kubernetes.io/zone": "a", "accelerator": "mi300"},
            f"{POD}.tolerations": [
                {"key": "spot", "operator": "Exists"},
                {"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
            ],
        },
        id="a custom GPU resource, node selector and tolerations merge with the pod's own",
    ),
    pytest.param(
        make_isvc("x").gpu(1).pod(tolerations=[GPU_TOLERATION]),
        {f"{POD}.tolerations": [GPU_TOLERATION]},
        id="a GPU toleration the user already wrote is not repeated",
    ),
    pytest.param(
        make_isvc("x").batching(32, [8, 16, 32]),
        {
            f"{SERVING}.args": [
                "--port=8500",
                "--rest_api_port=8501",
                "--model_config_file=/etc/tfleet/models.config",
                "--model_config_file_poll_wait_seconds=60", "--max_num_load_retries=0",
                "--enable_batching=true",
                "--batching_parameters_file=/etc/tfleet/batching.config",
                "--monitoring_config_file=/etc/tfleet/monitoring.config",
                "--grpc_channel_arguments=grpc.max_connection_age_ms=30000",
            ],
            f"{CONFIG_MAP}:data": {
                "models.config": ABSENT,  # checked by key presence only, see test_expectations
                "batching.config": ABSENT,
                "monitoring.config": ABSENT,
            },
        },
        id="batching adds its flags and its config file",
    ),
    pytest.param(
        make_isvc("x").monitoring(False).server(maxConnectionAgeSeconds=0),
        {
            f"{SERVING}.args": [
                "--port=8500",
                "--rest_api_port=8501",
                "--model_config_file=/etc/tfleet/models.config",
                "--model_config_file_poll_wait_seconds=60", "--max_num_load_retries=0",
            ],
            f"{CONFIG_MAP}:data": {"models.config": ABSENT},
            f"{DEPLOYMENT}:spec.template.metadata.annotations.prometheus.io/scrape": ABSENT,
        },
        id="monitoring off and no connection age leave only the core flags",
    ),
    pytest.param(
        make_isvc("x"),
        {
            f"{DEPLOYMENT}:spec.template.metadata.annotations": {
                "tfleet.dev/config-checksum": ABSENT,
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "8501",
                "prometheus.io/path": "/monitoring/prometheus/metrics",
            },
        },
        id="monitoring on announces the metrics endpoint to Prometheus",
    ),
    pytest.param(
        make_isvc("x").server(grpcPort=9000, restPort=9001, extraArgs=["--tensorflow_intra_op_parallelism=4"]),
        {
            f"{SERVING}.ports": [
                {"name": "grpc", "containerPort": 9000, "protocol": "TCP"},
                {"name": "http", "containerPort": 9001, "protocol": "TCP"},
            ],
            f"{SERVING}.args[0]": "--port=9000",
            f"{SERVING}.args[1]": "--rest_api_port=9001",
            f"{SERVING}.args[-1]": "--tensorflow_intra_op_parallelism=4",
            "Service/x:spec.ports": [
                {"name": "grpc", "port": 9000, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
                {"name": "http", "port": 9001, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"},
            ],
            "Service/x-grpc:spec.ports": [
                {"name": "grpc", "port": 9000, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
            ],
        },
        id="custom ports reach the flags, the container and both Services; extra flags come last",
    ),
    pytest.param(
        make_isvc("x"),
        {
            "Service/x:spec.type": "ClusterIP",
            "Service/x:spec.selector": {"tfleet.dev/inferenceservice": "x"},
            "Service/x:spec.clusterIP": ABSENT,
            "Service/x:metadata.annotations": ABSENT,
            "Service/x-grpc:spec.clusterIP": "None",
            "Service/x-grpc:spec.selector": {"tfleet.dev/inferenceservice": "x"},
        },
        id="a ClusterIP Service and a headless gRPC Service by default",
    ),
    pytest.param(
        make_isvc("x").headless(False).service_type("LoadBalancer")
        .set("spec.service.annotations", {"service.beta.kubernetes.io/aws-load-balancer-internal": "true"}),
        {
            "Service/x-grpc": ABSENT,
            "Service/x:spec.type": "LoadBalancer",
            "Service/x:metadata.annotations": {"service.beta.kubernetes.io/aws-load-balancer-internal": "true"},
        },
        id="headless off drops the gRPC Service; Service type and annotations pass through",
    ),
    pytest.param(
        make_isvc("x").base_path("pvc://model-store/bert/v2"),
        {
            f"{POD}.volumes[2]": {"name": "models", "persistentVolumeClaim": {"claimName": "model-store", "readOnly": True}},
            f"{SERVING}.volumeMounts[2]": {"name": "models", "mountPath": "/models/model-store", "readOnly": True},
            f"{POD}.securityContext.fsGroup": 1000,
        },
        id="a pvc base path mounts the claim read-only",
    ),
    pytest.param(
        make_isvc("x").base_path("gs://bucket/m").credentials("gcs-creds"),
        {
            f"{SERVING}.envFrom": [{"secretRef": {"name": "gcs-creds"}}],
            f"{SERVING}.env": [{"name": "GOOGLE_APPLICATION_CREDENTIALS",
                                "value": "/var/run/secrets/tfleet/storage/gcs.json"}],
            f"{POD}.volumes[2]": {"name": "storage-credentials", "secret": {"secretName": "gcs-creds"}},
            f"{SERVING}.volumeMounts[2]": {"name": "storage-credentials",
                                           "mountPath": "/var/run/secrets/tfleet/storage", "readOnly": True},
        },
        id="credentials for gs:// become env, a read-only mount and GOOGLE_APPLICATION_CREDENTIALS",
    ),
    pytest.param(
        make_isvc("x").base_path("s3://bucket/m").credentials("s3-creds"),
        {
            f"{SERVING}.envFrom": [{"secretRef": {"name": "s3-creds"}}],
            f"{SERVING}.env": ABSENT,
        },
        id="credentials for s3:// become env without the GCS variable",
    ),
    pytest.param(
        make_isvc("x"),
        {f"{SERVING}.envFrom": ABSENT, f"{SERVING}.env": ABSENT, f"{POD}.volumes[2]": ABSENT},
        id="no credentials, no env and no extra volume",
    ),
    pytest.param(
        make_isvc("x").replicas(3).autoscaling(2, 10, target=70),
        {
            "HorizontalPodAutoscaler/x:spec": {
                "scaleTargetRef": {"apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceService", "name": "x"},
                "minReplicas": 2,
                "maxReplicas": 10,
                "metrics": [{"type": "Resource", "resource": {
                    "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}],
            },
            "PodDisruptionBudget/x:spec": {
                "maxUnavailable": 1,
                "selector": {"matchLabels": {"tfleet.dev/inferenceservice": "x"}},
                "unhealthyPodEvictionPolicy": "AlwaysAllow",
            },
        },
        id="autoscaling targets the InferenceService scale subresource, with a PDB for minReplicas 2",
    ),
    pytest.param(
        make_isvc("x").replicas(3).autoscaling(1, 5),
        {"HorizontalPodAutoscaler/x:spec.minReplicas": 1, "PodDisruptionBudget/x": ABSENT},
        id="an autoscaler that may go down to one pod gets no PDB",
    ),
    pytest.param(
        make_isvc("x").replicas(2),
        {"PodDisruptionBudget/x:spec.maxUnavailable": 1, f"{DEPLOYMENT}:spec.replicas": 2},
        id="two replicas get a PDB",
    ),
    pytest.param(
        make_isvc("x").replicas(0),
        {"PodDisruptionBudget/x": ABSENT, f"{DEPLOYMENT}:spec.replicas": 0},
        id="scaled to zero gets no PDB",
    ),
    pytest.param(
        make_isvc("x").pod(
            serviceAccountName="model-reader",
            priorityClassName="serving-critical",
            annotations={"sidecar.istio.io/inject": "false"},
            labels={"team": "vision", "app.kubernetes.io/name": "mine"},
            imagePullSecrets=["regcred"],
            affinity={"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                    "labelSelector": {"matchLabels": {"tfleet.dev/inferenceservice": "x"}}}}]}},
            terminationGracePeriodSeconds=90,
        ),
        {
            f"{POD}.serviceAccountName": "model-reader",
            f"{POD}.priorityClassName": "serving-critical",
            f"{POD}.imagePullSecrets": [{"name": "regcred"}],
            f"{POD}.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight": 100,
            f"{POD}.terminationGracePeriodSeconds": 90,
            f"{DEPLOYMENT}:spec.template.metadata.annotations.sidecar.istio.io/inject": "false",
            f"{DEPLOYMENT}:spec.template.metadata.labels.team": "vision",
            f"{DEPLOYMENT}:spec.template.metadata.labels.app.kubernetes.io/name": "tensorflow-serving",
        },
        id="pod settings pass through, but tfleet's own labels win",
    ),
    pytest.param(
        make_isvc("x").rolling_update().set("spec.rollout.maxSurge", 1).set("spec.rollout.maxUnavailable", "10%")
        .set("spec.rollout.progressDeadlineSeconds", 900),
        {
            "Deployment/x:spec.strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "10%"}},
            "Deployment/x:spec.progressDeadlineSeconds": 900,
            "Deployment/x:spec.selector": {"matchLabels": {"tfleet.dev/inferenceservice": "x",
                                                           "tfleet.dev/strategy": "RollingUpdate"}},
            "Deployment/x:spec.template.metadata.labels.tfleet.dev/revision": "{rev}",
            "Deployment/x:spec.template.metadata.labels.tfleet.dev/strategy": "RollingUpdate",
            DEPLOYMENT: ABSENT,
            f"{CONFIG_MAP}:immutable": True,
            f"{POD}.volumes[0]": ABSENT,
            "Deployment/x:spec.template.spec.volumes[0]": {"name": "config", "configMap": {"name": "x-{rev}"}},
        },
        id="rolling update: one Deployment named after the InferenceService, rolled in place, with the settings",
    ),
    pytest.param(
        make_isvc("x").version(3).replicas(2).set("spec.rollout.minReadySeconds", 15),
        {
            f"{DEPLOYMENT}:spec.replicas": 2,
            f"{DEPLOYMENT}:spec.minReadySeconds": 15,
            f"{DEPLOYMENT}:spec.progressDeadlineSeconds": 600,
            f"{DEPLOYMENT}:spec.selector": {"matchLabels": {"tfleet.dev/inferenceservice": "x",
                                                            "tfleet.dev/strategy": "Canary",
                                                            "tfleet.dev/revision": "{rev}"}},
            # A Canary revision's pods are only ever added, never replaced in place.
            f"{DEPLOYMENT}:spec.strategy": {"type": "RollingUpdate",
                                            "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            f"{DEPLOYMENT}:metadata.labels.tfleet.dev/revision": "{rev}",
            f"{DEPLOYMENT}:metadata.labels.tfleet.dev/strategy": "Canary",
            f"{DEPLOYMENT}:metadata.labels.tfleet.dev/model-version": "3",
            f"{DEPLOYMENT}:spec.template.metadata.labels.tfleet.dev/revision": "{rev}",
            f"{DEPLOYMENT}:spec.template.metadata.labels.tfleet.dev/strategy": "Canary",
            f"{DEPLOYMENT}:spec.template.metadata.labels.tfleet.dev/model-version": "3",
            f"{POD}.volumes[0]": {"name": "config", "configMap": {"name": "x-{rev}"}},
            f"{CONFIG_MAP}:immutable": True,
            f"{CONFIG_MAP}:metadata.labels.tfleet.dev/revision": "{rev}",
            "Deployment/x": ABSENT,
            "Service/x:spec.selector": {"tfleet.dev/inferenceservice": "x"},
        },
        id="canary (the default): the revision's own Deployment and ConfigMap, labelled and selected by revision",
    ),
    pytest.param(
        make_isvc("x"),
        {
            f"{DEPLOYMENT}:metadata.labels.tfleet.dev/model-version": ABSENT,
            f"{DEPLOYMENT}:spec.template.metadata.labels.tfleet.dev/model-version": ABSENT,
            f"{DEPLOYMENT}:spec.minReadySeconds": 0,
        },
        id="an unpinned model version gets no version label",
    ),
]


def _lookup(children: dict[str, dict[str, Any]], key: str) -> Any:
    child, _, path = key.partition(":")
    if child not in children:
        return ABSENT
    if not path:
        return children[child]
    # Annotation and label keys contain dots and slashes: match them whole where they appear.
    for mapping in ("annotations.", "labels."):
        head, sep, tail = path.partition(mapping)
        if sep:
            container = dig(children[child], head + mapping[:-1])
            return container.get(tail, ABSENT) if isinstance(container, dict) else ABSENT
    if path.endswith("[-1]"):
        items = dig(children[child], path[:-4])
        return items[-1] if isinstance(items, list) and items else ABSENT
    return dig(children[child], path)


def _with_revision(value: Any, rev: str) -> Any:
    if isinstance(value, str):
        return value.replace("{rev}", rev)
    if isinstance(value, dict):
        return {_with_revision(k, rev): _with_revision(v, rev) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_revision(v, rev) for v in value]
    return value


@pytest.mark.parametrize(("manifest", "expected"), CASES)
def test_expectations(manifest: IsvcBuilder, expected: dict[str, Any]) -> None:
    isvc = manifest.isvc()
    rev = builders.compute_revision(isvc).name
    children = children_by_key(isvc)
    for key, want in _with_revision(expected, rev).items():
        have = _lookup(children, key)
        if isinstance(want, dict) and any(v is ABSENT for v in want.values()):
            # A dict with ABSENT values asks for exactly these keys; the values are checked elsewhere.
            assert isinstance(have, dict), key
            assert sorted(have) == sorted(want), key
            for k, v in want.items():
                if v is not ABSENT:
                    assert have[k] == v, f"{key}.{k}"
            continue
        assert have == want if want is not ABSENT else have is ABSENT, f"{key}: {have!r}"


@pytest.mark.parametrize("manifest", [p.values[0] for p in CASES], ids=[p.id for p in CASES])
def test_every_child_validates_strictly(manifest: IsvcBuilder) -> None:
    for child in builders.build_children(manifest.isvc()):
        validate_strictly(child)


@pytest.mark.parametrize("name", example_names())
def test_every_example_builds_valid_children(name: str) -> None:
    children = builders.build_children(parse_object(load_example(name)))
    assert [c["kind"] for c in children[:3]] == ["ConfigMap", "Deployment", "Service"]
    for child in children:
        validate_strictly(child)


# --------------------------------------------------------------------------- invariants

_GOLDEN = '[{"instances": [[1.0, 2.0]], "predictions": [[2.5, 3.0]]}]'

VARIANTS: list[tuple[str, Callable[[], IsvcBuilder]]] = [
    ("cpu", lambda: make_isvc("x")),
    ("gpu", lambda: make_isvc("x").gpu(1)),
    ("pvc with credentials", lambda: make_isvc("x").base_path("pvc://store/m").credentials("c")),
    ("everything", lambda: make_isvc("x").gpu(1).batching(8, [4, 8]).autoscaling(2, 4).credentials("c")),
    ("pre-flight from a ConfigMap", lambda: make_isvc("x").set(
        "spec.model.preflight", {"requests": {"configMapRef": {"name": "golden", "key": "fraud.json"}}})),
    ("inline pre-flight", lambda: make_isvc("x").set("spec.model.preflight", {"requests": {"inline": _GOLDEN}})),
    ("every toleration form", lambda: make_isvc("x").pod(tolerations=[
        {"operator": "Exists"},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30},
        {"key": "pool", "value": "ml", "effect": "NoSchedule"}])),
]


@pytest.mark.parametrize("make", [v[1] for v in VARIANTS], ids=[v[0] for v in VARIANTS])
def test_variants_validate_strictly(make: Callable[[], IsvcBuilder]) -> None:
    for child in builders.build_children(make().isvc()):
        validate_strictly(child)


@pytest.mark.parametrize("make", [v[1] for v in VARIANTS], ids=[v[0] for v in VARIANTS])
def test_children_share_labels_namespace_and_have_no_owner(make: Callable[[], IsvcBuilder]) -> None:
    isvc = make().isvc()
    rev = builders.compute_revision(isvc).name
    shared = {**STANDARD_LABELS, "app.kubernetes.io/instance": "x", "tfleet.dev/inferenceservice": "x"}
    # Only what belongs to one revision says which; the rest is shared by every revision.
    per_revision = {
        "ConfigMap": {"tfleet.dev/revision": rev},
        "Deployment": {"tfleet.dev/revision": rev, "tfleet.dev/strategy": "Canary"},
    }
    for child in builders.build_children(isvc):
        assert child["metadata"]["namespace"] == "ml"
        assert child["metadata"]["labels"] == {**shared, **per_revision.get(child["kind"], {})}, child["kind"]
        # Owner references are the reconciler's business; render output must not carry any.
        assert "ownerReferences" not in child["metadata"]


@pytest.mark.parametrize("make", [v[1] for v in VARIANTS], ids=[v[0] for v in VARIANTS])
def test_pod_meets_the_restricted_pod_security_profile(make: Callable[[], IsvcBuilder]) -> None:
    deployment = builders.build_deployment(make().isvc())
    pod = deployment["spec"]["template"]["spec"]
    pod_sc = pod["securityContext"]
    # The image sets no USER: runAsNonRoot alone would make the kubelet refuse to start it.
    assert pod_sc["runAsNonRoot"] is True
    assert isinstance(pod_sc["runAsUser"], int) and pod_sc["runAsUser"] > 0
    assert isinstance(pod_sc["runAsGroup"], int) and pod_sc["runAsGroup"] > 0
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    allowed_volume_sources = {"configMap", "emptyDir", "secret", "persistentVolumeClaim", "projected",
                              "downwardAPI", "csi", "ephemeral"}
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= allowed_volume_sources, volume
    assert "hostNetwork" not in pod and "hostPID" not in pod and "hostIPC" not in pod
    for container in pod["containers"] + pod.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, container["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], container["name"]
        assert "add" not in sc["capabilities"], container["name"]
        assert not sc.get("privileged"), container["name"]
        assert sc.get("runAsNonRoot", pod_sc["runAsNonRoot"]) is True
        assert sc.get("runAsUser", pod_sc["runAsUser"]) != 0
        assert sc.get("seccompProfile", pod_sc["seccompProfile"])["type"] in ("RuntimeDefault", "Localhost")
        assert "hostPort" not in str(container.get("ports", []))
    serving = pod["containers"][0]
    assert serving["securityContext"]["readOnlyRootFilesystem"] is True
    # ...so TF Serving and its filesystem plugins get a writable /tmp.
    tmp = next(m for m in serving["volumeMounts"] if m["mountPath"] == "/tmp")
    assert {"name": tmp["name"], "emptyDir": {}} in pod["volumes"]


def test_deployment_shape() -> None:
    isvc = make_isvc("x").replicas(4).pod(drainSeconds=20, terminationGracePeriodSeconds=60).isvc()
    rev = builders.compute_revision(isvc).name
    children = children_by_key(isvc)
    deployment = children[f"Deployment/x-{rev}"]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    serving = pod["containers"][0]
    # The selector is immutable on a Deployment and must match the pod labels; it names the
    # revision, so that the Deployments of two revisions never adopt each other's pods.
    assert spec["selector"] == {"matchLabels": {"tfleet.dev/inferenceservice": "x", "tfleet.dev/strategy": "Canary",
                                                "tfleet.dev/revision": rev}}
    assert spec["template"]["metadata"]["labels"].items() >= spec["selector"]["matchLabels"].items()
    assert spec["replicas"] == 4
    assert serving["name"] == "tensorflow-serving"
    assert [p["name"] for p in serving["ports"]] == ["grpc", "http"]
    # The config volume names the ConfigMap that is built alongside: the revision's own.
    config_volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert config_volume["configMap"]["name"] == f"x-{rev}"
    assert f"ConfigMap/x-{rev}" in children
    assert {"name": "config", "mountPath": "/etc/tfleet", "readOnly": True} in serving["volumeMounts"]
    # TF Serving ignores SIGTERM: a preStop drains, within the grace period.
    assert pod["terminationGracePeriodSeconds"] == 60
    assert "preStop" in serving["lifecycle"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert probe in serving
    # Serving pods need no API access.
    assert pod["automountServiceAccountToken"] is False


def test_children_come_in_creation_order() -> None:
    isvc = make_isvc("x").replicas(2).autoscaling(2, 4).isvc()
    rev = builders.compute_revision(isvc).name
    kinds = [c["kind"] + "/" + c["metadata"]["name"] for c in builders.build_children(isvc)]
    # The ConfigMap comes first: the Deployment's pods mount it.
    assert kinds == [f"ConfigMap/x-{rev}", f"Deployment/x-{rev}", "Service/x", "Service/x-grpc",
                     "HorizontalPodAutoscaler/x", "PodDisruptionBudget/x"]


def test_building_is_deterministic() -> None:
    manifest = make_isvc("x").gpu(1).batching(16, [8, 16]).autoscaling(2, 4).credentials("c")
    assert builders.build_children(manifest.isvc()) == builders.build_children(manifest.isvc())
    assert builders.compute_revision(manifest.isvc()) == builders.compute_revision(manifest.clone().isvc())


def test_replicas_argument_sizes_only_the_deployment() -> None:
    isvc = make_isvc("x").replicas(4).isvc()
    default, scaled = builders.build_children(isvc), builders.build_children(isvc, replicas=1)
    assert builders.build_deployment(isvc)["spec"]["replicas"] == 4
    assert builders.build_deployment(isvc, replicas=0)["spec"]["replicas"] == 0
    assert [c["kind"] for c in default] == [c["kind"] for c in scaled]
    for a, b in zip(default, scaled, strict=True):
        if a["kind"] == "Deployment":
            assert (a["spec"]["replicas"], b["spec"]["replicas"]) == (4, 1)
            a, b = {**a, "spec": {**a["spec"], "replicas": 0}}, {**b, "spec": {**b["spec"], "replicas": 0}}
        assert a == b, a["kind"]


# --------------------------------------------------------------------------- revisions


def _children_of(manifest: IsvcBuilder) -> dict[str, dict[str, Any]]:
    return children_by_key(manifest.isvc())


def _revision(manifest: IsvcBuilder) -> str:
    return builders.compute_revision(manifest.isvc()).name


def _checksum(manifest: IsvcBuilder) -> str:
    deployment = builders.build_deployment(manifest.isvc())
    return str(deployment["spec"]["template"]["metadata"]["annotations"][builders.ANNOTATION_CONFIG_CHECKSUM])


CHECKSUM_CASES = [
    pytest.param(lambda b: b.batching(32, [16, 32]), True, id="turning batching on rolls the pods"),
    pytest.param(lambda b: b.batching(8, [4, 8]).set("spec.batching.batchTimeoutMicros", 1), True,
                 id="a batching change rolls the pods"),
    pytest.param(lambda b: b.monitoring(False), True, id="turning monitoring off rolls the pods"),
    pytest.param(lambda b: b.version(4), True, id="a model version change changes the config"),
    pytest.param(lambda b: b.replicas(7), False, id="a replica change does not roll the pods"),
    pytest.param(lambda b: b.autoscaling(1, 9), False, id="adding an autoscaler does not roll the pods"),
    pytest.param(lambda b: b.headless(False), False, id="a Service change does not roll the pods"),
    pytest.param(lambda b: b.set("metadata.labels", {"team": "a"}), False, id="labels on the InferenceService do not roll"),
]


@pytest.mark.parametrize(("change", "rolls"), CHECKSUM_CASES)
def test_config_checksum(change: Callable[[IsvcBuilder], IsvcBuilder], rolls: bool) -> None:
    before = _checksum(make_isvc("x").version(3).replicas(2))
    after = _checksum(change(make_isvc("x").version(3).replicas(2)))
    assert (before != after) is rolls
    assert re.fullmatch(r"[0-9a-f]{64}", after)


def test_config_checksum_covers_the_configmap_data() -> None:
    isvc = make_isvc("x").batching(8).isvc()
    config_map = builders.build_config_map(isvc)
    assert _checksum(make_isvc("x").batching(8)) == builders.checksum(config_map["data"])
    assert sorted(config_map["data"]) == sorted(tfconfig.config_files(isvc))
    assert builders.compute_revision(isvc).checksum == builders.checksum(config_map["data"])


def _base() -> IsvcBuilder:
    return make_isvc("x").version(3).replicas(2).batching(8, [4, 8])


REVISION_CASES = [
    # What runs in a pod: each is a new revision.
    pytest.param(lambda b: b.version(4), True, id="a model version bump is a new revision"),
    pytest.param(lambda b: b.version(None), True, id="unpinning the version is a new revision"),
    pytest.param(lambda b: b.base_path("s3://other/x"), True, id="a new base path is a new revision"),
    pytest.param(lambda b: b.image("tensorflow/serving:2.20.0"), True, id="a new image is a new revision"),
    pytest.param(lambda b: b.set("spec.batching.batchTimeoutMicros", 500), True,
                 id="a batching change is a new revision (TF Serving cannot reload it)"),
    pytest.param(lambda b: b.unset("spec.batching"), True, id="turning batching off is a new revision"),
    pytest.param(lambda b: b.resources(requests={"cpu": "2"}), True, id="new resources are a new revision"),
    pytest.param(lambda b: b.gpu(1), True, id="asking for a GPU is a new revision"),
    pytest.param(lambda b: b.server(extraArgs=["--tensorflow_intra_op_parallelism=2"]), True,
                 id="new server args are a new revision"),
    pytest.param(lambda b: b.server(maxConnectionAgeSeconds=60), True, id="a new connection age is a new revision"),
    pytest.param(lambda b: b.monitoring(False), True, id="turning monitoring off is a new revision"),
    pytest.param(lambda b: b.credentials("creds"), True, id="storage credentials are a new revision"),
    pytest.param(lambda b: b.pod(nodeSelector={"pool": "ml"}), True, id="a pod setting is a new revision"),
    pytest.param(lambda b: b.rolling_update(), True,
                 id="switching strategy is a new revision (its pods are selected differently)"),
    pytest.param(lambda b: b.set("spec.model.preflight", {"requests": {"inline": _GOLDEN}}), True,
                 id="a pre-flight is a new revision"),
    pytest.param(lambda b: b.set("spec.model.preflight", {"requests": {"configMapRef": {"name": "golden"}}}), True,
                 id="a pre-flight from a ConfigMap is a new revision"),
    # Around the pods: the same revision.
    pytest.param(lambda b: b.replicas(7), False, id="a replicas-only change is not a new revision"),
    pytest.param(lambda b: b.replicas(0), False, id="scaling to zero is not a new revision"),
    pytest.param(lambda b: b.autoscaling(2, 9), False, id="adding an autoscaler is not a new revision"),
    pytest.param(lambda b: b.headless(False).service_type("LoadBalancer"), False,
                 id="Service settings are not a new revision"),
    pytest.param(lambda b: b.canary(5, 25, 75, pause="5m"), False, id="new canary steps are not a new revision"),
    pytest.param(lambda b: b.set("spec.rollout.progressDeadlineSeconds", 60).set("spec.rollout.autoRollback", False)
                 .set("spec.rollout.minReadySeconds", 30).set("spec.rollout.revisionHistoryLimit", 1), False,
                 id="rollout settings are not a new revision"),
    pytest.param(lambda b: b.set("metadata.labels", {"team": "a"}).set("metadata.generation", 9), False,
                 id="metadata of the InferenceService is not a new revision"),
]


@pytest.mark.parametrize(("change", "new_revision"), REVISION_CASES)
def test_what_makes_a_new_revision(change: Callable[[IsvcBuilder], IsvcBuilder], new_revision: bool) -> None:
    before, after = _base(), change(_base())
    rev_before, rev_after = _revision(before), _revision(after)
    assert re.fullmatch(r"[0-9a-f]{10}", rev_after)
    assert (rev_before != rev_after) is new_revision
    # A Canary revision lives in objects named after it, so a new revision means new objects
    # beside the old ones, and the same revision means the same objects.
    config_maps = [k for k in _children_of(after) if k.startswith("ConfigMap/")]
    assert config_maps == [f"ConfigMap/x-{rev_after}"]
    if after.spec.get("rollout", {}).get("strategy") != "RollingUpdate":
        assert f"Deployment/x-{rev_after}" in _children_of(after)


def _deployments_of_many_revisions() -> list[dict[str, Any]]:
    """Deployments that one InferenceService may own at once: several Canary revisions, and
    the RollingUpdate Deployment left from (or heading to) a switch of strategy."""
    variants = [
        _base(), _base().version(4), _base().version(5), _base().image("tensorflow/serving:2.20.0"),
        _base().unset("spec.batching"), _base().rolling_update(), _base().rolling_update().version(4),
    ]
    return [builders.build_deployment(v.isvc()) for v in variants]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return labels.items() >= selector.items()


def test_two_deployments_never_select_each_others_pods() -> None:
    deployments = _deployments_of_many_revisions()
    names = [d["metadata"]["name"] for d in deployments]
    # The two RollingUpdate variants are one Deployment rolled in place; the rest are distinct.
    assert len(set(names)) == len(names) - 1
    for a in deployments:
        own = a["spec"]["selector"]["matchLabels"]
        assert _selects(own, a["spec"]["template"]["metadata"]["labels"]), a["metadata"]["name"]
        for b in deployments:
            if b["metadata"]["name"] == a["metadata"]["name"]:
                continue
            assert not _selects(own, b["spec"]["template"]["metadata"]["labels"]), \
                f"{a['metadata']['name']} selects the pods of {b['metadata']['name']}"


def test_every_revision_serves_behind_the_same_service_and_pdb() -> None:
    # Traffic follows the replica ratio only if the Service selects every revision's pods.
    isvc = _base().isvc()
    service, pdb = builders.build_service(isvc), builders.build_pdb(isvc)
    assert pdb is not None
    for deployment in _deployments_of_many_revisions():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert _selects(service["spec"]["selector"], labels)
        assert _selects(pdb["spec"]["selector"]["matchLabels"], labels)


def test_config_maps_are_immutable_and_named_by_their_content() -> None:
    data_by_name: dict[str, dict[str, str]] = {}
    changes: list[Callable[[IsvcBuilder], IsvcBuilder]] = [p.values[0] for p in REVISION_CASES]  # type: ignore[misc]
    for change in changes:
        config_map = builders.build_config_map(change(_base()).isvc())
        assert config_map["immutable"] is True
        name = config_map["metadata"]["name"]
        # An immutable object can never be updated: one name must always mean one content.
        assert data_by_name.setdefault(name, config_map["data"]) == config_map["data"], name
    assert len(data_by_name) > 1


def test_pod_template_names_its_revision_and_config_map() -> None:
    isvc = _base().isvc()
    rev = builders.compute_revision(isvc)
    template = builders.build_pod_template(isvc)
    assert template == builders.build_pod_template(isvc, rev)
    assert template == builders.build_deployment(isvc)["spec"]["template"]
    assert template["metadata"]["labels"]["tfleet.dev/revision"] == rev.name
    assert template["metadata"]["annotations"][builders.ANNOTATION_CONFIG_CHECKSUM] == rev.checksum
    volume = next(v for v in template["spec"]["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == builders.build_config_map(isvc, rev)["metadata"]["name"] == f"x-{rev.name}"


def test_the_serving_container_ends_its_first_failed_load_with_a_readable_message() -> None:
    dep = builders.build_deployment(make_isvc("a").isvc())
    (serving,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "tensorflow-serving"]
    # TF Serving prints its load error and exits: the kubelet keeps the end of the log.
    assert serving["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert "--max_num_load_retries=0" in serving["args"]


def _bridge(isvc: InferenceService) -> dict[str, Any]:
    pod = builders.build_deployment(isvc)["spec"]["template"]["spec"]
    (bridge,) = pod["initContainers"]
    return {"args": bridge["args"], "mounts": bridge.get("volumeMounts"),
            "volume": next((v for v in pod["volumes"] if v["name"] == "golden-requests"), None),
            "serving mounts": [m["name"] for m in pod["containers"][0]["volumeMounts"]]}


def test_the_pre_flight_reaches_the_bridge_and_only_the_bridge() -> None:
    assert _bridge(make_isvc("x").isvc())["volume"] is None
    assert "--preflight-requests" not in _bridge(make_isvc("x").isvc())["args"]

    ref = make_isvc("x").set("spec.model.preflight", {"requests": {"configMapRef": {"name": "golden",
                                                                                       "key": "fraud.json"}},
                                                      "tolerance": 0.001, "timeoutSeconds": 90}).server(restPort=9001)
    seen = _bridge(ref.isvc())
    args = seen["args"]
    flags = {args[i]: args[i + 1] for i in range(len(args) - 1) if args[i].startswith("--preflight") or
             args[i] == "--rest-port"}
    assert flags == {"--preflight-requests": "/etc/tfleet/preflight/requests.json", "--preflight-tolerance": "0.001",
                     "--preflight-timeout": "90s", "--rest-port": "9001"}
    assert seen["mounts"] == [{"name": "golden-requests", "mountPath": "/etc/tfleet/preflight", "readOnly": True}]
    assert seen["volume"] == {"name": "golden-requests", "configMap": {
        "name": "golden", "items": [{"key": "fraud.json", "path": "requests.json"}]}}
    assert "golden-requests" not in seen["serving mounts"]  # TF Serving never reads them

    inline = make_isvc("x").set("spec.model.preflight", {"requests": {"inline": _GOLDEN}}).isvc()
    rev = builders.compute_revision(inline)
    assert rev.config[tfconfig.GOLDEN_REQUESTS] == _GOLDEN  # in the revision's own immutable ConfigMap
    assert _bridge(inline)["volume"] == {"name": "golden-requests", "configMap": {
        "name": f"x-{rev.name}", "items": [{"key": tfconfig.GOLDEN_REQUESTS, "path": "requests.json"}]}}
