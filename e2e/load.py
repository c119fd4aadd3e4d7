"""A live Predict load, sent the way TF Serving's own client examples send it.

`PredictLoad` opens one gRPC channel to a target (a Service's `<name>:8500`, or a `dns:///`
target for client-side balancing) and calls `tensorflow.serving.PredictionService/Predict`
on it at a fixed rate, open-loop: a request goes out every `interval` seconds whether or not
the ones before it have answered, so a stalled server shows up as failed or slow requests,
not as a slower load. Every answer is checked against the model's function, per version:
a request "succeeds" only when the status is OK and the output is right.

The stub is the one `tensorflow_serving.apis.prediction_service_pb2_grpc` generates (a unary
call on the method path with the request's and response's wire format), built on the
TF-free descriptors of `e2e.standin.protos`, since the official modules import TensorFlow.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from e2e.standin import protos

PREDICT_METHOD = f"/{protos.PREDICTION_SERVICE}/Predict"


@dataclass(frozen=True)
class Outcome:
    sent: float  # time.monotonic() when the request left
    latency: float  # seconds until the answer (or the failure)
    ok: bool
    version: int | None = None  # the model version that answered (PredictResponse.model_spec)
    error: str = ""  # "UNAVAILABLE: ..." or "wrong output ..."


@dataclass(frozen=True)
class Linear:
    """y = a·x + b, the function a stand-in model version computes."""

    a: float
    b: float

    def __call__(self, x: float) -> float:
        return self.a * x + self.b


def predict_request(model: str, x: Sequence[float], signature: str = "serving_default", input_name: str = "x") -> Any:
    request = protos.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    tensor = request.inputs[input_name]
    tensor.dtype = protos.DT_FLOAT
    tensor.tensor_shape.dim.add(size=len(x))
    tensor.float_val.extend(x)
    return request


def predict_stub(channel: grpc.Channel) -> Any:
    return channel.unary_unary(PREDICT_METHOD, request_serializer=lambda m: m.SerializeToString(),
                               response_deserializer=protos.PredictResponse.FromString)


def check_answer(response: Any, x: Sequence[float], functions: dict[int, Linear], output: str = "y") -> str:
    """"" when the answer is right for the version that gave it, else what is wrong."""
    version = response.model_spec.version.value if response.model_spec.HasField("version") else None
    if version not in functions:
        return f"wrong output: version {version} answered, expected one of {sorted(functions)}"
    values = list(response.outputs[output].float_val)
    want = [functions[version](v) for v in x]
    if len(values) != len(want) or any(not math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6) for a, b in zip(values, want, strict=False)):
        return f"wrong output from version {version}: {values} for {list(x)}, expected {want}"
    return ""


class PredictLoad:
    """Predict calls at a fixed rate on one channel; thread-safe to read while it runs."""

    def __init__(self, target: str, model: str, functions: dict[int, Linear], *, interval: float = 0.02,
                 timeout: float = 5.0, options: Iterable[tuple[str, Any]] = (), x: Sequence[float] = (1.0, 2.0, 5.0)):
        self.target, self.model, self.functions = target, model, functions
        self.interval, self.timeout, self.x = interval, timeout, tuple(x)
        # A subchannel pool of its own: gRPC shares one connection among the channels of a
        # process that have the same target and options, and each load stands for a client.
        self.channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1), *options])
        self._stub = predict_stub(self.channel)
        self._request = predict_request(model, self.x)
        self._lock = threading.Lock()
        self._outcomes: list[Outcome] = []
        self._pending = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="predict-load", daemon=True)

    def __enter__(self) -> PredictLoad:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self, drain_seconds: float | None = None) -> None:
        """Stop sending; wait for the answers still due (up to the call timeout)."""
        self._stop.set()
        self._thread.join()
        deadline = time.monotonic() + (self.timeout + 1 if drain_seconds is None else drain_seconds)
        while time.monotonic() < deadline:
            with self._lock:
                if self._pending == 0:
                    break
            time.sleep(0.01)
        self.channel.close()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self._send()
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_at = time.monotonic()  # fell behind: keep the rate, do not burst

    def _send(self) -> None:
        sent = time.monotonic()
        with self._lock:
            self._pending += 1
        future = self._stub.future(self._request, timeout=self.timeout)

        def done(f: grpc.Future) -> None:
            latency = time.monotonic() - sent
            try:
                response = f.result()
            except grpc.RpcError as exc:
                outcome = Outcome(sent, latency, False, error=f"{exc.code().name}: {exc.details()}")
            else:
                problem = check_answer(response, self.x, self.functions)
                version = response.model_spec.version.value if response.model_spec.HasField("version") else None
                outcome = Outcome(sent, latency, not problem, version, problem)
            with self._lock:
                self._outcomes.append(outcome)
                self._pending -= 1

        future.add_done_callback(done)

    def outcomes(self, since: float = 0.0, until: float = math.inf) -> list[Outcome]:
        with self._lock:
            return [o for o in self._outcomes if since <= o.sent < until]

    def failures(self, since: float = 0.0, until: float = math.inf) -> list[Outcome]:
        return [o for o in self.outcomes(since, until) if not o.ok]

    def by_version(self, since: float = 0.0, until: float = math.inf) -> Counter[int | None]:
        return Counter(o.version for o in self.outcomes(since, until) if o.ok)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]
