"""Benchmark of the local data plane: connections and bytes through kube-proxy, DNS queries.

    .venv/bin/python -m e2e.bench.services [--connections 2000] [--megabytes 256] [--queries 5000]

It runs ``python -m e2e.localcluster --data-plane`` as its own process, creates a Service
without selector with one EndpointSlice of three endpoints (TCP servers on 127.20.9.1..3,
in this process, on a thread), and measures from this process with blocking sockets:

- new connections, one after another: connect, read the endpoint's first byte, close,
  through the cluster IP and straight to an endpoint, for comparison;
- bulk bytes over one connection (client to endpoint), through the proxy and straight;
- DNS A queries over UDP, one after another, to the cluster DNS.

Client, endpoints and control plane share the machine's cores, so the figures are lower
bounds. Every loop is bounded. It prints a table; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from e2e import processes
from e2e.localcluster.controllers import dnswire

ENDPOINT_IPS = ["127.20.9.1", "127.20.9.2", "127.20.9.3"]
NS = "default"


class Endpoints:
    """Three TCP servers on a thread: each sends one byte on accept, then reads to EOF and
    answers with the number of bytes it read."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Endpoints:
        self._thread.start()
        self._ready.wait(10)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.servers = self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> list[asyncio.Server]:
        first = await asyncio.start_server(self._handle, ENDPOINT_IPS[0], 0)
        self.port = first.sockets[0].getsockname()[1]
        rest = [await asyncio.start_server(self._handle, ip, self.port) for ip in ENDPOINT_IPS[1:]]
        return [first, *rest]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"!")
            await writer.drain()
            total = 0
            while data := await reader.read(256 * 1024):
                total += len(data)
            writer.write(f"{total}\n".encode())
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def stop(self) -> None:
        def close() -> None:
            for s in self.servers:
                s.close()
            self.loop.stop()
        self.loop.call_soon_threadsafe(close)
        self._thread.join(5)


def api(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return dict(json.load(resp))


def connect_rate(ip: str, port: int, count: int) -> tuple[float, list[float]]:
    latencies = []
    started = time.perf_counter()
    for _ in range(count):
        t0 = time.perf_counter()
        with socket.create_connection((ip, port), timeout=5) as s:
            if s.recv(1) != b"!":
                raise RuntimeError("endpoint did not greet")
            latencies.append(time.perf_counter() - t0)
            s.shutdown(socket.SHUT_WR)
            s.recv(64)
    return count / (time.perf_counter() - started), latencies


def bulk_rate(ip: str, port: int, megabytes: int) -> float:
    chunk = b"\0" * (1024 * 1024)
    with socket.create_connection((ip, port), timeout=30) as s:
        s.recv(1)
        t0 = time.perf_counter()
        for _ in range(megabytes):
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while not reply.endswith(b"\n"):
            data = s.recv(64)
            if not data:
                break
            reply += data
        elapsed = time.perf_counter() - t0
    if int(reply or b"0") != megabytes * len(chunk):
        raise RuntimeError(f"endpoint read {reply!r} bytes")
    return megabytes / elapsed


def dns_rate(server: tuple[str, int], name: str, count: int) -> tuple[float, list[float]]:
    latencies = []
    started = time.perf_counter()
    for _ in range(count):
        t0 = time.perf_counter()
        reply = dnswire.query(server, name)
        latencies.append(time.perf_counter() - t0)
        if not reply.answers:
            raise RuntimeError(f"no answer for {name}: rcode {reply.rcode}")
    return count / (time.perf_counter() - started), latencies


def ms(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.bench.services", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--queries", type=int, default=5000)
    args = parser.parse_args(argv)

    dns_host = "127.53.9.9"
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        proc = subprocess.Popen([sys.executable, "-m", "e2e.localcluster", "--kubeconfig", str(kubeconfig),
                                 "--no-controllers", "--data-plane",
                                 "--dns-address", f"{dns_host}:53"],
                                stdout=subprocess.PIPE, text=True)
        endpoints = Endpoints().start()
        try:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("the local cluster did not start")
            base = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
            svc = api(base, f"/api/v1/namespaces/{NS}/services", {
                "metadata": {"name": "bench"}, "spec": {"ports": [{"port": 80}]}})
            api(base, f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices", {
                "metadata": {"name": "bench-0", "labels": {"kubernetes.io/service-name": "bench"}},
                "addressType": "IPv4", "ports": [{"name": "", "port": endpoints.port, "protocol": "TCP"}],
                "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ENDPOINT_IPS]})
            cluster_ip = svc["spec"]["clusterIP"]
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection((cluster_ip, 80), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            rows = []
            for label, ip, port in (("through kube-proxy", cluster_ip, 80),
                                    ("straight to an endpoint", ENDPOINT_IPS[0], endpoints.port)):
                rate, lat = connect_rate(ip, port, args.connections)
                rows.append((f"new connections/s, {label}", f"{rate:,.0f}"))
                rows.append((f"connect + first byte p50 / p99 ms, {label}",
                             f"{ms(lat, 50):.2f} / {ms(lat, 99):.2f}"))
            for label, ip, port in (("through kube-proxy", cluster_ip, 80),
                                    ("straight to an endpoint", ENDPOINT_IPS[0], endpoints.port)):
                rows.append((f"bulk MB/s over one connection, {label}",
                             f"{bulk_rate(ip, port, args.megabytes):,.0f}"))
            rate, lat = dns_rate((dns_host, 53), f"bench.{NS}.svc.cluster.local", args.queries)
            rows.append(("DNS A queries/s over UDP, one client", f"{rate:,.0f}"))
            rows.append(("DNS query p50 / p99 ms", f"{ms(lat, 50):.2f} / {ms(lat, 99):.2f}"))
        finally:
            endpoints.stop()
            processes.stop(proc)
    width = max(len(r[0]) for r in rows)
    print(f"| {'measure'.ljust(width)} | value |")
    print(f"| {'-' * width} | --- |")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
