"""Printing objects and tables as kubectl does (`-o yaml|json|name|wide`), and fitting lines
to a terminal.

- `-o name` is `<kind>.<group>/<name>` in lower case, `<kind>/<name>` for the core group
  (k8s.io/cli-runtime/pkg/printers/name.go).
- `-o json` prints one object as itself and several as a `v1` `List`, as `kubectl get` does.
- `-o yaml` prints a stream of YAML documents, one per object, which `kubectl apply -f -`
  reads as it is.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    """Plain YAML: repeated values are written out, never as &anchors/*aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def yaml_documents(objects: list[dict[str, Any]]) -> str:
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, width=120)


def yaml_document(obj: Any) -> str:
    return str(yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=120))


def json_document(obj: Any) -> str:
    return json.dumps(obj, indent=4) + "\n"


def as_list(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "items": objects, "kind": "List", "metadata": {"resourceVersion": ""}}


def object_name(obj: dict[str, Any]) -> str:
    """`kubectl -o name` of an object: deployment.apps/x, configmap/x, inferenceservice.tfleet.dev/x."""
    api_version = str(obj.get("apiVersion") or "")
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    kind = str(obj.get("kind") or "").lower()
    name = (obj.get("metadata") or {}).get("name", "")
    return f"{kind}.{group}/{name}" if group else f"{kind}/{name}"


def print_objects(objects: list[dict[str, Any]], fmt: str) -> str:
    """The text for `-o fmt` of several objects."""
    if fmt == "json":
        return json_document(objects[0] if len(objects) == 1 else as_list(objects))
    if fmt == "name":
        return "".join(object_name(o) + "\n" for o in objects)
    return yaml_documents(objects)


def table(rows: list[list[str]]) -> str:
    """Columns as kubectl aligns them: left-aligned, three spaces apart, no trailing spaces."""
    if not rows:
        return ""
    widths = [max(display_width(row[i]) for row in rows if i < len(row)) for i in range(max(map(len, rows)))]
    lines = []
    for row in rows:
        cells = [cell + " " * (widths[i] - display_width(cell)) for i, cell in enumerate(row)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def display_width(text: str) -> int:
    """Terminal columns `text` takes: escape sequences take none, wide characters two."""
    width = 0
    for char in _ANSI.sub("", text):
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def truncate(text: str, columns: int, ellipsis: str = "…") -> str:
    """`text` cut to at most `columns` terminal columns, escape sequences kept whole (and a
    reset added when a colour was cut open), so that a terminal never wraps the line."""
    if columns <= 0:
        return ""
    if display_width(text) <= columns:
        return text
    budget = columns - display_width(ellipsis)
    out: list[str] = []
    width, position, coloured = 0, 0, False
    while position < len(text):
        escape = _ANSI.match(text, position)
        if escape:
            out.append(escape.group())
            coloured = escape.group() != "\x1b[0m"
            position = escape.end()
            continue
        char = text[position]
        char_width = 0 if unicodedata.combining(char) else (
            2 if unicodedata.east_asian_width(char) in ("W", "F") else 1)
        if width + char_width > budget:
            break
        out.append(char)
        width += char_width
        position += 1
    return "".join(out) + ellipsis + ("\x1b[0m" if coloured else "")
