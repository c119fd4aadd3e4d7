"""CRD semantics of ``apiextensions.k8s.io/v1`` for the local control plane.

``admit_custom_resource`` does what the apiserver does to a custom resource on its way in:

1. prune fields the structural schema does not know (``x-kubernetes-preserve-unknown-fields``,
   ``x-kubernetes-embedded-resource``, ``additionalProperties``), and drop nulls that the
   schema does not allow and no default replaces;
2. apply ``default`` values (a default inside an object only applies when that object exists,
   which a default of ``{}`` on the parent arranges);
3. validate ``metadata`` and the OpenAPI v3 schema, with kube-openapi's messages;
4. evaluate ``x-kubernetes-validations`` (CEL), including transition rules on ``oldSelf``;
   as on the apiserver, CEL is skipped when a blocking schema error (type, required, enum,
   too long, too many) was found.

On update, validation ratchets: a part of the object that did not change is not validated
again (an object stored under an older, laxer schema can still have its status written).

``validate_crd`` refuses what a real apiserver refuses at CRD creation, so that a CRD that
installs here installs on a cluster: non-structural schemas, defaults that break their
schema, CEL rules that do not parse, name undeclared fields, use ``oldSelf`` where list items
cannot correlate, or whose estimated cost is certainly over the budget.

Error messages follow ``k8s.io/apimachinery/pkg/util/validation/field`` exactly: a cause is
``{"reason": "FieldValueInvalid", "message": "Invalid value: -1: spec.replicas in body should
be greater than or equal to 0", "field": "spec.replicas"}`` and
``InvalidError.status_message`` joins them like ``apierrors.NewInvalid``.
"""

from __future__ import annotations

import copy
import datetime as _dt
import decimal
import functools
import ipaddress
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from e2e.localcluster import _cel

__all__ = [
    "InvalidError",
    "admit_custom_resource",
    "openapi_v3_schema_for_crd",
    "prune_unknown_fields",
    "validate_crd",
]


# --------------------------------------------------------------------------------------------
# Field errors


_TYPE_TEXT = {
    "FieldValueNotFound": "Not found",
    "FieldValueRequired": "Required value",
    "FieldValueDuplicate": "Duplicate value",
    "FieldValueInvalid": "Invalid value",
    "FieldValueNotSupported": "Unsupported value",
    "FieldValueForbidden": "Forbidden",
    "FieldValueTooLong": "Too long",
    "FieldValueTooMany": "Too many",
    "FieldValueTooFew": "Too few",
    "InternalError": "Internal error",
    "FieldValueTypeInvalid": "Invalid value",
    "FieldValueTooShort": "Too short",
}
_NO_VALUE = {
    "FieldValueRequired",
    "FieldValueForbidden",
    "FieldValueTooLong",
    "FieldValueTooShort",
    "InternalError",
}
_OMIT = object()


