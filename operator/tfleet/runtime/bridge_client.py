"""What a serving pod's health bridge knows: TF Serving's own error for a model that failed to
load, and why the pod's pre-flight failed.

Kubelet's probes only say NOT_SERVING; the bridge's `GET /status` carries TF Serving's
message ("Could not find SavedModel ...") and the pre-flight's ("pre-flight request 1 of 3
returned a wrong answer: ..."), which is what the person on call needs in the
InferenceService's status. The operator asks only pods that are not ready, only while it
waits for them, and the answer is best effort: no answer means no message, never a failure.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from tfleet.api.model import HEALTH_BRIDGE_HTTP_PORT
from tfleet.health import StatusFormatError, parse_bridge_status
from tfleet.health.traffic import FiguresFormatError, TrafficFigures, figures_from_json

TIMEOUT_SECONDS = 0.5
# A /traffic answer may wait for one read of TF Serving's metrics page.
TRAFFIC_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class BridgeReport:
    """Why a pod is not ready, in the bridge's words ("" when it has no such reason)."""

    load_error: str = ""  # TF Serving's load error for the pod's model version
    preflight_error: str = ""  # the last failed pre-flight run, until one passes


def fetch_served_version(pod_ip: str, port: int = HEALTH_BRIDGE_HTTP_PORT,
                         timeout: float = TIMEOUT_SECONDS) -> int | None:
    """The model version the pod serves, as its bridge last saw TF Serving report it (the newest
    AVAILABLE one when unpinned); None when it serves none or the bridge did not answer."""
    try:
        with urllib.request.urlopen(_url(pod_ip, port, "/status"), timeout=timeout) as response:
            health = parse_bridge_status(response.read().decode()).health
    except (urllib.error.URLError, TimeoutError, OSError, StatusFormatError, UnicodeDecodeError):
        return None
    found = health.expected()
    return found.version if found is not None and health.available else None


def _url(pod_ip: str, port: int, path: str) -> str:
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    return f"http://{host}:{port}{path}"


def fetch_report(pod_ip: str, port: int = HEALTH_BRIDGE_HTTP_PORT, timeout: float = TIMEOUT_SECONDS) -> BridgeReport | None:
    """The bridge's report; None when it did not answer."""
    try:
        with urllib.request.urlopen(_url(pod_ip, port, "/status"), timeout=timeout) as response:
            status = parse_bridge_status(response.read().decode())
    except (urllib.error.URLError, TimeoutError, OSError, StatusFormatError, UnicodeDecodeError):
        return None
    return BridgeReport(load_error=status.health.load_error,
                        preflight_error=status.preflight.error if status.preflight is not None else "")


def fetch_traffic(pod_ip: str, since: str, port: int = HEALTH_BRIDGE_HTTP_PORT,
                  timeout: float = TRAFFIC_TIMEOUT_SECONDS) -> TrafficFigures | None:
    """What the pod's TF Serving served since `since` (an RFC 3339 time), by its bridge's
    `/traffic`; None when the bridge did not answer, answered something else, or has not
    started counting (the pod has not been ready yet)."""
    url = _url(pod_ip, port, "/traffic?" + urllib.parse.urlencode({"since": since}))
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            figures, extra = figures_from_json(response.read().decode())
    except (urllib.error.URLError, TimeoutError, OSError, FiguresFormatError, UnicodeDecodeError):
        return None
    return figures if extra.get("counting") else None
