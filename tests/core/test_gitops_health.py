"""What GitOps tools read from tfleet's status: kstatus (Flux, kpt) and the Argo CD health
check, held to one table of states computed by the status code itself."""

from __future__ import annotations

from typing import Any

import pytest

from tests import kstatus
from tests.packaging.argocd_health import health as argocd_health
from tests.packaging.test_argocd_health import LUA, evaluate_lua

from .isvc_factory import make_isvc
from .test_status import CANARY, CONDITION_CASES, INVALID, STABLE, _invalid, compute, seen

GENERATION = 7

# Every row of CONDITION_CASES (by id), and what each tool makes of it.
EXPECTED: dict[str, tuple[str, str]] = {
    "no Deployment yet": ("InProgress", "Progressing"),
    "every pod updated, ready and available": ("Current", "Healthy"),
    "after a rollout succeeded": ("Current", "Healthy"),
    "half the pods updated while the old ones serve": ("InProgress", "Progressing"),
    "the Deployment controller has not seen the latest spec": ("InProgress", "Progressing"),
    "pods exist but none has loaded the model": ("InProgress", "Progressing"),
    "the stable Deployment ran past its progress deadline": ("Failed", "Degraded"),
    "scaled to zero on purpose": ("Current", "Healthy"),
    "scaled up but the Deployment still has the old count": ("InProgress", "Progressing"),
    "a canary step: the stable keeps the fleet ready while the canary loads": ("InProgress", "Progressing"),
    "promoting": ("InProgress", "Progressing"),
    "paused by request": ("InProgress", "Suspended"),
    "rolled back: the stable serves, and the failure shows as Degraded": ("Failed", "Degraded"),
    "rolled back at once: TF Serving cannot load the version": ("Failed", "Degraded"),
    "aborted by request: a reason of its own": ("Failed", "Degraded"),
    "stalled past the deadline without automatic rollback": ("Failed", "Degraded"),
    "the rollout, not an old Deployment condition, speaks while a rollout runs": ("InProgress", "Progressing"),
}


def tfis(status: dict[str, Any] | None, generation: int = GENERATION, **metadata: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceService",
                           "metadata": {"name": "x", "namespace": "ml", "generation": generation, **metadata}}
    if status is not None:
        obj["status"] = status
    return obj


def test_the_table_covers_every_state_the_status_code_is_tested_in():
    assert set(EXPECTED) == {p.id for p in CONDITION_CASES}


@pytest.mark.parametrize(("manifest", "revisions", "state", "conditions"), CONDITION_CASES)
def test_kstatus_and_argocd_read_each_state_alike(request, manifest, revisions, state, conditions):
    case = request.node.callspec.id
    obj = tfis(compute(manifest, revisions, state, generation=GENERATION))
    want_kstatus, want_argocd = EXPECTED[case]
    got_kstatus, message = kstatus.compute(obj)
    assert (got_kstatus, argocd_health(obj)[0]) == (want_kstatus, want_argocd)
    if LUA is not None:  # the script Argo CD runs, not only its Python port
        assert evaluate_lua(obj) == argocd_health(obj)
    if got_kstatus == "Failed":
        assert message == state.message or "deadline" in message  # the reason, not a generic text


def test_a_rollout_in_progress_is_in_progress_although_ready_stays_true():
    # The point of Reconciling: capacity never drops, so Ready cannot carry "not done yet".
    row = next(p for p in CONDITION_CASES if p.id == "promoting")
    manifest, revisions, state, _ = row.values
    result = compute(manifest, revisions, state, generation=GENERATION)
    ready = next(c for c in result["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    # The message of the rollout as the status words it from these revisions.
    assert kstatus.compute(tfis(result)) == ("InProgress", result["rollout"]["message"])
    assert result["rollout"]["message"] == f"Promoting revision {CANARY}: waiting for canary pods, 1 of 2 ready"


def test_an_invalid_spec_is_failed_with_its_message():
    before = compute(make_isvc("x").version(3).replicas(2), {STABLE: seen(2, version=3)})
    result = _invalid({STABLE: seen(2, version=3)}, previous=before)
    obj = tfis(result, generation=result["observedGeneration"])
    assert kstatus.compute(obj) == ("Failed", INVALID)
    assert argocd_health(obj)[0] == "Degraded"


def test_an_unobserved_generation_and_a_deletion():
    result = compute(make_isvc("x").replicas(2), {STABLE: seen(2)}, generation=GENERATION)
    assert kstatus.compute(tfis(result, generation=GENERATION + 1))[0] == "InProgress"
    assert argocd_health(tfis(result, generation=GENERATION + 1))[0] == "Progressing"
    deleting = tfis(result, deletionTimestamp="2026-01-01T00:00:00Z")
    assert kstatus.compute(deleting)[0] == "Terminating"
    # Without any status, kstatus says Current: why the operator writes its first status at once.
    assert kstatus.compute(tfis(None))[0] == "Current"
