"""TF Serving's own traffic figures: what the health bridge reads from the server's Prometheus page,
and what it serves the operator for the builtin canary analysis. Pure functions and data.

TF Serving counts every request per model in `:tensorflow:serving:request_count{model_name,
status}` and times the successful ones in the histogram `:tensorflow:serving:request_latency
{model_name, API, entrypoint}`, in microseconds, with the buckets Exponential(10, 1.8, 33)
(`tensorflow_serving/servables/tensorflow/util.cc`; `prediction_service_impl.cc` and
`http_server.cc` record them, the latency only for an OK answer). Neither has a version label:
a tfleet pod serves one pinned version, so a pod's figures are its version's. The page is
rendered by `tensorflow_serving/util/prometheus_exporter.cc` (cumulative buckets, the last
`le="+Inf"`).

The bridge keeps a snapshot of the cumulative counters every interval (`TrafficHistory`), and
answers "what was served since T" with the increase from the first snapshot at or after T (or
from its baseline, taken when the pod was about to take traffic, so its own pre-flight
requests are not counted) to the latest, treating a counter that went down as a restarted
server. A window so starts up to one interval late: it never counts a request served before T.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY_BUCKET = ":tensorflow:serving:request_latency_bucket"
OK = "OK"

# name{labels} value, as the exporter writes each sample (no timestamps, no HELP lines).
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>.*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')


class PageError(ValueError):
    """A metrics page that cannot be read."""


@dataclass(frozen=True)
class Counters:
    """The cumulative counters of one model on one scrape."""

    by_status: dict[str, float] = field(default_factory=dict)
    # The latency histogram summed over API and entrypoint: upper bounds (microseconds, the last
    # +Inf) and the cumulative count at each.
    latency_bounds: tuple[float, ...] = ()
    latency_cumulative: tuple[float, ...] = ()


def _labels(text: str) -> dict[str, str]:
    return {m.group("name"): m.group("value").replace('\\"', '"').replace("\\\\", "\\")
            for m in _LABEL.finditer(text)}


def _number(text: str) -> float:
    if text == "+Inf":
        return math.inf
    try:
        return float(text)
    except ValueError:
        raise PageError(f"{text!r} is not a number") from None


def parse_page(text: str, model: str) -> Counters:
    """The model's request counts and latency histogram on a TF Serving metrics page."""
    by_status: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if not line.startswith((REQUEST_COUNT + "{", REQUEST_LATENCY_BUCKET + "{")):
            continue
        sample = _SAMPLE.match(line)
        if sample is None:
            raise PageError(f"cannot read the line {line[:200]!r}")
        labels = _labels(sample.group("labels"))
        if labels.get("model_name") != model:
            continue
        value = _number(sample.group("value"))
        if sample.group("name") == REQUEST_COUNT:
            status = labels.get("status", "")
            by_status[status] = by_status.get(status, 0.0) + value
        else:
            bound = _number(labels.get("le", ""))
            buckets[bound] = buckets.get(bound, 0.0) + value
    bounds = tuple(sorted(buckets))
    return Counters(by_status, bounds, tuple(buckets[b] for b in bounds))


@dataclass(frozen=True)
class TrafficFigures:
    """Requests served over a window: counts by status and the latency histogram's increase
    (per bucket, not cumulative). Figures of several pods add up (`merge`)."""

    requests: int = 0
    errors: int = 0  # answered with a status other than OK
    by_status: dict[str, int] = field(default_factory=dict)
    latency_bounds: tuple[float, ...] = ()  # microseconds; the last is +Inf
    latency_counts: tuple[int, ...] = ()
    pods: int = 1
    start: float = 0.0  # the window, in seconds since the epoch
    end: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def quantile(self, q: float) -> float | None:
        """The q-quantile of latency in seconds, interpolated linearly within its bucket as
        Prometheus's histogram_quantile does (the highest finite bound for the +Inf bucket);
        None without any timed request."""
        total = sum(self.latency_counts)
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for i, count in enumerate(self.latency_counts):
            if count and seen + count >= rank:
                upper = self.latency_bounds[i]
                lower = self.latency_bounds[i - 1] if i > 0 else 0.0
                if math.isinf(upper):
                    return lower / 1e6
                return (lower + (upper - lower) * (rank - seen) / count) / 1e6
            seen += count
        finite = [b for b in self.latency_bounds if not math.isinf(b)]
        return (finite[-1] if finite else 0.0) / 1e6


