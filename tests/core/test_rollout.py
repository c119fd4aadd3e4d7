"""The rollout engine as a pure state machine: `rollout.decide` (Canary) and
`rollout.decide_rolling` (RollingUpdate), table-driven.

Every decision made in this file goes through `decide` or `rolling` below, which check
promises on it: ready capacity never drops below spec.replicas; the state survives a round
trip through `status.rollout` (an operator restarted at that point decides the same); and,
unless the engine asked to look again at once, a second look at the same observations
changes nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest

from tfleet.engine import rollout
from tfleet.engine.rollout import (
    IDLE,
    PAUSED,
    PROGRESSING,
    PROMOTING,
    ROLLED_BACK,
    SUCCEEDED,
    Controls,
    Decision,
    Observed,
    Policy,
    State,
    Step,
)

T0 = datetime(2026, 1, 1, 12, 0, 0)
STABLE, CANARY, NEXT = "aaaaaaaaaa", "bbbbbbbbbb", "cccccccccc"
OLD1, OLD2, OLD3 = "0000000001", "0000000002", "0000000003"
STEPS = (Step(10, 60), Step(50, 120))
N = 4
NO_CONTROLS = Controls()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stamp(seconds: float) -> str:
    return rollout.format_precise_time(at(seconds))


def policy(replicas: int = N, steps: tuple[Step, ...] = STEPS, deadline: float = 600, auto_rollback: bool = True,
           history_limit: int = 3) -> Policy:
    return Policy(replicas=replicas, steps=steps, deadline_seconds=deadline, auto_rollback=auto_rollback,
                  history_limit=history_limit)


def ready(n: int, restarts: int = 0, version: int | None = None) -> Observed:
    """A revision whose Deployment has `n` pods, all ready."""
    return Observed(replicas=n, ready=n, updated=n, pods=n, restarts=restarts, version=version)


def starting(n: int, ready_pods: int = 0, **troubles: Any) -> Observed:
    """A revision whose Deployment has `n` pods, `ready_pods` of them ready."""
    return Observed(replicas=n, ready=ready_pods, updated=n, pods=n, **troubles)


def stable_state(history: tuple[str, ...] = ()) -> State:
    return State(phase=SUCCEEDED, stable=STABLE, target_version=1, message=f"Revision {STABLE} is stable",
                 history=history)


def at_step(step: int | None, weight: int, started: float = 0, restarts: int = 0, phase: str = PROGRESSING,
            history: tuple[str, ...] = ()) -> State:
    """A Canary rollout of CANARY over STABLE, begun at T0, its current step begun at `started`."""
    return State(phase=phase, stable=STABLE, canary=CANARY, target_version=2, step=step, weight=weight,
                 started_at=stamp(0), step_started_at=stamp(started), canary_restarts=restarts,
                 message="Rolling out", history=history)


def ready_capacity(replicas: dict[str, int], observed: dict[str, Observed]) -> int:
    """Pods that are ready now and stay once the decision is carried out (scaling up adds pods
    that are not ready yet; scaling down or deleting removes ready ones)."""
    return sum(min(replicas.get(rev, 0), seen.ready) for rev, seen in observed.items())


def check_promises(state: State, observed: dict[str, Observed], n: int, made: Decision,
                   again: Decision, settled: Decision | None = None) -> None:
    ready_before = sum(seen.ready for seen in observed.values())
    assert ready_capacity(made.replicas, observed) >= min(n, ready_before), (
        f"ready capacity drops below {n}: {made.replicas} over {observed}"
    )
    if state.stable is not None and made.state.phase != SUCCEEDED:
        # Before a promotion completes, the stable revision keeps every replica.
        assert made.replicas.get(state.stable) == n
    assert State.from_status(made.state.to_status()) == made.state
    # An operator restarted just before this decision reads the state back from the status.
    assert again == made
    if settled is not None and made.requeue_after != 0:
        # Unless the engine asked to look again at once, looking again at the same
        # observations changes nothing: no status write, no Event.
        assert (settled.state, settled.events) == (made.state, []), settled.state.message


def decide(state: State, observed: dict[str, Observed] | None = None, *, desired: str = CANARY, now: float = 0,
           controls: Controls = NO_CONTROLS, pol: Policy | None = None, target_version: int | None = 2) -> Decision:
    """`rollout.decide` with STABLE fully ready unless `observed` says otherwise."""
    pol = pol or policy()
    seen = {STABLE: ready(pol.replicas), **(observed or {})} if state.stable == STABLE else dict(observed or {})

    def look(from_state: State) -> Decision:
        return rollout.decide(desired=desired, target_version=target_version, policy=pol, state=from_state,
                              observed=seen, controls=controls, now=at(now))

    made = look(state)
    check_promises(state, seen, pol.replicas, made, look(State.from_status(state.to_status())), look(made.state))
    return made


def rolling(state: State, observed: dict[str, Observed], *, desired: str = CANARY, now: float = 0,
            pol: Policy | None = None) -> Decision:
    pol = pol or policy()

    def look(from_state: State) -> Decision:
        return rollout.decide_rolling(desired=desired, target_version=2, policy=pol, state=from_state,
                                      observed=observed, now=at(now))

    made = look(state)
    assert look(State.from_status(state.to_status())) == made
    assert State.from_status(made.state.to_status()) == made.state
    return made


def events(made: Decision) -> list[tuple[str, str]]:
    return [(e.type, e.reason) for e in made.events]


# --------------------------------------------------------------------------- starting


def test_the_first_revision_goes_straight_to_stable() -> None:
    made = decide(State(), {}, desired=STABLE, target_version=1)
    assert made.replicas == {STABLE: N}
    assert (made.state.phase, made.state.stable, made.state.canary, made.state.target_version) == (IDLE, STABLE, None, 1)
    assert made.events == [] and made.requeue_after is None


def test_the_first_revision_of_a_rolling_update_goes_straight_to_stable() -> None:
    made = rolling(State(), {}, desired=STABLE)
    assert made.replicas == {STABLE: N}
    assert (made.state.phase, made.state.stable) == (IDLE, STABLE)


@pytest.mark.parametrize(("replicas", "canary"), [
    pytest.param(1, 1, id="one replica: one canary pod, half the endpoints"),
    pytest.param(4, 1, id="four replicas: the canary never rounds down to nothing"),
    pytest.param(10, 1, id="ten replicas: one canary pod is 1 of 11 endpoints"),
    pytest.param(20, 2, id="twenty replicas: two canary pods are 2 of 22 endpoints"),
    pytest.param(45, 5, id="forty-five replicas: five canary pods are 5 of 50 endpoints"),
])
def test_a_version_bump_starts_step_zero_with_the_right_canary_count(replicas: int, canary: int) -> None:
    made = decide(stable_state(), {STABLE: ready(replicas)}, now=30, pol=policy(replicas=replicas))
    assert made.replicas == {STABLE: replicas, CANARY: canary}
    state = made.state
    assert (state.phase, state.stable, state.canary, state.step, state.weight, state.target_version) == (
        PROGRESSING, STABLE, CANARY, 0, 10, 2)
    assert (state.started_at, state.step_started_at, state.failed) == (stamp(30), stamp(30), None)
    assert events(made) == [("Normal", "RolloutStarted")]
    assert made.events[0].message == (f"Started rolling out revision {CANARY} (model version 2) over stable "
                                      f"revision {STABLE}")
    # Nothing to wait for but the canary pods; look again when the deadline would pass.
    assert made.requeue_after == 600


def test_a_rollout_without_steps_promotes_at_once() -> None:
    made = decide(stable_state(), pol=policy(steps=()))
    assert made.replicas == {STABLE: N, CANARY: N}
    assert (made.state.phase, made.state.weight, made.state.step) == (PROMOTING, 100, None)


# --------------------------------------------------------------------------- canary arithmetic


CANARY_TABLE = [
    # (replicas, weight, canary pods, the canary's share of ready endpoints)
    (1, 10, 1, "1/2"), (2, 10, 1, "1/3"), (3, 25, 1, "1/4"), (4, 10, 1, "1/5"), (4, 20, 1, "1/5"),
    (4, 40, 3, "3/7"), (5, 20, 1, "1/6"), (5, 30, 2, "2/7"), (6, 25, 2, "2/8"), (9, 10, 1, "1/10"),
    (10, 10, 1, "1/11"), (10, 25, 3, "3/13"), (10, 40, 7, "7/17"), (10, 49, 10, "10/20"), (10, 50, 10, "10/20"),
    (10, 90, 10, "10/20"), (10, 100, 10, "10/20"), (0, 10, 0, "0"), (0, 100, 0, "0"),
]


@pytest.mark.parametrize(("replicas", "weight", "canary", "share"), CANARY_TABLE,
                         ids=[f"N={n} w={w}% -> {c} pods, share {s}" for n, w, c, s in CANARY_TABLE])
def test_canary_arithmetic(replicas: int, weight: int, canary: int, share: str) -> None:
    assert rollout.canary_replicas(replicas, weight) == canary
    assert (Fraction(canary, replicas + canary) if replicas else Fraction(0)) == Fraction(share)


@pytest.mark.parametrize("replicas", range(1, 11))
def test_canary_share_approximates_the_weight(replicas: int) -> None:
    counts = [rollout.canary_replicas(replicas, w) for w in range(1, 101)]
    assert counts == sorted(counts), "more weight never means fewer canary pods"
    for weight, canary in zip(range(1, 101), counts, strict=True):
        assert 1 <= canary <= replicas
        if weight >= 50:
            # An equal share is the most that N stable pods plus at most N canary pods give.
            assert canary == replicas
            continue
        target = Fraction(weight, 100)

        def share(c: int) -> Fraction:
            return Fraction(c, replicas + c)

        # No other whole number of canary pods comes closer to the weight.
        assert all(abs(share(canary) - target) <= abs(share(c) - target) for c in range(1, replicas + 1)), (
            weight, canary)


# --------------------------------------------------------------------------- step gates


# The message after the step advanced: the canary is scaled for the next step in this pass.
ADVANCED = f"Step 2 of 2 (steps[1]), weight 50%: waiting for canary pods, 1 of {N} ready"

GATE_CASES = [
    # (observed canary, now, advances, requeue_after, message)
    pytest.param(ready(1), 60, True, 0.0, ADVANCED,
                 id="all canary pods ready, no restart and the pause over: the step advances"),
    pytest.param(ready(1), 200, True, 0.0, ADVANCED,
                 id="a late look advances once, not once per missed pause"),
    pytest.param(ready(1), 45, False, 15.0, "Step 1 of 2 (steps[0]), weight 10%: 1 of 1 canary pods ready, holding for the pause",
                 id="healthy but inside the pause: hold until the pause ends"),
    pytest.param(starting(1), 60, False, 540.0, "Step 1 of 2 (steps[0]), weight 10%: waiting for canary pods, 0 of 1 ready",
                 id="a canary pod not ready holds the step until the deadline"),
    pytest.param(ready(1, restarts=1), 60, False, 540.0,
                 "Step 1 of 2 (steps[0]), weight 10%: 1 of 1 canary pods ready, held: canary containers restarted 1 time during this step",
                 id="a canary container restarted during the step holds it"),
    pytest.param(Observed(replicas=1, ready=1, updated=1, pods=1, current=False), 60, False, 540.0,
                 "Step 1 of 2 (steps[0]), weight 10%: 1 of 1 canary pods ready, waiting for their Deployment to complete",
                 id="the Deployment controller has not caught up with the spec: hold"),
    pytest.param(Observed(replicas=1, ready=1, updated=0, pods=1), 60, False, 540.0,
                 "Step 1 of 2 (steps[0]), weight 10%: 1 of 1 canary pods ready, waiting for their Deployment to complete",
                 id="a canary pod not yet of the current template: hold"),
    pytest.param(ready(0), 60, False, 540.0, "Step 1 of 2 (steps[0]), weight 10%: waiting for canary pods, 0 of 1 ready",
                 id="the canary Deployment not yet scaled up: hold"),
    pytest.param(None, 60, False, 540.0, "Step 1 of 2 (steps[0]), weight 10%: waiting for canary pods, 0 of 1 ready",
                 id="the canary Deployment not yet seen: hold"),
]


@pytest.mark.parametrize(("canary", "now", "advances", "requeue", "message"), GATE_CASES)
def test_a_step_advances_only_when_every_gate_is_open(canary: Observed | None, now: float, advances: bool,
                                                      requeue: float, message: str) -> None:
    made = decide(at_step(0, 10), {CANARY: canary} if canary else {}, now=now)
    assert made.state.message == message
    assert made.requeue_after == requeue
    if advances:
        assert (made.state.phase, made.state.step, made.state.weight) == (PROGRESSING, 1, 50)
        assert made.state.step_started_at == stamp(now)
        assert made.replicas == {STABLE: N, CANARY: N}
        assert events(made) == [("Normal", "RolloutStepAdvanced")]
    else:
        assert (made.state.phase, made.state.step, made.state.weight) == (PROGRESSING, 0, 10)
        assert made.state.step_started_at == stamp(0)
        assert made.replicas == {STABLE: N, CANARY: 1}
        assert made.events == []


def test_a_pause_is_measured_to_the_millisecond() -> None:
    # Stored with whole seconds, a step begun at 0.75 s would count from 0 s and end early.
    state = at_step(0, 10, started=0.75)
    assert state.step_started_at == "2026-01-01T12:00:00.750Z"
    held = decide(state, {CANARY: ready(1)}, now=60.5)
    assert held.state.step == 0 and held.requeue_after == pytest.approx(0.25)
    assert decide(state, {CANARY: ready(1)}, now=60.75).state.step == 1


def test_restarts_before_the_step_began_do_not_hold_it() -> None:
    # The step began with the canary at 3 restarts (the baseline stored in the status).
    made = decide(at_step(0, 10, restarts=3), {CANARY: ready(1, restarts=3)}, now=60)
    assert (made.state.step, made.state.canary_restarts) == (1, 3)
    held = decide(at_step(0, 10, restarts=3), {CANARY: ready(1, restarts=4)}, now=60)
    assert held.state.step == 0


def test_the_next_step_counts_restarts_from_where_it_began() -> None:
    made = decide(at_step(0, 10), {CANARY: ready(1, restarts=0)}, now=60)
    later = decide(made.state, {CANARY: ready(N, restarts=2)}, now=60 + 120)
    # Restarted during step 2: held, although the pause is over and every pod is ready.
    assert (later.state.step, later.state.phase) == (1, PROGRESSING)
    assert later.events == []


@pytest.mark.parametrize("steps", [
    pytest.param((Step(10, 60),), id="down to one step"),
    pytest.param((), id="down to no steps"),
])
def test_fewer_steps_mid_rollout_move_on_to_promotion(steps: tuple[Step, ...]) -> None:
    # Steps are rollout settings, not part of the revision: editing them during a rollout
    # keeps the rollout going, now past its last step.
    made = decide(at_step(1, 50, started=100), {CANARY: ready(N)}, now=500, pol=policy(steps=steps))
    assert made.state.phase == PROMOTING
    assert made.replicas == {STABLE: N, CANARY: N}


GATED = "metric check passed: 0.002 <= threshold 0.01"
FAILED_GATE = "metric check failed: 0.2 > threshold 0.01"
PENDING_GATE = "the query returned no data"

METRIC_GATE_CASES = [
    # (canary as observed with its metric check, auto rollback, phase, step, message)
    pytest.param(replace(ready(1), analysis_ok=True, analysis_message=GATED), True, PROGRESSING, 1,
                 ADVANCED, id="a passing check lets the step advance"),
    pytest.param(replace(ready(1), analysis_ok=None, analysis_message=PENDING_GATE), True, PROGRESSING, 0,
                 "Step 1 of 2 (steps[0]), weight 10%: 1 of 1 canary pods ready, waiting for the metric check: the query returned no data",
                 id="an inconclusive check holds the step"),
    pytest.param(ready(1), True, PROGRESSING, 0, "Step 1 of 2 (steps[0]), weight 10%: 1 of 1 canary pods ready, waiting for the metric check",
                 id="no check result yet holds the step"),
    pytest.param(replace(ready(1), analysis_ok=False, analysis_message=FAILED_GATE), True, ROLLED_BACK, None,
                 f"Rolled back revision {CANARY}: {FAILED_GATE}", id="a failing check rolls back at once"),
    pytest.param(replace(ready(1), analysis_ok=False, analysis_message=FAILED_GATE), False, PROGRESSING, 0,
                 f"Stalled: {FAILED_GATE}", id="a failing check without automatic rollback stalls"),
]


@pytest.mark.parametrize(("canary", "auto_rollback", "phase", "step", "message"), METRIC_GATE_CASES)
def test_the_metric_gate(canary: Observed, auto_rollback: bool, phase: str, step: int | None, message: str) -> None:
    pol = replace(policy(auto_rollback=auto_rollback), analysis=True)
    made = decide(at_step(0, 10), {CANARY: canary}, now=60, pol=pol)
    assert (made.state.phase, made.state.step, made.state.message) == (phase, step, message)
    if phase == ROLLED_BACK:
        assert made.replicas == {STABLE: N, CANARY: 0}
        assert events(made) == [("Warning", "RolloutRolledBack")]
    # Without a gate in the spec, the metric check is not consulted.
    ungated = decide(at_step(0, 10), {CANARY: canary}, now=60, pol=policy(auto_rollback=auto_rollback))
    assert (ungated.state.phase, ungated.state.step) == (PROGRESSING, 1)


def test_an_inconclusive_metric_check_at_the_deadline_names_itself() -> None:
    pol = replace(policy(), analysis=True)
    made = decide(at_step(0, 10), {CANARY: replace(ready(1), analysis_message=PENDING_GATE)}, now=600, pol=pol)
    assert made.state.message == f"Rolled back revision {CANARY}: {PENDING_GATE}"


# --------------------------------------------------------------------------- promotion


def test_the_last_step_promotes_and_the_stable_stays_until_the_canary_is_fully_ready() -> None:
    promoting = decide(at_step(1, 50, started=100), {CANARY: ready(N)}, now=220)
    assert (promoting.state.phase, promoting.state.step, promoting.state.weight) == (PROMOTING, None, 100)
    assert promoting.replicas == {STABLE: N, CANARY: N}
    assert events(promoting) == [("Normal", "RolloutPromoting")]
    assert promoting.requeue_after == 0.0

    # The canary is at N already but one pod is not ready: the stable keeps all of its pods.
    waiting = decide(promoting.state, {CANARY: starting(N, ready_pods=N - 1)}, now=230)
    assert waiting.state.phase == PROMOTING
    assert waiting.replicas == {STABLE: N, CANARY: N}
    assert waiting.state.message == f"Promoting revision {CANARY}: waiting for canary pods, {N - 1} of {N} ready"
    assert waiting.events == []

    done = decide(waiting.state, {CANARY: ready(N)}, now=240)
    state = done.state
    assert (state.phase, state.stable, state.canary, state.step, state.weight) == (SUCCEEDED, CANARY, None, None, None)
    assert state.history == (STABLE,)
    assert state.message == f"Revision {CANARY} is stable"
    # The old revision stays, at zero, for a fast rollback.
    assert done.replicas == {STABLE: 0, CANARY: N}
    assert events(done) == [("Normal", "RolloutSucceeded")]
    assert done.events[0].message == f"Promoted revision {CANARY}; revision {STABLE} scaled to zero"
    assert done.requeue_after is None


@pytest.mark.parametrize(("limit", "history", "kept", "deleted"), [
    pytest.param(3, (), (STABLE,), (), id="the retired stable goes into the history"),
    pytest.param(3, (OLD1,), (STABLE, OLD1), (), id="newest first"),
    pytest.param(3, (OLD1, OLD2), (STABLE, OLD1), (OLD2,), id="the oldest falls out of a full history"),
    pytest.param(4, (OLD1, OLD2, OLD3), (STABLE, OLD1, OLD2), (OLD3,), id="a longer history keeps more"),
    pytest.param(1, (OLD1,), (), (STABLE, OLD1), id="a history of nothing deletes every old revision"),
])
def test_promotion_honours_the_history_limit(limit: int, history: tuple[str, ...], kept: tuple[str, ...],
                                             deleted: tuple[str, ...]) -> None:
    state = at_step(None, 100, started=100, phase=PROMOTING, history=history)
    done = decide(state, {CANARY: ready(N), **{h: Observed() for h in history}}, now=110,
                  pol=policy(history_limit=limit))
    assert done.state.phase == SUCCEEDED
    assert done.state.history == kept
    # A revision missing from the replicas map is deleted; history is kept at zero.
    assert done.replicas == {**{h: 0 for h in kept}, CANARY: N}
    assert not set(deleted) & set(done.replicas)


def test_history_is_kept_at_zero_while_a_rollout_runs() -> None:
    made = decide(stable_state(history=(OLD1, OLD2)), now=0)
    assert made.replicas == {OLD1: 0, OLD2: 0, STABLE: N, CANARY: 1}
    assert made.state.history == (OLD1, OLD2)


def test_rolling_back_by_spec_to_a_revision_in_the_history_takes_it_out_of_the_history() -> None:
    # STABLE replaced OLD1 earlier; the spec now goes back to OLD1, which rolls out as a canary.
    state = State(phase=PROMOTING, stable=STABLE, canary=OLD1, target_version=1, weight=100,
                  started_at=stamp(0), step_started_at=stamp(0), history=(OLD1, OLD2))
    done = decide(state, {OLD1: ready(N)}, desired=OLD1, now=10, pol=policy(history_limit=3), target_version=1)
    assert (done.state.phase, done.state.stable) == (SUCCEEDED, OLD1)
    # The stable revision is not an earlier revision of itself; the history keeps two others.
    assert done.state.history == (STABLE, OLD2)
    assert done.replicas == {STABLE: 0, OLD2: 0, OLD1: N}


# --------------------------------------------------------------------------- failure


FAILURE_CASES = [
    pytest.param(3, 3, starting(3, crash_looping=3, restarts=12), "3 of 3 canary pods crash-looping",
                 id="crash-looping canary pods"),
    pytest.param(N, 1, starting(1, image_pull_failing=1), "1 of 1 canary pods cannot pull their image",
                 id="an image that cannot be pulled"),
    pytest.param(N, 1, starting(1, unschedulable=1,
                                unschedulable_message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu."),
                 "1 of 1 canary pods cannot be scheduled: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                 id="pods that cannot be scheduled, with the scheduler's words"),
    pytest.param(N, 1, starting(1), "0 of 1 canary pods became ready", id="pods that never become ready"),
    pytest.param(N, 1, ready(1, restarts=2), "canary containers restarted 2 times",
                 id="ready pods whose containers restart"),
]


LOAD_ERROR = ("Loading servable: {name: x version: 2} failed: Not found: Could not find meta graph def")


def test_a_load_error_rolls_back_at_once_with_tf_servings_own_words() -> None:
    # TF Serving has said the version cannot load: the deadline is not waited for.
    state = at_step(0, 10, started=100)
    seen = starting(1, load_error=LOAD_ERROR, crash_looping=1, restarts=1)
    made = decide(state, {STABLE: ready(N), CANARY: seen}, now=100 + 5, pol=policy())
    reason = f"TF Serving failed to load the model: {LOAD_ERROR}"
    assert rollout.failure_reason(seen, 1) == reason  # first, before the crash loop it causes
    assert made.state.phase == ROLLED_BACK
    assert made.state.message == f"Rolled back revision {CANARY}: {reason}"
    assert made.replicas == {STABLE: N, CANARY: 0}
    assert [(e.type, e.reason) for e in made.events] == [("Warning", "RolloutRolledBack")]


def test_without_automatic_rollback_a_load_error_waits_for_a_person() -> None:
    state = at_step(0, 10, started=100)
    seen = starting(1, load_error=LOAD_ERROR)
    made = decide(state, {STABLE: ready(N), CANARY: seen}, now=100 + 5, pol=policy(auto_rollback=False))
    assert made.state.phase == PROGRESSING and not made.state.stalled
    past = decide(state, {STABLE: ready(N), CANARY: seen}, now=100 + 600, pol=policy(auto_rollback=False))
    assert past.state.stalled
    assert past.state.message == f"Stalled past its deadline: TF Serving failed to load the model: {LOAD_ERROR}"


@pytest.mark.parametrize(("replicas", "canary", "seen", "reason"), FAILURE_CASES)
def test_the_deadline_rolls_back_with_the_failure_reason(replicas: int, canary: int, seen: Observed,
                                                         reason: str) -> None:
    weight = 10 if canary == 1 else 50
    state = at_step(0 if weight == 10 else 1, weight, started=100)
    pol = policy(replicas=replicas)
    assert rollout.canary_replicas(replicas, weight) == canary

    before = decide(state, {STABLE: ready(replicas), CANARY: seen}, now=100 + 599, pol=pol)
    assert before.state.phase == PROGRESSING and before.requeue_after == 1

    made = decide(state, {STABLE: ready(replicas), CANARY: seen}, now=100 + 600, pol=pol)
    assert rollout.failure_reason(seen, canary) == reason
    assert made.state.phase == ROLLED_BACK
    assert (made.state.stable, made.state.canary, made.state.failed) == (STABLE, None, CANARY)
    assert (made.state.step, made.state.weight) == (None, None)
    assert made.state.message == f"Rolled back revision {CANARY}: {reason}"
    # The canary goes to zero (kept, so its pods' history can be read); stable never moved.
    assert made.replicas == {STABLE: replicas, CANARY: 0}
    assert [(e.type, e.reason, e.message) for e in made.events] == [
        ("Warning", "RolloutRolledBack", made.state.message)]
    assert made.requeue_after is None


def test_the_deadline_counts_from_the_current_step() -> None:
    # Begun 20 minutes ago, but its step began only 5 minutes ago.
    made = decide(at_step(1, 50, started=900), {CANARY: starting(N)}, now=1200)
    assert made.state.phase == PROGRESSING and made.requeue_after == 300


def test_a_promotion_that_never_completes_rolls_back() -> None:
    state = at_step(None, 100, started=0, phase=PROMOTING)
    made = decide(state, {CANARY: starting(N, ready_pods=N - 1, crash_looping=1)}, now=600)
    assert made.state.phase == ROLLED_BACK
    assert made.state.message == f"Rolled back revision {CANARY}: 1 of {N} canary pods crash-looping"
    assert made.replicas == {STABLE: N, CANARY: 0}


def test_without_auto_rollback_a_failed_canary_stalls_in_place() -> None:
    made = decide(at_step(0, 10), {CANARY: starting(1, crash_looping=1)}, now=600, pol=policy(auto_rollback=False))
    assert made.state.phase == PROGRESSING
    assert (made.state.canary, made.state.failed) == (CANARY, None)
    assert made.state.message == "Stalled past its deadline: 1 of 1 canary pods crash-looping"
    assert made.replicas == {STABLE: N, CANARY: 1}
    assert made.events == []
    # Nothing will change by itself: no timer, only a pod change or a spec change wakes it.
    assert made.requeue_after is None
    # The same canary becoming healthy later still finishes its step.
    healed = decide(made.state, {CANARY: ready(1)}, now=700, pol=policy(auto_rollback=False))
    assert (healed.state.step, healed.state.weight) == (1, 50)


def _rolled_back() -> State:
    made = decide(at_step(0, 10), {CANARY: starting(1, crash_looping=1)}, now=600)
    assert made.state.phase == ROLLED_BACK
    return made.state


@pytest.mark.parametrize("now", [601, 3600, 86400])
def test_a_rolled_back_revision_is_not_retried_while_the_spec_still_asks_for_it(now: float) -> None:
    state = _rolled_back()
    made = decide(state, {CANARY: Observed()}, now=now)
    assert made.state == state
    assert made.replicas == {STABLE: N, CANARY: 0}
    assert made.events == [] and made.requeue_after is None


def test_a_new_spec_after_a_rollback_rolls_out_and_deletes_the_failed_revision() -> None:
    made = decide(_rolled_back(), {CANARY: Observed()}, desired=NEXT, now=700)
    assert (made.state.phase, made.state.canary, made.state.failed, made.state.step) == (PROGRESSING, NEXT, None, 0)
    assert made.replicas == {STABLE: N, NEXT: 1}
    assert events(made) == [("Normal", "RolloutStarted")]


def test_returning_to_the_stable_spec_after_a_rollback_clears_it_and_deletes_the_failure() -> None:
    state = _rolled_back()
    made = decide(state, {CANARY: Observed()}, desired=STABLE, now=700, target_version=1)
    # The spec no longer asks for the failed revision: nothing is degraded any more (a GitOps
    # revert silences the alert), and the failed revision has nothing left to show.
    assert (made.state.phase, made.state.failed, made.state.stable) == (IDLE, None, STABLE)
    assert made.replicas == {STABLE: N}
    assert made.events == []


# --------------------------------------------------------------------------- superseding and cancelling


@pytest.mark.parametrize("state", [
    pytest.param(at_step(0, 10), id="at the first step"),
    pytest.param(at_step(1, 50), id="at the last step"),
    pytest.param(at_step(None, 100, phase=PROMOTING), id="while promoting"),
    pytest.param(at_step(1, 50, phase=PAUSED), id="while paused"),
])
def test_a_new_spec_during_a_rollout_supersedes_the_canary(state: State) -> None:
    old_canary = ready(rollout.canary_replicas(N, state.weight or 100))
    made = decide(state, {CANARY: old_canary}, desired=NEXT, now=300)
    new = made.state
    assert (new.phase, new.stable, new.canary, new.step, new.weight) == (PROGRESSING, STABLE, NEXT, 0, 10)
    assert (new.started_at, new.step_started_at, new.canary_restarts) == (stamp(300), stamp(300), 0)
    # The old canary is dropped (deleted); the stable keeps its full capacity.
    assert made.replicas == {STABLE: N, NEXT: 1}
    assert events(made) == [("Normal", "RolloutSuperseded"), ("Normal", "RolloutStarted")]
    assert made.events[0].message == f"Rollout of {CANARY} superseded by revision {NEXT}"


def test_returning_to_the_stable_spec_cancels_the_rollout() -> None:
    made = decide(at_step(1, 50), {CANARY: ready(N)}, desired=STABLE, now=300, target_version=1)
    new = made.state
    assert (new.phase, new.stable, new.canary, new.step, new.weight, new.target_version) == (
        IDLE, STABLE, None, None, None, 1)
    assert new.message == f"Rollout of {CANARY} cancelled: the spec returned to revision {STABLE}"
    assert made.replicas == {STABLE: N}
    assert [(e.type, e.reason, e.message) for e in made.events] == [("Normal", "RolloutCancelled", new.message)]


def test_nothing_to_do_on_the_stable_revision() -> None:
    state = stable_state(history=(OLD1,))
    made = decide(state, desired=STABLE, now=999, target_version=1)
    assert made.state == state
    assert made.replicas == {OLD1: 0, STABLE: N}
    assert made.events == [] and made.requeue_after is None


# --------------------------------------------------------------------------- manual control


def test_promote_skips_the_remaining_steps() -> None:
    made = decide(at_step(0, 10, started=0), {CANARY: ready(1)}, now=5, controls=Controls(promote=CANARY))
    assert (made.state.phase, made.state.weight, made.state.step) == (PROMOTING, 100, None)
    assert made.state.message == f"Promoting revision {CANARY}: waiting for canary pods, 1 of {N} ready"
    assert made.replicas == {STABLE: N, CANARY: N}
    assert [(e.reason, e.message) for e in made.events] == [("RolloutPromoted", f"Promoting revision {CANARY} on request")]
    done = decide(made.state, {CANARY: ready(N)}, now=30, controls=Controls(promote=CANARY))
    assert (done.state.phase, done.state.stable) == (SUCCEEDED, CANARY)
    assert done.replicas == {STABLE: 0, CANARY: N}
    assert events(done) == [("Normal", "RolloutSucceeded")]


def test_abort_rolls_back_at_once() -> None:
    made = decide(at_step(1, 50), {CANARY: ready(N)}, now=5, controls=Controls(abort=CANARY))
    assert (made.state.phase, made.state.failed, made.state.canary) == (ROLLED_BACK, CANARY, None)
    assert made.state.message == f"Rolled back revision {CANARY}: aborted by request"
    assert made.replicas == {STABLE: N, CANARY: 0}
    assert events(made) == [("Warning", "RolloutAborted")]
    # The annotation staying in place does nothing more.
    again = decide(made.state, {CANARY: ready(0)}, now=10, controls=Controls(abort=CANARY))
    assert (again.state, again.events) == (made.state, [])


@pytest.mark.parametrize("controls", [
    pytest.param(Controls(promote=NEXT), id="promote naming another revision"),
    pytest.param(Controls(abort=NEXT), id="abort naming another revision"),
    pytest.param(Controls(promote=STABLE, abort=STABLE), id="promote and abort naming the stable revision"),
])
def test_controls_naming_another_revision_do_nothing(controls: Controls) -> None:
    for state, seen, now in [(at_step(0, 10), starting(1), 30), (at_step(0, 10), ready(1), 61),
                             (at_step(1, 50, phase=PROMOTING), ready(N), 10)]:
        assert decide(state, {CANARY: seen}, now=now, controls=controls) == decide(state, {CANARY: seen}, now=now)


def test_pause_holds_the_step_and_resume_restarts_its_pause() -> None:
    paused = decide(at_step(0, 10), {CANARY: ready(1)}, now=30, controls=Controls(paused=True))
    assert paused.state.phase == PAUSED
    assert paused.state.message == "Paused at step 1 of 2 (steps[0]), weight 10%: 1 of 1 canary pods ready"
    assert paused.replicas == {STABLE: N, CANARY: 1}
    assert events(paused) == [("Normal", "RolloutPaused")]
    assert paused.requeue_after is None

    # Long past the pause and the deadline: a paused rollout neither advances nor rolls back.
    still = decide(paused.state, {CANARY: starting(1, crash_looping=1)}, now=5000, controls=Controls(paused=True))
    assert (replace(still.state, message=""), still.replicas, still.events) == (
        replace(paused.state, message=""), paused.replicas, [])
    # Its message still says what the canary is doing.
    assert still.state.message == ("Paused at step 1 of 2 (steps[0]), weight 10%: waiting for canary pods, "
                                   "0 of 1 ready; 1 pod crash-looping")

    resumed = decide(paused.state, {CANARY: ready(1)}, now=5000)
    assert (resumed.state.phase, resumed.state.step, resumed.state.step_started_at) == (PROGRESSING, 0, stamp(5000))
    assert events(resumed) == [("Normal", "RolloutResumed")]
    # The pause counts again from the resume.
    assert resumed.requeue_after == 60
    advanced = decide(resumed.state, {CANARY: ready(1)}, now=5060)
    assert advanced.state.step == 1


def test_pause_and_resume_during_promotion() -> None:
    paused = decide(at_step(None, 100, phase=PROMOTING), {CANARY: starting(N)}, now=10, controls=Controls(paused=True))
    assert paused.state.phase == PAUSED and paused.replicas == {STABLE: N, CANARY: N}
    resumed = decide(paused.state, {CANARY: ready(N)}, now=20)
    assert (resumed.state.phase, resumed.state.stable) == (SUCCEEDED, CANARY)
    assert events(resumed) == [("Normal", "RolloutResumed"), ("Normal", "RolloutSucceeded")]


def test_promote_while_paused_is_recorded_once() -> None:
    controls = Controls(paused=True, promote=CANARY)
    first = decide(at_step(0, 10), {CANARY: ready(1)}, now=10, controls=controls)
    assert events(first) == [("Normal", "RolloutPromoted"), ("Normal", "RolloutPaused")]
    assert first.replicas == {STABLE: N, CANARY: N}
    # Nothing changed since: no new Event, no new state.
    second = decide(first.state, {CANARY: starting(N, ready_pods=1)}, now=20, controls=controls)
    assert second.events == []
    assert second.state == first.state


def test_a_paused_annotation_pauses_a_rollout_as_it_starts() -> None:
    made = decide(stable_state(), now=0, controls=Controls(paused=True))
    assert (made.state.phase, made.state.canary, made.state.weight) == (PAUSED, CANARY, 10)
    assert made.replicas == {STABLE: N, CANARY: 1}
    assert events(made) == [("Normal", "RolloutStarted"), ("Normal", "RolloutPaused")]


# --------------------------------------------------------------------------- a whole rollout


@dataclass
class Cluster:
    """Deployments per revision, as the Deployment controller would report them. A revision
    listed in `broken` never gets a ready pod; pods of other revisions become ready one look
    after they are created."""

    deployments: dict[str, Observed] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)

    def carry_out(self, replicas: dict[str, int]) -> None:
        for rev in list(self.deployments):
            if rev not in replicas:
                del self.deployments[rev]
        for rev, n in replicas.items():
            seen = self.deployments.get(rev, Observed())
            self.deployments[rev] = replace(seen, replicas=n, updated=n, pods=n, ready=min(seen.ready, n))

    def settle(self) -> None:
        for rev, seen in self.deployments.items():
            if rev not in self.broken:
                self.deployments[rev] = replace(seen, ready=seen.replicas)

    def ready(self) -> int:
        return sum(seen.ready for seen in self.deployments.values())


@dataclass
class Run:
    pol: Policy
    persist: bool  # read the state back from the status before every decision
    cluster: Cluster = field(default_factory=Cluster)
    state: State = field(default_factory=State)
    log: list[tuple[float, str, int | None, dict[str, int], list[str]]] = field(default_factory=list)
    lowest_ready: int | None = None

    def look(self, now: float, desired: str, controls: Controls = NO_CONTROLS) -> Decision:
        state = State.from_status(self.state.to_status()) if self.persist else self.state
        made = rollout.decide(desired=desired, target_version=None, policy=self.pol, state=state,
                              observed=dict(self.cluster.deployments), controls=controls, now=at(now))
        self.cluster.carry_out(made.replicas)
        if self.state.stable is not None:
            # Sampled right after every scale or delete, before any new pod becomes ready.
            ready = self.cluster.ready()
            self.lowest_ready = ready if self.lowest_ready is None else min(self.lowest_ready, ready)
        self.state = made.state
        self.log.append((now, made.state.phase, made.state.weight, dict(made.replicas),
                         [e.reason for e in made.events]))
        return made

    def follow(self, now: float, desired: str, until: float) -> float:
        """Look whenever the engine asks (or a pod becomes ready) until it asks for nothing."""
        while now <= until:
            made = self.look(now, desired)
            before = dict(self.cluster.deployments)
            self.cluster.settle()
            if self.cluster.deployments != before:
                now += 1  # a pod became ready: its watch event wakes the operator up
            elif made.requeue_after is not None:
                now += max(made.requeue_after, 1)
            else:
                return now
        return now


def _full_rollout(persist: bool) -> Run:
    run = Run(pol=policy(replicas=10, steps=(Step(10, 60), Step(25, 30), Step(50, 120))), persist=persist)
    run.follow(0, STABLE, until=10)
    run.follow(100, CANARY, until=1000)
    return run


@pytest.mark.parametrize("persist", [False, True], ids=["in memory", "read back from the status every time"])
def test_a_whole_rollout_step_by_step(persist: bool) -> None:
    run = _full_rollout(persist)
    assert run.log == [
        (0, IDLE, None, {STABLE: 10}, []),
        (1, IDLE, None, {STABLE: 10}, []),  # the first pods became ready
        (100, PROGRESSING, 10, {STABLE: 10, CANARY: 1}, ["RolloutStarted"]),
        (101, PROGRESSING, 10, {STABLE: 10, CANARY: 1}, []),  # ready; the pause runs until 160
        (160, PROGRESSING, 25, {STABLE: 10, CANARY: 3}, ["RolloutStepAdvanced"]),
        (161, PROGRESSING, 25, {STABLE: 10, CANARY: 3}, []),
        (190, PROGRESSING, 50, {STABLE: 10, CANARY: 10}, ["RolloutStepAdvanced"]),
        (191, PROGRESSING, 50, {STABLE: 10, CANARY: 10}, []),
        (310, PROMOTING, 100, {STABLE: 10, CANARY: 10}, ["RolloutPromoting"]),
        (311, SUCCEEDED, None, {STABLE: 0, CANARY: 10}, ["RolloutSucceeded"]),
    ]
    assert (run.state.stable, run.state.canary, run.state.history) == (CANARY, None, (STABLE,))
    assert run.lowest_ready == 10


def test_a_restart_at_any_point_continues_identically() -> None:
    assert _full_rollout(persist=True).log == _full_rollout(persist=False).log


def test_a_broken_canary_rolls_back_and_the_fleet_keeps_its_capacity() -> None:
    for persist in (False, True):
        run = Run(pol=policy(), persist=persist)
        run.follow(0, STABLE, until=10)
        run.cluster.broken.add(CANARY)
        end = run.follow(100, CANARY, until=2000)
        assert run.state.phase == ROLLED_BACK and end == 700
        assert run.log[-1] == (700, ROLLED_BACK, None, {STABLE: N, CANARY: 0}, ["RolloutRolledBack"])
        assert run.lowest_ready == N
        # The spec still names the broken revision: looking again changes nothing.
        made = run.look(5000, CANARY)
        assert (made.events, made.requeue_after, run.state.phase) == ([], None, ROLLED_BACK)


def test_superseding_mid_rollout_keeps_capacity_and_finishes_the_newest() -> None:
    run = Run(pol=policy(), persist=True)
    run.follow(0, STABLE, until=10)
    run.follow(100, CANARY, until=170)  # into the 50% step
    assert (run.state.canary, run.state.weight) == (CANARY, 50)
    run.follow(200, NEXT, until=2000)
    assert (run.state.phase, run.state.stable, run.state.history) == (SUCCEEDED, NEXT, (STABLE,))
    # CANARY was never stable: it leaves no trace.
    assert set(run.cluster.deployments) == {STABLE, NEXT}
    assert run.lowest_ready == N


# --------------------------------------------------------------------------- RollingUpdate


def test_a_rolling_update_reports_progress_then_success() -> None:
    state = stable_state(history=(OLD1,))
    started = rolling(state, {STABLE: ready(N)}, now=10)
    # The stable revision keeps its pods until the rolled Deployment is complete (this only
    # matters when it has a Deployment of its own, coming from the Canary strategy).
    assert started.replicas == {CANARY: N, STABLE: N}
    assert (started.state.phase, started.state.stable, started.state.canary) == (PROGRESSING, STABLE, CANARY)
    assert (started.state.started_at, started.state.step, started.state.weight) == (stamp(10), None, None)
    assert events(started) == [("Normal", "RolloutStarted")]

    # Kubernetes rolls the one Deployment: surge pods of the new template, old ones still there.
    midway = rolling(started.state, {CANARY: Observed(replicas=N, updated=2, ready=N, pods=N + 1)}, now=20)
    assert midway.state.phase == PROGRESSING
    assert midway.state.message == f"Rolling update: 2 of {N} pods updated, {N} ready"
    assert midway.events == []

    done = rolling(midway.state, {CANARY: ready(N)}, now=30)
    assert (done.state.phase, done.state.stable, done.state.canary) == (SUCCEEDED, CANARY, None)
    assert done.state.history == (STABLE, OLD1)
    assert done.replicas == {CANARY: N}
    assert events(done) == [("Normal", "RolloutSucceeded")]


@pytest.mark.parametrize("seen", [
    pytest.param(Observed(replicas=N, updated=N, ready=N, pods=N, current=False), id="status not caught up"),
    pytest.param(Observed(replicas=N, updated=N, ready=N - 1, pods=N), id="one new pod not ready"),
    pytest.param(Observed(replicas=N, updated=N, ready=N, pods=N + 1), id="an old pod still terminating"),
])
def test_a_rolling_update_is_not_done_early(seen: Observed) -> None:
    made = rolling(at_step(None, 0, phase=PROGRESSING), {CANARY: seen}, now=20)
    assert made.state.phase == PROGRESSING and made.state.canary == CANARY


def test_a_rolling_update_past_its_deadline_says_why() -> None:
    seen = Observed(replicas=N, updated=1, ready=N - 1, pods=N + 1, crash_looping=1, deadline_exceeded=True)
    made = rolling(at_step(None, 0, phase=PROGRESSING), {CANARY: seen}, now=900)
    assert made.state.message == f"Stalled past its deadline: 1 of {N + 1} canary pods crash-looping"
    assert made.replicas == {CANARY: N, STABLE: N}


def test_a_rolling_update_back_to_the_stable_spec_ends_the_rollout() -> None:
    made = rolling(at_step(None, 0, phase=PROGRESSING), {STABLE: ready(N)}, desired=STABLE, now=20)
    assert (made.state.phase, made.state.stable, made.state.canary) == (SUCCEEDED, STABLE, None)
    assert made.replicas == {STABLE: N}


# --------------------------------------------------------------------------- any sequence at all


HEALTHY = {STABLE: True, CANARY: True, NEXT: False, OLD1: True}


@pytest.mark.parametrize("seed", range(40))
def test_capacity_and_restart_safety_hold_over_any_sequence_of_events(seed: int) -> None:
    """Spec changes, pods becoming ready (or never), manual control and the passing of time,
    in a random but reproducible order: whatever happens, ready capacity never drops below
    spec.replicas, and a restart at any point changes nothing."""
    rng = random.Random(seed)
    pol = policy(replicas=rng.choice([1, 3, 4, 10]), deadline=rng.choice([120, 600]))
    cluster = Cluster(broken={rev for rev, healthy in HEALTHY.items() if not healthy})
    state, desired, now = State(), STABLE, 0.0
    for _ in range(60):
        roll = rng.random()
        if roll < 0.15 and state.stable is not None:
            desired = rng.choice(sorted(HEALTHY))
        elif roll < 0.5:
            cluster.settle()
        controls = Controls(paused=rng.random() < 0.1,
                            promote=state.canary if rng.random() < 0.05 else None,
                            abort=state.canary if rng.random() < 0.03 else None)
        observed = dict(cluster.deployments)
        made, again = (
            rollout.decide(desired=desired, target_version=None, policy=pol, state=from_state, observed=observed,
                           controls=controls, now=at(now))
            for from_state in (state, State.from_status(state.to_status()))
        )
        check_promises(state, observed, pol.replicas, made, again)
        cluster.carry_out(made.replicas)
        state = made.state
        now += rng.choice([0, 1, 30, 61, 121, 700])


# --------------------------------------------------------------------------- resuming after a lost write


@pytest.mark.parametrize("ready_pods", [1, 2, N], ids=["the new pods still load", "some are ready", "all are ready"])
def test_a_canary_scaled_for_the_next_step_is_never_scaled_back(ready_pods: int) -> None:
    # The step from weight 10 (1 pod) to 50 (N pods) was written to the canary's Deployment,
    # and then the status write that records it was lost (or the operator died): the
    # status still says step 0 while the canary has N pods.
    state = at_step(0, 10, started=0)
    made = decide(state, {STABLE: ready(N), CANARY: starting(N, ready_pods)}, now=61)
    assert made.replicas[CANARY] == N  # not scaled back down to step 0's one pod
    assert made.replicas[STABLE] == N
    # Step 0's own condition (1 ready canary pod, the pause over) holds: the rollout moves on.
    assert (made.state.step, made.state.weight) == (1, 50)


def test_a_paused_canary_keeps_the_pods_it_has() -> None:
    state = at_step(0, 10, started=0)
    made = decide(state, {STABLE: ready(N), CANARY: starting(N, 1)}, now=5, controls=Controls(paused=True))
    assert made.state.phase == PAUSED and made.replicas[CANARY] == N


@pytest.mark.parametrize(("replicas", "canary", "why"), [
    (4, 3, "spec.replicas went from 10 down to 4 (an autoscaler): 3 pods were step 0's share of 10"),
    (4, 7, "more pods than any step asks for"),
])
def test_a_canary_larger_than_any_step_of_its_rollout_gives_way(replicas: int, canary: int, why: str) -> None:
    state = at_step(0, 20, started=0)
    made = decide(state, {STABLE: ready(replicas), CANARY: starting(canary, canary)}, now=5,
                  pol=policy(replicas=replicas, steps=(Step(20, 60), Step(50, 120))))
    assert made.replicas[CANARY] == rollout.canary_replicas(replicas, 20) == 1, why


@pytest.mark.parametrize("strategy", ["Canary", "RollingUpdate"])
def test_a_stalled_rollout_is_over_when_the_spec_returns_to_the_stable_revision(strategy: str) -> None:
    stalled = State(phase=PROGRESSING if strategy == "RollingUpdate" else SUCCEEDED, stable=STABLE,
                    target_version=1, stalled=True, message="Stalled past its deadline: 1 of 4 pods crash-looping")
    if strategy == "RollingUpdate":
        made = rollout.decide_rolling(desired=STABLE, target_version=1, policy=policy(), state=stalled,
                                      observed={STABLE: ready(N)}, now=at(10))
    else:
        made = rollout.decide(desired=STABLE, target_version=1, policy=policy(), state=stalled,
                              observed={STABLE: ready(N)}, controls=NO_CONTROLS, now=at(10))
    assert not made.state.stalled
    assert made.state.message == f"Revision {STABLE} is stable"
