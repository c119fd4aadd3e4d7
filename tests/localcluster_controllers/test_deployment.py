"""The Deployment planner: fenceposts, hashing, and whole rollouts simulated step by step."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from e2e.localcluster.controllers import deployment as dp
from e2e.localcluster.controllers.deployment import RS, plan

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def make_deployment(replicas: int = 4, image: str = "tf:1", **spec: Any) -> dict[str, Any]:
    d = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "ns", "uid": "d-uid", "generation": 1},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": image}]},
            },
            **spec,
        },
    }
    return d


def rolling(surge: Any, unavailable: Any) -> dict[str, Any]:
    return {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable},
    }


class World:
    """A pure stand-in for the API and the pods: applies a plan's writes to ReplicaSet
    objects and lets pods become available ``lag`` syncs after their ReplicaSet grew."""

    def __init__(self, d: dict[str, Any], lag: int = 1):
        self.d = d
        self.rss: dict[str, dict[str, Any]] = {}
        self.lag = lag
        self.created = 0
        self.history: list[tuple[int, int]] = []  # (total spec replicas, total available)
        self.writes = 0
        self.now = NOW

    def rs_models(self) -> list[RS]:
        return [RS.of(r, pods_alive=int(r["status"].get("replicas", 0))) for r in self.rss.values()]

    def sync(self) -> dp.Plan:
        p = plan(self.d, self.rs_models(), self.now)
        for obj in p.create:
            obj = copy.deepcopy(obj)
            self.created += 1
            obj["metadata"]["creationTimestamp"] = f"2026-01-01T00:00:{self.created:02d}Z"
            obj["metadata"]["uid"] = f"rs-{self.created}"
            obj["status"] = {}
            obj["_ready_in"] = {}
            self.rss[obj["metadata"]["name"]] = obj
            self.writes += 1
        for write in p.rs_writes:
            self.writes += 1
            rs = self.rss.get(write[1])
            if write[0] == "scale":
                rs["spec"]["replicas"] = write[2]
                rs["metadata"].setdefault("annotations", {}).update(write[3])
            elif write[0] == "annotate":
                rs["metadata"].setdefault("annotations", {}).update(write[2])
            elif write[0] == "delete":
                del self.rss[write[1]]
        if p.deployment_annotations:
            self.d["metadata"].setdefault("annotations", {}).update(p.deployment_annotations)
        if p.status is not None:
            self.writes += 1
            self.d["status"] = p.status
        return p

    def tick(self) -> None:
        """Pods catch up with their ReplicaSets: scale-downs at once, new pods after ``lag`` ticks."""
        self.now += timedelta(seconds=1)
        for rs in self.rss.values():
            want = rs["spec"]["replicas"]
            st = rs["status"]
            avail = st.get("availableReplicas", 0)
            pending = rs["_ready_in"]
            if want < avail:
                avail = want
                pending.clear()
            missing = want - avail - sum(pending.values())
            if missing > 0:
                pending[self.lag] = pending.get(self.lag, 0) + missing
            elif missing < 0:
                pending.clear()
                if want - avail > 0:
                    pending[self.lag] = want - avail
            matured = pending.pop(0, 0)
            rs["_ready_in"] = {k - 1: v for k, v in pending.items()}
            avail += matured
            rs["status"] = {"replicas": want, "readyReplicas": avail, "availableReplicas": avail}
        total = sum(r["spec"]["replicas"] for r in self.rss.values())
        available = sum(r["status"].get("availableReplicas", 0) for r in self.rss.values())
        self.history.append((total, available))

    def run(self, steps: int = 60) -> None:
        for _ in range(steps):
            self.sync()
            self.tick()

    def new_rs(self) -> dict[str, Any]:
        return max(self.rss.values(), key=lambda r: int(r["metadata"]["annotations"][dp.REVISION]))


# ------------------------------------------------------------------------ fenceposts


@pytest.mark.parametrize(
    ("replicas", "surge", "unavailable", "expected"),
    [
        (4, "25%", "25%", (1, 1)),
        (10, "25%", "25%", (3, 2)),  # surge rounds up, unavailable rounds down
        (3, "25%", "25%", (1, 0)),
        (1, "25%", "25%", (1, 0)),
        (5, 0, 0, (0, 1)),  # both zero: one may be unavailable
        (5, "0%", "0%", (0, 1)),
        (5, 2, 1, (2, 1)),
        (10, "100%", "0%", (10, 0)),
        (3, "50%", "50%", (2, 1)),
    ],
)
def test_fenceposts_round_like_the_real_controller(replicas, surge, unavailable, expected):
    assert (
        dp.resolve_fenceposts(make_deployment(replicas, strategy=rolling(surge, unavailable)))
        == expected
    )


def test_max_unavailable_never_exceeds_replicas_and_is_zero_for_recreate():
    assert dp.max_unavailable(make_deployment(2, strategy=rolling(0, 5))) == 2
    assert dp.max_unavailable(make_deployment(2, strategy={"type": "Recreate"})) == 0
    assert dp.max_surge(make_deployment(2, strategy={"type": "Recreate"})) == 0


def test_defaults_are_rolling_update_with_quarter_surge_and_unavailability():
    d = make_deployment(8)
    assert dp.is_rolling(d)
    assert dp.resolve_fenceposts(d) == (2, 2)
    assert dp.progress_deadline(d) == 600
    assert dp.progress_deadline(make_deployment(1, progressDeadlineSeconds=2**31 - 1)) is None


# ---------------------------------------------------------------------------- hash


def test_template_hash_is_stable_safe_and_changes_with_template_and_collisions():
    t1 = make_deployment(image="a")["spec"]["template"]
    t2 = make_deployment(image="b")["spec"]["template"]
    h = dp.template_hash(t1)
    assert h == dp.template_hash(copy.deepcopy(t1))
    assert h != dp.template_hash(t2)
    assert h != dp.template_hash(t1, 1)
    assert set(h) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert 1 <= len(h) <= 10


def test_fnv32a_matches_the_reference_vectors():
    assert dp.fnv32a(b"") == 0x811C9DC5
    assert dp.fnv32a(b"a") == 0xE40C292C
    assert dp.fnv32a(b"foobar") == 0xBF9CF968


# ------------------------------------------------------------------------ first sync


def test_first_sync_creates_the_replica_set_with_hash_label_owner_and_revision():
    d = make_deployment(3)
    p = plan(d, [], NOW)
    assert len(p.create) == 1
    rs = p.create[0]
    h = dp.template_hash(d["spec"]["template"])
    assert rs["metadata"]["name"] == f"web-{h}"
    assert rs["metadata"]["labels"] == {"app": "web", "pod-template-hash": h}
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": h}
    assert rs["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] == h
    assert rs["spec"]["replicas"] == 3
    assert rs["metadata"]["annotations"][dp.REVISION] == "1"
    assert rs["metadata"]["annotations"][dp.DESIRED_REPLICAS] == "3"
    assert rs["metadata"]["annotations"][dp.MAX_REPLICAS] == "4"
    ref = rs["metadata"]["ownerReferences"][0]
    assert ref["kind"] == "Deployment" and ref["uid"] == "d-uid" and ref["controller"] is True
    assert p.deployment_annotations == {dp.REVISION: "1"}
    progressing = dp.get_condition(p.status, "Progressing")
    assert progressing["reason"] == dp.NEW_RS_CREATED
    assert progressing["message"] == f'Created new replica set "web-{h}"'
    available = dp.get_condition(p.status, "Available")
    assert (available["status"], available["reason"]) == ("False", dp.MIN_UNAVAILABLE)
    assert p.status["observedGeneration"] == 1


def test_kubectl_annotations_are_not_copied_to_the_replica_set():
    d = make_deployment(1)
    d["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
        "team": "ml",
    }
    rs = plan(d, [], NOW).create[0]
    assert rs["metadata"]["annotations"]["team"] == "ml"
    assert "kubectl.kubernetes.io/last-applied-configuration" not in rs["metadata"]["annotations"]


def test_min_ready_seconds_is_copied_to_the_replica_set():
    rs = plan(make_deployment(1, minReadySeconds=5), [], NOW).create[0]
    assert rs["spec"]["minReadySeconds"] == 5


# ------------------------------------------------------------------------- rollouts


def settle(world: World, steps: int = 20) -> None:
    world.run(steps)


@pytest.mark.parametrize(
    ("replicas", "surge", "unavailable"),
    [
        (4, "25%", "25%"),
        (10, "25%", "25%"),
        (3, 1, 0),
        (3, 0, 1),
        (5, "50%", "0%"),
        (6, 2, 2),
        (1, "25%", "25%"),
    ],
)
def test_rolling_update_respects_surge_and_unavailability_at_every_step(
    replicas, surge, unavailable
):
    d = make_deployment(replicas, strategy=rolling(surge, unavailable))
    world = World(d, lag=2)
    settle(world)
    assert d["status"]["availableReplicas"] == replicas
    assert dp.get_condition(d["status"], "Progressing")["reason"] == dp.NEW_RS_AVAILABLE

    ms, mu = dp.resolve_fenceposts(d)
    world.history.clear()
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "tf:2"
    d["metadata"]["generation"] = 2
    world.run(80)
    for total, available in world.history:
        assert total <= replicas + ms, world.history
        assert available >= replicas - mu, world.history
    new = world.new_rs()
    assert new["spec"]["replicas"] == replicas
    assert new["metadata"]["annotations"][dp.REVISION] == "2"
    old = [r for r in world.rss.values() if r is not new]
    assert [r["spec"]["replicas"] for r in old] == [0]
    s = d["status"]
    assert (
        s["replicas"],
        s["updatedReplicas"],
        s["availableReplicas"],
        s["observedGeneration"],
    ) == (replicas, replicas, replicas, 2)
    assert dp.get_condition(s, "Progressing")["reason"] == dp.NEW_RS_AVAILABLE
    assert (
        dp.get_condition(s, "Progressing")["message"]
        == f'ReplicaSet "{new["metadata"]["name"]}" has successfully progressed.'
    )
    assert d["metadata"]["annotations"][dp.REVISION] == "2"


def test_rolling_update_first_step_surges_then_waits_for_availability():
    d = make_deployment(4)  # 25%/25%: one extra pod, one unavailable
    world = World(d, lag=100)  # new pods never become available within this test
    first = plan(make_deployment(4), [], NOW).create[0]
    first["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    first["status"] = {"replicas": 4, "readyReplicas": 4, "availableReplicas": 4}
    first["_ready_in"] = {}
    world.rss = {first["metadata"]["name"]: first}
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "tf:2"
    world.sync()
    new = world.new_rs()
    assert new["spec"]["replicas"] == 1  # surge: 4 + 1 in total
    # in the same sync the old set may lose the one pod maxUnavailable allows
    assert first["spec"]["replicas"] == 3
    for _ in range(5):
        world.tick()
        world.sync()
    assert first["spec"]["replicas"] == 3
    assert new["spec"]["replicas"] == 2  # total may be 5
    assert dp.get_condition(d["status"], "Progressing")["reason"] in (
        dp.RS_UPDATED,
        dp.NEW_RS_CREATED,
    )


def test_recreate_scales_old_to_zero_and_waits_for_pods_before_creating_new():
    d = make_deployment(3, strategy={"type": "Recreate"})
    world = World(d)
    settle(world)
    old_name = next(iter(world.rss))
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "tf:2"
    world.sync()
    assert world.rss[old_name]["spec"]["replicas"] == 0
    assert len(world.rss) == 1  # no new ReplicaSet while old pods run
    # pods still alive (status.replicas still 3): nothing new yet
    world.sync()
    assert len(world.rss) == 1
    world.tick()  # old pods gone
    world.sync()
    assert len(world.rss) == 2
    new = world.new_rs()
    assert new["spec"]["replicas"] == 3
    settle(world)
    assert d["status"]["availableReplicas"] == 3
    assert d["status"]["updatedReplicas"] == 3


def test_scaling_a_steady_deployment_scales_its_replica_set_and_stamps_annotations():
    d = make_deployment(3)
    world = World(d)
    settle(world)
    d["spec"]["replicas"] = 7
    p = world.sync()
    assert [w[0] for w in p.rs_writes] == ["scale"]
    rs = next(iter(world.rss.values()))
    assert rs["spec"]["replicas"] == 7
    assert rs["metadata"]["annotations"][dp.DESIRED_REPLICAS] == "7"
    assert rs["metadata"]["annotations"][dp.MAX_REPLICAS] == "9"
    settle(world)
    assert d["status"]["availableReplicas"] == 7


def test_scaling_during_a_rollout_is_proportional_across_replica_sets():
    d = make_deployment(10, strategy=rolling(3, 2))
    world = World(d, lag=1000)
    first = plan(make_deployment(10, strategy=rolling(3, 2)), [], NOW).create[0]
    first["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    first["status"] = {"replicas": 10, "readyReplicas": 10, "availableReplicas": 10}
    first["_ready_in"] = {}
    world.rss = {first["metadata"]["name"]: first}
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "tf:2"
    world.sync()
    world.tick()
    world.sync()
    new = world.new_rs()
    sizes_before = (first["spec"]["replicas"], new["spec"]["replicas"])
    # surged by 3 and old scaled down by maxUnavailable 2, then surged again up to 13
    assert sizes_before == (8, 5)
    d["spec"]["replicas"] = 20
    world.sync()
    sizes_after = (first["spec"]["replicas"], new["spec"]["replicas"])
    # 10 more replicas allowed (20 + maxSurge 3 - 13), shared by size: 8*23/13 -> 14, 5*23/13 -> 9
    assert sizes_after == (14, 9)


def test_scale_to_zero_and_back():
    d = make_deployment(2)
    world = World(d)
    settle(world)
    d["spec"]["replicas"] = 0
    settle(world, 3)
    assert next(iter(world.rss.values()))["spec"]["replicas"] == 0
    assert d["status"].get("replicas", 0) == 0
    assert dp.get_condition(d["status"], "Available")["status"] == "True"
    d["spec"]["replicas"] = 2
    settle(world, 5)
    assert d["status"]["availableReplicas"] == 2


def test_steady_state_makes_no_writes():
    d = make_deployment(3)
    world = World(d)
    settle(world)
    before = world.writes
    settle(world, 5)
    assert world.writes == before


def test_paused_deployment_does_not_roll_out_but_still_scales():
    d = make_deployment(2)
    world = World(d)
    settle(world)
    d["spec"]["paused"] = True
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "tf:2"
    world.sync()
    cond = dp.get_condition(d["status"], "Progressing")
    assert (cond["status"], cond["reason"], cond["message"]) == (
        "Unknown",
        dp.PAUSED,
        "Deployment is paused",
    )
    assert len(world.rss) == 1
    d["spec"]["replicas"] = 4
    settle(world, 4)
    assert next(iter(world.rss.values()))["spec"]["replicas"] == 4
    assert len(world.rss) == 1
    d["spec"]["paused"] = False
    world.sync()
    assert len(world.rss) == 2
    assert dp.get_condition(d["status"], "Progressing")["reason"] in (dp.RESUMED, dp.NEW_RS_CREATED)
    settle(world)
    assert d["status"]["updatedReplicas"] == 4


def test_progress_deadline_exceeded_when_pods_never_become_available():
    d = make_deployment(2, progressDeadlineSeconds=10)
    world = World(d, lag=10_000)
    p = world.sync()
    assert p.requeue_after is not None and 10 <= p.requeue_after <= 12
    for _ in range(15):
        world.tick()
        world.sync()
    cond = dp.get_condition(d["status"], "Progressing")
    assert (cond["status"], cond["reason"]) == ("False", dp.TIMED_OUT)
    assert cond["message"].endswith("has timed out progressing.")
    avail = dp.get_condition(d["status"], "Available")
    assert (avail["status"], avail["reason"]) == ("False", dp.MIN_UNAVAILABLE)


def test_rollback_to_an_old_template_reuses_its_replica_set_with_a_new_revision():
    d = make_deployment(2)
    world = World(d)
    settle(world)
    first = next(iter(world.rss))
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "tf:2"
    settle(world)
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "tf:1"
    settle(world)
    assert len(world.rss) == 2
    rs = world.rss[first]
    assert rs["spec"]["replicas"] == 2
    assert rs["metadata"]["annotations"][dp.REVISION] == "3"
    assert rs["metadata"]["annotations"][dp.REVISION_HISTORY] == "1"
    assert d["metadata"]["annotations"][dp.REVISION] == "3"


def test_revision_history_limit_deletes_the_oldest_idle_replica_sets():
    d = make_deployment(1, revisionHistoryLimit=1)
    world = World(d)
    settle(world)
    for image in ("tf:2", "tf:3", "tf:4"):
        d["spec"]["template"]["spec"]["containers"][0]["image"] = image
        settle(world)
    assert len(world.rss) == 2  # the current one plus one old
    revisions = sorted(int(r["metadata"]["annotations"][dp.REVISION]) for r in world.rss.values())
    assert revisions == [3, 4]


def test_condition_transition_time_is_kept_when_status_does_not_flip():
    status: dict[str, Any] = {}
    dp.set_condition(status, dp.new_condition("Available", "True", "A", "m", NOW))
    later = NOW + timedelta(minutes=5)
    dp.set_condition(status, dp.new_condition("Available", "True", "B", "m2", later))
    cond = dp.get_condition(status, "Available")
    assert cond["reason"] == "B"
    assert cond["lastTransitionTime"] == "2026-01-01T12:00:00Z"
    assert cond["lastUpdateTime"] == "2026-01-01T12:05:00Z"
    # same status and reason: nothing changes at all
    dp.set_condition(
        status, dp.new_condition("Available", "True", "B", "other", later + timedelta(minutes=1))
    )
    assert dp.get_condition(status, "Available")["message"] == "m2"


def test_status_omits_zero_counts_like_the_api():
    d = make_deployment(0)
    p = plan(d, [], NOW)
    assert "replicas" not in p.status and "availableReplicas" not in p.status
    assert p.status["observedGeneration"] == 1
