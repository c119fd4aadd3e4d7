"""TF Serving's REST request and response JSON, and the tensors of its gRPC Predict.

Pure functions: a REST request body (`{"instances": ...}` or `{"inputs": ...}`) becomes the
TensorProtos of a PredictRequest, given the signature's inputs (from GetModelMetadata), and a
PredictResponse's tensors become the JSON TF Serving's REST API answers with: `{"predictions":
[...]}` (row format) or `{"outputs": ...}` (columnar). The forms follow TF Serving's
`tensorflow_serving/util/json_tensor.cc`: a plain list of instances feeds the one input of a
single-input signature; a list of objects names the inputs; a string is a DT_STRING value and
`{"b64": "..."}` its bytes in base64; a row-format answer has one entry per batch element, an
object of every output when there are several.
"""

from __future__ import annotations

import base64
import math
import struct
from dataclasses import dataclass
from typing import Any

from tfleet.cli import predict_protos as protos

DT = protos.DATA_TYPES
# dtype -> (TensorProto field, struct format of tensor_content)
_VALUE_FIELDS: dict[int, tuple[str, str]] = {
    DT["DT_FLOAT"]: ("float_val", "f"),
    DT["DT_DOUBLE"]: ("double_val", "d"),
    DT["DT_HALF"]: ("half_val", "e"),
    DT["DT_INT32"]: ("int_val", "i"),
    DT["DT_INT16"]: ("int_val", "h"),
    DT["DT_INT8"]: ("int_val", "b"),
    DT["DT_UINT8"]: ("int_val", "B"),
    DT["DT_UINT16"]: ("int_val", "H"),
    DT["DT_INT64"]: ("int64_val", "q"),
    DT["DT_UINT32"]: ("uint32_val", "I"),
    DT["DT_UINT64"]: ("uint64_val", "Q"),
    DT["DT_BOOL"]: ("bool_val", "?"),
    DT["DT_STRING"]: ("string_val", ""),
}
_FLOATS = {DT["DT_FLOAT"], DT["DT_DOUBLE"], DT["DT_HALF"]}
_INTEGERS = {DT[n] for n in ("DT_INT32", "DT_INT16", "DT_INT8", "DT_UINT8", "DT_UINT16", "DT_INT64",
                             "DT_UINT32", "DT_UINT64")}


class RequestError(ValueError):
    """A request body that cannot become tensors; the message names the place and the rule."""


@dataclass(frozen=True)
class InputSpec:
    dtype: int


def dtype_name(dtype: int) -> str:
    return protos.DATA_TYPE_NAMES.get(dtype, f"dtype {dtype}").removeprefix("DT_").lower()


def signature_inputs(signature: Any) -> dict[str, InputSpec]:
    """The inputs of a SignatureDef: alias -> dtype."""
    return {alias: InputSpec(int(info.dtype)) for alias, info in signature.inputs.items()}


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _flatten(value: Any, shape: list[int], level: int, where: str, out: list[Any]) -> None:
    if level == len(shape):
        if isinstance(value, list):
            raise RequestError(f"{where}: a list where a value was expected (the shape is {shape})")
        out.append(value)
        return
    if not isinstance(value, list) or len(value) != shape[level]:
        got = f"a list of {len(value)}" if isinstance(value, list) else "a value"
        raise RequestError(f"{where}: expected a list of {shape[level]} (the shape is {shape}), got {got}")
    for i, item in enumerate(value):
        _flatten(item, shape, level + 1, f"{where}[{i}]", out)


