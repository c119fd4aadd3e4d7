"""kubectl v1.35 end to end against the control plane: what a user types, what they see."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.localcluster.testing import WIDGET_CRD_NAME, WIDGET_GROUP, eventually, widget

ROOT = Path(__file__).resolve().parents[2]
TFLEET_CRD = ROOT / "crds" / "inferenceservices.tfleet.dev.yaml"

pytestmark = pytest.mark.usefixtures("widget_crd")


def _manifest(*objs: dict[str, Any]) -> str:
    return yaml.safe_dump_all(objs)


def test_apply_then_apply_an_edit(kubectl: Any, namespace: str) -> None:
    w = widget("gizmo", size=2, replicas=1)
    out = kubectl("apply", "-n", namespace, "-f", "-", input=_manifest(w)).stdout
    assert out.strip() == f"widget.{WIDGET_GROUP}/gizmo created"
    out = kubectl("apply", "-n", namespace, "-f", "-", input=_manifest(w)).stdout
    assert out.strip() == f"widget.{WIDGET_GROUP}/gizmo unchanged"
    w["spec"]["size"] = 4
    out = kubectl("apply", "-n", namespace, "-f", "-", input=_manifest(w)).stdout
    assert out.strip() == f"widget.{WIDGET_GROUP}/gizmo configured"
    got = json.loads(kubectl("get", "-n", namespace, "widget", "gizmo", "-o", "json").stdout)
    assert (got["spec"]["size"], got["metadata"]["generation"]) == (4, 2)


def test_apply_builtins_with_strategic_merge(kubectl: Any, namespace: str) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "conf"}, "data": {"a": "1", "b": "2"}}
    kubectl("apply", "-n", namespace, "-f", "-", input=_manifest(cm))
    kubectl("annotate", "-n", namespace, "configmap", "conf", "team=ml")
    del cm["data"]["b"]
    out = kubectl("apply", "-n", namespace, "-f", "-", input=_manifest(cm)).stdout
    assert "configured" in out
    got = json.loads(kubectl("get", "-n", namespace, "cm", "conf", "-o", "json").stdout)
    assert got["data"] == {"a": "1"}
    assert got["metadata"]["annotations"]["team"] == "ml"  # kept: not part of the applied config


def test_get_shows_printer_columns(kubectl: Any, namespace: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=_manifest(widget("cols", size=7, color="blue")))
    lines = kubectl("get", "-n", namespace, "widgets").stdout.splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "COLOR", "READY", "AGE"]
    cells = lines[1].split()
    assert cells[:3] == ["cols", "7", "blue"] and len(cells) == 4  # Ready is empty: no status yet
    by_short_name = kubectl("get", "-n", namespace, "wdg", "cols", "--no-headers").stdout.split()
    assert by_short_name[:3] == ["cols", "7", "blue"]


def test_get_yaml_and_describe(kubectl: Any, namespace: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=_manifest(widget("desc", size=3)))
    doc = yaml.safe_load(kubectl("get", "-n", namespace, "widget", "desc", "-o", "yaml").stdout)
    assert doc["spec"] == {"size": 3, "color": "red", "maxSize": 10}
    assert doc["metadata"]["resourceVersion"] and doc["metadata"]["uid"]
    described = kubectl("describe", "-n", namespace, "widget", "desc").stdout
    assert "Name:         desc" in described and "Size:      3" in described


def test_scale_and_wait_for_condition(kubectl: Any, namespace: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=_manifest(widget("sc", size=1, replicas=1)))
    kubectl("scale", "-n", namespace, "widget", "sc", "--replicas=3")
    assert kubectl("get", "-n", namespace, "widget", "sc", "-o", "jsonpath={.spec.replicas}").stdout == "3"
    kubectl("patch", "-n", namespace, "widget", "sc", "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
    out = kubectl("wait", "-n", namespace, "--for=condition=Ready", "widget/sc", "--timeout=10s").stdout
    assert "condition met" in out
    lines = kubectl("get", "-n", namespace, "widget", "sc").stdout.splitlines()
    assert lines[1].split()[3] == "True"


def test_explain_uses_the_published_schema(kubectl: Any) -> None:
    out = kubectl("explain", "widgets.spec.size").stdout
    assert "KIND:       Widget" in out and "How big the widget is." in out
    out = kubectl("explain", "deployments.spec.strategy").stdout
    assert "rollingUpdate" in out


@pytest.mark.skipif(not TFLEET_CRD.exists(), reason="the tfleet CRD is not generated yet")
def test_explain_tfleet_batching(kubectl: Any) -> None:
    kubectl("apply", "--server-side", "-f", str(TFLEET_CRD))
    crd = yaml.safe_load(TFLEET_CRD.read_text())
    name = crd["metadata"]["name"]
    kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=10s")
    # A resource type kubectl has not seen yet refreshes its cached discovery, as `get` does.
    kubectl("get", "tfis", "-A")
    out = kubectl("explain", "tfis.spec.batching").stdout
    assert "FIELD: batching" in out and "maxBatchSize" in out


def test_delete_collects_children(kubectl: Any, namespace: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=_manifest(widget("parent")))
    uid = kubectl("get", "-n", namespace, "widget", "parent", "-o", "jsonpath={.metadata.uid}").stdout
    child = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "child", "ownerReferences": [
        {"apiVersion": f"{WIDGET_GROUP}/v1", "kind": "Widget", "name": "parent", "uid": uid}]}}
    kubectl("apply", "-n", namespace, "-f", "-", input=_manifest(child))
    out = kubectl("delete", "-n", namespace, "widget", "parent").stdout
    assert 'widget.test.localcluster.dev "parent" deleted' in out
    eventually(lambda: "NotFound" in kubectl("get", "-n", namespace, "cm", "child", check=False).stderr,
               message="the child ConfigMap was not garbage-collected")


def test_server_side_apply_conflicts_name_the_owner(kubectl: Any, namespace: str) -> None:
    kubectl("apply", "--server-side", "--field-manager=operator", "-n", namespace, "-f", "-",
            input=_manifest(widget("shared", size=2)))
    res = kubectl("apply", "--server-side", "-n", namespace, "-f", "-",
                  input=_manifest(widget("shared", size=5)), check=False)
    assert res.returncode != 0
    assert 'conflict with "operator"' in res.stderr and ".spec.size" in res.stderr
    kubectl("apply", "--server-side", "--force-conflicts", "-n", namespace, "-f", "-",
            input=_manifest(widget("shared", size=5)))
    assert kubectl("get", "-n", namespace, "widget", "shared", "-o", "jsonpath={.spec.size}").stdout == "5"


@pytest.mark.parametrize(("change", "field", "text"), [
    pytest.param({"size": 0}, "spec.size", "should be greater than or equal to 1", id="schema violation"),
    pytest.param({"color": "green"}, "spec.color", 'Unsupported value: "green"', id="enum violation"),
    pytest.param({"size": 50}, "spec", "size must not exceed maxSize", id="CEL violation"),
    pytest.param({"owner": "mallory"}, "spec.owner", "owner is immutable", id="immutable field change"),
])
def test_invalid_manifests_are_rejected_naming_the_field(kubectl: Any, namespace: str, change: dict[str, Any],
                                                          field: str, text: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=_manifest(widget("strict", size=2, owner="alice")))
    bad = widget("strict", size=2, owner="alice")
    bad["spec"].update(change)
    res = kubectl("apply", "-n", namespace, "-f", "-", input=_manifest(bad), check=False)
    assert res.returncode != 0
    assert 'The Widget "strict" is invalid' in res.stderr
    assert f"{field}: " in res.stderr and text in res.stderr


def test_unknown_fields_are_rejected_by_strict_validation(kubectl: Any, namespace: str) -> None:
    bad = widget("typo", size=2)
    bad["spec"]["colour"] = "red"
    res = kubectl("apply", "-n", namespace, "-f", "-", input=_manifest(bad), check=False)
    assert res.returncode != 0 and 'unknown field "spec.colour"' in res.stderr


def test_get_events_and_all_namespaces(kubectl: Any, namespace: str) -> None:
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "hello"}, "reason": "Greeted",
             "message": "hello from the tests", "type": "Normal",
             "involvedObject": {"kind": "Widget", "name": "w", "namespace": namespace},
             "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z"}
    kubectl("create", "-n", namespace, "-f", "-", input=_manifest(event))
    lines = kubectl("get", "events", "-n", namespace).stdout.splitlines()
    assert lines[0].split()[:4] == ["LAST", "SEEN", "TYPE", "REASON"]
    assert "Greeted" in lines[1] and "widget/w" in lines[1] and "hello from the tests" in lines[1]
    everywhere = kubectl("get", "crd", WIDGET_CRD_NAME, "-A").stdout
    assert WIDGET_CRD_NAME in everywhere


def test_access_reviews_answer(kubectl: Any) -> None:
    assert kubectl("auth", "can-i", "create", "deployments").stdout.strip() == "yes"
    assert "Username" in kubectl("auth", "whoami").stdout


@pytest.mark.simulated
def test_kubectl_uses_aggregated_discovery(local_cluster: Any, tmp_path: Path) -> None:
    from e2e.localcluster.fixtures import KUBECTL

    before = len(local_cluster.request_log)
    result = subprocess.run([str(KUBECTL), "--kubeconfig", str(local_cluster.kubeconfig), "--cache-dir",
                             str(tmp_path), "get", "widgets", "-A"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    paths = [r["path"] for r in local_cluster.request_log[before:]]
    assert "/api" in paths and "/apis" in paths
    assert not [p for p in paths if p.startswith("/apis/") and p.count("/") == 3], paths  # no per-group documents
