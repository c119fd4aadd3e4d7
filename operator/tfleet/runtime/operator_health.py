"""Liveness and readiness of the operator process, served over HTTP for its Deployment.

- `/healthz` (liveness) fails only when the process is stuck: the operator's event loop has
  not ticked for `stall_seconds` (60) while leading, or a standby's election loop has stopped
  trying. Kubernetes then restarts the container.
- `/readyz` (readiness) passes for a leader whose watches are running, and for a standby
  that reaches the API server. A standby must count as ready: otherwise a rolling update of
  the operator Deployment would wait forever for a new pod that cannot lead until the old
  one is gone.

`assess` is a pure function of the state and the time; `Health` holds the state and
`serve` puts it on a port.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Longer than one election round can take while the API server does not answer (a 30 s
# request timeout plus the retry period), so an outage alone never fails liveness.
STALL_SECONDS = 60.0


class Phase(Enum):
    STARTING = "starting"
    STANDBY = "standby"
    LEADING = "leading"
    STOPPING = "stopping"


@dataclass(frozen=True)
class State:
    phase: Phase = Phase.STARTING
    started_at: float = 0.0
    operator_ready: bool = False  # kopf has started its watches
    heartbeat: float | None = None  # last tick of the operator's event loop
    election_attempt: float | None = None  # last round of the standby's election loop
    api_contact: float | None = None  # last answer from the API server to the election loop


@dataclass(frozen=True)
class Verdict:
    live: bool
    ready: bool
    reason: str


def assess(state: State, now: float, stall_seconds: float = STALL_SECONDS, start_grace_seconds: float = 60.0) -> Verdict:
    def fresh(moment: float | None) -> bool:
        return moment is not None and now - moment < stall_seconds

    if state.phase is Phase.STOPPING:
        # Still alive (finishing in-flight work), no longer a candidate for anything.
        return Verdict(True, False, "stopping")
    if state.phase is Phase.STARTING:
        live = now - state.started_at < start_grace_seconds
        return Verdict(live, False, "starting" if live else "did not start in time")
    if state.phase is Phase.STANDBY:
        live = fresh(state.election_attempt) or now - state.started_at < start_grace_seconds
        ready = fresh(state.api_contact)
        reason = "standby" if ready else "standby without contact to the API server"
        return Verdict(live, ready, reason if live else "election loop stalled")
    # Leading.
    if state.heartbeat is None:
        live = now - state.started_at < start_grace_seconds
        return Verdict(live, False, "starting watches" if live else "operator loop never started")
    if not fresh(state.heartbeat):
        return Verdict(False, False, f"operator loop stalled for {now - state.heartbeat:.0f}s")
    if not state.operator_ready:
        return Verdict(True, False, "starting watches")
    return Verdict(True, True, "leading")


class Health:
    """The process's health state, updated from any thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, stall_seconds: float = STALL_SECONDS,
                 start_grace_seconds: float = 60.0):
        self._clock = clock
        self._lock = threading.Lock()
        self._state = State(started_at=clock())
        self.stall_seconds = stall_seconds
        self.start_grace_seconds = start_grace_seconds

    @property
    def state(self) -> State:
        with self._lock:
            return self._state

    def update(self, **changes: Any) -> None:
        with self._lock:
            self._state = replace(self._state, **changes)

    def beat(self) -> None:
        self.update(heartbeat=self._clock())

    def verdict(self) -> Verdict:
        return assess(self.state, self._clock(), self.stall_seconds, self.start_grace_seconds)

    def serve(self, port: int, addr: str = "0.0.0.0") -> tuple[int, Callable[[], None]]:
        """Serve /healthz and /readyz; returns the bound port and a function that stops it."""
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                verdict = health.verdict()
                if path in ("/healthz", "/livez"):
                    ok = verdict.live
                elif path == "/readyz":
                    ok = verdict.ready
                else:
                    self.send_error(404)
                    return
                body = json.dumps({"ok": ok, "phase": health.state.phase.value, "reason": verdict.reason}).encode()
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                # Probes arrive every few seconds; their access log would drown the operator's.
                pass

        server = ThreadingHTTPServer((addr, port), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name="tfleet-health", daemon=True)
        thread.start()

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

        return server.server_address[1], stop
