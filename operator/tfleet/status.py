"""InferenceService status as a pure function of the model and the observed children.

The caller passes the time; a condition's lastTransitionTime changes only when its status
flips, so computing the status twice from the same observations gives the same result and
the reconciler writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tfleet import builders
from tfleet.api import InferenceService

# Condition types.
READY = "Ready"
MODEL_AVAILABLE = "ModelAvailable"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
CONDITION_ORDER = (READY, MODEL_AVAILABLE, PROGRESSING, DEGRADED)

# Reasons (PascalCase constants, as condition reasons must be).
INVALID_SPEC = "InvalidSpec"
AVAILABLE = "Available"
SCALED_TO_ZERO = "ScaledToZero"
MINIMUM_REPLICAS_UNAVAILABLE = "MinimumReplicasUnavailable"
UPDATING = "Updating"
MODEL_LOADED = "ModelLoaded"
NO_READY_REPLICAS = "NoReadyReplicas"
DEPLOYMENT_MISSING = "DeploymentMissing"
NEW_REPLICA_SET_AVAILABLE = "NewReplicaSetAvailable"
REPLICA_SET_UPDATED = "ReplicaSetUpdated"
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
AS_EXPECTED = "AsExpected"


@dataclass(frozen=True)
class Observed:
    """What the reconciler saw of the children that status depends on."""

    deployment: dict[str, Any] | None = None


@dataclass(frozen=True)
class _Cond:
    type: str
    status: bool
    reason: str
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


def _deployment_view(deployment: dict[str, Any] | None) -> dict[str, Any]:
    if deployment is None:
        return {}
    status = deployment.get("status") or {}
    spec = deployment.get("spec") or {}
    generation = (deployment.get("metadata") or {}).get("generation", 0)
    desired = spec.get("replicas", 1)
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    progressing = conditions.get("Progressing") or {}
    return {
        "desired": desired,
        "replicas": status.get("replicas", 0),
        "ready": status.get("readyReplicas", 0),
        "available": status.get("availableReplicas", 0),
        "updated": status.get("updatedReplicas", 0),
        "observed": status.get("observedGeneration", 0) >= generation,
        "deadline_exceeded": progressing.get("reason") == PROGRESS_DEADLINE_EXCEEDED,
        "progress_message": progressing.get("message", ""),
    }


def _conditions_for_valid(isvc: InferenceService, observed: Observed) -> list[_Cond]:
    view = _deployment_view(observed.deployment)
    model = isvc.model_name
    version = isvc.spec.model.version
    what = f"model {model}" + (f" version {version}" if version else "")
    desired = isvc.spec.replicas
    if not view:
        return [
            _Cond(READY, False, DEPLOYMENT_MISSING, f"Deployment {isvc.name} does not exist yet"),
            _Cond(MODEL_AVAILABLE, False, DEPLOYMENT_MISSING, f"No pods serve {what} yet"),
            _Cond(PROGRESSING, True, REPLICA_SET_UPDATED, f"Creating Deployment {isvc.name}"),
            _Cond(DEGRADED, False, AS_EXPECTED, "No problems observed"),
        ]
    complete = (
        view["observed"]
        and view["updated"] == view["desired"]
        and view["replicas"] == view["updated"]
        and view["available"] >= view["desired"]
    )
    ready_text = f"{view['ready']} of {desired} pods are ready"
    if desired == 0:
        ready = _Cond(READY, True, SCALED_TO_ZERO, "Scaled to zero replicas")
    elif complete and view["desired"] == desired:
        ready = _Cond(READY, True, AVAILABLE, f"{ready_text} and serve {what}")
    elif not complete:
        ready = _Cond(READY, False, UPDATING, f"Rolling out: {view['updated']} of {desired} pods updated, {ready_text}")
    else:
        ready = _Cond(READY, False, MINIMUM_REPLICAS_UNAVAILABLE, ready_text)

    if view["ready"] > 0:
        available = _Cond(MODEL_AVAILABLE, True, MODEL_LOADED, f"{view['ready']} pods serve model {model}")
    elif desired == 0:
        available = _Cond(MODEL_AVAILABLE, False, SCALED_TO_ZERO, "Scaled to zero replicas")
    else:
        available = _Cond(MODEL_AVAILABLE, False, NO_READY_REPLICAS, f"No pod serves model {model} yet")

    if view["deadline_exceeded"]:
        progressing = _Cond(PROGRESSING, False, PROGRESS_DEADLINE_EXCEEDED, view["progress_message"]
                            or f"Deployment {isvc.name} exceeded its progress deadline")
        degraded = _Cond(DEGRADED, True, PROGRESS_DEADLINE_EXCEEDED, progressing.message)
    else:
        if complete:
            progressing = _Cond(PROGRESSING, True, NEW_REPLICA_SET_AVAILABLE, f"Deployment {isvc.name} has rolled out")
        else:
            progressing = _Cond(PROGRESSING, True, REPLICA_SET_UPDATED, f"Deployment {isvc.name} is rolling out")
        degraded = _Cond(DEGRADED, False, AS_EXPECTED, "No problems observed")
    return [ready, available, progressing, degraded]


def _conditions_for_invalid(message: str, observed: Observed) -> list[_Cond]:
    view = _deployment_view(observed.deployment)
    serving = bool(view) and view["ready"] > 0
    return [
        _Cond(READY, False, INVALID_SPEC, message),
        _Cond(
            MODEL_AVAILABLE,
            serving,
            MODEL_LOADED if serving else NO_READY_REPLICAS,
            f"{view['ready']} pods keep serving the last valid spec" if serving else "No pod serves the model",
        ),
        _Cond(PROGRESSING, False, INVALID_SPEC, "The spec is invalid; nothing is rolled out until it is fixed"),
        _Cond(DEGRADED, True, INVALID_SPEC, message),
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
    name: str,
    namespace: str,
    generation: int,
    invalid_message: str | None,
    observed: Observed,
    previous: dict[str, Any] | None,
    now: str,
) -> dict[str, Any]:
    """The whole status subresource. `isvc` is None when the spec is invalid."""
    previous = previous or {}
    view = _deployment_view(observed.deployment)
    if isvc is None or invalid_message is not None:
        conds = _conditions_for_invalid(invalid_message or "invalid spec", observed)
        status: dict[str, Any] = {k: v for k, v in previous.items() if k not in ("conditions", "observedGeneration")}
    else:
        conds = _conditions_for_valid(isvc, observed)
        complete = conds[0].reason in (AVAILABLE, SCALED_TO_ZERO)
        status = {
            "selector": builders.selector_string(isvc),
            "endpoints": endpoints(isvc),
        }
        version = isvc.spec.model.version
        if complete and version is not None and view.get("ready", 0) > 0:
            status["servingVersion"] = version
        elif not complete and previous.get("servingVersion") is not None:
            # Pods of the previous revision still serve what they served.
            status["servingVersion"] = previous["servingVersion"]
        rollout: dict[str, Any] = {"phase": "Idle" if complete else "Progressing"}
        if version is not None:
            rollout["targetVersion"] = version
        status["rollout"] = rollout
    replicas = view.get("replicas", 0)
    ready = view.get("ready", 0)
    desired = isvc.spec.replicas if isvc else view.get("desired", 0)
    status.update(
        {
            "observedGeneration": generation,
            "replicas": replicas,
            "readyReplicas": ready,
            "ready": f"{ready}/{desired}",
            "conditions": _merge_conditions(conds, previous.get("conditions") or [], generation, now),
        }
    )
    return status


def condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None
