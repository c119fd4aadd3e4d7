"""The in-memory object store with real apiserver semantics, and its in-process API.

Everything that changes state goes through ``Cluster``: the HTTP server calls its
``do_*`` methods, the simulated controllers call the async in-process API (``create``,
``get``, ``list``, ``update``, ``patch``, ``delete``, ``subscribe``). Both paths run the same
admission, defaulting, generation and managedFields bookkeeping, garbage collection and
watch fan-out, so a controller's write looks exactly like a client's.

Concurrency model: one asyncio loop owns the store and every mutation runs without an
``await`` between its read and its write, so no locks are needed. Stored objects are
never mutated after they are stored (every write builds a new dict), which lets reads hand
stored dicts straight to the JSON encoder; only the in-process API copies, because its
callers may mutate what they get.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from . import admission as _admission  # CRD admission: pruning, defaulting, schema, CEL
from . import builtins, errors, schemas, validation
from . import patching as _patching  # the patch and apply algorithms
from .errors import ApiError
from .objects import deep_copy, get_path, name_problems, new_uid, now, random_suffix, set_path
from .resources import Registry, ResourceType, types_for_crd
from .selectors import Predicate, parse_field_selector, parse_label_selector, selector_to_string

log = logging.getLogger("localcluster.store")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"
FOREGROUND, ORPHAN = "foregroundDeletion", "orphan"
NAMESPACE_FINALIZER = "kubernetes"
CRD_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
ROOT_CA_NOTE = ("Contains a CA bundle that can be used to verify the kube-apiserver when using internal "
                "endpoints such as the internal service IP or kubernetes.default.svc. No other usage is "
                "guaranteed across distributions of Kubernetes clusters.")
# The local control plane serves plain HTTP; this placeholder only has the shape of a bundle.
ROOT_CA_PEM = "-----BEGIN CERTIFICATE-----\nbG9jYWxjbHVzdGVyIHBsYWNlaG9sZGVy\n-----END CERTIFICATE-----\n"


@dataclass(eq=False)
class WatchEvent:
    rv: int
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None
    # Serialised object per resource type (``rt.key``): the JSON of one event is shared by
    # every watcher of that type, so a fan-out to N watchers encodes once.
    encoded: dict[str, bytes] = field(default_factory=dict)


class Watcher:
    """One watch: filters the events of one storage and queues the ones that pass."""

    def __init__(self, rt: ResourceType, namespace: str | None, label_pred: Predicate | None,
                 field_pred: Predicate | None) -> None:
        self.rt = rt
        self.namespace = namespace
        self.label_pred = label_pred
        self.field_pred = field_pred
        # Items: (type, storage-form object, source event or None); None = end of stream.
        self.queue: asyncio.Queue[tuple[str, dict[str, Any], WatchEvent | None] | None] = asyncio.Queue()

    def matches(self, obj: dict[str, Any]) -> bool:
        m = obj.get("metadata") or {}
        if self.namespace is not None and m.get("namespace") != self.namespace:
            return False
        if self.label_pred is not None and not self.label_pred(m.get("labels") or {}):
            return False
        if self.field_pred is not None:
            view = self.rt.from_storage(obj) if self.rt.from_storage else obj
            if not self.field_pred(view):
                return False
        return True

    def offer(self, ev: WatchEvent) -> None:
        new_ok = self.matches(ev.obj)
        if ev.type != MODIFIED or ev.old is None:
            if new_ok:
                self.queue.put_nowait((ev.type, ev.obj, ev))
            return
        old_ok = self.matches(ev.old)
        if new_ok and old_ok:
            self.queue.put_nowait((MODIFIED, ev.obj, ev))
        elif new_ok:
            self.queue.put_nowait((ADDED, ev.obj, ev))
        elif old_ok:
            # The object left the selection: watchers see it deleted, at the new version.
            gone = dict(ev.old)
            gone["metadata"] = {**ev.old["metadata"], "resourceVersion": str(ev.rv)}
            self.queue.put_nowait((DELETED, gone, None))

    def close(self) -> None:
        self.queue.put_nowait(None)


class Subscriber(Watcher):
    """An in-process subscription: every event of one resource type, as private copies."""

    def __init__(self, rt: ResourceType) -> None:
        super().__init__(rt, None, None, None)
        self.out: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def offer(self, ev: WatchEvent) -> None:
        obj = self.rt.from_storage(ev.obj) if self.rt.from_storage else ev.obj
        if self.rt.crd is not None and obj.get("apiVersion") != self.rt.api_version:
            obj = {**obj, "apiVersion": self.rt.api_version}
        self.out.put_nowait((ev.type, deep_copy(obj)))

    def close(self) -> None:
        pass


class Storage:
    """The objects of one group/resource, their bounded event history and their watchers."""

    def __init__(self, name: str, history_size: int, start_rv: int) -> None:
        self.name = name
        self.by_ns: dict[str, dict[str, dict[str, Any]]] = {}
        self.count = 0
        self.history: deque[WatchEvent] = deque()
        self.history_size = history_size
        # Every event with rv > history_start is in ``history``; older ones are forgotten.
        self.history_start = start_rv
        self.watchers: set[Watcher] = set()

    def get(self, ns: str, name: str) -> dict[str, Any] | None:
        bucket = self.by_ns.get(ns)
        return bucket.get(name) if bucket else None

    def put(self, ns: str, name: str, obj: dict[str, Any]) -> None:
        bucket = self.by_ns.setdefault(ns, {})
        if name not in bucket:
            self.count += 1
        bucket[name] = obj

    def pop(self, ns: str, name: str) -> None:
        bucket = self.by_ns.get(ns)
        if bucket and bucket.pop(name, None) is not None:
            self.count -= 1
            if not bucket:
                del self.by_ns[ns]

    def iter_sorted(self, ns: str | None) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
        spaces = [ns] if ns is not None else sorted(self.by_ns)
        for space in spaces:
            bucket = self.by_ns.get(space)
            if not bucket:
                continue
            for name in sorted(bucket):
                yield (space, name), bucket[name]

    def record(self, ev: WatchEvent) -> None:
        self.history.append(ev)
        while len(self.history) > self.history_size:
            self.history_start = self.history.popleft().rv
        for w in list(self.watchers):
            try:
                w.offer(ev)
            except Exception:  # one broken watch must not fail the write or starve the others
                log.exception("Dropped a watch of %s after a delivery failure", self.name)
                self.watchers.discard(w)
                w.close()


def _view(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """A stored object as this resource type serves it (converted, never copied needlessly)."""
    if rt.from_storage is not None:
        return rt.from_storage(obj)
    if rt.crd is not None and obj.get("apiVersion") != rt.api_version:
        return {**obj, "apiVersion": rt.api_version}
    return obj


def _strip_volatile(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without what changes on every write, to detect writes that change nothing."""
    m = dict(obj.get("metadata") or {})
    m.pop("resourceVersion", None)
    mf = m.pop("managedFields", None)
    if mf:
        m["managedFields"] = [{k: v for k, v in e.items() if k != "time"} for e in mf]
    return {**obj, "metadata": m}


