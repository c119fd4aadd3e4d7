"""Serving on pods that really run: the operator, kubectl and a live Predict load.

Every pod here is processes (the TF Serving stand-in and the real health bridge) in network,
PID and mount namespaces of its own; the kubelet runs the probes the operator rendered;
requests cross the Service through kube-proxy, found by name through the cluster DNS. Nothing
is scripted per test: each version's behaviour is in its model directory, as TF Serving reads
it. Waits are bounded waits on conditions; nothing depends on how fast the machine is.

The pods' timings are shortened through the InferenceService itself (a 3 s drain, an 8 s
grace period, a 2 s maximum connection age), as a user would for short-lived test
workloads; the benchmark (`python -m e2e.bench.serving`) measures the defaults.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from e2e.load import Linear, PredictLoad, predict_request, predict_stub
from e2e.serving import ServingCluster, is_ready, ok_requests, wait_for

pytestmark = pytest.mark.simulated  # needs the local cluster's process runtime and model store

V1, V2 = Linear(1.0, 1.0), Linear(2.0, 0.0)
MISSING_SAVED_MODEL = "Could not find SavedModel .pb or .pbtxt at supplied export directory path"


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingCluster]:
    with ServingCluster(tmp_path_factory.mktemp("serving")) as cluster:
        yield cluster


@pytest.fixture
def ns(serving: ServingCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    name = "serve-" + request.node.name.removeprefix("test_").replace("_", "-")[:40].rstrip("-")
    serving.kubectl("create", "namespace", name)
    yield name
    serving.kubectl("delete", "namespace", name, "--wait=false", check=False)


def isvc(name: str, namespace: str, version: int, replicas: int = 2, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"basePath": f"s3://models/{namespace}/{name}", "version": version},
        "replicas": replicas,
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        "server": {"maxConnectionAgeSeconds": 2},
        "pod": {"terminationGracePeriodSeconds": 8, "drainSeconds": 3},
    }
    body.update(spec)
    return {"apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": name, "namespace": namespace}, "spec": body}


def card(f: Linear, **extra: Any) -> dict[str, Any]:
    return {"function": {"linear": {"a": f.a, "b": f.b}}, **extra}


def rollout_of(serving: ServingCluster, name: str, namespace: str) -> dict[str, Any]:
    return dict((serving.isvc(name, namespace).get("status") or {}).get("rollout") or {})


def serve(serving: ServingCluster, name: str, namespace: str, version: int, replicas: int = 2,
          **spec: Any) -> None:
    """Apply the InferenceService and wait until both its Services route to every pod."""
    serving.apply(isvc(name, namespace, version, replicas, **spec))
    wait_for(lambda: len(serving.ready_pods(name, namespace)) == replicas, 120, f"{replicas} ready pods of {name}")
    serving.kubectl("wait", "--for=condition=Ready", f"tfis/{name}", "-n", namespace, "--timeout=60s")
    ips = {p["status"]["podIP"] for p in serving.ready_pods(name, namespace)}
    for service in (name, f"{name}-grpc"):
        wait_for(lambda s=service: serving.ready_endpoints(s, namespace) == ips, 30, f"the endpoints of {service}")
    # kube-proxy follows the EndpointSlices: the first call waits until it forwards.
    with grpc.insecure_channel(serving.target(name, namespace)) as channel:
        predict_stub(channel)(predict_request(name, [1.0]), timeout=30, wait_for_ready=True)


def model_available(pod_ip: str, model: str, version: int) -> bool:
    """Whether the pod's TF Serving says the version is AVAILABLE (False while its port is closed)."""
    from tfleet.health import protos as status_protos

    with grpc.insecure_channel(f"{pod_ip}:8500") as channel:
        call = channel.unary_unary(status_protos.GET_MODEL_STATUS_METHOD,
                                   request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=status_protos.GetModelStatusResponse.FromString)
        request = status_protos.GetModelStatusRequest()
        request.model_spec.name = model
        try:
            answer = call(request, timeout=0.5)
        except grpc.RpcError:
            return False
    return any(v.version == version and v.state == status_protos.STATES["AVAILABLE"] for v in answer.model_version_status)


