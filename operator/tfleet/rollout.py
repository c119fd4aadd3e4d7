"""The rollout engine: a pure state machine over revisions.

A revision is everything that runs in a pod (model version, base path, image, batching,
resources, server args, pod settings): its name is a hash of the pod template, so a change
of replicas alone is not a new revision. Each Canary revision runs in its own Deployment.

`decide` takes the desired revision, the rollout state stored in `status.rollout`, the
observed revisions and the time, and returns the replica count of every revision, the new
rollout state, the Events to post and when to look again. It keeps no memory of its own:
an operator restarted mid-rollout continues from the status.

Replica arithmetic of a Canary step with weight w (percent) and N = spec.replicas:

    stable = N                        (never scaled down before promotion, so ready
                                       capacity never drops below N even if every
                                       canary pod fails)
    canary = the c in 1..N whose share c / (N + c) is closest to w/100
             (about N * w / (100 - w))

The Service selects the pods of every revision, so the canary's share of ready endpoints is
canary / (N + canary), the closest to w/100 that whole pods allow. Weights above 50 are capped at an equal
share (canary = N): a larger share would need more than 2N pods, which promotion makes
unnecessary. Promotion scales the canary to N, waits until all N are ready, then scales the
old revision to zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from tfleet.schema import duration_seconds

IDLE = "Idle"
PROGRESSING = "Progressing"
PAUSED = "Paused"
PROMOTING = "Promoting"
SUCCEEDED = "Succeeded"
ROLLED_BACK = "RolledBack"
ACTIVE_PHASES = (PROGRESSING, PAUSED, PROMOTING)


@dataclass(frozen=True)
class Step:
    weight: int
    pause_seconds: float


@dataclass(frozen=True)
class Policy:
    """What the spec says about rollouts, in the engine's terms."""

    replicas: int
    steps: tuple[Step, ...]
    deadline_seconds: float
    auto_rollback: bool = True
    history_limit: int = 3
    analysis: bool = False  # a metric gate must pass before a step moves on


@dataclass(frozen=True)
class Observed:
    """One revision's Deployment and pods, as last seen."""

    replicas: int = 0  # the Deployment's spec.replicas
    ready: int = 0
    updated: int = 0
    current: bool = True  # status.observedGeneration caught up with the spec
    restarts: int = 0  # container restarts summed over the revision's pods
    crash_looping: int = 0
    image_pull_failing: int = 0
    unschedulable: int = 0
    unschedulable_message: str = ""
    pods: int = 0
    load_error: str = ""  # TF Serving's own load error, when a health bridge reported one
    version: int | None = None
    deadline_exceeded: bool = False  # the Deployment's own Progressing=False condition
    analysis_ok: bool | None = None  # the metric gate: passed, failed, or not (yet) known
    analysis_message: str = ""


@dataclass(frozen=True)
class Controls:
    """Manual control through annotations. promote/abort name the canary revision they target."""

    paused: bool = False
    promote: str | None = None
    abort: str | None = None


@dataclass(frozen=True)
class State:
    """Rollout progress, persisted in status.rollout."""

    phase: str = IDLE
    stable: str | None = None
    canary: str | None = None
    target_version: int | None = None
    step: int | None = None
    weight: int | None = None
    started_at: str | None = None
    step_started_at: str | None = None
    canary_restarts: int = 0  # restart count of the canary when its current step began
    failed: str | None = None  # a rolled-back revision, not retried until the spec changes
    message: str = ""
    history: tuple[str, ...] = ()  # earlier stable revisions, newest first

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"phase": self.phase}
        for key, value in (
            ("stableRevision", self.stable), ("canaryRevision", self.canary),
            ("targetVersion", self.target_version), ("step", self.step), ("weight", self.weight),
            ("startedAt", self.started_at), ("stepStartedAt", self.step_started_at),
            ("failedRevision", self.failed),
        ):
            if value is not None:
                out[key] = value
        if self.canary is not None:
            out["canaryRestarts"] = self.canary_restarts
        if self.history:
            out["history"] = list(self.history)
        if self.message:
            out["message"] = self.message
        return out

    @classmethod
    def from_status(cls, status: dict[str, Any] | None) -> State:
        s = status or {}
        return cls(
            phase=s.get("phase") or IDLE,
            stable=s.get("stableRevision"),
            canary=s.get("canaryRevision"),
            target_version=s.get("targetVersion"),
            step=s.get("step"),
            weight=s.get("weight"),
            started_at=s.get("startedAt"),
            step_started_at=s.get("stepStartedAt"),
            canary_restarts=int(s.get("canaryRestarts") or 0),
            failed=s.get("failedRevision"),
            message=s.get("message") or "",
            history=tuple(s.get("history") or ()),
        )


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


