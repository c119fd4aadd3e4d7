"""Leader election between real `tfleet run --leader-election` processes on a local control plane."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.packaging.cluster import Operator, PrivateCluster, isvc, wait_for

# Short timings keep the test quick; the protocol is the same at the defaults (15/10/2).
FAST = ("--leader-election", "--leader-election-namespace", "kube-system",
        "--leader-election-lease-duration", "3", "--leader-election-renew-deadline", "2",
        "--leader-election-retry-period", "0.3")


@pytest.fixture
def operators(private_cluster: PrivateCluster) -> Iterator[list[Operator]]:
    started: list[Operator] = []
    yield started
    for op in started:
        op.stop()


def start(cluster: PrivateCluster, operators: list[Operator], name: str, lease: str) -> Operator:
    op = Operator(cluster, name, *FAST, "--leader-election-id", lease)
    operators.append(op)
    return op


def lease_holder(cluster: PrivateCluster, name: str) -> str:
    return str(cluster.get("lease", name, "-n", "kube-system")["spec"].get("holderIdentity") or "")


def deployment_writes(op: Operator) -> float:
    return op.metric("tfleet_api_writes_total", verb="apply", kind="Deployment")


def test_one_operator_reconciles_and_the_standby_takes_over_when_it_stops(private_cluster, operators):
    cluster = private_cluster
    ns = cluster.namespace("election")
    first = start(cluster, operators, "first", "handover")
    first.identity()
    second = start(cluster, operators, "second", "handover")
    second.wait_for_log("Waiting for Lease kube-system/handover")
    assert lease_holder(cluster, "handover") == first.identity()
    # Both replicas are ready (a rolling update of the Deployment must be able to proceed),
    # but only the leader reports itself as the active operator.
    wait_for(lambda: first.health("/readyz") == 200 and second.health("/readyz") == 200, what="both ready")
    assert (first.metric("tfleet_leader"), second.metric("tfleet_leader")) == (1.0, 0.0)

    first.wait_for_log("Started the operator")
    assert "Started the operator" not in second.log()  # a standby starts no watches at all

    cluster.apply(isvc("one", ns))
    wait_for(lambda: deployment_writes(first) >= 1, what="the leader to write a Deployment")
    wait_for(lambda: first.metric("tfleet_reconciles_total", result="success") >= 1,
             what="the leader's reconciles in its metrics")
    wait_for(lambda: first.metric("tfleet_inferenceservices", condition="Ready", status="True") == 1,
             what="the leader to count the Ready InferenceService")
    assert second.metric("tfleet_reconciles_total", result="success") == 0
    assert deployment_writes(second) == 0
    assert not second.leads()

    # SIGTERM: the leader stops cleanly and hands the Lease back; the standby takes it at once.
    assert first.terminate() == 0
    assert "Released Lease kube-system/handover" in first.log()
    assert second.identity() and lease_holder(cluster, "handover") == second.identity()
    cluster.apply(isvc("two", ns))
    wait_for(lambda: cluster.get("deployments", "-n", ns, "-l", "tfleet.dev/inferenceservice=two")["items"],
             what="the new leader to create the second fleet's Deployment")
    wait_for(lambda: deployment_writes(second) >= 1, what="the new leader's writes in its metrics")


def test_a_crashed_leader_is_replaced_after_its_lease_expires(private_cluster, operators):
    cluster = private_cluster
    first = start(cluster, operators, "crashing", "crash")
    first.identity()
    second = start(cluster, operators, "survivor", "crash")
    second.wait_for_log("Waiting for Lease kube-system/crash")
    first.kill()  # no release: the survivor must wait for expiry
    identity = second.identity()
    assert lease_holder(cluster, "crash") == identity
    transitions = cluster.get("lease", "crash", "-n", "kube-system")["spec"]["leaseTransitions"]
    assert transitions == 1


def test_a_leader_that_loses_its_lease_exits_with_status_1(private_cluster, operators):
    cluster = private_cluster
    op = start(cluster, operators, "ousted", "ousted")
    op.identity()
    cluster.kubectl("patch", "lease", "ousted", "-n", "kube-system", "--type=merge",
                    "-p", '{"spec": {"holderIdentity": "someone-else"}}')
    assert op.proc.wait(timeout=30) == 1
    assert "Lost Lease kube-system/ousted: now held by someone-else" in op.log()
