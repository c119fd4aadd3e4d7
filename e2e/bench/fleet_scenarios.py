"""The fleet benchmark's scenarios on a settled fleet, and the busy cluster's load.

- **Trickle**: 5 changes a second for 60 s to settled InferenceServices, alternating a
  replica change (2 <-> 3, never on an autoscaled one) and a version bump with the
  RollingUpdate strategy; for each change, the time from the API server's answer to the
  change (when it sends the watch event) to the first of the operator's writes about that
  InferenceService reaching the API server (from the request log: its time less its
  duration).
- **Restart**: the operator stops (SIGTERM) and a new process starts; the time from its start
  to /readyz, and every write it sends in the window after.
- **Failover**: two operators with leader election; once the first leads and the second
  stands by, the leader is killed (SIGKILL, no release); the time until the standby's
  /readyz says it leads, and every write but its Lease renewals in the window after.
- **Busy cluster**: objects that are not tfleet's (ConfigMaps, Services, Deployments of zero
  replicas, in namespaces of their own) created before the operator starts, and a churn of
  annotation changes among them for the whole run.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

from e2e.bench import fleet as bench

Manifest = dict[str, Any]
Key = tuple[str, str]

# A child's name: its InferenceService's, or that and "-grpc", or that and a revision hash.
_CHILD_SUFFIX = re.compile(r"-(grpc|[0-9a-f]{10})$")
BUSY_NAMESPACES = 10


def isvc_of_child(name: str) -> str:
    return _CHILD_SUFFIX.sub("", name)


def about_isvc(entry: Manifest) -> Key | None:
    """The InferenceService an operator write is about: itself (its status), or its child."""
    ns, name = entry.get("namespace") or "", entry.get("name") or ""
    if not name or entry.get("resource") in ("events", "leases", "secrets"):
        return None
    return (ns, name) if entry.get("resource") == bench.PLURAL else (ns, isvc_of_child(name))


def first_write_after(writes: list[Manifest], changes: list[tuple[Key, float]]) -> list[float]:
    """For each (InferenceService, time of change): seconds to the first write about it that
    reached the API server after the change (NaN when none came)."""
    by_isvc: dict[Key, list[float]] = {}
    for w in writes:
        key = about_isvc(w)
        if key is not None:
            by_isvc.setdefault(key, []).append(w["t"] - w["duration_ms"] / 1000)
    out = []
    for key, at in changes:
        later = [t for t in by_isvc.get(key, []) if t >= at]
        out.append(min(later) - at if later else float("nan"))
    return out


@dataclass
class Trickle:
    changes: int = 0
    rate: float = 0.0
    seconds: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    unanswered: int = 0  # changes no write followed
    writes: int = 0


@dataclass
class Restart:
    ready_seconds: float = float("nan")
    window_seconds: float = 0.0
    writes: int = -1
    writes_by_kind: dict[str, int] = field(default_factory=dict)
    cpu_seconds: float = 0.0
    rss_mb: float = 0.0


@dataclass
class Failover:
    lease_seconds: float = 15.0
    handover_seconds: float = float("nan")
    window_seconds: float = 0.0
    writes: int = -1  # by the new leader, its Lease renewals aside
    lease_writes: int = 0
    writes_by_kind: dict[str, int] = field(default_factory=dict)


def change_of(i: int, manifest: Manifest, state: dict[Key, Manifest]) -> Manifest:
    """The i-th change of the trickle for this InferenceService: a merge patch."""
    key = (manifest["metadata"]["namespace"], manifest["metadata"]["name"])
    spec = state.setdefault(key, {"replicas": manifest["spec"].get("replicas"),
                                  "version": manifest["spec"]["model"]["version"]})
    if i % 2 == 0 and "autoscaling" not in manifest["spec"]:
        spec["replicas"] = 3 if spec["replicas"] == 2 else 2
        return {"spec": {"replicas": spec["replicas"]}}
    spec["version"] += 1
    return {"spec": {"model": {"version": spec["version"]}, "rollout": {"strategy": "RollingUpdate"}}}


async def trickle(api: bench.Api, manifests: list[Manifest], rate: float, seconds: float) -> list[tuple[Key, float]]:
    """Send the changes at `rate` per second; (InferenceService, answer time) of each."""
    count = int(rate * seconds)
    n = len(manifests)
    # A stride coprime with n spreads the changes over the fleet, each object once while count <= n.
    stride = next(s for s in range(max(2, n // 3), 10 * n + 3) if _gcd(s, n) == 1)
    state: dict[Key, Manifest] = {}
    answered: list[tuple[Key, float]] = []
    started = time.monotonic()

    async def send(i: int) -> None:
        m = manifests[(i * stride) % n]
        meta = m["metadata"]
        patch = change_of(i, m, state)
        await api.call("PATCH", f"{bench.ISVC_PATH}/namespaces/{meta['namespace']}/{bench.PLURAL}/{meta['name']}",
                       patch, content_type="application/merge-patch+json")
        answered.append(((meta["namespace"], meta["name"]), time.time()))

    tasks = []
    for i in range(count):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.get_running_loop().create_task(send(i)))
    await asyncio.gather(*tasks)
    return answered


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


async def wait_all_ready(api: bench.Api, n: int, timeout: float) -> bool:
    """Poll until every InferenceService is Ready for its current generation."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = (await api.call("GET", f"{bench.ISVC_PATH}/{bench.PLURAL}"))["items"]
        if len(items) >= n and all(bench.is_ready(o) for o in items):
            return True
        await asyncio.sleep(1.0)
    return False


