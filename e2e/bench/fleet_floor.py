"""The fleet benchmark's floors, measured in a fresh control plane of their own.

- **Cluster floor**: a plain client (the official kubernetes Python client, in a process of
  its own) creates the same InferenceServices with the same 8 creators, and applies each
  one's children (built by tfleet's own builders, owner references included) as soon as it
  is created, with as many appliers as the operator has reconcile workers, ConfigMap first
  and the rest at once, as the operator does. The clock runs from the first create until
  every Deployment is available: what the simulated cluster alone needs on this machine.
  No operator can converge faster.
- **Client floor**: the CPU that client's threads spend on the operator's writes, the same
  requests in the same numbers: every child applied once, then as many status patches and
  Event posts as the operator sent (its status body, its Event shape). Measured with each
  thread's own CPU clock around each request, so creates and waits do not count.

    python -m e2e.bench.fleet_floor --kubeconfig K --n N [--creators 8] [--appliers 32]

reads "children" on stdin to start, prints "children-done" once every child is applied, then
reads one JSON line {"status_writes": S, "event_writes": E, "status": {...}} and prints one
JSON line of CPU seconds and request counts.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config

Manifest = dict[str, Any]
USER_AGENT = "tfleet-bench/floor"


class PlainClient:
    """The kubernetes client's ApiClient, as a script would use it; CPU per request kind."""

    def __init__(self, kubeconfig: Path, pool: int):
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = pool
        self.api = client.ApiClient(cfg)
        self.host = cfg.host
        self._lock = threading.Lock()
        self.cpu: dict[str, float] = {}
        self.requests: dict[str, int] = {}

    def call(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
             counted: str | None = None) -> Manifest:
        started = time.thread_time()
        headers = {"Content-Type": content_type, "Accept": "application/json", "User-Agent": USER_AGENT}
        response = self.api.call_api(method, self.host + path, header_params=headers, body=body, _request_timeout=60)
        data = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
        payload: Manifest = json.loads(data) if data else {}
        if counted is not None:
            spent = time.thread_time() - started
            with self._lock:
                self.cpu[counted] = self.cpu.get(counted, 0.0) + spent
                self.requests[counted] = self.requests.get(counted, 0) + 1
        return payload


def _children(created: Manifest) -> list[Manifest]:
    from tfleet.api.model import parse_object
    from tfleet.desired.children import build_children
    from tfleet.engine.plan import with_ownership

    isvc = parse_object(created)
    return [with_ownership(child, isvc) for child in build_children(isvc)]


def _path(manifest: Manifest) -> str:
    from tfleet.runtime.kube import resource_path

    meta = manifest["metadata"]
    return resource_path(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])


def run(kubeconfig: Path, n: int, creators: int, appliers: int, read: Callable[[], str],
        say: Callable[[str], None]) -> Manifest:
    from e2e.bench.fleet import ISVC_PATH, PLURAL, isvc_manifest

    plain = PlainClient(kubeconfig, creators + 2 * appliers + 4)
    pool = ThreadPoolExecutor(max_workers=appliers)
    to_create: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    to_apply: queue.SimpleQueue[Manifest | None] = queue.SimpleQueue()
    created: list[Manifest] = []

    def apply(manifest: Manifest) -> None:
        plain.call("PATCH", _path(manifest) + "?fieldManager=bench&force=true", manifest,
                   "application/apply-patch+yaml", counted="apply")

    def creator() -> None:
        while (i := to_create.get()) is not None:
            m = isvc_manifest(i)
            obj = plain.call("POST", f"{ISVC_PATH}/namespaces/{m['metadata']['namespace']}/{PLURAL}", m)
            created.append(obj)
            to_apply.put(obj)

    def applier() -> None:
        while (obj := to_apply.get()) is not None:
            children = _children(obj)
            for child in children:
                if child["kind"] == "ConfigMap":
                    apply(child)
            rest = [c for c in children if c["kind"] != "ConfigMap"]
            for future in [pool.submit(apply, c) for c in rest]:
                future.result()

    if read().strip() != "children":
        raise SystemExit("expected 'children' on stdin")
    for i in range(n):
        to_create.put(i)
    for _ in range(creators):
        to_create.put(None)
    creating = [threading.Thread(target=creator) for _ in range(creators)]
    applying = [threading.Thread(target=applier) for _ in range(appliers)]
    for t in creating + applying:
        t.start()
    for t in creating:
        t.join()
    for _ in applying:
        to_apply.put(None)
    for t in applying:
        t.join()
    say("children-done")

    order = json.loads(read())
    status_writes, event_writes, status = int(order["status_writes"]), int(order["event_writes"]), order["status"]

    def patch_status(k: int) -> None:
        meta = created[k % len(created)]["metadata"]
        plain.call("PATCH", f"{ISVC_PATH}/namespaces/{meta['namespace']}/{PLURAL}/{meta['name']}/status",
                   {"status": status}, "application/merge-patch+json", counted="status")

    def post_event(k: int) -> None:
        isvc = created[k % len(created)]
        meta = isvc["metadata"]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        event = {"apiVersion": "v1", "kind": "Event",
                 "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
                 "involvedObject": {"apiVersion": isvc["apiVersion"], "kind": isvc["kind"], "name": meta["name"],
                                    "namespace": meta["namespace"], "uid": meta["uid"],
                                    "resourceVersion": meta["resourceVersion"]},
                 "type": "Normal", "reason": "ChildrenChanged",
                 "message": f"Created ConfigMap {meta['name']}-0123456789, Created Deployment {meta['name']}-0123456789, "
                            f"Created Service {meta['name']}, Created Service {meta['name']}-grpc, "
                            f"Created PodDisruptionBudget {meta['name']}",
                 "source": {"component": "tfleet"}, "reportingComponent": "tfleet", "reportingInstance": "tfleet",
                 "firstTimestamp": now, "lastTimestamp": now, "count": 1}
        plain.call("POST", f"/api/v1/namespaces/{meta['namespace']}/events", event, counted="event")

    for future in [pool.submit(patch_status, k) for k in range(status_writes)] + \
            [pool.submit(post_event, k) for k in range(event_writes)]:
        future.result()
    pool.shutdown()
    return {"cpu": plain.cpu, "requests": plain.requests, "created": len(created)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.bench.fleet_floor")
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--creators", type=int, default=8)
    parser.add_argument("--appliers", type=int, default=32)
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        print(line, flush=True)

    result = run(args.kubeconfig, args.n, args.creators, args.appliers, sys.stdin.readline, say)
    say(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
