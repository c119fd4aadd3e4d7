"""Going back fast and trying again, through `tfleet rollout undo`, `retry` and `restart`,
against the real operator process."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import yaml
from kubernetes import client

from e2e.localcluster.controllers.behaviour import set_rules

from .test_rollouts import Sampler, get_isvc, rollout_status, sampling, start_ready, wait_for

pytestmark = pytest.mark.usefixtures("operator_process")

STEPS = [{"weight": 25, "pause": "1s"}, {"weight": 50, "pause": "1s"}]


def manifest(name: str, namespace: str, version: int, **rollout: Any) -> str:
    return yaml.safe_dump({
        "apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"basePath": "gs://bucket/models/fraud", "version": version}, "replicas": 4,
                 "rollout": {"steps": STEPS, **rollout}},
    })


def tfleet(kubeconfig: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tfleet.cli", *args, "--kubeconfig", str(kubeconfig)],
                          capture_output=True, text=True, timeout=60)


def canary_sizes(sampler: Sampler, canary: str) -> list[int]:
    sizes: list[int] = []
    for sample in sampler.samples:
        size = sample.get(canary, (0, 0))[0]
        if not sizes or sizes[-1] != size:
            sizes.append(size)
    return sizes


def test_undo_returns_to_the_previous_revision_without_canary_steps(kubectl, namespace, api_client, kubeconfig):
    first = start_ready(kubectl, manifest("back", namespace, 1), namespace, "back")
    kubectl("apply", "-f", "-", input=manifest("back", namespace, 2))
    wait_for(lambda: rollout_status(kubectl, namespace, "back").get("phase") == "Succeeded"
             and get_isvc(kubectl, namespace, "back")["status"]["observedGeneration"] == 2, what="v2 rolled out")
    assert rollout_status(kubectl, namespace, "back")["history"] == [first]
    with sampling(api_client, namespace, "back") as sampler:
        undo = tfleet(kubeconfig, "rollout", "undo", "back", "-n", namespace)
        assert undo.returncode == 0, undo.stderr
        assert f"the previous revision {first}" in undo.stdout
        wait_for(lambda: (s := rollout_status(kubectl, namespace, "back")).get("phase") == "Succeeded"
                 and s.get("stableRevision") == first, what="the return to the first revision")
    # Straight to every replica (no 25% and 50% steps), and capacity never dropped.
    assert canary_sizes(sampler, first) == [0, 4], canary_sizes(sampler, first)
    assert sampler.min_ready() >= 4
    isvc = get_isvc(kubectl, namespace, "back")
    assert isvc["spec"]["model"]["version"] == 1  # the spec says so too: GitOps tools see the diff
    assert isvc["status"]["servingVersion"] == 1
    events = json.loads(kubectl("get", "events", "-n", namespace, "--field-selector", "reason=RolloutStarted",
                                "-o", "json").stdout)["items"]
    assert any("from history, without canary steps" in e["message"] for e in events)


@pytest.mark.simulated
def test_retry_tries_a_rolled_back_revision_again_and_restart_makes_a_new_one(kubectl, namespace, api_client,
                                                                               kubeconfig):
    core = client.CoreV1Api(api_client)
    set_rules(core, [{"match": {"namespace": namespace, "labelSelector": "tfleet.dev/model-version=2"},
                      "behaviour": "never-ready"}])
    try:
        stable = start_ready(kubectl, manifest("again", namespace, 1, progressDeadlineSeconds=3), namespace, "again")
        kubectl("apply", "-f", "-", input=manifest("again", namespace, 2, progressDeadlineSeconds=3))
        failed = wait_for(lambda: rollout_status(kubectl, namespace, "again").get("failedRevision"), timeout=30,
                          what="a rollback")
    finally:
        set_rules(core, [])  # the version is fixed (say, the bucket was repaired)
    retry = tfleet(kubeconfig, "rollout", "retry", "again", "-n", namespace)
    assert retry.returncode == 0, retry.stderr
    wait_for(lambda: (s := rollout_status(kubectl, namespace, "again")).get("phase") == "Succeeded"
             and s.get("stableRevision") == failed, timeout=40, what="the retried revision to roll out")
    annotations = get_isvc(kubectl, namespace, "again")["metadata"].get("annotations") or {}
    assert "tfleet.dev/rollout-retry" not in annotations  # spent, and removed
    assert tfleet(kubeconfig, "rollout", "retry", "again", "-n", namespace).returncode == 1  # nothing to retry

    restart = tfleet(kubeconfig, "rollout", "restart", "again", "-n", namespace)
    assert restart.returncode == 0, restart.stderr
    new = wait_for(lambda: (s := rollout_status(kubectl, namespace, "again")).get("phase") == "Succeeded"
                   and s.get("stableRevision") not in (failed, stable) and s.get("stableRevision"), timeout=40,
                   what="the restarted revision")
    isvc = get_isvc(kubectl, namespace, "again")
    assert "tfleet.dev/restarted-at" in isvc["spec"]["pod"]["annotations"]
    assert isvc["spec"]["model"]["version"] == 2 and new
