"""Helpers for the data-plane tests: TCP backends on loopback IPs, hand-made EndpointSlices,
bounded waits.

Backends bind addresses of 127.20.0.0/16 (any IP of 127/8 is local on Linux), so a test
can give each endpoint an IP of its own without network namespaces. Ports are picked free
at bind time, so two runs on one machine do not collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from e2e.localcluster import LocalCluster

SLICES = "discovery.k8s.io/v1/endpointslices"


def data_plane_cluster(**options: Any) -> LocalCluster:
    """A control plane with kube-proxy and the cluster DNS on a free port, and only the
    controllers named in ``options["controllers"]`` (none by default)."""
    opts: dict[str, Any] = {"data_plane": True, "controllers": [], "dns_address": "127.0.0.10:0"}
    opts.update(options)
    return LocalCluster(controller_options=opts)


class Backend:
    """A TCP server on ``ip:port`` that answers each connection with ``<ip>\\n`` and then
    echoes what it reads, until the client half-closes; then it closes too."""

    def __init__(self, ip: str, port: int = 0):
        self.ip = ip
        self.port = port
        self.accepted = 0
        self.server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self._handle, self.ip, self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            writer.write(self.ip.encode() + b"\n")
            await writer.drain()
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()


async def start_backends(ips: list[str], same_port: bool = False) -> list[Backend]:
    """Backends on ``ips``; with ``same_port``, all on one free port (as a headless Service
    needs: DNS gives addresses, the client brings the port)."""
    for _attempt in range(20):
        port = _free_port(ips[0]) if same_port else 0
        started: list[Backend] = []
        try:
            for ip in ips:
                started.append(await Backend(ip, port).start())
            return started
        except OSError as exc:
            for b in started:
                b.stop()
            if not same_port or exc.errno != errno.EADDRINUSE:
                raise
    raise RuntimeError(f"found no port free on all of {ips}")


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def endpoint_slice(service: str, namespace: str, name: str, port: int, endpoints: list[dict[str, Any]],
                   port_name: str = "") -> dict[str, Any]:
    """An EndpointSlice as the EndpointSlice controller writes it, for a Service without a
    selector (whose slices someone else manages)."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"kubernetes.io/service-name": service,
                                "endpointslice.kubernetes.io/managed-by": "e2e-tests"}},
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }


def endpoint(ip: str, ready: bool = True, serving: bool | None = None, terminating: bool = False,
             hostname: str | None = None) -> dict[str, Any]:
    e: dict[str, Any] = {"addresses": [ip], "conditions": {
        "ready": ready, "serving": ready if serving is None else serving, "terminating": terminating}}
    if hostname:
        e["hostname"] = hostname
    return e


async def eventually(predicate: Callable[[], bool | Awaitable[bool]], what: str,
                     timeout: float = 10.0) -> None:
    """Poll until ``predicate`` holds; fail naming ``what`` after a generous ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)


async def connect_and_greet(ip: str, port: int) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect and read the backend's greeting: which endpoint took the connection."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), 5)
    greeting = await asyncio.wait_for(reader.readline(), 5)
    if not greeting:
        writer.close()
        raise ConnectionResetError("closed before the backend greeted")
    return greeting.decode().strip(), reader, writer


async def greet_many(ip: str, port: int, count: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(count):
        who, _reader, writer = await connect_and_greet(ip, port)
        seen[who] += 1
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return seen


def random_loopback(prefix: str = "127.53") -> str:
    """A random address of a /16 of loopback, for servers that need a fixed port (53)."""
    return f"{prefix}.{random.randrange(1, 255)}.{random.randrange(1, 255)}"
