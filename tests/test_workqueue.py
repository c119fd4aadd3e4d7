"""The work queue's order, its shutdown and the executor's stages, with threads but no cluster."""

from __future__ import annotations

import threading
import time
from typing import Any

from tfleet.engine.plan import ChildPlan
from tfleet.runtime.cache import FleetCache
from tfleet.runtime.executor import Executor
from tfleet.runtime.kube import KubeError
from tfleet.runtime.workqueue import Scheduler, WorkQueue

Manifest = dict[str, Any]


def queue_recording() -> tuple[WorkQueue, list[tuple[str, str]], threading.Event]:
    order: list[tuple[str, str]] = []
    gate = threading.Event()

    def handle(key: tuple[str, str]) -> None:
        order.append(key)
        gate.wait(5)

    return WorkQueue(handle, lambda d, fn: None, time.monotonic), order, gate


def wait_for(check: Any, what: str) -> None:
    deadline = time.monotonic() + 5
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_new_keys_and_changed_objects_go_ahead_of_re_reconciles():
    queue, order, gate = queue_recording()
    gate.set()
    queue.start_workers(1, open_now=False)
    for name in ("old-1", "old-2"):
        queue.enqueue(("ns", name))
    queue.open()
    wait_for(lambda: len(order) == 2, "the first reconciles")
    gate.clear()
    queue.enqueue(("ns", "busy"))  # holds the only worker while the rest queue up
    wait_for(lambda: len(order) == 3, "the worker to be busy")
    queue.enqueue(("ns", "old-1"))  # a re-reconcile
    queue.enqueue(("ns", "old-2"))  # a re-reconcile, then its object is edited
    queue.enqueue(("ns", "new"))  # never reconciled
    queue.enqueue(("ns", "old-2"), first=True)
    assert queue.depth() == (2, 1)
    gate.set()
    wait_for(lambda: len(order) == 6, "the queued reconciles")
    assert order[3:] == [("ns", "new"), ("ns", "old-2"), ("ns", "old-1")]


def test_a_closed_queue_reconciles_nothing_until_opened():
    queue, order, gate = queue_recording()
    gate.set()
    queue.start_workers(2, open_now=False)
    queue.enqueue(("ns", "a"))
    time.sleep(0.1)
    assert order == []
    queue.open()
    wait_for(lambda: order == [("ns", "a")], "the reconcile once open")


def test_the_scheduler_runs_callbacks_in_due_order_on_one_thread():
    scheduler = Scheduler()
    ran: list[tuple[str, str]] = []
    done = threading.Event()
    scheduler(0.15, lambda: (ran.append(("late", threading.current_thread().name)), done.set()))
    scheduler(0.05, lambda: ran.append(("early", threading.current_thread().name)))
    scheduler(0.0, lambda: 1 / 0)  # a failing callback stops none of the others
    assert done.wait(5)
    assert [what for what, _ in ran] == ["early", "late"]
    assert {thread for _, thread in ran} == {"tfleet-scheduler"}
    assert scheduler.pending() == 0


