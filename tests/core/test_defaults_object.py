"""The InferenceServiceDefaults object: its generated CRD (valid, structural, documented, its CEL
rules agreeing with the typed checks), and which defaults are in force as its status records
them (engine.defaults.plan_defaults)."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
import yaml
from e2e.localcluster import _cel
from e2e.localcluster.admission import STATIC_ESTIMATED_COST_LIMIT

from tfleet.api.crd import build_defaults_crd, crd_yaml
from tfleet.api.defaults import (
    BUILT_IN,
    DEFAULTS_NAME_MESSAGE,
    GPU_TAG_MESSAGE,
    MIRROR_MESSAGE,
    REGISTRY_HOST_MESSAGE,
    parse_defaults_object,
    parse_defaults_spec,
)
from tfleet.api.schema import ValidationError
from tfleet.engine.defaults import plan_defaults

from .isvc_factory import REPO, strict_jsonschema
from .test_crd import (
    _ANNOTATION_KEY,
    _ANNOTATION_SIZE,
    _LABEL_KEY,
    _LABEL_VALUE,
    apply_defaults,
    cel_failures,
    walk,
)

CRD_FILE = REPO / "crds" / "inferenceservicedefaults.tfleet.dev.yaml"
EXAMPLE = REPO / "examples" / "platform" / "defaults.yaml"

Node = dict[str, Any]


def root_schema() -> Node:
    return build_defaults_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def obj(spec: dict[str, Any] | None = None, generation: int = 1, status: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceServiceDefaults",
                            "metadata": {"name": "cluster", "uid": "u-1", "generation": generation,
                                         "resourceVersion": str(10 + generation)},
                            "spec": spec or {}}
    if status is not None:
        body["status"] = status
    return body


# --------------------------------------------------------------------------- the CRD


def test_the_crd_validates_as_apiextensions_v1_and_the_file_has_not_drifted() -> None:
    kubernetes_validate.validate(build_defaults_crd(), "1.35", strict=True)
    assert CRD_FILE.read_text() == crd_yaml("InferenceServiceDefaults"), "run `make manifests`"


def test_the_crd_is_cluster_scoped_with_a_status_subresource_and_columns() -> None:
    spec = build_defaults_crd()["spec"]
    assert spec["scope"] == "Cluster"
    assert spec["names"]["plural"] == "inferenceservicedefaults"
    assert "tfleet" in spec["names"]["categories"]
    (version,) = spec["versions"]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Ready", "Reason", "Applied", "Age"]


def test_the_schema_is_structural_documented_and_only_the_applied_copy_is_passed_through() -> None:
    preserved = []
    for path, node in walk(root_schema()):
        if node.get("x-kubernetes-preserve-unknown-fields"):
            preserved.append(path)
            continue
        if node.get("x-kubernetes-int-or-string"):
            continue
        assert "type" in node, path
        if path and not path.endswith(("[]", "{}")):
            assert node.get("description", "").strip(), f"{path} has no description"
    # status.applied is a copy of a spec the operator accepted; the spec itself is fully typed.
    assert preserved == [".status.applied"]
    # No default is published: the API server would store {} for every part.
    assert not [path for path, node in walk(root_schema()["properties"]["spec"]) if "default" in node
                and not path.endswith(".pause")]


def test_the_example_parses_and_passes_the_schema_and_every_rule() -> None:
    (doc,) = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    parse_defaults_object(doc)
    import jsonschema

    jsonschema.validate(doc["spec"], strict_jsonschema(root_schema()["properties"]["spec"]))
    assert cel_failures(root_schema(), {**doc, "metadata": {"name": doc["metadata"]["name"]}}, path="") == []


def spec_cel_failures(spec: Any) -> list[tuple[str, str]]:
    node = root_schema()["properties"]["spec"]
    return cel_failures(node, apply_defaults(node, spec))


def python_fields(spec: Any) -> set[str]:
    try:
        parse_defaults_spec(spec)
    except ValidationError as exc:
        return {e.path for e in exc.errors}
    return set()


RULE_FIELDS = ("spec.image.gpuTag", "spec.image.registryMirrors", "spec.gpu.nodeSelector", "spec.gpu.tolerations",
               "spec.rollout.steps",
               "spec.pod.labels", "spec.pod.annotations", "spec.pod.imagePullSecrets")


def rule_field(path: str) -> str:
    """The field a rule names: CEL on a toleration names the toleration's field itself."""
    if path.startswith("spec.gpu.tolerations["):
        return path
    return max((f for f in RULE_FIELDS if path == f or path.startswith((f + ".", f + "["))), key=len)


_PULL_SECRET = "every item of imagePullSecrets must be a Secret name (a lowercase RFC 1123 subdomain)"

