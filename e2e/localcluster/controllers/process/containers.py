"""Pure parts of the process runtime: what a container runs, with which environment and
mounts, how long it backs off, what its status says.

No clock and no I/O here: times and file contents come in as arguments.
"""

from __future__ import annotations

import base64
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .expansion import expand, expand_all, mapping_for

# pkg/kubelet/kubelet.go: backOffPeriod and MaxContainerBackOff, used for both the
# container restart back-off and the image pull back-off (pkg/kubelet/images).
BACKOFF_INITIAL_SECONDS = 10.0
BACKOFF_MAX_SECONDS = 300.0

# pkg/kubelet/kuberuntime/kuberuntime_container.go: minimumGracePeriodInSeconds.
MINIMUM_GRACE_PERIOD_SECONDS = 2

# pkg/kubelet/container/runtime.go: termination message limits.
MAX_TERMINATION_MESSAGE_LENGTH = 4 * 1024
MAX_TERMINATION_MESSAGE_LOG_LENGTH = 2 * 1024
MAX_TERMINATION_MESSAGE_LOG_LINES = 80


class ContainerConfigError(Exception):
    """The container cannot be configured: reported as CreateContainerConfigError."""


class ContainerCreateError(Exception):
    """The runtime cannot create the container: reported as CreateContainerError."""


class VolumeError(Exception):
    """A volume cannot be set up: the pod stays ContainerCreating with FailedMount."""


# ------------------------------------------------------------------------- commands


def command_line(
    container: Mapping[str, Any],
    entrypoint: Sequence[str],
    cmd: Sequence[str],
    env: Mapping[str, str],
) -> list[str]:
    """The argv of the container's PID 1, with Docker's rules: ``command`` replaces the
    image's ENTRYPOINT and drops its CMD, ``args`` replaces CMD. ``$(VAR)`` references
    in command and args are expanded against the container's env (not the image's), as
    pkg/kubelet/container/helpers.go ExpandContainerCommandAndArgs does."""
    lookup = mapping_for(env)
    command = container.get("command")
    args = container.get("args")
    if command:
        argv = expand_all(command, lookup) + expand_all(args, lookup)
    else:
        argv = list(entrypoint) + (expand_all(args, lookup) if args else list(cmd))
    if not argv:
        raise ContainerCreateError("failed to generate container spec: no command specified")
    return argv


# ---------------------------------------------------------------------- environment


@dataclass(frozen=True)
class PodContext:
    """What the downward API can read about the pod."""

    name: str
    namespace: str
    uid: str
    node_name: str
    service_account: str
    pod_ip: str
    host_ip: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


def field_ref_value(path: str, ctx: PodContext) -> str:
    """pkg/kubelet/kubelet_pods.go podFieldSelectorRuntimeValue and
    pkg/fieldpath ExtractFieldPathAsString for the fields env vars may read."""
    simple = {
        "metadata.name": ctx.name,
        "metadata.namespace": ctx.namespace,
        "metadata.uid": ctx.uid,
        "spec.nodeName": ctx.node_name,
        "spec.serviceAccountName": ctx.service_account,
        "status.podIP": ctx.pod_ip,
        "status.podIPs": ctx.pod_ip,
        "status.hostIP": ctx.host_ip,
        "status.hostIPs": ctx.host_ip,
    }
    if path in simple:
        return simple[path]
    for prefix, values in (("metadata.labels", ctx.labels), ("metadata.annotations", ctx.annotations)):
        if path.startswith(prefix + "['") and path.endswith("']"):
            return values.get(path[len(prefix) + 2 : -2], "")
        if path == prefix:
            return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
    raise ContainerConfigError(f"unsupported fieldPath: {path}")


def _key_ref(ref: Mapping[str, Any], objects: Mapping[str, Any], kind: str,
             namespace: str) -> tuple[Mapping[str, Any], str] | None:
    """The `data` holding a configMapKeyRef's or secretKeyRef's key, and the key; None when the
    reference is optional and unresolved. kubelet_pods.go makeEnvironmentVariables words the
    errors: '<kind lower-case> "<name>" not found', "couldn't find key <key> in <Kind> <ns>/<name>"."""
    obj_name, key = ref.get("name", ""), ref.get("key", "")
    obj = objects.get(obj_name)
    if obj is None:
        if ref.get("optional"):
            return None
        raise ContainerConfigError(f'{kind.lower()} "{obj_name}" not found')
    data = obj.get("data") or {}
    if key not in data:
        if ref.get("optional"):
            return None
        raise ContainerConfigError(f"couldn't find key {key} in {kind} {namespace}/{obj_name}")
    return data, key


