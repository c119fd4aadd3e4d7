"""The fleet benchmark, small: 20 InferenceServices converge and the operator then stays silent.

A correctness check only (the figures come from ``python -m e2e.bench.fleet``): it runs the
benchmark's own control plane and operator processes, so it asserts on what the request log
shows, never on how long anything took.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from e2e.bench import fleet
from tfleet.api.model import parse_object

pytestmark = pytest.mark.simulated


def entry(t: float, verb: str = "patch", resource: str = "deployments", agent: str = "tfleet/operator",
          duration_ms: float = 1.0, **extra: object) -> dict[str, object]:
    return {"t": t, "verb": verb, "resource": resource, "user_agent": agent, "duration_ms": duration_ms,
            "subresource": None, "namespace": "fleet-0", "name": "x", "code": 200, **extra}


# ---------------------------------------------------------------------- the fleet and the log


def test_every_inference_service_of_the_mix_is_valid_and_the_mix_has_every_kind():
    manifests = [fleet.isvc_manifest(i) for i in range(20)]
    specs = [parse_object(m).spec for m in manifests]
    assert sum(s.gpu is not None and s.gpu.count > 0 for s in specs) == 3
    assert sum(s.batching is not None for s in specs) == 4
    assert sum(s.autoscaling is not None for s in specs) == 3
    assert {m["metadata"]["namespace"] for m in manifests} == {f"fleet-{i}" for i in range(fleet.NAMESPACES)}
    kinds = {kind for m in manifests for kind, _, _ in fleet.expected_children(m)}
    assert kinds == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}


@pytest.mark.parametrize("n", [20, 100, 1000])
def test_the_topology_holds_every_pod_of_the_fleet(n):
    nodes = {group["name"]: group for group in fleet.topology(n)["nodes"]}
    specs = [parse_object(fleet.isvc_manifest(i)).spec for i in range(n)]
    gpu_pods = sum(1 for s in specs if s.gpu is not None and s.gpu.count > 0)
    cpu_pods = sum(2 for s in specs if not (s.gpu is not None and s.gpu.count > 0))
    gpu = nodes["gpu"]
    cpu = nodes["cpu"]
    assert gpu["count"] * int(gpu["allocatable"]["nvidia.com/gpu"]) >= gpu_pods
    assert cpu["count"] * int(cpu["allocatable"]["pods"]) >= cpu_pods


@pytest.mark.parametrize(("case", "deployment", "available"), [
    ("every replica ready", {"spec": {"replicas": 2}, "status": {"readyReplicas": 2, "updatedReplicas": 2,
                                                                  "observedGeneration": 1}}, True),
    ("one replica still starting", {"spec": {"replicas": 2}, "status": {"readyReplicas": 1, "updatedReplicas": 2,
                                                                         "observedGeneration": 1}}, False),
    ("status of an older generation", {"spec": {"replicas": 1}, "status": {"readyReplicas": 1, "updatedReplicas": 1,
                                                                            "observedGeneration": 0}}, False),
    ("no status yet", {"spec": {"replicas": 1}}, False),
])
def test_a_deployment_is_available_when_its_current_generation_is_ready(case, deployment, available):
    assert fleet.deployment_available({"metadata": {"generation": 1}, **deployment}) is available, case


def test_only_the_operators_writes_inside_the_window_count():
    entries = [
        entry(1.0),
        entry(2.0, agent="kopf/1.45.2"),
        entry(2.5, verb="get"),
        entry(3.0, agent="kube-controller-manager/v1"),
        entry(3.5, agent="tfleet-bench/fleet", verb="create", resource="inferenceservices"),
        entry(4.0, verb="create", resource="events"),
        entry(9.0),
    ]
    writes = fleet.operator_writes(entries, 1.5, 9.0)
    assert [w["t"] for w in writes] == [2.0, 4.0]
    assert fleet.by_verb_and_kind(writes) == {("patch", "deployments"): 1, ("create", "events"): 1}


def test_status_writes_are_told_apart_from_writes_to_the_object():
    writes = [entry(1.0, resource="inferenceservices", subresource="status"),
              entry(2.0, resource="inferenceservices")]
    assert fleet.by_verb_and_kind(writes) == {("patch", "inferenceservices/status"): 1,
                                              ("patch", "inferenceservices"): 1}


def test_peak_concurrency_counts_overlapping_requests_only():
    # [0.0, 1.0], [0.5, 1.5] overlap; [1.5, 2.0] starts as the second ends.
    writes = [entry(1.0, duration_ms=1000), entry(1.5, duration_ms=1000), entry(2.0, duration_ms=500)]
    assert fleet.peak_concurrency(writes) == 2
    assert fleet.peak_concurrency([]) == 1


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert fleet.percentile(values, 50) == 50
    assert fleet.percentile(values, 99) == 99
    assert fleet.percentile([3.0], 99) == 3.0
    assert math.isnan(fleet.percentile([], 50))


def test_writes_are_attributed_to_the_inference_service_that_owns_the_child():
    owner_of = {("deployments", "fleet-0", "m-abc"): ("fleet-0", "m"), ("services", "fleet-0", "m"): ("fleet-0", "m")}
    writes = [
        entry(1.0, name="m-abc"),
        entry(1.1, resource="services", name="m"),
        entry(1.2, resource="inferenceservices", subresource="status", name="m"),
        entry(1.3, resource="services", name="someone-else"),
        entry(1.4, verb="create", resource="events", name=None),
    ]
    assert fleet.writes_per_isvc(writes, owner_of) == {("fleet-0", "m"): 3}


def test_events_are_attributed_to_the_inference_service_they_are_about():
    def event(component: str, kind: str, name: str, count: int | None = None) -> dict[str, object]:
        return {"source": {"component": component}, "count": count,
                "involvedObject": {"kind": kind, "namespace": "fleet-0", "name": name}}

    events = [event("tfleet", "InferenceService", "m"), event("tfleet", "InferenceService", "m", 2),
              event("deployment-controller", "InferenceService", "m"), event("tfleet", "Deployment", "m-abc"),
              {"reportingComponent": "tfleet", "involvedObject": {"kind": "InferenceService", "namespace": "fleet-1",
                                                                  "name": "n"}}]
    assert fleet.tfleet_events(events) == {("fleet-0", "m"): 3, ("fleet-1", "n"): 1}


def test_the_first_write_of_each_deployment_is_found():
    writes = [entry(2.0, name="a"), entry(1.0, name="a"), entry(3.0, name="b", code=409),
              entry(4.0, name="b"), entry(5.0, name="c", subresource="scale")]
    assert fleet.first_writes(writes, "deployments") == {("fleet-0", "a"): 1.0, ("fleet-0", "b"): 4.0}


def test_the_generated_part_of_the_docs_is_replaced_and_the_rest_kept(tmp_path: Path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nprose before\n\n{fleet.BEGIN}\nold table\n{fleet.END}\n\nprose after\n")
    fleet.update_docs(doc, "new table")
    text = doc.read_text()
    assert "old table" not in text
    assert text.index("prose before") < text.index("new table") < text.index("prose after")
    fresh = tmp_path / "fresh.md"
    fleet.update_docs(fresh, "first table")
    assert fleet.BEGIN in fresh.read_text() and "first table" in fresh.read_text()


def test_the_operator_registers_no_handler_that_needs_kopfs_bookkeeping():
    # The operator tells kopf to keep no diff-base and no progress records (they cost a deep
    # copy of every watched object per event). That is only right while every handler is
    # an event or index handler: a create/update/delete handler or a daemon needs them.
    import kopf

    import tfleet.runtime.handlers  # noqa: F401  (registers the handlers)

    registry = kopf.get_default_registry()
    assert registry._changing.get_all_handlers() == []
    assert registry._spawning.get_all_handlers() == []
    assert registry._watching.get_all_handlers() != []


# ---------------------------------------------------------------------- the small benchmark


async def test_twenty_inference_services_converge_and_the_idle_operator_writes_nothing(tmp_path: Path):
    # The autoscaler controller syncs every 2 s here, so the idle window sees it touch the
    # HorizontalPodAutoscalers several times: a change that must not make the operator write.
    result = await fleet.run_size(20, tmp_path, idle_seconds=10, hpa_sync_seconds=2, timeout=120, progress=False)
    log = tmp_path / "operator.log"
    assert result.not_ready == [], log.read_text()[-3000:]
    assert result.missing_children == []
    assert result.converged
    # Every child got created, by the operator's own writes.
    writes = result.writes_by_kind
    assert writes.get("patch configmaps", 0) >= 20
    assert writes.get("patch deployments", 0) >= 20
    assert writes.get("patch inferenceservices/status", 0) >= 20
    assert result.idle_writes == 0, result.idle_writes_by_kind
    assert result.idle_seconds == 10
