"""Paced rollouts through a real operator: `--max-concurrent-rollouts 3`, twelve InferenceServices
bumped at once. Never more than three roll at a time; the others wait with phase Queued, in
the order they were queued, and every one of them rolls out in the end."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any

from tests.packaging.cluster import Operator, PrivateCluster, isvc, wait_for

COUNT, LIMIT = 12, 3
ROLLOUT = {"steps": [{"weight": 50, "pause": "1s"}]}


def listing(cluster: PrivateCluster, ns: str) -> list[dict[str, Any]]:
    return list(cluster.get("tfis", "-n", ns)["items"])


def test_twelve_services_changed_at_once_roll_three_at_a_time(private_cluster: PrivateCluster):
    cluster = private_cluster
    ns = cluster.namespace("pacing")
    op = Operator(cluster, "pacing", "--all-namespaces", "--max-concurrent-rollouts", str(LIMIT))
    try:
        op.wait_for_log("Started the operator")
        names = [f"svc-{i:02d}" for i in range(COUNT)]
        cluster.apply(*(isvc(n, ns, replicas=1, rollout=ROLLOUT) for n in names))
        cluster.kubectl("wait", "--for=condition=RolledOut", "tfis", "--all", "-n", ns, "--timeout=90s")

        most, queued_seen, stop = [0], set(), threading.Event()

        def sample() -> None:
            while not stop.wait(0.2):
                items = listing(cluster, ns)
                rolling = [i["metadata"]["name"] for i in items
                           if ((i.get("status") or {}).get("rollout") or {}).get("phase") in
                           ("Progressing", "Promoting", "Paused")]
                most[0] = max(most[0], len(rolling))
                queued_seen.update(i["metadata"]["name"] for i in items
                                   if ((i.get("status") or {}).get("rollout") or {}).get("phase") == "Queued")

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        bumped = []
        for n in names:
            obj = isvc(n, ns, replicas=1, rollout=ROLLOUT)
            obj["spec"]["model"]["version"] = 2
            bumped.append(obj)
        cluster.apply(*bumped)
        try:
            wait_for(lambda: all(((i.get("status") or {}).get("rollout") or {}).get("phase") == "Succeeded"
                                 and i["status"]["observedGeneration"] == i["metadata"]["generation"]
                                 for i in listing(cluster, ns)), timeout=150, what="every rollout to succeed")
        finally:
            stop.set()
            sampler.join(timeout=5)
        assert 0 < most[0] <= LIMIT, f"{most[0]} rollouts ran at once"
        assert len(queued_seen) >= COUNT - LIMIT - 1, queued_seen  # the others waited
        # Every one started (a rollout shorter than a sample may never be seen running: the
        # Events count them all).
        started = json.loads(cluster.kubectl("get", "events", "-n", ns, "--field-selector", "reason=RolloutStarted",
                                             "-o", "json").stdout)["items"]
        assert sorted({e["involvedObject"]["name"] for e in started}) == names
        # Queued services said why, with their place, and were told apart by an Event.
        events = json.loads(cluster.kubectl("get", "events", "-n", ns, "--field-selector", "reason=RolloutQueued",
                                            "-o", "json").stdout)["items"]
        assert len(events) >= COUNT - LIMIT - 1
        assert all("at most 3 rollouts run at once" in e["message"] for e in events)
        assert "Traceback" not in op.log(), op.log()

        # Promote skips the queue: with the slots full, a queued service promoted by hand rolls out.
        slow = {"steps": [{"weight": 50, "pause": "60s"}]}
        again = []
        for n in names:
            obj = isvc(n, ns, replicas=1, rollout=slow)
            obj["spec"]["model"]["version"] = 3
            again.append(obj)
        cluster.apply(*again)

        def phases() -> dict[str, str]:
            return {i["metadata"]["name"]: ((i.get("status") or {}).get("rollout") or {}).get("phase", "")
                    for i in listing(cluster, ns) if i["status"]["observedGeneration"] == i["metadata"]["generation"]}

        wait_for(lambda: list(phases().values()).count("Queued") == COUNT - LIMIT, what="the queue to fill")
        queued = sorted(n for n, p in phases().items() if p == "Queued")[0]
        promote = subprocess.run([sys.executable, "-m", "tfleet.cli", "rollout", "promote", queued, "-n", ns,
                                  "--kubeconfig", str(cluster.kubeconfig)], capture_output=True, text=True, timeout=60)
        assert promote.returncode == 0, promote.stderr
        wait_for(lambda: phases().get(queued) == "Succeeded", timeout=60, what="the promoted service to roll out")
        assert list(phases().values()).count("Progressing") == LIMIT  # the others kept their slots
        time.sleep(0.5)
    finally:
        op.stop()
