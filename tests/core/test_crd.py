"""The generated CRD: a valid, structural, documented apiextensions/v1 object that accepts every
example and whose CEL rules agree with the typed model's checks."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from e2e.localcluster import _cel
from e2e.localcluster.admission import STATIC_ESTIMATED_COST_LIMIT

from tfleet.api.crd import build_crd, crd_yaml
from tfleet.api.model import METADATA_NAME_MESSAGE, check_update, parse_object, parse_spec
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


def cel_failures(node: Node, value: Any, old: Any = None, path: str = "spec") -> list[tuple[str, str]]:
    """(field path, message) of every x-kubernetes-validations rule that `value` breaks.

    The rules run on cel-python with the Kubernetes CEL libraries the API server adds (lists,
    strings), as the local control plane runs them. Transition rules (those that use oldSelf)
    run only when an old value exists, as on the API server.
    """
    failures: list[tuple[str, str]] = []
    for rule in node.get("x-kubernetes-validations", []):
        transition = _cel.mentions_old_self(rule["rule"])
        if transition and old is None:
            continue
        activation = {"self": _cel.to_cel(value, node)}
        if transition:
            activation["oldSelf"] = _cel.to_cel(old, node)
        result = _cel.evaluate(_cel.compile_rule(rule["rule"]), activation)
        assert _cel.is_bool(result), (rule["rule"], result)
        if not result:
            failures.append((path + rule.get("fieldPath", ""), rule["message"]))
    if isinstance(value, dict):
        for name, prop in (node.get("properties") or {}).items():
            if name in value:
                sub_old = old.get(name) if isinstance(old, dict) else None
                failures += cel_failures(prop, value[name], sub_old, f"{path}.{name}")
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, item in enumerate(value):
            failures += cel_failures(node["items"], item, None, f"{path}[{i}]")
    return failures


def spec_cel_failures(spec: Any, old_spec: Any = None) -> list[tuple[str, str]]:
    node = root_schema()["properties"]["spec"]
    old = apply_defaults(node, old_spec) if old_spec is not None else None
    return cel_failures(node, apply_defaults(node, spec), old)


# The fields the rules name. A Python error names the field more closely (the label key, the
# toleration's index): both sides are compared by the rule field their paths start with.
RULE_PATHS = ("spec.autoscaling.minReplicas", "spec.batching.allowedBatchSizes", "spec.server.restPort",
              "spec.server.grpcPort", "spec.server.extraArgs", "spec.rollout.steps", "spec.model.name",
              "spec.model.basePath", "spec.pod.drainSeconds", "spec.image", "spec.gpu.nodeSelector",
              "spec.gpu.tolerations", "spec.pod.tolerations", "spec.pod.nodeSelector", "spec.pod.labels",
              "spec.pod.annotations", "spec.service.annotations")


def rule_path(path: str) -> str:
    matches = [rule for rule in RULE_PATHS if path == rule or path.startswith((f"{rule}.", f"{rule}["))]
    assert matches, f"{path} is not in RULE_PATHS"
    return max(matches, key=len)


def python_rule_paths(spec: Any) -> set[str]:
    """The rule field paths the typed model's checks complain about."""
    return {rule_path(error.split(": ", 1)[0]) for error in _python_errors(spec)}


_STORAGE = ("unsupported storage in basePath: use gs://, s3://, hdfs://, pvc://<claim>/<path> or an "
            "absolute path")
_BUCKET = "basePath must name a bucket: gs://<bucket>/<path> or s3://<bucket>/<path>"
_PVC = "basePath must have the form pvc://<claim>/<path> with a valid claim name"
_GPU_IMAGE = ("image is not a GPU image, but gpu.count is more than 0: use a tag ending in -gpu (for example "
              "tensorflow/serving:2.19.0-gpu)")
_RESERVED = "{} must not be 8510 or 8511: those ports are reserved for the health bridge; choose another port"
_MANAGED = ("extraArgs may not set a flag managed by tfleet (--port, --rest_api_port, --model_config_file, "
            "--model_config_file_poll_wait_seconds, --model_name, --model_base_path, --enable_batching, "
            "--batching_parameters_file, --monitoring_config_file, --grpc_channel_arguments)")
_LABEL_KEY = ("every key of {} must be a valid label key: an optional DNS subdomain prefix and /, then a name of "
              "at most 63 characters (ASCII letters, digits, '-', '_' or '.') that starts and ends with a letter "
              "or digit")
_LABEL_VALUE = ("every value of {} must be a valid label value: empty or consist of ASCII letters, digits, '-', "
                "'_' or '.', and start and end with a letter or digit")
_ANNOTATION_KEY = ("every key of {} must be a valid annotation key: an optional DNS subdomain prefix and /, then a "
                   "name of at most 63 characters (ASCII letters, digits, '-', '_' or '.') that starts and ends "
                   "with a letter or digit, in any case")
