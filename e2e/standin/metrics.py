"""TF Serving's monitoring metrics and their Prometheus page.

Metric names, labels and buckets are those of the real definitions:

- tensorflow_serving/servables/tensorflow/util.cc: `/tensorflow/serving/request_count`
  {model_name, status}, `/tensorflow/serving/request_latency` {model_name, API,
  entrypoint} and `/tensorflow/serving/runtime_latency` {model_name, API, runtime}, both
  Exponential(10, 1.8, 33) microseconds;
- tensorflow/cc/saved_model/loader.cc: `/tensorflow/cc/saved_model/load_attempt_count`
  {model_path, status} and `/tensorflow/cc/saved_model/load_latency` {model_path};
- tensorflow_serving/batching/batching_session.cc: `.../batching_session/queuing_latency`
  {thread_pool_name}, Exponential(100, 1.2, 52), and `.../batching_session/wrapped_run_count`;
- tensorflow_serving/batching/batching_util.h: `.../batching_session/input_batch_size`,
  `processed_batch_size` and `padding_size` {execution_batch_size}, Exponential(1, 2, 14),
  registered the first time they are used.

tensorflow_serving/util/prometheus_exporter.cc renders them: names with every
non-alphanumeric character turned into ':' (`:tensorflow:serving:request_count`), a
`# TYPE` line per metric, no HELP lines, histogram buckets cumulative with the last one
`+Inf`, numbers printed as absl::StrCat prints doubles (six significant digits), metrics
in name order and cells in label order. Buckets follow tsl's Histogram: a value goes to
the first bucket whose limit is greater than it.
"""

from __future__ import annotations

import bisect
import re
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field


def exponential_buckets(scale: float, growth: float, count: int) -> list[float]:
    """tsl::monitoring::Buckets::Exponential: count limits, then DBL_MAX."""
    limits = []
    bound = scale
    for _ in range(count):
        limits.append(bound)
        bound *= growth
    limits.append(sys.float_info.max)
    return limits


def six_digits(value: float) -> str:
    """absl::StrCat(double): %g with six significant digits."""
    return f"{value:.6g}"


def prometheus_name(name: str) -> str:
    out = re.sub(r"[^a-zA-Z0-9_]", ":", name)
    return f"_{out}" if out[:1].isdigit() else out


def _label_name(name: str) -> str:
    out = re.sub(r"[^a-zA-Z0-9]", "_", name)
    return f"_{out}" if out[:1].isdigit() else out


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


@dataclass
class _Histogram:
    limits: list[float]
    buckets: list[int]
    total: float = 0.0

    def add(self, value: float) -> None:
        index = min(bisect.bisect_right(self.limits, value), len(self.limits) - 1)
        self.buckets[index] += 1
        self.total += value


@dataclass
class Metric:
    name: str
    labels: tuple[str, ...]
    kind: str  # "counter" or "histogram"
    limits: list[float] = field(default_factory=list)
    cells: dict[tuple[str, ...], int | _Histogram] = field(default_factory=dict)


