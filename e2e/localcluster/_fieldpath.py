"""Schema-aware field paths and field sets, as the apiserver's structured-merge-diff knows them.

Both strategic merge patch and server-side apply need to know, for every position in an
object, whether a list is atomic, a set, or a map keyed by some fields, and whether a map is
granular or atomic. The real apiserver reads that from the OpenAPI of built-in types and from a
CRD's structural schema. We do the same: built-in types come from the OpenAPI definitions
shipped with ``kubernetes-validate`` (which keep ``x-kubernetes-list-type``,
``x-kubernetes-list-map-keys`` and ``x-kubernetes-patch-*``), custom resources from their CRD
schema, and anything without a schema is "deduced" (maps granular, lists atomic), exactly like
structured-merge-diff's deduced type.

A path is a tuple of elements; an element is one of

- ``("f", name)``      a field of a struct or a key of a granular map   (``f:name``)
- ``("k", json)``      an item of an associative list, by its key fields (``k:{"name":"x"}``)
- ``("v", json)``      an item of a set                                  (``v:"x"``)
- ``("i", index)``     an item of a list that has no key (only for deduced lists inside sets)
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from pathlib import Path as _FsPath
from typing import Any

PathElement = tuple[str, Any]
FieldPath = tuple[PathElement, ...]


# --------------------------------------------------------------------------------------------
# Schema nodes


@functools.cache
def _builtin_definitions() -> dict[str, Any]:
    import kubernetes_validate

    root = _FsPath(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    # The "-local" flavours keep the $ref structure and the x-kubernetes-* extensions;
    # take the newest one shipped.
    candidates = sorted(
        (p for p in root.iterdir() if p.name.endswith("-local")),
        key=lambda p: tuple(int(x) for x in p.name[1:].split("-")[0].split(".")),
    )
    with open(candidates[-1] / "_definitions.json") as fh:
        data = json.load(fh)
    return dict(data.get("$defs") or data.get("definitions") or {})


@functools.cache
def _builtin_index() -> dict[str, str]:
    """Maps ``group/version/Kind`` (``v1/Kind`` for the core group) to a definition name."""
    index: dict[str, str] = {}
    for name, schema in _builtin_definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            group, version, kind = gvk.get("group", ""), gvk["version"], gvk["kind"]
            key = f"{group}/{version}/{kind}" if group else f"{version}/{kind}"
            # A kind such as DeleteOptions is listed under every group; the first wins.
            index.setdefault(key, name)
    return index


def builtin_schema(kind: str) -> dict[str, Any] | None:
    """The OpenAPI definition of a built-in kind such as ``apps/v1/Deployment``, or None."""
    name = _builtin_index().get(kind)
    if name is None:
        return None
    return dict(_builtin_definitions()[name])


_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def _types_of(schema: dict[str, Any]) -> set[str]:
    t = schema.get("type")
    if t is None:
        return set()
    if isinstance(t, list):
        return {x for x in t if x != "null"}
    return {t}


class Node:
    """One position in a schema. ``Node(None)`` is the deduced (schemaless) type."""

    __slots__ = ("builtin", "resource", "schema")
    schema: dict[str, Any] | None
    builtin: bool
    resource: bool

    def __init__(
        self, schema: dict[str, Any] | None, builtin: bool = False, resource: bool = False
    ) -> None:
        # A resource (the root of a custom resource, or an embedded one) has the real
        # ObjectMeta as metadata, whatever its schema says: finalizers are a set,
        # ownerReferences a map keyed by uid, labels and annotations granular maps.
        self.resource = resource or bool(schema and schema.get("x-kubernetes-embedded-resource"))
        if schema is not None and "$ref" in schema:
            ref = schema["$ref"].rsplit("/", 1)[-1]
            merged = dict(_builtin_definitions().get(ref, {}))
            # Extensions written next to a $ref (patch strategy, description) stay in force.
            merged.update({k: v for k, v in schema.items() if k != "$ref"})
            schema = merged
        if schema is not None and schema.get("allOf") and len(schema["allOf"]) == 1:
            inner: dict[str, Any] = Node(schema["allOf"][0], builtin).schema or {}
            merged = dict(inner)
            merged.update({k: v for k, v in schema.items() if k != "allOf"})
            schema = merged
        self.schema = schema
        self.builtin = builtin

    @property
    def deduced(self) -> bool:
        s = self.schema
        if s is None:
            return True
        if s.get("x-kubernetes-int-or-string"):
            return False
        return not (
            _types_of(s) or "properties" in s or "items" in s or "additionalProperties" in s
        )

    # -- objects -----------------------------------------------------------------------------

    def has_field(self, name: str) -> bool:
        """True for a declared struct field (as opposed to a key of a map)."""
        return self.schema is not None and name in (self.schema.get("properties") or {})

    def field(self, name: str) -> Node:
        if name == "metadata" and self.resource and not self.builtin:
            return Node({"$ref": f"#/$defs/{_OBJECT_META}"}, builtin=True)
        s = self.schema
        if s is None:
            return Node(None)
        props = s.get("properties") or {}
        if name in props:
            return Node(props[name], self.builtin)
        addl = s.get("additionalProperties")
        if isinstance(addl, dict):
            return Node(addl, self.builtin)
        return Node(None)

    @property
    def map_atomic(self) -> bool:
        return self.schema is not None and self.schema.get("x-kubernetes-map-type") == "atomic"

    # -- lists -------------------------------------------------------------------------------

    def items(self) -> Node:
        s = self.schema
        if s is None or not isinstance(s.get("items"), dict):
            return Node(None)
        return Node(s["items"], self.builtin)

    @property
    def list_type(self) -> str:
        """``atomic``, ``set`` or ``map``; lists default to atomic, as in structured-merge-diff."""
        if self.schema is None:
            return "atomic"
        lt = self.schema.get("x-kubernetes-list-type", "atomic")
        if lt == "map" and not self.list_keys:
            return "atomic"
        return str(lt)

    @property
    def list_keys(self) -> list[str]:
        if self.schema is None:
            return []
        return list(self.schema.get("x-kubernetes-list-map-keys") or [])

    def key_defaults(self) -> dict[str, Any]:
        """Defaults of key fields (``protocol: TCP`` of ports), used when an item omits them."""
        item = self.items()
        out: dict[str, Any] = {}
        for key in self.list_keys:
            sub = item.field(key).schema or {}
            if "default" in sub:
                out[key] = sub["default"]
        # Built-in definitions carry no defaults; the one that matters for keys is the
        # protocol of ports, which the apiserver defaults to TCP before merging.
        if self.builtin and "protocol" in self.list_keys:
            out.setdefault("protocol", "TCP")
        return out

    # -- strategic merge patch ---------------------------------------------------------------

    @property
    def patch_strategies(self) -> set[str]:
        if self.schema is None:
            return set()
        raw = self.schema.get("x-kubernetes-patch-strategy", "")
        return {p for p in str(raw).split(",") if p}

    @property
    def patch_merge_key(self) -> str | None:
        if self.schema is None:
            return None
        key = self.schema.get("x-kubernetes-patch-merge-key")
        return str(key) if key else None


def node_for_kind(kind: str, schema: dict[str, Any] | None = None) -> Node:
    """The root node for ``kind``; an explicit (CRD) schema wins over the built-in table."""
    if schema is not None:
        return Node(schema, resource=True)
    builtin = builtin_schema(kind) if kind else None
    if builtin is not None:
        return Node(builtin, builtin=True)
    return Node(None, resource=True)


# --------------------------------------------------------------------------------------------
# Path elements


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def list_item_element(node: Node, item: Any, index: int) -> PathElement:
    """The path element naming ``item`` in a list of type ``node``."""
    lt = node.list_type
    if lt == "map" and isinstance(item, dict):
        key = dict(node.key_defaults())
        for k in node.list_keys:
            if k in item:
                key[k] = item[k]
        return ("k", _json(key))
    if lt == "set" and not isinstance(item, dict | list):
        return ("v", _json(item))
    return ("i", index)


def element_to_key(pe: PathElement) -> str:
    """``f:name``, ``k:{...}``, ``v:...``, ``i:0``: the keys of FieldsV1."""
    kind, value = pe
    return f"{kind}:{value}"


def key_to_element(key: str) -> PathElement:
    kind, _, rest = key.partition(":")
    if kind == "i":
        return ("i", int(rest))
    if kind in {"k", "v"}:
        # Re-encode so that keys written by others compare equal to ours.
        return (kind, _json(json.loads(rest)))
    return (kind, rest)


def _go_value(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def path_string(path: FieldPath) -> str:
    """A path as structured-merge-diff prints it: ``.spec.containers[name="x"].image``."""
    out: list[str] = []
    for kind, value in path:
        if kind == "f":
            out.append("." + value)
        elif kind == "k":
            fields = json.loads(value)
            out.append("[" + ",".join(f"{k}={_go_value(v)}" for k, v in fields.items()) + "]")
        elif kind == "v":
            out.append("[=" + _go_value(json.loads(value)) + "]")
        else:
            out.append(f"[{value}]")
    return "".join(out)


# --------------------------------------------------------------------------------------------
# FieldsV1 encoding


def encode_fields(paths: Iterable[FieldPath]) -> dict[str, Any]:
    """Encode a set of paths as FieldsV1: a trie where ``"."`` marks an inner member."""
    members = set(paths)
    root: dict[str, Any] = {}
    for path in sorted(members, key=lambda p: [element_to_key(e) for e in p]):
        node = root
        for i, pe in enumerate(path):
            node = node.setdefault(element_to_key(pe), {})
            if i < len(path) - 1 and path[: i + 1] in members:
                node["."] = {}
    return _sorted_trie(root)


def _sorted_trie(node: dict[str, Any]) -> dict[str, Any]:
    return {k: _sorted_trie(v) for k, v in sorted(node.items())}


def decode_fields(fields: dict[str, Any] | None) -> set[FieldPath]:
    out: set[FieldPath] = set()

    def walk(node: dict[str, Any], prefix: FieldPath) -> None:
        children = {k: v for k, v in node.items() if k != "."}
        if prefix and ("." in node or not children):
            out.add(prefix)
        for key, child in children.items():
            walk(child if isinstance(child, dict) else {}, (*prefix, key_to_element(key)))

    walk(fields or {}, ())
    return out


def has_prefix(path: FieldPath, prefix: FieldPath) -> bool:
    return path[: len(prefix)] == prefix
