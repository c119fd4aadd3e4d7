"""Fixtures for the health tests: a fake TF Serving, bridges against it, health clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.fakes.tfserving import FakeTFServing
from tfleet.health.bridge import BridgeConfig, HealthBridge

MODEL = "half_plus_two"


@pytest.fixture
def fake() -> Iterator[FakeTFServing]:
    with FakeTFServing(MODEL) as server:
        yield server


BridgeFactory = Callable[..., Awaitable[HealthBridge]]


@pytest.fixture
async def make_bridge(fake: FakeTFServing) -> AsyncIterator[BridgeFactory]:
    """Starts bridges against the fake with short intervals; stops them at the end."""
    bridges: list[HealthBridge] = []

    async def make(**overrides: Any) -> HealthBridge:
        settings: dict[str, Any] = {
            "target": fake.target,
            "model": MODEL,
            "port": 0,
            "http_port": 0,
            "listen": "127.0.0.1",
            "interval": 0.05,
            "timeout": 0.3,
            "drain_seconds": 0.3,
        }
        settings.update(overrides)
        bridge = HealthBridge(BridgeConfig(**settings))
        await bridge.start()
        bridges.append(bridge)
        return bridge

    yield make
    for bridge in bridges:
        await bridge.stop()


class HealthClient:
    """grpc.health.v1 over a real channel, as kubelet's grpc probe asks it."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.stub = health_pb2_grpc.HealthStub(self.channel)

    async def check(self, service: str) -> str:
        response = await self.stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    async def checks(self, *services: str) -> dict[str, str]:
        return {s: await self.check(s) for s in services}

    def watch(self, service: str) -> Any:
        return self.stub.Watch(health_pb2.HealthCheckRequest(service=service))

    async def close(self) -> None:
        await self.channel.close()


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[HealthBridge], HealthClient]]:
    clients: list[HealthClient] = []

    def make(bridge: HealthBridge) -> HealthClient:
        client = HealthClient(bridge.port)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def eventually(
    probe: Callable[[], Awaitable[Any]], expected: Any, *, within: float = 5.0
) -> Any:
    """Polls `probe` until it returns `expected`; fails with the last value after `within`.

    This bounds a wait for a state change, it does not measure how fast it happens.
    """
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last == expected:
            return last
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {expected!r}, last saw {last!r}")
