"""The probe seam of the serving pod: probes, lifecycle and sidecar containers.

Everything the Deployment builder knows about pod health comes from here. Every serving pod
runs the health bridge (`tfleet health-bridge`, from the operator's own image) as a native
sidecar; kubelet's gRPC probes ask it, and it asks TF Serving for the model's status, so a
pod is ready only when its exact model version is AVAILABLE.
"""

from __future__ import annotations

import os
from typing import Any

from tfleet import __version__
from tfleet.api.model import HEALTH_BRIDGE_GRPC_PORT, InferenceService
from tfleet.health import podspec

# The operator passes its own image down (the Helm chart sets TFLEET_BRIDGE_IMAGE).
DEFAULT_BRIDGE_IMAGE = f"ghcr.io/tfleet/tfleet:{__version__}"


def bridge_image() -> str:
    return os.environ.get("TFLEET_BRIDGE_IMAGE") or DEFAULT_BRIDGE_IMAGE


def serving_probes(isvc: InferenceService) -> dict[str, Any]:
    """startupProbe, readinessProbe and livenessProbe of the TF Serving container."""
    return podspec.serving_probes(
        bridge_port=HEALTH_BRIDGE_GRPC_PORT,
        model_load_timeout_seconds=isvc.spec.server.model_load_timeout_seconds,
    )


def serving_lifecycle(isvc: InferenceService) -> dict[str, Any]:
    """TF Serving ignores SIGTERM: the preStop hook fails readiness, then waits the drain out."""
    return podspec.serving_lifecycle(bridge_port=HEALTH_BRIDGE_GRPC_PORT, drain_seconds=isvc.spec.pod.drain_seconds)


def sidecars(isvc: InferenceService, image: str | None = None) -> list[dict[str, Any]]:
    """Native sidecar containers (init containers with restartPolicy Always)."""
    return [
        podspec.bridge_container(
            image=image or bridge_image(),
            model_name=isvc.model_name,
            version=isvc.spec.model.version,
            grpc_port=isvc.spec.server.grpc_port,
            bridge_port=HEALTH_BRIDGE_GRPC_PORT,
            drain_seconds=isvc.spec.pod.drain_seconds,
        )
    ]
