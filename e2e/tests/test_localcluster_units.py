"""Pure helpers of the control plane: selectors, JSONPath, ages, content negotiation, protobuf."""

from __future__ import annotations

from typing import Any

import pytest

from e2e.localcluster import builtins, discovery, errors, protobuf, schemas, tables
from e2e.localcluster.objects import human_duration, name_problems
from e2e.localcluster.resources import BUILTINS
from e2e.localcluster.selectors import (
    field_value,
    parse_field_selector,
    parse_label_selector,
    selector_to_string,
)

LABELS = {"app": "web", "tier": "frontend", "version": "3"}


@pytest.mark.parametrize(("selector", "matches"), [
    pytest.param("app=web", True, id="equality"),
    pytest.param("app==web,tier=frontend", True, id="double equals and conjunction"),
    pytest.param("app!=web", False, id="inequality"),
    pytest.param("app in (web, api)", True, id="set membership"),
    pytest.param("tier notin (frontend)", False, id="set exclusion"),
    pytest.param("missing notin (x)", True, id="notin matches an absent label"),
    pytest.param("app", True, id="existence"),
    pytest.param("!app", False, id="non-existence"),
    pytest.param("version>2,version<4", True, id="numeric comparisons"),
    pytest.param("app in (web),tier in (a,b)", False, id="commas inside sets do not split"),
])
def test_label_selectors(selector: str, matches: bool) -> None:
    pred = parse_label_selector(selector)
    assert pred is not None and pred(LABELS) is matches


def test_malformed_label_selector_is_a_bad_request() -> None:
    with pytest.raises(errors.ApiError) as err:
        parse_label_selector("app in web")
    assert err.value.code == 400


def test_field_selectors_and_their_supported_labels() -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "hostNetwork": False}}
    pred = parse_field_selector("spec.nodeName=n1,metadata.name!=q", frozenset({"spec.nodeName"}))
    assert pred is not None and pred(pod)
    assert field_value(pod, "spec.hostNetwork") == "false"
    with pytest.raises(errors.ApiError, match=r"field label not supported: spec\.x"):
        parse_field_selector("spec.x=1", frozenset())


def test_label_selector_objects_render_in_query_syntax() -> None:
    sel = {"matchLabels": {"b": "2", "a": "1"},
           "matchExpressions": [{"key": "c", "operator": "In", "values": ["y", "x"]},
                                {"key": "d", "operator": "DoesNotExist"}]}
    assert selector_to_string(sel) == "a=1,b=2,c in (x,y),!d"


@pytest.mark.parametrize(("path", "expected"), [
    (".spec.size", [3]),
    ('.status.conditions[?(@.type=="Ready")].status', ["True"]),
    (".status.conditions[*].type", ["Ready", "Available"]),
    (".status.conditions[1].reason", ["Scaled"]),
    (".spec.missing", []),
])
def test_printer_column_jsonpath(path: str, expected: list[Any]) -> None:
    obj = {"spec": {"size": 3}, "status": {"conditions": [
        {"type": "Ready", "status": "True"}, {"type": "Available", "status": "False", "reason": "Scaled"}]}}
    assert tables.jsonpath(obj, path) == expected


@pytest.mark.parametrize(("seconds", "text"), [
    (5, "5s"), (119, "119s"), (150, "2m30s"), (600, "10m"), (3 * 3600 + 60, "3h1m"), (10 * 3600, "10h"),
    (3 * 86400, "3d"), (30 * 86400, "30d"),
])
def test_ages_read_like_kubectl(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_content_negotiation() -> None:
    kubectl_get = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
    assert tables.wanted_shape(kubectl_get) == "Table"
    assert tables.wanted_shape("application/json") is None
    assert tables.wanted_shape("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io") == \
        "PartialObjectMetadata"
    aggregated = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    assert discovery.wants_aggregated(aggregated) == "v2"
    assert discovery.wants_aggregated("application/json") is None


def test_names_are_validated_like_the_real_server() -> None:
    assert name_problems("web-1.example") is None
    assert "RFC 1123 subdomain" in (name_problems("Web") or "")
    assert "RFC 1123 label" in (name_problems("a.b", "label") or "")
    assert "DNS-1035 label" in (name_problems("1svc", "dns1035") or "")


def test_unknown_fields_of_builtins_are_pruned_and_reported() -> None:
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "bogus": 1},
              "spec": {"replicaz": 2, "template": {"spec": {"containers": [{"name": "c", "imagee": "x"}]}}}}
    removed = schemas.prune_unknown("apps/v1/Deployment", deploy)
    assert removed == ["metadata.bogus", "spec.replicaz", "spec.template.spec.containers[0].imagee"]
    assert deploy["spec"] == {"template": {"spec": {"containers": [{"name": "c"}]}}}


@pytest.mark.parametrize(("resources", "qos"), [
    ({}, "BestEffort"),
    ({"requests": {"cpu": "1"}}, "Burstable"),
    ({"limits": {"cpu": "1", "memory": "1Gi"}}, "Guaranteed"),
    ({"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "1Gi"}}, "Burstable"),
])
def test_pod_qos_class(resources: dict[str, Any], qos: str) -> None:
    assert builtins.qos_class({"containers": [{"name": "c", "resources": resources}]}) == qos


def test_events_convert_between_api_versions() -> None:
    new = next(rt for rt in BUILTINS if rt.gvk == "events.k8s.io/v1/Event")
    stored = new.to_storage({"apiVersion": "events.k8s.io/v1", "kind": "Event", "note": "hi",  # type: ignore[misc]
                             "regarding": {"name": "x"}, "reportingController": "c"})
    assert (stored["apiVersion"], stored["message"], stored["involvedObject"], stored["reportingComponent"]) == \
        ("v1", "hi", {"name": "x"}, "c")
    assert new.from_storage(stored)["note"] == "hi"  # type: ignore[misc]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: bytes | int) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def test_protobuf_bodies_decode_to_json_objects() -> None:
    meta = _field(1, b"s") + _field(3, b"ns") + _field(11, _field(1, b"k") + _field(2, b"v"))
    secret = _field(1, meta) + _field(2, _field(1, b"pw") + _field(2, b"\x00\x01")) + _field(3, b"Opaque")
    type_meta = _field(1, b"v1") + _field(2, b"Secret")
    body = protobuf.MAGIC + _field(1, type_meta) + _field(2, secret)
    assert protobuf.decode(body) == {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s", "namespace": "ns", "labels": {"k": "v"}},
        "data": {"pw": "AAE="}, "type": "Opaque"}


def test_protobuf_keeps_meaningful_zeros_and_drops_empty_values() -> None:
    spec = _field(1, 0) + _field(5, 0)  # replicas: 0 (a pointer), minReadySeconds: 0 (a plain value)
    deploy = _field(1, _field(1, b"d")) + _field(2, spec)
    type_meta = _field(1, b"apps/v1") + _field(2, b"Deployment")
    decoded = protobuf.decode(protobuf.MAGIC + _field(1, type_meta) + _field(2, deploy))
    assert decoded["spec"] == {"replicas": 0}
