"""The process runtime of one local cluster: the pod workers of its process nodes, their
files, their network namespaces, and the cleanup of all of it (on stop, at interpreter
exit, and of a dead earlier run at start).

Everything it creates on the host is named with the cluster's prefix ``lcp<id>``:
network namespaces ``lcp<id>-<n>``, host veth ends ``lcp<id>v<n>``, and the state
directory ``$TMPDIR/localcluster-process/<id>/`` (pod directories, volumes, logs, staged
image files; ``owner.json`` says which process owns it).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import string
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..common import Informer, Key, Recorder, log
from ..nodes import node_internal_ip
from . import sandbox
from .images import Image, ImageContext, ImageRegistry
from .logs import log_lines, read_entries, select
from .worker import PodWorker

RUNTIME_LABEL = "localcluster.tfleet.dev/runtime"
PROCESS = "process"
SIMULATED = "simulated"
PREFIX = "lcp"
STATE_BASE = Path(tempfile.gettempdir()) / "localcluster-process"


class ProcessRuntimeUnavailable(RuntimeError):
    """This machine cannot run pods as processes."""


def is_process_node(node: Mapping[str, Any]) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    return labels.get(RUNTIME_LABEL) == PROCESS


def check_host() -> None:
    """Raise ProcessRuntimeUnavailable naming what the machine lacks."""
    missing = sandbox.missing_host_support()
    if missing:
        raise ProcessRuntimeUnavailable(
            "the process runtime (node label " f"{RUNTIME_LABEL}={PROCESS}) cannot run on this "
            "machine: it needs " + "; ".join(missing)
        )


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _kill_processes_mentioning(text: str) -> int:
    """SIGKILL every process whose command line contains ``text`` (the containers of a
    dead run name their spec file, which lives in that run's directory)."""
    killed = 0
    needle = text.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if needle in cmdline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry), signal.SIGKILL)
                killed += 1
    return killed


def _runs(base: Path) -> tuple[set[str], list[str]]:
    """The run ids under ``base``: (those whose owner lives, those whose owner is gone)."""
    live: set[str] = set()
    dead: list[str] = []
    if base.is_dir():
        for run_dir in sorted(base.iterdir()):
            try:
                owner = json.loads((run_dir / "owner.json").read_text())
                alive = _start_time(int(owner["pid"])) == owner.get("start")
            except (OSError, ValueError, KeyError):
                alive = False
            if alive:
                live.add(run_dir.name)
            else:
                dead.append(run_dir.name)
    return live, dead


def remove_dead_runs(base: Path = STATE_BASE) -> list[str]:
    """Remove what runs whose owner process is gone left behind: their containers, network
    namespaces, veths and directories. Returns their ids."""
    live, dead = _runs(base)
    live |= _runs(STATE_BASE)[0]  # never touch a live run, wherever it keeps its state
    for cid in dead:
        _kill_processes_mentioning(str(base / cid) + "/")
    # Namespaces and links of any run that is not live, with or without a directory.
    names = set(sandbox.list_netns(PREFIX)) | set(sandbox.list_links(PREFIX))
    orphan_ids = {n[len(PREFIX):len(PREFIX) + 4] for n in names} - live
    for cid in sorted(orphan_ids | set(dead)):
        sandbox.remove_leftovers_sync(PREFIX + cid)
    for cid in dead:
        shutil.rmtree(base / cid, ignore_errors=True)
    if dead or orphan_ids:
        log.info("Removed the leftovers of dead process-runtime runs: %s",
                 sorted(set(dead) | orphan_ids))
    return sorted(set(dead) | orphan_ids)


