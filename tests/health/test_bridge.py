"""The health bridge against the fake TF Serving, over real gRPC and HTTP."""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from tests.fakes.tfserving import FakeTFServing
from tfleet.health.bridge import HealthBridge
from tfleet.health.podspec import DRAIN_TOKEN_HEADER
from tfleet.health.verdicts import parse_bridge_status, parse_status_json

from .conftest import MODEL, BridgeFactory, HealthClient, eventually

ALL = ("", "readiness", "liveness", "startup")
S, N = "SERVING", "NOT_SERVING"


def services(ready: str, live: str, started: str) -> dict[str, str]:
    return {"": ready, "readiness": ready, "liveness": live, "startup": started}


async def http_get(
    bridge: HealthBridge, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, str]:
    code, body, _ = await http_call(bridge, path, method, headers)
    return code, body


async def http_call(
    bridge: HealthBridge, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, str, dict[str, str]]:
    """Status, body and headers of one request."""

    def call() -> tuple[int, str, dict[str, str]]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{bridge.http_port}{path}", method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), dict(exc.headers)

    return await asyncio.to_thread(call)


# Each step: what TF Serving does, then what every service must answer.
LOAD_STORY: list[tuple[str, dict[str, Any], dict[str, str]]] = [
    ("TF Serving knows no version yet", {"reset": True}, services(N, S, N)),
    ("version 1 is in START", {"version": 1, "state": "START"}, services(N, S, N)),
    ("version 1 is LOADING", {"version": 1, "state": "LOADING"}, services(N, S, N)),
    ("version 1 is AVAILABLE", {"version": 1, "state": "AVAILABLE"}, services(S, S, S)),
    ("version 1 is UNLOADING", {"version": 1, "state": "UNLOADING"}, services(N, S, S)),
    ("version 1 ended with an error", {"version": 1, "state": "END", "error": "Failed: x"},
     services(N, S, S)),
    ("version 1 is reloaded", {"version": 1, "state": "AVAILABLE"}, services(S, S, S)),
]  # fmt: skip


async def test_every_service_follows_a_version_through_its_states(
    fake: FakeTFServing, make_bridge: BridgeFactory, client_for: Any
) -> None:
    bridge = await make_bridge(version=1)
    client: HealthClient = client_for(bridge)
    for story, event, expected in LOAD_STORY:
        fake.apply(event)
        await eventually(lambda: client.checks(*ALL), expected), story


async def test_a_pinned_version_is_ready_only_when_that_version_is_available(
    fake: FakeTFServing, make_bridge: BridgeFactory, client_for: Any
) -> None:
    fake.set_version(1, "AVAILABLE")
    fake.set_version(2, "LOADING")
    canary = client_for(await make_bridge(version=2))
    stable = client_for(await make_bridge(version=1))
    unpinned = client_for(await make_bridge())

    await eventually(lambda: stable.check("readiness"), S)
    await eventually(lambda: unpinned.check("readiness"), S)
    assert await canary.check("readiness") == N

    fake.set_version(2, "AVAILABLE")
    await eventually(lambda: canary.check("readiness"), S)


async def test_an_unpinned_model_is_ready_with_any_available_version(
    fake: FakeTFServing, make_bridge: BridgeFactory, client_for: Any
) -> None:
    fake.set_version(2, "END", error="Could not load version 2")
    fake.set_version(1, "AVAILABLE")
    client = client_for(await make_bridge())
    await eventually(lambda: client.check(""), S)
    fake.remove_version(1)
    await eventually(lambda: client.check(""), N)