class Registry:
    """tsl::monitoring::CollectionRegistry for the metrics the stand-in emits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, Metric] = {}

    def counter(self, name: str, *labels: str) -> None:
        with self._lock:
            self._metrics.setdefault(name, Metric(name, labels, "counter"))

    def sampler(self, name: str, limits: list[float], *labels: str) -> None:
        with self._lock:
            self._metrics.setdefault(name, Metric(name, labels, "histogram", limits))

    def increment(self, name: str, label_values: Sequence[str], by: int = 1) -> None:
        with self._lock:
            metric = self._metrics[name]
            key = tuple(label_values)
            metric.cells[key] = int(metric.cells.get(key, 0)) + by  # type: ignore[arg-type]

    def observe(self, name: str, label_values: Sequence[str], value: float) -> None:
        with self._lock:
            metric = self._metrics[name]
            key = tuple(label_values)
            cell = metric.cells.get(key)
            if not isinstance(cell, _Histogram):
                cell = _Histogram(metric.limits, [0] * len(metric.limits))
                metric.cells[key] = cell
            cell.add(value)

    def value(self, name: str, label_values: Sequence[str]) -> int:
        """A counter's value (0 when the cell does not exist yet)."""
        with self._lock:
            cell = self._metrics[name].cells.get(tuple(label_values), 0)
            return cell if isinstance(cell, int) else 0

    def first_value(self, name: str) -> int:
        """The int64 value of a metric's first point (0 for unknown metrics or no points)."""
        with self._lock:
            metric = self._metrics.get(name)
            if metric is None or not metric.cells:
                return 0
            cell = metric.cells[min(metric.cells)]
            return cell if isinstance(cell, int) else 0

    def prometheus_page(self) -> str:
        """PrometheusExporter::GeneratePage."""
        lines: list[str] = []
        with self._lock:
            for name in sorted(self._metrics):
                metric = self._metrics[name]
                prom = prometheus_name(name)
                lines.append(f"# TYPE {prom} {metric.kind}")
                for key in sorted(metric.cells):
                    labels = [
                        f'{_label_name(n)}="{_label_value(v)}"'
                        for n, v in zip(metric.labels, key, strict=True)
                    ]
                    cell = metric.cells[key]
                    if isinstance(cell, int):
                        lines.append(f"{prom}{{{','.join(labels)}}} {cell}")
                        continue
                    prefix = f"{prom}_bucket{{{','.join(labels)}{',' if labels else ''}"
                    cumulative = 0
                    for i, count in enumerate(cell.buckets):
                        cumulative += count
                        limit = six_digits(cell.limits[i]) if i < len(cell.buckets) - 1 else "+Inf"
                        lines.append(f'{prefix}le="{limit}"}} {cumulative}')
                    lines.append(f"{prom}_sum{{{','.join(labels)}}} {six_digits(cell.total)}")
                    lines.append(f"{prom}_count{{{','.join(labels)}}} {cumulative}")
        return "\n".join(lines) + "\n"


REQUEST_COUNT = "/tensorflow/serving/request_count"
REQUEST_LATENCY = "/tensorflow/serving/request_latency"
RUNTIME_LATENCY = "/tensorflow/serving/runtime_latency"
LOAD_ATTEMPT_COUNT = "/tensorflow/cc/saved_model/load_attempt_count"
LOAD_LATENCY = "/tensorflow/cc/saved_model/load_latency"
QUEUING_LATENCY = "/tensorflow/serving/batching_session/queuing_latency"
WRAPPED_RUN_COUNT = "/tensorflow/serving/batching_session/wrapped_run_count"
INPUT_BATCH_SIZE = "/tensorflow/serving/batching_session/input_batch_size"
PROCESSED_BATCH_SIZE = "/tensorflow/serving/batching_session/processed_batch_size"
PADDING_SIZE = "/tensorflow/serving/batching_session/padding_size"

_BATCH_SIZE_BUCKETS = exponential_buckets(1, 2, 14)


def default_registry() -> Registry:
    """The metrics a tensorflow_model_server binary registers when it starts."""
    r = Registry()
    latency = exponential_buckets(10, 1.8, 33)
    r.counter(REQUEST_COUNT, "model_name", "status")
    r.sampler(REQUEST_LATENCY, latency, "model_name", "API", "entrypoint")
    r.sampler(RUNTIME_LATENCY, latency, "model_name", "API", "runtime")
    r.counter(LOAD_ATTEMPT_COUNT, "model_path", "status")
    r.counter(LOAD_LATENCY, "model_path")
    r.sampler(QUEUING_LATENCY, exponential_buckets(100, 1.2, 52), "thread_pool_name")
    r.counter(WRAPPED_RUN_COUNT)
    return r


def record_input_batch(registry: Registry, size: int) -> None:
    """batching_util.h RecordInputBatchSize, once per input tensor of a task."""
    registry.sampler(INPUT_BATCH_SIZE, _BATCH_SIZE_BUCKETS)
    registry.observe(INPUT_BATCH_SIZE, (), size)


def record_processed_batch(registry: Registry, size: int, padded: int) -> None:
    """batching_util.h RecordPaddingSize and RecordProcessedBatchSize, once per batch."""
    registry.sampler(PADDING_SIZE, _BATCH_SIZE_BUCKETS, "execution_batch_size")
    registry.sampler(PROCESSED_BATCH_SIZE, _BATCH_SIZE_BUCKETS)
    registry.observe(PADDING_SIZE, (str(padded),), padded - size)
    registry.observe(PROCESSED_BATCH_SIZE, (), padded)
