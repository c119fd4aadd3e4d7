"""API discovery documents, legacy (per group-version) and aggregated (apidiscovery.k8s.io).

kubectl 1.35 asks ``/api`` and ``/apis`` for the aggregated form and then needs no
per-group requests; kopf and the Python client use the legacy documents.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .resources import Registry, ResourceType


def wants_aggregated(accept: str) -> str | None:
    """The apidiscovery version the client accepts (``v2`` or ``v2beta1``), else None."""
    for part in accept.split(","):
        params = dict(
            p.strip().split("=", 1) for p in part.split(";")[1:] if "=" in p
        )
        if (params.get("g") == "apidiscovery.k8s.io" and params.get("as") == "APIGroupDiscoveryList"
                and params.get("v") in ("v2", "v2beta1")):
            return params["v"]
    return None


def core_versions(address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    }


def _group_entry(group: str, versions: list[str]) -> dict[str, Any]:
    return {
        "name": group,
        "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
        "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
    }


def group_list(registry: Registry) -> dict[str, Any]:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group_entry(g, vs) for g, vs in registry.groups().items() if g],
    }


def api_group(registry: Registry, group: str) -> dict[str, Any] | None:
    versions = registry.groups().get(group)
    if not group or not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(group, versions)}


def _storage_hash(rt: ResourceType) -> str:
    digest = hashlib.sha256(f"{rt.group}/{rt.version}/{rt.kind}".encode()).digest()
    import base64

    return base64.b64encode(digest[:8]).decode()


def resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    types = sorted(registry.in_group_version(group, version), key=lambda r: r.plural)
    if not types:
        return None
    resources: list[dict[str, Any]] = []
    for rt in types:
        entry: dict[str, Any] = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(rt.verbs),
            "storageVersionHash": _storage_hash(rt),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        resources.append(entry)
        for sub in rt.subresources:
            sub_entry: dict[str, Any] = {
                "name": f"{rt.plural}/{sub}",
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": ["get", "patch", "update"],
            }
            if sub == "scale":
                sub_entry.update({"group": "autoscaling", "version": "v1", "kind": "Scale"})
            elif sub in ("log", "binding", "eviction", "finalize"):
                sub_entry.update(_special_sub(sub))
            resources.append(sub_entry)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def _special_sub(sub: str) -> dict[str, Any]:
    if sub == "log":
        return {"kind": "Pod", "verbs": ["get"]}
    if sub == "binding":
        return {"kind": "Binding", "verbs": ["create"]}
    if sub == "eviction":
        return {"group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}
    return {"kind": "Namespace", "verbs": ["update"]}


def _aggregated_resource(rt: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": rt.plural,
        "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "scope": "Namespaced" if rt.namespaced else "Cluster",
        "singularResource": rt.singular,
        "verbs": list(rt.verbs),
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.categories:
        entry["categories"] = list(rt.categories)
    subs = []
    for sub in rt.subresources:
        kind = {"group": rt.group, "version": rt.version, "kind": rt.kind}
        verbs = ["get", "patch", "update"]
        if sub == "scale":
            kind = {"group": "autoscaling", "version": "v1", "kind": "Scale"}
        elif sub in ("log", "binding", "eviction", "finalize"):
            special = _special_sub(sub)
            verbs = special.pop("verbs")
            kind = {"group": special.get("group", ""), "version": special.get("version", "v1"),
                    "kind": special["kind"]}
        subs.append({"subresource": sub, "responseKind": kind, "verbs": verbs})
    if subs:
        entry["subresources"] = subs
    return entry


def aggregated(registry: Registry, *, core: bool, version: str = "v2") -> dict[str, Any]:
    """An ``APIGroupDiscoveryList`` of the core group (``/api``) or of all others (``/apis``)."""
    items = []
    for group, versions in registry.groups().items():
        if (group == "") != core:
            continue
        item: dict[str, Any] = {"metadata": {"creationTimestamp": None}, "versions": []}
        if group:
            item["metadata"]["name"] = group
        for v in versions:
            types = sorted(registry.in_group_version(group, v), key=lambda r: r.plural)
            item["versions"].append({
                "version": v,
                "resources": [_aggregated_resource(rt) for rt in types],
                "freshness": "Current",
            })
        items.append(item)
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": f"apidiscovery.k8s.io/{version}",
        "metadata": {},
        "items": items,
    }
