"""The `tfleet` command: run the operator, render manifests offline, print the CRD, probe health."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

import yaml

from tfleet import API_VERSION, KIND, __version__


class _Dumper(yaml.SafeDumper):
    """Plain YAML: repeated values are written out, never as &anchors/*aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_manifests(manifests: list[dict[str, Any]]) -> str:
    return yaml.dump_all(manifests, Dumper=_Dumper, sort_keys=False, width=120)


@dataclass(frozen=True)
class RenderError:
    source: str
    index: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}: document {self.index}: {self.message}"


def _documents(source: str, stream: TextIO) -> Iterator[tuple[int, Any, str | None]]:
    """(index, document, parse error) for every YAML document of a stream."""
    try:
        for index, doc in enumerate(yaml.safe_load_all(stream)):
            yield index, doc, None
    except yaml.YAMLError as exc:
        # A syntax error ends the stream: the parser cannot resynchronise after it.
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        yield -1, None, f"YAML does not parse{where}: {problem}"


def render_documents(source: str, stream: TextIO, namespace: str | None) -> tuple[list[dict[str, Any]], list[RenderError]]:
    """Children of every InferenceService in `stream`; errors name the document and field."""
    from tfleet import builders
    from tfleet.api import parse_object
    from tfleet.schema import ValidationError

    children: list[dict[str, Any]] = []
    errors: list[RenderError] = []
    last_index = -1
    for index, doc, problem in _documents(source, stream):
        if problem is not None:
            errors.append(RenderError(source, last_index + 1, problem))
            break
        last_index = index
        if doc is None:
            continue
        if not isinstance(doc, dict):
            errors.append(RenderError(source, index, f"must be a mapping (an object), got {type(doc).__name__}"))
            continue
        if doc.get("apiVersion") != API_VERSION:
            errors.append(RenderError(source, index, f'apiVersion: must be "{API_VERSION}", got {doc.get("apiVersion")!r}'))
            continue
        if doc.get("kind") != KIND:
            errors.append(RenderError(source, index, f'kind: must be "{KIND}", got {doc.get("kind")!r}'))
            continue
        obj = dict(doc)
        if isinstance(obj.get("metadata"), dict) or obj.get("metadata") is None:
            meta = dict(obj.get("metadata") or {})
            meta.setdefault("namespace", namespace or "default")
            obj["metadata"] = meta
        # Other metadata is left for parse_object, which names the field.
        try:
            isvc = parse_object(obj)
        except ValidationError as exc:
            errors.extend(RenderError(source, index, str(e)) for e in exc.errors)
            continue
        children.extend(builders.build_children(isvc))
    return children, errors


def cmd_render(args: argparse.Namespace) -> int:
    all_children: list[dict[str, Any]] = []
    failed = False
    for path in args.filename:
        try:
            if path == "-":
                children, errors = render_documents("<stdin>", sys.stdin, args.namespace)
            else:
                with open(path, encoding="utf-8") as stream:
                    children, errors = render_documents(path, stream, args.namespace)
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
            failed = True
            continue
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        failed = failed or bool(errors)
        all_children.extend(children)
    # Valid documents still render; any invalid one makes the exit status 2.
    if all_children:
        sys.stdout.write(dump_manifests(all_children))
    return 2 if failed else 0


def cmd_crd(args: argparse.Namespace) -> int:
    from tfleet.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return 0


@dataclass(frozen=True)
class RunOptions:
    namespaces: tuple[str, ...] = ()
    kubeconfig: str | None = None
    metrics_port: int | None = None
    health_port: int | None = None
    leader_election: bool = False
    lease_namespace: str | None = None
    lease_name: str = "tfleet-operator"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


HEARTBEAT_SECONDS = 5.0
_heartbeat_registered = False


def _register_heartbeat() -> None:
    """A tick on kopf's event loop, so /healthz sees a stuck loop. Registered once per process."""
    global _heartbeat_registered
    if _heartbeat_registered:
        return
    _heartbeat_registered = True
    import asyncio

    import kopf

    @kopf.on.startup(id="tfleet-heartbeat")
    async def start_heartbeat(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> None:
        if memo.get("namespaced"):
            # Watching CRDs (to notice ones created later) needs a cluster-wide grant; in
            # namespaced mode the resources found at start are served and RBAC stays
            # within the watched namespaces.
            settings.scanning.disabled = True
        health = memo.get("health")
        if health is None:
            return

        async def tick() -> None:
            while True:
                health.beat()
                await asyncio.sleep(HEARTBEAT_SECONDS)

        memo.heartbeat = asyncio.get_running_loop().create_task(tick())

    @kopf.on.cleanup(id="tfleet-heartbeat")
    async def stop_heartbeat(memo: kopf.Memo, **_: Any) -> None:
        task = memo.get("heartbeat")
        if task is not None:
            task.cancel()
        # When a signal stops kopf, its waiter on our stop flag would otherwise hang on
        # until kopf gives up on it (5 s): raise the flag so shutdown does not wait.
        stop = memo.get("operator_stop")
        if stop is not None:
            stop.set()


@contextmanager
def _signals_set(flag: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set `flag` (kopf installs its own handlers once it runs)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda *_: flag.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_operator(opts: RunOptions) -> int:
    """Run the operator until a signal stops it (0) or it loses the leader Lease (1)."""
    import asyncio

    import kopf

    from tfleet import handlers  # noqa: F401  (registers the handlers)
    from tfleet.healthz import Health, Phase
    from tfleet.kube import Kube, add_write_observer, load_config, remove_write_observer
    from tfleet.leader import LeaderElector, Timing, default_namespace

    log = logging.getLogger("tfleet.run")
    health = Health()
    # `stop_flag` ends the standby wait and the renewals; `operator_stop` ends kopf. kopf waits
    # for a threading flag in an executor thread that would outlive its loop, so it gets an
    # asyncio one, set through its own loop.
    stop_flag = threading.Event()
    loop = asyncio.new_event_loop()
    operator_stop = asyncio.Event()
    ready_flag = threading.Event()
    lost = threading.Event()
    stoppers: list[Callable[[], None]] = []
    metrics = None
    elector: LeaderElector | None = None
    try:
        if opts.metrics_port is not None:
            from tfleet.metrics import Metrics

            metrics = Metrics()
            stoppers.append(metrics.serve(opts.metrics_port))
            add_write_observer(metrics.record_write)
            stoppers.append(lambda: remove_write_observer(metrics.record_write) if metrics else None)
            log.info("Serving metrics on port %d", metrics.port)
        if opts.health_port is not None:
            port, stop_health = health.serve(opts.health_port)
            stoppers.append(stop_health)
            log.info("Serving health checks on port %d", port)

        if opts.leader_election:
            timing = Timing(opts.lease_duration, opts.renew_deadline, opts.retry_period)
            elector = LeaderElector(Kube(load_config(opts.kubeconfig)), opts.lease_namespace or default_namespace(),
                                    opts.lease_name, timing=timing)
            health.update(phase=Phase.STANDBY)

            def progress(e: LeaderElector) -> None:
                health.update(election_attempt=e.last_attempt, api_contact=e.last_contact or None)

            with _signals_set(stop_flag):
                if not elector.acquire(stop_flag, on_round=progress):
                    log.info("Stopped before acquiring the leader Lease")
                    return 0

            def on_lost() -> None:
                lost.set()
                loop.call_soon_threadsafe(operator_stop.set)

            threading.Thread(target=elector.keep_leading, args=(stop_flag, on_lost),
                             name="tfleet-leader", daemon=True).start()

        health.update(phase=Phase.LEADING)
        if metrics is not None:
            metrics.leader.set(1)

        def mark_ready() -> None:
            if ready_flag.wait():
                health.update(operator_ready=True)
                # Scripts and tests wait for this line (or for /readyz).
                log.info("Started the operator")

        threading.Thread(target=mark_ready, name="tfleet-ready", daemon=True).start()
        _register_heartbeat()
        asyncio.set_event_loop(loop)
        kopf.run(
            loop=loop,
            standalone=True,
            clusterwide=not opts.namespaces,
            namespaces=list(opts.namespaces),
            memo=kopf.Memo(kubeconfig=opts.kubeconfig, metrics=metrics, health=health,
                           namespaced=bool(opts.namespaces), operator_stop=operator_stop),
            stop_flag=operator_stop,
            ready_flag=ready_flag,
        )
    finally:
        health.update(phase=Phase.STOPPING)
        stop_flag.set()
        if metrics is not None:
            metrics.leader.set(0)
        if elector is not None and not lost.is_set():
            elector.release()
        for stop in reversed(stoppers):
            stop()
        loop.close()
    if lost.is_set():
        log.error("Stopped the operator: the leader Lease was lost")
        return 1
    log.info("Stopped the operator")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if args.kubeconfig:
        # Before the kubernetes client is imported: it reads $KUBECONFIG once, at import.
        os.environ["KUBECONFIG"] = args.kubeconfig
    from tfleet import logs

    logs.configure(args.log_format, args.log_level)
    if args.leader_election:
        from tfleet.leader import Timing

        try:
            Timing(args.leader_election_lease_duration, args.leader_election_renew_deadline,
                   args.leader_election_retry_period)
        except ValueError as exc:
            print(f"tfleet run: error: {exc}", file=sys.stderr)
            return 2
    return run_operator(RunOptions(
        namespaces=tuple(args.namespace or ()),
        kubeconfig=args.kubeconfig,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        leader_election=args.leader_election,
        lease_namespace=args.leader_election_namespace,
        lease_name=args.leader_election_id,
        lease_duration=args.leader_election_lease_duration,
        renew_deadline=args.leader_election_renew_deadline,
        retry_period=args.leader_election_retry_period,
    ))


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0-65535)")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a positive number of seconds")
    return value


def _add_run_options(run: argparse.ArgumentParser) -> None:
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", metavar="NS",
                       help="watch this namespace (repeatable); default: all namespaces")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch all namespaces (the default)")
    run.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    run.add_argument("--metrics-port", type=_port, default=None, metavar="PORT",
                     help="serve Prometheus metrics on /metrics at this port (default: off)")
    run.add_argument("--health-port", type=_port, default=None, metavar="PORT",
                     help="serve /healthz (liveness) and /readyz (readiness) at this port (default: off)")
    run.add_argument("--log-format", default="text", choices=["text", "json"],
                     help="text for people, json for log pipelines (one object per line)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    election = run.add_argument_group("leader election (run several replicas, one active)")
    election.add_argument("--leader-election", action="store_true",
                          help="reconcile only while holding a coordination.k8s.io/v1 Lease")
    election.add_argument("--leader-election-namespace", metavar="NS", default=None,
                          help="namespace of the Lease (default: $POD_NAMESPACE, then the service "
                          "account's namespace, then default)")
    election.add_argument("--leader-election-id", metavar="NAME", default="tfleet-operator",
                          help="name of the Lease (default: tfleet-operator)")
    election.add_argument("--leader-election-lease-duration", type=_seconds, default=15.0, metavar="SECONDS",
                          help="how long standbys wait after the last renewal before taking over (default: 15)")
    election.add_argument("--leader-election-renew-deadline", type=_seconds, default=10.0, metavar="SECONDS",
                          help="how long the leader keeps trying to renew before it stops (default: 10)")
    election.add_argument("--leader-election-retry-period", type=_seconds, default=2.0, metavar="SECONDS",
                          help="time between attempts to acquire or renew (default: 2)")
    run.set_defaults(func=cmd_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfleet",
        description="tfleet runs fleets of TensorFlow Serving model servers on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"tfleet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", help="run the operator",
        description="Run the operator: watch InferenceServices and reconcile their children and "
        "status. SIGTERM or SIGINT stops it gracefully (in-flight reconciles finish, the leader "
        "Lease is released).")
    _add_run_options(run)

    render = sub.add_parser(
        "render",
        help="print the objects the operator would create for InferenceService manifests",
        description="Render InferenceService manifests into the Kubernetes objects the operator "
        "creates (owner references aside). Exit status 2 when any document is invalid.",
    )
    render.add_argument("-f", "--filename", action="append", required=True, metavar="FILE",
                        help="manifest file with one or more documents; - reads stdin (repeatable)")
    render.add_argument("--namespace", "-n", help="namespace for documents that set none (default: default)")
    render.set_defaults(func=cmd_render)

    crd = sub.add_parser("crd", help="print the InferenceService CustomResourceDefinition")
    crd.set_defaults(func=cmd_crd)

    try:
        from tfleet.health.cli import add_subcommands
    except ImportError:  # pragma: no cover - the health package ships with tfleet
        pass
    else:
        add_subcommands(sub)

    from tfleet import rollout_cli

    rollout_cli.add_subcommands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
