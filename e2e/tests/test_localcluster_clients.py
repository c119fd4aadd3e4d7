"""Typed Go clients against the control plane: protobuf bodies from kubectl and Helm 4."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from e2e.localcluster import protobuf

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / ".tools" / "bin" / "helm"

CHART = {
    "Chart.yaml": "apiVersion: v2\nname: demo\nversion: 0.1.0\n",
    "values.yaml": "size: 1\n",
    "templates/config.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\n"
        "data:\n  size: {{ .Values.size | quote }}\n"),
}


def test_imperative_kubectl_create_sends_protobuf(kubectl: Any, namespace: str) -> None:
    kubectl("create", "configmap", "made", "-n", namespace, "--from-literal=k=v")
    kubectl("create", "secret", "generic", "hush", "-n", namespace, "--from-literal=p=s3cret")
    kubectl("create", "deployment", "web", "-n", namespace, "--image=nginx:1.27", "--replicas=0")
    cm = json.loads(kubectl("get", "cm", "made", "-n", namespace, "-o", "json").stdout)
    assert cm["data"] == {"k": "v"}
    secret = json.loads(kubectl("get", "secret", "hush", "-n", namespace, "-o", "json").stdout)
    assert secret["data"] == {"p": "czNjcmV0"} and secret["type"] == "Opaque"
    deploy = json.loads(kubectl("get", "deploy", "web", "-n", namespace, "-o", "json").stdout)
    assert deploy["spec"]["replicas"] == 0  # a zero that must survive the protobuf decoding
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"


def test_protobuf_decoding_rejects_unknown_kinds() -> None:
    with pytest.raises(protobuf.ProtobufError):
        protobuf.decode(b"not protobuf")
    # An envelope (field 1: typeMeta {apiVersion "x/v1", kind "Thing"}) of a kind we do not know.
    type_meta = b"\x0a\x04x/v1\x12\x05Thing"
    with pytest.raises(protobuf.ProtobufError, match="x/v1/Thing"):
        protobuf.decode(protobuf.MAGIC + b"\x0a" + bytes([len(type_meta)]) + type_meta)


@pytest.fixture
def helm(kubeconfig: Path, tmp_path: Path) -> Any:
    if not HELM.exists():
        pytest.skip(f"{HELM} is missing (run `make tools`)")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HELM_CONFIG_HOME": str(tmp_path / "config"),
           "HELM_CACHE_HOME": str(tmp_path / "cache"), "HELM_DATA_HOME": str(tmp_path / "data")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(HELM), *args], capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stderr}{result.stdout}"
        return result

    return run


def test_helm_install_upgrade_uninstall(helm: Any, kubectl: Any, namespace: str, tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    for name, text in CHART.items():
        (chart / name).parent.mkdir(parents=True, exist_ok=True)
        (chart / name).write_text(text)
    helm("install", "demo", str(chart), "-n", namespace, "--wait", "--timeout", "60s")
    assert kubectl("get", "cm", "demo-config", "-n", namespace, "-o", "jsonpath={.data.size}").stdout == "1"
    fields = json.loads(kubectl("get", "cm", "demo-config", "-n", namespace, "-o", "json",
                                "--show-managed-fields").stdout)["metadata"]["managedFields"]
    assert [(f["manager"], f["operation"]) for f in fields] == [("helm", "Apply")]  # Helm 4 applies server-side
    helm("upgrade", "demo", str(chart), "-n", namespace, "--set", "size=2", "--wait", "--timeout", "60s")
    assert kubectl("get", "cm", "demo-config", "-n", namespace, "-o", "jsonpath={.data.size}").stdout == "2"
    releases = kubectl("get", "secrets", "-n", namespace, "-l", "owner=helm,name=demo", "-o", "name").stdout.split()
    assert releases == ["secret/sh.helm.release.v1.demo.v1", "secret/sh.helm.release.v1.demo.v2"]
    history = helm("history", "demo", "-n", namespace).stdout
    assert "superseded" in history and "deployed" in history
    helm("uninstall", "demo", "-n", namespace)
    assert kubectl("get", "cm", "-n", namespace, "-o", "name").stdout.strip() in ("", "configmap/kube-root-ca.crt")
    assert kubectl("get", "secrets", "-n", namespace, "-l", "owner=helm", "-o", "name").stdout.strip() == ""
