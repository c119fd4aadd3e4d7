"""Drain tokens end to end: the key Secret, and the tokens the running operator puts into pods.

The suite's operator runs without POD_NAMESPACE, so its drain key is the Secret
`tfleet-drain-key` in `default` (the namespace `tfleet run` falls back to outside a pod).
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from e2e.tests.test_operator import apply_and_wait_ready, get, manifest, operator_writes, wait_for
from tfleet.desired import health_wiring
from tfleet.health import podspec
from tfleet.runtime import drain_key
from tfleet.runtime.kube import Kube, load_config

OPERATOR_AGENT = "tfleet/operator"
KEY_NAMESPACE, KEY_SECRET = "default", drain_key.DEFAULT_SECRET_NAME


def secret_posts(requests: list[dict[str, Any]], namespace: str, agent: str = OPERATOR_AGENT) -> list[dict[str, Any]]:
    return [r for r in requests if r["resource"] == "secrets" and r["verb"] == "create"
            and r["namespace"] == namespace and r["user_agent"].startswith(agent)]


def stored_key(kubectl: Callable[..., Any], namespace: str, name: str) -> tuple[bytes, str]:
    secret = get(kubectl, "secret", name, "-n", namespace)
    return base64.b64decode(secret["data"][drain_key.DATA_KEY]), secret["metadata"]["uid"]


def tokens(deployment: dict[str, Any]) -> tuple[str | None, str | None]:
    """(the bridge's TFLEET_DRAIN_TOKEN, the preStop hook's header) of a Deployment's pods."""
    pod = deployment["spec"]["template"]["spec"]
    (bridge,) = [c for c in pod["initContainers"] if c["name"] == podspec.BRIDGE_CONTAINER_NAME]
    env = {e["name"]: e.get("value") for e in bridge.get("env") or []}
    get_ = pod["containers"][0]["lifecycle"]["preStop"]["httpGet"]
    headers = {h["name"]: h["value"] for h in get_.get("httpHeaders") or []}
    return env.get(podspec.DRAIN_TOKEN_ENV), headers.get(podspec.DRAIN_TOKEN_HEADER)


# ---------------------------------------------------------------------- the key Secret


@pytest.mark.simulated  # injects faults and reads the request log of the local control plane
def test_the_key_is_created_once_even_when_the_create_answer_is_lost(local_cluster, kubectl, namespace):
    kube = Kube(load_config(str(local_cluster.kubeconfig)))
    local_cluster.faults.clear()
    local_cluster.faults.add("internal_error_after_apply", user_agents=[OPERATOR_AGENT], verbs=["create"],
                             resources=["secrets"], namespaces=[namespace], count=1)
    start = len(local_cluster.request_log)
    try:
        key = drain_key.load(kube, namespace, "lost-answer", threading.Event())
        assert local_cluster.faults.injected() == {"internal_error_after_apply": 1}
    finally:
        local_cluster.faults.clear()
    assert key is not None
    # The POST landed though its answer was a 500; the retry found the Secret and used it.
    assert len(secret_posts(local_cluster.request_log[start:], namespace)) == 1
    stored, _ = stored_key(kubectl, namespace, "lost-answer")
    assert stored == key and len(key) == health_wiring.DRAIN_KEY_BYTES


@pytest.mark.simulated
def test_a_replica_that_loses_the_create_race_uses_the_winners_key(local_cluster, kubectl, namespace):
    kube = Kube(load_config(str(local_cluster.kubeconfig)))
    winner, created = drain_key.ensure(kube, namespace, "race")
    assert created

    class LateReader:
        """A replica whose GET came before the winner's POST: it sees no Secret, then 409."""

        def __init__(self) -> None:
            self.reads = 0

        def get_secret(self, ns: str, name: str) -> dict[str, Any] | None:
            self.reads += 1
            return None if self.reads == 1 else kube.get_secret(ns, name)

        def create_secret(self, secret: dict[str, Any]) -> dict[str, Any]:
            return kube.create_secret(secret)

    loser, created = drain_key.ensure(LateReader(), namespace, "race")
    assert (loser, created) == (winner, False)
    assert stored_key(kubectl, namespace, "race")[0] == winner


