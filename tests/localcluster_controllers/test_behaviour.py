"""Declarative pod behaviour: parsing, rules and precedence."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from e2e.localcluster.controllers import behaviour as bh


def pod(
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    ns: str = "ml",
    **container: Any,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "p",
            "namespace": ns,
            "labels": labels or {},
            "annotations": annotations or {},
        },
        "spec": {
            "containers": [{"name": "serving", "image": "tensorflow/serving:2.19.0", **container}]
        },
    }


@pytest.mark.parametrize(
    ("text", "kind", "delay"),
    [
        ("ready", "ready", None),
        ("ready-after=3s", "ready", 3.0),
        ("ready-after=500ms", "ready", 0.5),
        ("ready-after=2", "ready", 2.0),
        ("ready-after=1m", "ready", 60.0),
        ("never-ready", "never-ready", None),
        (" crash-loop ", "crash-loop", None),
        ("image-pull-error", "image-pull-error", None),
    ],
)
def test_parse_behaviour(text, kind, delay):
    b = bh.parse_behaviour(text)
    assert (b.kind, b.ready_after) == (kind, delay)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("explode", "unknown behaviour 'explode'"),
        ("ready-after", "ready-after needs a duration"),
        ("ready-after=soon", "invalid duration 'soon'"),
        ("crash-loop=3", "takes no argument"),
    ],
)
def test_invalid_behaviours_say_what_is_wrong(text, message):
    with pytest.raises(bh.BehaviourError, match=message):
        bh.parse_behaviour(text)


def test_annotation_wins_over_rules_and_rules_over_default():
    rules = bh.parse_rules([{"match": {"namespace": "ml"}, "behaviour": "never-ready"}])
    assert bh.behaviour_for(pod(), []) == bh.DEFAULT
    assert bh.behaviour_for(pod(), rules).kind == "never-ready"
    assert bh.behaviour_for(pod({bh.ANNOTATION: "crash-loop"}), rules).kind == "crash-loop"
    assert bh.behaviour_for(pod(ns="other"), rules) == bh.DEFAULT


def test_first_matching_rule_wins():
    rules = bh.parse_rules(
        [
            {"match": {"argContains": "--model_version=3"}, "behaviour": "crash-loop"},
            {"match": {}, "behaviour": "ready-after=1s"},
        ]
    )
    assert (
        bh.behaviour_for(pod(args=["--port=8500", "--model_version=3"]), rules).kind == "crash-loop"
    )
    assert bh.behaviour_for(pod(args=["--model_version=2"]), rules).ready_after == 1.0


@pytest.mark.parametrize(
    ("match", "matching_pod", "other_pod"),
    [
        (
            {"labelSelector": "app=resnet,track!=canary"},
            pod(labels={"app": "resnet"}),
            pod(labels={"app": "resnet", "track": "canary"}),
        ),
        (
            {"labelSelector": "tier in (gpu, tpu)"},
            pod(labels={"tier": "gpu"}),
            pod(labels={"tier": "cpu"}),
        ),
        ({"labelSelector": "!legacy"}, pod(labels={}), pod(labels={"legacy": "yes"})),
        (
            {"labelSelector": {"app": "resnet"}},
            pod(labels={"app": "resnet"}),
            pod(labels={"app": "bert"}),
        ),
        (
            {"labelSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}},
            pod(labels={"app": "x"}),
            pod(labels={}),
        ),
        ({"imageContains": ":2.19"}, pod(), pod(image="tensorflow/serving:2.18.0")),
        (
            {"envContains": "MODEL_NAME=resnet"},
            pod(env=[{"name": "MODEL_NAME", "value": "resnet"}]),
            pod(env=[{"name": "MODEL_NAME", "value": "bert"}]),
        ),
        (
            {"argContains": "--enable_batching"},
            pod(command=["tensorflow_model_server", "--enable_batching"]),
            pod(args=["--port=8500"]),
        ),
        ({"namespace": "ml", "imageContains": "serving"}, pod(), pod(ns="prod")),
    ],
)
def test_rule_match_fields(match, matching_pod, other_pod):
    rules = bh.parse_rules([{"match": match, "behaviour": "never-ready"}])
    assert bh.behaviour_for(matching_pod, rules).kind == "never-ready"
    assert bh.behaviour_for(other_pod, rules) == bh.DEFAULT


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"match": {}}, "must be a list"),
        ([{"match": {}}], r"rules\[0\].behaviour: required"),
        ([{"match": {"podName": "x"}, "behaviour": "ready"}], r"rules\[0\].match: unknown field"),
        (
            [{"match": {}, "behaviour": "ready"}, {"behaviour": "nope"}],
            r"rules\[1\].behaviour: unknown behaviour",
        ),
        (
            [{"match": {"labelSelector": "a in (b"}, "behaviour": "ready"}],
            r"rules\[0\].match.labelSelector",
        ),
    ],
)
def test_invalid_rules_name_the_entry(rules, message):
    with pytest.raises(bh.BehaviourError, match=message):
        bh.parse_rules(rules)


def test_invalid_annotation_is_reported_as_a_pod_error():
    with pytest.raises(
        bh.PodBehaviourError, match=r"annotation localcluster\.tfleet\.dev/behaviour"
    ):
        bh.behaviour_for(pod({bh.ANNOTATION: "sometimes"}), [])


def test_rules_configmap_round_trips_and_validates():
    rules = [{"match": {"labelSelector": "app=x"}, "behaviour": "crash-loop"}]
    cm = bh.rules_configmap(rules)
    assert cm["metadata"] == {"name": "behaviours", "namespace": "localcluster-system"}
    assert yaml.safe_load(cm["data"]["rules.yaml"]) == rules
    assert bh.rules_from_configmap(cm)[0].behaviour.kind == "crash-loop"
    with pytest.raises(bh.BehaviourError):
        bh.rules_configmap([{"behaviour": "bogus"}])
    assert bh.rules_from_configmap(None) == []
    assert bh.rules_from_configmap({"data": {}}) == []


def test_selector_string_parser():
    assert bh.parse_selector_string("a=1,b!=2,c in (x,y),d notin (z),e,!f") == [
        {"key": "a", "operator": "In", "values": ["1"]},
        {"key": "b", "operator": "NotIn", "values": ["2"]},
        {"key": "c", "operator": "In", "values": ["x", "y"]},
        {"key": "d", "operator": "NotIn", "values": ["z"]},
        {"key": "e", "operator": "Exists"},
        {"key": "f", "operator": "DoesNotExist"},
    ]
