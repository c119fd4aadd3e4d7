"""Status as a pure function of the model, the rollout state and the observed revisions."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from tfleet.api.crd import build_crd
from tfleet.engine import rollout, status
from tfleet.engine.rollout import Observed, State

from .isvc_factory import IsvcBuilder, make_isvc, strict_jsonschema

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:05:00Z"
STABLE, CANARY = "aaaaaaaaaa", "bbbbbbbbbb"

STATUS_VALIDATOR = jsonschema.Draft202012Validator(
    strict_jsonschema(build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"])
)


def seen(
    desired: int = 2,
    *,
    pods: int | None = None,
    ready: int | None = None,
    updated: int | None = None,
    current: bool = True,
    version: int | None = None,
    **troubles: Any,
) -> Observed:
    """An observed revision; every count defaults to `desired` (a finished rollout)."""
    return Observed(
        replicas=desired,
        pods=desired if pods is None else pods,
        ready=desired if ready is None else ready,
        updated=desired if updated is None else updated,
        current=current,
        version=version,
        **troubles,
    )


IDLE = State(phase=rollout.IDLE, stable=STABLE, message=f"Revision {STABLE} is stable")
SUCCEEDED = State(phase=rollout.SUCCEEDED, stable=STABLE, history=("0000000001",),
                  message=f"Revision {STABLE} is stable")


def rolling_out(phase: str = rollout.PROGRESSING, message: str = f"Rolling out revision {CANARY}",
                **fields: Any) -> State:
    """A rollout of CANARY over STABLE. Its message is what the decision said; the status words
    a rollout in progress again from the revisions it is computed from."""
    values: dict[str, Any] = {"step": 0, "weight": 10, **fields}
    return State(phase=phase, stable=STABLE, canary=CANARY, target_version=4, started_at=T0, step_started_at=T0,
                 message=message, **values)


ROLLED_BACK = State(phase=rollout.ROLLED_BACK, stable=STABLE, failed=CANARY, target_version=4,
                    started_at=T0, step_started_at=T0,
                    message=f"Rolled back revision {CANARY}: 3 of 3 canary pods crash-looping")
ABORTED = State(phase=rollout.ROLLED_BACK, stable=STABLE, failed=CANARY, target_version=4, started_at=T0,
                step_started_at=T0, reason="RolloutAborted",
                message=f"Rolled back revision {CANARY}: aborted by request")
LOAD_FAILED = State(phase=rollout.ROLLED_BACK, stable=STABLE, failed=CANARY, target_version=4, started_at=T0,
                    step_started_at=T0, reason="ModelLoadFailed",
                    message=f"Rolled back revision {CANARY}: TF Serving failed to load the model: NOT_FOUND: x")
STALLED = rolling_out(stalled=True, reason="ProgressDeadlineExceeded",
                      message='Stalled past its deadline: 1 of 1 canary pods cannot pull image "tf:9"')


def compute(
    manifest: IsvcBuilder,
    revisions: dict[str, Observed],
    state: State = IDLE,
    previous: dict[str, Any] | None = None,
    now: str = T0,
    generation: int = 7,
) -> dict[str, Any]:
    result = status.compute_status(
        isvc=manifest.isvc(), generation=generation, invalid_message=None, revisions=revisions, state=state,
        previous=previous, now=now,
    )
    errors = [e.message for e in STATUS_VALIDATOR.iter_errors(result)]
    assert errors == [], f"status does not fit the CRD's status schema: {errors}"
    return result


def summary(result: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in result["conditions"]}


def message(result: dict[str, Any], type_: str) -> str:
    cond = status.condition(result, type_)
    assert cond is not None, type_
    return str(cond["message"])


ALL_WELL = {"Ready": ("True", "Available"), "ModelAvailable": ("True", "ModelLoaded"),
            "Progressing": ("True", "NewReplicaSetAvailable"), "Degraded": ("False", "AsExpected")}

CONDITION_CASES = [
    pytest.param(
        make_isvc("x").replicas(2), {}, IDLE,
        {"Ready": ("False", "MinimumReplicasUnavailable"), "ModelAvailable": ("False", "NoReadyReplicas"),
         "Progressing": ("True", "ReplicaSetUpdated"), "Degraded": ("False", "AsExpected")},
        id="no Deployment yet",
    ),
    pytest.param(make_isvc("x").replicas(2), {STABLE: seen(2)}, IDLE, ALL_WELL,
                 id="every pod updated, ready and available"),
    pytest.param(make_isvc("x").replicas(2), {STABLE: seen(2)}, SUCCEEDED, ALL_WELL,
                 id="after a rollout succeeded"),
    pytest.param(
        make_isvc("x").replicas(2).rolling_update(), {STABLE: seen(2, updated=1, pods=3)}, IDLE,
        {"Ready": ("True", "Available"), "ModelAvailable": ("True", "ModelLoaded"),
         "Progressing": ("True", "ReplicaSetUpdated"), "Degraded": ("False", "AsExpected")},
        id="half the pods updated while the old ones serve",
    ),
    pytest.param(
        make_isvc("x").replicas(2), {STABLE: seen(2, current=False)}, IDLE,
        {"Ready": ("True", "Available"), "ModelAvailable": ("True", "ModelLoaded"),
         "Progressing": ("True", "ReplicaSetUpdated"), "Degraded": ("False", "AsExpected")},
        id="the Deployment controller has not seen the latest spec",
    ),
    pytest.param(
        make_isvc("x").replicas(2), {STABLE: seen(2, ready=0)}, IDLE,
        {"Ready": ("False", "MinimumReplicasUnavailable"), "ModelAvailable": ("False", "NoReadyReplicas"),
         "Progressing": ("True", "ReplicaSetUpdated"), "Degraded": ("False", "AsExpected")},
        id="pods exist but none has loaded the model",
    ),
    pytest.param(
        make_isvc("x").replicas(2), {STABLE: seen(2, ready=0, updated=1, deadline_exceeded=True)}, IDLE,
        {"Ready": ("False", "MinimumReplicasUnavailable"), "ModelAvailable": ("False", "NoReadyReplicas"),
         "Progressing": ("False", "ProgressDeadlineExceeded"), "Degraded": ("True", "ProgressDeadlineExceeded")},
        id="the stable Deployment ran past its progress deadline",
    ),
    pytest.param(
        make_isvc("x").replicas(0), {STABLE: seen(0)}, IDLE,
        {"Ready": ("True", "ScaledToZero"), "ModelAvailable": ("False", "ScaledToZero"),
         "Progressing": ("True", "NewReplicaSetAvailable"), "Degraded": ("False", "AsExpected")},
        id="scaled to zero on purpose",
    ),
    pytest.param(
        make_isvc("x").replicas(3), {STABLE: seen(2)}, IDLE,
        {"Ready": ("False", "MinimumReplicasUnavailable"), "ModelAvailable": ("True", "ModelLoaded"),
         "Progressing": ("True", "ReplicaSetUpdated"), "Degraded": ("False", "AsExpected")},
        id="scaled up but the Deployment still has the old count",
    ),
    pytest.param(
        make_isvc("x").replicas(2), {STABLE: seen(2), CANARY: seen(1, ready=0)}, rolling_out(),
        {"Ready": ("True", "Available"), "ModelAvailable": ("True", "ModelLoaded"),
         "Progressing": ("True", "RolloutInProgress"), "Degraded": ("False", "AsExpected")},
        id="a canary step: the stable keeps the fleet ready while the canary loads",
    ),
    pytest.param(
        make_isvc("x").replicas(2), {STABLE: seen(2), CANARY: seen(2, ready=1)},
        rolling_out(rollout.PROMOTING, f"Promoting revision {CANARY}", step=None, weight=100),
        {"Ready": ("True", "Available"), "ModelAvailable": ("True", "ModelLoaded"),
         "Progressing": ("True", "RolloutInProgress"), "Degraded": ("False", "AsExpected")},
        id="promoting",
    ),
    pytest.param(
        make_isvc("x").replicas(2), {STABLE: seen(2), CANARY: seen(1)}, rolling_out(rollout.PAUSED),
        {"Ready": ("True", "Available"), "ModelAvailable": ("True", "ModelLoaded"),
         "Progressing": ("True", "RolloutPaused"), "Degraded": ("False", "AsExpected")},
        id="paused by request",
    ),
    pytest.param(
        make_isvc("x").replicas(3), {STABLE: seen(3), CANARY: seen(0, crash_looping=3)}, ROLLED_BACK,
        {"Ready": ("True", "Available"), "ModelAvailable": ("True", "ModelLoaded"),
         "Progressing": ("False", "ProgressDeadlineExceeded"), "Degraded": ("True", "RolledBack")},
        id="rolled back: the stable serves, and the failure shows as Degraded",
    ),
    pytest.param(
        make_isvc("x").replicas(3), {STABLE: seen(3), CANARY: seen(0)}, LOAD_FAILED,
        {"Progressing": ("False", "ModelLoadFailed"), "Degraded": ("True", "RolledBack"),
         "Stalled": ("True", "RolledBack")},
        id="rolled back at once: TF Serving cannot load the version",
    ),
    pytest.param(
        make_isvc("x").replicas(3), {STABLE: seen(3), CANARY: seen(0)}, ABORTED,
        {"Ready": ("True", "Available"), "Progressing": ("False", "RolloutAborted"),
         "Degraded": ("True", "RolloutAborted"), "Stalled": ("True", "RolloutAborted")},
        id="aborted by request: a reason of its own",
    ),
    pytest.param(
        make_isvc("x").replicas(2), {STABLE: seen(2), CANARY: seen(1, ready=0, image_pull_failing=1)}, STALLED,
        {"Ready": ("True", "Available"), "ModelAvailable": ("True", "ModelLoaded"),
         "Progressing": ("False", "ProgressDeadlineExceeded"), "Degraded": ("True", "ProgressDeadlineExceeded")},
        id="stalled past the deadline without automatic rollback",
    ),
    pytest.param(
        make_isvc("x").replicas(2), {STABLE: seen(2, deadline_exceeded=True), CANARY: seen(1)}, rolling_out(),
        {"Ready": ("True", "Available"), "ModelAvailable": ("True", "ModelLoaded"),
         "Progressing": ("True", "RolloutInProgress"), "Degraded": ("False", "AsExpected")},
        id="the rollout, not an old Deployment condition, speaks while a rollout runs",
    ),
]


@pytest.mark.parametrize(("manifest", "revisions", "state", "expected"), CONDITION_CASES)
def test_conditions(manifest: IsvcBuilder, revisions: dict[str, Observed], state: State,
                    expected: dict[str, tuple[str, str]]) -> None:
    result = compute(manifest, revisions, state)
    assert {t: v for t, v in summary(result).items() if t in expected} == expected
    assert [c["type"] for c in result["conditions"]] == ["Ready", "ModelAvailable", "Progressing", "Degraded",
                                                         "Reconciling", "Stalled", "RolledOut"]
    for cond in result["conditions"]:
        assert cond["observedGeneration"] == 7
        assert cond["lastTransitionTime"] == T0
        assert cond["message"], cond["type"]
    live = state.phase in rollout.ACTIVE_PHASES and not state.stalled
    assert result["rollout"] == {**state.to_status(), "message": result["rollout"]["message"]}
    assert (result["rollout"]["message"] == state.message) is not live


@pytest.mark.parametrize("state", [rolling_out(), rolling_out(rollout.PAUSED), ROLLED_BACK, STALLED],
                         ids=lambda s: s.phase + (" stalled" if s.stalled else ""))
def test_the_rollout_message_is_the_progressing_message(state: State) -> None:
    result = compute(make_isvc("x").replicas(2), {STABLE: seen(2), CANARY: seen(1)}, state)
    assert message(result, "Progressing") == result["rollout"]["message"]
    if summary(result)["Degraded"][0] == "True":
        assert message(result, "Degraded") == state.message == result["rollout"]["message"]


PROBLEM_CASES = [
    pytest.param(seen(2, ready=0, load_error="Not found: model x version 4"),
                 "0 of 2 pods are ready; TF Serving failed to load the model: Not found: model x version 4",
                 id="TF Serving's load error"),
    pytest.param(seen(2, ready=0, crash_looping=2), "0 of 2 pods are ready; 2 pods crash-looping", id="crash loops"),
    pytest.param(seen(2, ready=1, image_pull_failing=1), "1 of 2 pods are ready; 1 pod cannot pull their image",
                 id="image pulls"),
    pytest.param(seen(2, ready=0, unschedulable=2, unschedulable_message="0/1 nodes are available: 1 Insufficient cpu."),
                 "0 of 2 pods are ready; 2 pods cannot be scheduled: 0/1 nodes are available: 1 Insufficient cpu.",
                 id="unschedulable, with the scheduler's words"),
    pytest.param(seen(2, ready=0), "0 of 2 pods are ready", id="no known trouble: just the count"),
]


@pytest.mark.parametrize(("observed", "expected"), PROBLEM_CASES)
def test_not_ready_says_why(observed: Observed, expected: str) -> None:
    result = compute(make_isvc("x").replicas(2), {STABLE: observed})
    assert message(result, "Ready") == expected


def test_deadline_message_names_the_revision() -> None:
    result = compute(make_isvc("x").replicas(2), {STABLE: seen(2, updated=1, ready=1, crash_looping=1,
                                                               deadline_exceeded=True)})
    assert message(result, "Degraded") == (f"Deployment of revision {STABLE} exceeded its progress deadline; "
                                           "1 pod crash-looping")


def test_ready_status_fields() -> None:
    result = compute(make_isvc("x").version(3).replicas(2), {STABLE: seen(2, ready=1, version=3)})
    assert result["observedGeneration"] == 7
    assert (result["replicas"], result["readyReplicas"], result["ready"]) == (2, 1, "1/2")
    assert result["selector"] == "tfleet.dev/inferenceservice=x"
    assert result["endpoints"] == {
        "grpc": "x.ml.svc:8500",
        "rest": "http://x.ml.svc:8501/v1/models/x",
        "grpcHeadless": "dns:///x-grpc.ml.svc:8500",
    }


def test_counts_add_up_over_every_revision() -> None:
    # A canary step: 3 stable pods plus 1 canary pod, every one of them behind the Service.
    result = compute(make_isvc("x").version(4).replicas(3),
                     {STABLE: seen(3, version=3), CANARY: seen(1, ready=0, version=4), "0000000001": seen(0)},
                     rolling_out())
    assert (result["replicas"], result["readyReplicas"], result["ready"]) == (4, 3, "3/3")
    assert summary(result)["Ready"] == ("True", "Available")
    assert message(result, "Ready") == "3 of 3 pods are ready and serve model x version 3"


def test_endpoints_follow_ports_model_name_and_headless() -> None:
    result = compute(make_isvc("x").model_name("resnet").server(grpcPort=9000, restPort=9001).headless(False),
                     {STABLE: seen(1)})
    assert result["endpoints"] == {"grpc": "x.ml.svc:9000", "rest": "http://x.ml.svc:9001/v1/models/resnet"}


SERVING_VERSION_CASES = [
    pytest.param(make_isvc("x").version(3), {STABLE: seen(2, version=3)}, IDLE, 3,
                 id="a finished rollout serves the target"),
    pytest.param(make_isvc("x").version(4), {STABLE: seen(2, version=3), CANARY: seen(1, version=4)}, rolling_out(), 3,
                 id="during a rollout the stable version is what serves, even with a ready canary"),
    pytest.param(make_isvc("x").version(4), {STABLE: seen(2, ready=0, version=4)}, IDLE, None,
                 id="a first rollout serves no version until a pod is ready"),
    pytest.param(make_isvc("x"), {STABLE: seen(2)}, IDLE, None, id="an unpinned model has no known version"),
    pytest.param(make_isvc("x").version(4), {STABLE: seen(2, version=3), CANARY: seen(0, version=4)}, ROLLED_BACK, 3,
                 id="after a rollback the old version still serves"),
    pytest.param(make_isvc("x").version(4), {CANARY: seen(2, version=4), STABLE: seen(0, version=3)},
                 State(phase=rollout.SUCCEEDED, stable=CANARY, history=(STABLE,)), 4,
                 id="after a promotion the new version serves"),
    pytest.param(make_isvc("x").version(4), {CANARY: seen(2, version=4)}, State(), None,
                 id="no stable revision, no serving version"),
]


@pytest.mark.parametrize(("manifest", "revisions", "state", "serving"), SERVING_VERSION_CASES)
def test_serving_version(manifest: IsvcBuilder, revisions: dict[str, Observed], state: State,
                         serving: int | None) -> None:
    result = compute(manifest.replicas(2), revisions, state)
    assert result.get("servingVersion") == serving


def test_recomputing_from_the_same_observations_changes_nothing() -> None:
    manifest, revisions = make_isvc("x").version(2).replicas(2), {STABLE: seen(2), CANARY: seen(1, ready=0)}
    first = compute(manifest, revisions, rolling_out(), now=T0)
    assert compute(manifest, revisions, rolling_out(), previous=first, now=T1) == first


def test_last_transition_time_moves_only_when_the_status_flips() -> None:
    manifest = make_isvc("x").replicas(2)
    rolling = compute(manifest, {STABLE: seen(2, ready=1, updated=1)}, now=T0)
    done = compute(manifest, {STABLE: seen(2)}, previous=rolling, now=T1)
    times = {c["type"]: c["lastTransitionTime"] for c in done["conditions"]}
    # Ready flipped False -> True; the others kept their status (Progressing changed only its reason).
    assert times == {"Ready": T1, "ModelAvailable": T0, "Progressing": T0, "Degraded": T0,
                     "Reconciling": T1, "Stalled": T0, "RolledOut": T1}
    progressing = status.condition(done, "Progressing")
    assert progressing is not None and progressing["reason"] == "NewReplicaSetAvailable"


def test_a_rollback_flips_degraded_and_progressing_once() -> None:
    manifest = make_isvc("x").version(4).replicas(3)
    during = compute(manifest, {STABLE: seen(3), CANARY: seen(1, ready=0)}, rolling_out(), now=T0)
    failed = compute(manifest, {STABLE: seen(3), CANARY: seen(0)}, ROLLED_BACK, previous=during, now=T1)
    times = {c["type"]: c["lastTransitionTime"] for c in failed["conditions"]}
    assert times == {"Ready": T0, "ModelAvailable": T0, "Progressing": T1, "Degraded": T1,
                     "Reconciling": T1, "Stalled": T1, "RolledOut": T0}  # RolledOut was False already
    later = compute(manifest, {STABLE: seen(3), CANARY: seen(0)}, ROLLED_BACK, previous=failed,
                    now="2026-01-01T01:00:00Z")
    assert later == failed


def test_observed_generation_follows_the_spec_without_a_transition() -> None:
    manifest = make_isvc("x").replicas(2)
    first = compute(manifest, {STABLE: seen(2)}, generation=7, now=T0)
    second = compute(manifest, {STABLE: seen(2)}, previous=first, generation=8, now=T1)
    assert second["observedGeneration"] == 8
    assert {c["observedGeneration"] for c in second["conditions"]} == {8}
    assert {c["lastTransitionTime"] for c in second["conditions"]} == {T0}


INVALID = "spec.batching.allowedBatchSizes: last size (16) must equal maxBatchSize (32)"


def _invalid(revisions: dict[str, Observed], previous: dict[str, Any] | None = None) -> dict[str, Any]:
    result = status.compute_status(
        isvc=None, generation=9, invalid_message=INVALID, revisions=revisions, state=IDLE, previous=previous, now=T1,
    )
    assert [e.message for e in STATUS_VALIDATOR.iter_errors(result)] == []
    return result


def test_invalid_spec_keeps_the_fleet_serving() -> None:
    before = compute(make_isvc("x").version(3).replicas(2), {STABLE: seen(2, version=3)}, now=T0)
    result = _invalid({STABLE: seen(2, version=3)}, previous=before)
    assert summary(result) == {
        "Ready": ("False", "InvalidSpec"),
        "ModelAvailable": ("True", "ModelLoaded"),
        "Progressing": ("False", "InvalidSpec"),
        "Degraded": ("True", "InvalidSpec"),
        "Reconciling": ("False", "InvalidSpec"),
        "Stalled": ("True", "InvalidSpec"),
        "RolledOut": ("False", "InvalidSpec"),
    }
    ready = status.condition(result, "Ready")
    assert ready is not None and ready["message"] == INVALID
    assert ready["lastTransitionTime"] == T1
    model = status.condition(result, "ModelAvailable")
    assert model is not None and model["lastTransitionTime"] == T0
    # What the last valid spec established stays visible.
    assert result["servingVersion"] == 3
    assert result["endpoints"] == before["endpoints"]
    assert result["rollout"] == before["rollout"]
    assert result["ready"] == "2/2"
    assert result["observedGeneration"] == 9


def test_invalid_spec_without_any_pods() -> None:
    result = _invalid({})
    assert summary(result)["ModelAvailable"] == ("False", "NoReadyReplicas")
    assert summary(result)["Ready"] == ("False", "InvalidSpec")
    assert (result["replicas"], result["readyReplicas"], result["ready"]) == (0, 0, "0/0")
