"""Fault injection for chaos tests: rules that make the API server misbehave for chosen clients.

A rule is scoped by user agent (substrings: the operator's own client sends
``tfleet/operator``, kopf's watches and patches ``kopf/<version>``), verb, resource (RBAC
style: ``pods``, ``pods/status``, ``pods/*``, ``*/status``, ``*``) and namespace, and fires
with a probability (drawn from a random generator seeded per rule, so a run is
reproducible) for at most ``count`` requests, after letting ``skip`` matching requests
through. Every fault is answered the way a real kube-apiserver answers; the sources each
answer follows are named next to it in ``error_response``.

The decision logic is pure (``FaultInjector.decide`` over a ``RequestInfo``); the server
(``server.py``) turns a ``Fault`` into a response, and ``LocalCluster.restart_apiserver``
does the restart.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .errors import ApiError

ALL_VERBS = frozenset(
    {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
)
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})

# Kinds that only make sense for some verbs: a rule naming any other verb is refused, and a
# rule naming none applies to these only. A real server never answers a read with Conflict
# (a create that collides is AlreadyExists, not Conflict), nor loses the response of a
# write that was not made.
_KIND_VERBS: dict[str, frozenset[str]] = {
    "internal_error": ALL_VERBS,
    "internal_error_after_apply": WRITE_VERBS,
    "too_many_requests": ALL_VERBS,
    "conflict": frozenset({"update", "patch", "delete"}),
    "service_unavailable": ALL_VERBS,
    "latency": ALL_VERBS,
    "watch_cut": frozenset({"watch"}),
    "watch_expired": frozenset({"watch"}),
}
KINDS = tuple(_KIND_VERBS)
TOO_MANY_REQUESTS_SOURCES = ("priority_and_fairness", "watch_cache")

# JSON field names (the admin endpoint) and the Python names they map to.
_JSON_FIELDS = {
    "kind": "kind",
    "userAgents": "user_agents",
    "verbs": "verbs",
    "resources": "resources",
    "namespaces": "namespaces",
    "probability": "probability",
    "count": "count",
    "skip": "skip",
    "seconds": "seconds",
    "retryAfterSeconds": "retry_after_seconds",
    "afterSeconds": "after_seconds",
    "truncate": "truncate",
    "source": "source",
    "message": "message",
}


@dataclass(frozen=True)
class RequestInfo:
    """What a fault rule can be scoped by, taken from one API request."""

    user_agent: str
    verb: str
    group: str
    plural: str
    subresource: str | None
    namespace: str | None
    name: str | None
    resource_version: str | None = None  # of a watch: set when it resumes


@dataclass(frozen=True)
class FaultRule:
    """One rule. ``None`` scopes match everything; see ``e2e/README.md``, "Fault injection"."""

    kind: str
    user_agents: tuple[str, ...] | None = None
    verbs: tuple[str, ...] | None = None
    resources: tuple[str, ...] | None = None
    namespaces: tuple[str, ...] | None = None
    probability: float = 1.0
    count: int | None = None
    skip: int = 0
    seconds: float = 0.0  # latency: added delay
    retry_after_seconds: int = 1  # too_many_requests: the Retry-After header
    after_seconds: float = 0.0  # watch_cut: how long the stream lives
    truncate: bool = False  # watch_cut: end inside an event line, without the final chunk
    source: str = "priority_and_fairness"  # too_many_requests: which server part rejects
    message: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KIND_VERBS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.verbs is not None:
            allowed = _KIND_VERBS[self.kind]
            wrong = sorted(set(self.verbs) - allowed)
            if wrong:
                raise ValueError(
                    f"fault kind {self.kind} cannot apply to verb(s) {', '.join(wrong)}; "
                    f"it applies to {', '.join(sorted(allowed))}"
                )
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be within [0, 1], not {self.probability}")
        if self.count is not None and self.count < 0:
            raise ValueError(f"count must not be negative, not {self.count}")
        if self.skip < 0:
            raise ValueError(f"skip must not be negative, not {self.skip}")
        if self.seconds < 0 or self.after_seconds < 0:
            raise ValueError("seconds and afterSeconds must not be negative")
        if self.retry_after_seconds < 1:
            # The apiserver only sets Retry-After for RetryAfterSeconds > 0
            # (endpoints/handlers/responsewriters/writers.go, ErrorNegotiated).
            raise ValueError("retryAfterSeconds must be at least 1")
        if self.source not in TOO_MANY_REQUESTS_SOURCES:
            raise ValueError(
                f"source must be one of {', '.join(TOO_MANY_REQUESTS_SOURCES)}, not {self.source!r}"
            )

    @property
    def effective_verbs(self) -> frozenset[str]:
        return frozenset(self.verbs) if self.verbs is not None else _KIND_VERBS[self.kind]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for json_name, attr in _JSON_FIELDS.items():
            value = getattr(self, attr)
            out[json_name] = list(value) if isinstance(value, tuple) else value
        return out


def _strings(value: Any, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"{name} must be a string or a list of strings")


def make_rule(kind: str, **params: Any) -> FaultRule:
    """A ``FaultRule`` from Python keyword arguments (scopes may be a string or a list)."""
    for name in ("user_agents", "verbs", "resources", "namespaces"):
        if name in params:
            params[name] = _strings(params[name], name)
    return FaultRule(kind=kind, **params)


def rule_from_json(body: Mapping[str, Any]) -> FaultRule:
    """A ``FaultRule`` from the admin endpoint's camelCase JSON; unknown fields are refused."""
    if not isinstance(body, Mapping):
        raise ValueError("a fault rule must be a JSON object")
    unknown = sorted(set(body) - set(_JSON_FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) in fault rule: {', '.join(unknown)}")
    if "kind" not in body:
        raise ValueError("a fault rule needs a kind")
    params = {_JSON_FIELDS[k]: v for k, v in body.items() if k != "kind"}
    return make_rule(str(body["kind"]), **params)


def resource_matches(patterns: Sequence[str] | None, plural: str, subresource: str | None) -> bool:
    """RBAC's resource matching: ``pods`` is the resource itself, ``pods/status`` one
    subresource, ``pods/*`` every subresource, ``*/status`` that subresource of anything."""
    if patterns is None:
        return True
    target = f"{plural}/{subresource}" if subresource else plural
    for pattern in patterns:
        if pattern in ("*", target):
            return True
        head, _, tail = pattern.partition("/")
        if subresource and tail == "*" and head == plural:
            return True
        if subresource and head == "*" and tail == subresource:
            return True
    return False


def rule_applies(rule: FaultRule, info: RequestInfo) -> bool:
    """Whether a request is within a rule's scope (before count, skip and probability)."""
    if info.verb not in rule.effective_verbs:
        return False
    if rule.user_agents is not None and not any(ua in info.user_agent for ua in rule.user_agents):
        return False
    if rule.namespaces is not None and (info.namespace or "") not in rule.namespaces:
        return False
    if not resource_matches(rule.resources, info.plural, info.subresource):
        return False
    # A watch can only be told its resourceVersion is too old when it names one.
    return not (rule.kind == "watch_expired" and info.resource_version in (None, "", "0"))


def verb_of(method: str, has_name: bool, watch: bool) -> str:
    """The RBAC verb of a resource request, as the apiserver's RequestInfoFactory names it."""
    if watch:
        return "watch"
    return {
        "GET": "get" if has_name else "list",
        "HEAD": "get" if has_name else "list",
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if has_name else "deletecollection",
    }.get(method, method.lower())


@dataclass(frozen=True)
class Fault:
    """A fault chosen for one request: the rule's parameters and the rule's id."""

    rule_id: int
    rule: FaultRule

    @property
    def kind(self) -> str:
        return self.rule.kind


@dataclass(frozen=True)
class Decision:
    latency: float = 0.0
    fault: Fault | None = None


@dataclass
class _RuleState:
    id: int
    rule: FaultRule
    rng: random.Random
    matched: int = 0
    injected: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, **self.rule.to_json(), "matched": self.matched,
                "injected": self.injected}


