"""The probe seam of the serving pod: probes, lifecycle and sidecar containers.

Everything the Deployment builder knows about pod health comes from here, so the health
model can change without touching the builder.
"""

from __future__ import annotations

from typing import Any

from tfleet.api import InferenceService


def serving_probes(isvc: InferenceService) -> dict[str, Any]:
    """startupProbe, readinessProbe and livenessProbe of the TF Serving container."""
    def tcp(period: int, failures: int) -> dict[str, Any]:
        return {"tcpSocket": {"port": "grpc"}, "periodSeconds": period, "failureThreshold": failures}

    return {
        # A large model can take minutes to load: up to 10 minutes before liveness applies.
        "startupProbe": tcp(5, 120),
        "readinessProbe": tcp(5, 2),
        "livenessProbe": tcp(10, 3),
    }


def serving_lifecycle(isvc: InferenceService) -> dict[str, Any]:
    """TF Serving ignores SIGTERM: keep serving while the endpoints drop the pod."""
    return {"preStop": {"sleep": {"seconds": isvc.spec.pod.drain_seconds}}}


def sidecars(isvc: InferenceService) -> list[dict[str, Any]]:
    """Native sidecar containers (init containers with restartPolicy Always)."""
    return []
