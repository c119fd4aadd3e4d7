"""Fixtures for e2e tests of the operator: the CRD installed, and a real `tfleet run` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from e2e import processes
from e2e.localcluster.fixtures import (  # noqa: F401  (the local control plane's fixtures and hooks)
    _core_api,
    _localcluster_dir,
    api_client,
    kubeconfig,
    kubectl,
    local_cluster,
    namespace,
    pytest_collection_modifyitems,
    pytest_configure,
    widget_crd,
)

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "inferenceservices.tfleet.dev.yaml"
DEFAULTS_CRD = ROOT / "crds" / "inferenceservicedefaults.tfleet.dev.yaml"


@pytest.fixture(scope="session")
def tfleet_crd(kubectl):  # type: ignore[no-untyped-def]
    """Both CRDs, as `kubectl apply -f crds/` installs them (no InferenceServiceDefaults object:
    this shared control plane renders with the built-in defaults)."""
    kubectl("apply", "-f", str(CRD), "-f", str(DEFAULTS_CRD))
    kubectl("wait", "--for=condition=Established", "crd/inferenceservices.tfleet.dev",
            "crd/inferenceservicedefaults.tfleet.dev", "--timeout=30s")
    return CRD


class OperatorProcess:
    """The operator as users run it: `tfleet run` in its own process, watching all namespaces."""

    def __init__(self, kubeconfig: Path, log_path: Path):
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None
        self.starts = 0

    def start(self) -> None:
        self._log = open(self.log_path, "a")  # noqa: SIM115 (kept open for the process's lifetime)
        self._log.write(f"--- start {self.starts + 1}\n")
        self._log.flush()
        mark = self.log_path.stat().st_size
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tfleet.cli", "run", "--kubeconfig", str(self.kubeconfig), "--all-namespaces"],
            stdout=self._log, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
        )
        self.starts += 1
        # The operator logs this once its watches run (and kopf holds handlers back until
        # the initial listings are indexed).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tfleet run exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            with open(self.log_path) as log:
                log.seek(mark)
                if "Started the operator" in log.read():
                    break
            time.sleep(0.1)
        time.sleep(0.5)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as when a node dies."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        processes.stop(self.proc)
        if self._log is not None:
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text()


@pytest.fixture(scope="session")
def operator_process(kubeconfig, tfleet_crd, tmp_path_factory) -> Iterator[OperatorProcess]:  # type: ignore[no-untyped-def]
    operator = OperatorProcess(Path(kubeconfig), tmp_path_factory.mktemp("operator") / "operator.log")
    operator.start()
    yield operator
    operator.stop()
