"""Serving benchmark: how requests spread, how a canary's share follows its weight, Predict
latency, and what a pod's termination is made of, on pods that really run.

    python -m e2e.bench.serving [--seconds 60] [--clients 4] [--docs]

It starts a `ServingCluster` (the local control plane with its process runtime and data
plane, and the operator), then for each client mode:

- `clusterip`: clients on the ClusterIP Service, no maximum connection age;
- `clusterip-age10`: the same with `server.maxConnectionAgeSeconds: 10`;
- `headless`: clients resolve the headless Service and balance with `round_robin`;
- `headless-age10`: the same with a maximum connection age of 10 s;

serves a model on 4 pods, sends `--clients` channels of Predict calls (one every 20 ms each)
for `--seconds`, and counts each pod's answers from its own TF Serving metrics. It then rolls
version 2 out in three steps under the same load and reports, per step, the share version 2
answered, over the second half of each step (its canary pods ready), next to the step's
weight and its replica share. Last, it deletes a pod of an
InferenceService with the default pod settings and times each phase of its termination.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e.load import Linear, PredictLoad, percentile
from e2e.serving import ServingCluster, ok_requests, wait_for

V1, V2 = Linear(1.0, 1.0), Linear(2.0, 0.0)
REPLICAS = 4
PAUSE_SECONDS = 20
STEPS = [{"weight": w, "pause": f"{PAUSE_SECONDS}s"} for w in (20, 33, 50)]
ROUND_ROBIN = [("grpc.service_config", '{"loadBalancingConfig": [{"round_robin": {}}]}')]
BEGIN, END = "<!-- serving-benchmark:begin -->", "<!-- serving-benchmark:end -->"


@dataclass(frozen=True)
class Mode:
    name: str
    max_connection_age: int
    headless: bool

    def target(self, cluster: ServingCluster, name: str, namespace: str) -> str:
        return cluster.target(f"{name}-grpc" if self.headless else name, namespace)

    def options(self) -> list[tuple[str, Any]]:
        return ROUND_ROBIN if self.headless else []


MODES = (Mode("clusterip", 0, False), Mode("clusterip-age10", 10, False), Mode("headless", 0, True),
         Mode("headless-age10", 10, True))


def manifest(name: str, namespace: str, version: int, mode: Mode | None, replicas: int = REPLICAS) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"basePath": f"s3://models/{namespace}/{name}", "version": version},
        "replicas": replicas,
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        "rollout": {"steps": STEPS, "progressDeadlineSeconds": 300},
    }
    if mode is not None:  # the drain measurement keeps every default
        spec["server"] = {"maxConnectionAgeSeconds": mode.max_connection_age}
        spec["pod"] = {"terminationGracePeriodSeconds": 15, "drainSeconds": 5}
    return {"apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def serve(cluster: ServingCluster, name: str, namespace: str, mode: Mode | None, replicas: int = REPLICAS) -> list[str]:
    cluster.kubectl("create", "namespace", namespace)
    cluster.write_model(f"s3://models/{namespace}/{name}", 1, {"function": {"linear": {"a": V1.a, "b": V1.b}}})
    cluster.write_model(f"s3://models/{namespace}/{name}", 2, {"function": {"linear": {"a": V2.a, "b": V2.b}}})
    cluster.apply(manifest(name, namespace, 1, mode, replicas))
    wait_for(lambda: len(cluster.ready_pods(name, namespace)) == replicas, 180, f"{replicas} ready pods")
    ips = {p["status"]["podIP"] for p in cluster.ready_pods(name, namespace)}
    for service in (name, f"{name}-grpc"):
        wait_for(lambda s=service: cluster.ready_endpoints(s, namespace) == ips, 60, f"the endpoints of {service}")
    return sorted(ips)


def cv(values: list[float]) -> float:
    mean = statistics.fmean(values)
    return statistics.pstdev(values) / mean if mean else float("nan")


def distribution(cluster: ServingCluster, mode: Mode, seconds: float, clients: int) -> dict[str, Any]:
    namespace, name = f"bench-{mode.name}", "dist"
    ips = serve(cluster, name, namespace, mode)
    before = {ip: ok_requests(ip, name) for ip in ips}
    loads = [PredictLoad(mode.target(cluster, name, namespace), name, {1: V1, 2: V2}, options=mode.options())
             for _ in range(clients)]
    for load in loads:
        load.start()
    time.sleep(seconds)
    steady_end = time.monotonic()
    counts = {ip: ok_requests(ip, name) - before[ip] for ip in ips}
    # The canary, under the same load.
    cluster.apply(manifest(name, namespace, 2, mode))
    starts: dict[Any, float] = {}  # step (or phase) -> when the status first showed it

    def done() -> bool:
        ro = (cluster.isvc(name, namespace).get("status") or {}).get("rollout") or {}
        key = ro.get("step") if ro.get("phase") == "Progressing" else ro.get("phase")
        starts.setdefault(key, time.monotonic())
        return ro.get("phase") == "Succeeded"

    wait_for(done, 600, "the rollout to succeed", interval=0.2)
    for load in loads:
        load.stop()
    outcomes = [o for load in loads for o in load.outcomes()]
    steady = [o for o in outcomes if o.sent < steady_end]
    rollout = [o for o in outcomes if o.sent >= steady_end]
    shares = []
    ends = sorted(v for v in starts.values())
    for step in range(len(STEPS)):
        if step not in starts:
            continue
        end = min((v for v in ends if v > starts[step]), default=time.monotonic())
        # The second half of the step: its canary pods are ready (they take a few seconds
        # to load) and the step holds for its pause.
        since = max(starts[step], end - PAUSE_SECONDS / 2)
        inside = [o for o in rollout if o.ok and since <= o.sent < end]
        v2 = sum(1 for o in inside if o.version == 2)
        weight = STEPS[step]["weight"]
        canary = canary_pods(REPLICAS, int(weight))
        shares.append((weight, canary / (REPLICAS + canary), v2 / len(inside) if inside else float("nan"), len(inside)))
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    values = list(counts.values())
    return {
        "mode": mode.name, "counts": values, "max": max(values), "min": min(values), "cv": cv(values),
        "shares": shares,
        "latency_steady": (percentile([o.latency for o in steady if o.ok], 50), percentile([o.latency for o in steady if o.ok], 99)),
        "latency_rollout": (percentile([o.latency for o in rollout if o.ok], 50), percentile([o.latency for o in rollout if o.ok], 99)),
        "failed": sum(1 for o in outcomes if not o.ok), "requests": len(outcomes),
    }


def canary_pods(replicas: int, weight: int) -> int:
    from tfleet.engine.rollout import canary_replicas

    return canary_replicas(replicas, weight)


PHASES = {
    "prestop": re.compile(r"Ran the preStop hook of container tensorflow-serving of Pod (\S+) in ([\d.]+)s"),
    "stop": re.compile(r"Stopped container tensorflow-serving of Pod (\S+) in ([\d.]+)s \(([^;]+);"),
    "all": re.compile(r"Stopped every container of Pod (\S+) in ([\d.]+)s"),
}


def termination(cluster: ServingCluster) -> dict[str, Any]:
    """Delete a pod with the default pod settings; time each phase of its end."""
    namespace, name = "bench-drain", "drain"
    serve(cluster, name, namespace, None, replicas=2)
    pod = cluster.ready_pods(name, namespace)[0]
    pod_name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    start = time.monotonic()
    cluster.kubectl("delete", "pod", pod_name, "-n", namespace, "--wait=false")
    wait_for(lambda: ip not in cluster.ready_endpoints(name, namespace), 60, "the pod to leave the endpoints", interval=0.05)
    left_endpoints = time.monotonic() - start

    def gone() -> bool:
        return all(p["metadata"]["name"] != pod_name for p in cluster.all_serving_pods(name, namespace))

    wait_for(gone, 120, "the pod to be removed", interval=0.1)
    removed = time.monotonic() - start
    found: dict[str, Any] = {}
    for line in cluster.log("localcluster.log").splitlines():
        for phase, pattern in PHASES.items():
            m = pattern.search(line)
            if m and m.group(1).endswith(pod_name):
                found[phase] = (float(m.group(2)), m.group(3)) if phase == "stop" else float(m.group(2))
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    return {"left_endpoints": left_endpoints, "removed": removed, **found}


def table(results: list[dict[str, Any]], drain: dict[str, Any], seconds: float, clients: int) -> str:
    lines = [
        f"Request distribution over {REPLICAS} pods, {clients} client channels at 50 requests/s each, "
        f"{seconds:.0f} s (answers per pod from each pod's `:tensorflow:serving:request_count`):",
        "",
        "| mode | most per pod | fewest per pod | coefficient of variation | requests | failed |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(f"| {r['mode']} | {r['max']:.0f} | {r['min']:.0f} | {r['cv']:.2f} | {r['requests']} | {r['failed']} |")
    lines += ["", "Canary share against weight (version 2's share of the answers while each step held):", "",
              "| mode | step weight | canary replica share | version 2 answered | answers in the step |",
              "| --- | --- | --- | --- | --- |"]
    for r in results:
        for weight, replica_share, share, n in r["shares"]:
            lines.append(f"| {r['mode']} | {weight}% | {replica_share:.0%} | {share:.0%} | {n} |")
    lines += ["", "Predict latency (successful calls):", "",
              "| mode | steady p50 / p99 | during the rollout p50 / p99 |", "| --- | --- | --- |"]
    for r in results:
        (s50, s99), (r50, r99) = r["latency_steady"], r["latency_rollout"]
        lines.append(f"| {r['mode']} | {s50 * 1000:.1f} / {s99 * 1000:.1f} ms | {r50 * 1000:.1f} / {r99 * 1000:.1f} ms |")
    stop = drain.get("stop") or (float("nan"), "?")
    lines += ["", "Termination of a pod with the default pod settings (drainSeconds 15, terminationGracePeriodSeconds 45):", "",
              "| phase | seconds after the delete |", "| --- | --- |",
              f"| out of the Service's endpoints | {drain['left_endpoints']:.2f} |",
              f"| preStop (the health bridge's drain) | {drain.get('prestop', float('nan')):.1f} (its own length) |",
              f"| TF Serving's container stopped ({stop[1]}) | {stop[0]:.1f} after the preStop |",
              f"| every container stopped | {drain.get('all', float('nan')):.1f} |",
              f"| pod removed | {drain['removed']:.1f} |"]
    return "\n".join(lines)


def update_docs(path: Path, text: str) -> None:
    current = path.read_text() if path.exists() else ""
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in current and END in current:
        head, _, rest = current.partition(BEGIN)
        _, _, tail = rest.partition(END)
        path.write_text(head + block + tail)
    else:
        path.write_text(current.rstrip() + "\n\n## Serving on running pods\n\n" + block + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.bench.serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--modes", default=",".join(m.name for m in MODES))
    parser.add_argument("--docs", action="store_true", help="write the tables into docs/benchmarks.md")
    args = parser.parse_args(argv)
    modes = [m for m in MODES if m.name in args.modes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-serving-", dir="/var/tmp") as workdir, \
            ServingCluster(Path(workdir)) as cluster:
        results = []
        for mode in modes:
            print(f"Measuring {mode.name} ...", flush=True)
            results.append(distribution(cluster, mode, args.seconds, args.clients))
        print("Measuring a pod's termination ...", flush=True)
        drain = termination(cluster)
    text = table(results, drain, args.seconds, args.clients)
    print(text)
    if args.docs:
        update_docs(Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
