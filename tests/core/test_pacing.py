"""Paced rollouts in the engine: a new revision waits for a slot, then rolls as any other."""

from __future__ import annotations

from tfleet.engine import rollout
from tfleet.engine.rollout import QUEUED, Controls, Pacing, State

from .test_rollout import CANARY, NO_CONTROLS, STABLE, N, at, policy, ready

IDLE_STATE = State(phase=rollout.IDLE, stable=STABLE, message=f"Revision {STABLE} is stable")
FULL = Pacing(may_start=False, position=2, limit=3)


def decide(state: State, pacing: Pacing, controls: Controls = NO_CONTROLS, observed: dict | None = None,
           desired: str = CANARY, now: float = 0) -> rollout.Decision:
    return rollout.decide(desired=desired, target_version=5, policy=policy(), state=state,
                          observed=observed if observed is not None else {STABLE: ready(N)},
                          controls=controls, now=at(now), pacing=pacing)


def test_a_new_revision_waits_in_the_queue_without_any_object_of_its_own():
    made = decide(IDLE_STATE, FULL)
    assert made.state.phase == QUEUED and made.state.queued == CANARY and made.state.canary is None
    assert made.replicas == {STABLE: N}
    assert made.build_desired is False
    assert "position 2" in made.state.message and "at most 3 rollouts" in made.state.message
    assert [e.reason for e in made.events] == ["RolloutQueued"]
    assert made.requeue_after == rollout.QUEUE_RECHECK_SECONDS
    # The place moves as others start, but the queued state is not rewritten for it.
    again = decide(State.from_status(made.state.to_status()), Pacing(False, 1, 3), now=30)
    assert again.state == made.state and again.events == []


def test_a_free_slot_starts_the_queued_rollout_and_forgets_the_queue():
    queued = decide(IDLE_STATE, FULL).state
    made = decide(queued, Pacing(), now=40)
    assert made.state.phase == rollout.PROGRESSING and made.state.canary == CANARY
    assert (made.state.queued, made.state.queued_at) == (None, None)
    assert made.build_desired is True and made.replicas[CANARY] >= 1


def test_promote_and_abort_bypass_the_queue():
    promoted = decide(IDLE_STATE, FULL, Controls(promote=CANARY))
    assert promoted.state.phase == rollout.PROMOTING
    aborted = decide(IDLE_STATE, FULL, Controls(abort=CANARY))
    assert aborted.state.phase == rollout.ROLLED_BACK and aborted.state.failed == CANARY


def test_a_canary_that_exists_already_is_resumed_not_queued():
    # Started, then the operator died before recording it: its Deployment is there.
    made = decide(IDLE_STATE, FULL, observed={STABLE: ready(N), CANARY: ready(1)})
    assert made.state.phase == rollout.PROGRESSING and made.build_desired


def test_a_rollout_in_progress_is_never_queued_and_a_spec_back_at_stable_drops_the_queue():
    running = decide(IDLE_STATE, Pacing()).state
    assert decide(running, FULL, observed={STABLE: ready(N), CANARY: ready(1)}).state.phase == rollout.PROGRESSING
    queued = decide(IDLE_STATE, FULL).state
    back = decide(queued, FULL, desired=STABLE)
    assert back.state.phase == rollout.IDLE and back.state.queued is None
    assert "dropped" in back.state.message


def test_a_rolling_update_waits_in_the_queue_with_its_stable_template():
    made = rollout.decide_rolling(desired=CANARY, target_version=5, policy=policy(), state=IDLE_STATE,
                                  observed={STABLE: ready(N)}, now=at(0), pacing=FULL)
    assert made.state.phase == QUEUED and made.replicas == {STABLE: N} and not made.build_desired
