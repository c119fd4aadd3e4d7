"""Prometheus metrics of the operator.

| metric | type | labels |
| --- | --- | --- |
| `tfleet_reconciles_total` | counter | `result`: success, retry (a retryable API failure), error |
| `tfleet_reconcile_duration_seconds` | histogram | |
| `tfleet_api_writes_total` | counter | `verb` (apply, delete, patch, create, update), `kind` |
| `tfleet_child_changes_total` | counter | none: reconciles that wrote children (each posts at most one Event about them) |
| `tfleet_inferenceservices` | gauge | `namespace`, `name`, `condition`, `status` (True, False, Unknown) |
| `tfleet_rollouts` | gauge | `namespace`, `name`, `phase` (status.rollout.phase) |
| `tfleet_rollbacks_total` | counter | |
| `tfleet_leader` | gauge | 1 while this process holds the leader Lease (or runs without election) |
| `tfleet_build_info` | gauge | `version` |

The two gauges about InferenceServices have series per object: `tfleet_inferenceservices`
one per condition type it reports (7: Ready, ModelAvailable, Progressing, Degraded,
Reconciling, Stalled, RolledOut), with the condition's current status and the value 1;
`tfleet_rollouts` one with its rollout phase and the value 1 (none before its first status).
So an InferenceService is at most 8 series, an alert can name the object, and `sum` still
counts objects (`sum(tfleet_inferenceservices{condition="Degraded",status="True"})`). A
series goes away when its status changes or the object is deleted. Every other metric has
labels of a fixed, small set of values, whatever the size of the fleet.

The gauges are computed from the bodies the operator sees (watch events and the responses
to its own status patches), so they cost no API request. A rollback is counted when an
object's rollout phase becomes RolledBack while this process watches it; a standby that
takes over does not count rollbacks that happened before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tfleet import __version__
from tfleet.api.vocabulary import Phase
from tfleet.runtime.fleet import FleetHooks

ROLLED_BACK = Phase.ROLLED_BACK
Key = tuple[str, str]  # an InferenceService's (namespace, name)
RESULTS = ("success", "retry", "error")
# Reconciles are API round trips: a few milliseconds when nothing changes, seconds when
# the API server is slow or a reconcile writes every child.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class Summary:
    """What the metrics need of one InferenceService."""

    conditions: Mapping[str, str] = field(default_factory=dict)
    rollout_phase: str | None = None


def summarize(body: Mapping[str, Any]) -> Summary:
    status = body.get("status") or {}
    conditions = {
        str(c["type"]): str(c.get("status") or "Unknown")
        for c in status.get("conditions") or []
        if isinstance(c, dict) and c.get("type")
    }
    rollout = status.get("rollout") or {}
    phase = rollout.get("phase") if isinstance(rollout, dict) else None
    return Summary(conditions, str(phase) if phase else None)


def is_rollback(previous: Summary | None, current: Summary) -> bool:
    """A rollback happened between two observations of the same object.

    The first observation (previous is None) is not one: the object may have rolled back
    long before this process started.
    """
    return previous is not None and current.rollout_phase == ROLLED_BACK and previous.rollout_phase != ROLLED_BACK


def condition_series(summaries: Mapping[Key, Summary]) -> list[tuple[str, str, str, str]]:
    """(namespace, name, condition, status) of every condition of every InferenceService."""
    return sorted((ns, name, type_, status) for (ns, name), summary in summaries.items()
                  for type_, status in summary.conditions.items())


def phase_series(summaries: Mapping[Key, Summary]) -> list[tuple[str, str, str]]:
    """(namespace, name, phase) of every InferenceService with a rollout phase."""
    return sorted((ns, name, s.rollout_phase) for (ns, name), s in summaries.items() if s.rollout_phase)


class _FleetCollector(Collector):
    """Gauges computed at scrape time from the latest summaries."""

    def __init__(self, metrics: Metrics):
        self._metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        summaries = self._metrics.summaries()
        by_condition = GaugeMetricFamily(
            "tfleet_inferenceservices",
            "1 per InferenceService and condition type, labelled with the condition's status.",
            labels=["namespace", "name", "condition", "status"])
        for labels in condition_series(summaries):
            by_condition.add_metric(list(labels), 1)
        yield by_condition
        rollouts = GaugeMetricFamily("tfleet_rollouts", "1 per InferenceService, labelled with its rollout phase.",
                                     labels=["namespace", "name", "phase"])
        for phase_labels in phase_series(summaries):
            rollouts.add_metric(list(phase_labels), 1)
        yield rollouts


class Metrics:
    """The operator's metrics, in a registry of their own. Thread-safe."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.reconciles = PromCounter("tfleet_reconciles", "Reconciles of InferenceServices, by result.",
                                      ["result"], registry=self.registry)
        for result in RESULTS:
            self.reconciles.labels(result)
        self.reconcile_duration = Histogram("tfleet_reconcile_duration_seconds",
                                            "Time one reconcile of an InferenceService took.",
                                            buckets=DURATION_BUCKETS, registry=self.registry)
        self.api_writes = PromCounter("tfleet_api_writes", "Writes to the Kubernetes API, by verb and kind.",
                                      ["verb", "kind"], registry=self.registry)
        self.child_changes = PromCounter("tfleet_child_changes", "Reconciles that wrote children.",
                                         registry=self.registry)
        self.rollbacks = PromCounter("tfleet_rollbacks", "Rollouts that ended rolled back.", registry=self.registry)
        self.leader = Gauge("tfleet_leader", "1 while this process is the active operator.", registry=self.registry)
        build = Gauge("tfleet_build_info", "The running tfleet version.", ["version"], registry=self.registry)
        build.labels(__version__).set(1)
        self._lock = threading.Lock()
        self._summaries: dict[Key, Summary] = {}
        self.registry.register(_FleetCollector(self))

    def summaries(self) -> dict[Key, Summary]:
        with self._lock:
            return dict(self._summaries)

    def record_write(self, verb: str, kind: str) -> None:
        self.api_writes.labels(verb, kind).inc()

    def record_reconcile(self, result: str, seconds: float) -> None:
        self.reconciles.labels(result).inc()
        self.reconcile_duration.observe(seconds)

    def observe_isvc(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        with self._lock:
            if event_type == "DELETED":
                self._summaries.pop(key, None)
                return
            current = summarize(body)
            previous = self._summaries.get(key)
            self._summaries[key] = current
        if is_rollback(previous, current):
            self.rollbacks.inc()

    def fleet_hooks(self) -> FleetHooks:
        """The hooks through which the fleet reports its reconciles and the bodies it sees."""
        return FleetHooks(reconciled=lambda _key, result, seconds: self.record_reconcile(result, seconds),
                          observed_isvc=self.observe_isvc,
                          changed_children=lambda _key, _writes: self.child_changes.inc())

    def serve(self, port: int, addr: str = "0.0.0.0") -> Callable[[], None]:
        """Serve /metrics on a port (0 picks one); returns a function that stops the server."""
        server, thread = start_http_server(port, addr=addr, registry=self.registry)
        self.port = server.server_port

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

        return stop
