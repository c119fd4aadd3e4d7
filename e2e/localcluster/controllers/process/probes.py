"""Probe and hook handlers, run as the kubelet runs them: httpGet, tcpSocket and grpc from
the host against the pod IP (pkg/probe/http, pkg/probe/tcp, pkg/probe/grpc); exec inside
the container's namespaces (pkg/probe/exec, through nsenter here); sleep for hooks
(pkg/kubelet/lifecycle/handlers.go).

Each returns (result, message): SUCCESS, FAILURE, or UNKNOWN when the probe could not be
run at all (a port name the container does not declare): the kubelet throws such a
result away (pkg/kubelet/prober/worker.go) and reports "probe errored".
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiohttp

SUCCESS = "success"
FAILURE = "failure"
UNKNOWN = "unknown"

# pkg/probe/http/request.go: the kubelet's User-Agent, kube-probe/<major>.<minor>.
USER_AGENT = "kube-probe/1.35"

ExecFunc = Callable[[Sequence[str], float], Awaitable[tuple[int | None, str]]]


class ProbeError(Exception):
    pass


def resolve_port(port: Any, container: Mapping[str, Any]) -> int:
    """pkg/kubelet/prober/prober.go ResolveContainerPort: a number, or the name of one of
    the container's ports."""
    if isinstance(port, int):
        return port
    text = str(port)
    if text.isdigit():
        return int(text)
    for p in container.get("ports") or []:
        if p.get("name") == text:
            return int(p["containerPort"])
    raise ProbeError(f"couldn't find port: {text} in {container.get('name')}")


def _dial_error(host: str, port: int, exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"dial tcp {host}:{port}: i/o timeout"
    if isinstance(exc, ConnectionRefusedError):
        return f"dial tcp {host}:{port}: connect: connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return f"dial tcp {host}:{port}: connect: {exc.strerror.lower()}"
    return f"dial tcp {host}:{port}: {exc}"


async def tcp_probe(host: str, port: int, timeout: float) -> tuple[str, str]:
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        return FAILURE, _dial_error(host, port, exc)
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return SUCCESS, ""


async def http_get(
    handler: Mapping[str, Any], host: str, port: int, timeout: float
) -> tuple[str, str, int | None]:
    """One GET as the kubelet sends it; (result, message, status code). 2xx and 3xx are
    success (pkg/probe/http/http.go); redirects are followed, at most 10."""
    scheme = (handler.get("scheme") or "HTTP").lower()
    path = handler.get("path") or "/"
    if not path.startswith("/"):
        path = "/" + path
    target_host = handler.get("host") or host
    url = f"{scheme}://{target_host}:{port}{path}"
    headers = {"User-Agent": USER_AGENT, "Accept": "*/*"}
    for h in handler.get("httpHeaders") or []:
        name = h.get("name", "")
        if name.lower() == "user-agent":
            headers.pop("User-Agent", None)
        if name.lower() == "accept":
            headers.pop("Accept", None)
        headers[name] = h.get("value", "")
    ssl_ctx: ssl.SSLContext | bool = False
    if scheme == "https":
        ssl_ctx = ssl.create_default_context()
        ssl_ctx.check_hostname = False
        ssl_ctx.verify_mode = ssl.CERT_NONE  # the kubelet skips verification too
    try:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout), trust_env=False
        ) as session, session.get(
            url, headers=headers, allow_redirects=True, max_redirects=10, ssl=ssl_ctx
        ) as resp:
            await resp.content.read(10 * 1024)  # the kubelet reads at most 10 KiB
            code = resp.status
    except TimeoutError:
        return FAILURE, (f'Get "{url}": context deadline exceeded (Client.Timeout exceeded '
                         "while awaiting headers)"), None
    except aiohttp.ClientConnectorError as exc:
        return FAILURE, f'Get "{url}": {_dial_error(target_host, port, exc.os_error)}', None
    except aiohttp.ClientError as exc:
        return FAILURE, f'Get "{url}": {exc}', None
    if 200 <= code < 400:
        return SUCCESS, "", code
    return FAILURE, f"HTTP probe failed with statuscode: {code}", code


