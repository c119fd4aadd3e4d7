"""The one module that talks to the Kubernetes API: its requests, and its watches' streams.

Children are written with server-side apply under the field manager "tfleet": one request
creates or updates, tfleet owns exactly the fields it sets, and fields that other actors
own (an autoscaler's replicas, another tool's annotations) are left alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Protocol
from urllib.parse import urlencode

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from tfleet.api.kubemeta import event_name
from tfleet.api.times import format_time, utc_now
from tfleet.api.vocabulary import (
    ANNOTATION_EVENT_REPORT,
    API_VERSION,
    CLUSTER_EVENTS_NAMESPACE,
    DEFAULTS_KIND,
    DEFAULTS_PLURAL,
    KIND,
    MANAGER,
    PLURAL,
)

log = logging.getLogger(__name__)

Manifest = dict[str, Any]

# (apiVersion, kind) -> plural. Only kinds tfleet writes.
PLURALS = {
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Service"): "services",
    ("v1", "Event"): "events",
    ("v1", "Secret"): "secrets",
    ("apps/v1", "Deployment"): "deployments",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("coordination.k8s.io/v1", "Lease"): "leases",
    (API_VERSION, KIND): PLURAL,
    (API_VERSION, DEFAULTS_KIND): DEFAULTS_PLURAL,
}

# The children tfleet watches (and writes): the operator's watches use this list.
CHILD_KINDS = (
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
)

# Called with (verb, kind) for every write (the metrics count them). It must be quick and
# must not raise: it runs on the writing thread.
WriteObserver = Callable[[str, str], None]


class KubeClient(Protocol):
    """The API calls a reconcile makes. `Kube` implements it against a real API server; tests
    implement it with a recorder."""

    def list_pods(self, namespace: str, label_selector: str) -> list[Manifest]: ...

    def apply(self, manifest: Manifest) -> Manifest: ...

    def scale(self, deployment: Manifest, replicas: int) -> Manifest: ...

    def delete(self, manifest: Manifest) -> None: ...

    def patch_status(self, namespace: str, name: str, status: dict[str, Any],
                     resource_version: str | None = None) -> Manifest: ...

    def get_isvc(self, namespace: str, name: str) -> Manifest: ...

    def post_event(self, regarding: Manifest, type_: str, reason: str, message: str) -> None: ...

    def annotate_isvc(self, namespace: str, name: str, annotations: dict[str, str | None],
                      resource_version: str | None = None) -> Manifest: ...


class KubeError(Exception):
    """An API request failed. `code` is the HTTP status (0 when the server was unreachable)."""

    def __init__(self, code: int, reason: str, message: str, retry_after: float | None = None):
        self.code, self.reason, self.message = code, reason, message
        self.retry_after = retry_after  # seconds the server asked for (429, 503), if it did
        super().__init__(f"{code} {reason}: {message}")

    @property
    def retryable(self) -> bool:
        # Conflicts, throttling, server errors and network failures pass with time;
        # a 4xx such as Invalid or Forbidden needs a human.
        return self.code in (0, 409, 429) or self.code >= 500


CONNECTION_POOL_SIZE = 96
# A failed Event post is tried again this many times in all, waiting at most this long between.
EVENT_ATTEMPTS = 3
EVENT_RETRY_CAP_SECONDS = 1.0


def retry_after_seconds(headers: Any) -> float | None:
    """A `Retry-After` header in seconds (the API server sends whole seconds), or None."""
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def load_config(kubeconfig: str | None = None) -> client.ApiClient:
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
    else:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    # One connection per thread that may call the API at once (reconcile workers, write
    # threads, the defaults and the leader election): a smaller pool reopens connections
    # under load.
    configuration.connection_pool_maxsize = CONNECTION_POOL_SIZE
    return client.ApiClient(configuration)


def resource_path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    plural = PLURALS[(api_version, kind)]
    prefix = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = prefix + (f"/namespaces/{namespace}" if namespace else "") + f"/{plural}"
    return path + (f"/{name}" if name else "")


WATCH_CONNECT_TIMEOUT_SECONDS = 10.0
WATCH_READ_GRACE_SECONDS = 30.0


class WatchStreamBroken(Exception):
    """A watch stream that ended other than cleanly: a cut connection, a truncated line."""


class WatchStream:
    """The events of one watch response, decoded line by line as they arrive.

    Iterating ends when the server ends the stream cleanly; a broken one raises
    `WatchStreamBroken`. `close` may be called from another thread: it interrupts a read
    that is waiting for the next event.
    """

    def __init__(self, response: Any):
        self._response = response

    def __iter__(self) -> Iterator[Manifest]:
        pending = b""
        try:
            for chunk in self._response.stream(2**16):
                if b"\n" not in chunk:
                    pending += chunk
                    continue
                *lines, rest = (pending + chunk).split(b"\n")
                pending = rest
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        except (OSError, ValueError, HTTPError) as exc:
            raise WatchStreamBroken(str(exc) or type(exc).__name__) from exc
        finally:
            self._response.release_conn()
        if pending.strip():
            # The stream ended inside an event line: the rest of it never came.
            raise WatchStreamBroken("the stream ended inside an event")

    def close(self) -> None:
        # Already closed, or never connected: nothing to interrupt.
        with contextlib.suppress(Exception):
            self._response.shutdown()


def _refusal(code: int, data: bytes, headers: Any) -> KubeError:
    """The API server's answer of `code` >= 400 as a KubeError. Not every refusal is a Status
    object: the API server's priority-and-fairness filter answers 429 with a line of plain text."""
    try:
        payload = json.loads(data) if data else {}
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    return KubeError(code, payload.get("reason", ""), payload.get("message") or data.decode(errors="replace").strip(),
                     retry_after_seconds(headers or {}))


