"""Benchmark of the pre-flight as a warmup: the latency of a version's first request, with and
without golden requests run before readiness; and what the health bridge costs while it reads
TF Serving's metrics for the builtin canary analysis.

    .venv/bin/python -m e2e.bench.preflight [--trials 5] [--first-run 0.5] [--seconds 60] [--docs]

Each trial starts the TF Serving stand-in on a fresh version whose card gives it a slow first
run (`first_run_seconds`: TensorFlow's lazy initialisation of a signature's executors), and
`tfleet health-bridge` as a process of its own, pinned to that version, with or without a
pre-flight of one golden request. Once the bridge's readiness service says SERVING (what the
kubelet's readiness probe asks), it sends the first Predict and 20 more over gRPC, as a client
that the Service has just started routing to would.

The second part runs the bridge for `--seconds` beside a stand-in that serves a steady load
(20 Predict calls a second), once without reading metrics and once per metrics interval, and
reads the bridge process's CPU time and memory from /proc; the operator's `/traffic` reads
are left out (one per analysis interval, each one more read of the page). The stand-in's
page is small (TF Serving's own carries more of TensorFlow's metrics), so read the cost per
read as a lower bound. It prints tables; it asserts nothing.
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
    ready_seconds: float  # from the bridge's start (the stand-in serving) to its readiness SERVING
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
        "### Pre-flight as warmup",
        "",
        f"First request to a version whose first run takes {first_run:g} s longer (the stand-in's "
        f"`first_run_seconds`), {trials} trials each, gRPC Predict right after readiness turned SERVING:",
        "",
        "| bridge | first request p50 / max | next 20 requests p50 | bridge started to readiness p50 |",
        "| --- | --- | --- | --- |",
    ]
    for label, results in rows:
        firsts = [t.first_ms for t in results]
        nexts = [ms for t in results for ms in t.next_ms]
        ready = [t.ready_seconds for t in results]
        lines.append(f"| {label} | {statistics.median(firsts):.1f} / {max(firsts):.1f} ms | "
                     f"{statistics.median(nexts):.1f} ms | {statistics.median(ready):.2f} s |")
    return "\n".join(lines) + "\n"


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def scraping(seconds: float) -> str:
    """The bridge's CPU and memory without metrics and at two metrics intervals."""
    import threading

    rows = []
    with tempfile.TemporaryDirectory(prefix="scrape-bench-") as tmp:
        root = Path(tmp)
        write_version(root / MODEL, 1, {"function": {"linear": {"a": 1.0, "b": 1.0}}})
        monitoring = root / "monitoring.config"
        monitoring.write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }')
        standin = StandIn(root / "run", [f"--model_name={MODEL}", f"--model_base_path={root / MODEL}",
                                         f"--monitoring_config_file={monitoring}"]).wait_serving()
        stop = threading.Event()

        def load() -> None:
            with grpc.insecure_channel(f"127.0.0.1:{standin.grpc_port}") as channel:
                stub = predict_stub(channel)
                while not stop.wait(0.05):
                    stub(predict_request(MODEL, [1.0]), timeout=5)

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        try:
            for label, extra in (("no metrics read", []),
                                 ("metrics every 5 s (the default)", ["--metrics-path",
                                                                      "/monitoring/prometheus/metrics"]),
                                 ("metrics every 1 s", ["--metrics-path", "/monitoring/prometheus/metrics",
                                                        "--metrics-interval", "1s"])):
                port = free_port()
                args = [sys.executable, "-m", "tfleet.cli", "health-bridge", "--target",
                        f"127.0.0.1:{standin.grpc_port}", "--model", MODEL, "--version", "1", "--port", str(port),
                        "--http-port", str(free_port()), "--listen", "127.0.0.1", "--rest-port",
                        str(standin.rest_port), *extra]
                bridge = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                                          env={**os.environ, "PYTHONPATH": PYTHONPATH})
                try:
                    wait(lambda p=port: readiness(p), "the bridge to report readiness")
                    time.sleep(2)  # past start-up
                    cpu0 = cpu_seconds(bridge.pid)
                    time.sleep(seconds)
                    cpu = cpu_seconds(bridge.pid) - cpu0
                    rows.append((label, cpu / seconds * 100, rss_mb(bridge.pid)))
                finally:
                    bridge.terminate()
                    bridge.wait(timeout=30)
            page = len(standin.metrics())
        finally:
            stop.set()
            loader.join()
            standin.stop()
    lines = ["### Health bridge reading TF Serving's metrics", "",
             f"The health bridge over {seconds:g} s beside a stand-in serving 20 Predict calls a second (its "
             f"metrics page: {page:,} bytes), polling GetModelStatus every second as always:", "",
             "| bridge | CPU (% of one core) | RSS |", "| --- | --- | --- |"]
    lines += [f"| {label} | {cpu:.2f}% | {rss:.1f} MiB |" for label, cpu, rss in rows]
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
    parser.add_argument("--seconds", type=float, default=60.0, help="how long each scraping run lasts")
    parser.add_argument("--docs", action="store_true", help="write the tables into docs/benchmarks.md")
    args: Any = parser.parse_args(argv)
    text = run(args.trials, args.first_run) + "\n" + scraping(args.seconds)
    print(text)
    if args.docs:
        update_docs(ROOT / "docs" / "benchmarks.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
