"""TF Serving's configuration files, in protobuf text format.

`models.config` is built with the official ModelServerConfig classes from
tensorflow-serving-api (its `tensorflow_serving.config` protos need no TensorFlow).
The package does not ship BatchingParameters (session_bundle_config.proto) nor
MonitoringConfig (monitoring_config.proto), because those import TensorFlow's own protos,
so tfleet declares the few fields it writes itself, with TF Serving's field numbers and
types; `text_format` then writes exactly what TF Serving's parser reads.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)

from tfleet.api.model import InferenceService

MODELS_CONFIG = "models.config"
BATCHING_CONFIG = "batching.config"
MONITORING_CONFIG = "monitoring.config"
# spec.model.preflight.requests.inline, for the health bridge's pre-flight.
GOLDEN_REQUESTS = "golden-requests.json"
CONFIG_DIR = "/etc/tfleet"
METRICS_PATH = "/monitoring/prometheus/metrics"

_FD = descriptor_pb2.FieldDescriptorProto


@cache
def _messages() -> dict[str, Any]:
    """BatchingParameters and MonitoringConfig, declared with TF Serving's field numbers."""
    file = descriptor_pb2.FileDescriptorProto(
        name="tfleet/tfserving_config_subset.proto",
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
    ):
        batching.field.add(name=name, number=number, type=_FD.TYPE_MESSAGE, type_name=type_name,
                           label=_FD.LABEL_OPTIONAL)
    batching.field.add(name="allowed_batch_sizes", number=6, type=_FD.TYPE_INT64, label=_FD.LABEL_REPEATED)
    batching.field.add(name="pad_variable_length_inputs", number=7, type=_FD.TYPE_BOOL, label=_FD.LABEL_OPTIONAL)

    prometheus = file.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=_FD.TYPE_BOOL, label=_FD.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=_FD.TYPE_STRING, label=_FD.LABEL_OPTIONAL)
    monitoring = file.message_type.add(name="MonitoringConfig")
    monitoring.field.add(name="prometheus_config", number=1, type=_FD.TYPE_MESSAGE,
                         type_name=".tensorflow.serving.PrometheusConfig", label=_FD.LABEL_OPTIONAL)

    # A private pool: the official package may define the same names one day.
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
        for name in ("BatchingParameters", "MonitoringConfig")
    }


def batching_parameters_class() -> Any:
    return _messages()["BatchingParameters"]


def monitoring_config_class() -> Any:
    return _messages()["MonitoringConfig"]


def model_base_path(isvc: InferenceService) -> str:
    """The base path as TF Serving sees it inside the pod (pvc:// becomes a mount path)."""
    base = isvc.spec.model.base_path
    if base.startswith("pvc://"):
        claim, _, rest = base[len("pvc://"):].partition("/")
        return f"/models/{claim}/{rest}".rstrip("/")
    return base


def models_config(isvc: InferenceService) -> str:
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = isvc.model_name
    model.base_path = model_base_path(isvc)
    model.model_platform = "tensorflow"
    version = isvc.spec.model.version
    if version is not None:
        model.model_version_policy.specific.versions.append(version)
        # A label lets clients address "stable" without knowing the number.
        model.version_labels["stable"] = version
    else:
        model.model_version_policy.latest.num_versions = 1
    return str(text_format.MessageToString(config))


def batching_config(isvc: InferenceService) -> str | None:
    batching = isvc.spec.batching
    if batching is None:
        return None
    params = batching_parameters_class()()
    params.max_batch_size.value = batching.max_batch_size
    params.batch_timeout_micros.value = batching.batch_timeout_micros
    params.max_enqueued_batches.value = batching.max_enqueued_batches
    params.num_batch_threads.value = batching.num_batch_threads
    params.allowed_batch_sizes.extend(batching.allowed_batch_sizes)
    params.pad_variable_length_inputs = batching.pad_variable_length_inputs
    return str(text_format.MessageToString(params))


def monitoring_config(isvc: InferenceService) -> str | None:
    if not isvc.spec.server.monitoring:
        return None
    config = monitoring_config_class()()
    config.prometheus_config.enable = True
    config.prometheus_config.path = METRICS_PATH
    return str(text_format.MessageToString(config))


def config_files(isvc: InferenceService) -> dict[str, str]:
    """Every config file the pod needs, by file name."""
    files = {MODELS_CONFIG: models_config(isvc)}
    if (batching := batching_config(isvc)) is not None:
        files[BATCHING_CONFIG] = batching
    if (monitoring := monitoring_config(isvc)) is not None:
        files[MONITORING_CONFIG] = monitoring
    preflight = isvc.spec.model.preflight
    if preflight is not None and preflight.requests.inline is not None:
        files[GOLDEN_REQUESTS] = preflight.requests.inline
    return files


def server_args(isvc: InferenceService) -> list[str]:
    """tensorflow_model_server flags for the pod."""
    server = isvc.spec.server
    args = [
        f"--port={server.grpc_port}",
        f"--rest_api_port={server.rest_port}",
        f"--model_config_file={CONFIG_DIR}/{MODELS_CONFIG}",
        f"--model_config_file_poll_wait_seconds={server.model_config_poll_seconds}",
        # A failed first load ends the server at once, with TF Serving's error as the last
        # line of its log (the default retries 5 times, a minute apart, with ports closed).
        # The kubelet's restart back-off retries instead, visibly, and a canary pinned to a
        # broken version is rolled back with that error in seconds.
        "--max_num_load_retries=0",
    ]
    if isvc.spec.model.version is not None:
        # The config's "stable" label points at the pinned version. ServerCore::ReloadConfig
        # assigns labels before it loads the models (server_core.cc), so on the first config
        # the label names a version that is not available yet and the server refuses to
        # start, unless labels may point at versions still loading.
        args.append("--allow_version_labels_for_unavailable_models=true")
    if isvc.spec.batching is not None:
        args += ["--enable_batching=true", f"--batching_parameters_file={CONFIG_DIR}/{BATCHING_CONFIG}"]
    if server.monitoring:
        args.append(f"--monitoring_config_file={CONFIG_DIR}/{MONITORING_CONFIG}")
    if server.max_connection_age_seconds > 0:
        # Clients reconnect after this age, so connections spread over new pods behind a
        # ClusterIP Service (Kubernetes balances per connection, not per request).
        args.append(f"--grpc_channel_arguments=grpc.max_connection_age_ms={server.max_connection_age_seconds * 1000}")
    args.extend(server.extra_args)
    return args
