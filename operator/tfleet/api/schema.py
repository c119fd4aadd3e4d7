"""A small declarative schema layer: typed, frozen dataclasses are the single source of truth.

The same field declarations produce the CRD's OpenAPI v3 schema (`openapi_schema`) and parse
a plain dict into typed objects with defaults applied (`parse`). Because both come from one
declaration, the schema the API server enforces and the rules `tfleet render` applies offline
cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin

from tfleet.durations import parse_duration

T = TypeVar("T")


class Quantity(str):
    """Type marker: a Kubernetes resource quantity, an integer or a string such as "500m".

    The markers only select schema and parsing rules; parsed values are plain str/int.
    """


class IntOrString(str):
    """Type marker: an int-or-string value such as a rollout's maxSurge ("25%" or 1)."""


class Duration(str):
    """Type marker: a Go-style duration such as "90s", "2m" or "1h30m"."""


# Opaque pass-through objects (pod affinity) keep unknown fields; see `openapi_schema`.
Passthrough = dict[str, Any]

# Binary suffixes always carry the "i" (1Ki); "1K" is not a quantity, as the API server says.
_QUANTITY_PATTERN = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[munkMGTPE])?$"
_DURATION_PATTERN = r"^(\d+(ms|s|m|h))+$"
# Integers are published as format int32; the API server refuses what does not fit.
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
# Pass-through objects (pod affinity) are copied into children as they are; a real affinity
# nests about eight levels, so anything far deeper is a mistake or an attack.
PASSTHROUGH_MAX_DEPTH = 32


@functools.cache
def go_regex(pattern: str) -> re.Pattern[str]:
    """`pattern` as Go's regexp (RE2, which the API server uses) reads it: ASCII classes such
    as \\d, and `$` only at the very end of the text (Python's `$` also matches before a final
    newline)."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern, re.ASCII)


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether a JSON value nests more than `limit` levels, without recursing into Python's stack."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False
def duration_seconds(value: str) -> float:
    """Seconds in a duration string such as "1m30s" (Go's reading, shared with the CLI's flags)."""
    return parse_duration(value)


@dataclass(frozen=True)
class Rule:
    """A cross-field rule, published as a CEL `x-kubernetes-validations` entry.

    `rule` is the CEL expression the API server evaluates; the typed model checks the same
    rule in Python (in `tfleet.api`) so that offline rendering reports it too. A test evaluates
    every CEL rule with cel-python against the Python check on the same cases.
    """

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None

    def to_openapi(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out


def field(
    description: str,
    *,
    default: Any = dataclasses.MISSING,
    default_factory: Any = dataclasses.MISSING,
    name: str | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
    enum: tuple[str, ...] | None = None,
    pattern: str | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    min_items: int | None = None,
    max_items: int | None = None,
    max_properties: int | None = None,
    value_max_length: int | None = None,
    item_max_length: int | None = None,
    list_type: str | None = None,
    list_map_keys: tuple[str, ...] | None = None,
    rules: tuple[Rule, ...] = (),
    publish_default: bool = True,
) -> Any:
    """Declare a field of an API object.

    `name` is the JSON name (default: camelCase of the attribute). A field with neither
    default nor default_factory is required. `publish_default=False` keeps a default out of
    the CRD when it depends on other fields and is computed by the operator.
    `max_properties` bounds a map's entries and `value_max_length` each of its string values
    (`item_max_length` each string of a list): besides being rules of their own, they bound the
    cost the API server estimates for CEL rules that walk the map or list.
    """
    meta = {
        "description": description,
        "json_name": name,
        "minimum": minimum,
        "maximum": maximum,
        "enum": enum,
        "pattern": pattern,
        "min_length": min_length,
        "max_length": max_length,
        "min_items": min_items,
        "max_items": max_items,
        "max_properties": max_properties,
        "value_max_length": value_max_length,
        "item_max_length": item_max_length,
        "list_type": list_type,
        "list_map_keys": list_map_keys,
        "rules": rules,
        "publish_default": publish_default,
    }
    if default is not dataclasses.MISSING:
        return dataclasses.field(default=default, metadata=meta)
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(metadata=meta)


class ApiObject:
    """Base for API dataclasses: class docstring is the object's description."""

    __rules__: ClassVar[tuple[Rule, ...]] = ()


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def json_name(f: dataclasses.Field[Any]) -> str:
    return f.metadata.get("json_name") or camel(f.name)


def _is_required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    # Resolving annotations is the slowest part of parsing; a class's hints never change.
    return typing.get_type_hints(cls)


def _description(cls: type) -> str:
    return " ".join((cls.__doc__ or "").split())


# --------------------------------------------------------------------------- OpenAPI


