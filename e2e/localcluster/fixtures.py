"""pytest plugin: a session-wide local control plane, its kubeconfig, kubectl, namespaces.

Registered by the root ``conftest.py``. With ``TFLEET_E2E_KUBECONFIG`` set, the tests run
against that cluster (kind, for instance) instead: ``local_cluster`` is then skipped, the
other fixtures use the given kubeconfig, and tests marked ``simulated`` are skipped.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from . import LocalCluster

ENV_KUBECONFIG = "TFLEET_E2E_KUBECONFIG"
ROOT = Path(__file__).resolve().parents[2]
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"


def real_cluster_kubeconfig() -> Path | None:
    value = os.environ.get(ENV_KUBECONFIG)
    return Path(value) if value else None


class RunningCluster:
    """A LocalCluster served from a background thread with its own event loop.

    Sync tests, async tests (on their own loops) and subprocesses can all use it; code
    that touches ``cluster`` directly must run on the server loop, through ``call``.
    """

    def __init__(self, kubeconfig: Path, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._lc = LocalCluster(port=0, kubeconfig=kubeconfig, **options)
        self._thread = threading.Thread(target=self._run, name="localcluster", daemon=True)
        self._started: Future[None] = Future()
        self._stopping: asyncio.Event | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())
        self.loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        try:
            await self._lc.start()
        except BaseException as exc:
            self._started.set_exception(exc)
            return
        self._started.set_result(None)
        try:
            await self._stopping.wait()
        finally:
            await self._lc.stop()

    def start(self) -> RunningCluster:
        self._thread.start()
        self._started.result(timeout=30)
        return self

    def stop(self) -> None:
        if self._stopping is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout=10)

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        """Run a coroutine on the server loop and return its result (from any thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def url(self) -> str:
        return self._lc.url

    @property
    def kubeconfig(self) -> Path:
        assert self._lc.kubeconfig is not None
        return self._lc.kubeconfig

    @property
    def cluster(self) -> Any:
        return self._lc.cluster

    @property
    def request_log(self) -> list[dict[str, Any]]:
        return self._lc.request_log

    @property
    def faults(self) -> Any:
        """The ``FaultInjector`` (thread-safe: usable from the test's thread)."""
        return self._lc.faults

    def restart_apiserver(self, down_seconds: float = 0.5) -> None:
        """Restart the API server keeping the store; returns once it serves again."""
        self.call(self._lc.restart_apiserver(down_seconds), timeout=30 + down_seconds)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "simulated: needs the local control plane (its simulated behaviour, or its process runtime and model store) "
        "(skipped on a real cluster)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if real_cluster_kubeconfig() is None:
        return
    skip = pytest.mark.skip(reason=f"needs the local control plane ({ENV_KUBECONFIG} is set)")
    for item in items:
        if "simulated" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def _localcluster_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="localcluster-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="session")
def local_cluster(_localcluster_dir: Path) -> Iterator[RunningCluster]:
    """The session's local control plane (with the simulated controllers running)."""
    if real_cluster_kubeconfig() is not None:
        pytest.skip(f"needs the local control plane ({ENV_KUBECONFIG} is set)")
    running = RunningCluster(_localcluster_dir / "kubeconfig").start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def kubeconfig(request: pytest.FixtureRequest) -> Path:
    """The kubeconfig e2e tests use: ``$TFLEET_E2E_KUBECONFIG`` or the local control plane's."""
    real = real_cluster_kubeconfig()
    if real is not None:
        return real
    running: RunningCluster = request.getfixturevalue("local_cluster")
    return running.kubeconfig


@pytest.fixture(scope="session")
def kubectl(kubeconfig: Path, _localcluster_dir: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``kubectl(*args, input=None, check=True)`` running the project's kubectl v1.35."""
    if not KUBECTL.exists():
        pytest.skip(f"{KUBECTL} is missing (run `make tools`)")
    cache = _localcluster_dir / "kubectl-cache"

    def run(*args: str, input: str | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(KUBECTL), "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache), *args]
        result = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
        return result

    return run


@pytest.fixture(scope="session")
def _core_api(api_client: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api_client)


@pytest.fixture
def namespace(_core_api: Any) -> Iterator[str]:
    """A fresh namespace for one test, deleted (with everything in it) afterwards."""
    from kubernetes.client.rest import ApiException

    name = f"test-{uuid.uuid4().hex[:8]}"
    _core_api.create_namespace({"metadata": {"name": name, "labels": {"tfleet.dev/test": "true"}}})
    try:
        yield name
    finally:
        try:
            _core_api.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path) -> Iterator[Any]:
    """A ``kubernetes.client.ApiClient`` for the session's cluster."""
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(kubeconfig))
    yield client
    client.close()


@pytest.fixture(scope="session")
def widget_crd(api_client: Any) -> dict[str, Any]:
    """The control plane suite's ``Widget`` CRD (see ``e2e.localcluster.testing``), established."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    from .testing import WIDGET_CRD, WIDGET_CRD_NAME, eventually

    ext = client.ApiextensionsV1Api(api_client)
    try:
        ext.create_custom_resource_definition(WIDGET_CRD)
    except ApiException as exc:
        if exc.status != 409:
            raise

    def established() -> Any:
        crd = ext.read_custom_resource_definition(WIDGET_CRD_NAME)
        conditions = {c.type: c.status for c in (crd.status.conditions or [])}
        return crd if conditions.get("Established") == "True" else None

    return api_client.sanitize_for_serialization(eventually(established, timeout=30))
