"""Fault injection of the local control plane, through real clients.

The kubernetes client (with the operator's user agent, or its own), kubectl and raw HTTP
watches on sockets: each test checks that a fault reaches the clients a rule names, in the
real apiserver's format, and nobody else. The module runs a control plane of its own (no
controllers), since a restart would disturb the session's.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from e2e.localcluster.fixtures import KUBECTL, RunningCluster
from e2e.localcluster.testing import eventually

pytestmark = pytest.mark.simulated

OPERATOR_AGENT = "tfleet/operator"


@pytest.fixture(scope="module")
def lc() -> Iterator[RunningCluster]:
    with tempfile.TemporaryDirectory(prefix="localcluster-faults-") as tmp:
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


def _core(lc: RunningCluster, user_agent: str | None = None) -> client.CoreV1Api:
    api = config.new_client_from_config(config_file=str(lc.kubeconfig))
    if user_agent is not None:
        api.user_agent = user_agent
    return client.CoreV1Api(api)


@pytest.fixture
def operator_core(lc: RunningCluster) -> client.CoreV1Api:
    return _core(lc, OPERATOR_AGENT)


@pytest.fixture
def core(lc: RunningCluster) -> client.CoreV1Api:
    return _core(lc)


@pytest.fixture
def ns(core: client.CoreV1Api) -> str:
    name = f"faults-{time.monotonic_ns() % 10**9}"
    core.create_namespace({"metadata": {"name": name}})
    return name


def _cm(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"t": "1"}}, "data": {"k": "v"}}


# The test's own configmaps (a namespace also holds kube-root-ca.crt).
OURS = "labelSelector=t%3D1"


def _status(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


# --- raw HTTP -------------------------------------------------------------------------------


def _address(lc: RunningCluster) -> tuple[str, int]:
    url = urlparse(lc.url)
    return url.hostname or "127.0.0.1", url.port or 80


def _request_bytes(method: str, path: str, user_agent: str, body: bytes = b"") -> bytes:
    head = (f"{method} {path} HTTP/1.1\r\nHost: localcluster\r\nUser-Agent: {user_agent}\r\n"
            f"Accept: application/json\r\nConnection: close\r\n")
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def _read_to_eof(sock: socket.socket, deadline: float = 20) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(deadline)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _raw(lc: RunningCluster, method: str, path: str, user_agent: str = "raw-test",
         body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(_address(lc), timeout=20) as sock:
        sock.sendall(_request_bytes(method, path, user_agent, body))
        raw = _read_to_eof(sock)
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        payload, _complete = _dechunk(payload)
    return int(lines[0].split()[1]), headers, payload


def _dechunk(body: bytes) -> tuple[bytes, bool]:
    """The data of a chunked body and whether it ended with the final (empty) chunk."""
    out = b""
    while body:
        size_line, sep, rest = body.partition(b"\r\n")
        if not sep:
            return out, False
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out, True
        out += rest[:size]
        if len(rest) < size + 2:
            return out, False
        body = rest[size + 2:]
    return out, False


def _watch_stream(lc: RunningCluster, path: str, user_agent: str) -> tuple[int, bytes, bool]:
    """Open a watch, read until the server ends the connection: (status, data, clean end)."""
    with socket.create_connection(_address(lc), timeout=20) as sock:
        sock.sendall(_request_bytes("GET", path, user_agent))
        raw = _read_to_eof(sock)
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    data, complete = _dechunk(payload)
    return status, data, complete


# --- scoping --------------------------------------------------------------------------------


def test_fault_reaches_only_the_named_user_agent(
    lc: RunningCluster, ns: str, core: client.CoreV1Api, operator_core: client.CoreV1Api
) -> None:
    core.create_namespaced_config_map(ns, _cm("a"))
    core.create_namespaced_secret(ns, {"metadata": {"name": "s"}})
    rule = lc.faults.add("internal_error", user_agents=OPERATOR_AGENT, verbs=["get"],
                         resources=["configmaps"], message="etcdserver: request timed out")

    with pytest.raises(ApiException) as failed:
        operator_core.read_namespaced_config_map("a", ns)
    assert failed.value.status == 500
    assert _status(failed.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "Internal error occurred: etcdserver: request timed out",
        "reason": "InternalError", "code": 500,
        "details": {"causes": [{"message": "etcdserver: request timed out"}]},
    }
    # Another client, another resource, another verb: served normally.
    assert core.read_namespaced_config_map("a", ns).data == {"k": "v"}
    assert operator_core.read_namespaced_secret("s", ns).metadata.name == "s"
    assert "a" in [c.metadata.name for c in operator_core.list_namespaced_config_map(ns).items]

    assert lc.faults.injected() == {"internal_error": 1}
    (state,) = [r for r in lc.faults.rules() if r["id"] == rule]
    assert (state["matched"], state["injected"]) == (1, 1)
    logged = [e for e in lc.request_log if e.get("fault")]
    assert logged[-1]["code"] == 500 and logged[-1]["user_agent"] == OPERATOR_AGENT


def test_subresource_scope_is_rbac_like(lc: RunningCluster, ns: str, core: client.CoreV1Api,
                                        operator_core: client.CoreV1Api) -> None:
    core.create_namespaced_service(ns, {"metadata": {"name": "svc"},
                                        "spec": {"ports": [{"port": 80}]}})
    lc.faults.add("service_unavailable", user_agents=OPERATOR_AGENT, resources=["services/status"])
    assert operator_core.read_namespaced_service("svc", ns).metadata.name == "svc"
    status, headers, payload = _raw(lc, "GET", f"/api/v1/namespaces/{ns}/services/svc/status",
                                    OPERATOR_AGENT)
    assert (status, headers["retry-after"]) == (503, "1")
    assert json.loads(payload) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "apiserver is shutting down", "reason": "ServiceUnavailable", "code": 503}
    status, _, _ = _raw(lc, "GET", f"/api/v1/namespaces/{ns}/services/svc", OPERATOR_AGENT)
    assert status == 200


# --- error kinds ----------------------------------------------------------------------------


def test_lost_response_has_stored_the_write(
    lc: RunningCluster, ns: str, core: client.CoreV1Api, operator_core: client.CoreV1Api
) -> None:
    lc.faults.add("internal_error_after_apply", user_agents=OPERATOR_AGENT, verbs=["create"])
    before = int(core.list_namespaced_config_map(ns).metadata.resource_version)
    with pytest.raises(ApiException) as failed:
        operator_core.create_namespaced_config_map(ns, _cm("lost"))
    assert (failed.value.status, _status(failed.value)["reason"]) == (500, "InternalError")
    stored = core.read_namespaced_config_map("lost", ns)
    assert stored.data == {"k": "v"} and int(stored.metadata.resource_version) > before

    # The retry collides with its own write; a write that fails by itself loses nothing,
    # so the client sees the real AlreadyExists and no fault is counted.
    with pytest.raises(ApiException) as again:
        operator_core.create_namespaced_config_map(ns, _cm("lost"))
    assert (again.value.status, _status(again.value)["reason"]) == (409, "AlreadyExists")
    assert lc.faults.injected() == {"internal_error_after_apply": 1}


def test_too_many_requests_carries_retry_after(lc: RunningCluster, ns: str,
                                               operator_core: client.CoreV1Api) -> None:
    path = f"/api/v1/namespaces/{ns}/configmaps"
    lc.faults.add("too_many_requests", user_agents=OPERATOR_AGENT, verbs=["list"],
                  retry_after_seconds=3, count=1)
    lc.faults.add("too_many_requests", user_agents=OPERATOR_AGENT, verbs=["list"],
                  retry_after_seconds=2, source="watch_cache", count=1)

    status, headers, payload = _raw(lc, "GET", path, OPERATOR_AGENT)
    assert (status, headers["retry-after"], headers["content-type"]) == (
        429, "3", "text/plain; charset=utf-8")
    assert payload == b"Too many requests, please try again later.\n"

    status, headers, payload = _raw(lc, "GET", path, OPERATOR_AGENT)
    assert (status, headers["retry-after"]) == (429, "2")
    body = json.loads(payload)
    assert (body["code"], body["reason"], body["message"], body["details"]) == (
        429, "TooManyRequests", "storage is (re)initializing", {"retryAfterSeconds": 2})
    assert lc.faults.injected() == {"too_many_requests": 2}

    # The kubernetes client (urllib3's default Retry) retries a GET answered 429 with a
    # Retry-After after that many seconds, so the caller sees the second answer.
    lc.faults.add("too_many_requests", user_agents=OPERATOR_AGENT, verbs=["list"], count=1)
    start = len(lc.request_log)
    operator_core.list_namespaced_config_map(ns)
    codes = [e["code"] for e in lc.request_log[start:] if e["user_agent"] == OPERATOR_AGENT]
    assert codes == [429, 200]


def test_conflict_on_writes_only(lc: RunningCluster, ns: str, core: client.CoreV1Api,
                                 operator_core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map(ns, _cm("c"))
    lc.faults.add("conflict", user_agents=OPERATOR_AGENT)
    operator_core.read_namespaced_config_map("c", ns)  # reads never get a Conflict
    with pytest.raises(ApiException) as failed:
        operator_core.patch_namespaced_config_map("c", ns, {"data": {"k": "w"}})
    body = _status(failed.value)
    assert (body["code"], body["reason"]) == (409, "Conflict")
    assert body["message"] == ('Operation cannot be fulfilled on configmaps "c": the object has '
                               "been modified; please apply your changes to the latest version "
                               "and try again")
    assert body["details"] == {"name": "c", "kind": "configmaps"}
    assert core.read_namespaced_config_map("c", ns).data == {"k": "v"}  # not applied

    status, _, payload = _raw(lc, "POST", "/localcluster/faults",
                              body=json.dumps({"rules": [{"kind": "conflict", "verbs": ["get"]}]}).encode())
    assert status == 400 and b"cannot apply to verb(s) get" in payload


def test_latency_delays_matching_requests(lc: RunningCluster, ns: str,
                                          operator_core: client.CoreV1Api) -> None:
    lc.faults.add("latency", seconds=0.4, user_agents=OPERATOR_AGENT, verbs=["list"], count=1)
    operator_core.list_namespaced_config_map(ns)
    entry = next(e for e in reversed(lc.request_log) if e.get("fault") is None
                 and e["verb"] == "list" and e["user_agent"] == OPERATOR_AGENT)
    # The server's own clock: the sleep happens inside the request.
    assert entry["duration_ms"] >= 400
    assert lc.faults.injected() == {"latency": 1}


# --- watches --------------------------------------------------------------------------------


def test_watch_ends_cleanly_after_the_cut(lc: RunningCluster, ns: str, core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map(ns, _cm("w"))
    lc.faults.add("watch_cut", user_agents="kopf/", after_seconds=0.3)
    status, data, complete = _watch_stream(
        lc, f"/api/v1/namespaces/{ns}/configmaps?{OURS}&watch=true", "kopf/1.45.2")
    assert status == 200 and complete
    events = [json.loads(line) for line in data.splitlines()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "w")]

    # Not the operator's agent: the same watch runs until its own timeout, with its bookmark.
    status, data, complete = _watch_stream(
        lc, f"/api/v1/namespaces/{ns}/configmaps?{OURS}&watch=true&timeoutSeconds=1"
            "&allowWatchBookmarks=true", "kubectl/v1.35.0")
    assert complete and [json.loads(x)["type"] for x in data.splitlines()] == ["ADDED", "BOOKMARK"]
    assert lc.faults.injected() == {"watch_cut": 1}


async def _resume_through_cuts(lc: RunningCluster, ns: str, seconds: float) -> tuple[int, list[int]]:
    """A writer on the server's loop updates one ConfigMap without pause while a client
    watches it as kopf and client-go do, resuming every cut stream from the last
    resourceVersion it read (a bookmark's included): (cuts, versions written but never seen)."""
    import asyncio

    import aiohttp

    created = await lc.cluster.create("v1/configmaps", {"metadata": {"name": "busy", "namespace": ns,
                                                                     "labels": {"t": "1"}}})
    start = int(created["metadata"]["resourceVersion"])
    written: list[int] = []
    seen: set[int] = set()
    cuts = 0
    stop = asyncio.Event()

    async def write() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            obj = await lc.cluster.patch("v1/configmaps", ns, "busy", {"data": {"n": str(i)}})
            written.append(int(obj["metadata"]["resourceVersion"]))
            await asyncio.sleep(0.0005 * (i % 5))

    async def watch() -> None:
        nonlocal cuts
        rv = str(start)
        async with aiohttp.ClientSession(headers={"User-Agent": "kopf/1.45.2"}) as session:
            while True:
                url = f"{lc.url}/api/v1/namespaces/{ns}/configmaps?{OURS}&watch=true&allowWatchBookmarks=true" \
                      f"&resourceVersion={rv}"
                async with session.get(url) as response:
                    async for line in response.content:
                        event = json.loads(line)
                        rv = event["object"]["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            seen.add(int(rv))
                cuts += 1

    writer, watcher = asyncio.create_task(write()), asyncio.create_task(watch())
    await asyncio.sleep(seconds)
    stop.set()
    await writer
    await asyncio.sleep(0.5)  # the last events reach the watch
    watcher.cancel()
    last = max(seen, default=start)
    return cuts, [v for v in written if v <= last and v not in seen]


def test_a_watch_resumed_after_cuts_misses_no_event(lc: RunningCluster, ns: str) -> None:
    lc.faults.add("watch_cut", user_agents="kopf/", after_seconds=0.3)
    cuts, missing = lc.call(_resume_through_cuts(lc, ns, seconds=4), timeout=30)
    assert cuts >= 5
    assert missing == [], f"{len(missing)} events never reached the watch across {cuts} cuts: {missing[:10]}"


def test_watch_cut_mid_event(lc: RunningCluster, ns: str, core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map(ns, _cm("t"))
    lc.faults.add("watch_cut", user_agents=OPERATOR_AGENT, truncate=True)
    status, data, complete = _watch_stream(
        lc, f"/api/v1/namespaces/{ns}/configmaps?{OURS}&watch=true", OPERATOR_AGENT)
    assert status == 200 and not complete  # no final chunk: the connection was dropped
    assert data.startswith(b'{"type":"ADDED"') and not data.endswith(b"\n")
    with pytest.raises(json.JSONDecodeError):
        json.loads(data)


def test_watch_resume_is_told_its_version_is_too_old(
    lc: RunningCluster, ns: str, core: client.CoreV1Api
) -> None:
    rv = core.create_namespaced_config_map(ns, _cm("r")).metadata.resource_version
    lc.faults.add("watch_expired", user_agents=OPERATOR_AGENT, resources="configmaps")
    path = f"/api/v1/namespaces/{ns}/configmaps?{OURS}&watch=true&timeoutSeconds=1"

    # A fresh watch (no resourceVersion) is not a resume: served as usual.
    status, data, _ = _watch_stream(lc, path, OPERATOR_AGENT)
    assert [json.loads(x)["type"] for x in data.splitlines()] == ["ADDED"]

    status, data, complete = _watch_stream(lc, f"{path}&resourceVersion={rv}", OPERATOR_AGENT)
    current = core.list_namespaced_config_map(ns).metadata.resource_version
    assert status == 200 and complete
    (event,) = [json.loads(x) for x in data.splitlines()]
    assert event == {"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f"too old resource version: {rv} ({current})", "reason": "Expired",
        "code": 410}}
    assert lc.faults.injected() == {"watch_expired": 1}


# --- restart --------------------------------------------------------------------------------


def _refused(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_restart_keeps_the_store(lc: RunningCluster, ns: str, core: client.CoreV1Api) -> None:
    stored = core.create_namespaced_config_map(ns, _cm("kept"))
    rv = stored.metadata.resource_version
    address = _address(lc)

    watch = socket.create_connection(address, timeout=20)
    try:
        watch.sendall(_request_bytes(
            "GET", f"/api/v1/namespaces/{ns}/configmaps?{OURS}&watch=true&resourceVersion={rv}", "w"))
        status, _, payload = _raw(lc, "POST", "/localcluster/restart",
                                  body=b'{"downSeconds": 1.5}')
        assert (status, json.loads(payload)) == (202, {"downSeconds": 1.5})
        eventually(lambda: _refused(address), timeout=10, interval=0.01)
        _, _, body = _read_to_eof(watch).partition(b"\r\n\r\n")
        assert not _dechunk(body)[1]  # dropped, no final chunk
    finally:
        watch.close()

    kept = eventually(lambda: _try_read(core, "kept", ns), timeout=20)
    assert kept.metadata.resource_version == rv and kept.metadata.uid == stored.metadata.uid
    # A watch resuming from the old version goes on and sees the next change.
    core.patch_namespaced_config_map("kept", ns, {"data": {"k": "after"}})
    status, data, _ = _watch_stream(
        lc, f"/api/v1/namespaces/{ns}/configmaps?{OURS}&watch=true&resourceVersion={rv}&timeoutSeconds=1", "w")
    assert [(e["type"], e["object"]["data"]) for e in map(json.loads, data.splitlines())] == [
        ("MODIFIED", {"k": "after"})]
    assert lc.faults.injected() == {"restart": 1}


def _try_read(core: client.CoreV1Api, name: str, ns: str) -> Any:
    try:
        return core.read_namespaced_config_map(name, ns)
    except Exception:  # connection refused while the port is closed
        return None


# --- reproducibility, counts, the admin endpoint -------------------------------------------


def _outcomes(lc: RunningCluster, api: client.CoreV1Api, ns: str, seed: int) -> list[bool]:
    lc.faults.clear()
    lc.faults.set_seed(seed)
    lc.faults.add("internal_error", verbs=["list"], probability=0.5)
    outcomes = []
    for _ in range(24):
        try:
            api.list_namespaced_config_map(ns)
            outcomes.append(True)
        except ApiException as exc:
            assert exc.status == 500
            outcomes.append(False)
    return outcomes


def test_seed_makes_the_sequence_reproducible(lc: RunningCluster, ns: str,
                                              core: client.CoreV1Api) -> None:
    first = _outcomes(lc, core, ns, seed=7)
    assert 0 < first.count(False) < len(first)
    assert _outcomes(lc, core, ns, seed=7) == first
    assert _outcomes(lc, core, ns, seed=8) != first
    assert lc.faults.injected()["internal_error"] == _outcomes(lc, core, ns, 8).count(False)


def test_count_and_skip(lc: RunningCluster, ns: str, operator_core: client.CoreV1Api) -> None:
    lc.faults.add("internal_error", verbs=["list"], skip=1, count=2)
    codes = []
    for _ in range(5):
        try:
            operator_core.list_namespaced_config_map(ns)
            codes.append(200)
        except ApiException as exc:
            codes.append(exc.status)
    assert codes == [200, 500, 500, 200, 200]


def test_admin_endpoint_through_kubectl(lc: RunningCluster, ns: str, tmp_path: Path) -> None:
    binary = str(KUBECTL) if KUBECTL.exists() else shutil.which("kubectl")
    if binary is None:
        pytest.fail(f"kubectl is neither at {KUBECTL} nor on PATH (run `make tools`)")

    def kubectl(*args: str) -> str:
        return subprocess.run([binary, "--kubeconfig", str(lc.kubeconfig), *args],
                              capture_output=True, text=True, check=True, timeout=60).stdout

    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"seed": 3, "rules": [
        {"kind": "service_unavailable", "userAgents": [OPERATOR_AGENT], "verbs": ["get", "list"],
         "resources": ["configmaps"], "namespaces": [ns]}]}))
    added = json.loads(kubectl("create", "--raw", "/localcluster/faults", "-f", str(rules)))
    assert added["added"] == [1] and added["seed"] == 3
    # kubectl is not the operator: it lists the configmaps of the namespace unharmed.
    assert "configmap/kube-root-ca.crt" in kubectl("get", "configmaps", "-n", ns, "-o", "name")
    status, headers, payload = _raw(lc, "GET", f"/api/v1/namespaces/{ns}/configmaps",
                                    user_agent=OPERATOR_AGENT)
    assert (status, headers["retry-after"], json.loads(payload)["reason"]) == (
        503, "1", "ServiceUnavailable")

    state = json.loads(kubectl("get", "--raw", "/localcluster/faults"))
    assert state["injected"] == {"service_unavailable": 1}
    assert state["rules"][0]["matched"] == 1 and state["rules"][0]["userAgents"] == [OPERATOR_AGENT]
    final = json.loads(kubectl("delete", "--raw", "/localcluster/faults"))
    assert final["injected"] == {"service_unavailable": 1}
    assert json.loads(kubectl("get", "--raw", "/localcluster/faults")) == {
        "seed": 3, "rules": [], "injected": {}}
