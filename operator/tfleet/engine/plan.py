"""The reconcile decision: desired state against observed state, as pure functions.

`plan_children` takes an InferenceService, the children and pods observed in the cluster and
the time, asks the rollout engine how many pods each revision gets, and returns a
`ChildPlan`: children to apply, Deployments to scale, children to delete, and Events.
`plan_status` then computes the status from what the writes left behind: a `StatusPlan`.
Neither performs I/O; `tfleet.runtime.executor` carries the plans out.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tfleet.api.defaults import BUILT_IN, Defaults
from tfleet.api.model import InferenceService, parse_object
from tfleet.api.schema import ValidationError
from tfleet.api.vocabulary import (
    ANNOTATION_REVISION_SPEC,
    LABEL_REVISION,
    ConditionType,
    EventReason,
    EventType,
)
from tfleet.desired import children as builders
from tfleet.desired import defaulting, health_wiring
from tfleet.engine import analysis, rollout, status
from tfleet.engine.compare import (
    applied_hash,
    is_subset,
    needs_apply,
    quantity_value,
    with_ownership,
)
from tfleet.engine.observe import (
    ChildKey,
    PodSummary,
    child_key,
    controls,
    observe_revisions,
    owned_children,
    revision_of,
    startup_load_error,
    summarize_pod,
)
from tfleet.engine.rollout import Event

Manifest = dict[str, Any]

__all__ = [
    "ROLLOUT_KEYS",
    "ChildKey",
    "ChildPlan",
    "Event",
    "Parsed",
    "PodSummary",
    "StatusPlan",
    "applied_hash",
    "child_key",
    "controls",
    "drain_token_of",
    "is_subset",
    "needs_apply",
    "observe_revisions",
    "owned_children",
    "parse",
    "parse_once",
    "plan_children",
    "plan_status",
    "pod_extras_of",
    "quantity_value",
    "startup_load_error",
    "status_is_urgent",
    "summarize_pod",
    "with_ownership",
    "would_start_rollout",
]


@dataclass
class ChildPlan:
    """What to write to the children: apply, scale, delete; the rollout state it leads to."""

    apply: list[Manifest] = field(default_factory=list)
    scale: list[tuple[Manifest, int]] = field(default_factory=list)  # (observed Deployment, replicas)
    delete: list[Manifest] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    invalid: str | None = None
    rollout: rollout.State | None = None
    requeue_after: float | None = None

    @property
    def writes(self) -> int:
        return len(self.apply) + len(self.scale) + len(self.delete)


@dataclass
class StatusPlan:
    """The status to write (None: it did not change) and the Events it calls for."""

    status: dict[str, Any] | None = None
    events: list[Event] = field(default_factory=list)
    invalid: str | None = None
    # Whether the new status must be written now, or may wait to be coalesced with the
    # changes that follow it (pods becoming ready one by one).
    status_urgent: bool = False

    @property
    def writes(self) -> int:
        return int(self.status is not None)


@dataclass(frozen=True)
class Parsed:
    """An InferenceService's spec parsed once per reconcile, with the cluster's defaults
    applied: the model, or why it is invalid; and the defaults it was parsed with."""

    isvc: InferenceService | None
    invalid: str | None
    defaults: Defaults = BUILT_IN

    @functools.cached_property
    def bridge_image(self) -> str:
        """The health bridge image a new revision gets."""
        return defaulting.bridge_image(self.defaults)

    @functools.cached_property
    def revision(self) -> builders.Revision | None:
        return builders.compute_revision(self.isvc) if self.isvc is not None else None


def would_start_rollout(parsed: Parsed, state: rollout.State) -> bool:
    """Whether this spec would start a new rollout now: only then does pacing matter."""
    rev = parsed.revision
    return (rev is not None and state.stable is not None and state.canary is None
            and rev.name not in (state.stable, state.failed))


def _describe(changes: list[tuple[str, Manifest]]) -> str:
    return ", ".join(f"{verb} {m['kind']} {m['metadata']['name']}" for verb, m in changes)


def parse(body: Manifest, defaults: Defaults = BUILT_IN) -> tuple[InferenceService | None, str | None]:
    """The typed InferenceService with the cluster's defaults applied, or None and the message
    naming every invalid field."""
    try:
        return defaulting.with_defaults(parse_object(body), defaults), None
    except ValidationError as exc:
        return None, "; ".join(str(e) for e in exc.errors)


def parse_once(body: Manifest, defaults: Defaults = BUILT_IN) -> Parsed:
    isvc, invalid = parse(body, defaults)
    return Parsed(isvc, invalid, defaults)


def decide(isvc: InferenceService, body: Manifest, observed: dict[str, rollout.Observed],
           now: datetime, check: analysis.Result | None = None,
           pacing: rollout.Pacing = rollout.UNPACED,
           revision: builders.Revision | None = None) -> tuple[builders.Revision, rollout.Decision]:
    spec = isvc.spec
    rev = revision or builders.compute_revision(isvc)
    policy = rollout.policy_of(isvc)
    state = rollout.State.from_status((body.get("status") or {}).get("rollout"))
    if policy.analysis:
        observed = rollout.with_check(observed, state.canary, check)
    if spec.rollout.strategy == "RollingUpdate":
        decision = rollout.decide_rolling(desired=rev.name, target_version=spec.model.version, policy=policy,
                                          state=state, observed=observed, now=now, pacing=pacing)
    else:
        decision = rollout.decide(desired=rev.name, target_version=spec.model.version, policy=policy,
                                  state=state, observed=observed, controls=controls(body), now=now, pacing=pacing)
    return rev, decision


def _running_deployment(isvc: InferenceService, rev: builders.Revision,
                        owned: dict[ChildKey, Manifest]) -> Manifest | None:
    """The current revision's Deployment, when it exists already."""
    observed = owned.get(("Deployment", builders.deployment_name(isvc, rev.name)))
    if observed is None:
        return None
    labels = ((((observed.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {})
    # Under RollingUpdate the Deployment keeps its name across revisions: only the same
    # revision keeps what it was made with.
    return observed if labels.get(LABEL_REVISION) == rev.name else None


def pod_extras_of(isvc: InferenceService, rev: builders.Revision, owned: dict[ChildKey, Manifest],
                  drain_key: bytes | None, bridge_image: str | None = None) -> builders.PodExtras:
    """The drain token and bridge image of the current revision's pods: those its Deployment
    was made with, when it exists (an operator upgrade, a new key or new defaults roll
    nothing), else the operator's current ones (`bridge_image`, None: the operator's own)."""
    running = _running_deployment(isvc, rev, owned)
    kept_image = health_wiring.kept_bridge_image(running) if running is not None else None
    metrics = health_wiring.kept_bridge_metrics(running) if running is not None else True
    return builders.PodExtras(drain_token=drain_token_of(isvc, rev, owned, drain_key),
                              bridge_image=kept_image or bridge_image, bridge_metrics=metrics)


def drain_token_of(isvc: InferenceService, rev: builders.Revision, owned: dict[ChildKey, Manifest],
                   drain_key: bytes | None) -> str | None:
    """The drain token of the current revision's pods.

    A revision keeps the token its Deployment was created with: a lost or replaced key, or
    tokens turned on or off, change only the revisions made afterwards, and never roll the
    pods of one that runs (which would roll every fleet at once). A new revision's token
    comes from the key; without a key it has none.
    """
    running = _running_deployment(isvc, rev, owned)
    if running is not None:
        kept = health_wiring.kept_drain_token(running)
        if kept is not None:
            return kept or None
    if drain_key is None:
        return None
    return health_wiring.drain_token(drain_key, isvc.namespace, isvc.name, rev.name)


# A spec larger than this is not recorded on its Deployment (annotations share 256 KiB).
MAX_RECORDED_SPEC_BYTES = 64 * 1024
# Not part of a revision (see `builders.compute_revision`): undo keeps the current ones.
UNRECORDED_SPEC_FIELDS = ("replicas", "autoscaling", "service", "rollout")


def revision_spec(body: Manifest) -> str | None:
    """The spec as recorded on a revision's Deployment, or None when it is too large."""
    spec = {k: v for k, v in (body.get("spec") or {}).items() if k not in UNRECORDED_SPEC_FIELDS}
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return text if len(text.encode()) <= MAX_RECORDED_SPEC_BYTES else None


def _with_revision_spec(manifest: Manifest, body: Manifest) -> Manifest:
    if manifest["kind"] != "Deployment":
        return manifest
    recorded = revision_spec(body)
    if recorded is not None:
        manifest["metadata"].setdefault("annotations", {})[ANNOTATION_REVISION_SPEC] = recorded
    return manifest


def plan_children(body: Manifest, children: dict[ChildKey, Manifest], pods: list[PodSummary],
                  now: datetime, check: analysis.Result | None = None, *, parsed: Parsed | None = None,
                  pacing: rollout.Pacing = rollout.UNPACED, drain_key: bytes | None = None) -> ChildPlan:
    """Children to apply, scale and delete; the rollout state they lead to; the Events.

    `drain_key` is the key new revisions' drain tokens are derived from (see `drain_token_of`).
    """
    parsed = parsed or parse_once(body)
    result = ChildPlan(invalid=parsed.invalid)
    isvc = parsed.isvc
    if isvc is None:
        # Existing children keep serving the last valid spec.
        return result
    owned = owned_children(body, children)
    deployments = [obj for (kind, _), obj in owned.items() if kind == "Deployment"]
    rev, decision = decide(isvc, body, observe_revisions(deployments, pods), now, check, pacing, parsed.revision)
    result.rollout = decision.state
    result.requeue_after = decision.requeue_after
    result.events.extend(decision.events)

    extras = pod_extras_of(isvc, rev, owned, drain_key, parsed.bridge_image)
    desired = [with_ownership(_with_revision_spec(m, body), isvc)
               for m in builders.build_children(isvc, decision.replicas.get(rev.name, 0), rev, extras)
               # A queued revision's own objects wait for its slot.
               if decision.build_desired or m["kind"] not in ("Deployment", "ConfigMap")]
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
        kind, rev_of = key[0], revision_of(obj)
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
        # One Event per reconcile: ChildrenChanged, or the one change's verb (Created, ...).
        reason = EventReason.CHILDREN_CHANGED if len(changes) > 1 else changes[0][0]
        result.events.append(Event(EventType.NORMAL, str(reason), _describe(changes)))
    return result


def plan_status(body: Manifest, children: dict[ChildKey, Manifest], pods: list[PodSummary], now: str,
                state: rollout.State | None, rejected: str | None = None, *,
                parsed: Parsed | None = None, check: analysis.Result | None = None) -> StatusPlan:
    """The new status, only if it differs from the current one, and the Events it calls for.

    `state` is the rollout state `plan_children` decided, `check` the metric check it was
    decided with. `rejected` is the API server's refusal of a child, which makes the spec as
    invalid as a rule the schema could check.
    """
    meta = body.get("metadata") or {}
    previous = body.get("status") or {}
    parsed = parsed or parse_once(body)
    isvc, invalid = (None, rejected) if rejected is not None else (parsed.isvc, parsed.invalid)
    result = StatusPlan(invalid=invalid)
    deployments = [obj for (kind, _), obj in owned_children(body, children).items() if kind == "Deployment"]
    new_status = status.compute_status(
        isvc=isvc,
        generation=int(meta.get("generation") or 0),
        invalid_message=invalid,
        revisions=observe_revisions(deployments, pods),
        state=state or rollout.State.from_status(previous.get("rollout")),
        previous=previous,
        now=now,
        check=check,
    )
    if isvc is not None and invalid is None:
        _record_defaults(new_status, parsed.defaults)
    if new_status == previous:
        return result
    result.status = new_status
    result.status_urgent = invalid is not None or status_is_urgent(previous, new_status)
    old_ready = status.condition(previous, ConditionType.READY) or {}
    if invalid is not None and old_ready.get("message") != invalid:
        result.events.append(Event(EventType.WARNING, EventReason.INVALID_SPEC, invalid))
    return result


def _record_defaults(new_status: dict[str, Any], defaults: Defaults) -> None:
    """status.defaults: which InferenceServiceDefaults (name, generation) the children were
    rendered with; none for the built-in defaults."""
    if defaults.name is None:
        new_status.pop("defaults", None)
    else:
        new_status["defaults"] = {"name": defaults.name, "generation": defaults.generation}


ROLLOUT_KEYS = ("phase", "step", "canaryRevision", "stableRevision", "failedRevision", "queuedRevision")


def status_is_urgent(previous: dict[str, Any], new: dict[str, Any]) -> bool:
    """A status change that someone may be waiting for: the spec acknowledged, a condition
    flipped, a rollout moved. Counts and messages alone can wait a moment. (The runtime
    writes the very first status at once in any case.)"""
    after = {c["type"]: c.get("status") for c in new.get("conditions") or []}
    if not previous:
        return after.get(ConditionType.READY) == "True"
    if previous.get("observedGeneration") != new.get("observedGeneration"):
        return True
    before = {c["type"]: c.get("status") for c in previous.get("conditions") or []}
    # The first pod serving is good news that Ready follows closely: it may wait with it.
    flipped = {t for t in set(before) | set(after) if before.get(t) != after.get(t)}
    if flipped - {ConditionType.MODEL_AVAILABLE} or after.get(ConditionType.MODEL_AVAILABLE) == "False":
        return True
    old_rollout, new_rollout = previous.get("rollout") or {}, new.get("rollout") or {}
    return any(old_rollout.get(k) != new_rollout.get(k) for k in ROLLOUT_KEYS)
