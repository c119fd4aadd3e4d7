"""InferenceService status as a pure function of the model, the rollout state and the
observed revisions.

The caller passes the time; a condition's lastTransitionTime changes only when its status
flips, so computing the status twice from the same observations gives the same result and
the reconciler writes nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from tfleet.api.model import InferenceService
from tfleet.api.vocabulary import ConditionType, Reason
from tfleet.desired import children as builders
from tfleet.engine import analysis, rollout

# Condition types and reasons, by the short names the status code reads.
READY, MODEL_AVAILABLE = ConditionType.READY, ConditionType.MODEL_AVAILABLE
PROGRESSING, DEGRADED = ConditionType.PROGRESSING, ConditionType.DEGRADED
RECONCILING, STALLED, ROLLED_OUT = ConditionType.RECONCILING, ConditionType.STALLED, ConditionType.ROLLED_OUT
INVALID_SPEC = Reason.INVALID_SPEC


@dataclass(frozen=True)
class _Cond:
    type: ConditionType
    status: bool
    reason: Reason
    message: str


def endpoints(isvc: InferenceService) -> dict[str, str]:
    server = isvc.spec.server
    host = f"{isvc.name}.{isvc.namespace}.svc"
    result = {
        "grpc": f"{host}:{server.grpc_port}",
        "rest": f"http://{host}:{server.rest_port}/v1/models/{isvc.model_name}",
    }
    if isvc.spec.service.headless:
        result["grpcHeadless"] = (
            f"dns:///{builders.headless_service_name(isvc)}.{isvc.namespace}.svc:{server.grpc_port}"
        )
    return result


def _pod_problems(revisions: dict[str, rollout.Observed]) -> str:
    """The most telling reason why pods are not ready, for a condition message: the first
    revision with the most telling trouble, in `rollout.pod_trouble`'s priority."""
    troubles = [t for t in (rollout.pod_trouble(seen) for seen in revisions.values()) if t is not None]
    if not troubles:
        return ""
    worst = min(troubles, key=lambda t: t.rank)
    return f"; {worst.text}" if not worst.pods else f"; {_pods(worst.pods)} {worst.text}"


def _pods(n: int) -> str:
    return f"{n} pod" if n == 1 else f"{n} pods"


def _served(model: str, revisions: dict[str, rollout.Observed]) -> str:
    """The model and the versions the ready pods serve, counted per version: "model m
    version 3", or "model m: version 3 on 4 pods, version 4 on 1 pod" during a rollout."""
    by_version: Counter[int | None] = Counter()
    for seen in revisions.values():
        if seen.ready:
            by_version[seen.version] += seen.ready
    if len(by_version) <= 1:
        version = next(iter(by_version), None)
        return f"model {model}" + (f" version {version}" if version is not None else "")
    ordered = sorted(by_version.items(), key=lambda item: (item[0] is None, item[0] or 0))
    parts = [f"{'version ' + str(v) if v is not None else 'the latest version'} on {_pods(n)}" for v, n in ordered]
    return f"model {model}: {', '.join(parts)}"


def serving_versions(revisions: dict[str, rollout.Observed]) -> list[dict[str, int]]:
    """Each model version the ready pods serve, with its pod count, while more than one is
    served (during a rollout, or while unpinned pods pick a new version up one by one); empty
    otherwise, when servingVersion says it all. A pinned revision serves its label's version;
    an unpinned one what its pods' health bridges report."""
    by_version: Counter[int] = Counter()
    for seen in revisions.values():
        if seen.served:
            by_version.update(dict(seen.served))
        elif seen.ready and seen.version is not None:
            by_version[seen.version] += seen.ready
    if len(by_version) < 2:
        return []
    return [{"version": v, "pods": n} for v, n in sorted(by_version.items())]


