"""TF Serving's config files parse back with the official protos (or, where tensorflow-serving-api
does not ship them, with declarations checked against TF Serving's own field numbers)."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import descriptor, text_format
from tensorflow_serving.config import model_server_config_pb2

from tfleet.desired import tfconfig

from .isvc_factory import IsvcBuilder, example_names, load_example, make_isvc

FD = descriptor.FieldDescriptor


def parse_models_config(text: str) -> Any:
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


MODEL_CASES = [
    pytest.param(make_isvc("half").version(3), "half", "gs://models/half", "specific", [3], {"stable": 3},
                 id="a pinned version is served with the specific policy and a stable label"),
    pytest.param(make_isvc("half"), "half", "gs://models/half", "latest", 1, {},
                 id="no version serves the latest one"),
    pytest.param(make_isvc("bert-batched").model_name("bert").base_path("pvc://model-store/bert"), "bert",
                 "/models/model-store/bert", "latest", 1, {},
                 id="a pvc base path becomes the mount path inside the pod"),
    pytest.param(make_isvc("r").base_path("/models/r/"), "r", "/models/r/", "latest", 1, {},
                 id="an absolute path is used as written"),
    pytest.param(make_isvc("r").base_path("hdfs://nn:8020/m").version(12), "r", "hdfs://nn:8020/m", "specific", [12],
                 {"stable": 12}, id="hdfs keeps its host and port"),
]


@pytest.mark.parametrize(("manifest", "name", "base_path", "policy", "versions", "labels"), MODEL_CASES)
def test_models_config_parses_back(
    manifest: IsvcBuilder, name: str, base_path: str, policy: str, versions: Any, labels: dict[str, int]
) -> None:
    config = parse_models_config(tfconfig.models_config(manifest.isvc()))
    assert config.WhichOneof("config") == "model_config_list"
    (model,) = config.model_config_list.config
    assert model.name == name
    assert model.base_path == base_path
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.WhichOneof("policy_choice") == policy
    if policy == "specific":
        assert list(model.model_version_policy.specific.versions) == versions
    else:
        assert model.model_version_policy.latest.num_versions == versions
    assert dict(model.version_labels) == labels


@pytest.mark.parametrize("name", example_names())
def test_every_example_writes_config_that_parses_back(name: str) -> None:
    from tfleet.api.model import parse_object

    isvc = parse_object(load_example(name))
    files = tfconfig.config_files(isvc)
    config = parse_models_config(files[tfconfig.MODELS_CONFIG])
    assert config.model_config_list.config[0].name == isvc.model_name
    if tfconfig.BATCHING_CONFIG in files:
        text_format.Parse(files[tfconfig.BATCHING_CONFIG], tfconfig.batching_parameters_class()())
    if tfconfig.MONITORING_CONFIG in files:
        text_format.Parse(files[tfconfig.MONITORING_CONFIG], tfconfig.monitoring_config_class()())


def test_batching_config_parses_back_with_every_value() -> None:
    isvc = make_isvc("b").batching(
        32, [8, 16, 32], batchTimeoutMicros=2500, numBatchThreads=6, maxEnqueuedBatches=40,
        padVariableLengthInputs=True,
    ).isvc()
    text = tfconfig.batching_config(isvc)
    assert text is not None
    params = text_format.Parse(text, tfconfig.batching_parameters_class()())
    assert params.max_batch_size.value == 32
    assert params.batch_timeout_micros.value == 2500
    assert params.num_batch_threads.value == 6
    assert params.max_enqueued_batches.value == 40
    assert list(params.allowed_batch_sizes) == [8, 16, 32]
    assert params.pad_variable_length_inputs is True
    # Wrapper types are written in TF Serving's own text form.
    assert "max_batch_size {\n  value: 32\n}" in text


def test_batching_defaults_are_written_explicitly() -> None:
    params = text_format.Parse(
        tfconfig.batching_config(make_isvc("b").batching(4).isvc()) or "", tfconfig.batching_parameters_class()()
    )
    # An unset wrapper would let TF Serving pick its own default; tfleet's documented ones are written.
    assert params.HasField("batch_timeout_micros") and params.batch_timeout_micros.value == 1000
    assert params.HasField("num_batch_threads") and params.num_batch_threads.value == 4
    assert params.HasField("max_enqueued_batches") and params.max_enqueued_batches.value == 100
    assert list(params.allowed_batch_sizes) == []


def test_no_batching_no_batching_config() -> None:
    isvc = make_isvc("b").isvc()
    assert tfconfig.batching_config(isvc) is None
    assert tfconfig.BATCHING_CONFIG not in tfconfig.config_files(isvc)


def test_monitoring_config_parses_back() -> None:
    text = tfconfig.monitoring_config(make_isvc("m").isvc())
    assert text is not None
    config = text_format.Parse(text, tfconfig.monitoring_config_class()())
    assert config.prometheus_config.enable is True
    assert config.prometheus_config.path == "/monitoring/prometheus/metrics"
    assert tfconfig.monitoring_config(make_isvc("m").monitoring(False).isvc()) is None


# Facts from TF Serving's session_bundle_config.proto and monitoring_config.proto. A wrong field
# number would make TF Serving read a different field (or refuse the file) without any error here.
BATCHING_FIELDS = {
    "max_batch_size": (1, FD.TYPE_MESSAGE, "google.protobuf.Int64Value", False),
    "batch_timeout_micros": (2, FD.TYPE_MESSAGE, "google.protobuf.Int64Value", False),
    "max_enqueued_batches": (3, FD.TYPE_MESSAGE, "google.protobuf.Int64Value", False),
    "num_batch_threads": (4, FD.TYPE_MESSAGE, "google.protobuf.Int64Value", False),
    "thread_pool_name": (5, FD.TYPE_MESSAGE, "google.protobuf.StringValue", False),
    "allowed_batch_sizes": (6, FD.TYPE_INT64, None, True),
    "pad_variable_length_inputs": (7, FD.TYPE_BOOL, None, False),
}
PROMETHEUS_FIELDS = {
    "enable": (1, FD.TYPE_BOOL, None, False),
    "path": (2, FD.TYPE_STRING, None, False),
}
MONITORING_FIELDS = {
    "prometheus_config": (1, FD.TYPE_MESSAGE, "tensorflow.serving.PrometheusConfig", False),
}


def _fields(message: descriptor.Descriptor) -> dict[str, tuple[int, int, str | None, bool]]:
    def repeated(f: descriptor.FieldDescriptor) -> bool:
        # protobuf 7 dropped FieldDescriptor.label in favour of is_repeated.
        flag = getattr(f, "is_repeated", None)
        return bool(flag) if flag is not None else f.label == FD.LABEL_REPEATED

    return {
        f.name: (f.number, f.type, f.message_type.full_name if f.message_type else None, repeated(f))
        for f in message.fields
    }


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        pytest.param(lambda: tfconfig.batching_parameters_class().DESCRIPTOR, BATCHING_FIELDS, id="BatchingParameters"),
        pytest.param(lambda: tfconfig.monitoring_config_class().DESCRIPTOR, MONITORING_FIELDS, id="MonitoringConfig"),
        pytest.param(lambda: tfconfig.monitoring_config_class().DESCRIPTOR.fields_by_name["prometheus_config"].message_type,
                     PROMETHEUS_FIELDS, id="PrometheusConfig"),
    ],
)
def test_declared_messages_match_tf_serving(message: Any, expected: dict[str, Any]) -> None:
    desc = message()
    assert desc.full_name.startswith("tensorflow.serving.")
    assert _fields(desc) == expected


def test_declared_messages_use_tf_serving_names() -> None:
    assert tfconfig.batching_parameters_class().DESCRIPTOR.full_name == "tensorflow.serving.BatchingParameters"
    assert tfconfig.monitoring_config_class().DESCRIPTOR.full_name == "tensorflow.serving.MonitoringConfig"


def test_binary_encoding_uses_the_declared_field_numbers() -> None:
    # Field 1 (max_batch_size) as a length-delimited wrapper holding varint 32: bytes 0a 02 08 20.
    params = tfconfig.batching_parameters_class()()
    params.max_batch_size.value = 32
    assert params.SerializeToString() == bytes([0x0A, 0x02, 0x08, 0x20])
    params = tfconfig.batching_parameters_class()()
    params.allowed_batch_sizes.extend([8, 16])
    # Field 6, packed repeated int64 (proto3 default): 32 02 08 10.
    assert params.SerializeToString() == bytes([0x32, 0x02, 0x08, 0x10])


SERVER_ARG_CASES = [
    pytest.param(make_isvc("a"), [
        "--port=8500", "--rest_api_port=8501", "--model_config_file=/etc/tfleet/models.config",
        "--model_config_file_poll_wait_seconds=60", "--max_num_load_retries=0",
        "--monitoring_config_file=/etc/tfleet/monitoring.config",
        "--grpc_channel_arguments=grpc.max_connection_age_ms=30000",
    ], id="defaults"),
    pytest.param(make_isvc("a").batching(4).monitoring(False).server(maxConnectionAgeSeconds=5, modelConfigPollSeconds=0), [
        "--port=8500", "--rest_api_port=8501", "--model_config_file=/etc/tfleet/models.config",
        "--model_config_file_poll_wait_seconds=0", "--max_num_load_retries=0", "--enable_batching=true",
        "--batching_parameters_file=/etc/tfleet/batching.config",
        "--grpc_channel_arguments=grpc.max_connection_age_ms=5000",
    ], id="batching on, monitoring off, short connection age, no polling"),
]


@pytest.mark.parametrize(("manifest", "args"), SERVER_ARG_CASES)
def test_server_args(manifest: IsvcBuilder, args: list[str]) -> None:
    assert tfconfig.server_args(manifest.isvc()) == args


def test_a_pinned_version_lets_its_label_name_a_version_still_loading() -> None:
    # TF Serving assigns version labels before it loads the first config's models: without
    # this flag, a config whose "stable" label names the pinned version fails start-up.
    pinned = tfconfig.server_args(make_isvc("a").version(3).isvc())
    assert "--allow_version_labels_for_unavailable_models=true" in pinned
    assert 'version_labels' in tfconfig.models_config(make_isvc("a").version(3).isvc())
    latest = tfconfig.server_args(make_isvc("a").isvc())
    assert not any(a.startswith("--allow_version_labels") for a in latest)
