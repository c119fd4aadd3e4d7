"""The operator's own watches: LIST, then WATCH, children with a server-side label selector.

kopf filters by labels on the client side: it watches every ConfigMap, Service, Deployment,
autoscaler and PodDisruptionBudget of the cluster and drops the ones that are not tfleet's
after decoding them. In a cluster with thousands of other workloads that is most of the
operator's work and memory. These watches ask the API server for tfleet's children only
(`app.kubernetes.io/managed-by=tfleet`), watch the InferenceServices the same way, and
keep what kopf's watches gave the fleet:

- **An initial listing first.** A watch starts with a LIST (in pages), whose objects reach
  the cache before `synced` is set; the operator reconciles nothing before every watch is
  synced, so a first reconcile never mistakes a child not yet seen for a missing one.
- **Resume.** A WATCH starts from the resourceVersion of the LIST, or of the last event or
  bookmark seen, so a stream the server ends (its timeout) or a connection that breaks
  loses nothing: the next WATCH carries on from there.
- **410 Gone** (the version is older than the server's history, after a long outage or a
  compaction): a new LIST. Objects the watch had seen that the new list lacks were deleted
  meanwhile, and are reported as deleted.
- **Reconnects**: at once after one failure, then with exponential back-off (0.2 s to 10 s,
  a `Retry-After` honoured) while they fail in a row; an event or bookmark resets it.

The same cycle is what client-go's reflector does (`tools/cache/reflector.go`: ListAndWatch,
a relist on `410 Expired`, resuming from the last resourceVersion seen otherwise).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from tfleet.api.vocabulary import LABEL_ISVC, LABEL_MANAGED_BY, MANAGER
from tfleet.runtime.kube import KubeError, WatchStreamBroken

log = logging.getLogger(__name__)

Manifest = dict[str, Any]
# Called with (event type, object) for every object a watch delivers: ADDED, MODIFIED or
# DELETED from a WATCH, LISTED for the items of a LIST. It runs on the watch's thread.
Deliver = Callable[[str, Manifest], None]

SELECTOR = f"{LABEL_MANAGED_BY}={MANAGER}"
LISTED = "LISTED"
# Small pages: a page is decoded whole, and its size is the start-up listing's peak memory.
PAGE_SIZE = 100
# The server ends each WATCH after this long, with a bookmark; the next one resumes.
WATCH_TIMEOUT_SECONDS = 300
FIRST_RETRY_SECONDS = 0.2
MAX_RETRY_SECONDS = 10.0


class Stream(Protocol):
    def __iter__(self) -> Iterator[Manifest]: ...

    def close(self) -> None: ...


class WatchClient(Protocol):
    """What a watch needs of the API (`tfleet.runtime.kube.Kube` has it)."""

    def list_page(self, api_version: str, kind: str, namespace: str | None, label_selector: str | None,
                  limit: int, continue_token: str | None = None) -> tuple[list[Manifest], str, str | None]: ...

    def watch(self, api_version: str, kind: str, namespace: str | None, label_selector: str | None,
              resource_version: str, timeout_seconds: int) -> Stream: ...


class Gone(Exception):
    """The API server no longer has the history a WATCH or a LIST page asked for (410)."""


@dataclass(frozen=True)
class _Known:
    """What a watch remembers of each object it delivered: enough to report it deleted."""

    uid: str
    parent: str | None
    resource_version: str


class Watch:
    """One kind, in one namespace (None: all), on a thread of its own."""

    def __init__(self, client: WatchClient, api_version: str, kind: str, namespace: str | None,
                 deliver: Deliver, *, label_selector: str | None = SELECTOR, page_size: int = PAGE_SIZE,
                 timeout_seconds: int = WATCH_TIMEOUT_SECONDS, first_retry_seconds: float = FIRST_RETRY_SECONDS,
                 max_retry_seconds: float = MAX_RETRY_SECONDS):
        self.client = client
        self.api_version, self.kind, self.namespace = api_version, kind, namespace
        self.deliver = deliver
        self.label_selector = label_selector
        self.page_size = page_size
        self.timeout_seconds = timeout_seconds
        self.first_retry_seconds, self.max_retry_seconds = first_retry_seconds, max_retry_seconds
        self.synced = threading.Event()
        self.resource_version = ""
        self.listed = 0  # objects in the first listing
        self._known: dict[tuple[str, str], _Known] = {}
        self._stop = threading.Event()
        self._stream: Stream | None = None
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None
        self._delivered = False  # whether the current attempt saw an event or a bookmark
        # What happened, for tests and logs: lists, watches opened, relists after 410, breaks.
        self.counts = {"lists": 0, "watches": 0, "expired": 0, "broken": 0, "errors": 0}

    @property
    def name(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        return f"{self.kind}{where}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"{MANAGER}-watch-{self.kind.lower()}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._guard:
            stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def run(self) -> None:
        """List and watch until `stop`."""
        failures = 0  # in a row, without an event in between
        need_list = True
        while not self._stop.is_set():
            retry_after: float | None = None
            self._delivered = False
            try:
                if need_list:
                    self._list()
                    need_list = False
                self._watch_once()
                failures = 0 if self._delivered else failures + 1
            except Gone as exc:
                self.counts["expired"] += 1
                log.info("Listing %s again: %s", self.name, exc)
                need_list = True
                failures = 1 if self._delivered else failures + 1
            except WatchStreamBroken as exc:
                self.counts["broken"] += 1
                log.debug("The watch of %s broke, resuming from %s: %s", self.name, self.resource_version, exc)
                failures = 1 if self._delivered else failures + 1
            except KubeError as exc:
                self.counts["errors"] += 1
                failures = 1 if self._delivered else failures + 1
                retry_after = exc.retry_after
                if exc.code == 410:
                    # Gone as the answer to the WATCH itself (not as an event in it): the
                    # version is too old either way.
                    need_list = True
                if not self._stop.is_set():
                    log.warning("Failed to %s %s (attempt %d): %s", "list" if need_list else "watch", self.name,
                                failures, exc)
            except Exception:  # a bug, in the fleet or here: the watch must not die of it
                self.counts["errors"] += 1
                failures += 1
                # What was being delivered may be lost: a new LIST delivers everything again.
                need_list = True
                log.exception("Failed to follow %s (attempt %d); listing it again", self.name, failures)
            # The first failure is retried at once (a stream the server ended, a cut
            # connection); failures in a row back off.
            wait = 0.0 if failures <= 1 else min(self.max_retry_seconds, self.first_retry_seconds * 2 ** (failures - 2))
            if retry_after is not None:
                wait = max(wait, retry_after)
            if wait:
                self._stop.wait(wait)

    # ------------------------------------------------------------------ LIST

    def _list(self) -> None:
        """Every object, page by page, delivered as LISTED; then the ones gone since the
        last list, as DELETED."""
        self.counts["lists"] += 1
        seen: set[tuple[str, str]] = set()
        token: str | None = None
        while True:
            try:
                items, version, token = self.client.list_page(self.api_version, self.kind, self.namespace,
                                                              self.label_selector, self.page_size, token)
            except KubeError as exc:
                if exc.code == 410 and token:
                    # The continue token expired (the list took longer than the server keeps
                    # its snapshot): start the list again.
                    seen.clear()
                    token = None
                    continue
                raise
            for obj in items:
                seen.add(self._remember(obj))
                self.deliver(LISTED, obj)
            if token is None:
                break
        for key in [k for k in self._known if k not in seen]:
            self._forget(key, version)
        self.resource_version = version
        if not self.synced.is_set():
            self.listed = len(seen)
        self.synced.set()

    # ------------------------------------------------------------------ WATCH

    def _watch_once(self) -> None:
        """One WATCH, until the server ends it. Raises Gone on 410, WatchStreamBroken when the
        connection breaks."""
        stream = self.client.watch(self.api_version, self.kind, self.namespace, self.label_selector,
                                   self.resource_version, self.timeout_seconds)
        with self._guard:
            self._stream = stream
        if self._stop.is_set():
            stream.close()
        self.counts["watches"] += 1
        try:
            for event in stream:
                self._on_event(event)
                if self._stop.is_set():
                    break
        finally:
            with self._guard:
                self._stream = None

    def _on_event(self, event: Manifest) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone(obj.get("message") or "Expired")
            raise KubeError(int(obj.get("code") or 0), str(obj.get("reason") or ""), str(obj.get("message") or ""))
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        self._delivered = True
        if kind == "BOOKMARK":
            if version:
                self.resource_version = version
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return
        if kind == "DELETED":
            self._known.pop(_key(obj), None)
        else:
            self._remember(obj)
        self.deliver(str(kind), obj)
        # Only once delivered: a delivery that fails resumes from before this event.
        if version:
            self.resource_version = version

    # ------------------------------------------------------------------ bookkeeping

    def _remember(self, obj: Manifest) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        key = _key(obj)
        self._known[key] = _Known(str(meta.get("uid") or ""), (meta.get("labels") or {}).get(LABEL_ISVC),
                                  str(meta.get("resourceVersion") or ""))
        return key

    def _forget(self, key: tuple[str, str], version: str) -> None:
        """Report an object deleted that a relist no longer finds."""
        known = self._known.pop(key)
        labels = {LABEL_MANAGED_BY: MANAGER, **({LABEL_ISVC: known.parent} if known.parent else {})}
        self.deliver("DELETED", {"apiVersion": self.api_version, "kind": self.kind,
                                 "metadata": {"namespace": key[0], "name": key[1], "uid": known.uid,
                                              "labels": labels, "resourceVersion": version}})


def _key(obj: Manifest) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class Watches:
    """Watches started and stopped together."""

    def __init__(self, watches: Iterable[Watch]):
        self.watches = list(watches)

    def start(self) -> None:
        for watch in self.watches:
            watch.start()

    def stop(self) -> None:
        for watch in self.watches:
            watch._stop.set()
        for watch in self.watches:
            watch.stop()

    @property
    def synced(self) -> bool:
        """Whether every watch has delivered its first listing."""
        return all(w.synced.is_set() for w in self.watches)

    @property
    def listed(self) -> int:
        """Objects the watches' first listings held."""
        return sum(w.listed for w in self.watches)