def _spec_view(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """What bumps ``generation`` when it changes: all but metadata (and status, when separate)."""
    skip = {"metadata", "status"} if (rt.status or rt.crd is None) else {"metadata"}
    return {k: v for k, v in obj.items() if k not in skip and k not in ("apiVersion", "kind")}


def _owner_uids(obj: dict[str, Any]) -> list[str]:
    return [r.get("uid", "") for r in (obj.get("metadata") or {}).get("ownerReferences") or []]


class Cluster:
    """The API state of the local control plane (see the module docstring)."""

    def __init__(self, *, history_size: int = 10000) -> None:
        self.registry = Registry()
        self.history_size = history_size
        self._rv = 0
        self._storages: dict[str, Storage] = {}
        self._uids: dict[str, tuple[str, str, str]] = {}  # uid -> (storage, ns, name)
        self._dependents: dict[str, set[tuple[str, str, str]]] = {}  # owner uid -> dependents
        self._ips = builtins.IPAllocator()
        self._work: deque[tuple[Any, ...]] = deque()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self.default_manager = "localcluster"
        # The process runtime, when one runs: it serves the logs of its pods (pods/log).
        self.pod_log_source: Any = None
        for ns in SYSTEM_NAMESPACES:
            self.do_create(self.registry.by_key("v1/namespaces"), None,
                           {"metadata": {"name": ns}}, manager="kube-apiserver")

    # --- plumbing ----------------------------------------------------------------------------

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def storage(self, rt: ResourceType) -> Storage:
        st = self._storages.get(rt.storage)
        if st is None:
            st = Storage(rt.storage, self.history_size, self._rv)
            self._storages[rt.storage] = st
        return st

    def resource(self, key: str) -> ResourceType:
        try:
            return self.registry.by_key(key)
        except KeyError as exc:
            raise errors.ApiError(404, "NotFound", str(exc.args[0])) from None

    def start(self) -> None:
        """Start the background worker (garbage collector, namespace and CRD cleanup)."""
        if self._worker is None:
            self._wakeup = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._run_worker())
            if self._work:
                self._wakeup.set()

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        for st in self._storages.values():
            for w in list(st.watchers):
                w.close()
            st.watchers.clear()

    def _enqueue(self, *item: Any) -> None:
        self._work.append(item)
        if self._wakeup is not None:
            self._wakeup.set()

    async def _run_worker(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            # Garbage collection is asynchronous in a real cluster too; yielding between items
            # keeps request latency flat while a large cascade runs.
            while self._work:
                item = self._work.popleft()
                try:
                    self._process(item)
                except ApiError as exc:
                    log.debug("Background work %s failed: %s", item, exc.message)
                except Exception:
                    log.exception("Background work %s failed", item)
                await asyncio.sleep(0)

    # --- reads -------------------------------------------------------------------------------

    def do_get(self, rt: ResourceType, ns: str | None, name: str) -> dict[str, Any]:
        obj = self.storage(rt).get(ns or "", name)
        if obj is None:
            raise errors.not_found(rt.plural, rt.group, name)
        return _view(rt, obj)

    def do_list(self, rt: ResourceType, ns: str | None, *, label_selector: str | None = None,
                field_selector: str | None = None, limit: int = 0,
                continue_token: str | None = None) -> tuple[list[dict[str, Any]], str, str | None, int | None]:
        """Items (served form), list resourceVersion, continue token and remaining count."""
        label_pred = parse_label_selector(label_selector)
        field_pred = parse_field_selector(field_selector, rt.selectable_fields())
        st = self.storage(rt)
        start: tuple[str, str] | None = None
        list_rv = self._rv
        if continue_token:
            try:
                token = json.loads(base64.b64decode(continue_token))
                start = (token["start"][0], token["start"][1])
                list_rv = int(token["rv"])
            except (ValueError, KeyError, IndexError, TypeError, binascii.Error):
                raise errors.bad_request("continue key is not valid: invalid continue token") from None
        items: list[dict[str, Any]] = []
        next_token = None
        remaining = 0
        for key, obj in st.iter_sorted(ns if rt.namespaced else None):
            if start is not None and key <= start:
                continue
            if label_pred is not None and not label_pred((obj.get("metadata") or {}).get("labels") or {}):
                continue
            view = _view(rt, obj)
            if field_pred is not None and not field_pred(view):
                continue
            if limit and len(items) >= limit:
                remaining += 1
                continue
            items.append(view)
        if limit and remaining:
            last = items[-1]["metadata"]
            next_token = base64.b64encode(json.dumps(
                {"rv": list_rv, "start": [last.get("namespace", ""), last["name"]]}).encode()).decode()
        return items, str(list_rv), next_token, (remaining if next_token else None)

    def do_watch(self, rt: ResourceType, ns: str | None, *, label_selector: str | None = None,
                 field_selector: str | None = None, resource_version: str | None = None,
                 send_initial_events: bool = False) -> Watcher:
        """Register a watch; initial or replayed events are already queued when it returns."""
        w = Watcher(rt, ns if rt.namespaced else None, parse_label_selector(label_selector),
                    parse_field_selector(field_selector))
        st = self.storage(rt)
        if send_initial_events or resource_version in (None, "", "0"):
            for _, obj in st.iter_sorted(w.namespace):
                if w.matches(obj):
                    w.queue.put_nowait((ADDED, obj, None))
        else:
            try:
                since = int(resource_version)  # type: ignore[arg-type]
            except ValueError:
                raise errors.bad_request(f"invalid resource version: {resource_version}") from None
            if since < st.history_start:
                raise errors.gone(f"too old resource version: {since} ({st.history_start + 1})")
            for ev in st.history:
                if ev.rv > since:
                    w.offer(ev)
        st.watchers.add(w)
        return w

    def stop_watch(self, w: Watcher) -> None:
        st = self._storages.get(w.rt.storage)
        if st is not None:
            st.watchers.discard(w)

    # --- writes ------------------------------------------------------------------------------

    def _commit(self, rt: ResourceType, st: Storage, obj: dict[str, Any],
                old: dict[str, Any] | None, etype: str) -> dict[str, Any]:
        """Store a new version (or a deletion) under a new resourceVersion and fan it out."""
        self._rv += 1
        m = obj["metadata"] = dict(obj["metadata"])
        m["resourceVersion"] = str(self._rv)
        ns, name, uid = m.get("namespace", ""), m["name"], m.get("uid", "")
        if etype == DELETED:
            st.pop(ns, name)
            self._uids.pop(uid, None)
        else:
            st.put(ns, name, obj)
            self._uids[uid] = (st.name, ns, name)
        old_owners = set(_owner_uids(old)) if old is not None else set()
        new_owners = set(_owner_uids(obj)) if etype != DELETED else set()
        if old_owners != new_owners:
            ref = (st.name, ns, name)
            for o in old_owners - new_owners:
                deps = self._dependents.get(o)
                if deps is not None:
                    deps.discard(ref)
                    if not deps:
                        del self._dependents[o]
            for o in new_owners - old_owners:
                self._dependents.setdefault(o, set()).add(ref)
            if new_owners - old_owners:
                self._enqueue("dangling", st.name, ns, name)
        st.record(WatchEvent(self._rv, etype, obj, old))
        if etype == DELETED:
            self._after_removal(rt, obj)
        return obj

    def _to_storage(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        if rt.to_storage is not None:
            return rt.to_storage(obj)
        if rt.crd is not None and not rt.storage_version:
            stored = self.registry.storage_type(rt.storage)
            if stored is not None:
                return {**obj, "apiVersion": stored.api_version}
        return obj

    def _check_namespace(self, rt: ResourceType, ns: str | None, name: str) -> None:
        if not rt.namespaced:
            return
        ns_obj = self.storage(self.registry.by_key("v1/namespaces")).get("", ns or "")
        if ns_obj is None:
            raise errors.not_found("namespaces", "", ns or "")
        if ns_obj["metadata"].get("deletionTimestamp"):
            raise errors.forbidden(
                rt.plural, rt.group, name,
                f"unable to create new content in namespace {ns} because it is being terminated",
                causes=[{"reason": "NamespaceTerminating",
                         "message": f"namespace {ns} is being terminated",
                         "field": "metadata.namespace"}])

    def _admit(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None,
               subresource: str | None, field_validation: str | None) -> tuple[dict[str, Any], list[str]]:
        """Defaulting, pruning and validation; returns the admitted object and warnings."""
        name = obj["metadata"].get("name", "")
        warnings: list[str] = []
        meta_causes = validation.validate_object_meta(obj["metadata"])
        if meta_causes:
            raise errors.invalid(rt.kind, rt.group, name, meta_causes)
        if old is not None and old["metadata"].get("deletionTimestamp"):
            added = [f for f in obj["metadata"].get("finalizers") or []
                     if f not in (old["metadata"].get("finalizers") or [])]
            if added:
                raise errors.invalid(rt.kind, rt.group, name, [validation.forbidden(
                    "metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted, found new finalizers "
                    "[]string{" + ", ".join(f'"{f}"' for f in added) + "}")])
        if rt.crd is not None:
            before = obj
            try:
                obj = _admission.admit_custom_resource(rt.crd, rt.version, deep_copy(obj), old, subresource)
            except _admission.InvalidError as exc:
                message = exc.status_message(rt.kind, rt.group, name)
                raise errors.invalid(rt.kind, rt.group, name, list(exc.causes), message) from None
            unknown = schemas.removed_fields(before, obj)
            self._field_validation(rt, unknown, field_validation, warnings)
            return obj, warnings
        if rt.gvk == "apiextensions.k8s.io/v1/CustomResourceDefinition":
            builtins.default_crd(obj)
            causes = builtins.validate_crd_basics(obj)
            if not causes:
                try:
                    _admission.validate_crd(obj)
                except _admission.InvalidError as exc:
                    causes = list(exc.causes)
            if causes:
                raise errors.invalid(rt.kind, rt.group, name, causes)
            obj["status"] = builtins.crd_status(obj, (old or {}).get("status"))
        unknown = schemas.prune_unknown(rt.gvk, obj)
        self._field_validation(rt, unknown, field_validation, warnings)
        builtins.default(rt, obj, old, self._ips.allocate)
        causes = builtins.validate(rt, obj, old)
        if causes:
            raise errors.invalid(rt.kind, rt.group, name, causes)
        return obj, warnings

    @staticmethod
    def _field_validation(rt: ResourceType, unknown: list[str], mode: str | None,
                          warnings: list[str]) -> None:
        if not unknown or mode == "Ignore":
            return
        texts = [f'unknown field "{path}"' for path in unknown]
        if mode == "Strict":
            raise errors.bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                f"strict decoding error: {', '.join(texts)}")
        warnings.extend(texts)

    def _managed(self, rt: ResourceType, old: dict[str, Any] | None, new: dict[str, Any],
                 manager: str, subresource: str | None) -> dict[str, Any]:
        return _patching.record_update(old, new, manager, "Update", rt.gvk, schema=rt.schema(),
                                       subresource=subresource, status_subresource=rt.status)

    def do_create(self, rt: ResourceType, ns: str | None, body: dict[str, Any], *,
                  manager: str | None = None, dry_run: bool = False,
                  field_validation: str | None = None, applied: bool = False) -> tuple[dict[str, Any], list[str]]:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be an object")
        obj = dict(body)
        self._check_kind(rt, obj)
        m = obj["metadata"] = dict(obj.get("metadata") or {})
        if rt.namespaced:
            body_ns = m.get("namespace")
            if ns is None:
                ns = body_ns
            if not ns:
                raise errors.bad_request("the server could not find the requested resource: a namespace is required")
            if body_ns and body_ns != ns:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request")
            m["namespace"] = ns
        else:
            m.pop("namespace", None)
            ns = ""
        if not m.get("name"):
            if m.get("generateName"):
                m["name"] = m["generateName"] + random_suffix()
            else:
                raise errors.invalid(rt.kind, rt.group, "", [
                    errors.required("metadata.name", "name or generateName is required")])
        name = m["name"]
        problem = name_problems(name, builtins.name_rule(rt))
        if problem:
            raise errors.invalid(rt.kind, rt.group, name,
                                 [errors.invalid_value("metadata.name", name, problem)])
        if m.get("resourceVersion"):
            raise errors.bad_request("resourceVersion should not be set on objects to be created")
        if rt.kind != "Namespace":
            self._check_namespace(rt, ns, name)
        st = self.storage(rt)
        if st.get(ns or "", name) is not None:
            raise errors.already_exists(rt.plural, rt.group, name)
        for k in ("uid", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            m.pop(k, None)
        m["uid"] = new_uid()
        m["creationTimestamp"] = now()
        if rt.generation:
            m["generation"] = 1
        if (rt.status and rt.kind not in ("Node", "Namespace", "Pod")) or rt.kind == "Pod":
            obj.pop("status", None)
        requested_ip = (obj.get("spec") or {}).get("clusterIP") if rt.gvk == "v1/Service" else None
        obj, warnings = self._admit(rt, deep_copy(obj), None, None, field_validation)
        if not applied:
            obj = self._managed(rt, None, obj, manager or self.default_manager, None)
        if requested_ip and requested_ip != "None":
            self._claim_cluster_ip(name, requested_ip, dry_run)
        if dry_run:
            return obj, warnings
        stored = self._commit(rt, st, self._to_storage(rt, obj), None, ADDED)
        self._after_write(rt, stored, None)
        return _view(rt, stored), warnings

    def _claim_cluster_ip(self, name: str, ip: str, dry_run: bool) -> None:
        """A Service that names its cluster IP gets it only if it is free and in the range
        (pkg/registry/core/service/storage/alloc.go: allocClusterIPs), so every ClusterIP
        stays on loopback where the local kube-proxy listens."""
        problem = self._ips.claim_problem(ip)
        if problem:
            raise errors.invalid("Service", "", name, [{
                "reason": "FieldValueInvalid",
                "message": f'Invalid value: []string{{"{ip}"}}: failed to allocate IP {ip}: {problem}',
                "field": "spec.clusterIPs",
            }])
        if not dry_run:
            self._ips.claim(ip)

    def _check_kind(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        av, kind = obj.get("apiVersion"), obj.get("kind")
        if av and av != rt.api_version:
            raise errors.bad_request(
                f"the API version in the data ({av}) does not match the expected API version ({rt.api_version})")
        if kind and kind != rt.kind:
            raise errors.bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")
        rest = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
        obj.clear()
        obj.update({"apiVersion": rt.api_version, "kind": rt.kind}, **rest)

    def _prepare_update(self, rt: ResourceType, old: dict[str, Any], new: dict[str, Any],
                        subresource: str | None) -> dict[str, Any]:
        """Apply the strategy of the endpoint: which parts of ``new`` the write may change."""
        om = old["metadata"]
        if subresource == "finalize":
            # Namespaces only: the finalize endpoint changes spec.finalizers and nothing else.
            spec = dict(old.get("spec") or {})
            spec["finalizers"] = list((new.get("spec") or {}).get("finalizers") or [])
            return {**old, "spec": spec, "metadata": dict(om)}
        if subresource == "status":
            merged = dict(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            merged["metadata"] = dict(om)
            if "managedFields" in (new.get("metadata") or {}):
                merged["metadata"]["managedFields"] = new["metadata"]["managedFields"]
            return merged
        new = dict(new)
        if rt.status:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        m = new["metadata"] = dict(new.get("metadata") or {})
        for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "generation", "namespace", "name"):
            if k in om:
                m[k] = om[k]
            else:
                m.pop(k, None)
        if rt.generation and _spec_view(rt, new) != _spec_view(rt, old):
            m["generation"] = int(om.get("generation", 1)) + 1
        return new

    def do_update(self, rt: ResourceType, ns: str | None, name: str, body: dict[str, Any], *,
                  subresource: str | None = None, manager: str | None = None,
                  dry_run: bool = False, field_validation: str | None = None,
                  managed_already: bool = False) -> tuple[dict[str, Any], list[str]]:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be an object")
        st = self.storage(rt)
        ns = (ns or "") if rt.namespaced else ""
        stored = st.get(ns, name)
        body_meta = body.get("metadata") or {}
        if body_meta.get("name") and body_meta["name"] != name:
            raise errors.bad_request(
                f"the name of the object ({body_meta['name']}) does not match the name on the URL ({name})")
        if stored is None:
            raise errors.not_found(rt.plural, rt.group, name)
        old = _view(rt, stored)
        want_rv = body_meta.get("resourceVersion")
        if want_rv and want_rv != old["metadata"].get("resourceVersion"):
            raise errors.conflict(rt.plural, rt.group, name)
        if body_meta.get("uid") and body_meta["uid"] != old["metadata"].get("uid"):
            raise errors.conflict(
                rt.plural, rt.group, name,
                f"Precondition failed: UID in precondition: {body_meta['uid']}, "
                f"UID in object meta: {old['metadata'].get('uid')}")
        obj = dict(body)
        self._check_kind(rt, obj)
        new = self._prepare_update(rt, old, obj, subresource)
        new, warnings = self._admit(rt, deep_copy(new), old, subresource, field_validation)
        if not managed_already:
            new = self._managed(rt, old, new, manager or self.default_manager, subresource)
        return self._finish_update(rt, st, old, stored, new, dry_run), warnings

    def _finish_update(self, rt: ResourceType, st: Storage, old: dict[str, Any],
                       stored: dict[str, Any], new: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        new["metadata"]["resourceVersion"] = old["metadata"].get("resourceVersion")
        if _strip_volatile(new) == _strip_volatile(old):
            return old  # a write that changes nothing is not a write
        if dry_run:
            return new
        if self._removable(rt, new):
            final = self._commit(rt, st, self._to_storage(rt, new), stored, DELETED)
            return _view(rt, final)
        result = self._commit(rt, st, self._to_storage(rt, new), stored, MODIFIED)
        self._after_write(rt, result, stored)
        return _view(rt, result)

    @staticmethod
    def _removable(rt: ResourceType, obj: dict[str, Any]) -> bool:
        """Whether a terminating object has nothing left to wait for and goes away now."""
        m = obj["metadata"]
        if not m.get("deletionTimestamp") or m.get("finalizers"):
            return False
        if rt.gvk == "v1/Pod" and (m.get("deletionGracePeriodSeconds") or 0) > 0:
            return False  # a pod being deleted gracefully waits for its kubelet
        return not (rt.gvk == "v1/Namespace" and (obj.get("spec") or {}).get("finalizers"))

    def _scale_of(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        assert rt.scale is not None
        m = obj["metadata"]
        selector = get_path(obj, rt.scale.label_selector) if rt.scale.label_selector else None
        if rt.crd is None:
            selector = selector_to_string(get_path(obj, ".spec.selector"))
        status: dict[str, Any] = {"replicas": get_path(obj, rt.scale.status_replicas) or 0}
        if selector:
            status["selector"] = selector
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {k: m[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                           "creationTimestamp") if k in m},
            "spec": {"replicas": get_path(obj, rt.scale.spec_replicas) or 0},
            "status": status,
        }

    def do_get_scale(self, rt: ResourceType, ns: str | None, name: str) -> dict[str, Any]:
        if rt.scale is None:
            raise errors.no_such_path()
        return self._scale_of(rt, self.do_get(rt, ns, name))

    def do_update_scale(self, rt: ResourceType, ns: str | None, name: str, scale: dict[str, Any], *,
                        manager: str | None = None, dry_run: bool = False) -> dict[str, Any]:
        if rt.scale is None:
            raise errors.no_such_path()
        obj = self.do_get(rt, ns, name)
        replicas = get_path(scale, ".spec.replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise errors.invalid("Scale", "autoscaling", name, [errors.invalid_value(
                "spec.replicas", replicas, "must be greater than or equal to 0")])
        want_rv = get_path(scale, ".metadata.resourceVersion")
        if want_rv and want_rv != obj["metadata"].get("resourceVersion"):
            raise errors.conflict(rt.plural, rt.group, name)
        new = deep_copy(obj)
        set_path(new, rt.scale.spec_replicas, replicas)
        result, _ = self.do_update(rt, ns, name, new, manager=manager, dry_run=dry_run)
        return self._scale_of(rt, result)

    def do_patch(self, rt: ResourceType, ns: str | None, name: str, patch: Any, patch_type: str, *,
                 subresource: str | None = None, manager: str | None = None, force: bool = False,
                 dry_run: bool = False, field_validation: str | None = None) -> tuple[dict[str, Any], list[str]]:
        """Patch (``json``, ``merge``, ``strategic`` or ``apply``); ``patch`` is parsed or raw text."""
        if isinstance(patch, (bytes, str)):
            patch = self._parse_patch(patch, patch_type)
        manager = manager or self.default_manager
        st = self.storage(rt)
        ns = (ns or "") if rt.namespaced else ""
        stored = st.get(ns, name)
        if patch_type == "apply":
            return self._apply(rt, ns, name, stored, patch, subresource=subresource, manager=manager,
                               force=force, dry_run=dry_run, field_validation=field_validation)
        if stored is None:
            raise errors.not_found(rt.plural, rt.group, name)
        current = _view(rt, stored)
        if subresource == "scale":
            scale = self._scale_of(rt, current)
            patched = self._apply_patch(scale, patch, "merge" if patch_type == "strategic" else patch_type,
                                        "autoscaling/v1/Scale")
            return self.do_update_scale(rt, ns, name, patched, manager=manager, dry_run=dry_run), []
        patched = self._apply_patch(current, patch, patch_type, rt.gvk, rt)
        if not isinstance(patched, dict):
            raise errors.bad_request("the patch produced something that is not an object")
        pm = patched.get("metadata")
        if not isinstance(pm, dict):
            raise errors.bad_request("metadata must be an object")
        if pm.get("name", name) != name:
            raise errors.bad_request(
                f"the name of the object ({pm.get('name')}) does not match the name on the URL ({name})")
        if not pm.get("resourceVersion"):
            # A copy: after a merge patch, untouched parts are shared with the stored object.
            patched = {**patched, "metadata": {**pm, "resourceVersion": current["metadata"].get("resourceVersion")}}
        return self.do_update(rt, ns, name, patched, subresource=subresource, manager=manager,
                              dry_run=dry_run, field_validation=field_validation)

    @staticmethod
    def _parse_patch(raw: bytes | str, patch_type: str) -> Any:
        try:
            if patch_type == "apply":
                # Most appliers send JSON, which is YAML too; the JSON parser is far faster.
                try:
                    return json.loads(raw)
                except ValueError:
                    return yaml.load(raw, Loader=_YAML_LOADER)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise errors.bad_request(f"error decoding patch: {exc}") from None

    def _apply_patch(self, obj: dict[str, Any], patch: Any, patch_type: str, gvk: str,
                     rt: ResourceType | None = None) -> dict[str, Any]:
        if patch_type == "merge":
            if not isinstance(patch, dict):
                raise errors.bad_request("merge patch must be a JSON object")
            return _merge_patch(obj, patch)
        base = deep_copy(obj)
        try:
            if patch_type == "json":
                if not isinstance(patch, list):
                    raise errors.bad_request("json patch must be a JSON array of operations")
                return _patching.json_patch(base, patch)
            if patch_type == "strategic":
                if rt is not None and rt.crd is not None:
                    raise errors.ApiError(
                        415, "UnsupportedMediaType",
                        "the body of the request was in an unknown format - accepted media types "
                        "include: application/json-patch+json, application/merge-patch+json, "
                        "application/apply-patch+yaml, application/apply-patch+cbor")
                return _patching.strategic_merge_patch(base, patch, gvk)
        except _patching.PatchError as exc:
            if type(exc).__name__ == "UnsupportedPatch":
                raise errors.ApiError(415, "UnsupportedMediaType", str(exc)) from None
            raise errors.ApiError(422, "Invalid", str(exc)) from None
        raise errors.unsupported_media_type(patch_type)

    def _apply(self, rt: ResourceType, ns: str, name: str, stored: dict[str, Any] | None, applied: Any, *,
               subresource: str | None, manager: str, force: bool, dry_run: bool,
               field_validation: str | None) -> tuple[dict[str, Any], list[str]]:
        if not isinstance(applied, dict):
            raise errors.bad_request("apply patch must be a YAML or JSON object")
        if not manager:
            raise errors.invalid("PatchOptions", "meta.k8s.io", "", [
                errors.required("fieldManager", "is required for apply patch")])
        am = applied.get("metadata") or {}
        if am.get("name") and am["name"] != name:
            raise errors.bad_request(
                f"the name of the object ({am['name']}) does not match the name on the URL ({name})")
        applied = {**applied, "metadata": {**am, "name": name}}
        if rt.namespaced:
            applied["metadata"]["namespace"] = ns
        self._check_kind(rt, applied)
        live = _view(rt, stored) if stored is not None else None
        try:
            result = _patching.server_side_apply(
                deep_copy(live) if live else None, deep_copy(applied), manager, force, rt.gvk,
                schema=rt.schema(), subresource=subresource, status_subresource=rt.status)
        except _patching.ApplyConflict as exc:
            raise errors.ApiError(409, "Conflict", str(exc), {
                "causes": [{"reason": "FieldManagerConflict",
                            "message": f'conflict with "{mgr}"', "field": path}
                           for path, mgr in exc.conflicts]}) from None
        except _patching.PatchError as exc:
            raise errors.ApiError(422, "Invalid", str(exc)) from None
        if live is None:
            if subresource:
                raise errors.not_found(rt.plural, rt.group, name)
            result.setdefault("metadata", {}).pop("resourceVersion", None)
            return self.do_create(rt, ns, result, manager=manager, dry_run=dry_run,
                                  field_validation=field_validation, applied=True)
        rm = result.setdefault("metadata", {})
        if not am.get("resourceVersion"):
            rm["resourceVersion"] = live["metadata"].get("resourceVersion")
        return self.do_update(rt, ns, name, result, subresource=subresource, manager=manager,
                              dry_run=dry_run, field_validation=field_validation, managed_already=True)

    # --- deletion ----------------------------------------------------------------------------

    def do_delete(self, rt: ResourceType, ns: str | None, name: str, *,
                  propagation_policy: str | None = None, grace_period_seconds: int | None = None,
                  preconditions: dict[str, Any] | None = None,
                  dry_run: bool = False) -> tuple[dict[str, Any], bool]:
        """Delete or start deleting; returns the object and whether it is gone already."""
        st = self.storage(rt)
        ns = (ns or "") if rt.namespaced else ""
        stored = st.get(ns, name)
        if stored is None:
            raise errors.not_found(rt.plural, rt.group, name)
        obj = _view(rt, stored)
        m = obj["metadata"]
        pre = preconditions or {}
        if pre.get("uid") and pre["uid"] != m.get("uid"):
            raise errors.conflict(rt.plural, rt.group, name,
                                  f"Precondition failed: UID in precondition: {pre['uid']}, "
                                  f"UID in object meta: {m.get('uid')}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != m.get("resourceVersion"):
            raise errors.conflict(rt.plural, rt.group, name,
                                  f"Precondition failed: ResourceVersion in precondition: "
                                  f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                  f"{m.get('resourceVersion')}")
        if propagation_policy not in (None, "", "Background", "Foreground", "Orphan"):
            raise errors.invalid("DeleteOptions", "meta.k8s.io", "", [{
                "reason": "FieldValueNotSupported", "field": "propagationPolicy",
                "message": f'Unsupported value: "{propagation_policy}": supported values: '
                           f'"Foreground", "Background", "Orphan", "nil"'}])
        if dry_run:
            return obj, False
        if rt.gvk == "v1/Namespace":
            return self._delete_namespace(rt, st, stored, obj), False
        if rt.gvk == "apiextensions.k8s.io/v1/CustomResourceDefinition" and self._crd_has_objects(obj):
            return self._start_deleting(rt, st, stored, obj, [CRD_FINALIZER], None), False
        finalizers = list(m.get("finalizers") or [])
        extra = []
        if propagation_policy == "Foreground" and FOREGROUND not in finalizers:
            extra.append(FOREGROUND)
        if propagation_policy == "Orphan" and ORPHAN not in finalizers:
            extra.append(ORPHAN)
        grace = None
        if rt.gvk == "v1/Pod" and (obj.get("spec") or {}).get("nodeName"):
            default_grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            grace = default_grace if grace_period_seconds is None else grace_period_seconds
        if m.get("deletionTimestamp"):
            # Deleting again: only a shorter grace period (the kubelet's final 0) changes anything.
            if grace is not None and grace < (m.get("deletionGracePeriodSeconds") or 0):
                new = {**obj, "metadata": {**m, "deletionGracePeriodSeconds": grace}}
                result = self._finish_update(rt, st, obj, stored, new, False)
                return result, self.storage(rt).get(ns, name) is None
            if extra:
                return self._start_deleting(rt, st, stored, obj, extra, None), False
            return obj, False
        if finalizers or extra or (grace is not None and grace > 0):
            return self._start_deleting(rt, st, stored, obj, extra, grace), False
        final = self._commit(rt, st, dict(stored), stored, DELETED)
        return _view(rt, final), True

    def _start_deleting(self, rt: ResourceType, st: Storage, stored: dict[str, Any], obj: dict[str, Any],
                        extra_finalizers: list[str], grace: int | None) -> dict[str, Any]:
        m = dict(obj["metadata"])
        m.setdefault("deletionTimestamp", now())
        m["deletionGracePeriodSeconds"] = grace or 0
        if extra_finalizers:
            m["finalizers"] = list(m.get("finalizers") or []) + extra_finalizers
        if rt.generation:
            m["generation"] = int(m.get("generation", 1)) + 1
        new = {**obj, "metadata": m}
        if rt.gvk == "apiextensions.k8s.io/v1/CustomResourceDefinition":
            status = dict(new.get("status") or {})
            status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != "Terminating"] + [
                {"type": "Terminating", "status": "True", "lastTransitionTime": now(),
                 "reason": "InstanceDeletionInProgress", "message": "CustomResource deletion is in progress"}]
            new["status"] = status
            self._enqueue("crd", m["name"])
        result = self._commit(rt, st, self._to_storage(rt, new), stored, MODIFIED)
        if FOREGROUND in extra_finalizers:
            self._enqueue("foreground", st.name, m.get("namespace", ""), m["name"])
        if ORPHAN in extra_finalizers:
            self._enqueue("orphan", st.name, m.get("namespace", ""), m["name"])
        return _view(rt, result)

    def _delete_namespace(self, rt: ResourceType, st: Storage, stored: dict[str, Any],
                          obj: dict[str, Any]) -> dict[str, Any]:
        if obj["metadata"].get("deletionTimestamp"):
            return obj
        m = {**obj["metadata"], "deletionTimestamp": now(), "deletionGracePeriodSeconds": 0}
        new = {**obj, "metadata": m, "status": {**(obj.get("status") or {}), "phase": "Terminating"}}
        result = self._commit(rt, st, new, stored, MODIFIED)
        self._enqueue("namespace", m["name"])
        return result

    def do_delete_collection(self, rt: ResourceType, ns: str | None, *, label_selector: str | None = None,
                             field_selector: str | None = None, propagation_policy: str | None = None,
                             grace_period_seconds: int | None = None,
                             dry_run: bool = False) -> list[dict[str, Any]]:
        items, *_ = self.do_list(rt, ns, label_selector=label_selector, field_selector=field_selector)
        out = []
        for item in items:
            m = item["metadata"]
            try:
                obj, _ = self.do_delete(rt, m.get("namespace"), m["name"],
                                        propagation_policy=propagation_policy,
                                        grace_period_seconds=grace_period_seconds, dry_run=dry_run)
                out.append(obj)
            except ApiError as exc:
                if exc.code != 404:
                    raise
        return out

    # --- side effects ------------------------------------------------------------------------

    def _after_write(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if rt.gvk == "apiextensions.k8s.io/v1/CustomResourceDefinition":
            self.registry.remove_crd(obj["metadata"]["name"])
            for t in types_for_crd(obj):
                self.registry.add(t)
                self.storage(t)
        elif rt.gvk == "v1/Namespace" and old is None:
            # What the controller manager puts in every new namespace, so that code assuming a
            # namespace holds only its own objects meets the same surprise as on a real cluster.
            ns = obj["metadata"]["name"]
            sa = self.registry.by_key("v1/serviceaccounts")
            if self.storage(sa).get(ns, "default") is None:
                self.do_create(sa, ns, {"metadata": {"name": "default"}}, manager="kube-controller-manager")
            cm = self.registry.by_key("v1/configmaps")
            if self.storage(cm).get(ns, ROOT_CA_CONFIGMAP) is None:
                self.do_create(cm, ns, {"metadata": {"name": ROOT_CA_CONFIGMAP,
                                                     "annotations": {"kubernetes.io/description": ROOT_CA_NOTE}},
                                        "data": {"ca.crt": ROOT_CA_PEM}},
                               manager="kube-controller-manager")

    def _after_removal(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        m = obj["metadata"]
        uid = m.get("uid", "")
        if uid in self._dependents:
            self._enqueue("owner-gone", uid)
        for owner in _owner_uids(obj):
            where = self._uids.get(owner)
            if where is not None:
                self._enqueue("foreground-check", *where)
        ns = m.get("namespace")
        if ns:
            ns_obj = self.storage(self.registry.by_key("v1/namespaces")).get("", ns)
            if ns_obj is not None and ns_obj["metadata"].get("deletionTimestamp"):
                self._enqueue("namespace", ns)
        if rt.crd is not None and rt.crd["metadata"].get("name"):
            crd_rt = self.registry.by_key("apiextensions.k8s.io/v1/customresourcedefinitions")
            crd = self.storage(crd_rt).get("", rt.crd["metadata"]["name"])
            if crd is not None and crd["metadata"].get("deletionTimestamp"):
                self._enqueue("crd", crd["metadata"]["name"])
        if rt.gvk == "apiextensions.k8s.io/v1/CustomResourceDefinition":
            for t in self.registry.remove_crd(m["name"]):
                st = self._storages.get(t.storage)
                if st is not None:
                    for w in list(st.watchers):
                        if w.rt.crd is not None and not isinstance(w, Subscriber):
                            w.close()
        if rt.gvk == "v1/Service":
            self._ips.release((obj.get("spec") or {}).get("clusterIP"))

    def _crd_has_objects(self, crd: dict[str, Any]) -> bool:
        spec = crd.get("spec", {})
        st = self._storages.get(f"{spec.get('group', '')}/{(spec.get('names') or {}).get('plural', '')}")
        return st is not None and st.count > 0

    def _remove_finalizer(self, storage: str, ns: str, name: str, finalizer: str) -> None:
        st = self._storages[storage]
        stored = st.get(ns, name)
        if stored is None:
            return
        rt = self.registry.storage_type(storage)
        if rt is None:
            return
        fins = list(stored["metadata"].get("finalizers") or [])
        if finalizer not in fins:
            return
        fins.remove(finalizer)
        new = {**stored, "metadata": {**stored["metadata"], "finalizers": fins}}
        if not fins:
            del new["metadata"]["finalizers"]
        self._finish_update(rt, st, stored, stored, new, False)

    def _lookup(self, storage: str, ns: str, name: str) -> tuple[ResourceType, Storage, dict[str, Any]] | None:
        st = self._storages.get(storage)
        if st is None:
            return None
        obj = st.get(ns, name)
        rt = self.registry.storage_type(storage)
        if obj is None or rt is None:
            return None
        return rt, st, obj

    def _process(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "owner-gone":
            for dep in list(self._dependents.get(item[1], ())):
                self._collect(*dep)
        elif kind == "dangling":
            self._collect(*item[1:])
        elif kind in ("foreground", "foreground-check"):
            self._foreground(item[1], item[2], item[3], delete_dependents=(kind == "foreground"))
        elif kind == "orphan":
            self._orphan(*item[1:])
        elif kind == "namespace":
            self._namespace_cleanup(item[1])
        elif kind == "crd":
            self._crd_cleanup(item[1])

    def _collect(self, storage: str, ns: str, name: str) -> None:
        """Garbage-collect one dependent whose owners may be gone, like the real GC's attemptToDelete."""
        found = self._lookup(storage, ns, name)
        if found is None:
            return
        rt, st, obj = found
        refs = obj["metadata"].get("ownerReferences") or []
        if not refs or obj["metadata"].get("deletionTimestamp"):
            return
        solid, dangling, waiting = [], [], []
        for ref in refs:
            where = self._uids.get(ref.get("uid", ""))
            # A namespaced owner can only own objects of its own namespace: a reference to one
            # elsewhere is as good as a reference to nothing (the real GC deletes such objects).
            if where is None or where[1] not in ("", ns):
                dangling.append(ref)
                continue
            owner = self._storages[where[0]].get(where[1], where[2])
            om = (owner or {}).get("metadata") or {}
            if om.get("deletionTimestamp") and FOREGROUND in (om.get("finalizers") or []):
                waiting.append(ref)
            else:
                solid.append(ref)
        if not dangling and not waiting:
            return
        m = obj["metadata"]
        if solid:
            keep = [r for r in refs if r in solid]
            new = {**obj, "metadata": {**m, "ownerReferences": keep}}
            self._finish_update(rt, st, obj, obj, new, False)
            return
        policy = "Foreground" if any(r.get("blockOwnerDeletion") for r in waiting) else "Background"
        self.do_delete(rt, ns or None, name, propagation_policy=policy,
                       preconditions={"uid": m.get("uid")})

    def _foreground(self, storage: str, ns: str, name: str, delete_dependents: bool) -> None:
        found = self._lookup(storage, ns, name)
        if found is None:
            return
        _rt, _st, obj = found
        m = obj["metadata"]
        if not m.get("deletionTimestamp") or FOREGROUND not in (m.get("finalizers") or []):
            return
        uid = m.get("uid", "")
        blocking = 0
        for dep in list(self._dependents.get(uid, ())):
            if delete_dependents:
                self._collect(*dep)
            d = self._lookup(*dep)
            if d is None:
                continue
            refs = d[2]["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == uid and r.get("blockOwnerDeletion") for r in refs):
                blocking += 1
        if blocking == 0:
            self._remove_finalizer(storage, ns, name, FOREGROUND)

    def _orphan(self, storage: str, ns: str, name: str) -> None:
        found = self._lookup(storage, ns, name)
        if found is None:
            return
        _, _, obj = found
        uid = obj["metadata"].get("uid", "")
        for dep in list(self._dependents.get(uid, ())):
            d = self._lookup(*dep)
            if d is None:
                continue
            drt, dst, dobj = d
            dm = dobj["metadata"]
            keep = [r for r in dm.get("ownerReferences") or [] if r.get("uid") != uid]
            new_meta = {**dm, "ownerReferences": keep}
            if not keep:
                del new_meta["ownerReferences"]
            self._finish_update(drt, dst, dobj, dobj, {**dobj, "metadata": new_meta}, False)
        self._remove_finalizer(storage, ns, name, ORPHAN)

    def _namespace_cleanup(self, ns: str) -> None:
        ns_rt = self.registry.by_key("v1/namespaces")
        ns_st = self.storage(ns_rt)
        ns_obj = ns_st.get("", ns)
        if ns_obj is None or not ns_obj["metadata"].get("deletionTimestamp"):
            return
        remaining = 0
        for storage_name, st in list(self._storages.items()):
            bucket = st.by_ns.get(ns)
            if not bucket:
                continue
            rt = self.registry.storage_type(storage_name)
            if rt is None or not rt.namespaced:
                continue
            for name, obj in list(bucket.items()):
                remaining += 1
                if not obj["metadata"].get("deletionTimestamp"):
                    with contextlib.suppress(ApiError):
                        self.do_delete(rt, ns, name, grace_period_seconds=None)
        still = sum(len(st.by_ns.get(ns) or {}) for st in self._storages.values() if st.name != ns_st.name)
        if still == 0:
            current = ns_st.get("", ns)
            if current is None:
                return
            spec = dict(current.get("spec") or {})
            spec["finalizers"] = [f for f in spec.get("finalizers") or [] if f != NAMESPACE_FINALIZER]
            new = {**current, "spec": spec}
            if not current["metadata"].get("finalizers"):
                self._commit(ns_rt, ns_st, dict(current), current, DELETED)
            else:
                self._finish_update(ns_rt, ns_st, current, current, new, False)
        elif remaining:
            self._update_namespace_conditions(ns_rt, ns_st, ns, still)

    def _update_namespace_conditions(self, rt: ResourceType, st: Storage, ns: str, remaining: int) -> None:
        current = st.get("", ns)
        if current is None:
            return
        status = dict(current.get("status") or {})
        conditions = [c for c in status.get("conditions") or [] if c.get("type") != "NamespaceContentRemaining"]
        conditions.append({"type": "NamespaceContentRemaining", "status": "True",
                           "lastTransitionTime": now(), "reason": "SomeResourcesRemain",
                           "message": f"Some resources are remaining: {remaining} objects"})
        status["conditions"] = conditions
        old_conds = [c for c in (current.get("status") or {}).get("conditions") or []]
        if [(c["type"], c.get("message")) for c in old_conds] == [(c["type"], c.get("message")) for c in conditions]:
            return
        self._finish_update(rt, st, current, current, {**current, "status": status}, False)

    def _crd_cleanup(self, crd_name: str) -> None:
        crd_rt = self.registry.by_key("apiextensions.k8s.io/v1/customresourcedefinitions")
        st = self.storage(crd_rt)
        crd = st.get("", crd_name)
        if crd is None or not crd["metadata"].get("deletionTimestamp"):
            return
        spec = crd.get("spec", {})
        storage_name = f"{spec.get('group', '')}/{(spec.get('names') or {}).get('plural', '')}"
        cr_st = self._storages.get(storage_name)
        cr_rt = self.registry.storage_type(storage_name)
        if cr_st is not None and cr_rt is not None:
            for (ns, name), obj in list(cr_st.iter_sorted(None)):
                if not obj["metadata"].get("deletionTimestamp"):
                    with contextlib.suppress(ApiError):
                        self.do_delete(cr_rt, ns or None, name)
        if cr_st is None or cr_st.count == 0:
            self._remove_finalizer(st.name, "", crd_name, CRD_FINALIZER)

    # --- in-process API (used by the simulated controllers) ----------------------------------

    async def create(self, resource: str, obj: dict[str, Any], *, field_manager: str | None = None) -> dict[str, Any]:
        rt = self.resource(resource)
        ns = (obj.get("metadata") or {}).get("namespace") if rt.namespaced else None
        result, _ = self.do_create(rt, ns, deep_copy(obj), manager=field_manager)
        return deep_copy(result)

    async def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any]:
        return deep_copy(self.do_get(self.resource(resource), namespace, name))

    async def list(self, resource: str, namespace: str | None = None,
                   label_selector: str | None = None, field_selector: str | None = None) -> list[dict[str, Any]]:
        items, *_ = self.do_list(self.resource(resource), namespace, label_selector=label_selector,
                                 field_selector=field_selector)
        return [deep_copy(i) for i in items]

    async def update(self, resource: str, obj: dict[str, Any], subresource: str | None = None, *,
                     field_manager: str | None = None) -> dict[str, Any]:
        """Replace an object; a stale ``metadata.resourceVersion`` gets 409, none = unconditional."""
        rt = self.resource(resource)
        m = obj.get("metadata") or {}
        if subresource == "scale":
            return deep_copy(self.do_update_scale(rt, m.get("namespace"), m.get("name", ""), obj,
                                                  manager=field_manager))
        result, _ = self.do_update(rt, m.get("namespace"), m.get("name", ""), deep_copy(obj),
                                   subresource=subresource, manager=field_manager)
        return deep_copy(result)

    async def patch(self, resource: str, namespace: str | None, name: str, patch: Any,
                    patch_type: str = "merge", subresource: str | None = None, *,
                    field_manager: str | None = None, force: bool = True) -> dict[str, Any]:
        """Patch with ``merge``, ``json``, ``strategic`` or ``apply`` (server-side apply)."""
        rt = self.resource(resource)
        result, _ = self.do_patch(rt, namespace, name, deep_copy(patch), patch_type,
                                  subresource=subresource, manager=field_manager, force=force)
        return deep_copy(result)

    async def delete(self, resource: str, namespace: str | None, name: str, *,
                     propagation_policy: str | None = None,
                     grace_period_seconds: int | None = None) -> None:
        """Delete (or start deleting, with finalizers or a graceful pod).

        A pod that is already terminating is removed: a second delete is how the kubelet
        reports that its containers have stopped (like its final delete with grace 0).
        """
        rt = self.resource(resource)
        if grace_period_seconds is None and rt.gvk == "v1/Pod":
            current = self.storage(rt).get(namespace or "", name)
            if current is not None and current["metadata"].get("deletionTimestamp"):
                grace_period_seconds = 0
        self.do_delete(rt, namespace, name, propagation_policy=propagation_policy,
                       grace_period_seconds=grace_period_seconds)

    def subscribe(self, resource: str) -> asyncio.Queue[tuple[str, dict[str, Any]]]:
        """A queue of ``(type, object)`` for every later change of this resource, all namespaces."""
        rt = self.resource(resource)
        sub = Subscriber(rt)
        self.storage(rt).watchers.add(sub)
        return sub.out

    def unsubscribe(self, resource: str, queue: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        rt = self.resource(resource)
        st = self.storage(rt)
        for w in list(st.watchers):
            if isinstance(w, Subscriber) and w.out is queue:
                st.watchers.discard(w)

    def objects_count(self) -> int:
        return sum(st.count for st in self._storages.values())


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, sharing what the patch leaves alone instead of copying it.

    Stored objects are never mutated, so the result may share every untouched subtree
    with the stored version; a merge patch then costs what it changes, not the size of the
    object (copying whole objects per write was the largest CPU cost under a fleet load).
    The admission step works on its own copy.
    """
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge_patch(out.get(k), v)
    return out
