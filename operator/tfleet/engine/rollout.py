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
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from tfleet.api.schema import duration_seconds
from tfleet.api.times import format_millis, format_time, parse_time
from tfleet.api.vocabulary import ACTIVE_PHASES, EventReason, EventType, Phase, Reason
from tfleet.engine.analysis import Result

if TYPE_CHECKING:
    from tfleet.api.model import InferenceService

# The phases by their short names, as the rest of the engine reads them.
IDLE, PROGRESSING, PAUSED = Phase.IDLE, Phase.PROGRESSING, Phase.PAUSED
PROMOTING, SUCCEEDED, ROLLED_BACK = Phase.PROMOTING, Phase.SUCCEEDED, Phase.ROLLED_BACK
QUEUED = Phase.QUEUED
# A queued rollout looks again this often, in case the wake-up when a slot frees was missed.
QUEUE_RECHECK_SECONDS = 15.0
format_precise_time = format_millis  # the name the tests know

__all__ = [
    "ACTIVE_PHASES", "IDLE", "PAUSED", "PROGRESSING", "PROMOTING", "QUEUED", "ROLLED_BACK", "SUCCEEDED", "UNPACED",
    "Controls", "Decision", "Event", "Observed", "Pacing", "Policy", "State", "Step", "Trouble",
    "canary_replicas", "decide", "decide_rolling", "describe", "failure_reason", "format_precise_time",
    "format_time", "parse_time", "pod_trouble", "policy_of", "step_name", "steps_from_spec", "with_check",
]


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
    unpullable_image: str = ""  # the image those pods cannot pull
    unschedulable: int = 0
    unschedulable_message: str = ""
    pods: int = 0
    load_error: str = ""  # TF Serving's own load error, when a health bridge reported one
    preflight_error: str = ""  # why a pod's pre-flight failed, when a health bridge reported one
    version: int | None = None
    # Unpinned: each version its ready pods' health bridges report, with its pod count.
    served: tuple[tuple[int, int], ...] = ()
    deadline_exceeded: bool = False  # the Deployment's own Progressing=False condition
    analysis_ok: bool | None = None  # the metric gate: passed, failed, or not (yet) known
    analysis_message: str = ""
    analysis_source_failed: bool = False  # not known because its source failed (not: no data yet)


@dataclass(frozen=True)
class Controls:
    """Manual control through annotations. promote/abort name the canary revision they target."""

    paused: bool = False
    promote: str | None = None
    abort: str | None = None
    retry: str | None = None  # a rolled-back revision to try again without a spec change


@dataclass(frozen=True)
class Pacing:
    """Whether a new rollout may start now: the operator bounds how many run at once."""

    may_start: bool = True
    position: int = 0  # 1-based place in the queue, when it may not start
    limit: int = 0


UNPACED = Pacing()


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
    # Past its deadline (or failing its metric gate) with automatic rollback off: the rollout
    # waits for a person, and the InferenceService is Degraded.
    stalled: bool = False
    queued: str | None = None  # a revision waiting for a rollout slot
    queued_at: str | None = None
    # Why a rollout stopped (a `Reason`), while it is rolled back or stalled.
    reason: str | None = None

    def __post_init__(self) -> None:
        if not self.stopped:
            # A reason outlives nothing: the rollout that stopped for it is over.
            object.__setattr__(self, "reason", None)

    @property
    def stopped(self) -> bool:
        return self.phase == ROLLED_BACK or self.stalled

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"phase": self.phase}
        for key, value in (
            ("stableRevision", self.stable), ("canaryRevision", self.canary),
            ("targetVersion", self.target_version), ("step", self.step), ("weight", self.weight),
            ("startedAt", self.started_at), ("stepStartedAt", self.step_started_at),
            ("failedRevision", self.failed), ("queuedRevision", self.queued), ("queuedAt", self.queued_at),
        ):
            if value is not None:
                out[key] = value
        if self.canary is not None:
            out["canaryRestarts"] = self.canary_restarts
        if self.history:
            out["history"] = list(self.history)
        if self.stalled:
            out["stalled"] = True
        if self.reason and self.stopped:
            out["reason"] = self.reason
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
            stalled=bool(s.get("stalled")),
            queued=s.get("queuedRevision"),
            queued_at=s.get("queuedAt"),
            reason=s.get("reason"),
        )


