"""The API server's rules for labels, annotations and names, checked offline.

Fields such as pod.labels and service.annotations are copied onto children; checking them
here lets `tfleet render` and the operator report the field instead of the API server
refusing the child. Modelled on k8s.io/apimachinery: pkg/util/validation/validation.go
(IsQualifiedName, IsValidLabelValue) and pkg/api/validation/objectmeta.go
(ValidateAnnotations, TotalAnnotationSizeLimitB).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

# Go's regexp: ASCII classes, and `$` only at the very end (Python's also before a final "\n").
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z", re.ASCII)
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z", re.ASCII)
LABEL_VALUE_MAX = 63
QUALIFIED_NAME_MAX = 63
TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024
# Most entries a label or annotation map of the spec may have. Not an API server rule: it bounds
# the cost the API server estimates for the CEL rules below, which run once per entry.
MAX_MAP_ENTRIES = 64

# The same rules as CEL (RE2) expressions, for the CRD. They hold no backslash: a CEL string
# literal knows no "\\." escape, so a dot is written [.]. Counted repetitions carry the length
# limits: a name part of 1 to 63 characters, a prefix of at most 253.
_CEL_DNS1123_SUBDOMAIN = "[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_CEL_NAME_PART = "([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]"
CEL_QUALIFIED_NAME = f"^({_CEL_DNS1123_SUBDOMAIN}/)?{_CEL_NAME_PART}$"
CEL_PREFIX_LENGTH = "^[^/]{0,253}(/|$)"
CEL_LABEL_VALUE = f"^({_CEL_NAME_PART})?$"


def cel_label_key_rule(key: str) -> str:
    """CEL for "`key` is a valid label key"."""
    return f"{key}.matches('{CEL_QUALIFIED_NAME}') && {key}.matches('{CEL_PREFIX_LENGTH}')"


def cel_annotation_key_rule(key: str) -> str:
    """CEL for "`key` is a valid annotation key": a label key once lower-cased. `str.lower()`
    (in `annotation_problems`) turns exactly one non-ASCII character into ASCII, the Kelvin sign
    U+212A into "k"; CEL's lowerAscii() leaves it, so the rule replaces it too."""
    lowered = f"{key}.lowerAscii().replace('\\u212a', 'k')"
    return f"{lowered}.matches('{CEL_QUALIFIED_NAME}') && {key}.matches('{CEL_PREFIX_LENGTH}')"


def qualified_name_problem(key: str) -> str | None:
    """Why `key` is not a valid label or annotation key (`[prefix/]name`), or None."""
    prefix, slash, name = key.rpartition("/")
    if "/" in prefix:
        return "has more than one /"
    if not name:
        return "has an empty name part"
    if len(name) > QUALIFIED_NAME_MAX:
        return f"name part must be no more than {QUALIFIED_NAME_MAX} characters"
    if not _QUALIFIED_NAME.match(name):
        return "name part must consist of ASCII letters, digits, '-', '_' or '.', and start and end with a letter or digit"
    if slash and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return "prefix must be a DNS subdomain (lower case letters, digits, '-' and '.')"
    return None


def label_value_problem(value: str) -> str | None:
    if len(value) > LABEL_VALUE_MAX:
        return f"must be no more than {LABEL_VALUE_MAX} characters"
    if value and not _QUALIFIED_NAME.match(value):
        return "must be empty or consist of ASCII letters, digits, '-', '_' or '.', and start and end with a letter or digit"
    return None


def label_problems(labels: dict[str, Any], path: str) -> list[tuple[str, str]]:
    """(field path, message) for every invalid label of a map (non-strings are the parser's)."""
    problems = []
    for key, value in labels.items():
        if not isinstance(key, str):
            problems.append((path, f"label keys must be strings, got {key!r}"))
            continue
        key_problem = qualified_name_problem(key)
        if key_problem:
            problems.append((f"{path}.{key}", f'"{key}" is not a valid label key: {key_problem}'))
        if isinstance(value, str):
            value_problem = label_value_problem(value)
            if value_problem:
                problems.append((f"{path}.{key}", f'"{value}" is not a valid label value: {value_problem}'))
    return problems


def annotation_problems(annotations: dict[str, Any], path: str) -> list[tuple[str, str]]:
    problems = []
    total = 0
    for key, value in annotations.items():
        if not isinstance(key, str):
            problems.append((path, f"annotation keys must be strings, got {key!r}"))
            continue
        key_problem = qualified_name_problem(key.lower())
        if key_problem:
            problems.append((path, f'"{key}" is not a valid annotation key: {key_problem}'))
        # The limit is on bytes, as Go's len() counts them.
        total += len(key.encode()) + len(str(value).encode())
    if total > TOTAL_ANNOTATION_SIZE_LIMIT:
        problems.append((path, f"annotations may not be larger than {TOTAL_ANNOTATION_SIZE_LIMIT} bytes, got {total}"))
    return problems


EVENT_NAME_MAX = 253  # an Event's name is a DNS subdomain


def event_name(regarding: dict[str, Any], type_: str, reason: str, message: str) -> str:
    """The name of the one Event that reports this transition of this generation of
    `regarding`: the object's name (cut to fit, never ending in '-' or '.'), then a digest of
    what tells transitions apart. The same report twice gives the same name."""
    meta = regarding["metadata"]
    key = json.dumps([meta.get("uid"), meta.get("generation"), type_, reason, message])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    prefix = str(meta["name"])[: EVENT_NAME_MAX - len(digest) - 1].rstrip("-.")
    return f"{prefix}.{digest}"
