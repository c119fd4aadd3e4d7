"""The HTTP face of the local control plane: Kubernetes REST paths on top of ``Cluster``.

URL layout, verbs, content negotiation (JSON, Table, PartialObjectMetadata, aggregated
discovery) and the watch stream follow the real apiserver, so kubectl, helm, kopf and the
kubernetes client need no special casing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import discovery, errors, faults, openapi, protobuf, tables
from .errors import ApiError
from .faults import Fault, FaultInjector
from .objects import now_micro, program_name
from .resources import ResourceType
from .store import PATCH_TYPES, Cluster, Watcher

log = logging.getLogger("localcluster.server")

VERSION_INFO = {
    "major": "1",
    "minor": "35",
    "gitVersion": "v1.35.0-localcluster",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _json_response(
    body: Any,
    status: int = 200,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> web.Response:
    all_headers = {"Content-Type": content_type}
    if headers:
        all_headers.update(headers)
    return web.Response(body=_dumps(body).encode(), status=status, headers=all_headers)


def _bool(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _int(value: str | None, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)  # type: ignore[arg-type]
    except ValueError:
        raise errors.bad_request(f"invalid value for {name}: {value!r}") from None



_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _go_json_int(text: str) -> int | float:
    """A JSON integer as the API server decodes it into an unstructured object: an int64 when
    it fits, else a float64 (k8s.io/apimachinery/pkg/util/json/json.go, convertNumber), which
    schema validation then refuses as a "number" where an integer is wanted."""
    value = int(text)
    return value if _INT64_MIN <= value <= _INT64_MAX else float(value)

class _Route:
    """What a request addresses, parsed from its path and query."""

    __slots__ = ("group", "name", "namespace", "plural", "rt", "subresource", "verb", "version")

    def __init__(self) -> None:
        self.group = ""
        self.version = ""
        self.plural = ""
        self.namespace: str | None = None
        self.name: str | None = None
        self.subresource: str | None = None
        self.rt: ResourceType | None = None
        self.verb = ""


_ROUTE = web.RequestKey("route", _Route)
_FAULT = web.RequestKey("fault", Fault)


class ApiServer:
    """Builds the aiohttp application serving one ``Cluster``."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        request_log: list[dict[str, Any]] | None = None,
        request_log_file: Any = None,
        bookmark_interval: float = 5.0,
        default_watch_timeout: float = 1800.0,
        fault_injector: FaultInjector | None = None,
        restart: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.cluster = cluster
        self.faults = fault_injector or FaultInjector()
        # Restarts the HTTP server keeping the store (LocalCluster.restart_apiserver).
        self.restart = restart
        self._restart_task: asyncio.Task[None] | None = None  # referenced until done
        self.request_log = request_log
        self.request_log_file = request_log_file
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        self.address = "127.0.0.1:0"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    # --- middleware: errors and the request log ----------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        started = time.perf_counter()
        route = _Route()
        request[_ROUTE] = route
        try:
            response = await handler(request)
        except ApiError as exc:
            response = _json_response(exc.status(), exc.code)
        except web.HTTPException:
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("Request %s %s failed", request.method, request.path_qs)
            err = errors.internal(str(exc))
            response = _json_response(err.status(), err.code)
        fault = request.get(_FAULT)
        if fault is not None and fault.kind == "internal_error_after_apply":
            response = self._lose_response(request, route, fault, response)
        if self.request_log is not None or self.request_log_file is not None:
            self._log(request, route, response.status, time.perf_counter() - started)
        return response

    def _log(self, request: web.Request, route: _Route, status: int, duration: float) -> None:
        entry = {
            "time": now_micro(),
            "verb": route.verb or request.method.lower(),
            "method": request.method,
            "path": request.path,
            "group": route.group,
            "version": route.version,
            "resource": route.plural,
            "namespace": route.namespace,
            "name": route.name,
            "subresource": route.subresource,
            "user_agent": request.headers.get("User-Agent", ""),
            "code": status,
            "duration_ms": round(duration * 1000, 3),
        }
        fault = request.get(_FAULT)
        if fault is not None:
            entry["fault"] = fault.kind
        if self.request_log is not None:
            self.request_log.append(entry)
        if self.request_log_file is not None:
            self.request_log_file.write(json.dumps(entry) + "\n")
            self.request_log_file.flush()

    # --- dispatch ----------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        route = request[_ROUTE]
        if not parts:
            return _json_response(
                {
                    "paths": [
                        "/api",
                        "/api/v1",
                        "/apis",
                        "/healthz",
                        "/livez",
                        "/openapi/v3",
                        "/readyz",
                        "/version",
                    ]
                }
            )
        head = parts[0]
        if head == "version" and len(parts) == 1:
            return _json_response(VERSION_INFO)
        if head in ("healthz", "readyz", "livez"):
            return web.Response(text="ok")
        if head == "openapi":
            return self._openapi(request, parts[1:])
        if head == "localcluster":
            return await self._admin(request, parts[1:])
        if head == "api":
            if len(parts) == 1:
                return self._discovery(request, discovery.core_versions(self.address), core=True)
            route.group, route.version, rest = "", parts[1], parts[2:]
        elif head == "apis":
            if len(parts) == 1:
                return self._discovery(
                    request, discovery.group_list(self.cluster.registry), core=False
                )
            if len(parts) == 2:
                body = discovery.api_group(self.cluster.registry, parts[1])
                if body is None:
                    raise errors.no_such_path()
                return _json_response(body)
            route.group, route.version, rest = parts[1], parts[2], parts[3:]
        else:
            raise errors.no_such_path()
        if not rest:
            body = discovery.resource_list(self.cluster.registry, route.group, route.version)
            if body is None:
                raise errors.no_such_path()
            return _json_response(body)
        watch = False
        if rest[0] == "watch":
            watch, rest = True, rest[1:]
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
            route.namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise errors.no_such_path()
        route.plural = rest[0]
        route.name = rest[1] if len(rest) > 1 else None
        route.subresource = rest[2] if len(rest) > 2 else None
        rt = self.cluster.registry.get(route.group, route.version, route.plural)
        if rt is None:
            raise errors.no_such_path()
        route.rt = rt
        if route.namespace is not None and not rt.namespaced:
            raise errors.no_such_path()
        if route.name is not None and rt.namespaced and route.namespace is None:
            raise errors.no_such_path()
        if route.subresource is not None and route.subresource not in rt.subresources:
            raise errors.no_such_path()
        watch = watch or (request.method == "GET" and _bool(request.query.get("watch")))
        faulted = await self._inject(request, route, watch)
        if faulted is not None:
            return faulted
        if watch:
            route.verb = "watch"
            return await self._watch(request, route, rt)
        return await self._resource(request, route, rt)

    # --- fault injection (faults.py) ---------------------------------------------------------

    def _request_info(self, request: web.Request, route: _Route, watch: bool) -> faults.RequestInfo:
        return faults.RequestInfo(
            user_agent=request.headers.get("User-Agent", ""),
            verb=faults.verb_of(request.method, route.name is not None, watch),
            group=route.group,
            plural=route.plural,
            subresource=route.subresource,
            namespace=route.namespace,
            name=route.name,
            resource_version=request.query.get("resourceVersion") if watch else None,
        )

    async def _inject(
        self, request: web.Request, route: _Route, watch: bool
    ) -> web.StreamResponse | None:
        """Apply the fault rules to a resource request: added latency, then an error
        answered in place of the request; watch and after-apply faults are only marked."""
        if not self.faults.active:
            return None
        info = self._request_info(request, route, watch)
        decision = self.faults.decide(info)
        if decision.latency:
            await asyncio.sleep(decision.latency)
        fault = decision.fault
        if fault is None:
            return None
        request[_FAULT] = fault
        route.verb = info.verb
        if fault.kind in ("internal_error_after_apply", "watch_cut", "watch_expired"):
            return None
        if fault.kind == "too_many_requests" and fault.rule.source == "priority_and_fairness":
            return web.Response(
                status=429,
                text=faults.PRIORITY_AND_FAIRNESS_BODY,
                headers={
                    **faults.PRIORITY_AND_FAIRNESS_HEADERS,
                    "Retry-After": str(fault.rule.retry_after_seconds),
                },
            )
        err, headers = faults.error_for(fault, info)
        return _json_response(err.status(), err.code, headers)

    def _lose_response(
        self, request: web.Request, route: _Route, fault: Fault, response: web.StreamResponse
    ) -> web.StreamResponse:
        """The write was applied; the client sees a 500 instead of its answer. A write that
        failed on its own keeps its own error (nothing was lost)."""
        if response.status >= 400:
            self.faults.withdraw(fault)
            return response
        info = self._request_info(request, route, False)
        err, headers = faults.error_for(fault, info)
        return _json_response(err.status(), err.code, headers)

    @staticmethod
    async def _restart_soon(restart: Callable[[float], Awaitable[None]], down: float) -> None:
        try:
            await restart(down)
        except RuntimeError as exc:  # stopped meanwhile
            log.warning("Skipped the API server restart: %s", exc)

    async def _admin(self, request: web.Request, rest: list[str]) -> web.StreamResponse:
        """``/localcluster/faults`` (GET, POST, DELETE; DELETE ``/<id>``) and
        ``POST /localcluster/restart``: the test-facing switches, never faulted."""
        method = request.method
        if rest == ["faults"]:
            if method == "GET":
                return _json_response(self.faults.state())
            if method == "DELETE":
                return _json_response(self.faults.clear())
            if method == "POST":
                body = await self._body(request)
                try:
                    added = self.faults.apply_json(body if body is not None else {})
                except ValueError as exc:
                    raise errors.bad_request(str(exc)) from None
                return _json_response({**self.faults.state(), "added": added}, 201)
            raise errors.method_not_allowed()
        if len(rest) == 2 and rest[0] == "faults" and method == "DELETE":
            rule_id = _int(rest[1], "rule id")
            if rule_id is None or not self.faults.remove(rule_id):
                raise ApiError(404, "NotFound", f"fault rule {rest[1]} not found", {})
            return _json_response(self.faults.state())
        if rest == ["restart"]:
            if method != "POST":
                raise errors.method_not_allowed()
            if self.restart is None:
                raise errors.ApiError(501, "NotImplemented", "this server cannot restart", {})
            body = await self._body(request) or {}
            down = body.get("downSeconds", 0.5) if isinstance(body, dict) else None
            if not isinstance(down, int | float) or isinstance(down, bool) or down < 0:
                raise errors.bad_request("downSeconds must be a non-negative number")
            # The answer is on the wire before the restart drops every connection.
            response = _json_response({"downSeconds": down}, 202)
            await response.prepare(request)
            await response.write_eof()
            self._restart_task = asyncio.get_running_loop().create_task(
                self._restart_soon(self.restart, float(down)))
            return response
        raise errors.no_such_path()

    def _discovery(self, request: web.Request, legacy: dict[str, Any], core: bool) -> web.Response:
        accept = request.headers.get("Accept", "")
        aggregated = discovery.wants_aggregated(accept)
        if aggregated is not None:
            body = discovery.aggregated(self.cluster.registry, core=core, version=aggregated)
            ctype = (
                f"application/json;g=apidiscovery.k8s.io;v={aggregated};as=APIGroupDiscoveryList"
            )
            return _json_response(body, content_type=ctype)
        return _json_response(legacy)

    def _openapi(self, request: web.Request, rest: list[str]) -> web.Response:
        if rest == ["v3"]:
            return _json_response(openapi.index(self.cluster.registry))
        if rest and rest[0] == "v3" and len(rest) >= 2:
            doc = openapi.document(self.cluster.registry, "/".join(rest[1:]))
            if doc is None:
                raise errors.no_such_path()
            body, etag = doc
            return web.Response(
                body=body,
                content_type="application/json",
                headers={"Etag": f'"{etag}"', "Cache-Control": "no-cache, private"},
            )
        # Only v3 is served: kubectl falls back to v2 only when v3 fails.
        raise errors.no_such_path()

    # --- resources ---------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        ctype = request.content_type or "application/json"
        if ctype == "application/vnd.kubernetes.protobuf":
            try:
                return protobuf.decode(raw)
            except (protobuf.ProtobufError, ValueError) as exc:
                raise errors.ApiError(415, "UnsupportedMediaType", str(exc)) from None
        if "protobuf" in ctype or "cbor" in ctype:
            raise errors.unsupported_media_type(ctype)
        try:
            if "yaml" in ctype:
                import yaml

                return yaml.safe_load(raw)
            return json.loads(raw, parse_int=_go_json_int)
        except ValueError as exc:
            raise errors.bad_request(f"error decoding request body: {exc}") from None

    def _manager(self, request: web.Request) -> str:
        return request.query.get("fieldManager") or program_name(request.headers.get("User-Agent"))

    async def _resource(
        self, request: web.Request, route: _Route, rt: ResourceType
    ) -> web.StreamResponse:
        q = request.query
        c = self.cluster
        method = request.method
        dry_run = q.get("dryRun") == "All"
        validation = q.get("fieldValidation")
        sub = route.subresource
        warnings: list[str] = []
        if method == "GET":
            if route.name is None:
                route.verb = "list"
                return self._list(request, route, rt)
            route.verb = "get"
            if sub == "scale":
                return _json_response(c.do_get_scale(rt, route.namespace, route.name or ""))
            if sub == "log":
                pod = c.do_get(rt, route.namespace, route.name or "")
                return await self._pod_log(request, pod)
            if sub not in (None, "status"):
                raise errors.method_not_allowed()
            obj = c.do_get(rt, route.namespace, route.name or "")
            return self._object_response(request, rt, obj)
        if rt.namespaced and route.namespace is None and method != "GET":
            raise errors.method_not_allowed()  # no writes on the all-namespaces path
        if rt.verbs == ("create",):
            if method != "POST" or route.name is not None:
                raise errors.method_not_allowed()
            route.verb = "create"
            try:
                body = await self._body(request) or {}
            except ApiError:
                body = {}  # a review's spec (protobuf from kubectl) does not change the answer
            return _json_response(_review(rt, body), 201)
        if method == "POST":
            route.verb = "create"
            if route.name is not None:
                raise errors.method_not_allowed()
            body = await self._body(request)
            obj, warnings = c.do_create(
                rt,
                route.namespace,
                body,
                manager=self._manager(request),
                dry_run=dry_run,
                field_validation=validation,
            )
            route.name = obj["metadata"].get("name")
            return self._object_response(request, rt, obj, 201, warnings)
        if route.name is None and method != "DELETE":
            raise errors.method_not_allowed()
        name = route.name or ""
        if method == "PUT":
            route.verb = "update"
            body = await self._body(request)
            if sub == "scale":
                return _json_response(
                    c.do_update_scale(
                        rt,
                        route.namespace,
                        name,
                        body or {},
                        manager=self._manager(request),
                        dry_run=dry_run,
                    )
                )
            if sub not in (None, "status", "finalize"):
                raise errors.method_not_allowed()
            obj, warnings = c.do_update(
                rt,
                route.namespace,
                name,
                body,
                subresource=sub,
                manager=self._manager(request),
                dry_run=dry_run,
                field_validation=validation,
            )
            return self._object_response(request, rt, obj, 200, warnings)
        if method == "PATCH":
            route.verb = "patch"
            ctype = request.content_type
            patch_type = PATCH_TYPES.get(ctype)
            if patch_type is None:
                raise errors.unsupported_media_type(ctype)
            raw = await request.read()
            if patch_type == "apply" and not q.get("fieldManager"):
                raise errors.invalid(
                    "PatchOptions",
                    "meta.k8s.io",
                    "",
                    [errors.required("fieldManager", "is required for apply patch")],
                )
            existed = c.storage(rt).get(route.namespace or "", name) is not None
            obj, warnings = c.do_patch(
                rt,
                route.namespace,
                name,
                raw,
                patch_type,
                subresource=sub,
                manager=self._manager(request),
                force=_bool(q.get("force")),
                dry_run=dry_run,
                field_validation=validation,
            )
            if sub == "scale":
                return _json_response(obj)
            return self._object_response(request, rt, obj, 200 if existed else 201, warnings)
        if method == "DELETE":
            body = await self._body(request) or {}
            if not isinstance(body, dict):
                raise errors.bad_request("DeleteOptions must be an object")
            policy = body.get("propagationPolicy") or q.get("propagationPolicy")
            if policy is None and (
                body.get("orphanDependents") or _bool(q.get("orphanDependents"))
            ):
                policy = "Orphan"
            grace = body.get("gracePeriodSeconds")
            if grace is None:
                grace = _int(q.get("gracePeriodSeconds"), "gracePeriodSeconds")
            dry_run = dry_run or "All" in (body.get("dryRun") or [])
            if route.name is None:
                route.verb = "deletecollection"
                deleted = c.do_delete_collection(
                    rt,
                    route.namespace,
                    label_selector=q.get("labelSelector"),
                    field_selector=q.get("fieldSelector"),
                    propagation_policy=policy,
                    grace_period_seconds=grace,
                    dry_run=dry_run,
                )
                return _json_response(
                    {
                        "kind": f"{rt.kind}List",
                        "apiVersion": rt.api_version,
                        "metadata": {"resourceVersion": c.resource_version},
                        "items": deleted,
                    }
                )
            route.verb = "delete"
            obj, gone = c.do_delete(
                rt,
                route.namespace,
                name,
                propagation_policy=policy,
                grace_period_seconds=grace,
                preconditions=body.get("preconditions"),
                dry_run=dry_run,
            )
            return self._object_response(request, rt, obj, 200 if gone else 202)
        raise errors.method_not_allowed()

    async def _pod_log(self, request: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
        """GET .../pods/<name>/log: the container is chosen as the apiserver's LogLocation
        does (pkg/registry/core/pod/strategy.go); the process runtime serves the logs of
        its pods; simulated containers write nothing."""
        q = request.query
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        name = meta.get("name", "")
        container = q.get("container") or ""
        mains = [c.get("name", "") for c in spec.get("containers") or []]
        inits = [c.get("name", "") for c in spec.get("initContainers") or []]
        ephemeral = [c.get("name", "") for c in spec.get("ephemeralContainers") or []]
        if not container:
            if len(mains) == 1:
                container = mains[0]
            elif not mains:
                raise errors.bad_request(f"a container name must be specified for pod {name}")
            else:
                names = " ".join([*inits, *mains, *ephemeral])
                raise errors.bad_request(
                    f"a container name must be specified for pod {name}, choose one of: [{names}]")
        elif container not in (*mains, *inits, *ephemeral):
            raise errors.bad_request(f"container {container} is not valid for pod {name}")
        tail = _int(q.get("tailLines"), "tailLines")
        limit = _int(q.get("limitBytes"), "limitBytes")
        since_seconds = _int(q.get("sinceSeconds"), "sinceSeconds")
        since = q.get("sinceTime")
        if since_seconds is not None:
            from datetime import UTC, datetime, timedelta

            since = (datetime.now(UTC) - timedelta(seconds=since_seconds)).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ")
        source = self.cluster.pod_log_source
        if not spec.get("nodeName") or source is None or not source.handles(
                meta.get("namespace", ""), name, meta.get("uid", "")):
            return web.Response(text="", content_type="text/plain")
        timestamps = _bool(q.get("timestamps"))
        ok, text, inst = source.read_log(
            meta.get("namespace", ""), name, container, previous=_bool(q.get("previous")),
            tail_lines=tail, timestamps=timestamps, limit_bytes=limit, since=since)
        if not ok:
            raise errors.bad_request(text)
        if not _bool(q.get("follow")) or limit is not None:
            return web.Response(text=text, content_type="text/plain")
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(text.encode())
        already = len(source.read_log(meta.get("namespace", ""), name, container,
                                      previous=_bool(q.get("previous")))[1].splitlines(True))
        try:
            async for chunk in source.follow_log(inst, already, timestamps):
                await response.write(chunk.encode())
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    def _object_response(
        self,
        request: web.Request,
        rt: ResourceType,
        obj: dict[str, Any],
        status: int = 200,
        warnings: list[str] | None = None,
    ) -> web.Response:
        headers = {}
        if warnings:
            headers["Warning"] = ", ".join(
                f'299 - "{w.replace(chr(34), chr(92) + chr(34))}"' for w in warnings
            )
        accept = request.headers.get("Accept", "")
        shape = tables.wanted_shape(accept)
        if shape == "Table":
            body = tables.table(
                rt,
                [obj],
                include_object=request.query.get("includeObject"),
                resource_version=obj["metadata"].get("resourceVersion", ""),
            )
            return _json_response(body, status, headers)
        if shape == "PartialObjectMetadata":
            return _json_response(tables.partial(obj), status, headers)
        return _json_response(obj, status, headers)

    def _list(self, request: web.Request, route: _Route, rt: ResourceType) -> web.Response:
        q = request.query
        limit = _int(q.get("limit"), "limit") or 0
        items, rv, cont, remaining = self.cluster.do_list(
            rt,
            route.namespace,
            label_selector=q.get("labelSelector"),
            field_selector=q.get("fieldSelector"),
            limit=limit,
            continue_token=q.get("continue"),
        )
        shape = tables.wanted_shape(request.headers.get("Accept", ""))
        meta: dict[str, Any] = {"resourceVersion": rv}
        if cont:
            meta["continue"] = cont
            meta["remainingItemCount"] = remaining
        if shape == "Table":
            body = tables.table(
                rt, items, include_object=q.get("includeObject"), resource_version=rv
            )
            body["metadata"].update(meta)
            return _json_response(body)
        if shape == "PartialObjectMetadata":
            return _json_response(
                {
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": meta,
                    "items": [tables.partial(i) for i in items],
                }
            )
        return _json_response(
            {
                "kind": f"{rt.kind}List",
                "apiVersion": rt.api_version,
                "metadata": meta,
                "items": items,
            }
        )

    # --- watch -------------------------------------------------------------------------------

    async def _watch(
        self, request: web.Request, route: _Route, rt: ResourceType
    ) -> web.StreamResponse:
        q = request.query
        field_selector = q.get("fieldSelector")
        if route.name is not None:
            pin = f"metadata.name={route.name}"
            field_selector = f"{field_selector},{pin}" if field_selector else pin
        bookmarks = _bool(q.get("allowWatchBookmarks"))
        send_initial = _bool(q.get("sendInitialEvents"))
        if send_initial and (q.get("resourceVersionMatch") != "NotOlderThan" or not bookmarks):
            raise errors.invalid(
                "ListOptions",
                "meta.k8s.io",
                "",
                [
                    {
                        "reason": "FieldValueForbidden",
                        "field": "sendInitialEvents",
                        "message": "Forbidden: sendInitialEvents is forbidden for watch unless the "
                        "WatchList feature gate is enabled and resourceVersionMatch is "
                        "NotOlderThan and allowWatchBookmarks is true",
                    }
                ],
            )
        timeout = _int(q.get("timeoutSeconds"), "timeoutSeconds")
        shape = tables.wanted_shape(request.headers.get("Accept", ""))
        watcher: Watcher | None = None
        error: ApiError | None = None
        fault = request.get(_FAULT)
        if fault is not None and fault.kind == "watch_expired":
            # The cacher answers a too-old version with an error watcher
            # (storage/cacher/cacher.go newErrWatcher): a 200 stream with one ERROR event.
            error = errors.gone(faults.expired_message(
                q.get("resourceVersion") or "", self.cluster.resource_version))
        cut_after = fault.rule.after_seconds if fault and fault.kind == "watch_cut" else None
        truncate = bool(fault and fault.kind == "watch_cut" and fault.rule.truncate)
        try:
            if error is not None:
                raise error
            watcher = self.cluster.do_watch(
                rt,
                route.namespace,
                label_selector=q.get("labelSelector"),
                field_selector=field_selector,
                resource_version=q.get("resourceVersion"),
                send_initial_events=send_initial,
            )
        except ApiError as exc:
            if exc.code != 410:
                raise
            error = exc
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
        except ConnectionResetError:
            # The client went away before the headers (a killed operator): nothing to tell it,
            # as the apiserver logs nothing for it either.
            if watcher is not None:
                self.cluster.stop_watch(watcher)
            return response
        if error is not None:
            await response.write(
                _dumps({"type": "ERROR", "object": error.status()}).encode() + b"\n"
            )
            await response.write_eof()
            return response
        assert watcher is not None
        if send_initial:
            watcher.queue.put_nowait(("INITIAL_END", {}, None))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout is not None else self.default_watch_timeout)
        cut_at = loop.time() + cut_after if cut_after is not None else None
        cutting = False  # a truncating cut waits for the next line to break
        timed_out = False
        try:
            while True:
                if cut_at is not None and not cutting and loop.time() >= cut_at:
                    if not truncate:
                        # A clean end of stream (the final chunk), without the bookmark a
                        # timeout sends: what a proxy or a server-side close looks like.
                        await response.write_eof()
                        return response
                    cutting = True
                remaining = deadline - loop.time()
                if cut_at is not None and not cutting:
                    remaining = min(remaining, cut_at - loop.time())
                    if remaining <= 0:
                        continue
                if remaining <= 0:
                    timed_out = True
                    break
                # Wake up now and then even without bookmarks: a client that went away must
                # not keep its watch (and a growing queue) until the timeout.
                wait = min(remaining, self.bookmark_interval)
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), wait)
                except TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        break
                    if not watcher.queue.empty():
                        # An event was queued while the wait timed out. A bookmark names the
                        # newest resourceVersion, so sent now it would overtake the event, and a
                        # client resuming from it after a cut would never see the event. The
                        # apiserver's cacher queues bookmarks behind the watcher's events
                        # (staging/src/k8s.io/apiserver/pkg/storage/cacher/cache_watcher.go).
                        continue
                    if bookmarks and deadline - loop.time() > 0:
                        line = self._bookmark(rt)
                        if cutting:
                            return await self._break_stream(request, response, line)
                        await response.write(line)
                    continue
                chunks = []
                closed = False
                while item is not None:
                    chunks.append(self._encode_event(rt, item, shape, request))
                    if len(chunks) >= 256 or watcher.queue.empty():
                        break
                    item = watcher.queue.get_nowait()
                if item is None:
                    closed = True
                if chunks and cutting:
                    return await self._break_stream(request, response, chunks[0])
                if chunks:
                    await response.write(b"".join(chunks))
                if closed:
                    break
            if timed_out and bookmarks and watcher.queue.empty():
                await response.write(self._bookmark(rt))
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.cluster.stop_watch(watcher)
        return response

    async def _break_stream(
        self, request: web.Request, response: web.StreamResponse, line: bytes
    ) -> web.StreamResponse:
        """Send the first half of an event line, then close the connection without the
        final chunk: the client reads a truncated JSON line and an unterminated chunked body,
        as when the server process or the network goes away mid-write."""
        await response.write(line[: max(1, len(line) // 2)])
        if request.transport is not None:
            request.transport.close()
        return response

    def _bookmark(self, rt: ResourceType, initial_end: bool = False) -> bytes:
        meta: dict[str, Any] = {"resourceVersion": self.cluster.resource_version}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return (
            _dumps(
                {
                    "type": "BOOKMARK",
                    "object": {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta},
                }
            ).encode()
            + b"\n"
        )

    def _encode_event(
        self,
        rt: ResourceType,
        item: tuple[str, dict[str, Any], Any],
        shape: str | None,
        request: web.Request,
    ) -> bytes:
        etype, obj, ev = item
        if etype == "INITIAL_END":
            return self._bookmark(rt, initial_end=True)
        if shape == "Table":
            view = _served(rt, obj)
            body = tables.table(
                rt,
                [view],
                include_object=request.query.get("includeObject"),
                resource_version=view["metadata"].get("resourceVersion", ""),
            )
            return _dumps({"type": etype, "object": body}).encode() + b"\n"
        if shape == "PartialObjectMetadata":
            return (
                _dumps({"type": etype, "object": tables.partial(_served(rt, obj))}).encode() + b"\n"
            )
        encoded = ev.encoded.get(rt.key) if ev is not None else None
        if encoded is None:
            encoded = _dumps(_served(rt, obj)).encode()
            if ev is not None:
                ev.encoded[rt.key] = encoded
        return b'{"type":"' + etype.encode() + b'","object":' + encoded + b"}\n"


USER = {"username": "localcluster-admin", "groups": ["system:masters", "system:authenticated"]}


def _review(rt: ResourceType, body: dict[str, Any]) -> dict[str, Any]:
    """Answer an access or identity review: there is no authorization here, so always yes."""
    out = {**body, "apiVersion": rt.api_version, "kind": rt.kind,
           "metadata": {**(body.get("metadata") or {}), "creationTimestamp": None}}
    if rt.kind == "SelfSubjectReview":
        out["status"] = {"userInfo": USER}
    elif rt.kind == "SelfSubjectRulesReview":
        out["status"] = {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                         "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}], "incomplete": False}
    else:
        out["status"] = {"allowed": True, "reason": "the local control plane does not enforce authorization"}
    return out


def _served(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    if rt.from_storage is not None:
        return rt.from_storage(obj)
    if rt.crd is not None and obj.get("apiVersion") != rt.api_version:
        return {**obj, "apiVersion": rt.api_version}
    return obj
