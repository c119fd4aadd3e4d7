"""A cluster whose pods really run, for the serving scenarios, their benchmark and the demo.

`ServingCluster` starts, each in its own process:

- the local control plane with the process runtime (`--process-runtime`: every pod runs as
  processes in network, PID and mount namespaces of its own, with real probes and real
  termination) and the data plane (`--data-plane`: kube-proxy on loopback cluster IPs and
  the cluster DNS);
- tfleet's CRDs, applied with kubectl;
- the operator, `tfleet run`, exactly as users run it.

Serving pods run the TF Serving stand-in (`e2e/standin`, the `tensorflow/serving` image) and
the real health bridge (tfleet's image). Models live in the stand-in's object store under
the cluster's storage root: `write_model("s3://models/fraud", 2, card)` makes version 2 appear.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

from e2e import processes
from e2e.standin.models import write_version

ROOT = Path(__file__).resolve().parents[1]
CRDS = ROOT / "crds"
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
DNS_HOST = "127.0.0.10"
METRICS_PATH = "/monitoring/prometheus/metrics"
T = TypeVar("T")


def free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `check` until it returns something other than None or False; fail naming `what`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last is not None and last is not False:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class ServingCluster:
    def __init__(self, workdir: Path, *, operator_args: tuple[str, ...] = (), detached: bool = False):
        """`detached`: the control plane and the operator run in sessions of their own, so that
        they can outlive this process (see `keep_running`)."""
        self.workdir = workdir
        self.detached = detached
        self._kept = False
        self.kubeconfig = workdir / "kubeconfig"
        self.storage_root = workdir / "storage"
        self.dns_port = free_udp_port(DNS_HOST)
        self.operator_args = operator_args
        self._cluster: subprocess.Popen[str] | None = None
        self._operator: subprocess.Popen[str] | None = None
        self._logs: list[IO[str]] = []
        self._server: str | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> ServingCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _log(self, name: str) -> IO[str]:
        log = open(self.workdir / name, "a")  # noqa: SIM115 (open for the process's lifetime)
        self._logs.append(log)
        return log

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._cluster = subprocess.Popen(
            [sys.executable, "-m", "e2e.localcluster", "--kubeconfig", str(self.kubeconfig),
             "--process-runtime", "--data-plane", "--dns-address", f"{DNS_HOST}:{self.dns_port}",
             "--storage-root", str(self.storage_root), "--log-level", "INFO"],
            stdout=subprocess.PIPE, stderr=self._log("localcluster.log"), text=True, cwd=ROOT, env=env,
            start_new_session=self.detached)
        assert self._cluster.stdout is not None
        line = self._cluster.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the local cluster did not start:\n{self.log('localcluster.log')}")
        # Both CRDs, as an install has them: the operator watches both, and starts once it
        # has listed both.
        self.kubectl("apply", "-f", str(CRDS))
        self.kubectl("wait", "--for=condition=Established", "crd/inferenceservices.tfleet.dev",
                     "crd/inferenceservicedefaults.tfleet.dev", "--timeout=30s")
        self.start_operator()

    def start_operator(self) -> None:
        log = self._log("operator.log")
        mark = (self.workdir / "operator.log").stat().st_size
        self._operator = subprocess.Popen(
            [sys.executable, "-m", "tfleet.cli", "run", "--kubeconfig", str(self.kubeconfig), *self.operator_args],
            stdout=log, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=self.detached)

        def started() -> bool:
            if self._operator is not None and self._operator.poll() is not None:
                raise RuntimeError(f"tfleet run exited:\n{self.log('operator.log')}")
            return "Started the operator" in self.log("operator.log")[mark:]

        wait_for(started, 60, "the operator to start")

    def stop_operator(self) -> None:
        processes.stop(self._operator)
        self._operator = None

    def keep_running(self) -> list[int]:
        """Leave the operator and the control plane running past `stop` (a detached cluster
        only); their pids, in the order they should be stopped."""
        assert self.detached, "only a detached cluster outlives its owner"
        self._kept = True
        return [p.pid for p in (self._operator, self._cluster) if p is not None]

    def stop(self) -> None:
        if self._kept:
            for log in self._logs:
                log.close()
            self._logs.clear()
            return
        self.stop_operator()
        # SIGTERM: the process runtime kills every pod and removes its namespaces.
        processes.stop(self._cluster, timeout=60)
        for log in self._logs:
            log.close()
        self._logs.clear()

    def log(self, name: str) -> str:
        path = self.workdir / name
        return path.read_text() if path.exists() else ""

    # ------------------------------------------------------------------ clients

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(KUBECTL), "--kubeconfig", str(self.kubeconfig), *args], input=input,
                                capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def apply(self, manifest: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)  # type: ignore[no-any-return]

    def items(self, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["get", kind, "-n", namespace, "-o", "json"] + (["-l", selector] if selector else [])
        return list(json.loads(self.kubectl(*args).stdout)["items"])

    def write_model(self, base_path: str, version: int, card: dict[str, Any] | None = None,
                    saved_model: bool = True) -> Path:
        return write_version(base_path, version, card, saved_model=saved_model, storage_root=self.storage_root / "objects")

    def target(self, service: str, namespace: str, port: int = 8500) -> str:
        """A gRPC target that resolves `<service>.<namespace>.svc.cluster.local` with the cluster DNS."""
        return f"dns://{DNS_HOST}:{self.dns_port}/{service}.{namespace}.svc.cluster.local:{port}"

    def cluster_ip(self, service: str, namespace: str) -> str:
        return str(self.get("service", service, namespace)["spec"]["clusterIP"])

    # ------------------------------------------------------------------ fast reads (polling)

    @property
    def server(self) -> str:
        if self._server is None:
            import yaml

            self._server = str(yaml.safe_load(self.kubeconfig.read_text())["clusters"][0]["cluster"]["server"])
        return self._server

    def read(self, path: str, query: dict[str, str] | None = None) -> dict[str, Any]:
        """GET an API path as JSON (a plain HTTP client: cheaper than kubectl in a loop)."""
        from urllib.parse import urlencode

        url = self.server + path + ("?" + urlencode(query) if query else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            return dict(json.loads(response.read()))

    def isvc(self, name: str, namespace: str) -> dict[str, Any]:
        return self.read(f"/apis/tfleet.dev/v1alpha1/namespaces/{namespace}/inferenceservices/{name}")

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return list(self.read(f"/api/v1/namespaces/{namespace}/pods", {"labelSelector": selector})["items"])

    def ready_endpoints(self, service: str, namespace: str) -> set[str]:
        """The addresses the Service's EndpointSlices mark ready."""
        slices = self.read(f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
                           {"labelSelector": f"kubernetes.io/service-name={service}"})["items"]
        return {address for s in slices for e in s.get("endpoints") or []
                if (e.get("conditions") or {}).get("ready") for address in e.get("addresses") or []}

    # ------------------------------------------------------------------ serving pods

    def all_serving_pods(self, name: str, namespace: str) -> list[dict[str, Any]]:
        """Every pod of the InferenceService, terminating ones included."""
        return self.pods(namespace, f"tfleet.dev/inferenceservice={name}")

    def serving_pods(self, name: str, namespace: str) -> list[dict[str, Any]]:
        return [p for p in self.all_serving_pods(name, namespace) if not p["metadata"].get("deletionTimestamp")]

    def ready_pods(self, name: str, namespace: str) -> list[dict[str, Any]]:
        return [p for p in self.serving_pods(name, namespace) if is_ready(p)]


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in (pod.get("status") or {}).get("conditions") or [])


def request_counts(pod_ip: str, model: str, port: int = 8501) -> dict[str, float]:
    """`:tensorflow:serving:request_count` of one pod's TF Serving, by status."""
    with urllib.request.urlopen(f"http://{pod_ip}:{port}{METRICS_PATH}", timeout=5) as response:
        text = response.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(":tensorflow:serving:request_count{") and f'model_name="{model}"' in line:
            labels, _, value = line.rpartition(" ")
            status = labels.split('status="', 1)[1].split('"', 1)[0]
            counts[status] = counts.get(status, 0.0) + float(value)
    return counts


def ok_requests(pod_ip: str, model: str) -> float:
    return request_counts(pod_ip, model).get("OK", 0.0)
