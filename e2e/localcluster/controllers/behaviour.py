"""Declarative pod behaviour: what the simulated kubelet makes of a pod.

A behaviour comes, in order of precedence, from

1. the pod annotation ``localcluster.tfleet.dev/behaviour``;
2. the first matching rule of the ConfigMap ``behaviours`` in ``localcluster-system``
   (data key ``rules.yaml``), so tests can make pods misbehave without touching the
   manifests that the operator writes;
3. the default, ``ready`` (Ready after the cluster's ready delay).

See docs/local-cluster-behaviours.md for the full interface.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from .common import match_labels, match_requirement, parse_duration

ANNOTATION = "localcluster.tfleet.dev/behaviour"
# The pod's IP, when a test runs the pod's processes itself (on 127.0.0.1, say).
POD_IP_ANNOTATION = "localcluster.tfleet.dev/pod-ip"
RULES_NAMESPACE = "localcluster-system"
RULES_CONFIGMAP = "behaviours"
RULES_KEY = "rules.yaml"

READY = "ready"
NEVER_READY = "never-ready"
CRASH_LOOP = "crash-loop"
IMAGE_PULL_ERROR = "image-pull-error"
KINDS = (READY, NEVER_READY, CRASH_LOOP, IMAGE_PULL_ERROR)

MATCH_FIELDS = ("namespace", "labelSelector", "imageContains", "argContains", "envContains")


class BehaviourError(ValueError):
    pass


@dataclass(frozen=True)
class Behaviour:
    kind: str = READY
    # seconds until Ready for kind "ready"; None means the cluster's default delay
    ready_after: float | None = None
    # the text it was parsed from, for messages
    source: str = READY


DEFAULT = Behaviour()


def parse_behaviour(text: str) -> Behaviour:
    """'ready', 'ready-after=3s', 'never-ready', 'crash-loop' or 'image-pull-error'."""
    value = str(text).strip()
    name, _, arg = value.partition("=")
    name = name.strip().lower()
    if name == "ready-after":
        if not arg:
            raise BehaviourError("ready-after needs a duration, e.g. ready-after=3s")
        try:
            seconds = parse_duration(arg)
        except ValueError as exc:
            raise BehaviourError(str(exc)) from None
        return Behaviour(READY, seconds, value)
    if name in KINDS:
        if arg:
            raise BehaviourError(f"behaviour {name!r} takes no argument")
        return Behaviour(name, None, value)
    raise BehaviourError(
        f"unknown behaviour {value!r}: expected one of ready, ready-after=<duration>, "
        "never-ready, crash-loop, image-pull-error"
    )


# ------------------------------------------------------------------------------ rules

_SET = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_./-]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*$")


def parse_selector_string(text: str) -> list[dict[str, Any]]:
    """A label selector in kubectl's string form ('app=x,tier!=db,env in (a,b),!legacy')
    as a list of requirements."""
    parts: list[str] = []
    depth, current = 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    reqs: list[dict[str, Any]] = []
    for part in parts:
        if m := _SET.match(part):
            values = [v.strip() for v in m.group(3).split(",") if v.strip()]
            reqs.append(
                {
                    "key": m.group(1),
                    "operator": "In" if m.group(2) == "in" else "NotIn",
                    "values": values,
                }
            )
        elif m := _EQ.match(part):
            op = "NotIn" if m.group(2) == "!=" else "In"
            reqs.append({"key": m.group(1), "operator": op, "values": [m.group(3)]})
        elif m := _EXISTS.match(part):
            reqs.append({"key": m.group(2), "operator": "DoesNotExist" if m.group(1) else "Exists"})
        else:
            raise BehaviourError(f"invalid label selector {text!r}")
    return reqs


@dataclass(frozen=True)
class Rule:
    behaviour: Behaviour
    namespace: str | None = None
    requirements: tuple[Mapping[str, Any], ...] = ()
    match_labels: tuple[tuple[str, str], ...] = ()
    image_contains: str | None = None
    arg_contains: str | None = None
    env_contains: str | None = None

    def matches(self, pod: Mapping[str, Any]) -> bool:
        metadata = pod.get("metadata") or {}
        if self.namespace is not None and metadata.get("namespace") != self.namespace:
            return False
        labels = metadata.get("labels") or {}
        if not match_labels(dict(self.match_labels), labels):
            return False
        if not all(match_requirement(r, labels) for r in self.requirements):
            return False
        containers = [
            *((pod.get("spec") or {}).get("initContainers") or []),
            *((pod.get("spec") or {}).get("containers") or []),
        ]
        if self.image_contains is not None and not any(
            self.image_contains in (c.get("image") or "") for c in containers
        ):
            return False
        if self.arg_contains is not None and not any(
            self.arg_contains
            in " ".join(str(a) for a in [*(c.get("command") or []), *(c.get("args") or [])])
            for c in containers
        ):
            return False
        return self.env_contains is None or any(
            self.env_contains in f"{e.get('name')}={e.get('value', '')}"
            for c in containers
            for e in c.get("env") or []
        )


def parse_rules(data: Any) -> list[Rule]:
    """Rules from the parsed ``rules.yaml``: a list of {match: {...}, behaviour: "..."}.
    Errors name the offending entry."""
    if data is None:
        return []
    if not isinstance(data, list):
        raise BehaviourError("rules.yaml must be a list of {match, behaviour}")
    rules: list[Rule] = []
    for i, entry in enumerate(data):
        where = f"rules[{i}]"
        if not isinstance(entry, Mapping):
            raise BehaviourError(f"{where}: must be a mapping with 'match' and 'behaviour'")
        text = entry.get("behaviour", entry.get("behavior"))
        if text is None:
            raise BehaviourError(f"{where}.behaviour: required")
        try:
            behaviour = parse_behaviour(text)
        except BehaviourError as exc:
            raise BehaviourError(f"{where}.behaviour: {exc}") from None
        match = entry.get("match") or {}
        if not isinstance(match, Mapping):
            raise BehaviourError(f"{where}.match: must be a mapping")
        unknown = set(match) - set(MATCH_FIELDS)
        if unknown:
            raise BehaviourError(
                f"{where}.match: unknown field(s) {sorted(unknown)}; allowed: {list(MATCH_FIELDS)}"
            )
        requirements: Sequence[Mapping[str, Any]] = []
        plain: dict[str, str] = {}
        selector = match.get("labelSelector")
        if isinstance(selector, str):
            try:
                requirements = parse_selector_string(selector)
            except BehaviourError as exc:
                raise BehaviourError(f"{where}.match.labelSelector: {exc}") from None
        elif isinstance(selector, Mapping):
            if "matchLabels" in selector or "matchExpressions" in selector:
                plain = {str(k): str(v) for k, v in (selector.get("matchLabels") or {}).items()}
                requirements = list(selector.get("matchExpressions") or [])
            else:
                plain = {str(k): str(v) for k, v in selector.items()}
        elif selector is not None:
            raise BehaviourError(f"{where}.match.labelSelector: must be a string or a mapping")

        def text_field(
            name: str, match: Mapping[str, Any] = match, where: str = where
        ) -> str | None:
            value = match.get(name)
            if value is not None and not isinstance(value, str | int | float):
                raise BehaviourError(f"{where}.match.{name}: must be a string")
            return None if value is None else str(value)

        rules.append(
            Rule(
                behaviour=behaviour,
                namespace=text_field("namespace"),
                requirements=tuple(requirements),
                match_labels=tuple(sorted(plain.items())),
                image_contains=text_field("imageContains"),
                arg_contains=text_field("argContains"),
                env_contains=text_field("envContains"),
            )
        )
    return rules


def rules_from_configmap(configmap: Mapping[str, Any] | None) -> list[Rule]:
    if not configmap:
        return []
    text = (configmap.get("data") or {}).get(RULES_KEY)
    if not text:
        return []
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BehaviourError(f"{RULES_KEY}: invalid YAML: {exc}") from None
    return parse_rules(data)


class PodBehaviourError(BehaviourError):
    pass


def behaviour_for(pod: Mapping[str, Any], rules: list[Rule]) -> Behaviour:
    """The behaviour that applies to a pod: its annotation, else the first matching
    rule, else the default. An invalid annotation raises PodBehaviourError."""
    annotation = ((pod.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)
    if annotation is not None:
        try:
            return parse_behaviour(annotation)
        except BehaviourError as exc:
            raise PodBehaviourError(f"annotation {ANNOTATION}: {exc}") from None
    for rule in rules:
        if rule.matches(pod):
            return rule.behaviour
    return DEFAULT


# ----------------------------------------------------------------------------- helper


def rules_configmap(rules: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    # Validate here so a test with a typo fails at the call, not by a pod that behaves.
    parse_rules(list(rules))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": RULES_CONFIGMAP, "namespace": RULES_NAMESPACE},
        "data": {RULES_KEY: yaml.safe_dump(list(rules), sort_keys=False)},
    }


def set_rules(api: Any, rules: Sequence[Mapping[str, Any]]) -> Any:
    """Replace the cluster-wide behaviour rules (an empty list clears them).

    ``api`` is either a ``kubernetes.client.CoreV1Api`` (the call is synchronous) or the
    in-process ``Cluster`` (the call returns a coroutine to await)."""
    body = rules_configmap(rules)
    if hasattr(api, "subscribe"):
        return _set_rules_in_process(api, body)
    _set_rules_with_client(api, body)
    return None


async def _set_rules_in_process(cluster: Any, body: dict[str, Any]) -> None:
    from .common import error_code

    try:
        await cluster.create(
            "v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RULES_NAMESPACE}},
        )
    except Exception as exc:
        if error_code(exc) != 409:
            raise
    try:
        await cluster.create("v1/configmaps", body)
    except Exception as exc:
        if error_code(exc) != 409:
            raise
        await cluster.update("v1/configmaps", body)


def _set_rules_with_client(core_v1: Any, body: dict[str, Any]) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        core_v1.create_namespace(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RULES_NAMESPACE}}
        )
    except ApiException as exc:
        if exc.status != 409:
            raise
    try:
        core_v1.create_namespaced_config_map(RULES_NAMESPACE, body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        core_v1.replace_namespaced_config_map(RULES_CONFIGMAP, RULES_NAMESPACE, body)