@dataclass
class Decision:
    replicas: dict[str, int]  # revision -> Deployment replicas; revisions not named are deleted
    state: State
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None


def steps_from_spec(steps: Any) -> tuple[Step, ...]:
    return tuple(Step(s.weight, duration_seconds(s.pause)) for s in steps)


def canary_replicas(replicas: int, weight: int) -> int:
    """Canary pods for a step weight, with the stable revision kept at `replicas`: the count
    in 1..replicas whose share canary / (replicas + canary) is closest to the weight."""
    if replicas <= 0:
        return 0
    if weight >= 50:
        return replicas
    return min(range(1, replicas + 1), key=lambda c: (abs(c / (replicas + c) - weight / 100), c))


TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_now() -> datetime:
    """The current UTC time, naive, as every time in status is UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def format_time(moment: datetime) -> str:
    """Whole seconds, as Kubernetes writes condition times."""
    return moment.strftime(TIME_FORMAT)


def format_precise_time(moment: datetime) -> str:
    """Milliseconds: a pause measured from a time cut to whole seconds would end up to a
    second early."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if "." in text else TIME_FORMAT
    return datetime.strptime(text, fmt).replace(tzinfo=None)


def _elapsed(since: str | None, now: datetime) -> float:
    start = parse_time(since)
    return 0.0 if start is None else (now.replace(tzinfo=None) - start).total_seconds()


def failure_reason(observed: Observed, expected: int) -> str:
    """Why a revision is not healthy, in the words an operator on call wants to read."""
    if observed.ready >= expected and observed.analysis_ok is None and observed.analysis_message:
        return observed.analysis_message
    if observed.load_error:
        return f"TF Serving failed to load the model: {observed.load_error}"
    total = max(expected, observed.pods)
    if observed.crash_looping:
        return f"{observed.crash_looping} of {total} canary pods crash-looping"
    if observed.image_pull_failing:
        return f"{observed.image_pull_failing} of {total} canary pods cannot pull their image"
    if observed.unschedulable:
        detail = f": {observed.unschedulable_message}" if observed.unschedulable_message else ""
        return f"{observed.unschedulable} of {total} canary pods cannot be scheduled{detail}"
    if observed.restarts:
        return f"canary containers restarted {observed.restarts} times"
    return f"{observed.ready} of {expected} canary pods became ready"


def _healthy(observed: Observed, expected: int, baseline: int) -> bool:
    return (
        observed.current
        and observed.replicas == expected
        and observed.updated >= expected
        and observed.ready >= expected
        and observed.restarts <= baseline
    )


def _keep_history(state: State, retired: str | None, new_stable: str, limit: int) -> tuple[str, ...]:
    """The earlier stable revisions after `new_stable` replaces `retired`, newest first."""
    history = [r for r in state.history if r not in (retired, new_stable)]
    if retired is not None and retired != new_stable:
        history.insert(0, retired)
    return tuple(history[: max(0, limit)])


