"""The cluster's InferenceServiceDefaults through a real operator (`tfleet run --max-concurrent-rollouts
3`) on a local control plane of its own: the defaults are applied and an InferenceService's own
fields win; a change of them rolls twelve services at the operator's pace; a bad defaults
object is reported on the object, in an Event and in the log, while every service keeps its
last good rendering, also across an operator restart."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.packaging.cluster import DEFAULTS_CRD, Operator, PrivateCluster, isvc, wait_for

LIMIT = 3
FAST = {"steps": [{"weight": 50, "pause": "1s"}]}
MIRROR = "mirror.example.com/hub"


def defaults(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceServiceDefaults",
            "metadata": {"name": "cluster"}, "spec": spec}


def defaults_object(cluster: PrivateCluster) -> dict[str, Any]:
    return cluster.get("inferenceservicedefaults", "cluster")


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def accepted(cluster: PrivateCluster) -> int:
    """Waits until the operator accepted the current generation; that generation."""
    def check() -> int | None:
        obj = defaults_object(cluster)
        generation = obj["metadata"]["generation"]
        ready = condition(obj, "Ready")
        if ready.get("status") == "True" and (obj.get("status") or {}).get("appliedGeneration") == generation:
            return int(generation)
        return None
    return wait_for(check, what="the operator to accept the InferenceServiceDefaults")  # type: ignore[no-any-return]


def templates(cluster: PrivateCluster, ns: str) -> dict[str, dict[str, Any]]:
    """The pod template of each InferenceService's serving Deployment (the one with pods)."""
    out = {}
    for d in cluster.get("deployments", "-n", ns)["items"]:
        if d["spec"]["replicas"]:
            out[d["metadata"]["labels"]["tfleet.dev/inferenceservice"]] = d["spec"]["template"]
    return out


def listing(cluster: PrivateCluster, ns: str) -> list[dict[str, Any]]:
    return list(cluster.get("tfis", "-n", ns)["items"])


def rolled_out_with(generation: int) -> Any:
    def check(item: dict[str, Any]) -> bool:
        status = item.get("status") or {}
        return (status.get("observedGeneration") == item["metadata"]["generation"]
                and (status.get("defaults") or {}).get("generation") == generation
                and (status.get("rollout") or {}).get("phase") in ("Idle", "Succeeded")
                and condition(item, "RolledOut").get("status") == "True")
    return check


@pytest.fixture(scope="module")
def operator(private_cluster: PrivateCluster) -> Iterator[Operator]:
    op = Operator(private_cluster, "defaults", "--all-namespaces", "--max-concurrent-rollouts", str(LIMIT))
    try:
        op.wait_for_log("Started the operator")
        yield op
        assert "Traceback" not in op.log(), op.log()
    finally:
        op.stop()