def openapi_schema(cls: type) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a dataclass, descriptions and rules included."""
    schema: dict[str, Any] = {"type": "object", "description": _description(cls)}
    props: dict[str, Any] = {}
    required: list[str] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        prop = _type_schema(hints[f.name])
        _apply_field_meta(prop, f)
        props[json_name(f)] = prop
        if _is_required(f):
            required.append(json_name(f))
    schema["properties"] = props
    if required:
        schema["required"] = required
    rules = getattr(cls, "__rules__", ())
    if rules:
        schema["x-kubernetes-validations"] = [r.to_openapi() for r in rules]
    return schema


def _type_schema(tp: Any) -> dict[str, Any]:
    tp, _ = _unwrap_optional(tp)
    if tp is Passthrough or (get_origin(tp) is dict and get_args(tp)[1] is Any):
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return openapi_schema(tp)
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer", "format": "int32"}
    if tp is float:
        return {"type": "number"}
    if tp in (Quantity, IntOrString):
        out: dict[str, Any] = {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
        if tp is Quantity:
            out["pattern"] = _QUANTITY_PATTERN
        return out
    if tp is Duration:
        return {"type": "string", "pattern": _DURATION_PATTERN}
    if tp is str:
        return {"type": "string"}
    origin = get_origin(tp)
    if origin in (list, tuple):
        (item,) = get_args(tp)[:1]
        return {"type": "array", "items": _type_schema(item)}
    if origin in (dict, Mapping):
        return {"type": "object", "additionalProperties": _type_schema(get_args(tp)[1])}
    raise TypeError(f"no schema mapping for {tp!r}")


def _apply_field_meta(prop: dict[str, Any], f: dataclasses.Field[Any]) -> None:
    meta = f.metadata
    # A nested object keeps its own (class) description unless the field says more.
    prop["description"] = meta["description"]
    for key, openapi_key in (
        ("minimum", "minimum"),
        ("maximum", "maximum"),
        ("pattern", "pattern"),
        ("min_length", "minLength"),
        ("max_length", "maxLength"),
        ("min_items", "minItems"),
        ("max_items", "maxItems"),
        ("max_properties", "maxProperties"),
        ("list_type", "x-kubernetes-list-type"),
    ):
        if meta.get(key) is not None:
            prop[openapi_key] = meta[key]
    if meta.get("value_max_length") is not None:
        prop["additionalProperties"]["maxLength"] = meta["value_max_length"]
    if meta.get("item_max_length") is not None:
        prop["items"]["maxLength"] = meta["item_max_length"]
    if meta.get("enum"):
        prop["enum"] = list(meta["enum"])
    if meta.get("list_map_keys"):
        prop["x-kubernetes-list-map-keys"] = list(meta["list_map_keys"])
    if meta.get("rules"):
        prop.setdefault("x-kubernetes-validations", []).extend(r.to_openapi() for r in meta["rules"])
    if (
        meta.get("publish_default", True)
        and f.default is not dataclasses.MISSING
        and f.default is not None
        # An empty list as a default only stores `[]` noise in every object: absent means empty.
        and f.default != ()
    ):
        prop["default"] = to_json(f.default)
    elif meta.get("publish_default", True) and f.default_factory is not dataclasses.MISSING:
        produced = f.default_factory()
        if dataclasses.is_dataclass(produced):
            # An empty object lets the API server fill in the nested fields' own defaults.
            prop["default"] = {}
            return
        value = to_json(produced)
        # Empty containers are left undefaulted: the API server would otherwise store `{}`/`[]`
        # noise in every object, and "absent" already means "empty".
        if value not in ({}, []):
            prop["default"] = value


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class FieldError:
    """One problem with the input, located by its field path (`spec.batching.maxBatchSize`)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ValidationError(Exception):
    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (dict, list)):
        return _type_name(value)
    return repr(value).lower() if isinstance(value, bool) else repr(value)


def parse(cls: type[T], data: Any, path: str) -> T:
    """Parse `data` into `cls`, applying defaults. Raises ValidationError listing every problem."""
    errors: list[FieldError] = []
    result = _parse_value(cls, data, path, errors)
    if errors:
        raise ValidationError(errors)
    return typing.cast(T, result)


