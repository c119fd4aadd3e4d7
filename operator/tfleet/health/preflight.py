"""The pre-flight: golden requests sent to the pod's own TF Serving before the pod takes traffic.

The health bridge runs it once the version it pins is AVAILABLE, and reports SERVING to the
readiness probe only after every request succeeded and, where the request says what it must
return, the answer matched within the tolerance. The same requests warm the version up:
TensorFlow initialises parts of its runtime lazily, on the first run of each signature
(`tensorflow_serving/g3doc/saved_model_warmup.md`), so the first real request no longer pays
for that.

Requests go over gRPC (`PredictionService/Predict`, asking `GetModelMetadata` first for the
signature's input types, as `tfleet predict` does), with the version pinned in the
ModelSpec: gRPC is the interface TF Serving serves its models on natively, and it needs no
REST port. A request that cannot be encoded as tensors here (an input type tfleet does not
encode, a form it does not read), or a model whose metadata cannot be asked, is sent to the
REST API instead (`POST /v1/models/<m>/versions/<v>:predict`), which takes the body as it
is: TF Serving itself then judges the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from tfleet.health import golden, tensors
from tfleet.health import predict_protos as protos

log = logging.getLogger("tfleet.health")

GRPC, REST = "gRPC", "REST"
DEFAULT_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class PreflightConfig:
    """What the bridge's pre-flight flags say."""

    requests_file: str
    tolerance: float = golden.DEFAULT_TOLERANCE
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    # TF Serving's REST port on localhost, for requests gRPC cannot carry; 0: no REST.
    rest_port: int = 0


@dataclass(frozen=True)
class PreflightResult:
    passed: bool
    message: str
    requests: int = 0  # how many were sent
    seconds: float = 0.0
    transports: tuple[str, ...] = ()  # GRPC or REST, per request sent, in order


class _Failed(Exception):
    """One request failed: the message says which, and why."""


def _where(request: golden.GoldenRequest, total: int) -> str:
    return f"request {request.index + 1} of {total}"


