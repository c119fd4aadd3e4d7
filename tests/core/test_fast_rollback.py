"""Going back fast: a revision still in history returns without canary steps; a rolled-back
revision is tried again on request, without a spec change."""

from __future__ import annotations

from tfleet.engine import rollout
from tfleet.engine.observe import spent_controls
from tfleet.engine.rollout import Controls, State

from .test_rollout import CANARY, NO_CONTROLS, OLD1, STABLE, N, at, policy, ready


def decide(state: State, observed: dict, desired: str, controls: Controls = NO_CONTROLS, now: float = 0):
    return rollout.decide(desired=desired, target_version=None, policy=policy(), state=state, observed=observed,
                          controls=controls, now=at(now))


def test_a_revision_in_history_comes_back_at_full_size_and_then_takes_over():
    state = State(phase=rollout.SUCCEEDED, stable=STABLE, history=(OLD1,), message="")
    made = decide(state, {STABLE: ready(N), OLD1: ready(0)}, OLD1)
    assert made.state.phase == rollout.PROMOTING and made.state.canary == OLD1
    assert made.replicas[OLD1] == N and made.replicas[STABLE] == N  # capacity never drops
    assert any("without canary steps" in e.message for e in made.events)
    done = decide(made.state, {STABLE: ready(N), OLD1: ready(N)}, OLD1, now=5)
    assert done.state.phase == rollout.SUCCEEDED and done.state.stable == OLD1
    assert done.replicas[STABLE] == 0 and STABLE in done.state.history


def test_a_new_revision_still_goes_through_the_steps():
    state = State(phase=rollout.SUCCEEDED, stable=STABLE, history=(OLD1,), message="")
    made = decide(state, {STABLE: ready(N)}, CANARY)
    assert made.state.phase == rollout.PROGRESSING and made.state.step == 0


def test_a_rolled_back_revision_is_retried_only_on_request():
    failed = State(phase=rollout.ROLLED_BACK, stable=STABLE, failed=CANARY, message="Rolled back revision x")
    observed = {STABLE: ready(N), CANARY: ready(0)}
    assert decide(failed, observed, CANARY).state == failed  # not by itself
    retried = decide(failed, observed, CANARY, Controls(retry=CANARY))
    assert retried.state.phase == rollout.PROGRESSING and retried.state.canary == CANARY
    assert retried.state.failed is None and retried.replicas[CANARY] >= 1
    # The request is spent once the status no longer names the revision as failed.
    body = {"metadata": {"annotations": {"tfleet.dev/rollout-retry": CANARY}},
            "status": {"rollout": retried.state.to_status()}}
    assert spent_controls(body) == ["tfleet.dev/rollout-retry"]
    before = {"metadata": body["metadata"], "status": {"rollout": failed.to_status()}}
    assert spent_controls(before) == []
