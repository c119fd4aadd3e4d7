"""The words of the status, situation by situation: what status.rollout.message, the Events and
the conditions say, and that they say it from the same observation as the figures beside them.

Each table row is a situation someone on call may find an InferenceService in; the expected
text is what they read in `kubectl describe tfis`, `tfleet rollout status` or the Events.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from tfleet.desired import children as builders
from tfleet.engine import plan as reconcile
from tfleet.engine import rollout, status
from tfleet.engine.analysis import Result
from tfleet.engine.rollout import (
    PAUSED,
    PROGRESSING,
    PROMOTING,
    ROLLED_BACK,
    Controls,
    Observed,
    Policy,
    State,
    Step,
)

from .isvc_factory import as_stored, make_isvc, make_pod

T0 = datetime(2026, 1, 1, 12, 0, 0)
STABLE, CANARY = "aaaaaaaaaa", "bbbbbbbbbb"
N = 4
STEPS = (Step(10, 60), Step(50, 120))
PROMETHEUS_DOWN = Result(None, "Prometheus at http://prometheus.monitoring:9090 did not answer: [Errno 111] "
                               "Connection refused", source_failed=True)
NO_DATA = Result(None, "the query returned no data")
GPU_FULL = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
GATED = "SchedulingGated: Scheduling is blocked due to non-empty scheduling gates"
LOAD_ERROR = "NOT_FOUND: Could not find SavedModel .pb or .pbtxt at supplied export directory path: s3://m/x/3"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def policy(analysis: bool = False, auto_rollback: bool = True) -> Policy:
    return Policy(replicas=N, steps=STEPS, deadline_seconds=600, analysis=analysis, auto_rollback=auto_rollback)


def at_step(step: int | None, weight: int, phase: str = PROGRESSING, restarts: int = 0,
            message: str = "Rolling out") -> State:
    return State(phase=phase, stable=STABLE, canary=CANARY, target_version=2, step=step, weight=weight,
                 started_at=rollout.format_precise_time(T0), step_started_at=rollout.format_precise_time(T0),
                 canary_restarts=restarts, message=message)


def pods(n: int, ready: int | None = None, **troubles: Any) -> Observed:
    """A canary revision with `n` pods, `ready` of them ready (all by default)."""
    return Observed(replicas=n, pods=n, updated=n, ready=n if ready is None else ready, **troubles)


def checked(seen: Observed, result: Result) -> Observed:
    return rollout.with_check({CANARY: seen}, CANARY, result)[CANARY]


STEP_1 = "Step 1 of 2 (steps[0]), weight 10%: "
PROMOTION = f"Promoting revision {CANARY}: "

# --------------------------------------------------------------------------- a rollout in progress

ROLLOUT_MESSAGES = [
    # (state, canary as observed, metric gate, message)
    pytest.param(at_step(0, 10), Observed(), False, STEP_1 + "waiting for canary pods, 0 of 1 ready",
                 id="the canary Deployment is not there yet"),
    pytest.param(at_step(0, 10), pods(1, 0), False, STEP_1 + "waiting for canary pods, 0 of 1 ready",
                 id="the canary pod loads its model"),
    pytest.param(at_step(0, 10), pods(1, 0, unschedulable=1, unschedulable_message=GPU_FULL), False,
                 STEP_1 + f"waiting for canary pods, 0 of 1 ready; 1 pod cannot be scheduled: {GPU_FULL}",
                 id="pending: the scheduler's reason"),
    pytest.param(at_step(0, 10), pods(1, 0, unschedulable=1, unschedulable_message=GATED), False,
                 STEP_1 + f"waiting for canary pods, 0 of 1 ready; 1 pod cannot be scheduled: {GATED}",
                 id="pending behind scheduling gates: the reason is named"),
    pytest.param(at_step(0, 10), pods(1, 0, image_pull_failing=1, unpullable_image="tensorflow/serving:2.99.0"),
                 False, STEP_1 + 'waiting for canary pods, 0 of 1 ready; 1 pod cannot pull image '
                                 '"tensorflow/serving:2.99.0"',
                 id="an image that cannot be pulled, by name"),
    pytest.param(at_step(0, 10), pods(1, 0, crash_looping=1, restarts=3), False,
                 STEP_1 + "waiting for canary pods, 0 of 1 ready; 1 pod crash-looping", id="a crash loop"),
    pytest.param(at_step(0, 10), pods(1, 0, load_error=LOAD_ERROR), False,
                 STEP_1 + f"waiting for canary pods, 0 of 1 ready; TF Serving failed to load the model: {LOAD_ERROR}",
                 id="TF Serving's load error"),
    pytest.param(at_step(0, 10), pods(1, restarts=2), False,
                 STEP_1 + "1 of 1 canary pods ready, held: canary containers restarted 2 times during this step",
                 id="ready, but restarted during the step"),
    pytest.param(at_step(0, 10, restarts=2), pods(1, restarts=3), False,
                 STEP_1 + "1 of 1 canary pods ready, held: canary containers restarted 1 time during this step",
                 id="restarts before the step began do not count"),
    pytest.param(at_step(0, 10), replace(pods(1), current=False), False,
                 STEP_1 + "1 of 1 canary pods ready, waiting for their Deployment to complete",
                 id="ready pods, but the Deployment controller is behind"),
    pytest.param(at_step(0, 10), pods(1), False, STEP_1 + "1 of 1 canary pods ready, holding for the pause",
                 id="every gate open: the pause runs"),
    pytest.param(at_step(0, 10), checked(pods(1), PROMETHEUS_DOWN), True,
                 STEP_1 + f"1 of 1 canary pods ready, waiting for the metric check: {PROMETHEUS_DOWN.message}",
                 id="Prometheus unreachable: named while the step waits"),
    pytest.param(at_step(0, 10), checked(pods(1, 0), PROMETHEUS_DOWN), True,
                 STEP_1 + f"waiting for canary pods, 0 of 1 ready, waiting for the metric check: "
                          f"{PROMETHEUS_DOWN.message}",
                 id="Prometheus unreachable, named before the pods are ready"),
    pytest.param(at_step(0, 10), checked(pods(1), NO_DATA), True,
                 STEP_1 + "1 of 1 canary pods ready, waiting for the metric check: the query returned no data",
                 id="no metric data yet"),
    pytest.param(at_step(0, 10), pods(1), True, STEP_1 + "1 of 1 canary pods ready, waiting for the metric check",
                 id="the metric check has not run yet"),
    pytest.param(at_step(0, 10), checked(pods(1), Result(True, "metric check passed: 0 <= threshold 0.01")), True,
                 STEP_1 + "1 of 1 canary pods ready, holding for the pause", id="the metric check passed"),
    pytest.param(at_step(1, 50), pods(4, 1), False,
                 "Step 2 of 2 (steps[1]), weight 50%: waiting for canary pods, 1 of 4 ready",
                 id="the second step, index 1"),
    pytest.param(at_step(None, 100, PROMOTING), pods(4, 2, unschedulable=2, unschedulable_message=GPU_FULL), False,
                 PROMOTION + f"waiting for canary pods, 2 of 4 ready; 2 pods cannot be scheduled: {GPU_FULL}",
                 id="promotion waits for pods the cluster has no room for"),
    pytest.param(at_step(None, 100, PROMOTING), pods(4), False, PROMOTION + "4 of 4 canary pods ready",
                 id="promotion with every pod ready"),
    pytest.param(at_step(1, 50, PAUSED), pods(4), False,
                 "Paused at step 2 of 2 (steps[1]), weight 50%: 4 of 4 canary pods ready", id="paused at a step"),
    pytest.param(at_step(None, 100, PAUSED), pods(4, 3), False,
                 f"Paused at the promotion of revision {CANARY}: waiting for canary pods, 3 of 4 ready",
                 id="paused during the promotion"),
]


@pytest.mark.parametrize(("state", "seen", "gated", "message"), ROLLOUT_MESSAGES)
def test_the_message_of_a_rollout_in_progress(state: State, seen: Observed, gated: bool, message: str) -> None:
    assert rollout.describe(state, policy(analysis=gated), seen) == message


@pytest.mark.parametrize(("state", "seen", "gated", "message"), [
    # A load error rolls back at once; a promotion with every pod ready completes.
    case for case in ROLLOUT_MESSAGES if not case.values[1].load_error and case.id != "promotion with every pod ready"])
def test_the_engine_decides_with_the_same_words(state: State, seen: Observed, gated: bool, message: str) -> None:
    """The decision's own message is the one the status shows for the same observation (the
    pause is not over, so no step moves on)."""
    controls = Controls(paused=state.phase == PAUSED)
    made = rollout.decide(desired=CANARY, target_version=2, policy=policy(analysis=gated), state=state,
                          observed={STABLE: pods(N), CANARY: seen}, controls=controls, now=at(30))
    assert (made.state.phase, made.state.step) == (state.phase, state.step)
    assert made.state.message == message


ROLLING_MESSAGES = [
    pytest.param(replace(pods(4, 3), updated=2), "Rolling update: 2 of 4 pods updated, 3 ready", id="half way"),
    pytest.param(replace(pods(4, 3, image_pull_failing=1, unpullable_image="registry.example/tfs:9"), updated=2),
                 'Rolling update: 2 of 4 pods updated, 3 ready; 1 pod cannot pull image "registry.example/tfs:9"',
                 id="a new pod cannot pull its image"),
]


@pytest.mark.parametrize(("seen", "message"), ROLLING_MESSAGES)
def test_the_message_of_a_rolling_update(seen: Observed, message: str) -> None:
    made = rollout.decide_rolling(desired=CANARY, target_version=2, policy=policy(),
                                  state=State(phase=rollout.SUCCEEDED, stable=STABLE), observed={CANARY: seen},
                                  now=T0)
    assert made.state.message == message


# --------------------------------------------------------------------------- why a rollout stopped

STOP_CASES = [
    # (how, canary, auto rollback, controls, metric check, phase, reason, Progressing, Degraded, message)
    pytest.param(pods(1), True, Controls(abort=CANARY), None, ROLLED_BACK, "RolloutAborted", "RolloutAborted",
                 "RolloutAborted", "aborted by request", id="aborted by request"),
    pytest.param(pods(1, 0, crash_looping=1), True, Controls(), None, ROLLED_BACK, "ProgressDeadlineExceeded",
                 "ProgressDeadlineExceeded", "RolledBack", "1 of 1 canary pods crash-looping",
                 id="past the deadline, rolled back"),
    pytest.param(pods(1, 0, load_error=LOAD_ERROR), True, Controls(), None, ROLLED_BACK, "ModelLoadFailed",
                 "ModelLoadFailed", "RolledBack", f"TF Serving failed to load the model: {LOAD_ERROR}",
                 id="the version cannot load"),
    pytest.param(pods(1), True, Controls(), Result(False, "metric check failed: 0.4 > threshold 0.05"),
                 ROLLED_BACK, "MetricCheckFailed", "MetricCheckFailed", "RolledBack",
                 "metric check failed: 0.4 > threshold 0.05", id="the metric check failed"),
    pytest.param(pods(1), True, Controls(), PROMETHEUS_DOWN, ROLLED_BACK, "ProgressDeadlineExceeded",
                 "ProgressDeadlineExceeded", "RolledBack", PROMETHEUS_DOWN.message,
                 id="the metric check never ran before the deadline, and says why"),
    pytest.param(pods(1, 0, image_pull_failing=1, unpullable_image="tfs:9"), False, Controls(), None,
                 PROGRESSING, "ProgressDeadlineExceeded", "ProgressDeadlineExceeded", "ProgressDeadlineExceeded",
                 '1 of 1 canary pods cannot pull image "tfs:9"', id="stalled past the deadline"),
    pytest.param(pods(1), False, Controls(), Result(False, "metric check failed: 0.4 > threshold 0.05"),
                 PROGRESSING, "MetricCheckFailed", "MetricCheckFailed", "MetricCheckFailed",
                 "metric check failed: 0.4 > threshold 0.05", id="stalled on a failed metric check"),
]


@pytest.mark.parametrize(("canary", "auto_rollback", "controls", "check", "phase", "reason", "progressing",
                          "degraded", "why"), STOP_CASES)
def test_a_stopped_rollout_says_why_in_its_reasons(canary: Observed, auto_rollback: bool, controls: Controls,
                                                   check: Result | None, phase: str, reason: str, progressing: str,
                                                   degraded: str, why: str) -> None:
    gated = check is not None
    observed = rollout.with_check({STABLE: pods(N), CANARY: canary}, CANARY, check)
    made = rollout.decide(desired=CANARY, target_version=2, policy=policy(gated, auto_rollback), state=at_step(0, 10),
                          observed=observed, controls=controls, now=at(600))
    assert made.state.phase == phase and made.state.reason == reason
    assert why in made.state.message
    manifest = make_isvc("x").replicas(N)
    result = status.compute_status(isvc=manifest.isvc(), generation=1, invalid_message=None, revisions=observed,
                                   state=made.state, previous=None, now="2026-01-01T12:10:00Z", check=check)
    assert result["rollout"]["reason"] == reason
    conditions = {c["type"]: (c["status"], c["reason"]) for c in result["conditions"]}
    assert conditions["Progressing"] == ("False", progressing)
    assert conditions["Degraded"] == ("True", degraded)
    # The reason survives the status: a restarted operator reads the same conditions.
    assert State.from_status(result["rollout"]).reason == reason


def test_a_reason_is_forgotten_with_the_rollout_it_explained() -> None:
    aborted = State(phase=ROLLED_BACK, stable=STABLE, failed=CANARY, reason="RolloutAborted", message="Rolled back")
    assert aborted.to_status()["reason"] == "RolloutAborted"
    again = replace(aborted, phase=PROGRESSING, canary="cccccccccc", failed=None)
    assert again.reason is None and "reason" not in again.to_status()


def test_a_status_from_before_the_reason_field_reads_as_the_deadline() -> None:
    old = State.from_status({"phase": "RolledBack", "stableRevision": STABLE, "failedRevision": CANARY,
                             "message": f"Rolled back revision {CANARY}: 1 of 1 canary pods crash-looping"})
    result = status.compute_status(isvc=make_isvc("x").replicas(N).isvc(), generation=1, invalid_message=None,
                                   revisions={STABLE: pods(N)}, state=old, previous=None, now="2026-01-01T12:10:00Z")
    conditions = {c["type"]: c["reason"] for c in result["conditions"]}
    assert (conditions["Progressing"], conditions["Degraded"]) == ("ProgressDeadlineExceeded", "RolledBack")


# --------------------------------------------------------------------------- the metric source, named at once


def test_a_metric_source_that_fails_is_named_at_once_in_a_warning_posted_once() -> None:
    observed = rollout.with_check({STABLE: pods(N), CANARY: pods(1)}, CANARY, PROMETHEUS_DOWN)
    first = rollout.decide(desired=CANARY, target_version=2, policy=policy(analysis=True), state=at_step(0, 10),
                           observed=observed, controls=Controls(), now=at(5))
    assert first.state.phase == PROGRESSING and PROMETHEUS_DOWN.message in first.state.message
    assert [(e.type, e.reason, e.message) for e in first.events] == [
        ("Warning", "MetricCheckInconclusive",
         f"The metric check of revision {CANARY} could not run, so the step holds: {PROMETHEUS_DOWN.message}")]
    # The next look reads the message back from the status: the warning is not posted again.
    again = rollout.decide(desired=CANARY, target_version=2, policy=policy(analysis=True),
                           state=State.from_status(first.state.to_status()), observed=observed, controls=Controls(),
                           now=at(20))
    assert again.events == [] and again.state.message == first.state.message


def test_no_data_yet_holds_the_step_without_a_warning() -> None:
    observed = rollout.with_check({STABLE: pods(N), CANARY: pods(1)}, CANARY, NO_DATA)
    made = rollout.decide(desired=CANARY, target_version=2, policy=policy(analysis=True), state=at_step(0, 10),
                          observed=observed, controls=Controls(), now=at(5))
    assert made.events == [] and made.state.message.endswith("waiting for the metric check: the query returned no data")


# --------------------------------------------------------------------------- step numbers


def test_step_numbers_agree_between_the_field_the_message_and_the_events() -> None:
    """status.rollout.step is the index into spec.rollout.steps; messages and Events count from 1
    and give that index: "step 2 of 3 (steps[1])" while status.rollout.step is 1."""
    steps = (Step(10, 60), Step(30, 60), Step(60, 60))
    pol = Policy(replicas=N, steps=steps, deadline_seconds=600)
    seen = {STABLE: pods(N), CANARY: pods(N)}
    state, started = at_step(0, 10), 0.0
    for index, step in enumerate(steps):
        held = rollout.decide(desired=CANARY, target_version=2, policy=pol, state=state, observed=seen,
                              controls=Controls(), now=at(started + 1))
        assert held.state.step == held.state.to_status()["step"] == index
        assert held.state.message.startswith(f"Step {index + 1} of 3 (steps[{index}]), weight {step.weight}%: ")
        started += 61
        moved = rollout.decide(desired=CANARY, target_version=2, policy=pol, state=held.state, observed=seen,
                               controls=Controls(), now=at(started))
        if index + 1 < len(steps):
            assert moved.state.step == index + 1
            assert [e.message for e in moved.events] == [
                f"Step {index + 2} of 3 (steps[{index + 1}]): weight {steps[index + 1].weight}%"]
            assert moved.state.message.startswith(f"Step {index + 2} of 3 (steps[{index + 1}])")
        else:
            assert moved.state.phase == PROMOTING and moved.state.step is None
        state = moved.state


# --------------------------------------------------------------------------- Ready counts versions

READY_CASES = [
    # (revisions, desired replicas, Ready's message, ModelAvailable's message)
    pytest.param({STABLE: replace(pods(4), version=12)}, 4, "4 of 4 pods are ready and serve model x version 12",
                 "4 pods serve model x version 12", id="one version"),
    pytest.param({STABLE: replace(pods(4), version=12), CANARY: replace(pods(1), version=13)}, 4,
                 "5 pods (4 wanted) are ready and serve model x: version 12 on 4 pods, version 13 on 1 pod",
                 "5 pods serve model x: version 12 on 4 pods, version 13 on 1 pod",
                 id="a canary step: each version counted"),
    pytest.param({STABLE: replace(pods(4), version=12), CANARY: replace(pods(1, 0), version=13)}, 4,
                 "4 of 4 pods are ready and serve model x version 12", "4 pods serve model x version 12",
                 id="a canary not ready yet serves nothing"),
    pytest.param({STABLE: replace(pods(3), version=7), CANARY: replace(pods(3), version=7)}, 3,
                 "6 pods (3 wanted) are ready and serve model x version 7", "6 pods serve model x version 7",
                 id="a batching change: two revisions, one version"),
    pytest.param({STABLE: pods(2), CANARY: replace(pods(1), version=3)}, 2,
                 "3 pods (2 wanted) are ready and serve model x: version 3 on 1 pod, the latest version on 2 pods",
                 "3 pods serve model x: version 3 on 1 pod, the latest version on 2 pods",
                 id="from the latest version to a pinned one"),
    pytest.param({STABLE: pods(1)}, 1, "1 of 1 pods are ready and serve model x", "1 pod serves model x",
                 id="one pod, version unpinned"),
]


@pytest.mark.parametrize(("revisions", "desired", "ready", "available"), READY_CASES)
def test_ready_counts_the_pods_of_each_served_version(revisions: dict[str, Observed], desired: int, ready: str,
                                                      available: str) -> None:
    state = at_step(0, 10) if CANARY in revisions else State(phase=rollout.IDLE, stable=STABLE)
    result = status.compute_status(isvc=make_isvc("x").replicas(desired).isvc(), generation=1, invalid_message=None,
                                   revisions=revisions, state=state, previous=None, now="2026-01-01T12:00:00Z")
    messages = {c["type"]: c["message"] for c in result["conditions"]}
    assert (messages["Ready"], messages["ModelAvailable"]) == (ready, available)


# --------------------------------------------------------------------------- one observation for message and figures


def test_the_rollout_message_and_the_figures_come_from_one_observation() -> None:
    """The decision sees the canary Deployment before this pass's writes; the status is computed
    after them. The message is worded again from what the figures are computed from."""
    v1 = make_isvc("x").version(12).replicas(N).canary(25, 50, pause="30s")
    body = v1.manifest()
    first = reconcile.plan_children(body, {}, [], T0)
    children = {reconcile.child_key(m): as_stored(m) for m in first.apply}
    written = reconcile.plan_status(body, children, [], rollout.format_time(T0), first.rollout)
    assert written.status is not None
    body["status"] = written.status

    v2 = copy.deepcopy(body)
    v2["spec"]["model"]["version"] = 13
    v2["metadata"]["generation"] = 2
    canary = builders.compute_revision(reconcile.parse(v2)[0]).name  # type: ignore[arg-type]
    started = reconcile.plan_children(v2, children, [], at(1))
    created = {reconcile.child_key(m): m for m in started.apply if m["kind"] == "Deployment"}
    (deployment,) = created.values()
    # The apply's response: the new Deployment, no status yet.
    fresh = as_stored(deployment)
    fresh.pop("status")
    children[reconcile.child_key(fresh)] = fresh
    written = reconcile.plan_status(v2, children, [], rollout.format_time(at(1)), started.rollout)
    assert written.status is not None
    assert written.status["ready"] == f"{N}/{N}"
    assert written.status["rollout"]["message"] == \
        "Step 1 of 2 (steps[0]), weight 25%: waiting for canary pods, 0 of 1 ready"

    # The next look, after its canary pod came up while the last status waited: the status
    # written from the decision (which saw the canary not ready) and the one worded after it
    # say the same as the figures beside them.
    v2["status"] = written.status
    ready_canary = as_stored(deployment)
    children[reconcile.child_key(ready_canary)] = ready_canary
    stale = dataclasses.replace(started.rollout, message="Step 1 of 2 (steps[0]), weight 25%: waiting for canary "
                                                         "pods, 0 of 1 ready")
    again = reconcile.plan_status(v2, children, [], rollout.format_time(at(2)), stale)
    assert again.status is not None
    assert again.status["ready"] == f"{N}/{N} (+1 canary)"
    assert again.status["rollout"]["message"] == \
        "Step 1 of 2 (steps[0]), weight 25%: 1 of 1 canary pods ready, holding for the pause"
    assert again.status["rollout"]["canaryRevision"] == canary


# --------------------------------------------------------------------------- what the pods say

POD_CASES = [
    pytest.param(make_pod("r1", unschedulable=GPU_FULL), GPU_FULL, "", id="Unschedulable: the scheduler's message"),
    pytest.param(make_pod("r1", unschedulable="Scheduling is blocked due to non-empty scheduling gates",
                          scheduling_reason="SchedulingGated"), GATED, "",
                 id="another reason is named with its message"),
    pytest.param(make_pod("r1", ready=False, waiting="ErrImagePull", image="tensorflow/serving:2.99.0"), None,
                 "tensorflow/serving:2.99.0", id="an image pull failing, by image"),
    pytest.param(make_pod("r1", ready=False, waiting="ImagePullBackOff", image="tensorflow/serving:2.99.0"), None,
                 "tensorflow/serving:2.99.0", id="an image pull backing off, by image"),
    pytest.param(make_pod("r1", ready=False, waiting="ErrImageNeverPull", image="tfs:local"), None, "tfs:local",
                 id="imagePullPolicy Never without the image"),
]


@pytest.mark.parametrize(("pod", "unschedulable", "image"), POD_CASES)
def test_what_a_pod_says_reaches_the_message(pod: dict[str, Any], unschedulable: str | None, image: str) -> None:
    summary = reconcile.summarize_pod(pod)
    assert summary is not None
    assert (summary.unschedulable, summary.unpullable_image, summary.image_pull_failing) == (
        unschedulable, image, bool(image))
