"""The pod spec pieces that wire the health bridge into a serving pod. Pure functions.

The Deployment builder puts `bridge_container()` in `initContainers` (it is a native
sidecar: an init container with `restartPolicy: Always`, so it starts before TF Serving
and stops after it), merges `serving_probes()` and `serving_lifecycle()` into the TF
Serving container, and sets the pod's `terminationGracePeriodSeconds` to
`termination_grace_seconds()`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

BRIDGE_CONTAINER_NAME = "health-bridge"
HEALTH_PORT_NAME = "health"
HEALTH_HTTP_PORT_NAME = "health-http"
DEFAULT_BRIDGE_PORT = 8510
DEFAULT_DRAIN_SECONDS = 10
DEFAULT_MODEL_LOAD_TIMEOUT_SECONDS = 600

# The restricted Pod Security profile wants a numeric non-root user; this is the
# conventional "nonroot" uid of distroless-style images.
BRIDGE_UID = 65532

# An optional shared token guards the bridge's /drain: the bridge reads it from this
# environment variable, and the preStop hook sends it in this header.
DRAIN_TOKEN_ENV = "TFLEET_DRAIN_TOKEN"
DRAIN_TOKEN_HEADER = "X-Tfleet-Drain-Token"

# The golden requests of the pre-flight: a ConfigMap key, mounted into the bridge alone.
GOLDEN_VOLUME = "golden-requests"
GOLDEN_DIR = "/etc/tfleet/preflight"
GOLDEN_FILE = "requests.json"

STARTUP_PERIOD_SECONDS = 5
# Requests that reached TF Serving just before the drain ended still get to finish:
# TF Serving ignores SIGTERM, so only the end of the grace period stops it.
GRACE_MARGIN_SECONDS = 5


def bridge_http_port(bridge_port: int) -> int:
    """The bridge's HTTP port (/drain, /status, /healthz) sits next to its gRPC port."""
    return bridge_port + 1


def restricted_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": BRIDGE_UID,
        "runAsGroup": BRIDGE_UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


@dataclass(frozen=True)
class PreflightWiring:
    """The bridge's pre-flight: golden requests from `golden_volume()`, checked with this
    tolerance, within this deadline; `rest_port` is TF Serving's, for requests gRPC cannot carry."""

    tolerance: float
    timeout_seconds: int
    rest_port: int


@dataclass(frozen=True)
class MetricsWiring:
    """Where the bridge reads TF Serving's Prometheus page: the REST port on localhost, the path."""

    rest_port: int
    path: str


METRICS_PATH_FLAG = "--metrics-path"


def golden_volume(config_map: str, key: str) -> dict[str, Any]:
    """The pod volume of the golden requests: one key of a ConfigMap, as GOLDEN_FILE."""
    return {"name": GOLDEN_VOLUME, "configMap": {"name": config_map, "items": [{"key": key, "path": GOLDEN_FILE}]}}


