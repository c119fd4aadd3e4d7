"""RBAC in namespaced mode (`watchNamespaces`): the operator stays inside the Roles the chart
creates in the watched namespaces, apart from the cluster-scoped InferenceServiceDefaults (a
ClusterRole for that kind alone) and their Events (a Role in the default namespace). A control
plane of its own, so the request log holds only this operator's calls."""

from __future__ import annotations

import pytest

from tests.packaging.cluster import OPERATOR_AGENTS, Operator, isvc
from tests.packaging.helm import HELM, find, template
from tests.packaging.test_rbac import (
    DEFAULTS,
    DEFAULTS_RESOURCES,
    RELEASE_NAMESPACE,
    RELEASE_RESOURCES,
    permissions_granted,
    permissions_used,
    watches_of_lists,
)

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="helm is missing (run `make tools`)")


def test_namespaced_mode_stays_within_the_roles_of_the_watched_namespaces(private_cluster):
    """`--namespace`: every call but discovery lands in a watched namespace (or the Lease's), or
    is about the InferenceServiceDefaults."""
    cluster = private_cluster
    cluster.namespace(RELEASE_NAMESPACE)
    watched = cluster.namespace("rbac-watched")
    start = len(cluster.requests())
    op = Operator(cluster, "rbac-namespaced", "--namespace", watched, "--leader-election",
                  "--leader-election-namespace", RELEASE_NAMESPACE, "--leader-election-id", "namespaced",
                  "--drain-key-namespace", RELEASE_NAMESPACE)
    try:
        op.identity()
        cluster.apply(DEFAULTS)
        cluster.kubectl("wait", "--for=condition=Ready", "inferenceservicedefaults/cluster", "--timeout=30s")
        cluster.apply(isvc("scoped", watched))
        cluster.kubectl("wait", "--for=condition=Ready", "tfis/scoped", "-n", watched, "--timeout=60s")
        assert op.terminate() == 0
    finally:
        op.stop()
    cluster.settle()
    calls = [r for r in cluster.requests()[start:]
             if r.get("user_agent", "").startswith(OPERATOR_AGENTS) and r.get("resource")]
    defaults_calls = [r for r in calls if r["resource"] in DEFAULTS_RESOURCES]
    events_calls = [r for r in calls if r["resource"] == "events" and r["namespace"] == "default"]
    others = [r for r in calls if r not in defaults_calls and r not in events_calls]
    assert {r["namespace"] for r in others if r["resource"] not in RELEASE_RESOURCES} == {watched}, \
        [(r["verb"], r["path"]) for r in others if r["namespace"] != watched]
    assert {r["namespace"] for r in others if r["resource"] in RELEASE_RESOURCES} == {RELEASE_NAMESPACE}
    assert {r["namespace"] for r in defaults_calls} == {None} and events_calls

    objects = template({"watchNamespaces": [watched]})
    (role,) = find(objects, "Role", name="tfleet", namespace=watched)
    used = {p for p in permissions_used(others) if p[1] not in RELEASE_RESOURCES}
    missing = used - permissions_granted(role["rules"])
    assert not missing, f"namespaced mode used permissions its Role does not grant: {sorted(missing)}"
    # The one cluster-wide grant is for the InferenceServiceDefaults, and all of it is used.
    (defaults_role,) = find(objects, "ClusterRole")
    assert defaults_role["metadata"]["name"] == "tfleet-defaults"
    granted = permissions_granted(defaults_role["rules"])
    assert {resource for _, resource, _ in granted} == set(DEFAULTS_RESOURCES)
    used = permissions_used(defaults_calls)
    assert used <= granted and granted - used - watches_of_lists(used) == set()
    (events_role,) = find(objects, "Role", name="tfleet-defaults-events", namespace="default")
    assert permissions_used(events_calls) <= permissions_granted(events_role["rules"])
