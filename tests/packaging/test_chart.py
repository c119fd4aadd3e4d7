"""The Helm chart, with the real helm v4: lint, render, validate against Kubernetes 1.35."""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

import kubernetes_validate
import pytest

from tests.packaging.helm import (
    CHART,
    HELM,
    ROOT,
    SERVICE_MONITOR_API,
    find,
    helm,
    render,
    set_args,
    template,
)

K8S = "1.35.0"

pytestmark = pytest.mark.skipif(not HELM.exists(), reason=f"{HELM} is missing (run `make tools`)")

VALUE_SETS = {
    "defaults": {},
    "namespaced": {"watchNamespaces": ["ml", "ml-staging"]},
    "single replica without election": {"replicaCount": 1, "leaderElection": {"enabled": False}},
    "service monitor and pinned digest": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
        "image": {"repository": "registry.example.com/tfleet", "digest": "sha256:" + "ab" * 32},
    },
    "scheduling and extras": {
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                       "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "tfleet"}}}],
        "priorityClassName": "system-cluster-critical",
        "imagePullSecrets": [{"name": "regcred"}],
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/tfleet"}},
    },
    "network policy": {"watchNamespaces": ["ml", "ml-staging"], "networkPolicy": {"enabled": True}},
    "network policy for all namespaces": {"networkPolicy": {"enabled": True, "namespaces": ["serving"]}},
    "drain tokens off": {"drainToken": {"enabled": False}},
}


def deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (dep,) = find(objects, "Deployment")
    return dep


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = deployment(objects)["spec"]["template"]["spec"]["containers"]
    return c  # type: ignore[no-any-return]


@pytest.mark.parametrize("values", [{}, VALUE_SETS["namespaced"], VALUE_SETS["service monitor and pinned digest"],
                                    VALUE_SETS["network policy"], VALUE_SETS["scheduling and extras"]],
                         ids=["defaults", "namespaced", "servicemonitor", "networkpolicy", "scheduling"])
def test_helm_lint_strict_is_clean(values):
    result = helm("lint", "--strict", str(CHART), *set_args(values))
    assert "0 chart(s) failed" in result.stdout


SERVICE_MONITOR_MISSING = ("metrics.serviceMonitor.enabled=true needs the Prometheus Operator's ServiceMonitor API "
                           "(monitoring.coreos.com/v1/ServiceMonitor), and the cluster does not serve it")


def test_a_service_monitor_without_its_api_fails_naming_the_api():
    values = VALUE_SETS["service monitor and pinned digest"]
    result = helm("template", "t", str(CHART), *set_args(values), check=False)
    assert result.returncode != 0
    assert SERVICE_MONITOR_MISSING in result.stderr, result.stderr
    assert "--api-versions monitoring.coreos.com/v1/ServiceMonitor" in result.stderr  # the way out for helm template
    # helm lint knows no cluster either: it reports the message and lints on (lint treats fail as a note).
    lint = helm("lint", "--strict", str(CHART), *set_args(values))
    assert "0 chart(s) failed" in lint.stdout and SERVICE_MONITOR_MISSING in lint.stderr
    assert find(template(values, api_versions=(SERVICE_MONITOR_API,)), "ServiceMonitor")


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_rendered_object_validates_strictly_against_kubernetes_1_35(name):
    objects = render(VALUE_SETS[name])
    assert objects
    for obj in objects:
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            continue  # not a built-in kind; checked on its own below
        kubernetes_validate.validate(obj, K8S, strict=True)


@pytest.mark.parametrize(("kind", "file"), [("InferenceService", "inferenceservices.tfleet.dev.yaml"),
                                           ("InferenceServiceDefaults", "inferenceservicedefaults.tfleet.dev.yaml")])
def test_the_chart_carries_the_generated_crds_unchanged(kind: str, file: str):
    generated = subprocess.run([sys.executable, "-m", "tfleet.cli", "crd", "--kind", kind], capture_output=True,
                               text=True, check=True).stdout
    assert (CHART / "crds" / file).read_text() == generated, \
        "the chart's CRD drifted from the typed API: run `make manifests`"
    assert (ROOT / "crds" / file).read_text() == generated, "crds/ drifted from the typed API: run `make manifests`"