def _secret_text(data: Mapping[str, str], key: str) -> str:
    return base64.b64decode(data[key]).decode("utf-8", errors="replace")


def container_env(
    container: Mapping[str, Any],
    ctx: PodContext,
    configmaps: Mapping[str, Mapping[str, Any] | None],
    secrets: Mapping[str, Mapping[str, Any] | None],
) -> dict[str, str]:
    """The env vars the kubelet hands the runtime (pkg/kubelet/kubelet_pods.go
    makeEnvironmentVariables): envFrom first, in order, then env, each value able to
    reference the ones defined before it. ``configmaps``/``secrets`` map names to the
    objects (None: not found). Raises ContainerConfigError with the kubelet's message."""
    out: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        if "configMapRef" in source:
            ref = source["configMapRef"] or {}
            cm = configmaps.get(ref.get("name", ""))
            if cm is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'configmap "{ref.get("name", "")}" not found')
            for key, value in (cm.get("data") or {}).items():
                out[prefix + key] = str(value)
        elif "secretRef" in source:
            ref = source["secretRef"] or {}
            secret = secrets.get(ref.get("name", ""))
            if secret is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'secret "{ref.get("name", "")}" not found')
            data = secret.get("data") or {}
            for key in data:
                out[prefix + key] = _secret_text(data, key)
    lookup = mapping_for(out)
    for var in container.get("env") or []:
        name = var.get("name", "")
        value = var.get("value")
        source = var.get("valueFrom")
        if value:
            out[name] = expand(str(value), lookup)
            continue
        if not source:
            out[name] = ""
            continue
        if "fieldRef" in source:
            out[name] = field_ref_value((source["fieldRef"] or {}).get("fieldPath", ""), ctx)
        elif "configMapKeyRef" in source:
            found = _key_ref(source["configMapKeyRef"] or {}, configmaps, "ConfigMap", ctx.namespace)
            if found is not None:
                out[name] = str(found[0][found[1]])
        elif "secretKeyRef" in source:
            found = _key_ref(source["secretKeyRef"] or {}, secrets, "Secret", ctx.namespace)
            if found is not None:
                out[name] = _secret_text(*found)
        else:
            raise ContainerConfigError(
                f"env {name}: resourceFieldRef and fileKeyRef are not supported by the local "
                "process runtime"
            )
    return out


def referenced_objects(containers: Sequence[Mapping[str, Any]]) -> tuple[set[str], set[str]]:
    """Names of the ConfigMaps and Secrets the containers' env reads."""
    configmaps: set[str] = set()
    secrets: set[str] = set()
    for c in containers:
        for source in c.get("envFrom") or []:
            if source.get("configMapRef"):
                configmaps.add(source["configMapRef"].get("name", ""))
            if source.get("secretRef"):
                secrets.add(source["secretRef"].get("name", ""))
        for var in c.get("env") or []:
            source = var.get("valueFrom") or {}
            if source.get("configMapKeyRef"):
                configmaps.add(source["configMapKeyRef"].get("name", ""))
            if source.get("secretKeyRef"):
                secrets.add(source["secretKeyRef"].get("name", ""))
    return configmaps, secrets


