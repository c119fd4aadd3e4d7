"""Asking TF Serving for a model's status over gRPC, with a deadline, without TensorFlow."""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from tfleet.health import protos
from tfleet.health.verdicts import ModelHealth, health_from_response, health_from_rpc_error


class MalformedAnswer:
    """Bytes that do not parse as a GetModelStatusResponse.

    The deserializer returns this instead of raising, because gRPC's sync and asyncio
    clients report a raising deserializer differently (INTERNAL, or a bare None).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason


def decode_response(data: bytes) -> Any:
    try:
        return protos.GetModelStatusResponse.FromString(data)
    except DecodeError as exc:
        return MalformedAnswer(str(exc))


def read_answer(target: str, model: str, version: int | None, response: Any) -> ModelHealth:
    if isinstance(response, MalformedAnswer) or response is None:
        reason = response.reason if isinstance(response, MalformedAnswer) else "no message"
        return ModelHealth(
            model=model,
            expected_version=version,
            reachable=True,
            error=f"TF Serving at {target} sent a malformed GetModelStatus answer: {reason}",
        )
    return health_from_response(model, version, response)


def status_request(model: str) -> Any:
    """A GetModelStatusRequest for every version of the model.

    The request never names a version, even when one is pinned: the full list shows what
    else TF Serving holds (and why the pinned one is missing) in logs and `/status`.
    """
    request = protos.GetModelStatusRequest()
    request.model_spec.name = model
    return request


def channel_options(reconnect_ms: int) -> list[tuple[str, int]]:
    """Channel options for polling a local server that may restart.

    gRPC's default reconnect backoff grows to two minutes; a restarted TF Serving would go
    unnoticed that long, so the backoff is capped near the poll interval.
    """
    reconnect_ms = max(100, reconnect_ms)
    return [
        ("grpc.initial_reconnect_backoff_ms", min(reconnect_ms, 200)),
        ("grpc.min_reconnect_backoff_ms", min(reconnect_ms, 200)),
        ("grpc.max_reconnect_backoff_ms", reconnect_ms),
    ]


class AsyncModelStatusClient:
    """Polls GetModelStatus on one long-lived channel (the bridge's side)."""

    def __init__(
        self,
        target: str,
        model: str,
        version: int | None,
        *,
        timeout: float,
        reconnect_ms: int = 1000,
    ) -> None:
        self.target = target
        self.model = model
        self.version = version
        self.timeout = timeout
        self._channel = grpc.aio.insecure_channel(target, options=channel_options(reconnect_ms))
        self._call = self._channel.unary_unary(
            protos.GET_MODEL_STATUS_METHOD,
            request_serializer=protos.GetModelStatusRequest.SerializeToString,
            response_deserializer=decode_response,
        )
        self._request = status_request(model)

    async def fetch(self) -> ModelHealth:
        try:
            response = await self._call(self._request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            return health_from_rpc_error(
                self.model,
                self.version,
                target=self.target,
                code=exc.code().name,
                details=exc.details() or "",
                timeout=self.timeout,
            )
        return read_answer(self.target, self.model, self.version, response)

    async def close(self) -> None:
        await self._channel.close()


def fetch_once(target: str, model: str, version: int | None, *, timeout: float) -> ModelHealth:
    """One GetModelStatus call on a fresh channel (for `tfleet probe`)."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            protos.GET_MODEL_STATUS_METHOD,
            request_serializer=protos.GetModelStatusRequest.SerializeToString,
            response_deserializer=decode_response,
        )
        try:
            response = call(status_request(model), timeout=timeout)
        except grpc.RpcError as exc:
            return health_from_rpc_error(
                model,
                version,
                target=target,
                code=exc.code().name,
                details=exc.details() or "",
                timeout=timeout,
            )
    return read_answer(target, model, version, response)