def test_a_secret_without_a_usable_key_is_reported_and_left_alone(local_cluster, kubectl, namespace):
    kubectl("create", "secret", "generic", "broken", "-n", namespace, "--from-literal=key=short")
    before = get(kubectl, "secret", "broken", "-n", namespace)
    kube = Kube(load_config(str(local_cluster.kubeconfig)))
    with pytest.raises(drain_key.DrainKeyError) as caught:
        drain_key.load(kube, namespace, "broken", threading.Event())
    assert str(caught.value) == (f"Secret {namespace}/broken: data.key: a drain key needs at least 16 bytes, "
                                 "this one has 5")
    after = get(kubectl, "secret", "broken", "-n", namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


# ---------------------------------------------------------------------- the running operator


@pytest.mark.simulated  # reads the local control plane's request log
def test_the_pods_carry_one_token_and_a_restarted_operator_reuses_the_key_and_writes_nothing(
        kubectl, namespace, local_cluster, operator_process):
    isvc = apply_and_wait_ready(kubectl, manifest("guarded", namespace, replicas=2), namespace, "guarded")
    key, uid = stored_key(kubectl, KEY_NAMESPACE, KEY_SECRET)
    revision = isvc["status"]["rollout"]["stableRevision"]
    deployment = get(kubectl, "deployment", f"guarded-{revision}", "-n", namespace)
    expected = health_wiring.drain_token(key, namespace, "guarded", revision)
    assert tokens(deployment) == (expected, expected)
    # The operator made the Secret once (and once more after each time it was deleted),
    # however often it restarted.
    made = [r for r in secret_posts(local_cluster.request_log, KEY_NAMESPACE) if r["code"] == 201]
    deleted = [r for r in local_cluster.request_log if r["resource"] == "secrets" and r["verb"] == "delete"
               and r["namespace"] == KEY_NAMESPACE and r["name"] == KEY_SECRET]
    assert len(made) == 1 + len(deleted)

    time.sleep(1.0)  # the last watch events of the rollout
    start = len(local_cluster.request_log)
    log_mark = len(operator_process.log())
    operator_process.stop()
    operator_process.start()
    assert "Loaded the drain key in Secret default/tfleet-drain-key" in operator_process.log()[log_mark:]
    # The restarted operator lists everything and reconciles every InferenceService.
    time.sleep(3.0)
    since = local_cluster.request_log[start:]
    assert [r for r in operator_writes(since) if r["resource"] == "deployments"] == []
    assert secret_posts(since, KEY_NAMESPACE) == []
    assert [r for r in since if r["resource"] == "secrets" and r["verb"] == "get"
            and r["user_agent"].startswith(OPERATOR_AGENT)], "the restarted operator read its key"
    assert stored_key(kubectl, KEY_NAMESPACE, KEY_SECRET) == (key, uid)
    after = get(kubectl, "deployment", f"guarded-{revision}", "-n", namespace)
    assert after["metadata"]["generation"] == deployment["metadata"]["generation"]
    assert tokens(after) == (expected, expected)


def test_a_new_key_gives_only_new_revisions_a_new_token(kubectl, namespace, operator_process):
    """Losing the key (the Secret deleted, the operator restarted) rolls nothing; the next
    revision gets a token of the new key."""
    rollout = {"steps": [{"weight": 50, "pause": "1s"}]}
    isvc = apply_and_wait_ready(kubectl, manifest("rekeyed", namespace, rollout=rollout), namespace, "rekeyed")
    old_revision = isvc["status"]["rollout"]["stableRevision"]
    old_key, _ = stored_key(kubectl, KEY_NAMESPACE, KEY_SECRET)
    kubectl("delete", "secret", KEY_SECRET, "-n", KEY_NAMESPACE)
    operator_process.stop()
    operator_process.start()
    new_key, _ = stored_key(kubectl, KEY_NAMESPACE, KEY_SECRET)
    assert new_key != old_key
    kept = get(kubectl, "deployment", f"rekeyed-{old_revision}", "-n", namespace)
    old_token = health_wiring.drain_token(old_key, namespace, "rekeyed", old_revision)
    assert tokens(kept) == (old_token, old_token)

    bumped = apply_and_wait_ready(kubectl, manifest("rekeyed", namespace, rollout=rollout, model={
        "basePath": "gs://bucket/models/half_plus_two", "version": 2}), namespace, "rekeyed")
    wait_for(lambda: get(kubectl, "tfis", "rekeyed", "-n", namespace)["status"]["rollout"].get("stableRevision")
             not in (None, old_revision), what="the new revision to be stable")
    new_revision = get(kubectl, "tfis", "rekeyed", "-n", namespace)["status"]["rollout"]["stableRevision"]
    assert bumped["metadata"]["generation"] == 2
    new_token = health_wiring.drain_token(new_key, namespace, "rekeyed", new_revision)
    assert tokens(get(kubectl, "deployment", f"rekeyed-{new_revision}", "-n", namespace)) == (new_token, new_token)
