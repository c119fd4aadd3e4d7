"""Minimal, TensorFlow-free protobuf definitions for TF Serving's ModelService.

The official generated modules (`tensorflow_serving.apis.*_pb2`) import TensorFlow, which
the operator image must not carry. Only the wire format matters to a gRPC peer: package
and message names (for the method path), field numbers and field types. These descriptors
are built by hand from that documented format and kept in a private descriptor pool, so
they never clash with other modules registering `tensorflow.serving` names in the default
pool. `tests/health/test_wire_compat.py` checks every number and type against the
descriptors shipped in `tensorflow-serving-api`.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

F = descriptor_pb2.FieldDescriptorProto

MODEL_SERVICE = "tensorflow.serving.ModelService"
GET_MODEL_STATUS_METHOD = f"/{MODEL_SERVICE}/GetModelStatus"

# tensorflow.error.Code mirrors the canonical gRPC codes. Only the name and values are
# needed: StatusProto.error_code is an enum of this type.
ERROR_CODES: dict[str, int] = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
ERROR_CODE_NAMES: dict[int, str] = {v: k for k, v in ERROR_CODES.items()}

# ModelVersionStatus.State: the numbers leave gaps on purpose in the official proto.
STATES: dict[str, int] = {
    "UNKNOWN": 0,
    "START": 10,
    "LOADING": 20,
    "AVAILABLE": 30,
    "UNLOADING": 40,
    "END": 50,
}
STATE_NAMES: dict[int, str] = {v: k for k, v in STATES.items()}

ERROR_CODES_FILE = "tensorflow/core/protobuf/error_codes.proto"
MODEL_FILE = "tensorflow_serving/apis/model.proto"
STATUS_FILE = "tensorflow_serving/apis/status.proto"
GET_MODEL_STATUS_FILE = "tensorflow_serving/apis/get_model_status.proto"


def _field(
    name: str,
    number: int,
    ftype: int,
    *,
    label: int = F.LABEL_OPTIONAL,
    type_name: str = "",
    json_name: str = "",
    oneof_index: int | None = None,
) -> Any:
    field = F(name=name, number=number, type=ftype, label=label)
    if type_name:
        field.type_name = type_name
    if json_name:
        field.json_name = json_name
    if oneof_index is not None:
        field.oneof_index = oneof_index
    return field


def _enum(name: str, values: dict[str, int]) -> descriptor_pb2.EnumDescriptorProto:
    enum = descriptor_pb2.EnumDescriptorProto(name=name)
    for value_name, number in values.items():
        enum.value.add(name=value_name, number=number)
    return enum


def _error_codes_file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(
        name=ERROR_CODES_FILE, package="tensorflow.error", syntax="proto3"
    )
    f.enum_type.append(_enum("Code", ERROR_CODES))
    return f


def _model_file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(
        name=MODEL_FILE,
        package="tensorflow.serving",
        syntax="proto3",
        dependency=[wrappers_pb2.DESCRIPTOR.name],
    )
    spec = f.message_type.add(name="ModelSpec")
    spec.oneof_decl.add(name="version_choice")
    spec.field.extend(
        [
            _field("name", 1, F.TYPE_STRING),
            _field(
                "version", 2, F.TYPE_MESSAGE, type_name=".google.protobuf.Int64Value", oneof_index=0
            ),
            _field("version_label", 4, F.TYPE_STRING, oneof_index=0),
            _field("signature_name", 3, F.TYPE_STRING),
        ]
    )
    return f


def _status_file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(
        name=STATUS_FILE,
        package="tensorflow.serving",
        syntax="proto3",
        dependency=[ERROR_CODES_FILE],
    )
    status = f.message_type.add(name="StatusProto")
    status.field.extend(
        [
            _field(
                "error_code",
                1,
                F.TYPE_ENUM,
                type_name=".tensorflow.error.Code",
                json_name="error_code",
            ),
            _field("error_message", 2, F.TYPE_STRING, json_name="error_message"),
        ]
    )
    return f


def _get_model_status_file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(
        name=GET_MODEL_STATUS_FILE,
        package="tensorflow.serving",
        syntax="proto3",
        dependency=[MODEL_FILE, STATUS_FILE],
    )
    request = f.message_type.add(name="GetModelStatusRequest")
    request.field.append(
        _field("model_spec", 1, F.TYPE_MESSAGE, type_name=".tensorflow.serving.ModelSpec")
    )
    mvs = f.message_type.add(name="ModelVersionStatus")
    mvs.enum_type.append(_enum("State", STATES))
    mvs.field.extend(
        [
            _field("version", 1, F.TYPE_INT64),
            _field(
                "state", 2, F.TYPE_ENUM, type_name=".tensorflow.serving.ModelVersionStatus.State"
            ),
            _field("status", 3, F.TYPE_MESSAGE, type_name=".tensorflow.serving.StatusProto"),
        ]
    )
    response = f.message_type.add(name="GetModelStatusResponse")
    response.field.append(
        _field(
            "model_version_status",
            1,
            F.TYPE_MESSAGE,
            label=F.LABEL_REPEATED,
            type_name=".tensorflow.serving.ModelVersionStatus",
            json_name="model_version_status",
        )
    )
    return f


def file_descriptor_protos() -> list[descriptor_pb2.FileDescriptorProto]:
    """The hand-written files, in dependency order (wrappers.proto is not included).

    Other TF-free definitions (the test fake's Predict messages) build on these by adding
    them to their own pool.
    """
    return [_error_codes_file(), _model_file(), _status_file(), _get_model_status_file()]


def build_pool(official: tuple[Any, ...] = (wrappers_pb2.DESCRIPTOR,),
               extra: list[descriptor_pb2.FileDescriptorProto] | None = None) -> descriptor_pool.DescriptorPool:
    """A fresh pool with protobuf's own `official` files (wrappers.proto by default), the
    hand-written files, then `extra` ones that build on them."""
    pool = descriptor_pool.DescriptorPool()
    for descriptor in official:
        proto = descriptor_pb2.FileDescriptorProto()
        descriptor.CopyToProto(proto)
        pool.Add(proto)
    for f in [*file_descriptor_protos(), *(extra or [])]:
        pool.Add(f)
    return pool


def message_class(pool: descriptor_pool.DescriptorPool, full_name: str) -> Any:
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))


POOL = build_pool()


def _message(full_name: str) -> Any:
    return message_class(POOL, full_name)


ModelSpec = _message("tensorflow.serving.ModelSpec")
StatusProto = _message("tensorflow.serving.StatusProto")
GetModelStatusRequest = _message("tensorflow.serving.GetModelStatusRequest")
ModelVersionStatus = _message("tensorflow.serving.ModelVersionStatus")
GetModelStatusResponse = _message("tensorflow.serving.GetModelStatusResponse")
