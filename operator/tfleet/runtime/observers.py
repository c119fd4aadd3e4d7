"""Inputs from outside the cluster's API: what serving pods' health bridges report, and what
the metric gate's Prometheus answers. Each observer asks only while someone waits for the
answer, caches it for its interval, and hands the planner plain data.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from tfleet.api.model import InferenceService
from tfleet.api.schema import duration_seconds
from tfleet.api.vocabulary import ACTIVE_PHASES, Phase
from tfleet.engine import analysis
from tfleet.engine.observe import PodSummary
from tfleet.engine.rollout import State
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


def _fetch_load_error(pod_ip: str) -> str | None:
    # Looked up at call time, so a test can stand in for the bridge's HTTP endpoint.
    return bridge_client.fetch_load_error(pod_ip)


class BridgeReports:
    """TF Serving's own load errors, asked of the health bridges of pods that are not ready."""

    def __init__(self, monotonic: Callable[[], float], fetch: Callable[[str], str | None] = _fetch_load_error):
        self._monotonic = monotonic
        self._fetch = fetch
        self._guard = threading.Lock()
        self._answers: dict[tuple[Key, str], tuple[float, str]] = {}  # (isvc, pod) -> (when, load error)
        self._versions: dict[tuple[Key, str], tuple[float, int | None]] = {}  # (isvc, pod) -> (when, version)

    def with_load_errors(self, key: Key, pods: list[PodSummary]) -> Observation:
        """`pods` with the load errors their bridges report. The caller asks only while someone
        waits for those pods (during a rollout, or while the InferenceService is not Ready): a
        healthy fleet is never polled."""
        waiting = [p for p in pods if not p.ready and p.ip and not p.crash_looping and not p.image_pull_failing
                   and not p.load_error]
        if not waiting:
            return Observation(pods)
        now = self._monotonic()
        answers: dict[str, str] = {}
        for pod in waiting:
            with self._guard:
                cached = self._answers.get((key, pod.name))
            if cached is None or now - cached[0] >= BRIDGE_POLL_SECONDS:
                error = self._fetch(pod.ip) or ""
                cached = (now, error)
                with self._guard:
                    self._answers[(key, pod.name)] = cached
                if error:
                    # The rollout of a version that cannot load is rolled back at once.
                    log.warning("Pod %s/%s reported a model load failure: %s", key[0], pod.name, error)
            answers[pod.name] = cached[1]
        pods = [replace(p, load_error=answers[p.name]) if answers.get(p.name) else p for p in pods]
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


class MetricChecks:
    """The canary's metric gate, run when due: once per interval per rollout."""

    def __init__(self, monotonic: Callable[[], float],
                 query: Callable[..., analysis.Result] | None = None):
        self._monotonic = monotonic
        self._query = query
        self._guard = threading.Lock()
        self._checks: dict[Key, tuple[str, float, analysis.Result]] = {}  # canary, when, result

    def check(self, key: Key, isvc: InferenceService | None, state: State) -> GateCheck:
        gate = isvc.spec.rollout.analysis if isvc else None
        if gate is None or gate.prometheus is None or state.canary is None:
            return GateCheck(None)
        if state.phase not in (Phase.PROGRESSING, Phase.PROMOTING):
            return GateCheck(None)
        interval = duration_seconds(gate.prometheus.interval)
        now = self._monotonic()
        with self._guard:
            cached = self._checks.get(key)
        if cached and cached[0] == state.canary and now - cached[1] < interval:
            return GateCheck(cached[2])
        query = analysis.render_query(gate.prometheus, revision=state.canary, namespace=key[0], name=key[1])
        result = (self._query or prometheus.query_prometheus)(gate.prometheus, query)
        with self._guard:
            self._checks[key] = (state.canary, self._monotonic(), result)
        # A failed check rolls the canary back; a source that fails holds the step.
        level = logging.WARNING if result.ok is False or result.source_failed else logging.INFO
        log.log(level, "Ran the metric check of InferenceService %s/%s: %s", *key, result.message)
        return GateCheck(result, look_again_after=interval)

    def forget(self, key: Key) -> None:
        with self._guard:
            self._checks.pop(key, None)


def rollout_active(body: Manifest) -> bool:
    return ((body.get("status") or {}).get("rollout") or {}).get("phase") in ACTIVE_PHASES
