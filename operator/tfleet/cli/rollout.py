"""`tfleet rollout`: watch and steer rollouts from a terminal or a CI pipeline.

promote, abort, pause and resume set annotations on the InferenceService; the operator acts
on them at its next reconcile, exactly as it would for `kubectl annotate`. promote and abort
name the canary revision they target, so a late or repeated command never acts on a later
rollout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, TextIO

from tfleet.api.times import parse_time, utc_now
from tfleet.api.vocabulary import (
    ACTIVE_PHASES,
    ANNOTATION_ABORT,
    ANNOTATION_PAUSED,
    ANNOTATION_PROMOTE,
    LABEL_MODEL_VERSION,
    LABEL_REVISION,
    ConditionType,
    Phase,
    Reason,
    isvc_selector,
    revision_selector,
)

EXIT_OK, EXIT_FAILED, EXIT_TIMEOUT = 0, 1, 2


def _kube(args: argparse.Namespace) -> Any:
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    from tfleet.runtime.kube import Kube, load_config

    return Kube(load_config(args.kubeconfig))


def _namespace(args: argparse.Namespace) -> str:
    if args.namespace:
        return str(args.namespace)
    try:
        from kubernetes import config

        _, context = config.list_kube_config_contexts(config_file=args.kubeconfig)
        return str((context or {}).get("context", {}).get("namespace") or "default")
    except Exception:  # no kubeconfig context: the API default
        return "default"


def describe(body: dict[str, Any], canary_ready: str = "") -> str:
    """One line about the rollout, for logs and for the live view."""
    status = body.get("status") or {}
    ro = status.get("rollout") or {}
    phase = ro.get("phase", "Unknown")
    parts = [f"phase={phase}"]
    if ro.get("stableRevision"):
        parts.append(f"stable={ro['stableRevision']}")
    if ro.get("canaryRevision"):
        parts.append(f"canary={ro['canaryRevision']}")
    if ro.get("step") is not None:
        parts.append(f"step={ro['step'] + 1}")
    if ro.get("weight") is not None:
        parts.append(f"weight={ro['weight']}%")
    if canary_ready:
        parts.append(f"canary-ready={canary_ready}")
    if ro.get("targetVersion") is not None:
        parts.append(f"target-version={ro['targetVersion']}")
    parts.append(f"ready={status.get('ready', '?')}")
    if ro.get("message"):
        parts.append(f"- {ro['message']}")
    return " ".join(parts)


def outcome(body: dict[str, Any]) -> int | None:
    """EXIT_OK or EXIT_FAILED once the latest spec has finished rolling out, else None."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    if status.get("observedGeneration") != meta.get("generation"):
        return None
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    if (conditions.get(ConditionType.READY) or {}).get("reason") == Reason.INVALID_SPEC:
        return EXIT_FAILED
    rollout = status.get("rollout") or {}
    phase = rollout.get("phase")
    # A stalled rollout waits for a person: as failed as a rolled-back one, to a script.
    if phase == Phase.ROLLED_BACK or rollout.get("stalled"):
        return EXIT_FAILED
    if phase in ACTIVE_PHASES:
        return None
    if (conditions.get(ConditionType.PROGRESSING) or {}).get("status") == "False":
        return EXIT_FAILED
    return EXIT_OK if (conditions.get(ConditionType.READY) or {}).get("status") == "True" else None


def _canary_ready(kube: Any, namespace: str, body: dict[str, Any]) -> str:
    canary = ((body.get("status") or {}).get("rollout") or {}).get("canaryRevision")
    if not canary:
        return ""
    name = body["metadata"]["name"]
    for dep in kube.list_deployments(namespace, revision_selector(name, canary)):
        return f"{(dep.get('status') or {}).get('readyReplicas', 0)}/{dep['spec'].get('replicas', 0)}"
    return ""


def _pause_left(body: dict[str, Any]) -> str:
    ro = (body.get("status") or {}).get("rollout") or {}
    steps = (((body.get("spec") or {}).get("rollout") or {}).get("steps")) or []
    step = ro.get("step")
    started = parse_time(ro.get("stepStartedAt"))
    if step is None or started is None or step >= len(steps) or ro.get("phase") != Phase.PROGRESSING:
        return ""
    from tfleet.api.schema import duration_seconds

    left = duration_seconds(steps[step].get("pause", "60s")) - (utc_now() - started).total_seconds()
    return f" pause-left={max(0, int(left))}s"


