"""Benchmark of the local control plane's API server (prints a table; asserts nothing).

Runs ``python -m e2e.localcluster --no-controllers`` in its own process, as tests and the
operator use it, stores 1,000 custom resources and 4,000 owned children (a Deployment,
Service, ConfigMap and PodDisruptionBudget each), then measures over HTTP with keep-alive:
write latency and throughput, list latency, and watch event delivery latency.

    .venv/bin/python -m e2e.bench.apiserver [--resources 1000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from e2e.localcluster.testing import WIDGET_CRD, WIDGET_GROUP

NAMESPACES = 10
JSON = {"Content-Type": "application/json"}
MERGE = {"Content-Type": "application/merge-patch+json"}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Client:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                   ok: tuple[int, ...] = (200, 201)) -> tuple[float, Any]:
        started = time.perf_counter()
        data = None if body is None else json.dumps(body)
        async with self.session.request(method, path, data=data, headers=headers or JSON) as resp:
            payload = await resp.read()
            elapsed = time.perf_counter() - started
            if resp.status not in ok:
                raise RuntimeError(f"{method} {path}: {resp.status} {payload[:300]!r}")
        return elapsed, payload


def _children(name: str, ns: str, uid: str) -> list[tuple[str, dict[str, Any]]]:
    owner = [{"apiVersion": f"{WIDGET_GROUP}/v1", "kind": "Widget", "name": name, "uid": uid,
              "controller": True, "blockOwnerDeletion": True}]
    labels = {"app.kubernetes.io/instance": name, "app.kubernetes.io/managed-by": "bench"}
    meta = {"name": name, "namespace": ns, "labels": labels, "ownerReferences": owner}
    return [
        (f"/apis/apps/v1/namespaces/{ns}/deployments", {"metadata": meta, "spec": {
            "replicas": 0, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                {"name": "serving", "image": "tensorflow/serving:2.19.0",
                 "ports": [{"containerPort": 8500}, {"containerPort": 8501}],
                 "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}}]}}}}),
        (f"/api/v1/namespaces/{ns}/services", {"metadata": meta, "spec": {
            "selector": labels, "ports": [{"name": "grpc", "port": 8500}, {"name": "rest", "port": 8501}]}}),
        (f"/api/v1/namespaces/{ns}/configmaps", {"metadata": meta, "data": {
            "batching.pbtxt": "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 1000 }\n"}}),
        (f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets", {"metadata": meta, "spec": {
            "maxUnavailable": 1, "selector": {"matchLabels": labels}}}),
    ]


async def run(args: argparse.Namespace) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        server_log = Path(tmp) / "server.log"
        server = subprocess.Popen([sys.executable, "-m", "e2e.localcluster", "--kubeconfig", str(kubeconfig),
                                   "--no-controllers"], stdout=subprocess.PIPE,
                                  stderr=server_log.open("w"), text=True)
        try:
            assert server.stdout is not None
            if server.stdout.readline().strip() != "ready":
                raise RuntimeError("the control plane did not start")
            url = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
            connector = aiohttp.TCPConnector(limit=args.concurrency * 2)
            async with aiohttp.ClientSession(url, connector=connector) as session:
                rows = await _measure(Client(session), session, args)
        except Exception:
            print(server_log.read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            server.terminate()
            server.wait(timeout=10)
    return rows


async def _measure(c: Client, session: aiohttp.ClientSession, args: argparse.Namespace) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    await c.call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD)
    for i in range(NAMESPACES):
        await c.call("POST", "/api/v1/namespaces", {"metadata": {"name": f"bench-{i}"}})

    # Sequential creates: the latency one client sees.
    create_lat: list[float] = []
    uids: dict[tuple[str, str], str] = {}
    started = time.perf_counter()
    for i in range(args.resources):
        ns = f"bench-{i % NAMESPACES}"
        body = {"apiVersion": f"{WIDGET_GROUP}/v1", "kind": "Widget",
                "metadata": {"name": f"w-{i}", "namespace": ns}, "spec": {"size": 1 + i % 5, "replicas": 2}}
        elapsed, payload = await c.call("POST", f"/apis/{WIDGET_GROUP}/v1/namespaces/{ns}/widgets", body)
        create_lat.append(elapsed)
        uids[(ns, f"w-{i}")] = json.loads(payload)["metadata"]["uid"]
    seq_rate = args.resources / (time.perf_counter() - started)

    # Children, written by several clients at once: throughput under concurrency.
    jobs = [job for (ns, name), uid in uids.items() for job in _children(name, ns, uid)]
    child_lat: list[float] = []

    async def worker(queue: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        while not queue.empty():
            path, body = queue.get_nowait()
            child_lat.append((await c.call("POST", path, body))[0])

    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    started = time.perf_counter()
    await asyncio.gather(*(worker(queue) for _ in range(args.concurrency)))
    conc_rate = len(jobs) / (time.perf_counter() - started)

    # Status patches (what an operator writes most).
    patch_lat: list[float] = []
    for i in range(min(args.resources, 1000)):
        ns = f"bench-{i % NAMESPACES}"
        elapsed, _ = await c.call("PATCH", f"/apis/{WIDGET_GROUP}/v1/namespaces/{ns}/widgets/w-{i}/status",
                                  {"status": {"replicas": 2, "observedGeneration": 1}}, MERGE)
        patch_lat.append(elapsed)

    writes = create_lat + child_lat + patch_lat
    rows += [
        ("objects stored", f"{args.resources} widgets + {len(jobs)} children"),
        ("write latency p50 (all writes)", f"{_pct(writes, 50) * 1000:.2f} ms"),
        ("write latency p99 (all writes)", f"{_pct(writes, 99) * 1000:.2f} ms"),
        ("create latency p50 / p99 (widgets, sequential)",
         f"{_pct(create_lat, 50) * 1000:.2f} / {_pct(create_lat, 99) * 1000:.2f} ms"),
        ("create latency p50 / p99 (children, concurrent)",
         f"{_pct(child_lat, 50) * 1000:.2f} / {_pct(child_lat, 99) * 1000:.2f} ms"),
        ("status patch latency p50 / p99",
         f"{_pct(patch_lat, 50) * 1000:.2f} / {_pct(patch_lat, 99) * 1000:.2f} ms"),
        ("write throughput, 1 client", f"{seq_rate:.0f} writes/s"),
        (f"write throughput, {args.concurrency} clients", f"{conc_rate:.0f} writes/s"),
    ]

    # Lists.
    lists = {
        f"list all widgets ({args.resources})": (f"/apis/{WIDGET_GROUP}/v1/widgets", JSON),
        f"list all deployments ({args.resources})": ("/apis/apps/v1/deployments", JSON),
        "list deployments of one namespace": ("/apis/apps/v1/namespaces/bench-0/deployments", JSON),
        "list services by label selector (1 hit)": (
            "/api/v1/services?labelSelector=app.kubernetes.io%2Finstance%3Dw-7", JSON),
        "list widgets as a Table (kubectl get)": (f"/apis/{WIDGET_GROUP}/v1/widgets", {
            "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}),
        "list widgets, limit=500 (first page)": (f"/apis/{WIDGET_GROUP}/v1/widgets?limit=500", JSON),
    }
    for label, (path, headers) in lists.items():
        samples = [(await c.call("GET", path, headers={**headers, "Accept": headers.get("Accept", "application/json")}))[0]
                   for _ in range(args.repeat)]
        rows.append((f"{label}, median", f"{statistics.median(samples) * 1000:.1f} ms"))

    # Watch delivery: time from sending a patch to reading its event on an open watch.
    _, payload = await c.call("GET", f"/apis/{WIDGET_GROUP}/v1/widgets?limit=1")
    rv = json.loads(payload)["metadata"]["resourceVersion"]
    sent: dict[str, float] = {}
    delays: list[float] = []
    done = asyncio.Event()
    total = min(args.resources, 300)

    async def watch() -> None:
        async with session.get(f"/apis/{WIDGET_GROUP}/v1/widgets",
                               params={"watch": "1", "resourceVersion": rv, "timeoutSeconds": "60"}) as resp:
            async for line in resp.content:
                event = json.loads(line)
                name = event["object"]["metadata"]["name"]
                if name in sent:
                    delays.append(time.perf_counter() - sent.pop(name))
                    if len(delays) == total:
                        done.set()
                        return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.2)
    for i in range(total):
        ns = f"bench-{i % NAMESPACES}"
        sent[f"w-{i}"] = time.perf_counter()
        await c.call("PATCH", f"/apis/{WIDGET_GROUP}/v1/namespaces/{ns}/widgets/w-{i}",
                     {"metadata": {"labels": {"touched": "yes"}}}, MERGE)
    await asyncio.wait_for(done.wait(), 30)
    watcher.cancel()
    rows += [
        ("watch delivery latency p50", f"{_pct(delays, 50) * 1000:.2f} ms"),
        ("watch delivery latency p99", f"{_pct(delays, 99) * 1000:.2f} ms"),
    ]

    # Cascading delete of everything one namespace holds.
    started = time.perf_counter()
    await c.call("DELETE", "/api/v1/namespaces/bench-0", ok=(200, 202))
    while True:
        try:
            await c.call("GET", "/api/v1/namespaces/bench-0", ok=(200,))
        except RuntimeError:
            break
        await asyncio.sleep(0.01)
    rows.append((f"namespace deletion cascade ({len(jobs) // NAMESPACES + args.resources // NAMESPACES} objects)",
                 f"{(time.perf_counter() - started) * 1000:.0f} ms"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resources", type=int, default=1000, help="custom resources to store")
    parser.add_argument("--concurrency", type=int, default=8, help="clients writing at once")
    parser.add_argument("--repeat", type=int, default=20, help="samples per list measurement")
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args))
    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 24}")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