def test_defaults_apply_and_the_objects_own_fields_win(private_cluster: PrivateCluster, operator: Operator):
    cluster = private_cluster
    cluster.apply(defaults(image={"registryMirrors": {"docker.io": MIRROR}},
                           resources={"requests": {"cpu": "100m", "memory": "256Mi"}},
                           rollout=FAST, pod={"labels": {"team": "platform", "tier": "standard"}}))
    generation = accepted(cluster)
    ns = cluster.namespace("precedence")
    own = isvc("own", ns, replicas=1, image="tensorflow/serving:2.18.0",
               resources={"requests": {"cpu": "2"}}, pod={"labels": {"team": "fraud"}})
    cluster.apply(isvc("plain", ns, replicas=1), own)
    cluster.kubectl("wait", "--for=condition=RolledOut", "tfis", "--all", "-n", ns, "--timeout=60s")

    found = templates(cluster, ns)
    plain, mine = found["plain"], found["own"]
    assert plain["spec"]["containers"][0]["image"] == f"{MIRROR}/tensorflow/serving:2.19.0"
    assert plain["spec"]["containers"][0]["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"}}
    assert (plain["metadata"]["labels"]["team"], plain["metadata"]["labels"]["tier"]) == ("platform", "standard")
    # The object's image, resources and label win; the mirror still applies; the rest merges.
    assert mine["spec"]["containers"][0]["image"] == f"{MIRROR}/tensorflow/serving:2.18.0"
    assert mine["spec"]["containers"][0]["resources"] == {"requests": {"cpu": "2", "memory": "256Mi"}}
    assert (mine["metadata"]["labels"]["team"], mine["metadata"]["labels"]["tier"]) == ("fraud", "standard")
    for item in listing(cluster, ns):
        assert item["status"]["defaults"] == {"name": "cluster", "generation": generation}
    # kubectl documents the object, and shows whether it is in force.
    explained = cluster.kubectl("explain", "inferenceservicedefaults.spec.image.registryMirrors").stdout
    assert "pulled from its mirror" in explained
    table = cluster.kubectl("get", "inferenceservicedefaults").stdout.split()
    assert table[:5] == ["NAME", "READY", "REASON", "APPLIED", "AGE"] and table[5:9] == [
        "cluster", "True", "Accepted", str(generation)]
    events = cluster.get("events", "-n", "default", "--field-selector", "reason=DefaultsAccepted")["items"]
    assert any(e["involvedObject"]["kind"] == "InferenceServiceDefaults" for e in events)


def test_a_defaults_change_rolls_twelve_services_at_the_operators_pace(private_cluster: PrivateCluster,
                                                                       operator: Operator):
    cluster = private_cluster
    generation = accepted(cluster)
    ns = cluster.namespace("paced")
    names = [f"svc-{i:02d}" for i in range(12)]
    cluster.apply(*(isvc(n, ns, replicas=1) for n in names))
    wait_for(lambda: all(map(rolled_out_with(generation), listing(cluster, ns))) and len(listing(cluster, ns)) == 12,
             timeout=90, what="twelve services to roll out")

    most, queued_seen, stop = [0], set(), threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            items = listing(cluster, ns)
            phases = [((i.get("status") or {}).get("rollout") or {}).get("phase") for i in items]
            most[0] = max(most[0], sum(p in ("Progressing", "Promoting", "Paused") for p in phases))
            queued_seen.update(i["metadata"]["name"] for i, p in zip(items, phases, strict=True) if p == "Queued")

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        # One change of the defaults touches every pod template: a new revision everywhere.
        cluster.apply(defaults(image={"registryMirrors": {"docker.io": MIRROR}},
                               resources={"requests": {"cpu": "100m", "memory": "256Mi"}},
                               rollout=FAST, pod={"labels": {"team": "platform", "tier": "gold"}}))
        changed = accepted(cluster)
        assert changed == generation + 1
        wait_for(lambda: all(map(rolled_out_with(changed), listing(cluster, ns))), timeout=150,
                 what="every service to roll out with the new defaults")
    finally:
        stop.set()
        sampler.join(timeout=5)
    assert 0 < most[0] <= LIMIT, f"{most[0]} rollouts ran at once"
    assert len(queued_seen) >= len(names) - LIMIT - 1, queued_seen
    assert {n: t["metadata"]["labels"]["tier"] for n, t in templates(cluster, ns).items()} == dict.fromkeys(names, "gold")
    queued = cluster.get("events", "-n", ns, "--field-selector", "reason=RolloutQueued")["items"]
    assert len(queued) >= len(names) - LIMIT - 1


