"""Built-in validation: objects a real apiserver rejects are rejected here, naming the field."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException


def _deployment(**container: Any) -> dict[str, Any]:
    base = {"name": "main", "image": "nginx:1.27"}
    base.update(container)
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "v"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "v"}},
                 "template": {"metadata": {"labels": {"app": "v"}}, "spec": {"containers": [base]}}},
    }


def _with(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    node = doc
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    node[parts[-1]] = value
    return doc


def _policy(ingress: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "v"},
            "spec": {"podSelector": {}, "ingress": ingress}}


TEMPLATE = "spec.template.spec.containers[0]"
CASES = [
    pytest.param(_deployment(ports=[{"name": "grpc-health-bridge", "containerPort": 8500}]),
                 f"{TEMPLATE}.ports[0].name", "must be no more than 15 characters", id="port name too long"),
    pytest.param(_deployment(volumeMounts=[{"name": "models", "mountPath": "/models"}]),
                 f"{TEMPLATE}.volumeMounts[0].name", 'Not found: "models"', id="mount of an undeclared volume"),
    pytest.param(_deployment(resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}),
                 f"{TEMPLATE}.resources.requests", "must be less than or equal to cpu limit of 1",
                 id="request above limit"),
    pytest.param(_deployment(env=[{"name": "A=B", "value": "x"}]), f"{TEMPLATE}.env[0].name",
                 "a valid environment variable name", id="bad env var name"),
    pytest.param(_with(_deployment(), "metadata.labels", {"model": "s3://models/resnet"}), "metadata.labels",
                 "a valid label must be an empty string", id="label value with a slash"),
    pytest.param(_with(_deployment(), "spec.template.spec.restartPolicy", "Never"),
                 "spec.template.spec.restartPolicy", 'Unsupported value: "Never"', id="restart policy of a template"),
    pytest.param(_with(_deployment(), "spec.selector", {"matchLabels": {"app": "other"}}),
                 "spec.template.metadata.labels", "`selector` does not match template `labels`",
                 id="selector not matching the template"),
    pytest.param({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "v"},
                  "spec": {"selector": {"app": "v"}, "ports": [{"port": 8500}, {"port": 8501}]}},
                 "spec.ports[0].name", "Required value", id="unnamed ports of a multi-port service"),
    pytest.param({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "v"},
                  "spec": {"minAvailable": 1, "maxUnavailable": 1, "selector": {"matchLabels": {"app": "v"}}}},
                 "spec", "minAvailable and maxUnavailable cannot be both set", id="both PDB bounds"),
    pytest.param({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "v"},
                  "spec": {"minReplicas": 3, "maxReplicas": 2,
                           "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "v"}}},
                 "spec.maxReplicas", "must be greater than or equal to `minReplicas`", id="HPA bounds"),
    pytest.param({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "v"}, "data": {"a b": "1"}},
                 "data[a b]", "a valid config key", id="config map key"),
    pytest.param(_policy([{"ports": [{"port": 8512, "endPort": 8510}]}]), "spec.ingress[0].ports[0].endPort",
                 "Invalid value: 8510: must be greater than or equal to `port`", id="policy end port below port"),
    pytest.param(_policy([{"ports": [{"port": "health-http", "endPort": 8600}]}]), "spec.ingress[0].ports[0].endPort",
                 "may not be specified when `port` is non-numeric", id="policy end port of a named port"),
    pytest.param(_policy([{"ports": [{"port": 1, "endPort": 70000}]}]), "spec.ingress[0].ports[0].endPort",
                 "must be between 1 and 65535, inclusive", id="policy end port out of range"),
    pytest.param(_policy([{"ports": [{"protocol": "ICMP", "port": 1}]}]), "spec.ingress[0].ports[0].protocol",
                 'Unsupported value: "ICMP": supported values: "TCP", "UDP", "SCTP"', id="policy protocol"),
    pytest.param(_policy([{"from": [{}]}]), "spec.ingress[0].from[0]", "must specify a peer", id="policy empty peer"),
    pytest.param(_policy([{"from": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}]}]),
                 "spec.ingress[0].from[0].podSelector.matchExpressions[0].values",
                 "must be specified when `operator` is 'In' or 'NotIn'", id="policy selector without values"),
    pytest.param(_policy([{"from": [{"ipBlock": {"cidr": "10.0.0.1/8"}}]}]), "spec.ingress[0].from[0].ipBlock.cidr",
                 "must not have bits set beyond the prefix length", id="policy cidr"),
    pytest.param(_policy([{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}]),
                 "spec.ingress[0].from[0].ipBlock.except[0]", "must be a strict subset of `cidr`",
                 id="policy cidr exception outside"),
    pytest.param(_with(_policy([]), "spec.policyTypes", ["Inbound"]), "spec.policyTypes[0]",
                 'Unsupported value: "Inbound"', id="policy type"),
    pytest.param({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "v.1"}, "reason": "R", "message": "m",
                  "involvedObject": {"kind": "ConfigMap", "name": "x", "namespace": "elsewhere"}},
                 "involvedObject.namespace", 'Invalid value: "elsewhere": does not match event.namespace',
                 id="an Event outside its object's namespace"),
    pytest.param({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "v.2"}, "reason": "R", "message": "m",
                  "involvedObject": {"kind": "Node", "name": "x"}},
                 "involvedObject.namespace", 'Invalid value: "": does not match event.namespace',
                 id="an Event of a cluster-scoped object outside default"),
]


@pytest.mark.parametrize(("manifest", "field", "text"), CASES)
def test_invalid_builtin_objects_are_rejected(api_client: Any, namespace: str, manifest: dict[str, Any],
                                              field: str, text: str) -> None:
    from kubernetes import utils

    with pytest.raises((ApiException, utils.FailToCreateError)) as err:
        utils.create_from_dict(api_client, manifest, namespace=namespace)
    exc = err.value.api_exceptions[0] if isinstance(err.value, utils.FailToCreateError) else err.value
    status = json.loads(exc.body)
    assert (exc.status, status["reason"]) == (422, "Invalid")
    causes = [c for c in status["details"]["causes"] if c.get("field") == field]
    assert causes, f"no cause names {field}: {status['details']['causes']}"
    assert any(text in c["message"] for c in causes), causes


def test_no_new_finalizers_on_a_terminating_object(api_client: Any, namespace: str) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "f", "finalizers": ["a.dev/x"]}})
    core.delete_namespaced_config_map("f", namespace)
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map("f", namespace, {"metadata": {"finalizers": ["a.dev/x", "b.dev/y"]}})
    assert err.value.status == 422
    assert "no new finalizers can be added if the object is being deleted" in json.loads(err.value.body)["message"]
    core.patch_namespaced_config_map("f", namespace, {"metadata": {"finalizers": None}})


def test_an_event_of_a_cluster_scoped_object_lives_in_default(api_client: Any) -> None:
    core = client.CoreV1Api(api_client)
    event = {"metadata": {"name": "cluster-scoped.validation"}, "reason": "R", "message": "m",
             "involvedObject": {"apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceServiceDefaults", "name": "cluster"}}
    created = core.create_namespaced_event("default", event)
    try:
        assert created.involved_object.name == "cluster"
    finally:
        core.delete_namespaced_event("cluster-scoped.validation", "default")


def test_a_valid_deployment_passes(api_client: Any, namespace: str) -> None:
    good = _deployment(ports=[{"name": "grpc", "containerPort": 8500}],
                       resources={"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
                       volumeMounts=[{"name": "tmp", "mountPath": "/tmp"}])
    good["spec"]["template"]["spec"]["volumes"] = [{"name": "tmp", "emptyDir": {}}]
    created = client.AppsV1Api(api_client).create_namespaced_deployment(namespace, good)
    assert created.metadata.uid


def test_a_network_policy_gets_the_api_servers_defaults(api_client: Any, namespace: str) -> None:
    """pkg/apis/networking/v1/defaults.go: policyTypes from the rules present, TCP ports."""
    api = client.NetworkingV1Api(api_client)
    ingress_only = _policy([{"ports": [{"port": 8511}, {"port": 1, "endPort": 8510, "protocol": "UDP"}]}])
    created = api.create_namespaced_network_policy(namespace, ingress_only)
    assert created.spec.policy_types == ["Ingress"]
    assert [(p.protocol, p.port, p.end_port) for p in created.spec.ingress[0].ports] == [
        ("TCP", 8511, None), ("UDP", 1, 8510)]
    both = _with(_policy([]), "spec.egress", [{"to": [{"namespaceSelector": {}}]}])
    both["metadata"]["name"] = "both"
    assert api.create_namespaced_network_policy(namespace, both).spec.policy_types == ["Ingress", "Egress"]
