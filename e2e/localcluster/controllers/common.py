"""Building blocks shared by the simulated controllers.

Everything here is either a pure helper (quantities, selectors, timestamps, owner
references) or one of the two pieces of machinery every controller uses:

- ``Informer``: one watch per resource, an in-memory cache with secondary indexes, and
  fan-out to handlers. Controllers read the cache instead of listing, so the work done
  for an event is proportional to the objects it touched, not to the size of the store.
- ``WorkQueue`` and ``run_worker``: a de-duplicating queue of keys and a loop that
  reconciles one key at a time, logs failures and retries them with back-off, and never
  dies because one object could not be handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any, Protocol

log = logging.getLogger("localcluster.controllers")

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)


# --------------------------------------------------------------------------- time


def now_utc() -> datetime:
    return datetime.now(UTC)


def fmt_time(t: datetime) -> str:
    """RFC 3339 at second precision, as the API server serialises metav1.Time."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    text = value.replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds from '3s', '500ms', '2m', '1h' or a bare number of seconds."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"invalid duration {text!r}: expected e.g. 3s, 500ms, 2m")
    value = float(m.group(1))
    unit = m.group(2) or "s"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


# ---------------------------------------------------------------------- quantities

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}
_QUANTITY = re.compile(
    r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$"
)


def parse_quantity(value: Any) -> Fraction:
    """Exact value of a Kubernetes resource.Quantity ('500m', '32Gi', '1e3', 4)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid quantity {value!r}")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(str(value))
    m = _QUANTITY.match(str(value).strip())
    if not m:
        raise ValueError(f"invalid quantity {value!r}")
    number = Fraction(m.group(1))
    if m.group(2):
        return number * Fraction(10) ** int(m.group(2)[1:])
    suffix = m.group(3) or ""
    return number * (_BINARY[suffix] if suffix in _BINARY else _DECIMAL[suffix])


def format_quantity(value: Fraction) -> str:
    """A short canonical spelling, used in messages only."""
    if value.denominator == 1:
        return str(value.numerator)
    milli = value * 1000
    if milli.denominator == 1:
        return f"{milli.numerator}m"
    return str(float(value))


# ----------------------------------------------------------------------- selectors


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def match_labels(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    """An equality-based selector (Service.spec.selector, nodeSelector)."""
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def match_requirement(req: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """One LabelSelectorRequirement or NodeSelectorRequirement."""
    key, op, values = req.get("key", ""), req.get("operator", ""), req.get("values") or []
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        # Node selectors only: both sides must parse as integers, otherwise no match.
        if not present or len(values) != 1:
            return False
        try:
            have, want = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def match_selector(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector. An empty selector matches everything, a null one nothing."""
    if selector is None:
        return False
    if not match_labels(selector.get("matchLabels"), labels):
        return False
    return all(match_requirement(r, labels) for r in selector.get("matchExpressions") or [])


def selector_string(selector: Mapping[str, Any] | None) -> str:
    """The label-selector string form (as in a scale subresource's status.selector)."""
    parts = [f"{k}={v}" for k, v in sorted(((selector or {}).get("matchLabels") or {}).items())]
    for req in (selector or {}).get("matchExpressions") or []:
        key, op, values = req.get("key"), req.get("operator"), req.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(sorted(values))})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(sorted(values))})")
        elif op == "Exists":
            parts.append(f"{key}")
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


# -------------------------------------------------------------------------- objects


def meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def key_of(obj: Mapping[str, Any]) -> Key:
    m = meta(obj)
    return (m.get("namespace") or "", m.get("name") or "")


def uid_of(obj: Mapping[str, Any]) -> str:
    return meta(obj).get("uid") or ""


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    for ref in meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid") or "") or None
    return None