def runtime_env(image_env: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """The process environment: the image's ENV overridden by the container's."""
    return {**image_env, **env}


# -------------------------------------------------------------------------- volumes


@dataclass(frozen=True)
class KeyFile:
    path: str  # relative to the volume's root
    content: bytes
    mode: int


@dataclass(frozen=True)
class VolumePlan:
    """How one pod volume is provided on the host."""

    name: str
    kind: str  # emptyDir, configMap, secret, persistentVolumeClaim, hostPath
    files: tuple[KeyFile, ...] = ()  # configMap and secret contents
    claim: str = ""  # persistentVolumeClaim
    host_path: str = ""  # hostPath
    read_only: bool = False  # the volume source's own readOnly


SUPPORTED_VOLUMES = ("emptyDir", "configMap", "secret", "persistentVolumeClaim", "hostPath")


def _key_files(
    data: Mapping[str, bytes], items: Sequence[Mapping[str, Any]] | None, default_mode: int,
    kind: str, name: str,
) -> tuple[KeyFile, ...]:
    """pkg/volume/util MakePayload: every key as a file, or only the listed items, at
    their paths with their modes."""
    if not items:
        return tuple(KeyFile(k, v, default_mode) for k, v in sorted(data.items()))
    out = []
    for item in items:
        key = item.get("key", "")
        if key not in data:
            raise VolumeError(f"configured to use key {key} of {kind} {name} but it does not exist"
                              if kind == "ConfigMap" else
                              f"references non-existent secret key: {key}")
        mode = item.get("mode")
        out.append(KeyFile(item.get("path") or key, data[key], int(mode) if mode is not None else default_mode))
    return tuple(out)


def volume_plans(
    pod: Mapping[str, Any],
    configmaps: Mapping[str, Mapping[str, Any] | None],
    secrets: Mapping[str, Mapping[str, Any] | None],
) -> dict[str, VolumePlan]:
    """Every volume of the pod, resolved; raises VolumeError with the kubelet's
    MountVolume.SetUp message when a referenced object is missing."""
    namespace = (pod.get("metadata") or {}).get("namespace") or ""
    plans: dict[str, VolumePlan] = {}
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        name = vol.get("name", "")
        kind = next((k for k in SUPPORTED_VOLUMES if k in vol), None)
        if kind is None:
            other = next((k for k in vol if k != "name"), "unknown")
            raise VolumeError(
                f'MountVolume.SetUp failed for volume "{name}" : volume type {other} is not '
                "supported by the local process runtime"
            )
        src = vol[kind] or {}
        if kind == "emptyDir":
            plans[name] = VolumePlan(name, kind)
        elif kind == "configMap":
            cm_name = src.get("name", "")
            cm = configmaps.get(cm_name)
            mode = int(src.get("defaultMode", 0o644))
            if cm is None:
                if src.get("optional"):
                    plans[name] = VolumePlan(name, kind)
                    continue
                raise VolumeError(
                    f'MountVolume.SetUp failed for volume "{name}" : configmap "{cm_name}" not found'
                )
            data = {k: str(v).encode() for k, v in (cm.get("data") or {}).items()}
            data.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
            try:
                files = _key_files(data, src.get("items"), mode, "ConfigMap", f"{namespace}/{cm_name}")
            except VolumeError as exc:
                raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : {exc}') from None
            plans[name] = VolumePlan(name, kind, files)
        elif kind == "secret":
            secret_name = src.get("secretName", "")
            secret = secrets.get(secret_name)
            mode = int(src.get("defaultMode", 0o644))
            if secret is None:
                if src.get("optional"):
                    plans[name] = VolumePlan(name, kind)
                    continue
                raise VolumeError(
                    f'MountVolume.SetUp failed for volume "{name}" : secret "{secret_name}" not found'
                )
            data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
            try:
                files = _key_files(data, src.get("items"), mode, "Secret", secret_name)
            except VolumeError as exc:
                raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : {exc}') from None
            plans[name] = VolumePlan(name, kind, files)
        elif kind == "persistentVolumeClaim":
            plans[name] = VolumePlan(
                name, kind, claim=src.get("claimName", ""), read_only=bool(src.get("readOnly"))
            )
        else:
            plans[name] = VolumePlan(name, kind, host_path=src.get("path", ""))
    return plans


def volume_references(pod: Mapping[str, Any]) -> tuple[set[str], set[str], set[str]]:
    """Names of the ConfigMaps, Secrets and PVCs the pod's volumes read."""
    configmaps, secrets, claims = set(), set(), set()
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        if vol.get("configMap"):
            configmaps.add(vol["configMap"].get("name", ""))
        if vol.get("secret"):
            secrets.add(vol["secret"].get("secretName", ""))
        if vol.get("persistentVolumeClaim"):
            claims.add(vol["persistentVolumeClaim"].get("claimName", ""))
    return configmaps, secrets, claims


@dataclass(frozen=True)
class Mount:
    source: str  # a host path
    target: str  # the path inside the container
    read_only: bool
    is_file: bool = False


def safe_sub_path(sub_path: str) -> str:
    """A subPath must be relative and must not climb out of its volume (the API server's
    validation, checked again by the kubelet)."""
    norm = posixpath.normpath(sub_path)
    if sub_path.startswith("/") or norm == ".." or norm.startswith("../"):
        raise ContainerCreateError(f"subPath {sub_path!r} must be a relative path inside its volume")
    return "" if norm == "." else norm


# ------------------------------------------------------------------------- back-off


@dataclass
class Backoff:
    """One entry of client-go's flowcontrol.Backoff as the kubelet uses it: the delay
    starts at ``initial``, doubles on every ``next`` up to ``maximum``, and starts over
    when the last update is more than twice ``maximum`` old (hasExpired). Times are
    seconds on a monotonic clock. No jitter (the kubelet's has none either)."""

    initial: float
    maximum: float
    delay: float = 0.0
    last_update: float | None = None

    def _expired(self, event_time: float) -> bool:
        return self.last_update is not None and event_time - self.last_update > 2 * self.maximum

    def in_backoff_since(self, event_time: float, now: float) -> bool:
        """IsInBackOffSince: is ``now`` still within the delay counted from ``event_time``?"""
        if self.last_update is None or self._expired(event_time):
            return False
        return now - event_time < self.delay

    def next(self, event_time: float, now: float) -> None:
        if self.last_update is None or self._expired(event_time):
            self.delay = self.initial
        else:
            self.delay = min(self.delay * 2, self.maximum)
        self.last_update = now


def go_duration(seconds: float) -> str:
    """A duration as Go's time.Duration prints it (10s, 1m20s, 5m0s, 500ms)."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:g}ms" if ms >= 1 else f"{seconds * 1e6:g}µs"
    total = round(seconds, 9)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    sec_text = f"{secs:.9f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{sec_text}"
    if minutes:
        return f"{int(minutes)}m{sec_text}"
    return sec_text


# ---------------------------------------------------------------- grace and messages


def grace_period_seconds(pod: Mapping[str, Any]) -> int:
    """The grace period the kubelet kills the pod's containers with
    (kuberuntime_manager.go KillPod): deletionGracePeriodSeconds, else the spec's
    terminationGracePeriodSeconds; at least minimumGracePeriodInSeconds."""
    m = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    grace = m.get("deletionGracePeriodSeconds")
    if grace is None:
        grace = spec.get("terminationGracePeriodSeconds")
    value = int(grace) if grace is not None else 30
    return max(value, MINIMUM_GRACE_PERIOD_SECONDS)


def remaining_grace(grace: int, hook_seconds: float) -> int:
    """kuberuntime_container.go killContainer: the preStop hook's time, truncated to whole
    seconds, is taken off the grace period, which never drops below the minimum."""
    return max(grace - int(hook_seconds), MINIMUM_GRACE_PERIOD_SECONDS)


def log_tail(lines: Sequence[str], max_lines: int, max_bytes: int) -> str:
    """The last ``max_lines`` lines, then only the last ``max_bytes`` bytes of them (a
    circular buffer, as readLastStringFromContainerLogs fills it)."""
    text = "".join(lines[-max_lines:]) if max_lines else ""
    data = text.encode()
    if len(data) > max_bytes:
        data = data[-max_bytes:]
    return data.decode("utf-8", errors="replace")


def termination_message(
    policy: str, exit_code: int, file_content: bytes | None, log_lines: Sequence[str]
) -> str:
    """kuberuntime_container.go getTerminationMessage + convertToKubeContainerStatus:
    the terminationMessagePath file (at most 4 KiB), or, with FallbackToLogsOnError,
    a failed container whose file is missing or empty, the tail of its log."""
    fallback = policy == "FallbackToLogsOnError" and exit_code != 0
    if file_content:
        return file_content[:MAX_TERMINATION_MESSAGE_LENGTH].decode("utf-8", errors="replace")
    if fallback:
        return log_tail(log_lines, MAX_TERMINATION_MESSAGE_LOG_LINES, MAX_TERMINATION_MESSAGE_LOG_LENGTH)
    return ""


def exit_reason(exit_code: int) -> str:
    """The runtime's reason for a container that exited (containerd: Completed, Error)."""
    return "Completed" if exit_code == 0 else "Error"


def exit_code_of(returncode: int) -> int:
    """A process's wait status as the container's exit code: killed by signal N is 128+N."""
    return 128 - returncode if returncode < 0 else returncode


# --------------------------------------------------------------------------- status


def format_pod(name: str, namespace: str, uid: str) -> str:
    """pkg/kubelet/util/format Pod: name_namespace(uid)."""
    return f"{name}_{namespace}({uid})"


def pod_phase(spec: Mapping[str, Any], init_statuses: Sequence[Mapping[str, Any]],
              statuses: Sequence[Mapping[str, Any]]) -> str:
    """pkg/kubelet/kubelet_pods.go getPhase (sidecar-aware: running sidecars are neither
    pending nor failed initialisation)."""
    by_name = {s["name"]: s for s in [*init_statuses, *statuses]}
    pending_init = failed_init = 0
    for c in spec.get("initContainers") or []:
        st = by_name.get(c.get("name"))
        restartable = c.get("restartPolicy") == "Always"
        if st is None:
            pending_init += 1
            continue
        state = st.get("state") or {}
        last = (st.get("lastState") or {}).get("terminated")
        if "running" in state:
            if not (restartable and st.get("started")):
                pending_init += 1
        elif "terminated" in state:
            if state["terminated"].get("exitCode", 0) != 0 and not restartable:
                failed_init += 1
        elif "waiting" in state:
            if last is not None and not restartable:
                if last.get("exitCode", 0) != 0:
                    failed_init += 1
            elif not restartable or not st.get("started"):
                pending_init += 1
        else:
            pending_init += 1
    unknown = running = waiting = stopped = succeeded = 0
    for c in spec.get("containers") or []:
        st = by_name.get(c.get("name"))
        if st is None:
            unknown += 1
            continue
        state = st.get("state") or {}
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            if state["terminated"].get("exitCode", 0) == 0:
                succeeded += 1
        elif "waiting" in state:
            if (st.get("lastState") or {}).get("terminated") is not None:
                stopped += 1
            else:
                waiting += 1
        else:
            unknown += 1
    policy = spec.get("restartPolicy") or "Always"
    if failed_init > 0 and policy == "Never":
        return "Failed"
    if pending_init > 0 or waiting > 0:
        return "Pending"
    if running > 0 and unknown == 0:
        return "Running"
    if running == 0 and stopped > 0 and unknown == 0:
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def condition(kind: str, ok: bool, reason: str = "", message: str = "") -> dict[str, Any]:
    cond: dict[str, Any] = {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None}
    if not ok and reason:
        cond["reason"] = reason
    if not ok and message:
        cond["message"] = message
    return cond


def kubelet_conditions(
    spec: Mapping[str, Any],
    init_statuses: Sequence[Mapping[str, Any]],
    statuses: Sequence[Mapping[str, Any]],
    phase: str,
    sandbox_ready: bool,
    gates: Mapping[str, str],
) -> list[dict[str, Any]]:
    """PodReadyToStartContainers, Initialized, Ready and ContainersReady as
    pkg/kubelet/status/generate.go computes them (without lastTransitionTime, which the
    caller keeps from the stored conditions). ``gates`` maps readiness-gate condition
    types to their current status."""
    by_name = {s["name"]: s for s in init_statuses}
    # Initialized: every regular init container completed, every sidecar started.
    incomplete = []
    for c in spec.get("initContainers") or []:
        st = by_name.get(c.get("name")) or {}
        if c.get("restartPolicy") == "Always":
            if not st.get("started"):
                incomplete.append(c.get("name"))
            continue
        term = (st.get("state") or {}).get("terminated")
        if not (term and term.get("exitCode") == 0):
            incomplete.append(c.get("name"))
    if phase == "Succeeded":
        initialized = condition("Initialized", True)
    elif incomplete:
        initialized = condition(
            "Initialized", False, "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(incomplete)}]",
        )
    else:
        initialized = condition("Initialized", True)
    # ContainersReady: main containers and sidecars ready.
    unready: list[str] = []
    unknown: list[str] = []
    main_by_name = {s["name"]: s for s in statuses}
    for c in spec.get("initContainers") or []:
        if c.get("restartPolicy") != "Always":
            continue
        st = by_name.get(c.get("name"))
        if st is None:
            unknown.append(c.get("name"))
        elif not st.get("ready"):
            unready.append(c.get("name"))
    for c in spec.get("containers") or []:
        st = main_by_name.get(c.get("name"))
        if st is None:
            unknown.append(c.get("name"))
        elif not st.get("ready"):
            unready.append(c.get("name"))
    parts = []
    if unknown:
        parts.append(f"containers with unknown status: [{' '.join(unknown)}]")
    if unready:
        parts.append(f"containers with unready status: [{' '.join(unready)}]")
    message = ", ".join(parts)
    if phase in ("Succeeded", "Failed"):
        containers_ready = condition("ContainersReady", False, "PodCompleted")
        ready = condition("Ready", False, "PodCompleted")
    elif message:
        containers_ready = condition("ContainersReady", False, "ContainersNotReady", message)
        ready = condition("Ready", False, "ContainersNotReady", message)
    else:
        containers_ready = condition("ContainersReady", True)
        ready = condition("Ready", True)
        for gate in spec.get("readinessGates") or []:
            gate_type = gate.get("conditionType")
            have = gates.get(gate_type)
            if have is None:
                ready = condition("Ready", False, "ReadinessGatesNotReady",
                                  f'corresponding condition of pod readiness gate "{gate_type}" does not exist.')
                break
            if have != "True":
                ready = condition("Ready", False, "ReadinessGatesNotReady",
                                  f'the status of pod readiness gate "{gate_type}" is not "True", but {have}')
                break
    return [
        condition("PodReadyToStartContainers", sandbox_ready),
        initialized,
        ready,
        containers_ready,
    ]