_ANNOTATION_SIZE = "{} may not be larger than 262144 bytes (keys and values together)"

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
    # model.basePath: storage
    *[pytest.param(make_isvc().base_path(path), [], id=f"basePath {path}")
      for path in ("gs://models/resnet", "gs://models", "s3://bucket/m", "s3://bucket", "hdfs://namenode/m",
                   "hdfs:///m", "/models/resnet", "pvc://models/resnet", "pvc://a.b-c/x/y", f"pvc://{'a' * 253}/m")],
    *[pytest.param(make_isvc().base_path(path), [("spec.model.basePath", _STORAGE)], id=f"basePath {path}")
      for path in ("ftp://models/resnet", "http://models/resnet", "models/resnet", "gs:/models/resnet",
                   "GS://models/resnet", "file:///models")],
    *[pytest.param(make_isvc().base_path(path), [("spec.model.basePath", _BUCKET)], id=f"basePath {path}")
      for path in ("gs://", "gs:///models/resnet", "s3://", "s3:///resnet")],
    *[pytest.param(make_isvc().base_path(path), [("spec.model.basePath", _PVC)], id=f"basePath {path!r}")
      for path in ("pvc://", "pvc://models", "pvc://models/", "pvc:///resnet", "pvc://Models_1/resnet",
                   "pvc://-models/resnet", "pvc://models./resnet", f"pvc://{'a' * 254}/m")],
    # image with GPUs
    pytest.param(make_isvc().gpu(1).image("tensorflow/serving:2.19.0"), [("spec.image", _GPU_IMAGE)],
                 id="GPUs with a CPU image"),
    pytest.param(make_isvc().gpu(2).image("registry.example.com:5000/serving"), [("spec.image", _GPU_IMAGE)],
                 id="GPUs with an untagged CPU image behind a registry port"),
    pytest.param(make_isvc().gpu(1).image("gpu.example.com/tensorflow/serving:2.19.0"), [("spec.image", _GPU_IMAGE)],
                 id="gpu in the registry host only"),
    pytest.param(make_isvc().gpu(1).image("tensorflow/serving@sha256:gpu"), [("spec.image", _GPU_IMAGE)],
                 id="gpu in the digest only"),
    pytest.param(make_isvc().gpu(1).image("tensorflow/serving:gpu-2"), [("spec.image", _GPU_IMAGE)],
                 id="a tag that starts with gpu-"),
    *[pytest.param(make_isvc().gpu(1).image(image), [], id=f"GPUs with {image}")
      for image in ("tensorflow/serving:2.19.0-gpu", "tensorflow/serving:gpu", "tensorflow/serving:2.19.0-gpu-cuda12",
                    "registry.example.com:5000/serving:latest-gpu", "registry.example.com:5000/tfs-gpu",
                    "tensorflow/serving:2.19.0-gpu@sha256:0123", "example.com/gpu-serving:2.19.0")],
    pytest.param(make_isvc().gpu(1), [], id="GPUs with the default image"),
    pytest.param(make_isvc().image("tensorflow/serving:2.19.0"), [], id="a CPU image without GPUs"),
    pytest.param(make_isvc().gpu(0).image("tensorflow/serving:2.19.0"), [], id="a CPU image with gpu.count 0"),
    # server: reserved ports and managed flags
    pytest.param(make_isvc().server(grpcPort=8510), [("spec.server.grpcPort", _RESERVED.format("grpcPort"))],
                 id="the health bridge gRPC port as grpcPort"),
    pytest.param(make_isvc().server(grpcPort=8511), [("spec.server.grpcPort", _RESERVED.format("grpcPort"))],
                 id="the health bridge HTTP port as grpcPort"),
    pytest.param(make_isvc().server(restPort=8510), [("spec.server.restPort", _RESERVED.format("restPort"))],
                 id="the health bridge gRPC port as restPort"),
    pytest.param(make_isvc().server(grpcPort=8509, restPort=8512), [], id="ports next to the reserved ones"),
    *[pytest.param(make_isvc().server(extraArgs=["--tensorflow_intra_op_parallelism=4", arg]),
                   [("spec.server.extraArgs", _MANAGED)], id=f"extraArgs {arg}")
      for arg in ("--port=9000", "--port", "--model_name=x", "--enable_batching", "--enable_batching=false",
                  "--grpc_channel_arguments=grpc.max_connection_age_ms=1")],
    *[pytest.param(make_isvc().server(extraArgs=[arg]), [], id=f"extraArgs {arg}")
      for arg in ("--portable=1", "--port_x", "port=1", "--rest_api_timeout_in_ms=5000", "-port=1", "")],
    # tolerations (the API server's rules, on both lists)
    pytest.param(make_isvc().pod(tolerations=[{"key": "a", "operator": "Exists", "value": "b"}]),
                 [("spec.pod.tolerations[0].value", "value must be empty when operator is Exists")],
                 id="operator Exists with a value"),
    pytest.param(make_isvc().pod(tolerations=[{"key": "a", "operator": "Exists", "value": ""}]), [],
                 id="operator Exists with an empty value"),
    pytest.param(make_isvc().pod(tolerations=[{"operator": "Exists"}]), [], id="operator Exists without a key"),
    pytest.param(make_isvc().pod(tolerations=[{"key": "a"}, {"operator": "Equal", "value": "b"}]),
                 [("spec.pod.tolerations[1].operator", "operator must be Exists when key is empty")],
                 id="operator Equal without a key"),
    pytest.param(make_isvc().gpu(1, tolerations=[{"key": "", "value": "b"}]),
                 [("spec.gpu.tolerations[0].operator", "operator must be Exists when key is empty")],
                 id="an empty key and no operator"),
    pytest.param(make_isvc().pod(tolerations=[{"key": "a", "effect": "NoSchedule", "tolerationSeconds": 5}]),
                 [("spec.pod.tolerations[0].tolerationSeconds", "tolerationSeconds may only be set with effect NoExecute")],
                 id="tolerationSeconds with NoSchedule"),
    pytest.param(make_isvc().gpu(1, tolerations=[{"key": "a", "tolerationSeconds": 5}]),
                 [("spec.gpu.tolerations[0].tolerationSeconds", "tolerationSeconds may only be set with effect NoExecute")],
                 id="tolerationSeconds without an effect"),
    pytest.param(make_isvc().pod(tolerations=[{"key": "a", "operator": "Equal", "value": "b", "effect": "NoExecute",
                                               "tolerationSeconds": 5}]), [], id="a full NoExecute toleration"),
    # labels and node selectors (the API server's label rules)
    *[pytest.param(make_isvc().pod(labels={key: "v"}), [], id=f"label key {key[:40]}")
      for key in ("team", "example.com/team", "a", "A.b-c_D", "x" * 63, f"{'a' * 253}/b", "a.b/c")],
    *[pytest.param(make_isvc().pod(labels={"team": "ml", key: "v"}), [("spec.pod.labels", _LABEL_KEY.format("labels"))],
                   id=f"label key {key[:40]!r}")
      for key in ("zône", "a/b/c", "/a", "a/", "", "x" * 64, f"{'a' * 254}/b", "Example.com/a", "-a", "a_",
                  "a b", "a..b/c")],
    *[pytest.param(make_isvc().pod(labels={"team": value}), [], id=f"label value {value!r}")
      for value in ("", "ml", "a.b_c-D", "x" * 63)],
    *[pytest.param(make_isvc().pod(labels={"team": value}), [("spec.pod.labels", _LABEL_VALUE.format("labels"))],
                   id=f"label value {value!r}")
      for value in ("-ml", "ml_", "m l", "é", "a/b")],
    pytest.param(make_isvc().gpu(1, node_selector={"Bad Key": "x"}),
                 [("spec.gpu.nodeSelector", _LABEL_KEY.format("nodeSelector"))], id="a GPU node selector key"),
    pytest.param(make_isvc().pod(nodeSelector={"zone": "eu west"}),
                 [("spec.pod.nodeSelector", _LABEL_VALUE.format("nodeSelector"))], id="a node selector value"),
    pytest.param(make_isvc().pod(nodeSelector={"zône": "-"}),
                 [("spec.pod.nodeSelector", _LABEL_KEY.format("nodeSelector")),
                  ("spec.pod.nodeSelector", _LABEL_VALUE.format("nodeSelector"))], id="a bad key and a bad value"),
    # annotations (the API server's annotation rules)
    *[pytest.param(make_isvc().pod(annotations={key: "v"}), [], id=f"annotation key {key[:40]!r}")
      for key in ("team", "Example.COM/Team", "\u212aelvin.example.com/a", "x" * 63)],
    *[pytest.param(make_isvc().pod(annotations={key: "v"}),
                   [("spec.pod.annotations", _ANNOTATION_KEY.format("annotations"))], id=f"annotation key {key[:40]!r}")
      for key in ("load balancer!", "a/b/c", "zône", "x" * 64, f"{'a' * 254}/b")],
    pytest.param(make_isvc().pod(annotations={"a": "x" * 262143}), [], id="annotations of exactly 256 KiB"),
    pytest.param(make_isvc().pod(annotations={"a": "x" * 131072, "b": "y" * 131070}), [],
                 id="two annotations of 256 KiB together"),
    pytest.param(make_isvc().pod(annotations={"a": "x" * 262144}),
                 [("spec.pod.annotations", _ANNOTATION_SIZE.format("annotations"))], id="annotations one byte too large"),
    pytest.param(make_isvc().pod(annotations={"a": "é" * 131072}),
                 [("spec.pod.annotations", _ANNOTATION_SIZE.format("annotations"))],
                 id="annotations under the limit in characters, over it in bytes"),
    pytest.param(make_isvc().set("spec.service.annotations", {"load balancer!": "v"}),
                 [("spec.service.annotations", _ANNOTATION_KEY.format("annotations"))], id="a Service annotation key"),
]