@dataclass(frozen=True)
class Event:
    """An Event to post about the InferenceService."""

    type: str  # EventType: Normal or Warning
    reason: str
    message: str


@dataclass
class Decision:
    replicas: dict[str, int]  # revision -> Deployment replicas; revisions not named are deleted
    state: State
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    # False while the new revision waits in the queue: its Deployment and ConfigMap are not
    # created yet.
    build_desired: bool = True


def steps_from_spec(steps: Any) -> tuple[Step, ...]:
    return tuple(Step(s.weight, duration_seconds(s.pause)) for s in steps)


def policy_of(isvc: InferenceService) -> Policy:
    """The engine's view of what an InferenceService's spec says about rollouts."""
    spec = isvc.spec.rollout
    return Policy(
        replicas=isvc.replicas,
        steps=steps_from_spec(spec.steps),
        deadline_seconds=spec.progress_deadline_seconds,
        auto_rollback=spec.auto_rollback,
        history_limit=spec.revision_history_limit + 1,
        analysis=spec.analysis is not None and (spec.analysis.prometheus is not None or
                                                spec.analysis.builtin is not None),
    )


def canary_replicas(replicas: int, weight: int) -> int:
    """Canary pods for a step weight, with the stable revision kept at `replicas`: the count
    in 1..replicas whose share canary / (replicas + canary) is closest to the weight."""
    if replicas <= 0:
        return 0
    if weight >= 50:
        return replicas
    return min(range(1, replicas + 1), key=lambda c: (abs(c / (replicas + c) - weight / 100), c))


def _elapsed(since: str | None, now: datetime) -> float:
    start = parse_time(since)
    return 0.0 if start is None else (now.replace(tzinfo=None) - start).total_seconds()