# Why a rollout stops, as status.rollout.reason records it; a status written before that
# field existed reads as the deadline.
_CAUSES = (Reason.PROGRESS_DEADLINE_EXCEEDED, Reason.MODEL_LOAD_FAILED, Reason.METRIC_CHECK_FAILED,
           Reason.PREFLIGHT_FAILED, Reason.ROLLOUT_ABORTED)


def _stopped_reasons(state: rollout.State) -> tuple[Reason, Reason]:
    """(Progressing's reason, Degraded's reason) of a rolled-back or stalled rollout: the cause,
    and for Degraded, RolledBack once the canary is gone (unless someone aborted it)."""
    cause = Reason(state.reason) if state.reason in _CAUSES else Reason.PROGRESS_DEADLINE_EXCEEDED
    if state.phase != rollout.ROLLED_BACK or cause == Reason.ROLLOUT_ABORTED:
        return cause, cause
    return cause, Reason.ROLLED_BACK


def _conditions(
    isvc: InferenceService, revisions: dict[str, rollout.Observed], state: rollout.State
) -> list[_Cond]:
    model = isvc.model_name
    desired = isvc.replicas
    ready = sum(r.ready for r in revisions.values())
    stable = revisions.get(state.stable or "", rollout.Observed())
    problems = _pod_problems(revisions)

    if desired == 0:
        ready_cond = _Cond(READY, True, Reason.SCALED_TO_ZERO, "Scaled to zero replicas")
    elif ready >= desired:
        count = f"{ready} of {desired} pods are" if ready == desired else f"{ready} pods ({desired} wanted) are"
        ready_cond = _Cond(READY, True, Reason.AVAILABLE, f"{count} ready and serve {_served(model, revisions)}")
    else:
        ready_cond = _Cond(READY, False, Reason.MINIMUM_REPLICAS_UNAVAILABLE, f"{ready} of {desired} pods are ready{problems}")

    if ready > 0:
        available = _Cond(MODEL_AVAILABLE, True, Reason.MODEL_LOADED, f"{_pods(ready)} {'serves' if ready == 1 else 'serve'} {_served(model, revisions)}")
    elif desired == 0:
        available = _Cond(MODEL_AVAILABLE, False, Reason.SCALED_TO_ZERO, "Scaled to zero replicas")
    else:
        available = _Cond(MODEL_AVAILABLE, False, Reason.NO_READY_REPLICAS, f"No pod serves model {model} yet{problems}")

    stable_complete = stable.current and stable.updated >= desired and stable.ready >= desired
    if state.stopped:
        progressing_reason, degraded_reason = _stopped_reasons(state)
        progressing = _Cond(PROGRESSING, False, progressing_reason, state.message)
        degraded = _Cond(DEGRADED, True, degraded_reason, state.message)
    elif stable.deadline_exceeded and state.phase not in rollout.ACTIVE_PHASES:
        message = f"Deployment of revision {state.stable} exceeded its progress deadline{problems}"
        progressing = _Cond(PROGRESSING, False, Reason.PROGRESS_DEADLINE_EXCEEDED, message)
        degraded = _Cond(DEGRADED, True, Reason.PROGRESS_DEADLINE_EXCEEDED, message)
    else:
        if state.phase == rollout.PAUSED:
            progressing = _Cond(PROGRESSING, True, Reason.ROLLOUT_PAUSED, state.message)
        elif state.phase == rollout.QUEUED:
            progressing = _Cond(PROGRESSING, True, Reason.ROLLOUT_QUEUED, state.message)
        elif state.phase in rollout.ACTIVE_PHASES:
            progressing = _Cond(PROGRESSING, True, Reason.ROLLOUT_IN_PROGRESS, state.message)
        elif stable_complete or desired == 0:
            progressing = _Cond(PROGRESSING, True, Reason.NEW_REPLICA_SET_AVAILABLE, f"Revision {state.stable} has rolled out")
        else:
            progressing = _Cond(PROGRESSING, True, Reason.REPLICA_SET_UPDATED, f"Revision {state.stable} is rolling out")
        degraded = _Cond(DEGRADED, False, Reason.AS_EXPECTED, "No problems observed")
    return [ready_cond, available, progressing, degraded,
            *_gitops_conditions(state, stable_complete or desired == 0, progressing, degraded, desired)]


