"""Fixtures for e2e tests of the operator: the CRD installed, and a real `tfleet run` process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "inferenceservices.tfleet.dev.yaml"


@pytest.fixture(scope="session")
def tfleet_crd(kubectl):  # type: ignore[no-untyped-def]
    kubectl("apply", "-f", str(CRD))
    kubectl("wait", "--for=condition=Established", "crd/inferenceservices.tfleet.dev", "--timeout=30s")
    return CRD


@pytest.fixture(scope="session")
def operator_process(kubeconfig, tfleet_crd, tmp_path_factory) -> Iterator[subprocess.Popen[str]]:  # type: ignore[no-untyped-def]
    """The operator as users run it: `tfleet run` in its own process, watching all namespaces."""
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    log = open(log_path, "w")  # noqa: SIM115 (kept open for the process's lifetime)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfleet.cli", "run", "--kubeconfig", str(kubeconfig), "--all-namespaces"],
        stdout=log, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
    )
    # The operator is ready once kopf has started its watches; its log says so.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tfleet run exited with {proc.returncode}:\n{log_path.read_text()}")
        if "Starting the main loop" in log_path.read_text() or "watch-stream" in log_path.read_text():
            break
        time.sleep(0.2)
    time.sleep(1.0)
    proc.log_path = log_path  # type: ignore[attr-defined]
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
