"""Metric gates for canary steps: a Prometheus instant query compared with a threshold, and the
builtin analysis, which compares the canary's pods with the stable pods from TF Serving's own
figures (`tfleet.health.traffic`, served by each pod's health bridge).

Everything here is pure: `render_query`, `parse_response` and `evaluate` for Prometheus (the
query itself is sent by `tfleet.runtime.prometheus`), `judge` for the builtin analysis (the
figures are asked by `tfleet.runtime.observers`), `combine` for both, and `record` for the
figures kept per step in status.rollout.analysis.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from tfleet.api.model import BuiltinAnalysis, PrometheusAnalysis
from tfleet.health.traffic import TrafficFigures

PASSED, FAILED, PENDING = "Passed", "Failed", "Pending"


@dataclass(frozen=True)
class Comparison:
    """The builtin analysis of one step: the figures of both sides, and the verdict."""

    revision: str  # the canary revision
    step: int | None  # index into spec.rollout.steps; None during the promotion
    weight: int | None
    canary: TrafficFigures
    stable: TrafficFigures
    canary_pods: tuple[int, int]  # (pods that reported, pods asked)
    stable_pods: tuple[int, int]


@dataclass(frozen=True)
class Result:
    """The outcome of one check. `ok` None means the check could not run (inconclusive);
    `source_failed` that it could not because its source failed (unreachable, or an answer
    that cannot be used), rather than because the query has no data yet. `comparison` holds
    the builtin analysis's figures."""

    ok: bool | None
    message: str
    value: float | None = None
    source_failed: bool = False
    comparison: Comparison | None = None

    @property
    def verdict(self) -> str:
        return PASSED if self.ok is True else FAILED if self.ok is False else PENDING


def render_query(check: PrometheusAnalysis, *, revision: str, namespace: str, name: str) -> str:
    return (check.query.replace("{{revision}}", revision)
            .replace("{{namespace}}", namespace).replace("{{name}}", name))


def parse_response(body: str) -> float | None:
    """The single number of an instant query's answer; None when there is none."""
    payload = json.loads(body)
    if payload.get("status") != "success":
        raise ValueError(payload.get("error") or "query failed")
    data = payload.get("data") or {}
    result = data.get("result")
    if data.get("resultType") == "scalar" and isinstance(result, list):
        return float(result[1])
    if data.get("resultType") == "vector" and isinstance(result, list):
        if not result:
            return None
        if len(result) > 1:
            raise ValueError(f"the query returned {len(result)} series; it must return one")
        return float(result[0]["value"][1])
    raise ValueError(f"unsupported result type {data.get('resultType')!r}")


def evaluate(check: PrometheusAnalysis, value: float | None) -> Result:
    if value is None:
        return Result(None, "the query returned no data")
    if math.isnan(value):
        return Result(None, "the query returned NaN", value)
    if check.comparison == "GreaterOrEqual":
        ok, relation = value >= check.threshold, ">=" if value >= check.threshold else "<"
    else:
        ok, relation = value <= check.threshold, "<=" if value <= check.threshold else ">"
    return Result(ok, f"metric check {'passed' if ok else 'failed'}: {value:g} {relation} threshold {check.threshold:g}",
                  value)


# --------------------------------------------------------------------------- builtin analysis

P99 = 0.99


def _percent(rate: float) -> str:
    return f"{rate * 100:.1f}%"


def _millis(seconds: float) -> str:
    return f"{seconds * 1000:.1f}ms"