def owner_reference(owner: Mapping[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": meta(owner)["name"],
        "uid": meta(owner)["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def resource_version(obj: Mapping[str, Any]) -> int | None:
    try:
        return int(meta(obj).get("resourceVersion") or "")
    except ValueError:
        return None


def is_terminating(obj: Mapping[str, Any]) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def error_code(exc: BaseException) -> int | None:
    """The HTTP code of an ApiError from the store, duck-typed so this package does not
    depend on where the server keeps its error type."""
    code = getattr(exc, "code", None)
    if code is None:
        code = getattr(exc, "status", None)
    return code if isinstance(code, int) else None


# ------------------------------------------------------------------------- informer

Handler = Callable[[str, Obj | None, Obj | None], None]
IndexFunc = Callable[[Obj], Iterable[Hashable]]


class Informer:
    """A watch-fed cache of one resource, shared by every controller that reads it.

    Cached objects are treated as immutable: controllers copy before they change
    anything. Writers call ``observe`` with what the API returned, so their next
    decision sees their own write even before its watch event arrives; the event that
    follows carries the same resourceVersion and is then dropped as a duplicate.
    """

    def __init__(
        self, cluster: Any, resource: str, indexers: Mapping[str, IndexFunc] | None = None
    ):
        self.cluster = cluster
        self.resource = resource
        self.objects: dict[Key, Obj] = {}
        self.synced = asyncio.Event()
        self._handlers: list[Handler] = []
        self._indexers = dict(indexers or {})
        self._index: dict[str, dict[Hashable, set[Key]]] = {n: {} for n in self._indexers}
        self._values: dict[Key, dict[str, list[Hashable]]] = {}
        # uids confirmed deleted: stale events still queued for them must not revive them
        self._tombstones: OrderedDict[str, None] = OrderedDict()

    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def get(self, namespace: str | None, name: str) -> Obj | None:
        return self.objects.get((namespace or "", name))

    def by_index(self, index: str, value: Hashable) -> list[Obj]:
        keys = self._index[index].get(value) or ()
        return [self.objects[k] for k in keys if k in self.objects]

    def keys_by_index(self, index: str, value: Hashable) -> set[Key]:
        return self._index[index].get(value) or set()

    def all(self) -> list[Obj]:
        return list(self.objects.values())

    async def run(self) -> None:
        queue = self.cluster.subscribe(self.resource)
        try:
            for obj in await self.cluster.list(self.resource):
                self._apply("ADDED", obj)
            self.synced.set()
            while True:
                event_type, obj = await queue.get()
                try:
                    self._apply(event_type, obj)
                except Exception:
                    log.exception(
                        "Failed to handle %s event for %s %s",
                        event_type,
                        self.resource,
                        key_of(obj),
                    )
        finally:
            with contextlib.suppress(Exception):
                self.cluster.unsubscribe(self.resource, queue)

    def observe(self, obj: Obj | None) -> None:
        """Record an object returned by one of our own writes."""
        if obj:
            self._apply("MODIFIED", obj)

    def observe_deleted(self, obj: Obj) -> None:
        """Record that a delete we issued removed the object for good."""
        self._apply("DELETED", obj, tombstone=True)

    def _apply(self, event_type: str, obj: Obj, tombstone: bool = False) -> None:
        key = key_of(obj)
        uid = uid_of(obj)
        old = self.objects.get(key)
        if event_type == "DELETED":
            if old is None or (uid and uid_of(old) and uid_of(old) != uid):
                if not tombstone:
                    self._tombstones.pop(uid, None)
                return
            del self.objects[key]
            self._unindex(key)
            if tombstone and uid:
                self._tombstones[uid] = None
                while len(self._tombstones) > 20000:
                    self._tombstones.popitem(last=False)
            elif uid:
                self._tombstones.pop(uid, None)
            self._notify("DELETED", old, None)
            return
        if uid in self._tombstones:
            return
        if old is not None and uid_of(old) == uid:
            old_rv, new_rv = resource_version(old), resource_version(obj)
            if old_rv is not None and new_rv is not None and new_rv <= old_rv:
                return
        self.objects[key] = obj
        self._unindex(key)
        self._reindex(key, obj)
        self._notify("ADDED" if old is None else "MODIFIED", old, obj)

    def _unindex(self, key: Key) -> None:
        for name, values in self._values.pop(key, {}).items():
            bucket = self._index[name]
            for v in values:
                keys = bucket.get(v)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del bucket[v]

    def _reindex(self, key: Key, obj: Obj) -> None:
        record: dict[str, list[Hashable]] = {}
        for name, fn in self._indexers.items():
            values = list(fn(obj))
            record[name] = values
            bucket = self._index[name]
            for v in values:
                bucket.setdefault(v, set()).add(key)
        self._values[key] = record

    def _notify(self, event_type: str, old: Obj | None, new: Obj | None) -> None:
        for handler in self._handlers:
            try:
                handler(event_type, old, new)
            except Exception:
                log.exception("Failed to dispatch %s event of %s", event_type, self.resource)


def index_by_namespace(obj: Obj) -> list[Hashable]:
    return [meta(obj).get("namespace") or ""]


def index_by_controller(obj: Obj) -> list[Hashable]:
    uid = controller_uid(obj)
    return [uid] if uid else []


def index_by_label(obj: Obj) -> list[Hashable]:
    ns = meta(obj).get("namespace") or ""
    return [(ns, k, v) for k, v in labels_of(obj).items()]


def select_by_labels(informer: Informer, namespace: str, selector: Mapping[str, str]) -> list[Obj]:
    """Objects of a namespace whose labels contain every pair of an equality selector,
    found through the label index (smallest posting list first)."""
    if not selector:
        return informer.by_index("namespace", namespace)
    postings = sorted(
        (informer.keys_by_index("label", (namespace, k, v)) for k, v in selector.items()), key=len
    )
    if not postings[0]:
        return []
    keys = set(postings[0]).intersection(*postings[1:])
    return [informer.objects[k] for k in sorted(keys) if k in informer.objects]


def selector_subsets(
    labels: Mapping[str, str], sizes: set[int], limit: int = 4096
) -> list[frozenset[tuple[str, str]]] | None:
    """Every subset of the label pairs with one of the given sizes: the selectors that
    could match these labels. None when there would be too many to enumerate."""
    items = sorted(labels.items())
    out: list[frozenset[tuple[str, str]]] = []
    for size in sorted(sizes):
        if size > len(items):
            continue
        for combo in itertools.combinations(items, size):
            out.append(frozenset(combo))
            if len(out) > limit:
                return None
    return out


class SelectorIndex:
    """Which objects (Services, PodDisruptionBudgets) select a pod with given labels,
    without testing every selector of the namespace: equality selectors are found by
    enumerating the subsets of the pod's labels of the sizes in use; selectors with
    expressions are few and are tested one by one."""

    def __init__(self) -> None:
        # namespace -> selector size -> selector -> keys
        self._plain: dict[str, dict[int, dict[frozenset[tuple[str, str]], set[Key]]]] = {}
        self._complex: dict[str, dict[Key, Mapping[str, Any]]] = {}
        self._of: dict[Key, frozenset[tuple[str, str]] | Mapping[str, Any]] = {}

    def __contains__(self, key: Key) -> bool:
        return key in self._of

    def put(self, key: Key, selector: Mapping[str, Any] | None) -> None:
        """Index ``key`` under a selector: an equality map (a Service's), a LabelSelector,
        or None to forget it."""
        self._remove(key)
        if selector is None:
            return
        ns = key[0]
        if "matchLabels" in selector or "matchExpressions" in selector:
            if selector.get("matchExpressions"):
                self._complex.setdefault(ns, {})[key] = selector
                self._of[key] = selector
                return
            selector = selector.get("matchLabels") or {}
        plain = frozenset((str(k), str(v)) for k, v in selector.items())
        self._of[key] = plain
        self._plain.setdefault(ns, {}).setdefault(len(plain), {}).setdefault(plain, set()).add(key)

    def _remove(self, key: Key) -> None:
        old = self._of.pop(key, None)
        if old is None:
            return
        if not isinstance(old, frozenset):
            self._complex.get(key[0], {}).pop(key, None)
            return
        sizes = self._plain.get(key[0], {})
        bucket = sizes.get(len(old), {})
        keys = bucket.get(old)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del bucket[old]
                if not bucket:
                    del sizes[len(old)]

    def matching(self, namespace: str, labels: Mapping[str, str]) -> set[Key]:
        found: set[Key] = {
            k for k, sel in self._complex.get(namespace, {}).items() if match_selector(sel, labels)
        }
        sizes = self._plain.get(namespace)
        if not sizes:
            return found
        subsets = selector_subsets(labels, set(sizes))
        if subsets is None:
            for size_bucket in sizes.values():
                for selector, keys in size_bucket.items():
                    if all(labels.get(k) == v for k, v in selector):
                        found |= keys
            return found
        for sub in subsets:
            hits = sizes.get(len(sub), {}).get(sub)
            if hits:
                found |= hits
        return found


# ------------------------------------------------------------------------ workqueue


# Reconciles triggered by events about *other* objects (a pod for its ReplicaSet, a
# ReplicaSet for its Deployment, pods for a Service's endpoints) wait this long, so that a
# burst (replicas of one ReplicaSet becoming Ready together) folds into one status write.
BATCH_SECONDS = 0.03


class WorkQueue:
    """Keys waiting to be reconciled, each at most once in the queue at a time."""

    def __init__(self) -> None:
        self._pending: OrderedDict[Hashable, None] = OrderedDict()
        self._wakeup = asyncio.Event()
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._due: dict[Hashable, float] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, key: Hashable) -> None:
        if key not in self._pending:
            self._pending[key] = None
            self._wakeup.set()

    def add_after(self, key: Hashable, delay: float) -> None:
        """Reconcile ``key`` after ``delay`` seconds; an earlier request wins over a later one."""
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        if key in self._timers and self._due[key] <= due:
            return
        if key in self._timers:
            self._timers[key].cancel()
        self._due[key] = due
        self._timers[key] = loop.call_at(due, self._fire, key)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self._due.pop(key, None)
        self.add(key)

    async def get(self) -> Hashable:
        while not self._pending:
            self._wakeup.clear()
            await self._wakeup.wait()
        key, _ = self._pending.popitem(last=False)
        return key

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._due.clear()


class RetryLater(Exception):
    """Raised by a reconcile that wants to run again soon without it being an error."""

    def __init__(self, delay: float = 0.1):
        super().__init__(f"retry in {delay}s")
        self.delay = delay


async def run_worker(
    name: str,
    queue: WorkQueue,
    reconcile: Callable[[Any], Awaitable[None]],
    wait_for: Iterable[Informer] = (),
) -> None:
    """Reconcile keys one at a time, forever. A failure is logged and retried with
    back-off (a 409 Conflict quickly and quietly); it never ends the loop."""
    for informer in wait_for:
        await informer.synced.wait()
    failures: dict[Hashable, int] = {}
    try:
        while True:
            key = await queue.get()
            try:
                await reconcile(key)
                failures.pop(key, None)
            except asyncio.CancelledError:
                raise
            except RetryLater as exc:
                queue.add_after(key, exc.delay)
            except Exception as exc:
                count = failures[key] = failures.get(key, 0) + 1
                delay = min(0.05 * 2 ** min(count, 7), 5.0)
                if error_code(exc) == 409:
                    log.debug("Conflict while reconciling %s %s, retrying", name, key)
                elif error_code(exc) == 404:
                    log.debug("Object vanished while reconciling %s %s", name, key)
                else:
                    log.exception("Failed to reconcile %s %s, retrying in %.2fs", name, key, delay)
                queue.add_after(key, delay)
    finally:
        queue.close()


# --------------------------------------------------------------------------- events


class Recorder(Protocol):
    async def record(
        self,
        obj: Mapping[str, Any],
        kind: str,
        api_version: str,
        event_type: str,
        reason: str,
        message: str,
        now: datetime | None = None,
    ) -> None: ...


class EventRecorder:
    """Posts core/v1 Events, folding repeats of the same (object, reason, message) into
    one Event whose count rises, as the real event broadcaster does."""

    def __init__(self, cluster: Any, component: str, enabled: bool = True):
        self.cluster = cluster
        self.component = component
        self.enabled = enabled
        self._seen: OrderedDict[tuple[str, str, str], tuple[str, str, int]] = OrderedDict()
        self._counter = 0

    async def record(
        self,
        obj: Mapping[str, Any],
        kind: str,
        api_version: str,
        event_type: str,
        reason: str,
        message: str,
        now: datetime | None = None,
    ) -> None:
        if not self.enabled:
            return
        now = now or now_utc()
        m = meta(obj)
        namespace = m.get("namespace") or "default"
        dedupe = (m.get("uid") or "", reason, message)
        try:
            if dedupe in self._seen:
                ns, name, count = self._seen[dedupe]
                count += 1
                await self.cluster.patch(
                    "v1/events", ns, name, {"count": count, "lastTimestamp": fmt_time(now)}
                )
                self._seen[dedupe] = (ns, name, count)
                return
            self._counter += 1
            name = f"{m.get('name')}.{int(now.timestamp() * 1e9) + self._counter:x}"
            event = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": {
                    "apiVersion": api_version,
                    "kind": kind,
                    "name": m.get("name"),
                    "namespace": m.get("namespace"),
                    "uid": m.get("uid"),
                    "resourceVersion": m.get("resourceVersion"),
                },
                "reason": reason,
                "message": message,
                "type": event_type,
                "count": 1,
                "firstTimestamp": fmt_time(now),
                "lastTimestamp": fmt_time(now),
                "source": {"component": self.component},
                "reportingComponent": self.component,
                "reportingInstance": self.component,
            }
            await self.cluster.create("v1/events", event)
            self._seen[dedupe] = (namespace, name, 1)
            while len(self._seen) > 5000:
                self._seen.popitem(last=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # An event is a courtesy to humans; losing one must not fail a reconcile.
            self._seen.pop(dedupe, None)
            log.debug("Failed to record event %s for %s: %s", reason, m.get("name"), exc)


def seconds_until(when: datetime, now: datetime) -> float:
    return max((when - now).total_seconds(), 0.0)


def add_seconds(t: datetime, seconds: float) -> datetime:
    return t + timedelta(seconds=seconds)


def status_patch(
    current: Mapping[str, Any] | None, desired: Mapping[str, Any], owned: Iterable[str]
) -> dict[str, Any]:
    """The merge patch that turns the owned fields of ``current`` into ``desired``: keys
    that differ, plus null for owned keys that ``desired`` leaves out (the API omits
    zero counts). Empty when nothing would change, so no write is made."""
    current = current or {}
    patch = {k: v for k, v in desired.items() if current.get(k) != v}
    for k in owned:
        if k not in desired and current.get(k) is not None:
            patch[k] = None
    return patch


def omit_zero(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v not in (0, None, [], {})}
