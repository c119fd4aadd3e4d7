"""ReplicaSet status and victim ranking, Endpoints/EndpointSlices, and node topologies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from e2e.localcluster.controllers import common, nodes, pdb
from e2e.localcluster.controllers import endpoints as ep
from e2e.localcluster.controllers import replicaset as rsc

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def ts(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(
    name: str,
    ready_for: float | None = 60,
    phase: str = "Running",
    node: str | None = "cpu-1",
    ip: str | None = "10.244.1.2",
    restarts: int = 0,
    created: float = 100,
    labels: dict[str, str] | None = None,
    terminating: bool = False,
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    conditions = []
    if ready_for is not None:
        conditions.append({"type": "Ready", "status": "True", "lastTransitionTime": ts(ready_for)})
    else:
        conditions.append({"type": "Ready", "status": "False", "lastTransitionTime": ts(1)})
    p: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "labels": labels or {"app": "web"},
            "creationTimestamp": ts(created),
        },
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "x",
                    "ports": ports or [{"name": "grpc", "containerPort": 8500}],
                }
            ]
        },
        "status": {
            "phase": phase,
            "conditions": conditions,
            "containerStatuses": [{"name": "c", "restartCount": restarts}],
        },
    }
    if node:
        p["spec"]["nodeName"] = node
    if ip:
        p["status"]["podIP"] = ip
    if terminating:
        p["metadata"]["deletionTimestamp"] = ts(0)
    return p


# ----------------------------------------------------------------------- replicasets


def make_rs(replicas: int = 3, min_ready: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": "web-abc", "namespace": "ns", "uid": "rs-uid", "generation": 4},
        "spec": {
            "replicas": replicas,
            "minReadySeconds": min_ready,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            },
        },
    }


def test_replicaset_status_counts_active_ready_and_available_pods():
    pods = [
        pod("a"),
        pod("b", ready_for=None),
        pod("c", terminating=True),
        pod("d", phase="Failed"),
    ]
    status, recheck = rsc.replicaset_status(make_rs(), pods, NOW)
    assert status == {
        "replicas": 2,
        "fullyLabeledReplicas": 2,
        "readyReplicas": 1,
        "availableReplicas": 1,
        "observedGeneration": 4,
        "terminatingReplicas": 1,
    }
    assert recheck is None


def test_min_ready_seconds_delays_availability_and_asks_for_a_recheck():
    pods = [pod("a", ready_for=2), pod("b", ready_for=30)]
    status, recheck = rsc.replicaset_status(make_rs(min_ready=10), pods, NOW)
    assert (status["readyReplicas"], status["availableReplicas"]) == (2, 1)
    assert recheck == pytest.approx(8)


def test_pods_to_delete_prefers_the_least_valuable():
    pods = [
        pod("old-ready", ready_for=600, created=1000),
        pod("unscheduled", node=None, ready_for=None, phase="Pending"),
        pod("pending", ready_for=None, phase="Pending"),
        pod("not-ready", ready_for=None),
        pod("just-ready", ready_for=5),
        pod("restarting", ready_for=600, restarts=5, created=1000),
        pod("young", ready_for=600, created=10),
    ]
    order = [p["metadata"]["name"] for p in rsc.pods_to_delete(pods, len(pods))]
    assert order[:5] == ["unscheduled", "pending", "not-ready", "just-ready", "restarting"]
    assert order[5:] == ["young", "old-ready"]
    assert [p["metadata"]["name"] for p in rsc.pods_to_delete(pods, 2)] == [
        "unscheduled",
        "pending",
    ]


def test_build_pod_copies_template_and_sets_the_owner():
    p = rsc.build_pod(make_rs(), "web-abc-x2x2x")
    assert p["metadata"]["name"] == "web-abc-x2x2x"
    assert p["metadata"]["generateName"] == "web-abc-"
    assert p["metadata"]["labels"] == {"app": "web"}
    assert p["metadata"]["annotations"] == {"a": "b"}
    ref = p["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
        "ReplicaSet",
        "web-abc",
        "rs-uid",
        True,
    )
    assert p["spec"]["containers"][0]["image"] == "x"


def test_random_suffix_uses_the_safe_alphabet():
    s = rsc.random_suffix()
    assert len(s) == 5 and set(s) <= set(rsc.NAME_ALPHABET)


def test_status_differs_treats_absent_and_zero_alike():
    assert not rsc.status_differs({"replicas": 0}, {"replicas": 0, "readyReplicas": 0})
    assert rsc.status_differs({"replicas": 1}, {"replicas": 2})


# ------------------------------------------------------------------------- endpoints


def service(ports: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid", "labels": {"team": "ml"}},
        "spec": {
            "selector": {"app": "web"},
            "ports": ports
            if ports is not None
            else [{"name": "grpc", "port": 8500, "targetPort": "grpc"}],
            **spec,
        },
    }


def test_endpoints_split_ready_and_not_ready_and_skip_terminating():
    pods = [
        pod("a", ip="10.244.1.3"),
        pod("b", ip="10.244.1.2"),
        pod("c", ip="10.244.2.2", ready_for=None),
        pod("d", ip="10.244.2.3", terminating=True),
        pod("e", ip=None, ready_for=None, phase="Pending"),
    ]
    body = ep.desired_endpoints(service(), pods)
    assert body["metadata"]["labels"] == {
        "team": "ml",
        "endpoints.kubernetes.io/managed-by": "endpoint-controller",
    }
    (subset,) = body["subsets"]
    assert [a["ip"] for a in subset["addresses"]] == ["10.244.1.2", "10.244.1.3"]
    assert [a["ip"] for a in subset["notReadyAddresses"]] == ["10.244.2.2"]
    assert subset["ports"] == [{"name": "grpc", "port": 8500, "protocol": "TCP"}]
    assert subset["addresses"][0]["targetRef"] == {
        "kind": "Pod",
        "namespace": "ns",
        "name": "b",
        "uid": "uid-b",
    }
    assert subset["addresses"][0]["nodeName"] == "cpu-1"


def test_publish_not_ready_addresses_makes_everyone_ready():
    pods = [pod("a", ready_for=None), pod("b", ip="10.244.1.9", terminating=True)]
    (subset,) = ep.desired_endpoints(service(publishNotReadyAddresses=True), pods)["subsets"]
    assert len(subset["addresses"]) == 2 and "notReadyAddresses" not in subset


def test_named_target_ports_resolve_per_pod_and_group_into_subsets():
    pods = [
        pod("a", ip="10.244.1.2", ports=[{"name": "grpc", "containerPort": 8500}]),
        pod("b", ip="10.244.1.3", ports=[{"name": "grpc", "containerPort": 9000}]),
        pod("c", ip="10.244.1.4", ports=[{"name": "http", "containerPort": 8501}]),
    ]
    subsets = ep.desired_endpoints(service(), pods)["subsets"]
    assert [(s["ports"][0]["port"], [a["ip"] for a in s["addresses"]]) for s in subsets] == [
        (8500, ["10.244.1.2"]),
        (9000, ["10.244.1.3"]),
    ]


def test_numeric_and_missing_target_ports():
    svc = service(ports=[{"name": "a", "port": 80, "targetPort": 8080}, {"name": "b", "port": 81}])
    (subset,) = ep.desired_endpoints(svc, [pod("a")])["subsets"]
    assert subset["ports"] == [
        {"name": "a", "port": 8080, "protocol": "TCP"},
        {"name": "b", "port": 81, "protocol": "TCP"},
    ]


def test_headless_service_without_ports_and_no_pods():
    svc = service(ports=[], clusterIP="None")
    body = ep.desired_endpoints(svc, [pod("a")])
    assert body["metadata"]["labels"]["service.kubernetes.io/headless"] == ""
    assert body["subsets"] == [{"addresses": body["subsets"][0]["addresses"]}]
    assert "subsets" not in ep.desired_endpoints(svc, [])


def test_slices_carry_conditions_and_a_placeholder_when_empty():
    pods = [
        pod("a", ip="10.244.1.2"),
        pod("b", ip="10.244.1.3", ready_for=None),
        pod("c", ip="10.244.1.4", terminating=True),
    ]
    ((ports, endpoints),) = ep.desired_slices(service(), pods)
    assert ports == (("grpc", 8500, "TCP"),)
    assert [e["conditions"] for e in endpoints] == [
        {"ready": True, "serving": True, "terminating": False},
        {"ready": False, "serving": False, "terminating": False},
        {"ready": False, "serving": True, "terminating": True},
    ]
    assert ep.desired_slices(service(), []) == [((), [])]


def test_slices_hold_at_most_a_hundred_endpoints():
    pods = [pod(f"p{i}", ip=f"10.244.{i // 200}.{i % 200 + 2}") for i in range(250)]
    assert [len(e) for _, e in ep.desired_slices(service(), pods)] == [100, 100, 50]


def test_plan_slices_reuses_existing_and_writes_nothing_when_steady():
    svc = service()
    wanted = ep.desired_slices(svc, [pod("a")])
    updates, creates, deletes = ep.plan_slices(svc, wanted, [])
    assert (len(updates), len(creates), len(deletes)) == (0, 1, 0)
    created = creates[0]
    assert created["metadata"]["labels"]["kubernetes.io/service-name"] == "web"
    assert (
        created["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
        == "endpointslice-controller.k8s.io"
    )
    assert created["metadata"]["ownerReferences"][0]["uid"] == "svc-uid"
    assert created["addressType"] == "IPv4"
    assert ep.plan_slices(svc, wanted, [created]) == ([], [], [])
    # a pod more: the same slice is updated in place
    updates, creates, deletes = ep.plan_slices(
        svc, ep.desired_slices(svc, [pod("a"), pod("b", ip="10.244.1.9")]), [created]
    )
    assert (
        len(updates) == 1
        and updates[0][1]["metadata"]["name"] == created["metadata"]["name"]
        and not creates
        and not deletes
    )
    # two extra slices that are no longer needed are deleted
    extra = dict(created, endpoints=[], metadata=dict(created["metadata"], name="web-extra"))
    _, _, deletes = ep.plan_slices(svc, wanted, [created, extra])
    assert [d["metadata"]["name"] for d in deletes] == ["web-extra"]


def test_selector_subsets_enumerate_candidate_selectors():
    subs = common.selector_subsets({"a": "1", "b": "2", "c": "3"}, {1, 2})
    assert len(subs) == 3 + 3
    assert frozenset({("a", "1"), ("c", "3")}) in subs
    assert common.selector_subsets({f"k{i}": "v" for i in range(30)}, {15}) is None


def test_external_name_and_selectorless_services_are_left_alone():
    assert not ep.selects_pods(service(type="ExternalName"))
    assert not ep.selects_pods({"metadata": {"name": "x"}, "spec": {"ports": []}})


# ----------------------------------------------------------------------------- nodes


def test_default_topology_has_three_cpu_and_two_tainted_gpu_nodes():
    entries = nodes.expand_topology(None)
    built = [nodes.build_node(e, i, NOW) for i, e in enumerate(entries, start=1)]
    assert [n["metadata"]["name"] for n in built] == ["cpu-1", "cpu-2", "cpu-3", "gpu-1", "gpu-2"]
    cpu, gpu = built[0], built[3]
    assert (
        cpu["status"]["allocatable"]["cpu"] == "8"
        and cpu["status"]["allocatable"]["memory"] == "32Gi"
    )
    assert cpu["status"]["allocatable"]["pods"] == "110"
    assert "taints" not in cpu["spec"]
    assert (
        gpu["status"]["allocatable"]["nvidia.com/gpu"] == "4"
        and gpu["status"]["capacity"]["cpu"] == "16"
    )
    assert gpu["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    assert gpu["spec"]["taints"] == [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    ]
    for n in built:
        labels = n["metadata"]["labels"]
        assert labels["kubernetes.io/hostname"] == n["metadata"]["name"]
        assert (labels["kubernetes.io/os"], labels["kubernetes.io/arch"]) == ("linux", "amd64")
        assert nodes.node_is_ready(n)
    assert nodes.node_internal_ip(cpu) == "172.18.0.3"
    assert cpu["spec"]["podCIDR"] == "10.244.1.0/24"


def test_topology_count_expands_and_list_form_is_accepted():
    entries = nodes.expand_topology([{"name": "w", "count": 3, "labels": {"zone": "a"}}])
    assert [e["name"] for e in entries] == ["w-1", "w-2", "w-3"]


@pytest.mark.parametrize(
    ("topology", "message"),
    [
        ({"nodes": []}, "non-empty list"),
        ({"nodes": [{"labels": {}}]}, r"nodes\[0\].name is required"),
        ({"nodes": [{"name": "a"}, {"name": "a"}]}, "unique"),
        (
            {"nodes": [{"name": "a", "taints": [{"key": "k", "effect": "Sometimes"}]}]},
            "effect must be",
        ),
        ({"nodes": [{"name": "a", "allocatable": {"cpu": "lots"}}]}, r"allocatable\[cpu\]"),
    ],
)
def test_invalid_topologies_are_rejected_with_the_field(topology, message):
    with pytest.raises(nodes.TopologyError, match=message):
        nodes.expand_topology(topology)


# ------------------------------------------------------------------ disruption budgets


def budget(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "b", "namespace": "ns", "generation": 2},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, **spec},
    }


@pytest.mark.parametrize(
    ("spec", "scale", "expected"),
    [
        # (currentHealthy, desiredHealthy, expectedPods, disruptionsAllowed)
        ({"minAvailable": 2}, 4, (3, 2, 4, 1)),
        ({"minAvailable": 4}, 4, (3, 4, 4, 0)),
        ({"minAvailable": "50%"}, 5, (3, 3, 5, 0)),  # 2.5 rounds up
        ({"minAvailable": "50%"}, 4, (3, 2, 4, 1)),
        ({"maxUnavailable": 1}, 4, (3, 3, 4, 0)),
        ({"maxUnavailable": "30%"}, 10, (3, 7, 10, 0)),  # 3 unavailable allowed, rounded up
        ({"maxUnavailable": 1}, None, (3, 3, 4, 0)),  # no controller: counts pods
    ],
)
def test_budget_status(spec, scale, expected):
    pods = [pod("a"), pod("b"), pod("c"), pod("d", ready_for=None), pod("e", terminating=True)][:4]
    status = pdb.budget_status(budget(**spec), pods, scale, NOW)
    assert (
        status["currentHealthy"],
        status["desiredHealthy"],
        status["expectedPods"],
        status["disruptionsAllowed"],
    ) == expected
    assert status["observedGeneration"] == 2
    cond = status["conditions"][0]
    assert cond["type"] == "DisruptionAllowed"
    assert (cond["status"], cond["reason"]) == (
        ("True", "SufficientPods") if expected[3] else ("False", "InsufficientPods")
    )


def test_terminating_pods_are_not_healthy():
    status = pdb.budget_status(
        budget(minAvailable=1), [pod("a", terminating=True), pod("b")], None, NOW
    )
    assert status["currentHealthy"] == 1 and status["disruptionsAllowed"] == 0


def with_ready(status: str, taints: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    node = nodes.build_node({"name": "n", "taints": taints or []}, 1, NOW)
    for c in node["status"]["conditions"]:
        if c["type"] == "Ready":
            c["status"] = status
    return node


def test_lifecycle_taints_follow_the_ready_condition():
    gpu = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    assert nodes.lifecycle_taints(with_ready("True", [gpu]), NOW) == [gpu]
    down = nodes.lifecycle_taints(with_ready("False", [gpu]), NOW)
    assert down == [
        gpu,
        {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"},
        {
            "key": "node.kubernetes.io/not-ready",
            "effect": "NoExecute",
            "timeAdded": "2026-01-01T12:00:00Z",
        },
    ]
    # an existing taint keeps its timeAdded; recovery removes only the lifecycle taints
    later = NOW + timedelta(minutes=5)
    assert nodes.lifecycle_taints(with_ready("False", down), later) == down
    assert nodes.lifecycle_taints(with_ready("True", down), later) == [gpu]
    unknown = nodes.lifecycle_taints(with_ready("Unknown"), NOW)
    assert {t["key"] for t in unknown} == {"node.kubernetes.io/unreachable"}
