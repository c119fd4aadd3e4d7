"""An operator upgrade brings a new health bridge image: it must start no rollout. The image is
not part of a revision, a running revision keeps the image its Deployment was made with, and
a new revision gets the operator's current one."""

from __future__ import annotations

import pytest

from tfleet.desired import children as builders
from tfleet.desired import health_wiring
from tfleet.engine import plan as reconcile
from tfleet.engine.plan import plan_children

from .isvc_factory import make_isvc
from .test_reconcile import LATER, converged

OLD, NEW = "ghcr.io/tfleet/tfleet:0.1.0", "registry.example.com/tfleet/tfleet:0.2.0"


def bridge_image_of(deployment: dict) -> str | None:
    return health_wiring.kept_bridge_image(deployment)


def test_the_revision_does_not_depend_on_the_bridge_image(monkeypatch: pytest.MonkeyPatch):
    isvc = make_isvc("x").version(3).isvc()
    monkeypatch.setenv("TFLEET_BRIDGE_IMAGE", OLD)
    before = builders.compute_revision(isvc).name
    monkeypatch.setenv("TFLEET_BRIDGE_IMAGE", NEW)
    assert builders.compute_revision(isvc).name == before


def test_an_upgraded_operator_writes_nothing_to_a_running_revision(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TFLEET_BRIDGE_IMAGE", OLD)
    body, children = converged(make_isvc("x").version(3).replicas(2))
    (deployment,) = [c for (kind, _), c in children.items() if kind == "Deployment"]
    assert bridge_image_of(deployment) == OLD
    monkeypatch.setenv("TFLEET_BRIDGE_IMAGE", NEW)  # the upgrade
    result = plan_children(body, children, [], LATER)
    assert result.apply == [] and result.scale == [] and result.delete == []


def test_a_new_revision_gets_the_current_bridge_image(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TFLEET_BRIDGE_IMAGE", OLD)
    body, children = converged(make_isvc("x").version(3).replicas(2))
    monkeypatch.setenv("TFLEET_BRIDGE_IMAGE", NEW)
    bumped = make_isvc("x").version(4).replicas(2).manifest()
    bumped["status"] = body["status"]
    result = plan_children(bumped, children, [], LATER)
    new = [m for m in result.apply if m["kind"] == "Deployment"]
    assert len(new) == 1 and bridge_image_of(new[0]) == NEW
    # And the stable revision's Deployment is not rebuilt with the new image.
    assert all(reconcile.revision_of(m) != reconcile.revision_of(next(iter(
        c for (k, _), c in children.items() if k == "Deployment"))) for m in new)
