"""A local Kubernetes control plane for integration and e2e tests (test infrastructure only).

``LocalCluster`` serves the Kubernetes API over plain HTTP on 127.0.0.1 from an in-memory
store, runs the simulated cluster (controllers, scheduler, kubelet) against it, and writes
a kubeconfig that kubectl, helm, kopf and the kubernetes client use unchanged::

    async with LocalCluster(port=0, kubeconfig=path) as lc:
        ...  # lc.url, lc.kubeconfig, lc.cluster (in-process API), lc.request_log

See ``e2e/README.md`` for what is emulated and what is not.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import IO, Any

import yaml
from aiohttp import web

from .errors import ApiError
from .server import ApiServer
from .store import Cluster

__all__ = ["ApiError", "Cluster", "LocalCluster", "write_kubeconfig"]

log = logging.getLogger("localcluster")


def write_kubeconfig(path: Path, url: str, namespace: str = "default") -> Path:
    """A kubeconfig with one context, ``localcluster``, pointing at ``url`` (no auth)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "localcluster", "cluster": {"server": url}}],
        "users": [{"name": "localcluster", "user": {}}],
        "contexts": [{"name": "localcluster", "context": {
            "cluster": "localcluster", "user": "localcluster", "namespace": namespace}}],
        "current-context": "localcluster",
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


class LocalCluster:
    """Runs the API server (and, unless disabled, the simulated controllers) in this loop."""

    def __init__(self, port: int = 0, kubeconfig: str | Path | None = None, *,
                 host: str = "127.0.0.1", controllers: bool = True,
                 controller_options: dict[str, Any] | None = None,
                 request_log_path: str | Path | None = None, keep_request_log: bool = True,
                 bookmark_interval: float = 5.0, history_size: int = 10000) -> None:
        self.host = host
        self.port = port
        self.kubeconfig: Path | None = Path(kubeconfig) if kubeconfig else None
        self.controllers_enabled = controllers
        self.controller_options = dict(controller_options or {})
        self.request_log_path = Path(request_log_path) if request_log_path else None
        self.request_log: list[dict[str, Any]] = []
        self.cluster = Cluster(history_size=history_size)
        self._log_file: IO[str] | None = None
        self._server = ApiServer(self.cluster, request_log=self.request_log if keep_request_log else None,
                                 bookmark_interval=bookmark_interval)
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._profile: tuple[Any, str] | None = None
        self.url = ""

    async def start(self) -> LocalCluster:
        # LOCALCLUSTER_PROFILE=FILE: profile the control plane, written to FILE on stop
        # (pstats format), to see where its CPU goes under a benchmark.
        profile_path = os.environ.get("LOCALCLUSTER_PROFILE")
        if profile_path:
            import cProfile

            self._profile = (cProfile.Profile(), profile_path)
            self._profile[0].enable()
        if self.request_log_path is not None:
            self._log_file = self.request_log_path.open("a")
            self._server.request_log_file = self._log_file
        self.cluster.start()
        self._runner = web.AppRunner(self._server.app(), access_log=None, handle_signals=False,
                                     shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []  # the bound port when port=0
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{self.port}"
        self._server.address = f"{self.host}:{self.port}"
        if self.kubeconfig is not None:
            write_kubeconfig(self.kubeconfig, self.url)
        if self.controllers_enabled:
            try:
                self._tasks = self._start_controllers()
            except BaseException:
                await self.stop()
                raise
        return self

    def _start_controllers(self) -> list[asyncio.Task[Any]]:
        try:
            from . import controllers
        except ImportError:
            log.warning("Simulated controllers are unavailable; serving the API only")
            return []
        return list(controllers.start(self.cluster, self.controller_options or None))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.cluster.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._profile is not None:
            self._profile[0].disable()
            self._profile[0].dump_stats(self._profile[1])
            self._profile = None

    async def __aenter__(self) -> LocalCluster:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
