"""The kubelet's pod status as a function of behaviour and time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from e2e.localcluster.controllers import behaviour as bh
from e2e.localcluster.controllers.kubelet import (
    IPAllocator,
    Runtime,
    Timing,
    eviction_delay,
    image_id,
    not_ready_conditions,
    pod_status,
    status_changes,
)
from e2e.localcluster.controllers.nodes import build_node

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
TIMING = Timing(ready_delay=0.2, crash_interval=0.3)


def pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
        "spec": {
            "nodeName": "cpu-1",
            "containers": [{"name": "serving", "image": "tensorflow/serving:2.19.0"}],
            **spec,
        },
        "status": {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastTransitionTime": "2026-01-01T11:59:59Z",
                }
            ]
        },
    }


def runtime(text: str = "ready", restart_base: int = 0) -> Runtime:
    return Runtime(bh.parse_behaviour(text), T0, T0, "10.244.1.2", "172.18.0.3", restart_base)


def cond(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == kind)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_default_behaviour_runs_then_becomes_ready_after_the_delay():
    status, next_change = pod_status(pod(), runtime(), at(0.05), TIMING)
    assert status["phase"] == "Running"
    cs = status["containerStatuses"][0]
    assert cs["state"] == {"running": {"startedAt": "2026-01-01T12:00:00Z"}}
    assert (cs["ready"], cs["started"], cs["restartCount"]) == (False, True, 0)
    assert cs["imageID"].startswith("docker.io/tensorflow/serving@sha256:")
    assert cs["containerID"].startswith("containerd://")
    assert cond(status, "Ready")["status"] == "False"
    assert cond(status, "Ready")["reason"] == "ContainersNotReady"
    assert cond(status, "Ready")["message"] == "containers with unready status: [serving]"
    assert next_change == pytest.approx(0.15)
    assert status["podIP"] == "10.244.1.2" and status["podIPs"] == [{"ip": "10.244.1.2"}]
    assert status["hostIP"] == "172.18.0.3"

    status, next_change = pod_status(pod(), runtime(), at(0.2), TIMING)
    assert next_change is None
    assert status["containerStatuses"][0]["ready"] is True
    for kind in (
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
        "PodScheduled",
    ):
        assert cond(status, kind)["status"] == "True", kind
    # the scheduler's condition keeps its own transition time
    assert cond(status, "PodScheduled")["lastTransitionTime"] == "2026-01-01T11:59:59Z"


def test_ready_after_uses_its_own_delay():
    _, next_change = pod_status(pod(), runtime("ready-after=3s"), at(1), TIMING)
    assert next_change == pytest.approx(2)
    status, _ = pod_status(pod(), runtime("ready-after=3s"), at(3), TIMING)
    assert cond(status, "Ready")["status"] == "True"


def test_never_ready_runs_forever_unready():
    status, next_change = pod_status(pod(), runtime("never-ready"), at(3600), TIMING)
    assert next_change is None
    assert status["phase"] == "Running"
    assert status["containerStatuses"][0]["started"] is True
    assert cond(status, "Ready")["status"] == "False"


def test_crash_loop_restart_count_rises_with_time():
    counts = []
    for t in (0, 0.31, 0.61, 3.0):
        status, next_change = pod_status(
            pod(), runtime("crash-loop", restart_base=2), at(t), TIMING
        )
        counts.append(status["containerStatuses"][0]["restartCount"])
        assert next_change is not None and 0 < next_change <= 0.3 + 1e-9
    assert counts == [3, 4, 5, 13]
    cs = status["containerStatuses"][0]
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert "restarting failed container=serving pod=p_ns(u1)" in cs["state"]["waiting"]["message"]
    term = cs["lastState"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (1, "Error")
    assert (cs["ready"], cs["started"]) == (False, False)
    assert status["phase"] == "Running"
    assert cond(status, "ContainersReady")["status"] == "False"


def test_image_pull_error_then_back_off():
    status, next_change = pod_status(pod(), runtime("image-pull-error"), at(0), TIMING)
    assert status["phase"] == "Pending"
    waiting = status["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "ErrImagePull"
    assert next_change == pytest.approx(0.3)
    status, next_change = pod_status(pod(), runtime("image-pull-error"), at(1), TIMING)
    waiting = status["containerStatuses"][0]["state"]["waiting"]
    assert waiting == {
        "reason": "ImagePullBackOff",
        "message": 'Back-off pulling image "tensorflow/serving:2.19.0"',
    }
    assert next_change is None


def test_readiness_gates_hold_ready_until_their_condition_is_true():
    p = pod(readinessGates=[{"conditionType": "example.com/lb"}])
    status, _ = pod_status(p, runtime(), at(1), TIMING)
    assert cond(status, "ContainersReady")["status"] == "True"
    assert cond(status, "Ready")["status"] == "False"
    assert cond(status, "Ready")["reason"] == "ReadinessGatesNotReady"
    p["status"]["conditions"].append({"type": "example.com/lb", "status": "True"})
    status, _ = pod_status(p, runtime(), at(1), TIMING)
    assert cond(status, "Ready")["status"] == "True"
    # a condition owned by someone else is preserved
    assert cond(status, "example.com/lb")["status"] == "True"


def test_init_containers_are_reported_completed():
    p = pod(initContainers=[{"name": "fetch", "image": "busybox"}])
    status, _ = pod_status(p, runtime(), at(1), TIMING)
    init = status["initContainerStatuses"][0]
    assert init["state"]["terminated"]["reason"] == "Completed"
    assert init["imageID"].startswith("docker.io/library/busybox@sha256:")


def test_recomputing_at_a_later_time_in_a_stable_state_changes_nothing():
    p = pod()
    first, _ = pod_status(p, runtime(), at(1), TIMING)
    p["status"] = first
    again, _ = pod_status(p, runtime(), at(100), TIMING)
    assert status_changes(p["status"], again) == {}


def test_image_ids_name_the_registry():
    assert image_id("nginx").startswith("docker.io/library/nginx@sha256:")
    assert image_id("quay.io/org/app:1").startswith("quay.io/org/app@sha256:")
    assert image_id("localhost:5000/app:1").startswith("localhost:5000/app@sha256:")
    assert image_id("a:1") != image_id("a:2")


def test_ip_allocator_uses_the_node_cidr_and_reuses_released_addresses():
    node = build_node({"name": "cpu-1"}, 3, T0)
    ips = IPAllocator()
    first, second = ips.allocate(node), ips.allocate(node)
    assert (first, second) == ("10.244.3.2", "10.244.3.3")
    ips.release("cpu-1", first)
    assert ips.allocate(node) == first


def noexecute_node(*taints: dict[str, Any]) -> dict[str, Any]:
    node = build_node({"name": "n"}, 1, T0)
    node["spec"]["taints"] = list(taints)
    return node


DOWN = {
    "key": "node.kubernetes.io/not-ready",
    "effect": "NoExecute",
    "timeAdded": "2026-01-01T12:00:00Z",
}


def test_eviction_delay_follows_tolerations():
    assert eviction_delay(pod(), build_node({"name": "n"}, 1, T0), T0) is None
    assert eviction_delay(pod(), noexecute_node({"key": "k", "effect": "NoSchedule"}), T0) is None
    assert eviction_delay(pod(), noexecute_node(DOWN), T0) == 0
    forever = pod(
        tolerations=[
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}
        ]
    )
    assert eviction_delay(forever, noexecute_node(DOWN), T0) is None
    for_a_minute = pod(
        tolerations=[
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 60,
            }
        ]
    )
    assert eviction_delay(for_a_minute, noexecute_node(DOWN), at(10)) == pytest.approx(50)
    assert eviction_delay(for_a_minute, noexecute_node(DOWN), at(70)) == 0


def test_not_ready_conditions_only_flip_ready():
    p = pod()
    p["status"]["conditions"].append({"type": "Ready", "status": "True", "lastTransitionTime": "x"})
    conditions = not_ready_conditions(p, at(5))
    assert [c["type"] for c in conditions] == ["PodScheduled", "Ready"]
    assert (
        conditions[1]["status"] == "False"
        and conditions[1]["lastTransitionTime"] == "2026-01-01T12:00:05Z"
    )
    assert conditions[0] == p["status"]["conditions"][0]


def test_crash_loop_with_restart_policy_never_fails_the_pod_once():
    status, next_change = pod_status(
        pod(restartPolicy="Never"), runtime("crash-loop"), at(5), TIMING
    )
    assert status["phase"] == "Failed"
    assert next_change is None
    cs = status["containerStatuses"][0]
    assert cs["restartCount"] == 0
    assert cs["state"]["terminated"]["exitCode"] == 1
    assert cond(status, "Ready")["status"] == "False"