def _gitops_conditions(state: rollout.State, stable_complete: bool, progressing: _Cond, degraded: _Cond,
                       desired: int) -> list[_Cond]:
    """Reconciling, Stalled and RolledOut, from the same facts as Progressing and Degraded.

    kstatus (sigs.k8s.io/cli-utils pkg/kstatus/status/generic.go, checkGenericProperties)
    reads the first of Reconciling=True (InProgress) and Stalled=True (Failed), before Ready:
    so a rollout in progress is InProgress although Ready stays True (capacity never drops),
    and a rolled-back or stalled one is Failed until the spec changes.
    """
    if degraded.status:  # rolled back, stalled past a deadline
        return [_Cond(RECONCILING, False, degraded.reason, "Nothing is rolled out until the spec changes"),
                _Cond(STALLED, True, degraded.reason, degraded.message),
                _Cond(ROLLED_OUT, False, degraded.reason, degraded.message)]
    stalled = _Cond(STALLED, False, Reason.AS_EXPECTED, "No problems observed")
    if state.phase in (*rollout.ACTIVE_PHASES, rollout.QUEUED):
        return [_Cond(RECONCILING, True, progressing.reason, progressing.message), stalled,
                _Cond(ROLLED_OUT, False, progressing.reason, progressing.message)]
    if not stable_complete:
        message = f"{progressing.message}: not every one of the {desired} pods is ready yet"
        return [_Cond(RECONCILING, True, Reason.REPLICAS_NOT_READY, message), stalled,
                _Cond(ROLLED_OUT, False, Reason.REPLICAS_NOT_READY, message)]
    message = f"Revision {state.stable} serves all {desired} replicas" if desired else "Scaled to zero replicas"
    return [_Cond(RECONCILING, False, Reason.RECONCILED, message), stalled,
            _Cond(ROLLED_OUT, True, Reason.REVISION_ROLLED_OUT, message)]


def _conditions_for_invalid(message: str, revisions: dict[str, rollout.Observed]) -> list[_Cond]:
    ready = sum(r.ready for r in revisions.values())
    return [
        _Cond(READY, False, INVALID_SPEC, message),
        _Cond(
            MODEL_AVAILABLE,
            ready > 0,
            Reason.MODEL_LOADED if ready > 0 else Reason.NO_READY_REPLICAS,
            f"{ready} pods keep serving the last valid spec" if ready > 0 else "No pod serves the model",
        ),
        _Cond(PROGRESSING, False, INVALID_SPEC, "The spec is invalid; nothing is rolled out until it is fixed"),
        _Cond(DEGRADED, True, INVALID_SPEC, message),
        _Cond(RECONCILING, False, INVALID_SPEC, "Nothing is rolled out until the spec is fixed"),
        _Cond(STALLED, True, INVALID_SPEC, message),
        _Cond(ROLLED_OUT, False, INVALID_SPEC, message),
    ]


def _merge_conditions(
    new: list[_Cond], previous: list[dict[str, Any]], generation: int, now: str
) -> list[dict[str, Any]]:
    before = {c.get("type"): c for c in previous}
    out = []
    for cond in new:
        status = "True" if cond.status else "False"
        old = before.get(cond.type)
        # lastTransitionTime records when the status flipped, not when the message changed.
        since = old["lastTransitionTime"] if old and old.get("status") == status and old.get("lastTransitionTime") else now
        out.append(
            {
                "type": cond.type,
                "status": status,
                "reason": cond.reason,
                "message": cond.message,
                "lastTransitionTime": since,
                "observedGeneration": generation,
            }
        )
    return out