def no_failures(load: PredictLoad) -> None:
    failures = load.failures()
    total = len(load.outcomes())
    assert total > 0, "the load sent nothing"
    assert failures == [], f"{len(failures)} of {total} requests failed; first: {failures[:3]}"


# ---------------------------------------------------------------------- serve


def test_a_pod_is_ready_only_once_its_model_version_is_available_and_serves_through_the_service(serving, ns):
    serving.write_model(f"s3://models/{ns}/m", 1, card(V1, load_seconds=3))
    serving.apply(isvc("m", ns, 1, replicas=1))
    samples: list[tuple[bool, bool]] = []  # (pod Ready, version AVAILABLE asked right after)

    def ready_and_sampled() -> bool:
        pods = serving.serving_pods("m", ns)
        if not pods or not pods[0]["status"].get("podIP"):
            return False
        ready = is_ready(pods[0])
        # Asked after the pod was read: a version that was AVAILABLE then still is.
        samples.append((ready, model_available(pods[0]["status"]["podIP"], "m", 1)))
        return ready

    wait_for(ready_and_sampled, 120, "the pod to turn Ready", interval=0.1)
    assert (True, False) not in samples, "the pod was Ready while its model version was not AVAILABLE"
    # TF Serving loads before it opens its ports: the pod was seen not Ready while it loaded.
    assert (False, False) in samples

    # gRPC Predict through the ClusterIP Service, found by name in the cluster DNS. The
    # Service's endpoints follow the pod's readiness a moment later (EndpointSlice, then
    # kube-proxy): the call waits for the channel to connect, as clients are told to.
    with grpc.insecure_channel(serving.target("m", ns)) as channel:
        answer = predict_stub(channel)(predict_request("m", [1.0, 4.0]), timeout=30, wait_for_ready=True)
    assert list(answer.outputs["y"].float_val) == [2.0, 5.0]
    assert answer.model_spec.version.value == 1

    # REST :predict through the same Service, in both of TF Serving's JSON forms.
    url = f"http://{serving.cluster_ip('m', ns)}:8501/v1/models/m:predict"
    for body, key in (({"instances": [1.0, 4.0]}, "predictions"), ({"inputs": {"x": [1.0, 4.0]}}, "outputs")):
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())[key] == [2.0, 5.0]


# ---------------------------------------------------------------------- canary and rollback


STEPS = [{"weight": 25, "pause": "4s"}, {"weight": 50, "pause": "4s"}]


def test_a_canary_under_load_loses_no_request(serving, ns):
    serving.write_model(f"s3://models/{ns}/fraud", 1, card(V1))
    serving.write_model(f"s3://models/{ns}/fraud", 2, card(V2, load_seconds=1))
    serve(serving, "fraud", ns, 1, rollout={"steps": STEPS, "progressDeadlineSeconds": 120})
    loads = [PredictLoad(serving.target("fraud", ns), "fraud", {1: V1, 2: V2}) for _ in range(4)]
    for load in loads:
        load.start()
    try:
        time.sleep(1)
        serving.apply(isvc("fraud", ns, 2, rollout={"steps": STEPS, "progressDeadlineSeconds": 120}))
        steps: dict[Any, float] = {}

        def succeeded() -> bool:
            ro = rollout_of(serving, "fraud", ns)
            key = ro.get("step") if ro.get("phase") == "Progressing" else ro.get("phase")
            steps.setdefault(key, time.monotonic())
            return ro.get("phase") == "Succeeded"

        wait_for(succeeded, 180, "the rollout to succeed")

        # Once the old revision's pods have left the Service, every answer is version 2.
        def only_version_2() -> bool:
            recent = [o for load in loads for o in load.outcomes(since=time.monotonic() - 1.0)]
            return len(recent) > 50 and all(o.version == 2 for o in recent if o.ok)

        wait_for(only_version_2, 60, "version 2 to answer every request")
    finally:
        for load in loads:
            load.stop()
    for load in loads:
        no_failures(load)
    # Version 2 answered during the weighted steps, before the promotion.
    start, promoting = steps.get(0), steps.get("Promoting", steps.get("Succeeded"))
    assert start is not None and promoting is not None, steps
    during: Counter[int | None] = Counter()
    for load in loads:
        during.update(load.by_version(start, promoting))
    per_second: dict[int, Counter[int | None]] = {}
    for load in loads:
        for o in load.outcomes():
            per_second.setdefault(int(o.sent - start), Counter())[o.version] += 1
    assert during[2] > 0 and during[1] > 0, (during, steps, sorted(per_second.items()))


