"""The local control plane's simulated cluster, through real clients: kubectl and the
kubernetes Python client over HTTP, as the operator and users see it.

Every test here relies on simulated behaviour (the node topology, fake images that
"run", behaviour rules), so the whole module is skipped on a real cluster.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from e2e.localcluster.controllers import behaviour as bh

pytestmark = pytest.mark.simulated


def eventually(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last: {last!r}")
        time.sleep(interval)


def deployment_yaml(
    name: str, replicas: int = 2, image: str = "tf:1", annotations: str = "", extra_spec: str = ""
) -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
{extra_spec}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations: {{{annotations}}}
    spec:
      containers:
      - name: serving
        image: {image}
        ports: [{{name: grpc, containerPort: 8500}}, {{name: http, containerPort: 8501}}]
        resources: {{requests: {{cpu: 100m, memory: 64Mi}}}}
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{app: {name}}}
  ports:
  - {{name: grpc, port: 8500, targetPort: grpc}}
  - {{name: http, port: 80, targetPort: http}}
"""


def get_json(kubectl: Any, *args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


@pytest.fixture
def core_v1(api_client: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api_client)


@pytest.fixture
def behaviour_rules(core_v1: Any) -> Iterator[Callable[[list[dict[str, Any]]], None]]:
    """Set cluster-wide behaviour rules for one test; cleared afterwards."""

    def set_rules(rules: list[dict[str, Any]]) -> None:
        bh.set_rules(core_v1, rules)

    yield set_rules
    bh.set_rules(core_v1, [])


def test_nodes_of_the_default_topology_are_ready(kubectl):
    nodes = get_json(kubectl, "nodes")["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert {"cpu-1", "cpu-2", "cpu-3", "gpu-1", "gpu-2"} <= set(by_name)
    gpu = by_name["gpu-1"]
    assert gpu["spec"]["taints"] == [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    ]
    assert gpu["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    assert gpu["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    kubectl("wait", "--for=condition=Ready", "node/cpu-1", "node/gpu-2", "--timeout=10s")
    described = kubectl("describe", "node", "gpu-1").stdout
    assert "nvidia.com/gpu=present:NoSchedule" in described


def test_apply_rollout_scale_and_endpoints_with_kubectl(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=deployment_yaml("web", replicas=2))
    out = kubectl("rollout", "status", "-n", namespace, "deployment/web", "--timeout=30s").stdout
    assert 'deployment "web" successfully rolled out' in out
    kubectl("wait", "-n", namespace, "--for=condition=Available", "deployment/web", "--timeout=10s")

    pods = get_json(kubectl, "pods", "-n", namespace, "-l", "app=web")["items"]
    assert len(pods) == 2
    assert all(p["status"]["phase"] == "Running" for p in pods)
    ips = sorted(p["status"]["podIP"] for p in pods)

    def endpoints_ready() -> Any:
        ep = get_json(kubectl, "endpoints", "web", "-n", namespace)
        addresses = [a["ip"] for s in ep.get("subsets") or [] for a in s.get("addresses") or []]
        return ep if sorted(addresses) == ips else None

    ep = eventually(endpoints_ready)
    ports = {p["name"]: p["port"] for p in ep["subsets"][0]["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}
    slices = get_json(
        kubectl, "endpointslices", "-n", namespace, "-l", "kubernetes.io/service-name=web"
    )["items"]
    assert len(slices) == 1
    assert sorted(e["addresses"][0] for e in slices[0]["endpoints"]) == ips

    # A new image rolls out through a second ReplicaSet; the history shows both revisions.
    kubectl("set", "image", "-n", namespace, "deployment/web", "serving=tf:2")
    kubectl("rollout", "status", "-n", namespace, "deployment/web", "--timeout=30s")
    images = {
        p["spec"]["containers"][0]["image"]
        for p in get_json(kubectl, "pods", "-n", namespace, "-l", "app=web")["items"]
        if not p["metadata"].get("deletionTimestamp")
    }
    assert images == {"tf:2"}
    history = kubectl("rollout", "history", "-n", namespace, "deployment/web").stdout
    assert "1 " in history and "2 " in history
    rss = get_json(kubectl, "replicasets", "-n", namespace)["items"]
    assert sorted(r["spec"]["replicas"] for r in rss) == [0, 2]
    assert all(r["metadata"]["ownerReferences"][0]["kind"] == "Deployment" for r in rss)

    # kubectl rollout undo goes back to revision 1's template, as revision 3.
    kubectl("rollout", "undo", "-n", namespace, "deployment/web")
    kubectl("rollout", "status", "-n", namespace, "deployment/web", "--timeout=30s")
    d = get_json(kubectl, "deployment", "web", "-n", namespace)
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "tf:1"
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"

    kubectl("scale", "-n", namespace, "deployment/web", "--replicas=5")
    kubectl("rollout", "status", "-n", namespace, "deployment/web", "--timeout=30s")
    status = get_json(kubectl, "deployment", "web", "-n", namespace)["status"]
    assert (status["replicas"], status["readyReplicas"], status["availableReplicas"]) == (5, 5, 5)


def test_describe_shows_the_controllers_events(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=deployment_yaml("ev", replicas=1))
    kubectl("rollout", "status", "-n", namespace, "deployment/ev", "--timeout=30s")
    described = kubectl("describe", "-n", namespace, "deployment/ev").stdout
    assert "ScalingReplicaSet" in described and "Scaled up replica set ev-" in described
    pod = get_json(kubectl, "pods", "-n", namespace, "-l", "app=ev")["items"][0]["metadata"]["name"]
    described = kubectl("describe", "-n", namespace, "pod", pod).stdout
    assert f"Successfully assigned {namespace}/{pod} to " in described


def test_gpu_pod_without_toleration_stays_pending_with_the_real_message(kubectl, namespace):
    manifest = """
apiVersion: v1
kind: Pod
metadata: {name: gpu}
spec:
  containers:
  - name: serving
    image: tensorflow/serving:2.19.0-gpu
    resources: {limits: {nvidia.com/gpu: 1}}
"""
    kubectl("apply", "-n", namespace, "-f", "-", input=manifest)

    def unschedulable() -> Any:
        pod = get_json(kubectl, "pod", "gpu", "-n", namespace)
        cond = next(
            (c for c in pod["status"].get("conditions") or [] if c["type"] == "PodScheduled"), {}
        )
        return cond if cond.get("reason") == "Unschedulable" else None

    cond = eventually(unschedulable)
    assert cond["status"] == "False"
    assert cond["message"] == (
        "0/5 nodes are available: 2 node(s) had untolerated taint {nvidia.com/gpu: present}, "
        "3 Insufficient nvidia.com/gpu. preemption: 0/5 nodes are available: "
        "5 Preemption is not helpful for scheduling."
    )
    described = eventually(
        lambda: (
            (d := kubectl("describe", "-n", namespace, "pod", "gpu").stdout)
            and "FailedScheduling" in d
            and d
        )
    )
    assert "untolerated taint {nvidia.com/gpu: present}" in described

    # With the toleration, it lands on a GPU node and runs.
    tolerated = (
        manifest.replace("name: gpu}", "name: gpu-ok}")
        + "  tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]\n"
    )
    kubectl("apply", "-n", namespace, "-f", "-", input=tolerated)
    kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/gpu-ok", "--timeout=20s")
    assert get_json(kubectl, "pod", "gpu-ok", "-n", namespace)["spec"]["nodeName"] in (
        "gpu-1",
        "gpu-2",
    )


def test_deleting_a_pod_waits_for_the_kubelet_and_the_replica_set_replaces_it(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=deployment_yaml("del", replicas=2))
    kubectl("rollout", "status", "-n", namespace, "deployment/del", "--timeout=30s")
    victim = get_json(kubectl, "pods", "-n", namespace, "-l", "app=del")["items"][0]["metadata"][
        "name"
    ]
    # kubectl delete waits until the object is really gone: the simulated kubelet must finish it
    kubectl("delete", "-n", namespace, "pod", victim, "--timeout=20s")
    kubectl("rollout", "status", "-n", namespace, "deployment/del", "--timeout=30s")
    names = {
        p["metadata"]["name"]
        for p in get_json(kubectl, "pods", "-n", namespace, "-l", "app=del")["items"]
    }
    assert victim not in names and len(names) == 2


def test_pod_behaviour_annotations(kubectl, namespace):
    kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=deployment_yaml("crash", replicas=1, annotations=f"{bh.ANNOTATION}: crash-loop"),
    )
    kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=deployment_yaml("pull", replicas=1, annotations=f"{bh.ANNOTATION}: image-pull-error"),
    )
    kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=deployment_yaml("late", replicas=1, annotations=f'{bh.ANNOTATION}: "ready-after=2s"'),
    )

    def container_state(app: str) -> dict[str, Any]:
        pods = get_json(kubectl, "pods", "-n", namespace, "-l", f"app={app}")["items"]
        statuses = (pods[0].get("status") or {}).get("containerStatuses") if pods else None
        return statuses[0] if statuses else {}

    eventually(lambda: container_state("crash").get("restartCount", 0) >= 3)
    crash = container_state("crash")
    assert crash["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert crash["lastState"]["terminated"]["exitCode"] == 1
    assert "CrashLoopBackOff" in kubectl("get", "pods", "-n", namespace, "-l", "app=crash").stdout

    eventually(
        lambda: (
            container_state("pull").get("state", {}).get("waiting", {}).get("reason")
            == "ImagePullBackOff"
        )
    )
    assert (
        get_json(kubectl, "pods", "-n", namespace, "-l", "app=pull")["items"][0]["status"]["phase"]
        == "Pending"
    )

    started = eventually(lambda: container_state("late").get("state", {}).get("running"))
    assert started and container_state("late")["ready"] is False
    kubectl("rollout", "status", "-n", namespace, "deployment/late", "--timeout=20s")
    assert container_state("late")["ready"] is True


def test_behaviour_rules_target_pods_without_touching_them(kubectl, namespace, behaviour_rules):
    behaviour_rules(
        [{"match": {"namespace": namespace, "imageContains": "tf:bad"}, "behaviour": "never-ready"}]
    )
    manifest = deployment_yaml("roll", replicas=2, extra_spec="  progressDeadlineSeconds: 3")
    kubectl("apply", "-n", namespace, "-f", "-", input=manifest)
    kubectl("rollout", "status", "-n", namespace, "deployment/roll", "--timeout=30s")
    kubectl("set", "image", "-n", namespace, "deployment/roll", "serving=tf:bad")
    result = kubectl(
        "rollout", "status", "-n", namespace, "deployment/roll", "--timeout=30s", check=False
    )
    assert result.returncode != 0
    assert 'deployment "roll" exceeded its progress deadline' in result.stderr + result.stdout
    status = get_json(kubectl, "deployment", "roll", "-n", namespace)["status"]
    # maxUnavailable 25% of 2 rounds down to 0: the old pods keep serving
    assert status["availableReplicas"] == 2
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")

    # Healing the rule lets the same rollout progress again (kubectl rollout status would
    # fail at once while the condition still says the deadline passed) and finish.
    behaviour_rules([])

    def progressing_again() -> bool:
        conditions = get_json(kubectl, "deployment", "roll", "-n", namespace)["status"][
            "conditions"
        ]
        return next(c for c in conditions if c["type"] == "Progressing")["status"] == "True"

    eventually(progressing_again)
    kubectl("rollout", "status", "-n", namespace, "deployment/roll", "--timeout=30s")


def test_headless_service_lists_unready_pods_as_not_ready(kubectl, namespace, behaviour_rules):
    behaviour_rules(
        [
            {
                "match": {"namespace": namespace, "labelSelector": "app=hl,slot=b"},
                "behaviour": "never-ready",
            }
        ]
    )
    manifest = """
apiVersion: v1
kind: Service
metadata: {name: hl}
spec:
  clusterIP: None
  selector: {app: hl}
  ports: [{name: grpc, port: 8500}]
"""
    kubectl("apply", "-n", namespace, "-f", "-", input=manifest)
    for slot in ("a", "b"):
        pod = f"""
apiVersion: v1
kind: Pod
metadata: {{name: hl-{slot}, labels: {{app: hl, slot: "{slot}"}}}}
spec:
  containers: [{{name: serving, image: tf:1}}]
"""
        kubectl("apply", "-n", namespace, "-f", "-", input=pod)

    def split() -> Any:
        ep = get_json(kubectl, "endpoints", "hl", "-n", namespace)
        subsets = ep.get("subsets") or []
        ready = [a["targetRef"]["name"] for s in subsets for a in s.get("addresses") or []]
        unready = [
            a["targetRef"]["name"] for s in subsets for a in s.get("notReadyAddresses") or []
        ]
        return (ready, unready, ep) if ready == ["hl-a"] and unready == ["hl-b"] else None

    _, _, ep = eventually(split)
    assert ep["metadata"]["labels"]["service.kubernetes.io/headless"] == ""
    slices = get_json(
        kubectl, "endpointslices", "-n", namespace, "-l", "kubernetes.io/service-name=hl"
    )["items"]
    conditions = {
        e["targetRef"]["name"]: e["conditions"]["ready"] for s in slices for e in s["endpoints"]
    }
    assert conditions == {"hl-a": True, "hl-b": False}


def test_kubernetes_client_sees_consistent_replicaset_and_pod_ownership(
    api_client, kubectl, namespace
):
    from kubernetes import client

    kubectl("apply", "-n", namespace, "-f", "-", input=deployment_yaml("own", replicas=3))
    kubectl("rollout", "status", "-n", namespace, "deployment/own", "--timeout=30s")
    apps = client.AppsV1Api(api_client)
    core = client.CoreV1Api(api_client)
    (rs,) = apps.list_namespaced_replica_set(namespace).items
    template_hash = rs.metadata.labels["pod-template-hash"]
    assert rs.metadata.name == f"own-{template_hash}"
    assert rs.status.ready_replicas == 3 and rs.status.available_replicas == 3
    pods = core.list_namespaced_pod(
        namespace, label_selector=f"pod-template-hash={template_hash}"
    ).items
    assert len(pods) == 3
    for pod in pods:
        (ref,) = pod.metadata.owner_references
        assert (ref.kind, ref.name, ref.uid, ref.controller) == (
            "ReplicaSet",
            rs.metadata.name,
            rs.metadata.uid,
            True,
        )
        ready = next(c for c in pod.status.conditions if c.type == "Ready")
        assert ready.status == "True"
        assert pod.status.container_statuses[0].started is True

    # Deleting the Deployment garbage-collects its ReplicaSet and pods.
    apps.delete_namespaced_deployment("own", namespace)
    eventually(lambda: not core.list_namespaced_pod(namespace, label_selector="app=own").items)
    assert not apps.list_namespaced_replica_set(namespace).items


def test_autoscale_keeps_the_minimum(kubectl, namespace):
    kubectl("apply", "-n", namespace, "-f", "-", input=deployment_yaml("auto", replicas=1))
    kubectl(
        "autoscale", "-n", namespace, "deployment/auto", "--min=3", "--max=5", "--cpu-percent=70"
    )
    eventually(
        lambda: get_json(kubectl, "deployment", "auto", "-n", namespace)["spec"]["replicas"] == 3
    )
    kubectl("rollout", "status", "-n", namespace, "deployment/auto", "--timeout=30s")

    def reported() -> Any:
        hpa = get_json(kubectl, "hpa", "auto", "-n", namespace)
        conditions = {c["type"]: c for c in (hpa.get("status") or {}).get("conditions") or []}
        active = conditions.get("ScalingActive", {})
        return hpa if active.get("reason") == "FailedGetResourceMetric" else None

    hpa = eventually(reported)
    assert hpa["status"]["currentReplicas"] == 3 and hpa["status"]["desiredReplicas"] == 3


def set_node_ready(core_v1: Any, name: str, ready: bool) -> None:
    node = core_v1.read_node(name)
    for c in node.status.conditions:
        if c.type == "Ready":
            c.status, c.reason = ("True", "KubeletReady") if ready else ("False", "KubeletNotReady")
    core_v1.patch_node_status(name, {"status": {"conditions": node.status.conditions}})


def test_a_failed_node_is_tainted_and_its_pods_wait_for_it(kubectl, core_v1, namespace):
    name = f"edge-{namespace[-8:]}"
    kubectl(
        "apply",
        "-f",
        "-",
        input=f"apiVersion: v1\nkind: Node\nmetadata: {{name: {name}, labels: {{pool: {name}}}}}\n",
    )
    try:
        # A node registering itself: its kubelet reports capacity and Ready.
        core_v1.patch_node_status(
            name,
            {
                "status": {
                    "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                    "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "kubelet is posting ready status",
                        }
                    ],
                }
            },
        )
        manifest = deployment_yaml("edge", replicas=2).replace(
            "    spec:\n      containers:",
            f"    spec:\n      nodeSelector: {{pool: {name}}}\n      containers:",
        )
        kubectl("apply", "-n", namespace, "-f", "-", input=manifest)
        kubectl("rollout", "status", "-n", namespace, "deployment/edge", "--timeout=30s")
        first = {
            p["metadata"]["name"]
            for p in get_json(kubectl, "pods", "-n", namespace, "-l", "app=edge")["items"]
        }

        set_node_ready(core_v1, name, False)

        def replacements_pending() -> Any:
            pods = get_json(kubectl, "pods", "-n", namespace, "-l", "app=edge")["items"]
            new = [p for p in pods if p["metadata"]["name"] not in first]
            messages = [
                c.get("message", "")
                for p in new
                for c in p["status"].get("conditions") or []
                if c["type"] == "PodScheduled"
            ]
            return (
                messages
                if len(new) == 2
                and all("untolerated taint {node.kubernetes.io/not-ready: }" in m for m in messages)
                else None
            )

        eventually(replacements_pending)
        taints = get_json(kubectl, "node", name)["spec"]["taints"]
        assert {(t["key"], t["effect"]) for t in taints} == {
            ("node.kubernetes.io/not-ready", "NoSchedule"),
            ("node.kubernetes.io/not-ready", "NoExecute"),
        }
        for pod in first:  # evicted, but nobody can confirm their end while the node is down
            p = get_json(kubectl, "pod", pod, "-n", namespace)
            assert p["metadata"].get("deletionTimestamp")

        set_node_ready(core_v1, name, True)
        kubectl("rollout", "status", "-n", namespace, "deployment/edge", "--timeout=30s")
        eventually(
            lambda: (
                not first
                & {
                    p["metadata"]["name"]
                    for p in get_json(kubectl, "pods", "-n", namespace, "-l", "app=edge")["items"]
                }
            )
        )
        assert not get_json(kubectl, "node", name)["spec"].get("taints")
    finally:
        kubectl("delete", "node", name, "--ignore-not-found", "--wait=false")