def _convert(value: Any, dtype: int, where: str) -> Any:
    if dtype == DT["DT_STRING"]:
        if _is_b64(value):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except ValueError:
                raise RequestError(f"{where}: not valid base64") from None
        if isinstance(value, str):
            return value.encode()
        raise RequestError(f"{where}: expected a string for a string input, got {value!r}")
    if dtype == DT["DT_BOOL"]:
        if isinstance(value, bool):
            return value
        raise RequestError(f"{where}: expected true or false for a bool input, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(f"{where}: expected a number for a {dtype_name(dtype)} input, got {value!r}")
    if dtype in _INTEGERS:
        if isinstance(value, float) and not value.is_integer():
            raise RequestError(f"{where}: expected an integer for a {dtype_name(dtype)} input, got {value!r}")
        return int(value)
    return float(value)


def make_tensor(value: Any, dtype: int, where: str, *, batch: list[Any] | None = None) -> Any:
    """A TensorProto of `value` (or, with `batch`, of those values stacked on a new first axis)."""
    if dtype not in _VALUE_FIELDS:
        raise RequestError(f"{where}: inputs of type {dtype_name(dtype)} are not supported")
    items = batch if batch is not None else [value]
    shapes = [[] if _is_b64(v) else _shape(v) for v in items]
    inner = shapes[0]
    flat: list[Any] = []
    for i, item in enumerate(items):
        item_where = f"{where}[{i}]" if batch is not None else where
        if shapes[i] != inner:
            raise RequestError(f"{item_where}: shape {shapes[i]} differs from the first one's, {inner}")
        values: list[Any] = []
        _flatten(item, inner, 0, item_where, values)
        flat.extend(_convert(v, dtype, item_where) for v in values)
    tensor = protos.TensorProto(dtype=dtype)
    for size in ([len(items)] if batch is not None else []) + inner:
        tensor.tensor_shape.dim.add(size=size)
    field_name = _VALUE_FIELDS[dtype][0]
    if dtype == DT["DT_HALF"]:
        # half_val holds the IEEE half's bits in an int32.
        flat = [struct.unpack("<H", struct.pack("<e", v))[0] for v in flat]
    getattr(tensor, field_name).extend(flat)
    return tensor


def request_tensors(body: dict[str, Any], inputs: dict[str, InputSpec]) -> tuple[str, dict[str, Any]]:
    """("row" | "columnar", alias -> TensorProto) for a TF Serving REST request body."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object with \"instances\" or \"inputs\"")
    if "instances" in body and "inputs" in body:
        raise RequestError('the request has both "instances" and "inputs"; give one of them')
    if not inputs:
        raise RequestError("the signature has no inputs")
    names = sorted(inputs)
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise RequestError('"instances" must be a non-empty list')
        objects = isinstance(instances[0], dict) and not _is_b64(instances[0])
        if not objects:
            if len(inputs) > 1:
                raise RequestError(f"the signature has {len(inputs)} inputs ({', '.join(names)}): each instance "
                                   "must be an object naming them")
            if any(isinstance(i, dict) and not _is_b64(i) for i in instances):
                raise RequestError("instances mix objects and plain values")
            return "row", {names[0]: make_tensor(None, inputs[names[0]].dtype, "instances", batch=instances)}
        for i, item in enumerate(instances):
            if not isinstance(item, dict) or _is_b64(item):
                raise RequestError(f"instances[{i}]: expected an object like the first instance")
            if set(item) != set(inputs):
                raise RequestError(f"instances[{i}]: the keys must be the signature's inputs: {', '.join(names)}")
        return "row", {name: make_tensor(None, inputs[name].dtype, f"instances[].{name}",
                                         batch=[item[name] for item in instances]) for name in names}
    if "inputs" in body:
        columns = body["inputs"]
        if isinstance(columns, dict) and not _is_b64(columns):
            missing = [n for n in names if n not in columns]
            if missing:
                raise RequestError(f'"inputs" lacks the input(s) {", ".join(missing)}')
            return "columnar", {n: make_tensor(columns[n], inputs[n].dtype, f"inputs.{n}") for n in names}
        if len(inputs) > 1:
            raise RequestError(f'the signature has {len(inputs)} inputs: "inputs" must be an object naming them')
        return "columnar", {names[0]: make_tensor(columns, inputs[names[0]].dtype, "inputs")}
    raise RequestError('the request body needs "instances" or "inputs"')


def tensor_values(tensor: Any) -> tuple[list[int], list[Any]]:
    """(shape, flat values) of a TensorProto, as tensorflow::Tensor::FromProto reads it:
    tensor_content when set, else the typed field, its last value repeated to fill the shape."""
    shape = [int(d.size) for d in tensor.tensor_shape.dim]
    count = math.prod(shape)
    dtype = int(tensor.dtype)
    if dtype not in _VALUE_FIELDS:
        raise ValueError(f"outputs of type {dtype_name(dtype)} cannot be shown")
    field_name, fmt = _VALUE_FIELDS[dtype]
    values: list[Any]
    if tensor.tensor_content and fmt:
        size = struct.calcsize(fmt)
        if len(tensor.tensor_content) != size * count:
            raise ValueError(f"tensor_content holds {len(tensor.tensor_content)} bytes, not {count} values")
        values = list(struct.unpack(f"<{count}{fmt}", tensor.tensor_content))
    else:
        values = list(getattr(tensor, field_name))
        if dtype == DT["DT_HALF"]:
            values = [struct.unpack("<e", struct.pack("<H", v & 0xFFFF))[0] for v in values]
        if len(values) < count:
            values += [values[-1] if values else _zero(dtype)] * (count - len(values))
        values = values[:count]
    if dtype == DT["DT_STRING"]:
        values = [_string_json(v) for v in values]
    return shape, values


def _zero(dtype: int) -> Any:
    return b"" if dtype == DT["DT_STRING"] else False if dtype == DT["DT_BOOL"] else 0


def _string_json(value: bytes) -> Any:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(value).decode()}


def _nest(shape: list[int], values: list[Any]) -> Any:
    if not shape:
        return values[0]
    if len(shape) == 1:
        return list(values)
    step = math.prod(shape[1:])
    return [_nest(shape[1:], values[i * step:(i + 1) * step]) for i in range(shape[0])]


def response_json(outputs: dict[str, Any], form: str) -> dict[str, Any]:
    """What TF Serving's REST API answers for these output tensors (alias -> TensorProto)."""
    if not outputs:
        raise ValueError("the answer has no outputs")
    decoded = {name: tensor_values(tensor) for name, tensor in sorted(outputs.items())}
    if form == "columnar":
        nested = {name: _nest(shape, values) for name, (shape, values) in decoded.items()}
        return {"outputs": next(iter(nested.values())) if len(nested) == 1 else nested}
    batch = None
    for name, (shape, _) in decoded.items():
        if not shape:
            raise ValueError(f"output {name} has no batch dimension")
        if batch is not None and shape[0] != batch:
            raise ValueError(f"output {name} has batch size {shape[0]}, the others {batch}")
        batch = shape[0]
    rows: list[Any] = []
    per_row = {name: _nest(shape, values) for name, (shape, values) in decoded.items()}
    for i in range(batch or 0):
        if len(per_row) == 1:
            rows.append(next(iter(per_row.values()))[i])
        else:
            rows.append({name: nested[i] for name, nested in per_row.items()})
    return {"predictions": rows}
