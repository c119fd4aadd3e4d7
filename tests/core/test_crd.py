"""The generated CRD: a valid, structural, documented apiextensions/v1 object that accepts every
example and whose CEL rules agree with the typed model's checks."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tfleet.api.crd import build_crd, crd_yaml
from tfleet.api.model import check_update, parse_spec
from tfleet.api.schema import ValidationError

from .isvc_factory import (
    REPO,
    IsvcBuilder,
    example_names,
    load_example,
    make_isvc,
    strict_jsonschema,
)

CRD_FILE = REPO / "crds" / "inferenceservices.tfleet.dev.yaml"

Node = dict[str, Any]


def root_schema() -> Node:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def walk(node: Node, path: str = "") -> Iterator[tuple[str, Node]]:
    """Every schema node with its path (".spec.model", ".spec.gpu.tolerations[]", ".spec.pod.labels{}")."""
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


# --------------------------------------------------------------------------- the CRD object


def test_crd_validates_as_apiextensions_v1() -> None:
    crd = build_crd()
    kubernetes_validate.validate(crd, "1.35", strict=True)
    # The checked-in file is what users apply; validate that exact text too.
    kubernetes_validate.validate(yaml.safe_load(CRD_FILE.read_text()), "1.35", strict=True)


def test_crd_file_has_not_drifted() -> None:
    assert CRD_FILE.read_text() == crd_yaml(), (
        f"{CRD_FILE.relative_to(REPO)} differs from the typed API in operator/tfleet/api.py: run `make manifests`"
    )


def test_schema_is_structural() -> None:
    preserved = []
    for path, node in walk(root_schema()):
        if node.get("x-kubernetes-preserve-unknown-fields"):
            preserved.append(path)
            assert node.get("type") == "object", path
            continue
        if node.get("x-kubernetes-int-or-string"):
            # The only untyped node allowed: anyOf integer/string, nothing else under it.
            assert "type" not in node, path
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            continue
        assert "type" in node, f"{path or '<root>'} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        for forbidden in ("anyOf", "oneOf", "allOf", "not", "$ref"):
            assert forbidden not in node, f"{path}: {forbidden}"
    # A pass-through is justified only where Kubernetes already validates the content.
    assert preserved == [".spec.pod.affinity"]


def test_every_field_has_a_description() -> None:
    for path, node in walk(root_schema()):
        # Items and map values are described by the field that holds them.
        if path and not path.endswith(("[]", "{}")):
            assert node.get("description", "").strip(), f"{path} has no description (kubectl explain shows nothing)"


def test_status_is_not_schemaless() -> None:
    status = root_schema()["properties"]["status"]
    assert "x-kubernetes-preserve-unknown-fields" not in status
    assert {"observedGeneration", "conditions", "replicas", "readyReplicas", "selector", "servingVersion",
            "endpoints", "rollout"} <= set(status["properties"])
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) >= {"type", "status", "reason", "message", "lastTransitionTime"}


def test_names_columns_and_subresources() -> None:
    crd = build_crd()
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "inferenceservices.tfleet.dev"
    assert spec["group"] == "tfleet.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["plural"] == "inferenceservices"
    assert spec["names"]["kind"] == "InferenceService"
    assert spec["names"]["shortNames"] == ["tfis"]
    assert spec["names"]["categories"] == ["tfleet"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    # Weight is a wide-output (priority 1) column.
    assert [n for n, c in columns.items() if not c.get("priority")] == [
        "Model", "Version", "Target", "Ready", "Status", "Rollout", "Age"]
    assert columns["Age"]["type"] == "date"
    # Every column's jsonPath names a field the schema has (a typo would show an empty column).
    paths = {p for p, _ in walk(root_schema())}
    for column in version["additionalPrinterColumns"]:
        assert column["jsonPath"] in paths or column["jsonPath"] == ".metadata.creationTimestamp", column
    # The scale subresource's paths exist in the schema, with the right types.
    props = root_schema()["properties"]
    assert props["spec"]["properties"]["replicas"]["type"] == "integer"
    assert props["status"]["properties"]["replicas"]["type"] == "integer"
    assert props["status"]["properties"]["selector"]["type"] == "string"


# --------------------------------------------------------------------------- jsonschema


SPEC_VALIDATOR = jsonschema.Draft202012Validator(strict_jsonschema(root_schema()["properties"]["spec"]))


def schema_errors(spec: Any) -> list[str]:
    return sorted(
        "spec" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path) + f": {e.validator}"
        for e in SPEC_VALIDATOR.iter_errors(spec)
    )


@pytest.mark.parametrize("name", example_names())
def test_schema_accepts_every_example(name: str) -> None:
    assert schema_errors(load_example(name)["spec"]) == []


def _python_errors(spec: Any) -> list[str]:
    try:
        parse_spec(spec)
    except ValidationError as exc:
        return [str(e) for e in exc.errors]
    return []


# Specs the schema alone decides (no CEL, no semantic rule): schema and typed model must agree.
SCHEMA_CASES = [
    pytest.param(make_isvc(), [], id="a minimal spec"),
    pytest.param(make_isvc().gpu(1).batching(8, [4, 8]).autoscaling(2, 4).canary(5, 50).credentials("c")
                 .pod(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                     "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}),
                 [], id="every feature"),
    pytest.param(make_isvc().set("spec.model.bogus", 1), ["spec.model: additionalProperties"], id="unknown field"),
    pytest.param(make_isvc().set("spec.pod.tolerations", [{"key": "a", "unknown": 1}]),
                 ["spec.pod.tolerations[0]: additionalProperties"], id="unknown field inside a list item"),
    pytest.param(make_isvc().replicas("2"), ["spec.replicas: type"], id="a string for an integer"),
    pytest.param(make_isvc().headless(1), ["spec.service.headless: type"], id="a number for a boolean"),
    pytest.param(make_isvc().set("spec.server.extraArgs", "--x"), ["spec.server.extraArgs: type"], id="a string for a list"),
    pytest.param(make_isvc().service_type("ExternalName"), ["spec.service.type: enum"], id="a value outside the enum"),
    pytest.param(make_isvc().replicas(-1), ["spec.replicas: minimum"], id="below the minimum"),
    pytest.param(make_isvc().gpu(17), ["spec.gpu.count: maximum"], id="above the maximum"),
    pytest.param(make_isvc().unset("spec.model.basePath"), ["spec.model: required"], id="a missing required field"),
    pytest.param(make_isvc().model_name("a b"), ["spec.model.name: pattern"], id="a model name off the pattern"),
    pytest.param(make_isvc().resources(requests={"cpu": "1 core"}), ["spec.resources.requests.cpu: pattern"],
                 id="a quantity off the pattern"),
    pytest.param(make_isvc().resources(requests={"cpu": 2, "memory": "1.5Gi"}), [], id="quantities as int and string"),
    pytest.param(make_isvc().resources(requests={"memory": "1K"}), ["spec.resources.requests.memory: pattern"],
                 id="a binary suffix without i"),
    pytest.param(make_isvc().set("spec.rollout.steps", [{"weight": 10, "pause": "10 s"}]),
                 ["spec.rollout.steps[0].pause: pattern"], id="a duration off the pattern"),
    pytest.param(make_isvc().set("spec.rollout.maxSurge", True), ["spec.rollout.maxSurge: anyOf"],
                 id="a boolean for an int-or-string"),
    pytest.param(make_isvc().canary(*range(1, 12)), ["spec.rollout.steps: maxItems"], id="too many steps"),
    pytest.param(make_isvc().base_path(""), ["spec.model.basePath: minLength"], id="an empty base path"),
    pytest.param(make_isvc().credentials("S3_Creds"), ["spec.model.credentialsSecret: pattern"],
                 id="a Secret name no Secret can have"),
    pytest.param(make_isvc().gpu(1, resource_name="gpu"), ["spec.gpu.resourceName: pattern"],
                 id="a GPU resource without its domain"),
    pytest.param(make_isvc().pod(affinity=[]), ["spec.pod.affinity: type"], id="a list for the affinity object"),
]


@pytest.mark.parametrize(("manifest", "expected"), SCHEMA_CASES)
def test_schema_and_typed_model_agree(manifest: IsvcBuilder, expected: list[str]) -> None:
    spec = manifest.manifest()["spec"]
    assert schema_errors(spec) == expected
    python = _python_errors(spec)
    assert bool(python) == bool(expected), python
    # Both name the same field.
    for schema_error in expected:
        field_path = schema_error.rsplit(":", 1)[0]
        assert any(e.startswith(field_path) for e in python), (schema_error, python)


# --------------------------------------------------------------------------- CEL


def apply_defaults(node: Node, value: Any) -> Any:
    """`value` with the schema's defaults filled in, as the API server does before validating."""
    value = copy.deepcopy(value)
    if isinstance(value, dict) and "properties" in node:
        for name, prop in node["properties"].items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                value[name] = apply_defaults(prop, value[name])
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        value = [apply_defaults(node["items"], v) for v in value]
    return value


