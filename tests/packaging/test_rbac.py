"""The chart's RBAC is exactly what the operator uses.

The operator runs as a real process against a private local control plane whose request
log records every API call. A scenario exercises what the operator does in production:
create under the cluster's InferenceServiceDefaults (accepted: a status write and an Event),
a canary rollout to a new model version (new revision, old one deleted), manual drift reverted, autoscaling on and off, optional children pruned, an invalid spec, deletion. Every (API group,
resource, verb) the operator sent must be granted by the chart, and every grant must have
been used, apart from the documented allowances below.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.packaging.cluster import OPERATOR_AGENTS, Operator, PrivateCluster, isvc, wait_for
from tests.packaging.helm import HELM, find, template

Permission = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)

RELEASE_NAMESPACE = "tfleet-system"
LEASE = "tfleet-operator"
DRAIN_KEY = "tfleet-drain-key"
# Calls the release namespace's own Roles grant, not the ClusterRole.
RELEASE_RESOURCES = ("leases", "secrets")
# The cluster-scoped InferenceServiceDefaults, and the Events about them (default namespace).
DEFAULTS_RESOURCES = ("inferenceservicedefaults", "inferenceservicedefaults/status")
DEFAULTS = {"apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceServiceDefaults", "metadata": {"name": "cluster"},
            "spec": {"pod": {"labels": {"team": "platform"}}}}

# Granted but not sent by the scenario, each with its reason. The scenario exercises every
# grant today; an entry belongs here only for a call a test cannot provoke.
ALLOWED_UNUSED: dict[Permission, str] = {
    # Used only after a status write is refused as stale (409), which a quiet scenario may not see.
    ("tfleet.dev", "inferenceservices", "get"): "re-reading an InferenceService after a conflict",
    # Used only when a transition is reported again (its status write was lost), which a quiet
    # scenario does not see; e2e/tests/test_events.py provokes both.
    ("", "events", "get"): "reading an Event to count a repeated report on it",
    ("", "events", "patch"): "counting a repeated report on an existing Event",
}

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="helm is missing (run `make tools`)")


def permissions_used(requests: list[dict[str, Any]]) -> set[Permission]:
    used: set[Permission] = set()
    for r in requests:
        if not r.get("resource"):
            continue  # discovery (/api, /apis/...): granted to every user by system:discovery
        resource = r["resource"] + (f"/{r['subresource']}" if r.get("subresource") else "")
        used.add((r.get("group") or "", resource, r["verb"]))
        # A server-side apply that creates its object is authorized as a create as well.
        if r["verb"] == "patch" and r.get("code") == 201:
            used.add((r.get("group") or "", resource, "create"))
    return used


def watches_of_lists(used: set[Permission]) -> set[Permission]:
    """The list/watch allowance: kopf lists a resource, then watches it from the list's
    resourceVersion. The control plane logs a watch when it ends, and a watch cut short by
    the client's exit is not logged, so a `list` stands for its `watch`."""
    return {(group, resource, "watch") for group, resource, verb in used if verb == "list"}


def permissions_granted(rules: list[dict[str, Any]]) -> set[Permission]:
    return {(group, resource, verb)
            for rule in rules for group in rule["apiGroups"] for resource in rule["resources"]
            for verb in rule["verbs"]}


