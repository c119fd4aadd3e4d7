"""The builtin canary analysis: TF Serving's metrics page read, its counters turned into figures
over a window, and the pure verdict on the canary's figures against the stable pods'."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tfleet.api.model import BuiltinAnalysis
from tfleet.engine import analysis
from tfleet.health.traffic import (
    Counters,
    Snapshot,
    TrafficFigures,
    TrafficHistory,
    figures_from_json,
    figures_to_json,
    merge,
    parse_page,
)

# Exponential(10, 1.8, 33) microseconds, as TF Serving's request_latency; the last is +Inf.
BOUNDS = tuple([10 * 1.8**i for i in range(33)] + [math.inf])

# A page as tensorflow_serving/util/prometheus_exporter.cc writes it (trimmed to three buckets).
PAGE = """# TYPE :tensorflow:serving:request_count counter
:tensorflow:serving:request_count{model_name="fraud",status="OK"} 120
:tensorflow:serving:request_count{model_name="fraud",status="INTERNAL"} 3
:tensorflow:serving:request_count{model_name="other",status="OK"} 999
# TYPE :tensorflow:serving:request_latency histogram
:tensorflow:serving:request_latency_bucket{model_name="fraud",API="Predict",entrypoint="GRPC",le="1000"} 10
:tensorflow:serving:request_latency_bucket{model_name="fraud",API="Predict",entrypoint="GRPC",le="2000"} 90
:tensorflow:serving:request_latency_bucket{model_name="fraud",API="Predict",entrypoint="GRPC",le="+Inf"} 100
:tensorflow:serving:request_latency_sum{model_name="fraud",API="Predict",entrypoint="GRPC"} 150000
:tensorflow:serving:request_latency_count{model_name="fraud",API="Predict",entrypoint="GRPC"} 100
:tensorflow:serving:request_latency_bucket{model_name="fraud",API="predict",entrypoint="REST",le="1000"} 5
:tensorflow:serving:request_latency_bucket{model_name="fraud",API="predict",entrypoint="REST",le="2000"} 15
:tensorflow:serving:request_latency_bucket{model_name="fraud",API="predict",entrypoint="REST",le="+Inf"} 20
"""


def test_the_page_gives_the_models_counts_by_status_and_its_histogram_over_every_api() -> None:
    counters = parse_page(PAGE, "fraud")
    assert counters.by_status == {"OK": 120.0, "INTERNAL": 3.0}
    assert counters.latency_bounds == (1000.0, 2000.0, math.inf)
    assert counters.latency_cumulative == (15.0, 105.0, 120.0)  # gRPC and REST summed
    assert parse_page(PAGE, "absent") == Counters()


def snap(at: float, ok: float, errors: float = 0.0, cumulative: tuple[float, ...] = ()) -> Snapshot:
    statuses = {"OK": ok, **({"UNAVAILABLE": errors} if errors else {})}
    bounds = (1000.0, 2000.0, math.inf) if cumulative else ()
    return Snapshot(at, Counters(statuses, bounds, cumulative))


def test_the_history_answers_with_the_increase_since_a_time_from_the_first_snapshot_after_it() -> None:
    history = TrafficHistory(100)
    history.reset(snap(100, 7, 0, (7, 7, 7)))  # the baseline: the pre-flight's 7 requests
    history.add(snap(105, 17, 1, (15, 17, 17)))
    history.add(snap(110, 57, 3, (15, 50, 57)))
    since_start = history.since(0)  # older than the baseline: counted from it
    assert (since_start.requests, since_start.errors, since_start.by_status) == (53, 3, {"OK": 50, "UNAVAILABLE": 3})
    assert since_start.latency_counts == (8, 35, 7)
    assert (since_start.start, since_start.end) == (100, 110)
    later = history.since(103)  # from the snapshot at 105: nothing served before 103 is counted
    assert (later.requests, later.errors, later.latency_counts) == (42, 2, (0, 33, 7))
    assert history.since(111).requests == 0  # nothing after the latest snapshot yet
    # A restarted TF Serving starts its counters again: the drop is read as a start from zero.
    history.add(snap(115, 4, 0, (4, 4, 4)))
    after = history.since(103)
    assert (after.requests, after.by_status["OK"]) == (46, 44)
    assert TrafficHistory(10).since(0) == TrafficFigures(start=0.0, end=0.0)


def test_figures_travel_as_json_and_pods_add_up() -> None:
    one = TrafficFigures(requests=10, errors=1, by_status={"OK": 9, "INTERNAL": 1}, latency_bounds=BOUNDS[:3],
                         latency_counts=(1, 8, 0), start=5.0, end=9.0)
    again, extra = figures_from_json(figures_to_json(one, model="m", counting=True))
    assert (again, extra) == (one, {"model": "m", "counting": True})
    two = merge([one, TrafficFigures(requests=30, errors=0, by_status={"OK": 30}, latency_bounds=BOUNDS[:3],
                                     latency_counts=(0, 0, 30), start=4.0, end=8.0)])
    assert (two.requests, two.errors, two.pods, two.latency_counts, two.start, two.end) == (40, 1, 2, (1, 8, 30),
                                                                                          4.0, 9.0)
    assert two.by_status == {"OK": 39, "INTERNAL": 1}
    assert merge([]).pods == 0


def latency(millis: float, count: int) -> TrafficFigures:
    """`count` successful requests that all took about `millis`."""
    micros = millis * 1000
    counts = [0] * len(BOUNDS)
    counts[next(i for i, b in enumerate(BOUNDS) if micros < b)] = count
    return TrafficFigures(requests=count, by_status={"OK": count}, latency_bounds=BOUNDS, latency_counts=tuple(counts))


def test_the_p99_is_interpolated_within_tf_servings_buckets() -> None:
    assert latency(1.0, 0).quantile(0.99) is None
    # 40 ms lies in [37480, 67464) us: the p99 of a hundred of them is 99% of the way up.
    assert latency(40.0, 100).quantile(0.99) == pytest.approx((37480.2 + 0.99 * (67464.4 - 37480.2)) / 1e6, rel=1e-4)
    # Twice as slow lands one bucket up: the ratio reads as the buckets' growth, 1.8.
    assert latency(80.0, 100).quantile(0.99) / latency(40.0, 100).quantile(0.99) == pytest.approx(1.8, rel=1e-3)


def with_errors(figures: TrafficFigures, errors: int) -> TrafficFigures:
    return TrafficFigures(requests=figures.requests + errors, errors=errors, latency_bounds=figures.latency_bounds,
                          latency_counts=figures.latency_counts)


def comparison(canary: TrafficFigures, stable: TrafficFigures, pods: tuple[int, int] = (1, 1),
               stable_pods: tuple[int, int] = (2, 2)) -> analysis.Comparison:
    return analysis.Comparison("abc123", 0, 25, canary, stable, pods, stable_pods)


CHECK = BuiltinAnalysis(max_error_rate_increase=0.01, max_latency_ratio=1.3, min_requests=200)
EITHER = dict(elapsed=30.0, deadline=600.0)


@pytest.mark.parametrize(("check", "canary", "stable", "when", "ok", "message"), [
    (CHECK, latency(40, 400), latency(40, 900), EITHER, True,
     "analysis passed over 400 canary and 900 stable requests: canary error rate 0.0% vs stable 0.0%, allowed +1%; "
     "canary p99 latency 67.2ms vs stable 67.2ms (1.00x), allowed 1.3x"),
    (CHECK, with_errors(latency(40, 380), 20), with_errors(latency(40, 898), 2), EITHER, False,
     "canary error rate 5.0% vs stable 0.2%, allowed +1%"),
    (CHECK, with_errors(latency(40, 396), 4), with_errors(latency(40, 900), 0), EITHER, True,
     "analysis passed over 400 canary and 900 stable requests: canary error rate 1.0% vs stable 0.0%, allowed +1%; "
     "canary p99 latency 67.2ms vs stable 67.2ms (1.00x), allowed 1.3x"),
    (CHECK, latency(80, 400), latency(40, 900), EITHER, False,
     "canary p99 latency 120.9ms vs stable 67.2ms (1.80x), allowed 1.3x"),
    (BuiltinAnalysis(max_latency_ratio=3.0, min_requests=200), latency(80, 400), latency(40, 900), EITHER, True,
     "analysis passed over 400 canary and 900 stable requests: canary p99 latency 120.9ms vs stable 67.2ms (1.80x), "
     "allowed 3x"),
    (CHECK, latency(40, 150), latency(40, 900), EITHER, None,
     "not enough traffic to judge yet: the canary served 150 and the stable pods 900 requests since the step began, "
     "200 each are needed"),
    (CHECK, latency(40, 150), latency(40, 900), dict(elapsed=600.0, deadline=600.0), False,
     "not enough traffic to judge by the progress deadline: the canary served 150 and the stable pods 900 requests "
     "since the step began, 200 each are needed"),
    (BuiltinAnalysis(max_error_rate_increase=0.01, min_requests=200, on_insufficient_traffic="Pass"),
     latency(40, 150), latency(40, 900), dict(elapsed=601.0, deadline=600.0), True,
     "passed without a verdict: not enough traffic to judge by the progress deadline (the canary served 150 and the "
     "stable pods 900 requests since the step began, 200 each are needed), and onInsufficientTraffic is Pass"),
    (CHECK, with_errors(latency(40, 0), 300), latency(40, 900), EITHER, False,
     "canary error rate 100.0% vs stable 0.0%, allowed +1%"),
    (BuiltinAnalysis(max_latency_ratio=2.0, min_requests=10), with_errors(latency(40, 0), 30), latency(40, 900),
     EITHER, None, "the canary answered no request successfully since the step began: no latency to compare"),
])
def test_the_verdict(check: BuiltinAnalysis, canary: TrafficFigures, stable: TrafficFigures, when: dict[str, float],
                     ok: bool | None, message: str) -> None:
    result = analysis.judge(check, comparison(canary, stable), **when)
    assert (result.ok, result.message) == (ok, message)
    assert result.comparison is not None and not result.source_failed


def test_bridges_that_do_not_report_hold_the_step_as_a_failed_source() -> None:
    nothing = analysis.judge(CHECK, comparison(TrafficFigures(pods=0), latency(40, 900), pods=(0, 2)), **EITHER)
    assert (nothing.ok, nothing.source_failed) == (None, True)
    assert nothing.message == "no canary pod's health bridge reported TF Serving's figures (0 of 2 answered)"
    stable = analysis.judge(CHECK, comparison(latency(40, 900), TrafficFigures(pods=0), stable_pods=(0, 3)), **EITHER)
    assert stable.message == "no stable pod's health bridge reported TF Serving's figures (0 of 3 answered)"
    # Pods that are not ready yet are not asked: that is no failure of the source.
    starting = analysis.judge(CHECK, comparison(TrafficFigures(pods=0), latency(40, 900), pods=(0, 0)), **EITHER)
    assert (starting.ok, starting.source_failed, starting.message) == (
        None, False, "no canary pod is ready to report TF Serving's figures yet")


def test_two_checks_pass_only_together() -> None:
    yes, no, wait = analysis.Result(True, "a"), analysis.Result(False, "b"), analysis.Result(None, "c",
                                                                                             source_failed=True)
    assert analysis.combine(yes, None) is yes
    assert analysis.combine(None, None) is None
    assert (analysis.combine(yes, no).ok, analysis.combine(yes, no).message) == (False, "b")
    assert (analysis.combine(wait, yes).ok, analysis.combine(wait, yes).source_failed) == (None, True)
    assert (analysis.combine(wait, no).ok, analysis.combine(yes, yes).message) == (False, "a; a")


def record(records: Any, result: analysis.Result | None, now: str = "2026-01-01T00:00:10.000Z") -> Any:
    return analysis.record(records, result, now)


def test_each_step_keeps_its_last_figures_and_verdict() -> None:
    first = analysis.judge(CHECK, comparison(latency(40, 150), latency(40, 900)), **EITHER)
    records = record(None, first)
    assert records == [{
        "revision": "abc123", "step": 0, "weight": 25, "verdict": "Pending", "message": first.message,
        "canary": {"pods": 1, "requests": 150, "errors": 0, "errorRate": 0.0, "p99LatencyMilliseconds": 67.167},
        "stable": {"pods": 2, "requests": 900, "errors": 0, "errorRate": 0.0, "p99LatencyMilliseconds": 67.167},
        "checkedAt": "2026-01-01T00:00:10.000Z"}]
    failed = analysis.judge(CHECK, comparison(with_errors(latency(40, 380), 20), latency(40, 900)), **EITHER)
    records = record(records, failed)
    assert [(r["step"], r["verdict"], r["canary"]["errors"]) for r in records] == [(0, "Failed", 20)]
    promotion = analysis.Comparison("abc123", None, 100, latency(40, 500), latency(40, 500), (2, 2), (2, 2))
    records = record(records, analysis.judge(CHECK, promotion, **EITHER))
    assert [(r.get("step"), r["weight"], r["verdict"]) for r in records] == [(0, 25, "Failed"), (None, 100, "Passed")]
    assert record(records, None) == records  # a pass without figures keeps them
    assert record(records, analysis.Result(True, "prometheus only")) == records
    other = analysis.Comparison("def456", 0, 25, latency(40, 5), latency(40, 5), (1, 1), (1, 1))
    assert [r["revision"] for r in record(records, analysis.judge(CHECK, other, **EITHER))] == ["def456"]
