"""The `health-bridge` command as a process: SIGTERM drains, a preStop drain then SIGTERM exits."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.fakes.tfserving import FakeTFServing

from .conftest import MODEL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BridgeProcess:
    def __init__(self, fake: FakeTFServing, drain_seconds: float) -> None:
        self.port = free_port()
        self.http_port = free_port()
        argv = [
            sys.executable, "-m", "tfleet.health", "health-bridge",
            "--target", fake.target, "--model", MODEL, "--version", "1",
            "--port", str(self.port), "--http-port", str(self.http_port),
            "--listen", "127.0.0.1", "--interval", "0.05", "--timeout", "0.3",
            "--drain-seconds", str(drain_seconds),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            argv,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = health_pb2_grpc.HealthStub(self.channel)

    def check(self, service: str) -> str:
        try:
            response = self.stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
        except grpc.RpcError as exc:
            return str(exc.code().name)  # type: ignore[attr-defined]
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    def wait_for(self, service: str, status: str, within: float = 10) -> None:
        deadline = time.monotonic() + within
        while (last := self.check(service)) != status:
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, f"{service} stayed {last}"
            time.sleep(0.02)

    def log(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read() if self.proc.poll() is not None else "(running)"

    def close(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def available(fake: FakeTFServing) -> FakeTFServing:
    fake.set_version(1, "AVAILABLE")
    return fake


@pytest.fixture
def bridge_process(available: FakeTFServing) -> Iterator[BridgeProcess]:
    bridge = BridgeProcess(available, drain_seconds=2.0)
    yield bridge
    bridge.close()


def test_sigterm_drains_readiness_keeps_liveness_then_exits(bridge_process: BridgeProcess) -> None:
    bridge_process.wait_for("readiness", "SERVING")
    bridge_process.proc.send_signal(signal.SIGTERM)

    bridge_process.wait_for("readiness", "NOT_SERVING")
    # Still draining: the process runs, and liveness holds so kubelet kills nothing.
    assert bridge_process.proc.poll() is None
    assert bridge_process.check("liveness") == "SERVING"
    assert bridge_process.check("") == "NOT_SERVING"

    assert bridge_process.proc.wait(timeout=10) == 0
    log = bridge_process.log()
    assert "Received SIGTERM for model half_plus_two" in log
    assert "Finished draining model half_plus_two" in log


def test_sigterm_after_a_prestop_drain_exits_without_draining_again(
    bridge_process: BridgeProcess,
) -> None:
    bridge_process.wait_for("readiness", "SERVING")
    url = f"http://127.0.0.1:{bridge_process.http_port}/drain?seconds=0.2"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"Drained\n"
    assert bridge_process.check("readiness") == "NOT_SERVING"
    assert bridge_process.check("liveness") == "SERVING"

    bridge_process.proc.send_signal(signal.SIGTERM)
    assert bridge_process.proc.wait(timeout=10) == 0
    log = bridge_process.log()
    assert log.count("Started draining") == 1
    assert "readiness is NOT_SERVING for 0.2s" in log


def test_a_second_signal_stops_at_once(available: FakeTFServing) -> None:
    bridge = BridgeProcess(available, drain_seconds=600)
    try:
        bridge.wait_for("readiness", "SERVING")
        bridge.proc.send_signal(signal.SIGTERM)
        bridge.wait_for("readiness", "NOT_SERVING")
        bridge.proc.send_signal(signal.SIGINT)
        assert bridge.proc.wait(timeout=10) == 0
    finally:
        bridge.close()


@pytest.mark.parametrize("taken_flag", ["--port", "--http-port"])
def test_a_port_in_use_fails_to_start(available: FakeTFServing, taken_flag: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = {"--port": str(free_port()), "--http-port": str(free_port())}
        ports[taken_flag] = str(taken.getsockname()[1])
        argv = [
            sys.executable, "-m", "tfleet.health", "health-bridge",
            "--target", available.target, "--model", MODEL, "--listen", "127.0.0.1",
            *(item for pair in ports.items() for item in pair),
        ]  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "Failed to start health bridge" in result.stderr
