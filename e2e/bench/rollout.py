"""Rollout engine overhead: how much longer than its configured pause a canary step takes.

    python -m e2e.bench.rollout [--steps 3] [--pause 2] [--replicas 4] [--runs 3]

Starts the local control plane and the operator as separate processes, creates an
InferenceService, bumps its model version, and reads the start time the engine records for
each step (status.rollout.stepStartedAt, in milliseconds). A step takes the time from its
start to the next step's (or the promotion's); the overhead is that time minus the pause:
waiting for the canary pods, the reconcile, the writes. Simulated pods become ready after the
control plane's default ready delay, which is part of the overhead, as on a real cluster.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config

from e2e import processes
from tfleet.engine.rollout import parse_time

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "tfleet.dev", "v1alpha1", "inferenceservices"


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _wait_for_file_text(path: Path, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {text!r} in {path}")


def _isvc(name: str, version: int, replicas: int, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceService",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {"model": {"basePath": "gs://bench/model", "version": version}, "replicas": replicas,
                 "rollout": {"steps": steps}},
    }


def one_run(api: client.CustomObjectsApi, name: str, replicas: int, steps: list[dict[str, Any]]) -> list[float]:
    api.create_namespaced_custom_object(GROUP, VERSION, "bench", PLURAL, _isvc(name, 1, replicas, steps))
    while True:
        body = api.get_namespaced_custom_object(GROUP, VERSION, "bench", PLURAL, name)
        conds = {c["type"]: c["status"] for c in (body.get("status") or {}).get("conditions") or []}
        if conds.get("Ready") == "True":
            break
        time.sleep(0.02)
    api.patch_namespaced_custom_object(GROUP, VERSION, "bench", PLURAL, name,
                                       {"spec": {"model": {"version": 2}}})
    # Each step's start as the engine recorded it (milliseconds), and the promotion's.
    starts: dict[Any, str] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ro = (api.get_namespaced_custom_object(GROUP, VERSION, "bench", PLURAL, name).get("status") or {}).get("rollout") or {}
        if ro.get("phase") == "Progressing" and ro.get("stepStartedAt"):
            starts.setdefault(ro.get("step"), ro["stepStartedAt"])
        if ro.get("phase") in ("Promoting", "Succeeded") and ro.get("stepStartedAt"):
            starts.setdefault("promote", ro["stepStartedAt"])
            break
        if ro.get("phase") == "RolledBack":
            raise SystemExit(f"the rollout rolled back: {ro.get('message')}")
        time.sleep(0.01)
    times = [parse_time(starts[k]) for k in [*range(len(steps)), "promote"] if k in starts]
    return [(b - a).total_seconds() for a, b in itertools.pairwise(times)]  # type: ignore[operator]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--pause", type=float, default=2.0, help="seconds")
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="tfleet-bench-rollout-"))
    kubeconfig = work / "kubeconfig"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cluster = _start([sys.executable, "-m", "e2e.localcluster", "--kubeconfig", str(kubeconfig)], env, work / "cluster.log")
    operator = None
    try:
        _wait_for_file_text(work / "cluster.log", "ready")
        config.load_kube_config(str(kubeconfig))
        api_client = client.ApiClient()
        subprocess.run([str(ROOT / ".tools/bin/kubectl"), "--kubeconfig", str(kubeconfig), "apply", "-f",
                        str(ROOT / "crds")], check=True, capture_output=True)  # both CRDs: the operator watches both
        client.CoreV1Api(api_client).create_namespace({"metadata": {"name": "bench"}})
        operator = _start([sys.executable, "-m", "tfleet.cli", "run", "--kubeconfig", str(kubeconfig)], env,
                          work / "operator.log")
        _wait_for_file_text(work / "operator.log", "Started the operator")
        time.sleep(1.0)
        weights = [round(100 * (i + 1) / (args.steps + 1)) for i in range(args.steps)]
        steps = [{"weight": w, "pause": f"{args.pause:g}s"} for w in weights]
        api = client.CustomObjectsApi(api_client)
        overheads: list[list[float]] = [[] for _ in steps]
        for run in range(args.runs):
            for i, duration in enumerate(one_run(api, f"bench-{run}", args.replicas, steps)):
                overheads[i].append(duration - args.pause)
    finally:
        for proc in (operator, cluster):
            processes.stop(proc, timeout=10)

    print(f"Rollout engine overhead: {args.steps} canary steps, pause {args.pause:g}s, "
          f"{args.replicas} replicas, {args.runs} runs, load average {os.getloadavg()[0]:.2f}\n")
    print("| step | weight | overhead p50 (s) | overhead max (s) | target |")
    print("| --- | --- | --- | --- | --- |")
    for i, values in enumerate(overheads):
        if values:
            print(f"| {i + 1} | {weights[i]}% | {statistics.median(values):.3f} | {max(values):.3f} | < 1 s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