@pytest.mark.parametrize(("manifest", "expected"), CEL_CASES)
def test_cel_rules_and_python_checks_agree(manifest: IsvcBuilder, expected: list[tuple[str, str]]) -> None:
    spec = manifest.manifest()["spec"]
    assert spec_cel_failures(spec) == expected
    assert python_rule_paths(spec) == {rule_path(path) for path, _ in expected}


NAME_CASES = [
    *[pytest.param(name, True, id=name) for name in ("resnet", "a", "bert-base-2", "r" * 52)],
    *[pytest.param(name, False, id=name[:20])
      for name in ("1resnet", "-resnet", "resnet-", "res.net", "Resnet", "r" * 53, "res_net")],
]


@pytest.mark.parametrize(("name", "valid"), NAME_CASES)
def test_the_metadata_name_rule_agrees_with_parse_object(name: str, valid: bool) -> None:
    # At the root, CEL sees only metadata.name and generateName of the metadata.
    manifest = make_isvc(name).manifest()
    root = root_schema()
    failures = cel_failures(root, {**manifest, "metadata": {"name": name}}, path="")
    failures = [f for f in failures if not f[0].startswith("spec")]
    assert failures == ([] if valid else [("", METADATA_NAME_MESSAGE)])
    try:
        parse_object(manifest)
        python_valid = True
    except ValidationError as exc:
        assert [str(e).split(": ", 1)[0] for e in exc.errors] == ["metadata.name"]
        python_valid = False
    assert python_valid is valid


