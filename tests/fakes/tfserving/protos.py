"""Just enough of TensorFlow's tensor protos and TF Serving's Predict for the fake.

The model-status messages come from the operator's own TF-free definitions
(`tfleet.health.protos`); this adds TensorShapeProto, TensorProto (float only, plus the
field numbers of the other value kinds so real clients' messages parse), PredictRequest and
PredictResponse, in a private descriptor pool.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

from tfleet.health import protos as health_protos

F = descriptor_pb2.FieldDescriptorProto
OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"

DT_FLOAT = 1


def _field(
    name: str, number: int, ftype: int, label: int = OPT, type_name: str = "", packed: bool = False
) -> Any:
    f = F(name=name, number=number, type=ftype, label=label)
    if type_name:
        f.type_name = type_name
    if packed:
        f.options.packed = True
    return f


def _tensor_files() -> list[descriptor_pb2.FileDescriptorProto]:
    types = descriptor_pb2.FileDescriptorProto(
        name="tensorflow/core/framework/types.proto", package="tensorflow", syntax="proto3"
    )
    dtype = types.enum_type.add(name="DataType")
    for name, number in [("DT_INVALID", 0), ("DT_FLOAT", 1), ("DT_DOUBLE", 2), ("DT_INT32", 3)]:
        dtype.value.add(name=name, number=number)

    shape = descriptor_pb2.FileDescriptorProto(
        name="tensorflow/core/framework/tensor_shape.proto", package="tensorflow", syntax="proto3"
    )
    shape_msg = shape.message_type.add(name="TensorShapeProto")
    dim = shape_msg.nested_type.add(name="Dim")
    dim.field.extend([_field("size", 1, F.TYPE_INT64), _field("name", 2, F.TYPE_STRING)])
    shape_msg.field.extend(
        [
            _field("dim", 2, F.TYPE_MESSAGE, REP, ".tensorflow.TensorShapeProto.Dim"),
            _field("unknown_rank", 3, F.TYPE_BOOL),
        ]
    )

    tensor = descriptor_pb2.FileDescriptorProto(
        name="tensorflow/core/framework/tensor.proto",
        package="tensorflow",
        syntax="proto3",
        dependency=[types.name, shape.name],
    )
    t = tensor.message_type.add(name="TensorProto")
    t.field.extend(
        [
            _field("dtype", 1, F.TYPE_ENUM, type_name=".tensorflow.DataType"),
            _field("tensor_shape", 2, F.TYPE_MESSAGE, type_name=".tensorflow.TensorShapeProto"),
            _field("version_number", 3, F.TYPE_INT32),
            _field("tensor_content", 4, F.TYPE_BYTES),
            _field("float_val", 5, F.TYPE_FLOAT, REP, packed=True),
            _field("double_val", 6, F.TYPE_DOUBLE, REP, packed=True),
            _field("int_val", 7, F.TYPE_INT32, REP, packed=True),
            _field("string_val", 8, F.TYPE_BYTES, REP),
            _field("int64_val", 10, F.TYPE_INT64, REP, packed=True),
            _field("bool_val", 11, F.TYPE_BOOL, REP, packed=True),
        ]
    )
    return [types, shape, tensor]


def _map_entry(parent: descriptor_pb2.DescriptorProto, entry: str) -> None:
    e = parent.nested_type.add(name=entry)
    e.options.map_entry = True
    e.field.extend(
        [
            _field("key", 1, F.TYPE_STRING),
            _field("value", 2, F.TYPE_MESSAGE, type_name=".tensorflow.TensorProto"),
        ]
    )


def _predict_file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/apis/predict.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["tensorflow/core/framework/tensor.proto", health_protos.MODEL_FILE],
    )
    req = f.message_type.add(name="PredictRequest")
    _map_entry(req, "InputsEntry")
    req.field.extend(
        [
            _field("model_spec", 1, F.TYPE_MESSAGE, type_name=".tensorflow.serving.ModelSpec"),
            _field(
                "inputs", 2, F.TYPE_MESSAGE, REP, ".tensorflow.serving.PredictRequest.InputsEntry"
            ),
            _field("output_filter", 3, F.TYPE_STRING, REP),
        ]
    )
    resp = f.message_type.add(name="PredictResponse")
    _map_entry(resp, "OutputsEntry")
    resp.field.extend(
        [
            _field("model_spec", 2, F.TYPE_MESSAGE, type_name=".tensorflow.serving.ModelSpec"),
            _field(
                "outputs",
                1,
                F.TYPE_MESSAGE,
                REP,
                ".tensorflow.serving.PredictResponse.OutputsEntry",
            ),
        ]
    )
    return f


def _build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    for f in [*health_protos.file_descriptor_protos(), *_tensor_files(), _predict_file()]:
        pool.Add(f)
    return pool


POOL = _build_pool()


def _message(full_name: str) -> Any:
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(full_name))


ModelSpec = _message("tensorflow.serving.ModelSpec")
GetModelStatusRequest = _message("tensorflow.serving.GetModelStatusRequest")
GetModelStatusResponse = _message("tensorflow.serving.GetModelStatusResponse")
TensorProto = _message("tensorflow.TensorProto")
PredictRequest = _message("tensorflow.serving.PredictRequest")
PredictResponse = _message("tensorflow.serving.PredictResponse")


def float_tensor(values: list[float], shape: list[int] | None = None) -> Any:
    """A DT_FLOAT TensorProto with values in float_val (shape defaults to [len])."""
    t = TensorProto(dtype=DT_FLOAT)
    for size in shape if shape is not None else [len(values)]:
        t.tensor_shape.dim.add(size=size)
    t.float_val.extend(values)
    return t