async def grpc_probe(host: str, port: int, service: str, timeout: float) -> tuple[str, str]:
    """grpc.health.v1.Health/Check with the probe's service (pkg/probe/grpc/grpc.go)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    addr = f"{host}:{port}"
    async with grpc.aio.insecure_channel(addr) as channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout)
        except TimeoutError:
            return FAILURE, (f'timeout: failed to connect service "{addr}" within '
                             f"{_secs(timeout)}: context deadline exceeded")
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNIMPLEMENTED:
                return FAILURE, ("error: this server does not implement the grpc health protocol "
                                 f"(grpc.health.v1.Health): {exc.details()}")
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return FAILURE, f"timeout: health rpc did not complete within {_secs(timeout)}"
            return FAILURE, (f"error: health rpc probe failed: rpc error: code = "
                             f"{_code_name(code)} desc = {exc.details()}")
    if resp.status != health_pb2.HealthCheckResponse.SERVING:
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
        return FAILURE, f'service unhealthy (responded with "{name}")'
    return SUCCESS, ""


def _code_name(code: Any) -> str:
    return "".join(part.capitalize() for part in code.name.split("_"))


def _secs(value: float) -> str:
    return f"{value:g}s"


async def exec_probe(command: Sequence[str], timeout: float, run: ExecFunc) -> tuple[str, str]:
    code, output = await run(command, timeout)
    if code is None:
        return FAILURE, f"command {' '.join(repr(c) for c in command)} timed out"
    if code != 0:
        return FAILURE, output
    return SUCCESS, output


async def run_handler(
    handler: Mapping[str, Any],
    container: Mapping[str, Any],
    pod_ip: str,
    timeout: float,
    run_exec: ExecFunc,
) -> tuple[str, str]:
    """Run one probe handler (exec, httpGet, tcpSocket, grpc)."""
    try:
        if "exec" in handler:
            return await exec_probe((handler["exec"] or {}).get("command") or [], timeout, run_exec)
        if "httpGet" in handler:
            h = handler["httpGet"] or {}
            result, message, _ = await http_get(h, pod_ip, resolve_port(h.get("port"), container), timeout)
            return result, message
        if "tcpSocket" in handler:
            h = handler["tcpSocket"] or {}
            host = h.get("host") or pod_ip
            return await tcp_probe(host, resolve_port(h.get("port"), container), timeout)
        if "grpc" in handler:
            h = handler["grpc"] or {}
            return await grpc_probe(pod_ip, int(h.get("port", 0)), h.get("service") or "", timeout)
    except ProbeError as exc:
        return UNKNOWN, str(exc)
    return UNKNOWN, "missing probe handler"


async def run_hook(
    handler: Mapping[str, Any],
    container: Mapping[str, Any],
    pod_ip: str,
    timeout: float,
    run_exec: ExecFunc,
) -> str | None:
    """Run a lifecycle hook (pkg/kubelet/lifecycle/handlers.go); the error message, or None
    when it succeeded. A hook's HTTP status is not checked for success: only the request
    failing is an error (as the kubelet's runHTTPHandler discards the response)."""
    try:
        if "sleep" in handler:
            await asyncio.sleep(float((handler["sleep"] or {}).get("seconds", 0)))
            return None
        if "exec" in handler:
            code, output = await run_exec((handler["exec"] or {}).get("command") or [], timeout)
            if code is None:
                return "command timed out"
            return None if code == 0 else f"command exited with {code}: {output}"
        if "httpGet" in handler:
            h = handler["httpGet"] or {}
            _result, message, code = await http_get(
                h, pod_ip, resolve_port(h.get("port"), container), timeout)
            return None if code is not None else message
        if "tcpSocket" in handler:
            return "tcpSocket is deprecated as a lifecycle handler and is not run"
    except ProbeError as exc:
        return str(exc)
    return "missing lifecycle handler"