CEL_CASES = [
    pytest.param({"image": {"tag": "2.18.0", "gpuTag": "2.18.0-gpu"}}, [], id="a GPU tag"),
    pytest.param({"image": {"gpuTag": "2.18.0"}}, [("spec.image.gpuTag", GPU_TAG_MESSAGE)], id="a CPU gpuTag"),
    pytest.param({"image": {"repository": "registry.example.com/ml/tfs-gpu", "gpuTag": "2.18.0"}}, [],
                 id="a CPU tag of a GPU repository"),
    pytest.param({"image": {"registryMirrors": {"docker.io": "mirror.example.com/hub", "ghcr.io": "localhost:5000",
                                                "registry.example.com:5000": "mirror.example.com"}}}, [],
                 id="registry mirrors"),
    pytest.param({"image": {"registryMirrors": {"docker": "mirror.example.com"}}},
                 [("spec.image.registryMirrors", REGISTRY_HOST_MESSAGE)], id="a mirror key that is no registry host"),
    pytest.param({"image": {"registryMirrors": {"docker.io": "mirror/hub"}}},
                 [("spec.image.registryMirrors", MIRROR_MESSAGE)], id="a mirror without a host"),
    pytest.param({"image": {"registryMirrors": {"docker.io": "mirror.example.com/Hub"}}},
                 [("spec.image.registryMirrors", MIRROR_MESSAGE)], id="a mirror path in upper case"),
    pytest.param({"gpu": {"nodeSelector": {"bad key!": "x"}}},
                 [("spec.gpu.nodeSelector", _LABEL_KEY.format("nodeSelector"))], id="a bad node selector key"),
    pytest.param({"gpu": {"nodeSelector": {"pool": "a b"}}},
                 [("spec.gpu.nodeSelector", _LABEL_VALUE.format("nodeSelector"))], id="a bad node selector value"),
    pytest.param({"gpu": {"tolerations": [{"key": "a", "operator": "Exists", "value": "b"}]}},
                 [("spec.gpu.tolerations[0].value", "value must be empty when operator is Exists")],
                 id="a toleration with a value and Exists"),
    pytest.param({"gpu": {"tolerations": [{"effect": "NoSchedule"}]}},
                 [("spec.gpu.tolerations[0].operator", "operator must be Exists when key is empty")],
                 id="a toleration without a key"),
    pytest.param({"gpu": {"tolerations": [{"key": "a", "effect": "NoSchedule", "tolerationSeconds": 5}]}},
                 [("spec.gpu.tolerations[0].tolerationSeconds", "tolerationSeconds may only be set with effect NoExecute")],
                 id="tolerationSeconds without NoExecute"),
    pytest.param({"rollout": {"steps": [{"weight": 50}, {"weight": 20}]}},
                 [("spec.rollout.steps", "rollout step weights must be strictly increasing")], id="decreasing steps"),
    pytest.param({"pod": {"labels": {"team": "a b"}}}, [("spec.pod.labels", _LABEL_VALUE.format("labels"))],
                 id="a bad label value"),
    pytest.param({"pod": {"labels": {"a/b/c": "x"}}}, [("spec.pod.labels", _LABEL_KEY.format("labels"))],
                 id="a bad label key"),
    pytest.param({"pod": {"annotations": {"-bad": "x"}}}, [("spec.pod.annotations", _ANNOTATION_KEY.format("annotations"))],
                 id="a bad annotation key"),
    pytest.param({"pod": {"annotations": {"a": "x" * 200_000, "b": "y" * 100_000}}},
                 [("spec.pod.annotations", _ANNOTATION_SIZE.format("annotations"))], id="annotations too large"),
    pytest.param({"pod": {"imagePullSecrets": ["Hub"]}}, [("spec.pod.imagePullSecrets", _PULL_SECRET)],
                 id="a pull secret that is no Secret name"),
]