def go_quote(text: str) -> str:
    """Go's ``%q`` for the strings we meet (printable text, escapes for the rest)."""
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def go_number(value: int | float) -> str:
    """Go's ``%v`` of an int64 or float64 (``1e+06`` for a million as float)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    # Shortest round-trip digits, then strconv's %g layout for the shortest precision:
    # exponent form when the exponent is below -4 or at least 6 (fmt prints 1e6 as 1e+06).
    d = decimal.Decimal(repr(value))
    sign, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)
    text = "".join(str(x) for x in digits).rstrip("0") or "0"
    exp = len(digits) + exponent - 1
    if exp < -4 or exp >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        body = f"{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    elif exp >= len(text) - 1:
        body = text + "0" * (exp - len(text) + 1)
    elif exp >= 0:
        body = text[: exp + 1] + "." + text[exp + 1 :]
    else:
        body = "0." + "0" * (-exp - 1) + text
    return ("-" if sign else "") + body


def _go_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def render_value(value: Any) -> str:
    """A bad value as ``field.Error.ErrorBody`` prints it."""
    if isinstance(value, bool | int | float):
        return go_number(value)
    if isinstance(value, str):
        return go_quote(value)
    return _go_json(value)


@dataclass
class FieldError:
    reason: str
    field: str
    value: Any = None
    detail: str = ""

    def body(self) -> str:
        text = _TYPE_TEXT.get(self.reason, f"<unknown error {go_quote(self.reason)}>")
        if self.reason not in _NO_VALUE and self.value is not _OMIT:
            text = f"{text}: {render_value(self.value)}"
        if self.detail:
            text = f"{text}: {self.detail}"
        return text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"

    def cause(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.body(), "field": self.field}


def _invalid(path: str, value: Any, detail: str) -> FieldError:
    return FieldError("FieldValueInvalid", path, value, detail)


def _required(path: str, detail: str = "") -> FieldError:
    return FieldError("FieldValueRequired", path, "", detail)


def _forbidden(path: str, detail: str) -> FieldError:
    return FieldError("FieldValueForbidden", path, "", detail)


def _not_supported(path: str, value: Any, allowed: list[Any]) -> FieldError:
    shown = [a if isinstance(a, str) else _go_json(a) for a in allowed]
    detail = "supported values: " + ", ".join(go_quote(s) for s in shown) if shown else ""
    return FieldError("FieldValueNotSupported", path, value, detail)


def _too_many(path: str, actual: int, maximum: int) -> FieldError:
    noun = "item" if maximum == 1 else "items"
    return FieldError("FieldValueTooMany", path, actual, f"must have at most {maximum} {noun}")


def _too_long(path: str, maximum: int) -> FieldError:
    noun = "byte" if maximum == 1 else "bytes"
    return FieldError("FieldValueTooLong", path, "", f"may not be more than {maximum} {noun}")


class InvalidError(Exception):
    """422 Invalid: ``causes`` are ``{"reason", "message", "field"}`` dicts."""

    def __init__(self, errors: list[FieldError]):
        self.errors = list(errors)
        self.causes = [e.cause() for e in self.errors]
        super().__init__(self._aggregate())

    def _aggregate(self) -> str:
        # utilerrors.NewAggregate drops repeated messages, keeping the first.
        seen: list[str] = []
        for err in self.errors:
            text = str(err)
            if text not in seen:
                seen.append(text)
        if len(seen) == 1:
            return seen[0]
        return "[" + ", ".join(seen) + "]"

    def status_message(self, kind: str, group: str, name: str) -> str:
        qualified = f"{kind}.{group}" if group else kind
        if not self.errors:
            return f"{qualified} {go_quote(name)} is invalid"
        return f"{qualified} {go_quote(name)} is invalid: {self._aggregate()}"


# --------------------------------------------------------------------------------------------
# Paths


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def _key(path: str, key: str) -> str:
    return f"{path}[{key}]"


# --------------------------------------------------------------------------------------------
# Schema helpers


def _version_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    for v in (crd.get("spec") or {}).get("versions") or []:
        if v.get("name") == version:
            schema = (v.get("schema") or {}).get("openAPIV3Schema")
            return schema if isinstance(schema, dict) else {}
    raise KeyError(f"version {version!r} is not served by this CustomResourceDefinition")


def _version_entry(crd: dict[str, Any], version: str) -> dict[str, Any]:
    for v in (crd.get("spec") or {}).get("versions") or []:
        if v.get("name") == version:
            return dict(v)
    return {}


def _props(schema: dict[str, Any]) -> dict[str, Any]:
    return schema.get("properties") or {}


def _additional(schema: dict[str, Any]) -> dict[str, Any] | None:
    addl = schema.get("additionalProperties")
    return addl if isinstance(addl, dict) else None


def _items(schema: dict[str, Any]) -> dict[str, Any]:
    items = schema.get("items")
    return items if isinstance(items, dict) else {}


_OBJECT_META_FIELDS = {
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
    "annotations", "ownerReferences", "finalizers", "managedFields",
}  # fmt: skip


# --------------------------------------------------------------------------------------------
# 1. pruning


def prune_unknown_fields(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """Remove, in place, the fields ``schema`` does not specify; return their paths
    (``spec.foo``, ``spec.list[0].bar``), which strict field validation reports as
    ``unknown field "spec.foo"``."""
    unknown: list[str] = []
    _prune(obj, schema, "", unknown, resource_root=True)
    return unknown


def _prune(
    value: Any, schema: dict[str, Any], path: str, unknown: list[str], *, resource_root: bool
) -> None:
    if isinstance(value, dict):
        embedded = resource_root or schema.get("x-kubernetes-embedded-resource")
        props = _props(schema)
        addl = _additional(schema)
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
        for key in list(value):
            sub = _child(path, key)
            if embedded and key in ("apiVersion", "kind"):
                continue
            if embedded and key == "metadata":
                if isinstance(value[key], dict):
                    for mkey in list(value[key]):
                        if mkey not in _OBJECT_META_FIELDS:
                            unknown.append(_child(sub, mkey))
                            del value[key][mkey]
                continue
            if key in props:
                _prune(value[key], props[key], sub, unknown, resource_root=False)
            elif addl is not None:
                _prune(value[key], addl, sub, unknown, resource_root=False)
            elif schema.get("additionalProperties") is True or preserve:
                continue
            else:
                unknown.append(sub)
                del value[key]
    elif isinstance(value, list):
        items = _items(schema)
        for i, item in enumerate(value):
            _prune(item, items, _index(path, i), unknown, resource_root=False)


def _prune_nulls(value: Any, schema: dict[str, Any]) -> None:
    """Nulls where the schema is not nullable and has no default are dropped before
    defaulting (structuraldefaulting.PruneNonNullableNullsWithoutDefaults)."""
    if isinstance(value, dict):
        props = _props(schema)
        addl = _additional(schema)
        for key in list(value):
            sub = props.get(key, addl)
            if sub is None:
                continue
            if value[key] is None:
                if not sub.get("nullable") and "default" not in sub:
                    del value[key]
            else:
                _prune_nulls(value[key], sub)
    elif isinstance(value, list):
        for item in value:
            _prune_nulls(item, _items(schema))


# --------------------------------------------------------------------------------------------
# 2. defaulting


def _default(value: Any, schema: dict[str, Any]) -> None:
    if isinstance(value, dict):
        props = _props(schema)
        for key, sub in props.items():
            if "default" not in sub:
                continue
            if key not in value or (value[key] is None and not sub.get("nullable")):
                value[key] = copy.deepcopy(sub["default"])
        addl = _additional(schema)
        for key, item in value.items():
            child = props.get(key)
            if child is None:
                if addl is None:
                    continue
                child = addl
                if item is None and "default" in addl and not addl.get("nullable"):
                    value[key] = copy.deepcopy(addl["default"])
            _default(value[key], child)
    elif isinstance(value, list):
        items = _items(schema)
        for i, item in enumerate(value):
            if item is None and "default" in items and not items.get("nullable"):
                value[i] = copy.deepcopy(items["default"])
            _default(value[i], items)


# --------------------------------------------------------------------------------------------
# 3. OpenAPI v3 schema validation


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        # go-openapi/swag IsFloat64AJSONInteger: integral and within +-(2**53 - 1).
        return "integer" if value.is_integer() and abs(value) <= 2**53 - 1 else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_ok(value: Any, expected: str) -> bool:
    actual = _json_type(value)
    if expected == "number":
        return actual in ("number", "integer")
    return actual == expected


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DURATION = re.compile(r"^[-+]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$|^0$")
_MAC = re.compile(r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _parse_date_time(text: str) -> bool:
    try:
        _dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    return "T" in text.upper()


def _ok_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


def _ok_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return "/" in text


def _ok_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) == 36


def _ok_date(text: str) -> bool:
    try:
        _dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _ok_byte(text: str) -> bool:
    import base64
    import binascii

    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


# Formats the apiserver checks on strings (others are accepted as plain strings).
_FORMATS: dict[str, Callable[[str], bool]] = {
    "date-time": _parse_date_time,
    "datetime": _parse_date_time,
    "date": _ok_date,
    "duration": lambda s: _DURATION.match(s) is not None,
    "uuid": _ok_uuid,
    "email": lambda s: _EMAIL.match(s) is not None,
    "hostname": lambda s: len(s) <= 253 and _DNS_SUBDOMAIN.match(s.lower()) is not None,
    "ipv4": lambda s: _ok_ip(s, 4),
    "ipv6": lambda s: _ok_ip(s, 6),
    "cidr": _ok_cidr,
    "mac": lambda s: _MAC.match(s) is not None,
    "byte": _ok_byte,
}


def _validate_schema(
    value: Any, schema: dict[str, Any], path: str, old: Any, errs: list[FieldError]
) -> None:
    """kube-openapi's SchemaValidator, with ratcheting: an unchanged value is not checked."""
    if old is not _NO_OLD and old == value:
        return
    name = path or "."

    def detail(text: str) -> str:
        return f"{name} in body {text}" if path else text

    if value is None:
        if schema.get("nullable") or not schema.get("type"):
            return
        errs.append(
            FieldError(
                "FieldValueTypeInvalid", path, "null",
                detail(f"must be of type {schema['type']}: \"null\""),
            )
        )  # fmt: skip
        return

    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, str | int) or isinstance(value, bool):
            actual = _json_type(value)
            errs.append(
                FieldError(
                    "FieldValueTypeInvalid", path, actual,
                    detail(f'must be of type integer,string: "{actual}"'),
                )
            )  # fmt: skip
            return
    elif schema.get("type"):
        expected = schema["type"]
        if not _type_ok(value, expected):
            actual = _json_type(value)
            errs.append(
                FieldError(
                    "FieldValueTypeInvalid", path, actual,
                    detail(f'must be of type {expected}: "{actual}"'),
                )
            )  # fmt: skip
            return

    # kube-openapi's order: allOf/anyOf/oneOf/not, string and format checks, enum, then
    # arrays, objects, numbers.
    _validate_composites(value, schema, path, errs)
    if isinstance(value, str):
        _validate_string(value, schema, path, detail, errs)
    if "enum" in schema and not any(_json_equal(value, e) for e in schema["enum"]):
        errs.append(_not_supported(path, value, list(schema["enum"])))
    if isinstance(value, int | float) and not isinstance(value, bool):
        _validate_number(value, schema, path, detail, errs)
    elif isinstance(value, list):
        _validate_array(value, schema, path, old, detail, errs)
    elif isinstance(value, dict):
        _validate_object(value, schema, path, old, detail, errs)