_CEL = celpy.Environment()
_PROGRAMS: dict[str, Any] = {}


def _program(rule: str) -> Any:
    if rule not in _PROGRAMS:
        _PROGRAMS[rule] = _CEL.program(_CEL.compile(rule))
    return _PROGRAMS[rule]


def cel_failures(node: Node, value: Any, old: Any = None, path: str = "spec") -> list[tuple[str, str]]:
    """(field path, message) of every x-kubernetes-validations rule that `value` breaks.

    Transition rules (those that use oldSelf) run only when an old value exists, as on the
    API server.
    """
    failures: list[tuple[str, str]] = []
    for rule in node.get("x-kubernetes-validations", []):
        transition = "oldSelf" in rule["rule"]
        if transition and old is None:
            continue
        activation = {"self": celpy.json_to_cel(value)}
        if transition:
            activation["oldSelf"] = celpy.json_to_cel(old)
        if not bool(_program(rule["rule"]).evaluate(activation)):
            failures.append((path + rule.get("fieldPath", ""), rule["message"]))
    if isinstance(value, dict):
        for name, prop in (node.get("properties") or {}).items():
            if name in value:
                sub_old = old.get(name) if isinstance(old, dict) else None
                failures += cel_failures(prop, value[name], sub_old, f"{path}.{name}")
    return failures