def decide(
    *,
    desired: str,
    target_version: int | None,
    policy: Policy,
    state: State,
    observed: dict[str, Observed],
    controls: Controls,
    now: datetime,
) -> Decision:
    n = policy.replicas
    stamp = format_precise_time(now)
    history = {r: 0 for r in state.history}

    # The first revision of a new InferenceService goes straight to stable.
    if state.stable is None:
        new = State(phase=IDLE, stable=desired, target_version=target_version,
                    message=f"Revision {desired} is stable")
        return Decision({desired: n}, new)

    if desired == state.stable:
        if state.canary is not None:
            new = replace(state, phase=IDLE, canary=None, step=None, weight=None, canary_restarts=0,
                          message=f"Rollout of {state.canary} cancelled: the spec returned to revision {desired}",
                          target_version=target_version)
            return Decision({**history, desired: n}, new,
                            [Event("Normal", "RolloutCancelled", new.message)])
        if state.phase == ROLLED_BACK:
            # The spec went back to the stable revision: the failed one is dropped and the
            # InferenceService is no longer Degraded.
            new = replace(state, phase=IDLE, failed=None, target_version=target_version,
                          message=f"Revision {desired} is stable; the spec no longer asks for {state.failed}")
            return Decision({**history, desired: n}, new)
        return Decision({**history, desired: n}, replace(state, target_version=target_version))

    if desired == state.failed:
        # Not retried until the spec changes again.
        return Decision({**history, desired: 0, state.stable: n}, state)

    events: list[Event] = []
    replicas: dict[str, int] = {**history, state.stable: n}
    if state.canary != desired:
        if state.canary is not None:
            events.append(Event("Normal", "RolloutSuperseded",
                                f"Rollout of {state.canary} superseded by revision {desired}"))
        first = policy.steps[0] if policy.steps else None
        state = replace(
            state, phase=PROGRESSING if first else PROMOTING, canary=desired, target_version=target_version,
            step=0 if first else None, weight=first.weight if first else 100, started_at=stamp,
            step_started_at=stamp, canary_restarts=observed.get(desired, Observed()).restarts, failed=None,
            message=f"Rolling out revision {desired}",
        )
        events.append(Event("Normal", "RolloutStarted",
                            f"Started rolling out revision {desired}" +
                            (f" (model version {target_version})" if target_version else "") +
                            f" over stable revision {state.stable}"))

    canary = state.canary
    assert canary is not None
    seen = observed.get(canary, Observed())

    def rolled_back(reason: str, event_reason: str) -> Decision:
        new = replace(state, phase=ROLLED_BACK, canary=None, step=None, weight=None, canary_restarts=0,
                      failed=canary, message=f"Rolled back revision {canary}: {reason}")
        # The failed revision stays, at zero, so its pods' history can be inspected.
        return Decision({**history, canary: 0, state.stable: n} if state.stable else {canary: 0}, new,
                        [*events, Event("Warning", event_reason, new.message)])

    if controls.abort == canary:
        return rolled_back("aborted by request", "RolloutAborted")

    promoted = state.step is None and state.weight == 100  # Promoting, or paused while promoting
    if controls.promote == canary and not promoted:
        state = replace(state, phase=PROMOTING, step=None, weight=100, step_started_at=stamp,
                        canary_restarts=seen.restarts, message=f"Promoting revision {canary} on request")
        events.append(Event("Normal", "RolloutPromoted", state.message))

    if controls.paused:
        if state.phase != PAUSED:
            events.append(Event("Normal", "RolloutPaused", f"Paused the rollout of revision {canary}"))
        state = replace(state, phase=PAUSED, message=f"Paused at weight {state.weight}%")
        replicas[canary] = _canary_target(state, n)
        return Decision(replicas, state, events)
    if state.phase == PAUSED:
        # The step starts over: its pause counts from the resume.
        state = replace(state, phase=PROMOTING if state.step is None else PROGRESSING,
                        step_started_at=stamp, canary_restarts=seen.restarts,
                        message=f"Resumed the rollout of revision {canary}")
        events.append(Event("Normal", "RolloutResumed", state.message))

    expected = _canary_target(state, n)
    replicas[canary] = expected
    elapsed = _elapsed(state.step_started_at, now)
    if policy.analysis and seen.analysis_ok is False:
        if policy.auto_rollback:
            return rolled_back(seen.analysis_message, "RolloutRolledBack")
        state = replace(state, message=f"Stalled: {seen.analysis_message}")
        return Decision(replicas, state, events)
    healthy = _healthy(seen, expected, state.canary_restarts) and (not policy.analysis or seen.analysis_ok is True)

    if state.phase == PROMOTING:
        if healthy:
            retired = state.stable
            new = replace(state, phase=SUCCEEDED, stable=canary, canary=None, step=None, weight=None,
                          canary_restarts=0, history=_keep_history(state, retired, canary, policy.history_limit - 1),
                          message=f"Revision {canary} is stable")
            keep = {r: 0 for r in new.history}
            return Decision({**keep, canary: n}, new,
                            [*events, Event("Normal", "RolloutSucceeded",
                                            f"Promoted revision {canary}; revision {retired} scaled to zero")])
    elif (state.step or 0) >= len(policy.steps):
        # The spec lost steps during the rollout: the remaining ones are gone, so promote.
        state = replace(state, phase=PROMOTING, step=None, weight=100, step_started_at=stamp,
                        canary_restarts=seen.restarts, message=f"Promoting revision {canary}")
        events.append(Event("Normal", "RolloutPromoting", state.message))
        replicas[canary] = n
        return Decision(replicas, state, events, requeue_after=0.0)
    else:
        step = policy.steps[state.step or 0]
        if healthy and elapsed >= step.pause_seconds:
            index = (state.step or 0) + 1
            if index >= len(policy.steps):
                state = replace(state, phase=PROMOTING, step=None, weight=100, step_started_at=stamp,
                                canary_restarts=seen.restarts, message=f"Promoting revision {canary}")
                events.append(Event("Normal", "RolloutPromoting", state.message))
            else:
                nxt = policy.steps[index]
                state = replace(state, step=index, weight=nxt.weight, step_started_at=stamp,
                                canary_restarts=seen.restarts,
                                message=f"Step {index + 1} of {len(policy.steps)}: weight {nxt.weight}%")
                events.append(Event("Normal", "RolloutStepAdvanced", state.message))
            replicas[canary] = _canary_target(state, n)
            return Decision(replicas, state, events, requeue_after=0.0 if healthy else None)
        if healthy:
            state = replace(state, message=f"Step {(state.step or 0) + 1} of {len(policy.steps)}: weight "
                                           f"{state.weight}%, holding for the pause")
            return Decision(replicas, state, events, requeue_after=max(0.0, step.pause_seconds - elapsed))

    # Not healthy yet.
    if elapsed >= policy.deadline_seconds:
        reason = failure_reason(seen, expected)
        if policy.auto_rollback:
            return rolled_back(reason, "RolloutRolledBack")
        state = replace(state, message=f"Stalled past its deadline: {reason}")
        return Decision(replicas, state, events)
    state = replace(state, message=_progress_message(state, seen, expected, len(policy.steps)))
    return Decision(replicas, state, events, requeue_after=max(0.0, policy.deadline_seconds - elapsed))


