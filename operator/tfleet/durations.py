"""Durations as Go writes them ("90s", "2m", "1h30m", "1.5h", "300ms"): one reading for the
spec's durations (`spec.rollout.steps[].pause`, `analysis.prometheus.interval`) and for every
duration flag of the `tfleet` command.

`parse_duration` reads what Go's `time.ParseDuration` reads (golang/go src/time/format.go):
an optional sign, then one or more decimal numbers each with a unit (ns, us, µs, μs, ms, s, m,
h), or a bare "0". The CRD publishes a stricter pattern for the spec (whole numbers, units ms,
s, m and h), a subset of this grammar, so the two never disagree on a value the API server
accepts. Flags also take a bare number of seconds, as kubectl's `--request-timeout` does
(k8s.io/client-go/tools/clientcmd `ParseTimeout`).

Pure: no I/O, no clock. It sits below every other layer, so the health bridge's flags use it too.
"""

from __future__ import annotations

import math
import re

# Seconds per unit, as time.ParseDuration's unitMap (nanoseconds there).
UNITS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # U+00B5 MICRO SIGN
    "\u03bcs": 1e-6,  # U+03BC GREEK SMALL LETTER MU
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# Go's Duration is an int64 of nanoseconds: about 292 years.
MAX_SECONDS = (2**63 - 1) / 1e9

_NUMBER = re.compile(r"([0-9]*)(\.[0-9]*)?")
_BARE_SECONDS = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")

EXAMPLES = "such as 90s, 2m or 1h30m"


class DurationError(ValueError):
    """A text that is not a duration; the message says why, in Go's words."""


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string; raises DurationError as Go's ParseDuration would."""
    original = text
    sign = 1.0
    if text[:1] in ("-", "+"):
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if text == "0":
        return 0.0
    if not text:
        raise DurationError(f'time: invalid duration "{original}"')
    total = 0.0
    while text:
        number = _NUMBER.match(text)
        assert number is not None  # the pattern matches the empty string
        whole, fraction = number.group(1), number.group(2) or ""
        if not whole and len(fraction) <= 1:  # no digits at all: ".s", "s", "."
            raise DurationError(f'time: invalid duration "{original}"')
        text = text[number.end():]
        unit_end = 0
        while unit_end < len(text) and text[unit_end] != "." and not "0" <= text[unit_end] <= "9":
            unit_end += 1
        unit, text = text[:unit_end], text[unit_end:]
        if not unit:
            raise DurationError(f'time: missing unit in duration "{original}"')
        if unit not in UNITS:
            raise DurationError(f'time: unknown unit "{unit}" in duration "{original}"')
        total += float((whole or "0") + (fraction if len(fraction) > 1 else "")) * UNITS[unit]
        if total > MAX_SECONDS:
            raise DurationError(f'time: invalid duration "{original}"')
    return sign * total


def parse_flag_duration(text: str) -> float:
    """Seconds in a flag's value: a Go duration, or a bare number of seconds ("30", "0.5")."""
    stripped = text.strip()
    if _BARE_SECONDS.fullmatch(stripped):
        seconds = float(stripped)
        if not math.isfinite(seconds) or seconds > MAX_SECONDS:
            raise DurationError(f'invalid duration "{text}"')
        return seconds
    return parse_duration(stripped)


def format_duration(seconds: float) -> str:
    """A short Go-style duration for people: "1h30m", "2m5s", "45s", "0s", "1.5s".

    Whole seconds are written without a fraction, and zero parts inside are left out
    ("1h0m5s" is "1h5s"): it reads back through `parse_duration` to the same value.
    """
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 1:
        return "0s" if seconds == 0 else f"{round(seconds * 1000):d}ms"
    whole = int(seconds)
    fraction = seconds - whole
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if fraction >= 0.05 and not hours:
        parts.append(f"{secs + fraction:.1f}s".replace(".0s", "s"))
    elif secs or not parts:
        parts.append(f"{secs}s")
    return "".join(parts)
