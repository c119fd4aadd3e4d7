"""The exact JSON text TF Serving's REST API writes.

Predict responses and errors come from rapidjson's PrettyWriter (tensorflow_serving/util/
json_tensor.cc): four-space indents, and for the row format a single-line array mode
switched on per instance, which gives TF Serving's familiar
`"predictions": [2.5, 3.0, 4.5\n    ]`. Floats are written by WriteDecimal: absl's six
significant digits, full precision when that does not round-trip, ".0" added to whole
numbers, NaN/Infinity spelled out. Model status and metadata come from protobuf's
MessageToJsonString with add_whitespace (one-space indents, int64 as strings, enums by
name, map keys sorted; http_rest_api_util.cc).
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

from google.protobuf import json_format

SINGLE_LINE_ARRAY = 1


def _escape(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


class PrettyWriter:
    """rapidjson::PrettyWriter<StringBuffer> (indent 4 spaces)."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self._levels: list[list[Any]] = []  # [in_array, value_count]
        self._has_root = False
        self.format = 0

    def _indent(self) -> None:
        self.out.append(" " * (4 * len(self._levels)))

    def _prefix(self) -> None:
        if self._levels:
            level = self._levels[-1]
            in_array, count = level
            if in_array:
                if count > 0:
                    self.out.append(",")
                    if self.format & SINGLE_LINE_ARRAY:
                        self.out.append(" ")
                if not self.format & SINGLE_LINE_ARRAY:
                    self.out.append("\n")
                    self._indent()
            else:
                if count > 0:
                    self.out.append(",\n" if count % 2 == 0 else ": ")
                else:
                    self.out.append("\n")
                if count % 2 == 0:
                    self._indent()
            level[1] += 1
        else:
            self._has_root = True

    def raw(self, text: str) -> None:
        self._prefix()
        self.out.append(text)

    def string(self, text: str) -> None:
        self.raw(_escape(text))

    key = string

    def start_object(self) -> None:
        self._prefix()
        self.out.append("{")
        self._levels.append([False, 0])

    def end_object(self) -> None:
        level = self._levels.pop()
        if level[1]:
            self.out.append("\n")
            self._indent()
        self.out.append("}")

    def start_array(self) -> None:
        self._prefix()
        self.out.append("[")
        self._levels.append([True, 0])

    def end_array(self) -> None:
        level = self._levels.pop()
        if level[1] and not self.format & SINGLE_LINE_ARRAY:
            self.out.append("\n")
            self._indent()
        self.out.append("]")

    def text(self) -> str:
        return "".join(self.out)


def _float32(x: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def decimal(value: float) -> str:
    """json_tensor.cc WriteDecimal for a float32 value."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:.6g}"
    if _float32(float(text)) != value:
        text = f"{value:.9g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _write_values(w: PrettyWriter, shape: list[int], values: list[float], dim: int, offset: list[int]) -> None:
    """AddTensorValues."""
    if dim > len(shape) - 1:
        w.raw(decimal(values[offset[0]]))
        offset[0] += 1
        return
    w.start_array()
    for _ in range(shape[dim]):
        _write_values(w, shape, values, dim + 1, offset)
    w.end_array()


def predict_row(outputs: dict[str, tuple[list[int], list[float]]]) -> str:
    """MakeRowFormatJsonFromTensors (outputs: alias -> (shape, values)); ValueError on a
    tensor without a batch dimension, as TF Serving's InvalidArgument."""
    batch = -1
    for name, (shape, _) in outputs.items():
        if not shape:
            raise ValueError(f"Tensor name: {name} has no shape information ")
        if batch >= 0 and shape[0] != batch:
            raise ValueError(f"Tensor name: {name} has inconsistent batch size: {shape[0]} expecting: {batch}")
        batch = shape[0]
    names = sorted(outputs)
    offsets = {n: [0] for n in names}
    w = PrettyWriter()
    w.start_object()
    w.key("predictions")
    w.start_array()
    objects = len(names) > 1
    for _ in range(batch):
        if objects:
            w.start_object()
        w.format = SINGLE_LINE_ARRAY
        for name in names:
            if objects:
                w.key(name)
            shape, values = outputs[name]
            _write_values(w, shape, values, 1, offsets[name])
        w.format = 0
        if objects:
            w.end_object()
    w.end_array()
    w.end_object()
    return w.text()


def predict_columnar(outputs: dict[str, tuple[list[int], list[float]]]) -> str:
    """MakeColumnarFormatJsonFromTensors."""
    w = PrettyWriter()
    w.start_object()
    w.key("outputs")
    objects = len(outputs) > 1
    if objects:
        w.start_object()
    for name in sorted(outputs):
        if objects:
            w.key(name)
        shape, values = outputs[name]
        _write_values(w, shape, values, 0, [0])
    if objects:
        w.end_object()
    w.end_object()
    return w.text()


def error(message: str) -> str:
    """MakeJsonFromStatus."""
    w = PrettyWriter()
    w.start_object()
    w.key("error")
    w.string(message)
    w.end_object()
    return w.text()


def _order(message: Any, data: Any) -> Any:
    """Fields as TF Serving's protobuf prints them: plain fields in declaration order, then
    the set member of each oneof; map keys sorted (the documented REST outputs)."""
    if not isinstance(data, dict):
        return data
    out: dict[str, Any] = {}
    descriptor = message.DESCRIPTOR
    plain = [f for f in descriptor.fields if f.containing_oneof is None]
    oneofs = [f for f in descriptor.fields if f.containing_oneof is not None]
    for f in [*plain, *oneofs]:
        key = f.name
        if key not in data:
            continue
        value = data[key]
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            value_field = f.message_type.fields_by_name["value"]
            sub = getattr(message, f.name)
            value = {
                k: (_order(sub[k], value[k]) if value_field.message_type is not None else value[k])
                for k in sorted(value)
            }
        elif f.message_type is not None and f.is_repeated:
            value = [_order(m, d) for m, d in zip(getattr(message, f.name), value, strict=True)]
        elif f.message_type is not None and f.message_type.full_name.startswith("google.protobuf."):
            pass  # well-known types print as plain values
        elif f.message_type is not None:
            value = _order(getattr(message, f.name), value)
        out[key] = value
    return out


def proto_json(message: Any, *, preserve_names: bool = False) -> str:
    """MessageToJsonString with add_whitespace and always_print_fields_with_no_presence."""
    data = json_format.MessageToDict(
        message,
        preserving_proto_field_name=preserve_names,
        always_print_fields_with_no_presence=True,
        use_integers_for_enums=False,
    )
    if preserve_names:
        data = _order(message, data)
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"
