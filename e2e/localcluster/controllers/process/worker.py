"""One pod on a process node: its sandbox, its containers as processes, its probes, its
status and its termination. Modelled on the kubelet's pod worker and
kuberuntime_manager.go SyncPod: every change (a process exit, a probe result, the pod
being deleted, a back-off running out) wakes the worker, which computes what to do from
the state it has, does it, and writes the pod's status when it differs from the stored one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import kubelet
from ..common import error_code, fmt_time, log, now_utc
from ..scheduler import with_condition
from . import containers as ct
from . import probes, sandbox
from .images import Image, ImageNotKnown
from .logs import LogWriter, log_lines, read_entries

if TYPE_CHECKING:
    from .runtime import ProcessRuntime

ENTER = str(Path(__file__).with_name("enter.py"))
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CONDITION_ORDER = {"PodReadyToStartContainers": 0, "Initialized": 1, "Ready": 2,
                   "ContainersReady": 3, "PodScheduled": 4}
KUBELET_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")
# A sync that failed for want of a ConfigMap, a Secret or a volume is tried again after this.
SYNC_RETRY_SECONDS = 1.0


@dataclass
class Instance:
    """One run of a container (what containerd calls a container)."""

    number: int  # its restartCount
    container_id: str
    log_path: Path
    term_log: Path
    env: dict[str, str]
    started_at: datetime
    started_mono: float
    proc: asyncio.subprocess.Process | None = None
    host_pid: int | None = None
    finished_at: datetime | None = None
    finished_mono: float = 0.0
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    error_pipe: int | None = None  # read end of the pipe enter.py reports start errors on
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.finished_at is None

    def terminated(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": fmt_time(self.started_at),
            "finishedAt": fmt_time(self.finished_at or self.started_at),
            "containerID": self.container_id,
        }
        if self.message:
            out["message"] = self.message
        return out


@dataclass
class ContainerState:
    spec: dict[str, Any]
    role: str  # "init", "sidecar" or "main"
    backoff: ct.Backoff
    image_backoff: ct.Backoff
    history: list[Instance] = field(default_factory=list)
    waiting: tuple[str, str] | None = None
    restart_pending: bool = False
    started: bool = False
    ready: bool = False
    stopping: asyncio.Task[None] | None = None
    image: Image | None = None

    @property
    def name(self) -> str:
        return str(self.spec.get("name", ""))

    @property
    def newest(self) -> Instance | None:
        return self.history[-1] if self.history else None

    @property
    def running(self) -> bool:
        return self.newest is not None and self.newest.running

    def previous(self) -> Instance | None:
        """The instance ``lastState`` and ``--previous`` show."""
        newest = self.newest
        if newest is None:
            return None
        if newest.running or not self.restart_pending:
            return self.history[-2] if len(self.history) > 1 else None
        return newest


class TerminationOrdering:
    """kuberuntime_termination_order.go: main containers stop at once; each sidecar waits
    until every main container and every sidecar declared after it has exited."""

    def __init__(self, mains: list[str], sidecars: list[str], running: set[str]) -> None:
        self._done: dict[str, asyncio.Event] = {}
        self._waits: dict[str, list[str]] = {}
        for name in mains + sidecars:
            ev = asyncio.Event()
            if name not in running:
                ev.set()
            self._done[name] = ev
        for i, name in enumerate(sidecars):
            self._waits[name] = mains + sidecars[i + 1 :]

    async def wait_for_turn(self, name: str, budget: float) -> float:
        start = time.monotonic()
        waits = [self._done[n].wait() for n in self._waits.get(name, []) if n in self._done]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), budget)
        return time.monotonic() - start

    def terminated(self, name: str) -> None:
        if name in self._done:
            self._done[name].set()


class PodWorker:
    def __init__(self, runtime: ProcessRuntime, pod: dict[str, Any], node: dict[str, Any],
                 pod_ip: str, slot: str) -> None:
        self.rt = runtime
        self.pod = pod
        self.node = node
        m = pod.get("metadata") or {}
        self.namespace = m.get("namespace") or ""
        self.name = m.get("name") or ""
        self.uid = m.get("uid") or ""
        self.pod_ip = pod_ip
        self.host_ip = runtime.host_ip(node)
        self.sandbox = sandbox.Sandbox(f"{runtime.prefix}-{slot}", f"{runtime.prefix}v{slot}", pod_ip)
        self.dir = runtime.state_dir / "pods" / f"{self.namespace}_{self.name}_{self.uid}"
        self.sandbox_ready = False
        self.volumes: dict[str, ct.VolumePlan] | None = None
        self.volume_dirs: dict[str, Path] = {}
        self.deleting = False
        self.vanished = False
        self.initialized = False
        self.stopped = False  # the pod reached Succeeded or Failed: nothing restarts
        self.start_time: datetime | None = None
        self._wake = asyncio.Event()
        self._wake_at: float | None = None
        self._done = asyncio.Event()
        self.termination: asyncio.Task[None] | None = None
        spec = pod.get("spec") or {}
        scale = runtime.backoff_scale
        self.states: list[ContainerState] = []
        for c in spec.get("initContainers") or []:
            role = "sidecar" if c.get("restartPolicy") == "Always" else "init"
            self.states.append(self._state(c, role, scale))
        for c in spec.get("containers") or []:
            self.states.append(self._state(c, "main", scale))
        self.task: asyncio.Task[None] | None = None

    @staticmethod
    def _state(spec: dict[str, Any], role: str, scale: float) -> ContainerState:
        return ContainerState(
            spec, role,
            backoff=ct.Backoff(ct.BACKOFF_INITIAL_SECONDS * scale, ct.BACKOFF_MAX_SECONDS * scale),
            image_backoff=ct.Backoff(ct.BACKOFF_INITIAL_SECONDS * scale, ct.BACKOFF_MAX_SECONDS * scale),
        )

    # ------------------------------------------------------------------ plumbing

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def spec(self) -> dict[str, Any]:
        return self.pod.get("spec") or {}

    def state(self, name: str) -> ContainerState | None:
        return next((s for s in self.states if s.name == name), None)

    def poke(self) -> None:
        self._wake.set()

    def wake_in(self, seconds: float) -> None:
        due = time.monotonic() + max(seconds, 0.0)
        if self._wake_at is None or due < self._wake_at:
            self._wake_at = due

    def update(self, pod: dict[str, Any]) -> None:
        """A newer copy of the pod from the API. Only its deletion (or, with readiness
        gates, conditions others write) matters: the kubelet does not sync a pod again
        because its status was written, its own writes included."""
        self.pod = pod
        if (pod.get("metadata") or {}).get("deletionTimestamp") and not self.deleting:
            self.deleting = True
            self.poke()
        elif (pod.get("spec") or {}).get("readinessGates"):
            self.poke()

    def pod_removed(self) -> None:
        """The pod is gone from the API (force-deleted): stop it all the same."""
        self.vanished = True
        self.deleting = True
        self.poke()

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"localcluster-pod-{self.label}")

    async def wait_done(self) -> None:
        await self._done.wait()

    async def _event(self, event_type: str, reason: str, message: str) -> None:
        await self.rt.events.record(self.pod, "Pod", "v1", event_type, reason, message)

    # ---------------------------------------------------------------------- loop

    async def _run(self) -> None:
        try:
            await self._create_sandbox()
            while True:
                if self.deleting and self.termination is None:
                    self.termination = asyncio.create_task(self._terminate())
                    self.termination.add_done_callback(lambda _task: self.poke())
                if self.termination is None:
                    await self._sync()
                await self._write_status()
                if self.termination is not None and self.termination.done():
                    break
                await self._wait()
            self.termination.result()
            await self._finish()
        except asyncio.CancelledError:
            await self._kill_all_now()
            raise
        except Exception:
            log.exception("Pod worker of %s failed; stopping its containers", self.label)
            await self._kill_all_now()
            await sandbox.remove(self.sandbox.netns, self.sandbox.veth)
        finally:
            self._done.set()

    async def _wait(self) -> None:
        timeout = None
        if self._wake_at is not None:
            timeout = max(self._wake_at - time.monotonic(), 0.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()
        if self._wake_at is not None and time.monotonic() >= self._wake_at:
            self._wake_at = None

    # ------------------------------------------------------------------ sandbox

    async def _create_sandbox(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        while not self.deleting:
            try:
                await sandbox.create(self.sandbox)
                break
            except sandbox.AddressInUse as exc:
                log.warning("Pod IP %s of %s is taken on this host (%s); picking another",
                            self.pod_ip, self.label, exc)
                self.pod_ip = self.rt.reallocate_ip(self, self.pod_ip)
                self.sandbox = sandbox.Sandbox(self.sandbox.netns, self.sandbox.veth, self.pod_ip)
            except sandbox.SandboxError as exc:
                log.error("Failed to create the sandbox of Pod %s: %s", self.label, exc)
                await self._event("Warning", "FailedCreatePodSandBox",
                                  f"Failed to create pod sandbox: {exc}")
                await asyncio.sleep(SYNC_RETRY_SECONDS)
        if self.deleting:
            return  # deleted before its sandbox existed: nothing to run or stop
        self.sandbox_ready = True
        self.start_time = now_utc()
        log.info("Created the sandbox of Pod %s: netns %s, IP %s, in %.3fs",
                 self.label, self.sandbox.netns, self.pod_ip, time.monotonic() - started)

    # ------------------------------------------------------------------- volumes

    async def _get(self, resource: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(await self.rt.cluster.get(resource, self.namespace, name))
        except Exception as exc:
            if error_code(exc) == 404:
                return None
            raise

    async def _objects(self, configmaps: set[str], secrets: set[str]) -> tuple[
            dict[str, Any], dict[str, Any]]:
        cms = {n: await self._get("v1/configmaps", n) for n in configmaps}
        secs = {n: await self._get("v1/secrets", n) for n in secrets}
        return cms, secs

    async def _ensure_volumes(self) -> bool:
        if self.volumes is not None:
            return True
        cm_names, secret_names, claims = ct.volume_references(self.pod)
        try:
            for claim in sorted(claims):
                if await self._get("v1/persistentvolumeclaims", claim) is None:
                    raise ct.VolumeError(f'persistentvolumeclaim "{claim}" not found')
            cms, secs = await self._objects(cm_names, secret_names)
            plans = ct.volume_plans(self.pod, cms, secs)
        except ct.VolumeError as exc:
            for cs in self.states:
                if not cs.history:
                    cs.waiting = ("ContainerCreating" if cs.role != "main" or not self._has_init()
                                  else "PodInitializing", "")
            await self._event("Warning", "FailedMount", str(exc))
            log.warning("Failed to set up the volumes of Pod %s: %s", self.label, exc)
            self.wake_in(SYNC_RETRY_SECONDS)
            return False
        for name, plan in plans.items():
            self.volume_dirs[name] = self._materialise(plan)
        self.volumes = plans
        return True

    def _has_init(self) -> bool:
        return any(cs.role != "main" for cs in self.states)

    def _materialise(self, plan: ct.VolumePlan) -> Path:
        if plan.kind == "persistentVolumeClaim":
            path = self.rt.claim_dir(self.namespace, plan.claim)
            path.mkdir(parents=True, exist_ok=True)
            return path
        if plan.kind == "hostPath":
            return Path(plan.host_path)
        path = self.dir / "volumes" / plan.name
        path.mkdir(parents=True, exist_ok=True)
        for f in plan.files:
            target = path / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f.content)
            target.chmod(f.mode)
        return path

    def _mounts(self, cs: ContainerState, inst_term_log: Path, hosts: Path) -> list[ct.Mount]:
        assert self.volumes is not None
        out = []
        for vm in cs.spec.get("volumeMounts") or []:
            plan = self.volumes.get(vm.get("name", ""))
            if plan is None:
                raise ct.ContainerCreateError(f"volume {vm.get('name')} is not declared by the pod")
            source = self.volume_dirs[plan.name]
            sub = ct.safe_sub_path(vm.get("subPath") or "")
            if sub:
                source = source / sub
                if not source.exists():
                    source.mkdir(parents=True, exist_ok=True)
            read_only = bool(vm.get("readOnly")) or plan.read_only or plan.kind in ("configMap", "secret")
            out.append(ct.Mount(str(source), vm.get("mountPath", ""), read_only,
                                is_file=source.is_file()))
        path = cs.spec.get("terminationMessagePath") or "/dev/termination-log"
        out.append(ct.Mount(str(inst_term_log), path, False, is_file=True))
        if not any(m.target == "/etc/hosts" for m in out):
            out.append(ct.Mount(str(hosts), "/etc/hosts", False, is_file=True))
        return out

    # ---------------------------------------------------------------------- sync

    def _should_restart(self, cs: ContainerState, exit_code: int) -> bool:
        if cs.role == "sidecar":
            return True
        policy = self.spec.get("restartPolicy") or "Always"
        if cs.role == "init":
            return exit_code != 0 and policy != "Never"
        if policy == "Always":
            return True
        return policy == "OnFailure" and exit_code != 0

    async def _sync(self) -> None:
        if self.stopped or not self.sandbox_ready:
            return
        if not await self._ensure_volumes():
            return
        if not self.initialized:
            for cs in self.states:
                if cs.role == "main":
                    continue
                newest = cs.newest
                if cs.role == "init":
                    if newest is not None and not newest.running and newest.exit_code == 0:
                        continue
                    if newest is not None and newest.running:
                        return
                    if newest is not None and not self._should_restart(cs, newest.exit_code or 0):
                        await self._pod_failed()
                        return
                    await self._try_start(cs)
                    return
                if cs.running and cs.started:
                    continue
                if cs.running or cs.stopping is not None:
                    return
                await self._try_start(cs)
                return
            self.initialized = True
        else:
            for cs in self.states:
                if cs.role == "sidecar" and not cs.running and cs.stopping is None:
                    await self._try_start(cs)
        for cs in self.states:
            if cs.role != "main" or cs.running or cs.stopping is not None:
                continue
            newest = cs.newest
            if newest is not None and not cs.restart_pending and not self._should_restart(
                    cs, newest.exit_code or 0):
                continue
            await self._try_start(cs)
        mains = [cs for cs in self.states if cs.role == "main"]
        if all(cs.newest is not None and not cs.running and not cs.restart_pending
               and cs.stopping is None for cs in mains):
            # Nothing will run again: the pod is Succeeded or Failed; its sidecars stop.
            await self._stop_sidecars()
            self.stopped = True

    async def _pod_failed(self) -> None:
        await self._stop_sidecars()
        self.stopped = True

    async def _stop_sidecars(self) -> None:
        running = [cs for cs in self.states if cs.role == "sidecar" and cs.running]
        for cs in reversed(running):
            await self._kill(cs, ct.grace_period_seconds(self.pod), None,
                             f"Stopping container {cs.name}")

    async def _try_start(self, cs: ContainerState) -> bool:
        """kuberuntime_manager.go doBackOff then startContainer."""
        now = time.monotonic()
        newest = cs.newest
        if newest is not None and not newest.running:
            cs.restart_pending = True
            if cs.backoff.in_backoff_since(newest.finished_mono, now):
                delay = cs.backoff.delay
                message = (f"back-off {ct.go_duration(delay)} restarting failed container="
                           f"{cs.name} pod={ct.format_pod(self.name, self.namespace, self.uid)}")
                if cs.waiting != ("CrashLoopBackOff", message):
                    cs.waiting = ("CrashLoopBackOff", message)
                    await self._event("Warning", "BackOff",
                                      f"Back-off restarting failed container {cs.name} in pod "
                                      f"{ct.format_pod(self.name, self.namespace, self.uid)}")
                self.wake_in(newest.finished_mono + delay - now + 0.005)
                return False
            if cs.waiting is None or cs.waiting[0] == "CrashLoopBackOff":
                cs.backoff.next(newest.finished_mono, now)
        return await self._start(cs)

    async def _pull(self, cs: ContainerState) -> Image | None:
        """pkg/kubelet/images/image_manager.go EnsureImageExists, for images that are
        recipes: known ones are always present; unknown ones fail to pull, with back-off."""
        reference = cs.spec.get("image", "")
        now = time.monotonic()
        bo = cs.image_backoff
        if bo.last_update is not None and now - bo.last_update < bo.delay:
            message = f'Back-off pulling image "{reference}"'
            if cs.waiting != ("ImagePullBackOff", message):
                cs.waiting = ("ImagePullBackOff", message)
                await self._event("Normal", "BackOff", message)
            self.wake_in(bo.last_update + bo.delay - now + 0.005)
            return None
        try:
            image = self.rt.images.resolve(reference)
        except ImageNotKnown as exc:
            await self._event("Normal", "Pulling", f'Pulling image "{reference}"')
            await self._event("Warning", "Failed", f'Failed to pull image "{reference}": {exc}')
            await self._event("Warning", "Failed", "Error: ErrImagePull")
            bo.next(now, now)
            cs.waiting = ("ErrImagePull", str(exc))
            log.warning("Failed to pull image %s for container %s of Pod %s: %s",
                        reference, cs.name, self.label, exc)
            # The pod worker syncs again after a failed sync; the image back-off then
            # reports ImagePullBackOff until it runs out.
            self.wake_in(min(SYNC_RETRY_SECONDS * self.rt.backoff_scale, bo.delay / 2))
            return None
        if cs.image is None:
            await self._event("Normal", "Pulled",
                              f'Container image "{reference}" already present on machine')
        cs.image = image
        return image

    async def _start(self, cs: ContainerState) -> bool:
        image = await self._pull(cs)
        if image is None:
            return False
        ctx = ct.PodContext(
            name=self.name, namespace=self.namespace, uid=self.uid,
            node_name=self.spec.get("nodeName") or "",
            service_account=self.spec.get("serviceAccountName") or "default",
            pod_ip=self.pod_ip, host_ip=self.host_ip,
            labels=(self.pod.get("metadata") or {}).get("labels") or {},
            annotations=(self.pod.get("metadata") or {}).get("annotations") or {},
        )
        try:
            cm_names, secret_names = ct.referenced_objects([cs.spec])
            cms, secs = await self._objects(cm_names, secret_names)
            env = ct.container_env(cs.spec, ctx, cms, secs)
        except ct.ContainerConfigError as exc:
            cs.waiting = ("CreateContainerConfigError", str(exc))
            await self._event("Warning", "Failed", f"Error: {exc}")
            log.warning("Failed to configure container %s of Pod %s: %s", cs.name, self.label, exc)
            self.wake_in(SYNC_RETRY_SECONDS)
            return False
        number = len(cs.history)
        cdir = self.dir / "containers" / cs.name
        cdir.mkdir(parents=True, exist_ok=True)
        term_log = cdir / f"{number}-termination-log"
        term_log.write_bytes(b"")
        term_log.chmod(0o666)
        hosts = self.dir / "hosts"
        hostname = self.spec.get("hostname") or self.name
        if not hosts.exists():
            hosts.write_text(
                "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"
                "::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n"
                "fe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n"
                f"{self.pod_ip}\t{hostname}\n"
            )
        try:
            argv = ct.command_line(cs.spec, image.entrypoint, image.cmd, env)
            mounts = self._mounts(cs, term_log, hosts)
        except ct.ContainerCreateError as exc:
            cs.waiting = ("CreateContainerError", str(exc))
            await self._event("Warning", "Failed", f"Error: {exc}")
            self.wake_in(SYNC_RETRY_SECONDS)
            return False
        image_root = self.rt.stage_image(image)
        security = cs.spec.get("securityContext") or {}
        inst = Instance(
            number=number,
            container_id=kubelet.container_id(self.uid, cs.name, number),
            log_path=self.rt.log_dir(self.namespace, self.name, self.uid) / cs.name / f"{number}.log",
            term_log=term_log,
            env=ct.runtime_env(image.env, env),
            started_at=now_utc(),
            started_mono=time.monotonic(),
        )
        error_read, error_write = os.pipe()
        os.set_blocking(error_read, False)
        inst.error_pipe = error_read
        spec_file = cdir / f"{number}-spec.json"
        spec_file.write_text(json.dumps({
            "argv": argv,
            "env": inst.env,
            "working_dir": cs.spec.get("workingDir") or image.working_dir or "/",
            "hostname": hostname,
            "image_root": str(image_root) if image.files else "",
            "image_files": sorted(image.files),
            "mounts": [m.__dict__ for m in mounts]
                      + [ct.Mount(source, source, read_only).__dict__ for source, read_only in image.reaches],
            "read_only_root": bool(security.get("readOnlyRootFilesystem")),
            "error_fd": error_write,
        }))
        writer = LogWriter(inst.log_path)
        proc = await asyncio.create_subprocess_exec(
            "nsenter", f"--net={self.sandbox.netns_path}", "--",
            "unshare", "--pid", "--fork", "--mount", "--uts", "--mount-proc", "--kill-child",
            "--propagation", "private", "--",
            self.rt.python, ENTER, str(spec_file),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True, limit=1 << 20,
            env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
            pass_fds=(error_write,),
        )
        os.close(error_write)
        inst.proc = proc
        assert proc.stdout is not None and proc.stderr is not None
        copiers = [asyncio.create_task(writer.copy(proc.stdout, "stdout")),
                   asyncio.create_task(writer.copy(proc.stderr, "stderr"))]
        inst.host_pid = await _child_pid(proc.pid)
        self.rt.track_process(proc.pid)
        cs.history.append(inst)
        cs.waiting = None
        cs.restart_pending = False
        cs.started = False
        cs.ready = False
        await self._event("Normal", "Created", f"Created container: {cs.name}")
        await self._event("Normal", "Started", f"Started container {cs.name}")
        log.info("Started container %s of Pod %s (restart %d): pid %s, %s",
                 cs.name, self.label, number, inst.host_pid, " ".join(argv))
        inst.tasks.append(asyncio.create_task(self._watch(cs, inst, writer, copiers)))
        self._start_probes(cs, inst)
        self.poke()  # sync again: the next init container or sidecar may be due
        return True

    # -------------------------------------------------------------------- probes

    def _start_probes(self, cs: ContainerState, inst: Instance) -> None:
        spec = cs.spec
        if not spec.get("startupProbe"):
            cs.started = True
        if not spec.get("readinessProbe") and cs.role != "init":
            cs.ready = cs.started
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if spec.get(kind) and cs.role != "init":
                inst.tasks.append(asyncio.create_task(self._probe_loop(cs, inst, kind)))

    async def _probe_loop(self, cs: ContainerState, inst: Instance, kind: str) -> None:
        """pkg/kubelet/prober/worker.go: a tick every periodSeconds from the container's
        start; no result before initialDelaySeconds; liveness and readiness wait for the
        startup probe; a result counts once it repeats successThreshold (failureThreshold)
        times in a row; a failed liveness or startup probe restarts the container."""
        probe = cs.spec[kind]
        period = float(probe.get("periodSeconds") or 10)
        delay = float(probe.get("initialDelaySeconds") or 0)
        timeout = float(probe.get("timeoutSeconds") or 1)
        success_threshold = int(probe.get("successThreshold") or 1)
        failure_threshold = int(probe.get("failureThreshold") or 3)
        label = {"startupProbe": "Startup", "readinessProbe": "Readiness",
                 "livenessProbe": "Liveness"}[kind]
        last: str | None = None
        run = 0
        tick = 0
        while inst.running:
            due = inst.started_mono + tick * period
            tick += 1
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not inst.running:
                return
            if self.deleting and kind != "readinessProbe":
                return
            if time.monotonic() - inst.started_mono < delay:
                continue
            if kind == "startupProbe" and cs.started:
                return
            if kind != "startupProbe" and not cs.started:
                continue
            result, message = await probes.run_handler(
                probe, cs.spec, self.pod_ip, timeout, self._exec_runner(inst))
            if not inst.running:
                return
            if result == probes.UNKNOWN:
                await self._event("Warning", "Unhealthy", f"{label} probe errored: {message}")
                continue
            if result == probes.FAILURE:
                await self._event("Warning", "Unhealthy", f"{label} probe failed: {message}")
            if result == last:
                run += 1
            else:
                last, run = result, 1
            threshold = success_threshold if result == probes.SUCCESS else failure_threshold
            if run < threshold:
                continue
            ok = result == probes.SUCCESS
            if kind == "readinessProbe":
                if cs.ready != ok:
                    cs.ready = ok
                    log.info("Container %s of Pod %s became %s", cs.name, self.label,
                             "ready" if ok else "not ready")
                    self.poke()
            elif kind == "startupProbe" and ok:
                cs.started = True
                if not cs.spec.get("readinessProbe"):
                    cs.ready = True
                log.info("Container %s of Pod %s started (startup probe succeeded)",
                         cs.name, self.label)
                self.poke()
                return
            elif not ok:
                what = "liveness" if kind == "livenessProbe" else "startup"
                log.info("Container %s of Pod %s failed its %s probe; restarting it",
                         cs.name, self.label, what)
                grace = probe.get("terminationGracePeriodSeconds")
                if grace is None:
                    grace = self.spec.get("terminationGracePeriodSeconds", 30)
                if cs.stopping is None:
                    cs.stopping = asyncio.create_task(self._kill(
                        cs, max(int(grace), ct.MINIMUM_GRACE_PERIOD_SECONDS), None,
                        f"Container {cs.name} failed {what} probe, will be restarted"))
                return

    def _exec_runner(self, inst: Instance) -> probes.ExecFunc:
        async def run(command: Any, timeout: float) -> tuple[int | None, str]:
            return await self.exec_in(inst, list(command), timeout)

        return run

    async def exec_in(self, inst: Instance, command: list[str], timeout: float) -> tuple[int | None, str]:
        """Run a command in the container's namespaces (net, mount, pid, uts) with its
        environment; (exit code or None on timeout, combined output)."""
        if inst.host_pid is None or not command:
            return 1, "container is not running"
        proc = await asyncio.create_subprocess_exec(
            "nsenter", f"--target={inst.host_pid}", "--net", "--mount", "--pid", "--uts", "--",
            *command,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=inst.env, start_new_session=True,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            return None, ""
        return proc.returncode, out.decode(errors="replace")

    # ------------------------------------------------------------------- exits

    async def _watch(self, cs: ContainerState, inst: Instance, writer: LogWriter,
                     copiers: list[asyncio.Task[None]]) -> None:
        assert inst.proc is not None
        returncode = await inst.proc.wait()
        await asyncio.gather(*copiers, return_exceptions=True)
        writer.close()
        self.rt.untrack_process(inst.proc.pid)
        inst.finished_at = now_utc()
        inst.finished_mono = time.monotonic()
        code = ct.exit_code_of(returncode)
        start_error = ""
        if inst.error_pipe is not None:
            with contextlib.suppress(BlockingIOError):
                start_error = os.read(inst.error_pipe, 1 << 16).decode(errors="replace")
            os.close(inst.error_pipe)
            inst.error_pipe = None
        if start_error:
            inst.exit_code = 128
            inst.reason = "StartError"
            inst.message = start_error
            inst.started_at = EPOCH
        else:
            inst.exit_code = code
            inst.reason = ct.exit_reason(code)
            content = inst.term_log.read_bytes() if inst.term_log.exists() else b""
            inst.message = ct.termination_message(
                cs.spec.get("terminationMessagePolicy") or "File", code, content,
                log_lines(read_entries(inst.log_path)))
        cs.started = False
        cs.ready = False
        for task in inst.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        inst.exited.set()
        log.info("Container %s of Pod %s exited with code %d (%s) after %.3fs",
                 cs.name, self.label, inst.exit_code, inst.reason,
                 inst.finished_mono - inst.started_mono)
        self.poke()

    # ------------------------------------------------------------- termination

    async def _kill(self, cs: ContainerState, grace: int, ordering: TerminationOrdering | None,
                    message: str) -> None:
        """kuberuntime_container.go killContainer: the preStop hook within the grace
        period, the sidecar's turn, then SIGTERM to PID 1 and SIGKILL when the rest of
        the grace period (at least 2 s) is over."""
        inst = cs.newest
        try:
            if inst is None or not inst.running:
                return
            await self._event("Normal", "Killing", message)
            started = time.monotonic()
            hook = ((cs.spec.get("lifecycle") or {}).get("preStop"))
            hook_seconds = 0.0
            if hook and grace > 0:
                try:
                    error = await asyncio.wait_for(
                        probes.run_hook(hook, cs.spec, self.pod_ip, grace, self._exec_runner(inst)),
                        grace)
                except TimeoutError:
                    error = None
                    log.info("PreStop hook of container %s of Pod %s did not complete within "
                             "the %ds grace period", cs.name, self.label, grace)
                hook_seconds = time.monotonic() - started
                if error:
                    await self._event("Warning", "FailedPreStopHook", "PreStopHook failed")
                    log.warning("PreStop hook of container %s of Pod %s failed: %s",
                                cs.name, self.label, error)
                log.info("Ran the preStop hook of container %s of Pod %s in %.3fs",
                         cs.name, self.label, hook_seconds)
                grace = grace - int(hook_seconds)
            if ordering is not None and grace > 0:
                waited = await ordering.wait_for_turn(cs.name, grace)
                if waited >= 0.001:
                    log.info("Container %s of Pod %s waited %.3fs for its turn to stop",
                             cs.name, self.label, waited)
                grace -= int(waited)
            grace = max(grace, ct.MINIMUM_GRACE_PERIOD_SECONDS)
            term_at = time.monotonic()
            how = await self._stop_process(inst, grace)
            log.info("Stopped container %s of Pod %s in %.3fs (%s; the stop began %.3fs "
                     "after the kill)", cs.name, self.label, time.monotonic() - term_at, how,
                     term_at - started)
        finally:
            if ordering is not None:
                ordering.terminated(cs.name)
            if cs.stopping is asyncio.current_task():
                cs.stopping = None
                self.poke()

    async def _stop_process(self, inst: Instance, grace: int) -> str:
        """StopContainer(timeout=grace): SIGTERM to PID 1, SIGKILL after ``grace`` s."""
        if inst.running and inst.host_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(inst.host_pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(inst.exited.wait(), grace)
            return "exited after SIGTERM"
        except TimeoutError:
            pass
        self._sigkill(inst)
        await inst.exited.wait()
        return f"SIGKILL after the {grace}s grace period"

    def _sigkill(self, inst: Instance) -> None:
        for pid in (inst.host_pid, inst.proc.pid if inst.proc else None):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    async def _terminate(self) -> None:
        started = time.monotonic()
        grace = ct.grace_period_seconds(self.pod)
        mains = [cs.name for cs in self.states if cs.role == "main"]
        sidecars = [cs.name for cs in self.states if cs.role == "sidecar"]
        running = {cs.name for cs in self.states if cs.running}
        ordering = TerminationOrdering(mains, sidecars, running)
        log.info("Stopping Pod %s: %d running container(s), grace period %ds",
                 self.label, len(running), grace)
        jobs = []
        for cs in self.states:
            if cs.stopping is not None:
                # A liveness kill is under way: let it finish, then count it stopped.
                async def finish(cs: ContainerState = cs) -> None:
                    task = cs.stopping
                    if task is not None:
                        await asyncio.gather(task, return_exceptions=True)
                    ordering.terminated(cs.name)
                jobs.append(finish())
            elif cs.running:
                jobs.append(self._kill(cs, grace, ordering if cs.role != "init" else None,
                                       f"Stopping container {cs.name}"))
        await asyncio.gather(*jobs)
        self.stopped = True
        log.info("Stopped every container of Pod %s in %.3fs", self.label, time.monotonic() - started)

    async def _finish(self) -> None:
        await self._write_status()
        await sandbox.remove(self.sandbox.netns, self.sandbox.veth)
        self.sandbox_ready = False
        if not self.vanished:
            try:
                await kubelet.force_delete(self.rt.cluster, "v1/pods", self.namespace, self.name)
            except Exception as exc:
                if error_code(exc) != 404:
                    raise
            self.rt.pods.observe_deleted(self.pod)
        log.info("Removed terminated Pod %s", self.label)

    async def _kill_all_now(self) -> None:
        """The cluster is stopping (or the worker broke): SIGKILL every container."""
        for cs in self.states:
            inst = cs.newest
            if inst is not None and inst.running:
                self._sigkill(inst)
        waits = [cs.newest.exited.wait() for cs in self.states if cs.newest and cs.newest.running]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), 5)
        for cs in self.states:
            for inst in cs.history:
                for task in inst.tasks:
                    task.cancel()

    # ------------------------------------------------------------------- status

    def _container_status(self, cs: ContainerState) -> dict[str, Any]:
        image = cs.spec.get("image", "")
        st: dict[str, Any] = {
            "name": cs.name,
            "image": image,
            "imageID": kubelet.image_id(image) if cs.image is not None else "",
            "restartCount": max(len(cs.history) - 1, 0),
            "started": bool(cs.running and cs.started),
            "ready": bool(cs.running and cs.ready),
            "lastState": {},
        }
        newest = cs.newest
        previous = cs.previous()
        if previous is not None:
            st["lastState"] = {"terminated": previous.terminated()}
        if newest is not None and newest.running:
            st["containerID"] = newest.container_id
            st["state"] = {"running": {"startedAt": fmt_time(newest.started_at)}}
        elif newest is not None and not cs.restart_pending:
            st["containerID"] = newest.container_id
            st["state"] = {"terminated": newest.terminated()}
            if cs.role == "init" and newest.exit_code == 0:
                st["ready"] = True
        else:
            if newest is not None:
                st["containerID"] = newest.container_id
            if cs.waiting is not None:
                reason, message = cs.waiting
            elif cs.role != "main" or (self._has_init() and not self.initialized):
                reason, message = "PodInitializing", ""
            else:
                reason, message = "ContainerCreating", ""
            waiting: dict[str, Any] = {"reason": reason}
            if message:
                waiting["message"] = message
            st["state"] = {"waiting": waiting}
        if cs.role == "init":
            st["started"] = bool(cs.running)
        return st

    def desired_status(self) -> dict[str, Any]:
        init_statuses = [self._container_status(cs) for cs in self.states if cs.role != "main"]
        statuses = [self._container_status(cs) for cs in self.states if cs.role == "main"]
        current = self.pod.get("status") or {}
        phase = ct.pod_phase(self.spec, init_statuses, statuses)
        if current.get("phase") in ("Succeeded", "Failed"):
            phase = current["phase"]  # a terminal phase never changes (generateAPIPodStatus)
        existing = current.get("conditions") or []
        gates = {c.get("type"): c.get("status") for c in existing}
        now = fmt_time(now_utc())
        conditions = [dict(c) for c in existing if c.get("type") not in KUBELET_CONDITIONS]
        if not any(c.get("type") == "PodScheduled" for c in conditions):
            conditions.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                               "lastTransitionTime": now})
        for cond in ct.kubelet_conditions(self.spec, init_statuses, statuses, phase,
                                          self.sandbox_ready, gates):
            old = next((c for c in existing if c.get("type") == cond["type"]), None)
            cond["lastTransitionTime"] = (
                old["lastTransitionTime"] if old and old.get("status") == cond["status"]
                and old.get("lastTransitionTime") else now)
            conditions = with_condition(conditions, cond)
        conditions.sort(key=lambda c: CONDITION_ORDER.get(str(c.get("type")), 5))
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": conditions,
            "hostIP": self.host_ip,
            "hostIPs": [{"ip": self.host_ip}],
            "containerStatuses": statuses,
        }
        if self.start_time is not None:
            status["startTime"] = fmt_time(self.start_time)
        if self.sandbox_ready or current.get("podIP"):
            status["podIP"] = self.pod_ip
            status["podIPs"] = [{"ip": self.pod_ip}]
        if init_statuses:
            status["initContainerStatuses"] = init_statuses
        return status

    async def _write_status(self) -> None:
        if self.vanished:
            return
        current = self.rt.pods.get(self.namespace, self.name)
        if current is None or (current.get("metadata") or {}).get("uid") != self.uid:
            return
        self.pod = current
        desired = self.desired_status()
        have = current.get("status") or {}
        changes = {k: v for k, v in desired.items() if have.get(k) != v}
        if not changes:
            return
        try:
            updated = await self.rt.cluster.patch(
                "v1/pods", self.namespace, self.name, {"status": changes}, subresource="status")
        except Exception as exc:
            if error_code(exc) in (404, 409):
                self.poke()
                return
            raise
        self.rt.pods.observe(updated)
        self.pod = updated

    # --------------------------------------------------------------------- logs

    def log_instance(self, container: str, previous: bool) -> Instance | str:
        """pkg/kubelet/kubelet_pods.go validateContainerLogStatus: the instance whose log
        to read, or the error message."""
        cs = self.state(container)
        pod = self.name
        if cs is None:
            return f'container "{container}" in pod "{pod}" is not available'
        st = self._container_status(cs)
        state = st.get("state") or {}
        if previous:
            inst = cs.previous()
            if inst is None:
                return f'previous terminated container "{container}" in pod "{pod}" not found'
            return inst
        newest = cs.newest
        if "running" in state or "terminated" in state:
            assert newest is not None
            return newest
        last = cs.previous()
        if last is not None:
            return last
        reason = (state.get("waiting") or {}).get("reason", "")
        if reason == "ErrImagePull":
            return f'container "{container}" in pod "{pod}" is waiting to start: image can\'t be pulled'
        if reason == "ImagePullBackOff":
            return (f'container "{container}" in pod "{pod}" is waiting to start: trying and '
                    "failing to pull image")
        return f'container "{container}" in pod "{pod}" is waiting to start: {reason}'


async def _child_pid(pid: int) -> int | None:
    """The host PID of the container's PID 1: the child that ``unshare --fork`` made."""
    path = f"/proc/{pid}/task/{pid}/children"
    for _ in range(200):
        try:
            with open(path) as f:
                children = f.read().split()
        except FileNotFoundError:
            return None
        if children:
            return int(children[0])
        await asyncio.sleep(0.005)
    return None

