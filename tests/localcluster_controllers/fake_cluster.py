"""A small in-memory stand-in for the local control plane's in-process ``Cluster`` API,
for exercising the controller loops without the HTTP server.

It keeps only the semantics the controllers rely on: resourceVersion, uid, generation
on spec changes, merge patches, the status and scale subresources, watch queues, graceful
deletion of bound pods and owner-reference cascading.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str = ""):
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeCluster:
    def __init__(self) -> None:
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
        self.subscribers: dict[str, list[asyncio.Queue[tuple[str, dict[str, Any]]]]] = defaultdict(list)
        self._rv = itertools.count(1)
        self.writes: list[tuple[str, str, str]] = []  # (verb, resource, name)

    # -- helpers

    def _emit(self, resource: str, event: str, obj: dict[str, Any]) -> None:
        for q in self.subscribers[resource]:
            q.put_nowait((event, copy.deepcopy(obj)))

    def _key(self, namespace: str | None, name: str) -> tuple[str, str]:
        return (namespace or "", name)

    def _store(self, resource: str, obj: dict[str, Any], event: str) -> dict[str, Any]:
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects[resource][self._key(obj["metadata"].get("namespace"), obj["metadata"]["name"])] = obj
        self._emit(resource, event, obj)
        return copy.deepcopy(obj)

    # -- the interface

    async def create(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        m = obj.setdefault("metadata", {})
        key = self._key(m.get("namespace"), m["name"])
        if key in self.objects[resource]:
            raise ApiError(409, "AlreadyExists", f"{resource} {key} already exists")
        m["uid"] = str(uuid.uuid4())
        m["creationTimestamp"] = _now()
        m["generation"] = 1
        self.writes.append(("create", resource, m["name"]))
        return self._store(resource, obj, "ADDED")

    async def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any]:
        try:
            return copy.deepcopy(self.objects[resource][self._key(namespace, name)])
        except KeyError:
            raise ApiError(404, "NotFound", f"{resource} {namespace}/{name} not found") from None

    async def list(self, resource: str, namespace: str | None = None, label_selector: str | None = None) -> list[dict[str, Any]]:
        assert label_selector is None, "not needed by the controllers"
        return [copy.deepcopy(o) for (ns, _), o in self.objects[resource].items() if namespace is None or ns == namespace]

    async def update(self, resource: str, obj: dict[str, Any], subresource: str | None = None) -> dict[str, Any]:
        m = obj["metadata"]
        current = await self.get(resource, m.get("namespace"), m["name"])
        if m.get("resourceVersion") and m["resourceVersion"] != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        new = copy.deepcopy(obj)
        new["metadata"] = {**current["metadata"], **{k: v for k, v in m.items() if k not in ("uid", "creationTimestamp", "generation", "deletionTimestamp")}}
        return self._replace(resource, current, new, subresource, "update")

    async def patch(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        patch_type: str = "merge",
        subresource: str | None = None,
    ) -> dict[str, Any]:
        assert patch_type == "merge"
        current = await self.get(resource, namespace, name)
        if subresource == "scale":
            new = copy.deepcopy(current)
            new.setdefault("spec", {})["replicas"] = patch["spec"]["replicas"]
            return self._replace(resource, current, new, None, "patch")
        return self._replace(resource, current, merge_patch(current, patch), subresource, "patch")

    def _replace(self, resource: str, current: dict[str, Any], new: dict[str, Any], subresource: str | None, verb: str) -> dict[str, Any]:
        if subresource == "status":
            merged = copy.deepcopy(current)
            merged["status"] = new.get("status") or {}
        else:
            merged = new
            if resource != "v1/pods" and "status" in current:
                merged["status"] = current["status"]  # status subresource: the main endpoint ignores it
            if merged.get("spec") != current.get("spec"):
                merged["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        self.writes.append((verb + ("/" + subresource if subresource else ""), resource, current["metadata"]["name"]))
        return self._store(resource, merged, "MODIFIED")

    async def delete(self, resource: str, namespace: str | None, name: str, grace_period_seconds: int | None = None) -> None:
        current = self.objects[resource].get(self._key(namespace, name))
        if current is None:
            raise ApiError(404, "NotFound", f"{resource} {namespace}/{name} not found")
        self.writes.append(("delete", resource, name))
        bound = resource == "v1/pods" and (current.get("spec") or {}).get("nodeName")
        if bound and grace_period_seconds != 0:
            if not current["metadata"].get("deletionTimestamp"):
                current = copy.deepcopy(current)
                current["metadata"]["deletionTimestamp"] = _now()
                current["metadata"]["deletionGracePeriodSeconds"] = 30
                self._store(resource, current, "MODIFIED")
            return
        del self.objects[resource][self._key(namespace, name)]
        current = copy.deepcopy(current)
        current["metadata"]["resourceVersion"] = str(next(self._rv))
        self._emit(resource, "DELETED", current)
        uid = current["metadata"]["uid"]
        for res, objs in list(self.objects.items()):
            for (ns, n), obj in list(objs.items()):
                if any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or []):
                    await self.delete(res, ns or None, n)

    def subscribe(self, resource: str) -> asyncio.Queue[tuple[str, dict[str, Any]]]:
        q: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.subscribers[resource].append(q)
        return q

    def unsubscribe(self, resource: str, queue: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        if queue in self.subscribers[resource]:
            self.subscribers[resource].remove(queue)