def _composite(path: str, text: str) -> FieldError:
    # These are not kube-openapi "Validation" errors, so the apiserver files them under a nil
    # path with an empty value; the message names the field instead.
    return FieldError("FieldValueInvalid", "<nil>", "", f"{go_quote(path or '.')} {text}")


def _validate_composites(
    value: Any, schema: dict[str, Any], path: str, errs: list[FieldError]
) -> None:
    def check(alternative: dict[str, Any]) -> list[FieldError]:
        found: list[FieldError] = []
        _validate_schema(value, alternative, path, _NO_OLD, found)
        return found

    any_of = schema.get("anyOf") or []
    if any_of:
        results = [check(alt) for alt in any_of]
        if all(results):
            errs.append(_composite(path, "must validate at least one schema (anyOf)"))
            # kube-openapi reports the failures of the closest alternative.
            errs.extend(sorted(results, key=len)[0])
    one_of = schema.get("oneOf") or []
    if one_of:
        results = [check(alt) for alt in one_of]
        valid = sum(1 for r in results if not r)
        if valid != 1:
            extra = "Found none valid" if valid == 0 else f"Found {valid} valid alternatives"
            errs.append(_composite(path, f"must validate one and only one schema (oneOf). {extra}"))
            if valid == 0:
                errs.extend(sorted(results, key=len)[0])
    all_of = schema.get("allOf") or []
    if all_of:
        results = [check(alt) for alt in all_of]
        for r in results:
            errs.extend(r)
        failed = sum(1 for r in results if r)
        if failed:
            extra = ". None validated" if failed == len(results) else ""
            errs.append(_composite(path, f"must validate all the schemas (allOf){extra}"))
    not_schema = schema.get("not")
    if isinstance(not_schema, dict) and not check(not_schema):
        errs.append(_composite(path, "must not validate the schema (not)"))


def _validate_number(
    value: int | float,
    schema: dict[str, Any],
    path: str,
    detail: Callable[[str], str],
    errs: list[FieldError],
) -> None:
    if "maximum" in schema:
        limit = float(schema["maximum"])  # kube-openapi holds bounds as float64
        if schema.get("exclusiveMaximum") and value >= limit:
            errs.append(_invalid(path, value, detail(f"should be less than {go_number(limit)}")))
        elif not schema.get("exclusiveMaximum") and value > limit:
            errs.append(
                _invalid(path, value, detail(f"should be less than or equal to {go_number(limit)}"))
            )
    if "minimum" in schema:
        limit = float(schema["minimum"])
        if schema.get("exclusiveMinimum") and value <= limit:
            errs.append(_invalid(path, value, detail(f"should be greater than {go_number(limit)}")))
        elif not schema.get("exclusiveMinimum") and value < limit:
            errs.append(
                _invalid(
                    path, value, detail(f"should be greater than or equal to {go_number(limit)}")
                )
            )
    factor = schema.get("multipleOf")
    if factor and (value / factor) != int(value / factor):
        errs.append(
            _invalid(path, value, detail(f"should be a multiple of {go_number(float(factor))}"))
        )


def _validate_string(
    value: str,
    schema: dict[str, Any],
    path: str,
    detail: Callable[[str], str],
    errs: list[FieldError],
) -> None:
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errs.append(_too_long(path, int(schema["maxLength"])))
    if "minLength" in schema and len(value) < schema["minLength"]:
        errs.append(
            _invalid(path, value, detail(f"should be at least {schema['minLength']} chars long"))
        )
    pattern = schema.get("pattern")
    if pattern and _go_regex(pattern).search(value) is None:
        errs.append(_invalid(path, value, detail(f"should match '{pattern}'")))
    fmt = schema.get("format")
    check = _FORMATS.get(fmt or "")
    if check is not None and not check(value):
        errs.append(
            FieldError(
                "FieldValueTypeInvalid", path, value, detail(f'must be of type {fmt}: "{value}"')
            )
        )


@functools.cache
def _go_regex(pattern: str) -> re.Pattern[str]:
    """A CRD pattern as RE2 (Go's regexp/syntax, which kube-openapi's pattern check uses)
    reads it. Two differences matter: RE2's `\\d`, `\\w`, `\\s` are ASCII only (Python's match
    any Unicode digit, so "\uff16\uff10s" would pass `^\\d+s$`), and without the m flag RE2's
    `$` matches only at the end of the text (Python's also before a final newline, so
    "resnet\\n" would pass `^[a-z]+$`). `\\z` is RE2's end of text. Modelled on
    go/src/regexp/syntax/parse.go (perl classes are ASCII; OneLine makes `$` \\z)."""
    out: list[str] = []
    escaped = in_class = False
    class_start = 0
    for i, char in enumerate(pattern):
        if escaped:
            out.append("Z" if char == "z" and not in_class else char)
            escaped = False
        elif char == "\\":
            out.append(char)
            escaped = True
        elif in_class:
            out.append(char)
            # A "]" first in a class ("[]a]", "[^]a]") is a literal, in RE2 as in Python.
            opening = pattern[class_start:i] in ("[", "[^")
            in_class = char != "]" or opening
        elif char == "[":
            out.append(char)
            in_class = True
            class_start = i
        elif char == "$":
            out.append(r"\Z")
        else:
            out.append(char)
    return re.compile("".join(out), re.ASCII)


def _validate_array(
    value: list[Any],
    schema: dict[str, Any],
    path: str,
    old: Any,
    detail: Callable[[str], str],
    errs: list[FieldError],
) -> None:
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errs.append(_too_many(path, len(value), int(schema["maxItems"])))
    if "minItems" in schema and len(value) < schema["minItems"]:
        errs.append(
            _invalid(path, len(value), detail(f"should have at least {schema['minItems']} items"))
        )
    if schema.get("uniqueItems"):
        encoded = [json.dumps(v, sort_keys=True) for v in value]
        if len(set(encoded)) != len(encoded):
            errs.append(_invalid(path, "", detail("shouldn't contain duplicates")))
    items = _items(schema)
    olds = _correlate_items(value, old, schema)
    for i, item in enumerate(value):
        _validate_schema(item, items, _index(path, i), olds[i], errs)


