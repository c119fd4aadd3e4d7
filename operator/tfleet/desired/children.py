"""Desired children of an InferenceService, as pure functions of the parsed model.

No API client, no clock: the same input always gives the same objects, which is what lets
`tfleet render` print exactly what the operator creates, and lets the reconciler compare
desired with observed state field by field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from tfleet.api.model import InferenceService, Toleration
from tfleet.api.schema import to_json
from tfleet.api.vocabulary import (
    ANNOTATION_CONFIG_CHECKSUM,
    API_VERSION,
    KIND,
    LABEL_ISVC,
    LABEL_MANAGED_BY,
    LABEL_MODEL_VERSION,
    LABEL_REVISION,
    LABEL_STRATEGY,
    MANAGER,
    SERVING_CONTAINER,
)
from tfleet.desired import health_wiring as probes
from tfleet.desired import tfconfig

Manifest = dict[str, Any]

# The ConfigMap name inside the template while the revision (a hash of that template) is
# being computed; it is replaced by the revision's own ConfigMap name afterwards.
_CONFIG_PLACEHOLDER = "<config>"
CONFIG_VOLUME = "config"
STORAGE_SECRET_DIR = "/var/run/secrets/tfleet/storage"
# The restricted Pod Security profile needs an explicit non-root identity: the
# tensorflow/serving image sets no USER.
RUN_AS_USER = 1000


def labels(isvc: InferenceService) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "tensorflow-serving",
        "app.kubernetes.io/instance": isvc.name,
        "app.kubernetes.io/component": "model-server",
        LABEL_MANAGED_BY: MANAGER,
        "app.kubernetes.io/part-of": "tfleet",
        LABEL_ISVC: isvc.name,
    }


def selector(isvc: InferenceService) -> dict[str, str]:
    """Pod selector of the fleet. Deployment selectors are immutable, so it stays minimal."""
    return {LABEL_ISVC: isvc.name}


def selector_string(isvc: InferenceService) -> str:
    return ",".join(f"{k}={v}" for k, v in selector(isvc).items())


@dataclass(frozen=True)
class Revision:
    """What runs in the pods: the config files, and a name that hashes them with the template."""

    name: str
    config: dict[str, str]
    checksum: str


@dataclass(frozen=True)
class PodExtras:
    """What a revision's pods get from the operator rather than from the spec. Neither is part
    of the revision, and a running revision keeps the ones its Deployment was made with (see
    `tfleet.engine.plan.pod_extras_of`), so an operator upgrade or a new drain key rolls nothing.

    `drain_token` (see `health_wiring.drain_token`) goes to the health bridge and the preStop
    hook; without one, the bridge drains for anyone who asks. `bridge_image` is the health
    bridge's image; None: the operator's own (`health_wiring.bridge_image`).
    """

    drain_token: str | None = None
    bridge_image: str | None = None


NO_EXTRAS = PodExtras()
# The bridge image a revision's name is computed with, whatever image its pods get. Frozen at
# the default of the release that took the image out of the revision, so that revisions made
# before keep their names (an upgrade renames, and so rolls, nothing).
REVISION_BRIDGE_IMAGE = "ghcr.io/tfleet/tfleet:0.1.0"


def compute_revision(isvc: InferenceService) -> Revision:
    """Replicas, Services, autoscaling and rollout settings are not part of a revision, so
    changing them rolls nothing. Neither are the pod extras: the drain token is derived from
    the revision (and a key the revision must not depend on), and the bridge image changes
    with every operator release."""
    data = tfconfig.config_files(isvc)
    digest = checksum(data)
    template = _pod_template(isvc, digest, _CONFIG_PLACEHOLDER, revision_label=None,
                             extras=PodExtras(bridge_image=REVISION_BRIDGE_IMAGE))
    name = hashlib.sha256(json.dumps([data, template], sort_keys=True).encode()).hexdigest()[:10]
    return Revision(name=name, config=data, checksum=digest)


def revision(isvc: InferenceService) -> str:
    return compute_revision(isvc).name


def revision_object_name(isvc: InferenceService, rev: str) -> str:
    """Name of a revision's ConfigMap and, under the Canary strategy, its Deployment."""
    return f"{isvc.name}-{rev}"


