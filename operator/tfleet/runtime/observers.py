"""Inputs from outside the cluster's API: what serving pods' health bridges report (load errors,
pre-flight failures, TF Serving's traffic figures), and what the metric gate's Prometheus answers. Each observer asks only while someone waits for the
answer, caches it for its interval, and hands the planner plain data.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from tfleet.api.model import BuiltinAnalysis, InferenceService, PrometheusAnalysis
from tfleet.api.schema import duration_seconds
from tfleet.api.times import parse_time
from tfleet.api.vocabulary import ACTIVE_PHASES, Phase
from tfleet.engine import analysis
from tfleet.engine.observe import PodSummary
from tfleet.engine.rollout import State
from tfleet.health.traffic import TrafficFigures, merge
from tfleet.runtime import bridge_client, prometheus

log = logging.getLogger(__name__)

Key = tuple[str, str]
Manifest = dict[str, Any]

# How often a pod that is not ready has its health bridge asked why.
BRIDGE_POLL_SECONDS = 5.0
# How often the ready pods of an unpinned InferenceService are asked which version they serve:
# TF Serving picks a newer version up in place, and nothing else in the cluster says so.
VERSION_POLL_SECONDS = 60.0


@dataclass(frozen=True)
class Observation:
    """What an observer found, and when it wants to look again (None: no need)."""

    pods: list[PodSummary]
    look_again_after: float | None = None


def _fetch_served_version(pod_ip: str) -> int | None:
    return bridge_client.fetch_served_version(pod_ip)


def _fetch_report(pod_ip: str) -> bridge_client.BridgeReport | None:
    # Looked up at call time, so a test can stand in for the bridge's HTTP endpoint.
    return bridge_client.fetch_report(pod_ip)


_NO_REPORT = bridge_client.BridgeReport()


class BridgeReports:
    """TF Serving's own load errors and failed pre-flights, asked of the health bridges of pods
    that are not ready."""

    def __init__(self, monotonic: Callable[[], float],
                 fetch: Callable[[str], bridge_client.BridgeReport | None] = _fetch_report):
        self._monotonic = monotonic
        self._fetch = fetch
        self._guard = threading.Lock()
        # (isvc, pod) -> (when, report)
        self._answers: dict[tuple[Key, str], tuple[float, bridge_client.BridgeReport]] = {}
        self._versions: dict[tuple[Key, str], tuple[float, int | None]] = {}  # (isvc, pod) -> (when, version)

    def with_load_errors(self, key: Key, pods: list[PodSummary]) -> Observation:
        """`pods` with the load errors and pre-flight failures their bridges report. The caller
        asks only while someone waits for those pods (during a rollout, or while the
        InferenceService is not Ready): a healthy fleet is never polled."""
        waiting = [p for p in pods if not p.ready and p.ip and not p.crash_looping and not p.image_pull_failing
                   and not p.load_error]
        if not waiting:
            return Observation(pods)
        now = self._monotonic()
        answers: dict[str, bridge_client.BridgeReport] = {}
        for pod in waiting:
            with self._guard:
                cached = self._answers.get((key, pod.name))
            if cached is None or now - cached[0] >= BRIDGE_POLL_SECONDS:
                report = self._fetch(pod.ip) or _NO_REPORT
                previous = cached[1] if cached is not None else _NO_REPORT
                cached = (now, report)
                with self._guard:
                    self._answers[(key, pod.name)] = cached
                # The rollout of a version that cannot load, or fails its pre-flight, is rolled back at once.
                if report.load_error and report.load_error != previous.load_error:
                    log.warning("Pod %s/%s reported a model load failure: %s", key[0], pod.name, report.load_error)
                if report.preflight_error and report.preflight_error != previous.preflight_error:
                    log.warning("Pod %s/%s reported a failed pre-flight: %s", key[0], pod.name,
                                report.preflight_error)
            answers[pod.name] = cached[1]
        pods = [replace(p, load_error=answers[p.name].load_error or p.load_error,
                        preflight_error=answers[p.name].preflight_error)
                if p.name in answers else p for p in pods]
        return Observation(pods, look_again_after=BRIDGE_POLL_SECONDS)

    def with_served_versions(self, key: Key, pods: list[PodSummary],
                             fetch: Callable[[str], int | None] | None = None) -> Observation:
        """`pods` with the versions the ready ones serve, asked of their bridges at most once per
        VERSION_POLL_SECONDS each (the caller asks only for unpinned InferenceServices)."""
        fetch = fetch or _fetch_served_version
        now = self._monotonic()
        versions: dict[str, int | None] = {}
        for pod in pods:
            if not (pod.ready and pod.ip):
                continue
            with self._guard:
                cached = self._versions.get((key, pod.name))
            if cached is None or now - cached[0] >= VERSION_POLL_SECONDS:
                cached = (now, fetch(pod.ip))
                with self._guard:
                    self._versions[(key, pod.name)] = cached
            versions[pod.name] = cached[1]
        pods = [replace(p, served_version=versions[p.name]) if versions.get(p.name) is not None else p for p in pods]
        return Observation(pods, look_again_after=VERSION_POLL_SECONDS)

    def forget(self, key: Key) -> None:
        """Drop the answers of an InferenceService's pods."""
        with self._guard:
            for answer in [k for k in self._answers if k[0] == key]:
                del self._answers[answer]
            for answer in [k for k in self._versions if k[0] == key]:
                del self._versions[answer]


@dataclass(frozen=True)
class GateCheck:
    result: analysis.Result | None
    look_again_after: float | None = None


def _fetch_traffic(pod_ip: str, since: str) -> TrafficFigures | None:
    # Looked up at call time, so a test can stand in for the bridge's HTTP endpoint.
    return bridge_client.fetch_traffic(pod_ip, since)


