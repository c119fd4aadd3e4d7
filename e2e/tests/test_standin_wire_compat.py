"""The stand-in's hand-written protos against the descriptors shipped in tensorflow-serving-api.

The generated `tensorflow_serving/apis/*_pb2.py` modules import TensorFlow, but each embeds
its .proto file's serialized FileDescriptorProto, which `ast` reads out. Field numbers,
types, labels, message types and oneofs must match exactly; the TensorFlow core protos the
official files import (tensor.proto, meta_graph.proto) are not shipped, so the stand-in's
own versions of them fill that gap when both sides encode and decode each other's bytes.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2
from tensorflow_serving.config import model_server_config_pb2

from e2e.standin import protos
from tfleet.health import protos as health_protos


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


def messages(f: descriptor_pb2.FileDescriptorProto) -> dict[str, descriptor_pb2.DescriptorProto]:
    out = {}
    for m in f.message_type:
        out[m.name] = m
        for nested in m.nested_type:
            out[f"{m.name}.{nested.name}"] = nested
    return out


@pytest.mark.parametrize(
    ("module", "ours_name", "names"),
    [
        ("predict", protos.PREDICT_FILE, ["PredictRequest", "PredictRequest.InputsEntry", "PredictResponse",
                                          "PredictResponse.OutputsEntry"]),
        ("get_model_metadata", protos.GET_MODEL_METADATA_FILE,
         ["SignatureDefMap", "SignatureDefMap.SignatureDefEntry", "GetModelMetadataRequest",
          "GetModelMetadataResponse", "GetModelMetadataResponse.MetadataEntry"]),
        ("model_management", protos.MODEL_MANAGEMENT_FILE, ["ReloadConfigRequest", "ReloadConfigResponse", "Metric"]),
    ],
)
def test_fields_match_the_official_descriptors(module: str, ours_name: str, names: list[str]) -> None:
    theirs, mine = official(module), ours(ours_name)
    assert (mine.name, mine.package) == (theirs.name, theirs.package)
    for name in names:
        mine_fields, their_fields = fields(messages(mine)[name]), fields(messages(theirs)[name])
        if module == "predict" and name == "PredictRequest":
            # Newer streaming/LLM options the stand-in does not read: parsed as unknown fields.
            assert mine_fields.items() <= their_fields.items()
            assert set(their_fields) - set(mine_fields) == {"predict_streamed_options", "client_id", "request_options"}
        else:
            assert mine_fields == their_fields, name


def test_the_tensorflow_files_are_the_ones_the_official_files_import() -> None:
    imported = {dep for module in ("predict", "get_model_metadata") for dep in official(module).dependency}
    assert protos.TENSOR_FILE in imported and protos.META_GRAPH_FILE in imported
    names = {f.name for f in protos.file_descriptor_protos()}
    assert {protos.TENSOR_FILE, protos.META_GRAPH_FILE} <= names
    assert model_server_config_pb2.DESCRIPTOR.name in official("model_management").dependency


def test_service_method_paths_and_types() -> None:
    for module, service, methods in [
        ("prediction_service", protos.PREDICTION_SERVICE, {
            "Predict": ("PredictRequest", "PredictResponse"),
            "GetModelMetadata": ("GetModelMetadataRequest", "GetModelMetadataResponse"),
        }),
        ("model_service", protos.MODEL_SERVICE, {
            "GetModelStatus": ("GetModelStatusRequest", "GetModelStatusResponse"),
            "HandleReloadConfigRequest": ("ReloadConfigRequest", "ReloadConfigResponse"),
        }),
    ]:
        f = official(module)
        [svc] = [s for s in f.service if f"{f.package}.{s.name}" == service]
        for method, (request, response) in methods.items():
            m = next(m for m in svc.method if m.name == method)
            assert (m.input_type, m.output_type) == (f".tensorflow.serving.{request}", f".tensorflow.serving.{response}")


@pytest.fixture(scope="module")
def official_classes() -> dict[str, Any]:
    """Classes built from the official TF Serving descriptors in a pool of their own; the
    TensorFlow core files they import are the stand-in's (the only ones to be had)."""
    pool = descriptor_pool.DescriptorPool()
    done: set[str] = set()
    for f in (wrappers_pb2.DESCRIPTOR, any_pb2.DESCRIPTOR, model_server_config_pb2.DESCRIPTOR):
        protos._add_with_dependencies(pool, f, done)
    pool.Add(next(f for f in health_protos.file_descriptor_protos() if f.name == health_protos.ERROR_CODES_FILE))
    for name in (protos.TYPES_FILE, protos.TENSOR_SHAPE_FILE, protos.TENSOR_FILE, protos.META_GRAPH_FILE):
        pool.Add(ours(name))
    for module in ("model", "status", "predict", "get_model_metadata", "model_management"):
        pool.Add(official(module))
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
        for name in ("PredictRequest", "PredictResponse", "GetModelMetadataResponse", "SignatureDefMap",
                     "ReloadConfigRequest", "ReloadConfigResponse")
    }


