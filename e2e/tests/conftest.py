"""Fixtures for e2e tests of the operator: the CRD installed, and real `tfleet run` processes
(`e2e/operators.py`): one for the session, or replicas with leader election for one test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from e2e.localcluster.fixtures import (  # noqa: F401  (the local control plane's fixtures and hooks)
    _core_api,
    _localcluster_dir,
    api_client,
    kubeconfig,
    kubectl,
    local_cluster,
    namespace,
    pytest_collection_modifyitems,
    pytest_configure,
    widget_crd,
)
from e2e.operators import LeaseTiming, OperatorGroup, OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "inferenceservices.tfleet.dev.yaml"
DEFAULTS_CRD = ROOT / "crds" / "inferenceservicedefaults.tfleet.dev.yaml"


@pytest.fixture(scope="session")
def tfleet_crd(kubectl):  # type: ignore[no-untyped-def]
    """Both CRDs, as `kubectl apply -f crds/` installs them (no InferenceServiceDefaults object:
    this shared control plane renders with the built-in defaults)."""
    kubectl("apply", "-f", str(CRD), "-f", str(DEFAULTS_CRD))
    kubectl("wait", "--for=condition=Established", "crd/inferenceservices.tfleet.dev",
            "crd/inferenceservicedefaults.tfleet.dev", "--timeout=30s")
    return CRD


# The session's operators that run, so that a test running replicas of its own can pause them.
_SESSION_OPERATORS: list[OperatorProcess] = []


@pytest.fixture(scope="session")
def operator_process(kubeconfig, tfleet_crd, tmp_path_factory) -> Iterator[OperatorProcess]:  # type: ignore[no-untyped-def]
    """The operator as users run it: `tfleet run --all-namespaces`, for the whole session."""
    operator = OperatorProcess(Path(kubeconfig), tmp_path_factory.mktemp("operator") / "operator.log")
    operator.start()
    _SESSION_OPERATORS.append(operator)
    try:
        yield operator
    finally:
        _SESSION_OPERATORS.remove(operator)
        operator.close()


OperatorReplicas = Callable[..., OperatorGroup]


@pytest.fixture
def operator_replicas(local_cluster, kubeconfig, tfleet_crd, tmp_path) -> Iterator[OperatorReplicas]:  # type: ignore[no-untyped-def]
    """`operator_replicas(count, lease_namespace, timing=LeaseTiming())`: `count` `tfleet run`
    replicas electing a leader through a Lease in `lease_namespace`, started, with one
    leading. The session's operator (which watches every namespace too) is stopped while
    they run and started again afterwards; every replica is stopped at the end."""
    groups: list[OperatorGroup] = []
    paused = [op for op in _SESSION_OPERATORS if op.alive]
    for op in paused:
        op.stop()

    def make(count: int, lease_namespace: str, timing: LeaseTiming | None = None) -> OperatorGroup:
        group = OperatorGroup.replicas(Path(kubeconfig), local_cluster.url, tmp_path, count, lease_namespace,
                                       timing=timing)
        groups.append(group)
        group.start()
        return group

    try:
        yield make
    finally:
        for group in groups:
            group.close()
        for op in paused:
            op.start()
