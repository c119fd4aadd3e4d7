"""TensorFlow-free protobuf definitions for `tfleet predict` and the health bridge's pre-flight:
PredictionService/Predict and GetModelMetadata, and the TensorFlow messages they carry.

The official `tensorflow_serving.apis.*_pb2` modules import TensorFlow, which tfleet must not
depend on. As in `tfleet.health.protos`, the messages are declared by hand from the official
.proto files (field numbers and types): TensorFlow's `types.proto`, `tensor_shape.proto`,
`tensor.proto`, the TensorInfo and SignatureDef messages of `meta_graph.proto`, and TF
Serving's `predict.proto` and `get_model_metadata.proto`. ModelSpec is
`tfleet.health.protos`'s own. `tests/core/test_predict_protos.py` checks every field against
the descriptors embedded in tensorflow-serving-api.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, wrappers_pb2

from tfleet.health import protos as health_protos

F = descriptor_pb2.FieldDescriptorProto
OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
PREDICT_METHOD = f"/{PREDICTION_SERVICE}/Predict"
GET_MODEL_METADATA_METHOD = f"/{PREDICTION_SERVICE}/GetModelMetadata"
DEFAULT_SIGNATURE = "serving_default"  # tensorflow::kDefaultServingSignatureDefKey
SIGNATURE_DEF_MAP_TYPE_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"

TYPES_FILE = "tensorflow/core/framework/types.proto"
TENSOR_SHAPE_FILE = "tensorflow/core/framework/tensor_shape.proto"
TENSOR_FILE = "tensorflow/core/framework/tensor.proto"
META_GRAPH_FILE = "tensorflow/core/protobuf/meta_graph.proto"
PREDICT_FILE = "tensorflow_serving/apis/predict.proto"
GET_MODEL_METADATA_FILE = "tensorflow_serving/apis/get_model_metadata.proto"

# tensorflow/core/framework/types.proto: DataType (reference types, +100, left out).
DATA_TYPES: dict[str, int] = {
    "DT_INVALID": 0, "DT_FLOAT": 1, "DT_DOUBLE": 2, "DT_INT32": 3, "DT_UINT8": 4, "DT_INT16": 5,
    "DT_INT8": 6, "DT_STRING": 7, "DT_COMPLEX64": 8, "DT_INT64": 9, "DT_BOOL": 10, "DT_QINT8": 11,
    "DT_QUINT8": 12, "DT_QINT32": 13, "DT_BFLOAT16": 14, "DT_QINT16": 15, "DT_QUINT16": 16,
    "DT_UINT16": 17, "DT_COMPLEX128": 18, "DT_HALF": 19, "DT_RESOURCE": 20, "DT_VARIANT": 21,
    "DT_UINT32": 22, "DT_UINT64": 23,
}
DATA_TYPE_NAMES: dict[int, str] = {v: k for k, v in DATA_TYPES.items()}


def _field(name: str, number: int, ftype: int, label: int = OPT, type_name: str = "", *,
           packed: bool = False, oneof_index: int | None = None) -> Any:
    f = F(name=name, number=number, type=ftype, label=label)
    if type_name:
        f.type_name = type_name
    if packed:
        f.options.packed = True
    if oneof_index is not None:
        f.oneof_index = oneof_index
    return f


def _map_entry(parent: descriptor_pb2.DescriptorProto, entry: str, value_type: int, value_type_name: str = "") -> None:
    e = parent.nested_type.add(name=entry)
    e.options.map_entry = True
    e.field.extend([_field("key", 1, F.TYPE_STRING), _field("value", 2, value_type, type_name=value_type_name)])


def _tensor_files() -> list[descriptor_pb2.FileDescriptorProto]:
    types = descriptor_pb2.FileDescriptorProto(name=TYPES_FILE, package="tensorflow", syntax="proto3")
    dtype = types.enum_type.add(name="DataType")
    for name, number in DATA_TYPES.items():
        dtype.value.add(name=name, number=number)

    shape = descriptor_pb2.FileDescriptorProto(name=TENSOR_SHAPE_FILE, package="tensorflow", syntax="proto3")
    shape_msg = shape.message_type.add(name="TensorShapeProto")
    dim = shape_msg.nested_type.add(name="Dim")
    dim.field.extend([_field("size", 1, F.TYPE_INT64), _field("name", 2, F.TYPE_STRING)])
    shape_msg.field.extend([_field("dim", 2, F.TYPE_MESSAGE, REP, ".tensorflow.TensorShapeProto.Dim"),
                            _field("unknown_rank", 3, F.TYPE_BOOL)])

    tensor = descriptor_pb2.FileDescriptorProto(name=TENSOR_FILE, package="tensorflow", syntax="proto3",
                                                dependency=[TYPES_FILE, TENSOR_SHAPE_FILE])
    t = tensor.message_type.add(name="TensorProto")
    # resource_handle_val (14) and variant_val (15) are messages tfleet never sends; an answer
    # that carries them keeps them as unknown fields.
    t.field.extend([
        _field("dtype", 1, F.TYPE_ENUM, type_name=".tensorflow.DataType"),
        _field("tensor_shape", 2, F.TYPE_MESSAGE, type_name=".tensorflow.TensorShapeProto"),
        _field("version_number", 3, F.TYPE_INT32),
        _field("tensor_content", 4, F.TYPE_BYTES),
        _field("half_val", 13, F.TYPE_INT32, REP, packed=True),
        _field("float_val", 5, F.TYPE_FLOAT, REP, packed=True),
        _field("double_val", 6, F.TYPE_DOUBLE, REP, packed=True),
        _field("int_val", 7, F.TYPE_INT32, REP, packed=True),
        _field("string_val", 8, F.TYPE_BYTES, REP),
        _field("scomplex_val", 9, F.TYPE_FLOAT, REP, packed=True),
        _field("int64_val", 10, F.TYPE_INT64, REP, packed=True),
        _field("bool_val", 11, F.TYPE_BOOL, REP, packed=True),
        _field("dcomplex_val", 12, F.TYPE_DOUBLE, REP, packed=True),
        _field("uint32_val", 16, F.TYPE_UINT32, REP, packed=True),
        _field("uint64_val", 17, F.TYPE_UINT64, REP, packed=True),
    ])
    return [types, shape, tensor]


def _meta_graph_file() -> descriptor_pb2.FileDescriptorProto:
    """TensorInfo and SignatureDef only: the rest of meta_graph.proto describes graphs."""
    f = descriptor_pb2.FileDescriptorProto(name=META_GRAPH_FILE, package="tensorflow", syntax="proto3",
                                           dependency=[TYPES_FILE, TENSOR_SHAPE_FILE, TENSOR_FILE])
    info = f.message_type.add(name="TensorInfo")
    coo = info.nested_type.add(name="CooSparse")
    coo.field.extend([_field("values_tensor_name", 1, F.TYPE_STRING),
                      _field("indices_tensor_name", 2, F.TYPE_STRING),
                      _field("dense_shape_tensor_name", 3, F.TYPE_STRING)])
    info.oneof_decl.add(name="encoding")
    info.field.extend([
        _field("name", 1, F.TYPE_STRING, oneof_index=0),
        _field("coo_sparse", 4, F.TYPE_MESSAGE, type_name=".tensorflow.TensorInfo.CooSparse", oneof_index=0),
        _field("dtype", 2, F.TYPE_ENUM, type_name=".tensorflow.DataType"),
        _field("tensor_shape", 3, F.TYPE_MESSAGE, type_name=".tensorflow.TensorShapeProto"),
    ])
    sig = f.message_type.add(name="SignatureDef")
    _map_entry(sig, "InputsEntry", F.TYPE_MESSAGE, ".tensorflow.TensorInfo")
    _map_entry(sig, "OutputsEntry", F.TYPE_MESSAGE, ".tensorflow.TensorInfo")
    _map_entry(sig, "DefaultsEntry", F.TYPE_MESSAGE, ".tensorflow.TensorProto")
    sig.field.extend([
        _field("inputs", 1, F.TYPE_MESSAGE, REP, ".tensorflow.SignatureDef.InputsEntry"),
        _field("outputs", 2, F.TYPE_MESSAGE, REP, ".tensorflow.SignatureDef.OutputsEntry"),
        _field("method_name", 3, F.TYPE_STRING),
        _field("defaults", 4, F.TYPE_MESSAGE, REP, ".tensorflow.SignatureDef.DefaultsEntry"),
    ])
    return f


def _predict_file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(name=PREDICT_FILE, package="tensorflow.serving", syntax="proto3",
                                           dependency=[TENSOR_FILE, health_protos.MODEL_FILE])
    req = f.message_type.add(name="PredictRequest")
    _map_entry(req, "InputsEntry", F.TYPE_MESSAGE, ".tensorflow.TensorProto")
    req.field.extend([
        _field("model_spec", 1, F.TYPE_MESSAGE, type_name=".tensorflow.serving.ModelSpec"),
        _field("inputs", 2, F.TYPE_MESSAGE, REP, ".tensorflow.serving.PredictRequest.InputsEntry"),
        _field("output_filter", 3, F.TYPE_STRING, REP),
    ])
    resp = f.message_type.add(name="PredictResponse")
    _map_entry(resp, "OutputsEntry", F.TYPE_MESSAGE, ".tensorflow.TensorProto")
    resp.field.extend([
        _field("model_spec", 2, F.TYPE_MESSAGE, type_name=".tensorflow.serving.ModelSpec"),
        _field("outputs", 1, F.TYPE_MESSAGE, REP, ".tensorflow.serving.PredictResponse.OutputsEntry"),
    ])
    return f


def _get_model_metadata_file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(
        name=GET_MODEL_METADATA_FILE, package="tensorflow.serving", syntax="proto3",
        dependency=[any_pb2.DESCRIPTOR.name, META_GRAPH_FILE, health_protos.MODEL_FILE])
    sig_map = f.message_type.add(name="SignatureDefMap")
    _map_entry(sig_map, "SignatureDefEntry", F.TYPE_MESSAGE, ".tensorflow.SignatureDef")
    sig_map.field.append(_field("signature_def", 1, F.TYPE_MESSAGE, REP,
                                ".tensorflow.serving.SignatureDefMap.SignatureDefEntry"))
    req = f.message_type.add(name="GetModelMetadataRequest")
    req.field.extend([_field("model_spec", 1, F.TYPE_MESSAGE, type_name=".tensorflow.serving.ModelSpec"),
                      _field("metadata_field", 2, F.TYPE_STRING, REP)])
    resp = f.message_type.add(name="GetModelMetadataResponse")
    _map_entry(resp, "MetadataEntry", F.TYPE_MESSAGE, ".google.protobuf.Any")
    resp.field.extend([
        _field("model_spec", 1, F.TYPE_MESSAGE, type_name=".tensorflow.serving.ModelSpec"),
        _field("metadata", 2, F.TYPE_MESSAGE, REP, ".tensorflow.serving.GetModelMetadataResponse.MetadataEntry"),
    ])
    return f


def file_descriptor_protos() -> list[descriptor_pb2.FileDescriptorProto]:
    """The hand-written files of this module, in dependency order."""
    return [*_tensor_files(), _meta_graph_file(), _predict_file(), _get_model_metadata_file()]


POOL = health_protos.build_pool(official=(wrappers_pb2.DESCRIPTOR, any_pb2.DESCRIPTOR), extra=file_descriptor_protos())


def _message(full_name: str) -> Any:
    return health_protos.message_class(POOL, full_name)


ModelSpec = _message("tensorflow.serving.ModelSpec")
TensorShapeProto = _message("tensorflow.TensorShapeProto")
TensorProto = _message("tensorflow.TensorProto")
TensorInfo = _message("tensorflow.TensorInfo")
SignatureDef = _message("tensorflow.SignatureDef")
PredictRequest = _message("tensorflow.serving.PredictRequest")
PredictResponse = _message("tensorflow.serving.PredictResponse")
SignatureDefMap = _message("tensorflow.serving.SignatureDefMap")
GetModelMetadataRequest = _message("tensorflow.serving.GetModelMetadataRequest")
GetModelMetadataResponse = _message("tensorflow.serving.GetModelMetadataResponse")