def test_a_version_that_cannot_load_is_rolled_back_under_load_with_tf_servings_words(serving, ns):
    serving.write_model(f"s3://models/{ns}/risk", 2, card(V2))
    serving.write_model(f"s3://models/{ns}/risk", 3, card(V1), saved_model=False)
    serve(serving, "risk", ns, 2, rollout={"steps": STEPS})  # the default 600 s deadline
    with PredictLoad(serving.target("risk", ns), "risk", {2: V2}) as load:
        serving.apply(isvc("risk", ns, 3, rollout={"steps": STEPS}))
        wait_for(lambda: rollout_of(serving, "risk", ns).get("phase") == "RolledBack", 120,
                 "the rollout to roll back (well before its 600 s deadline)")
        time.sleep(1)
    no_failures(load)
    assert set(load.by_version()) == {2}  # version 2 kept serving every request

    status = serving.isvc("risk", ns)["status"]
    message = status["rollout"]["message"]
    assert "TF Serving failed to load the model: NOT_FOUND: " + MISSING_SAVED_MODEL in message, message
    assert f"s3://models/{ns}/risk/3" in message
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RolledBack")
    events = json.loads(serving.kubectl("get", "events", "-n", ns, "-o", "json",
                                        "--field-selector", "involvedObject.name=risk").stdout)["items"]
    rolled_back = [e for e in events if e["reason"] == "RolloutRolledBack"]
    assert rolled_back and MISSING_SAVED_MODEL in rolled_back[0]["message"]
    assert rolled_back[0]["type"] == "Warning"


# ---------------------------------------------------------------------- drain


def test_scale_down_and_pod_deletion_under_load_lose_no_request(serving, ns):
    serving.write_model(f"s3://models/{ns}/rank", 1, card(V1))
    serve(serving, "rank", ns, 1, replicas=3)
    seen_deleting: dict[str, float] = {}
    removed: dict[str, float] = {}

    def track(expected: int) -> bool:
        pods = {p["metadata"]["name"]: p for p in serving.all_serving_pods("rank", ns)}
        now = time.monotonic()
        for name, pod in pods.items():
            if pod["metadata"].get("deletionTimestamp"):
                seen_deleting.setdefault(name, now)
        for name in seen_deleting:
            if name not in pods:
                removed.setdefault(name, now)
        return len(pods) == expected and all(is_ready(p) for p in pods.values())

    loads = [PredictLoad(serving.target("rank", ns), "rank", {1: V1}) for _ in range(3)]
    for load in loads:
        load.start()
    try:
        serving.kubectl("scale", "tfis/rank", "-n", ns, "--replicas=1")
        wait_for(lambda: track(1), 90, "the scale-down to 1 pod", interval=0.2)
        serving.kubectl("scale", "tfis/rank", "-n", ns, "--replicas=2")
        wait_for(lambda: track(2), 90, "the scale-up to 2 pods", interval=0.2)
        victim = serving.ready_pods("rank", ns)[0]["metadata"]["name"]
        serving.kubectl("delete", "pod", victim, "-n", ns, "--wait=false")
        wait_for(lambda: track(2) and victim in removed, 90, "the deleted pod to be replaced", interval=0.2)
    finally:
        for load in loads:
            load.stop()
    for load in loads:
        no_failures(load)
    assert len(removed) == 3, (seen_deleting, removed)
    durations = sorted(removed[n] - seen_deleting[n] for n in removed)
    print(f"\ndeletion to removal per pod: {', '.join(f'{d:.1f}s' for d in durations)} "
          f"(drain 3 s by preStop, then SIGTERM that the entrypoint ignores, SIGKILL at the 8 s grace period)")