def spec_cel_failures(spec: Any, old_spec: Any = None) -> list[tuple[str, str]]:
    node = root_schema()["properties"]["spec"]
    old = apply_defaults(node, old_spec) if old_spec is not None else None
    return cel_failures(node, apply_defaults(node, spec), old)


RULE_PATHS = ("spec.autoscaling.minReplicas", "spec.batching.allowedBatchSizes", "spec.server.restPort",
              "spec.rollout.steps", "spec.model.name", "spec.model.basePath", "spec.pod.drainSeconds")


def python_rule_paths(spec: Any) -> set[str]:
    """The rule field paths the typed model's checks complain about."""
    return {rule for rule in RULE_PATHS for error in _python_errors(spec) if error.startswith(rule)}


CEL_CASES = [
    # autoscaling
    pytest.param(make_isvc().autoscaling(2, 5), [], id="minReplicas below maxReplicas"),
    pytest.param(make_isvc().autoscaling(5, 5), [], id="minReplicas equal to maxReplicas"),
    pytest.param(make_isvc().autoscaling(6, 5),
                 [("spec.autoscaling.minReplicas", "minReplicas must be less than or equal to maxReplicas")],
                 id="minReplicas above maxReplicas"),
    pytest.param(make_isvc().autoscaling(None, 1), [], id="the defaulted minReplicas with maxReplicas 1"),
    # batching
    pytest.param(make_isvc().batching(32), [], id="no allowed batch sizes"),
    pytest.param(make_isvc().batching(32, []), [], id="an empty list of allowed batch sizes"),
    pytest.param(make_isvc().batching(32, [8, 16, 32]), [], id="increasing sizes ending at the maximum"),
    pytest.param(make_isvc().batching(32, [8, 16]),
                 [("spec.batching.allowedBatchSizes", "the last allowed batch size must equal maxBatchSize")],
                 id="the last size below the maximum"),
    pytest.param(make_isvc().batching(16, [8, 32]),
                 [("spec.batching.allowedBatchSizes", "the last allowed batch size must equal maxBatchSize")],
                 id="the last size above the maximum"),
    pytest.param(make_isvc().batching(32, [16, 8, 32]),
                 [("spec.batching.allowedBatchSizes", "allowedBatchSizes must be strictly increasing")],
                 id="sizes out of order"),
    pytest.param(make_isvc().batching(32, [8, 8, 32]),
                 [("spec.batching.allowedBatchSizes", "allowedBatchSizes must be strictly increasing")],
                 id="a repeated size"),
    pytest.param(make_isvc().batching(16, [*range(1, 16), 16]), [], id="sixteen sizes, the most allowed"),
    pytest.param(make_isvc().batching(16, [*range(1, 15), 16, 16]),
                 [("spec.batching.allowedBatchSizes", "allowedBatchSizes must be strictly increasing")],
                 id="a repeat at the very end of the longest list"),
    pytest.param(make_isvc().batching(32, [0, 32]),
                 [("spec.batching.allowedBatchSizes", "allowed batch sizes must be at least 1")],
                 id="a size of zero"),
    pytest.param(make_isvc().batching(32, [32, 16]),
                 [("spec.batching.allowedBatchSizes", "the last allowed batch size must equal maxBatchSize"),
                  ("spec.batching.allowedBatchSizes", "allowedBatchSizes must be strictly increasing")],
                 id="decreasing sizes that also end below the maximum"),
    # server
    pytest.param(make_isvc().server(grpcPort=9000, restPort=9001), [], id="distinct ports"),
    pytest.param(make_isvc().server(grpcPort=9000, restPort=9000),
                 [("spec.server.restPort", "grpcPort and restPort must differ")], id="the same port twice"),
    pytest.param(make_isvc().server(restPort=8500),
                 [("spec.server.restPort", "grpcPort and restPort must differ")],
                 id="a REST port equal to the defaulted gRPC port"),
    # rollout
    pytest.param(make_isvc().canary(10, 50), [], id="increasing weights"),
    pytest.param(make_isvc().canary(100), [], id="a single step at 100"),
    pytest.param(make_isvc().canary(), [], id="no steps"),
    pytest.param(make_isvc(), [], id="the defaulted steps"),
    pytest.param(make_isvc().canary(50, 10),
                 [("spec.rollout.steps", "rollout step weights must be strictly increasing")], id="decreasing weights"),
    pytest.param(make_isvc().canary(10, 20, 20),
                 [("spec.rollout.steps", "rollout step weights must be strictly increasing")], id="a repeated weight"),
    pytest.param(make_isvc().canary(*range(10, 101, 10)), [], id="ten steps, the most allowed"),
    pytest.param(make_isvc().canary(*range(10, 91, 10), 90),
                 [("spec.rollout.steps", "rollout step weights must be strictly increasing")],
                 id="a repeat at the very end of the longest list"),
    # model.basePath
    pytest.param(make_isvc().base_path("gs://models/resnet..v2/x"), [], id="dots inside a path segment"),
    pytest.param(make_isvc().base_path("pvc://models/resnet/../../etc"),
                 [("spec.model.basePath", 'basePath must not contain a ".." path segment')], id="a .. segment"),
    pytest.param(make_isvc().base_path("/models/.."),
                 [("spec.model.basePath", 'basePath must not contain a ".." path segment')], id="a .. at the end"),
    pytest.param(make_isvc().base_path("gs://models/resnet\nmodel_platform: x"),
                 [("spec.model.basePath", "basePath must not contain control characters")], id="a newline"),
    pytest.param(make_isvc().base_path("gs://models/res\tnet"),
                 [("spec.model.basePath", "basePath must not contain control characters")], id="a tab"),
    # pod
    pytest.param(make_isvc().pod(drainSeconds=10, terminationGracePeriodSeconds=11), [], id="drain below the grace"),
    pytest.param(make_isvc().pod(drainSeconds=45),
                 [("spec.pod.drainSeconds", "drainSeconds must be less than terminationGracePeriodSeconds")],
                 id="drain equal to the defaulted grace period"),
    pytest.param(make_isvc().pod(drainSeconds=5, terminationGracePeriodSeconds=2),
                 [("spec.pod.drainSeconds", "drainSeconds must be less than terminationGracePeriodSeconds")],
                 id="drain above the grace period"),
]