def test_every_cel_rule_is_exercised() -> None:
    rules = [(path, rule["message"]) for path, node in walk(root_schema())
             for rule in node.get("x-kubernetes-validations", [])]
    exercised = ({message for param in CEL_CASES for _, message in param.values[1]}
                 | {"model.name is immutable", METADATA_NAME_MESSAGE})
    assert {message for _, message in rules} == exercised
    assert {path for path, _ in rules} == {"", ".spec", ".spec.model", ".spec.autoscaling", ".spec.gpu.nodeSelector",
                                           ".spec.gpu.tolerations[]", ".spec.batching", ".spec.server",
                                           ".spec.service.annotations", ".spec.rollout", ".spec.pod",
                                           ".spec.pod.nodeSelector", ".spec.pod.tolerations[]",
                                           ".spec.pod.annotations", ".spec.pod.labels"}


# The API server's budget for the estimated cost of all rules of a CRD together
# (k8s.io/apiextensions-apiserver pkg/apis/apiextensions/validation/validation.go).
STATIC_ESTIMATED_CRD_COST_LIMIT = 100_000_000


def rule_costs(node: Node, path: str = "", cardinality: float = 1.0) -> Iterator[tuple[str, str, float]]:
    """(path, message, estimated cost) of every rule: the rule's cost times the most times it
    can run, which is the product of maxItems/maxProperties of the lists and maps above it."""
    for rule in node.get("x-kubernetes-validations", []):
        cost = _cel.analyze(rule["rule"], node, root=path == "")
        yield path, rule["message"], cost * cardinality
    for name, child in (node.get("properties") or {}).items():
        yield from rule_costs(child, f"{path}.{name}", cardinality)
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(node.get(key), dict):
            yield from rule_costs(node[key], path + suffix, cardinality * _cel.max_cardinality(node))


def test_every_rule_fits_the_api_servers_cost_budget() -> None:
    costs = list(rule_costs(root_schema()))
    too_costly = [(path, message, cost) for path, message, cost in costs if cost > STATIC_ESTIMATED_COST_LIMIT]
    assert not too_costly, too_costly
    assert sum(cost for _, _, cost in costs) <= STATIC_ESTIMATED_CRD_COST_LIMIT
    # The estimate charges strings by their length: without the bounds on label values and
    # annotation maps, their rules would be far over the budget.
    unbounded = copy.deepcopy(root_schema())
    annotations = unbounded["properties"]["spec"]["properties"]["pod"]["properties"]["annotations"]
    del annotations["maxProperties"]
    assert max(cost for _, _, cost in rule_costs(unbounded)) > STATIC_ESTIMATED_COST_LIMIT


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