def _rng(seed: int, rule_id: int) -> random.Random:
    # A string seed is hashed with SHA-512 (random.seed version 2): the same on every run
    # and platform, unlike hash() of a tuple.
    return random.Random(f"{seed}/{rule_id}")


@dataclass
class FaultInjector:
    """The rules in force and what they injected. Thread-safe: tests add rules from their
    own thread while the server decides on its loop."""

    seed: int = 0
    _rules: list[_RuleState] = field(default_factory=list)
    _injected: Counter[str] = field(default_factory=Counter)
    _next_id: int = 1
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- configuration -----------------------------------------------------------------------

    def add(self, kind: str, **params: Any) -> int:
        """Add a rule (``make_rule`` arguments); returns its id."""
        return self.add_rule(make_rule(kind, **params))

    def add_rule(self, rule: FaultRule) -> int:
        with self._lock:
            rule_id = self._next_id
            self._next_id += 1
            self._rules.append(_RuleState(rule_id, rule, _rng(self.seed, rule_id)))
            return rule_id

    def remove(self, rule_id: int) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            return len(self._rules) < before

    def clear(self) -> dict[str, Any]:
        """Remove every rule and reset the counters and rule ids; returns the state before."""
        with self._lock:
            state = self._state()
            self._rules = []
            self._injected = Counter()
            self._next_id = 1
            return state

    def set_seed(self, seed: int) -> None:
        """Reseed every rule's generator (and those added later) from ``seed``."""
        with self._lock:
            self.seed = int(seed)
            for r in self._rules:
                r.rng = _rng(self.seed, r.id)

    def apply_json(self, body: Any) -> list[int]:
        """The admin endpoint's POST: ``{"seed"?, "replace"?, "rules"?: [...]}``. Every
        rule is checked before any is added; returns the new rules' ids."""
        if not isinstance(body, Mapping):
            raise ValueError("the body must be a JSON object")
        unknown = sorted(set(body) - {"seed", "replace", "rules"})
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(unknown)}")
        rules_json = body.get("rules") or []
        if not isinstance(rules_json, list):
            raise ValueError("rules must be a list")
        rules = [rule_from_json(r) for r in rules_json]
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError("seed must be an integer")
        if body.get("replace"):
            self.clear()
        if seed is not None:
            self.set_seed(seed)
        return [self.add_rule(r) for r in rules]

    # --- reading -----------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether any rule is in force (the server's fast path skips the rest)."""
        return bool(self._rules)

    def injected(self) -> dict[str, int]:
        """How many faults of each kind were injected (``restart`` counts restarts)."""
        with self._lock:
            return dict(self._injected)

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.to_json() for r in self._rules]

    def state(self) -> dict[str, Any]:
        """What ``GET /localcluster/faults`` returns."""
        with self._lock:
            return self._state()

    def _state(self) -> dict[str, Any]:
        return {"seed": self.seed, "rules": [r.to_json() for r in self._rules],
                "injected": dict(self._injected)}

    # --- deciding ----------------------------------------------------------------------------

    def decide(self, info: RequestInfo) -> Decision:
        """Latency rules that fire add up; the first other rule that fires is the fault."""
        latency = 0.0
        fault: Fault | None = None
        with self._lock:
            for r in self._rules:
                is_latency = r.rule.kind == "latency"
                if fault is not None and not is_latency:
                    continue
                if not rule_applies(r.rule, info):
                    continue
                if r.rule.count is not None and r.injected >= r.rule.count:
                    continue
                r.matched += 1
                if r.matched <= r.rule.skip:
                    continue
                if r.rng.random() >= r.rule.probability:
                    continue
                r.injected += 1
                self._injected[r.rule.kind] += 1
                if is_latency:
                    latency += r.rule.seconds
                else:
                    fault = Fault(r.id, r.rule)
        return Decision(latency, fault)

    def withdraw(self, fault: Fault) -> None:
        """A chosen fault that did not happen (a lost response of a write that failed anyway)."""
        with self._lock:
            self._injected[fault.kind] -= 1
            if not self._injected[fault.kind]:
                del self._injected[fault.kind]
            for r in self._rules:
                if r.id == fault.rule_id:
                    r.injected -= 1

    def record(self, kind: str) -> None:
        """Count an event that is not a rule's, such as an API server restart."""
        with self._lock:
            self._injected[kind] += 1


