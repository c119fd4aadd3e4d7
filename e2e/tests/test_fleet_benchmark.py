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


def test_kopf_watches_nothing_and_the_operators_watches_cover_every_kind_it_reads():
    # Every watch is the operator's own (children by label selector on the server): kopf
    # only runs the process, so it must have no resource handler that would start one.
    import kopf

    from tfleet.runtime import handlers
    from tfleet.runtime.cluster_defaults import ClusterDefaults
    from tfleet.runtime.fleet import Fleet

    registry = kopf.get_default_registry()
    assert registry._changing.get_all_handlers() == []
    assert registry._spawning.get_all_handlers() == []
    assert registry._watching.get_all_handlers() == []
    watches = handlers.operator_watches(None, Fleet(None), ClusterDefaults(None), ("a", "b"))  # type: ignore[arg-type]
    kinds = {(w.kind, w.namespace, w.label_selector) for w in watches.watches}
    assert ("InferenceService", "a", None) in kinds
    for kind in ("ConfigMap", "Service", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert (kind, "b", "app.kubernetes.io/managed-by=tfleet") in kinds
    # The cluster-scoped defaults: one watch of every namespace, whatever the operator serves.
    assert ("InferenceServiceDefaults", None, None) in kinds
    assert len(kinds) == 13


def test_the_top_functions_by_self_time_come_from_the_leaves_of_the_stacks(tmp_path: Path):
    profile = tmp_path / "p.txt"
    profile.write_text("main;run;loads 30\nmain;run;dumps 10\nmain;other;loads 20\nmain;run 40\n")
    assert fleet.top_self_time(profile, 2) == [["loads", 0.5], ["run", 0.4]]
    assert fleet.top_self_time(tmp_path / "missing.txt") == []


def test_a_trickle_change_is_timed_to_the_first_write_about_its_inference_service():
    from e2e.bench import fleet_scenarios as sc

    assert sc.isvc_of_child("model-12-0123456789") == "model-12"
    assert sc.isvc_of_child("model-12-grpc") == "model-12"
    assert sc.isvc_of_child("model-12") == "model-12"
    writes = [entry(10.30, resource="configmaps", name="model-1-0123456789", duration_ms=100),
              entry(10.50, resource="inferenceservices", subresource="status", name="model-1"),
              entry(10.05, resource="deployments", name="model-2", duration_ms=0),
              entry(10.01, verb="create", resource="events", name=None)]
    changes = [(("fleet-0", "model-1"), 10.0), (("fleet-0", "model-2"), 10.1), (("fleet-0", "model-3"), 10.0)]
    latencies = sc.first_write_after(writes, changes)
    assert latencies[0] == pytest.approx(0.2)  # the write reached the server at 10.30 - 0.1
    assert math.isnan(latencies[1])  # the only write about model-2 came before its change
    assert math.isnan(latencies[2])


def test_the_trickle_alternates_replica_changes_and_rolling_version_bumps():
    from e2e.bench import fleet_scenarios as sc

    state: dict[tuple[str, str], dict[str, object]] = {}
    plain, autoscaled = fleet.isvc_manifest(0), fleet.isvc_manifest(17)
    assert sc.change_of(0, plain, state) == {"spec": {"replicas": 3}}
    assert sc.change_of(2, plain, state) == {"spec": {"replicas": 2}}
    bump = sc.change_of(1, plain, state)
    assert bump == {"spec": {"model": {"version": 2}, "rollout": {"strategy": "RollingUpdate"}}}
    # An autoscaled one's replicas are its autoscaler's: it only gets version bumps.
    assert "replicas" not in sc.change_of(0, autoscaled, state)["spec"]


def test_every_target_has_a_verdict_at_the_target_size():
    def result(n: int, **figures: object) -> fleet.SizeResult:
        base = dict(n=n, children=5 * n, converged=True, convergence_seconds=n / 10, cluster_floor_seconds=n / 11,
                    cpu_seconds_convergence=n * 0.008, client_floor_cpu_seconds=n * 0.006, first_write_p50=0.2,
                    first_write_p99=1.0, child_status_writes=7 * n, event_writes=n, child_changes=n,
                    over_budget=0, max_extra_writes=2, rss_peak_mb=90 + n / 20, reconciles=2 * n)
        base.update(figures)
        return fleet.SizeResult(**base)  # type: ignore[arg-type]

    results = [result(300), result(1000, rss_peak_mb=151.0,
                                   trickle={"rate": 5, "seconds": 60, "p50_ms": 5, "p99_ms": 80, "max_ms": 90,
                                            "changes": 300, "unanswered": 0, "writes": 600},
                                   restart={"ready_seconds": 3.0, "window_seconds": 20, "writes": 0,
                                            "writes_by_kind": {}, "cpu_seconds": 2.0, "rss_mb": 120},
                                   failover={"lease_seconds": 15, "handover_seconds": 17.0, "window_seconds": 20,
                                             "writes": 1, "lease_writes": 10,
                                             "writes_by_kind": {"patch inferenceservices/status": 1}}),
               result(3000), result(1000, unrelated=20000, churned=1200, rss_peak_mb=160.0,
                                    cpu_seconds_convergence=8.5)]
    verdicts = {row[0]: row[-1] for row in fleet.summary_rows(results)}
    assert verdicts["convergence ÷ cluster floor"] == "met"
    assert verdicts["operator peak RSS"] == "**missed**"  # judged at N = 1,000, not at the largest N
    scenarios = {row[0].split(": ", 1)[1]: row[-1] for row in fleet.scenario_rows(results)}
    assert scenarios["time to /readyz"] == "met"
    assert [v for k, v in scenarios.items() if k.startswith("the new leader's writes")] == ["**missed**"]
    busy = {row[0].rsplit(": ", 1)[1]: row[-1] for row in fleet.busy_rows(results)}
    assert busy["operator CPU, create to Ready (quiet → busy)"] == "met"  # 8.5 ÷ 8.0
    assert busy["operator peak RSS (quiet → busy)"] == "met"  # 160 ÷ 151
    text = fleet.render_markdown(results, "now")
    assert "Growth:" in text and "linear" in text


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
    # One Event at most per reconcile that changed children, by the operator's own count.
    assert result.child_changes >= 20
    assert 20 <= result.event_writes <= result.child_changes
    # Every InferenceService's first child write was seen and timed.
    assert result.first_write_p99 == result.first_write_p99  # not NaN


def test_create_to_first_child_write_takes_the_earliest_successful_write_of_any_child():
    owner_of = {("configmaps", "ns", "a-1"): ("ns", "a"), ("deployments", "ns", "a-1"): ("ns", "a"),
                ("configmaps", "ns", "b-1"): ("ns", "b")}
    writes = [entry(5.0, resource="deployments", name="a-1", namespace="ns"),
              entry(3.0, resource="configmaps", name="a-1", namespace="ns", code=500),  # failed: not a write
              entry(4.0, resource="configmaps", name="a-1", namespace="ns"),
              entry(2.5, resource="configmaps", name="b-1", namespace="ns")]
    latencies = fleet.first_child_write_latencies({("ns", "a"): 1.0, ("ns", "b"): 2.0, ("ns", "c"): 2.0}, writes, owner_of)
    assert sorted(latencies) == [0.5, 3.0]  # c's children were never written: no figure for it