def compute_status(
    *,
    isvc: InferenceService | None,
    generation: int,
    invalid_message: str | None,
    revisions: dict[str, rollout.Observed],
    state: rollout.State,
    previous: dict[str, Any] | None,
    now: str,
    check: analysis.Result | None = None,
) -> dict[str, Any]:
    """The whole status subresource. `isvc` is None when the spec is invalid. `check` is the
    metric check the rollout state was decided with."""
    previous = previous or {}
    replicas = sum(r.pods for r in revisions.values())
    ready = sum(r.ready for r in revisions.values())
    if isvc is None or invalid_message is not None:
        conds = _conditions_for_invalid(invalid_message or "invalid spec", revisions)
        status: dict[str, Any] = {k: v for k, v in previous.items() if k not in ("conditions", "observedGeneration")}
        desired = previous.get("ready", "0/0").split("/")[-1]
    else:
        state = _described(isvc, revisions, state, check)
        conds = _conditions(isvc, revisions, state)
        desired = str(isvc.replicas)
        status = {
            "model": isvc.model_name,
            "selector": builders.selector_string(isvc),
            "endpoints": endpoints(isvc),
            "rollout": state.to_status(),
        }
        kept = {state.canary, state.failed, state.stable}
        records = [r for r in analysis.record((previous.get("rollout") or {}).get("analysis"), check, now)
                   if r.get("revision") in kept]
        if records:
            status["rollout"]["analysis"] = records
        stable = revisions.get(state.stable or "")
        if stable is not None and stable.ready > 0 and stable.version is not None:
            status["servingVersion"] = stable.version
        elif stable is None and state.canary is not None and previous.get("servingVersion") is not None:
            # A rolling update relabels its one Deployment at once, but the old pods still
            # serve what they served until they are replaced.
            status["servingVersion"] = previous["servingVersion"]
        if served := serving_versions(revisions):
            status["servingVersions"] = served
    status.update(
        {
            "observedGeneration": generation,
            "replicas": replicas,
            "readyReplicas": ready,
            "ready": _ready_text(revisions, state, ready, desired),
            "reason": _headline(conds),
            "conditions": _merge_conditions(conds, previous.get("conditions") or [], generation, now),
        }
    )
    return status


def _described(isvc: InferenceService, revisions: dict[str, rollout.Observed], state: rollout.State,
               check: analysis.Result | None) -> rollout.State:
    """The state with the message of a rollout in progress worded from `revisions`, the
    observation the rest of the status is computed from (the decision may have seen an older
    one: the writes of the pass come in between)."""
    if state.canary is None or state.phase not in rollout.ACTIVE_PHASES or state.stopped:
        return state
    policy = rollout.policy_of(isvc)
    seen = rollout.with_check(revisions, state.canary, check if policy.analysis else None).get(
        state.canary, rollout.Observed())
    rolling = isvc.spec.rollout.strategy == "RollingUpdate"
    return replace(state, message=rollout.describe(state, policy, seen, rolling=rolling))


def _headline(conds: list[_Cond]) -> str:
    """The reason `kubectl get` shows: what stops the service, else what is under way, else Ready's."""
    by_type = {c.type: c for c in conds}
    for type_ in (STALLED, RECONCILING):
        if by_type[type_].status:
            return str(by_type[type_].reason)
    return str(by_type[READY].reason)


def _ready_text(revisions: dict[str, rollout.Observed], state: rollout.State, ready: int, desired: str) -> str:
    """"4/4" for the stable revision, with a canary's ready pods apart: "4/4 (+1 canary)"."""
    stable = revisions.get(state.stable or "")
    if stable is None:
        return f"{ready}/{desired}"
    canary = revisions.get(state.canary or "") if state.canary != state.stable else None
    text = f"{stable.ready}/{desired}"
    if canary is not None and canary.ready:
        text += f" (+{canary.ready} canary)"
    return text


def condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None