# Bridges asked at once for their figures.
TRAFFIC_WORKERS = 8


class MetricChecks:
    """The canary's checks, each run when due (once per its interval per rollout): the Prometheus
    query, and the builtin analysis, which asks the health bridges of the canary's and the stable
    pods what their TF Serving served since the step began."""

    def __init__(self, monotonic: Callable[[], float],
                 query: Callable[..., analysis.Result] | None = None,
                 traffic: Callable[[str, str], TrafficFigures | None] = _fetch_traffic):
        self._monotonic = monotonic
        self._query = query
        self._traffic = traffic
        self._guard = threading.Lock()
        self._checks: dict[Key, tuple[str, float, analysis.Result]] = {}  # canary, when, result
        # (canary, step start), when, elapsed in the step, result
        self._comparisons: dict[Key, tuple[tuple[str, str | None], float, float, analysis.Result]] = {}

    def check(self, key: Key, isvc: InferenceService | None, state: State, pods: Sequence[PodSummary] = (),
              now: datetime | None = None) -> GateCheck:
        gate = isvc.spec.rollout.analysis if isvc else None
        if isvc is None or gate is None or state.canary is None:
            return GateCheck(None)
        if state.phase not in (Phase.PROGRESSING, Phase.PROMOTING):
            return GateCheck(None)
        checks = []
        if gate.prometheus is not None:
            checks.append(self._prometheus(key, gate.prometheus, state))
        if gate.builtin is not None:
            checks.append(self._builtin(key, isvc, gate.builtin, state, pods, now))
        if not checks:
            return GateCheck(None)
        result = checks[0].result if len(checks) == 1 else analysis.combine(checks[0].result, checks[1].result)
        looks = [c.look_again_after for c in checks if c.look_again_after is not None]
        return GateCheck(result, look_again_after=min(looks) if looks else None)

    def _prometheus(self, key: Key, check: PrometheusAnalysis, state: State) -> GateCheck:
        assert state.canary is not None
        interval = duration_seconds(check.interval)
        now = self._monotonic()
        with self._guard:
            cached = self._checks.get(key)
        if cached and cached[0] == state.canary and now - cached[1] < interval:
            return GateCheck(cached[2], look_again_after=max(0.0, interval - (now - cached[1])))
        query = analysis.render_query(check, revision=state.canary, namespace=key[0], name=key[1])
        result = (self._query or prometheus.query_prometheus)(check, query)
        with self._guard:
            self._checks[key] = (state.canary, self._monotonic(), result)
        # A failed check rolls the canary back; a source that fails holds the step.
        level = logging.WARNING if result.ok is False or result.source_failed else logging.INFO
        log.log(level, "Ran the metric check of InferenceService %s/%s: %s", *key, result.message)
        return GateCheck(result, look_again_after=interval)

    def _builtin(self, key: Key, isvc: InferenceService, check: BuiltinAnalysis, state: State,
                 pods: Sequence[PodSummary], now: datetime | None) -> GateCheck:
        assert state.canary is not None
        interval = duration_seconds(check.interval)
        deadline = float(isvc.spec.rollout.progress_deadline_seconds)
        started = parse_time(state.step_started_at)
        elapsed = (now.replace(tzinfo=None) - started).total_seconds() if now is not None and started else 0.0
        step = (state.canary, state.step_started_at)
        mono = self._monotonic()
        with self._guard:
            cached = self._comparisons.get(key)
        # Looked at again at the deadline too: that is when too little traffic becomes a verdict.
        if cached and cached[0] == step and mono - cached[1] < interval and not cached[2] < deadline <= elapsed:
            return GateCheck(cached[3], look_again_after=self._next_look(interval - (mono - cached[1]), elapsed,
                                                                         deadline, cached[3]))
        # The ready pods: those that take traffic, and whose bridges count it.
        canary = [p for p in pods if p.revision == state.canary and p.ip and p.ready]
        stable = [p for p in pods if p.revision == state.stable and p.ip and p.ready]
        since = state.step_started_at or ""
        asked = canary + stable
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(TRAFFIC_WORKERS, len(asked)))) as pool:
            answers = list(pool.map(lambda p: self._traffic(p.ip, since), asked))
        canary_figures = [f for f in answers[:len(canary)] if f is not None]
        stable_figures = [f for f in answers[len(canary):] if f is not None]
        comparison = analysis.Comparison(
            revision=state.canary, step=state.step, weight=state.weight,
            canary=merge(canary_figures), stable=merge(stable_figures),
            canary_pods=(len(canary_figures), len(canary)), stable_pods=(len(stable_figures), len(stable)))
        result = analysis.judge(check, comparison, elapsed=elapsed, deadline=deadline)
        with self._guard:
            self._comparisons[key] = (step, self._monotonic(), elapsed, result)
        level = logging.WARNING if result.ok is False or result.source_failed else logging.INFO
        log.log(level, "Ran the builtin analysis of InferenceService %s/%s: %s", *key, result.message)
        return GateCheck(result, look_again_after=self._next_look(interval, elapsed, deadline, result))

    @staticmethod
    def _next_look(after: float, elapsed: float, deadline: float, result: analysis.Result) -> float:
        if result.ok is None and elapsed < deadline:
            return max(0.0, min(after, deadline - elapsed))
        return max(0.0, after)

    def forget(self, key: Key) -> None:
        with self._guard:
            self._checks.pop(key, None)
            self._comparisons.pop(key, None)


def rollout_active(body: Manifest) -> bool:
    return ((body.get("status") or {}).get("rollout") or {}).get("phase") in ACTIVE_PHASES