def _parse_object(cls: type, data: Any, path: str, errors: list[FieldError]) -> Any:
    if not isinstance(data, dict):
        errors.append(FieldError(path, f"must be an object, got {_type_name(data)}"))
        return None
    hints = _hints(cls)
    known = {json_name(f): f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            errors.append(FieldError(f"{path}.{key}", f"unknown field (known fields: {', '.join(known)})"))
    kwargs: dict[str, Any] = {}
    before = len(errors)
    for jname, f in known.items():
        sub = f"{path}.{jname}"
        if jname not in data or data[jname] is None:
            if _is_required(f):
                errors.append(FieldError(sub, "required field is missing"))
            continue
        value = _parse_value(hints[f.name], data[jname], sub, errors)
        _check_constraints(value, f, sub, errors)
        kwargs[f.name] = value
    if len(errors) > before:
        return None
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if check is not None:
        errors.extend(check(path))
    return obj


def _parse_value(tp: Any, value: Any, path: str, errors: list[FieldError]) -> Any:
    tp, _ = _unwrap_optional(tp)
    if tp is Passthrough or (get_origin(tp) is dict and get_args(tp)[1] is Any):
        if not isinstance(value, dict):
            errors.append(FieldError(path, f"must be an object, got {_type_name(value)}"))
        elif _depth_exceeds(value, PASSTHROUGH_MAX_DEPTH):
            errors.append(FieldError(path, f"nested more than {PASSTHROUGH_MAX_DEPTH} levels deep"))
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _parse_object(tp, value, path, errors)
    if tp is bool:
        if not isinstance(value, bool):
            errors.append(FieldError(path, f"must be a boolean, got {_type_name(value)} {_describe(value)}"))
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(FieldError(path, f"must be an integer, got {_type_name(value)} {_describe(value)}"))
        elif not INT32_MIN <= value <= INT32_MAX:
            bound = f"less than or equal to {INT32_MAX}" if value > 0 else f"greater than or equal to {INT32_MIN}"
            errors.append(FieldError(path, f"must be {bound} (an int32), got {value}"))
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(FieldError(path, f"must be a number, got {_type_name(value)} {_describe(value)}"))
            return value
        return float(value)
    if tp in (Quantity, IntOrString):
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            errors.append(FieldError(path, f"must be an integer or a string, got {_type_name(value)}"))
            return value
        if tp is Quantity and not go_regex(_QUANTITY_PATTERN).match(str(value)):
            errors.append(FieldError(path, f'"{value}" is not a valid quantity (for example 500m, 2, 4Gi)'))
        return value
    if tp is Duration:
        if not isinstance(value, str) or not go_regex(_DURATION_PATTERN).match(value):
            errors.append(FieldError(path, f"must be a duration such as 30s, 2m or 1h30m, got {_describe(value)}"))
            return value
        return value
    if tp is str:
        if not isinstance(value, str):
            errors.append(FieldError(path, f"must be a string, got {_type_name(value)} {_describe(value)}"))
        return value
    origin = get_origin(tp)
    if origin in (list, tuple):
        if not isinstance(value, list):
            errors.append(FieldError(path, f"must be a list, got {_type_name(value)}"))
            return ()
        item_tp = get_args(tp)[0]
        return tuple(_parse_value(item_tp, item, f"{path}[{i}]", errors) for i, item in enumerate(value))
    if origin in (dict, Mapping):
        if not isinstance(value, dict):
            errors.append(FieldError(path, f"must be an object, got {_type_name(value)}"))
            return {}
        val_tp = get_args(tp)[1]
        return {k: _parse_value(val_tp, v, f"{path}.{k}", errors) for k, v in value.items()}
    raise TypeError(f"no parser for {tp!r}")


def _check_constraints(value: Any, f: dataclasses.Field[Any], path: str, errors: list[FieldError]) -> None:
    meta = f.metadata
    in_range = isinstance(value, float) or (isinstance(value, int) and INT32_MIN <= value <= INT32_MAX)
    if in_range and not isinstance(value, bool):
        if meta.get("minimum") is not None and value < meta["minimum"]:
            errors.append(FieldError(path, f"must be greater than or equal to {meta['minimum']}, got {value}"))
        if meta.get("maximum") is not None and value > meta["maximum"]:
            errors.append(FieldError(path, f"must be less than or equal to {meta['maximum']}, got {value}"))
    if isinstance(value, str):
        if meta.get("enum") and value not in meta["enum"]:
            errors.append(FieldError(path, f"must be one of {', '.join(meta['enum'])}, got \"{value}\""))
        if meta.get("pattern") and not go_regex(meta["pattern"]).search(value):
            errors.append(FieldError(path, f'"{value}" does not match the pattern {meta["pattern"]}'))
        if meta.get("min_length") is not None and len(value) < meta["min_length"]:
            errors.append(FieldError(path, f"must be at least {meta['min_length']} characters long"))
        if meta.get("max_length") is not None and len(value) > meta["max_length"]:
            errors.append(FieldError(path, f"must be at most {meta['max_length']} characters long"))
    if isinstance(value, tuple):
        if meta.get("min_items") is not None and len(value) < meta["min_items"]:
            errors.append(FieldError(path, f"must have at least {meta['min_items']} items, got {len(value)}"))
        if meta.get("max_items") is not None and len(value) > meta["max_items"]:
            errors.append(FieldError(path, f"must have at most {meta['max_items']} items, got {len(value)}"))
        if meta.get("list_type") == "set" and len(set(value)) != len(value):
            errors.append(FieldError(path, "must not contain duplicate items"))
        limit = meta.get("item_max_length")
        if limit is not None:
            for i, item in enumerate(value):
                if isinstance(item, str) and len(item) > limit:
                    errors.append(FieldError(f"{path}[{i}]", f"must be at most {limit} characters long"))
    if isinstance(value, dict):
        if meta.get("max_properties") is not None and len(value) > meta["max_properties"]:
            errors.append(FieldError(path, f"must have at most {meta['max_properties']} entries, got {len(value)}"))
        limit = meta.get("value_max_length")
        if limit is not None:
            for key, item in value.items():
                if isinstance(item, str) and len(item) > limit:
                    errors.append(FieldError(f"{path}.{key}", f"must be at most {limit} characters long"))


# --------------------------------------------------------------------------- serialising


def to_json(value: Any) -> Any:
    """A typed value back to plain JSON-compatible data (JSON field names, no None)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if v is None:
                continue
            out[json_name(f)] = to_json(v)
        return out
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, str):
        return str(value)
    return value
