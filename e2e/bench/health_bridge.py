"""Benchmark of the health bridge: Check latency, throughput, memory and CPU.

    .venv/bin/python -m e2e.bench.health_bridge [--seconds 3] [--checks 3000]

It starts the fake TF Serving (in this process) with one AVAILABLE version, runs
`tfleet health-bridge` as a separate process with its default poll interval, and asks it
grpc.health.v1 Check over loopback:

- latency with 1 caller and with 10 concurrent callers on one channel;
- latency with a new connection per Check, which is what kubelet's grpc prober does;
- the most Checks per second with 10 callers for a fixed time;
- latency with 1 caller while TF Serving hangs (Checks are served from the cache);
- the bridge process's RSS (now and peak) and CPU time per 1,000 Checks, read from /proc.

The client runs in Python on the same 2 cores, so throughput figures are a lower bound for
the bridge. Every loop is bounded in count and in time. It prints a table; it asserts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests.fakes.tfserving import FakeTFServing

MODEL = "half_plus_two"
TARGETS = {"p99_1_caller_ms": 2.0, "checks_per_second": 2000.0, "rss_mb": 60.0}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Row:
    name: str
    checks: int
    p50_ms: float
    p99_ms: float
    per_second: float


REQUEST = health_pb2.HealthCheckRequest(service="readiness")


async def run_callers(
    address: str,
    callers: int,
    *,
    checks: int,
    seconds: float,
    new_connection: bool = False,
    expect_serving: bool = True,
) -> Row:
    """`callers` tasks each Check in a loop until `checks` in all or `seconds` have passed."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    shared = grpc.aio.insecure_channel(address)
    stub = health_pb2_grpc.HealthStub(shared)
    await stub.Check(REQUEST, timeout=5)  # connect before timing

    async def caller() -> None:
        while len(latencies) < checks and time.perf_counter() < deadline:
            start = time.perf_counter()
            if new_connection:
                async with grpc.aio.insecure_channel(address) as channel:
                    response = await health_pb2_grpc.HealthStub(channel).Check(REQUEST, timeout=5)
            else:
                response = await stub.Check(REQUEST, timeout=5)
            latencies.append(time.perf_counter() - start)
            if expect_serving and response.status != health_pb2.HealthCheckResponse.SERVING:
                raise RuntimeError("the bridge is not SERVING readiness")

    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    elapsed = time.perf_counter() - began
    await shared.close()
    label = f"{callers} caller{'s' if callers > 1 else ''}"
    if new_connection:
        label += ", new connection per Check"
    return Row(
        label,
        len(latencies),
        statistics.median(latencies) * 1000,
        percentile(latencies, 0.99) * 1000,
        len(latencies) / elapsed,
    )


def wait_serving(address: str, within: float = 20) -> None:
    deadline = time.monotonic() + within
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                if stub.Check(REQUEST, timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the bridge never turned SERVING")
            time.sleep(0.05)


async def measure(address: str, pid: int, fake: FakeTFServing, checks: int, seconds: float) -> None:
    await run_callers(address, 1, checks=500, seconds=seconds)  # warm both sides up
    rows = [
        await run_callers(address, 1, checks=checks, seconds=seconds),
        await run_callers(address, 10, checks=checks, seconds=seconds),
        await run_callers(
            address, 1, checks=min(checks, 500), seconds=seconds, new_connection=True
        ),
    ]
    cpu_before = cpu_seconds(pid)
    throughput = await run_callers(address, 10, checks=10**9, seconds=seconds)
    cpu_after = cpu_seconds(pid)
    throughput.name = "10 callers, as fast as possible"
    rows.append(throughput)
    # Checks come from the cache, so a TF Serving that never answers must not slow them.
    fake.hang()
    await asyncio.sleep(2.5)  # let a few polls time out
    hung = await run_callers(address, 1, checks=checks, seconds=seconds, expect_serving=False)
    fake.hang(False)
    hung.name = "1 caller, TF Serving hung"
    rows.append(hung)
    rss, peak = rss_mb(pid)
    cpu_per_1000 = (cpu_after - cpu_before) / throughput.checks * 1000

    print(
        f"{'Check (service readiness)':<40} {'checks':>8} {'p50 ms':>8} {'p99 ms':>8} {'Checks/s':>10}"
    )
    for r in rows:
        print(f"{r.name:<40} {r.checks:>8} {r.p50_ms:>8.3f} {r.p99_ms:>8.3f} {r.per_second:>10.0f}")
    print()
    p99_1 = rows[0].p99_ms
    best = max(r.per_second for r in rows)
    print(f"{'figure':<40} {'value':>10} {'target':>10} {'met':>5}")
    for name, value, target, met in [
        ("p99 latency, 1 caller (ms)", p99_1, "<= 2", p99_1 <= TARGETS["p99_1_caller_ms"]),
        ("max Checks/s", best, ">= 2000", best >= TARGETS["checks_per_second"]),
        ("bridge RSS now (MB)", rss, "<= 60", rss <= TARGETS["rss_mb"]),
        ("bridge RSS peak (MB)", peak, "<= 60", peak <= TARGETS["rss_mb"]),
        ("bridge CPU per 1,000 Checks (ms)", cpu_per_1000 * 1000, "", None),
    ]:
        mark = "" if met is None else ("yes" if met else "NO")
        print(f"{name:<40} {value:>10.2f} {target:>10} {mark:>5}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=3000, help="Checks per latency run")
    parser.add_argument("--seconds", type=float, default=3.0, help="time bound of each run")
    args = parser.parse_args(argv)

    with FakeTFServing(MODEL) as fake:
        fake.set_version(1, "AVAILABLE")
        port, http_port = free_port(), free_port()
        argv = [
            sys.executable, "-m", "tfleet.health", "health-bridge",
            "--target", fake.target, "--model", MODEL, "--version", "1",
            "--port", str(port), "--http-port", str(http_port), "--listen", "127.0.0.1",
            "--log-level", "WARNING", "--drain-seconds", "0",
        ]  # fmt: skip
        bridge = subprocess.Popen(argv)
        try:
            address = f"127.0.0.1:{port}"
            wait_serving(address)
            print(f"bridge pid {bridge.pid}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
                  f"grpcio {grpc.__version__}, load average {os.getloadavg()[0]:.2f}\n")  # fmt: skip
            asyncio.run(measure(address, bridge.pid, fake, args.checks, args.seconds))
        finally:
            bridge.terminate()
            try:
                bridge.wait(timeout=15)
            except subprocess.TimeoutExpired:
                bridge.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
