"""CRD admission of the local control plane: pruning, defaulting, schema and CEL validation,
with the apiserver's messages."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.localcluster.admission import (
    InvalidError,
    admit_custom_resource,
    go_number,
    openapi_component_name,
    openapi_v3_schema_for_crd,
    prune_unknown_fields,
    validate_crd,
)

ROOT = Path(__file__).resolve().parents[2]


def make_crd(spec_schema: dict[str, Any], **version: Any) -> dict[str, Any]:
    """A Namespaced CRD ``widgets.example.dev`` with one version v1 whose spec is ``spec_schema``."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.dev"},
        "spec": {
            "group": "example.dev",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": spec_schema,
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                            },
                        }
                    },
                    **version,
                }
            ],
        },
    }


def widget(spec: Any, name: str = "w", **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "example.dev/v1", "kind": "Widget",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec, **extra}  # fmt: skip


def obj_schema(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props}


def admit(
    crd: dict[str, Any], obj: dict[str, Any], old: dict[str, Any] | None = None, **kw: Any
) -> Any:
    return admit_custom_resource(crd, "v1", obj, old, **kw)


def rejection(
    crd: dict[str, Any], obj: dict[str, Any], old: dict[str, Any] | None = None, **kw: Any
) -> str:
    with pytest.raises(InvalidError) as info:
        admit(crd, obj, old, **kw)
    return info.value.status_message("Widget", "example.dev", obj["metadata"].get("name", ""))


# ---------------------------------------------------------------------------------------------
# 1. pruning


def test_unknown_fields_are_pruned_and_reported() -> None:
    crd = make_crd(obj_schema(a=obj_schema(b={"type": "string"}),
                              items={"type": "array", "items": obj_schema(n={"type": "integer"})}))  # fmt: skip
    obj = widget({"a": {"b": "x", "c": 1}, "zz": True, "items": [{"n": 1, "junk": 2}]})
    obj["metadata"]["bogus"] = 1
    obj["top"] = "level"
    out = admit(crd, obj)
    assert out["spec"] == {"a": {"b": "x"}, "items": [{"n": 1}]}
    assert "bogus" not in out["metadata"] and "top" not in out
    unknown = prune_unknown_fields(
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], copy.deepcopy(obj)
    )
    assert sorted(unknown) == ["metadata.bogus", "spec.a.c", "spec.items[0].junk", "spec.zz", "top"]