async def test_watch_streams_report_each_change(
    fake: FakeTFServing, make_bridge: BridgeFactory, client_for: Any
) -> None:
    fake.set_version(1, "LOADING")
    bridge = await make_bridge(version=1)
    client = client_for(bridge)
    await eventually(lambda: client.check("liveness"), S)
    streams = {name: client.watch(name) for name in ("readiness", "liveness", "startup")}

    async def next_status(name: str) -> str:
        response = await asyncio.wait_for(streams[name].read(), 5)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    for name, first in (("readiness", N), ("liveness", S), ("startup", N)):
        assert await next_status(name) == first

    fake.set_version(1, "AVAILABLE")
    assert await next_status("readiness") == S
    assert await next_status("startup") == S

    fake.set_version(1, "END", error="Out of memory")
    assert await next_status("readiness") == N

    fake.down()
    assert await next_status("liveness") == N
    assert await next_status("startup") == N
    for stream in streams.values():
        stream.cancel()


async def test_unknown_service_names_are_not_found(
    fake: FakeTFServing, make_bridge: BridgeFactory, client_for: Any
) -> None:
    client = client_for(await make_bridge())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.check("resnet")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_hung_tf_serving_fails_liveness_while_checks_still_answer(
    fake: FakeTFServing, make_bridge: BridgeFactory, client_for: Any
) -> None:
    fake.set_version(1, "AVAILABLE")
    bridge = await make_bridge(timeout=0.2)
    client = client_for(bridge)
    await eventually(lambda: client.checks(*ALL), services(S, S, S))

    fake.hang()
    # Checks are served from the cache, so they answer while TF Serving does not.
    await eventually(lambda: client.checks(*ALL), services(N, N, N))
    status = parse_status_json((await http_get(bridge, "/status"))[1])
    assert status.error == f"TF Serving at {fake.target} did not answer within 0.2s"
    assert not status.reachable

    fake.hang(False)
    await eventually(lambda: client.checks(*ALL), services(S, S, S))


async def test_a_restarted_tf_serving_must_pass_startup_again(
    fake: FakeTFServing, make_bridge: BridgeFactory, client_for: Any
) -> None:
    fake.set_version(1, "AVAILABLE")
    bridge = await make_bridge(version=1)
    client = client_for(bridge)
    await eventually(lambda: client.checks(*ALL), services(S, S, S))

    fake.down()
    await eventually(lambda: client.checks(*ALL), services(N, N, N))
    assert "is unreachable" in bridge.health.error

    # It comes back on the same port and loads the model again.
    fake.set_version(1, "LOADING")
    fake.up()
    await eventually(lambda: client.checks(*ALL), services(N, S, N))
    fake.set_version(1, "AVAILABLE")
    await eventually(lambda: client.checks(*ALL), services(S, S, S))


async def test_malformed_answers_fail_readiness_not_liveness(
    fake: FakeTFServing, make_bridge: BridgeFactory, client_for: Any
) -> None:
    fake.set_version(1, "AVAILABLE")
    bridge = await make_bridge()
    client = client_for(bridge)
    await eventually(lambda: client.check("readiness"), S)
    fake.malformed()
    await eventually(lambda: client.checks(*ALL), services(N, S, S))
    assert "malformed" in bridge.health.error


async def test_a_model_tf_serving_does_not_know_is_not_ready(
    fake: FakeTFServing, make_bridge: BridgeFactory, client_for: Any
) -> None:
    fake.set_version(1, "AVAILABLE")
    bridge = await make_bridge(model="resnet")
    client = client_for(bridge)
    await eventually(lambda: client.checks(*ALL), services(N, S, N))
    assert bridge.health.error == (
        "TF Serving does not know model resnet: Could not find any versions of model resnet"
    )


async def test_status_endpoint_carries_tf_servings_error(
    fake: FakeTFServing, make_bridge: BridgeFactory
) -> None:
    fake.set_version(1, "AVAILABLE")
    fake.set_version(2, "END", error="Not found: /models/half_plus_two/2", error_code="NOT_FOUND")
    bridge = await make_bridge(version=2)
    await eventually(lambda: asyncio.sleep(0, bridge.health.reachable), True)

    code, body = await http_get(bridge, "/status")

    assert code == 200
    status = parse_bridge_status(body)
    assert status.health.model == MODEL
    assert status.health.expected_version == 2
    assert not status.health.available
    assert status.health.load_error == "Not found: /models/half_plus_two/2"
    assert [(v.version, v.state, v.error_code) for v in status.health.versions] == [
        (2, "END", "NOT_FOUND"),
        (1, "AVAILABLE", "OK"),
    ]
    assert status.services == {"": False, "readiness": False, "liveness": True, "startup": False}


