"""The metric gate: Prometheus answers parsed, compared and queried over real HTTP."""

from __future__ import annotations

import json

import pytest

from tests.fakes.prometheus import FakePrometheus
from tfleet.api.model import PrometheusAnalysis
from tfleet.engine import analysis
from tfleet.runtime import prometheus


def check(threshold: float = 0.05, comparison: str = "LessOrEqual", address: str = "http://x") -> PrometheusAnalysis:
    return PrometheusAnalysis(address=address, query='rate(errors{rev="{{revision}}",ns="{{namespace}}",isvc="{{name}}"}[1m])',
                              threshold=threshold, comparison=comparison)


@pytest.mark.parametrize(("comparison", "value", "ok", "text"), [
    ("LessOrEqual", 0.01, True, "metric check passed: 0.01 <= threshold 0.05"),
    ("LessOrEqual", 0.05, True, "metric check passed: 0.05 <= threshold 0.05"),
    ("LessOrEqual", 0.2, False, "metric check failed: 0.2 > threshold 0.05"),
    ("GreaterOrEqual", 0.2, True, "metric check passed: 0.2 >= threshold 0.05"),
    ("GreaterOrEqual", 0.01, False, "metric check failed: 0.01 < threshold 0.05"),
    ("LessOrEqual", None, None, "the query returned no data"),
    ("LessOrEqual", float("nan"), None, "the query returned NaN"),
])
def test_a_value_is_compared_with_the_threshold(comparison, value, ok, text):
    result = analysis.evaluate(check(comparison=comparison), value)
    assert (result.ok, result.message) == (ok, text)


def test_placeholders_name_the_canary():
    query = analysis.render_query(check(), revision="abc123", namespace="ml", name="fraud")
    assert query == 'rate(errors{rev="abc123",ns="ml",isvc="fraud"}[1m])'


@pytest.mark.parametrize(("payload", "expected"), [
    ({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "0.5"]}]}}, 0.5),
    ({"status": "success", "data": {"resultType": "vector", "result": []}}, None),
    ({"status": "success", "data": {"resultType": "scalar", "result": [1, "2"]}}, 2.0),
])
def test_instant_query_answers_are_parsed(payload, expected):
    assert analysis.parse_response(json.dumps(payload)) == expected


@pytest.mark.parametrize(("payload", "message"), [
    ({"status": "error", "error": "parse error at char 3"}, "parse error at char 3"),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "1"]}, {"value": [1, "2"]}]}},
     "returned 2 series"),
    ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "unsupported result type"),
])
def test_unusable_answers_are_errors(payload, message):
    with pytest.raises(ValueError, match=message):
        analysis.parse_response(json.dumps(payload))


def test_a_query_against_a_prometheus_http_api():
    with FakePrometheus() as prom:
        prom.value = 0.3
        gate = check(address=prom.address)
        result = prometheus.query_prometheus(gate, analysis.render_query(gate, revision="r1", namespace="ml", name="f"))
        assert (result.ok, result.value) == (False, 0.3)
        assert prom.queries == ['rate(errors{rev="r1",ns="ml",isvc="f"}[1m])']
        prom.value = None
        assert prometheus.query_prometheus(gate, "q").ok is None


def test_an_unreachable_prometheus_is_inconclusive_not_a_failure():
    result = prometheus.query_prometheus(check(address="http://127.0.0.1:9"), "up", timeout=1)
    assert result.ok is None
    assert "did not answer" in result.message
