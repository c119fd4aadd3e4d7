"""HorizontalPodAutoscaler decisions without a metrics server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from e2e.localcluster.controllers import hpa

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def make_hpa(
    low: int = 2, high: int = 5, metrics: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"minReplicas": low, "maxReplicas": high}
    if metrics is not None:
        spec["metrics"] = metrics
    return {"metadata": {"name": "h", "namespace": "ns", "generation": 3}, "spec": spec}


@pytest.mark.parametrize(
    ("current", "desired", "rescale", "reasons"),
    [
        (
            3,
            3,
            False,
            {"AbleToScale": "SucceededGetScale", "ScalingActive": "FailedGetResourceMetric"},
        ),
        (1, 2, True, {"AbleToScale": "SucceededRescale", "ScalingLimited": "TooFewReplicas"}),
        (9, 5, True, {"AbleToScale": "SucceededRescale", "ScalingLimited": "TooManyReplicas"}),
        (0, 0, False, {"AbleToScale": "SucceededGetScale", "ScalingActive": "ScalingDisabled"}),
    ],
)
def test_decide_keeps_replicas_in_bounds_and_explains(current, desired, rescale, reasons):
    d = hpa.decide(make_hpa(), current)
    assert (d.desired, d.rescale) == (desired, rescale)
    assert {kind: reason for kind, _, reason, _ in d.conditions} == reasons


def test_missing_metrics_are_explained_per_metric_type():
    pods_metric = [{"type": "Pods", "pods": {"metric": {"name": "qps"}}}]
    d = hpa.decide(make_hpa(metrics=pods_metric), 3)
    active = next(c for c in d.conditions if c[0] == "ScalingActive")
    assert active[2] == "FailedGetPodsMetric" and "unable to get metric qps" in active[3]
    memory = [
        {
            "type": "Resource",
            "resource": {
                "name": "memory",
                "target": {"type": "AverageValue", "averageValue": "1Gi"},
            },
        }
    ]
    active = next(
        c for c in hpa.decide(make_hpa(metrics=memory), 3).conditions if c[0] == "ScalingActive"
    )
    assert "failed to get memory resource metric value" in active[3]


def test_status_keeps_transition_times_and_last_scale_time():
    h = make_hpa()
    first = hpa.hpa_status(h, hpa.decide(h, 1), NOW, rescaled=True)
    assert first["lastScaleTime"] == "2026-01-01T00:00:00Z"
    assert (first["currentReplicas"], first["desiredReplicas"], first["observedGeneration"]) == (
        1,
        2,
        3,
    )
    h["status"] = first
    later = NOW + timedelta(minutes=1)
    second = hpa.hpa_status(h, hpa.decide(h, 2), later, rescaled=False)
    assert second["lastScaleTime"] == first["lastScaleTime"]
    able = next(c for c in second["conditions"] if c["type"] == "AbleToScale")
    assert able["lastTransitionTime"] == "2026-01-01T00:00:00Z"  # still True
    active = next(c for c in second["conditions"] if c["type"] == "ScalingActive")
    assert active["lastTransitionTime"] == "2026-01-01T00:01:00Z"


@pytest.mark.parametrize(
    ("path", "value"), [(".spec.replicas", 4), (".spec.scale.count", 2), (".spec.missing", None)]
)
def test_replicas_at_follows_the_spec_replicas_path(path, value):
    obj = {"spec": {"replicas": 4, "scale": {"count": 2}}}
    assert hpa.replicas_at(obj, path) == value