class ProcessRuntime:
    def __init__(self, cluster: Any, pods: Informer, events: Recorder, ips: Any, *,
                 storage_root: str | Path | None = None, backoff_scale: float = 1.0,
                 images: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.cluster = cluster
        self.pods = pods
        self.events = events
        self.ips = ips
        self.backoff_scale = backoff_scale
        self.python = sys.executable
        self.cid = ""
        self.prefix = ""
        self.state_dir = Path()
        self._own_storage = storage_root is None
        self._storage_option = Path(storage_root) if storage_root is not None else None
        self.storage_root = Path()
        self._image_option = dict(images or {})
        self.images = ImageRegistry(ImageContext(self.python, Path()), self._image_option)
        self.workers: dict[Key, PodWorker] = {}
        self._ips_of: dict[Key, tuple[str, str]] = {}  # key -> (node name, ip)
        self._slots = 0
        self._staged: dict[str, Path] = {}
        self._processes: set[int] = set()
        self.started = False
        # Called with a pod's key when its worker has finished (a successor may be waiting).
        self.requeue: Any = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Prepare the host: fails with ProcessRuntimeUnavailable if it cannot run pods."""
        if self.started:
            return
        check_host()
        remove_dead_runs()
        STATE_BASE.mkdir(parents=True, exist_ok=True)
        alphabet = string.ascii_lowercase + string.digits
        while True:
            self.cid = "".join(secrets.choice(alphabet) for _ in range(4))
            self.state_dir = STATE_BASE / self.cid
            try:
                self.state_dir.mkdir()
                break
            except FileExistsError:
                continue
        self.prefix = PREFIX + self.cid
        (self.state_dir / "owner.json").write_text(
            json.dumps({"pid": os.getpid(), "start": _start_time(os.getpid())}))
        self.storage_root = self._storage_option or (self.state_dir / "storage")
        self.storage_root.mkdir(parents=True, exist_ok=True)
        self.images = ImageRegistry(ImageContext(self.python, self.storage_root), self._image_option)
        self.cluster.pod_log_source = self
        atexit.register(self._cleanup_sync)
        self.started = True
        log.info("Started the process runtime %s (state in %s, storage root %s)",
                 self.prefix, self.state_dir, self.storage_root)

    async def shutdown(self) -> None:
        """Stop every pod at once (the node goes away) and remove what the runtime made."""
        if not self.started:
            return
        workers = list(self.workers.values())
        for w in workers:
            if w.task is not None:
                w.task.cancel()
        if workers:
            await asyncio.gather(*(w.task for w in workers if w.task), return_exceptions=True)
        self.workers.clear()
        for w in workers:
            await sandbox.remove(w.sandbox.netns, w.sandbox.veth)
        self._cleanup_sync()
        atexit.unregister(self._cleanup_sync)
        if getattr(self.cluster, "pod_log_source", None) is self:
            self.cluster.pod_log_source = None
        self.started = False
        log.info("Stopped the process runtime %s", self.prefix)

    def _cleanup_sync(self) -> None:
        for pid in list(self._processes):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self._processes.clear()
        if self.state_dir != Path() and self.state_dir.exists():
            _kill_processes_mentioning(str(self.state_dir) + "/")
        if self.prefix:
            sandbox.remove_leftovers_sync(self.prefix)
        if self.state_dir != Path():
            shutil.rmtree(self.state_dir, ignore_errors=True)

    # ------------------------------------------------------------------- pods

    def host_ip(self, node: Mapping[str, Any]) -> str:
        return node_internal_ip(node) or "172.18.0.1"

    def ensure(self, key: Key, pod: dict[str, Any], node: dict[str, Any]) -> None:
        worker = self.workers.get(key)
        uid = (pod.get("metadata") or {}).get("uid")
        if worker is not None and worker.uid == uid:
            worker.update(pod)
            return
        if worker is not None:
            worker.pod_removed()  # an older pod of the same name: it goes first
            return
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            return  # deleted before it ever ran here; the kubelet's final delete follows
        node_name = node["metadata"]["name"]
        ip = self.ips.allocate(node)
        self._ips_of[key] = (node_name, ip)
        self._slots += 1
        slot = _base36(self._slots)
        worker = PodWorker(self, pod, node, ip, slot)
        self.workers[key] = worker
        worker.start()
        assert worker.task is not None
        worker.task.add_done_callback(lambda _t, key=key, worker=worker: self._worker_done(key, worker))

    def _worker_done(self, key: Key, worker: PodWorker) -> None:
        if self.workers.get(key) is worker:
            del self.workers[key]
        owner = self._ips_of.pop(key, None)
        if owner is not None:
            self.ips.release(*owner)
        if self.requeue is not None:
            self.requeue(key)

    def forget(self, key: Key) -> None:
        worker = self.workers.get(key)
        if worker is not None:
            worker.pod_removed()

    def reallocate_ip(self, worker: PodWorker, old_ip: str) -> str:
        key = (worker.namespace, worker.name)
        node_name = worker.node["metadata"]["name"]
        # Keep the taken address claimed so that it is not handed out again.
        ip = self.ips.allocate(worker.node)
        self._ips_of[key] = (node_name, ip)
        return ip

    def claim_dir(self, namespace: str, claim: str) -> Path:
        """Where a PersistentVolumeClaim's data lives: <storage_root>/volumes/<ns>/<claim>."""
        return self.storage_root / "volumes" / namespace / claim

    def log_dir(self, namespace: str, name: str, uid: str) -> Path:
        return self.state_dir / "logs" / f"{namespace}_{name}_{uid}"

    def stage_image(self, image: Image) -> Path:
        """The image's files written once under the state directory (per digest)."""
        digest = image.digest
        root = self._staged.get(digest)
        if root is not None:
            return root
        root = self.state_dir / "images" / digest[:16] / "rootfs"
        for path, (content, mode) in image.files.items():
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content if isinstance(content, bytes) else content.encode())
            target.chmod(mode)
        root.mkdir(parents=True, exist_ok=True)
        self._staged[digest] = root
        return root

    def track_process(self, pid: int) -> None:
        self._processes.add(pid)

    def untrack_process(self, pid: int) -> None:
        self._processes.discard(pid)

    # ------------------------------------------------------------------- logs

    def handles(self, namespace: str, name: str, uid: str) -> bool:
        worker = self.workers.get((namespace, name))
        return worker is not None and worker.uid == uid

    def read_log(self, namespace: str, name: str, container: str, *, previous: bool = False,
                 tail_lines: int | None = None, timestamps: bool = False,
                 limit_bytes: int | None = None, since: str | None = None) -> tuple[bool, str, Any]:
        """(ok, text or error message, the instance) for GET .../pods/<name>/log."""
        worker = self.workers.get((namespace, name))
        if worker is None:
            return False, f'pod "{name}" cannot be found - no logs available', None
        inst = worker.log_instance(container, previous)
        if isinstance(inst, str):
            return False, inst, None
        entries = read_entries(inst.log_path)
        if since is not None:
            entries = [e for e in entries if e.time >= since]
        return True, select(log_lines(entries, timestamps), tail_lines, limit_bytes), inst

    async def follow_log(self, inst: Any, already: int, timestamps: bool) -> Any:
        """Yield what the instance logs after the first ``already`` lines, until it exits."""
        sent = already
        while True:
            finished = not inst.running
            lines = log_lines(read_entries(inst.log_path), timestamps)
            complete = lines if finished else [ln for ln in lines if ln.endswith("\n")]
            if len(complete) > sent:
                yield "".join(complete[sent:])
                sent = len(complete)
            if finished:
                return
            await asyncio.sleep(0.2)


def _base36(n: int) -> str:
    digits = string.digits + string.ascii_lowercase
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out
