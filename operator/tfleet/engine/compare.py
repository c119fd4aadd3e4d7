"""Desired against observed: whether a child must be written again. Pure.

A child is applied again when the hash tfleet stamped on it differs from the desired one
(a field tfleet stopped setting), or when a field tfleet sets has another value (someone
edited it). Fields only the cluster carries (defaults, other tools' annotations, an
autoscaler's replicas) are not drift.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal, InvalidOperation
from typing import Any

from tfleet.api.model import InferenceService
from tfleet.api.vocabulary import ANNOTATION_APPLIED
from tfleet.desired import children as builders

Manifest = dict[str, Any]


def applied_hash(manifest: Manifest) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def with_ownership(manifest: Manifest, isvc: InferenceService) -> Manifest:
    """The manifest as applied: owned by the InferenceService and stamped with its own hash,
    so that a field tfleet stops setting is noticed (a subset comparison alone would not)."""
    meta = manifest["metadata"]
    # Only the metadata is new: the rest is shared with `manifest`, which nobody changes
    # after this (a deep copy of every child was a tenth of a reconcile's CPU).
    return {**manifest, "metadata": {
        **meta,
        "annotations": {**(meta.get("annotations") or {}), ANNOTATION_APPLIED: applied_hash(manifest)},
        "ownerReferences": [builders.owner_reference(isvc)],
    }}


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


def _same_scalar(want: Any, have: Any, quantities: bool) -> bool:
    if isinstance(want, bool) or isinstance(have, bool):
        return want is have
    if type(want) is not type(have) and not (quantities and isinstance(have, (str, int))):
        return False
    if want == have:
        return True
    # The API server writes resource quantities in canonical form ("0.5" comes back as "500m").
    if quantities and isinstance(want, (str, int)) and isinstance(have, (str, int)) and not isinstance(want, bool):
        a, b = quantity_value(str(want)), quantity_value(str(have))
        return a is not None and a == b
    return False


def is_subset(want: Any, have: Any, quantities: bool = False) -> bool:
    """Whether every field of `want` is present in `have` with the same value.

    Fields that only `have` carries (server defaults, annotations of other tools, replicas
    set by an autoscaler on fields tfleet does not set) do not count as drift. Values under
    a `resources` key compare as quantities.
    """
    if isinstance(want, dict):
        return isinstance(have, dict) and all(
            k in have and is_subset(v, have[k], quantities or k == "resources") for k, v in want.items()
        )
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(
            is_subset(w, h, quantities) for w, h in zip(want, have, strict=True)
        )
    return _same_scalar(want, have, quantities)


def needs_apply(desired: Manifest, observed: Manifest | None) -> bool:
    if observed is None:
        return True
    annotations = (observed.get("metadata") or {}).get("annotations") or {}
    if annotations.get(ANNOTATION_APPLIED) != desired["metadata"]["annotations"][ANNOTATION_APPLIED]:
        return True
    comparable = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind")}
    return not is_subset(comparable, observed)


