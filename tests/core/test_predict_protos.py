"""`tfleet predict`'s hand-written protos against the descriptors shipped in tensorflow-serving-api.

The generated `tensorflow_serving/apis/*_pb2.py` modules import TensorFlow, but each embeds
its .proto file's serialized FileDescriptorProto, which `ast` reads out: field numbers,
types, labels, message types and oneofs must match exactly, and the method paths too.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

from tfleet.cli import predict_protos as protos


def official(module: str) -> descriptor_pb2.FileDescriptorProto:
    spec = importlib.util.find_spec("tensorflow_serving")
    assert spec is not None and spec.submodule_search_locations, "tensorflow-serving-api is not installed"
    source = (Path(next(iter(spec.submodule_search_locations))) / "apis" / f"{module}_pb2.py").read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "AddSerializedFile":
            arg = node.args[0]
            assert isinstance(arg, ast.Constant) and isinstance(arg.value, bytes)
            return descriptor_pb2.FileDescriptorProto.FromString(arg.value)
    raise AssertionError(f"no serialized descriptor in {module}_pb2.py")


def ours(name: str) -> descriptor_pb2.FileDescriptorProto:
    return next(f for f in protos.file_descriptor_protos() if f.name == name)


def fields(m: descriptor_pb2.DescriptorProto) -> dict[str, tuple[Any, ...]]:
    return {f.name: (f.number, f.type, f.label, f.type_name,
                     m.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None) for f in m.field}


def messages(f: descriptor_pb2.FileDescriptorProto) -> dict[str, descriptor_pb2.DescriptorProto]:
    out = {}
    for m in f.message_type:
        out[m.name] = m
        for nested in m.nested_type:
            out[f"{m.name}.{nested.name}"] = nested
    return out


@pytest.mark.parametrize(("module", "name", "names"), [
    ("predict", protos.PREDICT_FILE, ["PredictRequest", "PredictRequest.InputsEntry", "PredictResponse",
                                      "PredictResponse.OutputsEntry"]),
    ("get_model_metadata", protos.GET_MODEL_METADATA_FILE,
     ["SignatureDefMap", "SignatureDefMap.SignatureDefEntry", "GetModelMetadataRequest", "GetModelMetadataResponse",
      "GetModelMetadataResponse.MetadataEntry"]),
])
def test_fields_match_the_official_descriptors(module: str, name: str, names: list[str]) -> None:
    theirs, mine = official(module), ours(name)
    assert (mine.name, mine.package) == (theirs.name, theirs.package)
    for message in names:
        mine_fields, their_fields = fields(messages(mine)[message]), fields(messages(theirs)[message])
        if message == "PredictRequest":
            # Newer streaming options tfleet never sends.
            assert mine_fields.items() <= their_fields.items()
        else:
            assert mine_fields == their_fields, message


def test_the_tensorflow_files_are_the_ones_the_official_files_import() -> None:
    imported = {dep for module in ("predict", "get_model_metadata") for dep in official(module).dependency}
    assert {protos.TENSOR_FILE, protos.META_GRAPH_FILE} <= imported


def test_the_method_paths_are_the_prediction_services() -> None:
    f = official("prediction_service")
    [service] = [s for s in f.service if f"{f.package}.{s.name}" == protos.PREDICTION_SERVICE]
    methods = {m.name: (m.input_type, m.output_type) for m in service.method}
    assert methods["Predict"] == (".tensorflow.serving.PredictRequest", ".tensorflow.serving.PredictResponse")
    assert methods["GetModelMetadata"] == (".tensorflow.serving.GetModelMetadataRequest",
                                           ".tensorflow.serving.GetModelMetadataResponse")
    assert f"/{protos.PREDICTION_SERVICE}/Predict" == protos.PREDICT_METHOD
    assert f"/{protos.PREDICTION_SERVICE}/GetModelMetadata" == protos.GET_MODEL_METADATA_METHOD


def test_the_tensor_messages_match_the_stand_ins_which_match_tensorflows() -> None:
    # tensor.proto and meta_graph.proto are not shipped TF-free; the stand-in's copies are
    # checked against the official files that import them (e2e/tests/test_standin_wire_compat.py).
    from e2e.standin import protos as standin

    theirs = {f.name: f for f in standin.file_descriptor_protos()}
    for name in (protos.TYPES_FILE, protos.TENSOR_SHAPE_FILE, protos.TENSOR_FILE, protos.META_GRAPH_FILE):
        for message, descriptor in messages(ours(name)).items():
            assert fields(descriptor) == fields(messages(theirs[name])[message]), f"{name} {message}"
