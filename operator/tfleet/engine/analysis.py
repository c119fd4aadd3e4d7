"""Metric gates for canary steps: a Prometheus instant query compared with a threshold.

`render_query`, `parse_response` and `evaluate` are pure; the query itself is sent by
`tfleet.runtime.prometheus`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from tfleet.api.model import PrometheusAnalysis


@dataclass(frozen=True)
class Result:
    """The outcome of one check. `ok` None means the check could not run (inconclusive);
    `source_failed` that it could not because its source failed (unreachable, or an answer
    that cannot be used), rather than because the query has no data yet."""

    ok: bool | None
    message: str
    value: float | None = None
    source_failed: bool = False


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
