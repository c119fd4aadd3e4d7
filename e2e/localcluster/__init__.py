"""A local Kubernetes control plane for integration and e2e tests (test infrastructure only).

``LocalCluster`` serves the Kubernetes API over plain HTTP on 127.0.0.1 from an in-memory
store, runs the simulated cluster (controllers, scheduler, kubelet) against it, and writes
a kubeconfig that kubectl, helm, kopf and the kubernetes client use unchanged::

    async with LocalCluster(port=0, kubeconfig=path) as lc:
        ...  # lc.url, lc.kubeconfig, lc.cluster (in-process API), lc.request_log

See ``e2e/README.md`` for what is emulated and what is not.
"""

from __future__ import annotations

from . import _dependencies

# Before anything imports them: a missing package stops the control plane here, with its
# name and how to install it, rather than letting it serve a laxer API.
_dependencies.require()

import asyncio  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import IO, TYPE_CHECKING, Any  # noqa: E402

import yaml  # noqa: E402
from aiohttp import web  # noqa: E402

from .errors import ApiError  # noqa: E402
from .faults import FaultInjector  # noqa: E402
from .server import ApiServer  # noqa: E402
from .store import Cluster  # noqa: E402

if TYPE_CHECKING:
    from .controllers.dns import ClusterDNS
    from .controllers.proxy import KubeProxy

__all__ = ["ApiError", "Cluster", "FaultInjector", "LocalCluster", "write_kubeconfig"]

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
        # Fault rules for chaos tests (faults.py); they outlive restart_apiserver.
        self.faults = FaultInjector()
        self._server = ApiServer(self.cluster, request_log=self.request_log if keep_request_log else None,
                                 bookmark_interval=bookmark_interval, fault_injector=self.faults,
                                 restart=self.restart_apiserver)
        self._restarting = asyncio.Lock()
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        # data-plane objects started by the controllers ("kube-proxy", "cluster-dns")
        self.components: dict[str, Any] = {}
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
        await self._serve()
        if self.kubeconfig is not None:
            write_kubeconfig(self.kubeconfig, self.url)
        if self.controllers_enabled:
            try:
                self._tasks = self._start_controllers()
            except BaseException:
                await self.stop()
                raise
        return self

    async def _serve(self) -> None:
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

    async def restart_apiserver(self, down_seconds: float = 0.5) -> None:
        """An API server restart that keeps the store, as when kube-apiserver is restarted
        in front of the same etcd: the port closes, every connection (so every watch) is
        dropped without a final chunk, and after ``down_seconds`` the same port serves the
        same objects and resourceVersions again. Watches resuming from a version in the
        history go on; the in-process controllers use the store directly and see nothing."""
        async with self._restarting:
            runner = self._runner
            if runner is None:
                raise RuntimeError("the API server is not running")
            self._runner = None
            for site in list(runner.sites):
                await site.stop()  # the listening socket first: new connects are refused
            server = runner.server
            for handler in list(server.connections if server is not None else []):
                if handler.transport is not None:
                    handler.transport.abort()
            await runner.cleanup()
            self.faults.record("restart")
            log.info("Stopped the API server for a restart (%.2fs down)", down_seconds)
            await asyncio.sleep(down_seconds)
            await self._serve()
            log.info("Restarted the API server on %s", self.url)

    def _start_controllers(self) -> list[asyncio.Task[Any]]:
        from . import controllers

        return list(controllers.start(self.cluster, self.controller_options or None,
                                      components=self.components))

    @property
    def kube_proxy(self) -> KubeProxy | None:
        """The running ``KubeProxy`` (option ``data_plane``), or None."""
        return self.components.get("kube-proxy")

    @property
    def cluster_dns(self) -> ClusterDNS | None:
        """The running ``ClusterDNS`` (option ``data_plane``), or None."""
        return self.components.get("cluster-dns")

    @property
    def dns_address(self) -> tuple[str, int] | None:
        """Where the cluster DNS answers, ``(ip, port)``, UDP and TCP; None without it."""
        dns = self.cluster_dns
        return dns.address if dns is not None else None

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.components.clear()
        await self.cluster.stop()
        async with self._restarting:  # not in the middle of a restart
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