class Kube:
    """Typed-enough access to the few API calls tfleet makes. Thread-safe."""

    def __init__(self, api_client: client.ApiClient, on_write: WriteObserver | None = None):
        self.api = api_client
        self.on_write = on_write
        self._lock = threading.Lock()
        self.writes: Counter[tuple[str, str]] = Counter()

    def _request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                 query: dict[str, str] | None = None) -> Manifest:
        url = self.api.configuration.host + path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": "application/json", "Content-Type": content_type,
                   "User-Agent": f"{MANAGER}/operator"}
        self.api.update_params_for_auth(headers, [], ["BearerToken"], path, method, body)
        try:
            response = self.api.call_api(method, url, header_params=headers,
                                         # The client serialises dicts as JSON, which is also
                                         # valid YAML for server-side apply.
                                         body=body,
                                         _request_timeout=30)
        except ApiException as exc:
            raise KubeError(exc.status or 0, exc.reason or "", str(exc.body or exc),
                            retry_after_seconds(exc.headers or {})) from exc
        except Exception as exc:  # urllib3 connection errors
            raise KubeError(0, "Unreachable", str(exc)) from exc
        data = response.read()
        if response.status >= 400:
            raise _refusal(response.status, data, response.headers)
        try:
            payload = json.loads(data) if data else {}
        except ValueError as exc:
            raise KubeError(response.status, "InvalidResponse", f"the API server sent no JSON: {exc}") from exc
        return payload  # type: ignore[no-any-return]

    def _open(self, method: str, path: str, query: dict[str, str], timeout: float | tuple[float, float]) -> Any:
        """A request whose response is read as it arrives (a watch): the urllib3 response."""
        url = self.api.configuration.host + path + "?" + urlencode(query)
        headers = {"Accept": "application/json", "User-Agent": f"{MANAGER}/operator"}
        self.api.update_params_for_auth(headers, [], ["BearerToken"], path, method, None)
        try:
            response = self.api.call_api(method, url, header_params=headers, _request_timeout=timeout).response
        except ApiException as exc:
            raise KubeError(exc.status or 0, exc.reason or "", str(exc.body or exc),
                            retry_after_seconds(exc.headers or {})) from exc
        except Exception as exc:  # urllib3 connection errors
            raise KubeError(0, "Unreachable", str(exc)) from exc
        if response.status >= 400:
            data = response.data
            response.release_conn()
            raise _refusal(response.status, data, response.headers)
        return response

    def list_page(self, api_version: str, kind: str, namespace: str | None, label_selector: str | None,
                  limit: int, continue_token: str | None = None) -> tuple[list[Manifest], str, str | None]:
        """One page of a LIST: (items with their kind set, the list's resourceVersion, the
        continue token of the next page or None)."""
        query = {"limit": str(limit)}
        if label_selector:
            query["labelSelector"] = label_selector
        if continue_token:
            query["continue"] = continue_token
        payload = self._request("GET", resource_path(api_version, kind, namespace), query=query)
        meta = payload.get("metadata") or {}
        items = [{**item, "apiVersion": api_version, "kind": kind} for item in payload.get("items") or []]
        return items, str(meta.get("resourceVersion") or ""), meta.get("continue") or None

    def watch(self, api_version: str, kind: str, namespace: str | None, label_selector: str | None,
              resource_version: str, timeout_seconds: int) -> WatchStream:
        """A watch from `resource_version`, with bookmarks, that the server ends after
        `timeout_seconds`."""
        query = {"watch": "true", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                 "timeoutSeconds": str(timeout_seconds)}
        if label_selector:
            query["labelSelector"] = label_selector
        # The read timeout outlasts the server's own end of the stream (and its bookmarks).
        response = self._open("GET", resource_path(api_version, kind, namespace), query,
                              (WATCH_CONNECT_TIMEOUT_SECONDS, timeout_seconds + WATCH_READ_GRACE_SECONDS))
        return WatchStream(response)

    def _count(self, verb: str, kind: str) -> None:
        with self._lock:
            self.writes[(verb, kind)] += 1
        if self.on_write is not None:
            self.on_write(verb, kind)

    def apply(self, manifest: Manifest) -> Manifest:
        """Create or update a child with server-side apply, forcing tfleet's ownership."""
        meta = manifest["metadata"]
        path = resource_path(manifest["apiVersion"], manifest["kind"], meta.get("namespace"), meta["name"])
        self._count("apply", manifest["kind"])
        return self._request("PATCH", path, manifest, "application/apply-patch+yaml",
                             {"fieldManager": MANAGER, "force": "true"})

    def delete(self, manifest: Manifest) -> None:
        meta = manifest["metadata"]
        path = resource_path(manifest["apiVersion"], manifest["kind"], meta.get("namespace"), meta["name"])
        self._count("delete", manifest["kind"])
        try:
            self._request("DELETE", path, {"propagationPolicy": "Background"})
        except KubeError as exc:
            if exc.code != 404:
                raise

    def scale(self, deployment: Manifest, replicas: int) -> Manifest:
        """Resize a Deployment of an earlier revision, whose template tfleet no longer builds
        (applying only `replicas` would drop the fields tfleet owns from the last apply)."""
        meta = deployment["metadata"]
        path = resource_path("apps/v1", "Deployment", meta["namespace"], meta["name"])
        self._count("patch", "Deployment")
        return self._request("PATCH", path, {"spec": {"replicas": replicas}}, "application/merge-patch+json",
                             {"fieldManager": MANAGER})

    def patch_status(self, namespace: str, name: str, status: dict[str, Any],
                     resource_version: str | None = None) -> Manifest:
        """Replace the InferenceService's status in one patch on the status subresource.

        A JSON patch `add` replaces the whole status: a merge patch would keep every field the
        new status leaves out (a finished rollout's canaryRevision, say), and the next
        reconcile would act on it again. With `resource_version`, the patch sets it too, which
        makes it a precondition: the API server answers 409 when the object changed since
        that version, so a status computed from a stale view is never written.
        """
        path = resource_path(API_VERSION, KIND, namespace, name) + "/status"
        self._count("patch", f"{KIND}/status")
        ops: list[dict[str, Any]] = []
        if resource_version:
            ops.append({"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version})
        ops.append({"op": "add", "path": "/status", "value": status})
        return self._request("PATCH", path, ops, "application/json-patch+json")

    def get_isvc(self, namespace: str, name: str) -> Manifest:
        return self._request("GET", resource_path(API_VERSION, KIND, namespace, name))

    def get_defaults(self, name: str) -> Manifest:
        """The (cluster-scoped) InferenceServiceDefaults named `name`."""
        return self._request("GET", resource_path(API_VERSION, DEFAULTS_KIND, None, name))

    def patch_defaults_status(self, name: str, status: dict[str, Any], resource_version: str | None) -> Manifest:
        """Replace the (cluster-scoped) InferenceServiceDefaults' status, as `patch_status` does:
        with `resource_version` as a precondition (409 when the object changed since)."""
        path = resource_path(API_VERSION, DEFAULTS_KIND, None, name) + "/status"
        self._count("patch", f"{DEFAULTS_KIND}/status")
        ops: list[dict[str, Any]] = []
        if resource_version:
            ops.append({"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version})
        ops.append({"op": "add", "path": "/status", "value": status})
        return self._request("PATCH", path, ops, "application/json-patch+json")

    def annotate_isvc(self, namespace: str, name: str, annotations: dict[str, str | None],
                      resource_version: str | None = None) -> Manifest:
        """Set (or, with None, remove) annotations on an InferenceService; with
        `resource_version`, only if nobody wrote the object since (409 otherwise)."""
        path = resource_path(API_VERSION, KIND, namespace, name)
        self._count("patch", KIND)
        metadata: dict[str, Any] = {"annotations": annotations}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        return self._request("PATCH", path, {"metadata": metadata}, "application/merge-patch+json")

    def replace_isvc_spec(self, namespace: str, name: str, spec: dict[str, Any], resource_version: str) -> Manifest:
        """Replace the InferenceService's spec, only if nobody wrote it since `resource_version`
        (a JSON patch `test` makes the API server answer 422 otherwise)."""
        path = resource_path(API_VERSION, KIND, namespace, name)
        self._count("patch", KIND)
        ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
               {"op": "replace", "path": "/spec", "value": spec}]
        return self._request("PATCH", path, ops, "application/json-patch+json")

    def get_deployment(self, namespace: str, name: str) -> Manifest:
        return self._request("GET", resource_path("apps/v1", "Deployment", namespace, name))

    def list_pods(self, namespace: str, label_selector: str) -> list[Manifest]:
        path = f"/api/v1/namespaces/{namespace}/pods"
        return list(self._request("GET", path, query={"labelSelector": label_selector}).get("items") or [])

    def list_deployments(self, namespace: str, label_selector: str) -> list[Manifest]:
        path = resource_path("apps/v1", "Deployment", namespace)
        return list(self._request("GET", path, query={"labelSelector": label_selector}).get("items") or [])

    def post_event(self, regarding: Manifest, type_: str, reason: str, message: str) -> None:
        """Record a core/v1 Event about the InferenceService (or another tfleet object: the
        InferenceServiceDefaults, whose Events are in the default namespace, as the API server
        requires of a cluster-scoped object's), as `kubectl describe` shows it.

        One transition is one Event: its name comes from the object's uid and generation and
        the Event's type, reason and message, so reporting the same transition again (after a
        status write that recorded it was lost, or a restart) counts it on the same Event, as
        kubectl shows ("x2 over 10s"), instead of adding one. A retried write whose first
        response was lost finds its own report id on the Event and counts nothing twice.

        Raises the last KubeError when the API server still fails (5xx, 429, unreachable) after
        EVENT_ATTEMPTS; an Event refused for good (403, 422) is logged and dropped.
        """
        meta = regarding["metadata"]
        now = format_time(utc_now())
        report = uuid.uuid4().hex
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": event_name(regarding, type_, reason, message),
                         "namespace": meta.get("namespace") or CLUSTER_EVENTS_NAMESPACE,
                         "annotations": {ANNOTATION_EVENT_REPORT: report}},
            "involvedObject": {
                "apiVersion": regarding.get("apiVersion") or API_VERSION,
                "kind": regarding.get("kind") or KIND,
                "name": meta["name"],
                "namespace": meta.get("namespace") or "",
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": MANAGER},
            "reportingComponent": MANAGER,
            "reportingInstance": MANAGER,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        for attempt in range(1, EVENT_ATTEMPTS + 1):
            try:
                self._record_event(event, report, now)
                return
            except KubeError as exc:
                # A 404 while counting: the Event expired meanwhile, and the next attempt creates it.
                passing = exc.retryable or exc.code == 404
                if not passing or attempt == EVENT_ATTEMPTS:
                    log.warning("Failed to post Event %s for %s/%s after %d attempt(s): %s", reason,
                                meta.get("namespace") or "", meta["name"], attempt, exc)
                    if passing:
                        # The caller decides: a transition's Event must land before the status
                        # that records the transition (see Executor.post).
                        raise
                    return  # refused for good (Forbidden, Invalid): retrying changes nothing
                # A short, bounded wait: it holds this reconcile's thread.
                time.sleep(min(EVENT_RETRY_CAP_SECONDS, exc.retry_after or 0.1 * 2 ** attempt))

    def _record_event(self, event: Manifest, report: str, now: str) -> None:
        """Create the Event, or count one more report on it when it exists."""
        namespace, name = event["metadata"]["namespace"], event["metadata"]["name"]
        self._count("create", "Event")
        try:
            self._request("POST", resource_path("v1", "Event", namespace), event)
            return
        except KubeError as exc:
            if exc.code != 409:
                raise
        path = resource_path("v1", "Event", namespace, name)
        existing = self._request("GET", path)
        existing_meta = existing.get("metadata") or {}
        if (existing_meta.get("annotations") or {}).get(ANNOTATION_EVENT_REPORT) == report:
            return  # an earlier attempt of this report was written; only its response was lost
        self._count("patch", "Event")
        # The resourceVersion makes the count a compare-and-swap: two reports never both write n+1.
        self._request("PATCH", path, {
            "metadata": {"resourceVersion": existing_meta.get("resourceVersion"),
                         "annotations": {ANNOTATION_EVENT_REPORT: report}},
            "count": int(existing.get("count") or 1) + 1,
            "lastTimestamp": now,
        }, "application/merge-patch+json")

    # ------------------------------------------------------------------ leader election

    def get_lease(self, namespace: str, name: str) -> Manifest | None:
        """The coordination.k8s.io/v1 Lease, or None when there is none."""
        try:
            return self._request("GET", resource_path("coordination.k8s.io/v1", "Lease", namespace, name))
        except KubeError as exc:
            if exc.code == 404:
                return None
            raise

    def create_lease(self, lease: Manifest) -> Manifest:
        """Create a Lease; 409 (AlreadyExists) when another candidate created it first."""
        self._count("create", "Lease")
        return self._request("POST", resource_path("coordination.k8s.io/v1", "Lease", lease["metadata"]["namespace"]), lease)

    def update_lease(self, lease: Manifest) -> Manifest:
        """Replace a Lease. Its metadata.resourceVersion makes this a compare-and-swap: 409
        when another candidate wrote it since it was read."""
        meta = lease["metadata"]
        self._count("update", "Lease")
        return self._request("PUT", resource_path("coordination.k8s.io/v1", "Lease", meta["namespace"], meta["name"]), lease)

    # ------------------------------------------------------------------ the drain key

    def get_secret(self, namespace: str, name: str) -> Manifest | None:
        """A Secret, or None when there is none."""
        try:
            return self._request("GET", resource_path("v1", "Secret", namespace, name))
        except KubeError as exc:
            if exc.code == 404:
                return None
            raise

    def create_secret(self, secret: Manifest) -> Manifest:
        """Create a Secret; 409 (AlreadyExists) when it exists already. Never replaces one."""
        self._count("create", "Secret")
        return self._request("POST", resource_path("v1", "Secret", secret["metadata"]["namespace"]), secret)