def _validate_object(
    value: dict[str, Any],
    schema: dict[str, Any],
    path: str,
    old: Any,
    detail: Callable[[str], str],
    errs: list[FieldError],
) -> None:
    # kube-openapi stops at a property-count error without looking inside the object.
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        errs.append(
            _invalid(
                path,
                len(value),
                detail(f"should have at least {schema['minProperties']} properties"),
            )
        )
        return
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errs.append(_too_many(path, len(value), int(schema["maxProperties"])))
        return
    for req in schema.get("required") or []:
        if req not in value:
            errs.append(_required(_child(path, req)))
    props = _props(schema)
    addl = _additional(schema)
    old_map = old if isinstance(old, dict) else {}
    for key, item in value.items():
        sub = props.get(key, addl)
        if sub is None:
            continue
        sub_old = old_map.get(key, _NO_OLD) if old is not _NO_OLD else _NO_OLD
        # kube-openapi names map values with a dot, like properties.
        _validate_schema(item, sub, _child(path, key), sub_old, errs)


_NO_OLD = object()


def _correlate_items(value: list[Any], old: Any, schema: dict[str, Any]) -> list[Any]:
    """Old counterparts of list items: only ``map`` lists correlate (by key), as in the
    apiserver's ratcheting and transition rules."""
    out: list[Any] = [_NO_OLD] * len(value)
    if not isinstance(old, list) or schema.get("x-kubernetes-list-type") != "map":
        return out
    keys = schema.get("x-kubernetes-list-map-keys") or []

    def key_of(item: Any) -> str | None:
        if not isinstance(item, dict):
            return None
        return json.dumps([item.get(k) for k in keys])

    by_key = {key_of(o): o for o in old if key_of(o) is not None}
    for i, item in enumerate(value):
        k = key_of(item)
        if k is not None and k in by_key:
            out[i] = by_key[k]
    return out


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return bool(a == b)
    return bool(json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True))


# -- embedded resources (schemaobjectmeta.Validate) ------------------------------------------


def _validate_embedded(
    value: Any, schema: dict[str, Any], path: str, errs: list[FieldError]
) -> None:
    """An object marked x-kubernetes-embedded-resource needs apiVersion and kind strings."""
    if isinstance(value, dict):
        if schema.get("x-kubernetes-embedded-resource") and path:
            for key in ("apiVersion", "kind"):
                if key not in value:
                    errs.append(_required(_child(path, key), "must not be empty"))
                elif not isinstance(value[key], str):
                    errs.append(_invalid(_child(path, key), value[key], "must be a string"))
                elif not value[key]:
                    errs.append(_invalid(_child(path, key), "", "must not be empty"))
        props = _props(schema)
        addl = _additional(schema)
        for key, item in value.items():
            sub = props.get(key, addl)
            if sub is not None:
                _validate_embedded(
                    item, sub, _child(path, key) if key in props else _key(path, key), errs
                )
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _validate_embedded(item, _items(schema), _index(path, i), errs)


# -- list-type invariants (structurallisttype.ValidateListSetsAndMaps) ----------------------


def _validate_list_types(
    value: Any, schema: dict[str, Any], path: str, old: Any, errs: list[FieldError]
) -> None:
    if old is not _NO_OLD and old == value:
        return
    if isinstance(value, list):
        lt = schema.get("x-kubernetes-list-type")
        if lt == "set":
            seen: list[str] = []
            for i, item in enumerate(value):
                enc = json.dumps(item, sort_keys=True)
                if enc in seen:
                    errs.append(FieldError("FieldValueDuplicate", _index(path, i), item))
                else:
                    seen.append(enc)
        elif lt == "map":
            keys = schema.get("x-kubernetes-list-map-keys") or []
            seen = []
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    continue
                key = {k: item[k] for k in keys if k in item}
                enc = json.dumps(key, sort_keys=True)
                if enc in seen:
                    errs.append(FieldError("FieldValueDuplicate", _index(path, i), key))
                else:
                    seen.append(enc)
        olds = _correlate_items(value, old, schema)
        for i, item in enumerate(value):
            _validate_list_types(item, _items(schema), _index(path, i), olds[i], errs)
    elif isinstance(value, dict):
        props = _props(schema)
        addl = _additional(schema)
        for key, item in value.items():
            sub = props.get(key, addl)
            if sub is not None:
                sub_old = old.get(key, _NO_OLD) if isinstance(old, dict) else _NO_OLD
                child = _child(path, key) if key in props else _key(path, key)
                _validate_list_types(item, sub, child, sub_old, errs)


# -- metadata -------------------------------------------------------------------------------

_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    r"for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_NAME_PART_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
    "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
    "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
_PREFIX_MSG = "prefix part " + _SUBDOMAIN_MSG


def _validate_qualified_name(key: str, path: str, errs: list[FieldError]) -> None:
    prefix, _, name = key.rpartition("/")
    if "/" in name or key.count("/") > 1:
        errs.append(
            _invalid(
                path, key,
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and "
                "must start and end with an alphanumeric character (e.g. 'MyName',  or "
                "'my.name',  or '123-abc', regex used for validation is "
                "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain "
                "prefix and '/' (e.g. 'example.com/MyName')",
            )
        )  # fmt: skip
        return
    if "/" in key:
        if not prefix:
            errs.append(_invalid(path, key, "prefix part must be non-empty"))
        elif len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix):
            errs.append(_invalid(path, key, _PREFIX_MSG))
    if not name:
        errs.append(_invalid(path, key, "name part must be non-empty"))
    elif len(name) > 63:
        errs.append(_invalid(path, key, "name part must be no more than 63 characters"))
    elif not _NAME_PART.match(name):
        errs.append(_invalid(path, key, _NAME_PART_MSG))


def _validate_metadata(obj: dict[str, Any], errs: list[FieldError]) -> None:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        errs.append(_required("metadata.name", "name or generateName is required"))
        return
    name = meta.get("name")
    if not name and not meta.get("generateName"):
        errs.append(_required("metadata.name", "name or generateName is required"))
    elif name:
        if len(name) > 253:
            errs.append(_invalid("metadata.name", name, "must be no more than 253 characters"))
        if not _DNS_SUBDOMAIN.match(name):
            errs.append(_invalid("metadata.name", name, _SUBDOMAIN_MSG))
    labels = meta.get("labels") or {}
    if isinstance(labels, dict):
        for key, val in labels.items():
            _validate_qualified_name(key, "metadata.labels", errs)
            if not isinstance(val, str):
                errs.append(_invalid("metadata.labels", val, "must be a string"))
            elif len(val) > 63:
                errs.append(_invalid("metadata.labels", val, "must be no more than 63 characters"))
            elif not _LABEL_VALUE.match(val):
                errs.append(_invalid("metadata.labels", val, _LABEL_VALUE_MSG))
    annotations = meta.get("annotations") or {}
    if isinstance(annotations, dict):
        for key in annotations:
            _validate_qualified_name(key.lower(), "metadata.annotations", errs)
        total = sum(len(k) + len(str(v)) for k, v in annotations.items())
        if total > 256 * 1024:
            errs.append(_too_long("metadata.annotations", 256 * 1024))


# --------------------------------------------------------------------------------------------
# 4. CEL rules


_REASONS = ("FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate")


def _rule_message(rule: dict[str, Any]) -> str:
    message = str(rule.get("message") or "").strip()
    if message:
        return message
    return f"failed rule: {str(rule.get('rule', '')).strip()}"