PRUNE_CASES = [
    ("x-kubernetes-preserve-unknown-fields keeps everything below",
     {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
     {"free": {"form": [1]}}, {"free": {"form": [1]}}),
    ("preserve-unknown-fields with properties still recurses into known ones",
     {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
      "properties": {"k": obj_schema(a={"type": "string"})}},
     {"k": {"a": "x", "b": 1}, "other": 2}, {"k": {"a": "x"}, "other": 2}),
    ("additionalProperties schemas apply to every value",
     {"type": "object", "additionalProperties": obj_schema(v={"type": "string"})},
     {"one": {"v": "1", "x": 1}}, {"one": {"v": "1"}}),
    ("an embedded resource keeps apiVersion, kind and metadata",
     {"type": "object", "x-kubernetes-embedded-resource": True, "properties": {"spec": {"type": "object"}}},
     {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "junk": 1}, "spec": {}, "x": 1},
     {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}),
    ("an int-or-string value is kept as is",
     obj_schema(port={"x-kubernetes-int-or-string": True}), {"port": "http"}, {"port": "http"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("schema", "spec", "want"), [c[1:] for c in PRUNE_CASES], ids=[c[0] for c in PRUNE_CASES]
)
def test_pruning(schema: dict[str, Any], spec: Any, want: Any) -> None:
    crd = make_crd(obj_schema(x=schema))
    assert admit(crd, widget({"x": spec}))["spec"]["x"] == want


# ---------------------------------------------------------------------------------------------
# 2. defaulting

DEFAULTS = obj_schema(
    replicas={"type": "integer", "default": 1},
    batching={"type": "object", "properties": {"maxBatchSize": {"type": "integer", "default": 32}}},
    server={"type": "object", "default": {}, "properties": {"grpcPort": {"type": "integer", "default": 8500}}},
    steps={"type": "array", "items": obj_schema(pause={"type": "string", "default": "60s"},
                                                 weight={"type": "integer"})},
    labels={"type": "object", "additionalProperties": {"type": "string", "default": "on"}},
    note={"type": "string", "nullable": True, "default": "n"},
    plain={"type": "string"},
)  # fmt: skip

DEFAULT_CASES = [
    ("a missing field gets its default", {}, lambda s: s["replicas"] == 1),
    ("a set field keeps its value", {"replicas": 3}, lambda s: s["replicas"] == 3),
    ("nested defaults need their parent: no batching, no maxBatchSize", {}, lambda s: "batching" not in s),
    ("nested defaults apply once the parent exists", {"batching": {}}, lambda s: s["batching"] == {"maxBatchSize": 32}),
    ("a parent default of {} brings the nested defaults", {}, lambda s: s["server"] == {"grpcPort": 8500}),
    ("list items are defaulted one by one", {"steps": [{"weight": 10}, {"weight": 50, "pause": "2m"}]},
     lambda s: s["steps"] == [{"weight": 10, "pause": "60s"}, {"weight": 50, "pause": "2m"}]),
    ("null where nullable is false takes the default", {"replicas": None}, lambda s: s["replicas"] == 1),
    ("null where nullable is true is kept", {"note": None}, lambda s: s["note"] is None),
    ("null without a default and not nullable is dropped", {"plain": None}, lambda s: "plain" not in s),
    ("additionalProperties defaults replace null values", {"labels": {"a": None, "b": "x"}},
     lambda s: s["labels"] == {"a": "on", "b": "x"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "check"), [c[1:] for c in DEFAULT_CASES], ids=[c[0] for c in DEFAULT_CASES]
)
def test_defaulting(spec: dict[str, Any], check: Any) -> None:
    assert check(admit(make_crd(DEFAULTS), widget(spec))["spec"])


# ---------------------------------------------------------------------------------------------
# 3. OpenAPI schema validation, message by message

SCHEMA_CASES = [
    ("type: integer given a string", {"type": "integer"}, "3",
     'spec.x: Invalid value: "string": spec.x in body must be of type integer: "string"'),
    ("type: string given a number", {"type": "string"}, 1.5,
     'spec.x: Invalid value: "number": spec.x in body must be of type string: "number"'),
    ("type: object given a list", {"type": "object"}, [1],
     'spec.x: Invalid value: "array": spec.x in body must be of type object: "array"'),
    ("an integral float is an integer", {"type": "integer", "maximum": 1}, 2.0,
     "spec.x: Invalid value: 2: spec.x in body should be less than or equal to 1"),
    ("nullable: null in a list item that is not nullable", {"type": "array", "items": {"type": "string"}}, [None],
     'spec.x[0]: Invalid value: "null": spec.x[0] in body must be of type string: "null"'),
    ("enum of strings", {"type": "string", "enum": ["ClusterIP", "NodePort"]}, "LoadBalancer",
     'spec.x: Unsupported value: "LoadBalancer": supported values: "ClusterIP", "NodePort"'),
    ("enum of integers quotes the allowed values", {"type": "integer", "enum": [1, 2]}, 3,
     'spec.x: Unsupported value: 3: supported values: "1", "2"'),
    ("minimum", {"type": "integer", "minimum": 0}, -1,
     "spec.x: Invalid value: -1: spec.x in body should be greater than or equal to 0"),
    ("exclusiveMinimum", {"type": "integer", "minimum": 0, "exclusiveMinimum": True}, 0,
     "spec.x: Invalid value: 0: spec.x in body should be greater than 0"),
    ("maximum printed as Go prints a float64", {"type": "integer", "maximum": 1000000}, 1000001,
     "spec.x: Invalid value: 1000001: spec.x in body should be less than or equal to 1e+06"),
    ("exclusiveMaximum", {"type": "number", "maximum": 1.5, "exclusiveMaximum": True}, 1.5,
     "spec.x: Invalid value: 1.5: spec.x in body should be less than 1.5"),
    ("multipleOf", {"type": "integer", "multipleOf": 8}, 12,
     "spec.x: Invalid value: 12: spec.x in body should be a multiple of 8"),
    ("maxLength says bytes and omits the value", {"type": "string", "maxLength": 3}, "abcd",
     "spec.x: Too long: may not be more than 3 bytes"),
    ("minLength", {"type": "string", "minLength": 1}, "",
     'spec.x: Invalid value: "": spec.x in body should be at least 1 chars long'),
    ("pattern", {"type": "string", "pattern": "^[a-z]+$"}, "Abc",
     "spec.x: Invalid value: \"Abc\": spec.x in body should match '^[a-z]+$'"),
    # RE2's $ is the end of the text; Python's re would also match before a final newline.
    ("pattern $ before a final newline", {"type": "string", "pattern": "^[a-z]+$"}, "abc\n",
     "spec.x: Invalid value: \"abc\\n\": spec.x in body should match '^[a-z]+$'"),
    # RE2's \d is ASCII; Python's re would take fullwidth digits.
    ("pattern \\d is ASCII", {"type": "string", "pattern": "^\\d+s$"}, "\uff16\uff10s",
     "spec.x: Invalid value: \"\uff16\uff10s\": spec.x in body should match '^\\d+s$'"),
    # Beyond 2**53 a float64 is no longer "a JSON integer" (what an int beyond int64 decodes to).
    ("a float beyond 2**53 is a number", {"type": "integer"}, 2.0**63,
     'spec.x: Invalid value: "number": spec.x in body must be of type integer: "number"'),
    ("format date-time", {"type": "string", "format": "date-time"}, "yesterday",
     'spec.x: Invalid value: "yesterday": spec.x in body must be of type date-time: "yesterday"'),
    ("maxItems", {"type": "array", "items": {"type": "integer"}, "maxItems": 2}, [1, 2, 3],
     "spec.x: Too many: 3: must have at most 2 items"),
    ("minItems", {"type": "array", "items": {"type": "integer"}, "minItems": 1}, [],
     "spec.x: Invalid value: 0: spec.x in body should have at least 1 items"),
    ("uniqueItems", {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, [1, 1],
     'spec.x: Invalid value: "": spec.x in body shouldn\'t contain duplicates'),
    ("maxProperties", {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 1},
     {"a": "1", "b": "2"}, "spec.x: Too many: 2: must have at most 1 item"),
    ("minProperties", {"type": "object", "additionalProperties": {"type": "string"}, "minProperties": 1},
     {}, "spec.x: Invalid value: 0: spec.x in body should have at least 1 properties"),
    ("required names the missing field", obj_schema(a={"type": "string"}) | {"required": ["a"]}, {},
     "spec.x.a: Required value"),
    ("int-or-string rejects a boolean", {"x-kubernetes-int-or-string": True}, True,
     'spec.x: Invalid value: "boolean": spec.x in body must be of type integer,string: "boolean"'),
    ("map values are named with a dot", {"type": "object", "additionalProperties": {"type": "integer"}},
     {"k": "v"}, 'spec.x.k: Invalid value: "string": spec.x.k in body must be of type integer: "string"'),
    ("anyOf reports under a nil path, then the closest alternative's failure",
     {"type": "integer", "anyOf": [{"minimum": 10}, {"maximum": 2}]}, 5,
     '<nil>: Invalid value: "": "spec.x" must validate at least one schema (anyOf), '
     "spec.x: Invalid value: 5: spec.x in body should be greater than or equal to 10"),
    ("oneOf that matches twice",
     {"type": "integer", "oneOf": [{"minimum": 1}, {"maximum": 10}]}, 5,
     '<nil>: Invalid value: "": "spec.x" must validate one and only one schema (oneOf). Found 2 valid alternatives'),
    ("allOf lists the failing rule, then the summary",
     {"type": "string", "allOf": [{"minLength": 1}, {"pattern": "^a"}]}, "b",
     "spec.x: Invalid value: \"b\": spec.x in body should match '^a'"),
    ("not",
     {"type": "string", "not": {"enum": ["forbidden"]}}, "forbidden",
     '<nil>: Invalid value: "": "spec.x" must not validate the schema (not)'),
    ("an embedded resource needs a kind",
     {"type": "object", "x-kubernetes-embedded-resource": True, "x-kubernetes-preserve-unknown-fields": True},
     {"apiVersion": "v1"}, "spec.x.kind: Required value: must not be empty"),
    ("list-type set rejects duplicates", {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
     ["a", "b", "a"], 'spec.x[2]: Duplicate value: "a"'),
    ("list-type map rejects duplicate keys",
     {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
      "items": obj_schema(name={"type": "string"}, v={"type": "integer"}) | {"required": ["name"]}},
     [{"name": "a", "v": 1}, {"name": "a", "v": 2}], 'spec.x[1]: Duplicate value: {"name":"a"}'),
]  # fmt: skip


@pytest.mark.parametrize(
    ("schema", "value", "message"), [c[1:] for c in SCHEMA_CASES], ids=[c[0] for c in SCHEMA_CASES]
)
def test_schema_validation_messages(schema: dict[str, Any], value: Any, message: str) -> None:
    text = rejection(make_crd(obj_schema(x=schema)), widget({"x": value}))
    head = 'Widget.example.dev "w" is invalid: '
    assert text.startswith(head)
    body = text[len(head) :]
    # One error prints bare; several print as a [list]; a blocking error appends a note.
    assert body in (message, f"[{message}]") or body.startswith(f"[{message}, ")


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        ({"type": "integer", "minimum": 0, "maximum": 10}, 10),
        ({"type": "number"}, 3),
        ({"type": "string", "nullable": True}, None),
        ({"x-kubernetes-int-or-string": True}, 8500),
        ({"type": "string", "format": "date-time"}, "2026-01-01T00:00:00Z"),
        ({"type": "string", "pattern": "^(s3|gs)://"}, "s3://models/resnet"),
        (
            {"type": "array", "items": {"type": "integer"}, "x-kubernetes-list-type": "set"},
            [8, 16, 32],
        ),
    ],
    ids=[
        "bounds inclusive",
        "integer is a number",
        "nullable null",
        "int-or-string int",
        "date-time",
        "pattern",
        "set",
    ],
)
def test_valid_values_pass(schema: dict[str, Any], value: Any) -> None:
    assert admit(make_crd(obj_schema(x=schema)), widget({"x": value}))["spec"]["x"] == value


def test_several_errors_are_listed_in_brackets_and_block_cel() -> None:
    schema = obj_schema(a={"type": "integer", "minimum": 0}, b={"type": "string", "enum": ["x"]})
    schema["x-kubernetes-validations"] = [{"rule": "false", "message": "never reached"}]
    text = rejection(make_crd(schema), widget({"a": -1, "b": "y"}))
    assert text == (
        'Widget.example.dev "w" is invalid: ['
        "spec.a: Invalid value: -1: spec.a in body should be greater than or equal to 0, "
        'spec.b: Unsupported value: "y": supported values: "x", '
        "<nil>: Invalid value: null: some validation rules were not checked because the object "
        "was invalid; correct the existing errors to complete validation]"
    )


def test_non_blocking_schema_errors_still_run_cel() -> None:
    schema = obj_schema(a={"type": "integer", "minimum": 0})
    schema["x-kubernetes-validations"] = [{"rule": "false", "message": "checked"}]
    text = rejection(make_crd(schema), widget({"a": -1}))
    assert text.endswith('spec: Invalid value: "object": checked]')


def test_causes_carry_reason_message_and_field() -> None:
    with pytest.raises(InvalidError) as info:
        admit(
            make_crd(obj_schema(replicas={"type": "integer", "minimum": 0})),
            widget({"replicas": -1}),
        )
    assert info.value.causes == [
        {
            "reason": "FieldValueInvalid",
            "message": "Invalid value: -1: spec.replicas in body should be greater than or equal to 0",
            "field": "spec.replicas",
        }
    ]


# -- metadata -------------------------------------------------------------------------------

METADATA_CASES = [
    ("a name is required", {}, "metadata.name: Required value: name or generateName is required"),
    ("names are DNS subdomains", {"name": "Bad_Name"},
     'metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of lower '
     "case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character "
     "(e.g. 'example.com', regex used for validation is "
     r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
    ("label values are checked", {"name": "ok", "labels": {"app": "no spaces"}},
     'metadata.labels: Invalid value: "no spaces": a valid label must be an empty string or consist of '
     "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character "
     "(e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is "
     "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"),
    ("label keys are qualified names", {"name": "ok", "labels": {"-bad": "x"}},
     'metadata.labels: Invalid value: "-bad": name part must consist of alphanumeric characters'),
]  # fmt: skip


@pytest.mark.parametrize(
    ("meta", "message"), [c[1:] for c in METADATA_CASES], ids=[c[0] for c in METADATA_CASES]
)
def test_metadata_validation(meta: dict[str, Any], message: str) -> None:
    obj = widget({})
    obj["metadata"] = meta
    text = rejection(make_crd(obj_schema()), obj)
    assert message in text


def test_generate_name_stands_in_for_name() -> None:
    obj = widget({})
    obj["metadata"] = {"generateName": "w-"}
    assert admit(make_crd(obj_schema()), obj)["metadata"] == {"generateName": "w-"}


def test_scale_subresource_replicas_must_be_non_negative() -> None:
    crd = make_crd(obj_schema(replicas={"type": "integer"}),
                   subresources={"scale": {"specReplicasPath": ".spec.replicas",
                                           "statusReplicasPath": ".status.replicas"}})  # fmt: skip
    text = rejection(crd, widget({"replicas": -2}))
    assert (
        text
        == 'Widget.example.dev "w" is invalid: .spec.replicas: Invalid value: -2: should be a non-negative integer'
    )


def test_status_message_for_the_core_group_has_no_dot() -> None:
    with pytest.raises(InvalidError) as info:
        admit(make_crd(obj_schema(a={"type": "integer"})), widget({"a": "x"}))
    assert info.value.status_message("ConfigMap", "", "c").startswith('ConfigMap "c" is invalid: ')


# ---------------------------------------------------------------------------------------------
# 4. CEL rules


def with_rules(schema: dict[str, Any], *rules: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "x-kubernetes-validations": list(rules)}


# "Strictly increasing" as a real apiserver can afford it: the set list-type rules out
# duplicates, isSorted() (Kubernetes list library) the order. A quadratic exists_one() form
# would exceed the apiserver's estimated cost budget on an unbounded list.
BATCHING = with_rules(
    obj_schema(maxBatchSize={"type": "integer"},
               allowedBatchSizes={"type": "array", "items": {"type": "integer"},
                                  "x-kubernetes-list-type": "set"}),
    {"rule": "!has(self.allowedBatchSizes) || self.allowedBatchSizes[size(self.allowedBatchSizes) - 1] == self.maxBatchSize",
     "message": "the last allowed batch size must equal maxBatchSize", "fieldPath": ".allowedBatchSizes"},
    {"rule": "!has(self.allowedBatchSizes) || self.allowedBatchSizes.isSorted()",
     "message": "allowedBatchSizes must be strictly increasing", "fieldPath": ".allowedBatchSizes"},
)  # fmt: skip

CEL_CASES = [
    ("a rule without message reports the rule",
     with_rules(obj_schema(a={"type": "integer"}), {"rule": "self.a > 1"}), {"a": 1},
     'spec: Invalid value: "object": failed rule: self.a > 1'),
    ("message replaces the rule text",
     with_rules(obj_schema(a={"type": "integer"}), {"rule": "self.a > 1", "message": "a must exceed 1"}),
     {"a": 1}, 'spec: Invalid value: "object": a must exceed 1'),
    ("messageExpression builds the message from self",
     with_rules(obj_schema(a={"type": "integer"}),
                {"rule": "self.a > 1", "message": "m", "messageExpression": "'a is ' + string(self.a)"}),
     {"a": 1}, 'spec: Invalid value: "object": a is 1'),
    ("a failing messageExpression falls back to message",
     with_rules(obj_schema(a={"type": "integer"}),
                {"rule": "self.a > 1", "message": "fallback", "messageExpression": "self.nope"}),
     {"a": 1}, 'spec: Invalid value: "object": fallback'),
    ("fieldPath moves the error onto a field",
     BATCHING, {"maxBatchSize": 32, "allowedBatchSizes": [8, 16]},
     'spec.batching.allowedBatchSizes: Invalid value: "object": the last allowed batch size must equal maxBatchSize'),
    ("isSorted and exists_one express strictly increasing",
     BATCHING, {"maxBatchSize": 32, "allowedBatchSizes": [16, 8, 32]},
     'spec.batching.allowedBatchSizes: Invalid value: "object": allowedBatchSizes must be strictly increasing'),
    ("duplicates are caught by the set list-type",
     BATCHING, {"maxBatchSize": 32, "allowedBatchSizes": [8, 8, 32]},
     "spec.batching.allowedBatchSizes[1]: Duplicate value: 8"),
    ("literal indexes walk a list pairwise, within the cost budget",
     with_rules({"type": "array", "items": {"type": "integer"}, "maxItems": 4},
                {"rule": "[1, 2, 3].all(i, i >= size(self) || self[i - 1] < self[i])",
                 "message": "must increase"}),
     [1, 3, 2], 'spec.batching: Invalid value: "array": must increase'),
    ("reason Forbidden",
     with_rules(obj_schema(a={"type": "string"}), {"rule": "!has(self.a)", "message": "a is not allowed",
                                                    "reason": "FieldValueForbidden", "fieldPath": ".a"}),
     {"a": "x"}, "spec.batching.a: Forbidden: a is not allowed"),
    ("reason Required",
     with_rules(obj_schema(a={"type": "string"}), {"rule": "has(self.a)", "message": "a is needed",
                                                    "reason": "FieldValueRequired"}),
     {}, "spec.batching: Required value: a is needed"),
    ("reason Duplicate prints the type and no message",
     with_rules(obj_schema(a={"type": "string"}), {"rule": "false", "reason": "FieldValueDuplicate"}),
     {}, 'spec.batching: Duplicate value: "object"'),
    ("rules on list items are named by index",
     {"type": "array", "items": with_rules({"type": "integer"}, {"rule": "self > 0", "message": "positive"})},
     [1, 0], 'spec.batching[1]: Invalid value: "integer": positive'),
    ("rules on map values are named by key",
     {"type": "object", "additionalProperties": with_rules({"type": "string"}, {"rule": "self != ''"})},
     {"k": ""}, "spec.batching[k]: Invalid value: \"string\": failed rule: self != ''"),
    ("an evaluation error names the missing key",
     with_rules(obj_schema(a={"type": "integer"}), {"rule": "self.a > 0"}), {},
     'spec.batching: Invalid value: "object": no such key: a evaluating rule: self.a > 0'),
    ("string functions of the Kubernetes library",
     with_rules({"type": "string"}, {"rule": "self.lowerAscii() == self", "message": "lower case only"}),
     "ABC", 'spec.batching: Invalid value: "string": lower case only'),
    ("properties with dashes are escaped",
     with_rules(obj_schema(**{"max-size": {"type": "integer"}}), {"rule": "self.max__dash__size < 10"}),
     {"max-size": 20}, 'spec.batching: Invalid value: "object": failed rule: self.max__dash__size < 10'),
]  # fmt: skip


@pytest.mark.parametrize(
    ("schema", "value", "message"), [c[1:] for c in CEL_CASES], ids=[c[0] for c in CEL_CASES]
)
def test_cel_rules(schema: dict[str, Any], value: Any, message: str) -> None:
    crd = make_crd(obj_schema(batching=schema))
    text = rejection(crd, widget({"batching": value}))
    assert text == f'Widget.example.dev "w" is invalid: {message}'.replace(
        "spec: ", "spec.batching: "
    )


def test_cel_rules_pass_on_a_valid_object() -> None:
    crd = make_crd(obj_schema(batching=BATCHING))
    out = admit(crd, widget({"batching": {"maxBatchSize": 32, "allowedBatchSizes": [8, 16, 32]}}))
    assert out["spec"]["batching"]["allowedBatchSizes"] == [8, 16, 32]


def test_a_rule_at_the_root_sees_the_name() -> None:
    crd = make_crd(obj_schema())
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    root["x-kubernetes-validations"] = [
        {"rule": "self.metadata.name.size() <= 5", "message": "short names only"}
    ]
    assert rejection(crd, widget({}, name="toolong")).endswith(
        ': Invalid value: "object": short names only'
    )
    assert admit(crd, widget({}, name="ok"))["metadata"]["name"] == "ok"


# -- transition rules and ratcheting --------------------------------------------------------

IMMUTABLE = obj_schema(
    model=with_rules(obj_schema(name={"type": "string"}, version={"type": "integer"}),
                     {"rule": "self.name == oldSelf.name", "message": "model.name is immutable", "fieldPath": ".name"}),
    steps={"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
           "items": with_rules(obj_schema(name={"type": "string"}, weight={"type": "integer"}) | {"required": ["name"]},
                               {"rule": "self.weight >= oldSelf.weight", "message": "weights only grow"})},
)  # fmt: skip
# A transition rule under an atomic list: the apiserver refuses such a CRD (see
# test_validate_crd_forbids_old_self_where_items_do_not_correlate); admission stays defensive.
FROZEN_TAGS = obj_schema(
    tags={"type": "array", "items": with_rules({"type": "string"}, {"rule": "self == oldSelf", "message": "frozen"})},
)  # fmt: skip


def test_transition_rules_are_skipped_on_create() -> None:
    assert admit(make_crd(IMMUTABLE), widget({"model": {"name": "a"}}))["spec"]["model"] == {
        "name": "a"
    }


def test_transition_rules_compare_with_the_old_object() -> None:
    crd = make_crd(IMMUTABLE)
    old = admit(crd, widget({"model": {"name": "a", "version": 1}}))
    assert (
        admit(crd, widget({"model": {"name": "a", "version": 2}}), old)["spec"]["model"]["version"]
        == 2
    )
    text = rejection(crd, widget({"model": {"name": "b", "version": 1}}), old)
    assert (
        text
        == 'Widget.example.dev "w" is invalid: spec.model.name: Invalid value: "object": model.name is immutable'
    )


def test_transition_rules_follow_map_list_items_by_key() -> None:
    crd = make_crd(IMMUTABLE)
    old = admit(crd, widget({"steps": [{"name": "a", "weight": 10}, {"name": "b", "weight": 50}]}))
    # Reordering keeps each item paired with its old self; a new item has no oldSelf.
    ok = widget(
        {
            "steps": [
                {"name": "b", "weight": 60},
                {"name": "a", "weight": 10},
                {"name": "c", "weight": 1},
            ]
        }
    )
    assert [s["name"] for s in admit(crd, ok, old)["spec"]["steps"]] == ["b", "a", "c"]
    bad = widget({"steps": [{"name": "b", "weight": 40}]})
    assert rejection(crd, bad, old).endswith(
        'spec.steps[0]: Invalid value: "object": weights only grow'
    )


def test_items_of_atomic_lists_have_no_old_self() -> None:
    crd = make_crd(FROZEN_TAGS)
    old = admit(crd, widget({"tags": ["a"]}))
    assert admit(crd, widget({"tags": ["b", "c"]}), old)["spec"]["tags"] == ["b", "c"]


def test_unchanged_invalid_values_ratchet_on_update() -> None:
    lax = make_crd(obj_schema(size={"type": "integer"}, other={"type": "string"}))
    old = admit(lax, widget({"size": 500}))
    strict = make_crd(obj_schema(
        size=with_rules({"type": "integer", "maximum": 100}, {"rule": "self <= 100"}),
        other={"type": "string"},
    ))  # fmt: skip
    assert admit(strict, widget({"size": 500, "other": "x"}), old)["spec"]["other"] == "x"
    assert "should be less than or equal to 100" in rejection(strict, widget({"size": 501}), old)


def test_status_subresource_writes_only_status() -> None:
    crd = make_crd(
        obj_schema(size={"type": "integer", "maximum": 100}), subresources={"status": {}}
    )
    old = admit(make_crd(obj_schema(size={"type": "integer"})), widget({"size": 500}))
    sent = widget({"size": 1}, status={"ready": True})
    out = admit(crd, sent, old, subresource="status")
    assert out["spec"] == {"size": 500}, "spec comes from the stored object"
    assert out["status"] == {"ready": True}


# ---------------------------------------------------------------------------------------------
# validate_crd


def crd_error(crd: dict[str, Any]) -> str:
    with pytest.raises(InvalidError) as info:
        validate_crd(crd)
    return str(info.value)


R = "spec.versions[0].schema.openAPIV3Schema"

CRD_CASES = [
    ("a property without type is not structural", obj_schema(a={"description": "x"}),
     f"{R}.properties[spec].properties[a].type: Required value: must not be empty for specified object fields"),
    ("array items need a type", {"type": "array", "items": {}},
     f"{R}.properties[spec].items.type: Required value: must not be empty for specified array items"),
    ("preserve-unknown-fields may only be true", {"type": "object", "x-kubernetes-preserve-unknown-fields": False},
     f"{R}.properties[spec].x-kubernetes-preserve-unknown-fields: Invalid value: false: must be true or undefined"),
    ("properties and additionalProperties exclude each other",
     {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}},
     f"{R}.properties[spec].additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive"),
    ("int-or-string must not set a type", {"type": "string", "x-kubernetes-int-or-string": True},
     f'{R}.properties[spec].type: Invalid value: "string": must be empty if x-kubernetes-int-or-string is true'),
    ("a CEL rule that does not parse", with_rules({"type": "object"}, {"rule": "self.a =="}),
     f'{R}.properties[spec].x-kubernetes-validations[0].rule: Invalid value: {{"rule":"self.a =="}}: '
     "compilation failed: ERROR: <input>:1:9: Syntax error"),
    ("an unknown reason", with_rules({"type": "object"}, {"rule": "true", "reason": "Nope"}),
     f'{R}.properties[spec].x-kubernetes-validations[0].reason: Unsupported value: "Nope": supported values: '
     '"FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid", "FieldValueRequired"'),
    ("a fieldPath to no field", with_rules(obj_schema(a={"type": "string"}), {"rule": "true", "fieldPath": ".b"}),
     f'{R}.properties[spec].x-kubernetes-validations[0].fieldPath: Invalid value: ".b": fieldPath must be a valid path'),
    ("list-type map needs keys", {"type": "array", "x-kubernetes-list-type": "map", "items": {"type": "object"}},
     f"{R}.properties[spec].x-kubernetes-list-map-keys: Required value: must not be empty if x-kubernetes-list-type is map"),
    ("an unknown list-type", {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "bag"},
     f'{R}.properties[spec].x-kubernetes-list-type: Unsupported value: "bag": supported values: "atomic", "set", "map"'),
    ("value validations may not carry types", {"type": "integer", "anyOf": [{"type": "integer", "minimum": 1}]},
     f"{R}.properties[spec].anyOf[0].type: Forbidden: must be empty to be structural"),
    ("a default that breaks the schema", {"type": "integer", "minimum": 1, "default": 0},
     f"{R}.properties[spec].default: Invalid value: 0: should be greater than or equal to 1"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("spec_schema", "message"), [c[1:] for c in CRD_CASES], ids=[c[0] for c in CRD_CASES]
)
def test_validate_crd_rejects(spec_schema: dict[str, Any], message: str) -> None:
    assert message in crd_error(make_crd(spec_schema))


def test_validate_crd_rejects_a_root_that_is_not_an_object() -> None:
    crd = make_crd(obj_schema())
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["type"] = "string"
    assert crd_error(crd) == f'{R}.type: Invalid value: "string": must be object at the root'


def test_validate_crd_limits_metadata_to_name_and_generate_name() -> None:
    crd = make_crd(obj_schema())
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    root["properties"]["metadata"] = obj_schema(labels={"type": "object"})
    assert crd_error(crd) == (
        f"{R}.properties[metadata]: Forbidden: must not specify anything other than name and "
        "generateName, but metadata is implicitly specified"
    )


def test_validate_crd_accepts_a_well_formed_schema() -> None:
    validate_crd(make_crd(IMMUTABLE))
    validate_crd(make_crd(obj_schema(**{**DEFAULTS["properties"], "batching": BATCHING})))


# ---------------------------------------------------------------------------------------------
# the project's own CRD and examples


def project_crd() -> dict[str, Any]:
    path = ROOT / "crds" / "inferenceservices.tfleet.dev.yaml"
    if not path.exists():
        pytest.fail(f"{path} is missing")
    return dict(yaml.safe_load(path.read_text()))


def test_the_project_crd_is_structural_and_its_rules_compile() -> None:
    validate_crd(project_crd())


def test_the_examples_are_admitted_and_a_decreasing_batch_list_is_not() -> None:
    crd = project_crd()
    version = crd["spec"]["versions"][0]["name"]
    examples = [
        doc
        for f in sorted((ROOT / "examples").glob("*.yaml"))
        for doc in yaml.safe_load_all(f.read_text())
        if doc and doc.get("kind") == "InferenceService"
    ]
    assert examples
    for doc in examples:
        admitted = admit_custom_resource(crd, version, doc, None)
        assert admitted["spec"]["model"] == {**admitted["spec"]["model"], **doc["spec"]["model"]}
    bad = copy.deepcopy(examples[0])
    bad["spec"]["batching"] = {"maxBatchSize": 32, "allowedBatchSizes": [16, 8, 32]}
    with pytest.raises(InvalidError) as info:
        admit_custom_resource(crd, version, bad, None)
    assert "spec.batching.allowedBatchSizes" in [c["field"] for c in info.value.causes]


# ---------------------------------------------------------------------------------------------
# published OpenAPI


def test_openapi_schema_is_published_like_the_apiserver() -> None:
    schema = obj_schema(port={"x-kubernetes-int-or-string": True, "description": "The port."})
    crd = make_crd(with_rules(schema, {"rule": "true"}))
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = "A widget."
    out = openapi_v3_schema_for_crd(crd, "v1")
    assert out["description"] == "A widget."
    assert out["x-kubernetes-group-version-kind"] == [
        {"group": "example.dev", "kind": "Widget", "version": "v1"}
    ]
    assert out["properties"]["metadata"] == {
        "allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}],
        "description": "Standard object's metadata. More info: "
        "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
    }
    assert out["properties"]["apiVersion"]["type"] == "string"
    assert out["properties"]["kind"]["description"].startswith("Kind is a string value")
    port = out["properties"]["spec"]["properties"]["port"]
    assert port["description"] == "The port."
    assert port["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert out["properties"]["spec"]["x-kubernetes-validations"] == [{"rule": "true"}]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (-1, "-1"),
        (1.5, "1.5"),
        (1e6, "1e+06"),
        (123456.0, "123456"),
        (0.0001, "0.0001"),
        (1e-05, "1e-05"),
    ],
)
def test_numbers_print_as_go_prints_them(value: float, text: str) -> None:
    assert go_number(value) == text


def test_a_rule_that_is_not_boolean_is_an_error() -> None:
    crd = make_crd(with_rules(obj_schema(a={"type": "integer"}), {"rule": "self.a"}))
    assert rejection(crd, widget({"a": 1})).endswith(
        'spec: Invalid value: "object": rule did not evaluate to a bool evaluating rule: self.a'
    )


def test_optional_old_self_runs_on_create_with_an_empty_optional() -> None:
    rule = {
        "rule": "!oldSelf.hasValue() ? self <= 10 : self >= oldSelf.value()",
        "optionalOldSelf": True,
        "message": "starts at most at 10, then only grows",
    }
    crd = make_crd(obj_schema(size=with_rules({"type": "integer"}, rule)))
    validate_crd(crd)
    assert "starts at most at 10" in rejection(crd, widget({"size": 11}))
    old = admit(crd, widget({"size": 5}))
    assert admit(crd, widget({"size": 50}), old)["spec"]["size"] == 50
    assert "then only grows" in rejection(crd, widget({"size": 4}), old)


def test_cel_numbers_compare_across_int_and_double() -> None:
    # A `number` is a double in CEL; the apiserver's heterogeneous equality makes 1.0 == 1.
    crd = make_crd(with_rules(obj_schema(ratio={"type": "number"}, mode={"type": "string"}),
                              {"rule": "self.ratio == 1 || self.ratio in [0, 2]", "message": "bad ratio"},
                              {"rule": "self.mode != 1", "message": "never equal across types"}))  # fmt: skip
    assert admit(crd, widget({"ratio": 1, "mode": "x"}))["spec"]["ratio"] == 1
    assert admit(crd, widget({"ratio": 2.0, "mode": "x"}))["spec"]["ratio"] == 2.0
    assert rejection(crd, widget({"ratio": 1.5, "mode": "x"})).endswith(
        'spec: Invalid value: "object": bad ratio'
    )


def test_openapi_component_name_reverses_the_group() -> None:
    assert openapi_component_name(make_crd(obj_schema()), "v1") == "dev.example.v1.Widget"


FIELD_CHECK_CASES = [
    ("a typo in a field name", "self.replica > 0", "undefined field 'replica'"),
    ("a typo inside a macro", "self.steps.all(s, s.wieght > 0)", "undefined field 'wieght'"),
    ("a typo under has()", "has(self.model.nme)", "undefined field 'nme'"),
    ("an unknown variable", "replicas > 0", "undeclared reference to 'replicas' (in container '')"),
]


@pytest.mark.parametrize(
    ("rule", "message"), [c[1:] for c in FIELD_CHECK_CASES], ids=[c[0] for c in FIELD_CHECK_CASES]
)
def test_validate_crd_rejects_rules_that_name_undeclared_fields(rule: str, message: str) -> None:
    # The apiserver type-checks rules against the schema; cel-python alone would not.
    schema = obj_schema(replicas={"type": "integer"}, model=obj_schema(name={"type": "string"}),
                        steps={"type": "array", "items": obj_schema(weight={"type": "integer"})})  # fmt: skip
    text = crd_error(make_crd(with_rules(schema, {"rule": rule})))
    assert f"{R}.properties[spec].x-kubernetes-validations[0].rule: Invalid value: " in text
    assert message in text


def test_field_checks_leave_maps_and_free_form_objects_alone() -> None:
    schema = obj_schema(
        labels={"type": "object", "additionalProperties": {"type": "string"}},
        free={"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        port={"x-kubernetes-int-or-string": True},
        steps={"type": "array", "items": obj_schema(weight={"type": "integer"})},
    )
    rules = [
        {"rule": "!has(self.labels.app) || self.labels['app'] != ''"},
        {"rule": "!has(self.free.anything) || self.free.anything.deeper != 1"},
        {"rule": "self.steps.map(s, s.weight).all(w, w >= 0)"},
        {
            "rule": "[1, 2].all(i, i >= size(self.steps) || self.steps[i - 1].weight <= self.steps[i].weight)"
        },
    ]
    validate_crd(make_crd(with_rules(schema, *rules)))


def test_validate_crd_forbids_old_self_where_items_do_not_correlate() -> None:
    assert crd_error(make_crd(FROZEN_TAGS)) == (
        f"{R}.properties[spec].properties[tags].items.x-kubernetes-validations[0].rule: "
        'Invalid value: "self == oldSelf": oldSelf cannot be used on the uncorrelatable portion '
        f"of the schema within {R}.properties[spec].properties[tags]"
    )


COST_CASES = [
    ("a quadratic rule over an unbounded list",
     obj_schema(l={"type": "array", "items": {"type": "integer"}}),
     "self.l.all(x, self.l.exists_one(y, y == x))", "properties[spec]"),
    ("a linear rule on the items of an unbounded list inside another",
     obj_schema(outer={"type": "array", "items": with_rules(
         obj_schema(inner={"type": "array", "items": {"type": "string"}}),
         {"rule": "self.inner.all(s, s != '')"})}),
     None, "properties[spec].properties[outer].items"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("schema", "rule", "where"), [c[1:] for c in COST_CASES], ids=[c[0] for c in COST_CASES]
)
def test_validate_crd_refuses_rules_far_over_the_cost_budget(
    schema: dict[str, Any], rule: str | None, where: str
) -> None:
    if rule is not None:
        schema = with_rules(schema, {"rule": rule})
    assert crd_error(make_crd(schema)) == (
        f"{R}.{where}.x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds "
        "budget by factor of more than 100x (try simplifying the rule, or adding maxItems, "
        "maxProperties, and maxLength where arrays, maps, and strings are declared)"
    )


def test_bounded_and_linear_rules_fit_the_budget() -> None:
    schema = obj_schema(
        bounded={"type": "array", "maxItems": 16, "items": {"type": "integer"}},
        unbounded={"type": "array", "items": {"type": "integer"}},
    )
    validate_crd(make_crd(with_rules(
        schema,
        {"rule": "self.bounded.all(x, self.bounded.exists_one(y, y == x))"},
        {"rule": "self.unbounded.all(x, x > 0)"},
    )))  # fmt: skip


def test_cel_quantity_library_compares_resource_amounts() -> None:
    quantity = {"x-kubernetes-int-or-string": True}
    resources = with_rules(
        obj_schema(requests=obj_schema(memory=quantity), limits=obj_schema(memory=quantity)),
        {"rule": "!has(self.limits.memory) || !has(self.requests.memory) || "
                 "!quantity(string(self.limits.memory)).isLessThan(quantity(string(self.requests.memory)))",
         "message": "limits.memory must not be below requests.memory"},
    )  # fmt: skip
    crd = make_crd(obj_schema(resources=resources))
    validate_crd(crd)
    ok = {"requests": {"memory": "1536Mi"}, "limits": {"memory": "2Gi"}}
    assert admit(crd, widget({"resources": ok}))["spec"]["resources"] == ok
    bad = {"requests": {"memory": "4Gi"}, "limits": {"memory": "4000M"}}
    assert rejection(crd, widget({"resources": bad})).endswith(
        'spec.resources: Invalid value: "object": limits.memory must not be below requests.memory'
    )