def deployment_name(isvc: InferenceService, rev: str) -> str:
    """Canary: one Deployment per revision. RollingUpdate: one Deployment, rolled in place."""
    if isvc.spec.rollout.strategy == "RollingUpdate":
        return isvc.name
    return revision_object_name(isvc, rev)


def deployment_selector(isvc: InferenceService, rev: str) -> dict[str, str]:
    """Deployments of one InferenceService must never select each other's pods."""
    if isvc.spec.rollout.strategy == "RollingUpdate":
        return {LABEL_ISVC: isvc.name, LABEL_STRATEGY: "RollingUpdate"}
    return {LABEL_ISVC: isvc.name, LABEL_STRATEGY: "Canary", LABEL_REVISION: rev}


def headless_service_name(isvc: InferenceService) -> str:
    return f"{isvc.name}-grpc"


def owner_reference(isvc: InferenceService) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": isvc.name,
        "uid": isvc.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(isvc: InferenceService, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": isvc.namespace, "labels": labels(isvc)}


def checksum(data: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- ConfigMap


def build_config_map(isvc: InferenceService, rev: Revision | None = None) -> Manifest:
    rev = rev or compute_revision(isvc)
    metadata = _metadata(isvc, revision_object_name(isvc, rev.name))
    metadata["labels"][LABEL_REVISION] = rev.name
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        # A revision's config never changes: a change is a new revision with a new ConfigMap,
        # so pods of an older revision keep reading the files they started with.
        "immutable": True,
        "data": dict(rev.config),
    }


# --------------------------------------------------------------------------- Deployment


def _tolerations(isvc: InferenceService) -> list[dict[str, Any]]:
    spec = isvc.spec
    result: list[Toleration] = list(spec.pod.tolerations)
    if spec.gpu.count > 0:
        result.append(Toleration(key=spec.gpu.resource_name, operator="Exists", effect="NoSchedule"))
        result.extend(spec.gpu.tolerations)
    unique: list[dict[str, Any]] = []
    for toleration in result:
        as_json = to_json(toleration)
        if as_json not in unique:
            unique.append(as_json)
    return unique


def _node_selector(isvc: InferenceService) -> dict[str, str]:
    node_selector = dict(isvc.spec.pod.node_selector)
    if isvc.spec.gpu.count > 0:
        node_selector.update(isvc.spec.gpu.node_selector)
    return node_selector


def _resources(isvc: InferenceService) -> dict[str, Any]:
    spec = isvc.spec
    requests = {k: str(v) for k, v in spec.resources.requests.items()}
    limits = {k: str(v) for k, v in spec.resources.limits.items()}
    if spec.gpu.count > 0:
        # Extended resources are set as limits; Kubernetes copies them to requests.
        limits[spec.gpu.resource_name] = str(spec.gpu.count)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _volumes_and_mounts(isvc: InferenceService, config_map: str) -> tuple[list[Manifest], list[Manifest]]:
    volumes: list[Manifest] = [
        {"name": CONFIG_VOLUME, "configMap": {"name": config_map}},
        # The root filesystem is read-only; TF Serving and the filesystem plugins write to /tmp.
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[Manifest] = [
        {"name": CONFIG_VOLUME, "mountPath": tfconfig.CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    base = isvc.spec.model.base_path
    if base.startswith("pvc://"):
        claim = base[len("pvc://"):].split("/", 1)[0]
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": "models", "mountPath": f"/models/{claim}", "readOnly": True})
    secret = isvc.spec.model.credentials_secret
    if secret:
        volumes.append({"name": "storage-credentials", "secret": {"secretName": secret}})
        mounts.append({"name": "storage-credentials", "mountPath": STORAGE_SECRET_DIR, "readOnly": True})
    return volumes, mounts


def _env(isvc: InferenceService) -> tuple[list[Manifest], list[Manifest]]:
    secret = isvc.spec.model.credentials_secret
    if not secret:
        return [], []
    env: list[Manifest] = []
    if isvc.spec.model.base_path.startswith("gs://"):
        env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": f"{STORAGE_SECRET_DIR}/gcs.json"})
    return env, [{"secretRef": {"name": secret}}]


def restricted_container_security_context() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _serving_container(isvc: InferenceService, mounts: list[Manifest], drain_token: str | None) -> Manifest:
    server = isvc.spec.server
    env, env_from = _env(isvc)
    container: Manifest = {
        "name": SERVING_CONTAINER,
        "image": isvc.image,
        "args": tfconfig.server_args(isvc),
        "ports": [
            {"name": "grpc", "containerPort": server.grpc_port, "protocol": "TCP"},
            {"name": "http", "containerPort": server.rest_port, "protocol": "TCP"},
        ],
    }
    if env:
        container["env"] = env
    if env_from:
        container["envFrom"] = env_from
    resources = _resources(isvc)
    if resources:
        container["resources"] = resources
    container["volumeMounts"] = mounts
    container.update(probes.serving_probes(isvc))
    container["lifecycle"] = probes.serving_lifecycle(isvc, drain_token)
    # A model that fails its first load makes TF Serving print why and exit: the end of its
    # log becomes the container's termination message, which the operator reads.
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    container["securityContext"] = restricted_container_security_context()
    return container


def build_pod_template(isvc: InferenceService, rev: Revision | None = None, extras: PodExtras = NO_EXTRAS) -> Manifest:
    """The pod template of the InferenceService's current revision."""
    rev = rev or compute_revision(isvc)
    return _pod_template(isvc, rev.checksum, revision_object_name(isvc, rev.name), revision_label=rev.name,
                         extras=extras)


def _pod_template(isvc: InferenceService, config_checksum: str, config_map: str, revision_label: str | None,
                  extras: PodExtras) -> Manifest:
    spec = isvc.spec
    volumes, mounts = _volumes_and_mounts(isvc, config_map)
    annotations = dict(spec.pod.annotations)
    annotations[ANNOTATION_CONFIG_CHECKSUM] = config_checksum
    if spec.server.monitoring:
        annotations.setdefault("prometheus.io/scrape", "true")
        annotations.setdefault("prometheus.io/port", str(spec.server.rest_port))
        annotations.setdefault("prometheus.io/path", tfconfig.METRICS_PATH)
    pod_spec: Manifest = {
        "containers": [_serving_container(isvc, mounts, extras.drain_token)],
        "volumes": volumes,
        "terminationGracePeriodSeconds": spec.pod.termination_grace_period_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # Serving pods need no Kubernetes API access.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
    }
    sidecars = probes.sidecars(isvc, image=extras.bridge_image, drain_token=extras.drain_token)
    if sidecars:
        pod_spec["initContainers"] = sidecars
    if node_selector := _node_selector(isvc):
        pod_spec["nodeSelector"] = node_selector
    if tolerations := _tolerations(isvc):
        pod_spec["tolerations"] = tolerations
    if spec.pod.affinity:
        pod_spec["affinity"] = spec.pod.affinity
    if spec.pod.service_account_name:
        pod_spec["serviceAccountName"] = spec.pod.service_account_name
    if spec.pod.priority_class_name:
        pod_spec["priorityClassName"] = spec.pod.priority_class_name
    if spec.pod.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in spec.pod.image_pull_secrets]
    pod_labels = {**spec.pod.labels, **labels(isvc), LABEL_STRATEGY: spec.rollout.strategy}
    if revision_label is not None:
        pod_labels[LABEL_REVISION] = revision_label
    if spec.model.version is not None:
        pod_labels[LABEL_MODEL_VERSION] = str(spec.model.version)
    return {"metadata": {"labels": pod_labels, "annotations": annotations}, "spec": pod_spec}


def build_deployment(isvc: InferenceService, replicas: int | None = None, rev: Revision | None = None,
                     extras: PodExtras = NO_EXTRAS) -> Manifest:
    """The Deployment of the current revision, at `replicas` (default: all of them)."""
    rollout = isvc.spec.rollout
    rev = rev or compute_revision(isvc)
    metadata = _metadata(isvc, deployment_name(isvc, rev.name))
    metadata["labels"].update({LABEL_REVISION: rev.name, LABEL_STRATEGY: rollout.strategy})
    if isvc.spec.model.version is not None:
        metadata["labels"][LABEL_MODEL_VERSION] = str(isvc.spec.model.version)
    if rollout.strategy == "RollingUpdate":
        strategy: Manifest = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": rollout.max_surge, "maxUnavailable": rollout.max_unavailable},
        }
    else:
        # A Canary revision's template never changes; tfleet moves traffic between
        # Deployments by scaling them.
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": isvc.replicas if replicas is None else replicas,
            "selector": {"matchLabels": deployment_selector(isvc, rev.name)},
            "strategy": strategy,
            "minReadySeconds": rollout.min_ready_seconds,
            "progressDeadlineSeconds": rollout.progress_deadline_seconds,
            "revisionHistoryLimit": 3,
            "template": build_pod_template(isvc, rev, extras),
        },
    }


