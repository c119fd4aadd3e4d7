"""The start-up listing: ready only once the cache holds what the API server lists."""

from __future__ import annotations

import threading
from typing import Any

from tfleet.runtime.cache import FleetCache
from tfleet.runtime.kube import KubeError
from tfleet.runtime.startup_sync import unseen, wait_until_seen, watched_kinds


def isvc(name: str, rv: str = "5") -> dict[str, Any]:
    return {"apiVersion": "tfleet.dev/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}", "resourceVersion": rv}}


def deployment(name: str, parent: str | None, rv: str = "6") -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": "tfleet", **({"tfleet.dev/inferenceservice": parent} if parent else {})}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}", "resourceVersion": rv,
                         "labels": labels}}


class Lister:
    def __init__(self, objects: list[dict[str, Any]], failures: list[KubeError] | None = None):
        self.objects, self.failures, self.calls = objects, list(failures or []), []

    def list_objects(self, api_version: str, kind: str, namespace: str | None,
                     label_selector: str | None = None) -> list[dict[str, Any]]:
        self.calls.append((kind, namespace, label_selector))
        if self.failures:
            raise self.failures.pop(0)
        return [o for o in self.objects if o["kind"] == kind]


def test_every_watched_kind_is_listed_in_every_namespace_with_the_watches_selector():
    lister = Lister([])
    unseen(lister, lambda o: True, ("a", "b"))
    assert len(lister.calls) == 2 * len(watched_kinds())
    assert ("InferenceService", "a", None) in lister.calls
    assert ("Deployment", "b", "app.kubernetes.io/managed-by=tfleet") in lister.calls


def test_the_cache_holds_an_object_in_this_version_or_a_later_one():
    cache = FleetCache()
    listing = [isvc("a"), deployment("a-1", "a"), deployment("stray", None)]
    assert unseen(Lister(listing), cache.holds, ()) == (3, 2)  # a label-less child is never filed
    cache.observe_isvc("INDEXED", isvc("a", rv="4"))
    cache.observe_child("INDEXED", deployment("a-1", "a"))
    assert unseen(Lister(listing), cache.holds, ()) == (3, 1)  # the cache's "a" is older than the list's
    cache.observe_isvc("MODIFIED", isvc("a", rv="9"))
    assert unseen(Lister(listing), cache.holds, ()) == (3, 0)
    recreated = {**isvc("a", rv="10"), "metadata": {**isvc("a")["metadata"], "uid": "uid-new", "resourceVersion": "10"}}
    assert not cache.holds(recreated)  # same name, another object


def test_api_errors_are_waited_out_and_then_the_listed_count_returned():
    cache = FleetCache()
    cache.observe_isvc("INDEXED", isvc("a"))
    lister = Lister([isvc("a")], failures=[KubeError(503, "ServiceUnavailable", "restarting", retry_after=0.01),
                                           KubeError(0, "Unreachable", "connection refused")])
    assert wait_until_seen(lister, cache.holds, (), threading.Event()) == 1
    assert lister.calls[0] == lister.calls[1] == ("InferenceService", None, None)  # retried from the start


def test_a_stop_ends_the_wait():
    stop = threading.Event()
    stop.set()
    assert wait_until_seen(Lister([isvc("a")]), lambda o: False, (), stop) is None
