"""The reconcile decision: desired state versus observed state, as a pure function.

`plan` takes an InferenceService object and the children observed in the cluster, and
returns what to write: children to apply, children to delete, the new status (only if it
changed) and the Events to post. It performs no I/O; `tfleet.operator` carries it out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from tfleet import builders, status
from tfleet.api import InferenceService, parse_object
from tfleet.schema import ValidationError

Manifest = dict[str, Any]
ChildKey = tuple[str, str]  # (kind, name)

ANNOTATION_APPLIED = "tfleet.dev/applied-hash"


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class Plan:
    apply: list[Manifest] = field(default_factory=list)
    delete: list[Manifest] = field(default_factory=list)
    status: dict[str, Any] | None = None
    events: list[Event] = field(default_factory=list)
    invalid: str | None = None

    @property
    def writes(self) -> int:
        return len(self.apply) + len(self.delete) + (self.status is not None)


def child_key(obj: Manifest) -> ChildKey:
    return obj["kind"], obj["metadata"]["name"]


def applied_hash(manifest: Manifest) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def with_ownership(manifest: Manifest, isvc: InferenceService) -> Manifest:
    """The manifest as applied: owned by the InferenceService and stamped with its own hash,
    so that a field tfleet stops setting is noticed (a subset comparison alone would not)."""
    out = json.loads(json.dumps(manifest))
    meta = out["metadata"]
    meta.setdefault("annotations", {})[ANNOTATION_APPLIED] = applied_hash(manifest)
    meta["ownerReferences"] = [builders.owner_reference(isvc)]
    return out


# --------------------------------------------------------------------------- comparison

_SUFFIXES = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}


def quantity_value(text: str) -> Decimal | None:
    """The numeric value of a Kubernetes quantity; None when `text` is not one."""
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if suffix and text.endswith(suffix):
            number = text[: -len(suffix)]
            break
    else:
        suffix, number = "", text
    try:
        return Decimal(number) * _SUFFIXES[suffix]
    except (InvalidOperation, ValueError):
        return None


def _same_scalar(want: Any, have: Any) -> bool:
    if want == have:
        return True
    # The API server writes quantities in canonical form ("0.5" comes back as "500m").
    if isinstance(want, (str, int)) and isinstance(have, (str, int)) and not isinstance(want, bool):
        a, b = quantity_value(str(want)), quantity_value(str(have))
        return a is not None and a == b
    return False


def is_subset(want: Any, have: Any) -> bool:
    """Whether every field of `want` is present in `have` with the same value.

    Fields that only `have` carries (server defaults, annotations of other tools, replicas
    set by an autoscaler on fields tfleet does not set) do not count as drift.
    """
    if isinstance(want, dict):
        return isinstance(have, dict) and all(k in have and is_subset(v, have[k]) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(
            is_subset(w, h) for w, h in zip(want, have, strict=True)
        )
    return _same_scalar(want, have)


def needs_apply(desired: Manifest, observed: Manifest | None) -> bool:
    if observed is None:
        return True
    annotations = (observed.get("metadata") or {}).get("annotations") or {}
    if annotations.get(ANNOTATION_APPLIED) != desired["metadata"]["annotations"][ANNOTATION_APPLIED]:
        return True
    comparable = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind")}
    return not is_subset(comparable, observed)


# --------------------------------------------------------------------------- plan


def _is_owned_by(obj: Manifest, uid: str) -> bool:
    return any(ref.get("uid") == uid and ref.get("controller") for ref in obj["metadata"].get("ownerReferences") or [])


def _describe(changes: list[tuple[str, Manifest]]) -> str:
    return ", ".join(f"{verb} {m['kind']} {m['metadata']['name']}" for verb, m in changes)


def parse(body: Manifest) -> tuple[InferenceService | None, str | None]:
    """The typed InferenceService, or None and the message naming every invalid field."""
    try:
        return parse_object(body), None
    except ValidationError as exc:
        return None, "; ".join(str(e) for e in exc.errors)


def plan_children(body: Manifest, children: dict[ChildKey, Manifest]) -> Plan:
    """Children to apply and delete, and the Event describing them."""
    result = Plan()
    isvc, result.invalid = parse(body)
    if isvc is None:
        # Existing children keep serving the last valid spec.
        return result
    owned = owned_children(body, children)
    desired = [with_ownership(m, isvc) for m in builders.build_children(isvc)]
    desired_keys = {child_key(m) for m in desired}
    changes: list[tuple[str, Manifest]] = []
    for manifest in desired:
        observed = owned.get(child_key(manifest))
        if needs_apply(manifest, observed):
            result.apply.append(manifest)
            changes.append(("Created" if observed is None else "Updated", manifest))
    for key, obj in sorted(owned.items()):
        if key not in desired_keys:
            result.delete.append(obj)
            changes.append(("Deleted", obj))
    if changes:
        # One Event per reconcile keeps the API writes per change constant.
        reason = "ChildrenChanged" if len(changes) > 1 else changes[0][0]
        result.events.append(Event("Normal", reason, _describe(changes)))
    return result


def owned_children(body: Manifest, children: dict[ChildKey, Manifest]) -> dict[ChildKey, Manifest]:
    uid = (body.get("metadata") or {}).get("uid", "")
    return {k: v for k, v in children.items() if _is_owned_by(v, uid)}


def plan_status(body: Manifest, children: dict[ChildKey, Manifest], now: str, rejected: str | None = None) -> Plan:
    """The new status, only if it differs from the current one, and the Events it calls for.

    `rejected` is the API server's refusal of a child, which makes the spec as invalid as a
    rule the schema could check.
    """
    meta = body.get("metadata") or {}
    name = meta.get("name", "")
    previous = body.get("status") or {}
    isvc, invalid = parse(body)
    if rejected is not None:
        isvc, invalid = None, rejected
    result = Plan(invalid=invalid)
    new_status = status.compute_status(
        isvc=isvc,
        name=name,
        namespace=meta.get("namespace", ""),
        generation=int(meta.get("generation") or 0),
        invalid_message=invalid,
        observed=status.Observed(deployment=owned_children(body, children).get(("Deployment", name))),
        previous=previous,
        now=now,
    )
    if new_status == previous:
        return result
    result.status = new_status
    old_ready = status.condition(previous, status.READY) or {}
    new_ready = status.condition(new_status, status.READY) or {}
    if invalid is not None and old_ready.get("message") != invalid:
        result.events.append(Event("Warning", status.INVALID_SPEC, invalid))
    elif old_ready.get("status") != new_ready.get("status") and new_ready.get("status") == "True":
        result.events.append(Event("Normal", "Ready", new_ready["message"]))
    return result
