"""`tfleet rollout get`: an InferenceService as a tree of revisions, Deployments and pods.

`build_tree` and `render_tree` are pure (objects and the time in, text out); `cmd_get` reads
the cluster and, best effort, each pod's health bridge (`GET /status` on the pod IP, which
answers only where pod IPs are reachable: inside the cluster, or on the local control
plane). Without an answer the tree shows the model version the operator pinned the pod's
revision to (its `tfleet.dev/model-version` label).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from tfleet.api.times import parse_time, utc_now
from tfleet.api.vocabulary import (
    ACTIVE_PHASES,
    LABEL_MODEL_VERSION,
    LABEL_REVISION,
    SERVING_CONTAINER,
    ConditionType,
    Phase,
    isvc_selector,
)
from tfleet.cli import cluster as clusters
from tfleet.cli.exits import EXIT_OK
from tfleet.cli.output import print_objects, table, truncate
from tfleet.cli.rollout import (
    defaults_reader,
    pause_left,
    revision_roles,
    rollout_steps,
    terminal_columns,
    unobserved_generation,
)
from tfleet.durations import format_duration
from tfleet.engine.observe import summarize_pod

Manifest = dict[str, Any]

GREEN, YELLOW, RED, DIM, BOLD, RESET = "\033[32m", "\033[33m", "\033[31m", "\033[2m", "\033[1m", "\033[0m"
# Health of a node, shown as a mark and a colour.
HEALTHY, PROGRESSING, DEGRADED, IDLE = "healthy", "progressing", "degraded", "idle"
MARKS = {HEALTHY: ("✔", GREEN), PROGRESSING: ("◌", YELLOW), DEGRADED: ("✖", RED), IDLE: ("•", DIM)}
ROLE_ORDER = {"canary": 0, "stable": 1, "previous": 2, "rolled back": 3}


@dataclass(frozen=True)
class BridgeView:
    """What a pod's health bridge said: TF Serving's state of the pod's model version."""

    state: str  # AVAILABLE, LOADING, END, ... or "unreachable"
    detail: str = ""
    failed: bool = False  # the version is AVAILABLE, but the pod failed its pre-flight


@dataclass
class Node:
    """One line of the tree."""

    name: str
    kind: str
    status: str
    health: str
    version: str = ""
    ready: str = ""
    restarts: str = ""
    age: str = ""
    info: str = ""
    ip: str = ""
    node: str = ""
    children: list[Node] = field(default_factory=list)


@dataclass
class Summary:
    """The lines above the tree."""

    fields: list[tuple[str, str]]


def human_age(seconds: float) -> str:
    """kubectl's AGE column (k8s.io/apimachinery/pkg/util/duration HumanDuration)."""
    s = int(seconds)
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    years = hours // (24 * 365)
    return f"{years}y{(hours // 24) % 365}d" if hours < 24 * 365 * 8 else f"{years}y"


def _age(obj: Manifest, now: datetime) -> str:
    created = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    return human_age((now - created).total_seconds()) if created else ""


def pod_status(pod: Manifest) -> str:
    """The STATUS column of `kubectl get pods`, in short: Terminating, a waiting or terminated
    reason, or the phase."""
    meta, st = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "Terminating"
    for c in list(st.get("initContainerStatuses") or []) + list(st.get("containerStatuses") or []):
        state = c.get("state") or {}
        reason = (state.get("waiting") or {}).get("reason") or (state.get("terminated") or {}).get("reason")
        if reason and not c.get("ready"):
            return str(reason)
    return str(st.get("phase") or "Pending")


def _pod_node(pod: Manifest, now: datetime, bridge: BridgeView | None) -> Node:
    meta, st = pod.get("metadata") or {}, pod.get("status") or {}
    summary = summarize_pod(pod)
    containers = st.get("containerStatuses") or []
    declared = ((pod.get("spec") or {}).get("containers")) or containers
    ready_count = sum(1 for c in containers if c.get("ready"))
    status = pod_status(pod)
    if meta.get("deletionTimestamp"):
        health = PROGRESSING
    elif summary is not None and (summary.crash_looping or summary.image_pull_failing or summary.load_error):
        health = DEGRADED
    elif summary is not None and summary.ready:
        health = HEALTHY
    else:
        health = PROGRESSING
    version = (meta.get("labels") or {}).get(LABEL_MODEL_VERSION, "")
    info = ""
    if bridge is not None and bridge.state != "unreachable":
        info = f"model {bridge.state}" + (f": {bridge.detail}" if bridge.detail else "")
        if bridge.detail and (bridge.state == "END" or bridge.failed):
            health = DEGRADED
    elif summary is not None and summary.load_error:
        info = f"TF Serving: {summary.load_error}"
    elif summary is not None and summary.unschedulable:
        info = summary.unschedulable
    return Node(
        name=meta.get("name", ""), kind="Pod", status=status, health=health,
        version=version or "latest", ready=f"{ready_count}/{len(declared)}",
        restarts=str(summary.restarts if summary else 0), age=_age(pod, now), info=info,
        ip=st.get("podIP") or "", node=(pod.get("spec") or {}).get("nodeName") or "",
    )