def bridge_container(
    *,
    image: str,
    model_name: str,
    version: int | None,
    grpc_port: int,
    bridge_port: int = DEFAULT_BRIDGE_PORT,
    drain_seconds: int = DEFAULT_DRAIN_SECONDS,
    drain_token: str | None = None,
    preflight: PreflightWiring | None = None,
    metrics: MetricsWiring | None = None,
) -> dict[str, Any]:
    """The health bridge as a native sidecar (for the pod's `initContainers`).

    With `drain_token`, pass the same token to `serving_lifecycle`. With `preflight`, the pod
    needs `golden_volume()` among its volumes.
    """
    http_port = bridge_http_port(bridge_port)
    args = [
        "health-bridge",
        "--target", f"localhost:{grpc_port}",
        "--model", model_name,
        "--port", str(bridge_port),
        "--http-port", str(http_port),
        "--drain-seconds", str(drain_seconds),
    ]  # fmt: skip
    if version is not None:
        args += ["--version", str(version)]
    rest_port = preflight.rest_port if preflight is not None else metrics.rest_port if metrics is not None else 0
    if rest_port:
        args += ["--rest-port", str(rest_port)]
    if metrics is not None:
        args += [METRICS_PATH_FLAG, metrics.path]
    if preflight is not None:
        args += [
            "--preflight-requests", f"{GOLDEN_DIR}/{GOLDEN_FILE}",
            "--preflight-tolerance", repr(float(preflight.tolerance)),
            "--preflight-timeout", f"{preflight.timeout_seconds}s",
        ]  # fmt: skip
    container: dict[str, Any] = {
        "name": BRIDGE_CONTAINER_NAME,
        "image": image,
        "command": ["tfleet"],
        "args": args,
        "restartPolicy": "Always",
        "ports": [
            {"name": HEALTH_PORT_NAME, "containerPort": bridge_port, "protocol": "TCP"},
            {"name": HEALTH_HTTP_PORT_NAME, "containerPort": http_port, "protocol": "TCP"},
        ],
        "resources": {
            "requests": {"cpu": "10m", "memory": "48Mi"},
            # No CPU limit: throttling would delay probe answers on a busy node, and the
            # bridge's CPU use is bounded by its poll interval and kubelet's probe rate.
            "limits": {"memory": "128Mi"},
        },
        "securityContext": restricted_security_context(),
        # The bridge's own health: its poll loop keeps running. Kept off TF Serving's state
        # so a slow model never restarts the bridge.
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": HEALTH_HTTP_PORT_NAME},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if drain_token:
        container["env"] = [{"name": DRAIN_TOKEN_ENV, "value": drain_token}]
    if preflight is not None:
        container["volumeMounts"] = [{"name": GOLDEN_VOLUME, "mountPath": GOLDEN_DIR, "readOnly": True}]
    return container


def startup_failure_threshold(model_load_timeout_seconds: int) -> int:
    return max(1, math.ceil(model_load_timeout_seconds / STARTUP_PERIOD_SECONDS))


def serving_probes(
    *,
    bridge_port: int = DEFAULT_BRIDGE_PORT,
    model_load_timeout_seconds: int = DEFAULT_MODEL_LOAD_TIMEOUT_SECONDS,
) -> dict[str, Any]:
    """startupProbe, readinessProbe and livenessProbe for the TF Serving container."""

    def grpc(service: str) -> dict[str, Any]:
        return {"port": bridge_port, "service": service}

    return {
        # Kubelet holds liveness and readiness back until startup succeeds, so a model
        # load may take up to model_load_timeout_seconds before the pod is restarted.
        "startupProbe": {
            "grpc": grpc("startup"),
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "timeoutSeconds": 2,
            "failureThreshold": startup_failure_threshold(model_load_timeout_seconds),
        },
        # The bridge answers from a cache refreshed every second, so a short period
        # takes a pod out of its Services within a few seconds of a failed version.
        "readinessProbe": {
            "grpc": grpc("readiness"),
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "successThreshold": 1,
            "failureThreshold": 2,
        },
        # Liveness fails only when TF Serving stops answering GetModelStatus at all
        # (hung or dead); a LOADING or failed version keeps it alive.
        "livenessProbe": {
            "grpc": grpc("liveness"),
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
    }


def serving_lifecycle(
    *,
    bridge_port: int = DEFAULT_BRIDGE_PORT,
    drain_seconds: int = DEFAULT_DRAIN_SECONDS,
    drain_token: str | None = None,
) -> dict[str, Any]:
    """The TF Serving container's `lifecycle`: a preStop that drains through the bridge.

    The port is a number: a named port in a lifecycle handler refers to the serving
    container's own ports, and this one belongs to the sidecar.
    """
    get: dict[str, Any] = {
        "path": f"/drain?seconds={drain_seconds}",
        "port": bridge_http_port(bridge_port),
        "scheme": "HTTP",
    }
    if drain_token:
        get["httpHeaders"] = [{"name": DRAIN_TOKEN_HEADER, "value": drain_token}]
    return {"preStop": {"httpGet": get}}


def termination_grace_seconds(drain_seconds: int) -> int:
    """The pod's grace period: the drain, then time for requests already admitted."""
    return max(0, drain_seconds) + GRACE_MARGIN_SECONDS