# --------------------------------------------------------------------------- Services


def build_service(isvc: InferenceService) -> Manifest:
    server = isvc.spec.server
    metadata = _metadata(isvc, isvc.name)
    if isvc.spec.service.annotations:
        metadata["annotations"] = dict(isvc.spec.service.annotations)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": isvc.spec.service.type,
            "selector": selector(isvc),
            "ports": [
                {"name": "grpc", "port": server.grpc_port, "targetPort": "grpc", "protocol": "TCP",
                 "appProtocol": "grpc"},
                {"name": "http", "port": server.rest_port, "targetPort": "http", "protocol": "TCP",
                 "appProtocol": "http"},
            ],
        },
    }


def build_headless_service(isvc: InferenceService) -> Manifest:
    """One DNS record per ready pod, for gRPC clients that balance per request themselves."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(isvc, headless_service_name(isvc)),
        "spec": {
            "clusterIP": "None",
            "selector": selector(isvc),
            "ports": [
                {"name": "grpc", "port": isvc.spec.server.grpc_port, "targetPort": "grpc", "protocol": "TCP",
                 "appProtocol": "grpc"},
            ],
        },
    }


# --------------------------------------------------------------------------- HPA and PDB


def build_hpa(isvc: InferenceService) -> Manifest | None:
    """Autoscaler on the InferenceService's scale subresource (not the Deployment), so one
    replica count drives every revision during a rollout."""
    autoscaling = isvc.spec.autoscaling
    if autoscaling is None:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(isvc, isvc.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": API_VERSION, "kind": KIND, "name": isvc.name},
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": autoscaling.target_cpu_utilization_percentage,
                        },
                    },
                }
            ],
        },
    }


def build_pdb(isvc: InferenceService) -> Manifest | None:
    autoscaling = isvc.spec.autoscaling
    floor = autoscaling.min_replicas if autoscaling else isvc.spec.replicas
    if floor <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(isvc, isvc.name),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector(isvc)},
            # A crash-looping pod must not block node drains.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


# --------------------------------------------------------------------------- all children


def build_children(isvc: InferenceService, replicas: int | None = None, rev: Revision | None = None,
                   extras: PodExtras = NO_EXTRAS) -> list[Manifest]:
    """Every child of the current revision and the InferenceService, in creation order.

    `replicas` is the current revision's Deployment size (the rollout engine decides it
    during a rollout); older revisions' Deployments are scaled, not rebuilt. `extras` are
    what the current revision's pods get from the operator (see `PodExtras`).
    """
    rev = rev or compute_revision(isvc)
    children = [build_config_map(isvc, rev), build_deployment(isvc, replicas, rev, extras), build_service(isvc)]
    if isvc.spec.service.headless:
        children.append(build_headless_service(isvc))
    for optional in (build_hpa(isvc), build_pdb(isvc)):
        if optional is not None:
            children.append(optional)
    return children