def _deployment_node(dep: Manifest, pods: list[Node], now: datetime) -> Node:
    spec, st = dep.get("spec") or {}, dep.get("status") or {}
    want, ready = int(spec.get("replicas") or 0), int(st.get("readyReplicas") or 0)
    if want == 0:
        status, health = "ScaledDown", IDLE
    elif ready >= want and int(st.get("updatedReplicas") or 0) >= want:
        status, health = "Available", HEALTHY
    else:
        status, health = "Progressing", PROGRESSING
    if any(p.health == DEGRADED for p in pods):
        health = DEGRADED
    return Node(name=dep["metadata"].get("name", ""), kind="Deployment", status=status, health=health,
                version=(dep["metadata"].get("labels") or {}).get(LABEL_MODEL_VERSION, "") or "latest",
                ready=f"{ready}/{want}", age=_age(dep, now), children=pods)


def build_tree(body: Manifest, deployments: list[Manifest], pods: list[Manifest], now: datetime,
               bridges: dict[str, BridgeView] | None = None,
               steps: list[dict[str, Any]] | None = None) -> tuple[Summary, Node]:
    """The summary lines and the tree of one InferenceService. `steps`: its rollout steps
    (default: `rollout_steps` of the body, without reading the cluster's defaults)."""
    bridges = bridges or {}
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    ro = status.get("rollout") or {}
    roles = revision_roles(body)
    pods_by_revision: dict[str, list[Node]] = {}
    for pod in sorted(pods, key=lambda p: p["metadata"].get("name", "")):
        revision = (pod["metadata"].get("labels") or {}).get(LABEL_REVISION, "")
        pods_by_revision.setdefault(revision, []).append(
            _pod_node(pod, now, bridges.get(pod["metadata"].get("name", ""))))
    deps_by_revision: dict[str, list[Manifest]] = {}
    for dep in deployments:
        revision = (dep["metadata"].get("labels") or {}).get(LABEL_REVISION, "")
        deps_by_revision.setdefault(revision, []).append(dep)

    revisions: list[Node] = []
    created: dict[str, str] = {}
    for revision in set(deps_by_revision) | set(pods_by_revision) | set(roles):
        if not revision:
            continue
        deps = deps_by_revision.get(revision, [])
        loose = pods_by_revision.get(revision, [])
        children = [_deployment_node(d, loose if i == 0 else [], now) for i, d in enumerate(deps)]
        if not deps:
            children = loose
        role = roles.get(revision, "")
        version = next((c.version for c in children), "")
        if revision == ro.get("canaryRevision") and ro.get("targetVersion") is not None:
            version = str(ro["targetVersion"])
        info = role
        if role == "canary" and ro.get("weight") is not None:
            info = f"canary, weight {ro['weight']}%"
        health = HEALTHY if children and all(c.health == HEALTHY for c in children) else (
            DEGRADED if any(c.health == DEGRADED for c in children) or role == "rolled back" else
            IDLE if all(c.health == IDLE for c in children) else PROGRESSING)
        ready = next((c.ready for c in children if c.kind == "Deployment"), "")
        revisions.append(Node(name=f"revision {revision}", kind="Revision",
                              status=role.capitalize() if role else "Unused", health=health, version=version,
                              ready=ready, info=info, children=children,
                              age=next((c.age for c in children), "")))
        created[f"revision {revision}"] = min((d["metadata"].get("creationTimestamp", "") for d in deps), default="")
    history = list(ro.get("history") or [])
    revisions.sort(key=lambda n: (ROLE_ORDER.get(roles.get(n.name.removeprefix("revision "), ""), 4),
                                  history.index(n.name.removeprefix("revision "))
                                  if n.name.removeprefix("revision ") in history else 0,
                                  _negated(created.get(n.name, ""))))

    phase = str(ro.get("phase") or "")
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready_condition = conditions.get(ConditionType.READY) or {}
    if ro.get("stalled") or phase == Phase.ROLLED_BACK or ready_condition.get("reason") == "InvalidSpec":
        health = DEGRADED
    elif phase in ACTIVE_PHASES or unobserved_generation(body) is not None:
        health = PROGRESSING
    elif ready_condition.get("status") == "True":
        health = HEALTHY
    else:
        health = PROGRESSING
    target = spec.get("model", {}).get("version")
    serving = status.get("servingVersion")
    version = f"{serving if serving is not None else '?'}"
    if target is not None and target != serving:
        version += f" → {target}"
    root = Node(name=meta.get("name", ""), kind="InferenceService",
                status=("Stalled" if ro.get("stalled") else phase) or str(ready_condition.get("reason") or "Unknown"),
                health=health, version=version, ready=str(status.get("ready") or ""), age=_age(body, now),
                children=revisions)
    return Summary(_summary_fields(body, ro, now, rollout_steps(body) if steps is None else steps)), root