def cmd_status(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    kube, namespace = _kube(args), _namespace(args)
    from tfleet.runtime.kube import KubeError

    deadline = time.monotonic() + args.timeout if args.timeout else None
    live = out.isatty() and not args.no_follow_tty
    last = ""
    while True:
        try:
            body = kube.get_isvc(namespace, args.name)
        except KubeError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return EXIT_FAILED if exc.code == 404 else EXIT_TIMEOUT
        line = describe(body, _canary_ready(kube, namespace, body))
        if live:
            out.write("\r\033[K" + line + _pause_left(body))
            out.flush()
        elif line != last:
            out.write(line + "\n")
            out.flush()
        last = line
        result = outcome(body)
        if result is not None:
            if live:
                out.write("\n")
            verdict = "rolled out" if result == EXIT_OK else "failed"
            out.write(f'inferenceservice "{args.name}" {verdict}\n')
            return result
        if not args.watch:
            return EXIT_OK
        if deadline is not None and time.monotonic() >= deadline:
            if live:
                out.write("\n")
            print(f"error: timed out after {args.timeout:g}s waiting for the rollout", file=sys.stderr)
            return EXIT_TIMEOUT
        time.sleep(args.interval)


def _annotate(args: argparse.Namespace, build: Any) -> int:
    kube, namespace = _kube(args), _namespace(args)
    from tfleet.runtime.kube import KubeError

    try:
        body = kube.get_isvc(namespace, args.name)
        annotations, message = build(body)
        if annotations is None:
            print(f"error: {message}", file=sys.stderr)
            return EXIT_FAILED
        kube.annotate_isvc(namespace, args.name, annotations)
    except KubeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    print(message)
    return EXIT_OK


def _canary(body: dict[str, Any]) -> str | None:
    return ((body.get("status") or {}).get("rollout") or {}).get("canaryRevision")


def cmd_promote(args: argparse.Namespace) -> int:
    def build(body: dict[str, Any]) -> tuple[dict[str, str | None] | None, str]:
        canary = _canary(body)
        if canary is None:
            return None, f'inferenceservice "{args.name}" has no rollout in progress'
        return {ANNOTATION_PROMOTE: canary, ANNOTATION_PAUSED: None}, f"promoting revision {canary}"

    return _annotate(args, build)


def cmd_abort(args: argparse.Namespace) -> int:
    def build(body: dict[str, Any]) -> tuple[dict[str, str | None] | None, str]:
        canary = _canary(body)
        if canary is None:
            return None, f'inferenceservice "{args.name}" has no rollout in progress'
        return {ANNOTATION_ABORT: canary}, f"aborting the rollout of revision {canary}"

    return _annotate(args, build)


def cmd_pause(args: argparse.Namespace) -> int:
    return _annotate(args, lambda body: ({ANNOTATION_PAUSED: "true"}, f'paused rollouts of "{args.name}"'))


def cmd_resume(args: argparse.Namespace) -> int:
    return _annotate(args, lambda body: ({ANNOTATION_PAUSED: None}, f'resumed rollouts of "{args.name}"'))


def cmd_history(args: argparse.Namespace) -> int:
    kube, namespace = _kube(args), _namespace(args)
    from tfleet.runtime.kube import KubeError

    try:
        body = kube.get_isvc(namespace, args.name)
        deployments = kube.list_deployments(namespace, isvc_selector(args.name))
    except KubeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    ro = (body.get("status") or {}).get("rollout") or {}
    roles = {ro.get("stableRevision"): "stable", ro.get("canaryRevision"): "canary",
             ro.get("failedRevision"): "rolled back"}
    roles.update({rev: "previous" for rev in ro.get("history") or [] if rev not in roles})
    rows = []
    for dep in deployments:
        labels = dep["metadata"].get("labels") or {}
        rev = labels.get(LABEL_REVISION, "")
        rows.append((rev, labels.get(LABEL_MODEL_VERSION, "-"), roles.get(rev, "-"),
                     f"{(dep.get('status') or {}).get('readyReplicas', 0)}/{dep['spec'].get('replicas', 0)}",
                     dep["metadata"].get("creationTimestamp", "")))
    rows.sort(key=lambda r: r[4], reverse=True)
    print(f"{'REVISION':<12} {'VERSION':<8} {'ROLE':<12} {'READY':<7} CREATED")
    for rev, version, role, ready, created in rows:
        print(f"{rev:<12} {version:<8} {role:<12} {ready:<7} {created}")
    return EXIT_OK


def add_subcommands(sub: Any) -> None:
    parser = sub.add_parser("rollout", help="watch and control rollouts of an InferenceService")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, func, help_text in (
        ("status", cmd_status, "follow the rollout until it finishes (exit 0), fails (1) or times out (2)"),
        ("promote", cmd_promote, "skip the remaining canary steps and promote the canary"),
        ("abort", cmd_abort, "roll the canary back now"),
        ("pause", cmd_pause, "hold the rollout at its current step"),
        ("resume", cmd_resume, "continue a paused rollout"),
        ("history", cmd_history, "list the revisions and their roles"),
    ):
        p = actions.add_parser(name, help=help_text)
        p.add_argument("name", help="InferenceService name")
        p.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
        p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
        if name == "status":
            p.add_argument("--timeout", type=float, default=0, help="give up after this many seconds (exit 2)")
            p.add_argument("--interval", type=float, default=0.5, help="seconds between checks")
            p.add_argument("--watch", action=argparse.BooleanOptionalAction, default=True,
                           help="follow until the rollout ends (default) or print once")
            p.add_argument("--no-follow-tty", action="store_true", help="one line per change even on a terminal")
        p.set_defaults(func=func)