def _healthy(observed: Observed, expected: int, baseline: int) -> bool:
    return (
        observed.current
        and observed.replicas >= expected
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


class Trouble(NamedTuple):
    """The most telling reason why a revision's pods are not ready."""

    rank: int  # 0 is the most telling
    pods: int  # how many pods show it (0 when it is about the model, not counted pods)
    text: str  # "crash-looping", "TF Serving failed to load the model: ...", ...


def pod_trouble(observed: Observed) -> Trouble | None:
    """The one priority of pod troubles, for rollout reasons and condition messages alike:
    TF Serving's own error first (it says what is wrong with the model), then what the
    kubelet and the scheduler report."""
    if observed.load_error:
        return Trouble(0, 0, f"TF Serving failed to load the model: {observed.load_error}")
    if observed.preflight_error:
        return Trouble(0, 0, f"the pre-flight failed: {observed.preflight_error}")
    if observed.crash_looping:
        return Trouble(1, observed.crash_looping, "crash-looping")
    if observed.image_pull_failing:
        image = f'image "{observed.unpullable_image}"' if observed.unpullable_image else "their image"
        return Trouble(2, observed.image_pull_failing, f"cannot pull {image}")
    if observed.unschedulable:
        detail = f": {observed.unschedulable_message}" if observed.unschedulable_message else ""
        return Trouble(3, observed.unschedulable, f"cannot be scheduled{detail}")
    return None


def failure_reason(observed: Observed, expected: int) -> str:
    """Why a canary revision is not healthy, in the words an operator on call wants to read."""
    if observed.ready >= expected and observed.analysis_ok is None and observed.analysis_message:
        return observed.analysis_message
    trouble = pod_trouble(observed)
    if trouble is not None:
        if not trouble.pods:
            return trouble.text
        return f"{trouble.pods} of {max(expected, observed.pods)} canary pods {trouble.text}"
    if observed.restarts:
        return f"canary containers restarted {observed.restarts} times"
    return f"{observed.ready} of {expected} canary pods became ready"


@dataclass
class _Pass:
    """What every phase of one Canary decision needs: the inputs, the replicas decided so
    far and the Events to post."""

    policy: Policy
    now: datetime
    stamp: str  # `now` as status times are written
    canary: str
    seen: Observed  # the canary revision as observed
    replicas: dict[str, int]
    events: list[Event] = field(default_factory=list)

    def decision(self, state: State, requeue_after: float | None = None) -> Decision:
        return Decision(self.replicas, state, self.events, requeue_after)


def decide(
    *,
    desired: str,
    target_version: int | None,
    policy: Policy,
    state: State,
    observed: dict[str, Observed],
    controls: Controls,
    now: datetime,
    pacing: Pacing = UNPACED,
) -> Decision:
    """The Canary strategy: one Deployment per revision, the canary's weight raised step by
    step beside an unchanged stable revision. One function per situation below."""
    n = policy.replicas
    history = {r: 0 for r in state.history}
    if state.stable is None:
        # The first revision of a new InferenceService goes straight to stable.
        return Decision({desired: n}, State(phase=IDLE, stable=desired, target_version=target_version,
                                            message=f"Revision {desired} is stable"))
    if desired == state.stable:
        return _at_stable(desired, target_version, state, {**history, desired: n})
    if desired == state.failed:
        if controls.retry != desired:
            # Not retried until the spec changes again, or a person asks.
            return Decision({**history, desired: 0, state.stable: n}, state)
        state = replace(state, failed=None)
    stable = state.stable
    assert stable is not None  # checked above; `replace` loses the narrowing
    if _waits_in_queue(desired, state, observed, controls, pacing):
        return _queued(desired, target_version, state, {**history, stable: n}, pacing, now)

    step = _Pass(policy, now, format_millis(now), desired, observed.get(desired, Observed()),
                 {**history, stable: n})
    state = _started(step, state, target_version)
    if controls.abort == desired:
        return _rolled_back(step, state, "aborted by request", EventReason.ROLLOUT_ABORTED, Reason.ROLLOUT_ABORTED)
    state = _promoted_on_request(step, state, controls)
    if controls.paused:
        return _paused(step, state)
    if state.phase == PAUSED:
        state = _resumed(step, state)
    _keep_canary(step, state)
    if policy.analysis and step.seen.analysis_ok is False:
        return _gate_failed(step, state)
    if state.phase == PROMOTING:
        return _promoting(step, state)
    return _progressing(step, state)


def _waits_in_queue(desired: str, state: State, observed: dict[str, Observed], controls: Controls,
                    pacing: Pacing) -> bool:
    """A new rollout waits for a slot, unless a person asked to promote or abort it, or its
    Deployment exists already (it was started, and the operator died before recording it:
    resuming beats deleting pods that may be loading)."""
    return (state.canary is None and not pacing.may_start and desired not in (controls.promote, controls.abort)
            and desired not in observed)


def _queued(desired: str, target_version: int | None, state: State, replicas: dict[str, int], pacing: Pacing,
            now: datetime) -> Decision:
    if state.phase == QUEUED and state.queued == desired:
        # Its place moves as others start; it is not rewritten for that, which would cost a write per waiting service each time one starts.
        return Decision(replicas, state, requeue_after=QUEUE_RECHECK_SECONDS, build_desired=False)
    message = (f"Revision {desired} is queued at position {pacing.position}: "
               f"at most {pacing.limit} rollouts run at once")
    new = replace(state, phase=QUEUED, queued=desired, queued_at=format_millis(now), target_version=target_version,
                  failed=None, stalled=False, message=message)
    return Decision(replicas, new, [Event(EventType.NORMAL, EventReason.ROLLOUT_QUEUED, message)],
                    requeue_after=QUEUE_RECHECK_SECONDS, build_desired=False)


def _at_stable(desired: str, target_version: int | None, state: State, replicas: dict[str, int]) -> Decision:
    """The spec asks for the stable revision: a rollout in progress is cancelled, a rolled-back
    one forgotten, a queued one dropped."""
    if state.phase == QUEUED:
        new = replace(state, phase=IDLE, queued=None, queued_at=None, target_version=target_version,
                      message=f"Revision {desired} is stable; the queued rollout of {state.queued} was dropped")
        return Decision(replicas, new)
    if state.canary is not None:
        new = replace(state, phase=IDLE, canary=None, step=None, weight=None, canary_restarts=0, stalled=False,
                      message=f"Rollout of {state.canary} cancelled: the spec returned to revision {desired}",
                      target_version=target_version)
        return Decision(replicas, new, [Event(EventType.NORMAL, EventReason.ROLLOUT_CANCELLED, new.message)])
    if state.phase == ROLLED_BACK:
        # The failed revision is dropped and the InferenceService is no longer Degraded.
        new = replace(state, phase=IDLE, failed=None, target_version=target_version, stalled=False,
                      message=f"Revision {desired} is stable; the spec no longer asks for {state.failed}")
        return Decision(replicas, new)
    return Decision(replicas, replace(state, target_version=target_version, **_unstalled(state, desired)))


def _unstalled(state: State, stable: str) -> dict[str, Any]:
    """A stalled rollout is over once the spec asks for the stable revision again."""
    return {"stalled": False, "message": f"Revision {stable} is stable"} if state.stalled else {}


def _started(step: _Pass, state: State, target_version: int | None) -> State:
    """A new desired revision starts a rollout (superseding one in progress); a rollout in
    progress carries on, not stalled until this pass says so."""
    if state.canary == step.canary:
        return replace(state, stalled=False)
    if state.canary is not None:
        step.events.append(Event(EventType.NORMAL, EventReason.ROLLOUT_SUPERSEDED,
                                 f"Rollout of {state.canary} superseded by revision {step.canary}"))
    # Going back to a revision that is still kept (it served before, and its Deployment is
    # there at zero) skips the canary steps: scaled up, then the other scaled down.
    fast = step.canary in state.history
    first = step.policy.steps[0] if step.policy.steps and not fast else None
    state = replace(
        state, phase=PROGRESSING if first else PROMOTING, canary=step.canary, target_version=target_version,
        step=0 if first else None, weight=first.weight if first else 100, started_at=step.stamp,
        step_started_at=step.stamp, canary_restarts=step.seen.restarts, failed=None, stalled=False,
        queued=None, queued_at=None,
        message=f"Returning to revision {step.canary} from history, without canary steps" if fast
        else f"Rolling out revision {step.canary}",
    )
    version = f" (model version {target_version})" if target_version else ""
    step.events.append(Event(EventType.NORMAL, EventReason.ROLLOUT_STARTED,
                             f"Returning to revision {step.canary}{version} from history, without canary steps, "
                             f"from stable revision {state.stable}" if fast else
                             f"Started rolling out revision {step.canary}{version} over stable revision {state.stable}"))
    return state


def _rolled_back(step: _Pass, state: State, reason: str, event_reason: str, cause: Reason) -> Decision:
    new = replace(state, phase=ROLLED_BACK, canary=None, step=None, weight=None, canary_restarts=0,
                  failed=step.canary, stalled=False, reason=cause,
                  message=f"Rolled back revision {step.canary}: {reason}")
    # The failed revision stays, at zero, so its pods' history can be inspected.
    step.replicas[step.canary] = 0
    step.events.append(Event(EventType.WARNING, event_reason, new.message))
    return step.decision(new)


def _promoted_on_request(step: _Pass, state: State, controls: Controls) -> State:
    promoted = state.step is None and state.weight == 100  # Promoting, or paused while promoting
    if controls.promote != step.canary or promoted:
        return state
    state = replace(state, phase=PROMOTING, step=None, weight=100, step_started_at=step.stamp,
                    canary_restarts=step.seen.restarts, message=f"Promoting revision {step.canary} on request")
    step.events.append(Event(EventType.NORMAL, EventReason.ROLLOUT_PROMOTED, state.message))
    return state


def _paused(step: _Pass, state: State) -> Decision:
    if state.phase != PAUSED:
        step.events.append(Event(EventType.NORMAL, EventReason.ROLLOUT_PAUSED, f"Paused the rollout of revision {step.canary}"))
    state = replace(state, phase=PAUSED)
    state = replace(state, message=describe(state, step.policy, step.seen))
    _keep_canary(step, state)
    return step.decision(state)


def _resumed(step: _Pass, state: State) -> State:
    """The step starts over: its pause counts from the resume."""
    state = replace(state, phase=PROMOTING if state.step is None else PROGRESSING,
                    step_started_at=step.stamp, canary_restarts=step.seen.restarts,
                    message=f"Resumed the rollout of revision {step.canary}")
    step.events.append(Event(EventType.NORMAL, EventReason.ROLLOUT_RESUMED, state.message))
    return state


def _gate_failed(step: _Pass, state: State) -> Decision:
    if step.policy.auto_rollback:
        return _rolled_back(step, state, step.seen.analysis_message, EventReason.ROLLOUT_ROLLED_BACK,
                            Reason.METRIC_CHECK_FAILED)
    return step.decision(replace(state, stalled=True, reason=Reason.METRIC_CHECK_FAILED,
                                 message=f"Stalled: {step.seen.analysis_message}"))


def _healthy_canary(step: _Pass, state: State) -> bool:
    expected = _canary_target(state, step.policy.replicas)
    return _healthy(step.seen, expected, state.canary_restarts) and (
        not step.policy.analysis or step.seen.analysis_ok is True)


def _promoting(step: _Pass, state: State) -> Decision:
    """All N canary pods must be ready before the old revision goes to zero."""
    if not _healthy_canary(step, state):
        return _waiting(step, state)
    retired = state.stable
    n = step.policy.replicas
    new = replace(state, phase=SUCCEEDED, stable=step.canary, canary=None, step=None, weight=None,
                  canary_restarts=0, history=_keep_history(state, retired, step.canary, step.policy.history_limit - 1),
                  message=f"Revision {step.canary} is stable")
    step.events.append(Event(EventType.NORMAL, EventReason.ROLLOUT_SUCCEEDED,
                             f"Promoted revision {step.canary}; revision {retired} scaled to zero"))
    return Decision({**{r: 0 for r in new.history}, step.canary: n}, new, step.events)


def _start_promotion(step: _Pass, state: State) -> State:
    state = replace(state, phase=PROMOTING, step=None, weight=100, step_started_at=step.stamp,
                    canary_restarts=step.seen.restarts, message=f"Promoting revision {step.canary}")
    step.events.append(Event(EventType.NORMAL, EventReason.ROLLOUT_PROMOTING, state.message))
    step.replicas[step.canary] = step.policy.replicas
    return state


def _progressing(step: _Pass, state: State) -> Decision:
    """A weighted step: held for its pause once every canary pod is ready, then the next."""
    steps = step.policy.steps
    index = state.step or 0
    if index >= len(steps):
        # The spec lost steps during the rollout: the remaining ones are gone, so promote.
        return step.decision(_start_promotion(step, state), requeue_after=0.0)
    if not _healthy_canary(step, state):
        return _waiting(step, state)
    elapsed = _elapsed(state.step_started_at, step.now)
    pause = steps[index].pause_seconds
    if elapsed < pause:
        state = replace(state, message=describe(state, step.policy, step.seen))
        return step.decision(state, requeue_after=max(0.0, pause - elapsed))
    if index + 1 >= len(steps):
        return step.decision(_start_promotion(step, state), requeue_after=0.0)
    nxt = steps[index + 1]
    state = replace(state, step=index + 1, weight=nxt.weight, step_started_at=step.stamp,
                    canary_restarts=step.seen.restarts)
    step.events.append(Event(EventType.NORMAL, EventReason.ROLLOUT_STEP_ADVANCED,
                             f"{_capitalized(step_name(index + 1, len(steps)))}: weight {nxt.weight}%"))
    state = replace(state, message=describe(state, step.policy, step.seen))
    _keep_canary(step, state)
    return step.decision(state, requeue_after=0.0)


def _waiting(step: _Pass, state: State) -> Decision:
    """The canary is not healthy yet: wait until the progress deadline, then roll back."""
    expected = _canary_target(state, step.policy.replicas)
    elapsed = _elapsed(state.step_started_at, step.now)
    if step.seen.load_error and step.policy.auto_rollback:
        # TF Serving said the version cannot load: waiting for the deadline changes nothing.
        return _rolled_back(step, state, failure_reason(step.seen, expected), EventReason.ROLLOUT_ROLLED_BACK,
                            Reason.MODEL_LOAD_FAILED)
    if step.seen.preflight_error and step.policy.auto_rollback:
        # The version answers its golden requests wrong (or not at all): it must take no traffic.
        return _rolled_back(step, state, failure_reason(step.seen, expected), EventReason.ROLLOUT_ROLLED_BACK,
                            Reason.PREFLIGHT_FAILED)
    if elapsed >= step.policy.deadline_seconds:
        reason = failure_reason(step.seen, expected)
        if step.policy.auto_rollback:
            return _rolled_back(step, state, reason, EventReason.ROLLOUT_ROLLED_BACK, Reason.PROGRESS_DEADLINE_EXCEEDED)
        return step.decision(replace(state, stalled=True, reason=Reason.PROGRESS_DEADLINE_EXCEEDED,
                                     message=f"Stalled past its deadline: {reason}"))
    if _source_failed(step) and step.seen.analysis_message not in state.message:
        # Named at once, not only when the deadline rolls the canary back.
        step.events.append(Event(EventType.WARNING, EventReason.METRIC_CHECK_INCONCLUSIVE,
                                 f"The metric check of revision {step.canary} could not run, so the step holds: "
                                 f"{step.seen.analysis_message}"))
    state = replace(state, message=describe(state, step.policy, step.seen))
    return step.decision(state, requeue_after=max(0.0, step.policy.deadline_seconds - elapsed))


def _source_failed(step: _Pass) -> bool:
    seen = step.seen
    return step.policy.analysis and seen.analysis_ok is None and seen.analysis_source_failed


def decide_rolling(
    *,
    desired: str,
    target_version: int | None,
    policy: Policy,
    state: State,
    observed: dict[str, Observed],
    now: datetime,
    pacing: Pacing = UNPACED,
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
                                              phase=SUCCEEDED if state.phase in ACTIVE_PHASES else state.phase,
                                              **_unstalled(state, desired)))
    events: list[Event] = []
    if _waits_in_queue(desired, state, observed, Controls(), pacing) and state.stable in observed:
        # The one Deployment keeps the stable revision's template until a slot frees.
        return _queued(desired, target_version, state, {state.stable: n}, pacing, now)
    if state.canary != desired:
        state = replace(state, phase=PROGRESSING, canary=desired, target_version=target_version,
                        queued=None, queued_at=None,
                        started_at=format_millis(now), step_started_at=format_millis(now),
                        step=None, weight=None,
                        failed=None)
        events.append(Event(EventType.NORMAL, EventReason.ROLLOUT_STARTED, f"Started a rolling update to revision {desired}"))
    complete = seen.current and seen.updated >= n and seen.ready >= n and seen.pods <= n
    if complete:
        retired = state.stable
        new = replace(state, phase=SUCCEEDED, stable=desired, canary=None, stalled=False,
                      history=_keep_history(state, retired, desired, policy.history_limit - 1),
                      message=f"Revision {desired} is stable")
        return Decision({desired: n}, new, [*events, Event(EventType.NORMAL, EventReason.ROLLOUT_SUCCEEDED,
                                                           f"Rolled revision {desired} out to {n} pods")])
    if seen.deadline_exceeded:
        state = replace(state, stalled=True, reason=Reason.PROGRESS_DEADLINE_EXCEEDED,
                        message=f"Stalled past its deadline: {failure_reason(seen, n)}")
    else:
        state = replace(state, stalled=False)
        state = replace(state, message=describe(state, policy, seen, rolling=True))
    # Coming from Canary, the stable revision has a Deployment of its own: it keeps its pods
    # until the rolled Deployment is complete.
    return Decision({desired: n, **({state.stable: n} if state.stable else {})}, state, events)


