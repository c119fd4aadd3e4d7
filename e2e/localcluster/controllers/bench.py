"""Benchmark of the simulated cluster at fleet scale (prints a table; asserts nothing).

Runs the in-process store and the simulated controllers in one event loop, as the local
control plane does, creates N Deployments (R replicas each) and N Services spread over 10
namespaces, and measures: time until every Deployment is Available, a rolling update of
all of them, the writes the controllers made (resourceVersion increments), CPU time, and
whether a settled cluster stays quiet.

    .venv/bin/python -m e2e.localcluster.controllers.bench [--deployments 1000] [--replicas 2]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from typing import Any

from e2e.localcluster import controllers
from e2e.localcluster.store import Cluster

NAMESPACES = 10


def deployment(ns: str, name: str, replicas: int, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"app.kubernetes.io/managed-by": "tfleet"},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/instance": name}},
            "template": {
                "metadata": {
                    "labels": {
                        "app.kubernetes.io/instance": name,
                        "app.kubernetes.io/name": "tensorflow-serving",
                        "app.kubernetes.io/managed-by": "tfleet",
                    }
                },
                "spec": {
                    "containers": [
                        {
                            "name": "serving",
                            "image": image,
                            "ports": [
                                {"name": "grpc", "containerPort": 8500},
                                {"name": "http", "containerPort": 8501},
                            ],
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                        }
                    ]
                },
            },
        },
    }


def service(ns: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": {"app.kubernetes.io/instance": name},
            "ports": [
                {"name": "grpc", "port": 8500, "targetPort": "grpc"},
                {"name": "http", "port": 8501, "targetPort": "http"},
            ],
        },
    }


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def wait_all(
    cluster: Cluster, want: set[tuple[str, str]], done: Any, timeout: float
) -> float:
    """Seconds until ``done(status)`` holds for every Deployment in ``want`` (watch-driven)."""
    queue = cluster.subscribe("apps/v1/deployments")
    start = time.monotonic()
    pending = set(want)
    try:
        for d in await cluster.list("apps/v1/deployments"):
            key = (d["metadata"]["namespace"], d["metadata"]["name"])
            if key in pending and done(d):
                pending.discard(key)
        while pending:
            remaining = timeout - (time.monotonic() - start)
            if remaining <= 0:
                raise TimeoutError(f"{len(pending)} Deployments did not get there in {timeout}s")
            _, d = await asyncio.wait_for(queue.get(), remaining)
            key = (d["metadata"]["namespace"], d["metadata"]["name"])
            if key in pending and done(d):
                pending.discard(key)
    finally:
        cluster.unsubscribe("apps/v1/deployments", queue)
    return time.monotonic() - start


def available(replicas: int, generation: int) -> Any:
    def check(d: dict[str, Any]) -> bool:
        s = d.get("status") or {}
        return (
            s.get("observedGeneration") == generation
            and s.get("updatedReplicas", 0) == replicas
            and s.get("availableReplicas", 0) == replicas
            and s.get("replicas", 0) == replicas
        )

    return check


async def run(n: int, replicas: int, events: bool) -> list[tuple[str, str]]:
    cluster = Cluster(history_size=5000)
    cluster.start()
    topology = {
        "nodes": [
            {
                "name": "node",
                "count": 20,
                "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "500"},
            }
        ]
    }
    tasks = controllers.start(
        cluster, {"topology": topology, "events": events, "ready_delay_seconds": 0.2}
    )
    rows: list[tuple[str, str]] = []
    try:
        for i in range(NAMESPACES):
            await cluster.create(
                "v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"bench-{i}"}},
            )
        await asyncio.sleep(0.2)
        keys = {(f"bench-{i % NAMESPACES}", f"model-{i}") for i in range(n)}

        rv0, cpu0, t0 = int(cluster.resource_version), cpu_seconds(), time.monotonic()
        for ns, name in sorted(keys):
            await cluster.create("v1/services", service(ns, name))
            await cluster.create("apps/v1/deployments", deployment(ns, name, replicas, "tf:1"))
        created = time.monotonic() - t0
        elapsed = await wait_all(cluster, keys, available(replicas, 1), timeout=600)
        await asyncio.sleep(0.5)  # endpoints catch up
        writes = int(cluster.resource_version) - rv0 - 2 * n
        rows += [
            ("Deployments x replicas", f"{n} x {replicas} ({n * replicas} pods), {n} Services"),
            ("create (test client)", f"{created:.2f} s"),
            ("all Available after", f"{created + elapsed:.2f} s"),
            ("controller writes", f"{writes} ({writes / (n * replicas):.1f} per pod)"),
            ("CPU", f"{cpu_seconds() - cpu0:.2f} s"),
        ]

        rv1 = int(cluster.resource_version)
        await asyncio.sleep(2.0)
        rows.append(("writes in 2 s when settled", str(int(cluster.resource_version) - rv1)))

        rv0, cpu0, t0 = int(cluster.resource_version), cpu_seconds(), time.monotonic()
        for ns, name in sorted(keys):
            await cluster.patch(
                "apps/v1/deployments",
                ns,
                name,
                {
                    "spec": {
                        "template": {"spec": {"containers": [{"name": "serving", "image": "tf:2"}]}}
                    }
                },
                patch_type="strategic",
            )
        elapsed = await wait_all(cluster, keys, available(replicas, 2), timeout=600)
        writes = int(cluster.resource_version) - rv0 - n
        rows += [
            ("rolling update of all, done after", f"{time.monotonic() - t0:.2f} s"),
            ("rolling update writes", f"{writes} ({writes / (n * replicas):.1f} per replaced pod)"),
            ("rolling update CPU", f"{cpu_seconds() - cpu0:.2f} s"),
            ("objects stored", str(cluster.objects_count())),
            ("max RSS", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"),
        ]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await cluster.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--no-events", action="store_true", help="record Warning events only")
    args = parser.parse_args()
    rows = asyncio.run(run(args.deployments, args.replicas, not args.no_events))
    width = max(len(k) for k, _ in rows)
    print(f"{'simulated cluster':<{width}}  value")
    print(f"{'-' * width}  {'-' * 40}")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
