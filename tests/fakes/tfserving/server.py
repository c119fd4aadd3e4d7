"""A fake TF Serving that speaks the real gRPC wire protocol.

It serves `tensorflow.serving.ModelService/GetModelStatus` and
`tensorflow.serving.PredictionService/Predict` for one model computing y = x/2 + 2, and is
driven by events, the same vocabulary in-process (`FakeTFServing.apply`), in a script file
and on the control endpoint:

- `{"version": 3, "state": "LOADING"}`: a version moves to a state (START, LOADING,
  AVAILABLE, UNLOADING, END); `"error": "..."` (with optional `"errorCode"`, default
  UNKNOWN) makes it a failed one, as TF Serving reports a failed load;
- `{"remove": 3}`: the version disappears from the status;
- `{"reset": true}`: no versions at all (TF Serving then answers NOT_FOUND);
- `{"hang": true}`: every call waits without answering until `{"hang": false}` or until
  the caller's deadline;
- `{"down": true}` / `{"down": false}`: the port is closed / opened again;
- `{"malformed": true}`: GetModelStatus answers bytes that do not parse.

Any event may carry `"at": seconds`, relative to the start of the script (or, on the
control endpoint, to the moment it arrives); `timeline()` runs such events in order.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc

from tests.fakes.tfserving import protos
from tfleet.health.protos import ERROR_CODES, MODEL_SERVICE, STATES

DEFAULT_MODEL = "half_plus_two"
MALFORMED = b"\xff\xff\xff\xff"
EVENT_KEYS = frozenset(
    {"at", "version", "state", "error", "errorCode", "remove", "reset", "hang", "down", "malformed"}
)


@dataclass(frozen=True)
class FakeVersion:
    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


class EventError(ValueError):
    """An event the fake does not understand."""


class FakeTFServing:
    """One fake model server on 127.0.0.1 (by default). Thread-safe control methods."""

    def __init__(
        self, model: str = DEFAULT_MODEL, *, port: int = 0, host: str = "127.0.0.1"
    ) -> None:
        self.model = model
        self.host = host
        self.port = port
        self.status_calls = 0
        self.predict_calls = 0
        self._versions: dict[int, FakeVersion] = {}
        self._hanging = False
        self._malformed = False
        self._down = True
        self._cond = threading.Condition()
        self._server: grpc.Server | None = None
        self._timelines: list[threading.Thread] = []
        self._closed = threading.Event()

    # ----- life cycle -------------------------------------------------------------------

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> FakeTFServing:
        self._closed.clear()
        self.up()
        return self

    def stop(self) -> None:
        self._closed.set()
        self.down()
        for t in self._timelines:
            t.join(timeout=5)

    def __enter__(self) -> FakeTFServing:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def up(self) -> None:
        """Opens the port (the same one again after `down`)."""
        with self._cond:
            if not self._down:
                return
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
            server.add_generic_rpc_handlers(self._handlers())
            self.port = server.add_insecure_port(f"{self.host}:{self.port}")
            server.start()
            self._server = server
            self._down = False

    def down(self) -> None:
        """Closes the port: callers see UNAVAILABLE, as with a crashed server."""
        with self._cond:
            server, self._server = self._server, None
            self._down = True
            self._cond.notify_all()
        if server is not None:
            server.stop(grace=None).wait()

    # ----- control ----------------------------------------------------------------------

    def set_version(
        self, version: int, state: str, *, error: str = "", error_code: str | None = None
    ) -> None:
        if state not in STATES:
            raise EventError(f"unknown state {state!r}; one of {sorted(STATES)}")
        code = error_code or ("UNKNOWN" if error else "OK")
        if code not in ERROR_CODES:
            raise EventError(f"unknown error code {code!r}")
        with self._cond:
            self._versions[version] = FakeVersion(version, state, code, error)

    def remove_version(self, version: int) -> None:
        with self._cond:
            self._versions.pop(version, None)

    def reset(self) -> None:
        with self._cond:
            self._versions.clear()

    def hang(self, on: bool = True) -> None:
        with self._cond:
            self._hanging = on
            self._cond.notify_all()

    def malformed(self, on: bool = True) -> None:
        with self._cond:
            self._malformed = on

    def versions(self) -> list[FakeVersion]:
        with self._cond:
            return sorted(self._versions.values(), key=lambda v: -v.version)

    def state(self) -> dict[str, Any]:
        with self._cond:
            return {
                "model": self.model,
                "port": self.port,
                "down": self._down,
                "hang": self._hanging,
                "malformed": self._malformed,
                "versions": [
                    {
                        "version": v.version,
                        "state": v.state,
                        "errorCode": v.error_code,
                        "errorMessage": v.error_message,
                    }
                    for v in sorted(self._versions.values(), key=lambda v: -v.version)
                ],
                "statusCalls": self.status_calls,
                "predictCalls": self.predict_calls,
            }

    def apply(self, event: Mapping[str, Any]) -> None:
        """Applies one event now (its `at` is ignored here; see `timeline`)."""
        check_event(event)
        if "state" in event:
            if "version" not in event:
                raise EventError("a state event needs a version")
            self.set_version(
                int(event["version"]),
                str(event["state"]),
                error=str(event.get("error", "")),
                error_code=event.get("errorCode"),
            )
        if "remove" in event:
            self.remove_version(int(event["remove"]))
        if event.get("reset"):
            self.reset()
        if "hang" in event:
            self.hang(bool(event["hang"]))
        if "malformed" in event:
            self.malformed(bool(event["malformed"]))
        if "down" in event:
            if event["down"]:
                self.down()
            else:
                self.up()

    def timeline(self, events: Iterable[Mapping[str, Any]]) -> threading.Thread:
        """Applies events at their `at` offsets (seconds from now) in a background thread."""
        ordered = sorted(events, key=lambda e: float(e.get("at", 0)))
        for e in ordered:  # reject a bad script before any of it runs
            check_event(e)
        begin = time.monotonic()

        def run() -> None:
            for e in ordered:
                delay = begin + float(e.get("at", 0)) - time.monotonic()
                if delay > 0 and self._closed.wait(delay):
                    return
                self.apply(e)

        thread = threading.Thread(target=run, name="fake-tfserving-timeline", daemon=True)
        thread.start()
        self._timelines.append(thread)
        return thread

    def load(self, version: int, *, seconds: float = 0.2, error: str = "") -> threading.Thread:
        """A version goes START, then LOADING, then AVAILABLE (or END with `error`)."""
        final: dict[str, Any] = {"at": seconds, "version": version, "state": "AVAILABLE"}
        if error:
            final = {"at": seconds, "version": version, "state": "END", "error": error}
        return self.timeline(
            [
                {"at": 0, "version": version, "state": "START"},
                {"at": seconds / 2, "version": version, "state": "LOADING"},
                final,
            ]
        )

    # ----- gRPC -------------------------------------------------------------------------

    def _handlers(self) -> list[grpc.GenericRpcHandler]:
        status = grpc.unary_unary_rpc_method_handler(
            self._get_model_status,
            request_deserializer=protos.GetModelStatusRequest.FromString,
            response_serializer=_serialize_status,
        )
        predict = grpc.unary_unary_rpc_method_handler(
            self._predict,
            request_deserializer=protos.PredictRequest.FromString,
            response_serializer=protos.PredictResponse.SerializeToString,
        )
        return [
            grpc.method_handlers_generic_handler(MODEL_SERVICE, {"GetModelStatus": status}),
            grpc.method_handlers_generic_handler(protos.PREDICTION_SERVICE, {"Predict": predict}),
        ]

    def _wait_while_hanging(self, context: grpc.ServicerContext) -> None:
        with self._cond:
            while self._hanging and not self._down and context.is_active():
                self._cond.wait(0.05)

    def _get_model_status(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._cond:
            self.status_calls += 1
        self._wait_while_hanging(context)
        if not context.is_active():
            return None
        if self._malformed:
            return MALFORMED
        if not request.HasField("model_spec"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
        spec = request.model_spec
        versions = self.versions() if spec.name == self.model else []
        if spec.HasField("version"):
            wanted = spec.version.value
            versions = [v for v in versions if v.version == wanted]
            if not versions:
                context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    f"Could not find version {wanted} of model {spec.name}",
                )
        elif not versions:
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}"
            )
        response = protos.GetModelStatusResponse()
        for v in versions:
            entry = response.model_version_status.add(version=v.version, state=STATES[v.state])
            entry.status.error_code = ERROR_CODES[v.error_code]
            entry.status.error_message = v.error_message
        return response

    def _predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._cond:
            self.predict_calls += 1
        self._wait_while_hanging(context)
        spec = request.model_spec
        available = [
            v for v in self.versions() if v.state == "AVAILABLE" and spec.name == self.model
        ]
        if spec.HasField("version"):
            available = [v for v in available if v.version == spec.version.value]
            wanted = f"Specific({spec.name}, {spec.version.value})"
        else:
            wanted = f"Latest({spec.name})"
        if not available:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {wanted}")
        if len(request.inputs) != 1:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Expected exactly one input, x")
        ((name, tensor),) = request.inputs.items()
        if tensor.dtype != protos.DT_FLOAT:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Expects arg[0] of {name} to be float but {tensor.dtype} is provided",
            )
        values = _float_values(tensor)
        response = protos.PredictResponse()
        response.model_spec.name = self.model
        response.model_spec.version.value = available[0].version
        response.model_spec.signature_name = spec.signature_name or "serving_default"
        out = response.outputs["y"]
        out.CopyFrom(protos.float_tensor([x / 2 + 2 for x in values]))
        out.tensor_shape.CopyFrom(tensor.tensor_shape)
        return response


def _serialize_status(response: Any) -> bytes:
    if isinstance(response, bytes):
        return response
    return bytes(response.SerializeToString())


def _float_values(tensor: Any) -> list[float]:
    if tensor.tensor_content:
        count = len(tensor.tensor_content) // 4
        return list(struct.unpack(f"<{count}f", tensor.tensor_content[: count * 4]))
    return list(tensor.float_val)


def check_event(event: Mapping[str, Any]) -> None:
    if not isinstance(event, Mapping):
        raise EventError(f"an event must be a mapping, not {event!r}")
    unknown = set(event) - EVENT_KEYS
    if unknown:
        raise EventError(f"unknown event keys {sorted(unknown)}")
    try:
        float(event.get("at", 0))
    except (TypeError, ValueError) as exc:
        raise EventError(f"bad 'at' in {dict(event)!r}") from exc
    if "state" in event:
        if "version" not in event:
            raise EventError("a state event needs a version")
        if event["state"] not in STATES:
            raise EventError(f"unknown state {event['state']!r}; one of {sorted(STATES)}")
        if event.get("errorCode", "OK") not in ERROR_CODES:
            raise EventError(f"unknown error code {event['errorCode']!r}")