@pytest.mark.parametrize(("spec", "expected"), CEL_CASES)
def test_cel_rules_and_python_checks_agree(spec: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert spec_cel_failures(spec) == expected
    assert {rule_field(p) for p in python_fields(spec)} == {rule_field(path) for path, _ in expected}


def test_every_cel_rule_is_exercised() -> None:
    rules = {rule["message"] for _, node in walk(root_schema()) for rule in node.get("x-kubernetes-validations", [])}
    exercised = {message for case in CEL_CASES for _, message in case.values[1]} | {DEFAULTS_NAME_MESSAGE}
    assert rules == exercised


def test_the_name_rule_agrees_with_the_parser() -> None:
    root = root_schema()
    for name, valid in (("cluster", True), ("other", False)):
        failures = cel_failures(root, {"metadata": {"name": name}, "spec": {}}, path="")
        assert (failures == []) is valid
        body = obj()
        body["metadata"]["name"] = name
        try:
            parse_defaults_object(body)
            assert valid
        except ValidationError as exc:
            assert not valid and [e.path for e in exc.errors] == ["metadata.name"]


def test_every_rule_fits_the_api_servers_cost_budget() -> None:
    from .test_crd import STATIC_ESTIMATED_CRD_COST_LIMIT, rule_costs

    costs = list(rule_costs(root_schema()))
    assert not [c for c in costs if c[2] > STATIC_ESTIMATED_COST_LIMIT], costs
    assert sum(c[2] for c in costs) <= STATIC_ESTIMATED_CRD_COST_LIMIT
    # Without the bound on pull secret names, their rule would be estimated far over the budget.
    unbounded = copy.deepcopy(root_schema())
    del unbounded["properties"]["spec"]["properties"]["pod"]["properties"]["imagePullSecrets"]["items"]["maxLength"]
    assert max(_cel.analyze(r["rule"], n) * 16 for p, n in walk(unbounded) if p.endswith("imagePullSecrets")
               for r in n.get("x-kubernetes-validations", [])) > STATIC_ESTIMATED_COST_LIMIT


# --------------------------------------------------------------------------- in force


NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"


def accepted(spec: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    """The object as it reads after the operator accepted `generation`."""
    body = obj(spec, generation)
    result = plan_defaults(body, NOW)
    assert result.status is not None
    return {**body, "status": result.status}


def test_no_object_means_the_built_in_defaults() -> None:
    result = plan_defaults(None, NOW)
    assert result.in_force == result.recorded == BUILT_IN and result.status is None


def test_a_valid_object_is_in_force_once_its_status_records_it() -> None:
    body = obj({"pod": {"labels": {"team": "platform"}}}, generation=3)
    result = plan_defaults(body, NOW)
    assert result.recorded == BUILT_IN  # nothing recorded yet
    assert result.in_force.generation == 3 and result.in_force.spec.pod.labels == {"team": "platform"}
    assert result.status is not None
    assert result.status["appliedGeneration"] == 3 and result.status["applied"] == body["spec"]
    ready = {c["type"]: c for c in result.status["conditions"]}
    assert (ready["Ready"]["status"], ready["Ready"]["reason"]) == ("True", "Accepted")
    assert ready["Stalled"]["status"] == "False"
    assert [(e.type, e.reason) for e in result.events] == [("Normal", "DefaultsAccepted")]
    # Read back, nothing is left to write, and what is recorded is in force.
    again = plan_defaults({**body, "status": result.status}, LATER)
    assert again.status is None and again.events == [] and again.recorded == again.in_force == result.in_force


def test_an_invalid_object_is_refused_naming_the_field_and_the_last_accepted_stays_in_force() -> None:
    good = accepted({"pod": {"labels": {"team": "platform"}}}, generation=1)
    bad = {**good, "metadata": {**good["metadata"], "generation": 2},
           "spec": {"image": {"gpuTag": "2.18.0"}, "pod": {"labels": {"team": "a b"}}}}
    result = plan_defaults(bad, LATER)
    assert result.invalid is not None
    assert "spec.image.gpuTag" in result.invalid and "spec.pod.labels.team" in result.invalid
    assert result.in_force == result.recorded
    assert result.in_force.generation == 1 and result.in_force.spec.pod.labels == {"team": "platform"}
    assert result.status is not None
    assert result.status["appliedGeneration"] == 1 and result.status["applied"] == good["spec"]
    assert result.status["observedGeneration"] == 2
    conditions = {c["type"]: c for c in result.status["conditions"]}
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", "InvalidDefaults")
    assert conditions["Stalled"]["status"] == "True"
    assert "InferenceServices keep InferenceServiceDefaults cluster generation 1" in conditions["Ready"]["message"]
    assert [(e.type, e.reason) for e in result.events] == [("Warning", "InvalidDefaults")]
    # Recorded, it is not reported again.
    again = plan_defaults({**bad, "status": result.status}, LATER)
    assert again.status is None and again.events == [] and again.in_force.generation == 1


def test_an_invalid_first_object_leaves_the_built_in_defaults_in_force() -> None:
    result = plan_defaults(obj({"rollout": {"steps": [{"weight": 50}, {"weight": 10}]}}), NOW)
    assert result.invalid is not None and result.in_force == BUILT_IN
    assert result.status is not None and "applied" not in result.status
    assert "InferenceServices keep the built-in defaults" in result.status["conditions"][0]["message"]


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    first = accepted({}, generation=1)
    second = plan_defaults({**first, "metadata": {**first["metadata"], "generation": 2}}, LATER)
    assert second.status is not None
    ready = next(c for c in second.status["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == NOW and ready["observedGeneration"] == 2


def test_flux_reads_an_accepted_object_as_current_and_a_refused_one_as_failed() -> None:
    from tests.kstatus import compute

    good = accepted({"pod": {"labels": {"team": "platform"}}})
    assert compute(good)[0] == "Current"
    changed = {**good, "metadata": {**good["metadata"], "generation": 2}, "spec": {"image": {"gpuTag": "x"}}}
    assert compute(changed)[0] == "InProgress"  # not looked at yet
    refused = plan_defaults(changed, LATER)
    assert refused.status is not None
    status, message = compute({**changed, "status": refused.status})
    assert status == "Failed" and "spec.image.gpuTag" in message


def test_the_readmes_example_is_a_valid_defaults_object() -> None:
    import re

    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(), re.S)]
    (doc,) = [b for b in blocks if isinstance(b, dict) and b.get("kind") == "InferenceServiceDefaults"]
    defaults = parse_defaults_object(doc)
    assert defaults.spec.image.registry_mirrors and defaults.spec.gpu.tolerations