@pytest.mark.parametrize(("manifest", "expected"), CEL_CASES)
def test_cel_rules_and_python_checks_agree(manifest: IsvcBuilder, expected: list[tuple[str, str]]) -> None:
    spec = manifest.manifest()["spec"]
    assert spec_cel_failures(spec) == expected
    assert python_rule_paths(spec) == {path for path, _ in expected}


def test_every_cel_rule_is_exercised() -> None:
    rules = [(path, rule["message"]) for path, node in walk(root_schema())
             for rule in node.get("x-kubernetes-validations", [])]
    exercised = {message for param in CEL_CASES for _, message in param.values[1]} | {"model.name is immutable"}
    assert {message for _, message in rules} == exercised
    assert {path for path, _ in rules} == {".spec.model", ".spec.autoscaling", ".spec.batching", ".spec.server",
                                           ".spec.rollout", ".spec.pod"}


def test_step_weight_range_is_in_the_schema() -> None:
    # "within 1..100" is the schema's job; the CEL rule only orders the weights.
    weight = root_schema()["properties"]["spec"]["properties"]["rollout"]["properties"]["steps"]["items"]["properties"]["weight"]
    assert (weight["minimum"], weight["maximum"]) == (1, 100)
    assert schema_errors(make_isvc().canary(0, 101).manifest()["spec"]) == [
        "spec.rollout.steps[0].weight: minimum", "spec.rollout.steps[1].weight: maximum"]


