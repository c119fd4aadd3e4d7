"""Shared helpers: quantities, selectors, the informer cache and the work queue."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import pytest
from e2e.localcluster.controllers import common
from e2e.localcluster.controllers.common import Informer, WorkQueue


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8", Fraction(8)),
        ("500m", Fraction(1, 2)),
        ("32Gi", Fraction(32 * 2**30)),
        ("1k", Fraction(1000)),
        ("1e3", Fraction(1000)),
        ("1.5", Fraction(3, 2)),
        ("0.5Gi", Fraction(2**29)),
        (4, Fraction(4)),
        ("100Mi", Fraction(100 * 2**20)),
    ],
)
def test_parse_quantity(text, value):
    assert common.parse_quantity(text) == value


@pytest.mark.parametrize("bad", ["", "lots", "1.2.3", "5Xi", True])
def test_parse_quantity_rejects_garbage(bad):
    with pytest.raises(ValueError):
        common.parse_quantity(bad)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3s", 3), ("500ms", 0.5), ("2m", 120), ("1h", 3600), ("7", 7), ("0.25s", 0.25)],
)
def test_parse_duration(text, seconds):
    assert common.parse_duration(text) == seconds


def test_label_selectors():
    labels = {"app": "web", "tier": "gpu"}
    assert common.match_selector({}, labels)
    assert not common.match_selector(None, labels)
    assert common.match_selector(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["gpu"]}],
        },
        labels,
    )
    assert not common.match_selector(
        {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gpu"]}]}, labels
    )
    assert common.match_requirement({"key": "n", "operator": "Gt", "values": ["3"]}, {"n": "5"})
    assert not common.match_requirement({"key": "n", "operator": "Lt", "values": ["3"]}, {"n": "x"})
    assert common.selector_string({"matchLabels": {"b": "2", "a": "1"}}) == "a=1,b=2"


def test_status_patch_sets_changes_and_nulls_dropped_fields():
    current = {"replicas": 3, "readyReplicas": 2, "other": "kept"}
    assert (
        common.status_patch(
            current, {"replicas": 3, "readyReplicas": 2}, ["replicas", "readyReplicas"]
        )
        == {}
    )
    assert common.status_patch(
        current, {"replicas": 3}, ["replicas", "readyReplicas", "availableReplicas"]
    ) == {"readyReplicas": None}
    assert common.status_patch(None, {"replicas": 1}, ["replicas"]) == {"replicas": 1}


class ListOnly:
    """Just enough of the cluster API for an informer: a list and a subscription."""

    def __init__(self, items):
        self.items = items
        self.queue: asyncio.Queue = asyncio.Queue()

    async def list(self, resource):
        return list(self.items)

    def subscribe(self, resource):
        return self.queue

    def unsubscribe(self, resource, queue):
        pass


def obj(name: str, rv: int, uid: str = "u", labels=None, owner: str | None = None):
    meta = {
        "name": name,
        "namespace": "ns",
        "uid": uid,
        "resourceVersion": str(rv),
        "labels": labels or {},
    }
    if owner:
        meta["ownerReferences"] = [{"uid": owner, "controller": True}]
    return {"metadata": meta}


async def drain(informer: Informer, cluster: ListOnly) -> None:
    while not cluster.queue.empty():
        await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_informer_ignores_stale_and_duplicate_events_and_indexes():
    cluster = ListOnly([obj("a", 5, "ua", {"app": "x"}, owner="rs1")])
    informer = Informer(
        cluster,
        "v1/pods",
        {"controller": common.index_by_controller, "label": common.index_by_label},
    )
    seen = []
    informer.add_handler(
        lambda t, old, new: seen.append((t, (new or old)["metadata"]["resourceVersion"]))
    )
    task = asyncio.create_task(informer.run())
    await informer.synced.wait()
    assert [o["metadata"]["name"] for o in informer.by_index("controller", "rs1")] == ["a"]
    assert common.select_by_labels(informer, "ns", {"app": "x"}) == [informer.get("ns", "a")]

    informer.observe(obj("a", 7, "ua", {"app": "y"}, owner="rs1"))  # our own write
    cluster.queue.put_nowait(
        ("MODIFIED", obj("a", 6, "ua", {"app": "x"}, owner="rs1"))
    )  # older: dropped
    cluster.queue.put_nowait(
        ("MODIFIED", obj("a", 7, "ua", {"app": "y"}, owner="rs1"))
    )  # duplicate: dropped
    await drain(informer, cluster)
    assert seen == [("ADDED", "5"), ("MODIFIED", "7")]
    assert common.select_by_labels(informer, "ns", {"app": "x"}) == []
    assert len(common.select_by_labels(informer, "ns", {"app": "y"})) == 1

    informer.observe_deleted(obj("a", 7, "ua"))
    cluster.queue.put_nowait(
        ("MODIFIED", obj("a", 8, "ua", {"app": "y"}))
    )  # stale event of a deleted object
    await drain(informer, cluster)
    assert informer.get("ns", "a") is None
    assert informer.by_index("controller", "rs1") == []
    cluster.queue.put_nowait(("ADDED", obj("a", 9, "ub")))  # a new object with the same name
    await drain(informer, cluster)
    assert informer.get("ns", "a")["metadata"]["uid"] == "ub"
    task.cancel()


async def test_work_queue_deduplicates_and_delays():
    q = WorkQueue()
    q.add("a")
    q.add("b")
    q.add("a")
    assert len(q) == 2
    assert await q.get() == "a"
    assert await q.get() == "b"
    q.add_after("c", 0.05)
    q.add_after("c", 0.01)  # the earlier request wins
    got = await asyncio.wait_for(q.get(), 1)
    assert got == "c"
    assert len(q) == 0
    q.close()


async def test_run_worker_survives_failures_and_retries():
    q = WorkQueue()
    calls: list[str] = []
    done = asyncio.Event()

    async def reconcile(key):
        calls.append(key)
        if key == "bad" and calls.count("bad") < 3:
            raise RuntimeError("boom")
        if calls.count("bad") >= 3 and "good" in calls:
            done.set()

    task = asyncio.create_task(common.run_worker("test", q, reconcile))
    q.add("bad")
    q.add("good")
    await asyncio.wait_for(done.wait(), 5)
    assert calls.count("bad") == 3 and "good" in calls
    task.cancel()


def test_selector_index_finds_equality_and_expression_selectors_per_namespace():
    index = common.SelectorIndex()
    index.put(("ns", "svc-a"), {"app": "a"})
    index.put(("ns", "svc-ab"), {"app": "a", "track": "b"})
    index.put(("ns", "pdb"), {"matchLabels": {"app": "a"}})
    index.put(
        ("ns", "pdb-expr"),
        {"matchExpressions": [{"key": "track", "operator": "In", "values": ["b", "c"]}]},
    )
    index.put(("other", "svc-a"), {"app": "a"})
    assert index.matching("ns", {"app": "a", "pod-template-hash": "x"}) == {
        ("ns", "svc-a"),
        ("ns", "pdb"),
    }
    assert index.matching("ns", {"app": "a", "track": "b"}) == {
        ("ns", "svc-a"),
        ("ns", "svc-ab"),
        ("ns", "pdb"),
        ("ns", "pdb-expr"),
    }
    assert index.matching("ns", {"app": "z"}) == set()
    index.put(("ns", "svc-a"), None)
    index.put(("ns", "pdb-expr"), None)
    assert ("ns", "svc-a") not in index
    assert index.matching("ns", {"app": "a", "track": "b"}) == {("ns", "svc-ab"), ("ns", "pdb")}
    # a pod with very many labels (too many subsets of size 3) falls back to testing each selector
    index.put(("ns", "svc-3"), {"app": "a", "k1": "v", "k2": "v"})
    assert common.selector_subsets({f"k{i}": "v" for i in range(41)}, {1, 2, 3}) is None
    many = {f"k{i}": "v" for i in range(40)} | {"app": "a"}
    assert index.matching("ns", many) == {("ns", "pdb"), ("ns", "svc-3")}
