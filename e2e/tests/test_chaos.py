"""Canary rollouts under API faults and operator kills, with invariants sampled throughout.

The local control plane fails a share of the operator's requests (and only the operator's:
rules are scoped to its user agents), in the real API server's formats: 500 before and after
a write is applied (a lost response), 429 with Retry-After, 409, 503 on reads, and watch
streams cut every few seconds. The operator is SIGKILLed twice during the rollouts. Every
0.5 s, through a client the faults do not touch, the test checks what must hold at every
moment, not only at the end:

- ready capacity never drops below `spec.replicas`;
- no canary Deployment is scaled down while its rollout progresses;
- `status.rollout.step` never goes backwards within one rollout;
- Ready never flaps.

At the end every rollout has succeeded, there are no orphans and no duplicate revisions,
and the operator writes nothing while idle.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.simulated

COUNT, REPLICAS = 10, 3
STEPS = [{"weight": 25, "pause": "2s"}, {"weight": 50, "pause": "2s"}]
OPERATOR = ["tfleet/operator", "kopf/"]
WRITES = ["create", "update", "patch"]


def manifest(name: str, namespace: str, version: int) -> dict[str, Any]:
    return {"apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"model": {"basePath": "gs://bucket/models/fraud", "version": version},
                     "replicas": REPLICAS, "rollout": {"steps": STEPS, "progressDeadlineSeconds": 300}}}


def get_json(local_cluster: Any, path: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(local_cluster.url + path, timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


class Invariants:
    """Samples the namespace every 0.5 s and records every violation it sees."""

    def __init__(self, local_cluster: Any, namespace: str):
        self.lc, self.ns = local_cluster, namespace
        self.violations: list[str] = []
        self.samples = 0
        self._canary_replicas: dict[tuple[str, str], int] = {}  # (isvc, canary) -> replicas
        self._steps: dict[tuple[str, str], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.sample()
            except Exception as exc:  # a broken sampler must fail the test, not go quiet
                self.violations.append(f"sampling failed: {exc!r}")

    def sample(self) -> None:
        isvcs = get_json(self.lc, f"/apis/tfleet.dev/v1alpha1/namespaces/{self.ns}/inferenceservices")["items"]
        deployments = get_json(self.lc, f"/apis/apps/v1/namespaces/{self.ns}/deployments")["items"]
        self.samples += 1
        by_isvc: dict[str, list[dict[str, Any]]] = {}
        for d in deployments:
            by_isvc.setdefault(d["metadata"]["labels"].get("tfleet.dev/inferenceservice", ""), []).append(d)
        for isvc in isvcs:
            name = isvc["metadata"]["name"]
            status = isvc.get("status") or {}
            ready = sum(int((d.get("status") or {}).get("readyReplicas") or 0) for d in by_isvc.get(name, []))
            if ready < REPLICAS:
                self.violations.append(f"{name}: ready capacity {ready} < {REPLICAS}")
            condition = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)
            if condition is not None and condition["status"] != "True":
                self.violations.append(f"{name}: Ready flapped to {condition['status']}: {condition['message']}")
            rollout = status.get("rollout") or {}
            canary, phase = rollout.get("canaryRevision"), rollout.get("phase")
            if not canary or phase not in ("Progressing", "Paused", "Promoting"):
                continue
            step = len(STEPS) if phase == "Promoting" else int(rollout.get("step") or 0)
            last_step = self._steps.get((name, canary))
            if last_step is not None and step < last_step:
                self.violations.append(f"{name}: step went back from {last_step} to {step}")
            self._steps[(name, canary)] = max(step, last_step or 0)
            for d in by_isvc.get(name, []):
                if d["metadata"]["labels"].get("tfleet.dev/revision") != canary:
                    continue
                replicas = int(d["spec"].get("replicas") or 0)
                before = self._canary_replicas.get((name, canary))
                if before is not None and replicas < before:
                    self.violations.append(f"{name}: canary {canary} scaled down from {before} to {replicas}")
                self._canary_replicas[(name, canary)] = max(replicas, before or 0)


def test_canary_rollouts_hold_their_invariants_under_api_faults_and_operator_kills(
        local_cluster, kubectl, namespace, operator_process):
    for i in range(COUNT):
        kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest(f"c{i}", namespace, 1)))
    kubectl("wait", "--for=condition=Ready", "tfis", "--all", "-n", namespace, "--timeout=60s")

    faults = local_cluster.faults
    faults.set_seed(7)
    for kind, params in [
        ("internal_error", {"verbs": WRITES, "probability": 0.05}),
        ("internal_error_after_apply", {"verbs": ["patch"], "probability": 0.05}),
        ("too_many_requests", {"verbs": ["create", "patch"], "probability": 0.03, "retry_after_seconds": 1}),
        ("conflict", {"verbs": ["patch"], "resources": ["inferenceservices/status"], "probability": 0.03}),
        ("service_unavailable", {"verbs": ["get", "list"], "probability": 0.03}),
        ("watch_cut", {"verbs": ["watch"], "after_seconds": 4}),
    ]:
        faults.add(kind, user_agents=OPERATOR, namespaces=None if kind == "watch_cut" else [namespace], **params)
    invariants = Invariants(local_cluster, namespace)
    log_mark = len(operator_process.log())
    invariants.start()
    try:
        for i in range(COUNT):
            kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest(f"c{i}", namespace, 2)))
        for pause in (2.5, 3.0):  # mid-rollout: between steps, and during the promotions
            time.sleep(pause)
            operator_process.kill()
            operator_process.start()

        def all_succeeded() -> bool:
            items = get_json(local_cluster, f"/apis/tfleet.dev/v1alpha1/namespaces/{namespace}/inferenceservices")["items"]
            return all(((i.get("status") or {}).get("rollout") or {}).get("phase") == "Succeeded" for i in items)

        deadline = time.monotonic() + 150
        while not all_succeeded():
            assert time.monotonic() < deadline, "the rollouts did not all succeed under faults"
            time.sleep(0.5)
    finally:
        invariants.stop()
        injected = faults.injected()
        faults.clear()
    print(f"\nfaults injected: {injected}; invariant samples: {invariants.samples}")
    assert sum(v for k, v in injected.items() if k != "watch_cut") > 0, injected
    assert invariants.samples > 10
    assert invariants.violations == [], invariants.violations[:10]
    # Every fault is handled: none surfaces as a traceback in the operator's log.
    log = operator_process.log()[log_mark:]
    assert "Traceback" not in log, log[log.index("Traceback") - 300:][:3000]

    # No orphans, no duplicate revisions: each InferenceService has its two revisions' Deployments.
    deployments = get_json(local_cluster, f"/apis/apps/v1/namespaces/{namespace}/deployments")["items"]
    revisions = Counter((d["metadata"]["labels"]["tfleet.dev/inferenceservice"], d["metadata"]["labels"]["tfleet.dev/revision"])
                        for d in deployments)
    assert all(n == 1 for n in revisions.values()), revisions
    per_isvc = Counter(name for name, _ in revisions)
    assert per_isvc == {f"c{i}": 2 for i in range(COUNT)}, per_isvc
    for d in deployments:
        owners = d["metadata"].get("ownerReferences") or []
        assert [o["kind"] for o in owners] == ["InferenceService"], d["metadata"]["name"]

    # Idle: the operator writes nothing more (once the last status writes are out).
    time.sleep(2)
    mark = len(local_cluster.request_log)
    time.sleep(8)
    idle = [e for e in local_cluster.request_log[mark:]
            if e["user_agent"].startswith("tfleet/operator") and e["verb"] in ("create", "update", "patch", "delete")
            and e.get("namespace") == namespace]
    assert idle == [], idle[:5]
