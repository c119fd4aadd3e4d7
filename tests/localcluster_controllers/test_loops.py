"""The controller loops together, against the control plane's in-process store (no HTTP)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from e2e.localcluster import controllers
from e2e.localcluster.controllers import behaviour as bh
from e2e.localcluster.errors import ApiError
from e2e.localcluster.store import Cluster

FAST = {
    "ready_delay_seconds": 0.05,
    "crash_loop_interval_seconds": 0.1,
    "deletion_grace_seconds": 0.05,
    "hpa_sync_seconds": 0.2,
}


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    c = Cluster()
    c.start()
    tasks = controllers.start(c, FAST)
    await c.create(
        "v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}}
    )
    try:
        yield c
    finally:
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await c.stop()
        # a loop that died on its own (not by our cancel) would show up here; only the
        # node registration finishes by itself
        assert all(r is None or isinstance(r, asyncio.CancelledError) for r in results), results


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await check()
            if last:
                return last
        except (AssertionError, ApiError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout}s; last: {last!r}")
        await asyncio.sleep(0.02)


def deployment(
    name: str = "web",
    replicas: int = 3,
    image: str = "tf:1",
    annotations: dict | None = None,
    **spec: Any,
) -> dict:
    template: dict[str, Any] = {
        "metadata": {"labels": {"app": name}},
        "spec": {
            "containers": [
                {"name": "c", "image": image, "ports": [{"name": "grpc", "containerPort": 8500}]}
            ]
        },
    }
    if annotations:
        template["metadata"]["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": template,
            **spec,
        },
    }


def raw_pod(name: str, **spec: Any) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns", "labels": {"app": name}},
        "spec": {"containers": [{"name": "c", "image": "tf:1"}], **spec},
    }


async def status_of(c: Cluster, resource: str, name: str, ns: str = "ns") -> dict:
    return (await c.get(resource, ns, name)).get("status") or {}


def condition(status: dict, kind: str) -> dict:
    return next((x for x in status.get("conditions") or [] if x["type"] == kind), {})


async def pods_of(c: Cluster, app: str) -> list[dict]:
    return [
        p
        for p in await c.list("v1/pods", "ns")
        if p["metadata"].get("labels", {}).get("app") == app
    ]


async def test_nodes_are_registered_from_the_default_topology(cluster):
    nodes = await eventually(lambda: _len_at_least(cluster.list("v1/nodes"), 5))
    assert sorted(n["metadata"]["name"] for n in nodes) == [
        "cpu-1",
        "cpu-2",
        "cpu-3",
        "gpu-1",
        "gpu-2",
    ]
    gpu = next(n for n in nodes if n["metadata"]["name"] == "gpu-1")
    assert gpu["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    assert condition(gpu["status"], "Ready")["status"] == "True"


async def _len_at_least(coro: Awaitable[list], n: int) -> list | None:
    items = await coro
    return items if len(items) >= n else None


async def test_deployment_becomes_available_and_service_gets_endpoints(cluster):
    await cluster.create("apps/v1/deployments", deployment())
    await cluster.create(
        "v1/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {
                "selector": {"app": "web"},
                "ports": [{"name": "grpc", "port": 8500, "targetPort": "grpc"}],
            },
        },
    )

    async def available():
        s = await status_of(cluster, "apps/v1/deployments", "web")
        return (
            s
            if s.get("availableReplicas") == 3
            and condition(s, "Progressing").get("reason") == "NewReplicaSetAvailable"
            else None
        )

    s = await eventually(available)
    assert (s["replicas"], s["updatedReplicas"], s["readyReplicas"], s["observedGeneration"]) == (
        3,
        3,
        3,
        1,
    )
    assert condition(s, "Available")["reason"] == "MinimumReplicasAvailable"
    pods = await pods_of(cluster, "web")
    assert len(pods) == 3
    for p in pods:
        assert p["spec"]["nodeName"].startswith("cpu-")  # GPU nodes are tainted
        assert p["status"]["phase"] == "Running"
        assert p["status"]["podIP"].startswith("10.244.")
        assert condition(p["status"], "Ready")["status"] == "True"
        assert p["metadata"]["name"].startswith(p["metadata"]["ownerReferences"][0]["name"] + "-")

    async def endpoints_ready():
        e = await cluster.get("v1/endpoints", "ns", "web")
        subsets = e.get("subsets") or []
        return e if subsets and len(subsets[0].get("addresses") or []) == 3 else None

    e = await eventually(endpoints_ready)
    assert e["subsets"][0]["ports"] == [{"name": "grpc", "port": 8500, "protocol": "TCP"}]
    assert sorted(a["ip"] for a in e["subsets"][0]["addresses"]) == sorted(
        p["status"]["podIP"] for p in pods
    )
    slices = [
        s
        for s in await cluster.list("discovery.k8s.io/v1/endpointslices", "ns")
        if s["metadata"]["labels"].get("kubernetes.io/service-name") == "web"
    ]
    assert len(slices) == 1 and len(slices[0]["endpoints"]) == 3
    assert all(ep["conditions"]["ready"] for ep in slices[0]["endpoints"])

    # A settled cluster writes nothing more.
    await asyncio.sleep(0.3)
    rv = cluster.resource_version
    await asyncio.sleep(0.5)
    assert cluster.resource_version == rv


async def test_rolling_update_replaces_every_pod(cluster):
    await cluster.create("apps/v1/deployments", deployment(replicas=4))
    await eventually(lambda: _status_is(cluster, "web", availableReplicas=4))
    old_pods = {p["metadata"]["name"] for p in await pods_of(cluster, "web")}
    await cluster.patch(
        "apps/v1/deployments",
        "ns",
        "web",
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "c",
                                "image": "tf:2",
                                "ports": [{"name": "grpc", "containerPort": 8500}],
                            }
                        ]
                    }
                }
            }
        },
    )
    s = await eventually(
        lambda: _status_is(
            cluster, "web", updatedReplicas=4, availableReplicas=4, replicas=4, observedGeneration=2
        )
    )
    assert condition(s, "Progressing")["reason"] == "NewReplicaSetAvailable"
    d = await cluster.get("apps/v1/deployments", "ns", "web")
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    rss = await cluster.list("apps/v1/replicasets", "ns")
    assert sorted(r["spec"]["replicas"] for r in rss) == [0, 4]

    async def replaced():
        pods = await pods_of(cluster, "web")
        names = {p["metadata"]["name"] for p in pods}
        return len(pods) == 4 and not (names & old_pods)

    await eventually(replaced)
    assert {p["spec"]["containers"][0]["image"] for p in await pods_of(cluster, "web")} == {"tf:2"}


async def _status_is(c: Cluster, name: str, **want: int) -> dict | None:
    s = await status_of(c, "apps/v1/deployments", name)
    return s if all(s.get(k, 0) == v for k, v in want.items()) else None


async def test_recreate_has_no_overlap(cluster):
    await cluster.create(
        "apps/v1/deployments", deployment(replicas=2, strategy={"type": "Recreate"})
    )
    await eventually(lambda: _status_is(cluster, "web", availableReplicas=2))
    await cluster.patch(
        "apps/v1/deployments",
        "ns",
        "web",
        {"spec": {"template": {"metadata": {"labels": {"app": "web", "v": "2"}}}}},
    )
    seen_mixed = False
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pods = await pods_of(cluster, "web")
        versions = {p["metadata"]["labels"].get("v") for p in pods}
        if len(versions) > 1:
            seen_mixed = True
        if await _status_is(
            cluster, "web", updatedReplicas=2, availableReplicas=2, replicas=2, observedGeneration=2
        ):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("Recreate did not complete")
    assert not seen_mixed


async def test_unschedulable_gpu_pod_is_explained_and_retried_when_capacity_frees(cluster):
    await eventually(lambda: _len_at_least(cluster.list("v1/nodes"), 5))
    tol = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    for name in ("big-1", "big-2"):
        await cluster.create(
            "v1/pods",
            raw_pod(
                name,
                tolerations=tol,
                containers=[
                    {"name": "c", "image": "tf:1", "resources": {"limits": {"nvidia.com/gpu": 4}}}
                ],
            ),
        )
    await cluster.create(
        "v1/pods",
        raw_pod(
            "waiting",
            tolerations=tol,
            containers=[
                {"name": "c", "image": "tf:1", "resources": {"limits": {"nvidia.com/gpu": 1}}}
            ],
        ),
    )

    async def unschedulable():
        s = await status_of(cluster, "v1/pods", "waiting")
        cond = condition(s, "PodScheduled")
        return cond if cond.get("reason") == "Unschedulable" else None

    cond = await eventually(unschedulable)
    assert cond["status"] == "False"
    assert cond["message"] == (
        "0/5 nodes are available: 5 Insufficient nvidia.com/gpu. preemption: 0/5 nodes are available: "
        "2 No preemption victims found for incoming pod, 3 Preemption is not helpful for scheduling."
    )
    events = await eventually(lambda: _events_for(cluster, "waiting", "FailedScheduling"))
    assert events[0]["type"] == "Warning" and events[0]["message"] == cond["message"]
    assert events[0]["source"]["component"] == "default-scheduler"

    await cluster.delete("v1/pods", "ns", "big-1")

    async def bound():
        p = await cluster.get("v1/pods", "ns", "waiting")
        return p if p["spec"].get("nodeName") else None

    p = await eventually(bound)
    assert p["spec"]["nodeName"].startswith("gpu-")
    assert condition(p["status"], "PodScheduled")["status"] == "True"


async def _events_for(c: Cluster, name: str, reason: str) -> list[dict] | None:
    found = [
        e
        for e in await c.list("v1/events", "ns")
        if e["involvedObject"]["name"] == name and e["reason"] == reason
    ]
    return found or None


async def test_gpu_pod_without_toleration_stays_pending(cluster):
    await eventually(lambda: _len_at_least(cluster.list("v1/nodes"), 5))
    await cluster.create(
        "v1/pods",
        raw_pod(
            "gpu",
            containers=[
                {"name": "c", "image": "tf:1", "resources": {"limits": {"nvidia.com/gpu": 1}}}
            ],
        ),
    )

    async def explained():
        return condition(await status_of(cluster, "v1/pods", "gpu"), "PodScheduled").get("message")

    message = await eventually(explained)
    assert message.startswith(
        "0/5 nodes are available: 2 node(s) had untolerated taint {nvidia.com/gpu: present}, 3 Insufficient nvidia.com/gpu."
    )
    assert (await status_of(cluster, "v1/pods", "gpu"))["phase"] == "Pending"


async def test_behaviour_annotation_and_rules(cluster):
    await cluster.create(
        "apps/v1/deployments",
        deployment("pull", replicas=1, annotations={bh.ANNOTATION: "image-pull-error"}),
    )
    await cluster.create(
        "apps/v1/deployments",
        deployment("slow", replicas=1, image="tf:3", annotations={bh.ANNOTATION: "never-ready"}),
    )

    async def waiting_reason(app: str, reason: str):
        pods = await pods_of(cluster, app)
        statuses = [
            cs for p in pods for cs in (p.get("status") or {}).get("containerStatuses") or []
        ]
        return (
            statuses
            if statuses and statuses[0].get("state", {}).get("waiting", {}).get("reason") == reason
            else None
        )

    await eventually(lambda: waiting_reason("pull", "ImagePullBackOff"))
    assert (await pods_of(cluster, "pull"))[0]["status"]["phase"] == "Pending"
    running = await eventually(lambda: _running(cluster, "slow"))
    assert condition(running["status"], "Ready")["status"] == "False"

    # A rule makes tf:3 pods crash without touching the Deployment; the annotation still wins.
    await cluster.create("apps/v1/deployments", deployment("crashy", replicas=1, image="tf:3"))
    await bh.set_rules(cluster, [{"match": {"imageContains": "tf:3"}, "behaviour": "crash-loop"}])
    statuses = await eventually(lambda: waiting_reason("crashy", "CrashLoopBackOff"))
    first = statuses[0]["restartCount"]
    rising = await eventually(lambda: _restarts_above(cluster, "crashy", first + 2))
    assert rising[0]["lastState"]["terminated"]["exitCode"] == 1
    s = await status_of(cluster, "apps/v1/deployments", "crashy")
    assert s.get("availableReplicas", 0) == 0
    assert condition(s, "Available")["status"] == "False"
    slow = (await pods_of(cluster, "slow"))[0]
    assert "waiting" not in slow["status"]["containerStatuses"][0]["state"]  # annotation wins

    # Clearing the rules heals the pod in place, keeping its restart count.
    await bh.set_rules(cluster, [])
    await eventually(lambda: _status_is(cluster, "crashy", availableReplicas=1))
    healed = (await pods_of(cluster, "crashy"))[0]["status"]["containerStatuses"][0]
    assert healed["ready"] is True and healed["restartCount"] >= first + 2


async def _running(c: Cluster, app: str) -> dict | None:
    pods = await pods_of(c, app)
    return pods[0] if pods and (pods[0].get("status") or {}).get("phase") == "Running" else None


async def _restarts_above(c: Cluster, app: str, n: int) -> list | None:
    pods = await pods_of(c, app)
    statuses = [cs for p in pods for cs in (p.get("status") or {}).get("containerStatuses") or []]
    return statuses if statuses and statuses[0]["restartCount"] > n else None


async def test_deleted_pods_terminate_and_are_replaced(cluster):
    await cluster.create("apps/v1/deployments", deployment(replicas=2))
    await eventually(lambda: _status_is(cluster, "web", availableReplicas=2))
    victim = (await pods_of(cluster, "web"))[0]["metadata"]["name"]
    await cluster.delete("v1/pods", "ns", victim)
    p = await cluster.get("v1/pods", "ns", victim)
    assert p["metadata"].get("deletionTimestamp")  # graceful: the kubelet finishes it

    async def gone_and_replaced():
        names = {p["metadata"]["name"] for p in await pods_of(cluster, "web")}
        return victim not in names and len(names) == 2

    await eventually(gone_and_replaced)
    await eventually(lambda: _status_is(cluster, "web", availableReplicas=2))


async def test_scale_down_deletes_unready_pods_first(cluster):
    await cluster.create("apps/v1/deployments", deployment(replicas=3))
    await eventually(lambda: _status_is(cluster, "web", availableReplicas=3))
    await bh.set_rules(
        cluster, [{"match": {"labelSelector": "app=web,extra=1"}, "behaviour": "never-ready"}]
    )
    await cluster.patch("apps/v1/deployments", "ns", "web", {"spec": {"replicas": 4}})
    await eventually(lambda: _status_is(cluster, "web", replicas=4, availableReplicas=4))
    # mark one pod so the rule makes it unready
    target = sorted(p["metadata"]["name"] for p in await pods_of(cluster, "web"))[0]
    await cluster.patch("v1/pods", "ns", target, {"metadata": {"labels": {"extra": "1"}}})
    await eventually(lambda: _status_is(cluster, "web", availableReplicas=3, replicas=4))
    await cluster.patch("apps/v1/deployments", "ns", "web", {"spec": {"replicas": 3}})
    await eventually(lambda: _status_is(cluster, "web", availableReplicas=3, replicas=3))
    remaining = await pods_of(cluster, "web")
    assert target not in {
        p["metadata"]["name"] for p in remaining if not p["metadata"].get("deletionTimestamp")
    }


async def test_progress_deadline_exceeded(cluster):
    await cluster.create(
        "apps/v1/deployments",
        deployment(
            "stuck",
            replicas=1,
            annotations={bh.ANNOTATION: "never-ready"},
            progressDeadlineSeconds=1,
        ),
    )

    async def timed_out():
        cond = condition(await status_of(cluster, "apps/v1/deployments", "stuck"), "Progressing")
        return cond if cond.get("reason") == "ProgressDeadlineExceeded" else None

    cond = await eventually(timed_out, timeout=6)
    assert cond["status"] == "False"
    assert cond["message"].endswith("has timed out progressing.")


async def test_hpa_keeps_replicas_within_bounds_and_reports_missing_metrics(cluster):
    await cluster.create("apps/v1/deployments", deployment(replicas=1))
    await cluster.create(
        "autoscaling/v2/horizontalpodautoscalers",
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 2,
                "maxReplicas": 4,
            },
        },
    )
    await eventually(lambda: _status_is(cluster, "web", availableReplicas=2))

    async def settled():
        s = await status_of(cluster, "autoscaling/v2/horizontalpodautoscalers", "web")
        return (
            s if condition(s, "ScalingActive").get("reason") == "FailedGetResourceMetric" else None
        )

    s = await eventually(settled, timeout=3)
    assert (s["currentReplicas"], s["desiredReplicas"]) == (2, 2)
    assert condition(s, "AbleToScale")["status"] == "True"
    assert (
        "no metrics returned from resource metrics API" in condition(s, "ScalingActive")["message"]
    )
    assert s.get("lastScaleTime")
    # someone scales above the maximum: brought back
    await cluster.patch("apps/v1/deployments", "ns", "web", {"spec": {"replicas": 9}})
    await eventually(lambda: _spec_replicas_is(cluster, "web", 4), timeout=3)


async def _spec_replicas_is(c: Cluster, name: str, n: int) -> bool:
    return (await c.get("apps/v1/deployments", "ns", name))["spec"]["replicas"] == n


async def test_invalid_behaviour_annotation_falls_back_to_ready_with_a_warning(cluster):
    pod = raw_pod("odd")
    pod["metadata"]["annotations"] = {bh.ANNOTATION: "sometimes"}
    await cluster.create("v1/pods", pod)

    async def ready():
        return (
            condition(await status_of(cluster, "v1/pods", "odd"), "Ready").get("status") == "True"
        )

    await eventually(ready)
    events = await eventually(lambda: _events_for(cluster, "odd", "InvalidBehaviour"))
    assert "unknown behaviour 'sometimes'" in events[0]["message"]


async def test_hpa_scales_a_custom_resource_through_its_scale_subresource(cluster):
    from e2e.localcluster.testing import WIDGET_CRD, WIDGET_GROUP

    await cluster.create("apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD)

    async def served():
        try:
            return await cluster.list(f"{WIDGET_GROUP}/v1/widgets", "ns") is not None
        except ApiError:
            return False

    await eventually(served)
    await cluster.create(
        f"{WIDGET_GROUP}/v1/widgets",
        {
            "apiVersion": f"{WIDGET_GROUP}/v1",
            "kind": "Widget",
            "metadata": {"name": "w", "namespace": "ns"},
            "spec": {"size": 1, "replicas": 7},
        },
    )
    await cluster.create(
        "autoscaling/v2/horizontalpodautoscalers",
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "w", "namespace": "ns"},
            "spec": {
                "scaleTargetRef": {
                    "apiVersion": f"{WIDGET_GROUP}/v1",
                    "kind": "Widget",
                    "name": "w",
                },
                "minReplicas": 1,
                "maxReplicas": 3,
            },
        },
    )

    async def scaled_down():
        return (await cluster.get(f"{WIDGET_GROUP}/v1/widgets", "ns", "w"))["spec"]["replicas"] == 3

    await eventually(scaled_down)

    async def limited():
        s = await status_of(cluster, "autoscaling/v2/horizontalpodautoscalers", "w")
        return (
            s
            if s.get("desiredReplicas") == 3
            and condition(s, "ScalingActive").get("reason") == "FailedGetResourceMetric"
            else None
        )

    s = await eventually(limited)
    assert s["currentReplicas"] == 3


async def test_pod_disruption_budget_status_follows_pod_readiness(cluster):
    await cluster.create("apps/v1/deployments", deployment(replicas=3))
    await cluster.create(
        "policy/v1/poddisruptionbudgets",
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}},
        },
    )

    async def budget(**want: int):
        s = await status_of(cluster, "policy/v1/poddisruptionbudgets", "web")
        return s if all(s.get(k) == v for k, v in want.items()) else None

    s = await eventually(
        lambda: budget(currentHealthy=3, desiredHealthy=2, expectedPods=3, disruptionsAllowed=1)
    )
    assert condition(s, "DisruptionAllowed")["reason"] == "SufficientPods"
    # one pod turns unready: no disruption allowed any more
    await bh.set_rules(
        cluster, [{"match": {"labelSelector": "unready=yes"}, "behaviour": "never-ready"}]
    )
    victim = (await pods_of(cluster, "web"))[0]["metadata"]["name"]
    await cluster.patch("v1/pods", "ns", victim, {"metadata": {"labels": {"unready": "yes"}}})
    s = await eventually(lambda: budget(currentHealthy=2, disruptionsAllowed=0))
    assert condition(s, "DisruptionAllowed")["reason"] == "InsufficientPods"


async def test_hpa_with_a_missing_target_reports_failed_get_scale(cluster):
    await cluster.create(
        "autoscaling/v2/horizontalpodautoscalers",
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "ghost", "namespace": "ns"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ghost"},
                "minReplicas": 1,
                "maxReplicas": 2,
            },
        },
    )

    async def failed():
        s = await status_of(cluster, "autoscaling/v2/horizontalpodautoscalers", "ghost")
        return s if condition(s, "AbleToScale").get("reason") == "FailedGetScale" else None

    s = await eventually(failed)
    assert condition(s, "AbleToScale")["status"] == "False"


async def test_min_ready_seconds_delays_availability(cluster):
    await cluster.create(
        "apps/v1/deployments", deployment("slowstart", replicas=1, minReadySeconds=2)
    )

    async def ready_rs():
        rss = [
            r
            for r in await cluster.list("apps/v1/replicasets", "ns")
            if r["metadata"]["name"].startswith("slowstart-")
        ]
        return (
            rss[0]["status"]
            if rss and (rss[0].get("status") or {}).get("readyReplicas") == 1
            else None
        )

    status = await eventually(ready_rs)
    assert status.get("availableReplicas", 0) == 0  # Ready, but not yet for minReadySeconds
    s = await eventually(lambda: _status_is(cluster, "slowstart", availableReplicas=1), timeout=6)
    assert condition(s, "Available")["status"] == "True"


async def test_an_invalid_rules_table_is_ignored_and_reported(cluster):
    await eventually(lambda: _namespace_exists(cluster, bh.RULES_NAMESPACE))
    await cluster.create(
        "v1/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": bh.RULES_CONFIGMAP, "namespace": bh.RULES_NAMESPACE},
            "data": {bh.RULES_KEY: "- match: {podName: x}\n  behaviour: crash-loop\n"},
        },
    )

    async def reported():
        events = await cluster.list("v1/events", bh.RULES_NAMESPACE)
        return [e for e in events if e["reason"] == "InvalidBehaviourRules"] or None

    (event,) = await eventually(reported)
    assert event["type"] == "Warning" and "rules[0].match: unknown field" in event["message"]
    await cluster.create("v1/pods", raw_pod("fine"))

    async def ready():
        return (
            condition(await status_of(cluster, "v1/pods", "fine"), "Ready").get("status") == "True"
        )

    await eventually(ready)


async def _namespace_exists(c: Cluster, name: str) -> bool:
    try:
        await c.get("v1/namespaces", None, name)
    except ApiError:
        return False
    return True


async def test_a_node_that_stops_being_ready_is_tainted_and_its_pods_move(cluster):
    await cluster.create("apps/v1/deployments", deployment(replicas=3))
    await eventually(lambda: _status_is(cluster, "web", availableReplicas=3))
    pods = await pods_of(cluster, "web")
    node = pods[0]["spec"]["nodeName"]
    stranded = {p["metadata"]["name"] for p in pods if p["spec"]["nodeName"] == node}
    n = await cluster.get("v1/nodes", None, node)
    conditions = [
        dict(c, status="False", reason="KubeletNotReady") if c["type"] == "Ready" else c
        for c in n["status"]["conditions"]
    ]
    await cluster.patch(
        "v1/nodes", None, node, {"status": {"conditions": conditions}}, subresource="status"
    )

    async def tainted():
        taints = (await cluster.get("v1/nodes", None, node))["spec"].get("taints") or []
        return {(t["key"], t["effect"]) for t in taints} == {
            ("node.kubernetes.io/not-ready", "NoSchedule"),
            ("node.kubernetes.io/not-ready", "NoExecute"),
        }

    await eventually(tainted)

    async def moved():
        live = [
            p for p in await pods_of(cluster, "web") if not p["metadata"].get("deletionTimestamp")
        ]
        return (
            live
            if len(live) == 3 and all(p["spec"].get("nodeName") not in (None, node) for p in live)
            else None
        )

    await eventually(moved)
    await eventually(lambda: _status_is(cluster, "web", availableReplicas=3))
    # the evicted pods cannot finish terminating while their node is down, and are unready
    for name in stranded:
        p = await cluster.get("v1/pods", "ns", name)
        assert p["metadata"].get("deletionTimestamp")
        assert condition(p["status"], "Ready")["status"] == "False"

    # the node comes back: its taints go, and its kubelet finishes the evicted pods
    conditions = [
        dict(c, status="True", reason="KubeletReady") if c["type"] == "Ready" else c
        for c in n["status"]["conditions"]
    ]
    await cluster.patch(
        "v1/nodes", None, node, {"status": {"conditions": conditions}}, subresource="status"
    )

    async def recovered():
        names = {p["metadata"]["name"] for p in await pods_of(cluster, "web")}
        taints = (await cluster.get("v1/nodes", None, node))["spec"].get("taints")
        return not (names & stranded) and not taints

    await eventually(recovered)


async def test_pods_of_a_deleted_node_are_removed(cluster):
    await eventually(lambda: _len_at_least(cluster.list("v1/nodes"), 5))
    await cluster.create("v1/pods", raw_pod("pinned", nodeName="cpu-3"))
    await eventually(_running_pinned(cluster))
    await cluster.delete("v1/nodes", None, "cpu-3")

    async def gone():
        try:
            await cluster.get("v1/pods", "ns", "pinned")
        except ApiError as exc:
            return exc.code == 404
        return False

    await eventually(gone)


def _running_pinned(c: Cluster) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await status_of(c, "v1/pods", "pinned")).get("phase") == "Running"

    return check