def test_the_operator_arguments_parse_with_tfleet_run_itself():
    from tfleet.cli.main import build_parser

    for values in VALUE_SETS.values():
        c = container(render(values))
        args = [a.replace("$(POD_NAMESPACE)", "tfleet-system") for a in c["args"]]
        parsed = build_parser().parse_args(args)
        assert isinstance(parsed, argparse.Namespace) and parsed.command == "run"
        assert parsed.namespace == (values.get("watchNamespaces") or None)
        assert parsed.leader_election == values.get("leaderElection", {}).get("enabled", True)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert (parsed.metrics_port, parsed.health_port) == (ports["metrics"], ports["health"])
        assert parsed.log_format == "json"
        if values.get("drainToken", {}).get("enabled", True):
            assert (parsed.drain_key_secret, parsed.drain_key_namespace) == ("tfleet-drain-key", "tfleet-system")
            assert not parsed.no_drain_token
        else:
            assert parsed.no_drain_token


def test_the_operator_runs_restricted_with_probes_and_hands_its_image_to_serving_pods():
    objects = render(VALUE_SETS["service monitor and pinned digest"])
    c = container(objects)
    pod = deployment(objects)["spec"]["template"]["spec"]
    assert c["image"] == "registry.example.com/tfleet@sha256:" + "ab" * 32
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["TFLEET_BRIDGE_IMAGE"] == c["image"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0 and pod["securityContext"]["runAsGroup"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert {v["mountPath"] for v in c["volumeMounts"]} == {"/tmp"}


def test_the_default_image_is_the_app_version():
    c = container(template())
    chart = helm("show", "chart", str(CHART)).stdout
    app_version = next(line.split(":", 1)[1].strip().strip('"') for line in chart.splitlines()
                       if line.startswith("appVersion:"))
    assert c["image"] == f"ghcr.io/tfleet/tfleet:{app_version}"


def test_cluster_wide_mode_grants_a_cluster_role_and_namespaced_mode_only_roles():
    wide = template()
    assert [o["metadata"]["name"] for o in find(wide, "ClusterRole")] == ["tfleet"]
    assert [o["metadata"]["name"] for o in find(wide, "Role")] == ["tfleet-leader-election", "tfleet-drain-key"]

    scoped = template(VALUE_SETS["namespaced"])
    # Beyond the watched namespaces only the cluster-scoped InferenceServiceDefaults, and their
    # Events in the default namespace.
    (defaults_role,) = find(scoped, "ClusterRole")
    assert defaults_role["metadata"]["name"] == "tfleet-defaults"
    assert {r for rule in defaults_role["rules"] for r in rule["resources"]} == {
        "inferenceservicedefaults", "inferenceservicedefaults/status"}
    assert [o["metadata"]["name"] for o in find(scoped, "ClusterRoleBinding")] == ["tfleet-defaults"]
    roles = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in find(scoped, "Role")}
    assert roles == {("ml", "tfleet"), ("ml-staging", "tfleet"), ("tfleet-system", "tfleet-leader-election"),
                     ("tfleet-system", "tfleet-drain-key"), ("default", "tfleet-defaults-events")}
    # Watching the default namespace, its Role grants the Events already.
    with_default = template({"watchNamespaces": ["default"]})
    assert find(with_default, "Role", name="tfleet-defaults-events") == []
    for binding in find(scoped, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tfleet", "namespace": "tfleet-system"}]


def test_no_rule_uses_a_wildcard():
    for values in VALUE_SETS.values():
        for role in find(render(values), "ClusterRole") + find(render(values), "Role"):
            for rule in role["rules"]:
                for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)


def test_the_lease_role_names_its_lease_and_disappears_without_election():
    (role,) = find(template({"leaderElection": {"leaseName": "ops-lease"}}), "Role", name="tfleet-leader-election")
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert named == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                      "resourceNames": ["ops-lease"], "verbs": ["get", "update"]}]
    single = template(VALUE_SETS["single replica without election"])
    assert find(single, "Role", name="tfleet-leader-election") == [] and find(single, "PodDisruptionBudget") == []
    assert "--leader-election" not in container(single)["args"]


def test_the_service_monitor_scrapes_the_metrics_service():
    objects = render(VALUE_SETS["service monitor and pinned digest"])
    (monitor,) = find(objects, "ServiceMonitor")
    (service,) = find(objects, "Service")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["spec"]["selector"] == monitor["spec"]["selector"]["matchLabels"]
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s",
                                             "scrapeTimeout": "10s"}]
    assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]
    assert find(template(), "ServiceMonitor") == []


