"""Which InferenceServiceDefaults are in force, and the status that says so, as pure functions.

The operator renders every InferenceService with the defaults in force. A valid spec is in
force once its status records it: `status.appliedGeneration` and a copy of the spec in
`status.applied`. An invalid spec is refused, with a message naming each field, and the
recorded one stays in force, so InferenceServices keep their last good rendering, also after
an operator restart. With no object (or none accepted yet), the built-in defaults apply.

Recording first, then rendering, keeps every sequence of writes safe to resume: a crash after
the status write renders with what is recorded; one before it renders with what was recorded
before, and the next look records the spec again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tfleet.api.defaults import BUILT_IN, Defaults, parse_defaults_spec
from tfleet.api.schema import ValidationError
from tfleet.api.vocabulary import DEFAULTS_KIND, ConditionType, EventReason, EventType, Reason
from tfleet.engine.rollout import Event

Manifest = dict[str, Any]


@dataclass(frozen=True)
class DefaultsPlan:
    """What one look at the InferenceServiceDefaults object decides.

    `recorded` is in force now (what its status records); `in_force` is, once `status` is
    written (None: the status stays as it is, and `in_force` is `recorded`)."""

    recorded: Defaults
    in_force: Defaults
    status: dict[str, Any] | None = None
    invalid: str | None = None
    events: list[Event] = field(default_factory=list)


def recorded_defaults(body: Manifest | None) -> Defaults:
    """The defaults the object's status records as in force: its applied spec, when that still
    parses; else the built-in ones."""
    if body is None:
        return BUILT_IN
    status = body.get("status") or {}
    applied, generation = status.get("applied"), status.get("appliedGeneration")
    if not isinstance(applied, dict) or not isinstance(generation, int):
        return BUILT_IN
    try:
        spec = parse_defaults_spec(applied, "status.applied")
    except ValidationError:
        return BUILT_IN
    return Defaults(spec=spec, name=str(body["metadata"]["name"]), generation=generation)


def _condition(type_: str, status: bool, reason: str, message: str, previous: list[dict[str, Any]],
               generation: int, now: str) -> dict[str, Any]:
    text = "True" if status else "False"
    old = next((c for c in previous if c.get("type") == type_), None)
    # lastTransitionTime moves only when the status flips.
    since = old["lastTransitionTime"] if old and old.get("status") == text and old.get("lastTransitionTime") else now
    return {"type": type_, "status": text, "reason": reason, "message": message, "lastTransitionTime": since,
            "observedGeneration": generation}


def plan_defaults(body: Manifest | None, now: str) -> DefaultsPlan:
    """The defaults in force, and the status that records them, for the object as observed
    (None: there is none, and the built-in defaults apply)."""
    if body is None:
        return DefaultsPlan(BUILT_IN, BUILT_IN)
    meta = body.get("metadata") or {}
    name, generation = str(meta.get("name")), int(meta.get("generation") or 0)
    previous = body.get("status") or {}
    old_conditions = previous.get("conditions") or []
    recorded = recorded_defaults(body)
    spec = body.get("spec")
    try:
        parsed = parse_defaults_spec(spec)
    except ValidationError as exc:
        invalid = "; ".join(str(e) for e in exc.errors)
        message = f"{invalid}. InferenceServices keep {recorded.describe()}"
        status: dict[str, Any] = {k: v for k, v in previous.items() if k in ("appliedGeneration", "applied")}
        status.update({
            "observedGeneration": generation,
            "conditions": [
                _condition(ConditionType.READY, False, Reason.INVALID_DEFAULTS, message, old_conditions, generation, now),
                _condition(ConditionType.STALLED, True, Reason.INVALID_DEFAULTS, message, old_conditions, generation, now),
            ],
        })
        old_ready: dict[str, Any] = next((c for c in old_conditions if c.get("type") == ConditionType.READY), {})
        events = [] if old_ready.get("message") == message else \
            [Event(EventType.WARNING, EventReason.INVALID_DEFAULTS, message)]
        return DefaultsPlan(recorded, recorded, None if status == previous else status, invalid, events)
    in_force = Defaults(spec=parsed, name=name, generation=generation)
    message = f"InferenceServices are rendered with generation {generation}"
    status = {
        "observedGeneration": generation,
        "conditions": [
            _condition(ConditionType.READY, True, Reason.ACCEPTED, message, old_conditions, generation, now),
            _condition(ConditionType.STALLED, False, Reason.ACCEPTED, "The spec is valid", old_conditions,
                       generation, now),
        ],
        "appliedGeneration": generation,
        "applied": spec if isinstance(spec, dict) else {},
    }
    if status == previous:
        return DefaultsPlan(in_force, in_force)
    events = [] if previous.get("appliedGeneration") == generation else \
        [Event(EventType.NORMAL, EventReason.DEFAULTS_ACCEPTED,
               f"Accepted generation {generation} of {DEFAULTS_KIND} {name}: every InferenceService is rendered "
               "with it (new revisions roll out under the operator's pacing)")]
    return DefaultsPlan(recorded, in_force, status, None, events)
