"""Times as tfleet writes and reads them: UTC, RFC 3339 with a trailing Z.

Condition times have whole seconds, as Kubernetes writes them; rollout times have
milliseconds, because a pause measured from a time cut to whole seconds would end up to a
second early; Lease times have microseconds (the `MicroTime` of coordination.k8s.io/v1).
"""

from __future__ import annotations

from datetime import UTC, datetime

SECONDS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
FRACTION_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc_now() -> datetime:
    """The current UTC time, naive, as every time in status is UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def format_time(moment: datetime) -> str:
    """Whole seconds, as Kubernetes writes condition times."""
    return moment.strftime(SECONDS_FORMAT)


def format_millis(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def format_micros(moment: datetime) -> str:
    return moment.strftime(FRACTION_FORMAT)


def from_epoch(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, UTC).replace(tzinfo=None)


def parse_time(text: str | None) -> datetime | None:
    """A time in any of the formats above, naive UTC; None for None or ""."""
    if not text:
        return None
    return datetime.strptime(text, FRACTION_FORMAT if "." in text else SECONDS_FORMAT).replace(tzinfo=None)