def error_for(fault: Fault, info: RequestInfo) -> tuple[ApiError, dict[str, str]]:
    """The Status error and extra headers of an error fault, as the real server sends them."""
    rule = fault.rule
    note = f"fault injected by localcluster rule {fault.rule_id}"
    if rule.kind in ("internal_error", "internal_error_after_apply"):
        # apimachinery pkg/api/errors/errors.go NewInternalError: the cause is the message
        # and the only entry of details.causes.
        cause = rule.message or note
        return ApiError(500, "InternalError", f"Internal error occurred: {cause}",
                        {"causes": [{"message": cause}]}), {}
    if rule.kind == "conflict":
        # The registry's optimistic-concurrency failure (errors.NewConflict, the message of
        # storage.NewResourceVersionConflictsError).
        err = errors.conflict(info.plural, info.group, info.name or "", rule.message)
        return err, {}
    if rule.kind == "service_unavailable":
        # apiserver pkg/server/filters/waitgroup.go: a request arriving while the server
        # shuts down gets NewServiceUnavailable("apiserver is shutting down") and
        # Retry-After: 1.
        message = rule.message or "apiserver is shutting down"
        return ApiError(503, "ServiceUnavailable", message), {"Retry-After": "1"}
    if rule.kind == "too_many_requests" and rule.source == "watch_cache":
        # apiserver pkg/storage/cacher/cacher.go: an unready watch cache answers
        # NewTooManyRequests("storage is (re)initializing", retryAfter); ErrorNegotiated
        # (responsewriters/writers.go) copies details.retryAfterSeconds into Retry-After.
        seconds = rule.retry_after_seconds
        return ApiError(429, "TooManyRequests", rule.message or "storage is (re)initializing",
                        {"retryAfterSeconds": seconds}), {"Retry-After": str(seconds)}
    raise ValueError(f"fault kind {rule.kind} is not an error status")


# apiserver pkg/server/filters/priority-and-fairness.go tooManyRequests: Retry-After and
# http.Error's plain-text body (Go's http.Error adds the newline and these two headers).
PRIORITY_AND_FAIRNESS_BODY = "Too many requests, please try again later.\n"
PRIORITY_AND_FAIRNESS_HEADERS = {
    "Content-Type": "text/plain; charset=utf-8",
    "X-Content-Type-Options": "nosniff",
}


def expired_message(resource_version: str, current: str) -> str:
    """apiserver pkg/storage/cacher/watch_cache_history.go: ``too old resource version: %d
    (%d)``, the second number being the oldest version still served (here: the newest, as
    if everything before it were compacted)."""
    return f"too old resource version: {resource_version} ({current})"
