"""The operator's own watches (tfleet.runtime.watch) against the local control plane and its faults.

A label-selector watch delivers tfleet's objects only; a stream cut mid-line resumes from
the last version seen and loses nothing; a 410 on resume lists again and reports what went
meanwhile as deleted; refused lists hold `synced` back until one succeeds. The module runs
a control plane of its own (no controllers), since a restart would disturb the session's.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from e2e.localcluster.fixtures import RunningCluster
from tfleet.runtime.kube import Kube, load_config
from tfleet.runtime.watch import LISTED, Watch

pytestmark = pytest.mark.simulated

OPERATOR_AGENT = "tfleet/operator"
TFLEET = {"app.kubernetes.io/managed-by": "tfleet", "tfleet.dev/inferenceservice": "a"}


@pytest.fixture(scope="module")
def lc() -> Iterator[RunningCluster]:
    with tempfile.TemporaryDirectory(prefix="operator-watch-") as tmp:
        running = RunningCluster(Path(tmp) / "kubeconfig", controllers=False).start()
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture(autouse=True)
def _no_rules_left(lc: RunningCluster) -> Iterator[None]:
    lc.faults.clear()
    yield
    lc.faults.clear()


@pytest.fixture
def core(lc: RunningCluster) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=str(lc.kubeconfig)))


@pytest.fixture
def ns(core: client.CoreV1Api) -> str:
    name = f"watch-{time.monotonic_ns() % 10**9}"
    core.create_namespace({"metadata": {"name": name}})
    return name


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, event_type: str, obj: dict[str, Any]) -> None:
        with self._lock:
            self.events.append((event_type, obj["metadata"]["name"]))

    def names(self, *types: str) -> set[str]:
        with self._lock:
            return {name for t, name in self.events if t in types}


@pytest.fixture
def watching(lc: RunningCluster, ns: str) -> Iterator[Callable[[], tuple[Watch, Recorder]]]:
    started: list[Watch] = []

    def start() -> tuple[Watch, Recorder]:
        recorder = Recorder()
        watch = Watch(Kube(load_config(str(lc.kubeconfig))), "v1", "ConfigMap", ns, recorder,
                      first_retry_seconds=0.05, max_retry_seconds=0.5)
        watch.start()
        started.append(watch)
        return watch, recorder

    yield start
    for watch in started:
        watch.stop()


def cm(core: client.CoreV1Api, ns: str, name: str, ours: bool = True) -> None:
    labels = TFLEET if ours else {"app.kubernetes.io/managed-by": "someone-else"}
    core.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})


def eventually(check: Callable[[], bool], what: str | Callable[[], str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")


def test_only_tfleets_objects_arrive_and_a_cut_stream_loses_nothing(lc, core, ns, watching):
    for i in range(3):
        cm(core, ns, f"ours-{i}")
        cm(core, ns, f"other-{i}", ours=False)
    # Every watch stream is cut mid-line after 0.2 s, five times over (the list is no watch).
    lc.faults.add("watch_cut", user_agents=OPERATOR_AGENT, namespaces=[ns], after_seconds=0.2, truncate=True, count=5)
    watch, seen = watching()
    assert watch.synced.wait(10)
    assert seen.names(LISTED) == {"ours-0", "ours-1", "ours-2"}
    core.delete_namespaced_config_map("ours-0", ns)
    created = set()
    for i in range(12):
        cm(core, ns, f"later-{i}")
        cm(core, ns, f"other-later-{i}", ours=False)
        created.add(f"later-{i}")
        time.sleep(0.1)
    eventually(lambda: created <= seen.names("ADDED"),
               lambda: f"every later ConfigMap of tfleet's: {sorted(created - seen.names('ADDED'))} missing, "
                       f"watch {watch.counts} at {watch.resource_version}, faults {lc.faults.injected()}")
    eventually(lambda: lc.faults.injected().get("watch_cut", 0) >= 3, "the cuts")
    assert not any(name.startswith("other") for _, name in seen.events)
    assert ("DELETED", "ours-0") in seen.events
    assert watch.counts["broken"] >= 2 and watch.counts["lists"] == 1  # resumed, never listed again
    # Resuming from the last version seen delivers no event twice.
    added = [name for t, name in seen.events if t == "ADDED"]
    assert len(added) == len(set(added))


def test_410_lists_again_and_reports_what_went_meanwhile_as_deleted(lc, core, ns, watching):
    cm(core, ns, "stays")
    cm(core, ns, "goes")
    watch, seen = watching()
    assert watch.synced.wait(10)
    # Restarted once its stream is open: a request that reaches the local API server while it
    # shuts down can be left unanswered (a race of the stand-in's restart, not of the watch).
    eventually(lambda: watch.counts["watches"] == 1, "the watch to open")
    time.sleep(0.3)
    # The resumed watch is told its version is too old; the list that follows takes 1 s.
    lc.faults.add("watch_expired", user_agents=OPERATOR_AGENT, namespaces=[ns], count=1)
    lc.faults.add("latency", user_agents=OPERATOR_AGENT, namespaces=[ns], verbs=["list"], seconds=1.0, count=1)
    lc.restart_apiserver(down_seconds=0.2)  # every open stream ends: the watch resumes
    eventually(lambda: watch.counts["expired"] == 1, lambda: f"the 410 (watch {watch.counts}, faults {lc.faults.rules()})")
    core.delete_namespaced_config_map("goes", ns)  # while the new list waits
    cm(core, ns, "new")
    eventually(lambda: watch.counts["lists"] == 2, "the second list")
    eventually(lambda: ("DELETED", "goes") in seen.events, "the deletion the list found")
    assert ("LISTED", "new") in seen.events or ("ADDED", "new") in seen.events
    assert ("DELETED", "stays") not in seen.events
    cm(core, ns, "after")
    eventually(lambda: "after" in seen.names("ADDED"), "the watch to carry on after the list")


def test_refused_lists_hold_synced_back_until_one_succeeds(lc, core, ns, watching):
    cm(core, ns, "ours")
    # The kubernetes client itself retries a 503 with Retry-After three times: five refusals
    # reach the watch as at least one failed list.
    lc.faults.add("service_unavailable", user_agents=OPERATOR_AGENT, namespaces=[ns], verbs=["list"],
                  resources=["configmaps"], count=5)
    watch, seen = watching()
    assert watch.synced.wait(20)
    assert lc.faults.injected().get("service_unavailable") == 5
    assert watch.counts["errors"] >= 1
    assert seen.events == [(LISTED, "ours")]
