"""What TF Serving said about a model, and what each health service answers because of it.

Everything here is a pure function of its inputs: the bridge, `tfleet probe` and the
operator (through `parse_status_json`) share one reading of TF Serving's model status.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tfleet.health import protos

# The service names kubelet's grpc probes ask for. "" is what a client asks when it names
# no service; it means the same as readiness.
READINESS = "readiness"
LIVENESS = "liveness"
STARTUP = "startup"
SERVICES: tuple[str, ...] = ("", READINESS, LIVENESS, STARTUP)

AVAILABLE = "AVAILABLE"
END = "END"


@dataclass(frozen=True)
class VersionStatus:
    """One entry of GetModelStatusResponse.model_version_status."""

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""

    @property
    def failed(self) -> bool:
        """A version that ended with an error: its load (or its run) failed."""
        return self.state == END and self.error_code != "OK"

    def describe(self) -> str:
        if self.error_code != "OK" or self.error_message:
            return f"{self.state} ({self.error_code}: {self.error_message})"
        return self.state


@dataclass(frozen=True)
class ModelHealth:
    """One observation of a model in TF Serving.

    `reachable` is whether TF Serving answered GetModelStatus at all (even with an error
    such as NOT_FOUND); `error` says why there is no usable list of versions.
    """

    model: str
    expected_version: int | None = None
    reachable: bool = False
    error: str = ""
    versions: tuple[VersionStatus, ...] = ()
    # TF Serving refused the connection (UNAVAILABLE): its process is down or (re)starting, as
    # it opens its ports only after loading. Not a server that was only slow to answer.
    refused: bool = field(default=False, compare=False)

    def expected(self) -> VersionStatus | None:
        """The version the pod must serve: the pinned one, or the newest AVAILABLE one."""
        if self.expected_version is not None:
            return next((v for v in self.versions if v.version == self.expected_version), None)
        available = [v for v in self.versions if v.state == AVAILABLE]
        return max(available, key=lambda v: v.version) if available else None

    @property
    def available(self) -> bool:
        found = self.expected()
        return found is not None and found.state == AVAILABLE

    @property
    def load_error(self) -> str:
        """TF Serving's error text for the expected version (or, unpinned, the newest failure)."""
        if self.expected_version is not None:
            found = self.expected()
            return found.error_message if found is not None and found.failed else ""
        failed = [v for v in self.versions if v.failed]
        return max(failed, key=lambda v: v.version).error_message if failed else ""

    def message(self) -> str:
        """One sentence for logs and conditions: why the model is or is not available."""
        what = f"model {self.model}"
        if self.expected_version is not None:
            what = f"version {self.expected_version} of model {self.model}"
        if self.error:
            return self.error
        if not self.versions:
            return f"TF Serving reported no versions of model {self.model}"
        found = self.expected()
        if found is None:
            if self.expected_version is None:
                return f"No version of model {self.model} is AVAILABLE ({self._listing()})"
            return f"TF Serving has not loaded {what} ({self._listing()})"
        if found.failed:
            return f"{_upper_first(what)} failed: {found.error_message}"
        if found.state == AVAILABLE and self.expected_version is None:
            return f"Version {found.version} of model {self.model} is AVAILABLE"
        return f"{_upper_first(what)} is {found.state}"

    def _listing(self) -> str:
        return ", ".join(f"{v.version} {v.describe()}" for v in self.versions)


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def health_from_response(model: str, expected_version: int | None, response: Any) -> ModelHealth:
    """Reads a GetModelStatusResponse (the message from `protos`)."""
    versions = tuple(
        VersionStatus(
            version=int(mvs.version),
            state=protos.STATE_NAMES.get(mvs.state, f"UNKNOWN({mvs.state})"),
            error_code=protos.ERROR_CODE_NAMES.get(
                mvs.status.error_code, f"CODE({mvs.status.error_code})"
            ),
            error_message=mvs.status.error_message,
        )
        for mvs in response.model_version_status
    )
    return ModelHealth(
        model=model, expected_version=expected_version, reachable=True, versions=versions
    )


