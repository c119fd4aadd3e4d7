"""The probe seam of the serving pod: probes, lifecycle and sidecar containers.

Everything the Deployment builder knows about pod health comes from here. Every serving pod
runs the health bridge (`tfleet health-bridge`, from the operator's own image) as a native
sidecar; kubelet's gRPC probes ask it, and it asks TF Serving for the model's status, so a
pod is ready only when its exact model version is AVAILABLE.

The bridge's `/drain` takes a pod out of service, so each revision's pods carry a drain
token: the bridge refuses a drain without it, and the serving container's preStop hook
sends it. The token is derived from a key the operator keeps in a Secret
(`drain_token`), so the same operator, restarted, renders the same pods.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
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


def serving_lifecycle(isvc: InferenceService, drain_token: str | None = None) -> dict[str, Any]:
    """TF Serving ignores SIGTERM: the preStop hook fails readiness, then waits the drain out."""
    return podspec.serving_lifecycle(bridge_port=HEALTH_BRIDGE_GRPC_PORT, drain_seconds=isvc.spec.pod.drain_seconds,
                                     drain_token=drain_token)


def sidecars(isvc: InferenceService, image: str | None = None, drain_token: str | None = None) -> list[dict[str, Any]]:
    """Native sidecar containers (init containers with restartPolicy Always)."""
    return [
        podspec.bridge_container(
            image=image or bridge_image(),
            model_name=isvc.model_name,
            version=isvc.spec.model.version,
            grpc_port=isvc.spec.server.grpc_port,
            bridge_port=HEALTH_BRIDGE_GRPC_PORT,
            drain_seconds=isvc.spec.pod.drain_seconds,
            drain_token=drain_token,
        )
    ]


# ----------------------------------------------------------------------------- drain tokens

# The key tokens are derived from: the operator makes one of DRAIN_KEY_BYTES random bytes, and
# accepts no key shorter than MIN_DRAIN_KEY_BYTES (a short key could be guessed offline from
# one token, which every pod spec shows).
DRAIN_KEY_BYTES = 32
MIN_DRAIN_KEY_BYTES = 16
# 128 bits of HMAC-SHA256, in hex: a valid header value and environment value as it is.
DRAIN_TOKEN_HEX_CHARS = 32
# Tokens an existing Deployment may carry and keep (see `kept_drain_token`).
_TOKEN_FORMAT = re.compile(r"[0-9a-f]{16,64}")


def drain_key_problem(key: bytes) -> str | None:
    """Why `key` cannot be a drain key, or None."""
    if len(key) < MIN_DRAIN_KEY_BYTES:
        return f"a drain key needs at least {MIN_DRAIN_KEY_BYTES} bytes, this one has {len(key)}"
    return None


def drain_token(key: bytes, namespace: str, name: str, revision: str) -> str:
    """The drain token of one revision of one InferenceService: HMAC-SHA256 of
    "<namespace>/<name>/<revision>" under the key, truncated.

    Per revision, so a token read from one fleet's pods drains no other fleet, and a pure
    function of the key, so a restarted operator renders the same pods.
    """
    message = f"{namespace}/{name}/{revision}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:DRAIN_TOKEN_HEX_CHARS]


def kept_drain_token(deployment: dict[str, Any]) -> str | None:
    """The drain token an existing Deployment's health bridge holds: the token it is
    created with stays with a revision, whatever happens to the key later.

    "" when the bridge has no token (a Deployment made before tokens existed, or with
    tokens off); None when this is not a shape tfleet wrote (no bridge, or a token that is
    not one tfleet makes), so the caller derives the token again.
    """
    spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in spec.get("initContainers") or []:
        if not isinstance(container, dict) or container.get("name") != podspec.BRIDGE_CONTAINER_NAME:
            continue
        for env in container.get("env") or []:
            if isinstance(env, dict) and env.get("name") == podspec.DRAIN_TOKEN_ENV:
                value = env.get("value")
                return value if isinstance(value, str) and _TOKEN_FORMAT.fullmatch(value) else None
        return ""
    return None


def kept_bridge_image(deployment: dict[str, Any]) -> str | None:
    """The health bridge image an existing Deployment's pods run (None: it has no bridge).
    A revision keeps it: an operator upgrade brings its own image to new revisions only."""
    spec = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in spec.get("initContainers") or []:
        if isinstance(container, dict) and container.get("name") == podspec.BRIDGE_CONTAINER_NAME:
            image = container.get("image")
            return image if isinstance(image, str) and image else None
    return None
