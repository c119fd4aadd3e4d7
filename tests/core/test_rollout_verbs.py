"""`tfleet rollout undo`: which revision it returns to, and the spec it writes."""

from __future__ import annotations

from tfleet.cli.rollout import spec_for_revision, undo_target


def body(**rollout):
    return {"status": {"rollout": rollout}}


def test_undo_returns_to_the_previous_revision_or_to_stable_during_a_rollout():
    assert undo_target(body(stableRevision="b", history=["a"]), None) == ("a", "the previous revision a")
    assert undo_target(body(stableRevision="b", canaryRevision="c", history=["a"]), None) == \
        ("b", "the stable revision b")
    assert undo_target(body(stableRevision="b", queuedRevision="c"), None) == ("b", "the stable revision b")
    assert undo_target(body(stableRevision="b"), None)[0] is None
    assert undo_target(body(stableRevision="b", history=["a"]), "a") == ("a", "revision a")
    target, why = undo_target(body(stableRevision="b", history=["a"]), "zzz")
    assert target is None and "not kept" in why and "a, b" in why


def test_undo_keeps_the_current_scale_services_and_rollout_settings():
    current = {"model": {"basePath": "gs://m/x", "version": 4}, "replicas": 7, "service": {"headless": False},
               "rollout": {"steps": []}}
    recorded = {"model": {"basePath": "gs://m/x", "version": 3}, "batching": {"maxBatchSize": 8}}
    assert spec_for_revision(current, recorded) == {
        "model": {"basePath": "gs://m/x", "version": 3}, "batching": {"maxBatchSize": 8},
        "replicas": 7, "service": {"headless": False}, "rollout": {"steps": []}}
