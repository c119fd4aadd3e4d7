"""The operator's watches and the start-up wait, against a scripted API (no server).

The same behaviour against the local control plane, with its faults (cut streams, 410,
refused lists, a restarted API server), is in e2e/tests/test_operator_watch.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tfleet.runtime.cache import FleetCache
from tfleet.runtime.kube import KubeError, WatchStreamBroken
from tfleet.runtime.startup_sync import wait_until_synced, watched_kinds
from tfleet.runtime.watch import LISTED, Watch, Watches

Manifest = dict[str, Any]


def cm(name: str, rv: str, parent: str | None = "a", uid: str | None = None) -> Manifest:
    labels = {"app.kubernetes.io/managed-by": "tfleet", **({"tfleet.dev/inferenceservice": parent} if parent else {})}
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "ml", "uid": uid or f"uid-{name}", "resourceVersion": rv,
                         "labels": labels}}


class Stream:
    def __init__(self, events: list[Manifest], then: Exception | None = None):
        self.events, self.then = events, then
        self.closed = False

    def __iter__(self) -> Iterator[Manifest]:
        yield from self.events
        if self.then is not None:
            raise self.then

    def close(self) -> None:
        self.closed = True


class Script:
    """Answers LISTs and WATCHes from scripts; stops the watch once the scripts run out."""

    def __init__(self, lists: list[Any], watches: list[Any]):
        self.lists, self.watches = lists, watches
        self.calls: list[tuple[str, str | None, str | None]] = []
        self.owner: Watch | None = None

    def list_page(self, api_version: str, kind: str, namespace: str | None, label_selector: str | None,
                  limit: int, continue_token: str | None = None) -> tuple[list[Manifest], str, str | None]:
        self.calls.append(("list", label_selector, continue_token))
        answer = self.lists.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    def watch(self, api_version: str, kind: str, namespace: str | None, label_selector: str | None,
              resource_version: str, timeout_seconds: int) -> Stream:
        self.calls.append(("watch", label_selector, resource_version))
        if not self.watches:
            assert self.owner is not None
            self.owner._stop.set()
            return Stream([])
        answer = self.watches.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]


def run(script: Script, **options: Any) -> tuple[Watch, list[tuple[str, str, str]]]:
    seen: list[tuple[str, str, str]] = []
    watch = Watch(script, "v1", "ConfigMap", None,
                  lambda t, o: seen.append((t, o["metadata"]["name"], o["metadata"]["resourceVersion"])),
                  first_retry_seconds=0.001, max_retry_seconds=0.002, **options)
    script.owner = watch
    watch.run()
    return watch, seen


def test_a_watch_lists_then_watches_from_the_lists_version_with_the_selector():
    script = Script([([cm("a-1", "5")], "10", None)],
                    [Stream([{"type": "ADDED", "object": cm("a-2", "11")},
                             {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}])])
    watch, seen = run(script)
    assert seen == [(LISTED, "a-1", "5"), ("ADDED", "a-2", "11")]
    assert script.calls[0] == ("list", "app.kubernetes.io/managed-by=tfleet", None)
    assert script.calls[1] == ("watch", "app.kubernetes.io/managed-by=tfleet", "10")
    # The next watch resumes from the bookmark.
    assert script.calls[2] == ("watch", "app.kubernetes.io/managed-by=tfleet", "15")
    assert watch.synced.is_set() and watch.listed == 1


def test_a_list_is_read_in_pages():
    script = Script([([cm("a-1", "5")], "10", "page-2"), ([cm("a-2", "6")], "10", None)], [])
    _, seen = run(script, page_size=1)
    assert [name for _, name, _ in seen] == ["a-1", "a-2"]
    assert script.calls[1] == ("list", "app.kubernetes.io/managed-by=tfleet", "page-2")


def test_a_broken_stream_resumes_from_the_last_event_seen():
    script = Script([([], "10", None)],
                    [Stream([{"type": "ADDED", "object": cm("a-1", "12")}], then=WatchStreamBroken("cut")),
                     Stream([{"type": "MODIFIED", "object": cm("a-1", "13")}])])
    watch, seen = run(script)
    assert [c for c in script.calls if c[0] == "watch"][:2] == [("watch", "app.kubernetes.io/managed-by=tfleet", "10"),
                                                               ("watch", "app.kubernetes.io/managed-by=tfleet", "12")]
    assert seen == [("ADDED", "a-1", "12"), ("MODIFIED", "a-1", "13")]
    assert watch.counts["broken"] == 1 and watch.counts["lists"] == 1


def test_410_lists_again_and_reports_what_went_meanwhile_as_deleted():
    expired = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                           "message": "too old resource version: 10 (40)"}}
    script = Script([([cm("a-1", "5"), cm("a-2", "6")], "10", None), ([cm("a-1", "30")], "40", None)],
                    [Stream([expired])])
    watch, seen = run(script)
    assert seen[2:] == [(LISTED, "a-1", "30"), ("DELETED", "a-2", "40")]
    assert watch.counts["expired"] == 1
    assert ("watch", "app.kubernetes.io/managed-by=tfleet", "40") in script.calls


def test_the_deleted_report_files_under_the_right_parent_so_the_cache_drops_the_child():
    cache = FleetCache()
    cache.observe_isvc("LISTED", {"metadata": {"namespace": "ml", "name": "a", "resourceVersion": "1"}})
    expired = {"type": "ERROR", "object": {"code": 410, "message": "too old"}}
    script = Script([([cm("a-1", "5")], "10", None), ([], "40", None)], [Stream([expired])])
    watch = Watch(script, "v1", "ConfigMap", None, cache.observe_child, first_retry_seconds=0.001)
    script.owner = watch
    watch.run()
    assert cache.snapshot(("ml", "a"))[1] == {}
    assert cache.take_news(("ml", "a"))


def test_list_failures_are_retried_and_nothing_is_synced_before():
    states: list[bool] = []
    script = Script([KubeError(503, "ServiceUnavailable", "restarting"), KubeError(0, "Unreachable", "refused"),
                     ([cm("a-1", "5")], "10", None)], [])
    watch = Watch(script, "v1", "ConfigMap", None, lambda t, o: states.append(watch.synced.is_set()),
                  first_retry_seconds=0.001)
    script.owner = watch
    watch.run()
    assert states == [False]  # the listed object reached the cache before synced was set
    assert watch.synced.is_set() and watch.counts["errors"] == 2


def test_failures_in_a_row_back_off_and_a_retry_after_is_honoured():
    waits: list[float] = []

    class Recording(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout or 0.0)
            return self.is_set()

    failures: list[Any] = [KubeError(500, "InternalError", "x")] * 4 + [KubeError(429, "TooManyRequests", "x", 3.0)]
    script = Script([([], "10", None)], failures)
    watch = Watch(script, "v1", "ConfigMap", None, lambda t, o: None, first_retry_seconds=0.2, max_retry_seconds=0.5)
    watch._stop = Recording()
    script.owner = watch
    watch.run()
    # The first failure is retried at once, then 0.2, 0.4, capped at 0.5; a Retry-After wins
    # (and the script's last, empty, stream is one more in the row).
    assert waits == [0.2, 0.4, 0.5, 3.0, 0.5]


def test_an_error_event_other_than_410_is_a_failure_to_retry():
    script = Script([([], "10", None)],
                    [Stream([{"type": "ERROR", "object": {"code": 500, "reason": "InternalError", "message": "x"}}])])
    watch, _ = run(script)
    assert watch.counts["errors"] == 1 and watch.counts["lists"] == 1


def test_the_start_up_wait_ends_once_every_watch_listed():
    script = Script([([cm("a-1", "5"), cm("a-2", "5")], "10", None)], [])
    slow = Script([KubeError(503, "ServiceUnavailable", "restarting"), ([cm("b-1", "5")], "10", None)], [])
    watches = Watches([Watch(s, "v1", "ConfigMap", ns, lambda t, o: None, first_retry_seconds=0.05)
                       for s, ns in ((script, "a"), (slow, "b"))])
    for w, s in zip(watches.watches, (script, slow), strict=True):
        s.owner = w
    stop = threading.Event()
    result: list[int | None] = []
    waiter = threading.Thread(target=lambda: result.append(wait_until_synced(watches, stop)))
    waiter.start()
    watches.start()
    waiter.join(timeout=10)
    watches.stop()
    assert result == [3]


def test_a_stop_ends_the_start_up_wait():
    stop = threading.Event()
    stop.set()
    watches = Watches([Watch(Script([], []), "v1", "ConfigMap", None, lambda t, o: None)])
    assert wait_until_synced(watches, stop) is None


@pytest.mark.parametrize(("kind", "selector"), [("InferenceService", None),
                                                ("Deployment", "app.kubernetes.io/managed-by=tfleet")])
def test_the_children_are_watched_with_tfleets_selector_and_the_inference_services_whole(kind, selector):
    assert (kind, selector) in [(k, s) for _, k, s in watched_kinds()]


def test_a_delivery_that_fails_lists_again_and_loses_nothing():
    # A bug in what a watch feeds must not end the watch: the event is delivered again by a
    # new LIST, and the watch resumes from that list (not from past the failed event).
    script = Script([([], "10", None), ([cm("a-1", "12")], "20", None)],
                    [Stream([{"type": "ADDED", "object": cm("a-1", "12")}]), Stream([])])
    seen: list[tuple[str, str]] = []
    failed = []

    def deliver(kind: str, obj: Manifest) -> None:
        if kind == "ADDED" and not failed:
            failed.append(obj["metadata"]["name"])
            raise RuntimeError("a bug downstream")
        seen.append((kind, obj["metadata"]["name"]))

    watch = Watch(script, "v1", "ConfigMap", None, deliver, first_retry_seconds=0.001, max_retry_seconds=0.002)
    script.owner = watch
    watch.run()
    assert failed == ["a-1"] and seen == [(LISTED, "a-1")]
    assert watch.counts["lists"] == 2 and watch.counts["errors"] == 1
    assert ("watch", "app.kubernetes.io/managed-by=tfleet", "20") in script.calls


def test_a_watch_refused_with_410_lists_again():
    script = Script([([cm("a-1", "5")], "10", None), ([cm("a-1", "30")], "40", None)],
                    [KubeError(410, "Expired", "too old resource version: 10 (40)")])
    watch, seen = run(script)
    assert seen == [(LISTED, "a-1", "5"), (LISTED, "a-1", "30")]
    assert watch.counts["lists"] == 2 and watch.counts["errors"] == 1
    assert ("watch", "app.kubernetes.io/managed-by=tfleet", "40") in script.calls
