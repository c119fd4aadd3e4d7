"""The second half of `make demo`: a model served by pods that really run, under load.

A second local control plane runs every pod as processes (the TF Serving stand-in and the
real health bridge) with kube-proxy and the cluster DNS. The demo serves version 1 of a
model, sends a live Predict load through the Service, rolls version 2 out as a canary while
printing one line per second (answers by version, failures), then rolls out a version 3
whose directory holds no SavedModel and shows the rollback with TF Serving's own error.
Each version's manifest is written to a file, rendered with `tfleet render` and applied with
kubectl as it is: the revision the operator rolls out is the one render printed.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from e2e import processes
from e2e.load import Linear, PredictLoad
from e2e.render import render, revisions_of
from e2e.serving import ServingCluster, wait_for

NAMESPACE = "serving"
NAME = "fraud"
FUNCTIONS = {1: Linear(1.0, 1.0), 2: Linear(2.0, 0.0), 3: Linear(3.0, 0.0)}
STEPS = [{"weight": 25, "pause": "3s"}, {"weight": 50, "pause": "3s"}]


def banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def show(cluster: ServingCluster, *args: str) -> None:
    print(f"$ kubectl {' '.join(args)}", flush=True)
    result = cluster.kubectl(*args, check=False)
    print((result.stdout + result.stderr).rstrip(), flush=True)


def manifest(version: int) -> dict[str, Any]:
    return {
        "apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceService",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "model": {"basePath": f"s3://models/{NAME}", "version": version},
            "replicas": 2,
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
            "server": {"maxConnectionAgeSeconds": 2},
            "pod": {"terminationGracePeriodSeconds": 8, "drainSeconds": 3},
            "rollout": {"steps": STEPS},
        },
    }


def rollout_line(cluster: ServingCluster) -> tuple[str, str]:
    ro = (cluster.isvc(NAME, NAMESPACE).get("status") or {}).get("rollout") or {}
    return str(ro.get("phase", "")), str(ro.get("message", ""))


def follow(cluster: ServingCluster, loads: list[PredictLoad], until: str | None, timeout: float = 120) -> None:
    """One line per second: the answers of the last second by version, failures, the rollout;
    until the rollout reaches phase `until` (None: for `timeout` seconds)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        time.sleep(1)
        now = time.monotonic()
        window = [o for load in loads for o in load.outcomes(since=now - 1, until=now)]
        answered = Counter(o.version for o in window if o.ok)
        failed = sum(1 for o in window if not o.ok)
        phase, message = rollout_line(cluster)
        by_version = "  ".join(f"v{v}: {answered.get(v, 0):3d} ok" for v in sorted(FUNCTIONS))
        print(f"  {now - start:4.0f}s  {by_version}  failed: {failed:2d}   {phase}: {message[:100]}", flush=True)
        if phase == until:
            return
    if until is not None:
        raise SystemExit(f"the rollout did not reach {until} within {timeout:.0f}s")


def apply_version(cluster: ServingCluster, workdir: Path, version: int) -> str:
    """Writes version `version`'s manifest, renders it and applies that same file; the
    revision render printed for it."""
    path = workdir / f"{NAME}-v{version}.yaml"
    path.write_text(yaml.safe_dump(manifest(version), sort_keys=False))
    revision = revisions_of(render(path))[NAME]
    cluster.kubectl("apply", "-f", str(path))
    print(f"  $ kubectl apply -f {path.name}   (tfleet render -f {path.name}: revision {revision})", flush=True)
    return revision


def rolled_out_revision(cluster: ServingCluster) -> str:
    ro = (cluster.isvc(NAME, NAMESPACE).get("status") or {}).get("rollout") or {}
    return str(ro.get("canaryRevision") or ro.get("failedRevision") or ro.get("stableRevision") or "")


def expect_revision(cluster: ServingCluster, rendered: str) -> None:
    wait_for(lambda: rolled_out_revision(cluster) == rendered, 60, f"revision {rendered} (as tfleet render said)")


def run(keep: bool = False, kept: list[processes.Kept] | None = None) -> None:
    """The serving half of the demo. `keep`: leave its control plane and operator running,
    recorded in `kept`."""
    workdir = Path(tempfile.mkdtemp(prefix="tfleet-demo-serving-", dir="/var/tmp"))
    banner("Serving on running pods: a local cluster whose pods are processes")
    with ServingCluster(workdir, detached=keep) as cluster:
        if keep and kept is not None:
            kept.append(processes.Kept("Serving on running pods", cluster.kubeconfig,
                                       f"kubectl get tfis,pods,services -n {NAMESPACE} -o wide",
                                       cluster.keep_running(), workdir))
        print(f"  kubeconfig: {cluster.kubeconfig}; logs in {workdir}")
        cluster.kubectl("create", "namespace", NAMESPACE)
        for version, f in FUNCTIONS.items():
            # Version 3's directory holds no SavedModel: TF Serving cannot load it.
            cluster.write_model(f"s3://models/{NAME}", version, {"function": {"linear": {"a": f.a, "b": f.b}},
                                                                "load_seconds": 1}, saved_model=version != 3)
        expect_revision(cluster, apply_version(cluster, workdir, 1))
        wait_for(lambda: len(cluster.ready_pods(NAME, NAMESPACE)) == 2, 120, "2 ready pods")
        cluster.kubectl("wait", "--for=condition=Ready", f"tfis/{NAME}", "-n", NAMESPACE, "--timeout=60s")
        show(cluster, "get", "tfis,pods,services", "-n", NAMESPACE, "-o", "wide")
        print(f"  clients reach the model at {cluster.target(NAME, NAMESPACE)} (the cluster DNS, then kube-proxy)")

        loads = [PredictLoad(cluster.target(NAME, NAMESPACE), NAME, FUNCTIONS) for _ in range(4)]
        for load in loads:
            load.start()
        try:
            banner("Version 2 rolls out as a canary under a live Predict load (4 clients, 50 requests/s each)")
            expect_revision(cluster, apply_version(cluster, workdir, 2))
            follow(cluster, loads, "Succeeded")
            follow(cluster, loads, None, timeout=4)  # the old pods drain and leave the Service
            banner("Version 3 cannot load: the canary is rolled back with TF Serving's own error")
            expect_revision(cluster, apply_version(cluster, workdir, 3))
            follow(cluster, loads, "RolledBack")
        finally:
            for load in loads:
                load.stop()
        outcomes = [o for load in loads for o in load.outcomes()]
        failed = [o for o in outcomes if not o.ok]
        print(f"\n  {len(outcomes)} requests, {len(failed)} failed; answered by version: "
              f"{dict(sorted(Counter(o.version for o in outcomes if o.ok).items()))}")
        show(cluster, "get", "tfis", NAME, "-n", NAMESPACE)
        status = cluster.isvc(NAME, NAMESPACE)["status"]
        print(f"  status.rollout.message: {status['rollout']['message']}")
        events = json.loads(cluster.kubectl("get", "events", "-n", NAMESPACE, "-o", "json",
                                            "--field-selector", f"involvedObject.name={NAME}").stdout)["items"]
        for event in events:
            if event["type"] == "Warning":
                print(f"  Event {event['reason']}: {event['message']}")
