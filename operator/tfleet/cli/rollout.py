"""`tfleet rollout`: watch and steer rollouts from a terminal or a CI pipeline.

promote, abort, retry, pause and resume set annotations on the InferenceService; the operator acts
on them at its next reconcile, exactly as it would for `kubectl annotate`. promote and abort
name the canary revision they target, so a late or repeated command never acts on a later
rollout. `rollout get` (in `tfleet.cli.tree`) draws the revisions, Deployments and pods.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO

from tfleet.api.times import parse_time, utc_now
from tfleet.api.vocabulary import (
    ACTIVE_PHASES,
    ANNOTATION_ABORT,
    ANNOTATION_PAUSED,
    ANNOTATION_PROMOTE,
    ANNOTATION_RETRY,
    LABEL_MODEL_VERSION,
    LABEL_REVISION,
    ConditionType,
    Phase,
    Reason,
    isvc_selector,
)
from tfleet.cli import cluster as clusters
from tfleet.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT
from tfleet.cli.flags import (
    add_cluster_flags,
    add_output_flag,
    duration,
    isvc_reference,
    positive_duration,
)
from tfleet.cli.output import print_objects, table, truncate
from tfleet.durations import format_duration

ANNOTATION_RESTARTED_AT = "tfleet.dev/restarted-at"

# How long `rollout status` lets the operator take to observe a new generation before it
# says that it has not (it keeps waiting all the same).
OBSERVE_GRACE_SECONDS = 5.0


def describe(body: dict[str, Any], pause: str = "") -> str:
    """One line about the rollout, for logs and for the live view (`pause`: the pause left).
    Every figure comes from the same status write as the message beside it (`ready` counts
    the canary's ready pods apart: "4/4 (+1 canary)"), so the line never contradicts itself."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    ro = status.get("rollout") or {}
    phase = ro.get("phase", "Unknown")
    parts = [f"phase={phase}"]
    if unobserved_generation(body) is not None:
        parts.append(f"observed-generation={status.get('observedGeneration', 'none')}/{meta.get('generation')}")
    if ro.get("stableRevision"):
        parts.append(f"stable={ro['stableRevision']}")
    if ro.get("canaryRevision"):
        parts.append(f"canary={ro['canaryRevision']}")
    if ro.get("step") is not None:
        parts.append(f"step={ro['step'] + 1}")
    if ro.get("weight") is not None:
        parts.append(f"weight={ro['weight']}%")
    if ro.get("targetVersion") is not None:
        parts.append(f"target-version={ro['targetVersion']}")
    parts.append(f"ready={status.get('ready', '?')}")
    if pause:
        parts.append(f"pause-left={pause}")
    if ro.get("message"):
        parts.append(f"- {ro['message']}")
    return " ".join(parts)


def unobserved_generation(body: dict[str, Any]) -> int | None:
    """The generation the operator has not acted on yet, or None when status is current."""
    generation = (body.get("metadata") or {}).get("generation")
    observed = (body.get("status") or {}).get("observedGeneration")
    if generation is None or observed == generation:
        return None
    return int(generation)


def outcome(body: dict[str, Any]) -> int | None:
    """EXIT_OK or EXIT_FAILED once the latest spec has finished rolling out, else None."""
    if unobserved_generation(body) is not None:
        return None
    status = body.get("status") or {}
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


class GenerationWatch:
    """Notices a generation that the operator leaves unobserved for OBSERVE_GRACE_SECONDS, and
    says so once per generation."""

    def __init__(self, grace: float = OBSERVE_GRACE_SECONDS):
        self.grace = grace
        self._since: tuple[int, float] | None = None
        self._told: int | None = None

    def check(self, body: dict[str, Any], now: float) -> str | None:
        generation = unobserved_generation(body)
        if generation is None:
            self._since = None
            return None
        if self._since is None or self._since[0] != generation:
            self._since = (generation, now)
        if now - self._since[1] >= self.grace and self._told != generation:
            self._told = generation
            return f"the operator has not observed generation {generation} (is it running?)"
        return None


DefaultsReader = Callable[[str], "dict[str, Any] | None"]


def rollout_steps(body: dict[str, Any], read_defaults: DefaultsReader | None = None) -> list[dict[str, Any]]:
    """The canary steps the operator rolls the InferenceService out with: its own
    spec.rollout.steps, else those of the InferenceServiceDefaults its status names (as that
    object's status records them in force), else the built-in ones. `read_defaults` reads that
    object (None when it cannot be read: then the built-in steps)."""
    own = ((body.get("spec") or {}).get("rollout") or {}).get("steps")
    if isinstance(own, list):
        return own
    ref = (body.get("status") or {}).get("defaults") or {}
    if ref.get("name") and read_defaults is not None:
        applied = (((read_defaults(str(ref["name"])) or {}).get("status") or {}).get("applied") or {})
        steps = (applied.get("rollout") or {}).get("steps")
        if isinstance(steps, list):
            return steps
    from tfleet.api.model import DEFAULT_ROLLOUT_STEPS
    from tfleet.api.schema import to_json

    return list(to_json(DEFAULT_ROLLOUT_STEPS))


def defaults_reader(cl: clusters.Cluster) -> DefaultsReader:
    """Reads an InferenceServiceDefaults once per command; None when it cannot (not found, or
    not allowed: reading the cluster-scoped object takes a grant of its own)."""
    from tfleet.runtime.kube import KubeError

    seen: dict[str, dict[str, Any] | None] = {}

    def read(name: str) -> dict[str, Any] | None:
        if name not in seen:
            try:
                seen[name] = cl.kube.get_defaults(name)
            except KubeError:
                seen[name] = None
        return seen[name]

    return read


def pause_left(body: dict[str, Any], now: datetime | None = None,
               steps: list[dict[str, Any]] | None = None) -> float | None:
    """Seconds left in the current step's pause, while a canary step pauses. `steps`: the
    rollout's steps (default: `rollout_steps` of the body, without reading the defaults)."""
    ro = (body.get("status") or {}).get("rollout") or {}
    steps = rollout_steps(body) if steps is None else steps
    step = ro.get("step")
    started = parse_time(ro.get("stepStartedAt"))
    if step is None or started is None or step >= len(steps) or ro.get("phase") != Phase.PROGRESSING:
        return None
    from tfleet.api.schema import duration_seconds

    left = duration_seconds(steps[step].get("pause", "60s")) - ((now or utc_now()) - started).total_seconds()
    return max(0.0, left)


def terminal_columns(out: TextIO) -> int | None:
    """The width of the terminal `out` writes to; None when it does not say (a pseudo-terminal
    whose size was never set reports 0 columns)."""
    try:
        return os.get_terminal_size(out.fileno()).columns or None
    except (OSError, ValueError, AttributeError):
        return None


def _connect(args: argparse.Namespace) -> clusters.Cluster:
    return clusters.connect(args)


def _get_isvc(cl: clusters.Cluster, name: str) -> dict[str, Any]:
    from tfleet.runtime.kube import KubeError

    try:
        return cl.kube.get_isvc(cl.namespace, name)  # type: ignore[no-any-return]
    except KubeError as exc:
        raise clusters.api_failure(exc, cl.host) from None


def cmd_status(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    cl = _connect(args)
    from tfleet.runtime.kube import KubeError

    deadline = time.monotonic() + args.timeout if args.timeout else None
    live = out.isatty() and not args.no_follow_tty
    generations = GenerationWatch()
    read_defaults = defaults_reader(cl)
    last = ""
    while True:
        try:
            body = cl.kube.get_isvc(cl.namespace, args.name)
            line = describe(body)
        except KubeError as exc:
            if live:
                out.write("\n")
            raise clusters.api_failure(exc, cl.host) from None
        warning = generations.check(body, time.monotonic())
        if warning:
            if live:
                out.write("\r\033[K")
                out.flush()
            print(f"warning: {warning}", file=sys.stderr, flush=True)
        if live:
            left = pause_left(body, steps=rollout_steps(body, read_defaults))
            shown = describe(body, format_duration(round(left)) if left is not None else "")
            columns = terminal_columns(out)
            # One column short of the width: a line that fills it wraps on some terminals.
            out.write("\r\033[K" + (truncate(shown, columns - 1) if columns else shown))
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
            out.flush()
            print(f"error: timed out after {format_duration(args.timeout)} waiting for the rollout "
                  f"of {args.name}", file=sys.stderr)
            return EXIT_TIMEOUT
        time.sleep(args.interval)


def _annotate(args: argparse.Namespace, build: Any) -> int:
    cl = _connect(args)
    from tfleet.runtime.kube import KubeError

    try:
        body = cl.kube.get_isvc(cl.namespace, args.name)
        annotations, message = build(body)
        if annotations is None:
            print(f"error: {message}", file=sys.stderr)
            return EXIT_FAILED
        patched = cl.kube.annotate_isvc(cl.namespace, args.name, annotations)
    except KubeError as exc:
        raise clusters.api_failure(exc, cl.host) from None
    if args.output:
        sys.stdout.write(print_objects([patched], args.output))
    else:
        print(message)
    return EXIT_OK


def _canary(body: dict[str, Any]) -> str | None:
    """The revision a promote or abort targets: the canary, or the revision queued for a slot
    (both requests skip the queue)."""
    ro = (body.get("status") or {}).get("rollout") or {}
    return ro.get("canaryRevision") or ro.get("queuedRevision")


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


def cmd_retry(args: argparse.Namespace) -> int:
    def build(body: dict[str, Any]) -> tuple[dict[str, str | None] | None, str]:
        failed = ((body.get("status") or {}).get("rollout") or {}).get("failedRevision")
        if failed is None:
            return None, f'inferenceservice "{args.name}" has no rolled-back revision to retry'
        return {ANNOTATION_RETRY: failed}, f"retrying the rollout of revision {failed}"

    return _annotate(args, build)


def cmd_pause(args: argparse.Namespace) -> int:
    return _annotate(args, lambda body: ({ANNOTATION_PAUSED: "true"}, f'paused rollouts of "{args.name}"'))


def cmd_resume(args: argparse.Namespace) -> int:
    return _annotate(args, lambda body: ({ANNOTATION_PAUSED: None}, f'resumed rollouts of "{args.name}"'))


def undo_target(body: dict[str, Any], to_revision: str | None) -> tuple[str | None, str]:
    """The revision `rollout undo` returns to (None: there is none), and why it is that one:
    the one asked for, else the stable revision while a rollout runs, else the previous one."""
    ro = (body.get("status") or {}).get("rollout") or {}
    stable, canary, history = ro.get("stableRevision"), ro.get("canaryRevision"), ro.get("history") or []
    if to_revision:
        known = {r for r in (stable, canary, *history) if r}
        if to_revision not in known:
            return None, f"revision {to_revision} is not kept (known: {', '.join(sorted(known)) or 'none'})"
        return to_revision, f"revision {to_revision}"
    if canary or ro.get("queuedRevision"):
        return (stable, f"the stable revision {stable}") if stable else (None, "there is no stable revision")
    if history:
        return history[0], f"the previous revision {history[0]}"
    return None, "there is no earlier revision to go back to"


def spec_for_revision(current: dict[str, Any], recorded: dict[str, Any]) -> dict[str, Any]:
    """The spec `rollout undo` writes: what made the revision, with the current scale, Services
    and rollout settings (which are not part of a revision)."""
    kept: dict[str, Any] = {k: current[k] for k in ("replicas", "autoscaling", "service", "rollout") if k in current}
    return {**{k: v for k, v in recorded.items() if k not in kept}, **kept}


def cmd_undo(args: argparse.Namespace) -> int:
    import json

    from tfleet.api.vocabulary import ANNOTATION_REVISION_SPEC
    from tfleet.runtime.kube import KubeError

    cl = _connect(args)
    try:
        body = cl.kube.get_isvc(cl.namespace, args.name)
        target, why = undo_target(body, args.to_revision)
        if target is None:
            print(f'error: inferenceservice "{args.name}": {why}', file=sys.stderr)
            return EXIT_FAILED
        try:
            deployment = cl.kube.get_deployment(cl.namespace, f"{args.name}-{target}")
        except KubeError as exc:
            if exc.code != 404:
                raise
            print(f"error: revision {target} has no Deployment any more (see spec.rollout.revisionHistoryLimit)",
                  file=sys.stderr)
            return EXIT_FAILED
        recorded = ((deployment.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_REVISION_SPEC)
        if not recorded:
            print(f"error: revision {target} has no recorded spec (its Deployment was made by an older "
                  f"operator, or its spec was too large to record); edit the spec by hand", file=sys.stderr)
            return EXIT_FAILED
        spec = spec_for_revision(body.get("spec") or {}, json.loads(recorded))
        patched = cl.kube.replace_isvc_spec(cl.namespace, args.name, spec, body["metadata"]["resourceVersion"])
    except KubeError as exc:
        raise clusters.api_failure(exc, cl.host) from None
    if args.output:
        sys.stdout.write(print_objects([patched], args.output))
    else:
        print(f'inferenceservice "{args.name}" spec set back to {why}; the operator restores it '
              f"without canary steps while its Deployment is kept")
    return EXIT_OK


def cmd_restart(args: argparse.Namespace) -> int:
    """A new revision with the same spec: a pod annotation with the time, as `kubectl rollout
    restart` does for Deployments. It rolls out like any other revision (and waits its turn)."""
    from tfleet.api.times import format_time
    from tfleet.runtime.kube import KubeError

    cl = _connect(args)
    try:
        body = cl.kube.get_isvc(cl.namespace, args.name)
        spec = json_copy(body.get("spec") or {})
        pod = spec.setdefault("pod", {})
        pod.setdefault("annotations", {})[ANNOTATION_RESTARTED_AT] = format_time(utc_now())
        patched = cl.kube.replace_isvc_spec(cl.namespace, args.name, spec, body["metadata"]["resourceVersion"])
    except KubeError as exc:
        raise clusters.api_failure(exc, cl.host) from None
    if args.output:
        sys.stdout.write(print_objects([patched], args.output))
    else:
        print(f'inferenceservice "{args.name}" restarted: a new revision rolls out')
    return EXIT_OK


def json_copy(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value))


def revision_roles(body: dict[str, Any]) -> dict[str, str]:
    """revision -> stable, canary, rolled back or previous, from status.rollout."""
    ro = (body.get("status") or {}).get("rollout") or {}
    roles = {rev: role for rev, role in ((ro.get("failedRevision"), "rolled back"),
                                          (ro.get("canaryRevision"), "canary"),
                                          (ro.get("stableRevision"), "stable")) if rev}
    for rev in ro.get("history") or []:
        roles.setdefault(rev, "previous")
    return roles


def history_rows(body: dict[str, Any], deployments: list[dict[str, Any]], wide: bool) -> list[list[str]]:
    """The table of `rollout history`: newest revision first."""
    roles = revision_roles(body)
    records = []
    for dep in deployments:
        meta = dep["metadata"]
        labels = meta.get("labels") or {}
        rev = labels.get(LABEL_REVISION, "")
        row = [rev, labels.get(LABEL_MODEL_VERSION, "-"), roles.get(rev, "-"),
               f"{(dep.get('status') or {}).get('readyReplicas', 0)}/{dep['spec'].get('replicas', 0)}",
               meta.get("creationTimestamp", "")]
        if wide:
            containers = (((dep.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
            image = next((c.get("image", "") for c in containers if c.get("name") == "tensorflow-serving"), "")
            row += [meta.get("name", ""), image]
        records.append(row)
    records.sort(key=lambda r: r[4], reverse=True)
    header = ["REVISION", "VERSION", "ROLE", "READY", "CREATED"] + (["DEPLOYMENT", "IMAGE"] if wide else [])
    return [header, *records]


def cmd_history(args: argparse.Namespace) -> int:
    cl = _connect(args)
    from tfleet.runtime.kube import KubeError

    try:
        body = cl.kube.get_isvc(cl.namespace, args.name)
        deployments = cl.kube.list_deployments(cl.namespace, isvc_selector(args.name))
    except KubeError as exc:
        raise clusters.api_failure(exc, cl.host) from None
    if args.output in ("json", "yaml", "name"):
        deployments.sort(key=lambda d: d["metadata"].get("creationTimestamp", ""), reverse=True)
        for dep in deployments:
            dep.setdefault("apiVersion", "apps/v1")
            dep.setdefault("kind", "Deployment")
        sys.stdout.write(print_objects(deployments, args.output))
        return EXIT_OK
    sys.stdout.write(table(history_rows(body, deployments, wide=args.output == "wide")))
    return EXIT_OK


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", type=isvc_reference, metavar="NAME",
                   help="the InferenceService: NAME or tfis/NAME")
    add_cluster_flags(p)


EXIT_HELP = "exit status: 0 rolled out, 1 rolled back or stalled, 2 timed out; 3 usage, 4 configuration, " \
    "5 API server unreachable, 6 API error"


def add_subcommands(sub: Any) -> None:
    from tfleet.cli import tree

    parser = sub.add_parser("rollout", help="watch and control rollouts of an InferenceService",
                            description="Watch and control the rollouts of an InferenceService.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    status = actions.add_parser(
        "status", help="follow the rollout until it finishes (exit 0), fails (1) or times out (2)",
        epilog=EXIT_HELP,
        description="Follow the rollout of the current spec. On a terminal one live line is redrawn, "
        "cut to the terminal's width; elsewhere one line is printed per change. Says so when the "
        f"operator has not observed a new generation within {OBSERVE_GRACE_SECONDS:g}s.")
    _add_common(status)
    status.add_argument("--timeout", type=duration, default=0.0, metavar="DURATION",
                        help="give up after this long, with exit status 2 (90s, 2m, 1h30m or seconds; "
                        "default 0: wait for ever)")
    status.add_argument("--interval", type=positive_duration, default=0.5, metavar="DURATION",
                        help="time between checks (default 500ms)")
    status.add_argument("--watch", action=argparse.BooleanOptionalAction, default=True,
                        help="follow until the rollout ends (default) or print once")
    status.add_argument("--no-follow-tty", action="store_true", help="one line per change even on a terminal")
    status.set_defaults(func=cmd_status)

    get = actions.add_parser(
        "get", help="show the InferenceService's revisions, Deployments and pods as a tree",
        description="A tree of the InferenceService, its revisions (stable, canary, earlier ones), "
        "their Deployments and pods with the model version each serves, readiness and restarts, "
        "the current step and weight, the pause left and the last analysis result. Colour on a "
        "terminal (unless NO_COLOR is set or --no-color), plain text elsewhere.")
    _add_common(get)
    get.add_argument("-w", "--watch", action="store_true", help="redraw the tree until interrupted")
    get.add_argument("--interval", type=positive_duration, default=2.0, metavar="DURATION",
                     help="time between redraws with --watch (default 2s)")
    get.add_argument("--no-color", action="store_true", help="no colour, even on a terminal")
    get.add_argument("--bridge-timeout", type=duration, default=0.3, metavar="DURATION",
                     help="how long to wait for each pod's health bridge (GET /status on the pod IP); "
                     "0 skips them and shows the versions the operator labelled (default 300ms)")
    add_output_flag(get, ("wide", "json", "yaml", "name"), None,
                    "the tree (wide: pod IPs and nodes) or, with json/yaml/name, its objects")
    get.set_defaults(func=tree.cmd_get)

    for name, func, help_text in (
        ("promote", cmd_promote, "skip the remaining canary steps and promote the canary"),
        ("abort", cmd_abort, "roll the canary back now"),
        ("retry", cmd_retry, "try a rolled-back revision again, without a spec change"),
        ("pause", cmd_pause, "hold the rollout at its current step"),
        ("resume", cmd_resume, "continue a paused rollout"),
    ):
        p = actions.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:] + ".")
        _add_common(p)
        add_output_flag(p, ("json", "yaml", "name"), None, "the annotated InferenceService (default: a message)")
        p.set_defaults(func=func)

    undo = actions.add_parser(
        "undo", help="set the spec back to an earlier revision (the previous one by default)",
        description="Write the spec that made an earlier revision back into the InferenceService "
        "(keeping the current replicas, autoscaling, Services and rollout settings), so GitOps "
        "tools show the difference. With no --to-revision: the stable revision while a rollout "
        "runs, else the previous one. A revision whose Deployment is still kept comes back without "
        "canary steps.")
    _add_common(undo)
    undo.add_argument("--to-revision", metavar="REVISION", help="the revision to return to (see rollout history)")
    add_output_flag(undo, ("json", "yaml", "name"), None, "the changed InferenceService (default: a message)")
    undo.set_defaults(func=cmd_undo)

    restart = actions.add_parser(
        "restart", help="roll out a new revision with the same spec",
        description="Add a tfleet.dev/restarted-at pod annotation with the time, which makes a new "
        "revision with the same spec; it rolls out under spec.rollout like any other, and waits in "
        "the queue when the operator's rollout slots are full.")
    _add_common(restart)
    add_output_flag(restart, ("json", "yaml", "name"), None, "the changed InferenceService (default: a message)")
    restart.set_defaults(func=cmd_restart)

    history = actions.add_parser("history", help="list the revisions and their roles",
                                 description="The revisions of the InferenceService, newest first.")
    _add_common(history)
    add_output_flag(history, ("wide", "json", "yaml", "name"), None,
                    "the table (wide: Deployment and image) or, with json/yaml/name, the revisions' Deployments")
    history.set_defaults(func=cmd_history)