def _rule_error_string(rule: dict[str, Any]) -> str:
    message = str(rule.get("message") or "").strip()
    return message or str(rule.get("rule", "")).strip()


def _field_path_suffix(field_path: str) -> str:
    """``.spec.x['a.b'][0]`` style JSON path -> field.Path suffix (``.x[a.b]``)."""
    out = ""
    for m in re.finditer(r"\.([A-Za-z0-9_$-]+)|\['((?:[^'\\]|\\.)*)'\]|\[(\d+)\]", field_path):
        if m.group(1) is not None:
            out += "." + m.group(1)
        elif m.group(2) is not None:
            out += "." + m.group(2)
        else:
            out += f"[{m.group(3)}]"
    return out


def _cel_error(
    rule: dict[str, Any], path: str, type_name: str, detail: str, *, with_reason: bool = True
) -> FieldError:
    target = path
    field_path = rule.get("fieldPath")
    if field_path and with_reason:
        suffix = _field_path_suffix(str(field_path))
        target = (path + suffix) if path else suffix.lstrip(".")
    reason = rule.get("reason") if with_reason else None
    if reason == "FieldValueForbidden":
        return _forbidden(target, detail)
    if reason == "FieldValueRequired":
        return _required(target, detail)
    if reason == "FieldValueDuplicate":
        return FieldError("FieldValueDuplicate", target, type_name)
    return _invalid(target, type_name, detail)


def _schema_type_name(schema: dict[str, Any]) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return ""
    return str(schema.get("type") or "")


def _cel_root_value(obj: dict[str, Any]) -> dict[str, Any]:
    # At the root, CEL sees apiVersion, kind and only name/generateName of metadata.
    out = dict(obj)
    meta: dict[str, Any] = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
    out["metadata"] = {k: meta[k] for k in ("name", "generateName") if k in meta}
    return out


def _run_rules(
    value: Any,
    schema: dict[str, Any],
    path: str,
    old: Any,
    errs: list[FieldError],
    root: bool = False,
) -> None:
    if old is not _NO_OLD and old == value:
        # Ratcheting: an unchanged value is not checked again, and transition rules on an
        # unchanged value compare it with itself.
        return
    rules = schema.get("x-kubernetes-validations") or []
    if rules and value is not None:
        cel_schema = schema
        if root:
            cel_schema = dict(schema)
            cel_schema["properties"] = {
                **_props(schema),
                "metadata": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "generateName": {"type": "string"}},
                },
            }
        self_value = _cel_root_value(value) if root and isinstance(value, dict) else value
        has_old = old is not _NO_OLD and old is not None
        old_value: Any = _cel.NO_OLD
        if has_old:
            old_value = _cel_root_value(old) if root and isinstance(old, dict) else old
        type_name = _schema_type_name(schema)

        for rule in rules:
            expr = str(rule.get("rule", ""))
            optional_old = bool(rule.get("optionalOldSelf")) and _cel.mentions_old_self(expr)
            if _cel.mentions_old_self(expr) and not has_old and not optional_old:
                continue  # a transition rule needs an old value, unless oldSelf is optional

            def run(text: str, optional_old: bool = optional_old) -> Any:
                return _cel.run(text, self_value, old_value, cel_schema, schema, optional_old)

            try:
                result = run(expr)
            except _cel.CelError as exc:
                detail = f"{exc} evaluating rule: {_rule_error_string(rule)}"
                if str(exc) == "no such overload":
                    detail = (
                        f"'{exc}': call arguments did not match a supported operator, function "
                        f"or macro signature for rule: {_rule_error_string(rule)}"
                    )
                errs.append(_cel_error(rule, path, type_name, detail, with_reason=False))
                continue
            if not _cel.is_bool(result):
                detail = (
                    f"rule did not evaluate to a bool evaluating rule: {_rule_error_string(rule)}"
                )
                errs.append(_cel_error(rule, path, type_name, detail, with_reason=False))
                continue
            if result:
                continue
            errs.append(_cel_error(rule, path, type_name, _message_for(rule, run)))

    if isinstance(value, dict):
        props = _props(schema)
        addl = _additional(schema)
        for key, item in value.items():
            sub = props.get(key, addl)
            if sub is None:
                continue
            sub_old = old.get(key, _NO_OLD) if isinstance(old, dict) else _NO_OLD
            child = _child(path, key) if key in props else _key(path, key)
            _run_rules(item, sub, child, sub_old, errs)
    elif isinstance(value, list):
        items = _items(schema)
        olds = _correlate_items(value, old, schema)
        for i, item in enumerate(value):
            _run_rules(item, items, _index(path, i), olds[i], errs)


def _message_for(rule: dict[str, Any], run: Callable[[str], Any]) -> str:
    expr = rule.get("messageExpression")
    if expr:
        try:
            result = run(str(expr))
        except _cel.CelError:
            return _rule_message(rule)
        text = str(result) if isinstance(result, str) else ""
        if text.strip() and "\n" not in text:
            return text
    return _rule_message(rule)


def _blocking(errs: list[FieldError]) -> bool:
    return any(
        e.reason
        in (
            "FieldValueNotSupported",
            "FieldValueRequired",
            "FieldValueTooLong",
            "FieldValueTooMany",
            "FieldValueTypeInvalid",
        )
        for e in errs
    )


# -- scale subresource ----------------------------------------------------------------------


def _json_path_get(obj: Any, path: str) -> Any:
    cursor = obj
    for part in [p for p in path.strip(".").split(".") if p]:
        if not isinstance(cursor, dict) or part not in cursor:
            return _NO_OLD
        cursor = cursor[part]
    return cursor


def _go_type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    if value is None:
        return "<nil>"
    return "map[string]interface {}"


def _validate_scale(crd: dict[str, Any], version: str, obj: dict[str, Any]) -> list[FieldError]:
    """ValidateScaleSpec/Status: the replicas paths must hold non-negative int32 values.
    The apiserver names the field by the JSON path itself, leading dot included."""
    entry = _version_entry(crd, version)
    scale = (entry.get("subresources") or {}).get("scale")
    if not scale:
        return []
    errs: list[FieldError] = []
    for key in ("specReplicasPath", "statusReplicasPath"):
        path = scale.get(key)
        if not path:
            continue
        value = _json_path_get(obj, path)
        if value is _NO_OLD:
            continue
        shown = "." + path.strip(".")
        if not isinstance(value, int) or isinstance(value, bool):
            text = render_value(value) if not isinstance(value, str) else value
            errs.append(
                _invalid(
                    path, 0,
                    f"{shown} accessor error: {text} is of the type {_go_type_name(value)}, "
                    "expected int64",
                )
            )  # fmt: skip
        elif value < 0:
            errs.append(_invalid(path, value, "should be a non-negative integer"))
        elif value > 2**31 - 1:
            errs.append(_invalid(path, value, "should be less than or equal to 2147483647"))
    return errs


# --------------------------------------------------------------------------------------------
# admission


