"""Running the TF Serving stand-in as a subprocess in tests, and talking to it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from e2e.standin import protos

ROOT = Path(__file__).resolve().parents[2]
PYTHONPATH = f"{ROOT / 'operator'}:{ROOT}"
DEADLINE = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], Any], what: str, timeout: float = DEADLINE, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class StandIn:
    """One `python -m e2e.standin` process; output goes to files under `workdir`."""

    def __init__(self, workdir: Path, args: list[str], env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.grpc_port = free_port()
        self.rest_port = free_port()
        self.args = [
            f"--port={self.grpc_port}",
            f"--rest_api_port={self.rest_port}",
            *[a.replace("{grpc}", str(self.grpc_port)).replace("{rest}", str(self.rest_port)) for a in args],
        ]
        n = len(list(workdir.glob("stdout*")))
        self.stdout_path = workdir / f"stdout{n}"
        self.stderr_path = workdir / f"stderr{n}"
        full_env = {**os.environ, "PYTHONPATH": PYTHONPATH, **(env or {})}
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "e2e.standin", *self.args],
                stdout=out,
                stderr=err,
                env=full_env,
                start_new_session=True,
            )
        self._channel: grpc.Channel | None = None

    # ----- process ----------------------------------------------------------------------

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_exit(self, timeout: float = DEADLINE) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the stand-in did not exit; stderr:\n{self.stderr[-3000:]}") from None

    def wait_serving(self) -> StandIn:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the stand-in exited ({self.proc.returncode}):\n{self.stdout}\n{self.stderr[-3000:]}")
            return "Exporting HTTP/REST API at:" in self.stderr or (
                "Running gRPC ModelServer" in self.stderr and "--rest_api_port=0" in self.args
            )

        wait_until(up, "the stand-in to serve")
        return self

    def wait_log(self, text: str, count: int = 1) -> None:
        wait_until(lambda: self.stderr.count(text) >= count, f"{count}x {text!r} in the log")

    def stop(self) -> None:
        if self._channel is not None:
            self._channel.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    # ----- gRPC -------------------------------------------------------------------------

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        return self._channel

    def call(self, service: str, method: str, request: Any, response_type: Any, timeout: float = 5) -> Any:
        stub = self.channel.unary_unary(
            f"/{service}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        return stub(request, timeout=timeout)

    def status(self, model: str, version: int | None = None, timeout: float = 5) -> dict[int, tuple[str, int, str]]:
        """{version: (state, error_code, error_message)} from GetModelStatus."""
        request = protos.GetModelStatusRequest()
        request.model_spec.name = model
        if version is not None:
            request.model_spec.version.value = version
        response = self.call(protos.MODEL_SERVICE, "GetModelStatus", request, protos.GetModelStatusResponse, timeout)
        return {
            s.version: (protos.health_protos.STATE_NAMES[s.state], s.status.error_code, s.status.error_message)
            for s in response.model_version_status
        }

    def predict(
        self, model: str, values: list[float], shape: list[int] | None = None, *, version: int | None = None,
        label: str | None = None, timeout: float = 5,
    ) -> Any:
        request = protos.PredictRequest()
        request.model_spec.name = model
        if version is not None:
            request.model_spec.version.value = version
        if label is not None:
            request.model_spec.version_label = label
        request.inputs["x"].CopyFrom(protos.float_tensor(values, shape))
        return self.call(protos.PREDICTION_SERVICE, "Predict", request, protos.PredictResponse, timeout)

    # ----- REST -------------------------------------------------------------------------

    def http(self, method: str, path: str, body: Any = None, timeout: float = 5) -> tuple[int, str, str]:
        """(status, content type, body text)."""
        data = None if body is None else (body if isinstance(body, str) else json.dumps(body)).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.rest_port}{path}", data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:
                return r.status, r.headers.get("Content-Type", ""), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Content-Type", ""), e.read().decode()

    def metrics(self, path: str = "/monitoring/prometheus/metrics") -> str:
        code, _, body = self.http("GET", path)
        assert code == 200, body
        return body


def metric_value(page: str, sample: str) -> float:
    """The value of one sample line (`name{labels}`) of a Prometheus page; 0 if absent."""
    for line in page.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