class StagedKube:
    """Records when each apply starts and ends; ConfigMaps answer slowly."""

    def __init__(self, fail: str | None = None):
        self.fail = fail
        self.log: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0

    def apply(self, manifest: Manifest) -> Manifest:
        name = manifest["metadata"]["name"]
        with self.lock:
            self.log.append(("start", name))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(0.1 if manifest["kind"] == "ConfigMap" else 0.05)
        with self.lock:
            self.in_flight -= 1
            self.log.append(("end", name))
        if f"{manifest['kind']}/{name}" == self.fail:
            raise KubeError(503, "ServiceUnavailable", "busy")
        return {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": "7", "uid": f"uid-{name}"}}

    def scale(self, deployment: Manifest, replicas: int) -> Manifest:
        self.log.append(("scale", deployment["metadata"]["name"]))
        return deployment

    def delete(self, manifest: Manifest) -> None:
        self.log.append(("delete", manifest["metadata"]["name"]))


def child(kind: str, name: str) -> Manifest:
    return {"apiVersion": "v1", "kind": kind,
            "metadata": {"name": name, "namespace": "ml", "labels": {"tfleet.dev/inferenceservice": "a"}}}


def staged_plan() -> ChildPlan:
    return ChildPlan(apply=[child("ConfigMap", "a-rev2"), child("Deployment", "a-rev2"), child("Service", "a"),
                            child("Service", "a-grpc"), child("PodDisruptionBudget", "a")],
                     scale=[(child("Deployment", "a-rev1"), 1)], delete=[child("ConfigMap", "a-rev0")])


def test_the_configmap_is_written_first_then_the_rest_at_once_then_scales_and_deletes():
    kube = StagedKube()
    executor = Executor(kube, FleetCache())  # type: ignore[arg-type]
    assert executor.carry_out_children({}, staged_plan()) is None
    log = kube.log
    assert log.index(("end", "a-rev2")) < log.index(("start", "a-rev2"), log.index(("end", "a-rev2")))
    assert kube.most_in_flight == 4  # the Deployment, both Services and the budget together
    assert log[-2:] == [("scale", "a-rev1"), ("delete", "a-rev0")]


def test_a_failed_write_stops_the_later_stages_and_what_was_written_is_in_the_cache():
    kube = StagedKube(fail="Service/a")
    cache = FleetCache()
    executor = Executor(kube, cache)  # type: ignore[arg-type]
    try:
        executor.carry_out_children({}, staged_plan())
        raise AssertionError("the failure was not raised")
    except KubeError as exc:
        assert exc.code == 503
    assert not any(step in ("scale", "delete") for step, _ in kube.log)
    _, children = cache.snapshot(("ml", "a"))
    # Every write of the stage that answered is remembered; a later reconcile resumes from there.
    assert set(children) == {("ConfigMap", "a-rev2"), ("Deployment", "a-rev2"), ("Service", "a-grpc"),
                             ("PodDisruptionBudget", "a")}

def test_stop_lets_the_pass_in_flight_finish_and_runs_nothing_queued():
    started, release, done = threading.Event(), threading.Event(), []

    def handler(key):
        if key == ("ml", "slow"):
            started.set()
            release.wait(5)
        done.append(key)

    queue = WorkQueue(handler, Scheduler(), time.monotonic)
    queue.start_workers(1)
    queue.enqueue(("ml", "slow"))
    assert started.wait(5)
    queue.enqueue(("ml", "queued"))  # behind the slow one
    stopper = threading.Thread(target=lambda: done.append(("stopped", str(queue.stop(5)))))
    stopper.start()
    time.sleep(0.1)
    queue.enqueue(("ml", "late"))  # after the stop: dropped
    release.set()
    stopper.join(5)
    assert done == [("ml", "slow"), ("stopped", "True")]


def test_stop_gives_up_waiting_after_its_timeout():
    release = threading.Event()
    queue = WorkQueue(lambda key: release.wait(5), Scheduler(), time.monotonic)
    queue.start_workers(1)
    queue.enqueue(("ml", "stuck"))
    time.sleep(0.05)
    assert queue.stop(0.2) is False
    release.set()


def test_a_wake_up_superseded_by_an_earlier_one_reconciles_nothing():
    now = [0.0]
    callbacks: list[tuple[float, Any]] = []
    ran: list[tuple[str, str]] = []
    queue = WorkQueue(ran.append, lambda delay, fn: callbacks.append((delay, fn)), lambda: now[0])
    queue.wake_up(("ns", "a"), 10)
    queue.wake_up(("ns", "a"), 2)  # sooner: this one counts
    queue.wake_up(("ns", "a"), 5)  # later than the pending one: not scheduled at all
    assert [round(d, 2) for d, _ in callbacks] == [10.05, 2.05]
    callbacks[1][1]()
    callbacks[0][1]()  # superseded: the reconcile at 2 s asked again for what it still needed
    assert ran == [("ns", "a")]
    queue.wake_up(("ns", "b"), 1)
    queue.forget(("ns", "b"))
    callbacks[-1][1]()  # forgotten (its InferenceService was deleted)
    assert ran == [("ns", "a")]
