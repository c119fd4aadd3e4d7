"""The operator's work queue on shutdown: the pass in flight finishes, nothing else starts."""

from __future__ import annotations

import threading
import time

from tfleet.runtime.workqueue import WorkQueue, timer


def test_stop_lets_the_pass_in_flight_finish_and_runs_nothing_queued():
    started, release, done = threading.Event(), threading.Event(), []

    def handler(key):
        if key == ("ml", "slow"):
            started.set()
            release.wait(5)
        done.append(key)

    queue = WorkQueue(handler, timer, time.monotonic)
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
    queue = WorkQueue(lambda key: release.wait(5), timer, time.monotonic)
    queue.start_workers(1)
    queue.enqueue(("ml", "stuck"))
    time.sleep(0.05)
    assert queue.stop(0.2) is False
    release.set()
