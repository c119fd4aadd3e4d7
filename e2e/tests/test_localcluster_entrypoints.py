"""The control plane's entry points: the CLI, ``LocalCluster``, the in-process API, the request log."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from e2e.localcluster import ApiError, LocalCluster
from e2e.localcluster.testing import WIDGET_CRD, WIDGET_GROUP, widget

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.simulated


def test_cli_serves_writes_kubeconfig_and_request_log(tmp_path: Path) -> None:
    kubeconfig, log = tmp_path / "kc", tmp_path / "requests.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "e2e.localcluster", "--kubeconfig", str(kubeconfig),
                             "--no-controllers", "--request-log", str(log)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        config = yaml.safe_load(kubeconfig.read_text())
        assert config["current-context"] == "localcluster"
        server = config["clusters"][0]["cluster"]["server"]
        assert server.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{server}/api/v1/namespaces/default/configmaps?limit=1") as resp:
            assert json.load(resp)["kind"] == "ConfigMapList"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    entry = json.loads(log.read_text().splitlines()[-1])
    assert {k: entry[k] for k in ("verb", "method", "resource", "namespace", "code")} == {
        "verb": "list", "method": "GET", "resource": "configmaps", "namespace": "default", "code": 200}
    assert entry["user_agent"].startswith("Python-urllib") and entry["duration_ms"] >= 0


async def test_in_process_api_and_subscriptions() -> None:
    async with LocalCluster(controllers=False) as lc:
        c = lc.cluster
        queue = c.subscribe("v1/configmaps")
        cm = await c.create("v1/configmaps", {"metadata": {"name": "a", "namespace": "default"}, "data": {"x": "1"}})
        cm["data"]["x"] = "mutated"  # callers get private copies
        assert (await c.get("v1/configmaps", "default", "a"))["data"] == {"x": "1"}
        await c.patch("v1/configmaps", "default", "a", {"data": {"x": "2"}})
        stale = dict(cm, data={"x": "3"})
        with pytest.raises(ApiError) as err:
            await c.update("v1/configmaps", stale)
        assert (err.value.code, err.value.reason) == (409, "Conflict")
        unconditional = {"metadata": {"name": "a", "namespace": "default"}, "data": {"x": "4"}}
        assert (await c.update("v1/configmaps", unconditional))["data"] == {"x": "4"}
        await c.delete("v1/configmaps", "default", "a")
        with pytest.raises(ApiError) as err:
            await c.get("v1/configmaps", "default", "a")
        assert err.value.code == 404
        seen = [(t, o["data"]["x"]) for t, o in (queue.get_nowait() for _ in range(queue.qsize()))]
        assert seen == [("ADDED", "1"), ("MODIFIED", "2"), ("MODIFIED", "4"), ("DELETED", "4")]
        c.unsubscribe("v1/configmaps", queue)
        await c.create("v1/configmaps", {"metadata": {"name": "b", "namespace": "default"}})
        assert queue.empty()
        assert lc.request_log == []  # the in-process API is not logged


async def test_in_process_deployment_scale_and_apply() -> None:
    async with LocalCluster(controllers=False) as lc:
        c = lc.cluster
        await c.create("apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD)
        w = await c.patch(f"{WIDGET_GROUP}/v1/widgets", "default", "applied", widget("applied", size=2),
                          patch_type="apply", field_manager="tfleet")
        assert w["metadata"]["managedFields"][0]["manager"] == "tfleet"
        scale = await c.update(f"{WIDGET_GROUP}/v1/widgets",
                               {"metadata": {"name": "applied", "namespace": "default"}, "spec": {"replicas": 3}},
                               subresource="scale")
        assert scale["spec"]["replicas"] == 3
        assert (await c.get(f"{WIDGET_GROUP}/v1/widgets", "default", "applied"))["spec"]["replicas"] == 3


async def _watch_lines(session: aiohttp.ClientSession, path: str, **params: str) -> list[dict[str, Any]]:
    async with session.get(path, params=params) as resp:
        assert resp.status == 200
        return [json.loads(line) for line in (await resp.read()).splitlines() if line]


async def test_watch_from_a_forgotten_version_gets_410_expired() -> None:
    async with LocalCluster(controllers=False, history_size=3) as lc, aiohttp.ClientSession(lc.url) as session:
        c = lc.cluster
        await c.create("v1/configmaps", {"metadata": {"name": "h", "namespace": "default"}})
        first = (await c.get("v1/configmaps", "default", "h"))["metadata"]["resourceVersion"]
        for i in range(5):
            await c.patch("v1/configmaps", "default", "h", {"data": {"i": str(i)}})
        events = await _watch_lines(session, "/api/v1/namespaces/default/configmaps",
                                    watch="1", resourceVersion=first, timeoutSeconds="1")
        assert len(events) == 1 and events[0]["type"] == "ERROR"
        status = events[0]["object"]
        assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
        assert status["message"].startswith(f"too old resource version: {first} (")
        # Within the history, a watch replays what happened after the given version.
        recent = str(int(first) + 3)
        events = await _watch_lines(session, "/api/v1/namespaces/default/configmaps",
                                    watch="1", resourceVersion=recent, timeoutSeconds="1")
        assert [e["object"]["data"]["i"] for e in events] == ["3", "4"]


async def test_watch_list_sends_initial_events_then_a_bookmark() -> None:
    async with LocalCluster(controllers=False) as lc, aiohttp.ClientSession(lc.url) as session:
        await lc.cluster.create("v1/configmaps", {"metadata": {"name": "init", "namespace": "default"}})
        events = await _watch_lines(session, "/api/v1/namespaces/default/configmaps", watch="1",
                                    sendInitialEvents="true", resourceVersionMatch="NotOlderThan",
                                    allowWatchBookmarks="true", timeoutSeconds="1")
        kinds = [(e["type"], e["object"]["metadata"].get("name")) for e in events]
        # Every object that exists (kube-root-ca.crt too), then the end-of-initial-events bookmark.
        assert kinds[:3] == [("ADDED", "init"), ("ADDED", "kube-root-ca.crt"), ("BOOKMARK", None)]
        assert events[2]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_crd_deletion_removes_its_objects_and_stops_serving() -> None:
    async with LocalCluster(controllers=False) as lc, aiohttp.ClientSession(lc.url) as session:
        c = lc.cluster
        await c.create("apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD)
        await c.create(f"{WIDGET_GROUP}/v1/widgets", widget("doomed", "default"))
        await c.delete("apiextensions.k8s.io/v1/customresourcedefinitions", None, WIDGET_CRD["metadata"]["name"])
        for _ in range(100):
            async with session.get(f"/apis/{WIDGET_GROUP}/v1") as resp:
                if resp.status == 404:
                    break
            await asyncio.sleep(0.01)
        assert resp.status == 404
        with pytest.raises(ApiError):
            await c.list(f"{WIDGET_GROUP}/v1/widgets")


async def test_a_watch_whose_client_left_is_dropped() -> None:
    async with LocalCluster(controllers=False, bookmark_interval=0.05) as lc:
        storage = lc.cluster.storage(lc.cluster.resource("v1/configmaps"))
        async with aiohttp.ClientSession(lc.url) as session:
            resp = await session.get("/api/v1/configmaps", params={"watch": "1"})
            for _ in range(100):
                if storage.watchers:
                    break
                await asyncio.sleep(0.01)
            assert len(storage.watchers) == 1
            resp.close()
        for _ in range(100):
            if not storage.watchers:
                break
            await asyncio.sleep(0.02)
        assert not storage.watchers


async def test_writes_never_mutate_stored_versions() -> None:
    """Merge patches share untouched parts with the stored object; no write may change it."""
    import copy

    async with LocalCluster(controllers=False) as lc:
        c = lc.cluster
        rt = c.resource("apps/v1/deployments")
        await c.create("apps/v1/deployments", {
            "metadata": {"name": "d", "namespace": "default", "labels": {"a": "1"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
                     "template": {"metadata": {"labels": {"app": "d"}},
                                  "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}})
        stored = c.storage(rt).get("default", "d")
        snapshot = copy.deepcopy(stored)
        await c.patch("apps/v1/deployments", "default", "d", {"metadata": {"labels": {"b": "2"}}, "spec": {"replicas": 2}})
        await c.patch("apps/v1/deployments", "default", "d", {"status": {"replicas": 2}}, subresource="status")
        await c.patch("apps/v1/deployments", "default", "d",
                      [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "x:2"}], "json")
        await c.patch("apps/v1/deployments", "default", "d",
                      {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x:3"}]}}}}, "strategic")
        assert stored == snapshot
        latest = await c.get("apps/v1/deployments", "default", "d")
        assert latest["spec"]["template"]["spec"]["containers"][0]["image"] == "x:3"
        assert latest["metadata"]["labels"] == {"a": "1", "b": "2"}
