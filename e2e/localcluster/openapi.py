"""OpenAPI v3: the index (``/openapi/v3``) and one document per group-version.

kubectl reads these to decide three things: whether the server validates fields itself
(the PATCH operation of a kind lists a ``fieldValidation`` parameter), how to build a
strategic merge patch (``x-kubernetes-patch-merge-key`` in the kind's schema) and what
``kubectl explain`` prints (descriptions of the schema found by its
``x-kubernetes-group-version-kind``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from . import admission as _admission
from . import schemas
from .objects import deep_copy
from .resources import Registry, ResourceType

log = logging.getLogger("localcluster.openapi")
META = "io.k8s.apimachinery.pkg.apis.meta.v1."
_COMMON = [META + "ObjectMeta", META + "Status", META + "DeleteOptions", META + "Patch",
           META + "ListMeta", "io.k8s.api.autoscaling.v1.Scale"]

_cache: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[bytes, str]] = {}


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def index(registry: Registry) -> dict[str, Any]:
    paths = {}
    for group, versions in registry.groups().items():
        for v in versions:
            gv = _gv_path(group, v)
            doc = document(registry, gv)
            if doc is not None:
                paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={doc[1]}"}
    return {"paths": paths}


def document(registry: Registry, gv: str) -> tuple[bytes, str] | None:
    """The serialized document for ``api/v1`` or ``apis/<group>/<version>``, and its hash."""
    parts = gv.split("/")
    if parts[0] == "api" and len(parts) == 2:
        group, version = "", parts[1]
    elif parts[0] == "apis" and len(parts) == 3:
        group, version = parts[1], parts[2]
    else:
        return None
    types = registry.in_group_version(group, version)
    if not types:
        return None
    # Keyed on what the document is built from, so a new CRD rebuilds its own group only.
    key = (gv, tuple(sorted((rt.plural, (rt.crd or {}).get("metadata", {}).get("resourceVersion", ""))
                            for rt in types)))
    hit = _cache.get(key)
    if hit is not None:
        return hit
    doc = _build(group, version, types)
    body = json.dumps(doc, separators=(",", ":")).encode()
    digest = hashlib.sha512(body).hexdigest().upper()[:128]
    if len(_cache) > 512:
        _cache.clear()
    _cache[key] = (body, digest)
    return body, digest


def crd_schema_name(rt: ResourceType) -> str:
    """Reverse-domain name like the real server's: ``dev.tfleet.v1alpha1.InferenceService``."""
    return ".".join(reversed(rt.group.split("."))) + f".{rt.version}.{rt.kind}"


