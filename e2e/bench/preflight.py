"""Benchmark of the pre-flight as a warmup: the latency of a version's first request, with and
without golden requests run before readiness.

    .venv/bin/python -m e2e.bench.preflight [--trials 5] [--first-run 0.5] [--docs]

Each trial starts the TF Serving stand-in on a fresh version whose card gives it a slow first
run (`first_run_seconds`: TensorFlow's lazy initialisation of a signature's executors), and
`tfleet health-bridge` as a process of its own, pinned to that version, with or without a
pre-flight of one golden request. Once the bridge's readiness service says SERVING (what the
kubelet's readiness probe asks), it sends the first Predict and 20 more over gRPC, as a client
that the Service has just started routing to would. It prints a table; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from e2e.load import predict_request, predict_stub
from e2e.standin.models import write_version
from e2e.tests.standin_support import PYTHONPATH, StandIn, free_port

ROOT = Path(__file__).resolve().parents[2]
MODEL = "m"
BEGIN, END = "<!-- preflight-benchmark:begin -->", "<!-- preflight-benchmark:end -->"


def wait(check: Callable[[], bool], what: str, timeout: float = 60.0) -> float:
    """Seconds until `check` holds (polled every 10 ms); fails after `timeout`."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - start


def readiness(port: int) -> bool:
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="readiness"), timeout=1)
    except grpc.RpcError:
        return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def start_bridge(workdir: Path, standin: StandIn, golden: Path | None) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    args = [sys.executable, "-m", "tfleet.cli", "health-bridge", "--target", f"127.0.0.1:{standin.grpc_port}",
            "--model", MODEL, "--version", "1", "--port", str(port), "--http-port", str(free_port()),
            "--listen", "127.0.0.1", "--interval", "200ms"]
    if golden is not None:
        args += ["--preflight-requests", str(golden), "--rest-port", str(standin.rest_port)]
    log = open(workdir / f"bridge-{port}.log", "wb")  # noqa: SIM115 (the process's lifetime)
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": PYTHONPATH})
    log.close()
    return proc, port


@dataclass
class Trial:
    ready_seconds: float  # from the stand-in serving to the bridge's readiness SERVING
    first_ms: float
    next_ms: list[float]


def trial(workdir: Path, first_run: float, preflight: bool) -> Trial:
    workdir.mkdir(parents=True)
    write_version(workdir / MODEL, 1, {"function": {"linear": {"a": 1.0, "b": 1.0}}, "first_run_seconds": first_run})
    golden = None
    if preflight:
        golden = workdir / "requests.json"
        golden.write_text(json.dumps([{"instances": [1.0, 2.0], "predictions": [2.0, 3.0]}]))
    standin = StandIn(workdir / "run", [f"--model_name={MODEL}", f"--model_base_path={workdir / MODEL}"])
    bridge: subprocess.Popen[bytes] | None = None
    try:
        standin.wait_serving()
        bridge, port = start_bridge(workdir, standin, golden)
        ready = wait(lambda: readiness(port), "the bridge to report readiness")
        with grpc.insecure_channel(f"127.0.0.1:{standin.grpc_port}") as channel:
            stub = predict_stub(channel)
            grpc.channel_ready_future(channel).result(timeout=10)  # connected: only the call is timed
            latencies = []
            for _ in range(21):
                start = time.perf_counter()
                stub(predict_request(MODEL, [1.0, 2.0]), timeout=30)
                latencies.append((time.perf_counter() - start) * 1000)
        return Trial(ready, latencies[0], latencies[1:])
    finally:
        if bridge is not None:
            bridge.terminate()
            bridge.wait(timeout=30)
        standin.stop()


def run(trials: int, first_run: float) -> str:
    rows: list[tuple[str, list[Trial]]] = []
    with tempfile.TemporaryDirectory(prefix="preflight-bench-") as tmp:
        for preflight in (False, True):
            results = [trial(Path(tmp) / f"{preflight}-{i}", first_run, preflight) for i in range(trials)]
            rows.append(("with a pre-flight of 1 golden request" if preflight else "without a pre-flight", results))
    lines = [
        f"First request to a version whose first run takes {first_run:g} s longer (the stand-in's "
        f"`first_run_seconds`), {trials} trials each, gRPC Predict right after readiness turned SERVING:",
        "",
        "| bridge | first request p50 / max | next 20 requests p50 | stand-in serving to readiness p50 |",
        "| --- | --- | --- | --- |",
    ]
    for label, results in rows:
        firsts = [t.first_ms for t in results]
        nexts = [ms for t in results for ms in t.next_ms]
        ready = [t.ready_seconds for t in results]
        lines.append(f"| {label} | {statistics.median(firsts):.1f} / {max(firsts):.1f} ms | "
                     f"{statistics.median(nexts):.1f} ms | {statistics.median(ready):.2f} s |")
    return "\n".join(lines) + "\n"


def update_docs(path: Path, text: str) -> None:
    doc = path.read_text()
    head, _, rest = doc.partition(BEGIN)
    _, _, tail = rest.partition(END)
    path.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--first-run", type=float, default=0.5, help="the card's first_run_seconds")
    parser.add_argument("--docs", action="store_true", help="write the table into docs/benchmarks.md")
    args: Any = parser.parse_args(argv)
    text = run(args.trials, args.first_run)
    print(text)
    if args.docs:
        update_docs(ROOT / "docs" / "benchmarks.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
