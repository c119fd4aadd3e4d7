"""Golden requests: the pre-flight's requests, read from TF Serving's REST `:predict` format,
and the comparison of an answer with the outputs a request expects. Pure functions.

A golden request file is a JSON array of request bodies (or one body alone), each exactly as
TF Serving's REST API takes it (`tensorflow_serving/g3doc/api_rest.md`): an optional
`"signature_name"`, and `"instances"` (row format) or `"inputs"` (columnar format). A request
may add the answer it must give, in the form TF Serving answers that format with:
`"predictions"` for `"instances"`, `"outputs"` for `"inputs"`
(`tensorflow_serving/util/json_tensor.cc`, MakeJsonFromTensors).

Expected numbers match within a tolerance: |got - want| <= tolerance * max(1, |want|), so
the tolerance is absolute for values up to 1 and relative above (float32 outputs of large
magnitude carry fewer decimals). Strings, booleans and nulls must be equal; lists must have
the same length and objects the same keys.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

# TF Serving replays at most this many warmup records (g3doc/saved_model_warmup.md); a
# pre-flight that also warms the model keeps to the same bound.
MAX_REQUESTS = 1000
DEFAULT_SIGNATURE = "serving_default"  # tensorflow::kDefaultServingSignatureDefKey
DEFAULT_TOLERANCE = 1e-5
# What a message quotes of an answer or an expectation.
QUOTE_CHARS = 240

_REQUEST_KEYS = frozenset({"signature_name", "instances", "inputs", "predictions", "outputs"})


class GoldenError(ValueError):
    """A golden request file that cannot be used; the message names the request and the rule."""


@dataclass(frozen=True)
class GoldenRequest:
    """One request: its REST body (without the expectation) and what it must return."""

    index: int  # from 0, in the file's order
    body: dict[str, Any]
    signature: str
    # "predictions" or "outputs" when the request says what it must return, else None.
    expected_key: str | None = None
    expected: Any = None

    @property
    def form(self) -> str:
        """"row" for instances, "columnar" for inputs (as `tensors.request_tensors` names them)."""
        return "row" if "instances" in self.body else "columnar"


def parse_requests(text: str) -> tuple[GoldenRequest, ...]:
    """The requests of a golden request file; GoldenError says what is wrong and where."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GoldenError(f"not JSON: {exc}") from None
    return requests_from_json(doc)


def requests_from_json(doc: Any) -> tuple[GoldenRequest, ...]:
    items = doc if isinstance(doc, list) else [doc]
    if not items:
        raise GoldenError("the file holds no request: give a JSON array of TF Serving :predict request bodies")
    if len(items) > MAX_REQUESTS:
        raise GoldenError(f"{len(items)} requests: at most {MAX_REQUESTS} are allowed")
    return tuple(_request(i, item) for i, item in enumerate(items))


def _request(index: int, item: Any) -> GoldenRequest:
    where = f"request {index + 1}"
    if not isinstance(item, dict):
        raise GoldenError(f'{where}: must be a JSON object with "instances" or "inputs", not {_kind(item)}')
    unknown = sorted(set(item) - _REQUEST_KEYS)
    if unknown:
        raise GoldenError(f"{where}: unknown key {', '.join(map(repr, unknown))}: a request has signature_name, "
                          "instances or inputs, and optionally the predictions or outputs it must return")
    if ("instances" in item) == ("inputs" in item):
        raise GoldenError(f'{where}: needs exactly one of "instances" (row format) and "inputs" (columnar format)')
    if "instances" in item and (not isinstance(item["instances"], list) or not item["instances"]):
        raise GoldenError(f'{where}: "instances" must be a non-empty list')
    if "predictions" in item and "outputs" in item:
        raise GoldenError(f'{where}: give "predictions" or "outputs", not both')
    if "outputs" in item and "instances" in item:
        raise GoldenError(f'{where}: a row-format request ("instances") is answered with "predictions", '
                          'not "outputs"')
    if "predictions" in item and "inputs" in item:
        raise GoldenError(f'{where}: a columnar request ("inputs") is answered with "outputs", '
                          'not "predictions"')
    signature = item.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(signature, str) or not signature:
        raise GoldenError(f'{where}: "signature_name" must be a non-empty string')
    expected_key = "predictions" if "predictions" in item else "outputs" if "outputs" in item else None
    body = {k: v for k, v in item.items() if k not in ("predictions", "outputs")}
    return GoldenRequest(index, body, signature, expected_key, item.get(expected_key) if expected_key else None)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null" if value is None else type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def first_difference(got: Any, want: Any, tolerance: float, path: str) -> str | None:
    """Where `got` first differs from `want` ("predictions[0][1] is 7.0, expected 2.5"), or None."""
    if _is_number(want):
        if not _is_number(got):
            return f"{path} is {_quote(got)}, expected the number {_quote(want)}"
        if math.isnan(want) and math.isnan(got):
            return None
        if math.isinf(want) or math.isinf(got):
            return None if got == want else f"{path} is {_quote(got)}, expected {_quote(want)}"
        if abs(got - want) <= tolerance * max(1.0, abs(want)):
            return None
        return f"{path} is {_quote(got)}, expected {_quote(want)}"
    if isinstance(want, list):
        if not isinstance(got, list):
            return f"{path} is {_quote(got)}, expected a list of {len(want)}"
        if len(got) != len(want):
            return f"{path} has {len(got)} entries, expected {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            found = first_difference(g, w, tolerance, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return f"{path} is {_quote(got)}, expected an object with {', '.join(sorted(want))}"
        if set(got) != set(want):
            return f"{path} has the keys {', '.join(sorted(got)) or 'none'}, expected {', '.join(sorted(want))}"
        for key in sorted(want):
            found = first_difference(got[key], want[key], tolerance, f"{path}.{key}")
            if found:
                return found
        return None
    return None if got == want and type(got) is type(want) else f"{path} is {_quote(got)}, expected {_quote(want)}"


def mismatch(request: GoldenRequest, answer: dict[str, Any], tolerance: float) -> str | None:
    """Why the answer does not match what the request expects (None: it matches, or nothing is
    expected): which value differs, what came back, what was expected."""
    if request.expected_key is None:
        return None
    key = request.expected_key
    if key not in answer:
        return f"the answer has no {key!r}: {_quote(answer)}"
    where = first_difference(answer[key], request.expected, tolerance, key)
    if where is None:
        return None
    return (f"{where} (tolerance {tolerance:g}); returned {_quote(answer[key])}, "
            f"expected {_quote(request.expected)}")


def _quote(value: Any) -> str:
    text = json.dumps(value, separators=(", ", ": "), allow_nan=True)
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 3] + "..."
