"""Small helpers on plain-dict Kubernetes objects."""

from __future__ import annotations

import datetime as _dt
import random
import string
import uuid
from typing import Any

_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet of the real generateName suffix


def now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | None) -> _dt.datetime | None:
    if not value:
        return None
    try:
        return _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def new_uid() -> str:
    return str(uuid.uuid4())


def random_suffix(n: int = 5) -> str:
    return "".join(random.choice(_NAME_CHARS) for _ in range(n))


def deep_copy(obj: Any) -> Any:
    """A copy of JSON-like data; several times faster than copy.deepcopy on API objects."""
    t = type(obj)
    if t is dict:
        return {k: deep_copy(v) for k, v in obj.items()}
    if t is list:
        return [deep_copy(v) for v in obj]
    return obj


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def get_path(obj: Any, path: str) -> Any:
    """Value at a simple JSON path like ``.spec.replicas`` (None when absent)."""
    node = obj
    for part in path.strip(".").split("."):
        if not part:
            continue
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    parts = [p for p in path.strip(".").split(".") if p]
    node = obj
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def age(timestamp: str | None, at: _dt.datetime | None = None) -> str:
    """Human duration since a timestamp, in kubectl's style (``5s``, ``3m2s``, ``4h``, ``12d``)."""
    t = parse_time(timestamp)
    if t is None:
        return "<unknown>"
    at = at or _dt.datetime.now(_dt.UTC)
    return human_duration((at - t).total_seconds())


def human_duration(seconds: float) -> str:
    s = int(max(seconds, 0))
    if s < 60 * 2:
        return f"{s}s"
    m = s // 60
    if m < 10:
        rest = s % 60
        return f"{m}m{rest}s" if rest else f"{m}m"
    if m < 60 * 3:
        return f"{m}m"
    h = m // 60
    if h < 8:
        rest = m % 60
        return f"{h}h{rest}m" if rest else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 8:
        rest = h % 24
        return f"{d}d{rest}h" if rest else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y"


_DNS1123_SUBDOMAIN = (
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1035_LABEL = r"[a-z]([-a-z0-9]*[a-z0-9])?"


def name_problems(name: str, rule: str = "subdomain") -> str | None:
    """The real validation message for a bad object name, or None when it is valid."""
    import re

    if rule == "label":
        if len(name) > 63:
            return "must be no more than 63 characters"
        if not re.fullmatch(_DNS1123_LABEL, name):
            return (
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
                "or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  "
                "or '123-abc', regex used for validation is '" + _DNS1123_LABEL + "')"
            )
        return None
    if rule == "dns1035":
        if len(name) > 63:
            return "must be no more than 63 characters"
        if not re.fullmatch(_DNS1035_LABEL, name):
            return (
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
                "start with an alphabetic character, and end with an alphanumeric character "
                "(e.g. 'my-name',  or 'abc-123', regex used for validation is '"
                + _DNS1035_LABEL + "')"
            )
        return None
    if len(name) > 253:
        return "must be no more than 253 characters"
    if not re.fullmatch(_DNS1123_SUBDOMAIN, name):
        return (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
            "'-' or '.', and must start and end with an alphanumeric character (e.g. "
            "'example.com', regex used for validation is '" + _DNS1123_SUBDOMAIN + "')"
        )
    return None


def program_name(user_agent: str | None) -> str:
    """The default field manager: the user agent up to its first '/', like the real server."""
    if not user_agent:
        return "unknown"
    return user_agent.split("/", 1)[0][:128] or "unknown"


def random_letters(n: int) -> str:
    return "".join(random.choice(string.ascii_lowercase) for _ in range(n))