class PreflightRunner:
    """Runs the golden requests against one TF Serving (the pod's own)."""

    def __init__(self, target: str, model: str, config: PreflightConfig) -> None:
        self.target = target
        self.model = model
        self.config = config

    def load_requests(self) -> tuple[golden.GoldenRequest, ...]:
        try:
            with open(self.config.requests_file, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise golden.GoldenError(f"cannot read {self.config.requests_file}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise golden.GoldenError(f"{self.config.requests_file} is not UTF-8 text: {exc}") from None
        return golden.parse_requests(text)

    async def run(self, version: int) -> PreflightResult:
        """Every request, in order, within the timeout; the first failure ends the run."""
        started = time.monotonic()
        try:
            requests = self.load_requests()
        except golden.GoldenError as exc:
            return PreflightResult(False, f"the golden requests cannot be used: {exc}")
        deadline = started + self.config.timeout
        transports: list[str] = []
        channel = grpc.aio.insecure_channel(self.target)
        try:
            signatures = await self._signatures(channel, version, deadline)
            for request in requests:
                answer = await self._send(channel, request, version, signatures, deadline, len(requests), transports)
                problem = golden.mismatch(request, answer, self.config.tolerance)
                if problem:
                    raise _Failed(f"{_where(request, len(requests))} returned a wrong answer: {problem}")
        except _Failed as exc:
            return PreflightResult(False, str(exc), len(transports), time.monotonic() - started, tuple(transports))
        finally:
            await channel.close()
        seconds = time.monotonic() - started
        via = " and ".join(sorted(set(transports)))
        return PreflightResult(True, f"{len(requests)} pre-flight requests passed in {seconds:.2f}s (over {via})",
                               len(requests), seconds, tuple(transports))

    def _remaining(self, deadline: float, request: golden.GoldenRequest | None = None, total: int = 0) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            what = f" at {_where(request, total)}" if request is not None else ""
            raise _Failed(f"the pre-flight did not finish within {self.config.timeout:g}s{what}")
        return left

    async def _signatures(self, channel: grpc.aio.Channel, version: int, deadline: float) -> Any | None:
        """The version's SignatureDefMap, or None when it cannot be asked (then REST is used)."""
        call = channel.unary_unary(protos.GET_MODEL_METADATA_METHOD,
                                   request_serializer=protos.GetModelMetadataRequest.SerializeToString,
                                   response_deserializer=protos.GetModelMetadataResponse.FromString)
        request = protos.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = self.model
        request.model_spec.version.value = version
        try:
            response = await call(request, timeout=self._remaining(deadline))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise _Failed(f"the pre-flight did not finish within {self.config.timeout:g}s: "
                              "GetModelMetadata did not answer") from None
            log.warning("GetModelMetadata of model %s failed (%s: %s): the pre-flight uses TF Serving's REST API",
                        self.model, exc.code().name, exc.details())
            return None
        signatures = protos.SignatureDefMap()
        if "signature_def" not in response.metadata or not response.metadata["signature_def"].Unpack(signatures):
            return None
        return signatures

    async def _send(self, channel: grpc.aio.Channel, request: golden.GoldenRequest, version: int,
                    signatures: Any | None, deadline: float, total: int, transports: list[str]) -> dict[str, Any]:
        """The answer to one request, as TF Serving's REST API words it; records the transport."""
        reason = "GetModelMetadata gave no signatures"
        if signatures is not None:
            if request.signature not in signatures.signature_def:
                known = ", ".join(sorted(signatures.signature_def)) or "none"
                raise _Failed(f'{_where(request, total)} names signature "{request.signature}", which version '
                              f"{version} of model {self.model} does not have (signatures: {known})")
            try:
                form, inputs = tensors.request_tensors(
                    request.body, tensors.signature_inputs(signatures.signature_def[request.signature]))
            except tensors.RequestError as exc:
                reason = str(exc)
            else:
                transports.append(GRPC)
                return await self._predict_grpc(channel, request, version, form, inputs, deadline, total)
        if not self.config.rest_port:
            raise _Failed(f"{_where(request, total)} cannot be sent over gRPC ({reason}) and no REST port is known")
        log.info("Sending pre-flight request %d of model %s over REST: %s", request.index + 1, self.model, reason)
        transports.append(REST)
        return await asyncio.to_thread(self._predict_rest, request, version, deadline, total)

    async def _predict_grpc(self, channel: grpc.aio.Channel, request: golden.GoldenRequest, version: int,
                            form: str, inputs: dict[str, Any], deadline: float, total: int) -> dict[str, Any]:
        call = channel.unary_unary(protos.PREDICT_METHOD, request_serializer=protos.PredictRequest.SerializeToString,
                                   response_deserializer=protos.PredictResponse.FromString)
        message = protos.PredictRequest()
        message.model_spec.name = self.model
        message.model_spec.version.value = version
        message.model_spec.signature_name = request.signature
        for alias, tensor in inputs.items():
            message.inputs[alias].CopyFrom(tensor)
        try:
            response = await call(message, timeout=self._remaining(deadline, request, total))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise _Failed(f"the pre-flight did not finish within {self.config.timeout:g}s: "
                              f"{_where(request, total)} had no answer") from None
            raise _Failed(f"{_where(request, total)} failed: {exc.code().name}: {exc.details()}") from None
        try:
            return tensors.response_json(dict(response.outputs), form)
        except ValueError as exc:
            raise _Failed(f"{_where(request, total)} gave an answer that cannot be read: {exc}") from None

    def _predict_rest(self, request: golden.GoldenRequest, version: int, deadline: float, total: int) -> dict[str, Any]:
        url = f"http://localhost:{self.config.rest_port}/v1/models/{self.model}/versions/{version}:predict"
        post = urllib.request.Request(url, data=json.dumps(request.body).encode(), method="POST",
                                      headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(post, timeout=self._remaining(deadline, request, total)) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace").strip()
            with contextlib.suppress(ValueError, AttributeError):
                detail = str(json.loads(detail).get("error") or detail)
            raise _Failed(f"{_where(request, total)} failed: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Failed(f"{_where(request, total)} failed: TF Serving's REST API at {url} did not answer: "
                          f"{reason}") from None
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise _Failed(f"{_where(request, total)} gave an answer that is not a JSON object: {text[:200]}")
        return answer
