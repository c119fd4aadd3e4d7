"""The operator's log lines: text for people, JSON lines for log pipelines.

Every line about an InferenceService names it. kopf's per-object loggers already carry the
object in the record (`k8s_ref`); tfleet's own lines are written while a reconcile of one
object runs, so `object_context` records that object for the thread doing the work and the
formatters read it from there. Log messages themselves stay in the Kubernetes style
("Updated status of InferenceService ml/resnet").
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

from tfleet.api.times import format_millis, from_epoch

FORMATS = ("text", "json")

_current: ContextVar[tuple[str, str] | None] = ContextVar("tfleet_log_object", default=None)


@contextmanager
def object_context(namespace: str, name: str) -> Iterator[None]:
    """Lines logged inside this block (in this thread or task) name namespace/name."""
    token = _current.set((namespace, name))
    try:
        yield
    finally:
        _current.reset(token)


def object_ref(record: logging.LogRecord) -> tuple[str | None, str | None]:
    """(namespace, name) of the object a record is about, or (None, None)."""
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, dict) and ref.get("name"):
        return ref.get("namespace"), ref.get("name")
    current = _current.get()
    if current is not None:
        return current
    return None, None


def _timestamp(record: logging.LogRecord) -> str:
    return format_millis(from_epoch(record.created))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, namespace and name when known."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        namespace, name = object_ref(record)
        if name:
            if namespace:
                line["namespace"] = namespace
            line["name"] = name
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger: [namespace/name] message`, the object part only when known."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        namespace, name = object_ref(record)
        if not name:
            return text
        head, _, message = text.partition(": ")
        ref = f"{namespace}/{name}" if namespace else name
        return f"{head}: [{ref}] {message}"


def configure(fmt: str = "text", level: str = "info", stream: TextIO | None = None) -> logging.Handler:
    """Send every log record (tfleet's, kopf's, the clients') to one stream in one format."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    # The HTTP client's connection chatter says nothing an operator user acts on.
    logging.getLogger("urllib3").setLevel(max(logging.WARNING, root.level))
    return handler
