"""Status as a pure function of the model and the observed Deployment."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from tfleet import status
from tfleet.crd import build_crd

from .builders import IsvcBuilder, make_isvc, strict_jsonschema

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:05:00Z"

STATUS_VALIDATOR = jsonschema.Draft202012Validator(
    strict_jsonschema(build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"])
)


def deployment(
    desired: int = 2,
    *,
    replicas: int | None = None,
    ready: int | None = None,
    available: int | None = None,
    updated: int | None = None,
    generation: int = 3,
    observed_generation: int | None = None,
    deadline_exceeded: bool = False,
) -> dict[str, Any]:
    """An observed Deployment; every count defaults to `desired` (a finished rollout)."""
    progressing = (
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "x-5d4f" has timed out progressing.'}
        if deadline_exceeded
        else {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x", "namespace": "ml", "generation": generation},
        "spec": {"replicas": desired},
        "status": {
            "observedGeneration": generation if observed_generation is None else observed_generation,
            "replicas": desired if replicas is None else replicas,
            "readyReplicas": desired if ready is None else ready,
            "availableReplicas": desired if available is None else available,
            "updatedReplicas": desired if updated is None else updated,
            "conditions": [progressing],
        },
    }


def compute(
    manifest: IsvcBuilder,
    observed: dict[str, Any] | None,
    previous: dict[str, Any] | None = None,
    now: str = T0,
    generation: int = 7,
) -> dict[str, Any]:
    isvc = manifest.isvc()
    result = status.compute_status(
        isvc=isvc, name=isvc.name, namespace=isvc.namespace, generation=generation, invalid_message=None,
        observed=status.Observed(deployment=observed), previous=previous, now=now,
    )
    errors = [e.message for e in STATUS_VALIDATOR.iter_errors(result)]
    assert errors == [], f"status does not fit the CRD's status schema: {errors}"
    return result


def summary(result: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in result["conditions"]}


CONDITION_CASES = [
    pytest.param(
        make_isvc("x").replicas(2), None,
        {"Ready": ("False", "DeploymentMissing"), "ModelAvailable": ("False", "DeploymentMissing"),
         "Progressing": ("True", "ReplicaSetUpdated"), "Degraded": ("False", "AsExpected")},
        id="no Deployment yet",
    ),
    pytest.param(
        make_isvc("x").replicas(2), deployment(2),
        {"Ready": ("True", "Available"), "ModelAvailable": ("True", "ModelLoaded"),
         "Progressing": ("True", "NewReplicaSetAvailable"), "Degraded": ("False", "AsExpected")},
        id="every pod updated, ready and available",
    ),
    pytest.param(
        make_isvc("x").replicas(2), deployment(2, updated=1, replicas=3),
        {"Ready": ("False", "Updating"), "ModelAvailable": ("True", "ModelLoaded"),
         "Progressing": ("True", "ReplicaSetUpdated"), "Degraded": ("False", "AsExpected")},
        id="half the pods updated while the old ones serve",
    ),
    pytest.param(
        make_isvc("x").replicas(2), deployment(2, observed_generation=2),
        {"Ready": ("False", "Updating"), "ModelAvailable": ("True", "ModelLoaded"),
         "Progressing": ("True", "ReplicaSetUpdated"), "Degraded": ("False", "AsExpected")},
        id="the Deployment controller has not seen the latest spec",
    ),
    pytest.param(
        make_isvc("x").replicas(2), deployment(2, ready=0, available=0),
        {"Ready": ("False", "Updating"), "ModelAvailable": ("False", "NoReadyReplicas"),
         "Progressing": ("True", "ReplicaSetUpdated"), "Degraded": ("False", "AsExpected")},
        id="pods exist but none has loaded the model",
    ),
    pytest.param(
        make_isvc("x").replicas(2), deployment(2, ready=0, available=0, updated=1, deadline_exceeded=True),
        {"Ready": ("False", "Updating"), "ModelAvailable": ("False", "NoReadyReplicas"),
         "Progressing": ("False", "ProgressDeadlineExceeded"), "Degraded": ("True", "ProgressDeadlineExceeded")},
        id="the rollout ran past its progress deadline",
    ),
    pytest.param(
        make_isvc("x").replicas(0), deployment(0),
        {"Ready": ("True", "ScaledToZero"), "ModelAvailable": ("False", "ScaledToZero"),
         "Progressing": ("True", "NewReplicaSetAvailable"), "Degraded": ("False", "AsExpected")},
        id="scaled to zero on purpose",
    ),
    pytest.param(
        make_isvc("x").replicas(3), deployment(2),
        {"Ready": ("False", "MinimumReplicasUnavailable"), "ModelAvailable": ("True", "ModelLoaded"),
         "Progressing": ("True", "NewReplicaSetAvailable"), "Degraded": ("False", "AsExpected")},
        id="scaled up but the Deployment still has the old count",
    ),
]


@pytest.mark.parametrize(("manifest", "observed", "expected"), CONDITION_CASES)
def test_conditions(manifest: IsvcBuilder, observed: dict[str, Any] | None, expected: dict[str, tuple[str, str]]) -> None:
    result = compute(manifest, observed)
    assert summary(result) == expected
    assert [c["type"] for c in result["conditions"]] == ["Ready", "ModelAvailable", "Progressing", "Degraded"]
    for cond in result["conditions"]:
        assert cond["observedGeneration"] == 7
        assert cond["lastTransitionTime"] == T0
        assert cond["message"], cond["type"]


def test_deadline_message_comes_from_the_deployment() -> None:
    result = compute(make_isvc("x").replicas(2), deployment(2, updated=1, deadline_exceeded=True))
    degraded = status.condition(result, "Degraded")
    assert degraded is not None
    assert degraded["message"] == 'ReplicaSet "x-5d4f" has timed out progressing.'


def test_ready_status_fields() -> None:
    result = compute(make_isvc("x").version(3).replicas(2), deployment(2, ready=1, replicas=2, updated=2, available=1))
    assert result["observedGeneration"] == 7
    assert (result["replicas"], result["readyReplicas"], result["ready"]) == (2, 1, "1/2")
    assert result["selector"] == "tfleet.dev/inferenceservice=x"
    assert result["endpoints"] == {
        "grpc": "x.ml.svc:8500",
        "rest": "http://x.ml.svc:8501/v1/models/x",
        "grpcHeadless": "dns:///x-grpc.ml.svc:8500",
    }


def test_endpoints_follow_ports_model_name_and_headless() -> None:
    result = compute(make_isvc("x").model_name("resnet").server(grpcPort=9000, restPort=9001).headless(False),
                     deployment(1))
    assert result["endpoints"] == {"grpc": "x.ml.svc:9000", "rest": "http://x.ml.svc:9001/v1/models/resnet"}


SERVING_VERSION_CASES = [
    pytest.param(make_isvc("x").version(3), deployment(2), None, 3, "Idle", id="a finished rollout serves the target"),
    pytest.param(make_isvc("x").version(4), deployment(2, updated=1), {"servingVersion": 3}, 3, "Progressing",
                 id="during a rollout the old version is still what serves"),
    pytest.param(make_isvc("x").version(4), deployment(2, updated=1), None, None, "Progressing",
                 id="a first rollout serves no known version yet"),
    pytest.param(make_isvc("x"), deployment(2), None, None, "Idle", id="an unpinned model has no known version"),
    pytest.param(make_isvc("x").version(3), deployment(2, ready=0, available=0), None, None, "Progressing",
                 id="no ready pods, no serving version"),
]


@pytest.mark.parametrize(("manifest", "observed", "previous", "serving", "phase"), SERVING_VERSION_CASES)
def test_serving_version_and_rollout_phase(
    manifest: IsvcBuilder, observed: dict[str, Any], previous: dict[str, Any] | None, serving: int | None, phase: str
) -> None:
    result = compute(manifest.replicas(2), observed, previous)
    assert result.get("servingVersion") == serving
    assert result["rollout"]["phase"] == phase
    assert result["rollout"].get("targetVersion") == manifest.spec["model"].get("version")


def test_recomputing_from_the_same_observations_changes_nothing() -> None:
    manifest, observed = make_isvc("x").version(2).replicas(2), deployment(2, updated=1)
    first = compute(manifest, observed, now=T0)
    assert compute(manifest, observed, previous=first, now=T1) == first


def test_last_transition_time_moves_only_when_the_status_flips() -> None:
    manifest = make_isvc("x").replicas(2)
    rolling = compute(manifest, deployment(2, updated=1), now=T0)
    done = compute(manifest, deployment(2), previous=rolling, now=T1)
    times = {c["type"]: c["lastTransitionTime"] for c in done["conditions"]}
    # Ready flipped False -> True; the others kept their status (Progressing changed only its reason).
    assert times == {"Ready": T1, "ModelAvailable": T0, "Progressing": T0, "Degraded": T0}
    progressing = status.condition(done, "Progressing")
    assert progressing is not None and progressing["reason"] == "NewReplicaSetAvailable"


def test_observed_generation_follows_the_spec_without_a_transition() -> None:
    manifest = make_isvc("x").replicas(2)
    first = compute(manifest, deployment(2), generation=7, now=T0)
    second = compute(manifest, deployment(2), previous=first, generation=8, now=T1)
    assert second["observedGeneration"] == 8
    assert {c["observedGeneration"] for c in second["conditions"]} == {8}
    assert {c["lastTransitionTime"] for c in second["conditions"]} == {T0}


INVALID = "spec.batching.allowedBatchSizes: last size (16) must equal maxBatchSize (32)"


def _invalid(observed: dict[str, Any] | None, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    result = status.compute_status(
        isvc=None, name="x", namespace="ml", generation=9, invalid_message=INVALID,
        observed=status.Observed(deployment=observed), previous=previous, now=T1,
    )
    assert [e.message for e in STATUS_VALIDATOR.iter_errors(result)] == []
    return result


def test_invalid_spec_keeps_the_fleet_serving() -> None:
    before = compute(make_isvc("x").version(3).replicas(2), deployment(2), now=T0)
    result = _invalid(deployment(2), previous=before)
    assert summary(result) == {
        "Ready": ("False", "InvalidSpec"),
        "ModelAvailable": ("True", "ModelLoaded"),
        "Progressing": ("False", "InvalidSpec"),
        "Degraded": ("True", "InvalidSpec"),
    }
    ready = status.condition(result, "Ready")
    assert ready is not None and ready["message"] == INVALID
    assert ready["lastTransitionTime"] == T1
    model = status.condition(result, "ModelAvailable")
    assert model is not None and model["lastTransitionTime"] == T0
    # What the last valid spec established stays visible.
    assert result["servingVersion"] == 3
    assert result["endpoints"] == before["endpoints"]
    assert result["observedGeneration"] == 9


def test_invalid_spec_without_any_pods() -> None:
    result = _invalid(None)
    assert summary(result)["ModelAvailable"] == ("False", "NoReadyReplicas")
    assert summary(result)["Ready"] == ("False", "InvalidSpec")
    assert (result["replicas"], result["readyReplicas"]) == (0, 0)
