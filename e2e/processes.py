"""Stopping the processes the demo, the e2e suite and the benchmarks start."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def stop(proc: subprocess.Popen[Any] | None, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within `timeout` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Kept:
    """Processes left running on purpose (`make demo KEEP=1`), and how to use and stop them."""

    what: str
    kubeconfig: Path
    try_command: str  # a first kubectl command against it
    pids: list[int] = field(default_factory=list)  # in the order they should stop
    logs: Path | None = None


def describe_kept(kept: list[Kept]) -> str:
    """Where each kept control plane is, what to run against it, and the one command that
    stops them all (SIGTERM: the operators release their Lease, the control planes stop
    every pod they run)."""
    lines = []
    for k in kept:
        lines.append(f"  {k.what}: export KUBECONFIG={k.kubeconfig}; {k.try_command}")
        if k.logs is not None:
            lines.append(f"    logs in {k.logs}")
    pids = [str(pid) for k in kept for pid in k.pids]
    lines.append("  tfleet itself: .venv/bin/tfleet (or put .venv/bin on PATH); kubectl: .tools/bin/kubectl")
    lines.append(f"  stop them: kill {' '.join(pids)}" if pids else "  nothing is left running")
    return "\n".join(lines)
