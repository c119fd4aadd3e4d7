"""The operator as users run it (`tfleet run`), one process or several replicas behind a Lease.

`OperatorProcess` is one `tfleet run` process with its own log file. `OperatorGroup` runs
replicas of it the way the chart's Deployment does: with leader election on, one leads
through a coordination.k8s.io/v1 Lease and the others stand by; a replica that exits on
its own (a leader that lost its Lease exits with 1) is started again, as the kubelet
restarts a container. Used by the e2e fixtures (`e2e/tests/conftest.py`) and by the chaos
scenario (`e2e/chaos.py`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from e2e import processes

ROOT = Path(__file__).resolve().parents[1]
# What `tfleet run` logs once its watches run (kopf holds handlers back until the initial
# listings are indexed), and what a standby logs while another replica holds the Lease.
STARTED = "Started the operator"
WAITING = "Waiting for Lease"
START_TIMEOUT_SECONDS = 30.0


class OperatorProcess:
    """`tfleet run --all-namespaces` in its own process; every start appends to one log."""

    def __init__(self, kubeconfig: Path, log_path: Path, extra_args: Sequence[str] = (),
                 name: str = "operator"):
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.extra_args = tuple(extra_args)
        self.name = name
        self.proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None
        self.starts = 0
        self._mark = 0  # where the current start's log begins
        self.stopped_on_purpose = False  # by kill() or stop(), not on its own
        # Held while it is started or stopped, so that a supervisor never races the caller.
        self.lock = threading.RLock()

    @property
    def pod_name(self) -> str:
        """POD_NAME of the current start, the prefix of its leader-election identity: a new
        one per start, as a Deployment gives the pod that replaces a dead one a new name."""
        return f"{self.name}-{self.starts}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, *, standby: bool = False) -> None:
        """Start it and wait until it reconciles (`STARTED`), or, with `standby`, until it
        reconciles or waits for the Lease (`WAITING`)."""
        with self.lock:
            self._start(standby)

    def _start(self, standby: bool) -> None:
        if self._log is None:
            self._log = open(self.log_path, "a")  # noqa: SIM115 (kept open across starts)
        self._log.write(f"--- start {self.starts + 1}\n")
        self._log.flush()
        self._mark = self.log_path.stat().st_size
        self.stopped_on_purpose = False
        self.starts += 1
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "POD_NAME": self.pod_name}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tfleet.cli", "run", "--kubeconfig", str(self.kubeconfig), "--all-namespaces",
             *self.extra_args],
            stdout=self._log, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
        )
        wanted = (STARTED, WAITING) if standby else (STARTED,)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not any(line in self.current_log() for line in wanted):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name}: tfleet run exited with {self.proc.returncode}:\n{self.current_log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: tfleet run logged none of {wanted} within "
                                   f"{START_TIMEOUT_SECONDS:g}s:\n{self.current_log()[-3000:]}")
            time.sleep(0.1)
        time.sleep(0.5)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as when a node dies."""
        assert self.proc is not None
        with self.lock:
            self.stopped_on_purpose = True
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM (a leader releases its Lease), SIGKILL if it lingers."""
        with self.lock:
            self.stopped_on_purpose = True
            processes.stop(self.proc)

    def close(self) -> None:
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        return self.log_path.read_text()

    def current_log(self) -> str:
        """The log of the current (or last) start only."""
        with open(self.log_path) as log:
            log.seek(self._mark)
            return log.read()


@dataclass(frozen=True)
class LeaseTiming:
    """`tfleet run --leader-election-*`: short, so that a failover fits in a test."""

    lease_duration: float = 4.0
    renew_deadline: float = 3.0
    retry_period: float = 1.0

    def args(self, namespace: str, name: str) -> list[str]:
        return ["--leader-election", "--leader-election-namespace", namespace, "--leader-election-id", name,
                "--leader-election-lease-duration", f"{self.lease_duration:g}",
                "--leader-election-renew-deadline", f"{self.renew_deadline:g}",
                "--leader-election-retry-period", f"{self.retry_period:g}"]


class OperatorGroup:
    """One operator, or replicas with leader election. `url` reads the Lease with a plain
    client (never faulted: faults are scoped to the operator's user agents)."""

    def __init__(self, members: Sequence[OperatorProcess], *, url: str = "",
                 lease: tuple[str, str] | None = None):
        if len(members) > 1 and lease is None:
            raise ValueError("several operator replicas need leader election (a Lease)")
        self.members = list(members)
        self.url = url
        self.lease = lease  # (namespace, name)
        self.restarts = 0  # replicas started again after they exited on their own
        self.failures: list[str] = []  # restarts that failed

    @classmethod
    def replicas(cls, kubeconfig: Path, url: str, workdir: Path, count: int, lease_namespace: str,
                 lease_name: str = "tfleet-operator", timing: LeaseTiming | None = None) -> OperatorGroup:
        """`count` replicas, each with its log in `workdir`, electing a leader through the
        Lease `lease_namespace/lease_name`."""
        args = (timing or LeaseTiming()).args(lease_namespace, lease_name)
        members = [OperatorProcess(kubeconfig, workdir / f"replica-{i}.log", args, name=f"replica-{i}")
                   for i in range(count)]
        return cls(members, url=url, lease=(lease_namespace, lease_name))

    @property
    def elected(self) -> bool:
        return self.lease is not None

    def start(self) -> None:
        """Start every replica; return once one of them reconciles."""
        for member in self.members:
            if not member.alive:
                member.start(standby=self.elected)
        self.leader(timeout=START_TIMEOUT_SECONDS)

    def lease_record(self) -> dict[str, object] | None:
        if self.lease is None:
            return None
        namespace, name = self.lease
        try:
            with urllib.request.urlopen(
                    f"{self.url}/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}", timeout=5) as resp:
                return json.loads(resp.read())  # type: ignore[no-any-return]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def holder(self) -> str:
        spec = (self.lease_record() or {}).get("spec") or {}
        return str(spec.get("holderIdentity") or "") if isinstance(spec, dict) else ""

    def member_of(self, identity: str) -> OperatorProcess | None:
        """The running replica whose current start is `identity` (its POD_NAME, `_`, a random
        suffix), or None (the identity of a replica that died, or no identity)."""
        for member in self.members:
            if member.alive and identity.startswith(member.pod_name + "_"):
                return member
        return None

    def leader(self, timeout: float = 0.0) -> OperatorProcess:
        """The replica that reconciles now: the only one, or the Lease holder once it has
        started its watches."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.elected:
                if self.members[0].alive:
                    return self.members[0]
            else:
                member = self.member_of(self.holder())
                if member is not None and STARTED in member.current_log():
                    return member
            if time.monotonic() >= deadline:
                tails = "".join(f"\n--- {m.name} (alive: {m.alive}):\n{m.current_log()[-1500:]}" for m in self.members)
                raise AssertionError(f"no operator replica leads after {timeout:g}s; Lease holder "
                                     f"{self.holder()!r}{tails}")
            time.sleep(0.1)

    def supervise(self) -> None:
        """Start again any replica that exited on its own (a leader that lost its Lease exits
        with 1), as the kubelet restarts a container. A replica being started or stopped
        by someone else is left to them."""
        for member in self.members:
            if not member.lock.acquire(blocking=False):
                continue
            try:
                if member.proc is None or member.alive or member.stopped_on_purpose:
                    continue
                self.restarts += 1
                try:
                    member.start(standby=self.elected)
                except RuntimeError as exc:  # left down; the caller reports it
                    member.stopped_on_purpose = True
                    self.failures.append(str(exc))
            finally:
                member.lock.release()

    @contextlib.contextmanager
    def supervised(self, interval: float = 0.5) -> Iterator[None]:
        """Supervise the replicas from a thread of its own while the block runs."""
        done = threading.Event()

        def loop() -> None:
            while not done.wait(interval):
                self.supervise()

        thread = threading.Thread(target=loop, name="operator-supervisor", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(timeout=START_TIMEOUT_SECONDS + 15)

    def logs(self) -> dict[str, str]:
        return {m.name: m.log() for m in self.members}

    def log_sizes(self) -> dict[str, int]:
        return {m.name: (m.log_path.stat().st_size if m.log_path.exists() else 0) for m in self.members}

    def close(self) -> None:
        """Stop every replica, the leader last, so that no standby takes over on the way out."""
        leader = None
        if self.elected:
            with contextlib.suppress(OSError, ValueError):  # the control plane may be gone
                leader = self.member_of(self.holder())
        for member in sorted(self.members, key=lambda m: m is leader):
            member.close()