def summarize_trickle(changes: list[tuple[Key, float]], writes: list[Manifest], rate: float,
                      seconds: float) -> Trickle:
    latencies = first_write_after(writes, changes)
    answered = [x for x in latencies if x == x]
    return Trickle(changes=len(changes), rate=rate, seconds=seconds,
                   p50_ms=bench.percentile(answered, 50) * 1000, p99_ms=bench.percentile(answered, 99) * 1000,
                   max_ms=max(answered, default=float("nan")) * 1000, unanswered=len(latencies) - len(answered),
                   writes=len(writes))


def readyz(op: bench.OperatorProcess) -> tuple[int, Manifest]:
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{op.health_port}/readyz", timeout=1) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except OSError:
        return 0, {}


async def wait_leading(op: bench.OperatorProcess, timeout: float) -> float | None:
    """Seconds until the operator's /readyz says it leads (None: not within `timeout`)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        code, body = await asyncio.to_thread(readyz, op)
        if code == 200 and body.get("reason") == "leading":
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    return None


# ---------------------------------------------------------------------- the busy cluster

def unrelated(i: int) -> tuple[str, Manifest]:
    """The i-th object that is not tfleet's: (collection path, manifest)."""
    ns = f"other-{i % BUSY_NAMESPACES}"
    name = f"other-{i}"
    labels = {"app.kubernetes.io/name": f"app-{i % 50}", "app.kubernetes.io/managed-by": "someone-else"}
    kind = i % 3
    if kind == 0:
        return f"/api/v1/namespaces/{ns}/configmaps", {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels},
            "data": {"config.yaml": "x" * 512}}
    if kind == 1:
        return f"/api/v1/namespaces/{ns}/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels},
            "spec": {"selector": {"app.kubernetes.io/name": name}, "ports": [{"port": 80, "targetPort": 8080}]}}
    return f"/apis/apps/v1/namespaces/{ns}/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                 "template": {"metadata": {"labels": {"app.kubernetes.io/name": name}},
                              "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}}}


async def create_unrelated(api: bench.Api, count: int, concurrency: int = 16) -> None:
    for i in range(BUSY_NAMESPACES):
        await api.call("POST", "/api/v1/namespaces",
                       {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"other-{i}"}})
    todo = list(range(count))

    async def worker() -> None:
        while todo:
            path, body = unrelated(todo.pop())
            await api.call("POST", path, body)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


class Churn:
    """Changes one unrelated object's annotation `rate` times a second until stopped."""

    def __init__(self, api: bench.Api, count: int, rate: float):
        self.api, self.count, self.rate = api, count, rate
        self.sent = 0
        self.failed = 0
        self._pending: set[asyncio.Task[Any]] = set()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        rng = random.Random(7)
        started = time.monotonic()
        while True:
            delay = started + self.sent / self.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            path, body = unrelated(rng.randrange(self.count))
            patch = {"metadata": {"annotations": {"example.com/churn": str(self.sent)}}}
            task = asyncio.get_running_loop().create_task(
                self.api.call("PATCH", f"{path}/{body['metadata']['name']}", patch,
                              content_type="application/merge-patch+json"))
            self._pending.add(task)
            task.add_done_callback(self._done)
            self.sent += 1

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failed += 1

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for task in list(self._pending):
            task.cancel()
