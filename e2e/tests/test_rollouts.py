"""Gradual rollouts end to end: the real operator process, kubectl, and `tfleet rollout`.

Scenarios that make pods misbehave use the local control plane's behaviour rules and are
marked `simulated` (skipped on a real cluster).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import yaml
from kubernetes import client

from e2e.localcluster.controllers.behaviour import set_rules
from e2e.tests.waiting import wait_for

pytestmark = pytest.mark.usefixtures("operator_process")


def manifest(name: str, namespace: str, version: int, replicas: int, steps: list[dict[str, Any]],
             **rollout: Any) -> str:
    return yaml.safe_dump({
        "apiVersion": "tfleet.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"basePath": "gs://bucket/models/fraud", "version": version},
            "replicas": replicas,
            "rollout": {"steps": steps, **rollout},
        },
    })


def get_isvc(kubectl: Callable[..., Any], namespace: str, name: str) -> dict[str, Any]:
    return json.loads(kubectl("get", "tfis", name, "-n", namespace, "-o", "json").stdout)  # type: ignore[no-any-return]


def rollout_status(kubectl: Callable[..., Any], namespace: str, name: str) -> dict[str, Any]:
    return get_isvc(kubectl, namespace, name).get("status", {}).get("rollout", {})  # type: ignore[no-any-return]


def tfleet(kubeconfig: Any, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tfleet.cli", *args, "--kubeconfig", str(kubeconfig)],
                          capture_output=True, text=True, timeout=timeout)


class Sampler:
    """Samples every Deployment of an InferenceService in the background."""

    def __init__(self, api_client: Any, namespace: str, name: str):
        self.apps = client.AppsV1Api(api_client)
        self.namespace, self.name = namespace, name
        self.samples: list[dict[str, tuple[int, int]]] = []  # revision -> (replicas, ready)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            deployments = self.apps.list_namespaced_deployment(
                self.namespace, label_selector=f"tfleet.dev/inferenceservice={self.name}").items
            self.samples.append({
                d.metadata.labels["tfleet.dev/revision"]: (d.spec.replicas or 0, (d.status and d.status.ready_replicas) or 0)
                for d in deployments
            })
            time.sleep(0.05)

    def min_ready(self) -> int:
        return min(sum(ready for _, ready in sample.values()) for sample in self.samples)

    def shapes(self, stable: str, canary: str) -> list[tuple[int, int]]:
        """The distinct (stable replicas, canary replicas) states, in order."""
        out: list[tuple[int, int]] = []
        for sample in self.samples:
            shape = (sample.get(stable, (0, 0))[0], sample.get(canary, (0, 0))[0])
            if not out or out[-1] != shape:
                out.append(shape)
        return out


@contextmanager
def sampling(api_client: Any, namespace: str, name: str) -> Iterator[Sampler]:
    sampler = Sampler(api_client, namespace, name)
    sampler._thread.start()
    try:
        yield sampler
    finally:
        sampler._stop.set()
        sampler._thread.join(timeout=5)


def start_ready(kubectl: Callable[..., Any], text: str, namespace: str, name: str) -> str:
    kubectl("apply", "-f", "-", input=text)
    kubectl("wait", "--for=condition=Ready", f"tfis/{name}", "-n", namespace, "--timeout=60s")
    return rollout_status(kubectl, namespace, name)["stableRevision"]  # type: ignore[no-any-return]


def test_a_version_bump_goes_through_every_step_without_losing_capacity(kubectl, namespace, api_client):
    steps = [{"weight": 25, "pause": "2s"}, {"weight": 50, "pause": "2s"}]
    old = start_ready(kubectl, manifest("fraud", namespace, 1, 4, steps), namespace, "fraud")
    with sampling(api_client, namespace, "fraud") as sampler:
        kubectl("apply", "-f", "-", input=manifest("fraud", namespace, 2, 4, steps))
        new = wait_for(lambda: rollout_status(kubectl, namespace, "fraud").get("canaryRevision"), what="a canary")
        wait_for(lambda: rollout_status(kubectl, namespace, "fraud").get("phase") == "Succeeded",
                 what="the rollout to succeed")
        time.sleep(0.5)
    # canary = round(4 * 25 / 75) = 1 pod at 25%, 4 pods (an equal share) at 50%, then
    # promotion: the canary has all 4 before the old revision goes to zero.
    assert sampler.shapes(old, new) == [(4, 0), (4, 1), (4, 4), (0, 4)]
    assert sampler.min_ready() >= 4, "ready capacity dropped below spec.replicas"
    isvc = get_isvc(kubectl, namespace, "fraud")
    assert isvc["status"]["servingVersion"] == 2
    assert isvc["status"]["rollout"]["stableRevision"] == new
    assert isvc["status"]["rollout"]["history"] == [old]
    events = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    reasons = [e["reason"] for e in events if e["involvedObject"]["name"] == "fraud"]
    for reason in ("RolloutStarted", "RolloutStepAdvanced", "RolloutPromoting", "RolloutSucceeded"):
        assert reason in reasons


@pytest.mark.simulated
@pytest.mark.parametrize(("behaviour", "reason"), [
    ("never-ready", "0 of 1 canary pods became ready"),
    ("crash-loop", "1 of 1 canary pods crash-looping"),
])
def test_a_bad_version_rolls_back_by_itself_and_is_not_retried(kubectl, namespace, api_client, behaviour, reason):
    set_rules(client.CoreV1Api(api_client), [
        {"match": {"namespace": namespace, "labelSelector": "tfleet.dev/model-version=3"}, "behaviour": behaviour},
    ])
    steps = [{"weight": 25, "pause": "1s"}]
    try:
        start_ready(kubectl, manifest("bad", namespace, 2, 3, steps, progressDeadlineSeconds=3), namespace, "bad")
        with sampling(api_client, namespace, "bad") as sampler:
            kubectl("apply", "-f", "-", input=manifest("bad", namespace, 3, 3, steps, progressDeadlineSeconds=3))
            status = wait_for(lambda: (s := rollout_status(kubectl, namespace, "bad")).get("phase") == "RolledBack" and s,
                              timeout=30, what="an automatic rollback")
            time.sleep(2)  # long enough for a retry, if there were one
        assert reason in status["message"]
        assert sampler.min_ready() >= 3, "the stable revision lost capacity"
        isvc = get_isvc(kubectl, namespace, "bad")
        degraded = next(c for c in isvc["status"]["conditions"] if c["type"] == "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "RolledBack")
        assert isvc["status"]["servingVersion"] == 2
        failed = status["failedRevision"]
        assert rollout_status(kubectl, namespace, "bad")["phase"] == "RolledBack"
        canary = client.AppsV1Api(api_client).read_namespaced_deployment(f"bad-{failed}", namespace)
        assert canary.spec.replicas == 0
        events = json.loads(kubectl("get", "events", "-n", namespace, "--field-selector",
                                    "reason=RolloutRolledBack", "-o", "json").stdout)["items"]
        assert len(events) == 1 and reason in events[0]["message"]
    finally:
        set_rules(client.CoreV1Api(api_client), [])


def test_an_operator_killed_twice_mid_rollout_completes_it(kubectl, namespace, operator_process):
    steps = [{"weight": 25, "pause": "3s"}, {"weight": 50, "pause": "3s"}]
    start_ready(kubectl, manifest("sturdy", namespace, 1, 2, steps), namespace, "sturdy")
    kubectl("apply", "-f", "-", input=manifest("sturdy", namespace, 2, 2, steps))
    for step in (0, 1):
        wait_for(lambda step=step: rollout_status(kubectl, namespace, "sturdy").get("step") == step,
                 what=f"step {step}")
        operator_process.kill()
        time.sleep(1.0)
        operator_process.start()
    wait_for(lambda: rollout_status(kubectl, namespace, "sturdy").get("phase") == "Succeeded",
             what="the rollout to finish after the restarts")
    isvc = get_isvc(kubectl, namespace, "sturdy")
    assert isvc["status"]["servingVersion"] == 2
    # The old revision's pods drain away after promotion.
    wait_for(lambda: get_isvc(kubectl, namespace, "sturdy")["status"]["readyReplicas"] == 2, what="2 ready pods")


def test_a_bump_during_a_rollout_supersedes_it(kubectl, namespace, api_client, kubeconfig):
    steps = [{"weight": 50, "pause": "60s"}]
    stable = start_ready(kubectl, manifest("moving", namespace, 1, 2, steps), namespace, "moving")
    with sampling(api_client, namespace, "moving") as sampler:
        kubectl("apply", "-f", "-", input=manifest("moving", namespace, 2, 2, steps))
        first = wait_for(lambda: rollout_status(kubectl, namespace, "moving").get("canaryRevision"), what="canary")
        kubectl("apply", "-f", "-", input=manifest("moving", namespace, 3, 2, steps))
        second = wait_for(lambda: (c := rollout_status(kubectl, namespace, "moving").get("canaryRevision")) != first and c,
                          what="the second canary")
        wait_for(lambda: not [s for s in sampler.samples[-1:] if first in s], what="the first canary to go")
        assert tfleet(kubeconfig, "rollout", "promote", "moving", "-n", namespace).returncode == 0
        wait_for(lambda: rollout_status(kubectl, namespace, "moving").get("phase") == "Succeeded", what="promotion")
    assert sampler.min_ready() >= 2
    assert get_isvc(kubectl, namespace, "moving")["status"]["servingVersion"] == 3
    deployments = client.AppsV1Api(api_client).list_namespaced_deployment(
        namespace, label_selector="tfleet.dev/inferenceservice=moving").items
    assert {d.metadata.labels["tfleet.dev/revision"]: d.spec.replicas for d in deployments} == {stable: 0, second: 2}


def test_pause_resume_promote_and_abort_through_the_cli(kubectl, namespace, kubeconfig):
    steps = [{"weight": 25, "pause": "60s"}, {"weight": 50, "pause": "60s"}]
    start_ready(kubectl, manifest("steer", namespace, 1, 2, steps), namespace, "steer")
    kubectl("apply", "-f", "-", input=manifest("steer", namespace, 2, 2, steps))
    wait_for(lambda: rollout_status(kubectl, namespace, "steer").get("phase") == "Progressing", what="a rollout")

    assert tfleet(kubeconfig, "rollout", "pause", "steer", "-n", namespace).returncode == 0
    wait_for(lambda: rollout_status(kubectl, namespace, "steer").get("phase") == "Paused", what="Paused")
    timed_out = tfleet(kubeconfig, "rollout", "status", "steer", "-n", namespace, "--timeout", "1")
    assert timed_out.returncode == 2 and "phase=Paused" in timed_out.stdout
    assert tfleet(kubeconfig, "rollout", "resume", "steer", "-n", namespace).returncode == 0
    wait_for(lambda: rollout_status(kubectl, namespace, "steer").get("phase") == "Progressing", what="resumed")

    promote = tfleet(kubeconfig, "rollout", "promote", "steer", "-n", namespace)
    assert promote.returncode == 0, promote.stderr
    done = tfleet(kubeconfig, "rollout", "status", "steer", "-n", namespace, "--timeout", "30")
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'inferenceservice "steer" rolled out' in done.stdout
    assert get_isvc(kubectl, namespace, "steer")["status"]["servingVersion"] == 2

    kubectl("apply", "-f", "-", input=manifest("steer", namespace, 3, 2, steps))
    wait_for(lambda: rollout_status(kubectl, namespace, "steer").get("phase") == "Progressing", what="a rollout")
    assert tfleet(kubeconfig, "rollout", "abort", "steer", "-n", namespace).returncode == 0
    failed = tfleet(kubeconfig, "rollout", "status", "steer", "-n", namespace, "--timeout", "30")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "aborted by request" in failed.stdout
    assert get_isvc(kubectl, namespace, "steer")["status"]["servingVersion"] == 2

    history = tfleet(kubeconfig, "rollout", "history", "steer", "-n", namespace)
    assert history.returncode == 0
    roles = {line.split()[2] for line in history.stdout.splitlines()[1:]}
    assert {"stable", "previous"} <= roles and "rolled" in roles
    no_rollout = tfleet(kubeconfig, "rollout", "promote", "steer", "-n", namespace)
    assert no_rollout.returncode == 1 and "no rollout in progress" in no_rollout.stderr


def test_a_failing_metric_gate_rolls_the_canary_back(kubectl, namespace):
    from tests.fakes.prometheus import FakePrometheus

    steps = [{"weight": 25, "pause": "1s"}, {"weight": 50, "pause": "1s"}]
    with FakePrometheus() as prom:
        gate = {"prometheus": {"address": prom.address, "interval": "1s", "threshold": 0.05,
                               "query": 'sum(rate(tfs_errors{revision="{{revision}}"}[1m]))'}}
        start_ready(kubectl, manifest("gated", namespace, 1, 2, steps, analysis=gate), namespace, "gated")
        prom.value = 0.01  # healthy: the first bump goes through
        kubectl("apply", "-f", "-", input=manifest("gated", namespace, 2, 2, steps, analysis=gate))
        wait_for(lambda: rollout_status(kubectl, namespace, "gated").get("phase") == "Succeeded", what="success")
        promoted = rollout_status(kubectl, namespace, "gated")["stableRevision"]
        assert any(promoted in q for q in prom.queries), prom.queries

        prom.value = 0.4  # the next version raises errors
        kubectl("apply", "-f", "-", input=manifest("gated", namespace, 3, 2, steps, analysis=gate))
        status = wait_for(lambda: (s := rollout_status(kubectl, namespace, "gated")).get("phase") == "RolledBack" and s,
                          what="a rollback on the metric")
    assert "metric check failed: 0.4 > threshold 0.05" in status["message"]
    assert get_isvc(kubectl, namespace, "gated")["status"]["servingVersion"] == 2


def test_a_rolling_update_rolls_one_deployment_in_place(kubectl, namespace, api_client):
    def rolling(version: int) -> str:
        return manifest("rolling", namespace, version, 3, [], strategy="RollingUpdate",
                        maxSurge=1, maxUnavailable=0, minReadySeconds=1)

    old = start_ready(kubectl, rolling(1), namespace, "rolling")
    with sampling(api_client, namespace, "rolling") as sampler:
        kubectl("apply", "-f", "-", input=rolling(2))
        wait_for(lambda: rollout_status(kubectl, namespace, "rolling").get("phase") == "Succeeded",
                 what="the rolling update to finish")
    new = rollout_status(kubectl, namespace, "rolling")["stableRevision"]
    assert new != old
    deployments = client.AppsV1Api(api_client).list_namespaced_deployment(
        namespace, label_selector="tfleet.dev/inferenceservice=rolling").items
    assert [d.metadata.name for d in deployments] == ["rolling"]
    dep = deployments[0]
    assert (dep.spec.strategy.rolling_update.max_surge, dep.spec.strategy.rolling_update.max_unavailable) == (1, 0)
    assert dep.spec.min_ready_seconds == 1
    assert dep.metadata.labels["tfleet.dev/revision"] == new
    assert sampler.min_ready() >= 3, "maxUnavailable 0 must keep every pod ready"
    assert get_isvc(kubectl, namespace, "rolling")["status"]["servingVersion"] == 2


def test_rollout_status_on_a_terminal_redraws_one_live_line(kubectl, namespace, kubeconfig):
    import os
    import pty

    steps = [{"weight": 25, "pause": "3s"}]
    start_ready(kubectl, manifest("live", namespace, 1, 2, steps), namespace, "live")
    kubectl("apply", "-f", "-", input=manifest("live", namespace, 2, 2, steps))
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "tfleet.cli", "rollout", "status", "live", "-n", namespace,
                             "--kubeconfig", str(kubeconfig), "--timeout", "30", "--interval", "0.2"],
                            stdout=secondary, stderr=subprocess.PIPE, close_fds=True)
    os.close(secondary)
    output = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        output += chunk
    assert proc.wait(timeout=40) == 0
    text = output.decode()
    assert "\r\x1b[K" in text  # the line is redrawn in place
    assert "pause-left=" in text and "canary)" in text  # ready=2/2 (+1 canary)
    assert 'inferenceservice "live" rolled out' in text


@pytest.mark.simulated  # the canary pod is pointed at a health bridge this test runs on 127.0.0.1
def test_a_rollback_names_the_tf_serving_load_error(kubectl, namespace, api_client, tmp_path):
    import socket

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    error = "Could not find SavedModel .pb or .pbtxt at supplied export directory path: /models/loaderr/3"
    script = tmp_path / "tfs.yaml"
    script.write_text(yaml.safe_dump({"model": "loaderr", "events": [
        {"at": 0, "version": 2, "state": "AVAILABLE"},
        {"at": 0, "version": 3, "state": "END", "errorCode": "NOT_FOUND", "error": error},
    ]}))
    tfs_port = free_port()
    tfs = subprocess.Popen([sys.executable, "-m", "tests.fakes.tfserving", "--port", str(tfs_port), "--script", str(script)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bridge = subprocess.Popen([sys.executable, "-m", "tfleet.cli", "health-bridge", "--target", f"127.0.0.1:{tfs_port}",
                               "--model", "loaderr", "--version", "3", "--listen", "127.0.0.1",
                               "--port", "8510", "--http-port", "8511", "--interval", "0.2",
                               "--drain-seconds", "0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    set_rules(client.CoreV1Api(api_client), [
        {"match": {"namespace": namespace, "labelSelector": "tfleet.dev/model-version=3"}, "behaviour": "never-ready"},
    ])
    try:
        steps = [{"weight": 25, "pause": "1s"}]
        start_ready(kubectl, manifest("loaderr", namespace, 2, 2, steps, progressDeadlineSeconds=4), namespace, "loaderr")
        bad = yaml.safe_load(manifest("loaderr", namespace, 3, 2, steps, progressDeadlineSeconds=4))
        bad["spec"]["pod"] = {"annotations": {"localcluster.tfleet.dev/pod-ip": "127.0.0.1"}}
        kubectl("apply", "-f", "-", input=yaml.safe_dump(bad))
        status = wait_for(lambda: (s := rollout_status(kubectl, namespace, "loaderr")).get("phase") == "RolledBack" and s,
                          timeout=30, what="a rollback")
        assert f"TF Serving failed to load the model: {error}" in status["message"]
        degraded = next(c for c in get_isvc(kubectl, namespace, "loaderr")["status"]["conditions"]
                        if c["type"] == "Degraded")
        assert error in degraded["message"]
    finally:
        set_rules(client.CoreV1Api(api_client), [])
        for proc in (bridge, tfs):
            proc.terminate()
            proc.wait(timeout=10)