def merge(figures: Iterable[TrafficFigures]) -> TrafficFigures:
    """Figures of several pods as one (their histograms must share buckets, as TF Serving's do)."""
    items = list(figures)
    if not items:
        return TrafficFigures(pods=0)
    bounds = max((f.latency_bounds for f in items), key=len)
    counts = [0] * len(bounds)
    by_status: dict[str, int] = {}
    for f in items:
        if f.latency_bounds and f.latency_bounds != bounds:
            raise ValueError("the pods' latency histograms have different buckets")
        for i, c in enumerate(f.latency_counts):
            counts[i] += c
        for status, n in f.by_status.items():
            by_status[status] = by_status.get(status, 0) + n
    return TrafficFigures(
        requests=sum(f.requests for f in items), errors=sum(f.errors for f in items), by_status=by_status,
        latency_bounds=bounds, latency_counts=tuple(counts), pods=sum(f.pods for f in items),
        start=min(f.start for f in items), end=max(f.end for f in items),
    )


def _increase(values: list[float]) -> float:
    """The increase of a counter over consecutive samples; a drop is a restart from zero."""
    total = 0.0
    for before, after in itertools.pairwise(values):
        total += after - before if after >= before else after
    return total


@dataclass(frozen=True)
class Snapshot:
    at: float  # seconds since the epoch
    counters: Counters


def figures_between(snapshots: list[Snapshot]) -> TrafficFigures:
    """What the counters say was served from the first snapshot to the last."""
    if len(snapshots) < 2:
        at = snapshots[0].at if snapshots else 0.0
        return TrafficFigures(start=at, end=at)
    statuses = sorted({s for snap in snapshots for s in snap.counters.by_status})
    by_status = {s: round(_increase([snap.counters.by_status.get(s, 0.0) for snap in snapshots])) for s in statuses}
    by_status = {s: n for s, n in by_status.items() if n}
    bounds = max((snap.counters.latency_bounds for snap in snapshots), key=len)
    cumulative = [_increase([_at(snap.counters, b) for snap in snapshots]) for b in bounds]
    counts = tuple(round(c - (cumulative[i - 1] if i else 0.0)) for i, c in enumerate(cumulative))
    requests = sum(by_status.values())
    return TrafficFigures(requests=requests, errors=requests - by_status.get(OK, 0), by_status=by_status,
                          latency_bounds=bounds, latency_counts=tuple(max(0, c) for c in counts),
                          start=snapshots[0].at, end=snapshots[-1].at)


def _at(counters: Counters, bound: float) -> float:
    for b, c in zip(counters.latency_bounds, counters.latency_cumulative, strict=True):
        if b == bound:
            return c
    return 0.0


class TrafficHistory:
    """Snapshots of one TF Serving's counters, bounded in number, from a baseline on."""

    def __init__(self, max_snapshots: int) -> None:
        self._snapshots: deque[Snapshot] = deque(maxlen=max(2, max_snapshots))

    def add(self, snapshot: Snapshot) -> None:
        self._snapshots.append(snapshot)

    def reset(self, baseline: Snapshot | None = None) -> None:
        """Forget everything before `baseline` (none: forget everything)."""
        self._snapshots.clear()
        if baseline is not None:
            self._snapshots.append(baseline)

    @property
    def started(self) -> bool:
        return bool(self._snapshots)

    @property
    def latest(self) -> Snapshot | None:
        return self._snapshots[-1] if self._snapshots else None

    def since(self, t: float) -> TrafficFigures:
        """What was served from the first snapshot at or after `t` (the baseline, when `t` is
        older) to the latest snapshot."""
        snapshots = list(self._snapshots)
        start = next((i for i, snap in enumerate(snapshots) if snap.at >= t), max(0, len(snapshots) - 1))
        return figures_between(snapshots[start:])


def figures_to_json(figures: TrafficFigures, **extra: Any) -> str:
    doc = {
        "requests": figures.requests,
        "errors": figures.errors,
        "byStatus": figures.by_status,
        "latency": {"boundsMicros": [b if not math.isinf(b) else "+Inf" for b in figures.latency_bounds],
                    "counts": list(figures.latency_counts)},
        "from": figures.start,
        "to": figures.end,
        **extra,
    }
    return json.dumps(doc, sort_keys=True)


class FiguresFormatError(ValueError):
    """Not a figures document from the bridge."""


def figures_from_json(text: str) -> tuple[TrafficFigures, dict[str, Any]]:
    """The figures in a bridge's `/traffic` answer, and the rest of the document."""
    try:
        doc = json.loads(text)
        latency = doc["latency"]
        bounds = tuple(math.inf if b == "+Inf" else float(b) for b in latency["boundsMicros"])
        counts = tuple(int(c) for c in latency["counts"])
        if len(bounds) != len(counts):
            raise FiguresFormatError("the latency bounds and counts differ in length")
        figures = TrafficFigures(
            requests=int(doc["requests"]), errors=int(doc["errors"]),
            by_status={str(k): int(v) for k, v in dict(doc.get("byStatus") or {}).items()},
            latency_bounds=bounds, latency_counts=counts, start=float(doc["from"]), end=float(doc["to"]),
        )
    except FiguresFormatError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FiguresFormatError(f"not a figures document: {exc}") from None
    return figures, {k: v for k, v in doc.items() if k not in ("requests", "errors", "byStatus", "latency", "from",
                                                                "to")}
