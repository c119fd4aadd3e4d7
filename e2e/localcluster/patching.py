"""Patch algorithms of the local control plane: JSON patch, merge patch, strategic merge
patch and server-side apply with field ownership (``metadata.managedFields``).

Everything here is a pure function of its inputs (plus an optional clock value for the
``time`` of managedFields entries); the HTTP layer maps the exceptions onto Status objects:
``PatchError`` -> 422 (or 400), ``UnsupportedPatch`` -> 415, ``ApplyConflict`` -> 409.

The behaviour follows the apiserver: evanphx/json-patch for RFC 6902, the
``strategicpatch`` package for strategic merge patch (patch strategies and merge keys read from
the built-in OpenAPI), and structured-merge-diff for server-side apply.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from e2e.localcluster._fieldpath import (
    FieldPath,
    Node,
    PathElement,
    decode_fields,
    encode_fields,
    has_prefix,
    list_item_element,
    node_for_kind,
    path_string,
)

__all__ = [
    "ApplyConflict",
    "PatchError",
    "UnsupportedPatch",
    "json_patch",
    "merge_patch",
    "record_update",
    "server_side_apply",
    "strategic_merge_patch",
]


class PatchError(ValueError):
    """A patch that cannot be applied; the message is fit for a Status."""


class UnsupportedPatch(PatchError):
    """A patch type the resource does not accept (415 UnsupportedMediaType)."""


# --------------------------------------------------------------------------------------------
# RFC 6902 JSON patch


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f'invalid JSON pointer "{path}": must start with "/"')
    return [_unescape(t) for t in path[1:].split("/")]


def _list_index(container: list[Any], token: str, path: str, *, insert: bool) -> int:
    if token == "-" and insert:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchError(f'doc is missing path: "{path}": invalid index "{token}"')
    index = int(token)
    limit = len(container) if insert else len(container) - 1
    if index > limit:
        raise PatchError(f'doc is missing path: "{path}": index out of range')
    return index


def _resolve_parent(doc: Any, tokens: list[str], path: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f'doc is missing path: "{path}": missing value')
            node = node[token]
        elif isinstance(node, list):
            node = node[_list_index(node, token, path, insert=False)]
        else:
            raise PatchError(f'doc is missing path: "{path}": missing value')
    return node


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _resolve_parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f'doc is missing path: "{path}": missing value')
        return parent[last]
    if isinstance(parent, list):
        return parent[_list_index(parent, last, path, insert=False)]
    raise PatchError(f'doc is missing path: "{path}": missing value')


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _resolve_parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_list_index(parent, last, path, insert=True), value)
    else:
        raise PatchError(f'doc is missing path: "{path}": missing value')
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    tokens = _pointer(path)
    if not tokens:
        raise PatchError("unable to remove the whole document")
    parent = _resolve_parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f'doc is missing path: "{path}": missing value')
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_list_index(parent, last, path, insert=False))
    raise PatchError(f'doc is missing path: "{path}": missing value')


def json_patch(obj: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply an RFC 6902 patch; the input is not modified. Raises PatchError."""
    if not isinstance(ops, list):
        raise PatchError("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc: Any = copy.deepcopy(obj)
    for op in ops:
        if not isinstance(op, dict):
            raise PatchError("json: cannot unmarshal into Go value of type jsonpatch.Operation")
        kind = op.get("op")
        path = op.get("path")
        if not isinstance(path, str):
            raise PatchError(f'{kind} operation does not apply: "path" is missing')
        try:
            if kind == "add":
                if "value" not in op:
                    raise PatchError("missing value")
                doc = _add(doc, path, copy.deepcopy(op["value"]))
            elif kind == "remove":
                doc, _ = _remove(doc, path)
            elif kind == "replace":
                if "value" not in op:
                    raise PatchError("missing value")
                _get(doc, path)  # the target must exist
                if _pointer(path):
                    doc, _ = _remove(doc, path)
                doc = _add(doc, path, copy.deepcopy(op["value"]))
            elif kind in {"move", "copy"}:
                source = op.get("from")
                if not isinstance(source, str):
                    raise PatchError('"from" is missing')
                if kind == "move":
                    if path != source and path.startswith(source + "/"):
                        raise PatchError(f'cannot move "{source}" into its own child "{path}"')
                    doc, value = _remove(doc, source)
                else:
                    value = copy.deepcopy(_get(doc, source))
                doc = _add(doc, path, value)
            elif kind == "test":
                if "value" not in op:
                    raise PatchError("missing value")
                try:
                    current = _get(doc, path)
                except PatchError:
                    current = None
                if not _json_equal(current, op["value"]):
                    raise PatchError(f"testing value {path} failed: test failed")
            else:
                raise PatchError(f"Unexpected kind: {kind}")
        except PatchError as exc:
            if kind in {"add", "remove", "replace", "move", "copy"}:
                raise PatchError(f"{kind} operation does not apply: {exc}") from None
            raise
    if not isinstance(doc, dict):
        raise PatchError("the patched object is not a JSON object")
    return doc


def _json_equal(a: Any, b: Any) -> bool:
    # JSON has one number type: 1 and 1.0 are equal, but True is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return bool(a == b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and type(a) is type(b)


# --------------------------------------------------------------------------------------------
# RFC 7386 merge patch


def merge_patch(obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Apply an RFC 7386 merge patch: maps merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        raise PatchError("merge patch must be a JSON object")
    result = _merge_value(obj, patch)
    assert isinstance(result, dict)
    return result


def _merge_value(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_value(out.get(key), value)
    return out


# --------------------------------------------------------------------------------------------
# Strategic merge patch

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_DELETE_FROM_PRIMITIVE = "$deleteFromPrimitiveList/"
_SET_ORDER = "$setElementOrder/"
_DELETE = object()  # returned by _smp_map when a map asked for its own deletion


def strategic_merge_patch(obj: dict[str, Any], patch: dict[str, Any], kind: str) -> dict[str, Any]:
    """Apply a strategic merge patch to a built-in object of ``kind`` (``apps/v1/Deployment``).

    Custom resources have no patch strategies; the apiserver answers 415 for them, and so
    does this function (``UnsupportedPatch``).
    """
    node = node_for_kind(kind)
    if node.deduced:
        raise UnsupportedPatch(
            "the body of the request was in an unknown format - accepted media types include: "
            "application/json-patch+json, application/merge-patch+json, "
            "application/apply-patch+yaml"
        )
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch must be a JSON object")
    result = _smp_map(obj, patch, node)
    if result is _DELETE:
        return {}
    assert isinstance(result, dict)
    return result


def _smp_map(original: Any, patch: dict[str, Any], node: Node) -> Any:
    directive = patch.get(_DIRECTIVE)
    if directive == "delete":
        return _DELETE
    if directive == "replace":
        return _strip_directives(patch)
    if directive not in (None, "merge"):
        raise PatchError(f"Unknown patch type: {directive!r}")
    out: dict[str, Any] = copy.deepcopy(original) if isinstance(original, dict) else {}

    retain = patch.get(_RETAIN_KEYS)
    if retain is not None:
        if not isinstance(retain, list):
            raise PatchError("$retainKeys must be a list")
        keep = set(retain)
        for key in list(out):
            if key not in keep:
                del out[key]

    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key.startswith(_DELETE_FROM_PRIMITIVE):
            name = key[len(_DELETE_FROM_PRIMITIVE) :]
            current = out.get(name)
            if isinstance(current, list) and isinstance(value, list):
                doomed = [json.dumps(v, sort_keys=True) for v in value]
                out[name] = [v for v in current if json.dumps(v, sort_keys=True) not in doomed]
        elif key.startswith(_SET_ORDER) and isinstance(value, list):
            orders[key[len(_SET_ORDER) :]] = value

    for key, value in patch.items():
        if key in (_DIRECTIVE, _RETAIN_KEYS) or key.startswith(
            ("$deleteFromPrimitiveList/", _SET_ORDER)
        ):
            continue
        if value is None:
            out.pop(key, None)
            continue
        child = node.field(key)
        current = out.get(key)
        if isinstance(value, dict):
            if "replace" in child.patch_strategies or not isinstance(current, dict):
                merged = _smp_map({}, value, child)
            else:
                merged = _smp_map(current, value, child)
            if merged is _DELETE:
                out.pop(key, None)
            else:
                out[key] = merged
        elif isinstance(value, list):
            out[key] = _smp_list(current if isinstance(current, list) else [], value, child)
        else:
            out[key] = copy.deepcopy(value)

    for name, order in orders.items():
        if isinstance(out.get(name), list):
            out[name] = _apply_order(out[name], order, node.field(name).patch_merge_key)
    return out


def _smp_list(original: list[Any], patch: list[Any], node: Node) -> list[Any]:
    # A {"$patch": "replace"} item replaces the whole list, whatever the strategy.
    if any(isinstance(i, dict) and i.get(_DIRECTIVE) == "replace" for i in patch):
        return [
            _strip_directives(i)
            for i in patch
            if not (isinstance(i, dict) and i.get(_DIRECTIVE) == "replace")
        ]
    if "merge" not in node.patch_strategies:
        return [_strip_directives(i) for i in patch if not _is_delete_item(i)]
    key = node.patch_merge_key
    item_node = node.items()
    out = copy.deepcopy(original)
    if key is None:
        # A merged list of scalars is a set: append what is new, keep the rest.
        seen = [json.dumps(v, sort_keys=True) for v in out]
        for item in patch:
            if isinstance(item, dict):
                continue
            encoded = json.dumps(item, sort_keys=True)
            if encoded not in seen:
                seen.append(encoded)
                out.append(copy.deepcopy(item))
        return out
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(f"cannot merge a non-object item into a list keyed by {key!r}")
        if key not in item:
            raise PatchError(f"map: {item} does not contain declared merge key: {key}")
        matches = [
            i for i, cur in enumerate(out) if isinstance(cur, dict) and cur.get(key) == item[key]
        ]
        if item.get(_DIRECTIVE) == "delete":
            out = [cur for i, cur in enumerate(out) if i not in matches]
            continue
        if matches:
            merged = _smp_map(out[matches[0]], item, item_node)
            if merged is _DELETE:
                out.pop(matches[0])
            else:
                out[matches[0]] = merged
        else:
            merged = _smp_map({}, item, item_node)
            if merged is not _DELETE:
                out.append(merged)
    return out


def _apply_order(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    """Honour ``$setElementOrder``: listed items in that order, the others where they were."""

    def ident(item: Any) -> str:
        value = item.get(key) if key and isinstance(item, dict) else item
        return json.dumps(value, sort_keys=True)

    wanted = [
        json.dumps(o.get(key) if key and isinstance(o, dict) else o, sort_keys=True) for o in order
    ]
    listed = sorted((i for i in items if ident(i) in wanted), key=lambda i: wanted.index(ident(i)))
    result: list[Any] = []
    listed_iter = iter(listed)
    for item in items:
        result.append(next(listed_iter) if ident(item) in wanted else item)
    return result


def _is_delete_item(item: Any) -> bool:
    return isinstance(item, dict) and item.get(_DIRECTIVE) == "delete"


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _strip_directives(v)
            for k, v in value.items()
            if not k.startswith("$") or k in ("$ref", "$schema")
        }
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return copy.deepcopy(value)


# --------------------------------------------------------------------------------------------
# Server-side apply: field sets over objects (structured-merge-diff semantics)


def _to_field_set(value: Any, node: Node, path: FieldPath, out: set[FieldPath]) -> None:
    """Every field ``value`` sets, as structured-merge-diff's ToFieldSet computes it."""
    if isinstance(value, dict):
        if node.map_atomic:
            out.add(path)
            return
        for key, child in value.items():
            sub = (*path, ("f", key))
            _to_field_set(child, node.field(key), sub, out)
            # Struct fields are implied by their children; map keys, empty maps and
            # explicit nulls are members in their own right.
            if child is None or child == {} or not node.has_field(key):
                out.add(sub)
    elif isinstance(value, list):
        if node.list_type == "atomic":
            out.add(path)
            return
        items = node.items()
        for i, item in enumerate(value):
            sub = (*path, list_item_element(node, item, i))
            _to_field_set(item, items, sub, out)
            out.add(sub)
    else:
        out.add(path)


_MISSING = object()


@dataclass
class _Comparison:
    added: set[FieldPath] = field(default_factory=set)
    modified: set[FieldPath] = field(default_factory=set)
    removed: set[FieldPath] = field(default_factory=set)


def _index_items(node: Node, items: list[Any]) -> dict[PathElement, Any]:
    return {list_item_element(node, item, i): item for i, item in enumerate(items)}


def _compare(lhs: Any, rhs: Any, node: Node, path: FieldPath, res: _Comparison) -> None:
    granular_map = (
        (isinstance(lhs, dict) or isinstance(rhs, dict))
        and not node.map_atomic
        and all(isinstance(v, dict) or v is _MISSING for v in (lhs, rhs))
    )
    granular_list = (
        (isinstance(lhs, list) or isinstance(rhs, list))
        and node.list_type != "atomic"
        and all(isinstance(v, list) or v is _MISSING for v in (lhs, rhs))
    )
    if granular_map:
        left = lhs if isinstance(lhs, dict) else {}
        right = rhs if isinstance(rhs, dict) else {}
        for key in {**left, **right}:
            _compare(
                left.get(key, _MISSING),
                right.get(key, _MISSING),
                node.field(key),
                (*path, ("f", key)),
                res,
            )
    elif granular_list:
        items = node.items()
        left_items = _index_items(node, lhs if isinstance(lhs, list) else [])
        right_items = _index_items(node, rhs if isinstance(rhs, list) else [])
        for pe in {**left_items, **right_items}:
            _compare(
                left_items.get(pe, _MISSING),
                right_items.get(pe, _MISSING),
                items,
                (*path, pe),
                res,
            )
    else:
        if lhs is _MISSING:
            res.added.add(path)
        elif rhs is _MISSING:
            res.removed.add(path)
        elif not _json_equal(lhs, rhs):
            res.modified.add(path)
        return
    if path:
        if lhs is _MISSING:
            res.added.add(path)
        elif rhs is _MISSING:
            res.removed.add(path)


def _merge(lhs: Any, rhs: Any, node: Node) -> Any:
    """Merge an applied configuration (rhs) into the live value (lhs)."""
    if isinstance(lhs, dict) and isinstance(rhs, dict) and not node.map_atomic:
        out = dict(lhs)
        for key, value in rhs.items():
            out[key] = (
                _merge(lhs[key], value, node.field(key)) if key in lhs else copy.deepcopy(value)
            )
        return out
    if isinstance(lhs, list) and isinstance(rhs, list) and node.list_type != "atomic":
        return _merge_associative(lhs, rhs, node)
    return copy.deepcopy(rhs)


def _merge_associative(lhs: list[Any], rhs: list[Any], node: Node) -> list[Any]:
    """Merge keyed lists in structured-merge-diff's order: walk both lists together, keep
    live-only items where they are, and place shared items in the applied order."""
    items = node.items()
    lpes = [list_item_element(node, it, i) for i, it in enumerate(lhs)]
    rpes = [list_item_element(node, it, i) for i, it in enumerate(rhs)]
    lmap = dict(zip(lpes, lhs, strict=True))
    rmap = dict(zip(rpes, rhs, strict=True))
    shared = [pe for pe in rpes if pe in lmap]
    next_shared = shared.pop(0) if shared else None
    merged: set[PathElement] = set()
    out: list[Any] = []
    li = ri = 0
    while li < len(lpes) or ri < len(rpes):
        if li < len(lpes) and ri < len(rpes):
            pe = lpes[li]
            if pe == rpes[ri]:
                merged.add(pe)
                out.append(_merge(lmap[pe], rmap[pe], items))
                li, ri = li + 1, ri + 1
                next_shared = shared.pop(0) if shared else None
                continue
            if pe in rmap and next_shared is not None and next_shared != pe:
                li += 1  # a shared item whose turn comes later, in the applied order
                continue
        if li < len(lpes):
            pe = lpes[li]
            if pe not in rmap:
                out.append(copy.deepcopy(lhs[li]))
                li += 1
                continue
            if pe in merged:
                li += 1
                continue
        if ri < len(rpes):
            pe = rpes[ri]
            merged.add(pe)
            out.append(_merge(lmap[pe], rhs[ri], items) if pe in lmap else copy.deepcopy(rhs[ri]))
            ri += 1
            if next_shared is not None and next_shared == pe:
                next_shared = shared.pop(0) if shared else None
    return out


_Trie = dict[PathElement, tuple[bool, "_Trie"]]


def _trie(paths: Iterable[FieldPath]) -> _Trie:
    root: dict[PathElement, tuple[bool, Any]] = {}
    for path in paths:
        node = root
        for i, pe in enumerate(path):
            member, child = node.get(pe, (False, {}))
            node[pe] = (member or i == len(path) - 1, child)
            node = child
    return root


def _remove_items(value: Any, node: Node, doomed: _Trie) -> Any:
    """structured-merge-diff's RemoveItems: a member of ``doomed`` goes with everything below
    it; elsewhere only the listed descendants go. Returns a new value."""
    if isinstance(value, dict) and not node.map_atomic:
        out: dict[str, Any] = {}
        for key, item in value.items():
            member, below = doomed.get(("f", key), (False, {}))
            if member:
                continue
            out[key] = _remove_items(item, node.field(key), below) if below else item
        return out
    if isinstance(value, list) and node.list_type != "atomic":
        items = node.items()
        kept: list[Any] = []
        for i, item in enumerate(value):
            member, below = doomed.get(list_item_element(node, item, i), (False, {}))
            if member:
                continue
            kept.append(_remove_items(item, items, below) if below else item)
        return kept
    return value


def _field_set(value: Any, node: Node) -> set[FieldPath]:
    out: set[FieldPath] = set()
    _to_field_set(value, node, (), out)
    return out


def _prune_applied(
    merged: dict[str, Any], last_set: set[FieldPath], owned: set[FieldPath], node: Node
) -> dict[str, Any]:
    """Drop what the applier applied last time and applies no more, as structured-merge-diff's
    prune does: remove the old configuration, add back whatever any manager (the applier's
    new configuration included) owns, and only ever take away paths of the old one."""
    last = _named_field_ancestors(last_set, node)
    pruned = _remove_items(merged, node, _trie(last))
    merged_set = _named_field_ancestors(_field_set(merged, node), node)
    pruned_set = _named_field_ancestors(_field_set(pruned, node), node)
    keep = pruned_set | _named_field_ancestors(owned, node)
    with_owned = _remove_items(merged, node, _trie(merged_set - keep))
    survived = _named_field_ancestors(_field_set(with_owned, node), node)
    result: dict[str, Any] = _remove_items(merged, node, _trie((merged_set - survived) & last))
    return result


def _named_field_ancestors(paths: Iterable[FieldPath], root: Node) -> set[FieldPath]:
    """``EnsureNamedFieldsAreMembers``: struct fields on the way to a member count as members
    too, so that a struct the applier stops mentioning goes away with it."""
    out: set[FieldPath] = set()
    for path in paths:
        out.add(path)
        node = root
        for i, pe in enumerate(path[:-1]):
            if pe[0] == "f":
                if node.has_field(pe[1]):
                    out.add(path[: i + 1])
                node = node.field(pe[1])
            else:
                node = node.items()
    return out


# --------------------------------------------------------------------------------------------
# Server-side apply: managers


# Never owned by anyone (the apiserver's stripMeta set); `metadata` itself is in it because a
# create always "adds" the metadata struct.
_STRIPPED: frozenset[FieldPath] = frozenset(
    {(("f", "apiVersion"),), (("f", "kind"),), (("f", "metadata"),)}
    | {
        (("f", "metadata"), ("f", name))
        for name in (
            "name",
            "namespace",
            "creationTimestamp",
            "selfLink",
            "uid",
            "clusterName",
            "generation",
            "managedFields",
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        )
    }
)
_STATUS: FieldPath = (("f", "status"),)


class ApplyConflict(Exception):
    """Server-side apply found fields owned by other managers with other values (409)."""

    def __init__(self, conflicts: list[tuple[str, str]], described: list[tuple[str, str]]):
        self.conflicts = conflicts
        # (path, "conflict with ..." description) in the apiserver's wording, for the causes.
        self.causes = [
            {"reason": "FieldManagerConflict", "message": f"conflict with {who}", "field": path}
            for path, who in described
        ]
        if len(described) == 1:
            path, who = described[0]
            message = f"Apply failed with 1 conflict: conflict with {who}: {path}"
        else:
            by_manager: dict[str, list[str]] = {}
            for path, who in described:
                by_manager.setdefault(who, []).append(path)
            lines: list[str] = []
            for who in sorted(by_manager):
                lines.append(f"conflicts with {who}:")
                lines.extend(f"- {p}" for p in by_manager[who])
            message = f"Apply failed with {len(described)} conflicts: " + "\n".join(lines)
        super().__init__(message)
        self.message = message


@dataclass
class _Manager:
    manager: str
    operation: str
    api_version: str
    subresource: str
    time: str | None
    fields: set[FieldPath]

    @property
    def ident(self) -> tuple[str, str, str, str]:
        # Appliers keep one entry across versions; updaters have one per apiVersion.
        version = "" if self.operation == "Apply" else self.api_version
        return (self.manager, self.operation, version, self.subresource)

    def describe(self) -> str:
        text = json.dumps(self.manager)
        if self.subresource:
            text += f" with subresource {json.dumps(self.subresource)}"
        if self.operation == "Update":
            text += f" using {self.api_version}"
        return text

    def encode(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
        }
        if self.time is not None:
            entry["time"] = self.time
        entry["fieldsType"] = "FieldsV1"
        entry["fieldsV1"] = encode_fields(self.fields)
        if self.subresource:
            entry["subresource"] = self.subresource
        return entry


def _decode_managers(entries: Any) -> dict[tuple[str, str, str, str], _Manager]:
    out: dict[tuple[str, str, str, str], _Manager] = {}
    for entry in entries or []:
        if not isinstance(entry, dict):
            continue
        m = _Manager(
            manager=str(entry.get("manager", "")),
            operation=str(entry.get("operation", "Update")),
            api_version=str(entry.get("apiVersion", "")),
            subresource=str(entry.get("subresource", "")),
            time=entry.get("time"),
            fields=decode_fields(entry.get("fieldsV1")),
        )
        if m.ident in out:
            out[m.ident].fields |= m.fields
        else:
            out[m.ident] = m
    return out


def _encode_managers(managers: dict[tuple[str, str, str, str], _Manager]) -> list[dict[str, Any]]:
    kept = [m for m in managers.values() if m.fields]
    # The apiserver's order: operation, then time, then manager, apiVersion, subresource.
    kept.sort(key=lambda m: (m.operation, m.time or "", m.manager, m.api_version, m.subresource))
    return [m.encode() for m in kept]


def _now(now: str | None) -> str:
    if now is not None:
        return now
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _without_managed_fields(obj: dict[str, Any] | None) -> dict[str, Any]:
    if not obj:
        return {}
    out = copy.deepcopy(obj)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return out


def _ignored(path: FieldPath, subresource: str | None, status_subresource: bool) -> bool:
    if path in _STRIPPED:
        return True
    if subresource == "status":
        return not has_prefix(path, _STATUS)
    return status_subresource and has_prefix(path, _STATUS)


def _filter(
    paths: Iterable[FieldPath], subresource: str | None, status_sub: bool
) -> set[FieldPath]:
    return {p for p in paths if not _ignored(p, subresource, status_sub)}


def _strip_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_nulls(v) for v in value]
    return value


# Go structs that are values (not pointers), and slices without omitempty, in built-in
# types: a freshly created object already "has" them, so its creator does not own them as
# inner members (no ``.`` in FieldsV1), exactly like on a real apiserver.
_TEMPLATE_ZERO: list[tuple[tuple[str, ...], Any]] = [
    (("spec", "template", "metadata"), {}),
    (("spec", "template", "spec", "containers"), []),
]
_ZERO_PARTS: dict[str, list[tuple[tuple[str, ...], Any]]] = {
    "apps/v1/Deployment": [(("spec", "strategy"), {}), *_TEMPLATE_ZERO],
    "apps/v1/ReplicaSet": _TEMPLATE_ZERO,
    "apps/v1/StatefulSet": [(("spec", "updateStrategy"), {}), *_TEMPLATE_ZERO],
    "apps/v1/DaemonSet": [(("spec", "updateStrategy"), {}), *_TEMPLATE_ZERO],
    "batch/v1/Job": _TEMPLATE_ZERO,
    "v1/Pod": [(("spec", "containers"), [])],
}


def _zero_object(kind: str, node: Node) -> dict[str, Any]:
    """What a create is compared against: the zero value of the type."""
    if not node.builtin:
        return {}
    zero: dict[str, Any] = {"metadata": {}}
    for name in ("spec", "status"):
        if node.has_field(name) and not node.field(name).deduced:
            zero[name] = {}
    for path, value in _ZERO_PARTS.get(kind, []):
        cursor = zero
        for part in path[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[path[-1]] = copy.deepcopy(value)
    return zero


def _with_zero(obj: dict[str, Any], zero: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as the apiserver's typed object sees it: value structs are always present, so
    a status written for the first time does not make ``status`` itself an owned member."""
    out = dict(obj)
    for key, value in zero.items():
        if key not in out or out[key] is None:
            out[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _with_zero(out[key], value)
    return out


def _reset_applied(
    applied: dict[str, Any], subresource: str | None, status_sub: bool
) -> dict[str, Any]:
    out: dict[str, Any] = _strip_nulls(copy.deepcopy(applied))
    meta = out.get("metadata")
    if isinstance(meta, dict):
        for name in (
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            meta.pop(name, None)
    if subresource == "status":
        keep: dict[str, Any] = {k: out[k] for k in ("apiVersion", "kind") if k in out}
        if isinstance(meta, dict):
            keep["metadata"] = {k: meta[k] for k in ("name", "namespace") if k in meta}
        if "status" in out:
            keep["status"] = out["status"]
        return keep
    if status_sub:
        out.pop("status", None)
    return out


def server_side_apply(
    live: dict[str, Any] | None,
    applied: dict[str, Any],
    manager: str,
    force: bool,
    kind: str,
    *,
    schema: dict[str, Any] | None = None,
    subresource: str | None = None,
    status_subresource: bool = True,
    now: str | None = None,
) -> dict[str, Any]:
    """Apply ``applied`` as ``manager`` onto ``live`` (None: create) and return the new object.

    ``kind`` is ``group/version/Kind`` of a built-in type; for a custom resource pass its
    CRD's ``openAPIV3Schema`` as ``schema`` (lists are then atomic unless the schema says
    ``x-kubernetes-list-type``). ``subresource="status"`` applies only ``status``; on the main
    resource ``status`` is ignored when the type has a status subresource. ``now`` is the
    RFC 3339 time written into managedFields (default: the current time).
    Raises ApplyConflict unless ``force``.
    """
    if not isinstance(applied, dict):
        raise PatchError("the applied configuration must be an object")
    node = node_for_kind(kind, schema)
    api_version = str(applied.get("apiVersion") or (live or {}).get("apiVersion") or "")
    config = _reset_applied(applied, subresource, status_subresource)
    live_clean = _without_managed_fields(live)
    managers = _decode_managers(((live or {}).get("metadata") or {}).get("managedFields"))
    stamp = _now(now)
    if live and not managers:
        # Whatever the object held before anyone applied belongs to a placeholder manager,
        # so that the first applier does not silently take over or prune it.
        existing: set[FieldPath] = set()
        _to_field_set(live_clean, node, (), existing)
        before = _Manager(
            "before-first-apply", "Update", api_version, "", stamp, _filter(existing, None, False)
        )
        if before.fields:
            managers[before.ident] = before

    merged = _merge(live_clean, config, node)
    applied_set: set[FieldPath] = set()
    _to_field_set(config, node, (), applied_set)
    applied_set = _filter(applied_set, subresource, status_subresource)

    me = _Manager(manager, "Apply", api_version, subresource or "", stamp, applied_set)
    previous = managers.get(me.ident)
    last_set = previous.fields if previous else set()
    managers[me.ident] = me

    # Fields this manager applied before and no longer applies go away, unless someone
    # (including its new configuration) still owns them or something beneath them.
    if last_set:
        owned: set[FieldPath] = set().union(*(m.fields for m in managers.values()))
        merged = _prune_applied(merged, last_set, owned, node)

    res = _Comparison()
    zero = _zero_object(kind, node)
    _compare(_with_zero(live_clean, zero), _with_zero(merged, zero), node, (), res)
    changed = _filter(res.added | res.modified, subresource, status_subresource)
    removed = _filter(res.removed, subresource, status_subresource)

    conflicts: list[tuple[FieldPath, _Manager]] = []
    for ident, other in managers.items():
        if ident == me.ident:
            continue
        for path in sorted(other.fields & changed, key=path_string):
            conflicts.append((path, other))
    if conflicts and not force:
        raise ApplyConflict(
            [(path_string(p), m.manager) for p, m in conflicts],
            [(path_string(p), m.describe()) for p, m in conflicts],
        )
    for ident, other in managers.items():
        if ident != me.ident:
            other.fields -= changed | removed

    if previous is not None and merged == live_clean:
        # A no-op apply keeps the entry's time, as the apiserver does.
        me.time = previous.time
    result: dict[str, Any] = merged
    result.setdefault("metadata", {})["managedFields"] = _encode_managers(managers)
    return result


def record_update(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    manager: str,
    operation: str = "Update",
    kind: str = "",
    *,
    schema: dict[str, Any] | None = None,
    subresource: str | None = None,
    status_subresource: bool = True,
    now: str | None = None,
) -> dict[str, Any]:
    """Track ownership for a create, update or patch: ``manager`` takes the fields it
    changed or set, and every other manager loses them. Returns ``new`` with
    ``metadata.managedFields`` updated.

    As the apiserver does, managedFields sent by the client replace the stored ones when they
    differ (an empty list keeps the stored ones; ``[{}]`` resets them).
    """
    node = node_for_kind(kind, schema)
    api_version = str(new.get("apiVersion") or (old or {}).get("apiVersion") or "")
    new_meta = new.get("metadata") or {}
    old_entries = ((old or {}).get("metadata") or {}).get("managedFields")
    sent = new_meta.get("managedFields")
    if sent and sent != old_entries:
        managers = _decode_managers(e for e in sent if isinstance(e, dict) and e.get("manager"))
    else:
        managers = _decode_managers(old_entries)

    zero = _zero_object(kind, node)
    before = _with_zero(_without_managed_fields(old), zero)
    after = _with_zero(_without_managed_fields(new), zero)
    res = _Comparison()
    _compare(before, after, node, (), res)
    changed = _filter(res.added | res.modified, subresource, status_subresource)
    removed = _filter(res.removed, subresource, status_subresource)

    me_probe = _Manager(manager, operation, api_version, subresource or "", None, set())
    for other in managers.values():
        other.fields -= changed | removed
    if changed:
        me = managers.get(me_probe.ident)
        if me is None:
            me = me_probe
            managers[me.ident] = me
        me.fields |= changed
        me.time = _now(now)
    result = copy.deepcopy(new)
    result.setdefault("metadata", {})["managedFields"] = _encode_managers(managers)
    return result