def _keep_canary(step: _Pass, state: State) -> None:
    """The canary's replicas while its rollout goes on: the step's target, unless the canary
    already has exactly the next step's. That is what a step leaves behind when the status
    write recording it was lost or the operator died right after scaling: shrinking the canary
    then would delete pods that are loading or serving, only to create them again. Any other
    count (the replica count or a step's weight changed) gives way to the step's target."""
    n = step.policy.replicas
    target = _canary_target(state, n)
    index = state.step if state.step is not None else len(step.policy.steps)
    following = step.policy.steps[index + 1] if index + 1 < len(step.policy.steps) else None
    next_target = canary_replicas(n, following.weight) if following is not None else n
    step.replicas[step.canary] = next_target if step.seen.replicas == next_target > target else target


def _canary_target(state: State, replicas: int) -> int:
    if state.phase == PROMOTING or state.weight is None or state.weight >= 100:
        return replicas
    return canary_replicas(replicas, state.weight)


# ---------------------------------------------------------------------------- messages


def step_name(index: int, steps: int) -> str:
    """A step as messages name it: counted from 1 for people, with its index in
    spec.rollout.steps, which is what status.rollout.step holds (from 0)."""
    return f"step {index + 1} of {steps} (steps[{index}])"


def _pods(n: int) -> str:
    return f"{n} pod" if n == 1 else f"{n} pods"


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _trouble_note(seen: Observed) -> str:
    trouble = pod_trouble(seen)
    if trouble is None:
        return ""
    return f"; {trouble.text}" if not trouble.pods else f"; {_pods(trouble.pods)} {trouble.text}"