def admit_custom_resource(
    crd: dict[str, Any],
    version: str,
    obj: dict[str, Any],
    old: dict[str, Any] | None,
    subresource: str | None = None,
) -> dict[str, Any]:
    """Prune, default and validate a custom resource of ``crd`` at ``version``.

    ``old`` is the stored object on update (None on create). ``subresource="status"``: only
    status may change, so everything but ``status`` (and ``metadata.managedFields``) is taken
    from ``old``. Returns the admitted object; raises InvalidError.
    """
    schema = _version_schema(crd, version)
    new = copy.deepcopy(obj)
    if subresource == "status" and old is not None:
        # The status endpoint writes only status; the rest of the object stays as stored.
        managed = (new.get("metadata") or {}).get("managedFields")
        status = new.get("status", _NO_OLD)
        new = copy.deepcopy(old)
        if managed is not None:
            new.setdefault("metadata", {})["managedFields"] = managed
        if status is _NO_OLD:
            new.pop("status", None)
        else:
            new["status"] = status

    if not schema.get("x-kubernetes-preserve-unknown-fields"):
        prune_unknown_fields(schema, new)
    _prune_nulls(new, schema)
    _default(new, schema)

    errs: list[FieldError] = []
    _validate_metadata(new, errs)
    old_root: Any = _strip_for_compare(old) if old is not None else _NO_OLD
    new_root = _strip_for_compare(new)
    _validate_body(new_root, schema, old_root, errs)
    errs.extend(_validate_scale(crd, version, new))
    _validate_embedded(new_root, schema, "", errs)
    _validate_list_types(new_root, schema, "", old_root, errs)
    if _blocking(errs):
        errs.append(
            FieldError(
                "FieldValueInvalid", "<nil>", None,
                "some validation rules were not checked because the object was invalid; "
                "correct the existing errors to complete validation",
            )
        )  # fmt: skip
    else:
        _run_rules(new_root, schema, "", old_root, errs, root=True)
    if errs:
        raise InvalidError(errs)
    return new


def _strip_for_compare(obj: dict[str, Any]) -> dict[str, Any]:
    # Metadata is validated on its own; the schema sees the rest.
    out = {k: v for k, v in obj.items() if k != "metadata"}
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        out["metadata"] = {k: meta[k] for k in ("name", "generateName") if k in meta}
    return out


def _validate_body(
    value: dict[str, Any], schema: dict[str, Any], old: Any, errs: list[FieldError]
) -> None:
    # The root's metadata is an ObjectMeta, not what the CRD schema says (only name and
    # generateName constraints from the schema apply to it).
    root = dict(schema)
    props = dict(_props(schema))
    meta_schema = props.get("metadata")
    if meta_schema is not None:
        props["metadata"] = {
            "type": "object",
            "properties": {
                k: v for k, v in _props(meta_schema).items() if k in ("name", "generateName")
            },
        }
    else:
        props["metadata"] = {"type": "object"}
    root["properties"] = props
    root.setdefault("type", "object")
    root.pop("x-kubernetes-validations", None)
    if "apiVersion" not in props:
        props["apiVersion"] = {"type": "string"}
    if "kind" not in props:
        props["kind"] = {"type": "string"}
    _validate_schema(value, root, "", old, errs)


# --------------------------------------------------------------------------------------------
# CRD validation


_ROOT = "spec.versions[{i}].schema.openAPIV3Schema"
# The apiserver's limit on the estimated cost of one rule, call count included.
STATIC_ESTIMATED_COST_LIMIT = 10_000_000
_SUPPORTED_LIST_TYPES = ["atomic", "set", "map"]