async def test_tf_serving_errors_are_logged_once_per_change(
    fake: FakeTFServing, make_bridge: BridgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tfleet.health")
    fake.set_version(1, "END", error="Out of memory loading /models/m/1")
    bridge = await make_bridge(version=1)
    client = HealthClient(bridge.port)
    try:
        await eventually(lambda: client.check("liveness"), S)
        polls = fake.status_calls
        await eventually(lambda: asyncio.sleep(0, fake.status_calls >= polls + 5), True)
    finally:
        await client.close()
    messages = [r.getMessage() for r in caplog.records]
    failures = [m for m in messages if "failed to load" in m]
    assert failures == [
        f"Model {MODEL} version 1 failed to load: UNKNOWN: Out of memory loading /models/m/1"
    ]
    changes = [m for m in messages if "status changed" in m]
    assert changes == [
        f"Model {MODEL} status changed: Version 1 of model {MODEL} failed: "
        "Out of memory loading /models/m/1"
    ]


async def test_drain_turns_readiness_off_at_once_and_answers_after_the_period(
    fake: FakeTFServing, make_bridge: BridgeFactory, client_for: Any
) -> None:
    fake.set_version(1, "AVAILABLE")
    bridge = await make_bridge(drain_seconds=30)
    client = client_for(bridge)
    await eventually(lambda: client.checks(*ALL), services(S, S, S))

    drain = asyncio.ensure_future(http_get(bridge, "/drain?seconds=1.5"))
    await eventually(lambda: client.checks(*ALL), services(N, S, S))
    assert not drain.done(), "the preStop hook must be held for the drain period"
    assert await asyncio.wait_for(drain, 5) == (200, "Drained\n")
    # A second hook call (kubelet may repeat one) finds the drain over and returns at once.
    assert await asyncio.wait_for(http_get(bridge, "/drain"), 5) == (200, "Drained\n")
    # The model is still AVAILABLE, but a drained pod stays out of its Services.
    assert await client.checks(*ALL) == services(N, S, S)
    assert parse_bridge_status((await http_get(bridge, "/status"))[1]).draining


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("GET", "/nope", 404),
        ("POST", "/nope", 404),
        ("PUT", "/drain", 405),
        ("GET", "/drain?seconds=soon", 400),
        ("GET", "/drain?seconds=-1", 400),
        ("GET", "/healthz", 200),
    ],
)
async def test_http_endpoint_answers(
    make_bridge: BridgeFactory, method: str, path: str, code: int
) -> None:
    bridge = await make_bridge()
    assert (await http_get(bridge, path, method))[0] == code
    assert not bridge.draining


async def test_healthz_fails_when_the_poll_loop_stops(
    fake: FakeTFServing, make_bridge: BridgeFactory
) -> None:
    bridge = await make_bridge(interval=0.05, timeout=0.05)
    assert (await http_get(bridge, "/healthz"))[0] == 200
    assert bridge._poller is not None
    bridge._poller.cancel()
    # stale_after is 3 intervals + 2 timeouts + 1 s for these settings.
    await eventually(lambda: http_get(bridge, "/healthz"), (503, "The poll loop has stalled\n"))