def bridge_call(pod_ip: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """One GET to a pod's health bridge (HTTP port 8511), from this process: not the kubelet."""
    request = urllib.request.Request(f"http://{pod_ip}:8511{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def draining(pod_ip: str) -> bool:
    from tfleet.health.verdicts import parse_bridge_status

    code, body = bridge_call(pod_ip, "/status")
    return code == 200 and parse_bridge_status(body).draining


def test_only_the_pre_stop_hook_can_drain_a_pod(serving, ns):
    from tfleet.health.podspec import DRAIN_TOKEN_HEADER

    serving.write_model(f"s3://models/{ns}/guard", 1, card(V1))
    serving.apply(isvc("guard", ns, 1, replicas=1))
    (pod,) = wait_for(lambda: serving.ready_pods("guard", ns) or None, 60, "the pod to turn Ready")
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]

    # Anyone else who reaches the port, without the token or with a guess, is refused.
    assert bridge_call(ip, "/drain?seconds=60") == (403, "A drain needs the drain token\n")
    assert bridge_call(ip, "/drain?seconds=60", {DRAIN_TOKEN_HEADER: "0" * 32})[0] == 403
    assert not draining(ip)
    assert is_ready(serving.read(f"/api/v1/namespaces/{ns}/pods/{name}"))

    # The kubelet's preStop hook carries the pod's token: deleting the pod drains it (a
    # refused hook would return at once and leave the bridge serving).
    serving.kubectl("delete", "pod", name, "-n", ns, "--wait=false")
    wait_for(lambda: draining(ip) or None, 30, "the preStop hook to drain the pod")


# ---------------------------------------------------------------------- liveness


def test_a_version_that_hangs_turns_unready_then_is_restarted_by_liveness(serving, ns):
    # Long enough for the startup and readiness probes to pass first (5 s and 2 s periods).
    serving.write_model(f"s3://models/{ns}/hang", 1, card(V1, hang_after_seconds=12))
    serving.apply(isvc("hang", ns, 1, replicas=1))
    wait_for(lambda: len(serving.ready_pods("hang", ns)) == 1, 60, "the pod to turn Ready")
    (pod,) = serving.serving_pods("hang", ns)
    name = pod["metadata"]["name"]
    unready_at: list[float] = []

    def restarted() -> bool:
        pod = serving.read(f"/api/v1/namespaces/{ns}/pods/{name}")
        serving_status = next(c for c in pod["status"].get("containerStatuses") or [] if c["name"] == "tensorflow-serving")
        if not is_ready(pod) and not unready_at:
            unready_at.append(time.monotonic())
        if serving_status.get("restartCount", 0) >= 1:
            # Readiness dropped before liveness restarted the container.
            assert unready_at, "the container restarted while the pod was still Ready"
            return True
        return False

    wait_for(restarted, 120, "the liveness probe to restart the hung container")
    events = json.loads(serving.kubectl("get", "events", "-n", ns, "-o", "json",
                                        "--field-selector", f"involvedObject.name={name}").stdout)["items"]
    assert any(e["reason"] == "Unhealthy" and "Liveness probe failed" in e["message"] for e in events), \
        [e["message"] for e in events]
    assert any(e["reason"] == "Unhealthy" and "Readiness probe failed" in e["message"] for e in events)


# ---------------------------------------------------------------------- headless


def test_a_round_robin_client_on_the_headless_service_reaches_every_ready_pod(serving, ns):
    serving.write_model(f"s3://models/{ns}/spread", 1, card(V1))
    serve(serving, "spread", ns, 1, replicas=3)
    ips = [p["status"]["podIP"] for p in serving.ready_pods("spread", ns)]
    before = {ip: ok_requests(ip, "spread") for ip in ips}
    options = [("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]}))]
    load = PredictLoad(serving.target("spread-grpc", ns), "spread", {1: V1}, options=options)
    with load:
        wait_for(lambda: len(load.outcomes()) >= 90, 60, "90 answers")
    no_failures(load)
    served = {ip: ok_requests(ip, "spread") - before[ip] for ip in ips}
    assert all(n > 0 for n in served.values()), served
    # Round robin: every pod took about a third, none more than half.
    assert max(served.values()) <= 0.5 * sum(served.values()), served

