"""A line-by-line Python port of docs/argocd-health.lua, for machines without a Lua runtime.

Both are run on the same table of cases (tests/packaging/test_argocd_health.py); keep them
in step.
"""

from __future__ import annotations

from typing import Any


def _condition(status: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    if status is None or status.get("conditions") is None:
        return None
    for c in status["conditions"]:
        if c.get("type") == type_:
            return c  # type: ignore[no-any-return]
    return None


def _text(c: dict[str, Any] | None, fallback: str) -> str:
    if c is not None and c.get("message"):
        return str(c["message"])
    return fallback


def _rollout_message(status: dict[str, Any], fallback: str) -> str:
    message = status["rollout"].get("message")
    return str(message) if message else fallback


def health(obj: dict[str, Any]) -> tuple[str, str]:
    status = obj.get("status")
    generation = (obj.get("metadata") or {}).get("generation") or 0
    if status is None or status.get("observedGeneration") is None or status["observedGeneration"] < generation:
        return "Progressing", f"Waiting for the operator to observe generation {generation}"

    ready = _condition(status, "Ready")
    degraded = _condition(status, "Degraded")
    phase = (status.get("rollout") or {}).get("phase")

    if ready is not None and ready.get("status") == "False" and ready.get("reason") == "InvalidSpec":
        return "Degraded", _text(ready, "The spec is invalid")
    if phase == "RolledBack":
        return "Degraded", _rollout_message(status, "The rollout was rolled back")
    if degraded is not None and degraded.get("status") == "True":
        return "Degraded", _text(degraded, "Degraded")
    if phase == "Paused":
        return "Suspended", _rollout_message(status, "The rollout is paused")
    if phase in ("Progressing", "Promoting"):
        return "Progressing", _rollout_message(status, "A rollout is in progress")
    reconciling = _condition(status, "Reconciling")
    if reconciling is not None and reconciling.get("status") == "True":
        return "Progressing", _text(reconciling, "Reconciling")
    if ready is not None and ready.get("status") == "True":
        return "Healthy", _text(ready, "Ready")
    return "Progressing", _text(ready, "Waiting for the model servers to become ready")
