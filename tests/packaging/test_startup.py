"""A starting operator says it has started, and turns ready, only once it has seen the cluster.

The control plane refuses kopf's first lists with 503, as an API server does while it
restarts. Until those lists succeed and the watches have delivered what exists, the
operator neither logs "Started" nor answers /readyz with 200.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import yaml

from tests.packaging.cluster import Operator, PrivateCluster, isvc, wait_for

REFUSED_LISTS = 3


def server(cluster: PrivateCluster) -> str:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    return str(config["clusters"][0]["cluster"]["server"])


def faults(cluster: PrivateCluster, method: str = "GET", rule: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(rule).encode() if rule is not None else None
    request = urllib.request.Request(server(cluster) + "/localcluster/faults", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else {}


def test_started_and_ready_wait_for_the_initial_listings(private_cluster: PrivateCluster):
    cluster = private_cluster
    ns = cluster.namespace("startup")
    cluster.apply(isvc("existing-a", ns), isvc("existing-b", ns))
    faults(cluster, "POST", {"rules": [{"kind": "service_unavailable", "userAgents": ["tfleet/operator"], "verbs": ["list"],
                                        "resources": ["inferenceservices"], "count": REFUSED_LISTS}]})
    op = Operator(cluster, "startup", "--all-namespaces")
    try:
        ready_at_injections = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            injected = faults(cluster)["injected"].get("service_unavailable", 0)
            if op.health("/readyz") == 200:
                ready_at_injections = injected
                break
            assert "Started the operator" not in op.log() or injected == REFUSED_LISTS, op.log()
            time.sleep(0.05)
        assert ready_at_injections == REFUSED_LISTS, f"ready after {ready_at_injections} refused lists:\n{op.log()}"
        started = op.wait_for_log(r"Started the operator: the initial listings of (\d+) objects")
        assert int(started.group(1)) >= 2  # at least the two InferenceServices
        # And the operator got to work on what it listed.
        wait_for(lambda: len(cluster.get("deployments", "-n", ns)["items"]) == 2, what="both Deployments")
        assert "Traceback" not in op.log(), op.log()
    finally:
        op.stop()
        faults(cluster, "DELETE")
