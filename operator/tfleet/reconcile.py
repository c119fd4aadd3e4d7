"""The reconcile decision: desired state versus observed state, as pure functions.

`plan_children` takes an InferenceService, the children and pods observed in the cluster and
the time, asks the rollout engine how many pods each revision gets, and returns what to
write: children to apply, Deployments to scale, children to delete, and Events.
`plan_status` then computes the status from what the writes left behind. Neither performs
I/O; `tfleet.fleet` carries the plans out.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from tfleet import analysis, builders, rollout, status
from tfleet.api import InferenceService, parse_object
from tfleet.schema import ValidationError

Manifest = dict[str, Any]
ChildKey = tuple[str, str]  # (kind, name)

ANNOTATION_APPLIED = "tfleet.dev/applied-hash"
# Manual rollout control (see `tfleet rollout`): promote and abort name the canary revision,
# so a stale annotation never acts on a later rollout.
ANNOTATION_PAUSED = "tfleet.dev/rollout-paused"
ANNOTATION_PROMOTE = "tfleet.dev/rollout-promote"
ANNOTATION_ABORT = "tfleet.dev/rollout-abort"


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class Plan:
    apply: list[Manifest] = field(default_factory=list)
    scale: list[tuple[Manifest, int]] = field(default_factory=list)  # (observed Deployment, replicas)
    delete: list[Manifest] = field(default_factory=list)
    status: dict[str, Any] | None = None
    events: list[Event] = field(default_factory=list)
    invalid: str | None = None
    rollout: rollout.State | None = None
    requeue_after: float | None = None
    # Whether the new status must be written now, or may wait to be coalesced with the
    # changes that follow it (pods becoming ready one by one).
    status_urgent: bool = False

    @property
    def writes(self) -> int:
        return len(self.apply) + len(self.scale) + len(self.delete) + (self.status is not None)


@dataclass(frozen=True)
class PodSummary:
    """What the rollout engine needs to know about one serving pod."""

    revision: str
    name: str = ""
    ip: str = ""
    ready: bool = False
    restarts: int = 0
    crash_looping: bool = False
    image_pull_failing: bool = False
    unschedulable: str | None = None  # the scheduler's message
    load_error: str = ""  # TF Serving's own error, as the pod's health bridge reported it


def summarize_pod(pod: Manifest) -> PodSummary | None:
    meta = pod.get("metadata") or {}
    revision = (meta.get("labels") or {}).get(builders.LABEL_REVISION)
    if not revision or meta.get("deletionTimestamp"):
        return None
    st = pod.get("status") or {}
    conditions = {c.get("type"): c for c in st.get("conditions") or []}
    statuses = list(st.get("containerStatuses") or []) + list(st.get("initContainerStatuses") or [])
    waiting = [((c.get("state") or {}).get("waiting") or {}).get("reason", "") for c in statuses]
    scheduled = conditions.get("PodScheduled") or {}
    return PodSummary(
        revision=revision,
        name=meta.get("name", ""),
        ip=st.get("podIP") or "",
        ready=(conditions.get("Ready") or {}).get("status") == "True",
        restarts=sum(int(c.get("restartCount") or 0) for c in statuses),
        crash_looping="CrashLoopBackOff" in waiting,
        image_pull_failing=any(r in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName") for r in waiting),
        unschedulable=(scheduled.get("message") or "unschedulable")
        if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable" else None,
    )


def child_key(obj: Manifest) -> ChildKey:
    return obj["kind"], obj["metadata"]["name"]


def applied_hash(manifest: Manifest) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def with_ownership(manifest: Manifest, isvc: InferenceService) -> Manifest:
    """The manifest as applied: owned by the InferenceService and stamped with its own hash,
    so that a field tfleet stops setting is noticed (a subset comparison alone would not)."""
    out: Manifest = json.loads(json.dumps(manifest))
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


def owned_children(body: Manifest, children: dict[ChildKey, Manifest]) -> dict[ChildKey, Manifest]:
    uid = (body.get("metadata") or {}).get("uid", "")
    return {k: v for k, v in children.items() if _is_owned_by(v, uid)}


def _revision_of(obj: Manifest) -> str | None:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(builders.LABEL_REVISION)


def observe_revisions(
    deployments: list[Manifest], pods: list[PodSummary]
) -> dict[str, rollout.Observed]:
    """Per revision: its Deployment's counts and its pods' troubles."""
    by_revision: dict[str, rollout.Observed] = {}
    pods_by_revision: dict[str, list[PodSummary]] = {}
    for pod in pods:
        pods_by_revision.setdefault(pod.revision, []).append(pod)
    for dep in deployments:
        rev = _revision_of(dep)
        if rev is None:
            continue
        st = dep.get("status") or {}
        meta = dep.get("metadata") or {}
        conditions = {c.get("type"): c for c in st.get("conditions") or []}
        mine = pods_by_revision.get(rev, [])
        unschedulable = [p.unschedulable for p in mine if p.unschedulable]
        load_errors = [p.load_error for p in mine if p.load_error]
        version = (meta.get("labels") or {}).get(builders.LABEL_MODEL_VERSION)
        by_revision[rev] = rollout.Observed(
            replicas=int((dep.get("spec") or {}).get("replicas", 1)),
            ready=int(st.get("readyReplicas") or 0),
            updated=int(st.get("updatedReplicas") or 0),
            current=int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0),
            pods=int(st.get("replicas") or 0),
            restarts=sum(p.restarts for p in mine),
            crash_looping=sum(p.crash_looping for p in mine),
            image_pull_failing=sum(p.image_pull_failing for p in mine),
            unschedulable=len(unschedulable),
            unschedulable_message=Counter(unschedulable).most_common(1)[0][0] if unschedulable else "",
            version=int(version) if version and version.isdigit() else None,
            load_error=Counter(load_errors).most_common(1)[0][0] if load_errors else "",
            deadline_exceeded=(conditions.get("Progressing") or {}).get("reason") == "ProgressDeadlineExceeded",
        )
    return by_revision


def controls(body: Manifest) -> rollout.Controls:
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return rollout.Controls(
        paused=annotations.get(ANNOTATION_PAUSED, "").lower() == "true",
        promote=annotations.get(ANNOTATION_PROMOTE) or None,
        abort=annotations.get(ANNOTATION_ABORT) or None,
    )


def decide(isvc: InferenceService, body: Manifest, observed: dict[str, rollout.Observed],
           now: datetime, check: analysis.Result | None = None) -> tuple[builders.Revision, rollout.Decision]:
    spec = isvc.spec
    rev = builders.compute_revision(isvc)
    gated = spec.rollout.analysis is not None and spec.rollout.analysis.prometheus is not None
    policy = rollout.Policy(
        replicas=isvc.replicas,
        steps=rollout.steps_from_spec(spec.rollout.steps),
        deadline_seconds=spec.rollout.progress_deadline_seconds,
        auto_rollback=spec.rollout.auto_rollback,
        history_limit=spec.rollout.revision_history_limit + 1,
        analysis=gated,
    )
    state = rollout.State.from_status((body.get("status") or {}).get("rollout"))
    if gated and check is not None and state.canary in observed:
        observed = {**observed, state.canary: replace(observed[state.canary], analysis_ok=check.ok,
                                                      analysis_message=check.message)}
    if spec.rollout.strategy == "RollingUpdate":
        decision = rollout.decide_rolling(desired=rev.name, target_version=spec.model.version, policy=policy,
                                          state=state, observed=observed, now=now)
    else:
        decision = rollout.decide(desired=rev.name, target_version=spec.model.version, policy=policy,
                                  state=state, observed=observed, controls=controls(body), now=now)
    return rev, decision


def plan_children(body: Manifest, children: dict[ChildKey, Manifest], pods: list[PodSummary],
                  now: datetime, check: analysis.Result | None = None) -> Plan:
    """Children to apply, scale and delete; the rollout state they lead to; the Events."""
    result = Plan()
    isvc, result.invalid = parse(body)
    if isvc is None:
        # Existing children keep serving the last valid spec.
        return result
    owned = owned_children(body, children)
    deployments = [obj for (kind, _), obj in owned.items() if kind == "Deployment"]
    rev, decision = decide(isvc, body, observe_revisions(deployments, pods), now, check)
    result.rollout = decision.state
    result.requeue_after = decision.requeue_after
    result.events.extend(Event(e.type, e.reason, e.message) for e in decision.events)

    desired = [with_ownership(m, isvc) for m in builders.build_children(isvc, decision.replicas.get(rev.name, 0), rev)]
    desired_keys = {child_key(m) for m in desired}
    changes: list[tuple[str, Manifest]] = []
    for manifest in desired:
        observed = owned.get(child_key(manifest))
        if needs_apply(manifest, observed):
            result.apply.append(manifest)
            changes.append(("Created" if observed is None else "Updated", manifest))

    # Other revisions: scaled as the rollout engine says; their ConfigMaps kept while any
    # revision that may use them is kept; everything else is deleted.
    state = decision.state
    keep_config = set(decision.replicas) | set(state.history) | {r for r in (state.stable, state.canary) if r}
    for key, obj in sorted(owned.items()):
        if key in desired_keys:
            continue
        kind, rev_of = key[0], _revision_of(obj)
        if kind == "Deployment" and rev_of in decision.replicas:
            wanted = decision.replicas[rev_of]
            if int((obj.get("spec") or {}).get("replicas", 1)) != wanted:
                result.scale.append((obj, wanted))
            continue
        if kind == "ConfigMap" and rev_of in keep_config:
            continue
        result.delete.append(obj)
        changes.append(("Deleted", obj))
    if changes:
        # One Event per reconcile keeps the API writes per change constant.
        reason = "ChildrenChanged" if len(changes) > 1 else changes[0][0]
        result.events.append(Event("Normal", reason, _describe(changes)))
    return result


def plan_status(body: Manifest, children: dict[ChildKey, Manifest], pods: list[PodSummary], now: str,
                state: rollout.State | None, rejected: str | None = None) -> Plan:
    """The new status, only if it differs from the current one, and the Events it calls for.

    `state` is the rollout state `plan_children` decided. `rejected` is the API server's
    refusal of a child, which makes the spec as invalid as a rule the schema could check.
    """
    meta = body.get("metadata") or {}
    previous = body.get("status") or {}
    isvc, invalid = parse(body)
    if rejected is not None:
        isvc, invalid = None, rejected
    result = Plan(invalid=invalid)
    deployments = [obj for (kind, _), obj in owned_children(body, children).items() if kind == "Deployment"]
    new_status = status.compute_status(
        isvc=isvc,
        generation=int(meta.get("generation") or 0),
        invalid_message=invalid,
        revisions=observe_revisions(deployments, pods),
        state=state or rollout.State.from_status(previous.get("rollout")),
        previous=previous,
        now=now,
    )
    if new_status == previous:
        return result
    result.status = new_status
    result.status_urgent = invalid is not None or status_is_urgent(previous, new_status)
    old_ready = status.condition(previous, status.READY) or {}
    if invalid is not None and old_ready.get("message") != invalid:
        result.events.append(Event("Warning", status.INVALID_SPEC, invalid))
    return result


_ROLLOUT_KEYS = ("phase", "step", "canaryRevision", "stableRevision", "failedRevision")


def status_is_urgent(previous: dict[str, Any], new: dict[str, Any]) -> bool:
    """A status change that someone may be waiting for: the spec acknowledged, a condition
    flipped, a rollout moved. Counts and messages alone can wait a moment. The very first
    status waits for Ready (or a longer hold, see `tfleet.fleet`), so a new
    InferenceService is written once."""
    after = {c["type"]: c.get("status") for c in new.get("conditions") or []}
    if not previous:
        return after.get(status.READY) == "True"
    if previous.get("observedGeneration") != new.get("observedGeneration"):
        return True
    before = {c["type"]: c.get("status") for c in previous.get("conditions") or []}
    # The first pod serving is good news that Ready follows closely: it may wait with it.
    flipped = {t for t in set(before) | set(after) if before.get(t) != after.get(t)}
    if flipped - {status.MODEL_AVAILABLE} or after.get(status.MODEL_AVAILABLE) == "False":
        return True
    old_rollout, new_rollout = previous.get("rollout") or {}, new.get("rollout") or {}
    return any(old_rollout.get(k) != new_rollout.get(k) for k in _ROLLOUT_KEYS)
