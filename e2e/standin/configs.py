"""The configuration files tensorflow_model_server reads, parsed as it parses them.

- `--model_config_file`: ModelServerConfig, with the official TF-free descriptor from
  tensorflow-serving-api (`tensorflow_serving.config.model_server_config_pb2`).
- `--batching_parameters_file`: BatchingParameters
  (tensorflow_serving/servables/tensorflow/session_bundle_config.proto), and
- `--monitoring_config_file`: MonitoringConfig (tensorflow_serving/config/monitoring_config.proto).
  Neither is shipped TF-free, so both are declared here with TF Serving's field numbers.

tensorflow_serving/util/proto_util.h ParseProtoTextFile reads the whole file (an I/O error
comes back as it is) and answers INVALID_ARGUMENT "Invalid protobuf file: '<file>'" when
TextFormat refuses it; protobuf itself logs the parse error on stderr first.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)
from tensorflow_serving.config import model_server_config_pb2, platform_config_pb2

from e2e.standin import logs, storage
from e2e.standin.status import Status, StatusError, invalid_argument

_FD = descriptor_pb2.FieldDescriptorProto


@cache
def _messages() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(
        name="e2e/standin/tfserving_config_files.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    batching = file.message_type.add(name="BatchingParameters")
    for name, number, type_name in (
        ("max_batch_size", 1, ".google.protobuf.Int64Value"),
        ("batch_timeout_micros", 2, ".google.protobuf.Int64Value"),
        ("max_enqueued_batches", 3, ".google.protobuf.Int64Value"),
        ("num_batch_threads", 4, ".google.protobuf.Int64Value"),
        ("thread_pool_name", 5, ".google.protobuf.StringValue"),
        ("enable_large_batch_splitting", 8, ".google.protobuf.BoolValue"),
        ("max_execution_batch_size", 9, ".google.protobuf.Int64Value"),
    ):
        batching.field.add(
            name=name, number=number, type=_FD.TYPE_MESSAGE, type_name=type_name,
            label=_FD.LABEL_OPTIONAL,
        )
    batching.field.add(
        name="allowed_batch_sizes", number=6, type=_FD.TYPE_INT64, label=_FD.LABEL_REPEATED
    )
    batching.field.add(
        name="pad_variable_length_inputs", number=7, type=_FD.TYPE_BOOL, label=_FD.LABEL_OPTIONAL
    )

    prometheus = file.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=_FD.TYPE_BOOL, label=_FD.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=_FD.TYPE_STRING, label=_FD.LABEL_OPTIONAL)
    monitoring = file.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config", number=1, type=_FD.TYPE_MESSAGE,
        type_name=".tensorflow.serving.PrometheusConfig", label=_FD.LABEL_OPTIONAL,
    )

    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"tensorflow.serving.{name}")
        )
        for name in ("BatchingParameters", "MonitoringConfig")
    }


def batching_parameters_class() -> Any:
    return _messages()["BatchingParameters"]


def monitoring_config_class() -> Any:
    return _messages()["MonitoringConfig"]


def parse_text_proto(path: str, message: Any) -> None:
    """ParseProtoTextFile: raises StatusError as TF Serving's helper returns it."""
    data = storage.read_file(path)
    try:
        text_format.Parse(data.decode("utf-8", errors="replace"), message)
    except text_format.ParseError as e:
        # libprotobuf's own report: "Error parsing text-format <type>: <line>:<col>: <msg>".
        text = str(e)
        if e.GetLine() is not None and " : " in text:
            text = f"{e.GetLine()}:{e.GetColumn()}: {text.split(' : ', 1)[1]}"
        logs.error(
            f"{logs.TEXT_FORMAT}:337",
            f"Error parsing text-format {message.DESCRIPTOR.full_name}: {text}",
        )
        raise StatusError(invalid_argument(f"Invalid protobuf file: '{path}'")) from None


def read_model_server_config(path: str) -> Any:
    config = model_server_config_pb2.ModelServerConfig()
    parse_text_proto(path, config)
    return config


def read_platform_config(path: str) -> Any:
    config = platform_config_pb2.PlatformConfigMap()
    parse_text_proto(path, config)
    return config


@dataclass(frozen=True)
class Batching:
    """The scheduler options TF Serving derives from BatchingParameters.

    tensorflow_serving/servables/tensorflow/bundle_factory_util.h GetQueueOptions and
    CreateBatchScheduler: fields left unset keep TensorFlow's SharedBatchScheduler
    defaults (input_batch_size_limit 1000, batch_timeout_micros 0, max_enqueued_batches
    10, num_batch_threads = the machine's parallelism, thread pool "batch_threads").
    """

    max_batch_size: int
    batch_timeout_micros: int
    max_enqueued_batches: int
    num_batch_threads: int
    thread_pool_name: str
    allowed_batch_sizes: tuple[int, ...]
    pad_variable_length_inputs: bool
    enable_large_batch_splitting: bool


def batching_from_parameters(params: Any, cpus: int) -> Batching:
    return Batching(
        max_batch_size=params.max_batch_size.value if params.HasField("max_batch_size") else 1000,
        batch_timeout_micros=(
            params.batch_timeout_micros.value if params.HasField("batch_timeout_micros") else 0
        ),
        max_enqueued_batches=(
            params.max_enqueued_batches.value if params.HasField("max_enqueued_batches") else 10
        ),
        num_batch_threads=(
            params.num_batch_threads.value if params.HasField("num_batch_threads") else cpus
        ),
        thread_pool_name=(
            params.thread_pool_name.value if params.HasField("thread_pool_name") else "batch_threads"
        ),
        allowed_batch_sizes=tuple(params.allowed_batch_sizes),
        pad_variable_length_inputs=params.pad_variable_length_inputs,
        enable_large_batch_splitting=(
            params.HasField("enable_large_batch_splitting")
            and params.enable_large_batch_splitting.value
        ),
    )


def validate_batching(batching: Batching) -> Status | None:
    """WrapSessionForBatching's check, made when a model is loaded."""
    if batching.allowed_batch_sizes and batching.allowed_batch_sizes[-1] != batching.max_batch_size:
        return invalid_argument(
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
            f"{batching.allowed_batch_sizes[-1]}; expected {batching.max_batch_size}"
        )
    return None