def without_the_gpu_tag_rule(crd: dict[str, Any]) -> dict[str, Any]:
    """The defaults CRD as a release before the gpuTag rule had it."""
    old = json.loads(json.dumps(crd))
    image = old["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["image"]
    assert [r["fieldPath"] for r in image.pop("x-kubernetes-validations")] == [".gpuTag"]
    return old


def test_a_bad_defaults_object_is_reported_and_every_service_keeps_its_rendering(
        private_cluster: PrivateCluster, operator: Operator):
    import yaml

    cluster = private_cluster
    good = accepted(cluster)
    ns = "precedence"
    before = {d["metadata"]["name"]: d["metadata"]["resourceVersion"]
              for d in cluster.get("deployments", "-n", ns)["items"]}
    # Admission refuses a bad object outright, naming the field.
    bad = defaults(image={"registryMirrors": {"docker.io": MIRROR}, "gpuTag": "2.18.0"}, rollout=FAST,
                   pod={"labels": {"team": "platform", "tier": "gold"}})
    refused = cluster.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert refused.returncode != 0 and "gpuTag must make a GPU image" in refused.stderr, refused.stderr
    # One stored under an older CRD, without that rule, reaches the operator.
    current = yaml.safe_load(DEFAULTS_CRD.read_text())
    cluster.kubectl("replace", "-f", "-", input=json.dumps(without_the_gpu_tag_rule(current)))
    try:
        cluster.apply(bad)
    finally:
        cluster.kubectl("replace", "-f", "-", input=json.dumps(current))

    def refused_on_the_object() -> dict[str, Any]:
        obj = defaults_object(cluster)
        ready = condition(obj, "Ready")
        return obj if ready.get("reason") == "InvalidDefaults" and \
            obj["status"]["observedGeneration"] == obj["metadata"]["generation"] else {}

    obj = wait_for(refused_on_the_object, what="Ready=False InvalidDefaults on the defaults")
    message = condition(obj, "Ready")["message"]
    assert message.startswith('spec.image.gpuTag: "2.18.0" is not a GPU tag'), message
    assert f"InferenceServices keep InferenceServiceDefaults cluster generation {good}" in message
    assert condition(obj, "Stalled")["status"] == "True" and obj["status"]["appliedGeneration"] == good
    events = cluster.get("events", "-n", "default", "--field-selector", "reason=InvalidDefaults")["items"]
    assert any("spec.image.gpuTag" in e["message"] and e["type"] == "Warning" for e in events), events
    operator.wait_for_log(rf"Refused InferenceServiceDefaults cluster generation {good + 1}: spec.image.gpuTag")
    # Every service keeps its last good rendering, and says which defaults it was rendered with.
    assert {d["metadata"]["name"]: d["metadata"]["resourceVersion"]
            for d in cluster.get("deployments", "-n", ns)["items"]} == before
    assert {i["status"]["defaults"]["generation"] for i in listing(cluster, ns)} == {good}

    # A restarted operator renders with the last accepted defaults (recorded in the object's
    # status) from its first reconcile on: it rolls nothing.
    assert operator.terminate() == 0
    restarted = Operator(cluster, "defaults-restarted", "--all-namespaces", "--max-concurrent-rollouts", str(LIMIT))
    try:
        restarted.wait_for_log("Started the operator")
        restarted.wait_for_log(r"Refused InferenceServiceDefaults cluster generation \d+: spec.image.gpuTag")
        wait_for(lambda: restarted.metric("tfleet_reconciles_total", result="success") >= 14,
                 what="the restarted operator to reconcile every service")
        assert restarted.metric("tfleet_api_writes_total", verb="apply", kind="Deployment") == 0, restarted.log()
        assert {d["metadata"]["name"] for d in cluster.get("deployments", "-n", ns)["items"]} == set(before)
        # Fixed, the defaults are accepted again.
        cluster.apply(defaults(image={"registryMirrors": {"docker.io": MIRROR}}, rollout=FAST,
                               resources={"requests": {"cpu": "100m", "memory": "256Mi"}},
                               pod={"labels": {"team": "platform", "tier": "gold"}}))
        assert accepted(cluster) == good + 2
        assert "Traceback" not in restarted.log(), restarted.log()
    finally:
        restarted.stop()