def _negated(timestamp: str) -> str:
    """A sort key that puts later RFC 3339 times first."""
    return "".join(chr(0x10FFFF - ord(c)) for c in timestamp)


def _summary_fields(body: Manifest, ro: dict[str, Any], now: datetime,
                    steps: list[dict[str, Any]]) -> list[tuple[str, str]]:
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    rollout_spec = spec.get("rollout") or {}
    fields: list[tuple[str, str]] = [("Name", meta.get("name", "")), ("Namespace", meta.get("namespace", ""))]
    phase = ("Stalled" if ro.get("stalled") else ro.get("phase")) or "Unknown"
    fields.append(("Status", str(phase)))
    if ro.get("message"):
        fields.append(("Message", str(ro["message"])))
    generation = unobserved_generation(body)
    if generation is not None:
        fields.append(("Generation", f"{generation}, not yet observed by the operator "
                                     f"(status is of generation {status.get('observedGeneration', 'none')})"))
    fields.append(("Strategy", str(rollout_spec.get("strategy") or "Canary")))
    if ro.get("step") is not None and steps:
        fields.append(("  Step", f"{ro['step'] + 1}/{len(steps)}"))
    if ro.get("weight") is not None:
        fields.append(("  Weight", f"{ro['weight']}%"))
    left = pause_left(body, now, steps)
    if left is not None:
        fields.append(("  Pause left", format_duration(round(left))))
    started = parse_time(ro.get("startedAt"))
    if started is not None and ro.get("phase") in ACTIVE_PHASES:
        fields.append(("  Running for", human_age((now - started).total_seconds())))
    target, serving = (spec.get("model") or {}).get("version"), status.get("servingVersion")
    fields.append(("Model", f"{(spec.get('model') or {}).get('name') or meta.get('name', '')}: serving version "
                            f"{serving if serving is not None else 'unknown'}, target "
                            f"{target if target is not None else 'latest'}"))
    fields.append(("Ready", f"{status.get('ready') or '0/0'}"))
    fields.append(("Analysis", _analysis(rollout_spec.get("analysis") or {}, ro)))
    endpoints = status.get("endpoints") or {}
    if endpoints:
        fields.append(("Endpoints", ", ".join(f"{k} {v}" for k, v in endpoints.items() if v)))
    return fields


def _analysis(gate: dict[str, Any], ro: dict[str, Any]) -> str:
    prometheus = gate.get("prometheus") or {}
    if not prometheus:
        return "none (no metric gate)"
    relation = ">=" if prometheus.get("comparison") == "GreaterOrEqual" else "<="
    message = str(ro.get("message") or "")
    start = min((i for i in (message.find("metric check"), message.find("the query")) if i >= 0), default=-1)
    last = message[start:] if start >= 0 else ""
    gate_text = (f"{prometheus.get('query', '')} {relation} {prometheus.get('threshold')} every "
                 f"{prometheus.get('interval', '30s')}")
    # The status records a result when it holds or ends a rollout; a passing one moves it on.
    return f"{gate_text}; last result: {last or 'none recorded (passing checks move the rollout on)'}"


COLUMNS = ["NAME", "KIND", "STATUS", "VERSION", "READY", "RESTARTS", "AGE", "INFO"]
WIDE_COLUMNS = [*COLUMNS, "IP", "NODE"]


def _rows(root: Node, colour: bool, wide: bool) -> list[list[str]]:
    rows: list[list[str]] = []

    def visit(node: Node, prefix: str, connector: str) -> None:
        mark, tint = MARKS[node.health]
        shown_mark = f"{tint}{mark}{RESET}" if colour else mark
        status = f"{tint}{node.status}{RESET}" if colour and node.status else node.status
        row = [f"{prefix}{connector}{shown_mark} {node.name}", node.kind, status, node.version, node.ready,
               node.restarts, node.age, node.info]
        if wide:
            row += [node.ip, node.node]
        rows.append(row)
        child_prefix = prefix + ("│  " if connector == "├──" else "   " if connector == "└──" else "")
        for i, child in enumerate(node.children):
            visit(child, child_prefix, "└──" if i == len(node.children) - 1 else "├──")

    visit(root, "", "")
    return rows