# gRPC status codes that mean nothing answered for TF Serving: the process is down,
# starting (TF Serving opens its port only after the first load), or hung.
UNREACHABLE_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})


def health_from_rpc_error(
    model: str,
    expected_version: int | None,
    *,
    target: str,
    code: str,
    details: str,
    timeout: float,
) -> ModelHealth:
    """Reads a failed GetModelStatus call; `code` is the gRPC status code's name."""
    if code == "DEADLINE_EXCEEDED":
        return ModelHealth(
            model=model,
            expected_version=expected_version,
            reachable=False,
            error=f"TF Serving at {target} did not answer within {timeout:g}s",
        )
    if code in UNREACHABLE_CODES:
        return ModelHealth(
            model=model,
            expected_version=expected_version,
            reachable=False,
            error=f"TF Serving at {target} is unreachable: {details or code}",
            refused=code == "UNAVAILABLE",
        )
    if code == "NOT_FOUND":
        error = f"TF Serving does not know model {model}: {details}"
    elif code == "INTERNAL" and "deserializ" in details.lower():
        error = f"TF Serving at {target} sent a malformed GetModelStatus answer: {details}"
    else:
        error = f"TF Serving at {target} answered GetModelStatus with {code}: {details}"
    return ModelHealth(model=model, expected_version=expected_version, reachable=True, error=error)


def next_started(started: bool, health: ModelHealth) -> bool:
    """The startup service's latch.

    It turns on the first time the model is available, and resets while TF Serving does
    not answer: TF Serving opens its gRPC port only after loading its models, so a silent
    server is one that (re)started, and its next start must pass the startup probe again
    rather than be judged by liveness while it loads. Kubelet runs the startup probe only
    until it first succeeds for each container start, so a reset during a passing blip
    has no effect on a running container.
    """
    if not health.reachable:
        return False
    return started or health.available


def verdicts(health: ModelHealth, *, started: bool, draining: bool, preflight_passed: bool = True) -> dict[str, bool]:
    """SERVING (True) or NOT_SERVING for every service name. Readiness also waits for the
    pre-flight (when the pod has one): its golden requests must have passed."""
    ready = health.available and preflight_passed and not draining
    return {
        "": ready,
        READINESS: ready,
        # A slow load must not get the pod killed: any answer at all is a live server.
        LIVENESS: health.reachable,
        STARTUP: started,
    }


# The pre-flight's states, as `/status` reports them.
PREFLIGHT_PENDING = "Pending"  # waiting for the version to be AVAILABLE
PREFLIGHT_RUNNING = "Running"
PREFLIGHT_PASSED = "Passed"
PREFLIGHT_FAILED = "Failed"
PREFLIGHT_STATES = (PREFLIGHT_PENDING, PREFLIGHT_RUNNING, PREFLIGHT_PASSED, PREFLIGHT_FAILED)


@dataclass(frozen=True)
class PreflightStatus:
    """Where the pod's pre-flight stands. `error` is the last failed run's reason: it stays
    while the pre-flight is tried again, until a run passes, so the operator can read why."""

    state: str = PREFLIGHT_PENDING
    message: str = ""  # what it does, or how the last run ended
    error: str = ""
    version: int | None = None  # the model version it ran against
    attempts: int = 0  # runs so far
    seconds: float = 0.0  # how long the last run took
    transports: tuple[str, ...] = ()  # gRPC or REST, per request the last run sent

    @property
    def passed(self) -> bool:
        return self.state == PREFLIGHT_PASSED


@dataclass(frozen=True)
class BridgeStatus:
    """What the bridge's `GET /status` returns: the observation plus the bridge's own state."""

    health: ModelHealth
    started: bool = False
    draining: bool = False
    services: Mapping[str, bool] = field(default_factory=dict)
    # None: the pod has no pre-flight.
    preflight: PreflightStatus | None = None


