"""A private local control plane and `tfleet run` processes, for the runtime's integration tests.

Each test module gets its own control plane process with its own request log, so the API
calls it inspects are only those of the operators it started.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
CRD = ROOT / "crds" / "inferenceservices.tfleet.dev.yaml"
DEFAULTS_CRD = ROOT / "crds" / "inferenceservicedefaults.tfleet.dev.yaml"
OPERATOR_AGENTS = ("kopf/", "tfleet/")


def wait_for(predicate: Callable[[], Any], timeout: float = 30, what: str = "condition",
             interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


class PrivateCluster:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.kubeconfig = workdir / "kubeconfig"
        self.request_log = workdir / "requests.jsonl"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> PrivateCluster:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "e2e.localcluster", "--kubeconfig", str(self.kubeconfig),
             "--request-log", str(self.request_log)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=open(self.workdir / "cluster.log", "w"),  # noqa: SIM115
            text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", f"the local control plane did not start: {line!r}"
        self.kubectl("apply", "--server-side", "-f", str(CRD), "-f", str(DEFAULTS_CRD))
        self.kubectl("wait", "--for=condition=Established", "crd/inferenceservices.tfleet.dev",
                     "crd/inferenceservicedefaults.tfleet.dev", "--timeout=30s")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(KUBECTL), "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.workdir / "cache"), *args]
        result = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}{result.stdout}")
        return result

    def get(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)  # type: ignore[no-any-return]

    def apply(self, *docs: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))

    def namespace(self, name: str) -> str:
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        return name

    def settle(self, quiet: float = 1.0, timeout: float = 15) -> None:
        """Wait until the request log stops growing: watches are logged when they end, a
        moment after a stopped client's connections close."""
        deadline = time.monotonic() + timeout
        size, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            current = self.request_log.stat().st_size if self.request_log.exists() else 0
            if current != size:
                size, since = current, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.1)

    def requests(self) -> list[dict[str, Any]]:
        if not self.request_log.exists():
            return []
        return [json.loads(line) for line in self.request_log.read_text().splitlines() if line.strip()]


class Operator:
    """`tfleet run` as its own process; its log is a file, its ports are read from the log."""

    def __init__(self, cluster: PrivateCluster, name: str, *args: str):
        self.cluster, self.name = cluster, name
        self.log_path = cluster.workdir / f"{name}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "POD_NAME": name}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tfleet.cli", "run", "--kubeconfig", str(cluster.kubeconfig),
             "--metrics-port", "0", "--health-port", "0", *args],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, text=True, env=env)
        self.metrics_port = int(self.wait_for_log(r"Serving metrics on port (\d+)").group(1))
        self.health_port = int(self.wait_for_log(r"Serving health checks on port (\d+)").group(1))

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            return re.search(pattern, self.log())

        return wait_for(found, timeout, f"{pattern!r} in the log of {self.name}")  # type: ignore[no-any-return]

    def identity(self) -> str:
        return self.wait_for_log(r"Acquired Lease \S+ as (\S+)").group(1)

    def leads(self) -> bool:
        return "Acquired Lease" in self.log()

    def scrape(self) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()  # type: ignore[no-any-return]

    def metric(self, name: str, /, **labels: str) -> float:
        """A sample's value from /metrics (0 when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.scrape()):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return 0.0

    def health(self, path: str) -> int:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=5).status  # type: ignore[no-any-return]
        except urllib.error.HTTPError as exc:
            return exc.code

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


def isvc(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tfleet.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"basePath": "gs://bucket/models/half_plus_two", "version": 1}, **spec},
    }
