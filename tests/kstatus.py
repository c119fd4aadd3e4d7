"""kstatus's rules for a custom resource, as Flux, kpt and `kubectl apply --wait`-style tools
apply them to an InferenceService.

Modelled on sigs.k8s.io/cli-utils pkg/kstatus/status: status.go (Compute: the generic
properties first, then a Ready condition, else Current; checkReadyCondition: Ready True →
Current, Ready False or Unknown → InProgress) and generic.go (checkGenericProperties:
deletionTimestamp → Terminating; checkGeneration: a present status.observedGeneration that
differs from metadata.generation → InProgress; then the first condition, in list order, that
is Reconciling=True → InProgress or Stalled=True → Failed).
InferenceService has no type-specific (legacy) rules in kstatus.
"""

from __future__ import annotations

from typing import Any

CURRENT, IN_PROGRESS, FAILED, TERMINATING = "Current", "InProgress", "Failed", "Terminating"


def compute(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) of the object."""
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return TERMINATING, "Resource scheduled for deletion"
    status = obj.get("status") or {}
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    # An absent observedGeneration skips the check, as in checkGeneration.
    if generation is not None and observed is not None and observed != generation:
        return IN_PROGRESS, (f"{obj.get('kind')} generation is {generation}, "
                             f"but latest observed generation is {observed}")
    conditions = status.get("conditions") or []
    for cond in conditions:
        if cond.get("type") == "Reconciling" and cond.get("status") == "True":
            return IN_PROGRESS, str(cond.get("message") or "")
        if cond.get("type") == "Stalled" and cond.get("status") == "True":
            return FAILED, str(cond.get("message") or "")
    for cond in conditions:
        if cond.get("type") == "Ready":
            if cond.get("status") == "True":
                return CURRENT, "Resource is Ready"
            return IN_PROGRESS, str(cond.get("message") or "")
    return CURRENT, "Resource is current"
