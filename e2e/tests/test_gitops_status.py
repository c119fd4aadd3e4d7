"""What Flux (kstatus) and `kubectl wait` read from a real operator's status, sampled through
every transition: create, bump, each step, promotion, rollback, invalid spec, abort, deletion.

kstatus's rules are those of `tests/kstatus.py`; the sampler reads the object every 0.1 s and
keeps every distinct (generation, kstatus) reading with what the rollout was doing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import yaml
from kubernetes import client

from e2e.localcluster.controllers.behaviour import set_rules
from tests import kstatus

pytestmark = pytest.mark.usefixtures("operator_process")

STEPS = [{"weight": 25, "pause": "1s"}, {"weight": 50, "pause": "1s"}]


def manifest(name: str, namespace: str, version: int, **spec: Any) -> str:
    return yaml.safe_dump({
        "apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"basePath": "gs://bucket/models/fraud", "version": version}, "replicas": 2,
                 "rollout": {"steps": STEPS, "progressDeadlineSeconds": 4}, **spec},
    })


class KstatusSampler:
    def __init__(self, api_client: Any, namespace: str, name: str):
        self.api = client.CustomObjectsApi(api_client)
        self.namespace, self.name = namespace, name
        self.readings: list[tuple[int, str, str, int, str]] = []  # generation, kstatus, phase, ready, message
        self.without_status = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                obj = self.api.get_namespaced_custom_object("tfleet.dev", "v1alpha1", self.namespace,
                                                            "inferenceservices", self.name)
            except client.ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            status = obj.get("status") or {}
            if not status:
                # Before its first reconcile an object has no status, which kstatus reads as
                # Current: no operator can close that window (the first status goes out at once).
                self.without_status += 1
                continue
            result, message = kstatus.compute(obj)
            reading = (obj["metadata"]["generation"], result, (status.get("rollout") or {}).get("phase", ""),
                       int(status.get("readyReplicas") or 0), message)
            if not self.readings or self.readings[-1][:3] != reading[:3]:
                self.readings.append(reading)

    def since(self, generation: int) -> list[tuple[int, str, str, int, str]]:
        return [r for r in self.readings if r[0] >= generation]

    def wait_for(self, what: str, predicate: Any, timeout: float = 40) -> tuple[int, str, str, int, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.readings and predicate(self.readings[-1]):
                return self.readings[-1]
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; readings: {self.readings[-8:]}")


@contextmanager
def sampling(api_client: Any, namespace: str, name: str) -> Iterator[KstatusSampler]:
    sampler = KstatusSampler(api_client, namespace, name)
    sampler._thread.start()
    try:
        yield sampler
    finally:
        sampler._stop.set()
        sampler._thread.join(timeout=5)


def columns(kubectl: Any, namespace: str) -> list[str]:
    """The row `kubectl get tfis` prints (NAME MODEL VERSION TARGET READY STATUS ROLLOUT AGE)."""
    table = kubectl("get", "tfis", "flux", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "MODEL", "VERSION", "TARGET", "READY", "STATUS", "ROLLOUT", "AGE"], table
    return table[1].split()


@pytest.mark.simulated
def test_kstatus_reads_every_transition_right(kubectl, namespace, api_client):
    core = client.CoreV1Api(api_client)
    set_rules(core, [{"match": {"namespace": namespace, "labelSelector": "tfleet.dev/model-version=3"},
                      "behaviour": "never-ready"}])
    try:
        with sampling(api_client, namespace, "flux") as sampler:
            # Created: InProgress from the first status until every pod serves, then Current.
            kubectl("apply", "-f", "-", input=manifest("flux", namespace, 1))
            sampler.wait_for("Current after the create", lambda r: r[1] == "Current")
            assert [r for r in sampler.since(1) if r[1] == "Current" and r[3] < 2] == []
            assert any(r[1] == "InProgress" for r in sampler.readings), sampler.readings

            # Bumped: InProgress through every step and the promotion, Current once promoted.
            kubectl("apply", "-f", "-", input=manifest("flux", namespace, 2))
            done = sampler.wait_for("the promotion", lambda r: r[0] == 2 and r[2] == "Succeeded")
            assert done[1] == "Current"
            during = [r for r in sampler.since(2) if r[2] != "Succeeded"]
            assert {r[2] for r in during} >= {"Progressing"}, during
            assert {r[1] for r in during} == {"InProgress"}, during
            # kubectl wait on RolledOut, once the generation is observed, returns after the promotion.
            kubectl("wait", "--for=condition=RolledOut", "tfis/flux", "-n", namespace, "--timeout=5s")

            # A version that never gets ready: InProgress while it is tried, Failed once rolled back,
            # and Failed it stays until the spec changes.
            kubectl("apply", "-f", "-", input=manifest("flux", namespace, 3))
            failed = sampler.wait_for("the rollback", lambda r: r[0] == 3 and r[2] == "RolledBack")
            assert failed[1] == "Failed" and "Rolled back revision" in failed[4], failed
            time.sleep(1.5)
            assert sampler.readings[-1][1] == "Failed"
            waited = kubectl("wait", "--for=condition=RolledOut", "tfis/flux", "-n", namespace, "--timeout=1s",
                             check=False)
            assert waited.returncode != 0  # a rollback never satisfies the CI gate
            assert columns(kubectl, namespace)[:5] == ["flux", "flux", "2", "3", "2/2"]
            assert columns(kubectl, namespace)[5:7] == ["RolledBack", "RolledBack"]  # STATUS, ROLLOUT

            # An invalid spec: Failed, with the field named, until it is fixed.
            # (A typo in the schemaless pod.affinity: the API server stores it, the operator refuses it.)
            bad = yaml.safe_load(manifest("flux", namespace, 3))
            bad["spec"]["pod"] = {"affinity": {"nodeAfinity": {}}}
            kubectl("apply", "-f", "-", input=yaml.safe_dump(bad))
            invalid = sampler.wait_for("Failed on the invalid spec", lambda r: r[0] == 4 and r[1] == "Failed")
            assert "spec.pod.affinity.nodeAfinity" in invalid[4], invalid
            assert columns(kubectl, namespace)[5] == "InvalidSpec"

            # Aborted: Failed with the abort as the reason.
            kubectl("apply", "-f", "-", input=manifest("flux", namespace, 4, rollout={"steps": [
                {"weight": 25, "pause": "60s"}]}))
            sampler.wait_for("a rollout", lambda r: r[0] == 5 and r[2] == "Progressing" and r[1] == "InProgress")
            canary = kubectl("get", "tfis", "flux", "-n", namespace, "-o",
                             "jsonpath={.status.rollout.canaryRevision}").stdout
            kubectl("annotate", "tfis", "flux", "-n", namespace, f"tfleet.dev/rollout-abort={canary}")
            aborted = sampler.wait_for("the abort", lambda r: r[2] == "RolledBack")
            assert aborted[1] == "Failed" and "aborted by request" in aborted[4], aborted

            # Deleted (held by a finalizer, so the moment can be read): Terminating.
            kubectl("patch", "tfis", "flux", "-n", namespace, "--type=merge",
                    "-p", '{"metadata":{"finalizers":["example.com/hold"]}}')
            kubectl("delete", "tfis", "flux", "-n", namespace, "--wait=false")
            sampler.wait_for("Terminating", lambda r: r[1] == "Terminating")
            kubectl("patch", "tfis", "flux", "-n", namespace, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    finally:
        set_rules(core, [])