def test_predict_messages_decode_both_ways(official_classes: dict[str, Any]) -> None:
    theirs = official_classes["PredictRequest"]()
    theirs.model_spec.name = "m"
    theirs.model_spec.version_label = "canary"
    theirs.inputs["x"].dtype = protos.DT_FLOAT
    theirs.inputs["x"].tensor_shape.dim.add(size=2)
    theirs.inputs["x"].float_val.extend([1.0, 2.0])
    theirs.output_filter.append("y")
    mine = protos.PredictRequest.FromString(theirs.SerializeToString())
    assert mine.model_spec.WhichOneof("version_choice") == "version_label"
    assert list(mine.inputs["x"].float_val) == [1.0, 2.0]
    assert list(mine.output_filter) == ["y"]

    response = protos.PredictResponse()
    response.model_spec.name = "m"
    response.model_spec.version.value = 3
    response.outputs["y"].CopyFrom(protos.float_tensor([2.5, 3.0]))
    back = official_classes["PredictResponse"].FromString(response.SerializeToString())
    assert back.model_spec.version.value == 3
    assert list(back.outputs["y"].float_val) == [2.5, 3.0]


def test_metadata_and_reload_messages_decode_both_ways(official_classes: dict[str, Any]) -> None:
    from e2e.standin.models import Card
    from e2e.standin.servable import signature_defs

    response = protos.GetModelMetadataResponse()
    response.model_spec.name = "m"
    sig_map = protos.SignatureDefMap()
    for key, sig in signature_defs(Card()).items():
        sig_map.signature_def[key].CopyFrom(sig)
    response.metadata["signature_def"].Pack(sig_map)
    theirs = official_classes["GetModelMetadataResponse"].FromString(response.SerializeToString())
    assert theirs.metadata["signature_def"].type_url == protos.SIGNATURE_DEF_MAP_TYPE_URL
    their_map = official_classes["SignatureDefMap"].FromString(theirs.metadata["signature_def"].value)
    assert their_map.signature_def["serving_default"].inputs["x"].name == "serving_default_x:0"

    request = official_classes["ReloadConfigRequest"]()
    model = request.config.model_config_list.config.add(name="m", base_path="/models/m", model_platform="tensorflow")
    model.model_version_policy.specific.versions.append(3)
    model.version_labels["stable"] = 3
    request.metric_names.append("/tensorflow/serving/request_count")
    mine = protos.ReloadConfigRequest.FromString(request.SerializeToString())
    assert mine.config.model_config_list.config[0].version_labels["stable"] == 3
    reply = protos.ReloadConfigResponse()
    reply.status.error_code = 9
    reply.metric.add(name="x", int64_value_increase=2)
    back = official_classes["ReloadConfigResponse"].FromString(reply.SerializeToString())
    assert (back.status.error_code, back.metric[0].int64_value_increase) == (9, 2)
