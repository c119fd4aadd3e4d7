"""Events through the operator's own client against the local control plane, with faults.

One transition of one generation is one Event, however often it is reported and whatever
responses are lost on the way: `kubectl get events` shows it once, with its count.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tfleet.runtime.kube import Kube, load_config

pytestmark = pytest.mark.simulated

OPERATOR = ["tfleet/operator"]


@pytest.fixture
def kube(kubeconfig: Any) -> Kube:
    return Kube(load_config(str(kubeconfig)))


def regarding(namespace: str, generation: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": "fraud", "namespace": namespace, "uid": "3b1f0c6e-uid", "generation": generation,
                         "resourceVersion": "7"}}


def events(kubectl: Any, namespace: str) -> list[dict[str, Any]]:
    out = kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    return sorted(json.loads(out)["items"], key=lambda e: e["metadata"]["creationTimestamp"])


def test_the_same_transition_reported_twice_is_one_event_counted_twice(kube, kubectl, namespace):
    kube.post_event(regarding(namespace), "Normal", "RolloutStarted", "Started rolling out revision abc")
    kube.post_event(regarding(namespace), "Normal", "RolloutStarted", "Started rolling out revision abc")
    kube.post_event(regarding(namespace), "Normal", "RolloutStepAdvanced", "Step 2 of 2: weight 50%")
    kube.post_event(regarding(namespace, generation=2), "Normal", "RolloutStarted", "Started rolling out revision abc")
    seen = events(kubectl, namespace)
    assert [(e["reason"], e["count"]) for e in seen] == [
        ("RolloutStarted", 2), ("RolloutStepAdvanced", 1), ("RolloutStarted", 1)]
    assert all(e["involvedObject"]["name"] == "fraud" for e in seen)
    # kubectl shows the count (`kubectl events`, staging/src/k8s.io/kubectl/pkg/cmd/events: "(x2 over ...)").
    table = kubectl("events", "-n", namespace).stdout
    assert "(x2 over" in table, table


def test_a_lost_response_to_an_event_post_is_not_a_second_event(kube, kubectl, local_cluster, namespace):
    local_cluster.faults.add("internal_error_after_apply", user_agents=OPERATOR, verbs=["create"],
                             resources=["events"], namespaces=[namespace], count=1)
    try:
        kube.post_event(regarding(namespace), "Normal", "RolloutSucceeded", "Promoted revision abc")
        injected = local_cluster.faults.injected()
    finally:
        local_cluster.faults.clear()
    assert injected.get("internal_error_after_apply") == 1, injected
    seen = events(kubectl, namespace)
    # The first POST was applied, its answer lost; the retry found its own report on the Event.
    assert [(e["reason"], e["count"]) for e in seen] == [("RolloutSucceeded", 1)]


def test_a_lost_response_to_a_count_is_not_counted_twice(kube, kubectl, local_cluster, namespace):
    kube.post_event(regarding(namespace), "Warning", "RolloutRolledBack", "Rolled back revision abc")
    local_cluster.faults.add("internal_error_after_apply", user_agents=OPERATOR, verbs=["patch"],
                             resources=["events"], namespaces=[namespace], count=1)
    try:
        kube.post_event(regarding(namespace), "Warning", "RolloutRolledBack", "Rolled back revision abc")
        injected = local_cluster.faults.injected()
    finally:
        local_cluster.faults.clear()
    assert injected.get("internal_error_after_apply") == 1, injected
    assert [(e["reason"], e["count"]) for e in events(kubectl, namespace)] == [("RolloutRolledBack", 2)]


def test_a_failed_event_post_is_retried_until_it_lands(kube, kubectl, local_cluster, namespace):
    local_cluster.faults.add("service_unavailable", user_agents=OPERATOR, verbs=["create"],
                             resources=["events"], namespaces=[namespace], count=2)
    try:
        kube.post_event(regarding(namespace), "Normal", "RolloutStarted", "Started rolling out revision abc")
    finally:
        local_cluster.faults.clear()
    assert [(e["reason"], e["count"]) for e in events(kubectl, namespace)] == [("RolloutStarted", 1)]
