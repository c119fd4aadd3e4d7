"""Label and field selectors: parsing (the query-string syntax) and matching.

Both are compiled once per request into a predicate, because a list or a watch applies
them to every stored object or event.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import bad_request

Predicate = Callable[[dict[str, Any]], bool]

_SET_OP = re.compile(r"^\s*(!?)\s*([^\s!=<>(),]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ_OP = re.compile(r"^\s*([^\s!=<>(),]+)\s*(==|=|!=|<|>)\s*([^\s(),]*)\s*$")


def _split_requirements(text: str) -> list[str]:
    """Split at commas that are not inside a ``(...)`` value set."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in (p.strip() for p in parts) if p]


def parse_label_selector(text: str | None) -> Predicate | None:
    """Compile ``a=b,c!=d,e in (f,g),!h,i`` into a predicate on a labels dict; None = all."""
    if not text or not text.strip():
        return None
    checks: list[Callable[[dict[str, str]], bool]] = []
    for req in _split_requirements(text):
        eq = _EQ_OP.match(req)
        if eq:
            key, op, value = eq.groups()
            checks.append(_eq_check(key, op, value))
            continue
        st = _SET_OP.match(req)
        if st:
            neg, key, op, values = st.groups()
            if op:
                if neg:
                    raise bad_request(f"unable to parse requirement: {req!r}")
                vals = frozenset(v.strip() for v in values.split(",") if v.strip())
                checks.append(_set_check(key, vals, want=(op == "in")))
            else:
                checks.append(_exists_check(key, want=not neg))
            continue
        raise bad_request(f"unable to parse requirement: found '{req}', expected: in, notin, =, ==, !=, gt, lt")

    def match(labels: dict[str, Any]) -> bool:
        return all(check(labels) for check in checks)

    return match


def _set_check(key: str, values: frozenset[str], want: bool) -> Callable[[dict[str, str]], bool]:
    return lambda labels: (labels.get(key) in values) is want


def _exists_check(key: str, want: bool) -> Callable[[dict[str, str]], bool]:
    return lambda labels: (key in labels) is want


def _eq_check(key: str, op: str, value: str) -> Callable[[dict[str, str]], bool]:
    if op in ("=", "=="):
        return lambda labels: labels.get(key) == value
    if op == "!=":
        return lambda labels: labels.get(key) != value
    try:
        bound = int(value)
    except ValueError as exc:
        raise bad_request(f"for 'Gt', 'Lt' operators, the value must be an integer: {value}") from exc

    def compare(labels: dict[str, str]) -> bool:
        try:
            have = int(labels[key])
        except (KeyError, ValueError):
            return False
        return have > bound if op == ">" else have < bound

    return compare


def field_value(obj: dict[str, Any], path: str) -> str:
    """The string a field selector compares with; missing fields compare as ""."""
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict):
            return ""
        node = node.get(part)
        if node is None:
            return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return node if isinstance(node, str) else str(node)


def parse_field_selector(text: str | None, supported: frozenset[str] | None = None) -> Predicate | None:
    """Compile ``metadata.name=x,status.phase!=Running`` into a predicate on the object.

    ``supported`` lists the field labels the kind allows (``metadata.name`` and
    ``metadata.namespace`` always); any other gets 400, as on a real server, so code that
    relies on an unsupported field selector fails here and not in production.
    """
    if not text or not text.strip():
        return None
    checks: list[tuple[str, bool, str]] = []
    for req in _split_requirements(text):
        m = re.match(r"^\s*([^\s!=]+)\s*(==|=|!=)\s*(.*?)\s*$", req)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{req}'")
        path, op, value = m.groups()
        if supported is not None and path not in supported and path not in ("metadata.name", "metadata.namespace"):
            raise bad_request(f"field label not supported: {path}")
        checks.append((path, op != "!=", value))

    def match(obj: dict[str, Any]) -> bool:
        return all((field_value(obj, p) == v) is want for p, want, v in checks)

    return match


def field_selector_names(text: str | None) -> tuple[str | None, str | None]:
    """The exact name and namespace a field selector pins, if any (a fast path for lists)."""
    name = namespace = None
    if text:
        for req in _split_requirements(text):
            m = re.match(r"^\s*metadata\.(name|namespace)\s*==?\s*(.*?)\s*$", req)
            if m and m.group(1) == "name":
                name = m.group(2)
            elif m:
                namespace = m.group(2)
    return name, namespace


def selector_to_string(selector: dict[str, Any] | None) -> str:
    """Render a ``LabelSelector`` object (matchLabels/matchExpressions) in query syntax."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(sorted(values))})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(sorted(values))})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def matches_label_selector(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether labels match a ``LabelSelector`` object; an empty selector matches everything."""
    pred = parse_label_selector(selector_to_string(selector))
    return True if pred is None else pred(labels)
