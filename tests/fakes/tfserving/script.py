"""Timeline scripts for the fake: YAML or JSON, a list of events or `{model, events}`."""

from __future__ import annotations

from typing import Any

import yaml

from tests.fakes.tfserving.server import EventError


def load_script(path: str) -> tuple[str | None, list[dict[str, Any]]]:
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    if isinstance(doc, list):
        return None, doc
    if isinstance(doc, dict) and isinstance(doc.get("events", []), list):
        return doc.get("model"), list(doc.get("events", []))
    raise EventError(f"{path}: expected a list of events or a mapping with 'events'")


def parse_versions(text: str) -> list[dict[str, Any]]:
    """`1:AVAILABLE,2:LOADING` into events."""
    events = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        version, _, state = item.partition(":")
        events.append({"version": int(version), "state": state or "AVAILABLE"})
    return events
