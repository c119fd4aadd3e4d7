"""`helm install` of the chart into a local control plane of its own: what only a connected
helm can check (the APIs the cluster serves, the namespaces that exist) and what the API
server keeps of the result. A private cluster, because these tests add a CRD
(monitoring.coreos.com's ServiceMonitor) that other tests must not see."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.packaging.cluster import PrivateCluster
from tests.packaging.helm import CHART, HELM
from tests.packaging.test_chart import SERVICE_MONITOR_MISSING

pytestmark = pytest.mark.skipif(not HELM.exists(), reason=f"{HELM} is missing (run `make tools`)")

Helm = Callable[..., subprocess.CompletedProcess[str]]

# The ServiceMonitor API as the Prometheus Operator's CRD serves it (group, version, kind,
# plural); its schema is left open, tfleet only needs the API to exist.
SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {"plural": "servicemonitors", "singular": "servicemonitor", "kind": "ServiceMonitor",
                  "listKind": "ServiceMonitorList"},
        "versions": [{"name": "v1", "served": True, "storage": True,
                      "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
    },
}


@pytest.fixture
def helm(private_cluster: PrivateCluster, tmp_path: Path) -> Helm:
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "HELM_CACHE_HOME": str(tmp_path / "cache"),
           "HELM_CONFIG_HOME": str(tmp_path / "config"), "HELM_DATA_HOME": str(tmp_path / "data")}

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(HELM), "--kubeconfig", str(private_cluster.kubeconfig), *args],
                                capture_output=True, text=True, timeout=180, env=env)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}{result.stdout}")
        return result

    return run


def exists(cluster: PrivateCluster, *args: str) -> bool:
    return cluster.kubectl("get", *args, "-o", "name", check=False).returncode == 0


def installed(helm: Helm, namespace: str) -> list[str]:
    return [r["name"] for r in json.loads(helm("list", "--namespace", namespace, "-o", "json").stdout)]


def test_a_service_monitor_is_installed_only_where_its_api_is_served(private_cluster, helm):
    cluster = private_cluster
    namespace = cluster.namespace("monitoring-test")
    values = ("--set", "metrics.serviceMonitor.enabled=true", "--set", "replicaCount=1",
              "--set", "leaderElection.enabled=false")
    refused = helm("install", "sm", str(CHART), "--namespace", namespace, *values, check=False)
    assert refused.returncode != 0
    assert SERVICE_MONITOR_MISSING in refused.stderr, refused.stderr
    assert installed(helm, namespace) == [] and not exists(cluster, "serviceaccount", "sm-tfleet", "-n", namespace)

    cluster.apply(SERVICE_MONITOR_CRD)
    cluster.kubectl("wait", "--for=condition=Established", "crd/servicemonitors.monitoring.coreos.com",
                    "--timeout=30s")
    helm("install", "sm", str(CHART), "--namespace", namespace, *values, "--wait", "--timeout", "90s")
    monitor: dict[str, Any] = cluster.get("servicemonitor", "sm-tfleet", "-n", namespace)
    service: dict[str, Any] = cluster.get("service", "sm-tfleet-metrics", "-n", namespace)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    helm("uninstall", "sm", "--namespace", namespace, "--wait", "--timeout", "60s")


def test_a_watched_namespace_must_exist_and_a_missing_one_is_named(private_cluster, helm):
    cluster = private_cluster
    namespace = cluster.namespace("scoped-release")
    values = ("--set-json", 'watchNamespaces=["ml-team-a", "ml-team-b"]', "--set-json",
              'leaderElection={"leaseName": "scoped"}')
    cluster.namespace("ml-team-a")
    refused = helm("install", "scoped", str(CHART), "--namespace", namespace, *values, check=False)
    assert refused.returncode != 0
    assert ('watchNamespaces: namespace "ml-team-b" does not exist: create it first (kubectl create namespace '
            'ml-team-b)') in refused.stderr, refused.stderr
    assert installed(helm, namespace) == [] and not exists(cluster, "role", "scoped-tfleet", "-n", "ml-team-a")

    cluster.namespace("ml-team-b")
    helm("install", "scoped", str(CHART), "--namespace", namespace, *values, "--wait", "--timeout", "90s")
    assert exists(cluster, "role", "scoped-tfleet", "-n", "ml-team-a")
    assert exists(cluster, "role", "scoped-tfleet", "-n", "ml-team-b")
    # The stored Deployment keeps the default spread of its replicas over nodes.
    deployment = cluster.get("deployment", "scoped-tfleet", "-n", namespace)
    affinity = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    # Uninstalling leaves the namespaces (the chart never owned them) and removes its Roles.
    helm("uninstall", "scoped", "--namespace", namespace, "--wait", "--timeout", "60s")
    assert exists(cluster, "namespace", "ml-team-b") and not exists(cluster, "role", "scoped-tfleet", "-n", "ml-team-b")