def validate_crd(crd: dict[str, Any]) -> None:
    """Reject a CRD whose schemas are not structural, whose defaults are invalid or whose CEL
    rules do not compile, naming the field as the apiserver does."""
    errs: list[FieldError] = []
    spec = crd.get("spec") or {}
    if not spec.get("group"):
        errs.append(_required("spec.group"))
    names = spec.get("names") or {}
    for key in ("plural", "kind"):
        if not names.get(key):
            errs.append(_required(f"spec.names.{key}"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        errs.append(_not_supported("spec.scope", spec.get("scope", ""), ["Cluster", "Namespaced"]))
    versions = spec.get("versions") or []
    if not versions:
        errs.append(
            _required("spec.versions", "must have exactly one version marked as storage version")
        )
    if sum(1 for v in versions if v.get("storage")) != 1 and versions:
        errs.append(
            _invalid(
                "spec.versions", versions, "must have exactly one version marked as storage version"
            )
        )
    for i, v in enumerate(versions):
        schema = (v.get("schema") or {}).get("openAPIV3Schema")
        base = _ROOT.format(i=i)
        if not isinstance(schema, dict):
            errs.append(
                _required(f"spec.versions[{i}].schema.openAPIV3Schema", "schemas are required")
            )
            continue
        _check_root(schema, base, errs)
        _check_structural(schema, base, errs, level="root")
    if errs:
        raise InvalidError(errs)


def _check_root(schema: dict[str, Any], base: str, errs: list[FieldError]) -> None:
    t = schema.get("type")
    if not t:
        errs.append(_required(f"{base}.type", "must not be empty at the root"))
    elif t != "object":
        errs.append(_invalid(f"{base}.type", t, "must be object at the root"))
    if schema.get("nullable"):
        errs.append(_invalid(f"{base}.nullable", True, "must be false at the root"))
    meta = _props(schema).get("metadata")
    if meta is not None:
        allowed = {"name", "generateName"}
        extra = set(meta) - {"type", "properties", "description"}
        if (
            extra
            or meta.get("type") not in (None, "object")
            or set(_props(meta)) - allowed
            or any(
                set(p) - {"type", "maxLength", "pattern", "description"}
                or p.get("type") != "string"
                for p in _props(meta).values()
            )
        ):
            errs.append(
                _forbidden(
                    f"{base}.properties[metadata]",
                    "must not specify anything other than name and generateName, but metadata "
                    "is implicitly specified",
                )
            )


def _check_structural(
    schema: dict[str, Any],
    path: str,
    errs: list[FieldError],
    *,
    level: str,
    uncorrelatable: str | None = None,
    cardinality: float = 1.0,
) -> None:
    int_or_string = bool(schema.get("x-kubernetes-int-or-string"))
    preserve = schema.get("x-kubernetes-preserve-unknown-fields")
    embedded = bool(schema.get("x-kubernetes-embedded-resource"))
    t = schema.get("type")

    if preserve is False:
        errs.append(
            _invalid(
                f"{path}.x-kubernetes-preserve-unknown-fields", False, "must be true or undefined"
            )
        )
    if int_or_string and t:
        errs.append(
            _invalid(f"{path}.type", t, "must be empty if x-kubernetes-int-or-string is true")
        )
    if embedded:
        if t != "object":
            errs.append(
                _invalid(
                    f"{path}.type",
                    t or "",
                    "must be object if x-kubernetes-embedded-resource is true",
                )
            )
        if not _props(schema) and not preserve:
            errs.append(
                _required(
                    f"{path}.properties",
                    "must not be empty if x-kubernetes-embedded-resource is true without "
                    "x-kubernetes-preserve-unknown-fields",
                )
            )
    if not t and not int_or_string and level != "root":
        where = {
            "properties": "must not be empty for specified object fields",
            "items": "must not be empty for specified array items",
            "additionalProperties": "must not be empty for specified additionalProperties",
        }.get(level, "must not be empty")
        errs.append(_required(f"{path}.type", where))
    if t and t not in ("object", "array", "string", "integer", "number", "boolean"):
        errs.append(
            _not_supported(
                f"{path}.type", t, ["array", "boolean", "integer", "number", "object", "string"]
            )
        )
    if _props(schema) and schema.get("additionalProperties") not in (None, False):
        errs.append(
            _forbidden(
                f"{path}.additionalProperties",
                "additionalProperties and properties are mutual exclusive",
            )
        )
    if t == "array" and "items" not in schema:
        errs.append(_required(f"{path}.items", "must be specified"))
    int_or_string = bool(schema.get("x-kubernetes-int-or-string"))
    for kw in ("anyOf", "allOf", "oneOf"):
        for j, alt in enumerate(schema.get(kw) or []):
            _check_value_validation(
                alt, f"{path}.{kw}[{j}]", errs, int_or_string=int_or_string and kw != "oneOf"
            )
    if isinstance(schema.get("not"), dict):
        _check_value_validation(schema["not"], f"{path}.not", errs)
    if schema.get("$ref"):
        errs.append(_forbidden(f"{path}.$ref", "$ref is not supported"))

    _check_list_type(schema, path, errs)
    _check_default(schema, path, errs)
    _check_rules(
        schema, path, errs, root=level == "root", uncorrelatable=uncorrelatable,
        cardinality=cardinality,
    )  # fmt: skip

    for key, sub in _props(schema).items():
        if isinstance(sub, dict):
            _check_structural(
                sub, f"{path}.properties[{key}]", errs, level="properties",
                uncorrelatable=uncorrelatable, cardinality=cardinality,
            )  # fmt: skip
    # A rule below a list or map runs once per item: its cost counts that many times.
    inner = cardinality * _cel.max_cardinality(schema)
    addl = _additional(schema)
    if addl is not None:
        _check_structural(
            addl, f"{path}.additionalProperties", errs, level="additionalProperties",
            uncorrelatable=uncorrelatable, cardinality=inner,
        )  # fmt: skip
    if isinstance(schema.get("items"), dict):
        # Items of a list correlate with their old selves only by the keys of a map list.
        if uncorrelatable is None and schema.get("x-kubernetes-list-type") != "map":
            uncorrelatable = path
        _check_structural(
            schema["items"], f"{path}.items", errs, level="items",
            uncorrelatable=uncorrelatable, cardinality=inner,
        )  # fmt: skip


_NOT_IN_VALUE_VALIDATIONS = (
    "type", "nullable", "default", "description", "title", "additionalProperties",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource",
    "x-kubernetes-int-or-string", "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type", "x-kubernetes-validations",
)  # fmt: skip


def _check_value_validation(
    schema: dict[str, Any], path: str, errs: list[FieldError], *, int_or_string: bool = False
) -> None:
    """Inside allOf/anyOf/oneOf/not only value validations may appear: the structure (types,
    defaults, extensions) must come from properties and items. The one exception is the
    usual spelling of an int-or-string, ``anyOf: [{type: integer}, {type: string}]`` (also
    nested in allOf), which the apiserver accepts."""
    for key in _NOT_IN_VALUE_VALIDATIONS:
        if key == "type" and int_or_string and schema.get("type") in ("integer", "string"):
            continue
        if key in schema:
            errs.append(_forbidden(f"{path}.{key}", "must be empty to be structural"))
    if int_or_string:
        for j, alt in enumerate(schema.get("anyOf") or []):
            _check_value_validation(alt, f"{path}.anyOf[{j}]", errs, int_or_string=True)
        schema = {k: v for k, v in schema.items() if k != "anyOf"}
    for key, sub in _props(schema).items():
        if isinstance(sub, dict):
            _check_value_validation(sub, f"{path}.properties[{key}]", errs)
    if isinstance(schema.get("items"), dict):
        _check_value_validation(schema["items"], f"{path}.items", errs)
    for kw in ("anyOf", "allOf", "oneOf"):
        for j, alt in enumerate(schema.get(kw) or []):
            _check_value_validation(alt, f"{path}.{kw}[{j}]", errs)


def _check_list_type(schema: dict[str, Any], path: str, errs: list[FieldError]) -> None:
    lt = schema.get("x-kubernetes-list-type")
    keys = schema.get("x-kubernetes-list-map-keys")
    if lt is None:
        if keys:
            errs.append(
                _required(
                    f"{path}.x-kubernetes-list-type",
                    "must be map if x-kubernetes-list-map-keys is non-empty",
                )
            )
        return
    if lt not in _SUPPORTED_LIST_TYPES:
        errs.append(_not_supported(f"{path}.x-kubernetes-list-type", lt, _SUPPORTED_LIST_TYPES))
        return
    if schema.get("type") != "array":
        errs.append(
            _invalid(
                f"{path}.type",
                schema.get("type", ""),
                "must be array if x-kubernetes-list-type is specified",
            )
        )
        return
    items = _items(schema)
    if lt == "set" and items.get("type") in ("object", "array"):
        errs.append(
            _invalid(
                f"{path}.items.type", items.get("type"),
                "must be a scalar type if parent array type is set",
            )
        )  # fmt: skip
    if lt == "map":
        if not keys:
            errs.append(
                _required(
                    f"{path}.x-kubernetes-list-map-keys",
                    "must not be empty if x-kubernetes-list-type is map",
                )
            )
            return
        if items.get("type") != "object":
            errs.append(
                _invalid(
                    f"{path}.items.type", items.get("type", ""),
                    "must be object if parent array's x-kubernetes-list-type is map",
                )
            )  # fmt: skip
            return
        required = set(items.get("required") or [])
        for j, key in enumerate(keys):
            prop = _props(items).get(key)
            if prop is None:
                errs.append(
                    _invalid(
                        f"{path}.x-kubernetes-list-map-keys[{j}]", key,
                        "entries must all be names of item properties",
                    )
                )  # fmt: skip
            elif key not in required and "default" not in prop:
                errs.append(
                    _required(
                        f"{path}.items.properties[{key}]",
                        "all map keys must be required or have a default value",
                    )
                )


def _check_default(schema: dict[str, Any], path: str, errs: list[FieldError]) -> None:
    if "default" not in schema:
        return
    default = copy.deepcopy(schema["default"])
    if isinstance(default, dict | list):
        probe = {"v": default}
        wrapper = {
            "type": "object",
            "properties": {"v": {k: v for k, v in schema.items() if k != "default"}},
        }
        unknown: list[str] = []
        _prune(probe, wrapper, "", unknown, resource_root=False)
        if unknown:
            shown = ", ".join(u.removeprefix("v.").removeprefix("v") or "." for u in unknown)
            errs.append(
                _invalid(
                    f"{path}.default", schema["default"], f"must not have unknown fields: {shown}"
                )
            )
            return
    inner: list[FieldError] = []
    sub = {k: v for k, v in schema.items() if k not in ("default", "x-kubernetes-validations")}
    _default(default, sub)
    _validate_schema(default, sub, "", _NO_OLD, inner)
    for e in inner:
        suffix = e.field
        field_path = f"{path}.default" + (
            f".{suffix}" if suffix and not suffix.startswith("[") else suffix
        )
        errs.append(FieldError(e.reason, field_path, e.value, e.detail))


def _check_rules(
    schema: dict[str, Any],
    path: str,
    errs: list[FieldError],
    *,
    root: bool = False,
    uncorrelatable: str | None = None,
    cardinality: float = 1.0,
) -> None:
    rules = schema.get("x-kubernetes-validations")
    if rules is None:
        return
    for j, rule in enumerate(rules):
        base = f"{path}.x-kubernetes-validations[{j}]"
        expr = rule.get("rule")
        if not expr:
            errs.append(_required(f"{base}.rule"))
            continue
        optional_old = bool(rule.get("optionalOldSelf"))
        if uncorrelatable is not None and _cel.mentions_old_self(str(expr)):
            errs.append(
                _invalid(
                    f"{base}.rule", expr,
                    "oldSelf cannot be used on the uncorrelatable portion of the schema within "
                    f"{uncorrelatable}",
                )
            )  # fmt: skip
            continue
        try:
            _cel.compile_rule(str(expr))
            cost = _cel.analyze(str(expr), schema, root=root, old=not optional_old)
        except _cel.CelError as exc:
            errs.append(_invalid(f"{base}.rule", rule, str(exc)))
        else:
            if cost * cardinality > 100 * STATIC_ESTIMATED_COST_LIMIT:
                # Our figure is a lower bound of the apiserver's, so past 100x it is certain
                # the apiserver refuses the rule, and with exactly these words.
                errs.append(
                    _forbidden(
                        f"{base}.rule",
                        "estimated rule cost exceeds budget by factor of more than 100x (try "
                        "simplifying the rule, or adding maxItems, maxProperties, and maxLength "
                        "where arrays, maps, and strings are declared)",
                    )
                )
        message = rule.get("message")
        if message is not None:
            if not str(message).strip():
                errs.append(
                    _invalid(f"{base}.message", message, "message must be non-empty if specified")
                )
            elif "\n" in str(message):
                errs.append(
                    _invalid(f"{base}.message", message, "message must not contain line breaks")
                )
        elif "\n" in str(expr):
            errs.append(
                _required(
                    f"{base}.message", "message must be specified if rule contains line breaks"
                )
            )
        mexpr = rule.get("messageExpression")
        if mexpr is not None:
            if not str(mexpr).strip():
                errs.append(
                    _required(
                        f"{base}.messageExpression",
                        "messageExpression must be non-empty if specified",
                    )
                )
            else:
                try:
                    _cel.compile_rule(str(mexpr))
                    _cel.check_fields(str(mexpr), schema, root=root, old=not optional_old)
                except _cel.CelError as exc:
                    errs.append(
                        _invalid(f"{base}.messageExpression", mexpr, f"messageExpression {exc}")
                    )
        reason = rule.get("reason")
        if reason is not None and reason not in _REASONS:
            errs.append(_not_supported(f"{base}.reason", reason, sorted(_REASONS)))
        field_path = rule.get("fieldPath")
        if field_path is not None and not _field_path_exists(schema, str(field_path)):
            errs.append(_invalid(f"{base}.fieldPath", field_path, "fieldPath must be a valid path"))
        if rule.get("optionalOldSelf") and not _cel.mentions_old_self(str(expr)):
            errs.append(
                _forbidden(
                    f"{base}.optionalOldSelf", "may not be set if oldSelf is not used in rule"
                )
            )


def _field_path_exists(schema: dict[str, Any], field_path: str) -> bool:
    if not field_path.startswith("."):
        return False
    cursor = schema
    for m in re.finditer(r"\.([A-Za-z0-9_$-]+)|\['((?:[^'\\]|\\.)*)'\]|\[(\d+)\]", field_path):
        name = m.group(1) if m.group(1) is not None else m.group(2)
        if name is None:
            return False  # numeric indexes are not supported
        props = _props(cursor)
        if name in props:
            cursor = props[name]
        elif _additional(cursor) is not None:
            cursor = _additional(cursor) or {}
        else:
            return False
    return True


# --------------------------------------------------------------------------------------------
# published OpenAPI


_API_VERSION_DESC = (
    "APIVersion defines the versioned schema of this representation of an object. Servers "
    "should convert recognized schemas to the latest internal value, and may reject "
    "unrecognized values. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"
)
_KIND_DESC = (
    "Kind is a string value representing the REST resource this object represents. Servers may "
    "infer this from the endpoint the client submits requests to. Cannot be updated. In "
    "CamelCase. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
)
_METADATA_DESC = (
    "Standard object's metadata. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)
OBJECT_META_REF = "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def openapi_component_name(crd: dict[str, Any], version: str) -> str:
    """The component name the apiserver uses: the group reversed, e.g.
    ``dev.tfleet.v1alpha1.InferenceService``."""
    spec = crd.get("spec") or {}
    group = ".".join(reversed(str(spec.get("group", "")).split(".")))
    return f"{group}.{version}.{(spec.get('names') or {}).get('kind', '')}"


def _publish(schema: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {k: _publish(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _publish(value)
        elif key in ("allOf", "anyOf", "oneOf") and isinstance(value, list):
            out[key] = [_publish(v) for v in value]
        else:
            out[key] = copy.deepcopy(value)
    if schema.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


def openapi_v3_schema_for_crd(crd: dict[str, Any], version: str) -> dict[str, Any]:
    """The schema of ``version`` as published under ``/openapi/v3/apis/<group>/<version>``:
    apiVersion, kind and metadata (a reference to ObjectMeta) filled in, the
    group-version-kind extension set, descriptions kept for ``kubectl explain``, CEL rules
    kept as ``x-kubernetes-validations`` (the structural schema's ToKubeOpenAPI keeps them)."""
    schema = _publish(_version_schema(crd, version))
    spec = crd.get("spec") or {}
    props = dict(schema.get("properties") or {})
    props["apiVersion"] = {"description": _API_VERSION_DESC, "type": "string"}
    props["kind"] = {"description": _KIND_DESC, "type": "string"}
    props["metadata"] = {"allOf": [{"$ref": OBJECT_META_REF}], "description": _METADATA_DESC}
    schema["properties"] = dict(sorted(props.items()))
    schema.setdefault("type", "object")
    schema["x-kubernetes-group-version-kind"] = [
        {
            "group": spec.get("group", ""),
            "kind": (spec.get("names") or {}).get("kind", ""),
            "version": version,
        }
    ]
    return schema
