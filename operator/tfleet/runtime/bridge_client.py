"""What a serving pod's health bridge knows: TF Serving's own error for a model that failed to load.

Kubelet's probes only say NOT_SERVING; the bridge's `GET /status` carries TF Serving's
message ("Could not find SavedModel ..."), which is what the person on call needs in the
InferenceService's status. The operator asks only pods that are not ready, only while it
waits for them, and the answer is best effort: no answer means no message, never a failure.
"""

from __future__ import annotations

import urllib.error
import urllib.request

from tfleet.api.model import HEALTH_BRIDGE_HTTP_PORT
from tfleet.health import StatusFormatError, parse_status_json

TIMEOUT_SECONDS = 0.5


def fetch_served_version(pod_ip: str, port: int = HEALTH_BRIDGE_HTTP_PORT,
                         timeout: float = TIMEOUT_SECONDS) -> int | None:
    """The model version the pod serves, as its bridge last saw TF Serving report it (the newest
    AVAILABLE one when unpinned); None when it serves none or the bridge did not answer."""
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/status", timeout=timeout) as response:
            health = parse_status_json(response.read().decode())
    except (urllib.error.URLError, TimeoutError, OSError, StatusFormatError, UnicodeDecodeError):
        return None
    found = health.expected()
    return found.version if found is not None and health.available else None


def fetch_load_error(pod_ip: str, port: int = HEALTH_BRIDGE_HTTP_PORT, timeout: float = TIMEOUT_SECONDS) -> str | None:
    """TF Serving's load error for the pod's model version; "" when there is none; None when
    the bridge did not answer."""
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/status", timeout=timeout) as response:
            return parse_status_json(response.read().decode()).load_error
    except (urllib.error.URLError, TimeoutError, OSError, StatusFormatError, UnicodeDecodeError):
        return None