@pytest.fixture(scope="module")
def scenario(private_cluster: PrivateCluster) -> Iterator[list[dict[str, Any]]]:
    """Runs the scenario once; yields the operator's own requests."""
    cluster = private_cluster
    cluster.namespace(RELEASE_NAMESPACE)
    op = Operator(cluster, "rbac", "--all-namespaces", "--leader-election",
                  "--leader-election-namespace", RELEASE_NAMESPACE, "--leader-election-id", LEASE,
                  "--leader-election-retry-period", "0.5", "--leader-election-renew-deadline", "5",
                  "--leader-election-lease-duration", "8",
                  # As the chart runs it: the drain key Secret in the release namespace.
                  "--drain-key-secret", DRAIN_KEY, "--drain-key-namespace", RELEASE_NAMESPACE)
    try:
        op.identity()
        ns = cluster.namespace("rbac-scenario")
        # The cluster's defaults are accepted: their status is written, an Event posted.
        cluster.apply(DEFAULTS)
        cluster.kubectl("wait", "--for=condition=Ready", "inferenceservicedefaults/cluster", "--timeout=30s")
        rollout = {"strategy": "Canary", "steps": [{"weight": 50, "pause": "1s"}], "revisionHistoryLimit": 0}
        cluster.apply(isvc("model", ns, replicas=2, rollout=rollout))
        cluster.kubectl("wait", "--for=condition=Ready", "tfis/model", "-n", ns, "--timeout=60s")

        def deployments() -> list[str]:
            return sorted(d["metadata"]["name"] for d in cluster.get("deployments", "-n", ns)["items"])

        # Drift in a child is reverted.
        (first,) = deployments()
        cluster.kubectl("set", "image", f"deployment/{first}", "-n", ns, "tensorflow-serving=evil/image:1")

        def image_restored() -> bool:
            dep = cluster.get("deployment", first, "-n", ns)
            return "evil" not in dep["spec"]["template"]["spec"]["containers"][0]["image"]

        wait_for(image_restored, what="the drift to be reverted")

        # A new model version rolls out as a new revision; the old one is deleted afterwards.
        bumped = isvc("model", ns, replicas=2, rollout=rollout)
        bumped["spec"]["model"]["version"] = 2
        cluster.apply(bumped)
        wait_for(lambda: first not in deployments() and len(deployments()) == 1, timeout=60,
                 what="the new revision to replace the old one")

        # A promote request is acted on, then removed (a patch of the InferenceService itself).
        held = isvc("model", ns, replicas=2, rollout={**rollout, "steps": [{"weight": 50, "pause": "60s"}]})
        held["spec"]["model"]["version"] = 3
        cluster.apply(held)

        def rollout_state() -> dict[str, Any]:
            return (cluster.get("tfis", "model", "-n", ns).get("status") or {}).get("rollout") or {}

        canary = wait_for(lambda: rollout_state().get("canaryRevision"), what="a canary")
        cluster.kubectl("annotate", "tfis", "model", "-n", ns, f"tfleet.dev/rollout-promote={canary}")
        wait_for(lambda: rollout_state().get("phase") == "Succeeded" and "tfleet.dev/rollout-promote" not in
                 (cluster.get("tfis", "model", "-n", ns)["metadata"].get("annotations") or {}),
                 timeout=60, what="the promotion, and the spent request removed")
        bumped = {**held, "spec": {**held["spec"], "rollout": rollout}}

        # Autoscaling on creates an HPA; off deletes it.
        autoscaled = {**bumped, "spec": {**bumped["spec"], "autoscaling": {"minReplicas": 2, "maxReplicas": 4}}}
        autoscaled["spec"].pop("replicas")
        cluster.apply(autoscaled)
        wait_for(lambda: cluster.get("hpa", "-n", ns)["items"], what="an HPA")
        cluster.apply(bumped)
        wait_for(lambda: not cluster.get("hpa", "-n", ns)["items"], what="the HPA to be deleted")

        # One replica and no headless Service: the PodDisruptionBudget and <name>-grpc are pruned.
        slim = {**bumped, "spec": {**bumped["spec"], "replicas": 1, "service": {"headless": False}}}
        cluster.apply(slim)
        wait_for(lambda: not cluster.get("pdb", "-n", ns)["items"], what="the PodDisruptionBudget to be deleted")
        wait_for(lambda: [s["metadata"]["name"] for s in cluster.get("services", "-n", ns)["items"]] == ["model"],
                 what="the headless Service to be deleted")

        # An invalid spec is reported on the object (status and a Warning Event).
        # (A typo in the schemaless pod.affinity, which only the operator can tell.)
        invalid = {**bumped, "spec": {**bumped["spec"], "pod": {"affinity": {"nodeAfinity": {}}}}}
        cluster.apply(invalid)

        def invalid_reported() -> bool:
            conditions = cluster.get("tfis", "model", "-n", ns)["status"]["conditions"]
            return any(c["type"] == "Ready" and c.get("reason") == "InvalidSpec" for c in conditions)

        wait_for(invalid_reported, what="Ready=False InvalidSpec")
        cluster.kubectl("delete", "tfis", "model", "-n", ns, "--wait=true", "--timeout=30s")
        # Let the watches see the deletion before the operator stops (they are logged when they end).
        wait_for(lambda: not cluster.get("deployments", "-n", ns)["items"], what="the children to be collected")
        assert op.terminate() == 0
    finally:
        op.stop()
    cluster.settle()
    yield [r for r in cluster.requests() if r.get("user_agent", "").startswith(OPERATOR_AGENTS)]