@pytest.mark.parametrize(("values", "message"), [
    ({"replicaCount": "two"}, "at '/replicaCount': got string, want integer"),
    ({"logging": {"format": "xml"}}, "at '/logging/format': value must be one of 'json', 'text'"),
    ({"watchNamespaces": ["Team_A"]}, "at '/watchNamespaces/0': 'Team_A' does not match pattern"),
    ({"metrcs": {"port": 9090}}, "additional properties 'metrcs' not allowed"),
    ({"metrics": {"port": 70000}}, "at '/metrics/port': maximum: got 70,000, want 65,535"),
    ({"image": {"digest": "latest"}}, "at '/image/digest': 'latest' does not match pattern"),
    ({"metrics": {"serviceMonitor": {"interval": "30 seconds"}}}, "at '/metrics/serviceMonitor/interval'"),
    ({"leaderElection": {"enabled": "yes"}}, "at '/leaderElection/enabled': got string, want boolean"),
], ids=["replicas-type", "log-format", "namespace-name", "typo", "port-range", "digest", "duration", "bool"])
def test_bad_values_fail_with_a_message_naming_the_value(values, message):
    result = helm("template", "t", str(CHART), *set_args(values), check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_several_replicas_without_leader_election_are_refused():
    result = helm("template", "t", str(CHART), *set_args({"replicaCount": 2, "leaderElection": {"enabled": False}}),
                  check=False)
    assert result.returncode != 0
    assert "replicaCount > 1 needs leaderElection.enabled=true" in result.stderr


def test_leader_election_timings_must_let_the_old_leader_stop_first():
    values = {"leaderElection": {"leaseDurationSeconds": 10, "renewDeadlineSeconds": 10}}
    result = helm("template", "t", str(CHART), *set_args(values), check=False)
    assert result.returncode != 0
    assert "retryPeriodSeconds < renewDeadlineSeconds < leaseDurationSeconds" in result.stderr


def test_tfleet_run_refuses_the_same_timings():
    result = subprocess.run([sys.executable, "-m", "tfleet.cli", "run", "--leader-election",
                             "--leader-election-lease-duration", "10", "--leader-election-renew-deadline", "10"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 3  # a usage error
    assert "retry period < renew deadline < lease duration" in result.stderr


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return deployment(objects)["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def test_the_replicas_prefer_different_nodes_by_default():
    objects = template()
    dep = deployment(objects)
    (term,) = pod_spec(objects)["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["weight"] == 100 and term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    # The term selects exactly this release's operator pods.
    selector = term["podAffinityTerm"]["labelSelector"]["matchLabels"]
    assert selector == dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    other = deployment(template(release="other"))["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= other.items()


AFFINITY_CASES = [
    pytest.param({"podAntiAffinity": "hard"}, {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {
            "app.kubernetes.io/name": "tfleet", "app.kubernetes.io/instance": "tfleet",
            "app.kubernetes.io/component": "operator"}}}]}}, id="hard: one replica per node"),
    pytest.param({"podAntiAffinity": "none"}, None, id="none"),
    pytest.param({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}]}}}},
        {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}]}}},
        id="an affinity of one's own replaces the default"),
]


@pytest.mark.parametrize(("values", "affinity"), AFFINITY_CASES)
def test_the_anti_affinity_default_can_be_changed_or_replaced(values, affinity):
    objects = template(values)
    assert pod_spec(objects).get("affinity") == affinity
    for obj in objects:
        if obj["apiVersion"] != "monitoring.coreos.com/v1":
            kubernetes_validate.validate(obj, K8S, strict=True)


def test_an_unknown_anti_affinity_mode_is_refused_naming_the_value():
    result = helm("template", "t", str(CHART), "--set", "podAntiAffinity=always", check=False)
    assert result.returncode != 0
    assert "at '/podAntiAffinity': value must be one of 'soft', 'hard', 'none'" in result.stderr, result.stderr


def test_helm_template_cannot_know_whether_watched_namespaces_exist_and_renders_their_roles():
    # Offline (helm template, Argo CD), namespaces cannot be looked up: the Roles render, and a
    # missing namespace fails only when they are applied. A connected install fails first, by
    # name (test_chart_install.py).
    objects = template({"watchNamespaces": ["not-there-yet"]})
    assert find(objects, "Role", name="tfleet", namespace="not-there-yet")

# ---------------------------------------------------------------------- drain tokens


def test_the_drain_key_role_gets_only_its_secret_and_creates_secrets_in_the_release_namespace():
    objects = template({"drainToken": {"secretName": "ops-key"}})
    (role,) = find(objects, "Role", name="tfleet-drain-key")
    assert role["metadata"]["namespace"] == "tfleet-system"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["ops-key"], "verbs": ["get"]},
    ]
    (binding,) = find(objects, "RoleBinding", name="tfleet-drain-key")
    assert binding["roleRef"]["name"] == "tfleet-drain-key"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tfleet", "namespace": "tfleet-system"}]
    assert "--drain-key-secret=ops-key" in container(objects)["args"]
    # Secrets of the serving namespaces are never granted.
    (cluster_role,) = find(objects, "ClusterRole")
    assert all("secrets" not in rule["resources"] for rule in cluster_role["rules"])


