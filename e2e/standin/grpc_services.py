"""tensorflow.serving.PredictionService and tensorflow.serving.ModelService over gRPC.

Modelled on tensorflow_serving/model_servers/prediction_service_impl.cc (Predict records
request_latency {API="Predict", entrypoint="GRPC"} when it succeeds and request_count
always; the RunOptions timeout follows the call's deadline), model_service_impl.cc
(GetModelStatus; HandleReloadConfigRequest logs each config entry, reloads, reports the
increase of the requested metrics, and fails the call with the reload's status) and
grpc_status_util.cc (messages longer than 1024 characters are cut and marked
"...TRUNCATED"). Classify, Regress and MultiInference are not served by the stand-in: a
client gets gRPC's UNIMPLEMENTED for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
from tensorflow_serving.config import model_server_config_pb2

from e2e.standin import logs, protos
from e2e.standin.core import ServerCore
from e2e.standin.servable import WEDGE
from e2e.standin.status import Status, StatusError

_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}
ERROR_MESSAGE_LIMIT = 1024


def grpc_message(status: Status) -> str:
    if len(status.message) > ERROR_MESSAGE_LIMIT:
        return status.message[:ERROR_MESSAGE_LIMIT] + "...TRUNCATED"
    return status.message


def _abort(context: grpc.ServicerContext, status: Status) -> Any:
    context.abort(_GRPC_CODES[status.number], grpc_message(status))


def _timeout_ms(context: grpc.ServicerContext) -> int:
    remaining = context.time_remaining()
    if remaining is None or remaining > 2**31 / 1000:
        return 0
    return max(int(remaining * 1000), 1)


class Services:
    def __init__(self, core: ServerCore) -> None:
        self.core = core

    def predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        WEDGE.hold()
        started = time.monotonic()
        name = request.model_spec.name
        try:
            response = self.core.predict(request, _timeout_ms(context))
        except StatusError as e:
            self.core.record_request(name, e.status)
            return _abort(context, e.status)
        self.core.record_latency(name, "Predict", "GRPC", (time.monotonic() - started) * 1e6)
        self.core.record_request(name, Status())
        return response

    def get_model_metadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        WEDGE.hold()
        try:
            return self.core.get_model_metadata(request)
        except StatusError as e:
            return _abort(context, e.status)

    def get_model_status(self, request: Any, context: grpc.ServicerContext) -> Any:
        WEDGE.hold()
        try:
            return self.core.get_model_status(request)
        except StatusError as e:
            return _abort(context, e.status)

    def _metric_values(self, names: list[str]) -> dict[str, int]:
        """ModelServiceImpl::GetMetrics: the first point's int64 value of each metric."""
        return {name: self.core.registry.first_value(name) for name in names}

    def handle_reload_config_request(self, request: Any, context: grpc.ServicerContext) -> Any:
        WEDGE.hold()
        before = self._metric_values(list(request.metric_names))
        status = Status()
        if request.config.WhichOneof("config") == "model_config_list":
            config = model_server_config_pb2.ModelServerConfig.FromString(request.config.SerializeToString())
            for index, model in enumerate(config.model_config_list.config):
                logs.info(
                    f"{logs.MODEL_SERVICE}:57",
                    f"\nConfig entry\n\tindex : {index}\n\tpath : {model.base_path}\n\tname : {model.name}"
                    f"\n\tplatform : {model.model_platform}",
                )
            try:
                self.core.reload_config(config)
            except StatusError as e:
                status = e.status
        else:
            status = Status(
                "INVALID_ARGUMENT",
                "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is "
                "currently supported",
            )
        if not status.ok:
            logs.error(f"{logs.MODEL_SERVICE}:73", f"ReloadConfig failed: {status.message}")
        after = self._metric_values(list(request.metric_names))
        response = protos.ReloadConfigResponse()
        for name, value in after.items():
            response.metric.add(name=name, int64_value_increase=value - before.get(name, 0))
        response.status.error_code = status.number
        if not status.ok:
            response.status.error_message = status.message
            return _abort(context, status)
        return response


def _unary(fn: Callable[[Any, grpc.ServicerContext], Any], request_type: Any, response_type: Any) -> Any:
    return grpc.unary_unary_rpc_method_handler(
        fn, request_deserializer=request_type.FromString, response_serializer=response_type.SerializeToString
    )


def handlers(core: ServerCore) -> list[grpc.GenericRpcHandler]:
    services = Services(core)
    prediction = grpc.method_handlers_generic_handler(
        protos.PREDICTION_SERVICE,
        {
            "Predict": _unary(services.predict, protos.PredictRequest, protos.PredictResponse),
            "GetModelMetadata": _unary(
                services.get_model_metadata, protos.GetModelMetadataRequest, protos.GetModelMetadataResponse
            ),
        },
    )
    model = grpc.method_handlers_generic_handler(
        protos.MODEL_SERVICE,
        {
            "GetModelStatus": _unary(
                services.get_model_status, protos.GetModelStatusRequest, protos.GetModelStatusResponse
            ),
            "HandleReloadConfigRequest": _unary(
                services.handle_reload_config_request, protos.ReloadConfigRequest, protos.ReloadConfigResponse
            ),
        },
    )
    return [model, prediction]
