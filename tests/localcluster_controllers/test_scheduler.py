"""Scheduler decisions: filters, fit, scoring and the real FailedScheduling message."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import pytest
from e2e.localcluster.controllers import scheduler as sch
from e2e.localcluster.controllers.nodes import build_node, expand_topology

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def default_nodes() -> list[dict[str, Any]]:
    return [build_node(e, i, NOW) for i, e in enumerate(expand_topology(None), start=1)]


def pod(
    requests: dict[str, Any] | None = None, limits: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return {
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"containers": [{"name": "c", "image": "x", "resources": resources}], **spec},
    }


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def test_gpu_pod_without_toleration_gets_the_real_message():
    decision = sch.schedule(pod(limits={"nvidia.com/gpu": 1}), default_nodes(), {})
    assert decision.node is None
    assert decision.message == (
        "0/5 nodes are available: 2 node(s) had untolerated taint {nvidia.com/gpu: present}, "
        "3 Insufficient nvidia.com/gpu. preemption: 0/5 nodes are available: "
        "5 Preemption is not helpful for scheduling."
    )


def test_gpu_pod_with_toleration_lands_on_a_gpu_node():
    decision = sch.schedule(
        pod(limits={"nvidia.com/gpu": 2}, tolerations=[GPU_TOLERATION]), default_nodes(), {}
    )
    assert decision.node in ("gpu-1", "gpu-2")


def test_limits_count_as_requests_when_requests_are_absent():
    assert sch.pod_requests(pod(limits={"nvidia.com/gpu": "1", "memory": "1Gi"})) == {
        "nvidia.com/gpu": 1,
        "memory": 2**30,
    }
    assert sch.pod_requests(pod(requests={"cpu": "500m"}, limits={"cpu": "2"})) == {
        "cpu": Fraction(1, 2)
    }


def test_init_containers_count_at_their_largest_and_overhead_adds():
    p = pod(requests={"cpu": "1"})
    p["spec"]["initContainers"] = [
        {"name": "i1", "resources": {"requests": {"cpu": "3"}}},
        {"name": "i2", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}},
    ]
    p["spec"]["overhead"] = {"cpu": "100m"}
    assert sch.pod_requests(p) == {"cpu": Fraction(31, 10), "memory": 2**30}


def test_insufficient_resources_are_listed_per_resource():
    decision = sch.schedule(
        pod(requests={"cpu": "100", "memory": "1Ti"}, tolerations=[GPU_TOLERATION]),
        default_nodes(),
        {},
    )
    assert decision.message.startswith(
        "0/5 nodes are available: 5 Insufficient cpu, 5 Insufficient memory."
    )
    # more than any node has at all: evicting pods cannot help
    assert decision.message.endswith(
        "preemption: 0/5 nodes are available: 5 Preemption is not helpful for scheduling."
    )


def test_resources_already_used_are_taken_into_account():
    nodes = default_nodes()[:1]  # cpu-1: 8 cpus
    used = {"cpu-1": Counter({"cpu": Fraction(7), "pods": 3})}
    assert sch.schedule(pod(requests={"cpu": "1"}), nodes, used).node == "cpu-1"
    decision = sch.schedule(pod(requests={"cpu": "1500m"}), nodes, used)
    assert decision.node is None
    assert decision.message == (
        "0/1 nodes are available: 1 Insufficient cpu. "
        "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
    )


def test_too_many_pods():
    nodes = default_nodes()[:1]
    decision = sch.schedule(pod(), nodes, {"cpu-1": Counter({"pods": 110})})
    assert decision.message.startswith("0/1 nodes are available: 1 Too many pods.")


def test_node_selector_and_affinity_reject_with_the_affinity_message():
    decision = sch.schedule(pod(nodeSelector={"disk": "ssd"}), default_nodes(), {})
    assert decision.message.startswith(
        "0/5 nodes are available: 2 node(s) had untolerated taint {nvidia.com/gpu: present}, "
        "3 node(s) didn't match Pod's node affinity/selector."
    )
    assert (
        sch.schedule(
            pod(nodeSelector={"kubernetes.io/hostname": "cpu-2"}), default_nodes(), {}
        ).node
        == "cpu-2"
    )


@pytest.mark.parametrize(
    ("expressions", "expected"),
    [
        ([{"key": "kubernetes.io/hostname", "operator": "In", "values": ["cpu-3"]}], {"cpu-3"}),
        (
            [{"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["cpu-1", "cpu-2"]}],
            {"cpu-3"},
        ),
        (
            [{"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"}],
            {"cpu-1", "cpu-2", "cpu-3"},
        ),
        (
            [{"key": "nvidia.com/gpu.present", "operator": "Exists"}],
            set(),
        ),  # tainted, not tolerated
        ([{"key": "kubernetes.io/os", "operator": "In", "values": ["windows"]}], set()),
    ],
)
def test_required_node_affinity(expressions, expected):
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": expressions}]
            }
        }
    }
    nodes = default_nodes()
    feasible = {
        n["metadata"]["name"]
        for n in nodes
        if not sch.filter_node(pod(affinity=affinity), {}, n, {}).reasons
    }
    assert feasible == expected


def test_node_selector_terms_are_ored_and_match_fields_work():
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchFields": [
                            {"key": "metadata.name", "operator": "In", "values": ["cpu-1"]}
                        ]
                    },
                    {
                        "matchExpressions": [
                            {"key": "kubernetes.io/hostname", "operator": "In", "values": ["cpu-2"]}
                        ]
                    },
                ]
            }
        }
    }
    nodes = default_nodes()
    feasible = {
        n["metadata"]["name"]
        for n in nodes
        if not sch.filter_node(pod(affinity=affinity), {}, n, {}).reasons
    }
    assert feasible == {"cpu-1", "cpu-2"}


@pytest.mark.parametrize(
    ("toleration", "tolerated"),
    [
        ({"key": "nvidia.com/gpu", "operator": "Exists"}, True),
        ({"operator": "Exists"}, True),
        ({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}, True),
        ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "other"}, False),
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}, False),
        ({"key": "other", "operator": "Exists"}, False),
    ],
)
def test_tolerations_against_the_gpu_taint(toleration, tolerated):
    taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    assert sch.tolerates(toleration, taint) is tolerated


def test_prefer_no_schedule_taints_do_not_block():
    node = build_node(
        {"name": "n", "taints": [{"key": "k", "value": "v", "effect": "PreferNoSchedule"}]}, 1, NOW
    )
    assert sch.untolerated_taint(pod(), node) is None


def test_cordoned_node_is_skipped_unless_tolerated():
    node = build_node({"name": "n", "unschedulable": True}, 1, NOW)
    assert sch.filter_node(pod(), {}, node, {}).reasons == ["node(s) were unschedulable"]
    tol = {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}
    assert sch.filter_node(pod(tolerations=[tol]), {}, node, {}).reasons == []


def test_least_allocated_node_wins():
    nodes = default_nodes()[:3]
    used = {
        "cpu-1": Counter({"cpu": Fraction(6), "pods": 4}),
        "cpu-2": Counter({"cpu": Fraction(1), "pods": 1}),
    }
    assert sch.schedule(pod(requests={"cpu": "1"}), nodes, used).node == "cpu-3"
    used["cpu-3"] = Counter({"cpu": Fraction(4), "pods": 2})
    assert sch.schedule(pod(requests={"cpu": "1"}), nodes, used).node == "cpu-2"


def test_no_nodes_at_all():
    assert sch.schedule(pod(), [], {}).message == "no nodes available to schedule pods"


def test_pending_unbound_excludes_bound_terminating_and_other_schedulers():
    assert sch.is_pending_unbound(pod())
    assert not sch.is_pending_unbound(pod(nodeName="cpu-1"))
    assert not sch.is_pending_unbound(pod(schedulerName="volcano"))
    terminating = pod()
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert not sch.is_pending_unbound(terminating)


def test_with_condition_keeps_transition_time_when_status_is_unchanged():
    old = [{"type": "PodScheduled", "status": "False", "lastTransitionTime": "T0", "message": "a"}]
    new = sch.with_condition(
        old, {"type": "PodScheduled", "status": "False", "lastTransitionTime": "T1", "message": "b"}
    )
    assert new == [
        {"type": "PodScheduled", "status": "False", "lastTransitionTime": "T0", "message": "b"}
    ]
    flipped = sch.with_condition(
        old, {"type": "PodScheduled", "status": "True", "lastTransitionTime": "T2"}
    )
    assert flipped[0]["lastTransitionTime"] == "T2"
