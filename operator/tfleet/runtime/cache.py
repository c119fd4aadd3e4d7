"""The operator's view of the fleet: the latest InferenceServices and children it has seen.

Watch events (`tfleet.runtime.watch`) and the responses of tfleet's own writes both feed it,
so a reconcile never re-reads the API and never acts on a view older than its own last write.
It also notes which InferenceServices a watch brought news for: the echo of tfleet's own
write is not news, and triggers nothing.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from tfleet.api.vocabulary import ACTIVE_PHASES, LABEL_ISVC, Phase
from tfleet.engine.observe import ChildKey, child_key, observe_revisions

Manifest = dict[str, Any]
Key = tuple[str, str]  # (namespace, name) of an InferenceService

# Event types from the watches (LISTED for what a LIST returned); the cache also takes the
# responses of tfleet's own writes, which are no news.
WATCHED = ("ADDED", "MODIFIED", "DELETED", "LISTED")


def resource_version(obj: Manifest) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


def slim(obj: Manifest) -> Manifest:
    """The object as the cache keeps it: managedFields can be most of an object's size, and
    nothing in tfleet reads them."""
    meta = obj.get("metadata") or {}
    if "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


# Strings up to this long are interned in what the cache keeps (see `compact`).
INTERNED_LENGTH = 64
_MISSING = object()


def _interned(value: Any) -> Any:
    kind = type(value)
    if kind is str:
        return sys.intern(value) if len(value) <= INTERNED_LENGTH else value
    if kind is dict:
        return {sys.intern(k): _interned(v) for k, v in value.items()}
    if kind is list:
        return [_interned(v) for v in value]
    return value


def compact(new: Any, old: Any = None, fresh: tuple[str, ...] = ()) -> Any:
    """`new` as the cache keeps it: every part equal to the same part of `old` (the version
    kept before) is that part of `old`, and the rest has its keys and short strings interned.
    The top-level keys in `fresh` are never taken from `old`.

    Each decoded object has its own copy of every key and value string: a Deployment of
    6 KB of JSON took 29 KB in the cache, most of it strings that every other Deployment
    repeats. Interned, a fleet's objects share them; shared with the version before, a
    status change costs the walk of what changed, not of the whole object. The cache's
    objects are never changed in place, so sharing is safe.

    "Equal" is Python's, for which 1 == 1.0 == True: a part whose only change is such a
    type would keep the version before's. Every field of the kinds tfleet watches has a
    schema type, which the API server holds each value to, except an InferenceService's
    schemaless `spec.pod.affinity`: the cache never shares an InferenceService's spec."""
    if type(new) is not dict or type(old) is not dict:
        return _interned(new)
    out = {}
    for k, v in new.items():
        before = old.get(k, _MISSING) if k not in fresh else _MISSING
        if before is not _MISSING and type(before) is type(v) and before == v:
            out[sys.intern(k)] = before
        else:
            out[sys.intern(k)] = compact(v, before) if type(v) is dict else _interned(v)
    return out


def is_newer(candidate: Manifest, current: Manifest | None) -> bool:
    # resourceVersions are opaque by contract, but every apiserver we target (etcd-backed and
    # the local one) issues increasing integers; a non-integer one is always taken.
    return current is None or resource_version(candidate) == 0 or resource_version(candidate) >= resource_version(current)


def _is_news(event_type: str | None, body: Manifest, current: Manifest | None) -> bool:
    return event_type in WATCHED and resource_version(body) != resource_version(current or {"metadata": {}})


_UNREAD_METADATA = ("resourceVersion", "managedFields")