def health_to_dict(health: ModelHealth) -> dict[str, Any]:
    return {
        "model": health.model,
        "expectedVersion": health.expected_version,
        "reachable": health.reachable,
        "available": health.available,
        "error": health.error,
        "message": health.message(),
        "loadError": health.load_error,
        "versions": [
            {
                "version": v.version,
                "state": v.state,
                "errorCode": v.error_code,
                "errorMessage": v.error_message,
            }
            for v in health.versions
        ],
    }


def render_status_json(status: BridgeStatus) -> str:
    doc = health_to_dict(status.health)
    doc["started"] = status.started
    doc["draining"] = status.draining
    doc["services"] = {
        name: "SERVING" if ok else "NOT_SERVING" for name, ok in status.services.items()
    }
    if status.preflight is not None:
        p = status.preflight
        doc["preflight"] = {
            "state": p.state,
            "message": p.message,
            "error": p.error,
            "version": p.version,
            "attempts": p.attempts,
            "seconds": round(p.seconds, 3),
            "transports": list(p.transports),
        }
    return json.dumps(doc, sort_keys=True)


class StatusFormatError(ValueError):
    """The text is not a status document from the bridge."""


def parse_bridge_status(text: str) -> BridgeStatus:
    """Parses the bridge's `GET /status` body; raises StatusFormatError on anything else."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StatusFormatError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise StatusFormatError("not a JSON object")
    try:
        expected = doc.get("expectedVersion")
        versions = tuple(
            VersionStatus(
                version=_int(v["version"], "versions[].version"),
                state=_str(v["state"], "versions[].state"),
                error_code=_str(v.get("errorCode", "OK"), "versions[].errorCode"),
                error_message=_str(v.get("errorMessage", ""), "versions[].errorMessage"),
            )
            for v in doc.get("versions", [])
        )
        health = ModelHealth(
            model=_str(doc["model"], "model"),
            expected_version=None if expected is None else _int(expected, "expectedVersion"),
            reachable=_bool(doc.get("reachable", False), "reachable"),
            error=_str(doc.get("error", ""), "error"),
            versions=versions,
        )
        services = {
            _str(name, "services"): value == "SERVING"
            for name, value in dict(doc.get("services", {})).items()
        }
        return BridgeStatus(
            health=health,
            started=_bool(doc.get("started", False), "started"),
            draining=_bool(doc.get("draining", False), "draining"),
            services=services,
            preflight=_preflight(doc.get("preflight")),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise StatusFormatError(f"missing or malformed field: {exc}") from exc


def _preflight(doc: Any) -> PreflightStatus | None:
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise StatusFormatError(f"preflight must be an object, not {doc!r}")
    state = _str(doc.get("state", PREFLIGHT_PENDING), "preflight.state")
    if state not in PREFLIGHT_STATES:
        raise StatusFormatError(f"preflight.state must be one of {', '.join(PREFLIGHT_STATES)}, not {state!r}")
    version = doc.get("version")
    seconds = doc.get("seconds", 0.0)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise StatusFormatError(f"preflight.seconds must be a number, not {seconds!r}")
    return PreflightStatus(
        state=state,
        message=_str(doc.get("message", ""), "preflight.message"),
        error=_str(doc.get("error", ""), "preflight.error"),
        version=None if version is None else _int(version, "preflight.version"),
        attempts=_int(doc.get("attempts", 0), "preflight.attempts"),
        seconds=float(seconds),
        transports=tuple(_str(t, "preflight.transports[]") for t in doc.get("transports") or []),
    )


def parse_status_json(text: str) -> ModelHealth:
    """The model health in a bridge's `GET /status` body (for the operator's conditions)."""
    return parse_bridge_status(text).health


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise StatusFormatError(f"{name} must be an integer, not {value!r}")
    return value


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise StatusFormatError(f"{name} must be a string, not {value!r}")
    return value


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise StatusFormatError(f"{name} must be a boolean, not {value!r}")
    return value
