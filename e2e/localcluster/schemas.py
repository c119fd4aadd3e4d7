"""Built-in object schemas, from the JSON schemas that ``kubernetes-validate`` ships.

They serve two purposes: dropping (and reporting) unknown fields of built-in objects, as
the real server's decoder does, and publishing OpenAPI v3 documents for kubectl.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

SCHEMA_VERSION = "v1.35.0-local"


@functools.cache
def definitions() -> dict[str, Any]:
    """All definitions keyed by their full name (``io.k8s.api.apps.v1.Deployment``)."""
    import kubernetes_validate

    base = os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema")
    path = os.path.join(base, SCHEMA_VERSION, "_definitions.json")
    if not os.path.exists(path):
        candidates = sorted(d for d in os.listdir(base) if d.endswith("-local"))
        path = os.path.join(base, candidates[-1], "_definitions.json")
    with open(path) as f:
        data = json.load(f)
    return data.get("$defs") or data.get("definitions") or {}


@functools.cache
def definition_for(gvk: str) -> str | None:
    """Definition name for ``apps/v1/Deployment`` (``v1/Pod`` for the core group)."""
    group_version, _, kind = gvk.rpartition("/")
    group, _, version = group_version.rpartition("/")
    for name, schema in definitions().items():
        for g in schema.get("x-kubernetes-group-version-kind") or []:
            if g.get("group", "") == group and g.get("version") == version and g.get("kind") == kind:
                return name
    return None


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    defs = definitions()
    seen = 0
    while "$ref" in schema and seen < 20:
        schema = defs.get(_ref_name(schema["$ref"]), {})
        seen += 1
    return schema


def prune_unknown(gvk: str, obj: dict[str, Any]) -> list[str]:
    """Remove fields the kind's schema does not declare; returns their paths (``spec.foo``)."""
    name = definition_for(gvk)
    if name is None:
        return []
    removed: list[str] = []
    _prune(obj, definitions()[name], "", removed)
    return removed


def _prune(value: Any, schema: dict[str, Any], path: str, removed: list[str]) -> None:
    schema = _resolve(schema)
    if not schema or schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if props is None and extra is None:
            return
        for key in list(value):
            sub = (props or {}).get(key)
            child = f"{path}.{key}" if path else key
            if sub is not None:
                _prune(value[key], sub, child, removed)
            elif isinstance(extra, dict):
                _prune(value[key], extra, child, removed)
            elif extra is True:
                continue
            elif key not in ("apiVersion", "kind"):
                del value[key]
                removed.append(child)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                _prune(item, items, f"{path}[{i}]", removed)


def removed_fields(before: Any, after: Any, path: str = "") -> list[str]:
    """Paths present in ``before`` but pruned from ``after`` (for strict field validation)."""
    out: list[str] = []
    if isinstance(before, dict) and isinstance(after, dict):
        for key, value in before.items():
            child = f"{path}.{key}" if path else key
            if key not in after:
                out.append(child)
            else:
                out.extend(removed_fields(value, after[key], child))
    elif isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            out.extend(removed_fields(b, a, f"{path}[{i}]"))
    return out


# --- OpenAPI v3 publishing --------------------------------------------------------------------

def to_openapi(schema: Any) -> Any:
    """Convert one JSON schema (draft 2020 with nullable type lists) to OpenAPI v3 style."""
    if isinstance(schema, list):
        return [to_openapi(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    one_of = schema.get("oneOf")
    if one_of and all(isinstance(o, dict) and "type" in o for o in one_of):
        types = {t for o in one_of for t in _types(o)}
        out = {k: to_openapi(v) for k, v in schema.items() if k != "oneOf"}
        if types >= {"string", "integer"}:
            out.update({"type": "string", "format": "int-or-string", "x-kubernetes-int-or-string": True})
        else:
            out["type"] = "string"
        return out
    out = {}
    for key, value in schema.items():
        if key == "$ref":
            out["allOf"] = [{"$ref": "#/components/schemas/" + _ref_name(value)}]
        elif key == "type":
            named = [t for t in (value if isinstance(value, list) else [value]) if t != "null"]
            if named:
                out["type"] = named[0]
        elif key == "enum":
            out["enum"] = [v for v in value if v is not None]
        elif key in ("properties", "patternProperties"):
            out[key] = {k: to_openapi(v) for k, v in value.items()}
        else:
            out[key] = to_openapi(value)
    if "allOf" in out and out.get("description") is None:
        out.pop("description", None)
    if "allOf" in out:
        out.setdefault("default", {})
    return out


def _types(schema: dict[str, Any]) -> list[str]:
    t = schema.get("type")
    return [x for x in (t if isinstance(t, list) else [t]) if x and x != "null"]


def closure(names: list[str]) -> dict[str, Any]:
    """The OpenAPI component schemas for ``names`` and every definition they reference."""
    defs = definitions()
    out: dict[str, Any] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in out or name not in defs:
            continue
        converted = to_openapi(defs[name])
        out[name] = converted
        todo.extend(_refs(defs[name]))
    return out


def _refs(schema: Any) -> list[str]:
    found: list[str] = []
    if isinstance(schema, dict):
        for k, v in schema.items():
            if k == "$ref" and isinstance(v, str):
                found.append(_ref_name(v))
            else:
                found.extend(_refs(v))
    elif isinstance(schema, list):
        for v in schema:
            found.extend(_refs(v))
    return found