def test_without_drain_tokens_there_is_no_secret_grant():
    objects = template(VALUE_SETS["drain tokens off"])
    assert find(objects, "Role", name="tfleet-drain-key") == []
    assert find(objects, "RoleBinding", name="tfleet-drain-key") == []
    assert "--no-drain-token" in container(objects)["args"]
    assert not any(a.startswith("--drain-key") for a in container(objects)["args"])


@pytest.mark.parametrize(("values", "message"), [
    ({"drainToken": {"secretName": "Key_1"}}, "at '/drainToken/secretName': 'Key_1' does not match pattern"),
    ({"networkPolicy": {"enabled": "yes"}}, "at '/networkPolicy/enabled': got string, want boolean"),
    ({"networkPolicy": {"namespaces": ["ML"]}}, "at '/networkPolicy/namespaces/0': 'ML' does not match pattern"),
], ids=["secret-name", "policy-bool", "policy-namespace"])
def test_bad_drain_and_policy_values_are_refused(values, message):
    result = helm("template", "t", str(CHART), *set_args(values), check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


# ---------------------------------------------------------------------- network policy


def _covered(ports: list[dict[str, Any]], protocol: str) -> set[int]:
    out: set[int] = set()
    for port in ports:
        if port.get("protocol", "TCP") == protocol:
            out.update(range(port["port"], port.get("endPort", port["port"]) + 1))
    return out


def test_the_network_policy_is_off_by_default():
    assert find(template(), "NetworkPolicy") == []


def test_only_the_operator_reaches_the_bridges_http_port_and_every_other_port_stays_open():
    from tfleet.api.model import HEALTH_BRIDGE_GRPC_PORT
    from tfleet.health.podspec import bridge_http_port

    objects = template(VALUE_SETS["network policy"])
    policies = find(objects, "NetworkPolicy")
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in policies] == [
        ("ml", "tfleet-health-bridge"), ("ml-staging", "tfleet-health-bridge")]
    spec = policies[0]["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    guarded, open_ = spec["ingress"]

    bridge_http = bridge_http_port(HEALTH_BRIDGE_GRPC_PORT)
    assert _covered(guarded["ports"], "TCP") == {bridge_http} and _covered(guarded["ports"], "UDP") == set()
    (peer,) = guarded["from"]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "tfleet-system"}}
    operator_pod_labels = deployment(objects)["spec"]["template"]["metadata"]["labels"]
    assert peer["podSelector"]["matchLabels"].items() <= operator_pod_labels.items()
    assert peer["podSelector"]["matchLabels"] == deployment(objects)["spec"]["selector"]["matchLabels"]

    assert "from" not in open_, "every other port is open to every source"
    every_port = set(range(1, 65536))
    assert _covered(open_["ports"], "TCP") == every_port - {bridge_http}
    assert _covered(open_["ports"], "UDP") == every_port


def test_the_network_policy_selects_every_serving_pod_and_nothing_else():
    from tests.core.isvc_factory import make_isvc
    from tfleet.desired import children as builders

    (policy, _) = find(template(VALUE_SETS["network policy"]), "NetworkPolicy")
    selector = policy["spec"]["podSelector"]

    def selects(labels: dict[str, str]) -> bool:
        if not selector["matchLabels"].items() <= labels.items():
            return False
        return all(e["operator"] == "Exists" and e["key"] in labels for e in selector["matchExpressions"])

    for manifest in (make_isvc("a"), make_isvc("b").rolling_update().pod(labels={"team": "x"})):
        isvc = manifest.isvc()
        assert selects(builders.build_pod_template(isvc)["metadata"]["labels"])
    operator_labels = deployment(template())["spec"]["template"]["metadata"]["labels"]
    assert not selects(operator_labels)


def test_the_network_policy_namespaces_default_to_the_watched_ones_and_are_required_otherwise():
    only = template({"watchNamespaces": ["ml"], "networkPolicy": {"enabled": True, "namespaces": ["edge"]}})
    assert [p["metadata"]["namespace"] for p in find(only, "NetworkPolicy")] == ["edge"]
    result = helm("template", "t", str(CHART), *set_args({"networkPolicy": {"enabled": True}}), check=False)
    assert result.returncode != 0
    assert "networkPolicy.enabled needs networkPolicy.namespaces when watchNamespaces is empty" in result.stderr