def judge(check: BuiltinAnalysis, comparison: Comparison, *, elapsed: float, deadline: float) -> Result:
    """The verdict on one step's figures, `elapsed` seconds into it, with its progress
    deadline at `deadline` seconds: hold (None) until both sides served minRequests, then pass
    or fail on each figure the spec bounds."""
    canary, stable = comparison.canary, comparison.stable

    def result(ok: bool | None, message: str, source_failed: bool = False) -> Result:
        return Result(ok, message, source_failed=source_failed, comparison=comparison)

    reported, asked = comparison.canary_pods
    if asked == 0:
        return result(None, "no canary pod is ready to report TF Serving's figures yet")
    if comparison.stable_pods[1] == 0:
        return result(None, "no stable pod is ready to report TF Serving's figures")
    if reported == 0:
        return result(None, f"no canary pod's health bridge reported TF Serving's figures (0 of {asked} answered)",
                      source_failed=True)
    if comparison.stable_pods[0] == 0:
        return result(None, "no stable pod's health bridge reported TF Serving's figures "
                            f"(0 of {comparison.stable_pods[1]} answered)", source_failed=True)
    need = check.min_requests
    if canary.requests < need or stable.requests < need:
        counts = (f"the canary served {canary.requests} and the stable pods {stable.requests} requests "
                  f"since the step began, {need} each are needed")
        if elapsed < deadline:
            return result(None, f"not enough traffic to judge yet: {counts}")
        if check.on_insufficient_traffic == "Pass":
            return result(True, f"passed without a verdict: not enough traffic to judge by the progress deadline "
                                f"({counts}), and onInsufficientTraffic is Pass")
        return result(False, f"not enough traffic to judge by the progress deadline: {counts}")
    parts: list[str] = []
    if check.max_error_rate_increase is not None:
        allowed = check.max_error_rate_increase
        figure = (f"canary error rate {_percent(canary.error_rate)} vs stable {_percent(stable.error_rate)}, "
                  f"allowed +{allowed * 100:g}%")
        if canary.error_rate - stable.error_rate > allowed + 1e-12:
            return result(False, figure)
        parts.append(figure)
    if check.max_latency_ratio is not None:
        canary_p99, stable_p99 = canary.quantile(P99), stable.quantile(P99)
        if canary_p99 is None or stable_p99 is None or stable_p99 <= 0:
            side = "the canary" if canary_p99 is None else "the stable pods"
            return result(None, f"{side} answered no request successfully since the step began: no latency to compare")
        ratio = canary_p99 / stable_p99
        figure = (f"canary p99 latency {_millis(canary_p99)} vs stable {_millis(stable_p99)} ({ratio:.2f}x), "
                  f"allowed {check.max_latency_ratio:g}x")
        if ratio > check.max_latency_ratio:
            return result(False, figure)
        parts.append(figure)
    return result(True, f"analysis passed over {canary.requests} canary and {stable.requests} stable requests: "
                        + "; ".join(parts))


def combine(first: Result | None, second: Result | None) -> Result | None:
    """Two checks as one: failed if either failed, passed if both passed, else inconclusive."""
    if first is None or second is None:
        return first or second
    comparison = first.comparison or second.comparison
    for r in (first, second):
        if r.ok is False:
            return Result(False, r.message, r.value, r.source_failed, comparison)
    if first.ok is None or second.ok is None:
        waiting = first if first.ok is None else second
        return Result(None, waiting.message, waiting.value, first.source_failed or second.source_failed, comparison)
    return Result(True, f"{first.message}; {second.message}", first.value, False, comparison)


def _side(figures: TrafficFigures, pods: tuple[int, int]) -> dict[str, Any]:
    p99 = figures.quantile(P99)
    out: dict[str, Any] = {"pods": pods[0], "requests": figures.requests, "errors": figures.errors,
                           "errorRate": round(figures.error_rate, 6)}
    if p99 is not None:
        out["p99LatencyMilliseconds"] = round(p99 * 1000, 3)
    return out


# Steps of one rollout that status.rollout.analysis keeps (the steps, and the promotion).
MAX_RECORDS = 11


def record(previous: list[dict[str, Any]] | None, check: Result | None, now: str) -> list[dict[str, Any]]:
    """status.rollout.analysis: per step of the current (or last) canary revision, the builtin
    analysis's last figures for both sides and its verdict. A new canary revision starts the list
    again; a pass without figures keeps it as it is."""
    records = [dict(r) for r in previous or [] if isinstance(r, dict)]
    comparison = check.comparison if check is not None else None
    if comparison is None or check is None:
        return records
    records = [r for r in records if r.get("revision") == comparison.revision]
    entry: dict[str, Any] = {"revision": comparison.revision}
    if comparison.step is not None:
        entry["step"] = comparison.step
    if comparison.weight is not None:
        entry["weight"] = comparison.weight
    entry.update({"verdict": check.verdict, "message": check.message,
                  "canary": _side(comparison.canary, comparison.canary_pods),
                  "stable": _side(comparison.stable, comparison.stable_pods), "checkedAt": now})
    kept = [r for r in records if r.get("step") != comparison.step]
    return sorted([*kept, entry], key=lambda r: (r.get("step") is None, r.get("step") or 0))[-MAX_RECORDS:]