def _as_read(obj: Manifest) -> tuple[Manifest, Manifest]:
    """A child as a reconcile reads it, its status aside: metadata and spec (or data)."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _UNREAD_METADATA}
    return meta, {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def child_matters(new: Manifest, old: Manifest | None) -> bool:
    """Whether a child's new version can change what a reconcile does: anything but its
    status, and of a Deployment's status what the rollout engine and the status read
    (`observe_revisions`). The status that a PodDisruptionBudget's or an autoscaler's
    controller keeps writing, or a Deployment's conditions' timestamps, change nothing."""
    if old is None or _as_read(new) != _as_read(old):
        return True
    if new.get("kind") == "Deployment":
        return observe_revisions([new], []) != observe_revisions([old], [])
    return False


class FleetCache:
    """Thread-safe. Keys are (namespace, name) of InferenceServices; children are filed under
    their parent by the `tfleet.dev/inferenceservice` label."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._guard = threading.Lock()
        self._isvcs: dict[Key, Manifest] = {}
        self._children: dict[Key, dict[ChildKey, Manifest]] = {}
        self._news: set[Key] = set()
        # Rollout phases by key, for pacing: which rollouts run, which wait (and since when).
        self._active: set[Key] = set()
        self._queued: dict[Key, str] = {}
        # When each InferenceService's Deployments last changed as the engine sees them
        # (`observe_revisions`), on the caller's monotonic clock: how long pods stood still.
        self._moved: dict[Key, float] = {}

    def _note_rollout(self, key: Key, body: Manifest | None) -> None:
        rollout = ((body or {}).get("status") or {}).get("rollout") or {}
        phase = rollout.get("phase")
        if phase in ACTIVE_PHASES:
            self._active.add(key)
        else:
            self._active.discard(key)
        if phase == Phase.QUEUED:
            self._queued[key] = str(rollout.get("queuedAt") or "")
        else:
            self._queued.pop(key, None)

    def rollouts(self) -> tuple[set[Key], dict[Key, str]]:
        """(InferenceServices whose rollout runs, queued ones with when they were queued)."""
        with self._guard:
            return set(self._active), dict(self._queued)

    def observe_isvc(self, event_type: str | None, body: Manifest) -> Key:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        # Outside the lock: a version read meanwhile only shares less (see `compact`).
        kept: Manifest = {} if event_type == "DELETED" else compact(slim(body), self._isvcs.get(key), fresh=("spec",))
        with self._guard:
            if event_type == "DELETED":
                self._isvcs.pop(key, None)
                self._children.pop(key, None)
                self._moved.pop(key, None)
                self._news.discard(key)
                self._note_rollout(key, None)
            elif is_newer(body, self._isvcs.get(key)):
                if _is_news(event_type, body, self._isvcs.get(key)):
                    self._news.add(key)
                self._isvcs[key] = kept
                self._note_rollout(key, body)
        return key

    def observe_child(self, event_type: str | None, body: Manifest) -> Key | None:
        meta = body["metadata"]
        parent = (meta.get("labels") or {}).get(LABEL_ISVC)
        if not parent:
            return None
        key = (meta["namespace"], parent)
        child = child_key(body)
        kept: Manifest = {}
        if event_type not in ("DELETED", "REMOVED"):
            kept = compact(slim(body), self._children.get(key, {}).get(child))
        with self._guard:
            children = self._children.setdefault(key, {})
            if event_type in ("DELETED", "REMOVED"):
                if children.get(child, {}).get("metadata", {}).get("uid") == meta.get("uid"):
                    children.pop(child, None)
                    if event_type == "DELETED":
                        self._news.add(key)
            elif is_newer(body, children.get(child)):
                current = children.get(child)
                matters = child_matters(body, current)
                if matters and body.get("kind") == "Deployment":
                    self._moved[key] = self._monotonic()
                if matters and _is_news(event_type, body, current):
                    self._news.add(key)
                children[child] = kept
        return key

    def still_for(self, key: Key, now: float) -> float:
        """Seconds since the InferenceService's Deployments last changed (in what the engine
        reads of them); infinite when none was ever seen."""
        with self._guard:
            moved = self._moved.get(key)
        return float("inf") if moved is None else max(0.0, now - moved)

    def take_news(self, key: Key) -> bool:
        """Whether a watch brought news for `key` since the last call."""
        with self._guard:
            if key in self._news:
                self._news.discard(key)
                return True
            return False

    def isvc_keys(self) -> list[Key]:
        """Every InferenceService the cache holds."""
        with self._guard:
            return list(self._isvcs)

    def knows(self, key: Key) -> bool:
        with self._guard:
            return key in self._isvcs

    def snapshot(self, key: Key) -> tuple[Manifest | None, dict[ChildKey, Manifest]]:
        with self._guard:
            return self._isvcs.get(key), dict(self._children.get(key, {}))