async def test_a_drain_token_keeps_others_from_draining_the_pod(
    fake: FakeTFServing, make_bridge: BridgeFactory, client_for: Any
) -> None:
    fake.set_version(1, "AVAILABLE")
    bridge = await make_bridge(drain_token="s3cret")
    client = client_for(bridge)
    await eventually(lambda: client.check("readiness"), S)

    assert (await http_get(bridge, "/drain?seconds=0"))[0] == 403
    wrong = {DRAIN_TOKEN_HEADER: "guess"}
    assert (await http_get(bridge, "/drain?seconds=0", headers=wrong))[0] == 403
    assert not bridge.draining
    assert await client.check("readiness") == S

    right = {DRAIN_TOKEN_HEADER: "s3cret"}
    assert await http_get(bridge, "/drain?seconds=0", headers=right) == (200, "Drained\n")
    assert await client.check("readiness") == N


WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@pytest.mark.parametrize("path", ["/status", "/healthz"])
async def test_the_read_only_endpoints_answer_only_get_and_head(
    fake: FakeTFServing, make_bridge: BridgeFactory, path: str
) -> None:
    fake.set_version(1, "AVAILABLE")
    bridge = await make_bridge()
    await eventually(lambda: http_get(bridge, "/healthz"), (200, "ok\n"))

    code, body, headers = await http_call(bridge, path, "GET")
    assert code == 200 and body
    code, body, headers = await http_call(bridge, path, "HEAD")
    assert (code, body) == (200, "")
    assert int(headers["Content-Length"]) > 0  # what GET would send
    for method in WRITE_METHODS:
        code, _, headers = await http_call(bridge, path, method)
        assert (code, headers.get("Allow")) == (405, "GET, HEAD"), method


async def test_drain_answers_get_and_post_and_refuses_head_and_the_rest(
    fake: FakeTFServing, make_bridge: BridgeFactory
) -> None:
    bridge = await make_bridge()
    # HEAD is for safe requests: it must not drain the pod.
    for method in ("HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"):
        code, _, headers = await http_call(bridge, "/drain?seconds=0", method)
        assert (code, headers.get("Allow")) == (405, "GET, POST"), method
    assert not bridge.draining
    assert await http_get(bridge, "/drain?seconds=0", "POST") == (200, "Drained\n")
    assert bridge.draining


async def test_no_request_but_a_drain_changes_what_the_bridge_reports(
    fake: FakeTFServing, make_bridge: BridgeFactory, client_for: Any
) -> None:
    fake.set_version(1, "AVAILABLE")
    bridge = await make_bridge(version=1, drain_token="s3cret")
    client = client_for(bridge)
    await eventually(lambda: client.checks(*ALL), services(S, S, S))
    before = parse_bridge_status((await http_get(bridge, "/status"))[1])

    for path in ("/status", "/healthz", "/drain", "/drain?seconds=0", "/", "/nope"):
        for method in ("GET", "HEAD", *WRITE_METHODS):
            await http_call(bridge, path, method)
    # Every method on every path, /drain without the token included: nothing moved.
    assert not bridge.draining
    assert await client.checks(*ALL) == services(S, S, S)
    assert parse_bridge_status((await http_get(bridge, "/status"))[1]) == before


async def test_the_operator_reads_the_version_an_unpinned_bridge_serves(
    fake: FakeTFServing, make_bridge: BridgeFactory
) -> None:
    from tfleet.runtime import bridge_client

    fake.set_version(4, "AVAILABLE")
    bridge = await make_bridge(version=None)
    await eventually(lambda: asyncio.sleep(0, bridge.health.available), True)
    fetch = lambda: bridge_client.fetch_served_version("127.0.0.1", port=bridge.http_port)  # noqa: E731
    assert await asyncio.to_thread(fetch) == 4
    fake.set_version(5, "AVAILABLE")  # TF Serving picked a newer version up in place
    await eventually(lambda: asyncio.sleep(0, bridge.health.expected() and bridge.health.expected().version), 5)
    assert await asyncio.to_thread(fetch) == 5
    assert await asyncio.to_thread(bridge_client.fetch_served_version, "127.0.0.1", 1, 0.2) is None  # no bridge
