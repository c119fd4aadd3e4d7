"""The hand-written protos against the official TF Serving descriptors.

`tensorflow-serving-api` ships generated modules that embed each .proto file's serialized
FileDescriptorProto. They cannot be imported without TensorFlow, but the bytes can be read
out of the source with `ast` and compared field by field; messages built from them in a
separate pool also let both sides encode and decode each other's bytes.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

from tests.fakes.tfserving import protos as fake_protos
from tfleet.health import protos

APIS = "tensorflow_serving/apis"


def _apis_dir() -> Path:
    spec = importlib.util.find_spec("tensorflow_serving")
    assert spec is not None and spec.submodule_search_locations, (
        "tensorflow-serving-api is not installed"
    )
    return Path(next(iter(spec.submodule_search_locations))) / "apis"


def official(module: str) -> descriptor_pb2.FileDescriptorProto:
    """The FileDescriptorProto embedded in tensorflow_serving/apis/<module>_pb2.py."""
    source = (_apis_dir() / f"{module}_pb2.py").read_text()
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "AddSerializedFile"
        ):
            arg = node.args[0]
            assert isinstance(arg, ast.Constant) and isinstance(arg.value, bytes)
            return descriptor_pb2.FileDescriptorProto.FromString(arg.value)
    raise AssertionError(f"no serialized descriptor in {module}_pb2.py")


def ours(name: str) -> descriptor_pb2.FileDescriptorProto:
    return next(f for f in protos.file_descriptor_protos() if f.name == name)


def message(f: descriptor_pb2.FileDescriptorProto, name: str) -> descriptor_pb2.DescriptorProto:
    return next(m for m in f.message_type if m.name == name)


def fields(m: descriptor_pb2.DescriptorProto) -> dict[str, tuple[Any, ...]]:
    """What the wire depends on: number, type, label, message/enum type, oneof membership."""
    return {
        f.name: (
            f.number,
            f.type,
            f.label,
            f.type_name,
            m.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None,
        )
        for f in m.field
    }


@pytest.mark.parametrize(
    ("module", "our_file", "name"),
    [
        ("model", protos.MODEL_FILE, "ModelSpec"),
        ("status", protos.STATUS_FILE, "StatusProto"),
        ("get_model_status", protos.GET_MODEL_STATUS_FILE, "GetModelStatusRequest"),
        ("get_model_status", protos.GET_MODEL_STATUS_FILE, "ModelVersionStatus"),
        ("get_model_status", protos.GET_MODEL_STATUS_FILE, "GetModelStatusResponse"),
    ],
)
def test_fields_match_the_official_descriptors(module: str, our_file: str, name: str) -> None:
    theirs = official(module)
    mine = ours(our_file)
    assert mine.package == theirs.package == "tensorflow.serving"
    assert fields(message(mine, name)) == fields(message(theirs, name))


def test_state_enum_matches() -> None:
    theirs = message(official("get_model_status"), "ModelVersionStatus").enum_type[0]
    assert {v.name: v.number for v in theirs.value} == protos.STATES


def test_status_error_code_is_tensorflow_error_code() -> None:
    theirs = official("status")
    assert protos.ERROR_CODES_FILE in theirs.dependency
    field = message(theirs, "StatusProto").field[0]
    assert (field.name, field.type_name) == ("error_code", ".tensorflow.error.Code")


def test_model_service_method_path_and_types() -> None:
    service = next(s for s in official("model_service").service if s.name == "ModelService")
    method = next(m for m in service.method if m.name == "GetModelStatus")
    assert f"/{official('model_service').package}.{service.name}/{method.name}" == (
        protos.GET_MODEL_STATUS_METHOD
    )
    assert method.input_type == ".tensorflow.serving.GetModelStatusRequest"
    assert method.output_type == ".tensorflow.serving.GetModelStatusResponse"


def test_the_fakes_predict_messages_match_where_they_overlap() -> None:
    theirs = official("predict")
    mine = fake_protos.POOL.FindFileByName("tensorflow_serving/apis/predict.proto")
    mine_proto = descriptor_pb2.FileDescriptorProto()
    mine.CopyToProto(mine_proto)
    for name in ("PredictRequest", "PredictResponse"):
        mine_fields = fields(message(mine_proto, name))
        their_fields = fields(message(theirs, name))
        assert mine_fields.items() <= their_fields.items(), name
    service = next(
        s for s in official("prediction_service").service if s.name == "PredictionService"
    )
    assert f"tensorflow.serving.{service.name}" == fake_protos.PREDICTION_SERVICE
    assert "Predict" in [m.name for m in service.method]


@pytest.fixture(scope="module")
def official_classes() -> dict[str, Any]:
    """Message classes built from the official descriptors, in a pool of their own.

    status.proto imports TensorFlow's error_codes.proto, which is not shipped here; the
    hand-written stand-in (same file name and enum) fills that gap only.
    """
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    pool.Add(ours(protos.ERROR_CODES_FILE))
    for module in ("model", "status", "get_model_status"):
        pool.Add(official(module))
    return {
        name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"tensorflow.serving.{name}")
        )
        for name in ("GetModelStatusRequest", "GetModelStatusResponse")
    }


def test_requests_decode_both_ways(official_classes: dict[str, Any]) -> None:
    Theirs = official_classes["GetModelStatusRequest"]
    theirs = Theirs()
    theirs.model_spec.name = "resnet"
    theirs.model_spec.version.value = 42
    theirs.model_spec.signature_name = "serving_default"
    mine = protos.GetModelStatusRequest.FromString(theirs.SerializeToString())
    assert (mine.model_spec.name, mine.model_spec.version.value) == ("resnet", 42)
    assert mine.model_spec.WhichOneof("version_choice") == "version"
    assert mine.model_spec.signature_name == "serving_default"

    mine = protos.GetModelStatusRequest()
    mine.model_spec.name = "resnet"
    mine.model_spec.version_label = "canary"
    back = Theirs.FromString(mine.SerializeToString())
    assert back.model_spec.WhichOneof("version_choice") == "version_label"
    assert back.model_spec.version_label == "canary"
    assert back.SerializeToString() == mine.SerializeToString()


def test_responses_decode_both_ways(official_classes: dict[str, Any]) -> None:
    Theirs = official_classes["GetModelStatusResponse"]
    theirs = Theirs()
    a = theirs.model_version_status.add(version=3, state=50)
    a.status.error_code = 5
    a.status.error_message = "Could not find base path /models/resnet/3"
    theirs.model_version_status.add(version=2, state=30)
    data = theirs.SerializeToString()

    mine = protos.GetModelStatusResponse.FromString(data)
    assert [(m.version, protos.STATE_NAMES[m.state]) for m in mine.model_version_status] == [
        (3, "END"),
        (2, "AVAILABLE"),
    ]
    first = mine.model_version_status[0].status
    assert protos.ERROR_CODE_NAMES[first.error_code] == "NOT_FOUND"
    assert first.error_message == "Could not find base path /models/resnet/3"
    assert mine.SerializeToString() == data
    assert Theirs.FromString(mine.SerializeToString()) == theirs


def test_the_health_package_imports_no_tensorflow() -> None:
    code = (
        "import sys, tfleet.health.cli, tfleet.health.bridge, tfleet.health.podspec;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_serving')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
