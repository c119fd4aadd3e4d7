"""Model versions for the stand-in: a SavedModel directory plus a card saying how it behaves.

A version directory `<base_path>/<version>/` holds `saved_model.pb` (any bytes: the
stand-in never parses a graph) and `standin.json`, the card:

```json
{
  "load_seconds": 2.0,
  "load_error": {"code": "NOT_FOUND", "message": "Op type not registered 'Foo' ..."},
  "load_error_attempts": 2,
  "function": {"linear": {"a": 0.5, "b": 2}},
  "signature": "serving_default", "input": "x", "output": "y",
  "latency_seconds": 0.01,
  "first_run_seconds": 0.5,
  "error_rate": 0.25,
  "request_error": {"code": "INTERNAL", "message": "..."},
  "hang_after_seconds": 30
}
```

Every key is optional. `function` is y = a·x + b elementwise over a DT_FLOAT tensor of any
shape. `load_error` makes each load attempt fail with that status (only the first
`load_error_attempts` attempts, when given); `error_rate` is the share of Predict runs that
fail with `request_error` (deterministic: run n fails when floor(n·rate) grows);
`hang_after_seconds` wedges the whole process that long after the version became
available: from then on no RPC and no HTTP request is answered. `first_run_seconds` is what
TensorFlow's lazy initialisation costs (`tensorflow_serving/g3doc/saved_model_warmup.md`):
the first run of each set of feeds and fetches of a loaded version takes that much longer,
and so does every run that starts before that first one has finished. A card with a key it does
not know fails the load, loudly.

Tests write versions with `write_version`; cloud URIs (`gs://bucket/m`) are written under
the object-store root (`storage_root`, or `$TFSERVING_STANDIN_STORAGE_ROOT`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from e2e.standin import storage
from e2e.standin.status import Status

CARD_FILE = "standin.json"
SAVED_MODEL_PB = "saved_model.pb"
SAVED_MODEL_PBTXT = "saved_model.pbtxt"
CARD_KEYS = frozenset(
    {
        "load_seconds",
        "load_error",
        "load_error_attempts",
        "function",
        "signature",
        "input",
        "output",
        "latency_seconds",
        "first_run_seconds",
        "error_rate",
        "request_error",
        "hang_after_seconds",
    }
)


@dataclass(frozen=True)
class Card:
    load_seconds: float = 0.0
    load_error: Status | None = None
    load_error_attempts: int | None = None
    a: float = 1.0
    b: float = 0.0
    signature: str = "serving_default"
    input: str = "x"
    output: str = "y"
    latency_seconds: float = 0.0
    first_run_seconds: float = 0.0
    error_rate: float = 0.0
    request_error: Status = field(
        default_factory=lambda: Status("INTERNAL", "Injected failure of the model's computation")
    )
    hang_after_seconds: float | None = None


class CardError(ValueError):
    """A card the stand-in cannot honour."""


def _status(value: Any, key: str) -> Status:
    if isinstance(value, str):
        return Status("UNKNOWN", value)
    if not isinstance(value, dict) or set(value) - {"code", "message"}:
        raise CardError(f"{key} must be a string or {{code, message}}")
    try:
        return Status(str(value.get("code", "UNKNOWN")), str(value.get("message", "")))
    except ValueError as e:
        raise CardError(f"{key}: {e}") from None


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CardError(f"{key} must be a number")
    return float(value)


def parse_card(data: dict[str, Any]) -> Card:
    """A card from its JSON object; CardError names what is wrong."""
    if not isinstance(data, dict):
        raise CardError("the card must be a JSON object")
    unknown = sorted(set(data) - CARD_KEYS)
    if unknown:
        raise CardError(f"unknown card keys: {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for key in ("load_seconds", "latency_seconds", "first_run_seconds", "error_rate"):
        if key in data:
            kwargs[key] = _number(data[key], key)
            if kwargs[key] < 0:
                raise CardError(f"{key} must not be negative")
    if not 0.0 <= kwargs.get("error_rate", 0.0) <= 1.0:
        raise CardError("error_rate must be between 0 and 1")
    if data.get("hang_after_seconds") is not None:
        kwargs["hang_after_seconds"] = _number(data["hang_after_seconds"], "hang_after_seconds")
    if data.get("load_error") is not None:
        kwargs["load_error"] = _status(data["load_error"], "load_error")
        if kwargs["load_error"].ok:
            raise CardError("load_error must not be OK")
    if data.get("load_error_attempts") is not None:
        attempts = data["load_error_attempts"]
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0:
            raise CardError("load_error_attempts must be a non-negative integer")
        kwargs["load_error_attempts"] = attempts
    if "request_error" in data:
        kwargs["request_error"] = _status(data["request_error"], "request_error")
    for key in ("signature", "input", "output"):
        if key in data:
            if not isinstance(data[key], str) or not data[key]:
                raise CardError(f"{key} must be a non-empty string")
            kwargs[key] = data[key]
    if "function" in data:
        function = data["function"]
        if not isinstance(function, dict) or set(function) != {"linear"}:
            raise CardError('function must be {"linear": {"a": ..., "b": ...}}')
        linear = function["linear"]
        if not isinstance(linear, dict) or set(linear) - {"a", "b"}:
            raise CardError("linear takes a and b")
        kwargs["a"] = _number(linear.get("a", 1.0), "a")
        kwargs["b"] = _number(linear.get("b", 0.0), "b")
    return Card(**kwargs)


def card_to_json(card: Card) -> dict[str, Any]:
    data: dict[str, Any] = {
        k: v for k, v in asdict(card).items() if k not in ("a", "b", "load_error", "request_error")
    }
    data["function"] = {"linear": {"a": card.a, "b": card.b}}
    if card.load_error is not None:
        data["load_error"] = {"code": card.load_error.code, "message": card.load_error.message}
    data["request_error"] = {"code": card.request_error.code, "message": card.request_error.message}
    return {k: v for k, v in data.items() if v is not None}


def base_dir(base_path: str | Path, storage_root: str | Path | None = None) -> Path:
    """The local directory behind a base path (absolute path or gs://, s3://, hdfs:// URI)."""
    text = str(base_path)
    u = storage.parse_uri(text)
    if u.scheme in storage.CLOUD_SCHEMES:
        root = Path(storage_root) if storage_root else Path(os.environ[storage.STORAGE_ROOT_ENV])
        return root / u.scheme / u.host / u.path.lstrip("/")
    return Path(storage.local_path(text))


def write_version(
    base_path: str | Path,
    version: int | str,
    card: Card | dict[str, Any] | None = None,
    *,
    saved_model: bool = True,
    storage_root: str | Path | None = None,
) -> Path:
    """Writes `<base_path>/<version>/` and returns its local path.

    The directory appears at once (written aside, then renamed), as the file system
    source would otherwise catch a half-written version. `saved_model=False` leaves out
    saved_model.pb, which TF Serving fails to load with its NOT_FOUND error. `version`
    may be a string to write directory names such as "0003" or "abc".
    """
    base = base_dir(base_path, storage_root)
    base.mkdir(parents=True, exist_ok=True)
    target = base / str(version)
    if target.exists():
        raise FileExistsError(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=base))
    try:
        if saved_model:
            (staging / SAVED_MODEL_PB).write_bytes(b"\x12\x00standin saved model placeholder")
        if card is not None:
            data = card_to_json(card) if isinstance(card, Card) else card
            (staging / CARD_FILE).write_text(json.dumps(data, indent=2))
        else:
            (staging / CARD_FILE).write_text(json.dumps(card_to_json(Card()), indent=2))
        staging.chmod(0o755)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def remove_version(base_path: str | Path, version: int | str, storage_root: str | Path | None = None) -> None:
    shutil.rmtree(base_dir(base_path, storage_root) / str(version))