def _crd_schema(rt: ResourceType) -> dict[str, Any]:
    assert rt.crd is not None
    try:
        return _admission.openapi_v3_schema_for_crd(rt.crd, rt.version)
    except Exception:
        log.exception("Failed to convert the schema of CRD %s for OpenAPI, publishing it as stored",
                      rt.crd.get("metadata", {}).get("name"))
    schema = deep_copy(rt.schema() or {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"type": "string", "description": (
        "APIVersion defines the versioned schema of this representation of an object. Servers "
        "should convert recognized schemas to the latest internal value, and may reject "
        "unrecognized values.")}
    props["kind"] = {"type": "string", "description": (
        "Kind is a string value representing the REST resource this object represents. Servers "
        "may infer this from the endpoint the client submits requests to. Cannot be updated. In "
        "CamelCase.")}
    props["metadata"] = {"allOf": [{"$ref": f"#/components/schemas/{META}ObjectMeta"}],
                         "description": "Standard object's metadata."}
    schema["x-kubernetes-group-version-kind"] = [
        {"group": rt.group, "version": rt.version, "kind": rt.kind}]
    return schema


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _params(*names: str) -> list[dict[str, Any]]:
    descriptions = {
        "dryRun": "When present, indicates that modifications should not be persisted.",
        "fieldManager": "fieldManager is a name associated with the actor or entity that is making these changes.",
        "fieldValidation": "fieldValidation instructs the server on how to handle objects in the request "
                           "containing unknown or duplicate fields. Valid values are: Ignore, Warn, Strict.",
        "force": "Force is going to \"force\" Apply requests.",
        "labelSelector": "A selector to restrict the list of returned objects by their labels.",
        "fieldSelector": "A selector to restrict the list of returned objects by their fields.",
        "limit": "limit is a maximum number of responses to return for a list call.",
        "continue": "The continue option should be set when retrieving more results from the server.",
        "resourceVersion": "resourceVersion sets a constraint on what resource versions a request may be served from.",
        "watch": "Watch for changes to the described resources and return them as a stream.",
        "timeoutSeconds": "Timeout for the list/watch call.",
        "allowWatchBookmarks": "allowWatchBookmarks requests watch events with type \"BOOKMARK\".",
        "propagationPolicy": "Whether and how garbage collection will be performed.",
        "gracePeriodSeconds": "The duration in seconds before the object should be deleted.",
        "pretty": "If 'true', then the output is pretty printed.",
    }
    types = {"force": "boolean", "watch": "boolean", "allowWatchBookmarks": "boolean",
             "limit": "integer", "timeoutSeconds": "integer", "gracePeriodSeconds": "integer"}
    return [{"name": n, "in": "query", "description": descriptions.get(n, n),
             "schema": {"type": types.get(n, "string"), "uniqueItems": True}} for n in names]


def _op(rt: ResourceType, action: str, op_id: str, schema_name: str, params: list[dict[str, Any]],
        body_types: list[str] | None = None, response: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "description": f"{action} {rt.kind}",
        "operationId": op_id,
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {
            "application/json": {"schema": _ref(response or schema_name)}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
    }
    if body_types:
        body_schema = _ref(META + "Patch") if action == "patch" else _ref(schema_name)
        op["requestBody"] = {"content": {t: {"schema": body_schema} for t in body_types}, "required": True}
    return op


def _build(group: str, version: str, types: list[ResourceType]) -> dict[str, Any]:
    names = list(_COMMON)
    components: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    prefix = "/" + _gv_path(group, version)
    for rt in sorted(types, key=lambda r: r.plural):
        if rt.crd is not None:
            schema_name = crd_schema_name(rt)
            components[schema_name] = _crd_schema(rt)
        else:
            schema_name = schemas.definition_for(rt.gvk) or ""
            if not schema_name:
                continue
            names.append(schema_name)
        list_name = schema_name + "List"
        components.setdefault(list_name, {
            "description": f"{rt.kind}List is a list of {rt.kind}",
            "type": "object",
            "required": ["items"],
            "properties": {
                "apiVersion": {"type": "string"},
                "items": {"type": "array", "items": _ref(schema_name)},
                "kind": {"type": "string"},
                "metadata": {"allOf": [_ref(META + "ListMeta")], "default": {}},
            },
            "x-kubernetes-group-version-kind": [{"group": rt.group, "version": rt.version,
                                                 "kind": f"{rt.kind}List"}],
        })
        op_kind = f"{rt.kind}{'Namespaced' if rt.namespaced else ''}"
        patch_types = ["application/apply-patch+yaml", "application/json-patch+json",
                       "application/merge-patch+json"]
        if rt.crd is None:
            patch_types.append("application/strategic-merge-patch+json")
        collection = f"{prefix}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{prefix}/{rt.plural}"
        item = f"{collection}/{{name}}"
        path_params = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
        if rt.namespaced:
            path_params.append({"name": "namespace", "in": "path", "required": True,
                                "schema": {"type": "string"}})
        write = _params("dryRun", "fieldManager", "fieldValidation", "pretty")
        paths[collection] = {
            "get": _op(rt, "list", f"list{op_kind}", schema_name,
                       _params("labelSelector", "fieldSelector", "limit", "continue", "resourceVersion",
                               "watch", "timeoutSeconds", "allowWatchBookmarks", "pretty"),
                       response=list_name),
            "post": _op(rt, "post", f"create{op_kind}", schema_name, write, ["*/*"]),
            "delete": _op(rt, "deletecollection", f"deleteCollection{op_kind}", schema_name,
                          _params("labelSelector", "fieldSelector", "propagationPolicy", "dryRun"),
                          response=META + "Status"),
            "parameters": path_params[1:],
        }
        paths[item] = {
            "get": _op(rt, "get", f"read{op_kind}", schema_name, _params("pretty")),
            "put": _op(rt, "put", f"replace{op_kind}", schema_name, write, ["*/*"]),
            "patch": _op(rt, "patch", f"patch{op_kind}", schema_name,
                         _params("dryRun", "fieldManager", "fieldValidation", "force", "pretty"),
                         patch_types),
            "delete": _op(rt, "delete", f"delete{op_kind}", schema_name,
                          _params("dryRun", "gracePeriodSeconds", "propagationPolicy", "pretty"),
                          response=META + "Status"),
            "parameters": path_params,
        }
        for sub in ("status", "scale"):
            if sub not in rt.subresources:
                continue
            sub_schema = "io.k8s.api.autoscaling.v1.Scale" if sub == "scale" else schema_name
            sub_ops: dict[str, Any] = {
                "get": _op(rt, "get", f"read{op_kind}{sub.title()}", sub_schema, _params("pretty")),
                "put": _op(rt, "put", f"replace{op_kind}{sub.title()}", sub_schema, write, ["*/*"]),
                "patch": _op(rt, "patch", f"patch{op_kind}{sub.title()}", sub_schema,
                             _params("dryRun", "fieldManager", "fieldValidation", "force", "pretty"),
                             patch_types),
                "parameters": path_params,
            }
            if sub == "scale":
                for op in ("get", "put", "patch"):
                    sub_ops[op]["x-kubernetes-group-version-kind"] = {
                        "group": "autoscaling", "version": "v1", "kind": "Scale"}
            paths[f"{item}/{sub}"] = sub_ops
    components.update({k: v for k, v in schemas.closure(names).items() if k not in components})
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.35.0"},
        "paths": paths,
        "components": {"schemas": components},
    }
