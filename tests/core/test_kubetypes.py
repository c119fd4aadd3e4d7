"""The affinity shape check: its type table matches the kubernetes client's models, and it
names the field of every wrong type or unknown field."""

from __future__ import annotations

import re
from typing import Any

import kubernetes.client.models as models
import pytest

from tfleet.api.affinity_types import TYPES
from tfleet.api.kubetypes import shape_problems


def reachable(root: str) -> dict[str, dict[str, str]]:
    """{type: {json field: type}} of `root` and every model type it contains."""
    out: dict[str, dict[str, str]] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        if name in out:
            continue
        model: Any = getattr(models, name)
        out[name] = {model.attribute_map[attr]: tp for attr, tp in model.openapi_types.items()}
        for tp in out[name].values():
            todo.extend(re.findall(r"V\d\w+", tp))
    return out


def test_the_type_table_matches_the_kubernetes_client() -> None:
    assert reachable("V1Affinity") == TYPES


GOOD = {
    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]}},
    "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                            "labelSelector": {"matchLabels": {"app": "resnet"}}}}]},
}


def test_a_real_affinity_passes() -> None:
    assert shape_problems(GOOD, "V1Affinity", "a") == []


@pytest.mark.parametrize(("value", "expected"), [
    ({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": "x"}},
     ("a.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution", "must be an object (NodeSelector), got string")),
    ({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": {}}}},
     ("a.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms", "must be an array, got object")),
    ({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": True}]}},
     ("a.podAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight", "must be an integer, got boolean")),
    ({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"podAffinityTerm": {"labelSelector": {"matchLabels": {"app": 1}}}}]}},
     ("a.podAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].podAffinityTerm.labelSelector.matchLabels.app",
      "must be a string, got integer")),
    ({"nodeAfinity": {}},
     ("a.nodeAfinity", "unknown field of Affinity (known fields: nodeAffinity, podAffinity, podAntiAffinity)")),
])
def test_wrong_shapes_are_named(value: dict[str, Any], expected: tuple[str, str]) -> None:
    assert shape_problems(value, "V1Affinity", "a") == [expected]


def test_problems_are_bounded() -> None:
    value = {"nodeAffinity": {f"bogus{i}": 1 for i in range(1000)}}
    assert len(shape_problems(value, "V1Affinity", "a", limit=20)) == 20