def _waiting_on(state: State, policy: Policy, seen: Observed, expected: int) -> tuple[str, bool]:
    """What a live rollout waits for, from one observation of its canary: its pods (with the
    most telling trouble), restarts, the metric check; and whether nothing holds it."""
    if seen.ready < expected or seen.replicas < expected:
        text = f"waiting for canary pods, {seen.ready} of {expected} ready{_trouble_note(seen)}"
    elif not (seen.current and seen.updated >= expected):
        text = f"{expected} of {expected} canary pods ready, waiting for their Deployment to complete"
    elif seen.restarts > state.canary_restarts:
        restarts = seen.restarts - state.canary_restarts
        return (f"{expected} of {expected} canary pods ready, held: canary containers restarted {restarts} "
                f"{'time' if restarts == 1 else 'times'} during this step"), False
    else:
        text = f"{expected} of {expected} canary pods ready"
        if not policy.analysis or seen.analysis_ok is True:
            return text, True
    if policy.analysis and seen.analysis_ok is None:
        text += ", waiting for the metric check" + (f": {seen.analysis_message}" if seen.analysis_message else "")
    return text, False


def describe(state: State, policy: Policy, seen: Observed, *, rolling: bool = False) -> str:
    """status.rollout.message of a rollout in progress (Progressing, Paused, Promoting), as a
    pure function of the state and one observation of the revision being rolled out. The
    engine words its decisions with it, and the status words it again from the observation
    its figures (readyReplicas, the conditions) come from, so the two agree."""
    if rolling:
        text = f"Rolling update: {seen.updated} of {policy.replicas} pods updated, {seen.ready} ready"
        return text + (_trouble_note(seen) if seen.ready < policy.replicas else "")
    expected = _canary_target(state, policy.replicas)
    waiting, clear = _waiting_on(state, policy, seen, expected)
    steps = len(policy.steps)
    if state.step is None or state.step >= steps:
        where = f"the promotion of revision {state.canary}"
        return f"Paused at {where}: {waiting}" if state.phase == PAUSED else f"Promoting revision {state.canary}: {waiting}"
    where = f"{step_name(state.step, steps)}, weight {state.weight}%"
    if state.phase == PAUSED:
        return f"Paused at {where}: {waiting}"
    return f"{_capitalized(where)}: {waiting}{', holding for the pause' if clear else ''}"


def with_check(observed: dict[str, Observed], canary: str | None, check: Result | None) -> dict[str, Observed]:
    """The observed revisions with the metric check's result on the canary (None: no check ran)."""
    if check is None or canary is None or canary not in observed:
        return observed
    return {**observed, canary: replace(observed[canary], analysis_ok=check.ok, analysis_message=check.message,
                                        analysis_source_failed=check.source_failed)}
