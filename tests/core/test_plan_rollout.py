"""Whole rollouts through `reconcile.plan_children` and `reconcile.plan_status`.

A small simulation stands in for the API server and the Deployment controller: the plan's
writes are applied to a dict of children, Deployments get status counts as their pods start
and become ready, and every reconcile reads back what the last one left. This checks what the
rollout engine's own tests cannot: that the plans carry its decisions out, and write nothing
when nothing changed.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest

from tfleet.desired import children as builders
from tfleet.engine import plan as reconcile
from tfleet.engine import rollout, status
from tfleet.engine.plan import ChildKey

from .isvc_factory import IsvcBuilder, as_stored, make_isvc

T0 = datetime(2026, 1, 1, 12, 0, 0)
Manifest = dict[str, Any]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@dataclass
class Record:
    """What one reconcile did."""

    now: float
    phase: str
    replicas: dict[str, int]  # Deployment name -> spec.replicas after the writes
    writes: int
    events: list[str]
    requeue_after: float | None


@dataclass
class Sim:
    body: Manifest
    children: dict[ChildKey, Manifest] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)  # revisions whose pods never become ready
    restarts: dict[str, int] = field(default_factory=dict)  # container restarts per revision
    log: list[Record] = field(default_factory=list)
    lowest_ready: int | None = None
    resource_version: int = 100

    # ------------------------------------------------------------------ the API server

    def _store(self, manifest: Manifest) -> None:
        key = reconcile.child_key(manifest)
        before = self.children.get(key)
        self.resource_version += 1
        stored = as_stored(manifest, self.resource_version)
        if before is not None:
            changed = before.get("spec") != stored.get("spec") or before.get("data") != stored.get("data")
            stored["metadata"]["generation"] = before["metadata"]["generation"] + (1 if changed else 0)
            if "status" in before:
                stored["status"] = before["status"]
        elif stored["kind"] == "Deployment":
            stored["status"] = {"observedGeneration": 0}
        self.children[key] = stored

    def _scale(self, deployment: Manifest, replicas: int) -> None:
        stored = self.children[reconcile.child_key(deployment)]
        assert stored["spec"]["replicas"] != replicas, "a scale that changes nothing is a needless write"
        stored["spec"]["replicas"] = replicas
        stored["metadata"]["generation"] += 1

    def set_spec(self, change: IsvcBuilder) -> None:
        self.body["spec"] = change.manifest()["spec"]
        self.body["metadata"]["generation"] += 1

    # ------------------------------------------------------------------ the Deployment controller and kubelet

    def settle(self) -> None:
        """The Deployment controller catches up; pods of healthy revisions become ready.
        Scaling down removes pods at once; new pods of a broken revision stay unready."""
        for (kind, _), obj in self.children.items():
            if kind != "Deployment":
                continue
            rev = obj["metadata"]["labels"][builders.LABEL_REVISION]
            want = obj["spec"]["replicas"]
            ready = 0 if rev in self.broken else want
            obj["status"] = {"observedGeneration": obj["metadata"]["generation"], "replicas": want,
                             "updatedReplicas": want, "readyReplicas": ready, "availableReplicas": ready}

    def ready_pods(self) -> int:
        return sum(int(obj.get("status", {}).get("readyReplicas") or 0)
                   for (kind, _), obj in self.children.items() if kind == "Deployment")

    def pods(self) -> list[reconcile.PodSummary]:
        out = []
        for (kind, _), obj in self.children.items():
            if kind != "Deployment":
                continue
            rev = obj["metadata"]["labels"][builders.LABEL_REVISION]
            st = obj.get("status", {})
            count, ready = int(st.get("replicas") or 0), int(st.get("readyReplicas") or 0)
            for i in range(count):
                # Restarts land on the revision's first pod.
                out.append(reconcile.PodSummary(rev, ready=i < ready,
                                                restarts=self.restarts.get(rev, 0) if i == 0 else 0,
                                                crash_looping=rev in self.broken))
        return out

    # ------------------------------------------------------------------ the operator

    def reconcile(self, now: float) -> Record:
        pods = self.pods()
        plan = reconcile.plan_children(self.body, self.children, pods, at(now))
        for manifest in plan.apply:
            self._store(manifest)
        for deployment, replicas in plan.scale:
            self._scale(deployment, replicas)
        for obj in plan.delete:
            del self.children[reconcile.child_key(obj)]
        if self.body.get("status"):
            # Sampled after the writes and before any new pod can become ready.
            ready = self.ready_pods()
            self.lowest_ready = ready if self.lowest_ready is None else min(self.lowest_ready, ready)
        written = reconcile.plan_status(self.body, self.children, self.pods(), rollout.format_time(at(now)),
                                        plan.rollout)
        if written.status is not None:
            self.body["status"] = written.status
        record = Record(
            now=now,
            phase=self.phase,
            replicas={name: obj["spec"]["replicas"] for (kind, name), obj in sorted(self.children.items())
                      if kind == "Deployment"},
            writes=plan.writes + written.writes,
            events=[e.reason for e in plan.events + written.events],
            requeue_after=plan.requeue_after,
        )
        self.log.append(record)
        return record

    @property
    def phase(self) -> str:
        return str(((self.body.get("status") or {}).get("rollout") or {}).get("phase"))

    def names(self, kind: str) -> set[str]:
        return {name for (k, name) in self.children if k == kind}


def revision(manifest: IsvcBuilder) -> str:
    return builders.compute_revision(manifest.isvc()).name


def v(version: int, replicas: int = 4) -> IsvcBuilder:
    return make_isvc("x").version(version).replicas(replicas) \
        .set("spec.rollout.steps", [{"weight": 10, "pause": "60s"}, {"weight": 50, "pause": "120s"}])


def started(manifest: IsvcBuilder) -> Sim:
    """An InferenceService created at T0 and settled: every pod ready, the status written."""
    sim = Sim(body=manifest.manifest())
    first = sim.reconcile(0)
    assert (first.phase, first.events[0]) == ("Idle", "ChildrenChanged")
    sim.settle()
    sim.reconcile(1)  # the pods became ready: the status says so
    assert sim.reconcile(2).writes == 0
    sim.log.clear()
    return sim


# --------------------------------------------------------------------------- a version bump 1 -> 2


def test_a_version_bump_goes_through_every_step_to_succeeded() -> None:
    sim = started(v(1))
    r1, r2 = revision(v(1)), revision(v(2))
    d1, d2 = f"x-{r1}", f"x-{r2}"

    sim.set_spec(v(2))
    start = sim.reconcile(100)
    assert (start.phase, start.replicas) == ("Progressing", {d1: 4, d2: 1})
    # The new revision's ConfigMap and Deployment beside the old ones, and the status.
    assert start.writes == 3
    assert start.events == ["RolloutStarted", "ChildrenChanged"]
    assert sim.body["status"]["rollout"]["canaryRevision"] == r2
    assert sim.names("ConfigMap") == {d1, d2}

    assert sim.reconcile(100).writes == 0, "nothing changed: nothing is written"
    sim.settle()
    ready = sim.reconcile(101)  # the canary pod became ready
    assert (ready.phase, ready.replicas, ready.writes, ready.events) == ("Progressing", {d1: 4, d2: 1}, 1, [])
    assert ready.requeue_after == 59
    assert sim.reconcile(130).writes == 0, "inside the pause: nothing is written"

    step2 = sim.reconcile(160)  # the pause is over
    assert (step2.phase, step2.replicas, step2.events) == ("Progressing", {d1: 4, d2: 4},
                                                           ["RolloutStepAdvanced", "Updated"])
    assert step2.writes == 2  # the canary Deployment and the status
    assert sim.body["status"]["rollout"]["weight"] == 50
    sim.reconcile(161)  # see test_the_look_right_after_a_step_advance_writes_nothing
    sim.settle()
    assert sim.reconcile(162).writes == 1  # the canary pods became ready
    assert sim.reconcile(200).writes == 0

    promoting = sim.reconcile(282)  # 120 s after the step began
    assert (promoting.phase, promoting.replicas, promoting.writes) == ("Promoting", {d1: 4, d2: 4}, 1)
    assert promoting.events == ["RolloutPromoting"] and promoting.requeue_after == 0

    done = sim.reconcile(282)  # the canary is fully ready already
    assert (done.phase, done.replicas) == ("Succeeded", {d1: 0, d2: 4})
    assert done.events == ["RolloutSucceeded"]
    assert done.writes == 2  # the old Deployment scaled to zero, and the status
    sim.settle()
    assert sim.reconcile(283).writes == 1  # the old pods are gone
    assert sim.reconcile(400).writes == 0

    st = sim.body["status"]
    assert st["servingVersion"] == 2
    assert st["rollout"] == {"phase": "Succeeded", "stableRevision": r2, "targetVersion": 2, "history": [r1],
                             "startedAt": rollout.format_precise_time(at(100)),
                             "stepStartedAt": rollout.format_precise_time(at(282)),
                             "message": f"Revision {r2} is stable"}
    assert (st["replicas"], st["readyReplicas"], st["ready"]) == (4, 4, "4/4")
    assert {c["type"]: c["reason"] for c in st["conditions"]} == {
        "Ready": "Available", "ModelAvailable": "ModelLoaded", "Progressing": "NewReplicaSetAvailable",
        "Degraded": "AsExpected", "Reconciling": "Reconciled", "Stalled": "AsExpected",
        "RolledOut": "RevisionRolledOut"}
    # The old revision stays at zero for a fast rollback, its ConfigMap with it.
    assert sim.names("Deployment") == {d1, d2} and sim.names("ConfigMap") == {d1, d2}
    assert sim.lowest_ready == 4


def test_status_follows_each_step() -> None:
    sim = started(v(1))
    sim.set_spec(v(2))
    seen = []
    for now in (100, 101, 160, 161, 282, 282, 283):
        sim.reconcile(now)
        sim.settle()
        st = sim.body["status"]
        progressing = status.condition(st, status.PROGRESSING) or {}
        seen.append((st["rollout"]["phase"], st["rollout"].get("weight"), progressing.get("reason"),
                     st.get("servingVersion"), st["readyReplicas"]))
    assert seen == [
        ("Progressing", 10, "RolloutInProgress", 1, 4),
        ("Progressing", 10, "RolloutInProgress", 1, 5),
        ("Progressing", 50, "RolloutInProgress", 1, 5),
        ("Progressing", 50, "RolloutInProgress", 1, 8),
        ("Promoting", 100, "RolloutInProgress", 1, 8),
        # The old pods count until the Deployment controller reports them gone.
        ("Succeeded", None, "NewReplicaSetAvailable", 2, 8),
        ("Succeeded", None, "NewReplicaSetAvailable", 2, 4),
    ]


def test_the_look_right_after_a_step_advance_changes_nothing() -> None:
    # The engine asks to look again at once after a step advances; until the Deployment
    # controller moves, that look observes what the advancing one did. The advancing look
    # already worded the rollout message from that observation ("step 2 of 2 (steps[1]) ...:
    # waiting for canary pods"), so there is nothing to write.
    sim = started(v(1))
    sim.set_spec(v(2))
    sim.reconcile(100)
    sim.settle()
    sim.reconcile(101)
    advanced = sim.reconcile(160)
    assert advanced.events == ["RolloutStepAdvanced", "Updated"]
    before = copy.deepcopy(sim.body)
    plan = reconcile.plan_children(before, sim.children, sim.pods(), at(160))
    assert (plan.writes, plan.events) == (0, [])
    written = reconcile.plan_status(before, sim.children, sim.pods(), rollout.format_time(at(160)), plan.rollout)
    assert (written.status, written.status_urgent) == (None, False)


def test_an_operator_restarted_mid_rollout_continues_from_the_status() -> None:
    # The simulation keeps nothing between reconciles but the cluster objects: every
    # reconcile is a freshly started operator. A restart before any look changes nothing.
    sim = started(v(1))
    sim.set_spec(v(2))
    sim.reconcile(100)
    sim.settle()
    sim.reconcile(101)
    copy_of_cluster = Sim(body=copy.deepcopy(sim.body), children=copy.deepcopy(sim.children))
    assert sim.reconcile(160) == copy_of_cluster.reconcile(160)


# --------------------------------------------------------------------------- failures and changes


def test_a_canary_that_never_becomes_ready_rolls_back() -> None:
    sim = started(v(1))
    r2 = revision(v(2))
    sim.broken.add(r2)
    sim.set_spec(v(2))
    sim.reconcile(100)
    sim.settle()
    waiting = sim.reconcile(101)
    assert waiting.requeue_after == 599
    rolled = sim.reconcile(700)
    d1, d2 = f"x-{revision(v(1))}", f"x-{r2}"
    assert (rolled.phase, rolled.replicas) == ("RolledBack", {d1: 4, d2: 0})
    # The failed revision is the spec's own: its Deployment is re-applied at zero.
    assert rolled.events == ["RolloutRolledBack", "Updated"]
    st = sim.body["status"]
    assert st["rollout"]["failedRevision"] == r2
    assert st["rollout"]["message"] == f"Rolled back revision {r2}: 1 of 1 canary pods crash-looping"
    degraded = status.condition(st, status.DEGRADED) or {}
    assert (degraded.get("status"), degraded.get("reason")) == ("True", "RolledBack")
    sim.settle()
    sim.reconcile(701)
    # Not retried: later looks write nothing.
    assert sim.reconcile(5000).writes == 0
    assert sim.lowest_ready == 4


def test_a_replicas_change_is_not_a_rollout() -> None:
    sim = started(v(1))
    sim.set_spec(v(1, replicas=6))
    scaled = sim.reconcile(100)
    assert scaled.replicas == {f"x-{revision(v(1))}": 6}
    assert scaled.phase == "Idle" and "RolloutStarted" not in scaled.events
    assert sim.names("ConfigMap") == {f"x-{revision(v(1))}"}


def test_a_replicas_change_during_a_rollout_resizes_both_revisions() -> None:
    sim = started(v(1))
    sim.set_spec(v(2))
    sim.reconcile(100)
    sim.settle()
    sim.set_spec(v(2, replicas=20))  # an autoscaler, say, asks for more
    resized = sim.reconcile(110)
    assert resized.replicas == {f"x-{revision(v(1))}": 20, f"x-{revision(v(2))}": 2}
    assert resized.phase == "Progressing"


def test_a_new_version_during_a_rollout_supersedes_it_and_deletes_the_old_canary() -> None:
    sim = started(v(1))
    sim.set_spec(v(2))
    sim.reconcile(100)
    sim.settle()
    sim.reconcile(160)
    sim.settle()
    sim.set_spec(v(3))
    superseded = sim.reconcile(170)
    d1, d3 = f"x-{revision(v(1))}", f"x-{revision(v(3))}"
    assert superseded.replicas == {d1: 4, d3: 1}
    assert superseded.events[:2] == ["RolloutSuperseded", "RolloutStarted"]
    assert sim.names("ConfigMap") == {d1, d3}
    assert sim.lowest_ready == 4


def test_history_keeps_the_configured_number_of_old_revisions() -> None:
    def spec(version: int) -> IsvcBuilder:
        return v(version).set("spec.rollout.revisionHistoryLimit", 1).set("spec.rollout.steps", [])

    sim = started(spec(1))
    now = 100.0
    for version in (2, 3, 4):
        sim.set_spec(spec(version))
        for _ in range(4):
            sim.reconcile(now)
            sim.settle()
            now += 1
        assert sim.phase == "Succeeded"
    kept = {f"x-{revision(spec(4))}", f"x-{revision(spec(3))}"}
    assert sim.names("Deployment") == kept
    assert sim.names("ConfigMap") == kept
    assert sim.body["status"]["rollout"]["history"] == [revision(spec(3))]


def test_switching_to_rolling_update_keeps_the_old_pods_until_the_new_ones_are_ready() -> None:
    sim = started(v(1))
    sim.set_spec(v(1).rolling_update())
    switched = sim.reconcile(100)
    # The new Deployment <name> starts empty-handed; the Canary revision's pods must serve meanwhile.
    assert switched.replicas.get(f"x-{revision(v(1))}") == 4, switched.replicas
    assert sim.lowest_ready == 4


def test_a_spec_back_to_a_revision_in_the_history_reuses_its_objects() -> None:
    sim = started(v(1))
    r1, r2 = revision(v(1)), revision(v(2))
    sim.set_spec(v(2))
    for now in (100, 101, 160, 161, 282, 282, 283):
        sim.reconcile(now)
        sim.settle()
    assert sim.body["status"]["rollout"]["stableRevision"] == r2
    sim.set_spec(v(1))
    back = sim.reconcile(300)
    # The old revision's Deployment (at zero) grows again; its immutable ConfigMap is reused.
    assert back.replicas == {f"x-{r1}": 1, f"x-{r2}": 4}
    assert back.events == ["RolloutStarted", "Updated"]
    for now in (301, 360, 361, 480, 480, 481):
        sim.reconcile(now)
        sim.settle()
    rollout_status = sim.body["status"]["rollout"]
    assert (rollout_status["phase"], rollout_status["stableRevision"]) == ("Succeeded", r1)
    assert sim.body["status"]["servingVersion"] == 1
    # The history lists earlier revisions only, never the stable one.
    assert rollout_status["history"] == [r2]


def _annotate(sim: Sim, **annotations: str) -> None:
    sim.body["metadata"]["annotations"] = {f"tfleet.dev/rollout-{k}": val for k, val in annotations.items()}


def test_manual_control_through_annotations() -> None:
    sim = started(v(1))
    r2 = revision(v(2))
    d1, d2 = f"x-{revision(v(1))}", f"x-{r2}"
    sim.set_spec(v(2))
    sim.reconcile(100)
    sim.settle()

    _annotate(sim, paused="true")
    paused = sim.reconcile(101)
    assert (paused.phase, paused.events, paused.requeue_after) == ("Paused", ["RolloutPaused"], None)
    progressing = status.condition(sim.body["status"], status.PROGRESSING) or {}
    assert progressing.get("reason") == "RolloutPaused"
    assert sim.reconcile(5000).writes == 0, "a paused rollout neither advances nor times out"

    _annotate(sim, promote="someothername")
    resumed = sim.reconcile(5001)
    assert (resumed.phase, resumed.events) == ("Progressing", ["RolloutResumed"])

    _annotate(sim, promote=r2)
    promoted = sim.reconcile(5002)
    assert (promoted.phase, promoted.replicas) == ("Promoting", {d1: 4, d2: 4})
    assert promoted.events == ["RolloutPromoted", "Updated"]
    sim.settle()
    done = sim.reconcile(5003)
    assert (done.phase, done.replicas) == ("Succeeded", {d1: 0, d2: 4})
    assert sim.lowest_ready == 4


def test_abort_through_the_annotation() -> None:
    sim = started(v(1))
    r2 = revision(v(2))
    sim.set_spec(v(2))
    sim.reconcile(100)
    sim.settle()
    sim.reconcile(160)
    sim.settle()
    _annotate(sim, abort=r2)
    aborted = sim.reconcile(170)
    assert (aborted.phase, aborted.replicas) == ("RolledBack", {f"x-{revision(v(1))}": 4, f"x-{r2}": 0})
    assert aborted.events == ["RolloutAborted", "Updated"]
    assert sim.body["status"]["rollout"]["message"] == f"Rolled back revision {r2}: aborted by request"
    sim.settle()
    sim.reconcile(171)
    assert sim.reconcile(172).writes == 0


def test_a_rolling_update_reports_the_version_its_old_pods_serve_until_it_completes() -> None:
    sim = started(v(1).rolling_update())
    assert sim.body["status"]["servingVersion"] == 1
    sim.set_spec(v(2).rolling_update())
    rolling = sim.reconcile(100)
    assert (rolling.phase, rolling.replicas, rolling.events) == ("Progressing", {"x": 4},
                                                                 ["RolloutStarted", "ChildrenChanged"])
    # The one Deployment now carries the new template, but the old pods still serve version 1.
    assert sim.body["status"].get("servingVersion") == 1
    sim.settle()
    done = sim.reconcile(101)
    assert (done.phase, done.events) == ("Succeeded", ["RolloutSucceeded"])
    assert sim.body["status"]["servingVersion"] == 2
    assert sim.reconcile(102).writes == 0


@pytest.mark.parametrize("seed", range(12))
def test_nothing_is_orphaned_and_capacity_holds_over_any_sequence(seed: int) -> None:
    """Version bumps (one of them broken), pods becoming ready, manual control and time, in a
    random but reproducible order, each followed by a reconcile."""
    rng = random.Random(seed)
    replicas = rng.choice([1, 2, 4])
    specs = {version: v(version, replicas) for version in (1, 2, 3, 4)}
    sim = started(specs[1])
    sim.broken.add(revision(specs[3]))
    now = 10.0
    for _ in range(50):
        roll = rng.random()
        if roll < 0.15:
            sim.set_spec(specs[rng.choice([1, 2, 3, 4])])
        elif roll < 0.55:
            sim.settle()
        elif roll < 0.6:
            canary = sim.body["status"]["rollout"].get("canaryRevision", "")
            _annotate(sim, **rng.choice([{"paused": "true"}, {"promote": canary}, {"abort": canary}, {}]))
        record = sim.reconcile(now)

        rollout_status = sim.body["status"]["rollout"]
        known = {rollout_status.get(k) for k in ("stableRevision", "canaryRevision", "failedRevision")}
        known |= set(rollout_status.get("history", []))
        deployments = {name: obj for (kind, name), obj in sim.children.items() if kind == "Deployment"}
        for name, obj in deployments.items():
            # Nothing is orphaned: every Deployment belongs to a revision the status names...
            assert obj["metadata"]["labels"][builders.LABEL_REVISION] in known, (name, rollout_status)
            # ...and the ConfigMap its pods mount is still there.
            volume = next(v for v in obj["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
            assert ("ConfigMap", volume["configMap"]["name"]) in sim.children
        assert sim.lowest_ready is not None and sim.lowest_ready >= replicas, sim.log[-3:]
        if record.requeue_after != 0:
            assert sim.reconcile(now).writes == 0, "a second look at an unchanged cluster writes nothing"
        now += rng.choice([0, 1, 30, 61, 121, 700])
