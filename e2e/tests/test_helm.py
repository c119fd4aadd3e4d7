"""Installing tfleet with its Helm chart (helm v4, server-side apply) into a cluster.

On the local control plane the operator's pods are simulated (they become Ready but run
nothing); on kind they run the image. Either way the release watches only its own
namespaces, so it never competes with the suite's operator process.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / ".tools" / "bin" / "helm"
CHART = ROOT / "charts" / "tfleet"
CRD_NAME = "inferenceservices.tfleet.dev"

pytestmark = pytest.mark.skipif(not HELM.exists(), reason=f"{HELM} is missing (run `make tools`)")


@pytest.fixture
def helm(kubeconfig: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin",
           "HELM_CACHE_HOME": str(tmp_path / "cache"), "HELM_CONFIG_HOME": str(tmp_path / "config"),
           "HELM_DATA_HOME": str(tmp_path / "data")}

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(HELM), "--kubeconfig", str(kubeconfig), *args], capture_output=True,
                                text=True, timeout=180, env=env)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}{result.stdout}")
        return result

    return run


@pytest.fixture
def second_namespace(kubectl: Callable[..., Any]) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:8]}"
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "Namespace",
                                                  "metadata": {"name": name}}))
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def get(kubectl: Callable[..., Any], *args: str) -> dict[str, Any]:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)  # type: ignore[no-any-return]


def exists(kubectl: Callable[..., Any], *args: str) -> bool:
    return kubectl("get", *args, "-o", "name", check=False).returncode == 0


def test_install_upgrade_and_uninstall_the_chart(helm, kubectl, namespace, second_namespace):
    release = "tfleet-e2e"
    fullname = release  # the release name contains the chart name
    install = helm("install", release, str(CHART), "--namespace", namespace, "--wait", "--timeout", "90s",
                   "--set-json", f'watchNamespaces=["{namespace}"]',
                   "--set-json", f'leaderElection={{"leaseName": "{release}"}}',
                   "--set", "networkPolicy.enabled=true")
    assert "Serve a first model" in install.stdout  # NOTES.txt tells the user what to do next
    assert f"It reconciles InferenceServices in: {namespace}." in install.stdout

    # The operator objects are up.
    dep = get(kubectl, "deployment", fullname, "-n", namespace)
    assert dep["status"].get("readyReplicas") == 2
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert f"--namespace={namespace}" in container["args"] and "--leader-election" in container["args"]
    assert exists(kubectl, "serviceaccount", fullname, "-n", namespace)
    assert exists(kubectl, "role", fullname, "-n", namespace)
    assert exists(kubectl, "rolebinding", f"{fullname}-leader-election", "-n", namespace)
    assert exists(kubectl, "role", f"{fullname}-drain-key", "-n", namespace)
    assert f"--drain-key-secret={fullname}-drain-key" in container["args"]
    policy = get(kubectl, "networkpolicy", f"{fullname}-health-bridge", "-n", namespace)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert exists(kubectl, "service", f"{fullname}-metrics", "-n", namespace)
    assert exists(kubectl, "poddisruptionbudget", fullname, "-n", namespace)
    assert not exists(kubectl, "clusterrole", fullname)
    crd = get(kubectl, "crd", CRD_NAME)
    assert any(c["type"] == "Established" and c["status"] == "True" for c in crd["status"]["conditions"])

    # Upgrade with changed values: a second watched namespace, one replica, text logs.
    helm("upgrade", release, str(CHART), "--namespace", namespace, "--wait", "--timeout", "90s",
         "--reuse-values", "--set-json", f'watchNamespaces=["{namespace}", "{second_namespace}"]',
         "--set", "replicaCount=1", "--set", "logging.format=text")
    dep = get(kubectl, "deployment", fullname, "-n", namespace)
    assert dep["spec"]["replicas"] == 1
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert f"--namespace={second_namespace}" in container["args"]
    assert "--log-format=text" in container["args"]
    assert exists(kubectl, "role", fullname, "-n", second_namespace)
    assert exists(kubectl, "networkpolicy", f"{fullname}-health-bridge", "-n", second_namespace)
    assert not exists(kubectl, "poddisruptionbudget", fullname, "-n", namespace)  # only with 2+ replicas
    history = helm("history", release, "--namespace", namespace, "-o", "json").stdout
    assert [h["status"] for h in json.loads(history)] == ["superseded", "deployed"]

    # Uninstall removes the operator but keeps the CRD, and with it the users' objects.
    kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceService",
        "metadata": {"name": "kept", "namespace": namespace},
        "spec": {"model": {"basePath": "gs://bucket/models/kept", "version": 1}}}))
    helm("uninstall", release, "--namespace", namespace, "--wait", "--timeout", "60s")
    assert not exists(kubectl, "deployment", fullname, "-n", namespace)
    assert not exists(kubectl, "role", fullname, "-n", second_namespace)
    assert not exists(kubectl, "networkpolicy", f"{fullname}-health-bridge", "-n", second_namespace)
    assert exists(kubectl, "crd", CRD_NAME)
    assert exists(kubectl, "tfis", "kept", "-n", namespace)


def test_bad_values_are_refused_before_anything_is_installed(helm, kubectl, namespace):
    result = helm("install", "bad", str(CHART), "--namespace", namespace, "--set", "logging.format=xml",
                  check=False)
    assert result.returncode != 0
    assert "at '/logging/format': value must be one of 'json', 'text'" in result.stderr
    assert not exists(kubectl, "serviceaccount", "bad-tfleet", "-n", namespace)
    assert helm("list", "--namespace", namespace, "-q").stdout.strip() == ""


def test_the_api_server_accepts_the_network_policy_as_rendered(helm, kubectl, namespace):
    """The policy for every serving namespace, with its endPort ranges, passes the API server's
    own validation (a dry run: nothing is stored)."""
    rendered = helm("template", "np", str(CHART), "--namespace", namespace,
                    "--set", "networkPolicy.enabled=true", "--set-json", f'watchNamespaces=["{namespace}"]').stdout
    policies = [doc for doc in rendered.split("\n---\n") if "kind: NetworkPolicy" in doc]
    assert len(policies) == 1
    result = kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-", input=policies[0])
    accepted = json.loads(result.stdout)
    assert accepted["metadata"]["namespace"] == namespace
    # The server's defaults are in what it would store; the rules are as written.
    assert accepted["spec"]["policyTypes"] == ["Ingress"]
    guarded, other = accepted["spec"]["ingress"]
    assert guarded["ports"] == [{"protocol": "TCP", "port": 8511}]
    assert {(p["protocol"], p["port"], p.get("endPort")) for p in other["ports"]} == {
        ("TCP", 1, 8510), ("TCP", 8512, 65535), ("UDP", 1, 65535)}
    assert not exists(kubectl, "networkpolicy", "np-tfleet-health-bridge", "-n", namespace)