def test_the_cluster_role_grants_exactly_what_the_operator_uses(scenario):
    objects = template()
    (cluster_role,) = find(objects, "ClusterRole")
    granted = permissions_granted(cluster_role["rules"])
    used = {p for p in permissions_used(scenario) if p[1] not in RELEASE_RESOURCES}

    missing = used - granted
    assert not missing, f"the operator used permissions the chart does not grant: {sorted(missing)}"
    unused = granted - used - set(ALLOWED_UNUSED) - watches_of_lists(used)
    assert not unused, f"the chart grants permissions the operator never used: {sorted(unused)}"


def test_the_leader_election_role_grants_exactly_the_lease_calls(scenario):
    (role,) = find(template(), "Role", name="tfleet-leader-election")
    assert role["metadata"]["namespace"] == RELEASE_NAMESPACE
    lease_calls = [r for r in scenario if r.get("resource") == "leases"]
    assert lease_calls
    assert {r["namespace"] for r in lease_calls} == {RELEASE_NAMESPACE}
    # get and update are limited to the Lease's name; only create cannot be.
    assert {r["name"] for r in lease_calls if r["verb"] in ("get", "update")} == {LEASE}
    assert permissions_used(lease_calls) == permissions_granted(role["rules"])
    named = [rule for rule in role["rules"] if rule.get("resourceNames")]
    assert named and all(rule["resourceNames"] == [LEASE] for rule in named)


def test_the_drain_key_role_grants_exactly_the_secret_calls(scenario):
    (role,) = find(template(), "Role", name="tfleet-drain-key")
    assert role["metadata"]["namespace"] == RELEASE_NAMESPACE
    secret_calls = [r for r in scenario if r.get("resource") == "secrets"]
    # A fresh cluster: the operator looked for its key, found none and created it.
    assert [(r["verb"], r["code"]) for r in secret_calls] == [("get", 404), ("create", 201)]
    assert {r["namespace"] for r in secret_calls} == {RELEASE_NAMESPACE}
    assert {r["name"] for r in secret_calls if r["verb"] == "get"} == {DRAIN_KEY}
    assert permissions_used(secret_calls) == permissions_granted(role["rules"])
    named = [rule for rule in role["rules"] if rule.get("resourceNames")]
    assert named and all(rule["resourceNames"] == [DRAIN_KEY] for rule in named)


def test_the_operator_sends_only_namespaced_calls_besides_discovery_crd_watching_and_defaults(scenario):
    cluster_scoped = {(r.get("group"), r["resource"] + (f"/{r['subresource']}" if r.get("subresource") else ""),
                       r["verb"]) for r in scenario
                      if r.get("resource") and r.get("namespace") is None and r["verb"] not in ("list", "watch")}
    # The one cluster-scoped write: the status of the InferenceServiceDefaults named cluster.
    assert cluster_scoped == {("tfleet.dev", "inferenceservicedefaults/status", "patch")}
    assert {r["name"] for r in scenario if r.get("resource") == "inferenceservicedefaults"
            and r["verb"] == "patch"} == {"cluster"}
    # Its Events are in the default namespace, where the API server wants a cluster-scoped object's.
    defaults_events = [r for r in scenario if r.get("resource") == "events" and r.get("namespace") == "default"]
    assert defaults_events and {r["verb"] for r in defaults_events} <= {"create", "get", "patch"}


def test_no_allowance_is_stale():
    (cluster_role,) = find(template(), "ClusterRole")
    assert set(ALLOWED_UNUSED) <= permissions_granted(cluster_role["rules"])

