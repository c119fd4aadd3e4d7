"""The health bridge: kubelet's grpc probes ask it, it asks TF Serving.

It serves `grpc.health.v1.Health` (Check and Watch) with the service names in
`status.SERVICES`, answering from a cache that a poll loop refreshes with
`GetModelStatus`. A small HTTP listener beside it serves:

- `GET /status`: the last observation as JSON (see `status.parse_status_json`);
- `GET /drain` (or POST): readiness turns NOT_SERVING at once, and the answer comes after
  the drain period, so a preStop hook that calls it holds the pod's termination until
  clients have moved away; with a drain token configured, only requests that carry it;
- `GET /healthz`: 200 while the poll loop keeps running (the bridge's own liveness).

`/status` and `/healthz` are read-only and answer GET and HEAD; `/drain` is the one
endpoint that changes anything. Any other method gets 405 with an `Allow` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
import signal
import time
import urllib.parse
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tfleet.health.podspec import DRAIN_TOKEN_HEADER
from tfleet.health.tfs import AsyncModelStatusClient
from tfleet.health.verdicts import (
    BridgeStatus,
    ModelHealth,
    next_started,
    render_status_json,
    verdicts,
)

log = logging.getLogger("tfleet.health")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

DEFAULT_PORT = 8510


def default_http_port(port: int) -> int:
    """The HTTP port sits next to the gRPC port unless told otherwise."""
    return port + 1 if port else 0


@dataclass(frozen=True)
class BridgeConfig:
    target: str
    model: str
    version: int | None = None
    port: int = DEFAULT_PORT
    http_port: int | None = None
    # "" listens on every interface (the pod IP, where kubelet probes); tests use 127.0.0.1.
    listen: str = ""
    interval: float = 1.0
    timeout: float = 1.0
    drain_seconds: float = 10.0
    # When set, /drain acts only for requests carrying it in DRAIN_TOKEN_HEADER (the
    # preStop hook sends it), so other pods that can reach the port cannot drain this one.
    drain_token: str = ""

    @property
    def stale_after(self) -> float:
        """How long without a finished poll before the bridge calls itself unhealthy."""
        return 3 * self.interval + 2 * self.timeout + 1


def _grpc_address(host: str, port: int) -> str:
    if not host:
        return f"[::]:{port}"
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


class HealthBridge:
    """One bridge for one model. `start()`/`stop()` for embedding, `serve()` for a process."""

    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.servicer = health.aio.HealthServicer()
        self.health = ModelHealth(
            model=config.model,
            expected_version=config.version,
            error=f"TF Serving at {config.target} has not been asked yet",
        )
        self.started = False
        self.draining = False
        self.port = config.port
        self.http_port = (
            config.http_port if config.http_port is not None else default_http_port(config.port)
        )
        self._published: dict[str, int] = {}
        self._last_message: str | None = None
        self._reported_failures: set[tuple[int, str]] = set()
        self._last_poll = time.monotonic()
        self._drain_deadline: float | None = None
        self._drained = asyncio.Event()
        self._stopping = asyncio.Event()
        self._terminating = False
        self._server: grpc.aio.Server | None = None
        self._http: asyncio.Server | None = None
        self._client: AsyncModelStatusClient | None = None
        self._poller: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ----- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        # SO_REUSEPORT (gRPC's default on Linux) would let a second bridge bind the same
        # port silently and share the probes.
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)
        self.port = server.add_insecure_port(_grpc_address(cfg.listen, self.port))
        await self._publish()
        await server.start()
        self._server = server
        try:
            self._http = await asyncio.start_server(
                self._handle_http, host=cfg.listen or None, port=self.http_port
            )
        except OSError:
            await server.stop(grace=None)
            raise
        self.http_port = self._http.sockets[0].getsockname()[1]
        self._client = AsyncModelStatusClient(
            cfg.target,
            cfg.model,
            cfg.version,
            timeout=cfg.timeout,
            reconnect_ms=int(cfg.interval * 1000),
        )
        self._last_poll = time.monotonic()
        self._poller = asyncio.create_task(self._poll_loop())
        log.info(
            "Started health bridge for model %s at %s (gRPC port %d, HTTP port %d)",
            cfg.model,
            cfg.target,
            self.port,
            self.http_port,
        )

    async def stop(self) -> None:
        self._stopping.set()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._http is not None:
            self._http.close()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            await self._server.stop(grace=0.5)
        if self._client is not None:
            await self._client.close()
        log.info("Stopped health bridge for model %s", self.config.model)

    async def serve(self) -> None:
        """Runs until SIGTERM (after draining) or SIGINT; for the `health-bridge` command."""
        await self.start()
        # Everything allocated so far (modules, the server) lives as long as the process;
        # keeping it out of the collector's generations keeps GC pauses off Check latency.
        gc.freeze()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await self._stopping.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.stop()

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._terminating or sig == signal.SIGINT:
            self._stopping.set()
            return
        self._terminating = True
        log.info("Received SIGTERM for model %s", self.config.model)
        self._spawn(self._drain_then_stop())

    async def _drain_then_stop(self) -> None:
        # After a preStop drain the clients are gone already: a native sidecar gets its
        # SIGTERM only once the serving container has exited.
        if not self._drained.is_set():
            await self.drain()
        self._stopping.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----- draining ---------------------------------------------------------------------

    async def begin_drain(self, seconds: float | None = None) -> None:
        """Readiness turns NOT_SERVING now; liveness is left alone.

        The first caller sets the drain period (`seconds`, else the configured one); later
        callers wait for the same end.
        """
        if self.draining:
            return
        period = self.config.drain_seconds if seconds is None else seconds
        self.draining = True
        self._drain_deadline = time.monotonic() + period
        log.info(
            "Started draining model %s: readiness is NOT_SERVING for %gs",
            self.config.model,
            period,
        )
        await self._publish()

    async def drain(self, seconds: float | None = None) -> None:
        """Begins draining (once) and returns when the drain period is over."""
        await self.begin_drain(seconds)
        assert self._drain_deadline is not None
        remaining = self._drain_deadline - time.monotonic()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), remaining)
        if not self._drained.is_set():
            self._drained.set()
            log.info("Finished draining model %s", self.config.model)

    # ----- polling ----------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        assert self._client is not None
        while not self._stopping.is_set():
            try:
                observed = await self._client.fetch()
            except Exception as exc:  # never let one bad answer end the loop
                log.exception("Failed to ask TF Serving about model %s", self.config.model)
                observed = ModelHealth(
                    model=self.config.model,
                    expected_version=self.config.version,
                    reachable=False,
                    error=f"Asking TF Serving at {self.config.target} failed: {exc}",
                )
            await self.observe(observed)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.config.interval)

    async def observe(self, observed: ModelHealth) -> None:
        """Takes one observation: updates the cache, the services and the log."""
        self.health = observed
        self.started = next_started(self.started, observed)
        self._last_poll = time.monotonic()
        self._log_changes(observed)
        await self._publish()

    def _log_changes(self, observed: ModelHealth) -> None:
        message = observed.message()
        if message != self._last_message:
            level = logging.INFO if observed.available else logging.WARNING
            log.log(level, "Model %s status changed: %s", observed.model, message)
            self._last_message = message
        for v in observed.versions:
            key = (v.version, v.error_message)
            if v.failed and key not in self._reported_failures:
                self._reported_failures.add(key)
                log.warning(
                    "Model %s version %d failed to load: %s: %s",
                    observed.model,
                    v.version,
                    v.error_code,
                    v.error_message,
                )

    async def _publish(self) -> None:
        for name, ok in verdicts(self.health, started=self.started, draining=self.draining).items():
            status = SERVING if ok else NOT_SERVING
            if self._published.get(name) != status:
                self._published[name] = status
                await self.servicer.set(name, status)
                log.info(
                    "Set health service %r of model %s to %s",
                    name,
                    self.config.model,
                    health_pb2.HealthCheckResponse.ServingStatus.Name(status),
                )

    def status(self) -> BridgeStatus:
        return BridgeStatus(
            health=self.health,
            started=self.started,
            draining=self.draining,
            services={name: status == SERVING for name, status in self._published.items()},
        )

    def poll_is_fresh(self) -> bool:
        return time.monotonic() - self._last_poll <= self.config.stale_after

    # ----- HTTP -------------------------------------------------------------------------

    async def _handle_http(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            try:
                request = await asyncio.wait_for(_read_request(reader), 10)
            except (ValueError, TimeoutError, ConnectionError):
                await _respond(writer, 400, "Bad request\n")
                return
            code, body, ctype, extra = await self._route(request)
            await _respond(writer, code, body, ctype, head=request.method == "HEAD", headers=extra)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _route(self, request: HttpRequest) -> tuple[int, str, str, dict[str, str]]:
        method, path = request.method, request.path
        allowed = ALLOWED_METHODS.get(path)
        if allowed is None:
            return 404, "Not found\n", "text/plain", {}
        if method not in allowed:
            return 405, "Method not allowed\n", "text/plain", {"Allow": ", ".join(allowed)}
        code, body, ctype = await self._answer(request)
        return code, body, ctype, {}

    async def _answer(self, request: HttpRequest) -> tuple[int, str, str]:
        path = request.path
        if path == "/status":
            return 200, render_status_json(self.status()) + "\n", "application/json"
        if path == "/healthz":
            if self.poll_is_fresh():
                return 200, "ok\n", "text/plain"
            return 503, "The poll loop has stalled\n", "text/plain"
        if path == "/drain":
            if not drain_allowed(self.config.drain_token, request.headers):
                log.warning(
                    "Refused a drain of model %s without the drain token", self.config.model
                )
                return 403, "A drain needs the drain token\n", "text/plain"
            try:
                seconds = drain_seconds_param(request.query)
            except ValueError as exc:
                return 400, f"{exc}\n", "text/plain"
            await self.drain(seconds)
            return 200, "Drained\n", "text/plain"
        raise AssertionError(f"no handler for {path}")  # ALLOWED_METHODS names every path


# The methods each path answers. /status and /healthz only read. /drain changes state: it
# takes GET (a preStop `httpGet` can send nothing else) and POST, but not HEAD, which
# clients, proxies and crawlers treat as safe to send at will.
ALLOWED_METHODS: dict[str, tuple[str, ...]] = {
    "/status": ("GET", "HEAD"),
    "/healthz": ("GET", "HEAD"),
    "/drain": ("GET", "POST"),
}
MAX_DRAIN_SECONDS = 3600.0


def drain_seconds_param(query: dict[str, list[str]]) -> float | None:
    """The optional `seconds` of `/drain?seconds=N` (the preStop hook passes it)."""
    values = query.get("seconds")
    if not values:
        return None
    try:
        seconds = float(values[-1])
    except ValueError:
        raise ValueError(f"seconds={values[-1]!r} is not a number") from None
    if not 0 <= seconds <= MAX_DRAIN_SECONDS:
        raise ValueError(f"seconds must be between 0 and {MAX_DRAIN_SECONDS:g}")
    return seconds


def drain_allowed(token: str, headers: dict[str, str]) -> bool:
    if not token:
        return True
    given = headers.get(DRAIN_TOKEN_HEADER.lower(), "")
    return hmac.compare_digest(given.encode(), token.encode())


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case


async def _read_request(reader: asyncio.StreamReader) -> HttpRequest:
    request_line = (await reader.readline()).decode("latin-1").strip()
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError(f"bad request line {request_line!r}")
    headers: dict[str, str] = {}
    for _ in range(100):
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise ValueError(f"bad header line {line!r}")
        headers[name.strip().lower()] = value.strip()
    else:
        raise ValueError("too many headers")
    path, _, query = parts[1].partition("?")
    return HttpRequest(parts[0], path, urllib.parse.parse_qs(query), headers)


_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


async def _respond(
    writer: asyncio.StreamWriter,
    code: int,
    body: str,
    ctype: str = "text/plain",
    *,
    head: bool = False,
    headers: dict[str, str] | None = None,
) -> None:
    data = body.encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    header = (
        f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}\r\n"
        f"Content-Type: {ctype}; charset=utf-8\r\n"
        f"Content-Length: {len(data)}\r\n"
        f"{extra}"
        "Connection: close\r\n\r\n"
    ).encode()
    writer.write(header if head else header + data)
    await writer.drain()


async def run_bridge(config: BridgeConfig) -> None:
    await HealthBridge(config).serve()