def decide_rolling(
    *,
    desired: str,
    target_version: int | None,
    policy: Policy,
    state: State,
    observed: dict[str, Observed],
    now: datetime,
) -> Decision:
    """RollingUpdate: one Deployment rolled in place by Kubernetes; tfleet reports on it."""
    n = policy.replicas
    seen = observed.get(desired, Observed())
    if state.stable is None:
        return Decision({desired: n}, State(phase=IDLE, stable=desired, target_version=target_version,
                                            message=f"Revision {desired} is stable"))
    if desired == state.stable:
        return Decision({desired: n}, replace(state, canary=None, step=None, weight=None,
                                              target_version=target_version,
                                              phase=SUCCEEDED if state.phase in ACTIVE_PHASES else state.phase))
    events: list[Event] = []
    if state.canary != desired:
        state = replace(state, phase=PROGRESSING, canary=desired, target_version=target_version,
                        started_at=format_precise_time(now), step_started_at=format_precise_time(now),
                        step=None, weight=None,
                        failed=None)
        events.append(Event("Normal", "RolloutStarted", f"Started a rolling update to revision {desired}"))
    complete = seen.current and seen.updated >= n and seen.ready >= n and seen.pods <= n
    if complete:
        retired = state.stable
        new = replace(state, phase=SUCCEEDED, stable=desired, canary=None,
                      history=_keep_history(state, retired, desired, policy.history_limit - 1),
                      message=f"Revision {desired} is stable")
        return Decision({desired: n}, new, [*events, Event("Normal", "RolloutSucceeded",
                                                           f"Rolled revision {desired} out to {n} pods")])
    if seen.deadline_exceeded:
        state = replace(state, message=f"Stalled past its deadline: {failure_reason(seen, n)}")
    else:
        state = replace(state, message=f"Rolling update: {seen.updated} of {n} pods updated, {seen.ready} ready")
    # Coming from Canary, the stable revision has a Deployment of its own: it keeps its pods
    # until the rolled Deployment is complete.
    return Decision({desired: n, **({state.stable: n} if state.stable else {})}, state, events)


def _canary_target(state: State, replicas: int) -> int:
    if state.phase == PROMOTING or state.weight is None or state.weight >= 100:
        return replicas
    return canary_replicas(replicas, state.weight)


def _progress_message(state: State, seen: Observed, expected: int, steps: int) -> str:
    where = "promotion" if state.phase == PROMOTING else f"step {(state.step or 0) + 1} of {steps}"
    return f"Waiting for canary pods ({where}): {seen.ready} of {expected} ready"