UPDATE_CASES = [
    pytest.param(None, None, True, id="no model name before or after"),
    pytest.param("resnet", "resnet", True, id="the same model name"),
    pytest.param("resnet", "bert", False, id="a renamed model"),
    pytest.param(None, "resnet", False, id="a model name set where there was none"),
    pytest.param("resnet", None, False, id="a model name removed"),
]


@pytest.mark.parametrize(("old_name", "new_name", "allowed"), UPDATE_CASES)
def test_model_name_transition_rule_agrees_with_check_update(old_name: str | None, new_name: str | None, allowed: bool) -> None:
    def manifest(name: str | None, version: int) -> dict[str, Any]:
        builder = make_isvc("x").version(version)
        if name is not None:
            builder.model_name(name)
        return builder.manifest()

    old, new = manifest(old_name, 1), manifest(new_name, 2)
    failures = spec_cel_failures(new["spec"], old["spec"])
    assert failures == ([] if allowed else [("spec.model.name", "model.name is immutable")])
    python = check_update(parse_spec(old["spec"]), parse_spec(new["spec"]))
    assert (python == []) is allowed
    # Creating an object never runs a transition rule.
    assert spec_cel_failures(new["spec"]) == []


@pytest.mark.parametrize("name", example_names())
def test_every_example_passes_every_cel_rule(name: str) -> None:
    spec = load_example(name)["spec"]
    assert spec_cel_failures(spec, spec) == []


def test_defaults_in_the_schema_match_the_typed_model() -> None:
    # What the API server stores after defaulting must parse to the same typed spec as the raw input.
    spec = make_isvc().batching(8).autoscaling(None, 3).manifest()["spec"]
    defaulted = apply_defaults(root_schema()["properties"]["spec"], spec)
    assert defaulted != spec
    assert parse_spec(defaulted) == parse_spec(spec)