def render_tree(summary: Summary, root: Node, *, colour: bool = False, wide: bool = False,
                columns: int | None = None) -> str:
    """The summary and the tree as text; lines cut to `columns` when given (a terminal)."""
    width = max(len(label) for label, _ in summary.fields) + 2
    lines = []
    for label, value in summary.fields:
        shown_label = f"{BOLD}{label + ':':<{width}}{RESET}" if colour and not label.startswith(" ") \
            else f"{label + ':':<{width}}"
        lines.append(f"{shown_label}{value}")
    header = WIDE_COLUMNS if wide else COLUMNS
    grid = table([header, *_rows(root, colour, wide)]).splitlines()
    lines += ["", *grid]
    if columns is not None:
        lines = [truncate(line, columns) for line in lines]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- the cluster


def fetch_bridge(pod_ip: str, timeout: float) -> BridgeView:
    """The pod's health bridge's view of its model version, or "unreachable"."""
    from tfleet.api.model import HEALTH_BRIDGE_HTTP_PORT
    from tfleet.health import StatusFormatError, parse_bridge_status

    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    try:
        with urllib.request.urlopen(f"http://{host}:{HEALTH_BRIDGE_HTTP_PORT}/status", timeout=timeout) as resp:
            status = parse_bridge_status(resp.read().decode())
    except (urllib.error.URLError, OSError, StatusFormatError, UnicodeDecodeError, ValueError):
        return BridgeView("unreachable")
    health = status.health
    found = health.expected()
    if found is None:
        return BridgeView("not loaded", health.message() if health.versions else health.error)
    preflight = status.preflight
    if found.state == "AVAILABLE" and preflight is not None and not preflight.passed:
        if preflight.error:
            return BridgeView(found.state, f"pre-flight failed: {preflight.error}", failed=True)
        return BridgeView(found.state, f"pre-flight {preflight.state.lower()}")
    return BridgeView(found.state, found.error_message)


def _bridges(pods: list[Manifest], timeout: float) -> dict[str, BridgeView]:
    targets = {p["metadata"]["name"]: str((p.get("status") or {}).get("podIP")) for p in pods
               if (p.get("status") or {}).get("podIP") and any(
                   c.get("name") == SERVING_CONTAINER for c in (p.get("spec") or {}).get("containers") or [])}
    if timeout <= 0 or not targets:
        return {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
        futures = {name: pool.submit(fetch_bridge, ip, timeout) for name, ip in targets.items()}
        return {name: f.result() for name, f in futures.items()}


def _snapshot(cl: clusters.Cluster, name: str) -> tuple[Manifest, list[Manifest], list[Manifest]]:
    from tfleet.runtime.kube import KubeError

    try:
        body = cl.kube.get_isvc(cl.namespace, name)
        deployments = cl.kube.list_deployments(cl.namespace, isvc_selector(name))
        pods = cl.kube.list_pods(cl.namespace, isvc_selector(name))
    except KubeError as exc:
        raise clusters.api_failure(exc, cl.host) from None
    for dep in deployments:
        dep.setdefault("apiVersion", "apps/v1")
        dep.setdefault("kind", "Deployment")
    for pod in pods:
        pod.setdefault("apiVersion", "v1")
        pod.setdefault("kind", "Pod")
    return body, deployments, pods


def cmd_get(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    cl = clusters.connect(args)
    tty = out.isatty()
    colour = tty and not args.no_color and "NO_COLOR" not in os.environ
    read_defaults = defaults_reader(cl)
    last = ""
    try:
        while True:
            body, deployments, pods = _snapshot(cl, args.name)
            if args.output in ("json", "yaml", "name"):
                text = print_objects([body, *deployments, *pods], args.output)
            else:
                summary, root = build_tree(body, deployments, pods, utc_now(), _bridges(pods, args.bridge_timeout),
                                           rollout_steps(body, read_defaults))
                columns = terminal_columns(out) if tty else None
                text = render_tree(summary, root, colour=colour, wide=args.output == "wide",
                                   columns=columns - 1 if columns else None)
            if not args.watch:
                out.write(text)
                return EXIT_OK
            if tty:
                out.write("\033[H\033[2J" + text)  # redraw in place
            elif text != last:
                out.write(("\n" if last else "") + text)
            out.flush()
            last = text
            time.sleep(args.interval)
    except KeyboardInterrupt:  # the way a --watch ends
        out.write("\n")
        return EXIT_OK
